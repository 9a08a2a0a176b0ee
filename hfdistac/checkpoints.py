"""Loading CLIP checkpoints by Hub id or local path, safetensors only (METHOD.md §0).

A *model reference* is ``repo_id[@revision]`` or a local directory (see :mod:`hfdistac.hub`). Fine-tuned
checkpoints may be saved as ``CLIPVisionModel``, ``CLIPVisionModelWithProjection`` or a full ``CLIPModel``,
with or without the ``vision_model.`` key prefix; every layout is read into the one *canonical* key form
(the on-disk ``CLIPVisionModel`` form: ``vision_model.<param>``). Only floating-point *parameters* of the
vision tower are kept: buffers (``position_ids``), the projection, the text tower and ``logit_scale`` are not
part of a task vector.

Pickle weights (``pytorch_model.bin``, ``*.pt``) are never unpickled: a checkpoint that only has them is
refused with a conversion hint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError
from .references import file_inside_model, regular_file_inside_model
from .task_vectors import Weights, check_compatible
from .tensor_files import check_finite, read_tensor, safe_open_checked, save_safetensors
from .vision_keys import VISION_PREFIX, canonical_vision_key, module_key  # noqa: F401  (re-exported)

logger = logging.getLogger(__name__)

_VISION_MODEL_TYPES = {"clip_vision_model"}
_FULL_MODEL_TYPES = {"clip"}
_ARCH_FIELDS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "image_size",
                "patch_size", "num_channels")
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")

CONVERT_HINT = (
    "convert it once, in an environment you trust, with: python -c \"from transformers import "
    "CLIPVisionModel as M; M.from_pretrained('SRC').save_pretrained('DST', safe_serialization=True)\""
)


def weight_files(directory: Path) -> list[Path]:
    """The safetensors weight files of a checkpoint directory (sharded or not).

    Raises:
        CheckpointError: when there are none (pickle-only checkpoints get a conversion hint).
    """
    directory = Path(directory)
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError, OSError) as e:
            raise CheckpointError(f"{str(index)!r} is not a readable shard index ({type(e).__name__})",
                                  "re-save the model with save_pretrained") from None
        return [_regular_weight_file(directory, s) for s in shards]
    single = directory / "model.safetensors"
    if single.exists():
        return [_regular_weight_file(directory, single.name)]
    others = sorted(p for p in directory.glob("*.safetensors") if not p.name.startswith(("task_vector", "head")))
    if others:
        return [_regular_weight_file(directory, p.name) for p in others]
    pickles = [p.name for p in directory.iterdir() if p.suffix in _PICKLE_SUFFIXES] if directory.is_dir() else []
    if pickles:
        raise CheckpointError(
            f"{str(directory)!r} only has pickle weights ({', '.join(pickles)}); hfdistac never unpickles "
            "(loading a pickle can run arbitrary code)",
            CONVERT_HINT,
        )
    raise CheckpointError(f"no model.safetensors in {str(directory)!r}",
                          "pass a directory (or Hub repo) holding config.json and model.safetensors")


def _regular_weight_file(directory: Path, name: object) -> Path:
    """A weight file named by the checkpoint: a plain file name, a regular file inside the model's folder or its
    Hub-cache entry (:func:`~hfdistac.references.regular_file_inside_model`).

    Raises:
        CheckpointError: saying which of these it is not.
    """
    if not isinstance(name, str) or "/" in name or "\\" in name or name in ("", ".", ".."):
        raise CheckpointError(f"the checkpoint in {str(directory)!r} names a weight file {str(name)[:80]!r} that is "
                              "not a plain file name", "re-save the model with save_pretrained")
    return regular_file_inside_model(directory, name)


def read_config(directory: Path) -> dict[str, Any]:
    """The raw ``config.json`` of a checkpoint directory."""
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise CheckpointError(f"no config.json in {str(directory)!r}",
                              "a CLIP checkpoint directory needs config.json next to model.safetensors")
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise CheckpointError(f"config.json in {str(directory)!r} is {path.stat().st_size:,} bytes; a model "
                                  f"configuration is a few KB (at most {MAX_CONFIG_BYTES:,} are read)")
        cfg = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise CheckpointError(f"config.json in {str(directory)!r} is not UTF-8 text",
                              "re-save the model with save_pretrained") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"config.json in {str(directory)!r} is not valid JSON: {e}") from None
    except OSError as e:
        raise CheckpointError(f"cannot read config.json in {str(directory)!r}: {e.strerror or e}") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"config.json in {str(directory)!r} is not a JSON object (it holds a "
                              f"{type(cfg).__name__})", "re-save the model with save_pretrained")
    return cfg


#: A ``config.json`` is a few KB; a larger one is not read.
MAX_CONFIG_BYTES = 1 << 20


def vision_config(directory: Path):
    """The ``CLIPVisionConfig`` of a CLIP checkpoint of any supported layout.

    Raises:
        CheckpointError: when the checkpoint is not a CLIP model.
    """
    from transformers import CLIPVisionConfig

    cfg = read_config(directory)
    model_type = cfg.get("model_type")
    if model_type in _FULL_MODEL_TYPES:
        vc = dict(cfg.get("vision_config") or {})
        vc.setdefault("projection_dim", cfg.get("projection_dim", 512))
    elif model_type in _VISION_MODEL_TYPES:
        vc = cfg
    else:
        raise CheckpointError(
            f"{str(directory)!r} is not a CLIP model (config model_type={model_type!r}, "
            f"architectures={cfg.get('architectures')})",
            "hfdistac works on CLIP vision towers: CLIPVisionModel, CLIPVisionModelWithProjection or CLIPModel",
        )
    vc = {k: v for k, v in vc.items() if k not in ("model_type", "architectures", "transformers_version")}
    try:
        return CLIPVisionConfig(**vc)
    except Exception as e:  # noqa: BLE001 - transformers validates the values with its own error types
        first = str(e).strip().splitlines()
        raise CheckpointError(f"config.json in {str(directory)!r} has invalid values ({first[0] if first else e!r}"
                              f"{': ' + first[1].strip() if len(first) > 1 else ''})",
                              "re-save the model with save_pretrained") from None


def fit_allocator(vcfg) -> None:
    """Before a tower is read: let a process that tuned its allocator give freed memory back if this tower's
    parameter tensors are megabyte-sized (:func:`hfdistac.runtime.fit_allocator_to_model`)."""
    from .runtime import fit_allocator_to_model

    sizes = [getattr(vcfg, "hidden_size", 0) or 0, getattr(vcfg, "intermediate_size", 0) or 0]
    fit_allocator_to_model(4 * sizes[0] * max(sizes))  # the largest float32 matrix of a layer


def check_configs_match(base_cfg, other_cfg, names: tuple[str, str] = ("base", "fine-tuned")) -> None:
    """Raise :class:`CheckpointError` naming the first architecture fields that differ."""
    diff = [(f, getattr(base_cfg, f, None), getattr(other_cfg, f, None)) for f in _ARCH_FIELDS
            if getattr(base_cfg, f, None) != getattr(other_cfg, f, None)]
    if diff:
        shown = ", ".join(f"{f}: {a} vs {b}" for f, a, b in diff[:4])
        raise CheckpointError(f"{names[0]} and {names[1]} have different vision architectures ({shown})",
                              "use the base model the checkpoint was fine-tuned from (--base)")


def _vision_tensors(files: list[Path]):
    """``(canonical key, tensor)`` for every floating-point vision-tower tensor of ``files``, one at a time."""
    for path in files:
        with safe_open_checked(path) as f:
            for key in f.keys():
                ck = canonical_vision_key(key)
                if ck is None:
                    continue
                t = read_tensor(f, key, path)
                if torch.is_floating_point(t):
                    yield ck, t
                elif not key.endswith("position_ids"):  # the one integer buffer a tower has
                    raise CheckpointError(f"tensor {key!r} of {str(path)!r} is {t.dtype}: a weight must be floating "
                                          "point (float32, float16 or bfloat16)",
                                          "this is not a checkpoint transformers saved: re-save the model with "
                                          "save_pretrained")


def read_vision_weights(directory: Path, dtype: torch.dtype | None = torch.float32) -> Weights:
    """Read the vision tower's floating-point parameters in canonical keys, tensor by tensor.

    Args:
        directory: A checkpoint directory (any supported layout).
        dtype: Cast floating tensors to this dtype (``None`` keeps the stored dtype).
    """
    out: Weights = {}
    for ck, t in _vision_tensors(weight_files(directory)):
        if ck in out:
            raise CheckpointError(f"{str(directory)!r} holds the tensor {ck!r} twice (under two key layouts)")
        out[ck] = t.to(dtype) if dtype is not None else t
    if not out:
        raise CheckpointError(f"{str(directory)!r} has no CLIP vision-tower weights",
                              "hfdistac works on CLIP vision towers (CLIPVisionModel / CLIPModel checkpoints)")
    check_finite(out.items(), f"the model in {str(directory)!r}")
    return out


#: Vision-weight identities already computed in this process, keyed by every weight file's path, size and mtime.
_IDENTITY_CACHE: dict[tuple, str] = {}


def vision_weights_identity(directory: Path) -> str:
    """``vision-sha256:<16 hex>``: the identity of a checkpoint's vision tower by content.

    SHA-256 over the floating-point vision tensors in canonical keys (sorted), each with its dtype, shape and raw
    bytes: the same tower has the same identity whether it sits in a local directory, a Hub snapshot, a
    ``CLIPModel`` or a ``CLIPVisionModel`` checkpoint, sharded or not, prefixed ``vision_model.`` or not (a Hub
    commit SHA or a hash of the files would differ between those). Computed once per process and file state.
    """
    files = weight_files(Path(directory))
    key = tuple((str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    if key in _IDENTITY_CACHE:
        return _IDENTITY_CACHE[key]
    per_tensor: dict[str, bytes] = {}
    for ck, t in _vision_tensors(files):
        raw = t.contiguous().reshape(-1).view(torch.uint8).numpy()
        per_tensor[ck] = f"{ck}\0{t.dtype}\0{tuple(t.shape)}\0".encode() + hashlib.sha256(memoryview(raw)).digest()
    if not per_tensor:
        raise CheckpointError(f"{str(directory)!r} has no CLIP vision-tower weights",
                              "hfdistac works on CLIP vision towers (CLIPVisionModel / CLIPModel checkpoints)")
    digest = hashlib.sha256(b"".join(per_tensor[k] for k in sorted(per_tensor)))
    _IDENTITY_CACHE[key] = "vision-sha256:" + digest.hexdigest()[:16]
    return _IDENTITY_CACHE[key]


class LazyVisionWeights(Mapping[str, torch.Tensor]):
    """A checkpoint's vision-tower parameters, read from its safetensors files one tensor at a time on access.

    Keys are canonical (``vision_model.*``) and values float32, as :func:`read_vision_weights` gives them, but
    nothing is held in memory: a 350 MB tower costs one tensor at a time. Each tensor read is checked for
    NaN/Inf. Use it for weights that are needed rarely (θ₀ for norms and for writing τ′).

    Args:
        directory: A checkpoint directory (any supported layout).
    """

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self._where: dict[str, tuple[Path, str]] = {}
        self._shapes: dict[str, tuple[int, ...]] = {}
        for path in weight_files(self.directory):
            with safe_open_checked(path) as f:
                for key in f.keys():
                    ck = canonical_vision_key(key)
                    if ck is None:
                        continue
                    sl = f.get_slice(key)
                    if not str(sl.get_dtype()).startswith(("F", "BF")):  # floating-point parameters only
                        continue
                    if ck in self._where:
                        raise CheckpointError(f"{str(self.directory)!r} holds the tensor {ck!r} twice")
                    self._where[ck] = (path, key)
                    self._shapes[ck] = tuple(sl.get_shape())
        if not self._where:
            raise CheckpointError(f"{str(self.directory)!r} has no CLIP vision-tower weights")

    def __getitem__(self, key: str) -> torch.Tensor:
        path, name = self._where[key]
        with safe_open_checked(path) as f:
            t = read_tensor(f, name, path).to(torch.float32)
        check_finite([(key, t)], f"the model in {str(self.directory)!r}")
        return t

    def __iter__(self):
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def shapes(self) -> dict[str, torch.Tensor]:
        """Shape-only (``meta``) tensors of every parameter, for compatibility checks without reading data."""
        return {k: torch.empty(s, device="meta") for k, s in self._shapes.items()}


def build_vision_model(vcfg, weights: Weights | None = None):
    """A ``CLIPVisionModel`` from a config and (optionally) canonical weights, loaded strictly."""
    from transformers import CLIPVisionModel

    model = CLIPVisionModel(vcfg)
    if weights is not None:
        load_vision_weights(model, weights)
    return model.eval()


def load_vision_weights(model, weights: Weights) -> None:
    """Copy canonical weights into an in-memory ``CLIPVisionModel``; every parameter must be present."""
    params = dict(model.named_parameters())
    missing = [k for k in params if VISION_PREFIX + k not in weights]
    extra = [k for k in weights if module_key(k) not in params]
    if missing or extra:
        raise CheckpointError(f"weights do not fit the vision model: missing {missing[:5]}, unexpected {extra[:5]}")
    with torch.no_grad():
        for k, p in params.items():
            p.copy_(weights[VISION_PREFIX + k].to(p.dtype))


def vision_state(model) -> Weights:
    """Canonical weights of an in-memory ``CLIPVisionModel`` (detached fp32 copies)."""
    return {VISION_PREFIX + k: p.detach().float().clone() for k, p in model.named_parameters()}


@dataclass
class FinetunedModel:
    """A fine-tuned vision tower, resolved and read.

    Attributes:
        resolved: The resolved reference (:class:`hfdistac.hub.ResolvedModel`).
        config: Its ``CLIPVisionConfig``.
        weights: θ_t in canonical keys (fp32).
        card: The README model-card metadata (``{}`` when none).
        adapter_base: For a LoRA adapter, the folder of the base it names (its θ₀ is in ``weights``).
    """

    resolved: Any
    config: Any
    weights: Weights
    card: dict = field(default_factory=dict)
    adapter_base: Path | None = None


@dataclass
class BaseModel:
    """The pretrained CLIP: vision tower θ₀ plus everything heads need.

    Attributes:
        resolved: The resolved reference.
        clip: The full ``CLIPModel`` (eval mode, on CPU).
        vision_config: The ``CLIPVisionConfig``.
        card: The model-card metadata.
        tokenizer: Its tokenizer, read when first used (a command that needs no head never reads it).
        image_processor: Its image processor, read when first used (norms alone need none).
    """

    resolved: Any
    clip: Any
    vision_config: Any
    card: dict = field(default_factory=dict)
    _shapes: dict | None = field(default=None, repr=False)
    _tokenizer: Any = field(default=None, repr=False)
    _image_processor: Any = field(default=None, repr=False)

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = _load_tokenizer(self.resolved)
        return self._tokenizer

    @property
    def image_processor(self):
        if self._image_processor is None:
            self._image_processor = _load_image_processor(self.resolved)
        return self._image_processor

    @property
    def weights(self) -> Weights:
        """θ₀ in canonical keys (fp32 copies: call once and keep the result)."""
        if self.clip is None:
            raise RuntimeError("the base model's CLIPModel was released (release_text_tower); keep θ₀ before that")
        return vision_state(self.clip.vision_model)

    @property
    def parameter_shapes(self) -> dict[str, torch.Tensor]:
        """θ₀'s parameters as shape-only (``meta``) tensors in canonical keys; kept after :meth:`release_text_tower`."""
        if self._shapes is None:
            self._shapes = {VISION_PREFIX + k: torch.empty(p.shape, device="meta")
                            for k, p in self.clip.vision_model.named_parameters()}
        return self._shapes

    def release_text_tower(self) -> None:
        """Drop the full ``CLIPModel`` (text tower, projections, the vision tower's copy) once the heads are
        built and θ₀ is kept elsewhere: at ViT-B/32 that frees ~600 MB."""
        self.parameter_shapes  # noqa: B018 - kept for the compatibility checks
        self.clip = None

    @property
    def vision_identity(self) -> str:
        """θ₀'s identity by content (:func:`vision_weights_identity`), the same for a local and a Hub copy."""
        return vision_weights_identity(self.resolved.local_dir)

    def vision_model(self):
        """A fresh ``CLIPVisionModel`` holding θ₀."""
        return build_vision_model(self.vision_config, self.weights)


def load_finetuned(reference: str, *, token: str | None = None, lazy: bool = False) -> FinetunedModel:
    """Resolve and read a fine-tuned CLIP vision tower.

    Args:
        reference: ``repo_id[@revision]`` or a local directory.
        token: Hub token (default: the standard HF auth).
        lazy: Read the weights tensor by tensor on access (:class:`LazyVisionWeights`) instead of all at once
            (a LoRA adapter is always read at once).

    A PEFT LoRA adapter (``adapter_config.json`` + ``adapter_model.safetensors``) is read as θ₀ + s·B·A, θ₀
    being the base it names (:mod:`hfdistac.adapters`).
    """
    from .adapters import is_adapter
    from .hub import read_card_metadata, require_safetensors, resolve_model

    resolved = resolve_model(reference, token=token)
    if is_adapter(resolved.local_dir):
        return _load_lora(resolved, token)
    require_safetensors(resolved)  # a pickle-only Hub repo has no weights downloaded: say why
    cfg = vision_config(resolved.local_dir)
    fit_allocator(cfg)
    weights = LazyVisionWeights(resolved.local_dir) if lazy else read_vision_weights(resolved.local_dir)
    return FinetunedModel(resolved, cfg, weights, read_card_metadata(resolved))


def _load_lora(resolved, token) -> FinetunedModel:
    """A PEFT LoRA adapter as a fine-tuned tower: θ₀ + s·B·A, θ₀ from the base the adapter names
    (:mod:`hfdistac.adapters`)."""
    from .adapters import lora_task_vector, read_adapter_config
    from .errors import ReferenceNotFoundError
    from .hub import card_base_model, read_card_metadata, resolve_model

    cfg = read_adapter_config(resolved.local_dir, resolved.reference)
    card = read_card_metadata(resolved)
    base_ref = cfg.get("base_model_name_or_path") or card_base_model(card)
    if not base_ref:
        raise CheckpointError(f"adapter {resolved.reference!r} names no base model (base_model_name_or_path)",
                              "set base_model_name_or_path in its adapter_config.json to the base's Hub id or path")
    try:
        base = resolve_model(base_ref, token=token)
    except ReferenceNotFoundError as e:
        raise CheckpointError(f"the base {base_ref!r} of adapter {resolved.reference!r} cannot be found ({e})",
                              "set base_model_name_or_path in its adapter_config.json to the base's Hub id or "
                              "local path") from None
    vcfg = vision_config(base.local_dir)
    fit_allocator(vcfg)
    theta0 = read_vision_weights(base.local_dir)
    tau = lora_task_vector(resolved.local_dir, cfg, resolved.reference)
    for key, delta in tau.items():
        if key not in theta0 or theta0[key].shape != delta.shape:
            raise CheckpointError(f"adapter {resolved.reference!r} does not fit its base {base_ref!r}: {key} is "
                                  f"{tuple(delta.shape)} in the adapter, "
                                  f"{tuple(theta0[key].shape) if key in theta0 else 'absent'} in the base")
        theta0[key] = theta0[key] + delta
    card.setdefault("base_model", base_ref)
    return FinetunedModel(resolved, vcfg, theta0, card, adapter_base=base.local_dir)


def load_base(reference: str, *, token: str | None = None) -> BaseModel:
    """Resolve and load the pretrained ``CLIPModel`` (θ₀, text tower, projections, tokenizer, processor).

    Raises:
        CheckpointError: when the reference is not a full CLIP model (heads need its text tower).
    """
    from transformers import CLIPModel

    from .hub import read_card_metadata, require_safetensors, resolve_model

    resolved = resolve_model(reference, token=token)
    require_safetensors(resolved)
    cfg = read_config(resolved.local_dir)
    if cfg.get("model_type") not in _FULL_MODEL_TYPES:
        raise CheckpointError(
            f"base model {reference!r} is not a full CLIPModel (model_type={cfg.get('model_type')!r})",
            "the base must include the text tower to build zero-shot heads, e.g. openai/clip-vit-base-patch32",
        )
    for path in weight_files(resolved.local_dir):
        with safe_open_checked(path):  # a truncated or corrupt file: say so before transformers tries
            pass
    fit_allocator(vision_config(resolved.local_dir))
    try:
        clip = CLIPModel.from_pretrained(resolved.local_dir, use_safetensors=True)
    except Exception as e:  # noqa: BLE001 - whatever transformers raises for an unreadable checkpoint
        raise CheckpointError(f"could not load base CLIPModel from {reference!r}: "
                              f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    clip.eval()
    check_finite(clip.vision_model.named_parameters(), f"the base model {reference!r}")
    return BaseModel(resolved, clip, clip.vision_model.config, read_card_metadata(resolved))


def _load_tokenizer(resolved):
    """The base's tokenizer (for zero-shot heads), or a :class:`CheckpointError` saying what is missing."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(resolved.local_dir)
    except (OSError, ValueError, TypeError) as e:
        raise CheckpointError(f"base model {resolved.reference!r} has no usable tokenizer: {str(e).splitlines()[0]}",
                              "the base repo must include tokenizer files (tokenizer.json or vocab.json+merges.txt)"
                              ) from None


def _load_image_processor(resolved):
    """The base's image processor (for any command that reads images), or a :class:`CheckpointError`."""
    from transformers import CLIPImageProcessor

    try:
        return CLIPImageProcessor.from_pretrained(resolved.local_dir)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"base model {resolved.reference!r} has no image processor config: "
                              f"{str(e).splitlines()[0]}", "the base repo must include preprocessor_config.json "
                              "(it is needed to read images; norms alone do without it)") from None


def check_against_base(base: BaseModel, model: FinetunedModel) -> None:
    """Raise :class:`CheckpointError` when a fine-tuned tower does not match its base (config or shapes), or is a
    LoRA adapter made for another base (its τ would carry the difference between the two bases)."""
    names = (f"base {base.resolved.reference!r}", f"model {model.resolved.reference!r}")
    if model.adapter_base is not None and vision_weights_identity(model.adapter_base) != base.vision_identity:
        raise CheckpointError(
            f"adapter {model.resolved.reference!r} was made for the base {model.card.get('base_model')!r} "
            f"({vision_weights_identity(model.adapter_base)}), not for {base.resolved.reference!r} "
            f"({base.vision_identity}): its task vector would include the difference between the two bases",
            "set base_model_name_or_path in its adapter_config.json to the base it was trained on, and use that "
            "base (or a copy of it) in the recipe or with --base")
    check_configs_match(base.vision_config, model.config, names)
    weights = model.weights.shapes() if isinstance(model.weights, LazyVisionWeights) else model.weights
    check_compatible(base.parameter_shapes, weights, names)


#: Files of the base copied into a full-CLIP output (configuration, tokenizer, processor).
FULL_CLIP_FILES = ("config.json", "preprocessor_config.json", "processor_config.json", "tokenizer.json",
                   "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json", "added_tokens.json")


def save_full_clip(directory: Path, base_dir: Path, weights: Weights, metadata: dict[str, str] | None = None) -> None:
    """Write a full ``CLIPModel``: ``weights`` (canonical vision keys) as its vision tower, every other tensor (text
    tower, both projections, ``logit_scale``) and the configuration, tokenizer and processor files from the base.

    ``CLIPModel.from_pretrained``, ``CLIPVisionModel.from_pretrained`` and
    ``pipeline("zero-shot-image-classification", model=directory)`` all load the result.

    Raises:
        CheckpointError: the base is not a full ``CLIPModel`` checkpoint whose vision keys match ``weights``.
    """
    from safetensors import safe_open

    directory, base_dir = Path(directory), Path(base_dir)
    tensors: dict[str, torch.Tensor] = {}
    vision_keys = set()
    for f in weight_files(base_dir):
        with safe_open(str(f), framework="pt") as fh:
            for key in fh.keys():
                if key.startswith(VISION_PREFIX):
                    vision_keys.add(key)
                elif canonical_vision_key(key) is None and not key.endswith("position_ids"):
                    tensors[key] = fh.get_tensor(key)
    missing = set(weights) - vision_keys
    if not any(k.startswith("text_model.") for k in tensors) or missing:
        raise CheckpointError(f"--full-clip needs the base {str(base_dir)!r} as a full CLIPModel checkpoint whose "
                              f"vision tower is keyed like the output's ({len(missing)} key(s) differ)",
                              "drop --full-clip to write the vision tower alone")
    tensors.update(weights)
    directory.mkdir(parents=True, exist_ok=True)
    for name in FULL_CLIP_FILES:
        if (base_dir / name).is_file():
            shutil.copyfile(file_inside_model(base_dir, name), directory / name)
    meta = {"format": "pt", **{k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}}
    save_safetensors(tensors, directory / "model.safetensors", meta, what="the full CLIP model to be written")


def save_vision_checkpoint(directory: Path, vcfg, weights: Weights, metadata: dict[str, str] | None = None,
                           image_processor=None) -> None:
    """Write ``config.json`` + ``model.safetensors`` loadable with ``CLIPVisionModel.from_pretrained``.

    The safetensors metadata carries ``format: pt`` plus the given provenance strings. With ``image_processor``
    (the base's), its ``preprocessor_config.json`` is written too, so ``AutoImageProcessor.from_pretrained`` and
    pipelines load the output as they load the base.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cfg = vcfg.to_dict()
    cfg["architectures"] = ["CLIPVisionModel"]
    cfg["model_type"] = "clip_vision_model"
    (directory / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    meta = {"format": "pt", **{k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}}
    save_safetensors(weights, directory / "model.safetensors", meta, what="the model to be written")
    if image_processor is not None:
        image_processor.save_pretrained(directory)
