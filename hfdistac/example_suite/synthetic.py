"""Synthetic scenes shared by every task of the example suite, and their captions.

Every image of every task comes from one scene generator (:func:`render_scene`): a tinted background with a
faint stripe texture, one to three identical objects gathered in one half of the image, a small drawn digit in
the other half and, in two scenes out of three each, a coloured horizontal band and a coloured mark in a
corner. Each task labels a different attribute of the same kind of scene, so the tasks share image
statistics but ask different questions, as the eight vision tasks of the DisTaC paper do.

Attributes (and the readable class names that become the datasets' ``ClassLabel`` names):

========== ===========================================================
task       classes
========== ===========================================================
colour     red, green, blue, yellow (of the objects)
background dark background, grey background, light background
frame      no frame, white frame, black frame
tint       warm tint, cool tint, neutral tint (hue of the background)
size       small, large (objects)
mark       orange mark, cyan mark, unmarked (a small square in a random corner)
band       purple band, lime band, unbanded (a horizontal band at a random height)
ink        pink digit, ivory digit, charcoal digit (the ink of the drawn digit)
========== ===========================================================

The objects' shape, number and position, the digit (0-4), the mark's corner, the band's height and the
background stripes' orientation, contrast and width are nuisance factors. Pretraining scenes come from a
shifted domain (see :func:`render_scene`).

Pure numpy; deterministic given a ``numpy.random.Generator``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Attribute:
    """One attribute of a scene, i.e. one task of the suite.

    Attributes:
        name: Task name (also the dataset and model directory name).
        classes: Readable class names, in label order.
        description: One line for dataset cards.
    """

    name: str
    classes: tuple[str, ...]
    description: str


ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute("colour", ("red", "green", "blue", "yellow"), "the colour of the objects"),
    Attribute("background", ("dark background", "grey background", "light background"),
              "the brightness of the background"),
    Attribute("frame", ("no frame", "white frame", "black frame"), "the frame around the image"),
    Attribute("tint", ("warm tint", "cool tint", "neutral tint"), "the hue of the background"),
    Attribute("size", ("small", "large"), "the size of the objects"),
    Attribute("mark", ("orange mark", "cyan mark", "unmarked"), "a small coloured square in a corner"),
    Attribute("band", ("purple band", "lime band", "unbanded"), "a coloured horizontal band across the image"),
    Attribute("ink", ("pink digit", "ivory digit", "charcoal digit"), "the ink colour of the drawn digit"),
)
# Nuisance factors, not tasks: a width-32 ViT with 8-px patches did not learn shape or the digit in its
# pretraining budget, position / count fine-tuned to only ~55 %, and the stripes' orientation, contrast and
# width to 63-73 % (see the package docstring).
POSITIONS = ("left", "right", "top", "bottom")
SHAPES = ("circle", "square", "triangle", "cross")  # a nuisance factor: too small to learn at 8-px patches
TASK_NAMES: tuple[str, ...] = tuple(a.name for a in ATTRIBUTES)
ATTRIBUTE_BY_NAME = {a.name: a for a in ATTRIBUTES}

_COLOURS = np.array([[215, 40, 40], [40, 190, 60], [50, 80, 225], [225, 205, 40]], dtype=np.float32)
_INKS = np.array([[255, 40, 200], [255, 255, 230], [5, 5, 5]], dtype=np.float32)
_TINTS = np.array([[20, 4, -20], [-20, 4, 20], [0, 0, 0]], dtype=np.float32)
_BACKGROUNDS = np.array([35.0, 110.0, 185.0], dtype=np.float32)
_MARKS = np.array([[255, 140, 0], [0, 200, 220]], dtype=np.float32)
_BANDS = np.array([[150, 40, 220], [170, 240, 60]], dtype=np.float32)
# 3x5 bitmaps of the digits 0-9 (rows top to bottom).
_GLYPHS = {
    0: ["111", "101", "101", "101", "111"],
    1: ["010", "110", "010", "010", "111"],
    2: ["111", "001", "111", "100", "111"],
    3: ["111", "001", "111", "001", "111"],
    4: ["101", "101", "111", "001", "001"],
}
_GLYPH_ARRAYS = {d: np.array([[c == "1" for c in row] for row in rows]) for d, rows in _GLYPHS.items()}


def sample_attributes(rng: np.random.Generator, n: int) -> np.ndarray:
    """Draw ``n`` scenes' attribute labels uniformly; shape ``[n, len(ATTRIBUTES)]`` (int64)."""
    cols = [rng.integers(0, len(a.classes), size=n) for a in ATTRIBUTES]
    return np.stack(cols, axis=1).astype(np.int64)


def _shape_mask(shape: int, radius: float, cy: float, cx: float, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    dy, dx = yy - cy, xx - cx
    if shape == 0:  # circle
        return dy * dy + dx * dx <= radius * radius
    if shape == 1:  # square
        r = radius * 0.85
        return (np.abs(dy) <= r) & (np.abs(dx) <= r)
    if shape == 2:  # triangle, apex up
        return (dy <= radius * 0.9) & (dy >= -radius) & (np.abs(dx) <= (dy + radius) * 0.55)
    # cross
    w = max(radius * 0.35, 0.9)
    return ((np.abs(dy) <= w) & (np.abs(dx) <= radius)) | ((np.abs(dx) <= w) & (np.abs(dy) <= radius))


def _draw_frame(img: np.ndarray, frame: int, width: int, strength: float = 1.0) -> None:
    if frame == 0:
        return
    ink = 250.0 if frame == 1 else 5.0
    for sl in (np.s_[:width, :], np.s_[-width:, :], np.s_[:, :width], np.s_[:, -width:]):
        img[sl] = (1 - strength) * img[sl] + strength * ink


@dataclass(frozen=True)
class Domain:
    """How a domain renders the scenes: the pretraining ("web") domain is clean and saturated; the tasks'
    domain (:data:`TASK_DOMAIN`) washes colours towards the background, compresses brightness, thins the
    frame, band and mark, adds noise and mixes the colour channels.

    Attributes:
        level_gain: Background brightness is ``110 + level_gain * (level - 110)``.
        tint_gain: Scale of the background's tint.
        object_mix / mark_mix / band_mix: Share of the attribute's own colour (the rest is background level).
        mark_px / band_px: Side of the corner mark and height of the band at 32 px.
        frame_width / frame_strength: Frame width in pixels and its opacity.
        noise: Standard deviation of the pixel noise.
        channel_mix: Share of each pixel's colour taken from the next channel (R<-G, G<-B, B<-R): a hue
            rotation that keeps every class apart but moves it away from what pretraining named.
    """

    level_gain: float = 1.0
    tint_gain: float = 1.0
    object_mix: float = 1.0
    mark_mix: float = 1.0
    band_mix: float = 1.0
    mark_px: int = 6
    band_px: int = 6
    frame_width: int = 2
    frame_strength: float = 1.0
    noise: float = 4.0
    channel_mix: float = 0.0


PRETRAIN_DOMAIN = Domain()
#: The tasks' domain of the default build (see the package docstring for how it was chosen).
TASK_DOMAIN = Domain(level_gain=0.45, tint_gain=0.45, object_mix=0.6, mark_mix=0.6, band_mix=0.65, mark_px=5,
                     band_px=4, frame_width=1, frame_strength=0.6, noise=6.0, channel_mix=0.3)


def render_scene(attrs: np.ndarray, rng: np.random.Generator, image_size: int = 32,
                 domain: str | Domain = "task") -> np.ndarray:
    """Render one scene as an ``[H, W, 3]`` uint8 array.

    Args:
        attrs: One row of :func:`sample_attributes` (labels in ``ATTRIBUTES`` order).
        rng: Source of the nuisance randomness (jitter, noise, exact placement).
        image_size: Side of the square image in pixels.
        domain: ``"pretrain"`` (:data:`PRETRAIN_DOMAIN`: clean, saturated scenes, the "web" images the base
            model is pretrained on), ``"task"`` (:data:`TASK_DOMAIN`: the datasets' scenes) or a
            :class:`Domain`. The shift between the two is what keeps zero-shot accuracy well below
            fine-tuned accuracy, as for real CLIP on e.g. SVHN or EuroSAT.
    """
    if isinstance(domain, str):
        if domain not in ("pretrain", "task"):
            raise ValueError(f"domain must be 'pretrain', 'task' or a Domain, got {domain!r}")
        domain = PRETRAIN_DOMAIN if domain == "pretrain" else TASK_DOMAIN
    d = domain
    colour, background, frame, tint, size, mark, band, ink = (int(v) for v in attrs)
    position = int(rng.integers(0, len(POSITIONS)))  # nuisance
    count = int(rng.integers(0, 3))  # nuisance: 1-3 objects
    shape = int(rng.integers(0, len(SHAPES)))  # nuisance
    digit = int(rng.integers(0, len(_GLYPHS)))  # nuisance
    texture, contrast, stripes = (int(v) for v in rng.integers(0, (3, 2, 2)))  # nuisance
    corner = int(rng.integers(0, 4))  # nuisance: where the mark is
    band_top = int(rng.integers(round(3 * image_size / 32), round(24 * image_size / 32)))  # nuisance
    s = image_size
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)

    # background: brightness level + small tint + faint stripes
    level = _BACKGROUNDS[background] + rng.uniform(-12, 12)
    tint_rgb = _TINTS[tint] + rng.uniform(-5, 5, size=3)
    amplitude = (6.0, 14.0)[contrast]
    level = 110.0 + d.level_gain * (level - 110.0)
    tint_rgb = d.tint_gain * tint_rgb
    period = 4.0 if stripes == 0 else 8.0
    phase = rng.uniform(0, period)
    coord = (yy, xx, (xx + yy) / np.sqrt(2.0))[texture]
    stripe_wave = np.where(((coord + phase) % period) < period / 2, 1.0, -1.0)
    img = np.empty((s, s, 3), dtype=np.float32)
    img[:] = level + tint_rgb
    img += (amplitude * stripe_wave)[..., None]
    if band < 2:  # on the background, under the objects and the digit
        band_rgb = d.band_mix * _BANDS[band] + (1 - d.band_mix) * level
        img[band_top:band_top + max(2, round(d.band_px * s / 32))] = band_rgb

    # halves: objects in one, digit in the opposite one
    half = s / 2.0
    regions = {0: (0, s, 0, half), 1: (0, s, half, s), 2: (0, half, 0, s), 3: (half, s, 0, s)}
    opposite = {0: 1, 1: 0, 2: 3, 3: 2}
    y0, y1, x0, x1 = regions[position]
    radius = (3.0 if size == 0 else 6.0) * s / 32.0
    n_obj = count + 1
    vertical = position in (0, 1)  # objects stacked along the long axis of their half
    long0, long1 = (y0, y1) if vertical else (x0, x1)
    short_c = (x0 + x1) / 2.0 if vertical else (y0 + y1) / 2.0
    slot = (long1 - long0) / n_obj
    col = np.clip(_COLOURS[colour] + rng.uniform(-20, 20, size=3), 0, 255)
    col = d.object_mix * col + (1 - d.object_mix) * level
    for i in range(n_obj):
        c_long = long0 + slot * (i + 0.5) + rng.uniform(-1.0, 1.0)
        c_short = short_c + rng.uniform(-2.0, 2.0)
        cy, cx = (c_long, c_short) if vertical else (c_short, c_long)
        img[_shape_mask(shape, radius, cy, cx, yy, xx)] = col

    if mark < 2:  # a square in a random corner (inside the frame)
        side = max(2, round(d.mark_px * s / 32))
        inset = max(2, round(2 * s / 32))
        top = inset if corner < 2 else s - inset - side
        left = inset if corner % 2 == 0 else s - inset - side
        img[top:top + side, left:left + side] = d.mark_mix * _MARKS[mark] + (1 - d.mark_mix) * level

    # the digit glyph (scaled x2 at 32 px), centred in the half without objects
    gy0, gy1, gx0, gx1 = regions[opposite[position]]
    scale = max(1, round(2 * s / 32))
    glyph = np.kron(_GLYPH_ARRAYS[digit], np.ones((scale, scale), dtype=bool))
    gh, gw = glyph.shape
    top = int(round((gy0 + gy1 - gh) / 2 + rng.uniform(-1.5, 1.5)))
    left = int(round((gx0 + gx1 - gw) / 2 + rng.uniform(-1.5, 1.5)))
    top, left = min(max(top, 0), s - gh), min(max(left, 0), s - gw)
    patch = img[top:top + gh, left:left + gw]
    patch[glyph] = _INKS[ink]

    _draw_frame(img, frame, width=d.frame_width, strength=d.frame_strength)
    if d.channel_mix:
        img = (1 - d.channel_mix) * img + d.channel_mix * img[..., [1, 2, 0]]
    img += rng.normal(0.0, d.noise, size=img.shape)
    return np.clip(img, 0, 255).round().astype(np.uint8)


def render_scenes(attrs: np.ndarray, rng: np.random.Generator, image_size: int = 32,
                  domain: str | Domain = "task") -> np.ndarray:
    """Render every row of ``attrs`` (see :func:`render_scene`); returns ``[N, H, W, 3]`` uint8."""
    return np.stack([render_scene(a, rng, image_size, domain) for a in attrs]) if len(attrs) else np.zeros(
        (0, image_size, image_size, 3), dtype=np.uint8)


# How often a pretraining caption names each attribute: often enough for the text tower to separate the
# class names (the frozen heads are useless otherwise: fine-tuning through near-parallel class embeddings
# cannot become confident).
MENTION_PROBABILITY: dict[str, float] = {a.name: 0.7 for a in ATTRIBUTES}


def caption(attrs: np.ndarray, rng: np.random.Generator,
            mention_probability: dict[str, float] | None = None) -> str:
    """A pretraining caption naming a random subset of the scene's attributes, in random order.

    Each attribute is named with its probability in ``mention_probability`` (default
    :data:`MENTION_PROBABILITY`), at least one always. Captions use the same words as the class names and the
    same frame as the generic zero-shot template (``"a photo of a {c}."``), as web captions do for real CLIP.
    """
    probs = mention_probability or MENTION_PROBABILITY
    picked = [i for i, a in enumerate(ATTRIBUTES) if rng.random() < probs.get(a.name, 0.5)]
    if not picked:
        picked = [int(rng.integers(0, len(ATTRIBUTES)))]
    order = rng.permutation(len(picked))
    words = [ATTRIBUTES[picked[j]].classes[int(attrs[picked[j]])] for j in order]
    return "a photo of a " + " ".join(words) + "."


def vocabulary() -> list[str]:
    """Every word the captions, class names and the generic template use (for the tokenizer)."""
    words = ["a", "photo", "of"]
    for a in ATTRIBUTES:
        words.extend(a.classes)
    return words
