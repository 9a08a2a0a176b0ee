"""The demo's settings (:class:`DemoConfig`), importable without torch so ``hfdistac demo --help`` stays fast."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..configs import check_fields
from ..configs import help_field as _h
from ..errors import InputError


@dataclass
class DemoConfig:
    """``hfdistac demo``: diagnose, condition, merge and compare on the example suite, offline."""

    directory: str = field(default="hfdistac-demo", metadata=_h(
        "where everything is written (the example suite is built inside unless --suite is given)",
        positional=True, nargs="?", metavar="DIR"))
    suite: str | None = field(default=None, metadata=_h(
        "use this existing, complete example suite as it is (default: build or reuse DIR/example-suite)",
        metavar="DIR"))
    tasks: int = field(default=8, metadata=_h("number of tasks when building the suite", ge=2, le=8))
    seed: int = field(default=0, metadata=_h("seed of the suite", ge=0))
    condition_steps: int = field(default=500, metadata=_h("DisTaC steps per conditioned model (the paper's 500)",
                                                          ge=1))
    condition_batch_size: int = field(default=128, metadata=_h("DisTaC global batch size (the paper's 128)", ge=1))
    condition_lr: float | None = field(default=None, metadata=_h(
        "DisTaC learning rate (default: the rate the suite's model cards name, a tenth of its fine-tuning rate; "
        "the paper uses its fine-tuning rate, 1e-5 for ViT-B/32 — see REPRODUCTION.md, protocol)", gt=0, le=1))
    methods: list[str] | None = field(default=None, metadata=_h(
        "merge methods to compare (default: the paper's Table 1: task_arithmetic ties consensus tsvm; any "
        "method of `hfdistac merge --method all` may be named)"))
    mismatch_tasks: list[str] | None = field(default=None, metadata=_h(
        "tasks whose high-learning-rate model is swapped in, one norm-mismatch run each (default: every task, "
        "as in the paper)"))
    kappa_grid: list[float] | None = field(default=None, metadata=_h(
        "rescaling factors of the kappa sweep, as multiples of the norm-matching kappa (default 0.25 ... 4)",
        gt=0, le=100))
    workers: int | None = field(default=None, metadata=_h(
        "processes that run the demo's steps side by side, one torch thread each (default: the free cores, at "
        "most 8); the results do not depend on it", ge=1, le=64, zero_means_none=True, note="0 = default",
        metavar="N"))
    progress: bool = field(default=True, metadata=_h("show progress bars"))
    overwrite: bool = field(default=False, metadata=_h("redo every step even if its output exists"))

    def __post_init__(self) -> None:
        check_fields(self)
        valid = _all_methods()
        unknown = [m for m in self.methods or () if m not in valid]
        if unknown:
            raise InputError(f"unknown --methods {', '.join(map(repr, unknown))}; valid: {', '.join(valid)}",
                             "the demo compares the methods of `hfdistac merge --method all` (SAMerging: "
                             "`hfdistac merge --method samerging`)")

    def to_dict(self) -> dict:
        return asdict(self)


def _all_methods() -> list[str]:
    from ..merge_eval.config import NOT_IN_ALL
    from ..merging import MERGE_METHODS

    return [m for m in MERGE_METHODS if m not in NOT_IN_ALL]
