"""Recipe files: a base model plus tasks (model, optional normaliser, dataset, splits).

Format (YAML, ``format: hfdistac.recipe.v1``; relative paths resolve against the recipe file's folder)::

    format: hfdistac.recipe.v1
    name: norm-mismatch
    description: SVHN's model replaced by a 10x-learning-rate variant
    base: openai/clip-vit-base-patch32          # Hub id[@rev] or path
    tasks:
      - name: svhn
        model: tanganke/clip-vit-base-patch32_svhn     # original, conditioned output dir, or Hub id
        normalizer: tanganke/clip-vit-base-patch32_svhn  # optional: original fine-tuned model
        dataset: ufldl-stanford/svhn
        dataset_config: cropped_digits              # optional
        train_split: train                          # optional, default train
        val_split: validation                       # optional, default validation: the stored one, else
                                                    #   the seeded 10 % of train (validation-from-train:
                                                    #   always that); or any stored split (hfdistac.data)
        test_split: test                            # optional, default test
        templates: [...]                            # optional prompt templates (each with {c})
        image_column: img                           # optional: default, the first Image feature
        label_column: label                         # optional: default, the first ClassLabel feature
        class_names: [angry, disgusted, ...]        # optional: for labels without a ClassLabel

Every value is type-checked: a wrong type names the key, the value and what is expected.

``inspect``, ``merge`` and ``demo`` read recipes; the example suite writes them.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import InputError, ReferenceNotFoundError

RECIPE_FORMAT = "hfdistac.recipe.v1"
_TASK_KEYS = {"name", "model", "normalizer", "dataset", "dataset_config", "train_split", "val_split", "test_split",
              "templates", "image_column", "label_column", "class_names"}
_STRING_KEYS = {"name": "a task name", "model": "a Hub id or path", "normalizer": "a Hub id or path",
                "dataset": "a Hub dataset id or path", "dataset_config": "a configuration name",
                "train_split": "a split name", "val_split": "a split name", "test_split": "a split name",
                "image_column": "a column name", "label_column": "a column name"}
_TOP_KEYS = {"format", "name", "description", "base", "tasks"}


@dataclass
class RecipeTask:
    """One task of a recipe (paths already resolved to absolute form)."""

    name: str
    model: str
    dataset: str | None = None
    normalizer: str | None = None
    dataset_config: str | None = None
    train_split: str = "train"
    test_split: str = "test"
    val_split: str = "validation"
    templates: list[str] | None = None
    image_column: str | None = None
    label_column: str | None = None
    class_names: list[str] | None = None

    def dataset_spec(self):
        """The :class:`~hfdistac.data.DatasetSpec` of the task's dataset (``None`` without one)."""
        from .data import DatasetSpec

        if not self.dataset:
            return None
        return DatasetSpec(self.dataset, self.dataset_config, self.image_column, self.label_column,
                           tuple(self.class_names) if self.class_names else None)


@dataclass
class Recipe:
    """A merge/inspect recipe."""

    base: str
    tasks: list[RecipeTask]
    name: str = "recipe"
    description: str = ""
    path: str | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The resolved recipe, as saved beside outputs."""
        d = {"format": RECIPE_FORMAT, "name": self.name, "description": self.description, "base": self.base,
             "tasks": [{k: v for k, v in asdict(t).items() if v is not None} for t in self.tasks]}
        return d


def _resolve(value: str | None, folder: Path) -> str | None:
    """Resolve a relative local path against the recipe's folder; Hub ids pass through."""
    if value is None:
        return None
    if value.startswith(("./", "../", "/", "~")) or (folder / value).exists():
        return str((folder / Path(value).expanduser()).resolve())
    return value


def _check_task_types(path: Path, i: int, task: dict) -> None:
    """Every value of a recipe task has the type it must have (strings; templates a list of strings with {c})."""
    where = f"recipe {str(path)!r}: task #{i + 1}"
    for key, expected in _STRING_KEYS.items():
        value = task.get(key)
        if value is not None and not isinstance(value, str) or (key == "model" and not value):
            raise InputError(f"{where} key '{key}' must be a string ({expected}), got {value!r}",
                             "quote the value in the YAML if it looks like a number")
    templates = task.get("templates")
    if templates is not None:
        if not isinstance(templates, list) or not templates or not all(isinstance(x, str) for x in templates):
            raise InputError(f"{where} key 'templates' must be a list of strings, got {templates!r}",
                             "e.g. templates: ['a photo of a {c}.']")
        missing = [x for x in templates if "{c}" not in x]
        if missing:
            raise InputError(f"{where}: every template must contain {{c}} (where the class name goes), got "
                             f"{missing[0]!r}", "e.g. templates: ['a photo of a {c}.']")
    names = task.get("class_names")
    if names is not None and (not isinstance(names, list) or not names or not all(isinstance(x, str) for x in names)):
        raise InputError(f"{where} key 'class_names' must be a list of strings, got {names!r}",
                         "e.g. class_names: [cat, dog], in label order")


#: What a name from a recipe (a task's, the recipe's) may be: it becomes a file or folder name (scratch files,
#: output folders, repo names), so never a path, never hidden, at most 96 characters.
#: Most tasks a recipe may have (TALL-20 has 20; each task's vector and evaluation data take disk and memory).
MAX_TASKS = 256

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,95}")


def check_name(name: str, what: str) -> str:
    """``name`` when it is a plain name (:data:`_NAME`), else an :class:`InputError` saying what is allowed."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        shown = repr(name) if len(repr(name)) <= 80 else repr(name)[:77] + "..."
        raise InputError(f"{what} {shown} is not a plain name",
                         "use letters, digits and . _ + - (at most 96, starting with a letter or digit; no '/' or "
                         "'..'): names become file and folder names")
    return name


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe file.

    Raises:
        ReferenceNotFoundError: the file does not exist.
        InputError: malformed YAML, unknown keys, missing fields, duplicate task names.
    """

    p = Path(path).expanduser()
    if not p.is_file():
        raise ReferenceNotFoundError(f"recipe file {str(path)!r} does not exist",
                                     "build the example suite (`hfdistac example-suite DIR`) for sample recipes")
    from .yaml_files import load_yaml_file

    raw = load_yaml_file(p, "recipe")
    if not isinstance(raw, dict):
        raise InputError(f"recipe {str(p)!r} must be a mapping with 'base' and 'tasks'")
    fmt = raw.get("format", RECIPE_FORMAT)
    if fmt != RECIPE_FORMAT:
        raise InputError(f"recipe {str(p)!r} has format {fmt!r}; this hfdistac reads {RECIPE_FORMAT!r}")
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise InputError(f"recipe {str(p)!r} has unknown keys {sorted(unknown)}; allowed: {sorted(_TOP_KEYS)}")
    if not raw.get("base"):
        raise InputError(f"recipe {str(p)!r} has no 'base' model")
    for key in ("base", "name", "description"):
        if key in raw and not isinstance(raw[key], str):
            raise InputError(f"recipe {str(p)!r}: '{key}' must be a string, got {raw[key]!r}")
    tasks_raw = raw.get("tasks")
    if not isinstance(tasks_raw, list) or not tasks_raw:
        raise InputError(f"recipe {str(p)!r} needs a non-empty 'tasks' list")
    if len(tasks_raw) > MAX_TASKS:  # each task holds a task vector on disk and a head and splits in memory
        raise InputError(f"recipe {str(p)!r} has {len(tasks_raw):,} tasks; hfdistac merges at most {MAX_TASKS}",
                         "split the recipe (the largest benchmarks, TALL-20, have 20 tasks)")
    folder = p.parent.resolve()
    tasks: list[RecipeTask] = []
    for i, t in enumerate(tasks_raw):
        if not isinstance(t, dict) or "model" not in t:
            raise InputError(f"recipe {str(p)!r}: task #{i + 1} needs at least a 'model'")
        bad = set(t) - _TASK_KEYS
        if bad:
            raise InputError(f"recipe {str(p)!r}: task #{i + 1} has unknown keys {sorted(bad)}; "
                             f"allowed: {sorted(_TASK_KEYS)}")
        _check_task_types(p, i, t)
        name = check_name(t.get("name") or Path(t["model"]).name, f"recipe {str(p)!r}: task #{i + 1}'s name")
        tasks.append(RecipeTask(
            name=name, model=_resolve(t["model"], folder),
            dataset=_resolve(t.get("dataset"), folder), normalizer=_resolve(t.get("normalizer"), folder),
            dataset_config=t.get("dataset_config"), train_split=t.get("train_split", "train"),
            test_split=t.get("test_split", "test"), val_split=t.get("val_split", "validation"),
            templates=t.get("templates"),
            image_column=t.get("image_column"), label_column=t.get("label_column"),
            class_names=t.get("class_names")))
    names = [t.name for t in tasks]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError(f"recipe {str(p)!r} has duplicate task names {dup}", "give each task a unique 'name'")
    return Recipe(base=_resolve(str(raw["base"]), folder), tasks=tasks,
                  name=check_name(str(raw.get("name", p.stem)), f"recipe {str(p)!r}: its name"),
                  description=str(raw.get("description", "")), path=str(p))
