"""What an output directory's files become when uploaded: nothing that names the machine that wrote them.

An output keeps absolute local paths where they are useful on that machine (``report.json``'s sources, the
resolved config, the recipe, safetensors metadata). Uploaded, such a path means nothing to a reader and tells
them about the writer's disk, so :func:`upload_contents` sends each file as it should be read on the Hub:

* model cards (``README.md``): usage code pointed at the destination repo (:func:`~hfdistac.cards.retarget_card`);
* text files (JSON, YAML, Markdown, text): every absolute local path replaced by its last component, the folder
  name, as cards name local models and datasets (:func:`~hfdistac.cards.public_name`);
* ``*.safetensors``: the same for the metadata header (a rewritten copy in ``scratch``; the tensors are copied
  byte for byte).

The local files are never changed.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

#: An absolute POSIX path inside text: a ``/`` that does not follow a word character or a ``.``/``:``/``/`` (so
#: URLs and relative paths are left alone), then path characters.
_ABSOLUTE = re.compile(r"(?<![\w.:/~-])(?:~?/)(?:[\w.+@%=,-]+/)*[\w.+@%=,-]+/?")
TEXT_SUFFIXES = (".json", ".yaml", ".yml", ".md", ".txt")


def strip_local_paths(text: str) -> str:
    """Every absolute local path in ``text`` replaced by its last component (``/home/me/runs/colour`` → ``colour``)."""
    def last(m: re.Match) -> str:
        parts = [p for p in m.group(0).split("/") if p and p != "~"]
        return parts[-1] if parts else m.group(0)

    return _ABSOLUTE.sub(last, text)


def _safetensors_without_paths(path: Path, scratch: Path) -> Path:
    """``path`` itself when its metadata names no local path, else a copy in ``scratch`` with the metadata
    rewritten (header re-encoded and padded to 8 bytes, the tensor bytes copied unchanged)."""
    import shutil

    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        if not 0 < n <= min(size - 8, 100 << 20):
            return path  # not a safetensors header hfdistac could have written: sent as it is
        try:
            header = json.loads(f.read(n))
        except ValueError:
            return path
        metadata = header.get("__metadata__") if isinstance(header, dict) else None
        if not isinstance(metadata, dict):
            return path
        clean = {k: strip_local_paths(v) if isinstance(v, str) else v for k, v in metadata.items()}
        if clean == metadata:
            return path
        header["__metadata__"] = clean
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        out = scratch / f"{len(list(scratch.iterdir()))}-{path.name}"
        with out.open("wb") as g:
            g.write(struct.pack("<Q", len(raw)))
            g.write(raw)
            shutil.copyfileobj(f, g, 16 << 20)
    return out


def upload_contents(folder: Path, files: list[Path], repo_id: str, scratch: Path) -> dict[str, Path | bytes]:
    """What each path in the repo gets (module docstring): the file itself, rewritten bytes, or a rewritten copy
    in ``scratch``."""
    from .cards import retarget_card

    out: dict[str, Path | bytes] = {}
    for p in files:
        rel = p.relative_to(folder).as_posix()
        if p.suffix in TEXT_SUFFIXES:
            text = p.read_text(encoding="utf-8", errors="replace")
            new = strip_local_paths(text)
            if p.name == "README.md":
                new = retarget_card(new, repo_id, folder_name=p.parent.name if p.parent == folder else None,
                                    subfolder=None if p.parent == folder else p.parent.relative_to(folder).as_posix())
            out[rel] = new.encode("utf-8") if new != text else p
        elif p.suffix == ".safetensors":
            out[rel] = _safetensors_without_paths(p, scratch)
        else:
            out[rel] = p
    return out
