"""The configuration of ``hfdistac merge`` (one field, one flag, one help text, one allowed range).

No torch import at module level: the CLI builds its parser from this dataclass, and ``hfdistac --help`` must
stay fast (the method registry is consulted only when a config is created).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..configs import check_fields
from ..configs import help_field as _h
from ..errors import InputError

DEFAULT_ALPHA_GRID = tuple(round(0.05 * i, 2) for i in range(21))
NO_DATA_ALPHA = 0.3
PIXEL_CACHE_BYTES = 2 * 1024**3
# Methods that train (SAMerging: 1,000 optimiser steps of two forward/backward passes over every task) run only
# when named: even on the tiny test fixtures one SAMerging run takes ~4x a task-arithmetic run with its
# alpha search, and `--method all` is the quick comparison table (benchmarks/bench_samerging.py).
NOT_IN_ALL = ("samerging",)
SAMERGING_OBJECTIVES = ("kd", "entropy")
#: ``--wudi-variant``: the WUDI parameters of the official code and of FusionBench's port.
WUDI_VARIANTS = {"official": {"only_linear_layers": True, "fuse_qkv": True, "others": "zero"},
                 "fusionbench": {"only_linear_layers": False, "fuse_qkv": False, "others": "mean"}}


@dataclass
class MergeConfig:
    """``hfdistac merge``: merge a recipe's task vectors, choose α on validation, evaluate on test.

    The evaluation can be long (every α of every method on every task's validation split): the run logs its
    number of forward passes first and, after the first evaluation, the expected time. To cut it: ``--alpha``
    (no search), a shorter ``--alpha-grid``, ``--val-limit`` / ``--test-limit``, or one ``--method``.
    """

    recipe: str = field(default="", metadata=_h("recipe YAML (base + tasks), e.g. example-suite/recipes/original.yaml",
                                                positional=True, metavar="RECIPE"))
    method: str = field(default="all", metadata=_h(
        "merge method: task_arithmetic, ties, consensus, tsvm, average, iso_c, iso_cts, wudi, regmean, "
        "regmean_plusplus, samerging, several separated by commas (e.g. ties,tsvm: one comparison table), or all "
        "(every method except samerging, which learns coefficients for 1,000 steps and is therefore only run "
        "when named)"))
    alpha: float | None = field(default=None, metadata=_h(
        "fix the scaling coefficient alpha (0..10) instead of searching it on validation data", ge=0, le=10))
    alpha_grid: list[float] | None = field(default=None, metadata=_h(
        "alpha values to search (default 0, 0.05, ..., 1.0)", nargs="+", ge=0, le=10))
    alpha_search: str = field(default="grid", metadata=_h(
        "how the alpha grid is searched: grid (every value) or coarse-to-fine (every other value, then the "
        "neighbours of the best: 13 evaluations of the default 21; not the default: on the demo's 86 merges it "
        "chose another alpha in 3, benchmarks/alpha_search.py)", choices=("grid", "coarse-to-fine")))
    density: float = field(default=0.2, metadata=_h("TIES: fraction of entries kept per task vector, in (0, 1]",
                                                    gt=0, le=1))
    tall_lambdas: list[float] | None = field(default=None, metadata=_h(
        "Consensus: candidate lambdas for each task's TALL mask, chosen per task on validation "
        "(default 0.2 0.3 0.4 0.5 0.6)", nargs="+", ge=0))
    consensus_k: int = field(default=2, metadata=_h("Consensus: keep entries selected by at least k task masks", ge=1))
    common_space_fraction: float = field(default=0.8, metadata=_h(
        "Iso-CTS: share of each matrix's directions taken from the common subspace of the sum (1 = Iso-C)",
        ge=0, le=1))
    wudi_iterations: int = field(default=300, metadata=_h("WUDI: Adam iterations per matrix (official code: 300)",
                                                          ge=0, le=100_000))
    wudi_lr: float = field(default=1e-5, metadata=_h("WUDI: Adam learning rate (official code: 1e-5)", gt=0, le=1))
    wudi_variant: str = field(default="official", metadata=_h(
        "WUDI: official = the transformer blocks' linear weights (q, k, v optimised stacked as open_clip's "
        "in_proj), other tensors at θ₀; fusionbench = every 2-D tensor (q, k, v apart), other tensors averaged",
        choices=list(WUDI_VARIANTS)))
    reduce_non_diagonal_ratio: float = field(default=0.95, metadata=_h(
        "RegMean/RegMean++: multiply the Gram matrices' off-diagonal entries by this (1 = plain RegMean)",
        ge=0, le=1))
    regmean_examples: int = field(default=256, metadata=_h(
        "RegMean/RegMean++: unlabeled training images per task that give the Gram matrices", ge=1))
    objective: str = field(default="kd", metadata=_h(
        "SAMerging: kd = multi-teacher distillation (the paper); entropy = layer-wise AdaMerging (entropy "
        "minimisation, coefficients clamped to [0, 1])", choices=list(SAMERGING_OBJECTIVES)))
    steps: int | None = field(default=None, metadata=_h(
        "SAMerging: optimiser steps (default: 1000 = 10 epochs of the cached batches for kd, 500 for entropy)", ge=1))
    sam_rho: float | None = field(default=None, metadata=_h(
        "SAMerging: ASAM radius rho, 0 = plain Adam (default: 0.07 for kd, 0 for entropy)", ge=0))
    temperature: float = field(default=2.0, metadata=_h("SAMerging: distillation temperature (kd)", gt=0))
    init: float | None = field(default=None, metadata=_h(
        "SAMerging: initial value of every coefficient (default: 0.0 for kd as in the released code, 0.3 for "
        "entropy)"))
    lr: float = field(default=1e-3, metadata=_h("SAMerging: Adam learning rate of the coefficients", gt=0, le=10))
    batches_per_task: int = field(default=100, metadata=_h(
        "SAMerging: unlabeled batches cached per task from its train split", ge=1))
    sam_batch_size: int = field(default=16, metadata=_h("SAMerging: images per task and step", ge=1))
    sam_tasks_per_pass: int | None = field(default=None, metadata=_h(
        "SAMerging: tasks whose batches go through the model together; fewer bound the memory of the activations "
        "at the same gradient (8 tasks x 16 ViT-B/32 images need ~4.7 GB at once, one task's 16 ~0.6 GB); default: "
        "all tasks in one pass on a GPU, on the CPU as many as make 16 images", ge=1))
    released_sam: bool = field(default=False, metadata=_h(
        "SAMerging: reproduce the released code, whose SAM second pass reuses the unperturbed merged weights "
        "(so it is plain Adam); default: re-merge at Lambda + epsilon"))
    calibrate: bool = field(default=False, metadata=_h(
        "fit one temperature per task on validation NLL of the merged model; report ECE before/after"))
    weights_only: bool = field(default=False, metadata=_h(
        "merge weights only, without evaluating (needs --alpha; datasets in the recipe are ignored)"))
    val_limit: int | None = field(default=1000, metadata=_h(
        "validation images per task for alpha search (0 = all)", ge=0, zero_means_none=True, note="0 = all"))
    test_limit: int | None = field(default=0, metadata=_h(
        "test images per task (0 = all)", ge=0, zero_means_none=True, note="0 = all"))
    batch_size: int = field(default=128, metadata=_h("evaluation batch size", ge=1))
    num_workers: int = field(default=0, metadata=_h("DataLoader workers for image preprocessing", ge=0))
    device: str = field(default="auto", metadata=_h("torch device: auto, cpu, cuda, cuda:N"))
    mixed_precision: str = field(default="no", metadata=_h("autocast for evaluation", choices=["no", "bf16", "fp16"]))
    output: str | None = field(default=None, metadata=_h(
        "output directory (merged model, report.json, results.md, recipe, card); with --method all one "
        "sub-directory per method", metavar="DIR"))
    overwrite: bool = field(default=False, metadata=_h("replace an existing --output directory"))
    full_clip: bool = field(default=False, metadata=_h(
        "write a full CLIPModel (the new vision tower + the base's text tower, projections, tokenizer and "
        "processor) instead of the vision tower alone, so transformers' zero-shot-image-classification "
        "pipeline runs on the output"))
    push_to: str | None = field(default=None, metadata=_h("push the merged model to this Hub repo (one method only)",
                                                          metavar="REPO"))
    private: bool = field(default=False, metadata=_h("create the --push-to repo as private"))
    revision: str | None = field(default=None, metadata=_h("branch to push to"))
    create_pr: bool = field(default=False, metadata=_h("push as a pull request"))
    commit_message: str | None = field(default=None, metadata=_h("commit message for --push-to"))
    progress: bool = field(default=True, metadata=_h("show progress bars"))

    def __post_init__(self) -> None:
        from ..merging import MERGE_METHODS

        check_fields(self)
        if not self.recipe:
            raise InputError("no recipe given", "pass a recipe YAML, e.g. example-suite/recipes/original.yaml")
        valid = [*MERGE_METHODS, "all"]
        parts = self._parts()
        unknown = [m for m in parts if m not in valid]
        if unknown or not parts or ("all" in parts and len(parts) > 1):
            raise InputError(f"unknown merge method {self.method!r}; valid: {', '.join(valid)}",
                             "name one method, several separated by commas (e.g. ties,tsvm), or all")
        for m in parts:
            if self.weights_only and m != "all" and MERGE_METHODS[m].needs_data:
                raise InputError(f"--method {m} needs data (it learns from unlabeled images), so it cannot "
                                 "be used with --weights-only", "drop --weights-only and give the recipe's datasets")
        if self.weights_only and self.alpha is None:
            raise InputError("--weights-only needs --alpha", "without validation data alpha cannot be searched; "
                                                        "e.g. --alpha 0.3")
        if self.push_to and not self.output:
            raise InputError("--push-to needs --output (the directory that is pushed)")
        if self.push_to and self.many:
            raise InputError(f"--push-to needs one --method, not {self.method!r}",
                             "e.g. --method tsvm --push-to user/repo")
        if (self.private or self.revision or self.create_pr or self.commit_message) and not self.push_to:
            raise InputError("--private/--revision/--create-pr/--commit-message only apply with --push-to")

    @property
    def methods(self) -> list[str]:
        """The methods this run merges with, in registry order (``all``: every one not in :data:`NOT_IN_ALL`)."""
        from ..merging import MERGE_METHODS

        parts = self._parts()
        names = [m for m in MERGE_METHODS if m not in NOT_IN_ALL] if parts == ["all"] else \
            [m for m in MERGE_METHODS if m in parts]
        return [m for m in names if not MERGE_METHODS[m].needs_data or not self.weights_only]

    @property
    def many(self) -> bool:
        """Whether the run compares several methods (``all`` or a comma-separated list): one folder each."""
        parts = self._parts()
        return parts == ["all"] or len(parts) > 1

    def _parts(self) -> list[str]:
        return [m.strip() for m in str(self.method).split(",") if m.strip()]

    def to_dict(self) -> dict:
        return asdict(self)
