"""The settings of ``hfdistac run`` (:class:`RunConfig`); no torch import, so ``hfdistac run --help`` stays fast."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..configs import check_fields
from ..configs import help_field as _h
from ..errors import InputError

#: The paper's Table 1 methods: run's default.
DEFAULT_METHODS = ("task_arithmetic", "ties", "consensus", "tsvm")


@dataclass
class RunConfig:
    """``hfdistac run``: diagnose, condition what is harmful, merge with and without DisTaC, and publish."""

    recipe: str = field(default="", metadata=_h(
        "recipe YAML (base + tasks; Hub ids or local paths), e.g. example-suite/recipes/norm-mismatch.yaml",
        positional=True, metavar="RECIPE"))
    output: str = field(default="", metadata=_h(
        "directory for every stage (inspect/, conditioned/, merges/), recipe.conditioned.yaml, table.md, run.json "
        "and the run's card; a second run reuses every stage whose inputs and settings are unchanged",
        metavar="DIR"))
    method: str = field(default=",".join(DEFAULT_METHODS), metadata=_h(
        "merge methods, comma-separated, or 'all' (default: the paper's four)", metavar="M[,M...]"))
    condition: list[str] | None = field(default=None, metadata=_h(
        "condition these tasks too, flagged or not (comma- or space-separated task names)", metavar="TASK"))
    distac: bool = field(default=True, metadata=_h(
        "condition the flagged tasks (--no-distac: merge the recipe as it is, no conditioning)"))
    condition_steps: int = field(default=500, metadata=_h("DisTaC steps per conditioned task (the paper's 500)",
                                                          ge=1))
    condition_lr: float | None = field(default=None, metadata=_h(
        "DisTaC learning rate (default: the rate a model's card names, else 1e-5, the paper's ViT-B/32 rate)",
        gt=0, le=1))
    condition_batch_size: int = field(default=128, metadata=_h("DisTaC global batch size (the paper's 128)", ge=1))
    beta: float = field(default=0.5, metadata=_h("DisTaC anchor weight β (the paper's 0.5)", ge=0))
    max_norm_ratio: float | None = field(default=None, metadata=_h(
        "hfdistac extension: keep each conditioned vector within R x its target norm (default: off)", ge=1))
    inspect_limit: int = field(default=256, metadata=_h("images per task for the diagnosis' entropy", ge=1))
    calibrate: bool = field(default=True, metadata=_h("fit one temperature per task after merging (paper §6.2)"))
    push_to: str | None = field(default=None, metadata=_h(
        "publish to NAMESPACE/NAME-<method> (each merge with DisTaC) and NAMESPACE/NAME-<task>-distac (each "
        "conditioned task vector), one commit each, cards linking each other", metavar="NAMESPACE/NAME"))
    private: bool = field(default=False, metadata=_h("with --push-to: create the repos private"))
    overwrite: bool = field(default=False, metadata=_h("redo every stage even if its output is up to date"))
    progress: bool = field(default=True, metadata=_h("show progress bars"))

    def __post_init__(self) -> None:
        check_fields(self)
        if not self.output:
            raise InputError("--output is required", "give the directory the run writes, e.g. --output my-run")
        if isinstance(self.condition, str):
            self.condition = [self.condition]
        if self.condition:
            self.condition = [n.strip() for part in self.condition for n in part.split(",") if n.strip()]
        if self.condition and not self.distac:
            raise InputError("--condition and --no-distac contradict each other",
                             "drop one: --no-distac merges the recipe as it is")
        if self.push_to is not None:
            from ..hub import parse_reference

            parse_reference(self.push_to)  # an InputError naming what is wrong with it
            if self.push_to.count("/") != 1:
                raise InputError(f"--push-to {self.push_to!r} is not NAMESPACE/NAME",
                                 "e.g. --push-to my-user/clip-8tasks: repos my-user/clip-8tasks-tsvm, ...")
        if self.private and not self.push_to:
            raise InputError("--private only applies with --push-to")

    @property
    def methods(self) -> list[str]:
        """The merge methods, validated (``all``: every method of ``merge --method all``)."""
        from ..merge_eval import MergeConfig

        return MergeConfig(recipe=self.recipe, method=self.method).methods

    def to_dict(self) -> dict:
        return asdict(self)
