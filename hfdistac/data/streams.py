"""Hub dataset streams: a sample stored once (memory-mapped, at the pinned commit) and read back offline."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..errors import DataError
from .images import ImageData, _image_data, _image_error
from .network import bounded_stream_reads, is_connection_error, stream_error
from .revisions import dataset_revision
from .splits import DatasetSpec, _local_stamp, load_split

logger = logging.getLogger(__name__)

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
        sample = _stored_sample(target)
        if sample is None:  # the stream is opened only when the sample is not stored yet (offline: never)
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


def _stored_sample(target: Path):
    """The stored sample at ``target``; ``None`` when there is none, or when the file (hfdistac's own cache) cannot be
    read, in which case it is removed, with a warning, to be written again."""
    import datasets

    if not target.is_file():
        return None
    try:
        return datasets.Dataset.from_file(str(target))
    except Exception as e:  # noqa: BLE001 - pyarrow's errors vary; a cache is rebuilt whatever broke it
        logger.warning("the stored stream sample %s cannot be read (%s); reading the stream again", target,
                       str(e).splitlines()[0] if str(e) else type(e).__name__)
        target.unlink(missing_ok=True)
        return None


def _write_arrow(rows, features, folder: Path, target: Path, progress: bool, spec: DatasetSpec, split: str) -> None:
    from datasets.arrow_writer import ArrowWriter
    from tqdm.auto import tqdm

    tmp = folder / f"data.arrow.{os.getpid()}.tmp"
    writer = ArrowWriter(features=features, path=str(tmp))
    i = 0
    try:
        with bounded_stream_reads(f"dataset {spec.reference!r} split {split!r}"):
            for i, ex in enumerate(tqdm(rows, desc=f"streaming {spec.name}/{split}", unit="img",
                                        disable=not progress)):
                try:
                    writer.write(ex)
                except Exception as e:  # noqa: BLE001 - an undecodable or mistyped row
                    raise _image_error(spec, split, i, e) from None
        writer.finalize()
    except BaseException as e:
        writer.close()
        tmp.unlink(missing_ok=True)  # nothing half-written is left in the cache
        if isinstance(e, DataError) or not isinstance(e, Exception):
            raise
        if is_connection_error(e):  # the stream itself broke (reading happens while iterating)
            raise stream_error(spec.reference, split, i, e) from None
        raise _image_error(spec, split, i, e) from None
    writer.close()
    os.replace(tmp, target)


