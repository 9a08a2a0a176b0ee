"""Every safetensors file hfdistac reads or writes goes through here.

* :func:`save_safetensors` — atomic (temporary name, then rename), refuses non-finite weights, and writes the
  file one tensor at a time with sorted metadata keys (the safetensors library serialises metadata from a hash
  map whose order changes from process to process, so two identical runs wrote different bytes, and it copies
  every tensor into one buffer first). Equal results are equal files.
* :func:`safe_open_checked` — opens a file for reading and turns a truncated, empty or corrupt file into a
  :class:`~hfdistac.errors.CheckpointError` naming it and the likely cause (an interrupted download or copy).
* :func:`nonfinite_tensors` / :func:`check_finite` — NaN or Inf in weights are refused wherever weights are read
  or written, naming the tensors.

Nothing here ever unpickles.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import torch

from .errors import CheckpointError

_HEADER_SIZE = struct.Struct("<Q")


def _has_nonfinite(t: torch.Tensor) -> bool:
    # A NaN or Inf anywhere makes the sum NaN or Inf, so a finite sum proves every entry finite at the cost of
    # one read (a tenth of isfinite + all, which writes a mask as large as the tensor). A non-finite sum may
    # be an overflow of finite entries: only then is every entry checked.
    return not bool(torch.isfinite(t.sum())) and not bool(torch.isfinite(t).all())


def nonfinite_tensors(tensors: Iterable[tuple[str, torch.Tensor]]) -> list[str]:
    """Names of the floating-point tensors that hold NaN or Inf."""
    return [name for name, t in tensors if torch.is_floating_point(t) and _has_nonfinite(t)]


def check_finite(tensors: Iterable[tuple[str, torch.Tensor]], what: str, hint: str | None = None) -> None:
    """Raise :class:`CheckpointError` naming the tensors of ``what`` that hold NaN or Inf."""
    bad = nonfinite_tensors(tensors)
    if bad:
        shown = ", ".join(bad[:4]) + (f" and {len(bad) - 4} more" if len(bad) > 4 else "")
        raise CheckpointError(f"{what} has non-finite weights (NaN or Inf) in {len(bad)} tensor(s): {shown}",
                              hint or "the checkpoint is broken (a diverged training run?); use another one")


#: safetensors' dtype names.
_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
           torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
           torch.bool: "BOOL"}


def _write_safetensors(tensors: Mapping[str, torch.Tensor], path: Path, meta: Mapping[str, str]) -> None:
    """Write a safetensors file one tensor at a time: the header (tensors in name order, ``__metadata__`` with
    sorted keys, padded to 8 bytes), then each tensor's bytes straight from its memory.

    The safetensors library first copies every tensor into one byte buffer (at ViT-B/32, 350 MB more at the
    moment a merged model or a conditioned tower is written); this holds one tensor's CPU copy at most. The
    format is the library's own, read back by ``safe_open`` and ``from_pretrained``; equal inputs give equal
    bytes.
    """
    names = sorted(tensors)
    header: dict[str, object] = {"__metadata__": dict(sorted(meta.items()))} if meta else {}
    offset = 0
    for name in names:
        t = tensors[name]
        if t.dtype not in _DTYPES:
            raise CheckpointError(f"cannot write tensor {name!r} of dtype {t.dtype} to {path.name}")
        size = t.numel() * t.element_size()
        header[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    with path.open("wb") as f:
        f.write(_HEADER_SIZE.pack(len(raw)) + raw)
        for name in names:
            t = tensors[name].detach()
            if t.numel():
                f.write(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data)


def save_safetensors(tensors: Mapping[str, torch.Tensor], path: str | Path, metadata: Mapping[str, str] | None = None,
                     *, what: str | None = None, allow_nonfinite: bool = False) -> Path:
    """Write ``tensors`` to ``path`` atomically, deterministically, and only when every weight is finite.

    Args:
        tensors: Name → tensor (made contiguous here).
        path: The destination (its folder must exist).
        metadata: String metadata (non-strings are JSON-encoded); written with sorted keys.
        what: How to name the contents in an error (default: the file name).
        allow_nonfinite: Skip the finiteness check (optimizer state may legitimately hold anything).

    Raises:
        CheckpointError: a tensor holds NaN or Inf (nothing is written).
        OutputError: the file cannot be written (a full disk, no permission), naming it.
    """
    from .outputs import os_error

    path = Path(path)
    if not allow_nonfinite:
        check_finite(tensors.items(), what or f"the result to be written to {path.name}",
                     "nothing was written: the computation diverged (try a lower --lr) or its inputs hold NaN/Inf")
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        _write_safetensors(tensors, tmp, meta)
        tmp.replace(path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise os_error(path, e) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


@contextlib.contextmanager
def safe_open_checked(path: str | Path, device: str = "cpu") -> Iterator:
    """``safetensors.safe_open`` with a clear error for a missing, empty, truncated or corrupt file.

    Raises:
        CheckpointError: naming the file and the likely cause.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise CheckpointError(f"cannot read {str(path)!r}: {e.strerror or e}") from None
    if size < 8:
        raise CheckpointError(f"{str(path)!r} is {'empty' if size == 0 else f'only {size} bytes'}: not a "
                              "safetensors file", _REDOWNLOAD_HINT)
    try:
        handle = safe_open(str(path), framework="pt", device=device)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{str(path)!r} is not a readable safetensors file ({_first_line(e)}); it looks "
                              "truncated or corrupt", _REDOWNLOAD_HINT) from None
    with handle as f:
        yield f


def read_tensor(f, key: str, path: str | Path) -> torch.Tensor:
    """One tensor of an open file; a tensor whose bytes are cut short raises :class:`CheckpointError`."""
    from safetensors import SafetensorError

    try:
        return f.get_tensor(key)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"tensor {key!r} of {str(path)!r} cannot be read ({_first_line(e)}); the file looks "
                              "truncated or corrupt", _REDOWNLOAD_HINT) from None


_REDOWNLOAD_HINT = ("it was probably cut short by an interrupted download or copy: download it again (for a Hub "
                    "model, delete its folder in the HF cache) or re-save it with save_pretrained")


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


class LazyTensors(Mapping):
    """A read-only ``{name: tensor}`` view of a safetensors file: a tensor is read only when indexed.

    Args:
        path: The file (opened once to list its keys).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        with safe_open_checked(self.path) as f:
            self._keys = list(f.keys())

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in self._keys:
            raise KeyError(key)
        with safe_open_checked(self.path) as f:
            return read_tensor(f, key, self.path)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._keys
