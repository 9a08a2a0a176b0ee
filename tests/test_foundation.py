"""Checkpoint layouts, task vectors, heads and data: the layer everything else stands on."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from hfdistac import checkpoints as C
from hfdistac.data import DatasetSpec, detect_columns, load_image_data
from hfdistac.errors import CheckpointError, DataError, InputError, ReferenceNotFoundError
from hfdistac.heads import build_head, load_head, load_templates_file, save_head
from hfdistac.task_vectors import (
    TaskVector,
    apply_task_vector,
    compute_task_vector,
    global_norm,
    load_task_vector,
    parameter_group,
    parameter_kind,
    per_layer_norms,
    save_task_vector,
)
from hfdistac.templates_data import fix_class_names, templates_for

# --- checkpoints -------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["ft_noprefix", "ft_projection", "ft_full"])
def test_every_layout_reads_to_the_same_canonical_weights(tiny, layout):
    ref = C.read_vision_weights(tiny.ft_a)
    other = C.read_vision_weights(getattr(tiny, layout))
    assert set(ref) == set(other)
    assert all(k.startswith("vision_model.") for k in ref)
    assert all(torch.equal(ref[k], other[k]) for k in ref)
    assert not any("position_ids" in k or "projection" in k for k in ref)


def test_canonical_key_mapping():
    assert C.canonical_vision_key("encoder.layers.0.mlp.fc1.weight") == "vision_model.encoder.layers.0.mlp.fc1.weight"
    assert C.canonical_vision_key("vision_model.pre_layrnorm.bias") == "vision_model.pre_layrnorm.bias"
    for k in ("text_model.embeddings.token_embedding.weight", "visual_projection.weight", "logit_scale",
              "vision_model.embeddings.position_ids"):
        assert C.canonical_vision_key(k) is None


def test_roundtrip_through_save_vision_checkpoint(tiny, tmp_path):
    from transformers import CLIPVisionModel

    w = C.read_vision_weights(tiny.ft_a)
    C.save_vision_checkpoint(tmp_path / "out", C.vision_config(tiny.ft_a), w, {"method": "test"})
    m = CLIPVisionModel.from_pretrained(tmp_path / "out")
    x = torch.randn(2, 3, 32, 32)
    ref = C.build_vision_model(C.vision_config(tiny.ft_a), w)
    torch.testing.assert_close(m(pixel_values=x).pooler_output, ref(pixel_values=x).pooler_output)


def test_pickle_only_checkpoint_is_refused_without_unpickling(tiny, tmp_path):
    d = tmp_path / "pickled"
    d.mkdir()
    (d / "config.json").write_text((tiny.ft_a / "config.json").read_text())
    # Not a real pickle: if anything tried to unpickle it, it would fail differently.
    (d / "pytorch_model.bin").write_bytes(b"this would be a pickle")
    with pytest.raises(CheckpointError, match="pickle") as e:
        C.read_vision_weights(d)
    assert "safe_serialization" in e.value.hint


def test_not_clip_is_refused(tmp_path):
    d = tmp_path / "bert"
    d.mkdir()
    (d / "config.json").write_text('{"model_type": "bert", "architectures": ["BertModel"]}')
    with pytest.raises(CheckpointError, match="not a CLIP model"):
        C.vision_config(d)


def test_base_and_finetuned_mismatch_names_the_difference(tiny):
    base = C.load_base(str(tiny.other_base))
    ft = C.load_finetuned(str(tiny.ft_a))
    with pytest.raises(CheckpointError, match="hidden_size: 64 vs 32"):
        C.check_against_base(base, ft)


def test_shape_mismatch_names_first_keys():
    a = {"x": torch.zeros(2, 2), "y": torch.zeros(3)}
    b = {"x": torch.zeros(2, 3), "y": torch.zeros(3)}
    with pytest.raises(CheckpointError, match=r"x: \(2, 2\) vs \(2, 3\)"):
        compute_task_vector(a, b)
    with pytest.raises(CheckpointError, match="only in fine-tuned"):
        compute_task_vector(a, {**b, "z": torch.zeros(1)})


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(ReferenceNotFoundError):
        C.load_finetuned(str(tmp_path / "nope"))


# --- task vectors --------------------------------------------------------------------------------------


def test_task_vector_norms_by_hand():
    base = {"vision_model.encoder.layers.0.mlp.fc1.weight": torch.zeros(2, 2),
            "vision_model.encoder.layers.1.self_attn.q_proj.bias": torch.ones(2),
            "vision_model.embeddings.class_embedding": torch.zeros(3)}
    ft = {"vision_model.encoder.layers.0.mlp.fc1.weight": torch.tensor([[3.0, 0.0], [0.0, 4.0]]),
          "vision_model.encoder.layers.1.self_attn.q_proj.bias": torch.tensor([1.0, 3.0]),
          "vision_model.embeddings.class_embedding": torch.tensor([0.0, 0.0, 1.0])}
    tv = compute_task_vector(base, ft)
    # entries: 3, 4 | 0, 2 | 1  -> sqrt(9 + 16 + 4 + 1) = sqrt(30)
    assert tv.norm() == pytest.approx(math.sqrt(30))
    pl = per_layer_norms(tv)
    assert pl["by_block"] == pytest.approx({"embeddings": 1.0, "block.0": 5.0, "block.1": 2.0})
    assert list(pl["by_block"]) == ["embeddings", "block.0", "block.1"]
    assert pl["by_kind"] == pytest.approx({"attention": 2.0, "embeddings": 1.0, "mlp": 5.0})
    back = apply_task_vector(base, tv, 1.0)
    assert all(torch.equal(back[k], ft[k]) for k in ft)
    half = apply_task_vector(base, tv, 0.5)
    assert torch.equal(half["vision_model.encoder.layers.0.mlp.fc1.weight"], torch.tensor([[1.5, 0.0], [0.0, 2.0]]))


def test_parameter_groups_and_kinds():
    assert parameter_group("vision_model.encoder.layers.11.mlp.fc2.bias") == "block.11"
    assert parameter_group("vision_model.post_layernorm.weight") == "final"
    assert parameter_group("vision_model.pre_layrnorm.weight") == "embeddings"
    assert parameter_kind("vision_model.encoder.layers.0.layer_norm1.weight") == "layernorm"
    assert parameter_kind("vision_model.pre_layrnorm.weight") == "layernorm"
    assert parameter_kind("vision_model.embeddings.patch_embedding.weight") == "embeddings"


def test_real_task_vector_norm_matches_flattened_norm(tiny):
    base = C.load_base(str(tiny.base))
    ft = C.load_finetuned(str(tiny.ft_a))
    tv = compute_task_vector(base.weights, ft.weights)
    flat = torch.cat([(ft.weights[k] - base.weights[k]).flatten() for k in tv])
    assert tv.norm() == pytest.approx(float(flat.norm()), rel=1e-5)
    assert len(tv) == len(dict(base.clip.vision_model.named_parameters()))


def test_task_vector_file_roundtrip_is_lazy_and_keeps_metadata(tmp_path):
    tv = TaskVector({"a": torch.ones(2, 2), "b": torch.arange(3.0)}, {"source": "x/y", "source_revision": "abc"})
    path = save_task_vector(tv, tmp_path / "tv.safetensors", {"method": "test"})
    back = load_task_vector(path)
    assert back.is_lazy and set(back) == {"a", "b"}
    assert back.metadata["source"] == "x/y" and back.metadata["method"] == "test"
    assert float(back.metadata["norm"]) == pytest.approx(global_norm(tv))
    assert torch.equal(back["b"], torch.arange(3.0))
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


def test_loading_a_non_task_vector_file_is_refused(tiny):
    with pytest.raises(CheckpointError, match="not an hfdistac task vector"):
        load_task_vector(tiny.ft_a / "model.safetensors")


# --- heads -------------------------------------------------------------------------------------------


def test_head_is_normalised_mean_of_normalised_template_embeddings(tiny):
    base = C.load_base(str(tiny.base))
    templates = ["a photo of a {c}.", "the {c} texture."]
    head = build_head(base.clip, base.tokenizer, ["red", "blue"], templates)
    assert head.weight.shape == (2, base.clip.config.projection_dim)
    torch.testing.assert_close(head.weight.norm(dim=-1), torch.ones(2))
    # by hand for class "blue"
    with torch.no_grad():
        enc = base.tokenizer([t.format(c="blue") for t in templates], padding=True, return_tensors="pt")
        e = base.clip.get_text_features(**enc).pooler_output
        e = e / e.norm(dim=-1, keepdim=True)
        m = e.mean(0)
        expected = m / m.norm()
    torch.testing.assert_close(head.weight[1], expected)
    assert head.logit_scale == pytest.approx(math.exp(float(base.clip.logit_scale.detach())))
    # logits: scale * normalised projected image features . W
    with torch.no_grad():
        x = torch.randn(3, 3, 32, 32)
        pooled = base.clip.vision_model(pixel_values=x).pooler_output
        z = base.clip.visual_projection(pooled)
        z = z / z.norm(dim=-1, keepdim=True)
        torch.testing.assert_close(head.logits(pooled), head.logit_scale * z @ head.weight.T)


def test_head_save_load(tiny, tmp_path):
    base = C.load_base(str(tiny.base))
    head = build_head(base.clip, base.tokenizer, ["red", "green"], ["a photo of a {c}."])
    save_head(head, tmp_path / "h.safetensors")
    back = load_head(tmp_path / "h.safetensors")
    assert back.class_names == ["red", "green"] and back.templates == ["a photo of a {c}."]
    torch.testing.assert_close(back.weight, head.weight)


def test_known_task_templates_and_class_fixes():
    assert templates_for("tanganke/eurosat")[0] == "a centered satellite photo of {c}."
    assert len(templates_for("tanganke/resisc45")) == 18
    assert len(templates_for("tanganke/dtd")) == 8
    assert templates_for("ufldl-stanford/svhn") == ['a photo of the number: "{c}".']
    assert templates_for("./my-data") == ["a photo of a {c}."]
    assert fix_class_names("tanganke/eurosat", ["SeaLake"]) == ["lake or sea"]
    assert fix_class_names("x/other", ["golden_retriever"]) == ["golden retriever"]


def test_templates_file(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("# comment\na photo of {c}.\nan image of {c}.\n")
    assert load_templates_file(p) == ["a photo of {c}.", "an image of {c}."]
    p.write_text("no placeholder here\n")
    with pytest.raises(InputError, match="without"):
        load_templates_file(p)


# --- data --------------------------------------------------------------------------------------------


def test_dataset_columns_splits_and_validation(tiny):
    train = load_image_data(DatasetSpec(str(tiny.data)), "train")
    assert (train.image_column, train.label_column, train.class_names) == ("image", "label", ["red", "green", "blue"])
    val = load_image_data(DatasetSpec(str(tiny.data)), "validation")
    rest = load_image_data(DatasetSpec(str(tiny.data)), "train-val")
    assert val.num_examples == round(0.1 * train.num_examples)
    assert val.num_examples + rest.num_examples == train.num_examples
    # seeded: the same examples every time
    again = load_image_data(DatasetSpec(str(tiny.data)), "validation")
    assert val.dataset["label"] == again.dataset["label"]


def test_streaming_batches_are_preprocessed_like_the_processor(tiny):
    base = C.load_base(str(tiny.base))
    data = load_image_data(DatasetSpec(str(tiny.data)), "test", streaming=True)
    batches = list(data.loader(base.image_processor, 10))
    assert [len(b["labels"]) for b in batches] == [10, 10, 4]
    first = next(iter(load_image_data(DatasetSpec(str(tiny.data)), "test").dataset))
    expected = base.image_processor(images=[first["image"].convert("RGB")], return_tensors="pt")["pixel_values"][0]
    torch.testing.assert_close(batches[0]["pixel_values"][0], expected)


def test_sharding_splits_the_data_between_processes(tiny):
    data = load_image_data(DatasetSpec(str(tiny.data)), "train")
    s0, s1 = data.shard(0, 2), data.shard(1, 2)
    assert s0.num_examples + s1.num_examples == data.num_examples
    stream = load_image_data(DatasetSpec(str(tiny.data)), "train", streaming=True)
    n0 = sum(1 for _ in stream.shard(0, 2).dataset)
    n1 = sum(1 for _ in stream.shard(1, 2).dataset)
    assert n0 + n1 == data.num_examples and n0 > 0 and n1 > 0


def test_workers_see_every_example_once(tiny):
    base = C.load_base(str(tiny.base))
    data = load_image_data(DatasetSpec(str(tiny.data)), "train")
    labels = torch.cat([b["labels"] for b in data.loader(base.image_processor, 8, num_workers=2)])
    assert sorted(labels.tolist()) == sorted(data.dataset["label"])


def test_dataset_without_image_column(tmp_path):
    from datasets import ClassLabel, Dataset, Features, Value

    d = tmp_path / "text"
    (d / "data").mkdir(parents=True)
    ds = Dataset.from_dict({"text": ["a", "b"], "label": [0, 1]},
                           features=Features({"text": Value("string"), "label": ClassLabel(names=["x", "y"])}))
    ds.to_parquet(str(d / "data" / "train-00000-of-00001.parquet"))
    with pytest.raises(DataError, match="no image column"):
        load_image_data(DatasetSpec(str(d)), "train")
    with pytest.raises(DataError, match="not in dataset"):
        detect_columns(ds.features, image_column="img")


def test_missing_split_and_path(tiny, tmp_path):
    with pytest.raises(DataError, match="no split"):
        load_image_data(DatasetSpec(str(tiny.data)), "validation_matched")
    with pytest.raises(ReferenceNotFoundError):
        load_image_data(DatasetSpec(str(tmp_path / "missing")), "train")


def test_accuracy_is_counted_exactly():
    from hfdistac.metrics import classification_metrics, top1_accuracy

    labels = torch.zeros(200, dtype=torch.long)
    logits = torch.zeros(200, 3)
    logits[:193, 0] = 1.0  # 193 of 200 right
    logits[193:, 1] = 1.0
    # float32's mean would give 96.49999737...; a threshold such as "within 2 points of 98.5" must see 96.5
    assert top1_accuracy(logits, labels) == 96.5
    assert classification_metrics(logits, labels)["accuracy"] == 96.5


def test_a_rebuilt_dataset_directory_is_read_afresh(tmp_path):
    """datasets' own cache keys a carded local directory by its name and card only; ours must see new rows."""
    from tests._fixtures_models import make_image_dataset

    card = ("---\ndataset_info:\n  features:\n  - name: image\n    dtype: image\n  - name: label\n    dtype:\n"
            "      class_label:\n        names:\n          '0': red\n          '1': green\n          '2': blue\n"
            "configs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data/train-*\n"
            "  - split: test\n    path: data/test-*\n---\n")
    seen = []
    for i, (where, n_train, seed) in enumerate([("one", 12, 0), ("two", 20, 1), ("two", 16, 2)]):
        d = tmp_path / where / "colours"  # same directory name and card each time
        make_image_dataset(d, n_train=n_train, n_test=6, seed=seed)
        (d / "README.md").write_text(card)
        if i == 2:  # rebuilt in place: make sure the modification time moves
            for f in (d / "data").iterdir():
                os.utime(f, ns=(f.stat().st_mtime_ns + 10**9, f.stat().st_mtime_ns + 10**9))
        data = load_image_data(DatasetSpec(str(d)), "train")
        assert data.class_names == ["red", "green", "blue"]
        seen.append(data.num_examples)
    assert seen == [12, 20, 16]


@pytest.mark.parametrize("name, n", [("fusionbench-vit-base-patch32-8tasks", 8), ("fusionbench-vit-base-patch32-tall14", 14),
                                     ("fusionbench-vit-base-patch32-tall20", 20)])
def test_shipped_fusionbench_recipes_parse(name, n):
    from pathlib import Path

    from hfdistac.recipe import load_recipe
    from hfdistac.templates_data import GENERIC_TEMPLATES, templates_for

    recipe = load_recipe(Path(__file__).resolve().parents[1] / "examples" / "recipes" / f"{name}.yaml")
    assert len(recipe.tasks) == n and recipe.base == "openai/clip-vit-base-patch32"
    assert len({t.name for t in recipe.tasks}) == n
    for t in recipe.tasks:
        assert t.model == f"tanganke/clip-vit-base-patch32_{t.name}"
        assert t.dataset and t.dataset.count("/") == 1  # a Hub dataset id
        assert templates_for(t.dataset) != GENERIC_TEMPLATES or t.name in ("sun397",)  # each task's own templates
        spec = t.dataset_spec()
        assert spec.reference == t.dataset and (spec.class_names is None or len(spec.class_names) >= 2)


def test_batched_head_equals_the_per_class_loop(tiny):
    """Prompts of all classes in shared batches give the same head as one text-tower call per class."""
    from transformers import AutoTokenizer, CLIPModel

    from hfdistac.heads import build_head

    clip = CLIPModel.from_pretrained(tiny.base).eval()
    tok = AutoTokenizer.from_pretrained(tiny.base)
    names = ["red", "green", "blue", "red square", "the number"]
    templates = ["a photo of a {c}.", "a {c} texture.", "the number {c} circle square"]
    head = build_head(clip, tok, names, templates, batch_size=4)  # batches straddle classes
    rows = []
    with torch.no_grad():
        for name in names:
            enc = tok([t.format(c=name) for t in templates], padding=True, return_tensors="pt")
            out = clip.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
            e = out if isinstance(out, torch.Tensor) else out.pooler_output
            e = e / e.norm(dim=-1, keepdim=True)
            rows.append(e.mean(0) / e.mean(0).norm())
    torch.testing.assert_close(head.weight, torch.stack(rows), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size", [32, 224])
def test_pixel_codec_decodes_to_the_processors_output_bit_for_bit(size):
    from PIL import Image

    from hfdistac.data import PixelCodec
    from hfdistac.tiny import tiny_image_processor

    rng = np.random.default_rng(size)
    images = [Image.fromarray(rng.integers(0, 256, (int(rng.integers(20, 300)), int(rng.integers(20, 300)), 3),
                                           dtype=np.uint8)) for _ in range(5)]
    processor = tiny_image_processor(size)
    codec = PixelCodec(processor)
    encoded = codec.encode(images)
    assert codec.compact and encoded.dtype == torch.uint8
    assert torch.equal(codec.decode(encoded), processor(images=images, return_tensors="pt")["pixel_values"])


def test_nonfinite_check_flags_nan_and_inf_but_not_an_overflowing_sum():
    """The finiteness check sums first; a sum that overflows (finite entries) must not be reported."""
    from hfdistac.tensor_files import nonfinite_tensors

    nan, inf = torch.zeros(5), torch.zeros(4)
    nan[2], inf[0] = float("nan"), float("-inf")
    huge = torch.full((10,), 3e38)  # its float32 sum is inf
    half = torch.full((3,), 60000.0, dtype=torch.float16)  # its float16 sum is inf
    assert nonfinite_tensors([("nan", nan), ("inf", inf), ("huge", huge), ("half", half),
                              ("ok", torch.randn(7))]) == ["nan", "inf"]
