"""Tiny CLIP checkpoints and datasets for tests (random weights, hidden 32, 2 layers, 32 px)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

CLASS_NAMES = ["red", "green", "blue"]
WORDS = ["a photo of a", "red green blue circle square", "the number", "texture"]


def _write_card(path: Path, meta: dict) -> None:
    import yaml

    (path / "README.md").write_text("---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n\n# test model\n")


def make_base(path: Path, seed: int = 0, hidden: int = 32) -> Path:
    """A tiny CLIPModel with tokenizer and image processor saved at ``path``."""
    from transformers import CLIPModel

    from hfdistac.tiny import build_word_tokenizer, tiny_clip_config, tiny_image_processor

    torch.manual_seed(seed)
    tok = build_word_tokenizer(WORDS)
    model = CLIPModel(tiny_clip_config(tok, hidden_size=hidden))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    tiny_image_processor(32).save_pretrained(path)
    return path


def make_finetuned(base: Path, path: Path, *, scale: float, seed: int, layout: str = "vision",
                   card: dict | None = None) -> Path:
    """Perturb the base vision tower by ``scale``·N(0,1) and save it in one of several layouts.

    layout: ``vision`` (CLIPVisionModel, keys prefixed ``vision_model.``), ``noprefix`` (same weights with the
    prefix stripped in the file), ``projection`` (CLIPVisionModelWithProjection) or ``full`` (CLIPModel).
    """
    from safetensors.torch import load_file, save_file
    from transformers import CLIPModel, CLIPVisionModel, CLIPVisionModelWithProjection

    g = torch.Generator().manual_seed(seed)
    full = CLIPModel.from_pretrained(base)
    with torch.no_grad():
        for _, p in full.vision_model.named_parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    if layout == "full":
        full.save_pretrained(path)
    elif layout == "projection":
        m = CLIPVisionModelWithProjection(full.config.vision_config)
        m.vision_model.load_state_dict(full.vision_model.state_dict()) if hasattr(m, "vision_model") else None
        sd = {**{f"vision_model.{k}": v for k, v in full.vision_model.state_dict().items()},
              "visual_projection.weight": full.visual_projection.weight}
        m.load_state_dict({k.removeprefix("vision_model.") if not hasattr(m, "vision_model") else k: v
                           for k, v in sd.items()}, strict=False)
        m.save_pretrained(path)
        # make sure the tower weights are the perturbed ones whatever the module layout is
        w = load_file(str(path / "model.safetensors"))
        for k, v in full.vision_model.state_dict().items():
            for cand in (f"vision_model.{k}", k):
                if cand in w:
                    w[cand] = v.contiguous()
        save_file(w, str(path / "model.safetensors"), metadata={"format": "pt"})
    else:
        vm = CLIPVisionModel(full.config.vision_config)
        vm.load_state_dict(full.vision_model.state_dict())
        vm.save_pretrained(path)
        if layout == "noprefix":
            w = load_file(str(path / "model.safetensors"))
            save_file({k.removeprefix("vision_model."): v for k, v in w.items()}, str(path / "model.safetensors"),
                      metadata={"format": "pt"})
    if card is not None:
        _write_card(path, card)
    return path


def make_image_dataset(path: Path, n_train: int = 48, n_test: int = 24, classes=CLASS_NAMES, seed: int = 0,
                       image_size: int = 40, train_shards: int = 1) -> Path:
    """A small colour-classification dataset as Hub-style parquet files with ClassLabel names (the train split
    in ``train_shards`` files)."""
    from datasets import ClassLabel, Dataset, Features, Image

    rng = np.random.default_rng(seed)
    palette = np.array([[220, 30, 30], [30, 200, 30], [30, 30, 220], [200, 200, 30], [200, 30, 200]])

    def split(n):
        labels = rng.integers(0, len(classes), size=n)
        imgs = []
        for lab in labels:
            arr = rng.integers(0, 60, size=(image_size, image_size, 3)).astype(np.uint8)
            arr[8:-8, 8:-8] = np.clip(palette[lab] + rng.integers(-20, 20, size=3), 0, 255)
            from PIL import Image as PILImage

            imgs.append(PILImage.fromarray(arr))
        feats = Features({"image": Image(), "label": ClassLabel(names=list(classes))})
        return Dataset.from_dict({"image": imgs, "label": labels.tolist()}, features=feats)

    (path / "data").mkdir(parents=True, exist_ok=True)
    train = split(n_train)
    for i in range(train_shards):
        train.shard(train_shards, i, contiguous=True).to_parquet(
            str(path / "data" / f"train-{i:05d}-of-{train_shards:05d}.parquet"))
    split(n_test).to_parquet(str(path / "data" / "test-00000-of-00001.parquet"))
    return path


def plain_predictions(base: Path, weights: dict, dataset: Path, split: str = "test") -> tuple[list[int], list[int]]:
    """``(predicted classes, labels)`` of the vision tower ``weights`` on ``dataset``'s ``split``, counted without
    hfdistac's evaluation code: the processor on each PIL image, the tower's pooled output, the zero-shot head."""
    from datasets import load_dataset

    from hfdistac.checkpoints import build_vision_model, load_base
    from hfdistac.data import DatasetSpec, load_image_data
    from hfdistac.evaluation import head_for_task

    rows = load_dataset("parquet", data_files=str(dataset / "data" / f"{split}-00000-of-00001.parquet"),
                        split="train")
    b = load_base(str(base))
    head = head_for_task(b, load_image_data(DatasetSpec(str(dataset)), split, streaming=False))
    pixels = b.image_processor(images=[im.convert("RGB") for im in rows["image"]], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        pooled = build_vision_model(b.vision_config, weights)(pixel_values=pixels).pooler_output
    return head.logits(pooled).argmax(-1).tolist(), list(rows["label"])


def plain_accuracy(base: Path, model: Path, dataset: Path, split: str = "test") -> float:
    """Accuracy (%) of the model folder ``model`` on ``dataset``'s ``split`` (:func:`plain_predictions`)."""
    from hfdistac.checkpoints import read_vision_weights

    pred, labels = plain_predictions(base, read_vision_weights(model), dataset, split)
    return 100.0 * sum(p == y for p, y in zip(pred, labels, strict=True)) / len(labels)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A namespace of tiny checkpoints and datasets shared by the whole session.

    Attributes: ``base``; ``ft_a``, ``ft_b``, ``ft_c`` (normal, scale 0.01, CLIPVisionModel layout, with cards);
    ``ft_long`` (scale 0.08: a long task vector); ``ft_noprefix``, ``ft_projection``, ``ft_full`` (layout
    variants of ``ft_a``'s weights); ``other_base`` (hidden 64: incompatible); ``data`` (3 classes);
    ``data5`` (5 classes).
    """
    root = tmp_path_factory.mktemp("tiny")
    base = make_base(root / "base")
    ns = type("Tiny", (), {})()
    ns.root = root
    ns.base = base
    card = {"base_model": str(base), "datasets": [str(root / "data")], "license": "mit"}
    ns.ft_a = make_finetuned(base, root / "ft_a", scale=0.01, seed=1, card=card)
    ns.ft_b = make_finetuned(base, root / "ft_b", scale=0.01, seed=2, card=card)
    ns.ft_c = make_finetuned(base, root / "ft_c", scale=0.012, seed=3, card=card)
    ns.ft_long = make_finetuned(base, root / "ft_long", scale=0.08, seed=4, card=card)
    ns.ft_noprefix = make_finetuned(base, root / "ft_noprefix", scale=0.01, seed=1, layout="noprefix")
    ns.ft_projection = make_finetuned(base, root / "ft_projection", scale=0.01, seed=1, layout="projection")
    ns.ft_full = make_finetuned(base, root / "ft_full", scale=0.01, seed=1, layout="full")
    ns.other_base = make_base(root / "other_base", hidden=64)
    ns.data = make_image_dataset(root / "data")
    ns.data5 = make_image_dataset(root / "data5", classes=["a", "b", "c", "d", "e"], seed=1)
    (root / "meta.json").write_text(json.dumps({"created": True}))
    return ns
