"""The package's shape: the library never imports the CLI, no import cycles, short functions in the pipeline
modules, and a command line that answers --help / --version without importing torch."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hfdistac"


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _imports(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every hfdistac module ``module`` imports, at any depth (function-level imports included)."""
    out: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in modules)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            for alias in node.names:
                candidate = f"{name}.{alias.name}"
                out.add(candidate if candidate in modules else name)
    return {m for m in out if m in modules and m != module}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: _imports(m, p, modules) for m, p in modules.items()}


def test_the_import_walker_sees_relative_and_function_level_imports():
    graph = _graph()
    assert "hfdistac.merge_eval.config" in graph["hfdistac.merge_eval.pipeline"]  # module-level, relative
    assert "hfdistac.checkpoints" in graph["hfdistac.merge_eval.pipeline"]  # inside run_merge
    assert "hfdistac.cli.main" in graph["hfdistac.cli.cmd_merge"]


def test_no_library_module_imports_the_cli():
    offenders = {m: sorted(d for d in deps if d.startswith("hfdistac.cli"))
                 for m, deps in _graph().items() if not m.startswith("hfdistac.cli")}
    assert {m: d for m, d in offenders.items() if d} == {}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (a submodule importing its own package's
    ``__init__`` is not a cycle: Python finishes the package first)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if v.startswith(w + "."):
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_between_library_modules():
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("package", ["conditioning", "merge_eval"])
def test_pipeline_functions_stay_short(package):
    long = []
    for path in (PACKAGE / package).glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80:
                long.append(f"{path.name}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert long == []


def test_help_and_version_do_not_import_torch():
    code = ("import sys\nfrom hfdistac.cli.main import build_parser\nbuild_parser()\n"
            "print(sorted(m for m in ('torch', 'transformers', 'datasets', 'accelerate') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_python_dash_m_hfdistac_cli_answers_version_and_help():
    from hfdistac import __version__

    version = subprocess.run([sys.executable, "-m", "hfdistac.cli", "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.strip() == f"hfdistac {__version__}"
    helped = subprocess.run([sys.executable, "-m", "hfdistac.cli", "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and "condition" in helped.stdout and "merge" in helped.stdout


def test_every_command_is_one_config_and_one_run_function_importable_from_hfdistac():
    """`from hfdistac import XConfig, run_x` for every command; the CLI builds its flags from those very classes,
    and `import hfdistac` alone imports no torch."""
    import hfdistac
    from hfdistac.cli.main import _commands

    exported = {name: getattr(hfdistac, name) for name in hfdistac.__all__}
    for cmd in _commands():
        assert cmd.config_cls in exported.values(), f"{cmd.name}: {cmd.config_cls.__name__} is not in hfdistac"
        run_name = {"run": "run_pipeline"}.get(cmd.name, "run_" + cmd.name.replace("-", "_"))
        assert callable(exported.get(run_name)), f"{cmd.name}: no hfdistac.{run_name}"
    code = "import sys, hfdistac\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_library_calls_apply_the_command_lines_thread_default_once(tiny, tmp_path):
    """run_* sets torch's threads to the free cores on its first call in a process, as the CLI does; a count
    chosen before (hfdistac.set_threads, OMP_NUM_THREADS) is kept."""
    script = f"""
import torch, hfdistac.runtime as r
r.available_cores = lambda: 4
r.busy_cores = lambda *a, **k: 1           # a busy neighbour: 3 cores are free
torch.set_num_threads(4)                  # torch's own default would be every core
from hfdistac import EvaluateConfig, run_evaluate
cfg = EvaluateConfig(model={str(tiny.ft_a)!r}, base={str(tiny.base)!r}, data={str(tiny.data)!r}, limit=4,
                     progress=False)
import sys
if sys.argv[1] == "chosen":
    hfdistac_threads = __import__("hfdistac").set_threads(2)
run_evaluate(cfg)
first = torch.get_num_threads()
torch.set_num_threads(4)
run_evaluate(cfg)                         # once per process: the caller's later choice is kept
print(first, torch.get_num_threads())
"""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["PYTHONPATH"] = str(PACKAGE.parent)
    runs = {case: subprocess.run([sys.executable, "-c", script, case], capture_output=True, text=True, env=env)
            for case in ("default", "chosen")}
    for r in runs.values():
        assert r.returncode == 0, r.stderr[-2000:]
    assert runs["default"].stdout.split() == ["3", "4"]
    assert runs["chosen"].stdout.split() == ["2", "4"]
    env["OMP_NUM_THREADS"] = "1"
    r = subprocess.run([sys.executable, "-c", script, "default"], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and r.stdout.split() == ["4", "4"], r.stderr[-2000:]
