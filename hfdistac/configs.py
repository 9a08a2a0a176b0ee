"""Configuration dataclasses of the commands: the single source of every CLI flag, its help text and its range.

The CLI (:mod:`hfdistac.cli`) generates its options from these; ``--config FILE`` (YAML) sets any field,
explicit flags override it; the resolved config is saved beside every output. Each dataclass calls
:func:`check_fields` first in ``__post_init__`` — the type, finiteness and range of every field, driven by the
field's metadata (:func:`help_field`) — then checks the rules that tie several fields together, raising
:class:`~hfdistac.errors.InputError` for bad values. This module imports neither torch nor the HF stack, so
``hfdistac --help`` stays fast.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import operator
import types
import typing
from dataclasses import asdict, dataclass, field
from numbers import Integral, Real
from pathlib import Path
from typing import Any

from .errors import InputError


def help_field(text: str, *, gt: float | None = None, ge: float | None = None, lt: float | None = None,
               le: float | None = None, zero_means_none: bool = False, note: str | None = None, **extra) -> dict:
    """Field metadata for a config option: its help text, its allowed range and CLI hints.

    Args:
        text: The help text.
        gt, ge, lt, le: Bounds of a numeric field (every element of a list field); floats must also be finite.
        zero_means_none: 0 stands for "off"/"all" and is stored as ``None`` (checked before the bounds).
        note: Shown in brackets after the rule in an error, e.g. ``"0 = all"``; ``hint=`` in ``extra`` is the
            error's hint.
        **extra: CLI hints (see :mod:`hfdistac.cli.args`): ``positional``, ``nargs``, ``choices``, ``metavar``...
    """
    bounds = {k: v for k, v in (("gt", gt), ("ge", ge), ("lt", lt), ("le", le)) if v is not None}
    return {"help": text, **bounds, "zero_means_none": zero_means_none, "note": note, **extra}


_h = help_field


def flag_name(name: str) -> str:
    """The command-line spelling of a config field (``max_norm_ratio`` → ``--max-norm-ratio``)."""
    return "--" + name.replace("_", "-")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def field_type(cls: type, name: str) -> tuple[Any, bool]:
    """``(element type, is_list)`` of a config field whose annotation is e.g. ``list[float] | None``."""
    return _base_type(_hints(cls)[name])


def _base_type(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0]) if len(args) == 1 else (str, False)
    if origin in (list, tuple, typing.Sequence):
        args = typing.get_args(tp)
        return (args[0] if args else str), True
    return tp, False


def _fmt(v: float) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _rule(meta: typing.Mapping[str, Any]) -> str:
    parts = [f"{op} {_fmt(meta[k])}" for k, op in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))
             if meta.get(k) is not None]
    rule = " and ".join(parts)
    if meta.get("note"):
        rule += f" ({meta['note']})"
    return rule


def _check_number(flag: str, value: Any, tp: Any, meta: typing.Mapping[str, Any]) -> Any:
    """One numeric value: its type, finiteness and bounds; returns it (an integral float becomes an int)."""
    kind = "an integer" if tp is int else "a number"
    if isinstance(value, bool) or not isinstance(value, Real):
        raise InputError(f"{flag} expects {kind}, got {value!r}", f"e.g. {flag} {_example(meta, tp)}")
    if tp is int and not isinstance(value, Integral):
        if not (math.isfinite(value) and float(value).is_integer()):
            raise InputError(f"{flag} expects an integer, got {value!r}")
        value = int(value)
    rule = _rule(meta)
    if not math.isfinite(value):
        raise InputError(f"{flag} must be {rule or 'a finite number'}, got {value} (not a finite number)",
                         meta.get("hint"))
    bad = any(meta.get(k) is not None and not cmp(value, meta[k]) for k, cmp in (
        ("gt", operator.gt), ("ge", operator.ge), ("lt", operator.lt), ("le", operator.le)))
    if bad:
        raise InputError(f"{flag} must be {rule}, got {_fmt(value)}", meta.get("hint"))
    return value


def _example(meta: typing.Mapping[str, Any], tp: Any) -> str:
    low = meta.get("ge", meta.get("gt", 1))
    return str(int(low) + (1 if "gt" in meta else 0)) if tp is int else "0.1" if low == 0 else _fmt(float(low))


def check_fields(config: Any) -> None:
    """Check (and normalise) every field of a config dataclass against its annotation and metadata.

    * ``int`` / ``float`` fields (and list elements): a number of that kind (never a bool or a string);
      floats finite; within the ``gt``/``ge``/``lt``/``le`` bounds of the metadata. ``zero_means_none``
      fields store 0 as ``None``.
    * ``str`` fields: a string; ``choices`` in the metadata are enforced.
    * ``bool`` fields: ``True`` or ``False``.
    * ``None`` is accepted where the annotation allows it.

    Raises:
        InputError: naming the option (as its CLI flag), the value given and what is allowed.
    """
    cls = type(config)
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        meta = f.metadata
        tp, is_list = field_type(cls, f.name)
        flag = flag_name(f.name)
        if value is None:
            continue
        if is_list:
            if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
                value = [value]
            value = [_check_scalar(flag, v, tp, meta) for v in value]
        else:
            value = _check_scalar(flag, value, tp, meta)
        if meta.get("zero_means_none") and value == 0:
            value = None
        object.__setattr__(config, f.name, value)


def _check_scalar(flag: str, value: Any, tp: Any, meta: typing.Mapping[str, Any]) -> Any:
    if tp in (int, float):
        if meta.get("zero_means_none") and isinstance(value, Real) and not isinstance(value, bool) and value == 0:
            return 0
        return _check_number(flag, value, tp, meta)
    if tp is bool:
        if not isinstance(value, bool):
            raise InputError(f"{flag} expects true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise InputError(f"{flag} expects a string, got {value!r}")
        choices = meta.get("choices")
        if choices and value not in choices:
            raise InputError(f"unknown {flag} {value!r}", f"choose one of {', '.join(map(str, choices))}")
    return value


def coerce_config_value(cls: type, name: str, value: Any) -> Any:
    """A value read from a YAML ``--config`` file, converted to the field's type where YAML leaves a string.

    PyYAML reads ``1e-3`` (no dot) and ``1E5`` as strings; numbers written that way are parsed here. Anything
    that is not a number stays as given, so :func:`check_fields` names the option in its error.
    """
    tp, is_list = field_type(cls, name)

    def one(v: Any) -> Any:
        if tp in (int, float) and isinstance(v, str):
            try:
                number = float(v.strip())
            except ValueError:
                return v
            return int(number) if tp is int and number.is_integer() else number
        return v

    if is_list and isinstance(value, list):
        return [one(v) for v in value]
    return one(value)


@dataclass
class CommonEvalOptions:
    """Evaluation options shared by the commands that run a model over images."""

    split: str = field(default="test", metadata=_h(
        "dataset split to measure on: train, test, validation (the stored one, else a seeded 10%% of train), "
        "validation-from-train (always the seeded 10%%) or any stored split"))
    limit: int | None = field(default=512, metadata=_h("use at most this many images per dataset (0 = all)",
                                                       ge=0, zero_means_none=True, note="0 = all"))
    batch_size: int = field(default=64, metadata=_h("images per evaluation batch", ge=1))
    num_workers: int = field(default=0, metadata=_h("DataLoader worker processes for image preprocessing", ge=0))
    device: str = field(default="auto", metadata=_h("torch device: auto (cuda if available), cpu, cuda, cuda:1 ..."))
    templates: str | None = field(default=None, metadata=_h(
        "prompt-template file (one template per line containing {c}) overriding the task's standard ones",
        metavar="FILE"))
    image_column: str | None = field(default=None, metadata=_h(
        "the dataset's image column (default: its first Image feature)", metavar="NAME"))
    label_column: str | None = field(default=None, metadata=_h(
        "the dataset's label column (default: its first ClassLabel feature)", metavar="NAME"))
    progress: bool = field(default=True, metadata=_h("show progress bars"))


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
        "flag norm mismatch when a task vector's norm exceeds this multiple of the median of the others", gt=1))
    entropy_threshold: float = field(default=0.1, metadata=_h(
        "flag low confidence when mean prediction entropy exceeds this fraction of log(num_classes)", gt=0, lt=1))
    output: str | None = field(default=None, metadata=_h(
        "directory for report.json, plots (PNG) and the resolved config (written atomically)", metavar="DIR"))
    json: str | None = field(default=None, metadata=_h("also write the JSON report to this file", metavar="FILE"))
    overwrite: bool = field(default=False, metadata=_h("replace an existing --output directory"))

    def __post_init__(self) -> None:
        check_fields(self)
        if not self.models:
            raise InputError("no models given", "pass fine-tuned model references or a recipe .yaml")

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
        check_fields(self)
        if not self.model:
            raise InputError("no model given")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PushConfig:
    """``hfdistac push DIR REPO``: an output directory to a Hub model repo in one commit."""

    directory: str = field(default="", metadata={"help": "an hfdistac output directory (condition, merge, card)",
                                                 "positional": True, "metavar": "DIR"})
    repo: str = field(default="", metadata={"help": "target Hub repo id (created if needed)", "positional": True,
                                            "metavar": "REPO"})
    private: bool = field(default=False, metadata={"help": "create the repo as private"})
    revision: str | None = field(default=None, metadata={"help": "branch to push to (created if missing)"})
    create_pr: bool = field(default=False, metadata={"help": "open a pull request instead of committing"})
    commit_message: str | None = field(default=None, metadata={"help": "commit message"})

    def __post_init__(self) -> None:
        d = Path(self.directory)
        if not d.is_dir():
            raise InputError(f"{self.directory!r} is not a directory", "pass the --output directory of a command")
        if not (d / "README.md").is_file():
            raise InputError(f"{self.directory!r} has no README.md: not an hfdistac output directory",
                             "every hfdistac output directory has a model card; rerun the command with --output")

    def to_dict(self) -> dict:
        return asdict(self)
