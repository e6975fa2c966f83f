"""Tests for segloc.boxes: published torchvision values, hand cases, and slow per-pair
Python references (hypothesis) for IoU, GIoU, NMS, batched NMS and Soft-NMS in 2D and 3D."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from segloc import boxes as B

# --------------------------------------------------------------------------- slow references


def ref_area(box):
    d = len(box) // 2
    return math.prod(box[d + k] - box[k] for k in range(d))


def ref_iou(a, b):
    d = len(a) // 2
    inter = 1.0
    for k in range(d):
        inter *= max(0.0, min(a[d + k], b[d + k]) - max(a[k], b[k]))
    union = ref_area(a) + ref_area(b) - inter
    return 0.0 if union == 0 else inter / union


def ref_giou(a, b):
    d = len(a) // 2
    iou = ref_iou(a, b)
    inter = 1.0
    for k in range(d):
        inter *= max(0.0, min(a[d + k], b[d + k]) - max(a[k], b[k]))
    union = ref_area(a) + ref_area(b) - inter
    hull = math.prod(max(a[d + k], b[d + k]) - min(a[k], b[k]) for k in range(d))
    return iou if hull == 0 else iou - (hull - union) / hull


def ref_nms(boxes, scores, thr):
    order = sorted(range(len(boxes)), key=lambda i: (-scores[i], i))
    keep = []
    for i in order:
        if all(ref_iou(boxes[i], boxes[k]) <= thr for k in keep):
            keep.append(i)
    return keep


def ref_batched_nms(boxes, scores, classes, thr):
    keep = []
    for c in set(classes):
        idx = [i for i in range(len(boxes)) if classes[i] == c]
        keep += [idx[k] for k in ref_nms([boxes[i] for i in idx], [scores[i] for i in idx], thr)]
    return sorted(keep, key=lambda i: (-scores[i], i))


def ref_soft_nms(boxes, scores, sigma, nt, thr, method):
    s = [float(v) for v in scores]
    alive = [i for i in range(len(boxes)) if s[i] >= thr]
    keep, kept = [], []
    while alive:
        i = max(alive, key=lambda k: (s[k], -k))
        keep.append(i)
        kept.append(s[i])
        alive.remove(i)
        for k in alive:
            o = ref_iou(boxes[i], boxes[k])
            if method == "gaussian":
                s[k] *= math.exp(-(o * o) / sigma)
            elif o >= nt:
                s[k] *= 1 - o
        alive = [k for k in alive if s[k] >= thr]
    return keep, kept


# --------------------------------------------------------------------------- strategies

# coordinates on a 0.5 grid: products and sums are exact, so the slow reference and the
# vectorised code agree bit for bit and threshold ties are decided identically
coord = st.integers(0, 40).map(lambda v: v / 2)


@st.composite
def box_sets(draw, dim=None, min_size=0, max_size=8):
    d = draw(st.sampled_from([2, 3])) if dim is None else dim
    n = draw(st.integers(min_size, max_size))
    out = []
    for _ in range(n):
        lo = [draw(coord) for _ in range(d)]
        size = [draw(st.integers(0, 12).map(lambda v: v / 2)) for _ in range(d)]
        out.append(lo + [a + s for a, s in zip(lo, size, strict=True)])
    return np.array(out, np.float64).reshape(n, 2 * d)


threshold = st.sampled_from([0.0, 0.1, 0.25, 0.3, 0.5, 0.7, 1.0])


# --------------------------------------------------------------------------- published values

TV_BOXES = [[0, 0, 100, 100], [0, 0, 50, 50], [200, 200, 300, 300], [0, 0, 25, 25]]
TV_IOU = [[1, 0.25, 0], [0.25, 1, 0], [0, 0, 1], [0.0625, 0.25, 0]]


@pytest.mark.parametrize("kind", ["numpy", "float32", "float64", "int64"])
def test_box_iou_torchvision_values(kind):
    if kind == "numpy":
        b = np.array(TV_BOXES)
    else:
        b = torch.tensor(TV_BOXES, dtype=getattr(torch, kind))
    iou = B.box_iou(b, b[:3])
    np.testing.assert_allclose(np.asarray(iou), TV_IOU, atol=1e-7)
    if kind != "numpy":
        assert isinstance(iou, torch.Tensor)
        assert iou.dtype == (torch.float64 if kind == "int64" else getattr(torch, kind))


def test_generalized_box_iou_torchvision_value():
    g = B.generalized_box_iou(np.array(TV_BOXES[:1]), np.array(TV_BOXES[2:3]))
    assert g.shape == (1, 1)
    assert g[0, 0] == pytest.approx(-7 / 9, abs=1e-12)  # torchvision: -0.7778
    assert round(float(g[0, 0]), 4) == -0.7778


@pytest.mark.parametrize(
    ("a", "b", "iou", "giou"),
    [
        ([0, 0, 2, 2], [1, 0, 3, 2], 1 / 3, 1 / 3),
        ([0, 0, 1, 1], [2, 0, 3, 1], 0.0, -1 / 3),
        ([0, 0, 1, 1], [1, 1, 2, 2], 0.0, -0.5),  # touching corners: no overlap
        ([0, 0, 0, 2, 2, 2], [1, 1, 1, 3, 3, 3], 1 / 15, 1 / 15 - (27 - 15) / 27),
        ([0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1, 1], 1.0, 1.0),
        ([1, 1, 1, 1], [1, 1, 1, 1], 0.0, 0.0),  # zero-size: 0 rather than NaN
    ],
)
def test_iou_giou_hand_cases(a, b, iou, giou):
    assert B.box_iou([a], [b])[0, 0] == pytest.approx(iou)
    assert B.generalized_box_iou([a], [b])[0, 0] == pytest.approx(giou)


# --------------------------------------------------------------------------- oracle checks


@settings(max_examples=60, deadline=None)
@given(box_sets(), st.data())
def test_iou_giou_match_reference(a, data):
    d = a.shape[1] // 2
    b = data.draw(box_sets(dim=d))
    iou = B.box_iou(a, b)
    giou = B.generalized_box_iou(a, b)
    assert iou.shape == giou.shape == (len(a), len(b))
    for i in range(len(a)):
        for j in range(len(b)):
            assert iou[i, j] == pytest.approx(ref_iou(a[i].tolist(), b[j].tolist()), abs=1e-12)
            assert giou[i, j] == pytest.approx(ref_giou(a[i].tolist(), b[j].tolist()), abs=1e-12)
    assert np.all(giou <= iou + 1e-12) and np.all(giou > -1 - 1e-12)


@settings(max_examples=60, deadline=None)
@given(box_sets(max_size=12), threshold, st.data())
def test_nms_matches_reference(b, thr, data):
    scores = np.array(data.draw(st.lists(st.integers(0, 5), min_size=len(b), max_size=len(b))))
    keep = B.nms(b, scores / 5, thr)  # few distinct values: ties exercise the order rule
    assert keep.dtype == np.int64
    assert keep.tolist() == ref_nms(b.tolist(), scores.tolist(), thr)
    kt = B.nms(torch.from_numpy(b), torch.from_numpy(scores / 5), thr)
    assert kt.dtype == torch.int64 and kt.tolist() == keep.tolist()


@settings(max_examples=60, deadline=None)
@given(box_sets(max_size=12), threshold, st.data())
def test_batched_nms_matches_reference(b, thr, data):
    n = len(b)
    scores = data.draw(st.lists(st.integers(0, 5), min_size=n, max_size=n))
    classes = data.draw(st.lists(st.sampled_from([-3, 0, 7]), min_size=n, max_size=n))
    keep = B.batched_nms(b, np.array(scores, float), np.array(classes, np.int64), thr)
    assert keep.tolist() == ref_batched_nms(b.tolist(), scores, classes, thr)
    kt = B.batched_nms(
        torch.from_numpy(b), torch.tensor(scores, dtype=torch.float64), torch.tensor(classes), thr
    )
    assert kt.tolist() == keep.tolist()


@settings(max_examples=40, deadline=None)
@given(
    box_sets(max_size=10),
    st.sampled_from(["gaussian", "linear"]),
    st.sampled_from([0.1, 0.5, 2.0]),
    st.data(),
)
def test_soft_nms_matches_reference(b, method, sigma, data):
    n = len(b)
    scores = data.draw(st.lists(st.integers(0, 20), min_size=n, max_size=n))
    s = np.array(scores, float) / 20
    keep, kept = B.soft_nms(b, s, sigma=sigma, method=method, score_threshold=0.05)
    rkeep, rkept = ref_soft_nms(b.tolist(), s.tolist(), sigma, 0.3, 0.05, method)
    assert keep.tolist() == rkeep
    np.testing.assert_allclose(kept, rkept, rtol=1e-12)
    assert np.all(np.diff(kept) <= 0)
    kt, st_ = B.soft_nms(
        torch.from_numpy(b), torch.from_numpy(s), sigma=sigma, method=method, score_threshold=0.05
    )
    assert kt.tolist() == rkeep
    np.testing.assert_allclose(st_.numpy(), rkept, rtol=1e-12)


def test_soft_nms_hand_case():
    # IoU of the two boxes = 1/3: linear keeps 0.8 * (1 - 1/3), gaussian 0.8 * exp(-(1/9)/0.5)
    b = [[0, 0, 2, 1], [1, 0, 3, 1], [10, 10, 11, 11]]
    keep, s = B.soft_nms(b, [0.9, 0.8, 0.1], method="linear")
    assert keep.tolist() == [0, 1, 2]
    np.testing.assert_allclose(s, [0.9, 0.8 * 2 / 3, 0.1])
    keep, s = B.soft_nms(b, [0.9, 0.8, 0.1], method="linear", iou_threshold=0.5)
    np.testing.assert_allclose(s, [0.9, 0.8, 0.1])  # below N_t: untouched
    keep, s = B.soft_nms(b, [0.9, 0.8, 0.1])
    np.testing.assert_allclose(s, [0.9, 0.8 * math.exp(-(1 / 9) / 0.5), 0.1])
    keep, s = B.soft_nms(b, [0.9, 0.8, 0.1], score_threshold=0.5)
    assert keep.tolist() == [0, 1]


def test_nms_hand_case_and_threshold_is_strict():
    b = [[0, 0, 2, 1], [1, 0, 3, 1], [20, 20, 30, 30]]  # IoU(0, 1) = 1/3
    assert B.nms(b, [0.9, 0.8, 0.7], 0.3).tolist() == [0, 2]
    assert B.nms(b, [0.9, 0.8, 0.7], 1 / 3).tolist() == [0, 1, 2]  # IoU == threshold kept
    assert B.nms(b, [0.1, 0.8, 0.7], 0.3).tolist() == [1, 2]
    assert B.nms(b, [0.5, 0.5, 0.5], 0.0).tolist() == [0, 2]  # ties: lower index first


def test_batched_nms_negative_coordinates_do_not_mix_classes():
    # all coordinates <= 0: torchvision's offset (max + 1) * class would make these overlap
    b = [[-10, -10, 0, 0], [-10, -10, 0, 0]]
    assert B.batched_nms(b, [0.9, 0.8], [0, 1], 0.5).tolist() == [0, 1]
    assert B.batched_nms(b, [0.9, 0.8], [1, 1], 0.5).tolist() == [0]


# --------------------------------------------------------------------------- formats, area, clip


@settings(max_examples=40, deadline=None)
@given(box_sets(min_size=1))
def test_format_round_trips(b):
    fmts = B.FORMATS_2D if b.shape[1] == 4 else B.FORMATS_3D
    for f in fmts[1:]:
        there = B.convert(b, fmts[0], f)
        np.testing.assert_allclose(B.convert(there, f, fmts[0]), b, atol=1e-12)
        for g in fmts[1:]:
            np.testing.assert_allclose(B.convert(there, f, g), B.convert(b, fmts[0], g), atol=1e-12)


@pytest.mark.parametrize(
    ("box", "fmt", "expected"),
    [
        ([1, 2, 4, 8], "xywh", [1, 2, 3, 6]),
        ([1, 2, 4, 8], "cxcywh", [2.5, 5, 3, 6]),
        ([1, 2, 3, 4, 8, 5], "xyzwhd", [1, 2, 3, 3, 6, 2]),
        ([1, 2, 3, 4, 8, 5], "cxcyczwhd", [2.5, 5, 4, 3, 6, 2]),
    ],
)
def test_convert_hand_cases(box, fmt, expected):
    src = "xyxy" if len(box) == 4 else "xyzxyz"
    np.testing.assert_array_equal(B.convert([box], src, fmt), [expected])
    out = B.convert(torch.tensor([box], dtype=torch.float32), src, fmt)
    assert out.dtype == torch.float32
    np.testing.assert_array_equal(out.numpy(), [expected])


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (([[0, 0, 1, 1]], "xyxy", "xyzxyz"), "out_fmt must be a 2D format"),
        (([[0, 0, 1, 1]], "xyxy", "ltrb"), "out_fmt must be one of"),
        (([[0, 0, 1, 1]], "xyzxyz", "xyzwhd"), r"shape \(N, 6\)"),
        (([[0, 0, -1, 1]], "xywh", "xyxy"), "sizes must be >= 0"),
    ],
)
def test_convert_errors(args, match):
    with pytest.raises(ValueError, match=match):
        B.convert(*args)


def test_box_area_2d_3d_and_torch():
    np.testing.assert_array_equal(B.box_area([[0, 0, 2, 3], [1, 1, 1, 5]]), [6, 0])
    np.testing.assert_array_equal(B.box_area([[0, 0, 0, 2, 3, 4]]), [24])
    t = B.box_area(torch.tensor([[0.0, 0, 2, 3]]))
    assert isinstance(t, torch.Tensor) and t.tolist() == [6.0]
    assert B.box_area(np.zeros((0, 6))).shape == (0,)


def test_clip_boxes_2d_3d():
    b = [[-2, 1, 9, 4], [6, 6, 8, 8]]
    np.testing.assert_array_equal(B.clip_boxes(b, (3, 5)), [[0, 1, 5, 3], [5, 3, 5, 3]])
    np.testing.assert_array_equal(B.clip_boxes(b, (3, 5, 3)), B.clip_boxes(b, (3, 5)))  # RGB
    b3 = [[-1, -1, -1, 10, 10, 10]]
    np.testing.assert_array_equal(B.clip_boxes(b3, (4, 5, 6)), [[0, 0, 0, 5, 4, 6]])
    t = B.clip_boxes(torch.tensor(b, dtype=torch.float32), (3, 5))
    np.testing.assert_array_equal(t.numpy(), [[0, 1, 5, 3], [5, 3, 5, 3]])
    with pytest.raises(ValueError, match="shape must start with 3"):
        B.clip_boxes(b3, (4, 5))


def test_scale_boxes():
    np.testing.assert_array_equal(B.scale_boxes([[1, 2, 3, 4]], 2), [[2, 4, 6, 8]])
    np.testing.assert_array_equal(B.scale_boxes([[1, 2, 3, 4]], (10, 2)), [[2, 20, 6, 40]])
    np.testing.assert_array_equal(
        B.scale_boxes([[1, 1, 1, 2, 2, 2]], (2, 3, 4)), [[3, 2, 4, 6, 4, 8]]
    )
    t = B.scale_boxes(torch.tensor([[1, 2, 3, 4]], dtype=torch.float32), 0.5)
    assert t.dtype == torch.float32 and t.tolist() == [[0.5, 1, 1.5, 2]]
    with pytest.raises(ValueError, match="factor must be finite and > 0"):
        B.scale_boxes([[1, 2, 3, 4]], 0)


# --------------------------------------------------------------------------- numpy vs torch


@settings(max_examples=30, deadline=None)
@given(box_sets(), st.data())
def test_numpy_and_torch_agree(a, data):
    b = data.draw(box_sets(dim=a.shape[1] // 2))
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    for f in (B.box_iou, B.generalized_box_iou):
        out = f(ta, tb)
        assert isinstance(out, torch.Tensor) and out.dtype == torch.float64
        np.testing.assert_array_equal(out.numpy(), f(a, b))
    np.testing.assert_array_equal(B.box_area(ta).numpy(), B.box_area(a))


def test_giou_gradient_is_finite_for_degenerate_boxes():
    a = torch.tensor([[1.0, 1, 1, 1], [0, 0, 2, 2]], requires_grad=True)
    B.generalized_box_iou(a, a.detach()).sum().backward()
    assert torch.isfinite(a.grad).all()


# --------------------------------------------------------------------------- empty input, errors


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_empty_inputs(kind):
    e = np.zeros((0, 4)) if kind == "numpy" else torch.zeros(0, 4)
    s = np.zeros(0) if kind == "numpy" else torch.zeros(0)
    c = np.zeros(0, np.int64) if kind == "numpy" else torch.zeros(0, dtype=torch.int64)
    one = np.array([[0.0, 0, 1, 1]]) if kind == "numpy" else torch.tensor([[0.0, 0, 1, 1]])
    for keep in (B.nms(e, s, 0.5), B.batched_nms(e, s, c, 0.5), B.soft_nms(e, s)[0]):
        assert tuple(keep.shape) == (0,)
        assert keep.dtype == (np.int64 if kind == "numpy" else torch.int64)
    assert tuple(B.box_iou(e, one).shape) == (0, 1)
    assert tuple(B.generalized_box_iou(one, e).shape) == (1, 0)
    assert B.nms([], [], 0.5).dtype == np.int64
    assert B.convert([], "xyzxyz", "cxcyczwhd").shape == (0, 6)


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda: B.check_boxes([[0, 0, 1, 1], [3, 0, 1, 1]]), ValueError, r"boxes\[1\].*3\.0"),
        (lambda: B.check_boxes([[0, 0, 1, 1, 1, 0.5]]), ValueError, r"boxes\[0\]"),
        (lambda: B.check_boxes([[0, 0, 1]]), ValueError, r"shape \(N, 4\) or \(N, 6\)"),
        (lambda: B.check_boxes([[0, 0, np.nan, 1]]), ValueError, "finite"),
        (lambda: B.check_boxes([["a", "b", "c", "d"]]), TypeError, "numeric"),
        (lambda: B.box_iou([[0, 0, 1, 1]], [[0, 0, 0, 1, 1, 1]]), ValueError, "both be 2D"),
        (lambda: B.box_iou([[0, 0, 1, 1]], [[2, 0, 1, 1]]), ValueError, r"boxes2\[0\]"),
        (lambda: B.nms([[0, 0, 1, 1]], [0.5, 0.2], 0.5), ValueError, "one value per box"),
        (lambda: B.nms([[0, 0, 1, 1]], [0.5], 1.5), ValueError, r"iou_threshold must be in"),
        (lambda: B.batched_nms([[0, 0, 1, 1]], [0.5], [0.5], 0.5), TypeError, "integers"),
        (lambda: B.soft_nms([[0, 0, 1, 1]], [0.5], method="hard"), ValueError, "method"),
        (lambda: B.soft_nms([[0, 0, 1, 1]], [0.5], sigma=0), ValueError, "sigma"),
        (
            lambda: B.box_iou(torch.zeros(1, 4), np.zeros((1, 4))),
            TypeError,
            "both be NumPy arrays or both torch",
        ),
    ],
)
def test_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_import_does_not_import_torch():
    code = "import sys, segloc.boxes; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
