"""Resumable checkpoints of a conditioning run: safetensors + JSON only, nothing pickled.

A checkpoint ``step-NNNNNN`` holds the student's weights, the AdamW moments by parameter name, the scheduler
counters, each process's torch RNG state, the step, the history and the count of projected steps. It is
written into ``step-NNNNNN.tmp`` and renamed, so a killed run leaves either a complete checkpoint or none; a
fingerprint of the training settings refuses to resume a run with other settings.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError

CHECKPOINT_FORMAT = "hfdistac.distac_checkpoint.v1"
#: The settings whose change makes a checkpoint unusable (with κ, the sources and the data).
TRAINING_KEYS = ("kappa", "teacher_temperature", "student_temperature", "beta", "max_norm_ratio", "steps", "lr",
                 "weight_decay", "warmup_steps", "batch_size", "max_grad_norm", "seed", "train_split", "train_limit",
                 "num_images", "shuffle_buffer")


def checkpoint_fingerprint(values: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]


def latest_checkpoint(directory: Path) -> Path | None:
    """The newest complete checkpoint (``step-NNNNNN`` with its ``state.json``) in ``directory``."""
    done = all_checkpoints(directory)
    return done[0] if done else None


def _ours(directory: Path) -> bool:
    """A checkpoint folder hfdistac made: its marker, or (made before the marker existed) only checkpoints."""
    import re

    from ..outputs import OWNED_MARKER

    if (directory / OWNED_MARKER).is_file():
        return True
    entries = list(directory.iterdir())
    return bool(entries) and all(re.fullmatch(r"step-\d{6}(\.tmp)?", p.name) and p.is_dir() for p in entries)


def check_checkpoint_dir(directory: Path) -> None:
    """Before training: ``--checkpoint-dir`` is new, empty, or hfdistac's own (it is removed after success).

    Raises:
        InputError: it holds files hfdistac did not write.
    """
    if directory.exists() and (not directory.is_dir() or (any(directory.iterdir()) and not _ours(directory))):
        raise InputError(f"--checkpoint-dir {str(directory)!r} holds files hfdistac did not write",
                         "choose a new or empty folder: hfdistac removes its checkpoints when the run succeeds")


def remove_checkpoints(directory: Path) -> None:
    """Remove the run's checkpoint folder, only when hfdistac made it (:func:`_ours`)."""
    from ..outputs import OWNED_MARKER, remove_owned_dir

    if directory.is_dir() and _ours(directory) and not (directory / OWNED_MARKER).is_file():
        (directory / OWNED_MARKER).touch()  # a folder of checkpoints only, made before the marker existed
    remove_owned_dir(directory)


def save_checkpoint(directory: Path, step: int, accelerator, names: list[str], params: list[torch.nn.Parameter],
                     optimizer, scheduler, history: list[dict], fingerprint: str, projected_steps: int = 0) -> Path:
    """Write ``directory/step-NNNNNN`` atomically (safetensors + JSON), keep only the newest one."""
    from safetensors.torch import save_file

    final = directory / f"step-{step:06d}"
    tmp = directory / f"step-{step:06d}.tmp"
    if accelerator.is_main_process:
        from ..outputs import OWNED_MARKER, claim_owned_dir

        if not (directory / OWNED_MARKER).is_file():
            check_checkpoint_dir(directory)
            claim_owned_dir(directory, "--checkpoint-dir")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    save_file(rng, str(tmp / f"rng-rank{accelerator.process_index}.safetensors"))
    if accelerator.is_main_process:
        save_file({n: p.detach().float().cpu().contiguous() for n, p in zip(names, params, strict=True)},
                  str(tmp / "student.safetensors"))
        opt_state = optimizer.state_dict()
        tensors = {}
        for i, name in enumerate(names):
            for key, value in opt_state["state"].get(i, {}).items():
                tensors[f"{name}::{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        groups = [{k: v for k, v in g.items() if k != "params"} for g in opt_state["param_groups"]]
        sched = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
        state = {"format": CHECKPOINT_FORMAT, "step": step, "fingerprint": fingerprint,
                 "param_groups": groups, "scheduler": sched, "history": history, "projected_steps": projected_steps,
                 "world_size": accelerator.num_processes}
        (tmp / "state.json").write_text(json.dumps(state, indent=1))
        tmp.rename(final)
        for old in directory.glob("step-*"):
            if old != final and not old.name.endswith(".tmp"):
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


class CorruptCheckpoint(Exception):
    """A checkpoint hfdistac wrote that cannot be read back (truncated, changed, from a full disk)."""


def all_checkpoints(directory: Path) -> list[Path]:
    """The complete checkpoints of ``directory``, newest first."""
    if not directory.is_dir():
        return []
    return sorted((p for p in directory.glob("step-*") if p.is_dir() and not p.name.endswith(".tmp")
                   and (p / "state.json").is_file()), reverse=True)


def _read_checkpoint(path: Path, rank: int, names: list[str], fingerprint: str) -> dict[str, Any]:
    """Every part of a checkpoint, read and checked before anything is applied (so a bad one changes nothing).

    Raises:
        InputError: a checkpoint of a run with other settings (the user's choice to fix).
        CorruptCheckpoint: anything unreadable or inconsistent.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = json.loads((path / "state.json").read_bytes().decode("utf-8"))
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise CorruptCheckpoint("state.json is not an hfdistac DisTaC checkpoint's")
        if state.get("fingerprint") != fingerprint:
            raise InputError(f"the checkpoint in {str(path.parent)!r} was written by a run with other settings",
                             "resume with the same model, data and training options, or delete the checkpoint folder")
        weights = load_file(str(path / "student.safetensors"))
        moments = load_file(str(path / "optimizer.safetensors"))
        missing = [n for n in names if n not in weights]
        if missing:
            raise CorruptCheckpoint(f"student.safetensors lacks {missing[0]!r}")
        per_param: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in moments.items():
            name, _, slot = key.rpartition("::")
            if name not in names:
                raise CorruptCheckpoint(f"optimizer.safetensors names an unknown parameter {name!r}")
            per_param.setdefault(names.index(name), {})[slot] = value
        rng_file = path / f"rng-rank{rank}.safetensors"
        rng = load_file(str(rng_file)) if rng_file.is_file() else None
        out = {"weights": weights, "moments": per_param, "rng": rng,
               "step": int(state["step"]), "history": list(state["history"]),
               "projected": int(state.get("projected_steps", 0)), "groups": state["param_groups"],
               "scheduler": dict(state["scheduler"])}
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, SafetensorError) as e:
        raise CorruptCheckpoint(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    return out


def load_checkpoint(path: Path, accelerator, names: list[str], params: list[torch.nn.Parameter], optimizer,
                     scheduler, fingerprint: str) -> tuple[int, list[dict], int]:
    """Restore student, optimizer, scheduler and RNG from a checkpoint; returns ``(step, history, projected)``.

    Raises:
        InputError: a checkpoint written with other settings.
        CorruptCheckpoint: it cannot be read (nothing has been changed then).
    """
    ck = _read_checkpoint(path, getattr(accelerator, "process_index", 0), names, fingerprint)
    groups = ck["groups"]
    try:
        groups[0]["params"] = list(range(len(names)))
        shapes_ok = all(tuple(ck["weights"][n].shape) == tuple(p.shape) for n, p in zip(names, params, strict=True))
    except (KeyError, IndexError, TypeError) as e:
        raise CorruptCheckpoint(f"{type(e).__name__} in its parameter groups") from None
    if not shapes_ok:
        raise CorruptCheckpoint("its student's shapes differ from the model's")
    with torch.no_grad():
        for name, p in zip(names, params, strict=True):
            p.copy_(ck["weights"][name].to(p.device, p.dtype))
    optimizer.load_state_dict({"state": ck["moments"], "param_groups": groups})
    scheduler.load_state_dict({**ck["scheduler"], "lr_lambdas": [None]})
    if ck["rng"] is not None:
        torch.set_rng_state(ck["rng"]["cpu"])
        if "cuda" in ck["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state(ck["rng"]["cuda"])
    return ck["step"], ck["history"], ck["projected"]
