"""Dataset references and splits: a Hub id or a local path, each split by name, the derived validation split,
and the image and label columns."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import DataError, ReferenceNotFoundError
from .network import bounded_stream_reads
from .revisions import _looks_local, _split_revision, dataset_revision

logger = logging.getLogger(__name__)

VALIDATION_FRACTION = 0.1
VALIDATION_MAX = 5000
VALIDATION_SEED = 0
#: Splits made from ``train`` by :func:`validation_rows`: ``validation-from-train`` (the seeded 10 %) and ``train-val``
#: (the rest). ``validation`` is the dataset's stored validation split when it has one, else ``validation-from-train``.
DERIVED_SPLITS = ("validation-from-train", "train-val")
VALIDATION = "validation"


@dataclass(frozen=True)
class DatasetSpec:
    """What to read.

    Attributes:
        reference: Hub id (optionally ``@revision``) or local path.
        config: Dataset configuration name (e.g. ``cropped_digits`` for SVHN).
        image_column: Override of the image column.
        label_column: Override of the label column.
        class_names: Class names in label order, for a dataset whose labels are plain integers (or none at
            all); they must match the number of a ``ClassLabel``'s names when there is one.
    """

    reference: str
    config: str | None = None
    image_column: str | None = None
    label_column: str | None = None
    class_names: tuple[str, ...] | None = None

    @property
    def is_local(self) -> bool:
        return _looks_local(self.reference)

    @property
    def name(self) -> str:
        return self.reference.rstrip("/").split("@")[0].split("/")[-1]


def _load_local(path: Path, split: str, streaming: bool):
    import datasets

    if path.is_file():
        if path.suffix != ".parquet":
            raise DataError(f"unsupported dataset file {str(path)!r}", "use a .parquet file or a dataset directory")
        return datasets.load_dataset("parquet", data_files={split: str(path)}, split=split, streaming=streaming)
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise DataError(f"dataset {str(path)!r} has no split {split!r} (it has {sorted(ds)})")
            ds = ds[split]
        return ds.to_iterable_dataset() if streaming else ds
    return _load_local_dir(path, split, streaming)


def _load_local_dir(path: Path, split: str, streaming: bool):
    """A split of a local dataset directory (parquet/csv/json files or an image folder, with or without a card).

    Not ``datasets.load_dataset(DIR)``: for a directory whose README declares ``configs`` (what
    ``push_to_hub`` and the example suite write), ``datasets`` (5.x) names its cache after the card and the
    directory's name only, so a rebuilt or different directory of the same name and card silently reads the
    first one's cached rows (measured: a rebuilt 2,000-image suite task read as the earlier 1,000-image
    build). So the data files are resolved here and loaded with explicit ``data_files``, whose cache key
    includes each file's path and modification time, keeping the card's features (ClassLabel names).
    """
    import datasets
    from datasets.exceptions import DatasetGenerationError

    builder = datasets.load_dataset_builder(str(path))
    files = builder.config.data_files
    if not files:
        return datasets.load_dataset(str(path), split=split, streaming=streaming)
    if split not in files:
        raise DataError(f"dataset {str(path)!r} has no split {split!r} (it has {sorted(files)})",
                        "choose one of the dataset's splits (e.g. train, test)")
    try:
        return datasets.load_dataset(builder.name, data_files={split: list(files[split])}, split=split,
                                     features=builder.info.features, streaming=streaming)
    except DatasetGenerationError as e:
        if _parquet_rows(files[split]) == 0:
            raise DataError(f"split {split!r} of dataset {str(path)!r} is empty",
                            "choose a split that holds images (e.g. train or test)") from None
        cause = e.__cause__ or e
        raise DataError(f"could not read split {split!r} of dataset {str(path)!r}: "
                        f"{str(cause).splitlines()[0] if str(cause) else type(cause).__name__}",
                        "check that its data files are complete (an interrupted download or copy?)") from None


def _parquet_rows(files) -> int | None:
    """Rows in a list of parquet files (from their footers), or ``None`` when some are not parquet."""
    import pyarrow.parquet as pq

    total = 0
    for f in files:
        if not str(f).endswith(".parquet"):
            return None
        try:
            total += pq.ParquetFile(str(f)).metadata.num_rows
        except Exception:  # noqa: BLE001 - unreadable: not "empty"
            return None
    return total


def load_split(spec: DatasetSpec, split: str, *, streaming: bool | None = None):
    """Load one split of a dataset (``validation`` / ``train-val`` are derived from ``train``).

    Args:
        spec: The dataset to read.
        split: ``train``, ``test``, ``validation``, ``train-val`` or any stored split name.
        streaming: Default: streaming for Hub ids, in-memory (memory-mapped Arrow) for local paths.

    Returns:
        A ``datasets.Dataset`` or ``datasets.IterableDataset``.
    """
    import datasets

    ref, revision = _split_revision(spec.reference)
    local = _looks_local(ref)
    if not local:
        revision = dataset_revision(spec) or revision
    if local and not Path(ref).expanduser().exists():
        raise ReferenceNotFoundError(f"dataset path {ref!r} does not exist",
                                     "pass an existing local dataset directory or a Hub dataset id like user/name")
    if streaming is None:
        streaming = not local
    if split == VALIDATION:  # the stored one when there is one; else derived from train, as METHOD.md's rule
        try:
            return load_split(spec, "validation-stored", streaming=streaming)
        except DataError as e:
            if "has no split" not in e.message:
                raise
            logger.info("%s stores no validation split: using the seeded 10 %% of train", spec.reference)
            split = "validation-from-train"
    stored = "train" if split in DERIVED_SPLITS else VALIDATION if split == "validation-stored" else split
    try:
        if local:
            ds = _load_local(Path(ref).expanduser(), stored, streaming)
        else:
            with bounded_stream_reads(f"dataset {spec.reference!r} split {stored!r}"):
                ds = datasets.load_dataset(ref, spec.config, split=stored, revision=revision, streaming=streaming)
    except (ValueError, KeyError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "corresponds to no data" in msg:  # datasets' words for a split whose files hold no rows
            raise DataError(f"split {stored!r} of dataset {spec.reference!r} is empty",
                            "choose a split that holds images (e.g. train or test)") from None
        if "split" in msg.lower() or isinstance(e, KeyError):
            raise DataError(f"dataset {spec.reference!r} has no split {stored!r} ({msg})",
                            "choose one of the dataset's splits (e.g. train, test)") from None
        raise DataError(f"could not load dataset {spec.reference!r}: {msg}") from None
    except FileNotFoundError as e:
        raise ReferenceNotFoundError(f"dataset {spec.reference!r} not found ({str(e).splitlines()[0]})",
                                     "check the id/path; with HF_HUB_OFFLINE=1 only cached or local data works"
                                     ) from None
    except ConnectionError as e:
        from huggingface_hub import constants

        hint = ("with HF_HUB_OFFLINE=1 only what an earlier run read is here: `evaluate` and `condition` keep the "
                "rows they streamed (the same split and --limit / --num-images), so run the command once online, "
                "or use a local copy of the dataset") if constants.HF_HUB_OFFLINE else \
            "check your network, or use a local copy of the dataset"
        raise ReferenceNotFoundError(f"dataset {spec.reference!r} could not be reached ({str(e).splitlines()[0]})",
                                     hint) from None
    if split in DERIVED_SPLITS:
        if local and streaming:  # the rows need the row count: choose them on the map-style copy
            return _derive(_load_local(Path(ref).expanduser(), stored, False), split).to_iterable_dataset()
        ds = _derive(ds, split, None if local else _stream_rows(ref, spec.config, revision, stored))
    return ds


def validation_rows(n: int) -> list[int]:
    """The rows of a train split of ``n`` rows that form its ``validation`` split, ascending.

    The first ``round(10 % · n)`` (at least 1, at most 5,000) entries of a permutation of ``range(n)`` seeded
    with :data:`VALIDATION_SEED`: one rule for every storage, since it depends on ``n`` alone.
    """
    n_val = max(1, min(VALIDATION_MAX, int(round(VALIDATION_FRACTION * n))))
    g = torch.Generator().manual_seed(VALIDATION_SEED)
    return sorted(torch.randperm(n, generator=g)[:n_val].tolist())


def _derive(train, split: str, num_rows: int | None = None):
    """``validation`` (the rows of :func:`validation_rows`) or ``train-val`` (the others) of a train split;
    a stream needs its row count ``num_rows``."""
    import datasets

    n = len(train) if isinstance(train, datasets.Dataset) else num_rows
    if n is None:  # a stream that declares no size (e.g. webdataset tar shards): count it once
        n = _count_rows(train)
    val = validation_rows(n)
    if isinstance(train, datasets.Dataset):
        if split == "validation-from-train":
            return train.select(val)
        chosen = set(val)
        return train.select([i for i in range(n) if i not in chosen])
    chosen = frozenset(val)

    def keep(_, idx):
        return (idx in chosen) == (split == "validation-from-train")

    return train.filter(keep, with_indices=True)


def _count_rows(stream) -> int:
    """Rows of a stream whose size nothing declares, counted by reading it once (without decoding images)."""
    logger.warning("the streamed train split declares no size: reading it once to count its rows, to choose its "
                   "validation rows")
    try:
        return sum(1 for _ in stream.decode(False))
    except Exception as e:  # noqa: BLE001 - what the stream raises when it breaks off
        raise DataError(f"the number of rows of the streamed train split is unknown and counting them failed ({e})",
                        "read the dataset without streaming, or use a copy stored as parquet") from None


def _stream_rows(ref: str, config: str | None, revision: str | None, split: str) -> int | None:
    """Rows of a split of a Hub dataset, from its card's split sizes or its parquet files' footers (range
    requests), without reading the data; ``None`` when neither tells."""
    import datasets
    import fsspec
    import pyarrow.parquet as pq

    try:
        builder = datasets.load_dataset_builder(ref, config, revision=revision)
        splits = builder.info.splits or {}
        if split in splits and splits[split].num_examples:
            return int(splits[split].num_examples)
        files = list((builder.config.data_files or {}).get(split, []))
        if not files or not all(str(f).endswith(".parquet") for f in files):
            return None
        total = 0
        for f in files:
            with fsspec.open(str(f), "rb") as fh:
                total += pq.ParquetFile(fh).metadata.num_rows
        return total
    except Exception as e:  # noqa: BLE001 - only a count: the caller says what it cannot do without it
        logger.debug("could not count the rows of %s/%s: %s", ref, split, e)
        return None


def detect_columns(features, image_column: str | None = None, label_column: str | None = None
                   ) -> tuple[str, str | None]:
    """Find the image column (first ``Image`` feature) and label column (first ``ClassLabel``, else a column
    named ``label``/``labels`` of integers or booleans: False/True are classes 0/1, as FusionBench reads them).

    Raises:
        DataError: when there is no image column (or a given column does not exist).
    """
    import datasets

    if features is None:
        raise DataError("the dataset does not declare its features", "pass --image-column and --label-column")
    names = list(features)
    for given in (image_column, label_column):
        if given is not None and given not in features:
            raise DataError(f"column {given!r} not in dataset (columns: {names})")
    img = image_column or next((k for k, f in features.items() if isinstance(f, datasets.Image)), None)
    if img is None:
        raise DataError(f"the dataset has no image column (columns: {names})",
                        "hfdistac needs an Image feature; pass --image-column if it is stored under another type")
    lab = label_column or next((k for k, f in features.items() if isinstance(f, datasets.ClassLabel)), None)
    if lab is None:  # no ClassLabel: a column named label(s) holding integers or booleans (PatchCamelyon: bool)
        lab = next((k for k in ("label", "labels") if k in features and isinstance(features[k], datasets.Value)
                    and (features[k].dtype == "bool" or "int" in features[k].dtype)), None)
    return img, lab


def class_names(features, label_column: str | None) -> list[str] | None:
    """Class names of the ``ClassLabel`` label column, or ``None``."""
    import datasets

    if label_column is None:
        return None
    f = features[label_column]
    return list(f.names) if isinstance(f, datasets.ClassLabel) else None



def _local_stamp(spec: DatasetSpec) -> list | None:
    """Path, size and mtime of a local dataset's files (what identifies its content for a cache key)."""
    root = Path(_split_revision(spec.reference)[0]).expanduser().resolve()
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files]


