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
from pathlib import Path
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
    values.setdefault("code", code_span)  # templates write {{ code(x) }} and {{ block(x, "yaml") }} for user text
    values.setdefault("block", code_block)
    meta = {k: v for k, v in dict(values.pop("card_data", None) or {}).items() if v not in (None, [], {})}
    card = ModelCard.from_template(ModelCardData(**meta), template_str=template_text(template_name), **values)
    return str(card)


# ------------------------------------------------------------------------------------------ card metadata
def is_hub_id(ref: str | None) -> bool:
    """Whether a reference is a Hub repo id (``owner/name[@revision]``); local paths never go into cards."""
    from .references import is_local_reference

    return bool(ref) and not is_local_reference(ref) and ref.split("@")[0].count("/") == 1


def public_name(ref: str) -> str:
    """How a card names a model or dataset: a Hub id without its revision, a local one by its folder name only
    (a card is published; the path of a folder on the machine that wrote it means nothing to its readers)."""
    return ref.split("@")[0] if is_hub_id(ref) else Path(str(ref).rstrip("/")).name


def known_hub_id(local_dir: str | Path) -> str | None:
    """The Hub id a local copy of a model knows for itself, or ``None``: its Hub-cache path
    (``…/models--org--name/snapshots/<sha>``), else ``_name_or_path`` in its ``config.json`` when that is a Hub
    id (transformers writes the id a model was loaded from)."""
    import json
    import re

    path = Path(local_dir).expanduser()
    for part in path.resolve().parts:
        m = re.fullmatch(r"models--([^-][^/]*?)--([^/]+)", part)
        if m:
            return f"{m.group(1)}/{m.group(2)}"
    try:
        name = json.loads((path / "config.json").read_text()).get("_name_or_path")
    except (OSError, ValueError, AttributeError):
        return None
    return name if isinstance(name, str) and _hub_id_shaped(name) else None


def _hub_id_shaped(ref: str) -> bool:
    """``owner/name`` with no path syntax, and not an existing local path."""
    import re

    return bool(re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", ref)) and ".." not in ref and is_hub_id(ref)


def lineage(reference: str, local_dir: str | Path | None = None, *, hint: str | None = None) -> dict[str, str | None]:
    """How a card records where a model came from: ``{"id": Hub id or None, "name": display name}``.

    A Hub reference is its own id. A local folder is shown by its folder name and identified by the Hub id its
    copy knows (:func:`known_hub_id`), else by ``hint`` (e.g. the ``base_model`` a source's card names for its
    base) when that is a Hub id; otherwise it has no id, and a card never names a local path as a reference.
    """
    if is_hub_id(reference):
        return {"id": reference.split("@")[0], "name": reference.split("@")[0]}
    found = known_hub_id(local_dir or reference) if (local_dir or reference) else None
    if found is None and hint and _hub_id_shaped(str(hint)):
        found = str(hint)
    return {"id": found, "name": found or public_name(reference)}


def public_command(command: str) -> str:
    """A command line as a card shows it: every argument that is a local path by its folder name only
    (:func:`public_name`), options and Hub ids as they are. The one rule for every card: a card is published,
    and a path on the machine that wrote it means nothing to its readers."""
    from .references import is_local_reference

    def public(token: str) -> str:
        path_like = not token.startswith("-") and ("/" in token or token.startswith((".", "~")))
        return public_name(token) if path_like and is_local_reference(token) else token

    return " ".join(public(t) for t in command.split(" "))


def dataset_type(ref: str) -> str:
    """``model-index`` ``dataset.type``: the dataset's identity as a card names it, the Hub id or, for local data,
    the folder's name (:func:`public_name`).

    The Hub groups a card's results by task, dataset type, config, split and revision, and names each group after
    its first entry: local datasets typed by their builder (``parquet``) fell into one group named after the
    first task's dataset. One type per dataset keeps one result group per task dataset."""
    return public_name(ref)


def inherited_license(cards: list[dict]) -> str | None:
    """The license the sources' cards declare, when they agree (``None`` when none declares one or they
    differ: a merge of differently licensed models gets no license field of its own)."""
    found = {str(c.get("license")).strip() for c in cards if isinstance(c, dict) and c.get("license")}
    return found.pop() if len(found) == 1 else None


def accuracy_result(dataset: str, name: str | None, split: str, value: float, label: str | None = None,
                    config: str | None = None):
    """One ``model-index`` accuracy entry (:class:`huggingface_hub.EvalResult`) for image classification.

    The Hub groups entries by task, dataset type, config, split and revision: the accuracies of several tasks on
    one dataset share a group, so ``label`` (e.g. the task) names each metric. ``name`` is the dataset's
    display name (default: its public name).
    """
    from huggingface_hub import EvalResult

    return EvalResult(task_type="image-classification", task_name="Image Classification",
                      dataset_type=dataset_type(dataset), dataset_name=name or public_name(dataset),
                      dataset_config=config, dataset_split=split,
                      metric_type="accuracy", metric_value=round(float(value), 4),
                      metric_name=f"accuracy ({label})" if label else "accuracy")


def retarget_card(text: str, repo_id: str, *, folder_name: str | None = None, subfolder: str | None = None) -> str:
    """A card's usage code pointed at the repo it is pushed to (``hfdistac push DIR REPO``).

    An output's card names the model the way it was known when written: the ``--push-to`` repo, or else the output
    folder's name, which means nothing once uploaded. This rewrites the model name in the usage lines hfdistac's
    templates write (``from_pretrained("...")``, ``pipeline(..., model="...")``, ``hfdistac evaluate ...``) to
    ``repo_id``. A card of a method's subfolder (``merge --method all``) keeps its ``subfolder=`` when the whole
    output is pushed (``subfolder`` is its path in the repo); pushed on its own (``folder_name`` is the folder
    pushed), it is the repo's root and loses it.
    """
    import re

    out = re.sub(r'(from_pretrained\()"[^"\n]*"', rf'\1"{repo_id}"', text)
    out = re.sub(r'(model=)"[^"\n/]*(?:/[^"\n]*)?"', lambda m: f'{m.group(1)}"{repo_id}'
                 + (f"/{subfolder}" if subfolder else "") + '"', out)
    out = re.sub(r"(hfdistac evaluate )\S+", lambda m: f"{m.group(1)}{repo_id}" + (f"/{subfolder}" if subfolder else ""),
                 out)
    if folder_name is not None:  # the folder pushed is the repo's root: no subfolder of its own
        out = re.sub(r', subfolder="' + re.escape(folder_name) + r'"', "", out)
    return out


def markdown_cell(text: object) -> str:
    """Text from a recipe, a card or a dataset made safe inside a Markdown table cell or line of a card: no HTML
    (``<``, ``>``, ``&`` become entities), no column break (``|``), no code fence or span (backticks), one line."""
    out = str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    out = out.replace("|", "\\|").replace("`", "\\`")
    return " ".join(out.split())


def _longest_backtick_run(text: str) -> int:
    import re

    return max((len(m) for m in re.findall(r"`+", text)), default=0)


def code_span(text: object) -> str:
    """Inline code for a card (``path``), safe in a table cell: delimited by more backticks than the text holds,
    ``|`` escaped (GitHub tables split cells on it before reading code spans)."""
    body = str(text).replace("|", "\\|").replace("\n", " ")
    longest = _longest_backtick_run(body)
    fence = "`" * (longest + 1)
    pad = " " if longest else ""
    return f"{fence}{pad}{body}{pad}{fence}"


def code_block(text: object, language: str = "") -> str:
    """A fenced code block whose fence no line of ``text`` can close (longer than any run of backticks in it): a
    recipe description holding a fence stays inside the block."""
    body = str(text)
    fence = "`" * max(3, _longest_backtick_run(body) + 1)
    return f"{fence}{language}\n{body}\n{fence}"
