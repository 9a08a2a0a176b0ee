"""The one canonical name of a vision-tower tensor (the on-disk ``CLIPVisionModel`` form,
``vision_model.<param>``), shared by the checkpoint reader and the adapter reader."""

from __future__ import annotations

VISION_PREFIX = "vision_model."
_NOT_TOWER = ("position_ids",)


def canonical_vision_key(key: str) -> str | None:
    """Map a tensor name of any supported layout to the canonical vision key, or ``None`` if not tower.

    ``vision_model.encoder...`` and ``encoder...`` both map to ``vision_model.encoder...``; text tower,
    projections, ``logit_scale`` and ``position_ids`` buffers map to ``None``.
    """
    if key.startswith(("text_model.", "text_projection", "visual_projection", "logit_scale")):
        return None
    if key.endswith(_NOT_TOWER):
        return None
    if key.startswith(VISION_PREFIX):
        return key
    if key.startswith(("embeddings.", "encoder.", "pre_layrnorm.", "post_layernorm.")):
        return VISION_PREFIX + key
    return None


def module_key(canonical: str) -> str:
    """The parameter name inside an in-memory ``CLIPVisionModel`` (prefix removed)."""
    return canonical.removeprefix(VISION_PREFIX)
