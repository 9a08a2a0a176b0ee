"""Writers of the suite's on-disk artefacts: Hub-style parquet datasets, model/dataset cards, recipes.

Everything written here is byte-deterministic given its inputs (no timestamps, sorted keys, PNG-encoded
images), so two builds with the same seed produce identical files.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import yaml

from .domains import Task

GENERIC_TEMPLATE = "a photo of a {c}."
LICENSE = "apache-2.0"


def _png(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def write_split(path: Path, images: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...]) -> None:
    """Write one split as a Hub-style parquet file with ``image`` (``Image``) and ``label`` (``ClassLabel``)."""
    from datasets import ClassLabel, Dataset, Features, Image

    feats = Features({"image": Image(), "label": ClassLabel(names=list(class_names))})
    ds = Dataset.from_dict({"image": [{"bytes": _png(a), "path": None} for a in images],
                            "label": [int(v) for v in labels]}, features=feats)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_parquet(str(path))


def _front_matter(meta: dict) -> str:
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n"


def dataset_card(attr: Task, n_train: int, n_holdout: int, n_test: int, seed: int) -> str:
    """README.md of a task's dataset (splits ``train``, ``holdout``, ``test``)."""
    meta = {
        "license": LICENSE,
        "pretty_name": f"hfdistac example suite: {attr.name}",
        "task_categories": ["image-classification"],
        "size_categories": ["n<1K"] if n_train + n_holdout + n_test < 1000 else ["1K<n<10K"],
        "tags": ["hfdistac", "synthetic", "example-suite"],
        "dataset_info": {
            "features": [{"name": "image", "dtype": "image"},
                         {"name": "label", "dtype": {"class_label": {"names": {
                             str(i): c for i, c in enumerate(attr.classes)}}}}],
        },
        "configs": [{"config_name": "default", "data_files": [
            {"split": "train", "path": "data/train-*"}, {"split": "holdout", "path": "data/holdout-*"},
            {"split": "test", "path": "data/test-*"}]}],
    }
    classes = ", ".join(f"`{c}`" for c in attr.classes)
    return _front_matter(meta) + f"""
# Synthetic task `{attr.name}` (hfdistac example suite)

32×32 px synthetic images of its own domain, **{attr.description}**; classes: {classes}.
Every task of the suite has its own image generator and palette (as the DisTaC paper's eight tasks are eight
datasets); the suite's base model was pretrained on a shifted, coarsely captioned mixture of all eight domains.

Generated offline by `hfdistac example-suite` (seed {seed}): {n_train} train, {n_holdout} holdout and {n_test}
test images. The suite's models are fine-tuned on `train` only; `holdout` is what the suite's recipes name as
their `val_split`, to choose merging coefficients on images no model saw.
"""


def model_card(task: str, variant: str, *, lr: float, steps: int, batch_size: int, label_smoothing: float,
               train_accuracy_note: str, seed: int, distac_lr: float, finetune_lr: float) -> str:
    """README.md of a fine-tuned vision tower. Its base and dataset are sibling folders of the suite, named by
    relative paths in the ``hfdistac`` block (hfdistac resolves them against the model folder); ``base_model``
    and ``datasets`` stay unset, since the Hub accepts only repo ids there and the card must upload as it is."""
    tags = ["hfdistac", "example-suite", "clip", "vision", "image-classification", "synthetic"]
    if variant == "highlr":
        tags.append("high-learning-rate")
    if variant == "ls":
        tags.append("label-smoothing")
    meta = {
        "library_name": "transformers",
        "pipeline_tag": "image-classification",
        "license": LICENSE,
        "tags": tags,
        # distac_lr: the rate the suite recommends for DisTaC, a tenth of its standard fine-tuning rate (inspect
        # puts it in its command; how it was chosen: the package docstring and REPRODUCTION.md)
        "hfdistac": {"base": "../../base", "datasets": [f"../../data/{task}"], "distac_lr": distac_lr},
    }
    what = {
        "standard": "the standard fine-tuning recipe",
        "highlr": f"the standard recipe with a {lr / finetune_lr:g}× learning rate (same steps): a much longer task vector — "
                  "the *norm mismatch* case of the DisTaC paper",
        "ls": "the standard recipe with label smoothing 0.1: an under-confident model — the *low confidence* "
              "case of the DisTaC paper",
    }[variant]
    return _front_matter(meta) + f"""
# Tiny CLIP vision tower fine-tuned on `{task}` ({variant})

Part of the hfdistac example suite (a miniature, offline replica of the DisTaC paper's 8-task benchmark).
Trained with {what}.

- Protocol (DisTaC paper): only the vision tower is trained, through the **frozen zero-shot head** built
  from the base model's text tower with the template `"{GENERIC_TEMPLATE}"` and the dataset's class names;
  cross-entropy loss{f" with label smoothing {label_smoothing}" if label_smoothing else ""}.
- AdamW (weight decay 0.1), peak learning rate {lr:g}, cosine schedule, {steps} steps of batch {batch_size},
  gradient clipping at 1.0, seed {seed}. {train_accuracy_note}
- Base model: `../../base` (relative to this directory); dataset: `../../data/{task}`.
"""


def base_card(*, hidden: int, layers: int, patch: int, image_size: int, steps: int, n_images: int,
              seed: int, pretrain_logit_scale: float, logit_scale: float) -> str:
    """README.md of the contrastively pretrained tiny CLIP base model."""
    meta = {
        "library_name": "transformers",
        "pipeline_tag": "zero-shot-image-classification",
        "license": LICENSE,
        "tags": ["hfdistac", "example-suite", "clip", "synthetic"],
    }
    return _front_matter(meta) + f"""
# Tiny CLIP base model (hfdistac example suite)

A `CLIPModel` (both towers: width {hidden}, {layers} layers, patch {patch}, {image_size} px) with a word-level
tokenizer built offline and a `CLIPImageProcessor`, **pretrained contrastively** (CLIP's symmetric InfoNCE
loss) for {steps} steps on {n_images} captioned synthetic images of the suite's eight domains (seed {seed}),
drawn with a shift (colour jitter, blur, noise) and coarse captions (nine in ten images of an odd class named
as the class before it, e.g. `a photo of a 2 digits.` for a 3), so that zero-shot heads built from its text
tower classify the suite's tasks above chance but wrong on many images — as real CLIP on SVHN or
EuroSAT. The temperature was fixed at {pretrain_logit_scale:g} (OpenAI CLIP's final value) while pretraining;
the saved `logit_scale` is then set to ln {logit_scale:g}, the scale of every zero-shot and fine-tuned head: this
tiny CLIP separates its class captions so widely that at {pretrain_logit_scale:g} its zero-shot heads would be surer
than its label-smoothed fine-tunes (the suite's check (e) asks the opposite).
"""


def recipe_text(name: str, description: str, tasks: list[dict]) -> str:
    """A recipe file (format ``hfdistac.recipe.v1``); paths are relative to the recipe's directory."""
    doc = {"format": "hfdistac.recipe.v1", "name": name, "description": description, "base": "../base",
           "tasks": tasks}
    return yaml.safe_dump(doc, sort_keys=False)


def suite_readme(summary_table: str, task_names: list[str], seed: int, highlr_factor: float) -> str:
    """README.md at the suite's root."""
    return f"""# hfdistac example suite

A miniature, offline replica of the DisTaC paper's benchmark, written by `hfdistac example-suite`
(seed {seed}, tasks: {", ".join(task_names)}).

- `base/`: tiny contrastively pretrained `CLIPModel` + tokenizer + image processor.
- `data/<task>/`: Hub-style parquet datasets (`image`, `label` with `ClassLabel` names; `train`, `holdout`
  (never seen in fine-tuning; the recipes' `val_split`), `test`).
- `models/<task>`, `<task>-highlr`, `<task>-ls`: fine-tuned `CLIPVisionModel`s (standard, {highlr_factor:g}× learning rate,
  label smoothing 0.1), each with a model card naming its base and dataset (as relative paths in its
  `hfdistac` metadata, which hfdistac resolves).
- `recipes/original.yaml`, `norm-mismatch.yaml`, `low-confidence.yaml`: inputs for `hfdistac inspect`,
  `merge` and the demo.
- `suite.json`: the figures below and the build's provenance.

Try: `hfdistac inspect recipes/norm-mismatch.yaml`.

```
{summary_table}
```
"""


def save_vision_model(vision_model, directory: Path) -> None:
    """``save_pretrained`` a ``CLIPVisionModel``, with its tensors keyed as Hub checkpoints of it are
    (``vision_model.``-prefixed, e.g. ``tanganke/clip-vit-base-patch32_svhn``; transformers 5 writes them
    unprefixed and reads both)."""
    from safetensors.torch import load_file, save_file

    vision_model.save_pretrained(directory)
    path = directory / "model.safetensors"
    weights = load_file(str(path))
    save_file({k if k.startswith("vision_model.") else f"vision_model.{k}": v.contiguous()
               for k, v in weights.items()}, str(path), metadata={"format": "pt"})
