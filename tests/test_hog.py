"""Tests for segloc.localize.hog: pyramid, windows, the HOG + SVM detector."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.feature import hog

from segloc.boxes import box_iou
from segloc.detection_metrics import average_precision_at
from segloc.localize.hog import (
    HogSvmDetector,
    detect_windows,
    pyramid,
    window_boxes,
    window_view,
)


def squares_image(rng, shape=(96, 96), n=1, sizes=(32, 48)):
    """Noise with ``n`` bright squares, one per vertical band (no overlap); (image, boxes)."""
    img = rng.random(shape) * 0.5
    band = shape[1] // n
    boxes = []
    for k in range(n):
        s = int(rng.integers(sizes[0], min(sizes[1], band) + 1))
        y = int(rng.integers(0, shape[0] - s + 1))
        x = k * band + int(rng.integers(0, band - s + 1))
        img[y : y + s, x : x + s] += 0.5
        boxes.append([x, y, x + s, y + s])
    return img, np.array(boxes, float)


# --------------------------------------------------------------------------- windows


@pytest.mark.parametrize(
    ("shape", "window", "stride"),
    [
        ((20, 30), (8, 8), (4, 4)),
        ((21, 17), (5, 7), (3, 2)),
        ((16, 16), 16, 1),
        ((12, 15, 3), (4, 6), (2, 5)),
    ],
)
def test_window_view_equals_slow_loop(shape, window, stride):
    rng = np.random.default_rng(1)
    img = rng.random(shape)
    view = window_view(img, window, stride=stride)
    boxes = window_boxes(shape, window, stride=stride)
    wh, ww = (window, window) if isinstance(window, int) else window
    sy, sx = (stride, stride) if isinstance(stride, int) else stride
    slow, slow_boxes = [], []
    for y in range(0, shape[0] - wh + 1, sy):
        row = []
        for x in range(0, shape[1] - ww + 1, sx):
            row.append(img[y : y + wh, x : x + ww])
            slow_boxes.append([x, y, x + ww, y + wh])
        slow.append(row)
    np.testing.assert_array_equal(view, np.array(slow))
    np.testing.assert_array_equal(boxes, np.array(slow_boxes, float))
    assert not view.flags.writeable  # a view, not a copy
    assert np.shares_memory(view, img)


def test_window_view_window_larger_than_image():
    view = window_view(np.zeros((5, 5)), (8, 4))
    assert view.shape == (0, 0, 8, 4)
    assert window_boxes((5, 5), (8, 4)).shape == (0, 4)


@pytest.mark.parametrize(
    ("shape", "scale", "min_size", "expected"),
    [
        ((100, 80), 2.0, 20, [(100, 80), (50, 40), (25, 20)]),
        ((64, 64), 1.25, (64, 64), [(64, 64)]),
        ((60, 64), 1.25, 64, []),
        # round(100 / 1.25**k): 100, 80, 64, 51.2 -> 51, 40.96 -> 41
        ((100, 200), 1.25, (41, 10), [(100, 200), (80, 160), (64, 128), (51, 102), (41, 82)]),
    ],
)
def test_pyramid_shapes(shape, scale, min_size, expected):
    levels = pyramid(np.ones(shape), scale=scale, min_size=min_size)
    assert [lv.shape for lv in levels] == expected
    for lv in levels:
        np.testing.assert_allclose(lv, 1.0)  # a constant image stays constant


def test_pyramid_colour_and_identity_first_level():
    img = np.random.default_rng(0).random((40, 30, 3)).astype(np.float32)
    levels = pyramid(img, scale=2, min_size=10)
    assert [lv.shape for lv in levels] == [(40, 30, 3), (20, 15, 3)]
    assert levels[0] is img
    assert levels[1].dtype == np.float32


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"scale": 1.0, "min_size": 4}, ValueError),
        ({"scale": 0.5, "min_size": 4}, ValueError),
        ({"scale": 2, "min_size": 0}, ValueError),
        ({"scale": 2, "min_size": 2.5}, TypeError),
    ],
)
def test_pyramid_rejects_bad_options(kwargs, error):
    with pytest.raises(error):
        pyramid(np.zeros((10, 10)), **kwargs)


# --------------------------------------------------------------------------- scorer scan


def mean_scorer(windows):
    return windows.reshape(len(windows), -1).mean(axis=1)


def test_detect_windows_nms_across_scales_removes_duplicates():
    img = np.zeros((96, 96), np.float32)
    img[16:48, 40:72] = 1.0  # 32 x 32: fits the 32 window at level 0, near it at level 1
    kwargs = {"window": 32, "stride": 4, "scale": 1.25, "score_threshold": 0.6}
    all_boxes, all_scores, _ = detect_windows(img, mean_scorer, iou_threshold=1.0, **kwargs)
    assert len(all_boxes) > 10  # many overlapping windows over the square, at two scales
    sizes = set(np.round(all_boxes[:, 2] - all_boxes[:, 0], 3))
    assert len(sizes) >= 2  # duplicates come from more than one level
    boxes, scores, _ = detect_windows(img, mean_scorer, iou_threshold=0.3, **kwargs)
    assert len(boxes) == 1
    np.testing.assert_array_equal(boxes[0], [40, 16, 72, 48])
    assert scores[0] == pytest.approx(1.0)
    # what remains overlaps nothing kept above the threshold
    iou = box_iou(boxes, boxes)
    assert (iou[~np.eye(len(boxes), dtype=bool)] <= 0.3).all()


def test_detect_windows_batches_and_stats():
    rng = np.random.default_rng(2)
    img = rng.random((70, 90))
    sizes = []

    def recording(windows):
        assert windows.dtype == np.float32 and windows.shape[1:] == (16, 24)
        sizes.append(len(windows))
        return mean_scorer(windows)

    opts = {"window": (16, 24), "stride": (4, 6), "scale": 1.5, "score_threshold": -1.0}
    b1, s1, stats = detect_windows(img, recording, batch_size=1, **opts)
    assert max(sizes) == 12  # one row of windows at level 0: (90 - 24) // 6 + 1
    sizes.clear()
    b2, s2, stats2 = detect_windows(img, recording, batch_size=10_000, **opts)
    assert len(sizes) == len(pyramid(img, scale=1.5, min_size=(16, 24)))  # one batch per level
    np.testing.assert_array_equal(b1, b2)
    np.testing.assert_allclose(s1, s2)
    # windows counted per level by hand: (H - 16) // 4 + 1 rows, (W - 24) // 6 + 1 columns
    expected = sum(
        ((lv.shape[0] - 16) // 4 + 1) * ((lv.shape[1] - 24) // 6 + 1)
        for lv in pyramid(img, scale=1.5, min_size=(16, 24))
    )
    assert stats.windows == stats2.windows == expected
    assert stats.levels == 4  # round(70 / 1.5**k) = 70, 47, 31, 21 (then 14 < 16)
    assert stats.windows_per_second > 0


def test_detect_windows_accepts_a_torch_scorer():
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 1, 3), torch.nn.AdaptiveAvgPool2d(1))

    def scorer(windows):  # (N, h, w, C) -> (N,)
        with torch.no_grad():
            return model(torch.from_numpy(windows).permute(0, 3, 1, 2)).flatten()

    img = np.random.default_rng(0).random((40, 40, 3))
    boxes, scores, stats = detect_windows(
        img, scorer, window=16, stride=8, score_threshold=-10.0, iou_threshold=1.0
    )
    # levels 40, 32, 26, 20, 16 pixels: ((n - 16) // 8 + 1) ** 2 windows each
    assert len(boxes) == stats.windows == 16 + 9 + 4 + 1 + 1
    assert np.all(np.diff(scores) <= 0)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"scorer": 3}, TypeError, "scorer"),
        ({"scorer": lambda w: np.zeros(2)}, ValueError, "one score per window"),
        ({"iou_threshold": 1.5}, ValueError, "iou_threshold"),
        ({"max_detections": 0}, ValueError, "max_detections"),
        ({"score_threshold": float("nan")}, ValueError, "score_threshold"),
    ],
)
def test_detect_windows_errors(kwargs, error, match):
    args = {"scorer": mean_scorer, "window": 8} | kwargs
    with pytest.raises(error, match=match):
        detect_windows(np.zeros((20, 20)), args.pop("scorer"), **args)


# --------------------------------------------------------------------------- HOG + SVM


@pytest.fixture(scope="module")
def squares_detector():
    rng = np.random.default_rng(0)
    data = [squares_image(rng, n=int(rng.integers(1, 3))) for _ in range(16)]
    det = HogSvmDetector((32, 32), C=1.0).fit(
        [d[0] for d in data], [d[1] for d in data], negatives_per_image=30, seed=0
    )
    return det


def test_dense_hog_scores_equal_per_window_loop(squares_detector):
    """Every window's score from the per-level HOG equals HOG of that window cut alone."""
    det = squares_detector
    cell = det.cell
    img, _ = squares_image(np.random.default_rng(5), shape=(72, 88))
    found = det.detect(img, score_threshold=-1e9, iou_threshold=1.0, max_detections=10**6)
    boxes, scores = found.boxes, found.scores
    got = {tuple(np.round(b, 6)): s for b, s in zip(boxes, scores, strict=True)}
    n = 0
    for level in pyramid(img, scale=det.scale, min_size=det.window_):
        fy, fx = img.shape[0] / level.shape[0], img.shape[1] / level.shape[1]
        padded = np.pad(level, cell, mode="reflect")
        patches, keys = [], []
        for y in range(0, level.shape[0] - 32 + 1, cell):
            for x in range(0, level.shape[1] - 32 + 1, cell):
                patches.append(padded[y : y + 32 + 2 * cell, x : x + 32 + 2 * cell])
                keys.append(tuple(np.round([x * fx, y * fy, (x + 32) * fx, (y + 32) * fy], 6)))
        slow = det.decision_function(np.array(patches))
        np.testing.assert_allclose([got[k] for k in keys], slow, rtol=1e-10, atol=1e-10)
        n += len(keys)
    assert n == len(got) == det.scan_stats_.windows


def test_decision_function_is_linear_svm_on_skimage_hog(squares_detector):
    """Independent of the dense path: scikit-image HOG of the window, dot the weights."""
    det = squares_detector
    patch = np.random.default_rng(3).random((48, 48))
    feats = hog(
        patch,
        orientations=9,
        pixels_per_cell=(8, 8),
        cells_per_block=(2, 2),
        block_norm="L2-Hys",
        feature_vector=False,
    )[1:4, 1:4]  # the window's 3 x 3 blocks, past the one-cell margin
    expected = feats.reshape(-1) @ det.coef_.reshape(-1) + det.intercept_
    assert det.decision_function(patch[None])[0] == pytest.approx(expected)
    assert det.n_features == 3 * 3 * 2 * 2 * 9


def test_hog_svm_finds_squares(squares_detector):
    det = squares_detector
    rng = np.random.default_rng(100)
    aps, found = [], 0
    for _ in range(6):
        img, truth = squares_image(rng, n=2)
        dets = det.detect(img, score_threshold=-1.0, max_detections=10)
        boxes, scores = dets.boxes, dets.scores
        aps.append(average_precision_at(truth, boxes, scores, 0.5))
        if len(boxes):
            found += int((box_iou(truth, boxes).max(axis=1) >= 0.5).sum())
    assert found >= 10  # of 12 squares
    assert np.mean(aps) > 0.7
    assert det.training_stats_["positives"] > 0
    assert len(det.training_stats_["negatives_per_round"]) == 2
    assert det.scan_stats_.windows_per_second > 0


def test_hog_svm_window_from_median_aspect_and_determinism():
    rng = np.random.default_rng(4)
    imgs, boxes = [], []
    for _ in range(3):
        img = rng.random((80, 120)) * 0.5
        img[20:44, 10:58] += 0.5  # 48 wide, 24 high: aspect 2
        imgs.append(img)
        boxes.append([[10, 20, 58, 44]])
    a = HogSvmDetector(None, C=1.0).fit(imgs, boxes, negatives_per_image=5, seed=1)
    # 64 cells of 8 px at aspect 2: 6 x 11 cells (round(sqrt(32)), round(sqrt(128)))
    assert a.window_ == (48, 88)
    b = HogSvmDetector(None, C=1.0).fit(imgs, boxes, negatives_per_image=5, seed=1)
    np.testing.assert_array_equal(a.coef_, b.coef_)


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: HogSvmDetector((30, 32)), ValueError, "multiples of cell"),
        (lambda: HogSvmDetector((8, 32)), ValueError, "at least"),
        (lambda: HogSvmDetector(scale=1.0), ValueError, "scale"),
        (lambda: HogSvmDetector(C=0), ValueError, "C"),
        (lambda: HogSvmDetector().detect(np.zeros((80, 80))), ValueError, "fitted"),
        (lambda: HogSvmDetector().fit([np.zeros((80, 80))], []), ValueError, "one entry"),
        (
            lambda: HogSvmDetector().fit([np.zeros((80, 80))], [[[5, 5, 1, 9]]]),
            ValueError,
            "x1 >= x0",
        ),
        (lambda: HogSvmDetector().fit([np.zeros((80, 80))], [[]]), ValueError, "at least one"),
    ],
)
def test_hog_svm_errors(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_hog_svm_with_a_scorer_replaces_the_svm():
    img = np.zeros((64, 64), np.float32)
    img[8:40, 24:56] = 1.0
    det = HogSvmDetector((32, 32))  # not fitted: the scorer does the scoring
    boxes = det.detect(img, scorer=mean_scorer, score_threshold=0.9).boxes
    np.testing.assert_array_equal(boxes, [[24, 8, 56, 40]])
    # levels 64, 51, 41, 33 pixels: ((n - 32) // 8 + 1) ** 2 windows each
    assert det.scan_stats_.windows == 25 + 9 + 4 + 1
