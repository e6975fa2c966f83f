"""Tests for segloc.metrics: hand-computed tables, MONAI / scikit-learn / brute-force oracles,
MONAI's own published test values, and real data (CamVid, MSD hippocampus)."""

from __future__ import annotations

import doctest
import functools
import itertools
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from monai.metrics import (
    DiceMetric,
    compute_average_surface_distance,
    compute_dice,
    compute_hausdorff_distance,
    compute_iou,
    get_confusion_matrix,
)
from scipy import ndimage as ndi
from sklearn.metrics import confusion_matrix

from segloc import metrics
from segloc.metrics import (
    Counts,
    accuracy_from_counts,
    assd,
    confusion_counts,
    dice,
    dice_from_counts,
    hausdorff,
    hd95,
    iou,
    iou_from_counts,
    overlap_scores,
    precision_from_counts,
    recall_from_counts,
    specificity_from_counts,
    surface_distances,
    surface_scores,
)

DATA = Path(os.environ.get("SEGLOC_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------


def one_hot(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """(spatial...) label map -> (1, C, spatial...) float tensor; labels >= C give all zeros."""
    out = np.stack([labels == c for c in range(num_classes)]).astype(np.float32)
    return torch.from_numpy(out[None])


def monai_quiet(fn, *args, **kwargs) -> np.ndarray:
    """Call a MONAI metric, silencing its 'class is all 0' warning for empty masks."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is all 0.*", category=UserWarning)
        return np.asarray(fn(*args, **kwargs), dtype=np.float64)


def blobs(shape, seed, *, sigma=2.0, level=0.0) -> np.ndarray:
    """Smooth random blobs (realistic masks with holes and several components)."""
    rng = np.random.default_rng(seed)
    return ndi.gaussian_filter(rng.standard_normal(shape), sigma) > level


@functools.cache
def sphere(radius, centre, shape=(99, 99, 99), spacing=(1.0, 1.0, 1.0)) -> np.ndarray:
    """As MONAI 1.6's tests/metrics/test_hausdorff_distance.py ``create_spherical_seg_3d``:
    voxel i of axis k sits at ``i * spacing[k]``; inside when its distance to ``centre`` (in
    those units) is <= radius."""
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    d2 = sum((g.astype(float) * s - c) ** 2 for g, s, c in zip(grid, spacing, centre, strict=True))
    out = d2 <= radius * radius
    out.setflags(write=False)
    return out


def ref_surface(mask: np.ndarray, rank: int) -> np.ndarray:
    """Slow obvious surface: a mask voxel with a neighbour (per the rank-connectivity cross)
    that is background or outside the array."""
    padded = np.pad(mask, 1)
    inner = np.ones_like(mask)
    for off in itertools.product((-1, 0, 1), repeat=mask.ndim):
        if 0 < sum(map(abs, off)) <= rank:
            sl = tuple(slice(1 + o, 1 + o + n) for o, n in zip(off, mask.shape, strict=True))
            inner &= padded[sl]
    return mask & ~inner


def ref_distances(a, b, spacing, rank=1) -> np.ndarray:
    """Brute force: every surface voxel of a against every surface voxel of b."""
    pa = np.argwhere(ref_surface(a, rank)) * np.asarray(spacing)
    pb = np.argwhere(ref_surface(b, rank)) * np.asarray(spacing)
    return np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1)).min(axis=1)


# ------------------------------------------------------------------------------------------
# scores from counts: hand-computed table
# ------------------------------------------------------------------------------------------

# (tp, fp, fn, tn) -> dice, iou, precision, recall, specificity (empty="nan")
COUNT_TABLE = [
    ((2, 0, 1, 1), 4 / 5, 2 / 3, 1.0, 2 / 3, 1.0),  # MONAI's 2x2 example
    ((5, 5, 0, 10), 10 / 15, 5 / 10, 0.5, 1.0, 10 / 15),
    ((0, 3, 4, 9), 0.0, 0.0, 0.0, 0.0, 9 / 12),
    ((10, 0, 0, 0), 1.0, 1.0, 1.0, 1.0, np.nan),  # every pixel is the class
    ((0, 0, 0, 7), np.nan, np.nan, np.nan, np.nan, 1.0),  # absent from both
    ((0, 4, 0, 3), 0.0, 0.0, 0.0, np.nan, 3 / 7),  # truth empty, false positives
    ((0, 0, 4, 3), 0.0, 0.0, np.nan, 0.0, 1.0),  # nothing predicted
    ((3, 1, 2, 94), 6 / 9, 3 / 6, 3 / 4, 3 / 5, 94 / 95),
]
SCORE_FUNCS = [
    dice_from_counts,
    iou_from_counts,
    precision_from_counts,
    recall_from_counts,
    specificity_from_counts,
]


@pytest.mark.parametrize("row", COUNT_TABLE)
def test_scores_from_counts_table(row):
    counts, expected = row[0], row[1:]
    c = Counts(*(np.array([v]) for v in counts))
    got = [f(c)[0] for f in SCORE_FUNCS]
    np.testing.assert_allclose(got, expected, rtol=1e-12, equal_nan=True)


@pytest.mark.parametrize("empty, value", [("nan", np.nan), ("one", 1.0), ("zero", 0.0)])
@pytest.mark.parametrize("func", SCORE_FUNCS)
def test_empty_policy_only_replaces_zero_over_zero(func, empty, value):
    # column 0: 0/0 for every score; column 1: an ordinary case
    c = Counts(np.array([0, 3]), np.array([0, 1]), np.array([0, 2]), np.array([0, 94]))
    zero_zero = Counts(np.zeros(1, int), np.zeros(1, int), np.zeros(1, int), np.zeros(1, int))
    got = func(c, empty=empty)
    np.testing.assert_equal(func(zero_zero, empty=empty), [value])
    np.testing.assert_allclose(got[1], func(c)[1])


@pytest.mark.parametrize(
    "counts, expected",
    [
        (Counts(np.array([5, 3]), np.array([1, 2]), np.array([2, 1]), np.array([3, 5])), 8 / 11),
        (Counts(np.array([0, 0]), np.array([0, 0]), np.array([0, 0]), np.array([0, 0])), np.nan),
    ],
)
def test_accuracy_from_counts(counts, expected):
    assert isinstance(accuracy_from_counts(counts), float)
    np.testing.assert_allclose(accuracy_from_counts(counts), expected)
    assert accuracy_from_counts(Counts(*(np.zeros(2, int),) * 4), empty="one") == 1.0


def test_counts_add_pools_cases():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 3, (2, 10, 11)), rng.integers(0, 3, (2, 10, 11))
    total = confusion_counts(a[0], b[0], num_classes=3)
    total = total + confusion_counts(a[1], b[1], num_classes=3)
    pooled = confusion_counts(a, b, num_classes=3)
    for name in ("tp", "fp", "fn", "tn"):
        np.testing.assert_array_equal(getattr(total, name), getattr(pooled, name))
    with pytest.raises(ValueError, match="same number of classes"):
        confusion_counts(a[0], b[0], num_classes=3) + confusion_counts(a[0], b[0], num_classes=4)


# ------------------------------------------------------------------------------------------
# confusion counts: hand cases and oracles
# ------------------------------------------------------------------------------------------


def test_monai_published_dice_example():
    # MONAI tests/metrics/test_compute_meandice.py: pred [[1,0],[0,1]] vs truth [[1,0],[1,1]]
    pred = np.array([[1, 0], [0, 1]], bool)
    truth = np.array([[1, 0], [1, 1]], bool)
    assert dice(pred, truth) == pytest.approx(0.8, abs=1e-15)
    monai = compute_dice(one_hot(pred, 2), one_hot(truth, 2), include_background=False)
    assert float(monai[0, 0]) == pytest.approx(0.8)


@pytest.mark.parametrize(
    "pred, truth, kwargs, tp, fp, fn, tn",
    [
        # bool -> classes 0 and 1
        ([[1, 0], [0, 1]], [[1, 0], [1, 1]], {}, [1, 2], [1, 0], [0, 1], [2, 1]),
        # pred == ignore_index (outside the classes) at a scored pixel: a miss for class 1
        ([0, 1, 9, 9, 1], [0, 1, 1, 9, 9], {"ignore_index": 9}, [1, 1], [0, 0], [0, 1], [2, 1]),
        # ignore_index inside the classes: truth 0 is ignored, pred 0 is a false positive of 0
        (
            [0, 1, 2, 0],
            [1, 1, 2, 0],
            {"ignore_index": 0},
            [0, 1, 1],
            [1, 0, 0],
            [0, 1, 0],
            [2, 1, 2],
        ),
        # negative ignore_index
        ([1, 1, 0], [-1, 1, 0], {"ignore_index": -1}, [1, 1], [0, 0], [0, 0], [1, 1]),
        # explicit num_classes larger than any label: absent classes count only tn
        (
            [0, 1],
            [0, 1],
            {"num_classes": 4},
            [1, 1, 0, 0],
            [0, 0, 0, 0],
            [0, 0, 0, 0],
            [1, 1, 2, 2],
        ),
        # all-background label map: two classes (binary with an absent foreground)
        ([[0, 0]], [[0, 0]], {}, [2, 0], [0, 0], [0, 0], [0, 2]),
    ],
)
def test_confusion_counts_hand(pred, truth, kwargs, tp, fp, fn, tn):
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.ndim == 2 and pred.max() <= 1 and not kwargs and pred.shape == (2, 2):
        pred, truth = pred.astype(bool), truth.astype(bool)
    c = confusion_counts(pred, truth, **kwargs)
    for name, want in zip(("tp", "fp", "fn", "tn"), (tp, fp, fn, tn), strict=True):
        got = getattr(c, name)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, want, err_msg=name)


def test_num_classes_inferred_from_both_maps_without_ignore_index():
    pred = np.array([[0, 3], [1, 255]])
    truth = np.array([[0, 1], [5, 255]])
    assert confusion_counts(pred, truth, ignore_index=255).num_classes == 6
    assert confusion_counts(pred.astype(bool), truth.astype(bool)).num_classes == 2


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ignore_index", [None, 255, 2])
def test_confusion_counts_against_sklearn(seed, ignore_index):
    rng = np.random.default_rng(seed)
    C = 5
    pred = rng.integers(0, C - 1, (17, 9, 6))  # class 4 never appears
    truth = rng.integers(0, C - 1, (17, 9, 6))
    if ignore_index is not None:
        truth[rng.random(truth.shape) < 0.2] = ignore_index
    keep = truth != ignore_index
    cm = confusion_matrix(truth[keep], pred[keep], labels=range(C))  # rows truth, cols pred
    c = confusion_counts(pred, truth, num_classes=C, ignore_index=ignore_index)
    tp = np.diag(cm)
    np.testing.assert_array_equal(c.tp, tp)
    np.testing.assert_array_equal(c.fp, cm.sum(0) - tp)
    np.testing.assert_array_equal(c.fn, cm.sum(1) - tp)
    np.testing.assert_array_equal(c.tn, keep.sum() - cm.sum(0) - cm.sum(1) + tp)


@settings(max_examples=60, deadline=None)
@given(
    data=hnp.arrays(
        np.int8, hnp.array_shapes(min_dims=1, max_dims=3, max_side=7), elements=st.integers(0, 3)
    ),
    shift=st.integers(0, 3),
)
def test_confusion_counts_property(data, shift):
    truth = data
    pred = (data + shift * (np.arange(data.size).reshape(data.shape) % 2)) % 4
    c = confusion_counts(pred, truth, num_classes=4)
    totals = c.tp + c.fp + c.fn + c.tn
    np.testing.assert_array_equal(totals, np.full(4, data.size))
    for k in range(4):  # the obvious per-class reference
        p, t = pred == k, truth == k
        assert (c.tp[k], c.fp[k], c.fn[k]) == ((p & t).sum(), (p & ~t).sum(), (~p & t).sum())


# ------------------------------------------------------------------------------------------
# overlap scores against MONAI
# ------------------------------------------------------------------------------------------


def _random_labels(seed, shape, C):
    """Label maps with: a class only in pred, a class only in truth, a class in neither,
    and 255 = ignored pixels in truth."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 3, shape)
    pred = np.where(rng.random(shape) < 0.6, truth, rng.integers(0, 3, shape))
    pred.flat[rng.integers(0, pred.size, 3)] = 3  # class 3 only predicted
    truth.flat[rng.integers(0, truth.size, 2)] = 4  # class 4 only in truth (mostly)
    truth[rng.random(shape) < 0.15] = 255
    assert C >= 6  # class 5 is absent from both
    return pred, truth


@pytest.mark.parametrize("seed, shape", [(0, (24, 31)), (1, (9, 12, 10)), (2, (40, 3))])
def test_overlap_against_monai(seed, shape):
    C = 6
    pred, truth = _random_labels(seed, shape, C)
    ours = overlap_scores(
        pred, truth, num_classes=C, ignore_index=255, empty="one", include_background=True
    )
    # ignore_index >= C: MONAI masks pixels whose one-hot truth is all zero (our 255s)
    p1, t1 = one_hot(pred, C), one_hot(truth, C)
    monai_dice = DiceMetric(
        include_background=True, reduction="none", ignore_empty=False, ignore_index=255
    )(p1, t1)
    np.testing.assert_allclose(ours["dice"], monai_dice[0].numpy(), rtol=1e-6)
    monai_iou = compute_iou(p1, t1, include_background=True, ignore_empty=False, ignore_index=255)
    np.testing.assert_allclose(ours["iou"], monai_iou[0].numpy(), rtol=1e-6)
    # confusion matrix of the scored pixels only: MONAI gives (tp, fp, tn, fn)
    keep = truth != 255
    cm = get_confusion_matrix(
        one_hot(pred[keep], C), one_hot(truth[keep], C), include_background=True
    )[0].numpy()
    c = confusion_counts(pred, truth, num_classes=C, ignore_index=255)
    np.testing.assert_array_equal(np.stack([c.tp, c.fp, c.tn, c.fn], 1), cm)
    # precision / recall / specificity from MONAI's counts
    tp, fp, tn, fn = cm.T.astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        for name, want in [
            ("precision", tp / (tp + fp)),
            ("recall", tp / (tp + fn)),
            ("specificity", tn / (tn + fp)),
        ]:
            want = np.where(np.isnan(want), 1.0, want)
            np.testing.assert_allclose(ours[name], want, rtol=1e-12, err_msg=name)


def test_empty_policies_differ_from_monai_ignore_empty_as_documented():
    C = 6
    pred, truth = _random_labels(0, (24, 31), C)
    ours = overlap_scores(pred, truth, num_classes=C, ignore_index=255, include_background=True)
    monai = compute_dice(
        one_hot(pred, C),
        one_hot(truth, C),
        include_background=True,
        ignore_empty=True,
        ignore_index=255,
    )[0].numpy()
    # class 3: predicted but absent from truth -> segloc 0.0, MONAI ignore_empty NaN
    assert ours["dice"][3] == 0.0 and np.isnan(monai[3])
    # class 5: absent from both -> NaN in both
    assert np.isnan(ours["dice"][5]) and np.isnan(monai[5])
    np.testing.assert_allclose(ours["dice"][:3], monai[:3], rtol=1e-6)
    for empty, value in [("one", 1.0), ("zero", 0.0)]:
        assert (
            overlap_scores(pred, truth, num_classes=C, ignore_index=255, empty=empty)["dice"][4]
            == value
        )  # entry 4 = class 5 without background


def test_include_background_layout():
    pred, truth = _random_labels(3, (20, 20), 6)
    full = overlap_scores(pred, truth, num_classes=6, ignore_index=255, include_background=True)
    fg = overlap_scores(pred, truth, num_classes=6, ignore_index=255)
    assert set(full) == {"dice", "iou", "precision", "recall", "specificity"}
    for name in full:
        assert full[name].shape == (6,) and fg[name].shape == (5,)
        np.testing.assert_array_equal(full[name][1:], fg[name])


def test_dice_and_iou_are_nan_means():
    pred, truth = _random_labels(4, (30, 30), 6)
    s = overlap_scores(pred, truth, num_classes=6, ignore_index=255)
    assert np.isnan(s["dice"]).sum() == 1
    kw = {"num_classes": 6, "ignore_index": 255}
    assert dice(pred, truth, **kw) == pytest.approx(np.nanmean(s["dice"]))
    assert iou(pred, truth, **kw) == pytest.approx(np.nanmean(s["iou"]))
    assert dice(pred, truth, empty="zero", **kw) == pytest.approx(
        np.mean(overlap_scores(pred, truth, empty="zero", **kw)["dice"])
    )
    # binary: the foreground score; nothing to score -> NaN without a numpy warning
    a, b = blobs((20, 20), 0), blobs((20, 20), 1)
    assert dice(a, b) == pytest.approx(2 * (a & b).sum() / (a.sum() + b.sum()))
    assert iou(a, b) == pytest.approx((a & b).sum() / (a | b).sum())
    empty = np.zeros((4, 4), bool)
    assert np.isnan(dice(empty, empty)) and np.isnan(iou(empty, empty))
    assert dice(empty, empty, empty="one") == 1.0


# ------------------------------------------------------------------------------------------
# surface distances
# ------------------------------------------------------------------------------------------


def test_surface_distances_hand_2d():
    a = np.zeros((6, 6), bool)
    a[1:3, 1:3] = True
    b = np.zeros((6, 6), bool)
    b[1:3, 1:5] = True
    d_ab, d_ba = surface_distances(a, b)
    np.testing.assert_array_equal(d_ab, [0, 0, 0, 0])
    # b's voxels in C order: row 1 cols 1..4, row 2 cols 1..4
    np.testing.assert_array_equal(d_ba, [0, 0, 1, 2, 0, 0, 1, 2])
    assert hausdorff(a, b) == 2.0 and hausdorff(a, b, directed=True) == 0.0
    assert hausdorff(b, a, directed=True) == 2.0
    assert assd(a, b) == pytest.approx(6 / 12) and assd(b, a, directed=True) == 6 / 8
    # anisotropic spacing scales column offsets
    assert hausdorff(a, b, spacing=(1.0, 0.5)) == 1.0


def test_surface_is_mask_minus_erosion():
    # a filled 5x5 square: the 16-pixel ring is the surface, the 3x3 inside is not
    a = np.zeros((7, 7), bool)
    a[1:6, 1:6] = True
    b = np.zeros((7, 7), bool)
    b[3, 3] = True
    d_ab, d_ba = surface_distances(a, b)
    assert d_ab.size == 16 and d_ba.size == 1
    assert d_ba[0] == 2.0  # centre to the nearest ring pixel
    assert d_ab.max() == pytest.approx(np.sqrt(8))


@pytest.mark.parametrize("connectivity", [1, 2, 3])
@pytest.mark.parametrize("spacing", [None, (0.7, 1.3, 2.0)])
def test_surface_distances_against_brute_force(connectivity, spacing):
    a = blobs((11, 13, 9), 10, sigma=1.5)
    b = blobs((11, 13, 9), 11, sigma=1.5)
    a[0, :, 4] = True  # touches the array border
    sp = (1.0, 1.0, 1.0) if spacing is None else spacing
    d_ab, d_ba = surface_distances(a, b, spacing=spacing, connectivity=connectivity)
    np.testing.assert_allclose(d_ab, ref_distances(a, b, sp, connectivity), rtol=1e-12)
    np.testing.assert_allclose(d_ba, ref_distances(b, a, sp, connectivity), rtol=1e-12)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(
    "shape, spacing", [((40, 50), (0.8, 1.7)), ((20, 24, 18), (1.5, 0.6, 1.0))]
)
def test_edt_and_kdtree_paths_agree(seed, shape, spacing):
    a, b = blobs(shape, seed), blobs(shape, seed + 100)
    edt = metrics._distances(a, b, spacing, 1, both=True, method="edt")
    tree = metrics._distances(a, b, spacing, 1, both=True, method="tree")
    for x, y in zip(edt, tree, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-12)


# MONAI 1.6 tests/metrics/test_hausdorff_distance.py, seg_1 = pred, seg_2 = truth
SP = (0.85, 1.2, 0.9)
MONAI_PUBLISHED = [
    # pred sphere, truth sphere, spacing, percentile, directed, expected
    ((20, (20, 33, 22)), (40, (20, 33, 22)), None, 100, False, 20.223748416156685),
    ((20, (20, 33, 22)), (40, (20, 33, 22)), None, 100, True, 20.09975124224178),
    ((20, (20, 33, 22)), (40, (20, 33, 22)), None, 95, False, 20.09975124224178),
    ((20, (20, 33, 22)), (40, (20, 33, 22)), None, 95, True, 19.924858845171276),
    ((20, (20, 20, 20)), (20, (19, 19, 19)), None, 100, False, 1.7320508075688772),
    ((33, (19, 33, 22)), (33, (20, 33, 22)), None, 100, True, 1.0),
    ((20, (20, 20, 20)), (20, (19, 19, 19)), SP, 100, False, 2.2671568),
    ((20, (20, 20, 20)), (20, (19, 19, 19)), SP, 100, True, 2.0808651447296143),
    ((15, (20, 33, 22)), (30, (20, 33, 22)), SP, 100, False, 15.62594),
    ((15, (20, 33, 22)), (30, (20, 33, 22)), SP, 100, True, 15.439640998840332),
]


@pytest.mark.parametrize("p, t, spacing, percentile, directed, expected", MONAI_PUBLISHED)
def test_monai_published_hausdorff_values(p, t, spacing, percentile, directed, expected):
    sp = spacing or (1.0, 1.0, 1.0)
    pred, truth = sphere(*p, spacing=sp), sphere(*t, spacing=sp)
    got = hausdorff(pred, truth, spacing=spacing, percentile=percentile, directed=directed)
    # MONAI asserts rtol 1e-6 on its float32 results
    assert got == pytest.approx(expected, rel=1e-6)
    if percentile == 95:
        assert hd95(pred, truth, spacing=spacing, directed=directed) == got


def _monai_surface(pred, truth, spacing, *, percentile=None, directed=False, kind="hd"):
    p1, t1 = torch.tensor(pred[None, None]), torch.tensor(truth[None, None])  # copies
    if kind == "hd":
        out = monai_quiet(
            compute_hausdorff_distance,
            p1,
            t1,
            include_background=True,
            percentile=percentile,
            directed=directed,
            spacing=spacing,
        )
    else:
        out = monai_quiet(
            compute_average_surface_distance,
            p1,
            t1,
            include_background=True,
            symmetric=not directed,
            spacing=spacing,
        )
    return float(out[0, 0])


SURFACE_CASES = [
    # shape, spacing, sigma: blobs (KD-tree path) and noise (distance-transform path)
    ((48, 56), None, 3.0),
    ((48, 56), (0.7, 1.4), 3.0),
    ((30, 26, 22), (0.85, 1.2, 0.9), 2.0),
    ((18, 20, 16), None, 0.0),
]


@pytest.mark.parametrize("shape, spacing, sigma", SURFACE_CASES)
@pytest.mark.parametrize("directed", [False, True])
def test_surface_metrics_against_monai(shape, spacing, sigma, directed):
    rng = np.random.default_rng(len(shape) * 7 + int(sigma))
    a = blobs(shape, 1, sigma=sigma) if sigma else rng.random(shape) < 0.3
    b = blobs(shape, 2, sigma=sigma) if sigma else rng.random(shape) < 0.3
    b[(0,) * len(shape)] = True
    kw = {"spacing": spacing, "directed": directed}
    for q in (100, 95, 50):
        want = _monai_surface(a, b, spacing, percentile=None if q == 100 else q, directed=directed)
        assert hausdorff(a, b, percentile=q, **kw) == pytest.approx(want, rel=1e-6, abs=1e-6)
    want = _monai_surface(a, b, spacing, directed=directed, kind="asd")
    assert assd(a, b, **kw) == pytest.approx(want, rel=1e-6)
    assert hd95(a, b, **kw) == hausdorff(a, b, percentile=95, **kw)


def test_monai_sphere_assd():
    pred, truth = sphere(20, (20, 33, 22)), sphere(40, (20, 33, 22))
    want = _monai_surface(pred, truth, None, kind="asd")
    assert assd(pred, truth) == pytest.approx(want, rel=1e-6)


EMPTY = np.zeros((10, 12), bool)
FULL = np.zeros((10, 12), bool)
FULL[2:6, 3:9] = True


@pytest.mark.parametrize(
    "pred, truth, expected",
    [(EMPTY, FULL, np.inf), (FULL, EMPTY, np.inf), (EMPTY, EMPTY, np.nan)],
    ids=["pred-empty", "truth-empty", "both-empty"],
)
@pytest.mark.parametrize("directed", [False, True])
@pytest.mark.parametrize("func", [hausdorff, hd95, assd])
def test_empty_masks_like_monai(func, pred, truth, expected, directed):
    got = func(pred, truth, directed=directed)
    np.testing.assert_equal(got, expected)
    if func is assd:
        want = _monai_surface(pred, truth, None, directed=directed, kind="asd")
    else:
        q = 95 if func is hd95 else None
        want = _monai_surface(pred, truth, None, percentile=q, directed=directed)
    if func is hd95 and np.isinf(expected):
        # documented difference: MONAI's torch.quantile interpolates inf - inf -> NaN
        assert np.isnan(want)
    else:
        np.testing.assert_equal(got, want)


def test_surface_distances_with_empty_masks():
    d_ab, d_ba = surface_distances(EMPTY, FULL)
    assert d_ab.size == 0 and d_ba.size == 16 and np.isinf(d_ba).all()  # the 4x6 ring
    d_ab, d_ba = surface_distances(EMPTY, EMPTY)
    assert d_ab.size == 0 and d_ba.size == 0


def test_surface_scores_against_monai_multiclass():
    rng = np.random.default_rng(5)
    shape, C = (26, 22, 18), 5
    truth = np.zeros(shape, np.int32)
    truth[blobs(shape, 1)] = 1
    truth[blobs(shape, 2, level=0.5)] = 2
    pred = truth.copy()
    pred[blobs(shape, 3, level=0.8)] = 2
    pred[rng.random(shape) < 0.01] = 3  # class 3 only predicted; class 4 absent from both
    spacing = (1.1, 0.9, 1.6)
    got = surface_scores(pred, truth, num_classes=C, spacing=spacing)
    p1, t1 = one_hot(pred, C), one_hot(truth, C)
    want = {
        "hausdorff": monai_quiet(compute_hausdorff_distance, p1, t1, spacing=spacing),
        "hd95": monai_quiet(compute_hausdorff_distance, p1, t1, spacing=spacing, percentile=95),
        "assd": monai_quiet(
            compute_average_surface_distance, p1, t1, spacing=spacing, symmetric=True
        ),
    }
    want["hd95"][0, 2] = np.inf  # MONAI: NaN for a percentile with one empty mask (documented)
    for name in want:
        assert got[name].shape == (C - 1,)
        np.testing.assert_allclose(got[name], want[name][0], rtol=1e-6, err_msg=name)
    assert np.isinf(got["hausdorff"][2]) and np.isnan(got["hausdorff"][3])
    with_bg = surface_scores(pred, truth, num_classes=C, spacing=spacing, include_background=True)
    np.testing.assert_array_equal(with_bg["hd95"][1:], got["hd95"])


def test_surface_scores_ignore_index_masks_both_maps():
    rng = np.random.default_rng(6)
    truth = blobs((40, 40), 7).astype(np.int32)
    pred = blobs((40, 40), 8).astype(np.int32)
    void = rng.random((40, 40)) < 0.1
    truth[void] = 255
    got = surface_scores(pred, truth, ignore_index=255)
    keep = ~void
    assert got["hausdorff"][0] == hausdorff((pred == 1) & keep, (truth == 1) & keep)
    assert got["assd"][0] == assd((pred == 1) & keep, (truth == 1) & keep)


def test_hausdorff_is_symmetric_and_zero_on_identity():
    a, b = blobs((30, 30), 20), blobs((30, 30), 21)
    assert hausdorff(a, b) == hausdorff(b, a)
    assert assd(a, b) == pytest.approx(assd(b, a))
    assert hausdorff(a, a) == 0.0 and assd(a, a) == 0.0
    assert hausdorff(a, b) == max(hausdorff(a, b, directed=True), hausdorff(b, a, directed=True))


def test_int_01_masks_accepted():
    a, b = blobs((20, 20), 30), blobs((20, 20), 31)
    assert hausdorff(a.astype(np.uint8), b.astype(np.int64)) == hausdorff(a, b)


# ------------------------------------------------------------------------------------------
# argument errors
# ------------------------------------------------------------------------------------------

M = np.zeros((4, 4), bool)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: confusion_counts(M.astype(float), M), TypeError, "pred must be a bool mask"),
        (lambda: confusion_counts(M, M[:3]), ValueError, "same shape"),
        (
            lambda: confusion_counts(np.array([0, 3]), np.array([0, 1]), num_classes=3),
            ValueError,
            r"pred labels must be in \[0, 2\].*got 3",
        ),
        (
            lambda: confusion_counts(np.array([0, 1]), np.array([-2, 1])),
            ValueError,
            "truth labels must be",
        ),
        (lambda: confusion_counts(M, M, num_classes=0), ValueError, "num_classes must be >= 1"),
        (
            lambda: confusion_counts(M | True, M, num_classes=1),
            ValueError,
            r"pred labels must be in \[0, 0\]",
        ),
        (lambda: confusion_counts(np.int64(1), np.int64(1)), ValueError, "at least 1 dimension"),
        (lambda: confusion_counts(M, M, num_classes=2.0), TypeError, "num_classes must be an int"),
        (
            lambda: confusion_counts(M, M, ignore_index=1.5),
            TypeError,
            "ignore_index must be an int",
        ),
        (lambda: confusion_counts(np.zeros(0, int), np.zeros(0, int)), ValueError, "not be empty"),
        (lambda: overlap_scores(M, M, empty="skip"), ValueError, "empty must be one of"),
        (
            lambda: dice_from_counts(Counts(*(np.ones(1, int),) * 4), empty=1),
            ValueError,
            "empty must be one of",
        ),
        (lambda: hausdorff(M, M, percentile=101), ValueError, r"percentile must be in \[0, 100\]"),
        (lambda: hausdorff(M, M, percentile="95"), TypeError, "percentile must be a number"),
        (lambda: hausdorff(M, M, directed="yes"), TypeError, "directed must be a bool"),
        (lambda: hausdorff(np.zeros(5, bool), np.zeros(5, bool)), ValueError, "2D or 3D"),
        (lambda: hausdorff(M.astype(int) + 2, M), ValueError, "pred must be a bool mask or hold"),
        (lambda: hd95(M, M, spacing=(1, 1, 1)), ValueError, "spacing must have 2 values"),
        (lambda: assd(M, M, spacing=(1, -1)), ValueError, "spacing values must be positive"),
        (lambda: surface_distances(M, M, connectivity=5), ValueError, "connectivity must be"),
        (
            lambda: surface_scores(np.zeros((3, 3, 3, 3), int), np.zeros((3, 3, 3, 3), int)),
            ValueError,
            "2D or 3D",
        ),
    ],
)
def test_argument_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ------------------------------------------------------------------------------------------
# module hygiene
# ------------------------------------------------------------------------------------------


def test_import_does_not_load_torch():
    code = "import sys, segloc.metrics; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_docstring_examples():
    result = doctest.testmod(metrics, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 5 and result.failed == 0


# ------------------------------------------------------------------------------------------
# real data (small slices)
# ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_camvid_consecutive_frames_against_monai():
    from PIL import Image

    labels = sorted((DATA / "camvid" / "labels").glob("*.png"))
    if len(labels) < 2:
        pytest.skip(f"CamVid labels not found under {DATA}")
    truth = np.asarray(Image.open(labels[0])).astype(np.int32)
    pred = np.asarray(Image.open(labels[1])).astype(np.int32)
    pred[pred == 11] = 0  # a "prediction" never says void
    C, void = 11, 11
    ours = overlap_scores(
        pred, truth, num_classes=C, ignore_index=void, empty="one", include_background=True
    )
    p1, t1 = one_hot(pred, C), one_hot(truth, C)  # void -> all-zero one-hot column
    monai_dice = DiceMetric(
        include_background=True, reduction="none", ignore_empty=False, ignore_index=void
    )(p1, t1)[0].numpy()
    monai_iou = compute_iou(p1, t1, include_background=True, ignore_empty=False, ignore_index=void)[
        0
    ].numpy()
    np.testing.assert_allclose(ours["dice"], monai_dice, rtol=1e-5)
    np.testing.assert_allclose(ours["iou"], monai_iou, rtol=1e-5)
    # and against the plain confusion matrix of the scored pixels
    keep = truth != void
    cm = confusion_matrix(truth[keep], pred[keep], labels=range(C))
    c = confusion_counts(pred, truth, num_classes=C, ignore_index=void)
    np.testing.assert_array_equal(c.tp, np.diag(cm))
    assert 0.5 < iou(pred, truth, num_classes=C, ignore_index=void) < 1.0


@pytest.mark.slow
def test_hippocampus_surface_scores_against_monai():
    nib = pytest.importorskip("nibabel")
    files = sorted((DATA / "hippocampus" / "labels").glob("*.nii.gz"))
    if not files:
        pytest.skip(f"hippocampus labels not found under {DATA}")
    img = nib.load(files[0])
    truth = np.rint(np.asanyarray(img.dataobj)).astype(np.int32)
    spacing = tuple(float(z) for z in img.header.get_zooms()[:3])
    # a plausible prediction: the truth shifted one voxel and eroded class 2
    pred = np.roll(truth, 1, axis=0)
    pred[(pred == 2) & ~ndi.binary_erosion(pred == 2)] = 0
    got = surface_scores(pred, truth, num_classes=3, spacing=spacing)
    p1, t1 = one_hot(pred, 3), one_hot(truth, 3)
    np.testing.assert_allclose(
        got["hd95"],
        monai_quiet(compute_hausdorff_distance, p1, t1, percentile=95, spacing=spacing)[0],
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        got["assd"],
        monai_quiet(compute_average_surface_distance, p1, t1, symmetric=True, spacing=spacing)[0],
        rtol=1e-6,
    )
    assert np.all(np.isfinite(got["hausdorff"])) and np.all(got["hausdorff"] >= 1.0)
