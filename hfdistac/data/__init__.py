"""Datasets of images for heads, distillation and evaluation (METHOD.md §0).

One room per concern: :mod:`.splits` (references, splits, the derived validation split, columns), :mod:`.images`
(decoding, preprocessing, :class:`ImageData`), :mod:`.streams` (Hub streams: bounded retries, a sample stored once)
and :mod:`.revisions` (a Hub dataset's commit, resolved once). This package re-exports what the rest of hfdistac
uses.

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

from .images import ImageData, PixelCodec, check_labels, decode_rows, load_image_data, rgb_images
from .revisions import dataset_revision
from .splits import (
    DERIVED_SPLITS,
    VALIDATION,
    VALIDATION_FRACTION,
    VALIDATION_MAX,
    VALIDATION_SEED,
    DatasetSpec,
    class_names,
    detect_columns,
    load_split,
    validation_rows,
)
from .streams import STREAM_SHARDS_AT_ONCE, STREAM_SHUFFLE_BUFFER, sample_stream

__all__ = ["DERIVED_SPLITS", "STREAM_SHARDS_AT_ONCE", "STREAM_SHUFFLE_BUFFER", "VALIDATION", "VALIDATION_FRACTION",
           "VALIDATION_MAX", "VALIDATION_SEED", "DatasetSpec", "ImageData", "PixelCodec", "check_labels",
           "class_names", "dataset_revision", "decode_rows", "detect_columns", "load_image_data", "load_split",
           "rgb_images", "sample_stream", "validation_rows"]
