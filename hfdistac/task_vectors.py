"""Task vectors τ = θ_ft − θ₀ over the vision tower's floating-point parameters (METHOD.md §0).

Types: weights (θ, a ``dict[str, Tensor]`` of one model's vision parameters) and task vectors (τ, a
:class:`TaskVector`) are different things and are kept apart in signatures. Keys are in the *canonical*
form: the on-disk form of a ``CLIPVisionModel`` checkpoint, every key prefixed with ``vision_model.``
(see :func:`hfdistac.checkpoints.canonical_vision_key`).

A :class:`TaskVector` is a read-only ``Mapping[str, Tensor]``; when loaded from a file it is *lazy*: a
tensor is read from the safetensors file only when indexed, so merging methods that walk keys one at a
time never hold more than one tensor per task in memory.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

from .errors import CheckpointError
from .tensor_files import check_finite, read_tensor, safe_open_checked, save_safetensors

Weights = dict[str, torch.Tensor]

TASK_VECTOR_FORMAT = "hfdistac.task_vector.v1"


class TaskVector(Mapping[str, torch.Tensor]):
    """A task vector: parameter name → difference tensor, plus string metadata.

    Args:
        tensors: The difference tensors (in memory). Mutually exclusive with ``path``.
        metadata: Provenance (base/source references and SHAs, how it was produced, norm).
        path: A safetensors file to read lazily.
    """

    def __init__(self, tensors: Mapping[str, torch.Tensor] | None = None, metadata: dict[str, str] | None = None,
                 *, path: str | Path | None = None):
        if (tensors is None) == (path is None):
            raise ValueError("give exactly one of tensors or path")
        self._tensors = dict(tensors) if tensors is not None else None
        self._path = Path(path) if path is not None else None
        self._keys: list[str]
        self._finite: set[str] = set()  # keys of a lazy file already checked for NaN/Inf
        if self._path is not None:
            with safe_open_checked(self._path) as f:
                self._keys = list(f.keys())
                file_meta = dict(f.metadata() or {})
            self.metadata = {**file_meta, **(metadata or {})}
        else:
            self._keys = list(self._tensors)
            self.metadata = dict(metadata or {})

    # Mapping protocol -------------------------------------------------------------------------------
    def __getitem__(self, key: str) -> torch.Tensor:
        if self._tensors is not None:
            return self._tensors[key]
        if key not in self._keys:
            raise KeyError(key)
        with safe_open_checked(self._path) as f:
            tensor = read_tensor(f, key, self._path)
        if key not in self._finite:  # once per tensor: merges read a tensor many times (SAMerging every step)
            check_finite([(key, tensor)], f"task vector {str(self._path)!r}")
            self._finite.add(key)
        return tensor

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def is_lazy(self) -> bool:
        return self._tensors is None

    @property
    def path(self) -> Path | None:
        return self._path

    def materialize(self) -> TaskVector:
        """An in-memory copy (reads every tensor once)."""
        if not self.is_lazy:
            return self
        return TaskVector({k: self[k] for k in self._keys}, self.metadata)

    def scaled(self, factor: float) -> TaskVector:
        """κ·τ as a new in-memory task vector (metadata kept, ``scale`` recorded)."""
        meta = dict(self.metadata, scale=repr(float(factor)))
        return TaskVector({k: v * factor for k, v in self.items()}, meta)

    def norm(self) -> float:
        """Global L2 norm of all entries flattened."""
        return global_norm(self)

    def save(self, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
        """Write as safetensors (atomically) with metadata; the norm is always recorded."""
        return save_task_vector(self, path, metadata)


def compute_task_vector(base: Mapping[str, torch.Tensor], finetuned: Mapping[str, torch.Tensor],
                        metadata: dict[str, str] | None = None) -> TaskVector:
    """τ = θ_ft − θ₀ over floating-point tensors, paired by name.

    Args:
        base: θ₀ (canonical keys).
        finetuned: θ_ft (canonical keys).
        metadata: Provenance to attach.

    Raises:
        CheckpointError: naming the first differing keys or shapes when the two do not match.
    """
    check_compatible(base, finetuned)
    out = {}
    for k, b in base.items():
        if not torch.is_floating_point(b):
            continue
        out[k] = finetuned[k].float() - b.float()
    return TaskVector(out, metadata)


class TaskVectorView(Mapping[str, torch.Tensor]):
    """τ = θ_ft − θ₀ computed tensor by tensor on access (nothing stored), keys in θ₀'s order.

    Gives the same tensors as :func:`compute_task_vector` (``θ_ft[k].float() − θ₀[k].float()``) without holding a
    third copy of the tower; ``θ₀`` may itself be lazy (:class:`~hfdistac.checkpoints.LazyVisionWeights`).

    Args:
        base: θ₀.
        finetuned: θ_ft, same keys and shapes (checked by the caller).
        keys: The key order (default: ``base``'s).
    """

    def __init__(self, base: Mapping[str, torch.Tensor], finetuned: Mapping[str, torch.Tensor],
                 keys: list[str] | None = None):
        self.base, self.finetuned = base, finetuned
        self._keys = list(keys if keys is not None else base)

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.finetuned[key].float() - self.base[key].float()

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def check_compatible(base: Mapping[str, torch.Tensor], other: Mapping[str, torch.Tensor],
                     what: tuple[str, str] = ("base", "fine-tuned")) -> None:
    """Raise :class:`CheckpointError` if the two weight sets differ in keys or shapes (never silently)."""
    bk, ok = set(base), set(other)
    if bk != ok:
        only_b = sorted(bk - ok)[:5]
        only_o = sorted(ok - bk)[:5]
        raise CheckpointError(
            f"{what[0]} and {what[1]} vision towers do not have the same parameters: "
            f"only in {what[0]}: {only_b or '-'}; only in {what[1]}: {only_o or '-'}",
            "both must be the same CLIP architecture (e.g. both ViT-B/32); check --base",
        )
    bad = [(k, tuple(base[k].shape), tuple(other[k].shape)) for k in base if base[k].shape != other[k].shape]
    if bad:
        shown = "; ".join(f"{k}: {s1} vs {s2}" for k, s1, s2 in bad[:3])
        raise CheckpointError(
            f"{what[0]} and {what[1]} differ in {len(bad)} tensor shape(s): {shown}",
            "both must be the same CLIP architecture (e.g. both ViT-B/32); check --base",
        )


def apply_task_vector(base: Mapping[str, torch.Tensor], task_vector: Mapping[str, torch.Tensor],
                      scale: float = 1.0) -> Weights:
    """θ = θ₀ + s·τ (keys of ``base`` absent from τ are copied unchanged, e.g. integer buffers)."""
    extra = set(task_vector) - set(base)
    if extra:
        raise CheckpointError(f"task vector has parameters the base lacks: {sorted(extra)[:5]}",
                              "the task vector was computed against a different base model")
    out = {}
    for k, b in base.items():
        if k in task_vector:
            out[k] = (b.float() + scale * task_vector[k].float()).to(b.dtype)
        else:
            out[k] = b.clone()
    return out


def global_norm(task_vector: Mapping[str, torch.Tensor]) -> float:
    """Global L2 norm of every entry flattened (accumulated in float64, tensor by tensor)."""
    total = 0.0
    for v in task_vector.values():
        total += float(v.double().pow(2).sum())
    return math.sqrt(total)


_BLOCK = re.compile(r"encoder\.layers\.(\d+)\.")


def parameter_kind(key: str) -> str:
    """Kind of a parameter: ``attention``, ``mlp``, ``layernorm`` or ``embeddings``."""
    if "self_attn" in key:
        return "attention"
    if ".mlp." in key:
        return "mlp"
    if "layer_norm" in key or "layrnorm" in key or "layernorm" in key:
        return "layernorm"
    return "embeddings"


def parameter_group(key: str) -> str:
    """Layer group of a parameter: ``embeddings``, ``block.<i>`` or ``final``, for per-layer plots."""
    m = _BLOCK.search(key)
    if m:
        return f"block.{int(m.group(1))}"
    if "post_layernorm" in key:
        return "final"
    return "embeddings"


def per_layer_norms(task_vector: Mapping[str, torch.Tensor]) -> dict[str, dict[str, float]]:
    """Per-layer L2 norms.

    Returns:
        ``{"by_block": {group: norm}, "by_kind": {kind: norm}, "by_block_kind": {"block.i/kind": norm}}``,
        groups in model order (embeddings, block.0 … block.N-1, final).
    """
    sq_block: dict[str, float] = {}
    sq_kind: dict[str, float] = {}
    sq_both: dict[str, float] = {}
    for k, v in task_vector.items():
        s = float(v.double().pow(2).sum())
        g, kind = parameter_group(k), parameter_kind(k)
        sq_block[g] = sq_block.get(g, 0.0) + s
        sq_kind[kind] = sq_kind.get(kind, 0.0) + s
        sq_both[f"{g}/{kind}"] = sq_both.get(f"{g}/{kind}", 0.0) + s

    def order(g: str) -> tuple[int, int]:
        if g.startswith("embeddings"):
            return (0, 0)
        if g.startswith("block."):
            return (1, int(g.split(".")[1].split("/")[0]))
        return (2, 0)

    return {
        "by_block": {g: math.sqrt(sq_block[g]) for g in sorted(sq_block, key=order)},
        "by_kind": {k: math.sqrt(v) for k, v in sorted(sq_kind.items())},
        "by_block_kind": {g: math.sqrt(sq_both[g]) for g in sorted(sq_both, key=lambda x: (order(x), x))},
    }


def save_task_vector(task_vector: Mapping[str, torch.Tensor], path: str | Path,
                     metadata: dict[str, str] | None = None) -> Path:
    """Save τ as safetensors with string metadata (atomic: temp file then rename).

    The metadata always carries ``format`` and ``norm``; ``metadata`` and the task vector's own metadata
    (if it is a :class:`TaskVector`) are merged, explicit arguments winning.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(getattr(task_vector, "metadata", {}) or {})
    meta.update(metadata or {})
    meta["format"] = TASK_VECTOR_FORMAT
    meta["norm"] = repr(global_norm(task_vector))
    tensors = {k: task_vector[k] for k in task_vector}
    return save_safetensors(tensors, path, meta, what="the task vector to be written")


def load_task_vector(path: str | Path, lazy: bool = True) -> TaskVector:
    """Load a task vector written by :func:`save_task_vector` (lazy by default)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"task vector file {str(path)!r} does not exist")
    tv = TaskVector(path=path)
    if tv.metadata.get("format") != TASK_VECTOR_FORMAT:
        raise CheckpointError(f"{str(path)!r} is not an hfdistac task vector (metadata format="
                              f"{tv.metadata.get('format')!r})",
                              "task vectors are written by `hfdistac condition` or hfdistac.save_task_vector")
    return tv if lazy else tv.materialize()
