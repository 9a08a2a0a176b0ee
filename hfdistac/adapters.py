"""PEFT LoRA adapters of a CLIP vision tower as task sources.

A folder (or Hub repo) holding ``adapter_config.json`` and ``adapter_model.safetensors`` is read as the task
vector its adapter applies: for every adapted ``Linear`` weight W (m×n),

    τ_W = s · B A,   s = lora_alpha / r   (lora_alpha / √r with ``use_rslora``)

with A = ``lora_A`` (r×n) and B = ``lora_B`` (m×r), r and lora_alpha per module from ``rank_pattern`` and
``alpha_pattern`` (matched as peft matches them: a pattern matches a module name that ends with it), and
τ = 0 for every other tensor. That is exactly what peft's ``merge_and_unload()`` adds to the base. The
fine-tuned weights are θ₀ + τ, θ₀ being the base the adapter names (``base_model_name_or_path``).

Refused, with the reason: other adapter types than LoRA, DoRA (``use_dora``: the weight is renormalised, not
shifted by B A), LoRA on anything but ``Linear`` layers (convolutions, embeddings, bare parameters), trained
biases (``lora_bias``), ``modules_to_save`` (whole replaced modules), initialisations that rewrite the base
weights (PiSSA, OLoRA, CorDA) and adapters of the text tower (hfdistac merges vision towers; a changed text
tower would change the zero-shot heads the task vector is judged with).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError
from .vision_keys import canonical_vision_key

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_PEFT_PREFIX = "base_model.model."
_REWRITES_BASE = ("pissa", "olora", "corda")


def is_adapter(directory: Path) -> bool:
    """Whether a model folder is a PEFT adapter (an adapter config and no full weights of its own)."""
    directory = Path(directory)
    return (directory / ADAPTER_CONFIG).is_file() and not any(directory.glob("model*.safetensors"))


def read_adapter_config(directory: Path, reference: str) -> dict[str, Any]:
    """The adapter's configuration, checked to be a LoRA hfdistac can turn into a task vector.

    Raises:
        CheckpointError: an unreadable config, another adapter type, or a LoRA variant that is refused.
    """
    path = Path(directory) / ADAPTER_CONFIG
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"adapter {reference!r}: cannot read {ADAPTER_CONFIG} ({e})") from None
    kind = str(cfg.get("peft_type", "")).upper()
    if kind != "LORA":
        raise CheckpointError(f"adapter {reference!r} is a {cfg.get('peft_type')!r} adapter; only LoRA adapters "
                              "can be task sources", "merge it into the model first (peft: merge_and_unload) and "
                              "save the full vision tower")
    init = cfg.get("init_lora_weights")
    refusals = [
        (cfg.get("use_dora"), "it uses DoRA (the weight is renormalised, not shifted by B·A)"),
        (cfg.get("lora_bias"), "it trains biases (lora_bias)"),
        (cfg.get("modules_to_save"), f"it replaces whole modules ({cfg.get('modules_to_save')})"),
        (cfg.get("target_parameters"), "it adapts bare parameters (target_parameters)"),
        (isinstance(init, str) and init.lower().startswith(_REWRITES_BASE),
         f"its initialisation {init!r} rewrites the base weights"),
    ]
    for refused, why in refusals:
        if refused:
            raise CheckpointError(f"adapter {reference!r} cannot be read as a task vector: {why}",
                                  "merge it into the model (peft: merge_and_unload) and save the full vision tower")
    if not (Path(directory) / ADAPTER_WEIGHTS).is_file():
        raise CheckpointError(f"adapter {reference!r} has no {ADAPTER_WEIGHTS}",
                              "save the adapter with safetensors (PeftModel.save_pretrained does by default)")
    return cfg


#: A quantified group that ends in a quantifier or holds an alternation, e.g. ``(a+)+``, ``(x|x)*``: the shapes whose
#: matching time grows exponentially with the text (catastrophic backtracking).
_NESTED_QUANTIFIER = re.compile(r"[*+}?]\)[*+{?]|\|[^()]*\)[*+{]")
MAX_PATTERN = 200


def _pattern_matches(key: str, module: str) -> bool:
    """peft's rule for ``rank_pattern``/``alpha_pattern`` keys: the key matches the end of the module's name at a
    ``.`` boundary. A key of name characters is compared as text; any other key is an untrusted regular expression
    and is refused when it could take exponential time (:data:`_NESTED_QUANTIFIER`) or is overlong."""
    if re.fullmatch(r"[\w.-]+", key):
        return module == key or module.endswith("." + key)
    if len(key) > MAX_PATTERN or _NESTED_QUANTIFIER.search(key):
        raise CheckpointError(f"the adapter's pattern {key[:60]!r}{'...' if len(key) > 60 else ''} is not accepted: "
                              "a quantified group inside a quantifier (or an overlong pattern) can take "
                              "exponential time to match", "use module names (e.g. 'q_proj' or "
                              "'layers.0.self_attn.q_proj') or simple patterns as keys of rank_pattern/alpha_pattern")
    try:
        return re.fullmatch(rf"(?:.*\.)?(?:{key})", module) is not None
    except re.error as e:
        raise CheckpointError(f"the adapter's pattern {key[:60]!r} is not a valid regular expression ({e})") from None


def _pattern_value(patterns: dict, module: str, default):
    for key, value in (patterns or {}).items():
        if _pattern_matches(str(key), module):
            return value
    return default


def lora_scaling(cfg: dict[str, Any], module: str) -> tuple[int, float]:
    """``(r, s)`` of one adapted module: its rank and the factor of B·A (peft's ``scaling``).

    Raises:
        CheckpointError: a rank that is not a positive integer, or an alpha that is not a number.
    """
    r = _pattern_value(cfg.get("rank_pattern"), module, cfg.get("r", 8))
    alpha = _pattern_value(cfg.get("alpha_pattern"), module, cfg.get("lora_alpha", 8))
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise CheckpointError(f"the adapter's rank r of module {module!r} is {r!r}: a LoRA rank is a whole number "
                              ">= 1", "save the adapter together with its own adapter_config.json")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise CheckpointError(f"the adapter's lora_alpha of module {module!r} is {alpha!r}, not a number",
                              "save the adapter together with its own adapter_config.json")
    return r, float(alpha) / (math.sqrt(r) if cfg.get("use_rslora") else r)


def lora_task_vector(directory: Path, cfg: dict[str, Any], reference: str) -> dict[str, torch.Tensor]:
    """τ = s·B·A for every adapted weight, in canonical vision keys (float32).

    Raises:
        CheckpointError: a text-tower adapter, a non-Linear LoRA layer, or shapes that do not fit the rank.
    """
    from .tensor_files import read_tensor, safe_open_checked

    pairs: dict[str, dict[str, torch.Tensor]] = {}
    path = Path(directory) / ADAPTER_WEIGHTS
    with safe_open_checked(path) as fh:
        for key in fh.keys():
            match = re.fullmatch(r"(.+)\.(lora_A|lora_B)(?:\.[^.]+)?\.weight", key)
            if match is None:
                what = "embedding LoRA" if "lora_embedding" in key else f"tensor {key!r}"
                raise CheckpointError(f"adapter {reference!r} holds {what}, which hfdistac cannot read as a task "
                                      "vector (only LoRA on Linear layers)",
                                      "merge it into the model (peft: merge_and_unload) and save the full tower")
            pairs.setdefault(match.group(1).removeprefix(_PEFT_PREFIX), {})[match.group(2)] = read_tensor(fh, key, path)
    tau: dict[str, torch.Tensor] = {}
    for module, ab in pairs.items():
        canonical = canonical_vision_key(f"{module}.weight")
        if canonical is None:
            raise CheckpointError(f"adapter {reference!r} adapts {module!r}, outside the vision tower",
                                  "hfdistac merges vision towers: use an adapter of the vision tower only")
        a, b = ab.get("lora_A"), ab.get("lora_B")
        if a is None or b is None or a.dim() != 2 or b.dim() != 2:
            raise CheckpointError(f"adapter {reference!r}: module {module!r} is not a LoRA on a Linear layer "
                                  "(lora_A and lora_B must be matrices)",
                                  "only Linear LoRA layers can be read; merge the adapter into the model instead")
        r, scale = lora_scaling(cfg, module)
        if not math.isfinite(scale) or not (torch.isfinite(a).all() and torch.isfinite(b).all()):
            raise CheckpointError(f"adapter {reference!r}: module {module!r} has non-finite values (NaN or Inf in "
                                  f"lora_A/lora_B, or scaling {scale!r} from lora_alpha and r)",
                                  "re-export the adapter from a healthy checkpoint; hfdistac never uses non-finite "
                                  "weights")
        if a.shape[0] != r or b.shape[1] != r:
            raise CheckpointError(f"adapter {reference!r}: module {module!r} has rank {a.shape[0]} but its config "
                                  f"gives r = {r}", "save the adapter together with its own adapter_config.json")
        delta = scale * (b.float() @ a.float())
        tau[canonical] = delta.T.contiguous() if cfg.get("fan_in_fan_out") else delta
    return tau
