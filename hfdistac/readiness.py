"""Merge-readiness model cards for any checkpoint (the library form of ``hfdistac card``).

Diagnoses one fine-tuned CLIP vision tower — task-vector norm against its base (and against reference task
vectors), per-layer norms, prediction entropy / max probability / accuracy / ECE on its data with a
reliability diagram — and writes a card *section* with a verdict (ready to merge / norm mismatch / low
confidence, with the DisTaC command that fixes it). An existing card keeps its text and metadata: the section
is inserted between ``<!-- hfdistac:merge-readiness:start/end -->`` markers (replaced on a re-run), and
metadata keys are only added, never overwritten. Without a card a whole one is written.

Output directory: ``README.md`` plus ``hfdistac/merge_readiness.json`` and the PNG plots in ``hfdistac/``
(so a pull request on somebody's model repo touches nothing else).
"""

from __future__ import annotations

import logging
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .cards import code_block, code_span, public_command, public_name
from .configs import check_fields
from .configs import help_field as _h
from .errors import InputError
from .hub.resolve import resolving_once

logger = logging.getLogger(__name__)

START, END = "<!-- hfdistac:merge-readiness:start -->", "<!-- hfdistac:merge-readiness:end -->"
ASSET_DIR = "hfdistac"
VERDICTS = {"ready": "ready to merge", "norm_mismatch": "norm mismatch", "low_confidence": "low confidence",
            "both": "norm mismatch and low confidence"}


@dataclass
class CardConfig:
    """``hfdistac card``: a merge-readiness card for any existing CLIP checkpoint."""

    model: str = field(default="", metadata=_h("the checkpoint: Hub repo[@revision] or local directory",
                                               positional=True, metavar="MODEL"))
    base: str | None = field(default=None, metadata=_h("pretrained CLIP; default: the model card's base_model"))
    data: str | None = field(default=None, metadata=_h(
        "dataset for entropy/accuracy/ECE; default: the model card's first dataset ('none' to skip)"))
    dataset_config: str | None = field(default=None, metadata=_h("dataset configuration name"))
    image_column: str | None = field(default=None, metadata=_h(
        "the dataset's image column (default: its first Image feature)", metavar="NAME"))
    label_column: str | None = field(default=None, metadata=_h(
        "the dataset's label column (default: its first ClassLabel feature)", metavar="NAME"))
    reference: list[str] | None = field(default=None, metadata=_h(
        "other fine-tuned models of the same base to compare the task-vector norm against"))
    split: str = field(default="test", metadata=_h("split to measure on"))
    limit: int | None = field(default=512, metadata=_h("use at most this many images (0 = all)", ge=0,
                                                       zero_means_none=True, note="0 = all"))
    batch_size: int = field(default=64, metadata=_h("evaluation batch size", ge=1))
    num_workers: int = field(default=0, metadata=_h("DataLoader workers for image preprocessing", ge=0))
    device: str = field(default="auto", metadata=_h("torch device: auto, cpu, cuda, cuda:N"))
    templates: str | None = field(default=None, metadata=_h("prompt-template file overriding the task's",
                                                            metavar="FILE"))
    norm_threshold: float = field(default=2.0, metadata=_h("norm-ratio threshold for the norm-mismatch verdict",
                                                           gt=1))
    entropy_threshold: float = field(default=0.1, metadata=_h(
        "normalised-entropy threshold (fraction of log C) for the low-confidence verdict", gt=0, lt=1))
    output: str | None = field(default=None, metadata=_h(
        "write README.md and hfdistac/ assets here (default: print the section; a temp dir when pushing)",
        metavar="DIR"))
    overwrite: bool = field(default=False, metadata=_h("replace an existing --output directory"))
    push_to: str | None = field(default=None, metadata=_h("push the card (and assets) to this Hub repo",
                                                          metavar="REPO"))
    open_pr: bool = field(default=False, metadata=_h("open a pull request with the card on the model's own repo"))
    private: bool = field(default=False, metadata=_h("create the --push-to repo as private"))
    revision: str | None = field(default=None, metadata=_h("branch to push to"))
    commit_message: str | None = field(default=None, metadata=_h("commit message"))
    progress: bool = field(default=True, metadata=_h("show progress bars"))

    def __post_init__(self) -> None:
        check_fields(self)
        if not self.model:
            raise InputError("no model given")
        if self.push_to and self.open_pr:
            raise InputError("--push-to and --open-pr are mutually exclusive",
                             "--open-pr proposes the card on the model's own repo; --push-to writes another repo")

    def to_dict(self) -> dict:
        return asdict(self)


def verdict_of(flags: list[str]) -> str:
    """``ready``, ``norm_mismatch``, ``low_confidence`` or ``both``."""
    if not flags:
        return "ready"
    return flags[0] if len(flags) == 1 else "both"


def merge_section(existing: str, section: str) -> str:
    """Insert (or replace) the hfdistac section in a card's text, keeping everything else."""
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.DOTALL)
    if pattern.search(existing):
        return pattern.sub(lambda _: section.strip(), existing)
    return existing.rstrip() + "\n\n" + section.strip() + "\n"


def add_metadata(meta: dict, additions: dict) -> dict:
    """Add keys that are missing; list-valued ``tags`` are extended, nothing is overwritten."""
    out = dict(meta)
    for k, v in additions.items():
        if v in (None, [], ""):
            continue
        if k == "tags":
            tags = list(out.get("tags") or [])
            out["tags"] = tags + [t for t in v if t not in tags]
        elif k not in out or out[k] in (None, [], ""):
            out[k] = v
    return out


def render_section(m, *, base: str, base_revision: str, n_references: int, norm_threshold: float,
                   entropy_threshold: float, command: str | None, plots: list[dict], limit_text: str) -> str:
    """The merge-readiness card section of one :class:`~hfdistac.diagnosis.ModelDiagnosis` (pure)."""
    import jinja2

    from . import __version__
    from .cards import template_text

    verdict = verdict_of(m.flags)
    base = public_name(base)  # a card names local models and datasets by their folder name only
    command = public_command(command) if command else command
    ctx = {"m": m, "dataset": public_name(m.dataset) if m.dataset else None, "base": base,
           "base_revision": base_revision, "n_references": n_references,
           "norm_threshold": norm_threshold, "entropy_threshold": entropy_threshold,
           "verdict_text": VERDICTS[verdict], "reason": m.recommendation.get("reason") if verdict != "ready" else "",
           "command": command, "plots": plots, "version": __version__, "limit_text": limit_text,
           "code": code_span, "block": code_block}
    return jinja2.Template(template_text("readiness_section.md.j2"), keep_trailing_newline=True).render(**ctx)


@resolving_once()
def run_card(config: CardConfig) -> dict:
    """Diagnose a checkpoint and write/push its merge-readiness card.

    Args:
        config: A :class:`CardConfig`.

    Returns:
        ``{"verdict", "diagnosis", "section", "card", "output"?, "push"?}``.
    """
    from .runtime import apply_thread_policy

    apply_thread_policy()  # the command line's thread default, once per process
    from .diagnosis import condition_command, inspect_models
    from .evaluation import resolve_device
    from .heads import load_templates_file
    from .hub import card_datasets, infer_base, is_local_reference, read_card_metadata, resolve_model
    from .outputs import atomic_output_dir, check_destination, write_json
    from .plots import per_layer_norms_plot, reliability_plot

    if config.open_pr and is_local_reference(config.model):
        raise InputError(f"--open-pr needs a Hub model id, got the local path {config.model!r}",
                         "use --push-to REPO to publish the card elsewhere, or --output DIR to write it")
    if config.output:
        check_destination(config.output, config.overwrite)
    resolved = resolve_model(config.model)
    meta = read_card_metadata(resolved)
    base = infer_base(meta, config.model, config.base)
    data = config.data if config.data is not None else next(iter(card_datasets(meta)), None)
    if data is not None and data.lower() == "none":
        data = None
    refs = list(config.reference or [])
    templates = load_templates_file(config.templates) if config.templates else None
    diagnosis = inspect_models([config.model, *refs], base=base, datasets=[data] + [None] * len(refs),
                               split=config.split, limit=config.limit, batch_size=config.batch_size,
                               num_workers=config.num_workers, templates=[templates] + [None] * len(refs),
                               dataset_configs=[config.dataset_config] + [None] * len(refs),
                               columns=[(config.image_column, config.label_column)] + [None] * len(refs),
                               norm_threshold=config.norm_threshold, entropy_threshold=config.entropy_threshold,
                               device=str(resolve_device(config.device)), progress=config.progress)
    m = diagnosis.models[0]
    verdict = verdict_of(m.flags)
    command = condition_command(config.model, base, m.recommendation, m.dataset) if verdict != "ready" else None
    existing_text = (resolved.local_dir / "README.md").read_text(encoding="utf-8") \
        if (resolved.local_dir / "README.md").is_file() else None

    with tempfile.TemporaryDirectory(prefix="hfdistac-card-") as scratch:
        work = Path(scratch) / "card"
        assets = work / ASSET_DIR
        assets.mkdir(parents=True)
        plots = []
        series = {m.name: m.per_layer_norms["by_block"]}
        series.update({r.name: r.per_layer_norms["by_block"] for r in diagnosis.models[1:]})
        per_layer_norms_plot(series, assets / "per_layer_norms.png", title="Task-vector norm per layer")
        plots.append({"title": "Task-vector norm per layer", "path": f"{ASSET_DIR}/per_layer_norms.png"})
        if m.reliability:
            reliability_plot({m.name: m.reliability}, assets / "reliability.png")
            plots.append({"title": "Reliability diagram", "path": f"{ASSET_DIR}/reliability.png"})
        limit_text = (f"{m.split} split of {code_span(public_name(m.dataset))}"
                      + (f" (first {config.limit} images)" if config.limit else "")
                      if m.dataset else "weights only (no dataset given)")
        section = render_section(m, base=base, base_revision=diagnosis.base_revision, n_references=len(refs),
                                 norm_threshold=config.norm_threshold, entropy_threshold=config.entropy_threshold,
                                 command=command, plots=plots, limit_text=limit_text)
        additions = {"tags": ["hfdistac", "merge-readiness"], "library_name": "transformers",
                     "base_model": base if not is_local_reference(base) else None}
        if existing_text is not None:
            from huggingface_hub import ModelCard

            card = ModelCard(existing_text, ignore_metadata_errors=True)
            new_meta = add_metadata(card.data.to_dict(), additions)
            body = merge_section(card.text, section)
            from huggingface_hub import ModelCardData

            card_text = str(ModelCard.from_template(ModelCardData(**new_meta), template_str="---\n{{ card_data }}\n---\n"
                                                    + "{{ body }}", body=body.lstrip("\n")))
        else:
            title = resolved.repo_id or Path(resolved.local_dir).name
            from .cards import render_card

            card_text = render_card("readiness_card.md.j2", {
                "card_data": add_metadata({}, additions), "title": title, "base": public_name(base),
                "section": section})
        (work / "README.md").write_text(card_text, encoding="utf-8")
        result = {"verdict": verdict, "diagnosis": diagnosis.to_dict(), "section": section, "card": card_text}
        write_json(assets / "merge_readiness.json", {"verdict": verdict, "model": {
            **asdict(m), "reference": public_name(m.reference), "dataset": public_name(m.dataset) if m.dataset else None,
            "recommendation": {**m.recommendation, "command": public_command(m.recommendation["command"])
                               if m.recommendation.get("command") else None}},
            "references": [public_name(r) for r in refs], "base": public_name(base),
                                                     "base_revision": diagnosis.base_revision})
        target = work
        if config.output:
            with atomic_output_dir(config.output, config.overwrite) as out:
                for p in work.rglob("*"):
                    if p.is_file():
                        dest = out / p.relative_to(work)
                        dest.parent.mkdir(parents=True, exist_ok=True)
                        dest.write_bytes(p.read_bytes())
            target = Path(config.output)
            result["output"] = str(target)
        if config.push_to or config.open_pr:
            from .hub import parse_reference, push_folder

            repo = config.push_to or parse_reference(config.model)[0]
            result["push"] = push_folder(target, repo, private=config.private, revision=config.revision,
                                         create_pr=config.open_pr,
                                         commit_message=config.commit_message or "Add merge-readiness card (hfdistac)")
    return result
