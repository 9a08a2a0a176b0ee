"""The shipped recipes (examples/recipes) run as FusionBench runs them: every task's data spec checked offline
against the recorded layout of its dataset (tests/data/shipped_datasets.json, with where it comes from), the
split rules (a stored split by its name, ``validation`` stored or derived, ``validation-from-train`` derived),
boolean labels, and class names that equal FusionBench's heads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RECORDED = json.loads((REPO / "tests" / "data" / "shipped_datasets.json").read_text())
RECIPES = sorted((REPO / "examples" / "recipes").glob("*.yaml"))
STORED_OR_DERIVED = ("validation", "validation-from-train", "train-val")


def _features(layout: dict):
    import datasets

    kinds = {"Image": lambda: datasets.Image(), "ClassLabel": lambda: datasets.ClassLabel(names=["a", "b", "c"])}
    return datasets.Features({k: kinds[v]() if v in kinds else datasets.Value(v) for k, v in layout.items()})


@pytest.mark.parametrize("recipe_path", RECIPES, ids=[p.stem for p in RECIPES])
def test_every_task_of_a_shipped_recipe_reads_its_dataset(recipe_path):
    from hfdistac.data import class_names, detect_columns
    from hfdistac.recipe import load_recipe

    recipe = load_recipe(recipe_path)
    for t in recipe.tasks:
        layout = RECORDED[t.dataset]
        assert t.dataset_config == layout.get("config"), t.name
        features = _features(layout["features"])
        image, label = detect_columns(features, t.image_column, t.label_column)
        assert image is not None and label is not None, (t.name, "no label column")
        names = t.class_names or class_names(features, label)
        assert names, (t.name, "the classes are unknown: the recipe must give class_names")
        if features[label].dtype == "bool":
            assert len(names) == 2, t.name
        splits = layout["splits"]
        assert t.test_split in splits, (t.name, t.test_split, "is not a stored split")
        assert t.val_split in splits or (t.val_split in STORED_OR_DERIVED and "train" in splits), t.name
        assert t.val_split != t.test_split, (t.name, "alpha would be chosen on the test images")
        assert t.train_split in splits


def test_food101_is_scored_on_its_stored_validation_split_as_in_fusionbench():
    from hfdistac.recipe import load_recipe

    (food,) = [t for t in load_recipe(REPO / "examples/recipes/fusionbench-vit-base-patch32-tall20.yaml").tasks
               if t.dataset == "ethz/food101"]
    assert (food.test_split, food.val_split) == ("validation", "validation-from-train")


# FusionBench 0.2.33's heads (fusion_bench.tasks.clip_classification): the class names with underscores.
FUSIONBENCH_UNDERSCORED = {
    "tanganke/cifar100": ["aquarium_fish", "lawn_mower", "maple_tree", "oak_tree", "palm_tree", "pickup_truck",
                          "pine_tree", "sweet_pepper", "willow_tree"],
    "timm/oxford-iiit-pet": ["american_bulldog", "american_pit_bull_terrier", "basset_hound", "british_shorthair",
                             "egyptian_mau", "english_cocker_spaniel", "english_setter", "german_shorthaired",
                             "great_pyrenees", "japanese_chin", "maine_coon", "miniature_pinscher", "russian_blue",
                             "saint_bernard", "scottish_terrier", "shiba_inu", "staffordshire_bull_terrier",
                             "wheaten_terrier", "yorkshire_terrier"],
}


def test_class_names_keep_fusionbenchs_underscores_where_its_heads_do():
    from hfdistac.templates_data import fix_class_names

    for dataset, names in FUSIONBENCH_UNDERSCORED.items():
        assert len(names) == {"tanganke/cifar100": 9, "timm/oxford-iiit-pet": 19}[dataset]
        assert fix_class_names(dataset, names + ["plain"]) == names + ["plain"]
    assert fix_class_names("tanganke/dtd", ["banded", "polka_dotted"]) == ["banded", "polka dotted"]  # the rule else


def _dataset(path: Path, splits: dict[str, list], bool_labels: bool = False) -> Path:
    import numpy as np
    from datasets import ClassLabel, Dataset, Features, Image, Value
    from PIL import Image as PILImage

    rng = np.random.default_rng(0)
    feats = Features({"image": Image(), "label": Value("bool") if bool_labels else ClassLabel(names=["x", "y"])})
    (path / "data").mkdir(parents=True)
    for split, labels in splits.items():
        images = [PILImage.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in labels]
        Dataset.from_dict({"image": images, "label": labels}, features=feats).to_parquet(
            str(path / "data" / f"{split}-00000-of-00001.parquet"))
    return path


def test_split_rules_stored_validation_derived_validation_and_boolean_labels(tmp_path):
    """``validation``: the stored split when there is one, else the seeded 10 % of train; ``validation-from-train``:
    always derived; a boolean label column is read as classes 0/1 (the recipe's class names)."""
    from hfdistac.data import DatasetSpec, load_image_data, load_split, validation_rows

    with_val = _dataset(tmp_path / "with-val", {"train": [0, 1] * 20, "validation": [1, 1, 0], "test": [0, 1]})
    without = _dataset(tmp_path / "without", {"train": [0, 1] * 20, "test": [0, 1]})
    assert load_split(DatasetSpec(str(with_val)), "validation")["label"] == [1, 1, 0]
    derived = load_split(DatasetSpec(str(with_val)), "validation-from-train")
    assert len(derived) == len(validation_rows(40)) == 4
    assert load_split(DatasetSpec(str(without)), "validation")["label"] == derived["label"]
    booleans = _dataset(tmp_path / "bool", {"train": [True, False] * 4, "test": [False, True, True]}, bool_labels=True)
    data = load_image_data(DatasetSpec(str(booleans), class_names=["benign", "tumour"]), "test", streaming=False)
    assert data.label_column == "label" and data.class_names == ["benign", "tumour"]


def test_a_webdataset_stream_without_split_sizes_gets_its_validation_rows(hub_env, tmp_path, caplog):
    """clip-benchmark/wds_fer2013's layout (jpg/cls tar shards, no split sizes): the rows of its derived validation
    split are chosen after counting the stream once, and equal those of a map-style copy."""
    import io
    import tarfile

    import numpy as np
    from PIL import Image as PILImage

    from hfdistac.data import DatasetSpec, load_split, validation_rows

    repo = tmp_path / "wds"
    (repo / "train").mkdir(parents=True)
    rng = np.random.default_rng(0)
    labels = [int(v) for v in rng.integers(0, 7, size=30)]
    with tarfile.open(repo / "train" / "0.tar", "w") as tar:
        for i, lab in enumerate(labels):
            buf = io.BytesIO()
            PILImage.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(buf, format="JPEG")
            for ext, payload in (("jpg", buf.getvalue()), ("cls", str(lab).encode())):
                info = tarfile.TarInfo(f"s{i:04d}.{ext}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    hub_env.server.seed_repo("org/wds-like", repo, repo_type="dataset")
    spec = DatasetSpec("org/wds-like", image_column="jpg", label_column="cls")
    with caplog.at_level("WARNING"):
        rows = list(load_split(spec, "validation-from-train", streaming=True))
    assert "declares no size" in caplog.text  # counted, since nothing declares the split's size
    assert [int(r["cls"]) for r in rows] == [labels[i] for i in validation_rows(30)]
