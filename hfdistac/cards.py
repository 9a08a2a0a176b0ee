"""Model cards rendered from Jinja2 templates shipped in the package (``hfdistac/templates/*.md.j2``).

A template is a Markdown file whose front matter is the single placeholder ``{{ card_data }}``::

    ---
    {{ card_data }}
    ---

    # {{ title }}

:func:`render_card` fills ``card_data`` with the YAML of a :class:`huggingface_hub.ModelCardData` built from
``context["card_data"]`` (a plain dict of Hub metadata: ``base_model``, ``tags``, ``datasets``...) and every
other placeholder from ``context``, through :meth:`huggingface_hub.ModelCard.from_template`, so the metadata
is always valid YAML in the form the Hub expects. Any command's card (condition, merge) uses the same call.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from typing import Any

TEMPLATE_PACKAGE = "hfdistac"
TEMPLATE_FOLDER = "templates"


def template_text(template_name: str) -> str:
    """The text of a packaged card template.

    Args:
        template_name: File name inside ``hfdistac/templates`` (e.g. ``"condition_card.md.j2"``).

    Raises:
        FileNotFoundError: when the package ships no such template (a packaging bug, not a user error).
    """
    path = resources.files(TEMPLATE_PACKAGE).joinpath(TEMPLATE_FOLDER, template_name)
    if not path.is_file():
        raise FileNotFoundError(f"hfdistac ships no card template {template_name!r}")
    return path.read_text(encoding="utf-8")


def library_versions() -> dict[str, str]:
    """Versions of hfdistac and the HF stack, recorded in every card."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("hfdistac", "torch", "transformers", "huggingface_hub", "datasets", "accelerate", "safetensors"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def render_card(template_name: str, context: Mapping[str, Any]) -> str:
    """Render a packaged model-card template.

    Args:
        template_name: File name inside ``hfdistac/templates``.
        context: Template variables. The optional key ``card_data`` is a dict of Hub metadata
            (``ModelCardData`` keyword arguments; ``None`` values are dropped) rendered as the YAML front
            matter; every other key is passed to the template as is. ``versions`` defaults to
            :func:`library_versions`.

    Returns:
        The card text (``README.md`` content): YAML front matter followed by Markdown.
    """
    from huggingface_hub import ModelCard, ModelCardData

    values = dict(context)
    values.setdefault("versions", library_versions())
    meta = {k: v for k, v in dict(values.pop("card_data", None) or {}).items() if v not in (None, [], {})}
    card = ModelCard.from_template(ModelCardData(**meta), template_str=template_text(template_name), **values)
    return str(card)
