"""Prompt templates and class-name fixes for known tasks (data, kept in one place).

Templates are the standard CLIP / task-vectors ones (METHOD.md §0). A task is matched by the last path
component of its dataset reference, lower-cased, with ``_``/``-`` ignored (``tanganke/stanford_cars`` →
``stanfordcars``). Unknown datasets use :data:`GENERIC_TEMPLATES`; ``--templates FILE`` overrides both.
"""

from __future__ import annotations

GENERIC_TEMPLATES: list[str] = ["a photo of a {c}."]

_DIGITS = ['a photo of the number: "{c}".']
_CIFAR = [f"a {kind}photo of {article}{size} {{c}}." for article in ("a", "the") for kind, size in (
    ("", ""), ("blurry ", ""), ("black and white ", ""), ("low contrast ", ""), ("high contrast ", ""), ("bad ", ""),
    ("good ", ""), ("", " small"), ("", " big"))]
_FER = ["a photo of a {c} looking face.", "a photo of a face showing the emotion: {c}.", "a photo of a face looking {c}.",
        "a face that looks {c}.", "they look {c}.", "look at how {c} they are."]

TASK_TEMPLATES: dict[str, list[str]] = {
    "mnist": _DIGITS,
    "svhn": _DIGITS,
    "eurosat": [
        "a centered satellite photo of {c}.",
        "a centered satellite photo of a {c}.",
        "a centered satellite photo of the {c}.",
    ],
    "gtsrb": [
        'a zoomed in photo of a "{c}" traffic sign.',
        'a centered photo of a "{c}" traffic sign.',
        'a close up photo of a "{c}" traffic sign.',
    ],
    "dtd": [
        "a photo of a {c} texture.",
        "a photo of a {c} pattern.",
        "a photo of a {c} thing.",
        "a photo of a {c} object.",
        "a photo of the {c} texture.",
        "a photo of the {c} pattern.",
        "a photo of the {c} thing.",
        "a photo of the {c} object.",
    ],
    "resisc45": [
        "satellite imagery of {c}.",
        "aerial imagery of {c}.",
        "satellite photo of {c}.",
        "aerial photo of {c}.",
        "satellite view of {c}.",
        "aerial view of {c}.",
        "satellite imagery of a {c}.",
        "aerial imagery of a {c}.",
        "satellite photo of a {c}.",
        "aerial photo of a {c}.",
        "satellite view of a {c}.",
        "aerial view of a {c}.",
        "satellite imagery of the {c}.",
        "aerial imagery of the {c}.",
        "satellite photo of the {c}.",
        "aerial photo of the {c}.",
        "satellite view of the {c}.",
        "aerial view of the {c}.",
    ],
    "sun397": ["a photo of a {c}.", "a photo of the {c}."],
    "stanfordcars": [
        "a photo of a {c}.",
        "a photo of the {c}.",
        "a photo of my {c}.",
        "i love my {c}!",
        "a photo of my dirty {c}.",
        "a photo of my clean {c}.",
        "a photo of my new {c}.",
        "a photo of my old {c}.",
    ],
    # The twelve further tasks of the TALL-14 / TALL-20 benchmarks (Wang et al., arXiv 2405.07813).
    "cifar10": _CIFAR,
    "cifar100": _CIFAR,
    "stl10": ["a photo of a {c}.", "a photo of the {c}."],
    "food101": ["a photo of {c}, a type of food."],
    "oxfordflowers102": ["a photo of a {c}, a type of flower."],
    "oxfordiiitpet": ["a photo of a {c}, a type of pet."],
    "fer2013": _FER,
    "wdsfer2013": _FER,
    "patchcamelyon": ["this is a photo of {c}"],
    "pcam": ["this is a photo of {c}"],
    "renderedsst2": ["a {c} review of a movie."],
    "emnistletters": ['a photo of the digit character: "{c}".'],
    "fashionmnist": ["a photo of a {c}.", "a photo of the {c}."],
    "kmnist": ["a photo of the character {c}."],
}

# Readable class names for datasets whose ClassLabel names are codes or terse.
CLASSNAME_FIXES: dict[str, dict[str, str]] = {
    "eurosat": {
        "AnnualCrop": "annual crop land",
        "Forest": "forest",
        "HerbaceousVegetation": "brushland or shrubland",
        "Highway": "highway or road",
        "Industrial": "industrial buildings or commercial buildings",
        "Pasture": "pasture land",
        "PermanentCrop": "permanent crop land",
        "Residential": "residential buildings or homes or apartments",
        "River": "river",
        "SeaLake": "lake or sea",
    },
}

# GTSRB's 43 classes in label order (the Hub dataset names them by index).
GTSRB_CLASSNAMES: list[str] = [
    "red and white circle 20 kph speed limit", "red and white circle 30 kph speed limit",
    "red and white circle 50 kph speed limit", "red and white circle 60 kph speed limit",
    "red and white circle 70 kph speed limit", "red and white circle 80 kph speed limit",
    "end / de-restriction of 80 kph speed limit", "red and white circle 100 kph speed limit",
    "red and white circle 120 kph speed limit", "red and white circle red car and black car no passing",
    "red and white circle red truck and black car no passing", "red and white triangle road intersection warning",
    "white and yellow diamond priority road", "red and white upside down triangle yield right-of-way",
    "stop", "empty red and white circle", "red and white circle no truck entry",
    "red circle with white horizonal stripe no entry", "red and white triangle with exclamation mark warning",
    "red and white triangle with black left curve approaching warning",
    "red and white triangle with black right curve approaching warning",
    "red and white triangle with black double curve approaching warning",
    "red and white triangle rough / bumpy road warning", "red and white triangle car skidding / slipping warning",
    "red and white triangle with merging / narrow lanes warning",
    "red and white triangle with person digging / construction / road work warning",
    "red and white triangle with traffic light approaching warning",
    "red and white triangle with person walking warning", "red and white triangle with child and person walking warning",
    "red and white triangle with bicyle warning", "red and white triangle with snowflake / ice warning",
    "red and white triangle with deer warning", "white circle with gray strike bar no speed limit",
    "blue circle with white right turn arrow mandatory", "blue circle with white left turn arrow mandatory",
    "blue circle with white forward arrow mandatory", "blue circle with white forward or right turn arrow mandatory",
    "blue circle with white forward or left turn arrow mandatory", "blue circle with white keep right arrow mandatory",
    "blue circle with white keep left arrow mandatory", "blue circle with white arrows indicating a traffic circle",
    "white circle with gray strike bar indicating no passing for cars has ended",
    "white circle with gray strike bar indicating no passing for trucks has ended",
]


def task_key(dataset_ref: str) -> str:
    """Normalise a dataset reference to the key used in :data:`TASK_TEMPLATES`."""
    name = dataset_ref.rstrip("/").split("@")[0].split("/")[-1].lower()
    return name.replace("_", "").replace("-", "")


def templates_for(dataset_ref: str) -> list[str]:
    """The standard templates of a known task, else the generic one."""
    return list(TASK_TEMPLATES.get(task_key(dataset_ref), GENERIC_TEMPLATES))


#: Tasks whose class names keep their underscores: FusionBench's heads for them do (``fusion_bench.tasks.
#: clip_classification``: cifar100's 9 names such as ``aquarium_fish``, oxford-iiit-pet's 19 such as
#: ``american_bulldog``), and hfdistac's heads for the shipped FusionBench recipes equal FusionBench's.
KEEP_UNDERSCORES = frozenset({"cifar100", "oxfordiiitpet"})


def fix_class_names(dataset_ref: str, names: list[str]) -> list[str]:
    """Readable class names for known tasks (GTSRB's, EuroSAT's); underscores become spaces, except for the
    tasks of :data:`KEEP_UNDERSCORES`, whose names stay as FusionBench writes them."""
    key = task_key(dataset_ref)
    if key == "gtsrb" and len(names) == len(GTSRB_CLASSNAMES):
        return list(GTSRB_CLASSNAMES)
    fixes = CLASSNAME_FIXES.get(key, {})
    if key in KEEP_UNDERSCORES:
        return [fixes.get(n, n) for n in names]
    return [fixes.get(n, n.replace("_", " ")) for n in names]
