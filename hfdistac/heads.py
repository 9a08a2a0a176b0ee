"""Frozen zero-shot classification heads built from the pretrained CLIP text tower (METHOD.md §0).

For each class ``c``: embed every prompt template with the *pretrained* text tower + ``text_projection``,
L2-normalise each embedding, average over templates, L2-normalise again; stack into ``W ∈ R^{C×d}``.
Image side: ``pooler_output`` → pretrained ``visual_projection`` → L2-normalise → ``z``;
``logits = exp(logit_scale) · z Wᵀ``. Image features are always normalised: temperatures only mean something
on normalised logits.

Heads are never merged or trained. :class:`ZeroShotClassifier` wraps a vision tower with its head.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .errors import InputError

logger = logging.getLogger(__name__)


@dataclass
class Head:
    """A frozen zero-shot head.

    Attributes:
        weight: ``[C, d]`` L2-normalised class embeddings.
        projection: ``[d, hidden]`` pretrained ``visual_projection`` weight.
        logit_scale: ``exp(logit_scale)`` of the pretrained CLIP (≈100 for OpenAI CLIP).
        class_names: Class names in label order.
        templates: Prompt templates used.
        temperature: Post-hoc calibration temperature (1.0 = uncalibrated); logits are divided by it.
    """

    weight: torch.Tensor
    projection: torch.Tensor
    logit_scale: float
    class_names: list[str]
    templates: list[str]
    temperature: float = 1.0

    @property
    def num_classes(self) -> int:
        return int(self.weight.shape[0])

    def logits(self, pooled: torch.Tensor) -> torch.Tensor:
        """Logits from the vision tower's ``pooler_output`` (``[B, hidden]`` → ``[B, C]``)."""
        z = pooled @ self.projection.to(pooled.dtype).T
        z = z / z.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return self.logit_scale * (z @ self.weight.to(z.dtype).T) / self.temperature

    def to(self, device: torch.device | str) -> Head:
        return Head(self.weight.to(device), self.projection.to(device), self.logit_scale,
                    self.class_names, self.templates, self.temperature)


def load_templates_file(path: str | Path) -> list[str]:
    """Read prompt templates from a text file (one per line, each containing ``{c}``) or a JSON list."""
    from .yaml_files import read_user_text

    p = Path(path)
    if not p.is_file():
        raise InputError(f"templates file {str(p)!r} does not exist", "pass a text file with one template per line")
    text = read_user_text(p, "templates file")
    if p.suffix == ".json":
        try:
            templates = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"templates file {str(p)!r} is not valid JSON: {e}",
                             'write a JSON list of strings, or a text file with one template per line') from None
        if not isinstance(templates, list):
            raise InputError(f"templates file {str(p)!r} holds a {type(templates).__name__}, not a list of templates")
    else:
        templates = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    bad = [t for t in templates if not isinstance(t, str) or "{c}" not in t]
    if not templates or bad:
        raise InputError(
            f"templates file {str(p)!r} has {'no templates' if not templates else f'templates without {{c}}: {bad[:3]}'}",
            'each template must contain "{c}" where the class name goes, e.g. "a photo of a {c}."',
        )
    return templates


@torch.no_grad()
def build_head(clip_model, tokenizer, class_names: list[str], templates: list[str], batch_size: int = 256) -> Head:
    """Build the zero-shot head of a task from a pretrained ``CLIPModel``.

    Args:
        clip_model: The pretrained ``transformers.CLIPModel`` (text tower, projections and ``logit_scale``).
        tokenizer: Its tokenizer.
        class_names: Class names in label order.
        templates: Prompt templates containing ``{c}``.
        batch_size: Prompts embedded per forward pass (prompts of all classes are batched together).

    Returns:
        The frozen :class:`Head`.
    """
    if not class_names:
        raise InputError("a head needs at least one class name")
    if not templates or any("{c}" not in t for t in templates):
        raise InputError(f"every template must contain {{c}}; got {templates!r}")
    was_training = clip_model.training
    clip_model.eval()
    device = clip_model.logit_scale.device
    max_len = getattr(tokenizer, "model_max_length", 77)
    max_len = min(max_len if max_len and max_len < 10_000 else 77,
                  clip_model.config.text_config.max_position_embeddings)
    # Every prompt of every class in one stream of batches (a per-class forward pass costs one text-tower call
    # per class: 397 classes x 2 templates of SUN397 took minutes on CPU); the embeddings are then averaged
    # per class. Padding is per batch; masked positions do not change a prompt's embedding.
    prompts = [t.format(c=name) for name in class_names for t in templates]
    # Batches of prompts of similar token length, so little of each batch is padding; results go back in order.
    lengths = [len(ids) for ids in tokenizer(prompts, truncation=True, max_length=max_len)["input_ids"]]
    order = sorted(range(len(prompts)), key=lambda i: lengths[i])
    embs = []
    for i in range(0, len(prompts), batch_size):
        chunk = [prompts[j] for j in order[i:i + batch_size]]
        enc = tokenizer(chunk, padding=True, truncation=True, max_length=max_len, return_tensors="pt").to(device)
        out = clip_model.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
        e = out if isinstance(out, torch.Tensor) else out.pooler_output
        embs.append(e.float())
    sorted_embs = torch.cat(embs)
    embs = [torch.empty_like(sorted_embs)]
    embs[0][torch.as_tensor(order)] = sorted_embs
    e = torch.cat(embs)
    e = e / e.norm(dim=-1, keepdim=True)
    mean = e.view(len(class_names), len(templates), -1).mean(dim=1)
    rows = mean / mean.norm(dim=-1, keepdim=True)
    clip_model.train(was_training)
    return Head(
        weight=rows.cpu(),
        projection=clip_model.visual_projection.weight.detach().float().cpu().clone(),
        logit_scale=float(clip_model.logit_scale.detach().exp()),
        class_names=list(class_names),
        templates=list(templates),
    )


def head_cache_key(base_sha: str, dataset_id: str, class_names: list[str], templates: list[str]) -> str:
    """Cache key of a head: base weights revision, dataset, class names and templates."""
    payload = json.dumps([base_sha, dataset_id, class_names, templates], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def save_head(head: Head, path: str | Path) -> None:
    """Save a head as safetensors (tensors) with its names, templates and scale in the metadata."""
    from .tensor_files import save_safetensors

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "class_names": json.dumps(head.class_names),
        "templates": json.dumps(head.templates),
        "logit_scale": repr(head.logit_scale),
        "temperature": repr(head.temperature),
    }
    save_safetensors({"weight": head.weight, "projection": head.projection}, path, meta, what="the head")


def load_head(path: str | Path) -> Head:
    """Load a head written by :func:`save_head`."""
    from .tensor_files import read_tensor, safe_open_checked

    with safe_open_checked(path) as f:
        meta = f.metadata() or {}
        weight, projection = read_tensor(f, "weight", path), read_tensor(f, "projection", path)
    return Head(weight, projection, float(meta["logit_scale"]), json.loads(meta["class_names"]),
                json.loads(meta["templates"]), float(meta.get("temperature", "1.0")))


class ZeroShotClassifier(nn.Module):
    """A vision tower (``CLIPVisionModel``) followed by a frozen zero-shot :class:`Head`.

    Only the vision tower's parameters are trainable; the head's tensors are buffers.
    """

    def __init__(self, vision_model: nn.Module, head: Head):
        super().__init__()
        self.vision_model = vision_model
        self.register_buffer("head_weight", head.weight.clone(), persistent=False)
        self.register_buffer("head_projection", head.projection.clone(), persistent=False)
        self.logit_scale = head.logit_scale
        self.temperature = head.temperature

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        pooled = self.vision_model(pixel_values=pixel_values).pooler_output
        z = pooled @ self.head_projection.to(pooled.dtype).T
        z = z / z.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return self.logit_scale * (z @ self.head_weight.to(z.dtype).T) / self.temperature
