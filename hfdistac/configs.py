"""Configuration dataclasses of the commands: the single source of every CLI flag and its help text.

The CLI (:mod:`hfdistac.cli`) generates its options from these; ``--config FILE`` (YAML) sets any field,
explicit flags override it; the resolved config is saved beside every output. Each dataclass validates
its values in ``__post_init__`` and raises :class:`~hfdistac.errors.InputError` for bad ones.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .errors import InputError


def help_field(text: str, **extra) -> dict:
    """Field metadata for a config option: its help text plus CLI hints (see :mod:`hfdistac.cli.args`)."""
    return {"help": text, **extra}


_h = help_field


@dataclass
class CommonEvalOptions:
    """Evaluation options shared by the commands that run a model over images."""

    split: str = field(default="test", metadata=_h(
        "dataset split to measure on: train, test, validation (a seeded 10%% of train) or any stored split"))
    limit: int | None = field(default=512, metadata=_h("use at most this many images per dataset (0 = all)"))
    batch_size: int = field(default=64, metadata=_h("images per evaluation batch"))
    num_workers: int = field(default=0, metadata=_h("DataLoader worker processes for image preprocessing"))
    device: str = field(default="auto", metadata=_h("torch device: auto (cuda if available), cpu, cuda, cuda:1 ..."))
    templates: str | None = field(default=None, metadata=_h(
        "prompt-template file (one template per line containing {c}) overriding the task's standard ones",
        metavar="FILE"))
    progress: bool = field(default=True, metadata=_h("show progress bars"))

    def _check_eval(self) -> None:
        if self.limit is not None and self.limit < 0:
            raise InputError(f"--limit must be >= 0 (0 = all), got {self.limit}")
        if self.limit == 0:
            self.limit = None
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.num_workers < 0:
            raise InputError(f"--num-workers must be >= 0, got {self.num_workers}")


@dataclass
class InspectConfig(CommonEvalOptions):
    """``hfdistac inspect``: diagnose which task vectors will hurt a merge."""

    models: list[str] = field(default_factory=list, metadata=_h(
        "fine-tuned models (Hub repo[@revision] or local directories), or ONE recipe .yaml file",
        positional=True, metavar="MODEL_OR_RECIPE"))
    base: str | None = field(default=None, metadata=_h(
        "pretrained CLIP (Hub id or path); default: the first model card's base_model"))
    data: list[str] | None = field(default=None, metadata=_h(
        "one dataset per model (Hub id or local path; 'none' to skip one); default: each model card's dataset"))
    norm_threshold: float = field(default=2.0, metadata=_h(
        "flag norm mismatch when a task vector's norm exceeds this multiple of the median of the others"))
    entropy_threshold: float = field(default=0.1, metadata=_h(
        "flag low confidence when mean prediction entropy exceeds this fraction of log(num_classes)"))
    output: str | None = field(default=None, metadata=_h(
        "directory for report.json, plots (PNG) and the resolved config (written atomically)", metavar="DIR"))
    json: str | None = field(default=None, metadata=_h("also write the JSON report to this file", metavar="FILE"))
    overwrite: bool = field(default=False, metadata=_h("replace an existing --output directory"))

    def __post_init__(self) -> None:
        self._check_eval()
        if not self.models:
            raise InputError("no models given", "pass fine-tuned model references or a recipe .yaml")
        if self.norm_threshold <= 1:
            raise InputError(f"--norm-threshold must be > 1, got {self.norm_threshold}")
        if not 0 < self.entropy_threshold < 1:
            raise InputError(f"--entropy-threshold must be in (0, 1), got {self.entropy_threshold}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class EvaluateConfig(CommonEvalOptions):
    """``hfdistac evaluate``: accuracy, entropy and ECE of any model with its task head."""

    model: str = field(default="", metadata=_h(
        "model to evaluate: Hub repo[@revision], local directory, or an hfdistac output directory",
        positional=True, metavar="MODEL"))
    data: str | None = field(default=None, metadata=_h("dataset (Hub id or local path); default: the model card's"))
    base: str | None = field(default=None, metadata=_h("pretrained CLIP; default: the model card's base_model"))
    dataset_config: str | None = field(default=None, metadata=_h("dataset configuration name"))
    json: str | None = field(default=None, metadata=_h("write the metrics as JSON to this file", metavar="FILE"))

    def __post_init__(self) -> None:
        self._check_eval()
        if not self.model:
            raise InputError("no model given")

    def to_dict(self) -> dict:
        return asdict(self)
