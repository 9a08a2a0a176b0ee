"""Stages 1–2 of a merge: the recipe's sources resolved, and one lazy task vector per task.

A task whose model directory holds ``task_vector.safetensors`` (an ``hfdistac condition`` output, local or
pulled from the Hub) contributes that conditioned vector; its recorded base revision must match the
recipe's base. Any other model contributes τ = θ_t − θ₀, written to a scratch safetensors file and read back
lazily, so merging holds one tensor per task at a time. Normalisers stay the *original* fine-tuned models.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import CheckpointError


@dataclass
class TaskSource:
    """Where a task's vector comes from (for reports and cards)."""

    name: str
    reference: str
    revision: str
    conditioned: bool
    normalizer: str
    norm: float
    license: str | None = None  # as the source's card declares it


def task_vector_for(reference: str, base, scratch: Path, name: str, theta0=None):
    """The task vector of one recipe task (lazy, on disk) and its provenance.

    A directory holding ``task_vector.safetensors`` (an ``hfdistac condition`` output, local or pulled from the
    Hub) gives that vector; its recorded base revision must match the recipe's base. Otherwise τ = θ_t − θ₀.

    Args:
        reference: The task's model (Hub id or directory).
        base: The recipe's :class:`~hfdistac.checkpoints.BaseModel`.
        scratch: Folder for the task vector's safetensors file.
        name: The task's name (the file's stem).
        theta0: θ₀ in canonical keys, when the caller holds it already (default: ``base.weights``).

    Returns:
        ``(lazy TaskVector, TaskSource)``.
    """
    from ..checkpoints import check_against_base, load_finetuned
    from ..hub import resolve_model
    from ..task_vectors import check_compatible, compute_task_vector, load_task_vector

    theta0 = base.weights if theta0 is None else theta0
    resolved = resolve_model(reference)
    tv_file = resolved.local_dir / "task_vector.safetensors"
    path = scratch / f"{name}.safetensors"
    if tv_file.is_file():
        tv = load_task_vector(tv_file)
        check_same_base(tv.metadata, base, reference)
        import torch

        from ..merging.primitives import tensor_shapes

        # keys and shapes from the file's header: no tensor data is read to check them
        header = {k: torch.empty(shape, device="meta") for k, shape in tensor_shapes(tv).items()}
        check_compatible(theta0, header, (f"base {base.resolved.reference!r}", f"task vector {reference!r}"))
        return tv, TaskSource(name, reference, resolved.revision, True, "", tv.norm(), _license(resolved))
    ft = load_finetuned(reference)
    check_against_base(base, ft)
    tv = compute_task_vector(theta0, ft.weights, {"source": reference, "source_revision": resolved.revision})
    tv.save(path)
    del ft, tv
    lazy = load_task_vector(path)
    return lazy, TaskSource(name, reference, resolved.revision, False, "", lazy.norm(), _license(resolved))


def _license(resolved) -> str | None:
    from ..hub import read_card_metadata

    try:
        value = read_card_metadata(resolved).get("license")
    except Exception:  # noqa: BLE001 - provenance only: a card that cannot be read declares nothing
        return None
    return str(value) if value else None


def build_task_vectors(recipe, base, theta0, scratch: Path, *, progress: bool = True) -> tuple[list, list[TaskSource]]:
    """Stage 2: the lazy task vector and the provenance of every task of the recipe, in recipe order."""
    from tqdm.auto import tqdm

    from ..errors import InputError

    tvs, sources = [], []
    seen: dict[str, str] = {}
    for t in tqdm(recipe.tasks, desc="task vectors", disable=not progress, unit="task"):
        tv, src = task_vector_for(t.model, base, scratch, t.name, theta0)
        if src.revision in seen:  # the same weights twice would count one task double, without a word
            raise InputError(f"tasks {seen[src.revision]!r} and {t.name!r} of the recipe are the same model "
                             f"({src.reference}, {src.revision})", "give each task its own fine-tuned model")
        seen[src.revision] = t.name
        src.normalizer = t.normalizer or t.model
        tvs.append(tv)
        sources.append(src)
    return tvs, sources


def check_same_base(metadata: dict, base, reference: str) -> None:
    """Refuse a stored task vector computed against another base than the recipe's.

    Bases are compared by content (``base_vision_identity``: a hash of θ₀'s tensors, so a local base and its Hub
    copy agree); vectors written before that was recorded fall back to the base revision they name.

    Raises:
        CheckpointError: naming both bases' identities.
    """
    recorded_identity, recorded_revision = metadata.get("base_vision_identity"), metadata.get("base_revision")
    if recorded_identity:
        if recorded_identity == base.vision_identity:
            return
    elif not recorded_revision or recorded_revision == base.resolved.revision:
        return
    recorded = f"revision {recorded_revision}" if not recorded_identity else \
        recorded_identity + (f" (revision {recorded_revision})" if recorded_revision else "")
    raise CheckpointError(
        f"task vector of {reference!r} was computed against base {recorded}, but the recipe's base "
        f"{base.resolved.reference!r} is {base.vision_identity} (revision {base.resolved.revision})",
        "use the base the vector was conditioned from (see its card), or recompute it")
