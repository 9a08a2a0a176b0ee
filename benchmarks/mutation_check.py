"""Mutation check: break each guarded line of a core computation in a copy of the repository and show that the
tests then fail (issue 31). Not run in CI (it runs the relevant tests once per mutation: several minutes).

    python benchmarks/mutation_check.py                 # every mutation, then a table
    python benchmarks/mutation_check.py --only anchor   # the mutations whose name contains "anchor"

For each mutation the script copies the repository's files (``git ls-files``: tracked and untracked, not ignored)
to a temporary folder, replaces one piece of code (the text must occur exactly as many times as stated, so a
mutation can never silently miss its line), and runs the named tests there with the copy first on
``PYTHONPATH``. First it runs every selection unmutated: a selection that already fails would prove nothing.
A mutation is *caught* when at least one test fails. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    name: str
    what: str  # the table's "broken line" column
    path: str
    old: str
    new: str
    tests: tuple[str, ...]
    count: int = 1  # occurrences of ``old`` that are replaced (all of them must exist)


DISTAC_TESTS = ("tests/test_distac.py", "tests/test_independent.py")
MUTATIONS = [
    Mutation("anchor", "DisTaC's anchor gradient set to 0 (`conditioning/loop.py`)", "hfdistac/conditioning/loop.py",
             "2 * beta * scale", "0 * beta * scale", DISTAC_TESTS, count=2),
    Mutation("sam", "SAMerging's optimiser fed the unperturbed gradient (SAM off)", "hfdistac/merging/samerging.py",
             "loss, _, grad = sam_gradients(", "loss, grad, _ = sam_gradients(",
             ("tests/test_samerging.py", "tests/test_independent.py")),
    Mutation("normalize", "normalised accuracy = raw accuracy (`merge_eval/scoring.py` normalize)",
             "hfdistac/merge_eval/scoring.py", "out[k] = 100.0 * v / n if n else None", "out[k] = v if n else None",
             ("tests/test_merge_cli.py", "tests/test_cards_golden.py", "tests/test_publish.py",
              "tests/test_independent.py")),
    Mutation("alpha-on-test", "α chosen on the **test** split", "hfdistac/merge_eval/selection.py",
             'merged.evaluate_all("validation")', 'merged.evaluate_all("test")',
             ("tests/test_merge_cli.py", "tests/test_publish.py", "tests/test_merging_sota.py",
              "tests/test_independent.py")),
    Mutation("ece", "ECE signed and unnormalised (`metrics.py`)", "hfdistac/metrics.py",
             "ece += in_bin.float().mean() * (conf[in_bin].mean() - correct[in_bin].mean()).abs()",
             "ece += in_bin.float().sum() * (conf[in_bin].mean() - correct[in_bin].mean())",
             ("tests/test_foundation.py", "tests/test_inspect_cli.py", "tests/test_merge_cli.py",
              "tests/test_cards_golden.py", "tests/test_distac.py", "tests/test_independent.py")),
    Mutation("pickle", "a pickle loaded before it is refused (`checkpoints.py`)", "hfdistac/checkpoints.py",
             "    if pickles:\n        raise CheckpointError(",
             "    for name in pickles:  # MUTATION: unpickle first\n"
             "        try:\n"
             "            torch.load(str(directory / name), weights_only=False)\n"
             "        except Exception:\n"
             "            pass\n"
             "    if pickles:\n        raise CheckpointError(",
             ("tests/test_foundation.py::test_pickle_only_checkpoint_is_refused_without_unpickling",
              "tests/test_hub.py", "tests/test_inspect_cli.py", "tests/test_independent.py")),
    Mutation("adapter-pickle", "an adapter's pickle weights loaded before the adapter is refused (`adapters.py`)",
             "hfdistac/adapters.py", "    if not (Path(directory) / ADAPTER_WEIGHTS).is_file():\n",
             "    if (Path(directory) / 'adapter_model.bin').is_file():  # MUTATION: unpickle first\n"
             "        try:\n"
             "            import torch as _t\n"
             "            _t.load(str(Path(directory) / 'adapter_model.bin'), weights_only=False)\n"
             "        except Exception:\n"
             "            pass\n"
             "    if not (Path(directory) / ADAPTER_WEIGHTS).is_file():\n",
             ("tests/test_adapters.py", "tests/test_independent.py")),
    Mutation("kappa-median", "κ from the median of the others' norms instead of the mean (`conditioning/algorithm.py`)",
             "hfdistac/conditioning/algorithm.py", "target = float(statistics.fmean(reference_norms))",
             "target = float(statistics.median(reference_norms))", DISTAC_TESTS),
]


def _copy_repo(dst: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file() and not src.is_symlink():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)


def _apply(root: Path, m: Mutation) -> None:
    path = root / m.path
    text = path.read_text()
    found = text.count(m.old)
    if found != m.count:
        raise SystemExit(f"mutation {m.name!r}: expected {m.count} occurrence(s) of {m.old!r} in {m.path}, "
                         f"found {found}: update the mutation to the code")
    path.write_text(text.replace(m.old, m.new))


def _run_tests(root: Path, tests: tuple[str, ...]) -> tuple[str, int, float]:
    """``(pytest's summary line, exit code, seconds)`` of the selection, run inside ``root``."""
    env = dict(os.environ, PYTHONPATH=str(root), HF_HUB_OFFLINE="1")
    check = subprocess.run([sys.executable, "-c", "import hfdistac; print(hfdistac.__file__)"], cwd=root, env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    if not check.startswith(str(root)):
        raise SystemExit(f"the copy's hfdistac is not the one imported ({check}); uninstall other copies first")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           *tests], cwd=root, env=env, capture_output=True, text=True)
    summary = next((line for line in reversed(proc.stdout.splitlines()) if re.search(r"\d+ (passed|failed)", line)),
                   proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr.strip()[-200:])
    return summary.strip("= "), proc.returncode, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="run the mutations whose name contains this text")
    parser.add_argument("--skip-baseline", action="store_true", help="do not run the unmutated selections first")
    args = parser.parse_args()
    chosen = [m for m in MUTATIONS if args.only in m.name]
    rows = []
    with tempfile.TemporaryDirectory(prefix="hfdistac-mutation-") as tmp:
        clean = Path(tmp) / "clean"
        _copy_repo(clean)
        if not args.skip_baseline:
            for tests in dict.fromkeys(m.tests for m in chosen):
                summary, code, _ = _run_tests(clean, tests)
                print(f"unmutated {' '.join(tests)}: {summary}", flush=True)
                if code != 0:
                    raise SystemExit("the unmutated selection fails: fix the tests before judging mutations")
        for m in chosen:
            root = Path(tmp) / m.name
            shutil.copytree(clean, root)
            _apply(root, m)
            summary, code, seconds = _run_tests(root, m.tests)
            rows.append((m, summary, code != 0, seconds))
            print(f"{m.name}: {summary} ({seconds:.0f} s)", flush=True)
            shutil.rmtree(root)
    print("\n| broken line | tests run | result | caught |\n|:--|:--|:--|:-:|")
    for m, summary, caught, _ in rows:
        tests = ", ".join(t.removeprefix("tests/") for t in m.tests)
        print(f"| {m.what} | {tests} | {summary} | {'yes' if caught else '**no**'} |")
    if not all(caught for _, _, caught, _ in rows):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
