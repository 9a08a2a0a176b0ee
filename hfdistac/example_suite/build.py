"""Build the example suite: data → contrastive pretraining → fine-tuning (3 variants per task) → checks.

See the package docstring (:mod:`hfdistac.example_suite`) for the layout and the conditions checked.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..runtime import torch_state
from . import files
from .config import SuiteConfig, SuitePlan
from .domains import TASK_BY_NAME, TASK_NAMES, captions, sample, vocabulary

logger = logging.getLogger(__name__)

SUITE_FORMAT = "hfdistac.example_suite.v2"
MARKER = ".hfdistac-example-suite"


@dataclass
class SuiteSummary:
    """What a build produced (or found cached).

    Attributes:
        directory: The suite's root directory.
        figures: The content of ``suite.json``.
        cached: Whether an existing complete suite was reused.
        pushed: With ``--push-to``, what :func:`~.publish.push_suite` returned (repos, commits, Hub recipes).
    """

    directory: Path
    figures: dict[str, Any]
    cached: bool = False
    pushed: dict[str, Any] | None = None

    @property
    def conditions_hold(self) -> bool:
        return bool(self.figures.get("conditions_hold"))

    @property
    def build_seconds(self) -> float:
        return float(self.figures.get("build_seconds", 0.0))

    def table(self) -> str:
        """A short plain-text table of the per-task figures, the merges and the four conditions."""
        return format_table(self.figures)

    def as_dict(self) -> dict[str, Any]:
        return {"directory": str(self.directory), "cached": self.cached, **self.figures}


def format_table(fig: dict[str, Any]) -> str:
    """Render the figures of ``suite.json`` as a short table."""
    rows = [f"{'task':<11}{'chance':>7}{'zero-shot':>10}{'fine-tuned':>11}{'|τ|':>7}{'|τ| hi':>8}"
            f"{'H zs':>7}{'H std':>8}{'H ls':>7}"]
    for name, t in fig["tasks"].items():
        rows.append(f"{name:<11}{t['chance']:>7.1f}{t['zero_shot']['accuracy']:>10.1f}"
                    f"{t['standard']['accuracy']:>11.1f}{t['standard']['norm']:>7.2f}{t['highlr']['norm']:>8.2f}"
                    f"{t['zero_shot']['entropy']:>7.3f}{t['standard']['entropy']:>8.3f}{t['ls']['entropy']:>7.3f}")
    rows.append("")
    rows.append(f"{'merge (task arithmetic)':<26}{'alpha':>6}{'mean acc':>10}{'mean norm. acc':>16}")
    for name, m in fig["merges"].items():
        rows.append(f"{name:<26}{m['alpha']:>6.2f}{m['mean_accuracy']:>10.1f}{m['mean_normalized_accuracy']:>16.1f}")
    rows.append("")
    for key, c in fig["checks"].items():
        rows.append(f"({key}) {'ok  ' if c['holds'] else 'FAIL'} {c['text']}")
    rows.append(f"built in {fig['build_seconds']:.0f} s (seed {fig['seed']}, {fig['num_tasks']} tasks)")
    return "\n".join(rows)


# ------------------------------------------------------------------------------------------------------------
# caching and atomic directories


def _read_summary(directory: Path) -> dict[str, Any] | None:
    try:
        fig = json.loads((directory / "suite.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(fig, dict) or fig.get("format") != SUITE_FORMAT or fig.get("complete") is not True:
        return None
    return fig


def suite_status(directory: str | Path) -> str:
    """State of a directory: ``"missing"``, ``"complete"``, ``"partial"`` (a suite whose build did not finish)
    or ``"foreign"`` (a non-empty directory that is not a suite). Only a directory holding the build's own
    manifest (:data:`MARKER`) is a suite: an unrelated ``suite.json`` does not make one."""
    d = Path(directory)
    if not d.exists():
        return "missing"
    if (d / MARKER).is_file():
        return "complete" if _read_summary(d) is not None else "partial"
    if d.is_dir() and not any(d.iterdir()):
        return "missing"
    return "foreign"


#: What suites built before the manifest listed its files held at their top level.
_LEGACY_LAYOUT = ("base", "data", "models", "recipes", "README.md", "suite.json", MARKER)


def _owned_files(directory: Path) -> set[Path]:
    """The files the build wrote into ``directory``, from its manifest (the only ones a rebuild may delete)."""
    lines = (directory / MARKER).read_text(encoding="utf-8").splitlines()[1:]
    if lines:
        return {directory / line for line in lines if line.strip()} | {directory / MARKER}
    owned = set()
    for name in _LEGACY_LAYOUT:
        p = directory / name
        owned.update(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else owned.add(p)
    return owned


def _foreign_files(directory: Path) -> list[Path]:
    """Files in a suite directory that its build did not write."""
    owned = _owned_files(directory)
    return sorted(p for p in directory.rglob("*") if (p.is_file() or p.is_symlink()) and p not in owned)


def _remove_owned(directory: Path) -> None:
    """Delete exactly the files the build wrote, then the folders that became empty, then ``directory``."""
    for p in _owned_files(directory):
        p.unlink(missing_ok=True)
    for folder in sorted((q for q in directory.rglob("*") if q.is_dir()), key=lambda q: len(q.parts),
                         reverse=True):
        with contextlib.suppress(OSError):
            folder.rmdir()
    directory.rmdir()  # fails (OSError) if anything else is still there: nothing else was deleted


def _write_manifest(root: Path) -> None:
    files_written = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()
                           and p.name != MARKER)
    (root / MARKER).write_text("\n".join([SUITE_FORMAT, *files_written]) + "\n", encoding="utf-8")


def _same_request(fig: dict[str, Any], config: SuiteConfig, plan: SuitePlan) -> bool:
    return (fig.get("seed") == config.seed and fig.get("num_tasks") == config.num_tasks
            and fig.get("mismatch_task") == config.resolved_mismatch_task
            and fig.get("plan") == _plan_dict(plan))


def _plan_dict(plan: SuitePlan) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(plan)))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_stale_tmp(directory: Path) -> None:
    for p in directory.parent.glob(f".{directory.name}.tmp-*"):
        try:
            pid = int(p.name.rsplit("-", 1)[1])
        except ValueError:
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            logger.info("removing %s left by an interrupted build", p)
            shutil.rmtree(p, ignore_errors=True)


@contextlib.contextmanager
def _quiet_hf_progress():
    """Hide the per-file progress bars of ``datasets`` and ``transformers`` (the suite shows its own)."""
    import datasets
    from transformers.utils import logging as hf_logging

    ds_was = datasets.is_progress_bar_enabled()
    tf_was = hf_logging.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if ds_was:
            datasets.enable_progress_bars()
        if tf_was:
            hf_logging.enable_progress_bar()


# ------------------------------------------------------------------------------------------------------------
# the build


def build_example_suite(directory: str | Path, *, num_tasks: int = 8, seed: int = 0,
                        mismatch_task: str | None = None, progress: bool = True,
                        plan: SuitePlan | None = None, workers: int | None = None) -> SuiteSummary:
    """Write the example suite to ``directory`` (or reuse it when it is already complete).

    The build happens in a hidden sibling directory that is renamed into place once ``suite.json`` (with
    ``"complete": true``) has been written, so an interrupted build never leaves a directory that looks
    complete; a partial suite directory found at ``directory`` is rebuilt.

    Args:
        directory: Where to write the suite.
        num_tasks: Number of tasks (2-8), taken in order from :data:`TASK_NAMES`.
        seed: Seed of every random draw; the same seed gives byte-identical weights, datasets, cards and
            recipes.
        mismatch_task: The task whose model ``norm-mismatch.yaml`` replaces by its high-LR variant (default
            the first task).
        progress: Show tqdm progress bars.
        plan: Sizes and hyper-parameters (default :class:`SuitePlan`); for experiments.
        workers: Processes that fine-tune the models in parallel (default: the CPU cores available, at most
            4). Every run uses one torch thread and its own seed, so the files do not depend on it.

    Returns:
        A :class:`SuiteSummary`; its ``table()`` renders the figures and the checks (a)-(f).

    Raises:
        InputError: for out-of-range arguments, or when ``directory`` is a non-empty directory that is not
            an example suite.
    """
    config = SuiteConfig(num_tasks=num_tasks, seed=seed, mismatch_task=mismatch_task)
    config.validate()
    plan = plan or SuitePlan()
    directory = Path(directory).absolute()
    status = suite_status(directory)
    if status == "complete":
        fig = _read_summary(directory)
        assert fig is not None
        if _same_request(fig, config, plan):
            logger.info("example suite at %s is complete; reusing it", directory)
            return SuiteSummary(directory, fig, cached=True)
        logger.warning("example suite at %s was built with other settings (seed %s, %s tasks); rebuilding",
                       directory, fig.get("seed"), fig.get("num_tasks"))
    elif status == "partial":
        logger.warning("example suite at %s is incomplete (an interrupted build); rebuilding", directory)
    elif status == "foreign":
        raise InputError(f"{str(directory)!r} exists and is not an hfdistac example suite",
                         "choose a new or empty directory; the build never overwrites other files")
    if status in ("complete", "partial"):
        foreign = _foreign_files(directory)
        if foreign:
            shown = ", ".join(str(p.relative_to(directory)) for p in foreign[:3])
            raise InputError(f"{str(directory)!r} holds files the example suite did not write ({shown}"
                             f"{' ...' if len(foreign) > 3 else ''}), so it cannot be rebuilt in place",
                             "move those files away, or build the suite in another directory; the build only "
                             "ever deletes files it wrote itself")

    directory.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale_tmp(directory)
    tmp = directory.parent / f".{directory.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        (tmp / MARKER).write_text(SUITE_FORMAT + "\n", encoding="utf-8")
        t0 = time.perf_counter()
        # One intra-op thread: the same files whatever the machine's thread settings (reduction order changes
        # the floats, and 2,500 training steps amplify that), and faster for a 32-wide model anyway.
        with torch_state(threads=1), _quiet_hf_progress():
            fig = _build_into(tmp, config, plan, progress, _default_workers() if workers is None else workers)
        fig["build_seconds"] = round(time.perf_counter() - t0, 2)
        (tmp / "README.md").write_text(files.suite_readme(_table_without_time(fig), config.task_names, seed,
                                                          plan.highlr_factor), encoding="utf-8")
        fig["complete"] = True  # written last: its presence marks a finished build
        (tmp / "suite.json").write_text(json.dumps(fig, indent=2, sort_keys=False) + "\n", encoding="utf-8")
        _write_manifest(tmp)
        if directory.exists():
            try:
                _remove_owned(directory) if (directory / MARKER).is_file() else directory.rmdir()
            except OSError:
                raise InputError(f"files appeared in {str(directory)!r} while the suite was being built; it was "
                                 "left as it is (only the suite's own files were removed)",
                                 "move the other files away and run the build again") from None
        os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    summary = SuiteSummary(directory, fig, cached=False)
    if not summary.conditions_hold:
        failed = [k for k, c in fig["checks"].items() if not c["holds"]]
        logger.warning("example suite built, but condition(s) %s do not hold: %s", ", ".join(failed),
                       "; ".join(fig["checks"][k]["text"] for k in failed))
    return summary


def _table_without_time(fig: dict[str, Any]) -> str:
    return "\n".join(line for line in format_table(fig).splitlines() if not line.startswith("built in"))


def _processed(processor, images: np.ndarray) -> torch.Tensor:
    from PIL import Image

    return processor([Image.fromarray(a) for a in images], return_tensors="pt")["pixel_values"]


def _default_workers() -> int:
    """One fine-tuning worker (of one thread) per free core, at most 4 (:func:`hfdistac.runtime.free_cores`)."""
    from ..runtime import free_cores

    return max(1, min(free_cores(), 4))


def _worker_command(work: Path, index: int, count: int) -> list[str]:
    """The command line of fine-tuning worker ``index`` of ``count`` (see :mod:`.worker`)."""
    from ..processes import module_command

    return module_command("hfdistac.example_suite.worker", work, index, count)


def _run_finetunes(work: Path, base_vm, jobs: list[dict[str, Any]], tensors: dict[str, torch.Tensor],
                   logit_scale: float, workers: int, progress: bool) -> dict[str, torch.Tensor]:
    """Run the fine-tuning jobs (see :mod:`.worker`) inline or in ``workers`` processes; return test logits."""
    from safetensors.torch import load_file, save_file
    from tqdm.auto import tqdm

    from ..processes import run_worker_processes
    from . import worker

    work.mkdir(parents=True, exist_ok=True)
    files.save_vision_model(base_vm, work / worker.BASE_DIR)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(work / worker.TENSORS_FILE))
    spec = {"logit_scale": logit_scale, "jobs": jobs}
    (work / worker.JOBS_FILE).write_text(json.dumps(spec), encoding="utf-8")
    workers = max(1, min(workers, len(jobs)))
    bar = tqdm(total=len(jobs), desc="fine-tune models", disable=not progress, dynamic_ncols=True)
    with bar:
        if workers == 1:  # inline, from the same base file the workers would read
            for job in jobs:
                worker.run_job(work, job, spec, tensors, progress=progress)
                bar.update(1)
        else:
            run_worker_processes(lambda i, n: _worker_command(work, i, n), workers, work, total=len(jobs),
                                 what="example-suite fine-tuning", bar=bar,
                                 finished=lambda: sum(worker.job_logits_path(work, j["key"]).exists() for j in jobs))
    return {j["key"]: load_file(str(worker.job_logits_path(work, j["key"])))["logits"] for j in jobs}


#: The three models fine-tuned per task: folder suffix, and whether label-smoothed (the high-LR one: the plan's
#: ``highlr_factor`` x the rate).
VARIANTS = {"standard": ("", False), "highlr": ("-highlr", False), "ls": ("-ls", True)}
VARIANT_OF_SUFFIX = {suffix: variant for variant, (suffix, _) in VARIANTS.items()}


def _variant_settings(plan: SuitePlan) -> dict[str, dict[str, Any]]:
    """Learning rate, label smoothing and folder suffix of each variant under ``plan``."""
    return {variant: {"lr": plan.finetune_lr * (plan.highlr_factor if variant == "highlr" else 1.0),
                      "label_smoothing": plan.label_smoothing if smoothed else 0.0, "suffix": suffix}
            for variant, (suffix, smoothed) in VARIANTS.items()}


def _build_into(root: Path, config: SuiteConfig, plan: SuitePlan, progress: bool, workers: int) -> dict[str, Any]:
    """Every stage of the build into ``root``; returns ``suite.json``'s content (less the times)."""
    import transformers

    from .. import __version__
    from ..tiny import tiny_image_processor

    names = config.task_names
    processor = tiny_image_processor(plan.image_size)
    data, n_val = _write_datasets(root, names, plan, config.seed, processor)
    clip, tokenizer, pre_losses = _pretrain_base(root, plan, config.seed, processor, progress)
    models = _finetune_models(root, clip, tokenizer, data, names, plan, config.seed, n_val, workers, progress)
    mismatch = config.resolved_mismatch_task
    recipes = _write_recipes(root, names, mismatch, plan)
    merges, ls_cost = _check_merges(clip.vision_model, models, data, recipes, plan, n_val)
    checks = _checks(models["task_fig"], merges, plan, mismatch, ls_cost)
    return {
        "format": SUITE_FORMAT,
        "seed": config.seed,
        "num_tasks": config.num_tasks,
        "task_names": names,
        "mismatch_task": mismatch,
        "plan": _plan_dict(plan),
        "versions": {"hfdistac": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
                     "datasets": __import__("datasets").__version__, "numpy": np.__version__},
        "alpha_selection": f"grid {plan.alpha_grid[0]}..{plan.alpha_grid[-1]} step 0.05 maximising mean "
                           f"normalised accuracy on the first {n_val} rows of each train split (held out from "
                           "fine-tuning); ties to the smaller alpha; reported on test",
        "pretrain_final_loss": round(float(np.mean(pre_losses[-20:])), 4),
        "tasks": models["task_fig"],
        "merges": merges,
        "checks": checks,
        "conditions_hold": all(c["holds"] for c in checks.values()),
    }


def _write_datasets(root: Path, names: list[str], plan: SuitePlan, seed: int, processor
                    ) -> tuple[dict[str, dict[str, Any]], int]:
    """Stage 1: each task's parquet splits and card; returns its preprocessed ``train``/``test`` tensors (the
    first ``n_val`` train rows are the ``holdout`` split) and ``n_val``. A task's data does not depend on how many
    tasks are built."""
    data: dict[str, dict[str, Any]] = {}
    n_val = max(1, int(round(plan.val_fraction * plan.n_train)))
    for name in names:
        idx = TASK_NAMES.index(name)
        out: dict[str, Any] = {}
        for split, n in (("train", plan.n_train), ("test", plan.n_test)):
            rng = np.random.default_rng([seed, 1, idx, 0 if split == "train" else 1])
            images, labels = sample(name, n, rng)
            # the first n_val drawn train images form the holdout split (never fine-tuned on; chooses alpha)
            parts = {"holdout": np.s_[:n_val], "train": np.s_[n_val:]} if split == "train" else {"test": np.s_[:]}
            for part, rows in parts.items():
                files.write_split(root / "data" / name / "data" / f"{part}-00000-of-00001.parquet", images[rows],
                                  labels[rows], TASK_BY_NAME[name].classes)
            out[split] = (_processed(processor, images), torch.from_numpy(labels))
        (root / "data" / name / "README.md").write_text(
            files.dataset_card(TASK_BY_NAME[name], plan.n_train - n_val, n_val, plan.n_test, seed), encoding="utf-8")
        data[name] = out
    logger.info("wrote %d datasets", len(names))
    return data, n_val


def _pretrain_base(root: Path, plan: SuitePlan, seed: int, processor, progress: bool):
    """Stage 2: contrastive pretraining of the base CLIP on captioned images of every domain, then its logit
    scale set to the plan's and the base saved; returns ``(clip, tokenizer, pretraining losses)``."""
    from transformers import CLIPModel

    from ..tiny import build_word_tokenizer, tiny_clip_config
    from .training import pretrain_clip

    tokenizer = build_word_tokenizer(vocabulary())
    pre_images, pre_captions = [], []
    for name in TASK_NAMES:  # every domain, however many tasks are built: the base does not depend on it
        rng = np.random.default_rng([seed, 0, TASK_NAMES.index(name)])
        images, labels = sample(name, plan.pretrain_per_task, rng, pretrain_shift=plan.pretrain_shift)
        pre_images.append(images)
        pre_captions += captions(name, labels, rng, plan.sibling_caption_probability, files.GENERIC_TEMPLATE)
    pre_pixels = _processed(processor, np.concatenate(pre_images))
    enc = tokenizer(pre_captions, padding=True, return_tensors="pt")
    cfg = tiny_clip_config(tokenizer, hidden_size=plan.hidden_size, num_layers=plan.num_layers,
                           num_heads=plan.num_heads, image_size=plan.image_size, patch_size=plan.patch_size,
                           projection_dim=plan.hidden_size)
    cfg.logit_scale_init_value = float(np.log(plan.pretrain_logit_scale))
    torch.manual_seed(seed)
    clip = CLIPModel(cfg)
    pre_losses = pretrain_clip(clip, pre_pixels, enc["input_ids"], enc["attention_mask"],
                               steps=plan.pretrain_steps, batch_size=plan.pretrain_batch, lr=plan.pretrain_lr,
                               seed=seed, learn_temperature=False, progress=progress)
    # The tiny CLIP separates its class captions far more widely than its zero-shot accuracy deserves: at the
    # pretraining scale zero-shot would be surer than a label-smoothed model (REPRODUCTION.md); every head uses this.
    with torch.no_grad():
        clip.logit_scale.fill_(float(np.log(plan.logit_scale)))
    clip.save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    processor.save_pretrained(root / "base")
    (root / "base" / "README.md").write_text(files.base_card(
        hidden=plan.hidden_size, layers=plan.num_layers, patch=plan.patch_size, image_size=plan.image_size,
        steps=plan.pretrain_steps, n_images=plan.pretrain_per_task * len(TASK_NAMES), seed=seed,
        pretrain_logit_scale=plan.pretrain_logit_scale, logit_scale=plan.logit_scale), encoding="utf-8")
    logger.info("pretrained the base model (final loss %.3f)", float(np.mean(pre_losses[-20:])))
    return clip, tokenizer, pre_losses


def _finetune_models(root: Path, clip, tokenizer, data: dict[str, dict[str, Any]], names: list[str], plan: SuitePlan,
                     seed: int, n_val: int, workers: int, progress: bool) -> dict[str, Any]:
    """Stage 3: zero-shot heads, the three fine-tuned models of every task (saved with their cards) and what the
    checks need of them.

    Returns:
        ``{"task_fig": suite.json's per-task figures, "tvs": task vectors by (task, variant), "heads": heads by
        task, "theta0": the base tower's parameters}``.
    """
    from ..heads import build_head
    from .training import predict_logits, vision_params

    heads = {n: build_head(clip, tokenizer, list(TASK_BY_NAME[n].classes), [files.GENERIC_TEMPLATE]) for n in names}
    base_vm = clip.vision_model
    theta0 = vision_params(base_vm)
    variants = _variant_settings(plan)
    zero_shot = {n: predict_logits(base_vm, heads[n], data[n]["test"][0]) for n in names}
    tensors: dict[str, torch.Tensor] = {"head_projection": heads[names[0]].projection}
    jobs = []
    for ti, name in enumerate(names):
        x_tr, y_tr = data[name]["train"]
        # the first n_val drawn rows are the holdout split, held out to choose alpha
        tensors.update({f"{name}.x": x_tr[n_val:], f"{name}.y": y_tr[n_val:], f"{name}.x_test": data[name]["test"][0],
                        f"{name}.head_weight": heads[name].weight})
        for variant, v in variants.items():
            jobs.append({"key": f"{name}/{variant}", "task": name, "classes": list(TASK_BY_NAME[name].classes),
                         "output": str(root / "models" / f"{name}{v['suffix']}"), "steps": plan.finetune_steps,
                         "batch_size": plan.finetune_batch, "lr": v["lr"], "seed": seed * 1000 + ti,
                         "label_smoothing": v["label_smoothing"]})
    work = root / ".work"
    test_logits = _run_finetunes(work, base_vm, jobs, tensors, float(clip.logit_scale.detach().exp()), workers, progress)
    task_fig: dict[str, Any] = {}
    tvs: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for ti, name in enumerate(names):
        task_fig[name] = _describe_task(root, name, zero_shot[name], data[name]["test"][1], test_logits, theta0, tvs,
                                        plan, variants, seed * 1000 + ti, n_val)
    shutil.rmtree(work)
    return {"task_fig": task_fig, "tvs": tvs, "heads": heads, "theta0": theta0}


def _describe_task(root: Path, name: str, zero_shot: torch.Tensor, y_test: torch.Tensor,
                   test_logits: dict[str, torch.Tensor], theta0: dict[str, torch.Tensor],
                   tvs: dict[tuple[str, str], dict[str, torch.Tensor]], plan: SuitePlan,
                   variants: dict[str, dict[str, Any]], job_seed: int, n_val: int) -> dict[str, Any]:
    """One task's figures (zero-shot and each model: accuracy, entropy, norm); fills ``tvs`` and writes each model
    folder's processor config and card."""
    from safetensors.torch import load_file

    from ..metrics import top1_accuracy as accuracy
    from ..task_vectors import global_norm
    from .training import mean_entropy

    t = {"classes": list(TASK_BY_NAME[name].classes), "chance": round(100.0 / len(TASK_BY_NAME[name].classes), 2),
         "zero_shot": {"accuracy": round(accuracy(zero_shot, y_test), 2), "entropy": round(mean_entropy(zero_shot), 4)}}
    for variant, v in variants.items():
        folder = root / "models" / f"{name}{v['suffix']}"
        logits = test_logits[f"{name}/{variant}"]
        w = {k: v_.float() for k, v_ in load_file(str(folder / "model.safetensors")).items()}
        tv = {k: w[k] - theta0[k] for k in theta0}
        tvs[(name, variant)] = tv
        t[variant] = {"accuracy": round(accuracy(logits, y_test), 2), "entropy": round(mean_entropy(logits), 5),
                      "norm": round(global_norm(tv), 4)}
        # the base's image processor beside each model, so AutoImageProcessor loads every model folder
        shutil.copyfile(root / "base" / "preprocessor_config.json", folder / "preprocessor_config.json")
        (folder / "README.md").write_text(files.model_card(
            name, variant, lr=v["lr"], steps=plan.finetune_steps, batch_size=plan.finetune_batch,
            label_smoothing=v["label_smoothing"], seed=job_seed, distac_lr=plan.distac_lr,
            finetune_lr=plan.finetune_lr,
            train_accuracy_note=f"Trained on `train` ({plan.n_train - n_val} images); the {n_val} images of "
                                "`holdout` were held out to choose merging coefficients."), encoding="utf-8")
    return t


def _write_recipes(root: Path, names: list[str], mismatch: str, plan: SuitePlan) -> dict[str, tuple[str, dict]]:
    """Stage 4: the three recipes; returns ``{recipe name: (description, {task: model folder suffix})}``."""
    suffix = {variant: folder_suffix for variant, (folder_suffix, _) in VARIANTS.items()}
    recipes = {
        "original": ("the standard fine-tuned models (the ideal benchmark)", {n: suffix["standard"] for n in names}),
        "norm-mismatch": (f"'{mismatch}' replaced by its {plan.highlr_factor:g}x-learning-rate model (norm mismatch)",
                          {n: suffix["highlr" if n == mismatch else "standard"] for n in names}),
        "low-confidence": ("every model label-smoothed (low confidence)", {n: suffix["ls"] for n in names}),
    }
    (root / "recipes").mkdir()
    for rname, (desc, suffixes) in recipes.items():
        # no normaliser: each scenario is normalised by its own source models, as in the paper's Table 1
        tasks = [{"name": n, "model": f"../models/{n}{suffixes[n]}", "dataset": f"../data/{n}",
                  "train_split": "train", "val_split": "holdout", "test_split": "test"} for n in names]
        (root / "recipes" / f"{rname}.yaml").write_text(files.recipe_text(rname, desc, tasks), encoding="utf-8")
    return recipes


def _check_merges(base_vm, models: dict[str, Any], data: dict[str, dict[str, Any]],
                  recipes: dict[str, tuple[str, dict]], plan: SuitePlan, n_val: int
                  ) -> tuple[dict[str, Any], dict[str, float]]:
    """Stage 5: each recipe's task-arithmetic merge (alpha on the held-out rows of train, reported on test) and
    check (f)'s cost of one label-smoothed vector; returns ``(merges, ls_cost)``."""
    from ..metrics import top1_accuracy as accuracy
    from .training import load_vision_params, predict_logits

    theta0, tvs, heads, task_fig = models["theta0"], models["tvs"], models["heads"], models["task_fig"]
    names = list(task_fig)
    merge_vm = copy.deepcopy(base_vm)
    # each source model's holdout accuracy normalises the validation score, as `hfdistac merge` does
    holdout_acc = {}
    for n in names:
        x, y = data[n]["train"][0][:n_val], data[n]["train"][1][:n_val]
        for variant in VARIANTS:
            load_vision_params(merge_vm, {k: theta0[k] + tvs[(n, variant)][k] for k in theta0})
            holdout_acc[(n, variant)] = accuracy(predict_logits(merge_vm, heads[n], x), y)

    def evaluate(summed: dict[str, torch.Tensor], alpha: float, split: str) -> dict[str, float]:
        load_vision_params(merge_vm, {k: theta0[k] + alpha * summed[k] for k in theta0})
        accs = {}
        for n in names:
            x, y = data[n][split]
            if split == "train":
                x, y = x[:n_val], y[:n_val]
            accs[n] = accuracy(predict_logits(merge_vm, heads[n], x), y)
        return accs

    merges: dict[str, Any] = {}
    for rname, (_, suffixes) in recipes.items():
        chosen = {n: VARIANT_OF_SUFFIX[suffixes[n]] for n in names}
        summed = {k: sum(tvs[(n, chosen[n])][k] for n in names) for k in theta0}
        best_alpha, best = 0.0, -1.0
        for alpha in plan.alpha_grid:  # ties go to the smaller alpha
            val = evaluate(summed, alpha, "train")
            score = float(np.mean([val[n] / max(holdout_acc[(n, chosen[n])], 1e-9) for n in names]))
            if score > best + 1e-9:
                best_alpha, best = alpha, score
        test = evaluate(summed, best_alpha, "test")
        merges[rname] = {
            "alpha": best_alpha,
            "mean_accuracy": round(float(np.mean(list(test.values()))), 2),
            "mean_normalized_accuracy": round(float(np.mean(
                [100.0 * test[n] / max(task_fig[n][chosen[n]]["accuracy"], 1e-9) for n in names])), 2),
            "accuracy": {n: round(a, 2) for n, a in test.items()},
        }
    return merges, _ls_cost(merge_vm, theta0, tvs, heads, data, task_fig, plan.ls_cost_alpha)


def _ls_cost(vm, theta0, tvs, heads, data, task_fig: dict[str, Any], alpha: float) -> dict[str, float]:
    """Per task: the mean change, in points, of the *other* tasks' test accuracy (against zero-shot) when its
    label-smoothed vector alone is added at ``alpha`` (check (f): confidence is task-local)."""
    from ..metrics import top1_accuracy as accuracy
    from .training import load_vision_params, predict_logits

    names = list(task_fig)
    cost = {}
    for n in names:
        load_vision_params(vm, {k: theta0[k] + alpha * tvs[(n, "ls")][k] for k in theta0})
        cost[n] = float(np.mean([accuracy(predict_logits(vm, heads[m], data[m]["test"][0]), data[m]["test"][1])
                                 - task_fig[m]["zero_shot"]["accuracy"] for m in names if m != n]))
    return cost


def _checks(task_fig: dict[str, Any], merges: dict[str, Any], plan: SuitePlan, mismatch: str,
            ls_cost: dict[str, float]) -> dict[str, Any]:
    names = list(task_fig)
    gains = {n: task_fig[n]["standard"]["accuracy"] - task_fig[n]["zero_shot"]["accuracy"] for n in names}
    zs_mean = float(np.mean([task_fig[n]["zero_shot"]["accuracy"] for n in names]))
    ratios = {n: task_fig[n]["highlr"]["norm"] / max(task_fig[n]["standard"]["norm"], 1e-12) for n in names}
    h_std = float(np.mean([task_fig[n]["standard"]["entropy"] for n in names]))
    h_ls = float(np.mean([task_fig[n]["ls"]["entropy"] for n in names]))
    orig = merges["original"]["mean_normalized_accuracy"]
    nm = merges["norm-mismatch"]["mean_normalized_accuracy"]
    lc = merges["low-confidence"]["mean_normalized_accuracy"]
    min_gain = min(gains.values())
    h_zs = float(np.mean([task_fig[n]["zero_shot"]["entropy"] for n in names]))
    cost = float(np.mean(list(ls_cost.values())))
    return {
        "a": {"holds": min_gain >= plan.min_gain_points, "min_gain_points": round(min_gain, 2),
              "gain_points": {n: round(g, 2) for n, g in gains.items()},
              "text": f"fine-tuned beats zero-shot on every task by >= {plan.min_gain_points:g} points "
                      f"(smallest gain {min_gain:.1f})"},
        "b": {"holds": merges["original"]["mean_accuracy"] > zs_mean + 0.5,
              "merged_mean_accuracy": merges["original"]["mean_accuracy"], "zero_shot_mean_accuracy": round(zs_mean, 2),
              "text": f"task-arithmetic merge {merges['original']['mean_accuracy']:.1f} > zero-shot {zs_mean:.1f} "
                      "(mean accuracy)"},
        "c": {"holds": min(ratios.values()) >= plan.min_norm_ratio and nm < orig,
              "norm_ratio_min": round(min(ratios.values()), 3),
              "norm_ratio_mean": round(float(np.mean(list(ratios.values()))), 3),
              "normalized_accuracy_original": orig, "normalized_accuracy_norm_mismatch": nm,
              "text": f"|τ highlr| / |τ| >= {plan.min_norm_ratio:g} (min {min(ratios.values()):.1f}) and swapping "
                      f"'{mismatch}-highlr' in lowers the normalised accuracy ({orig:.1f} -> {nm:.1f})"},
        "d": {"holds": h_ls >= plan.min_entropy_ratio * h_std and lc < orig,
              "entropy_standard": round(h_std, 5), "entropy_ls": round(h_ls, 5),
              "entropy_ratio": round(h_ls / max(h_std, 1e-12), 2),
              "normalized_accuracy_low_confidence": lc,
              "text": f"mean entropy -ls / standard >= {plan.min_entropy_ratio:g} ({h_ls / max(h_std, 1e-12):.1f}x) "
                      f"and merging the -ls models lowers the normalised accuracy ({orig:.1f} -> {lc:.1f})"},
        "e": {"holds": h_std < h_ls < h_zs, "entropy_zero_shot": round(h_zs, 5), "entropy_ls": round(h_ls, 5),
              "entropy_standard": round(h_std, 5),
              "text": f"mean entropy: standard < -ls < zero-shot ({h_std:.3f} < {h_ls:.3f} < {h_zs:.3f}; label "
                      "smoothing makes a model surer than zero-shot, less sure than standard fine-tuning)"},
        "f": {"holds": cost >= -plan.max_ls_cost_points, "mean_points": round(cost, 2),
              "points": {n: round(c, 2) for n, c in ls_cost.items()}, "alpha": plan.ls_cost_alpha,
              "text": f"one -ls vector added alone at alpha {plan.ls_cost_alpha:g} changes the other tasks' accuracy "
                      f"by {cost:+.1f} points on average (>= -{plan.max_ls_cost_points:g}: confidence is task-local)"},
    }
