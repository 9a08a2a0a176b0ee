"""The example suite's eight image domains: each class is drawn as its name says, captions confuse siblings."""

from __future__ import annotations

import numpy as np
import pytest

from hfdistac.example_suite.domains import (
    IMAGE_SIZE,
    TASK_BY_NAME,
    TASK_NAMES,
    TASKS,
    captions,
    render,
    sample,
    shift,
    vocabulary,
)


def test_eight_distinct_tasks_with_readable_classes():
    assert len(TASKS) == 8 and len(set(TASK_NAMES)) == 8
    for t in TASKS:
        assert len(t.classes) == len(set(t.classes)) >= 8
        assert all(c.endswith(f" {t.name}") for c in t.classes)
    assert TASK_BY_NAME["digits"].classes[3] == "3 digits"
    words = {w for phrase in vocabulary() for w in phrase.split()}
    assert {"a", "photo", "of", "3", "digits", "water", "terrain"} <= words


@pytest.mark.parametrize("task", TASK_NAMES)
def test_render_is_deterministic_and_in_range(task):
    n = len(TASK_BY_NAME[task].words)
    for label in range(n):
        a = render(task, label, np.random.default_rng(label))
        b = render(task, label, np.random.default_rng(label))
        assert a.shape == (IMAGE_SIZE, IMAGE_SIZE, 3) and a.dtype == np.uint8
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="out of range"):
        render(task, n, np.random.default_rng(0))


def test_unknown_task_is_refused():
    with pytest.raises(ValueError, match="unknown task 'mnist'"):
        render("mnist", 0, np.random.default_rng(0))


def test_counts_draws_label_plus_one_squares():
    rng = np.random.default_rng(0)
    for label in range(9):
        for _ in range(3):
            img = render("counts", label, rng).astype(float).mean(axis=2)
            # 5 x 5 squares at 250 on 10, noise sd 8: bright pixels / 25 is the number of squares
            assert round((img > 128).sum() / 25) == label + 1


def test_positions_puts_the_ball_in_its_cell():
    rng = np.random.default_rng(1)
    cells = [(0, 0), (0, 2), (2, 0), (2, 2), (0, 1), (2, 1), (1, 0), (1, 2), (1, 1)]  # (row, column) by class
    for label, cell in enumerate(cells):
        for _ in range(3):
            img = render("positions", label, rng).astype(float)
            ys, xs = np.nonzero((img[..., 0] > 150) & (img[..., 1] < 100))  # the red ball on white
            assert (int(ys.mean() // (32 / 3)), int(xs.mean() // (32 / 3))) == cell


def test_colours_and_terrain_are_their_palettes():
    rng = np.random.default_rng(2)
    palette = np.array([(220, 40, 40), (40, 180, 60), (40, 70, 220), (230, 210, 40), (150, 50, 190),
                        (240, 140, 30), (40, 200, 210), (240, 130, 190), (120, 70, 30), (15, 15, 15)], float)
    for label in range(10):
        img = render("colours", label, rng).astype(float)
        grey = np.median(img.reshape(-1, 3), axis=0)  # the background covers most of the image
        patch = np.linalg.norm(img - grey, axis=2) > 60
        colour = np.median(img[patch], axis=0)
        assert int(np.argmin(((palette - colour) ** 2).sum(axis=1))) == label
    terrain = np.array([(30, 80, 170), (30, 110, 40), (200, 170, 110), (235, 240, 245), (110, 190, 70),
                        (120, 120, 125), (200, 60, 20), (80, 90, 40)], float)
    for label in range(8):
        mean = render("terrain", label, rng).astype(float).mean(axis=(0, 1))
        assert int(np.argmin(((terrain - mean) ** 2).sum(axis=1))) == label


def test_digits_light_their_segments():
    rng = np.random.default_rng(3)
    one, eight = render("digits", 1, rng), render("digits", 8, rng)
    lit = [(im.astype(float).mean(axis=2) > 128).sum() for im in (one, eight)]
    assert lit[1] > 2 * lit[0]  # 8 lights seven segments, 1 two


def test_sample_and_shift():
    x, y = sample("glyphs", 40, np.random.default_rng(4))
    assert x.shape == (40, IMAGE_SIZE, IMAGE_SIZE, 3) and y.dtype == np.int64 and 0 <= y.min() <= y.max() < 10
    x0, _ = sample("glyphs", 0, np.random.default_rng(4))
    assert x0.shape == (0, IMAGE_SIZE, IMAGE_SIZE, 3)
    img = render("textures", 2, np.random.default_rng(5))
    np.testing.assert_array_equal(shift(img, np.random.default_rng(6), 0.0), img)
    shifted = shift(img, np.random.default_rng(6), 1.0)
    assert np.abs(shifted.astype(float) - img).mean() > 10


def test_captions_name_odd_classes_as_their_sibling():
    labels = np.arange(10).repeat(200)
    exact = captions("digits", labels, np.random.default_rng(0), 0.0, "a photo of a {c}.")
    assert exact[:1] == ["a photo of a 0 digits."] and exact[-1] == "a photo of a 9 digits."
    always = captions("digits", labels, np.random.default_rng(0), 1.0, "{c}")
    assert all(c == f"{y - y % 2} digits" for c, y in zip(always, labels, strict=True))
    mostly = captions("digits", labels, np.random.default_rng(0), 0.9, "{c}")
    odd = labels % 2 == 1
    named_sibling = np.array([c == f"{y - 1} digits" for c, y in zip(mostly, labels, strict=True)])
    assert 0.85 < named_sibling[odd].mean() < 0.95 and not named_sibling[~odd].any()
