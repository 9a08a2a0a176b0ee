"""Datasets of images for heads, distillation and evaluation (METHOD.md §0).

A *dataset reference* is a Hub id (``user/name[@revision]``, streamed with ``datasets``), or a local path:
a directory of parquet files laid out like a Hub repo (``data/train-*.parquet``), an ``imagefolder``, a
``save_to_disk`` directory, or a single ``.parquet`` file. The image column is the first ``Image`` feature
and the label column the first ``ClassLabel`` unless given.

Splits: ``train`` and ``test`` as stored, plus ``validation``: a seeded 10 % of ``train`` (at most 5,000
images) used for model selection, and ``train-val`` (train minus that validation part). A dataset that has
its own ``validation`` split still gets the seeded one, so numbers are comparable across tasks.

Images are preprocessed exactly like the base model's ``CLIPImageProcessor`` (resize shortest side, centre
crop, normalise), batched, inside DataLoader workers; with several processes each one reads its own shard
(``datasets.distributed.split_dataset_by_node``).
"""

from __future__ import annotations

import logging
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
DERIVED_SPLITS = ("validation", "train-val")


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
    if local and not Path(ref).expanduser().exists():
        raise ReferenceNotFoundError(f"dataset path {ref!r} does not exist",
                                     "pass an existing local dataset directory or a Hub dataset id like user/name")
    if streaming is None:
        streaming = not local
    stored = "train" if split in DERIVED_SPLITS else split
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
        raise ReferenceNotFoundError(f"dataset {spec.reference!r} could not be reached ({str(e).splitlines()[0]})",
                                     "check your network, or use a local copy of the dataset") from None
    if split in DERIVED_SPLITS:
        ds = _derive(ds, split)
    return ds


def _derive(train, split: str):
    """Seeded validation split: 10 % of train, at most 5,000 examples."""
    import datasets

    if isinstance(train, datasets.Dataset):
        n = len(train)
        n_val = max(1, min(VALIDATION_MAX, int(round(VALIDATION_FRACTION * n))))
        g = torch.Generator().manual_seed(VALIDATION_SEED)
        perm = torch.randperm(n, generator=g).tolist()
        idx = sorted(perm[:n_val]) if split == "validation" else sorted(perm[n_val:])
        return train.select(idx)
    # Streaming: a deterministic hash-free rule based on position, so every process agrees: every 10th
    # example is validation (≤ 5,000 of them).
    every = int(round(1 / VALIDATION_FRACTION))

    def keep(_, idx):
        is_val = idx % every == 0 and idx // every < VALIDATION_MAX
        return is_val if split == "validation" else not is_val

    return train.filter(keep, with_indices=True)


def detect_columns(features, image_column: str | None = None, label_column: str | None = None
                   ) -> tuple[str, str | None]:
    """Find the image column (first ``Image`` feature) and label column (first ``ClassLabel``).

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
                 limit: int | None, drop_last: bool, spec: DatasetSpec, split: str, compact: bool = False):
        super().__init__()
        self.ds, self.processor, self.spec, self.split = ds, processor, spec, split
        self.codec = PixelCodec(processor) if compact else None
        self.image_column, self.label_column = image_column, label_column
        self.batch_size, self.limit, self.drop_last = batch_size, limit, drop_last

    def _examples(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """``(row, example)`` of this worker's part; ``row`` counts in the split (map-style) or the stream."""
        import datasets

        ds = self.ds
        start, step = 0, 1
        info = torch.utils.data.get_worker_info()
        if info is not None and info.num_workers > 1:
            # Each worker reads its own part. Map-style: strided indices; streaming: shards or every n-th.
            if isinstance(ds, datasets.Dataset):
                ds = ds.select(range(info.id, len(ds), info.num_workers))
                start, step = info.id, info.num_workers
            else:
                ds = datasets.distributed.split_dataset_by_node(ds, rank=info.id, world_size=info.num_workers)
        it = iter(ds)
        row = start
        while True:
            try:
                ex = next(it)
            except StopIteration:
                return
            except Exception as e:  # noqa: BLE001 - decoding happens while iterating
                raise _image_error(self.spec, self.split, row, e) from None
            yield row, ex
            row += step

    def __iter__(self):
        batch: list[tuple[int, dict[str, Any]]] = []
        seen = 0
        for row, ex in self._examples():
            if self.limit is not None and seen >= self.limit:
                break
            batch.append((row, ex))
            seen += 1
            if len(batch) == self.batch_size:
                yield self._collate(batch)
                batch = []
        if batch and not self.drop_last:
            yield self._collate(batch)

    def _collate(self, batch):
        rows = [r for r, _ in batch]
        images = rgb_images([ex[self.image_column] for _, ex in batch], rows, self.spec, self.split)
        batch = [ex for _, ex in batch]
        pixels = self.codec.encode(images) if self.codec is not None else \
            self.processor(images=images, return_tensors="pt")["pixel_values"]
        out = {"pixel_values": pixels}
        if self.label_column is not None:
            out["labels"] = torch.tensor([int(ex[self.label_column]) for ex in batch])
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
    """

    spec: DatasetSpec
    split: str
    dataset: Any
    image_column: str
    label_column: str | None
    class_names: list[str] | None

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
                         self.image_column, self.label_column, self.class_names)

    def loader(self, processor, batch_size: int, *, limit: int | None = None, num_workers: int = 0,
               drop_last: bool = False, with_labels: bool = True, compact: bool = False
               ) -> torch.utils.data.DataLoader:
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
        """
        label = self.label_column if with_labels else None
        ds = _Preprocessed(self.dataset, processor, self.image_column, label, batch_size, limit, drop_last,
                           self.spec, self.split, compact)
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
    ds = load_split(spec, split, streaming=streaming)
    img, lab = detect_columns(ds.features, spec.image_column, spec.label_column)
    names = class_names(ds.features, lab)
    if spec.class_names is not None:
        if names is not None and len(names) != len(spec.class_names):
            raise DataError(f"{len(spec.class_names)} class names were given for dataset {spec.reference!r}, but its "
                            f"label column {lab!r} has {len(names)} classes", "give one name per class, in label order")
        names = list(spec.class_names)
    data = ImageData(spec, split, ds, img, lab, names)
    if data.num_examples == 0:
        raise DataError(f"split {split!r} of dataset {spec.reference!r} is empty",
                        "choose a split that holds images (e.g. train or test)")
    return data


def dataset_revision(spec: DatasetSpec) -> str | None:
    """Commit SHA of a Hub dataset (``None`` for local data or when offline)."""
    if spec.is_local:
        return None
    ref, rev = _split_revision(spec.reference)
    try:
        from .hub import resolve_dataset_revision

        return resolve_dataset_revision(ref, rev)
    except Exception as e:  # provenance only: never fail a run for it
        logger.debug("could not resolve dataset revision of %s: %s", ref, e)
        return None
