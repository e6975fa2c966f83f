"""Tests of segloc.localize.proposals (selective search).

Oracles: hand-computed similarities, OpenCV's histogram intersection, per-region
``np.histogram`` loops, a pixel-loop adjacency, and a slow greedy grouping that recomputes
every similarity from the current region masks at each step.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage.transform import resize

from segloc.boxes import box_iou
from segloc.localize.proposals import (
    _hierarchy,
    _texture_bins,
    color_histograms,
    fill_similarity,
    histogram_intersection,
    region_adjacency,
    selective_search,
    size_similarity,
    texture_histograms,
)

DATA = Path(
    os.environ.get("SEGLOC_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
)


def rectangles_image() -> tuple[np.ndarray, list[list[float]]]:
    img = np.full((40, 60, 3), 200, dtype=np.uint8)
    rects = [(3, 5, 20, 18), (25, 8, 55, 30), (10, 25, 22, 37)]  # x0, y0, x1, y1
    colours = [(255, 0, 0), (0, 0, 255), (0, 160, 0)]
    for (x0, y0, x1, y1), c in zip(rects, colours, strict=True):
        img[y0:y1, x0:x1] = c
    return img, [list(map(float, r)) for r in rects]


# --- similarity functions, hand-checked -------------------------------------------------


@pytest.mark.parametrize(
    ("h1", "h2", "expected"),
    [
        ([0.5, 0.5, 0.0], [0.2, 0.3, 0.5], 0.5),
        ([1.0, 0.0], [0.0, 1.0], 0.0),
        ([0.25, 0.25, 0.25, 0.25], [0.25, 0.25, 0.25, 0.25], 1.0),
        ([0.1, 0.6, 0.3], [0.4, 0.4, 0.2], 0.1 + 0.4 + 0.2),
    ],
)
def test_histogram_intersection_hand_and_opencv(h1, h2, expected):
    got = histogram_intersection(np.array(h1), np.array(h2))
    assert got == pytest.approx(expected)
    ref = cv2.compareHist(np.array(h1, np.float32), np.array(h2, np.float32), cv2.HISTCMP_INTERSECT)
    assert got == pytest.approx(ref, abs=1e-6)


def test_histogram_intersection_broadcasts():
    h = np.array([[0.5, 0.5], [1.0, 0.0], [0.0, 1.0]])
    np.testing.assert_allclose(histogram_intersection(h[0], h), [1.0, 0.5, 0.5])


@pytest.mark.parametrize(
    ("si", "sj", "simage", "expected"), [(10, 30, 100, 0.6), (1, 1, 4, 0.5), (50, 50, 100, 0.0)]
)
def test_size_similarity(si, sj, simage, expected):
    assert float(size_similarity(si, sj, simage)) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("si", "sj", "bi", "bj", "simage", "expected"),
    [
        # two 2x2 squares 2 px apart: union box 6x2 = 12, gap 4 px
        (4, 4, [0, 0, 2, 2], [4, 0, 6, 2], 100, 1 - 4 / 100),
        # touching halves fill their box exactly
        (8, 8, [0, 0, 4, 2], [0, 2, 4, 4], 16, 1.0),
        # diagonal corners of a 10x10 image: box 100, regions 1 each
        (1, 1, [0, 0, 1, 1], [9, 9, 10, 10], 100, 1 - 98 / 100),
    ],
)
def test_fill_similarity(si, sj, bi, bj, simage, expected):
    assert float(fill_similarity(si, sj, bi, bj, simage)) == pytest.approx(expected)


# --- per-region features against slow references ------------------------------------------


def adjacency_loop(labels):
    pairs = set()
    rows, cols = labels.shape
    for r in range(rows):
        for c in range(cols):
            for dr, dc in ((0, 1), (1, 0)):
                rr, cc = r + dr, c + dc
                if rr < rows and cc < cols and labels[r, c] != labels[rr, cc]:
                    a, b = sorted((int(labels[r, c]), int(labels[rr, cc])))
                    pairs.add((a, b))
    return sorted(pairs)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_region_adjacency_matches_pixel_loop(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 6, size=(9, 11))
    assert [tuple(p) for p in region_adjacency(labels).tolist()] == adjacency_loop(labels)


def test_region_adjacency_single_region_is_empty():
    assert region_adjacency(np.zeros((4, 5), dtype=int)).shape == (0, 2)


def test_color_histograms_match_np_histogram():
    rng = np.random.default_rng(3)
    image = rng.random((12, 14, 3))
    image[0, 0] = 1.0  # the top edge goes to the last bin, as np.histogram's closed last bin
    labels = rng.integers(0, 5, size=(12, 14))
    got = color_histograms(image, labels)
    assert got.shape == (5, 75)
    for lab in range(5):
        m = labels == lab
        ref = np.concatenate(
            [np.histogram(image[..., c][m], bins=25, range=(0, 1))[0] for c in range(3)]
        )
        np.testing.assert_allclose(got[lab], ref / ref.sum())


def test_texture_histograms_flat_image_all_in_first_bin():
    labels = np.repeat(np.arange(3), 8).reshape(4, 6)
    got = texture_histograms(np.full((4, 6, 3), 0.3), labels)
    assert got.shape == (3, 3 * 8 * 10)
    expected = np.zeros(240)
    expected[::10] = 1 / 24  # every channel x orientation: all pixels in bin 0
    np.testing.assert_allclose(got, np.tile(expected, (3, 1)))


def test_texture_orientation_of_a_step_edge():
    # dark left, light right: the derivative along +x (orientation 0) is positive at the edge,
    # along -x (orientation 4) never, so only orientation 0 has mass above bin 0.
    image = np.zeros((10, 10, 1))
    image[:, 5:] = 1.0
    bins = _texture_bins(image)  # (rows, cols, C, 8)
    assert bins[:, 4:6, 0, 0].min() >= 8
    assert bins[..., 0, 4].max() == 0
    assert bins[..., 0, 2].max() == 0  # along +y nothing changes


# --- grouping against a slow greedy reference -------------------------------------------


def slow_hierarchy(labels, image, measures):
    """Greedy grouping recomputing histograms, sizes and boxes from masks at every step."""
    labels = labels.copy()
    size_image = labels.size
    tb = _texture_bins(image)
    ids = sorted(np.unique(labels).tolist())
    next_id = max(ids) + 1

    def box(m):
        rr, cc = np.nonzero(m)
        return [cc.min(), rr.min(), cc.max() + 1, rr.max() + 1]

    def col(m):
        h = np.concatenate(
            [np.histogram(image[..., c][m], bins=25, range=(0, 1))[0] for c in range(3)]
        )
        return h / h.sum()

    def tex(m):
        h = np.concatenate(
            [np.bincount(tb[..., c, o][m], minlength=10) for c in range(3) for o in range(8)]
        )
        return h / h.sum()

    out = [box(labels == i) for i in ids]
    while len(np.unique(labels)) > 1:
        best = None
        for a, b in adjacency_loop(labels):
            ma, mb = labels == a, labels == b
            s = 0.0
            if "C" in measures:
                s += np.minimum(col(ma), col(mb)).sum()
            if "T" in measures:
                s += np.minimum(tex(ma), tex(mb)).sum()
            if "S" in measures:
                s += 1 - (ma.sum() + mb.sum()) / size_image
            if "F" in measures:
                s += (
                    1
                    - (
                        np.prod(np.subtract(*np.split(np.array(box(ma | mb)), 2)[::-1]))
                        - ma.sum()
                        - mb.sum()
                    )
                    / size_image
                )
            if best is None or s > best[0]:
                best = (s, a, b)
        _, a, b = best
        labels[(labels == a) | (labels == b)] = next_id
        next_id += 1
        out.append(box(labels == next_id - 1))
    return np.array(out, dtype=float)


@pytest.mark.parametrize("measures", ["CTSF", "TS", "C", "F"])
def test_hierarchy_matches_slow_greedy_reference(measures):
    rng = np.random.default_rng(7)
    image = rng.random((12, 12, 3))
    labels = (np.arange(12)[:, None] // 4) * 3 + (np.arange(12)[None, :] // 4)  # 3x3 blocks
    labels[5, 5] = 0  # an irregular region
    got = _hierarchy(
        labels,
        region_adjacency(labels),
        color_histograms(image, labels),
        texture_histograms(image, labels),
        measures,
    )
    np.testing.assert_array_equal(got, slow_hierarchy(labels, image, measures))


# --- selective_search --------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["single", "fast"])
def test_rectangles_exact_boxes_are_proposed(mode):
    img, rects = rectangles_image()
    boxes, ranks = selective_search(img, mode=mode)
    found = boxes.tolist()
    for r in rects:
        assert r in found
    assert [0.0, 0.0, 60.0, 40.0] in found
    assert np.all(np.diff(ranks) >= 0)


def test_proposals_valid_inside_unique():
    rng = np.random.default_rng(0)
    img = (rng.random((30, 45, 3)) * 255).astype(np.uint8)
    boxes, ranks = selective_search(img, ks=(20, 60), min_size=5)
    assert boxes.dtype == np.float64 and boxes.shape[1] == 4 and ranks.shape == (len(boxes),)
    assert np.all(boxes[:, :2] >= 0)
    assert np.all(boxes[:, 2] <= 45) and np.all(boxes[:, 3] <= 30)
    assert np.all(boxes[:, 2] > boxes[:, 0]) and np.all(boxes[:, 3] > boxes[:, 1])
    assert len(np.unique(boxes, axis=0)) == len(boxes)
    assert np.all(boxes == np.round(boxes))


def test_last_region_of_each_hierarchy_is_the_whole_image():
    rng = np.random.default_rng(1)
    image = rng.random((20, 25, 3))
    labels = rng.integers(0, 10, size=(20, 25))
    n = 10
    got = _hierarchy(
        labels,
        region_adjacency(labels),
        color_histograms(image, labels),
        texture_histograms(image, labels),
        "CTSF",
    )
    assert got.shape == (2 * n - 1, 4)
    np.testing.assert_array_equal(got[-1], [0, 0, 25, 20])


def test_deterministic_under_seed_and_seed_matters():
    img, _ = rectangles_image()
    b1, r1 = selective_search(img, seed=3)
    b2, r2 = selective_search(img, seed=3)
    np.testing.assert_array_equal(b1, b2)
    np.testing.assert_array_equal(r1, r2)
    b3, _ = selective_search(img, seed=4)
    assert sorted(map(tuple, b1.tolist())) == sorted(map(tuple, b3.tolist()))
    assert not np.array_equal(b1, b3)


def test_max_proposals_is_a_prefix():
    img, _ = rectangles_image()
    boxes, _ = selective_search(img)
    top, ranks = selective_search(img, max_proposals=5)
    np.testing.assert_array_equal(top, boxes[:5])
    assert len(ranks) == 5


def test_grey_image_is_replicated_rgb():
    img, _ = rectangles_image()
    grey = img[..., 1]
    b1, r1 = selective_search(grey, mode="single", color_spaces=("rgb",))
    b2, r2 = selective_search(np.dstack([grey] * 3), mode="single", color_spaces=("rgb",))
    np.testing.assert_array_equal(b1, b2)
    np.testing.assert_array_equal(r1, r2)


def test_float_and_uint8_inputs_agree():
    img, _ = rectangles_image()
    b1, _ = selective_search(img, mode="single")
    b2, _ = selective_search(img / 255.0, mode="single")
    np.testing.assert_array_equal(b1, b2)


@pytest.mark.parametrize(
    ("image", "kwargs", "match"),
    [
        (np.zeros((8, 8, 5)), {}, "image must be grey"),
        (np.zeros((4, 8, 8, 3)), {}, "image must be 2D or 3D"),
        (np.full((8, 8, 3), 2.0), {}, r"must be in \[0, 1\]"),
        (np.zeros((8, 8, 3)), {"mode": "quality"}, "mode must be one of"),
        (np.zeros((8, 8, 3)), {"color_spaces": ("xyz",)}, "color_spaces must be one of"),
        (np.zeros((8, 8, 3)), {"similarities": ("CQ",)}, "similarities must be"),
        (np.zeros((8, 8, 3)), {"ks": (0,)}, "ks must be > 0"),
        (np.zeros((8, 8, 3)), {"ks": ()}, "ks must hold"),
        (np.zeros((8, 8, 3)), {"max_proposals": 0}, "max_proposals must be >= 1"),
    ],
)
def test_bad_input(image, kwargs, match):
    with pytest.raises(ValueError, match=match):
        selective_search(image, **kwargs)


@pytest.mark.slow
def test_raccoon_boxes_are_recalled():
    from segloc.io import read_image
    from segloc.localize.annotations import read_voc_folder

    folder = DATA / "raccoon"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    records = read_voc_folder(folder)[:3]
    for rec in records:
        img, _ = read_image(rec["image_path"])
        scale = 200 / max(img.shape[:2])
        small = resize(
            img, (round(img.shape[0] * scale), round(img.shape[1] * scale)), anti_aliasing=True
        )
        boxes, _ = selective_search(small)
        truth = np.asarray(rec["boxes"], dtype=float) * scale
        best = np.asarray(box_iou(truth, boxes)).max(axis=1)
        assert np.all(best >= 0.5), (rec["image_path"], best)
