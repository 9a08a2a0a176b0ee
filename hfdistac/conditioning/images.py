"""Training and evaluation images of a conditioning run, by example index.

* :class:`ImageStore` — preprocessed images of a map-style dataset, kept in memory after first use when the
  whole set fits a budget (so 500 steps × 128 images decode each image once, not 500 times).
* :func:`sharded_logits` — logits of a classifier over a list of examples, every process computing every
  W-th one and the results gathered back in index order (the teacher-logit cache and every evaluation).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

logger = logging.getLogger(__name__)


class ImageStore:
    """Preprocessed images of a map-style dataset by example index, kept in memory after first use if they fit.

    Kept as exact ``uint8`` crops (:class:`~hfdistac.data.PixelCodec`: a quarter of the memory of float pixels,
    decoded bit for bit on every read).

    Args:
        dataset: A ``datasets.Dataset``.
        processor: The base model's image processor.
        image_column: The image column.
        budget_bytes: Keep every preprocessed image when all of them fit in this many bytes.
        spec: The dataset's :class:`~hfdistac.data.DatasetSpec` (names it in errors).
        split: The split's name (for errors).
    """

    def __init__(self, dataset, processor, image_column: str, budget_bytes: float, spec=None, split: str = "train"):
        self.spec, self.split = spec, split
        self.images = dataset.select_columns([image_column])
        self.image_column = image_column
        self.processor = processor
        from ..data import PixelCodec

        self.codec = PixelCodec(processor)
        self.budget_bytes = budget_bytes
        self.num_examples = len(dataset)
        self._cache: torch.Tensor | None = None
        self._have: torch.Tensor | None = None
        self._decided = False

    def process(self, indices: Sequence[int]) -> torch.Tensor:
        """Decode and preprocess (no cache), encoded: ``[len(indices), 3, H, W]`` ``uint8`` crops."""
        from ..data import DatasetSpec, decode_rows

        spec = self.spec or DatasetSpec("<dataset>")
        images = decode_rows(self.images, indices, self.image_column, spec, self.split)
        return self.codec.encode(images)

    def put(self, indices: Sequence[int], pixels: torch.Tensor) -> None:
        """Remember encoded images (:meth:`process`; the first call decides whether the whole set fits)."""
        if not self._decided:
            self._decided = True
            need = pixels[0].numel() * pixels.element_size() * self.num_examples
            if need <= self.budget_bytes:
                self._cache = torch.empty((self.num_examples, *pixels.shape[1:]), dtype=pixels.dtype)
                self._have = torch.zeros(self.num_examples, dtype=torch.bool)
            else:
                logger.info("preprocessed images need %.2f GiB > budget: preprocessing every batch", need / 2**30)
        if self._cache is not None:
            idx = torch.as_tensor(list(indices), dtype=torch.long)
            self._cache[idx] = pixels
            self._have[idx] = True

    def __call__(self, indices: Sequence[int]) -> torch.Tensor:
        """``pixel_values`` (float32) for the given example indices, from memory where possible."""
        return self.codec.decode(self.encoded(indices))

    def encoded(self, indices: Sequence[int]) -> torch.Tensor:
        """The encoded images of the given example indices, from memory where possible."""
        if self._cache is None:
            pixels = self.process(indices)
            self.put(indices, pixels)
            return pixels
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        missing = idx[~self._have[idx]].unique().tolist()
        if missing:
            self.put(missing, self.process(missing))
        return self._cache[idx]


class _Preprocess(torch.utils.data.Dataset):
    """Chunks of example indices → preprocessed pixels, so DataLoader workers can do the decoding."""

    def __init__(self, store: ImageStore, chunks: list[list[int]]):
        self.store, self.chunks = store, chunks

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.store.process(self.chunks[i])


@torch.no_grad()
def sharded_logits(classifier, store: ImageStore, indices: Sequence[int], batch_size: int, accelerator,
                    num_classes: int, num_workers: int = 0) -> torch.Tensor:
    """Logits ``[len(indices), C]`` (float32, CPU), every process computing every W-th example, gathered in order."""
    world, rank = accelerator.num_processes, accelerator.process_index
    mine = list(indices)[rank::world]
    chunks = [mine[i:i + batch_size] for i in range(0, len(mine), batch_size)]
    if num_workers > 0 and chunks:
        loader = torch.utils.data.DataLoader(_Preprocess(store, chunks), batch_size=None, num_workers=num_workers)
    else:
        loader = (store.encoded(c) for c in chunks)
    was_training = classifier.training
    classifier.eval()
    outs = []
    for chunk, encoded in zip(chunks, loader, strict=True):
        store.put(chunk, encoded)
        with accelerator.autocast():
            outs.append(classifier(store.codec.decode(encoded).to(accelerator.device)).float())
    classifier.train(was_training)
    local = torch.cat(outs) if outs else torch.zeros((0, num_classes), device=accelerator.device)
    if world == 1:
        return local.cpu()
    per_rank = -(-len(indices) // world)
    padded = torch.zeros((per_rank, num_classes), device=local.device)
    padded[:len(local)] = local
    gathered = accelerator.gather(padded).view(world, per_rank, num_classes)
    # rank r's j-th row is indices[j·W + r]: interleave the ranks back into index order
    return gathered.transpose(0, 1).reshape(world * per_rank, num_classes)[:len(indices)].cpu()
