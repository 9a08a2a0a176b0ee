"""Reading YAML that comes from users (recipes, ``--config`` files): bounded in size, no aliases.

Recipes travel between people on the Hub, so a YAML file is untrusted: an alias bomb (anchors referring to
anchors) stays small on disk and expands to gigabytes when a value is walked or printed. Aliases have no use in a
recipe or a config, so they are refused, and so is a file larger than :data:`MAX_BYTES`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import InputError

MAX_BYTES = 1 << 20  # a recipe of thousands of tasks is a few hundred KB


class _NoAliases(yaml.SafeLoader):
    """PyYAML's safe loader, refusing anchors' aliases (``*name``)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.events.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.constructor.ConstructorError(None, None, "YAML aliases (*name) are not accepted", mark)
        return super().compose_node(parent, index)


def read_user_text(path: str | Path, what: str, max_bytes: int = MAX_BYTES) -> str:
    """The text of a small file a user gives (recipe, config, templates, class names), or an :class:`InputError`.

    Raises:
        InputError: unreadable, larger than ``max_bytes``, or not UTF-8.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > max_bytes:
            raise InputError(f"{what} {str(p)!r} is {size:,} bytes; at most {max_bytes:,} are read",
                             f"a {what} is a short text file: check that this is the right file")
        return p.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{what} {str(p)!r} is not UTF-8 text", "save it as UTF-8 text") from None
    except OSError as e:
        raise InputError(f"cannot read {what} {str(p)!r}: {e.strerror or e}") from None


def parse_yaml(text: str) -> Any:
    """YAML text parsed safely without aliases (raises ``yaml.YAMLError``)."""
    return yaml.load(text, Loader=_NoAliases)  # noqa: S506 - a SafeLoader subclass


def load_yaml_file(path: str | Path, what: str) -> Any:
    """The content of a user's YAML file, or an :class:`InputError` naming ``what`` and the fix.

    Raises:
        InputError: larger than :data:`MAX_BYTES`, not UTF-8, not valid YAML, or using aliases.
    """
    p = Path(path)
    text = read_user_text(p, what)
    try:
        return parse_yaml(text)
    except yaml.YAMLError as e:
        raise InputError(f"{what} {str(p)!r} is not valid YAML: {str(e).splitlines()[0]}",
                         "write each value out (anchors and aliases are not accepted)") from None
