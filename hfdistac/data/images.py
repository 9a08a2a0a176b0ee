"""Images ready for a model: decoded, checked, preprocessed exactly like the base's ``CLIPImageProcessor`` in
DataLoader workers, and the split as :class:`ImageData`."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import DataError, InputError
from .network import bounded_stream_reads, is_connection_error, stream_error
from .revisions import dataset_revision
from .splits import DatasetSpec, class_names, detect_columns, load_split

logger = logging.getLogger(__name__)

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
            from ..distributed import own_batches

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
        streamed = not isinstance(ds, datasets.Dataset)
        with bounded_stream_reads(f"dataset {self.spec.reference!r} split {self.split!r}") if streamed \
                else contextlib.nullcontext():
            it = iter(ds)
            row = start
            while True:
                try:
                    ex = next(it)
                except StopIteration:
                    return
                except Exception as e:  # noqa: BLE001 - decoding (and a stream's reading) happens while iterating
                    if streamed and is_connection_error(e):
                        raise stream_error(self.spec.reference, self.split, row, e) from None
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


