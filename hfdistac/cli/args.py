"""Generate argparse options from config dataclasses (one field, one flag, one help text).

Field metadata keys: ``help`` (required), ``positional`` (bool), ``nargs``, ``choices``, ``metavar``,
``flag`` (the option's name when it is not ``--field-name``), ``aliases`` (extra flag names), ``cli`` (False to hide a field from the CLI). Underscores become dashes.
``bool`` fields become ``--flag/--no-flag``. A ``--config FILE`` YAML supplies values that flags override.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from ..configs import coerce_config_value, field_type
from ..errors import InputError


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one option (or positional) per field of ``cls``."""
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if meta.get("cli", True) is False:
            continue
        tp, is_list = field_type(cls, f.name)
        kwargs: dict[str, Any] = {"help": meta.get("help", "")}
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        if meta.get("choices"):
            kwargs["choices"] = meta["choices"]
        if meta.get("metavar"):
            kwargs["metavar"] = meta["metavar"]
        if tp is bool and not is_list:
            if f.name.startswith("no_"):  # argparse would read --no-x as the negation of --x
                raise TypeError(f"bool option {f.name!r} must not start with 'no_'")
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = tp if tp in (int, float, str) else str
            if is_list:
                kwargs["nargs"] = meta.get("nargs", "+")
            elif meta.get("nargs"):
                kwargs["nargs"] = meta["nargs"]
        if default not in (None, [], ()) and "help" in kwargs and tp is not bool:
            kwargs["help"] += f" (default: {default})"
        if meta.get("positional"):
            # Optional for argparse, so that --config can give it too; config_from_args checks that a required
            # one was given one way or the other.
            kwargs.pop("metavar", None)
            kwargs["nargs"] = "*" if is_list else "?"
            kwargs["help"] += f" (or '{f.name}:' in --config)"
            parser.add_argument(f.name, metavar=meta.get("metavar", f.name.upper()), **kwargs,
                                default=argparse.SUPPRESS)
        else:
            flags = [meta.get("flag", f"--{f.name.replace('_', '-')}"), *meta.get("aliases", ())]
            parser.add_argument(*flags, dest=f.name, default=argparse.SUPPRESS, **kwargs)


def config_from_args(cls: type, ns: argparse.Namespace, config_file: str | None = None):
    """Build ``cls`` from a YAML ``--config`` file (if any) overridden by the flags actually given."""
    values: dict[str, Any] = {}
    if config_file:
        from ..yaml_files import load_yaml_file

        p = Path(config_file)
        if not p.is_file():
            raise InputError(f"config file {config_file!r} does not exist")
        loaded = load_yaml_file(p, "config file") or {}
        if not isinstance(loaded, dict):
            raise InputError(f"config file {config_file!r} must be a mapping of option names to values")
        names = {f.name for f in dataclasses.fields(cls)}
        loaded = {k.replace("-", "_"): v for k, v in loaded.items()}
        unknown = sorted(set(loaded) - names)
        if unknown:
            raise InputError(f"config file {config_file!r} has unknown options {unknown}",
                             f"valid options: {sorted(names)}")
        values.update({k: coerce_config_value(cls, k, v) for k, v in loaded.items()})
    for f in dataclasses.fields(cls):
        if hasattr(ns, f.name) and getattr(ns, f.name) is not None:
            values[f.name] = getattr(ns, f.name)
    for f in dataclasses.fields(cls):  # a required positional: given as an argument or in --config
        if f.metadata.get("positional") and not f.metadata.get("nargs") and not values.get(f.name):
            metavar = f.metadata.get("metavar", f.name.upper())
            raise InputError(f"{metavar} is required", f"give it as the command's first argument, or as "
                             f"'{f.name}:' in a --config file")
    try:
        return cls(**values)
    except TypeError as e:
        raise InputError(f"missing or invalid options: {e}") from None
