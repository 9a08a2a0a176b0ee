"""Datasets of images for heads, distillation and evaluation (METHOD.md §0).

A *dataset reference* is a Hub id (``user/name[@revision]``, streamed with ``datasets``), or a local path:
a directory of parquet files laid out like a Hub repo (``data/train-*.parquet``), an ``imagefolder``, a
``save_to_disk`` directory, or a single ``.parquet`` file. The image column is the first ``Image`` feature
and the label column the first ``ClassLabel`` unless given.

Splits: any stored split by its name. Two are derived from ``train``: ``validation-from-train``, a seeded
10 % of it (at most 5,000 images) used for model selection, and ``train-val`` (train minus that part).
``validation`` is the dataset's stored validation split when it has one (FusionBench scores food101 there),
else ``validation-from-train``. The derived rows are a function of the row count only
(:func:`validation_rows`), so a local copy, a Hub download and a Hub stream of the same data hold out the same
rows.

A Hub dataset is read at one commit: its revision (branch, tag or default) is resolved to a SHA once per
process and every read of it uses that SHA (:func:`dataset_revision`), which runs record.

Images are preprocessed exactly like the base model's ``CLIPImageProcessor`` (resize shortest side, centre
crop, normalise), batched, inside DataLoader workers; with several processes each one reads its own shard
(``datasets.distributed.split_dataset_by_node``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import DataError, InputError, ReferenceNotFoundError

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


def _looks_local(ref: str) -> bool:
    return ref.startswith((".", "/", "~")) or Path(ref).expanduser().exists() or ref.count("/") != 1


def _split_revision(ref: str) -> tuple[str, str | None]:
    if "@" in ref and not _looks_local(ref.split("@")[0]):
        repo, rev = ref.rsplit("@", 1)
        return repo, rev or None
    return ref, None


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


def rgb_images(images: list, rows: Sequence[int], spec: DatasetSpec, split: str) -> list:
    """Decoded images as RGB; an image that cannot be decoded raises :class:`DataError` naming its row."""
    out = []
    for image, row in zip(images, rows, strict=True):
        try:
            out.append(image.convert("RGB") if hasattr(image, "convert") else image)
        except Exception as e:  # noqa: BLE001 - PIL raises many kinds for a broken file
            raise _image_error(spec, split, row, e) from None
    return out


def _image_error(spec: DatasetSpec, split: str, row: int, err: BaseException) -> DataError:
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return DataError(f"image at row {row} of split {split!r} of dataset {spec.reference!r} cannot be decoded "
                     f"({text})", "repair or drop that row (the file may be truncated or not an image)")


def decode_rows(dataset, rows: Sequence[int], column: str, spec: DatasetSpec, split: str) -> list:
    """The images of ``rows`` of a map-style dataset, as RGB; a broken one raises :class:`DataError` naming
    its row (the batch is decoded at once, and row by row only to find the culprit)."""
    try:
        images = dataset[list(rows)][column]
    except Exception:  # noqa: BLE001 - find the row that fails
        images = []
        for row in rows:
            try:
                images.append(dataset[int(row)][column])
            except Exception as e:  # noqa: BLE001
                raise _image_error(spec, split, int(row), e) from None
    return rgb_images(images, rows, spec, split)


def check_labels(labels: torch.Tensor, num_classes: int, spec: DatasetSpec, split: str, offset: int = 0) -> None:
    """Labels must lie in ``[0, num_classes)``; the first one that does not is named with its row."""
    bad = ((labels < 0) | (labels >= num_classes)).nonzero()
    if len(bad):
        i = int(bad[0])
        raise DataError(f"label {int(labels[i])} at row {offset + i} of split {split!r} of dataset "
                        f"{spec.reference!r} is not a class index: the task has {num_classes} classes (0..{num_classes - 1})",
                        "use the dataset the model was fine-tuned on, or fix its label column (--label-column)")


class PixelCodec:
    """Preprocessed images kept as exact ``uint8`` crops: a quarter of the memory of ``pixel_values``.

    A CLIP image processor resizes and centre-crops ``uint8`` images, then rescales (×1/255, in float64, cast to
    float32) and normalises ((x − mean)/std, in float32). :meth:`encode` stops before the rescaling and keeps the
    ``uint8`` crop; :meth:`decode` repeats the last two steps in the same precision, so decoded pixels equal the
    processor's output bit for bit (tested). A processor without these steps is used as is (``compact`` False).

    Args:
        processor: The base model's image processor.
    """

    def __init__(self, processor):
        self.processor = processor
        attrs = ("do_rescale", "rescale_factor", "do_normalize", "image_mean", "image_std")
        self.compact = all(hasattr(processor, a) for a in attrs)
        if self.compact:
            self.scale = float(processor.rescale_factor) if processor.do_rescale else None
            self.mean = torch.tensor(processor.image_mean, dtype=torch.float32).view(-1, 1, 1) \
                if processor.do_normalize else None
            self.std = torch.tensor(processor.image_std, dtype=torch.float32).view(-1, 1, 1) \
                if processor.do_normalize else None

    def encode(self, images: list) -> torch.Tensor:
        """Resized, cropped images ``[B, C, H, W]`` (``uint8``; float ``pixel_values`` when not compact)."""
        if not self.compact:
            return self.processor(images=images, return_tensors="pt")["pixel_values"]
        crops = self.processor(images=images, do_rescale=False, do_normalize=False, return_tensors="pt")["pixel_values"]
        return crops if crops.dtype == torch.uint8 else crops.round().clamp(0, 255).to(torch.uint8)

    def decode(self, pixels: torch.Tensor) -> torch.Tensor:
        """``pixel_values`` (float32) from :meth:`encode`'s output (float input passes through)."""
        if pixels.dtype != torch.uint8:
            return pixels
        x = (pixels.double() * self.scale).float() if self.scale is not None else pixels.float()
        if self.mean is not None:
            x = (x - self.mean.to(x.device)) / self.std.to(x.device)
        return x


class _Preprocessed(torch.utils.data.IterableDataset):
    """Batches of ``pixel_values`` (and ``labels``) from an HF dataset, preprocessed in the workers."""

    def __init__(self, ds, processor, image_column: str, label_column: str | None, batch_size: int,
                 limit: int | None, drop_last: bool, spec: DatasetSpec, split: str, compact: bool = False,
                 part: tuple[int, int] | None = None, with_rows: bool = False):
        super().__init__()
        self.ds, self.processor, self.spec, self.split = ds, processor, spec, split
        self.codec = PixelCodec(processor) if compact else None
        self.image_column, self.label_column = image_column, label_column
        self.batch_size, self.limit, self.drop_last = batch_size, limit, drop_last
        self.part, self.with_rows = part, with_rows
        self.row_map: list[int] | None = None  # selected rows of the split (map-style data with a part)
        if part is not None and part[1] > 1 and hasattr(ds, "select") and hasattr(ds, "__len__"):
            from .distributed import own_batches

            n = len(ds) if limit is None else min(limit, len(ds))
            batches = own_batches(-(-n // batch_size), *part)
            self.row_map = [r for b in batches for r in range(b * batch_size, min((b + 1) * batch_size, n))]
            self.ds, self.limit, self.part = ds.select(self.row_map), None, None  # only this process's rows decoded

    def _examples(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """``(row, example)`` of this worker's part; ``row`` counts in the split (map-style) or the stream (several
        workers of a stream: ``row × workers + worker``, unique)."""
        import datasets

        ds = self.ds
        start, step, stride, offset = 0, 1, 1, 0
        info = torch.utils.data.get_worker_info()
        if info is not None and info.num_workers > 1:
            # Each worker reads its own part. Map-style: strided indices; streaming: shards or every n-th.
            if isinstance(ds, datasets.Dataset):
                ds = ds.select(range(info.id, len(ds), info.num_workers))
                start, step = info.id, info.num_workers
            else:
                ds = datasets.distributed.split_dataset_by_node(ds, rank=info.id, world_size=info.num_workers)
                stride, offset = info.num_workers, info.id
        it = iter(ds)
        row = start
        while True:
            try:
                ex = next(it)
            except StopIteration:
                return
            except Exception as e:  # noqa: BLE001 - decoding happens while iterating
                raise _image_error(self.spec, self.split, row, e) from None
            yield (self.row_map[row] if self.row_map is not None else row * stride + offset), ex
            row += step

    def __iter__(self):
        batch: list[tuple[int, dict[str, Any]]] = []
        seen = number = 0
        for row, ex in self._examples():
            if self.limit is not None and seen >= self.limit:
                break
            batch.append((row, ex))
            seen += 1
            if len(batch) == self.batch_size:
                if self._own(number):
                    yield self._collate(batch)
                batch, number = [], number + 1
        if batch and not self.drop_last and self._own(number):
            yield self._collate(batch)

    def _own(self, number: int) -> bool:
        """Whether batch ``number`` is this process's (a stream read by several processes: every n-th batch)."""
        return self.part is None or number % self.part[1] == self.part[0]

    def _collate(self, batch):
        rows = [r for r, _ in batch]
        images = rgb_images([ex[self.image_column] for _, ex in batch], rows, self.spec, self.split)
        batch = [ex for _, ex in batch]
        pixels = self.codec.encode(images) if self.codec is not None else \
            self.processor(images=images, return_tensors="pt")["pixel_values"]
        out = {"pixel_values": pixels}
        if self.label_column is not None:
            out["labels"] = torch.tensor([int(ex[self.label_column]) for ex in batch])
        if self.with_rows:
            out["rows"] = torch.tensor(rows, dtype=torch.long)
        return out


@dataclass
class ImageData:
    """One split of a dataset, ready to batch.

    Attributes:
        spec: The dataset reference.
        split: The split name.
        dataset: The underlying ``datasets`` object.
        image_column: The image column used.
        label_column: The label column used (``None`` for unlabeled data).
        class_names: Names of the classes in label order (``None`` without a ``ClassLabel``).
        revision: The commit SHA a Hub dataset was read at (``None`` for local data).
    """

    spec: DatasetSpec
    split: str
    dataset: Any
    image_column: str
    label_column: str | None
    class_names: list[str] | None
    revision: str | None = None

    @property
    def num_examples(self) -> int | None:
        """Number of examples when known (map-style datasets), else ``None``."""
        try:
            return len(self.dataset)
        except TypeError:
            return None

    def shard(self, rank: int, world_size: int) -> ImageData:
        """This process's shard (``split_dataset_by_node``)."""
        from datasets.distributed import split_dataset_by_node

        if world_size <= 1:
            return self
        return ImageData(self.spec, self.split, split_dataset_by_node(self.dataset, rank=rank, world_size=world_size),
                         self.image_column, self.label_column, self.class_names, self.revision)

    def loader(self, processor, batch_size: int, *, limit: int | None = None, num_workers: int = 0,
               drop_last: bool = False, with_labels: bool = True, compact: bool = False,
               part: tuple[int, int] | None = None, with_rows: bool = False) -> torch.utils.data.DataLoader:
        """A DataLoader of preprocessed batches ``{"pixel_values", "labels"?}``.

        Args:
            processor: The base model's ``CLIPImageProcessor``.
            batch_size: Images per batch.
            limit: Read at most this many examples (of this process's data).
            num_workers: DataLoader worker processes doing the decoding and preprocessing.
            drop_last: Drop a final incomplete batch.
            with_labels: Include labels when the dataset has them.
            compact: Yield :class:`PixelCodec`-encoded ``uint8`` crops (``PixelCodec(processor).decode`` gives
                the exact ``pixel_values``), to keep batches in memory at a quarter of the size.
            part: ``(rank, processes)``: only the batches process ``rank`` evaluates (every ``processes``-th batch
                of the ``limit`` first rows, :func:`~hfdistac.distributed.own_batches`); of map-style data only
                those rows are read.
            with_rows: Add ``"rows"``, each image's row in the split (a stream read by several workers: a
                unique position), to every batch.
        """
        label = self.label_column if with_labels else None
        ds = _Preprocessed(self.dataset, processor, self.image_column, label, batch_size, limit, drop_last,
                           self.spec, self.split, compact, part, with_rows)
        # Each worker process decodes with one torch thread: workers are the parallelism, and several threads
        # per worker would oversubscribe the cores.
        return torch.utils.data.DataLoader(ds, batch_size=None, num_workers=num_workers, persistent_workers=False,
                                           worker_init_fn=_one_thread if num_workers else None)


def _one_thread(_worker_id: int) -> None:
    torch.set_num_threads(1)


def load_image_data(spec: DatasetSpec, split: str, *, streaming: bool | None = None) -> ImageData:
    """Load a split and detect its columns.

    Raises:
        DataError: no image column, missing split, unreadable dataset.
        ReferenceNotFoundError: path or Hub id that does not exist.
    """
    if not spec.reference:
        raise InputError("empty dataset reference")
    return _image_data(spec, split, load_split(spec, split, streaming=streaming))


def _image_data(spec: DatasetSpec, split: str, ds) -> ImageData:
    img, lab = detect_columns(ds.features, spec.image_column, spec.label_column)
    names = class_names(ds.features, lab)
    if spec.class_names is not None:
        if names is not None and len(names) != len(spec.class_names):
            raise DataError(f"{len(spec.class_names)} class names were given for dataset {spec.reference!r}, but its "
                            f"label column {lab!r} has {len(names)} classes", "give one name per class, in label order")
        names = list(spec.class_names)
    data = ImageData(spec, split, ds, img, lab, names, dataset_revision(spec))
    if data.num_examples == 0:
        raise DataError(f"split {split!r} of dataset {spec.reference!r} is empty",
                        "choose a split that holds images (e.g. train or test)")
    return data


#: Rows kept in the shuffle buffer of a streamed sample (:func:`sample_stream`; ``datasets``' default).
STREAM_SHUFFLE_BUFFER = 1000
#: Shards interleaved while filling that buffer: ``datasets`` reads up to 10 at once, which for a small sample
#: fetches the start of 10 files; 2 keep the reads bounded by the sample and still mix two shards' rows.
STREAM_SHARDS_AT_ONCE = 2


def sample_stream(spec: DatasetSpec, split: str, num_images: int, directory: Path, *, shuffle: bool = True,
                  seed: int = 0, buffer_size: int = STREAM_SHUFFLE_BUFFER, progress: bool = False) -> ImageData:
    """The first ``num_images`` examples of a split read as a stream, stored as a memory-mapped Arrow file.

    With ``shuffle``, the stream goes through a seeded shuffle buffer (``buffer_size`` rows, the shard order
    shuffled by the same seed) first; without it, the split's first rows are taken. Only the shards needed for
    those rows are read (a Hub dataset with range requests, at its pinned commit), the images are kept as the
    stored bytes (never re-encoded), and the result is a map-style dataset, so a run can index it, cache its
    teacher's logits and resume exactly. The file is written once per key (reference, commit, split, sample)
    under ``directory`` (atomically, under a lock shared by the processes of a run) and reused after.

    Returns:
        The sample as :class:`ImageData` (``revision``: the commit read, for a Hub dataset).

    Raises:
        DataError, ReferenceNotFoundError: as :func:`load_image_data`; also an empty sample.
    """
    import hashlib
    import json

    import datasets
    from filelock import FileLock

    key = json.dumps([spec.reference, spec.config, dataset_revision(spec) or _local_stamp(spec), split, num_images,
                      shuffle and [seed, buffer_size, STREAM_SHARDS_AT_ONCE]])
    folder = Path(directory) / hashlib.sha256(key.encode()).hexdigest()[:24]
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "data.arrow"
    with FileLock(str(folder / ".lock")):
        if not target.is_file():  # the stream is opened only when the sample is not stored yet (offline: never)
            stream = load_split(spec, split, streaming=True)
            features = stream.features
            if shuffle:
                stream = stream.shuffle(seed=seed, buffer_size=buffer_size,
                                        max_buffer_input_shards=STREAM_SHARDS_AT_ONCE)
            _write_arrow(stream.take(num_images).decode(False), features, folder, target, progress, spec, split)
    sample = datasets.Dataset.from_file(str(target))
    if len(sample) == 0:
        raise DataError(f"split {split!r} of dataset {spec.reference!r} is empty",
                        "choose a split that holds images (e.g. train or test)")
    logger.info("%s/%s: %d %s image(s) from a stream, in %s", spec.reference, split, len(sample),
                "shuffled" if shuffle else "first", folder)
    return _image_data(spec, split, sample)


def _write_arrow(rows, features, folder: Path, target: Path, progress: bool, spec: DatasetSpec, split: str) -> None:
    from datasets.arrow_writer import ArrowWriter
    from tqdm.auto import tqdm

    tmp = folder / f"data.arrow.{os.getpid()}.tmp"
    writer = ArrowWriter(features=features, path=str(tmp))
    try:
        for i, ex in enumerate(tqdm(rows, desc=f"streaming {spec.name}/{split}", unit="img", disable=not progress)):
            try:
                writer.write(ex)
            except Exception as e:  # noqa: BLE001 - an undecodable or mistyped row
                raise _image_error(spec, split, i, e) from None
        writer.finalize()
    finally:
        writer.close()
    os.replace(tmp, target)


def _local_stamp(spec: DatasetSpec) -> list | None:
    """Path, size and mtime of a local dataset's files (what identifies its content for a cache key)."""
    root = Path(_split_revision(spec.reference)[0]).expanduser().resolve()
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files]


#: Hub dataset revisions resolved in this process: ``(repo, revision asked) -> commit SHA``.
_REVISIONS: dict[tuple[str, str | None], str] = {}


def dataset_revision(spec: DatasetSpec) -> str | None:
    """The commit SHA a Hub dataset is read at: resolved once per process, then reused by every read (``None``
    for local data, or when the Hub can be reached neither now nor before, e.g. offline and never resolved)."""
    if spec.is_local:
        return None
    ref, rev = _split_revision(spec.reference)
    if (ref, rev) not in _REVISIONS:
        try:
            from .hub import resolve_dataset_revision

            _REVISIONS[(ref, rev)] = resolve_dataset_revision(ref, rev)
            _remember_revision(ref, rev, _REVISIONS[(ref, rev)])
        except Exception as e:  # noqa: BLE001 - datasets itself then says what is wrong with the reference
            known = _remembered_revision(ref, rev)
            if known is None:
                logger.debug("could not resolve dataset revision of %s: %s", ref, e)
                return None
            logger.info("dataset %s: the Hub cannot be reached; using commit %s, resolved on an earlier run", ref,
                        known)
            _REVISIONS[(ref, rev)] = known
        logger.info("dataset %s%s: commit %s", ref, f"@{rev}" if rev else "", _REVISIONS[(ref, rev)])
    return _REVISIONS[(ref, rev)]


def _revisions_file() -> Path:
    """Where the dataset commits resolved online are remembered, for offline runs (``$HF_HOME/hfdistac``)."""
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "hfdistac" / "dataset_revisions.json"


def _remember_revision(ref: str, rev: str | None, sha: str) -> None:
    import json

    path = _revisions_file()
    try:
        known = json.loads(path.read_text()) if path.is_file() else {}
        if not isinstance(known, dict):
            known = {}
        known[f"{ref}@{rev or ''}"] = sha
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(known, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except (OSError, ValueError) as e:  # a cache: never fail the run for it (rebuilt on the next success)
        logger.debug("could not remember the revision of %s: %s", ref, e)


def _remembered_revision(ref: str, rev: str | None) -> str | None:
    import json

    try:
        sha = json.loads(_revisions_file().read_text()).get(f"{ref}@{rev or ''}")
    except (OSError, ValueError, AttributeError):
        return None
    return sha if isinstance(sha, str) and len(sha) == 40 else None
