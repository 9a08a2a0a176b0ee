"""Eight image domains, one per task of the example suite, and the base model's pretraining captions.

Each task has its own generator and palette, as the DisTaC paper's eight tasks are eight different datasets:
a task vector's change of confidence then acts on its own images, not on everyone's (issue 29: with one shared
scene generator, label smoothing lowered every task's confidence through one global change of the embedding).

========== ============================================================ =====================================
task       images                                                       classes
========== ============================================================ =====================================
digits     a seven-segment digit, light on dark blue                    0 ... 9
glyphs     an outline shape, dark ink on parchment                      circle, square, ..., saltire (10)
textures   a grey periodic pattern, random period and phase             horizontal, ..., rings (8)
colours    a coloured patch on grey                                     red, green, ..., black (10)
counts     one to nine bright squares on black                          one ... nine
terrain    a smooth noise field seen from above, in a class palette     water, forest, ..., swamp (8)
arrows     a white arrow on a green sign                                up, down, ..., downright (8)
positions  a red ball in one cell of a 3 x 3 grid, on white             topleft, ..., centre (9)
========== ============================================================ =====================================

A class is named ``"<word> <task>"`` (``"3 digits"``, ``"water terrain"``), the words the base model's text
tower learned from its captions. The base is pretrained contrastively on a captioned mixture of all eight
domains drawn with a *shift* (:func:`shift`: colour jitter, a blur, noise), and its captions confuse sibling
classes: nine in ten images of an odd class are captioned with the class before it (``"3 digits"`` as
``"2 digits"``), as web captions rarely draw the fine distinctions a downstream task needs. Zero-shot is then
systematically wrong on those classes, well below fine-tuned (real CLIP on SVHN or EuroSAT: 30-50 %), and
fine-tuning must overrule those errors; with label smoothing it does so with a less confident model, which is
the paper's low-confidence situation (at the base's logit scale, :class:`~.config.SuitePlan`, zero-shot is less
sure than such a model, as the build's check (e) asks).

Pure numpy; deterministic given a ``numpy.random.Generator``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Task:
    """One task of the suite: its own image domain and classes.

    Attributes:
        name: Task name (also the dataset and model directory name, and the last word of every class name).
        words: The class words, in label order (class ``i`` is named ``f"{words[i]} {name}"``).
        description: One line for dataset cards.
    """

    name: str
    words: tuple[str, ...]
    description: str

    @property
    def classes(self) -> tuple[str, ...]:
        """Readable class names, in label order (the datasets' ``ClassLabel`` names)."""
        return tuple(f"{w} {self.name}" for w in self.words)


TASKS: tuple[Task, ...] = (
    Task("digits", tuple(str(d) for d in range(10)), "a seven-segment digit, light on dark blue"),
    Task("glyphs", ("circle", "square", "triangle", "cross", "ring", "diamond", "hbar", "vbar", "frame", "saltire"),
         "an outline shape drawn in dark ink on parchment"),
    Task("textures", ("horizontal", "vertical", "diagonal", "checker", "dotted", "antidiagonal", "grid", "rings"),
         "a grey periodic pattern of random period and phase"),
    Task("colours", ("red", "green", "blue", "yellow", "purple", "orange", "cyan", "pink", "brown", "black"),
         "a coloured patch on grey"),
    Task("counts", ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine"),
         "how many bright squares are on black"),
    Task("terrain", ("water", "forest", "desert", "snow", "grass", "rock", "lava", "swamp"),
         "a smooth noise field seen from above, in a palette"),
    Task("arrows", ("up", "down", "left", "right", "upleft", "upright", "downleft", "downright"),
         "the direction of a white arrow on a green sign"),
    Task("positions", ("topleft", "topright", "bottomleft", "bottomright", "top", "bottom", "midleft", "midright",
                       "centre"), "the cell of a 3 x 3 grid a red ball is in, on white"),
)
TASK_NAMES: tuple[str, ...] = tuple(t.name for t in TASKS)
TASK_BY_NAME = {t.name: t for t in TASKS}

_SEGMENTS = {0: "abcdef", 1: "bc", 2: "abged", 3: "abgcd", 4: "fgbc", 5: "afgcd", 6: "afgedc", 7: "abc",
             8: "abcdefg", 9: "abfgcd"}
_PALETTE = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220), "yellow": (230, 210, 40),
            "purple": (150, 50, 190), "orange": (240, 140, 30), "cyan": (40, 200, 210), "pink": (240, 130, 190),
            "brown": (120, 70, 30), "black": (15, 15, 15)}
_TERRAIN = ((30, 80, 170), (30, 110, 40), (200, 170, 110), (235, 240, 245), (110, 190, 70), (120, 120, 125),
            (200, 60, 20), (80, 90, 40))
_ARROWS = ((-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1))  # (dy, dx), in class order
_CELLS = ((0, 0), (0, 2), (2, 0), (2, 2), (0, 1), (2, 1), (1, 0), (1, 2), (1, 1))  # positions' (row, column)


def _digit(img: np.ndarray, label: int, rng: np.random.Generator, yy, xx) -> None:
    img[:] = (20, 30, 70)
    x0, y0, w, h, t = rng.integers(7, 13), rng.integers(4, 8), rng.integers(9, 13), rng.integers(18, 23), 2
    seg = {"a": (y0, y0 + t, x0, x0 + w), "g": (y0 + h // 2, y0 + h // 2 + t, x0, x0 + w),
           "d": (y0 + h - t, y0 + h, x0, x0 + w), "f": (y0, y0 + h // 2, x0, x0 + t),
           "b": (y0, y0 + h // 2, x0 + w - t, x0 + w), "e": (y0 + h // 2, y0 + h, x0, x0 + t),
           "c": (y0 + h // 2, y0 + h, x0 + w - t, x0 + w)}
    for s in _SEGMENTS[label]:
        a, b, c, d = seg[s]
        img[a:b, c:d] = (235, 235, 220)


def _glyph(img: np.ndarray, label: int, rng: np.random.Generator, yy, xx) -> None:
    img[:] = (225, 210, 170)
    cy, cx, r = rng.uniform(12, 20), rng.uniform(12, 20), rng.uniform(6, 9)
    dy, dx = yy - cy, xx - cx
    dist = np.sqrt(dy ** 2 + dx ** 2)
    if label == 0:  # circle
        mask = dist < r
    elif label == 1:  # square
        mask = (np.abs(dy) < r) & (np.abs(dx) < r)
    elif label == 2:  # triangle, apex up
        mask = (dy < r * 0.8) & (dy > -r) & (np.abs(dx) < (dy + r) * 0.6)
    elif label == 3:  # cross
        mask = ((np.abs(dy) < 2) & (np.abs(dx) < r)) | ((np.abs(dx) < 2) & (np.abs(dy) < r))
    elif label == 4:  # ring
        mask = (dist < r) & (dist > r - 3)
    elif label == 5:  # diamond
        mask = (np.abs(dy) + np.abs(dx)) < r
    elif label == 6:  # horizontal bar
        mask = (np.abs(dy) < 2.5) & (np.abs(dx) < r)
    elif label == 7:  # vertical bar
        mask = (np.abs(dx) < 2.5) & (np.abs(dy) < r)
    elif label == 8:  # square frame
        cheb = np.maximum(np.abs(dy), np.abs(dx))
        mask = (cheb < r) & (cheb > r - 3)
    else:  # saltire (a diagonal cross)
        mask = ((np.abs(dy - dx) < 2) | (np.abs(dy + dx) < 2)) & (np.abs(dy) < r)
    img[mask] = (40, 30, 20)


def _texture(img: np.ndarray, label: int, rng: np.random.Generator, yy, xx) -> None:
    period, phase = rng.uniform(4, 7), rng.uniform(0, 6.3)
    k = 2 * np.pi / period
    if label == 0:  # horizontal stripes
        wave = np.sin(yy * k + phase)
    elif label == 1:  # vertical stripes
        wave = np.sin(xx * k + phase)
    elif label == 2:  # diagonal stripes
        wave = np.sin((xx + yy) * k / np.sqrt(2) + phase)
    elif label == 3:  # checker
        wave = np.sign(np.sin(xx * k + phase)) * np.sign(np.sin(yy * k + phase))
    elif label == 4:  # dots
        wave = (np.sin(xx * k + phase) * np.sin(yy * k + phase) > 0.6) * 2 - 1.0
    elif label == 5:  # antidiagonal stripes
        wave = np.sin((xx - yy) * k / np.sqrt(2) + phase)
    elif label == 6:  # grid
        wave = np.maximum(np.sin(xx * k + phase), np.sin(yy * k + phase)) * 2 - 1
    else:  # concentric rings
        wave = np.sin(np.sqrt((yy - img.shape[0] / 2) ** 2 + (xx - img.shape[1] / 2) ** 2) * k + phase)
    img[:] = (128 + 80 * wave)[..., None]


def _colour(img: np.ndarray, label: int, rng: np.random.Generator, yy, xx) -> None:
    img[:] = rng.uniform(90, 150)
    y0, x0, side = rng.integers(2, 12), rng.integers(2, 12), rng.integers(14, 20)
    img[y0:y0 + side, x0:x0 + side] = np.array(_PALETTE[TASKS[3].words[label]]) + rng.normal(0, 12, 3)


def _count(img: np.ndarray, label: int, rng: np.random.Generator, yy, xx) -> None:
    img[:] = 10
    for c in rng.permutation(9)[:label + 1]:  # distinct cells of a 3 x 3 grid
        y, x = 2 + (c // 3) * 10 + rng.integers(0, 3), 2 + (c % 3) * 10 + rng.integers(0, 3)
        img[y:y + 5, x:x + 5] = (250, 250, 250)


def _terrain(img: np.ndarray, label: int, rng: np.random.Generator, yy, xx) -> None:
    s = img.shape[0]
    field = rng.normal(0, 1, (s // 4, s // 4)).repeat(4, 0).repeat(4, 1)
    field = (field + np.roll(field, 2, 0) + np.roll(field, 2, 1)) / 3
    img[:] = np.array(_TERRAIN[label]) + 30 * field[..., None]


def _arrow(img: np.ndarray, label: int, rng: np.random.Generator, yy, xx) -> None:
    img[:] = (30, 120, 60)
    cy, cx = rng.uniform(13, 19), rng.uniform(13, 19)
    dy, dx = yy - cy, xx - cx
    uy, ux = _ARROWS[label]
    u = (uy * dy + ux * dx) / np.hypot(uy, ux)  # along the arrow
    v = (ux * dy - uy * dx) / np.hypot(uy, ux)  # across it
    shaft = (u > -9) & (u < 2) & (np.abs(v) < 2)
    head = (u >= 2) & (u < 9) & (np.abs(v) < (9 - u) * 0.9)
    img[shaft | head] = (245, 245, 245)


def _position(img: np.ndarray, label: int, rng: np.random.Generator, yy, xx) -> None:
    img[:] = (240, 240, 240)
    cy, cx = (rng.uniform(3.5, 7) + 10.7 * c for c in _CELLS[label])
    img[(yy - cy) ** 2 + (xx - cx) ** 2 < rng.uniform(12, 25)] = (210, 30, 30)


_RENDER = {"digits": _digit, "glyphs": _glyph, "textures": _texture, "colours": _colour, "counts": _count,
           "terrain": _terrain, "arrows": _arrow, "positions": _position}
IMAGE_SIZE = 32  # the generators draw at 32 x 32 pixels


def render(task: str, label: int, rng: np.random.Generator) -> np.ndarray:
    """One ``[32, 32, 3]`` uint8 image of class ``label`` of ``task``; the nuisances (placement, size, period,
    phase, noise) are drawn from ``rng``."""
    if task not in _RENDER:
        raise ValueError(f"unknown task {task!r}; the suite's tasks are {', '.join(TASK_NAMES)}")
    n = len(TASK_BY_NAME[task].words)
    if not 0 <= int(label) < n:
        raise ValueError(f"label {label!r} out of range for {task!r} ({n} classes)")
    yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32)
    img = np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3), np.float32)
    _RENDER[task](img, int(label), rng, yy, xx)
    img += rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def shift(img: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """The pretraining domain: per-channel colour jitter and offset, a 3-pixel blur with probability
    ``strength``, and pixel noise; ``strength`` 0 returns the image unchanged."""
    x = img.astype(np.float32)
    x = x * rng.uniform(1 - 0.4 * strength, 1 + 0.4 * strength, 3) + rng.normal(0, 40 * strength, 3)
    x = (x + np.roll(x, 1, 0) + np.roll(x, 1, 1)) / 3 if rng.random() < strength else x
    x += rng.normal(0, 25 * strength, x.shape)
    return np.clip(x, 0, 255).astype(np.uint8)


def sample(task: str, n: int, rng: np.random.Generator, pretrain_shift: float | None = None
           ) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images of ``task`` with uniformly drawn labels: ``([n, 32, 32, 3]`` uint8, ``[n]`` int64).

    With ``pretrain_shift`` the images come from the shifted pretraining domain (:func:`shift`).
    """
    labels = rng.integers(0, len(TASK_BY_NAME[task].words), n).astype(np.int64)
    images = [render(task, int(y), rng) for y in labels]
    if pretrain_shift is not None:
        images = [shift(im, rng, pretrain_shift) for im in images]
    if not images:
        return np.zeros((0, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8), labels
    return np.stack(images), labels


def captions(task: str, labels: np.ndarray, rng: np.random.Generator, sibling_probability: float,
             template: str) -> list[str]:
    """Pretraining captions of ``task``'s images: ``template`` filled with the class name, where an odd class
    is named as the class before it with probability ``sibling_probability`` (the web's coarse captions)."""
    t = TASK_BY_NAME[task]
    sibling = rng.random(len(labels)) < sibling_probability
    return [template.format(c=t.classes[int(y) - (int(y) % 2) if s else int(y)])
            for y, s in zip(labels, sibling, strict=True)]


def vocabulary() -> list[str]:
    """Every word the class names and the generic template use (for the tokenizer)."""
    return ["a", "photo", "of", *(c for t in TASKS for c in t.classes)]
