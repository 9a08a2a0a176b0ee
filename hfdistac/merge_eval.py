"""Merging a recipe's task vectors and evaluating the result: the library form of ``hfdistac merge``.

Pipeline (METHOD.md §2):

1. Resolve the recipe: base θ₀, and per task a task vector — from a ``condition`` output's
   ``task_vector.safetensors`` when present (conditioned vectors replace the originals), else θ_t − θ₀ —
   written to a scratch safetensors file and read back lazily, so merging holds one tensor per task at a
   time. Normalisers stay the *original* fine-tuned models.
2. Per task: the frozen zero-shot head, the seeded validation split (10 % of train) and the test split;
   preprocessed images are kept in memory (up to a budget) because every α is evaluated on them.
3. Rows: zero-shot θ₀, individual (normaliser) models — computed once and cached on disk — and for each
   method τ_merged (Consensus TA first selects λ_t per task on validation), α from a grid on validation
   maximising mean normalised accuracy (ties → smaller α), then one evaluation on test. Methods that need
   data (SAMerging, METHOD.md §3) get a :class:`~hfdistac.merging.samerging.SAMergingData` built from
   unlabeled batches of each task's ``train_split`` and return θ₀ + 1·τ_merged (no α); their learned
   coefficients are written as ``coefficients.safetensors`` plus a heat-map ``coefficients.png``.
4. ``calibrate``: one temperature per task fitted on validation NLL of the merged model; ECE before/after.

Normalised accuracy(t) = accuracy(merged, t) / accuracy(normaliser t, t) on the same split.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .configs import help_field as _h
from .errors import CheckpointError, InputError
from .metrics import top1_accuracy

logger = logging.getLogger(__name__)

DEFAULT_ALPHA_GRID = tuple(round(0.05 * i, 2) for i in range(21))
NO_DATA_ALPHA = 0.3
PIXEL_CACHE_BYTES = 2 * 1024**3
# Methods that train (SAMerging: 1,000 optimiser steps of two forward/backward passes over every task) run only
# when named: even on the tiny test fixtures one SAMerging run takes ~4x a task-arithmetic run with its
# alpha search, and `--method all` is the quick comparison table (benchmarks/bench_samerging.py).
NOT_IN_ALL = ("samerging",)
SAMERGING_OBJECTIVES = ("kd", "entropy")


@dataclass
class MergeConfig:
    """``hfdistac merge``: merge a recipe's task vectors, choose α on validation, evaluate on test."""

    recipe: str = field(default="", metadata=_h("recipe YAML (base + tasks), e.g. example-suite/recipes/original.yaml",
                                                positional=True, metavar="RECIPE"))
    method: str = field(default="all", metadata=_h(
        "merge method: task_arithmetic, ties, consensus, tsvm, average, samerging, or all (one comparison "
        "table of every method except samerging, which learns coefficients for 1,000 steps and is therefore "
        "only run when named)"))
    alpha: float | None = field(default=None, metadata=_h(
        "fix the scaling coefficient alpha (0..10) instead of searching it on validation data"))
    alpha_grid: list[float] | None = field(default=None, metadata=_h(
        "alpha values to search (default 0, 0.05, ..., 1.0)", nargs="+"))
    density: float = field(default=0.2, metadata=_h("TIES: fraction of entries kept per task vector, in (0, 1]"))
    tall_lambdas: list[float] | None = field(default=None, metadata=_h(
        "Consensus: candidate lambdas for each task's TALL mask, chosen per task on validation "
        "(default 0.2 0.3 0.4 0.5 0.6)", nargs="+"))
    consensus_k: int = field(default=2, metadata=_h("Consensus: keep entries selected by at least k task masks"))
    objective: str = field(default="kd", metadata=_h(
        "SAMerging: kd = multi-teacher distillation (the paper); entropy = layer-wise AdaMerging (entropy "
        "minimisation, coefficients clamped to [0, 1])", choices=list(SAMERGING_OBJECTIVES)))
    steps: int | None = field(default=None, metadata=_h(
        "SAMerging: optimiser steps (default: 1000 = 10 epochs of the cached batches for kd, 500 for entropy)"))
    sam_rho: float | None = field(default=None, metadata=_h(
        "SAMerging: ASAM radius rho, 0 = plain Adam (default: 0.07 for kd, 0 for entropy)"))
    temperature: float = field(default=2.0, metadata=_h("SAMerging: distillation temperature (kd)"))
    init: float | None = field(default=None, metadata=_h(
        "SAMerging: initial value of every coefficient (default: 0.0 for kd as in the released code, 0.3 for "
        "entropy)"))
    lr: float = field(default=1e-3, metadata=_h("SAMerging: Adam learning rate of the coefficients"))
    batches_per_task: int = field(default=100, metadata=_h(
        "SAMerging: unlabeled batches cached per task from its train split"))
    sam_batch_size: int = field(default=16, metadata=_h("SAMerging: images per task and step"))
    released_sam: bool = field(default=False, metadata=_h(
        "SAMerging: reproduce the released code, whose SAM second pass reuses the unperturbed merged weights "
        "(so it is plain Adam); default: re-merge at Lambda + epsilon"))
    calibrate: bool = field(default=False, metadata=_h(
        "fit one temperature per task on validation NLL of the merged model; report ECE before/after"))
    weights_only: bool = field(default=False, metadata=_h(
        "merge weights only, without evaluating (needs --alpha; datasets in the recipe are ignored)"))
    val_limit: int | None = field(default=1000, metadata=_h("validation images per task for alpha search (0 = all)"))
    test_limit: int | None = field(default=0, metadata=_h("test images per task (0 = all)"))
    batch_size: int = field(default=128, metadata=_h("evaluation batch size"))
    num_workers: int = field(default=0, metadata=_h("DataLoader workers for image preprocessing"))
    device: str = field(default="auto", metadata=_h("torch device: auto, cpu, cuda, cuda:N"))
    mixed_precision: str = field(default="no", metadata=_h("autocast for evaluation", choices=["no", "bf16", "fp16"]))
    output: str | None = field(default=None, metadata=_h(
        "output directory (merged model, report.json, results.md, recipe, card); with --method all one "
        "sub-directory per method", metavar="DIR"))
    overwrite: bool = field(default=False, metadata=_h("replace an existing --output directory"))
    push_to: str | None = field(default=None, metadata=_h("push the merged model to this Hub repo (one method only)",
                                                          metavar="REPO"))
    private: bool = field(default=False, metadata=_h("create the --push-to repo as private"))
    revision: str | None = field(default=None, metadata=_h("branch to push to"))
    create_pr: bool = field(default=False, metadata=_h("push as a pull request"))
    commit_message: str | None = field(default=None, metadata=_h("commit message for --push-to"))
    progress: bool = field(default=True, metadata=_h("show progress bars"))

    def __post_init__(self) -> None:
        from .merging import MERGE_METHODS

        if not self.recipe:
            raise InputError("no recipe given", "pass a recipe YAML, e.g. example-suite/recipes/original.yaml")
        valid = [*MERGE_METHODS, "all"]
        if self.method not in valid:
            raise InputError(f"unknown merge method {self.method!r}; valid: {', '.join(valid)}")
        if self.alpha is not None and not 0 <= self.alpha <= 10:
            raise InputError(f"--alpha must be in [0, 10], got {self.alpha}")
        for a in self.alpha_grid or ():
            if not 0 <= a <= 10:
                raise InputError(f"--alpha-grid values must be in [0, 10], got {a}")
        if not 0 < self.density <= 1:
            raise InputError(f"--density must be in (0, 1], got {self.density}")
        if self.consensus_k < 1:
            raise InputError(f"--consensus-k must be >= 1, got {self.consensus_k}")
        if self.objective not in SAMERGING_OBJECTIVES:
            raise InputError(f"--objective must be one of {', '.join(SAMERGING_OBJECTIVES)}, got {self.objective!r}")
        for name in ("steps", "batches_per_task", "sam_batch_size"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise InputError(f"--{name.replace('_', '-')} must be >= 1, got {v}")
        if self.sam_rho is not None and not self.sam_rho >= 0:
            raise InputError(f"--sam-rho must be >= 0, got {self.sam_rho}")
        for name in ("temperature", "lr"):
            v = getattr(self, name)
            if not (v > 0 and math.isfinite(v)):
                raise InputError(f"--{name} must be a finite number > 0, got {v}")
        if self.init is not None and not math.isfinite(self.init):
            raise InputError(f"--init must be a finite number, got {self.init}")
        for name in ("val_limit", "test_limit"):
            v = getattr(self, name)
            if v is not None and v < 0:
                raise InputError(f"--{name.replace('_', '-')} must be >= 0 (0 = all), got {v}")
            if v == 0:
                setattr(self, name, None)
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.weights_only and self.method != "all" and MERGE_METHODS[self.method].needs_data:
            raise InputError(f"--method {self.method} needs data (it learns from unlabeled images), so it cannot "
                             "be used with --weights-only", "drop --weights-only and give the recipe's datasets")
        if self.weights_only and self.alpha is None:
            raise InputError("--weights-only needs --alpha", "without validation data alpha cannot be searched; "
                                                        "e.g. --alpha 0.3")
        if self.push_to and not self.output:
            raise InputError("--push-to needs --output (the directory that is pushed)")
        if self.push_to and self.method == "all":
            raise InputError("--push-to needs one --method, not 'all'", "e.g. --method tsvm --push-to user/repo")

    def to_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------------------------------ task vectors
@dataclass
class TaskSource:
    """Where a task's vector comes from (for reports and cards)."""

    name: str
    reference: str
    revision: str
    conditioned: bool
    normalizer: str
    norm: float


def task_vector_for(reference: str, base, scratch: Path, name: str):
    """The task vector of one recipe task (lazy, on disk) and its provenance.

    A directory holding ``task_vector.safetensors`` (an ``hfdistac condition`` output, local or pulled from the
    Hub) gives that vector; its recorded base revision must match the recipe's base. Otherwise τ = θ_t − θ₀.
    """
    from .checkpoints import check_against_base, load_finetuned
    from .hub import resolve_model
    from .task_vectors import check_compatible, compute_task_vector, load_task_vector

    resolved = resolve_model(reference)
    tv_file = resolved.local_dir / "task_vector.safetensors"
    path = scratch / f"{name}.safetensors"
    if tv_file.is_file():
        tv = load_task_vector(tv_file)
        rec_base = tv.metadata.get("base_revision")
        if rec_base and rec_base != base.resolved.revision:
            raise CheckpointError(
                f"task vector of {reference!r} was computed against base revision {rec_base}, but the recipe's "
                f"base {base.resolved.reference!r} is at {base.resolved.revision}",
                "use the base the vector was conditioned from (see its card), or recompute it")
        base_shapes = {k: v for k, v in base.weights.items()}
        check_compatible(base_shapes, {k: tv[k] for k in tv}, (f"base {base.resolved.reference!r}",
                                                                f"task vector {reference!r}"))
        return tv, TaskSource(name, reference, resolved.revision, True, "", tv.norm())
    ft = load_finetuned(reference)
    check_against_base(base, ft)
    tv = compute_task_vector(base.weights, ft.weights, {"source": reference, "source_revision": resolved.revision})
    tv.save(path)
    del ft, tv
    lazy = load_task_vector(path)
    return lazy, TaskSource(name, reference, resolved.revision, False, "", lazy.norm())


# ------------------------------------------------------------------------------------------ evaluation
class _Split:
    """A task's preprocessed split, cached in memory when it fits the budget."""

    def __init__(self, data, processor, batch_size: int, limit: int | None, num_workers: int, budget: list[int]):
        self.data, self.processor = data, processor
        self.batch_size, self.limit, self.num_workers = batch_size, limit, num_workers
        self._cache: list[dict] | None = None
        self._budget = budget

    def batches(self):
        if self._cache is not None:
            return self._cache
        loader = self.data.loader(self.processor, self.batch_size, limit=self.limit, num_workers=self.num_workers)
        out, size = [], 0
        for b in loader:
            out.append(b)
            size += b["pixel_values"].numel() * b["pixel_values"].element_size()
        if size <= self._budget[0]:
            self._budget[0] -= size
            self._cache = out
        return out


@dataclass
class _Task:
    name: str
    head: Any
    val: _Split | None
    test: _Split
    normalizer_ref: str


def _eval_split(model, head, split: _Split, device, mixed_precision) -> tuple[float, torch.Tensor, torch.Tensor]:
    from .evaluation import predict

    logits, labels = predict(model, head, split.batches(), device=device, mixed_precision=mixed_precision)
    if labels is None:
        raise InputError(f"dataset {split.data.spec.reference!r} has no labels; accuracy needs a labeled split")
    return top1_accuracy(logits, labels), logits, labels


def _set_weights(model, theta0: Mapping[str, torch.Tensor], tau: Mapping[str, torch.Tensor] | None, alpha: float):
    from .checkpoints import module_key

    params = dict(model.named_parameters())
    with torch.no_grad():
        for k, base in theta0.items():
            p = params[module_key(k)]
            if tau is None or alpha == 0:
                p.copy_(base)
            else:
                p.copy_(base + alpha * tau[k].to(base.dtype))


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature T minimising NLL(softmax(logits / T)) (LBFGS on log T, clamped to [0.01, 100])."""
    log_t = torch.zeros((), requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")
    logits, labels = logits.float(), labels.long()

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.detach().exp())
    return min(max(t, 0.01), 100.0) if math.isfinite(t) else 1.0


# ------------------------------------------------------------------------------------------ SAMerging
def samerging_params(config: MergeConfig) -> dict[str, Any]:
    """The SAMerging hyper-parameters given by a :class:`MergeConfig` (unset ones keep the method's defaults)."""
    params: dict[str, Any] = {"objective": config.objective, "remerge_sam": not config.released_sam,
                              "temperature": config.temperature, "lr": config.lr,
                              "batches_per_task": config.batches_per_task, "batch_size": config.sam_batch_size}
    for name in ("steps", "sam_rho", "init"):
        if getattr(config, name) is not None:
            params[name] = getattr(config, name)
    return params


def samerging_data(config: MergeConfig, base, theta0: Mapping[str, torch.Tensor], tasks, train_data: Mapping[str, Any],
                   device: torch.device):
    """Build the :class:`~hfdistac.merging.samerging.SAMergingData` of a recipe.

    Per task: ``batches_per_task`` batches of ``sam_batch_size`` *unlabeled* images (labels are not even
    read) from a seeded shuffle of the task's ``train_split``, preprocessed once and kept in memory. In
    several processes (a ``torch.distributed`` group), every process caches its own shard.
    """
    import dataclasses as dc

    from .merging.samerging import SAMergingData, SAMergingTask

    rank, world = 0, 1
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    sam_tasks, size = [], 0
    for task in tasks:
        data = train_data[task.name]
        shuffled = dc.replace(data, dataset=data.dataset.shuffle(seed=0)).shard(rank, world)
        loader = shuffled.loader(base.image_processor, config.sam_batch_size,
                                 limit=config.batches_per_task * config.sam_batch_size,
                                 num_workers=config.num_workers, with_labels=False)
        batches = [b["pixel_values"] for b in loader]
        if not batches:
            raise InputError(f"task {task.name!r}: the split {data.split!r} of {data.spec.reference!r} has no images "
                             "for SAMerging", "set the task's train_split to a split with unlabeled images")
        size += sum(b.numel() * b.element_size() for b in batches)
        sam_tasks.append(SAMergingTask(task.name, task.head, batches))
    logger.info("SAMerging: cached %d tasks x <= %d batches of %d images (%.1f MB)", len(sam_tasks),
                config.batches_per_task, config.sam_batch_size, size / 2**20)
    return SAMergingData(base=theta0, vision_config=base.vision_config, tasks=sam_tasks, device=device,
                         mixed_precision=config.mixed_precision, progress=config.progress)


def _learned_summary(result: Mapping[str, Any]) -> dict[str, Any]:
    """Report fields of a method that learned coefficients (resolved params, loss history, timing, stats)."""
    coef = result["coefficients"]
    out = {"params": dict(result["params"]), "loss_history": list(result["loss_history"]),
           "time_s": result["time_s"], "teacher_time_s": result["teacher_time_s"],
           "optimize_time_s": result["optimize_time_s"],
           "coefficient_stats": {name: {"mean": float(coef[t].mean()), "min": float(coef[t].min()),
                                        "max": float(coef[t].max())}
                                 for t, name in enumerate(result["task_names"])}}
    if "peak_memory_bytes" in result:
        out["peak_memory_bytes"] = result["peak_memory_bytes"]
    return out


def write_coefficients(directory: Path, result: Mapping[str, Any], title: str = "Learned coefficients") -> None:
    """Write ``coefficients.safetensors`` (``[T, L]``; metadata: task and parameter names in order, params)
    and the heat-map ``coefficients.png`` into ``directory``."""
    from safetensors.torch import save_file

    from .plots import coefficients_heatmap

    coef = result["coefficients"].float().contiguous()
    save_file({"coefficients": coef}, str(Path(directory) / "coefficients.safetensors"), metadata={
        "format": "pt", "task_names": json.dumps(list(result["task_names"])),
        "parameter_names": json.dumps(list(result["parameter_names"])),
        "params": json.dumps(result.get("params", {}), default=str)})
    coefficients_heatmap(coef, result["task_names"], result["parameter_names"],
                         Path(directory) / "coefficients.png", title=title)


def _coefficient_rows(res: Mapping[str, Any]) -> dict[str, Any] | None:
    """Card context of the learned coefficients (``None`` for methods that learn none)."""
    stats = res.get("coefficient_stats")
    if not stats:
        return None
    hist = res.get("loss_history") or [float("nan")]
    return {"rows": [{"name": n, **v} for n, v in stats.items()], "loss_first": hist[0], "loss_last": hist[-1],
            "steps": res["params"].get("steps"), "objective": res["params"].get("objective"),
            "time_s": res.get("time_s")}


def _eval_cache_key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def run_merge(config: MergeConfig) -> dict:
    """Merge a recipe with one or all methods and evaluate (the library form of ``hfdistac merge``).

    Args:
        config: A :class:`MergeConfig`.

    Returns:
        The report: ``{"recipe", "base", "zero_shot", "individual", "results": [per-method report], ...}``; a
        per-method report has at least ``method, alpha, alpha_grid, tasks[{name, accuracy,
        normalized_accuracy, ece?}], mean_accuracy, mean_normalized_accuracy``.
    """
    from tqdm.auto import tqdm

    from .checkpoints import build_vision_model, load_base, load_finetuned
    from .data import DatasetSpec, load_image_data
    from .evaluation import default_cache_dir, head_for_task, resolve_device
    from .merging import MERGE_METHODS
    from .merging.consensus import select_tall_lambdas
    from .metrics import classification_metrics
    from .outputs import check_destination
    from .recipe import load_recipe

    recipe = load_recipe(config.recipe)
    methods = [m for m in MERGE_METHODS if m not in NOT_IN_ALL] if config.method == "all" else [config.method]
    methods = [m for m in methods if not MERGE_METHODS[m].needs_data or not config.weights_only]
    if config.output:
        check_destination(config.output, config.overwrite)
    device = resolve_device(config.device)
    base = load_base(recipe.base)
    theta0 = base.weights
    names = [t.name for t in recipe.tasks]
    if len(recipe.tasks) < 2:
        logger.warning("recipe %s has a single task: merging reduces to scaling its task vector", recipe.path)

    with tempfile.TemporaryDirectory(prefix="hfdistac-merge-") as scratch_dir:
        scratch = Path(scratch_dir)
        # --- data first: fail fast on missing splits before any heavy work --------------------------
        tasks: list[_Task] = []
        train_data: dict[str, Any] = {}
        budget = [PIXEL_CACHE_BYTES]
        if not config.weights_only:
            for t in recipe.tasks:
                if not t.dataset:
                    raise InputError(f"task {t.name!r} of the recipe has no dataset",
                                     "add 'dataset:' to the task, or merge weights only with --weights-only --alpha A")
                spec = DatasetSpec(t.dataset, t.dataset_config)
                test = load_image_data(spec, t.test_split)
                val = load_image_data(spec, "validation") if config.alpha is None else None
                head = head_for_task(base, test, templates=t.templates)
                if "samerging" in methods:
                    train_data[t.name] = load_image_data(spec, t.train_split)
                tasks.append(_Task(t.name, head,
                                   _Split(val, base.image_processor, config.batch_size, config.val_limit,
                                          config.num_workers, budget) if val else None,
                                   _Split(test, base.image_processor, config.batch_size, config.test_limit,
                                          config.num_workers, budget),
                                   t.normalizer or t.model))
        # --- task vectors -----------------------------------------------------------------------------
        tvs, sources = [], []
        for t in tqdm(recipe.tasks, desc="task vectors", disable=not config.progress, unit="task"):
            tv, src = task_vector_for(t.model, base, scratch, t.name)
            src.normalizer = t.normalizer or t.model
            tvs.append(tv)
            sources.append(src)

        model = build_vision_model(base.vision_config, theta0).to(device)
        report: dict[str, Any] = {
            "recipe": recipe.to_dict(), "recipe_path": recipe.path, "base": recipe.base,
            "base_revision": base.resolved.revision, "task_names": names,
            "sources": [asdict(s) for s in sources], "results": [],
        }

        def evaluate_all(split_name: str) -> dict:
            accs, logits = {}, {}
            for task in tasks:
                split = task.val if split_name == "validation" else task.test
                acc, lg, lb = _eval_split(model, task.head, split, device, config.mixed_precision)
                accs[task.name] = acc
                logits[task.name] = (lg, lb)
            return {"accuracy": accs, "logits": logits}

        if not config.weights_only:
            # --- zero-shot and individual rows (individual accuracies cached on disk) --------------------
            _set_weights(model, theta0, None, 0.0)
            zs_test = evaluate_all("test")
            report["zero_shot"] = {"accuracy": zs_test["accuracy"],
                                   "mean_accuracy": _mean(zs_test["accuracy"].values())}
            norm_acc: dict[str, dict[str, float]] = {"validation": {}, "test": {}}
            cache_dir = default_cache_dir() / "evals"
            for task in tqdm(tasks, desc="individual models", disable=not config.progress, unit="task"):
                ft = None
                for split_name in (["validation"] if task.val else []) + ["test"]:
                    split = task.val if split_name == "validation" else task.test
                    ref_resolved = _resolve_quiet(task.normalizer_ref)
                    key = _eval_cache_key(ref_resolved, base.resolved.revision, split.data.spec, split_name,
                                          split.limit, task.head.class_names, task.head.templates)
                    cached = cache_dir / f"{key}.json"
                    if cached.is_file():
                        norm_acc[split_name][task.name] = json.loads(cached.read_text())["accuracy"]
                        continue
                    if ft is None:
                        ft = load_finetuned(task.normalizer_ref)
                        ft_model = build_vision_model(ft.config, ft.weights).to(device)
                    acc, _, _ = _eval_split(ft_model, task.head, split, device, config.mixed_precision)
                    norm_acc[split_name][task.name] = acc
                    try:
                        cached.parent.mkdir(parents=True, exist_ok=True)
                        cached.write_text(json.dumps({"accuracy": acc}))
                    except OSError as e:
                        logger.warning("could not cache evaluation at %s: %s", cached, e)
            report["individual"] = {"accuracy": norm_acc["test"], "mean_accuracy": _mean(norm_acc["test"].values())}
            report["zero_shot"]["normalized_accuracy"] = _normalize(zs_test["accuracy"], norm_acc["test"])
            report["zero_shot"]["mean_normalized_accuracy"] = _mean(report["zero_shot"]["normalized_accuracy"].values())

        merged_by_method: dict[str, dict[str, torch.Tensor]] = {}
        learned: dict[str, dict] = {}
        for method_name in methods:
            method = MERGE_METHODS[method_name]
            params: dict[str, Any] = {}
            extra: dict[str, Any] = {}
            chosen_lambdas = None
            if method_name == "ties":
                params["density"] = config.density
            if method_name == "consensus":
                params["k"] = min(config.consensus_k, len(tvs))
                if not config.weights_only and tasks and tasks[0].val is not None:

                    def evaluate_task(t_index: int, tv: Mapping[str, torch.Tensor]) -> float:
                        _set_weights(model, theta0, tv, 1.0)
                        task = tasks[t_index]
                        return _eval_split(model, task.head, task.val, device, config.mixed_precision)[0]

                    chosen_lambdas = select_tall_lambdas(tvs, evaluate_task,
                                                         candidates=config.tall_lambdas or (0.2, 0.3, 0.4, 0.5, 0.6))
                    params["tall_lambdas"] = tuple(chosen_lambdas)
                elif config.tall_lambdas:
                    params["tall_lambdas"] = tuple(config.tall_lambdas[:1]) * len(tvs)
            if method_name == "samerging":
                params.update(samerging_params(config))
                extra = {"data": samerging_data(config, base, theta0, tasks, train_data, device),
                         "result": {}}
            tau = method(tvs, **params, **extra)
            merged_by_method[method_name] = tau
            res: dict[str, Any] = {"method": method_name, "pretty_name": method.pretty_name,
                                   "paper_url": method.paper_url, "params": {k: v for k, v in params.items()
                                                                            if not callable(v)}}
            if "result" in extra:
                learned[method_name] = extra["result"]
                res.update(_learned_summary(extra["result"]))
                del extra
            if chosen_lambdas is not None:
                res["tall_lambdas"] = chosen_lambdas
            grid = list(config.alpha_grid or DEFAULT_ALPHA_GRID)
            if not method.uses_alpha:
                alpha, how, curve = 1.0, "fixed at 1 (the method needs no scaling)", []
            elif config.alpha is not None:
                alpha, how, curve = config.alpha, "given (--alpha)", []
            else:
                curve = []
                for a in tqdm(grid, desc=f"{method_name}: alpha search", disable=not config.progress, leave=False):
                    _set_weights(model, theta0, tau, a)
                    accs = evaluate_all("validation")["accuracy"]
                    curve.append({"alpha": a, "mean_normalized_accuracy": _mean(
                        _normalize(accs, norm_acc["validation"]).values()), "mean_accuracy": _mean(accs.values())})
                best = max(curve, key=lambda c: (round(c["mean_normalized_accuracy"], 9), -c["alpha"]))
                alpha, how = best["alpha"], "grid search on the validation split (mean normalised accuracy)"
            res.update({"alpha": alpha, "alpha_selection": how, "alpha_grid": grid if curve else [],
                        "alpha_curve": curve})
            if not config.weights_only:
                _set_weights(model, theta0, tau, alpha)
                test = evaluate_all("test")
                task_rows = []
                temps = {}
                val_logits = evaluate_all("validation")["logits"] if config.calibrate and tasks[0].val else None
                for task in tasks:
                    lg, lb = test["logits"][task.name]
                    m = classification_metrics(lg, lb)
                    row = {"name": task.name, "accuracy": m["accuracy"],
                           "normalized_accuracy": _normalize({task.name: m["accuracy"]}, norm_acc["test"])[task.name],
                           "ece": m["ece"], "entropy": m["entropy"]}
                    if config.calibrate:
                        if val_logits is None:
                            raise InputError("--calibrate needs validation data (it cannot be used with --alpha)",
                                             "drop --alpha so a validation split is loaded, or drop --calibrate")
                        vl, vlb = val_logits[task.name]
                        temp = fit_temperature(vl, vlb)
                        temps[task.name] = temp
                        row.update({"temperature": temp, "ece_before": m["ece"],
                                    "ece_after": classification_metrics(lg / temp, lb)["ece"]})
                    task_rows.append(row)
                res["tasks"] = task_rows
                res["mean_accuracy"] = _mean(r["accuracy"] for r in task_rows)
                res["mean_normalized_accuracy"] = _mean(r["normalized_accuracy"] for r in task_rows)
                if config.calibrate:
                    res["temperatures"] = temps
                    res["mean_ece_before"] = _mean(r["ece_before"] for r in task_rows)
                    res["mean_ece_after"] = _mean(r["ece_after"] for r in task_rows)
            report["results"].append(res)

        report["table_markdown"] = results_table(report) if not config.weights_only else ""
        if config.output:
            _write_outputs(config, report, recipe, base, merged_by_method, tasks, sources, learned)
    return report


def _resolve_quiet(ref: str) -> str:
    from .hub import resolve_model

    return resolve_model(ref).revision


def _mean(values) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def _normalize(accs: Mapping[str, float], normalizers: Mapping[str, float]) -> dict[str, float | None]:
    out = {}
    for k, v in accs.items():
        n = normalizers.get(k)
        out[k] = 100.0 * v / n if n else None
    return out


def results_table(report: dict) -> str:
    """The paper-style table: zero-shot, individual, then each method (accuracy, mean, mean normalised)."""
    from .cli.format import table

    names = report["task_names"]
    headers = ["method", "alpha", *names, "mean acc", "mean norm. acc"]
    rows = []
    zs, ind = report.get("zero_shot"), report.get("individual")
    if zs:
        rows.append(["zero-shot", None, *[zs["accuracy"][n] for n in names], zs["mean_accuracy"],
                     zs.get("mean_normalized_accuracy")])
    if ind:
        rows.append(["individual", None, *[ind["accuracy"][n] for n in names], ind["mean_accuracy"], 100.0])
    for r in report["results"]:
        if "tasks" not in r:
            continue
        accs = {t["name"]: t["accuracy"] for t in r["tasks"]}
        rows.append([r["pretty_name"], r["alpha"], *[accs[n] for n in names], r["mean_accuracy"],
                     r["mean_normalized_accuracy"]])
    text = table(headers, rows)
    cal = [r for r in report["results"] if "temperatures" in r]
    if cal:
        text += "\n\n" + table(["method", "mean ECE before", "mean ECE after"],
                               [[r["pretty_name"], r["mean_ece_before"], r["mean_ece_after"]] for r in cal])
    return text


def _write_outputs(config: MergeConfig, report: dict, recipe, base, merged: dict, tasks, sources,
                   learned: Mapping[str, dict] | None = None) -> None:
    import yaml

    from .checkpoints import save_vision_checkpoint
    from .heads import Head, save_head
    from .outputs import atomic_output_dir, write_json

    with atomic_output_dir(config.output, config.overwrite) as root:
        many = len(report["results"]) > 1
        for res in report["results"]:
            d = root / res["method"] if many else root
            d.mkdir(parents=True, exist_ok=True)
            weights = {k: (v + res["alpha"] * merged[res["method"]][k]) for k, v in base.weights.items()}
            meta = {"base": base.resolved.reference, "base_revision": base.resolved.revision,
                    "method": res["method"], "alpha": repr(res["alpha"]),
                    "params": json.dumps(res["params"], default=str),
                    "sources": json.dumps([{"name": s.name, "reference": s.reference, "revision": s.revision}
                                           for s in sources])}
            save_vision_checkpoint(d, base.vision_config, weights, meta)
            if learned and res["method"] in learned:
                write_coefficients(d, learned[res["method"]], title=f"{res['pretty_name']} coefficients")
            single = {k: v for k, v in report.items() if k not in ("results", "table_markdown")}
            single.update(res)
            single["results"] = [res]
            single["table_markdown"] = results_table(single) if "tasks" in res else ""
            write_json(d / "report.json", single)
            (d / "results.md").write_text(single["table_markdown"] + "\n")
            (d / "recipe.yaml").write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False))
            write_json(d / "hfdistac_config.json", config.to_dict())
            if "temperatures" in res:
                for task in tasks:
                    h: Head = task.head
                    calibrated = Head(h.weight, h.projection, h.logit_scale, h.class_names, h.templates,
                                      res["temperatures"][task.name])
                    (d / "heads").mkdir(exist_ok=True)
                    save_head(calibrated, d / "heads" / f"{task.name}.safetensors")
            (d / "README.md").write_text(merge_card(single))
        if many:
            write_json(root / "report.json", {k: v for k, v in report.items()})
            (root / "results.md").write_text(report["table_markdown"] + "\n")
            (root / "recipe.yaml").write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False))
            write_json(root / "hfdistac_config.json", config.to_dict())


def merge_card(report: dict) -> str:
    """The README model card of a merged model, rendered from ``templates/merge_card.md.j2``.

    Metadata: ``base_model`` = the source models, ``base_model_relation: merge``, datasets, tags, and a
    ``model-index`` with each task's test accuracy.
    """
    import yaml
    from huggingface_hub import EvalResult

    from .cards import render_card
    from .merging import MERGE_METHODS

    res = report["results"][0]
    method = MERGE_METHODS[res["method"]]
    datasets = [t.get("dataset") for t in report["recipe"]["tasks"] if t.get("dataset")]
    task_rows = {r["name"]: r for r in res.get("tasks", [])}
    evals = []
    for t in report["recipe"]["tasks"]:
        if t["name"] not in task_rows:
            continue
        ds = t.get("dataset") or t["name"]
        evals.append(EvalResult(task_type="image-classification",
                                dataset_type=ds if _is_hub_id(ds) else t["name"], dataset_name=t["name"],
                                dataset_split=t.get("test_split", "test"), metric_type="accuracy",
                                metric_value=round(task_rows[t["name"]]["accuracy"], 4)))
    sources = [s["reference"] for s in report["sources"]]
    hub_sources = [s.split("@")[0] for s in sources if _is_hub_id(s)]
    card_data = dict(
        base_model=hub_sources or None, base_model_relation="merge" if hub_sources else None,
        datasets=[d.split("@")[0] for d in datasets if _is_hub_id(d)] or None, library_name="transformers",
        pipeline_tag="image-feature-extraction",
        tags=["hfdistac", res["method"], "task-vector", "model-merging", "clip"],
        model_name=f"{report['recipe'].get('name', 'merge')}-{res['method']}",
        eval_results=evals or None,
        hfdistac={"method": res["method"], "base": report["base"], "base_revision": report["base_revision"],
                  "alpha": res["alpha"]})
    calibration = [t for t in res.get("tasks", []) if "temperature" in t]
    return render_card("merge_card.md.j2", {
        "card_data": card_data, "title": f"{method.pretty_name} merge of {len(sources)} CLIP task vectors",
        "sources": report["sources"], "method": method, "base": report["base"],
        "base_revision": report["base_revision"], "alpha": res["alpha"], "alpha_selection": res["alpha_selection"],
        "fixed_alpha": res["alpha_selection"].startswith("given"),
        "table": report.get("table_markdown") or "_not evaluated (merged without data)_",
        "calibration": calibration, "params": json.dumps(res["params"], default=str),
        "coefficients": _coefficient_rows(res),
        "recipe_yaml": yaml.safe_dump(report["recipe"], sort_keys=False).strip()})


def _is_hub_id(ref: str) -> bool:
    """Whether a reference is a Hub repo id (local paths never go into card metadata)."""
    from .hub import is_local_reference

    return not is_local_reference(ref) and ref.split("@")[0].count("/") == 1

