"""Tests for segloc.masks: each function against an independent oracle or a hand case."""

import os
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage import measure, morphology

from _shapes import random_blobs
from segloc import coco, masks

# pycocotools' compiled decode (annToMask too) trips a NumPy 2 deprecation we cannot fix
PYCOCOTOOLS_NUMPY2 = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)
DATA = Path(os.environ.get("SEGLOC_DATA", Path(__file__).resolve().parents[1] / "../shared/data"))


# --------------------------------------------------------------------------- conversions


@pytest.mark.parametrize(
    ("values", "dtype", "expected"),
    [
        ([0, 1, 1], bool, [0, 1, 1]),
        ([0, 1, 0], np.uint8, [0, 1, 0]),
        ([0, 255, 255], np.uint8, [0, 1, 1]),
        ([255, 255, 255], np.uint8, [1, 1, 1]),
        ([1, 1, 1], np.int64, [1, 1, 1]),
        ([0.0, 1.0, 0.0], np.float32, [0, 1, 0]),
        ([0, 0, 0], np.int32, [0, 0, 0]),
    ],
)
def test_to_bool_accepts_binary_encodings(values, dtype, expected):
    out = masks.to_bool(np.array(values, dtype))
    assert out.dtype == np.bool_
    np.testing.assert_array_equal(out, np.array(expected, bool))
    u8 = masks.to_uint8(out)
    assert u8.dtype == np.uint8
    np.testing.assert_array_equal(u8, np.array(expected) * 255)


@pytest.mark.parametrize("values", [[0, 2], [1, 255], [0, 0.5], [0, -1]])
def test_to_bool_rejects_other_values(values):
    with pytest.raises(ValueError, match=r"mask must hold only 0/1 or 0/255 values, got values \["):
        masks.to_bool(np.array(values))


def test_to_bool_rejects_non_numeric():
    with pytest.raises(TypeError, match="mask must be a numeric array"):
        masks.to_bool(np.array(["a", "b"]))


@pytest.mark.parametrize("shape", [(7,), (6, 5), (4, 5, 3)])
def test_onehot_round_trip_against_eye(shape):
    labels = np.random.default_rng(1).integers(0, 5, shape)
    onehot = masks.label_to_onehot(labels, 5)
    assert onehot.shape == (5, *shape) and onehot.dtype == np.bool_
    # independent reference: rows of the identity matrix, class axis moved to the front
    expected = np.moveaxis(np.eye(5, dtype=bool)[labels], -1, 0)
    np.testing.assert_array_equal(onehot, expected)
    back = masks.onehot_to_label(onehot)
    assert back.dtype == np.int32
    np.testing.assert_array_equal(back, labels)


@pytest.mark.parametrize("ignore_index", [255, -1, 11, 0, 2])
def test_onehot_ignore_index_pixels_are_all_false(ignore_index):
    labels = np.array([[0, 1, 2], [ignore_index, 1, ignore_index]])
    onehot = masks.label_to_onehot(
        labels, 3 if ignore_index != 11 else 11, ignore_index=ignore_index
    )
    ignored = labels == ignore_index
    assert not onehot[:, ignored].any()
    # every other pixel has exactly one class, its own
    kept = ~ignored
    assert (onehot[:, kept].sum(axis=0) == 1).all()
    np.testing.assert_array_equal(masks.onehot_to_label(onehot)[kept], labels[kept])


@pytest.mark.parametrize(
    ("labels", "num_classes", "ignore_index", "match"),
    [
        ([0, 3], 3, None, r"labels must be in \[0, 3\) or ignore_index=None, got values \[3\]"),
        ([0, 255, 4], 3, 255, r"labels must be in \[0, 3\) or ignore_index=255, got values \[4\]"),
        ([-1, 0], 3, None, r"got values \[-1\]"),
    ],
)
def test_onehot_rejects_out_of_range(labels, num_classes, ignore_index, match):
    with pytest.raises(ValueError, match=match):
        masks.label_to_onehot(np.array(labels), num_classes, ignore_index=ignore_index)


def test_onehot_rejects_bad_num_classes_and_float_labels():
    with pytest.raises(ValueError, match="num_classes must be >= 1, got 0"):
        masks.label_to_onehot(np.zeros(3, int), 0)
    with pytest.raises(TypeError, match="labels must be an integer array, got dtype float64"):
        masks.label_to_onehot(np.zeros(3), 2)


def test_onehot_to_label_takes_argmax_of_scores():
    probs = np.array([[0.2, 0.7], [0.5, 0.1], [0.3, 0.2]])  # (C=3, 2 pixels)
    np.testing.assert_array_equal(masks.onehot_to_label(probs), [1, 0])


def test_split_classes():
    labels = np.array([[0, 2, 2], [5, 0, 2]])
    out = masks.split_classes(labels)
    assert list(out) == [2, 5]
    np.testing.assert_array_equal(out[2], [[0, 1, 1], [0, 0, 1]])
    np.testing.assert_array_equal(out[5], [[0, 0, 0], [1, 0, 0]])
    listed = masks.split_classes(labels, classes=[7, 0])
    assert list(listed) == [0, 7]
    np.testing.assert_array_equal(listed[0], labels == 0)
    assert not listed[7].any()


def test_split_classes_accepts_float_labels_with_integer_values():
    # MSD hippocampus labels are stored as float32
    out = masks.split_classes(np.array([0.0, 1.0, 2.0], np.float32))
    assert list(out) == [1, 2]
    with pytest.raises(ValueError, match="labels must hold integer values"):
        masks.split_classes(np.array([0.0, 1.5]))
    with pytest.raises(ValueError, match="labels must be >= 0, got minimum -2"):
        masks.split_classes(np.array([0, -2]))


# --------------------------------------------------------------------------- instances


# --------------------------------------------------------------------------- components and cleanup


@pytest.mark.parametrize(
    ("shape", "connectivity", "rank"),
    [
        ((25, 31), 4, 1),
        ((25, 31), 8, 2),
        ((25, 31), 1, 1),
        ((9, 8, 7), 6, 1),
        ((9, 8, 7), 18, 2),
        ((9, 8, 7), 26, 3),
    ],
)
def test_connected_components_match_skimage(shape, connectivity, rank):
    mask = random_blobs(shape, seed=4, density=0.45, sigma=0.7)
    labels, count = masks.connected_components(mask, connectivity=connectivity)
    ref, ref_count = measure.label(mask, connectivity=rank, return_num=True)
    assert labels.dtype == np.int32 and count == ref_count > 1
    # both number components in raster order of their first pixel
    np.testing.assert_array_equal(labels, ref)


@pytest.mark.parametrize(
    ("offset", "counts"),
    [
        ((1, 1, 1), {6: 2, 18: 2, 26: 1}),  # touching only at a corner
        ((1, 1, 0), {6: 2, 18: 1, 26: 1}),  # touching along an edge
        ((1, 0, 0), {6: 1, 18: 1, 26: 1}),  # sharing a face
    ],
)
def test_3d_connectivity_hand_cases(offset, counts):
    vol = np.zeros((3, 3, 3), bool)
    vol[0, 0, 0] = True
    vol[offset] = True
    for connectivity, expected in counts.items():
        assert masks.connected_components(vol, connectivity=connectivity)[1] == expected


@pytest.mark.parametrize(
    ("shape", "connectivity"), [((5, 5), 6), ((5, 5), 3), ((4, 4, 4), 8), ((4, 4, 4), 0)]
)
def test_bad_connectivity_message(shape, connectivity):
    with pytest.raises(
        ValueError,
        match=rf"connectivity must be one of .* for a {len(shape)}D array, got {connectivity}",
    ):
        masks.connected_components(np.zeros(shape, bool), connectivity=connectivity)


@pytest.mark.parametrize(
    ("shape", "min_size", "connectivity"),
    [
        ((40, 50), 5, 1),
        ((40, 50), 12, 2),
        ((40, 50), 1, 1),
        ((40, 50), 0, 1),
        ((12, 12, 10), 8, 1),
        ((12, 12, 10), 20, 3),
    ],
)
def test_remove_small_objects_matches_skimage(shape, min_size, connectivity):
    # sparse enough in 3D that 26-connectivity still leaves several objects
    mask = random_blobs(shape, seed=5, density=0.35 if len(shape) == 2 else 0.2, sigma=0.8)
    out = masks.remove_small_objects(mask, min_size, connectivity=connectivity)
    # skimage >= 0.26: max_size removes objects of <= max_size pixels
    ref = (
        morphology.remove_small_objects(mask, max_size=min_size - 1, connectivity=connectivity)
        if min_size
        else mask
    )
    assert out.dtype == np.bool_
    np.testing.assert_array_equal(out, ref)
    # the test is not empty: some objects were removed and some kept
    if min_size > 1:
        assert 0 < out.sum() < mask.sum()


def test_remove_small_objects_on_label_maps_counts_whole_labels():
    labels = np.zeros((6, 8), np.int32)
    labels[0, 0] = labels[5, 7] = 3  # label 3: two separate pixels, size 2
    labels[2:4, 2:5] = 1000  # size 6, sparse id
    labels[0, 4] = 7  # size 1
    out = masks.remove_small_objects(labels, 2)
    assert out.dtype == np.int32
    ref = morphology.remove_small_objects(labels, max_size=1)
    np.testing.assert_array_equal(out, ref)
    assert out[0, 0] == 3 and out[0, 4] == 0 and (out[2:4, 2:5] == 1000).all()


def test_remove_small_objects_rejects_bad_input():
    with pytest.raises(ValueError, match="min_size must be >= 0, got -1"):
        masks.remove_small_objects(np.zeros((3, 3), bool), -1)
    with pytest.raises(
        TypeError, match="mask must be a bool mask or an integer label map, got dtype float64"
    ):
        masks.remove_small_objects(np.zeros((3, 3)), 2)
    with pytest.raises(ValueError, match="mask must be >= 0 as a label map, got minimum -1"):
        masks.remove_small_objects(-np.ones((3, 3), int), 2)


def fill_holes_reference(mask):
    """Slow obvious reference: background components (faces) that do not touch the border."""
    bg, n = ndi.label(~mask)
    border = np.zeros(mask.shape, bool)
    for axis in range(mask.ndim):
        border[(slice(None),) * axis + (0,)] = True
        border[(slice(None),) * axis + (-1,)] = True
    outside = np.unique(bg[border & (bg > 0)])
    return mask | ((bg > 0) & ~np.isin(bg, outside))


@pytest.mark.parametrize("shape", [(40, 50), (12, 14, 10)])
def test_fill_holes_matches_reference(shape):
    mask = random_blobs(shape, seed=6, density=0.6, sigma=0.8)
    out = masks.fill_holes(mask)
    ref = fill_holes_reference(mask)
    assert out.dtype == np.bool_ and ref.sum() > mask.sum()  # there were holes to fill
    np.testing.assert_array_equal(out, ref)


def test_fill_holes_hand_case():
    ring = (
        np.array(
            [
                [0, 0, 0, 0, 0],
                [0, 1, 1, 1, 0],
                [0, 1, 0, 1, 0],
                [0, 1, 1, 1, 0],
                [0, 0, 0, 0, 0],
            ],
            np.uint8,
        )
        * 255
    )
    out = masks.fill_holes(ring)
    expected = ring > 0
    expected[2, 2] = True
    np.testing.assert_array_equal(out, expected)
    # a pocket open to the border through a face is not a hole
    ring[2, 3] = 0
    ring[2, 4] = 0
    np.testing.assert_array_equal(masks.fill_holes(ring), ring > 0)


def test_keep_largest_hand_cases():
    mask = np.array([[1, 1, 0, 0], [0, 0, 0, 1], [1, 0, 1, 1]], bool)
    # 4-connected: {(0,0),(0,1)} size 2, {(1,3),(2,2),(2,3)} size 3, {(2,0)} size 1
    np.testing.assert_array_equal(
        masks.keep_largest(mask), [[0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 1]]
    )
    tie = np.array([[1, 0, 1]], bool)
    np.testing.assert_array_equal(masks.keep_largest(tie), [[1, 0, 0]])  # first in raster order
    diag = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], bool)
    np.testing.assert_array_equal(masks.keep_largest(diag, connectivity=8), diag)
    assert masks.keep_largest(diag, connectivity=4).sum() == 1
    empty = masks.keep_largest(np.zeros((3, 3), bool))
    assert empty.dtype == np.bool_ and not empty.any()


@pytest.mark.parametrize("shape", [(40, 50), (10, 12, 9)])
def test_keep_largest_matches_regionprops(shape):
    mask = random_blobs(shape, seed=7, density=0.4, sigma=0.8)
    props = measure.regionprops(measure.label(mask, connectivity=1))
    largest = max(props, key=lambda p: p.area)
    out = masks.keep_largest(mask)
    assert out.sum() == largest.area
    assert out[tuple(largest.coords.T)].all()


@pytest.mark.parametrize("op", ["opening", "closing"])
@pytest.mark.parametrize(
    ("shape", "radius"), [((40, 50), 1), ((40, 50), 3), ((12, 14, 10), 1), ((12, 14, 10), 2)]
)
def test_opening_closing_match_skimage(op, shape, radius):
    mask = random_blobs(shape, seed=8, density=0.5, sigma=1.0)
    out = getattr(masks, op)(mask, radius=radius)
    fp = (morphology.disk if len(shape) == 2 else morphology.ball)(radius)
    ref = getattr(morphology, op)(mask, fp, mode="ignore")
    assert out.dtype == np.bool_ and not np.array_equal(out, mask)
    np.testing.assert_array_equal(out, ref)
    # opening only removes, closing only adds
    assert (out <= mask).all() if op == "opening" else (out >= mask).all()


@pytest.mark.parametrize(("op", "cv_op"), [("opening", "MORPH_OPEN"), ("closing", "MORPH_CLOSE")])
def test_opening_closing_match_opencv(op, cv_op):
    cv2 = pytest.importorskip("cv2")
    mask = random_blobs((60, 45), seed=9, density=0.5, sigma=1.2)
    kernel = morphology.disk(2).astype(np.uint8)
    # OpenCV's default border value makes outside pixels neutral, as ours
    ref = cv2.morphologyEx(mask.astype(np.uint8), getattr(cv2, cv_op), kernel) > 0
    np.testing.assert_array_equal(getattr(masks, op)(mask, radius=2), ref)


def test_morphology_rejects_bad_radius_and_ndim():
    with pytest.raises(ValueError, match="radius must be >= 1, got 0"):
        masks.opening(np.zeros((5, 5), bool), radius=0)
    with pytest.raises(TypeError, match="radius must be an integer, got float"):
        masks.closing(np.zeros((5, 5), bool), radius=1.5)
    with pytest.raises(ValueError, match=r"mask must be 2D or 3D, got shape \(5,\)"):
        masks.fill_holes(np.zeros(5, bool))


# --------------------------------------------------------------------------- boxes


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: coco.voc_to_box(5, 1, 4, 2), "VOC box must have xmax >= xmin and ymax >= ymin"),
        (lambda: coco.box_to_voc([3, 3, 3, 5]), "box must have positive width and height for VOC"),
        (
            lambda: coco.box_to_coco([0, 0, 1, 1, 1, 1]),
            r"box must have 4 values, got shape \(6,\)",
        ),
        (lambda: coco.box_to_coco([5, 0, 1, 1]), "box must have x1 >= x0"),
        (lambda: coco.box_to_coco([0, 0, np.nan, 1]), "box must be finite"),
        (lambda: coco.coco_to_box([0, 0, -1, 2]), "bbox must be finite with width, height >= 0"),
        (lambda: coco.coco_to_box([0, 0, 1]), r"bbox must have 4 values \[x, y, width, height\]"),
    ],
)
def test_box_format_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# --------------------------------------------------------------------------- RLE


# --------------------------------------------------------------------------- COCO


# --------------------------------------------------------------------------- real data


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"open_radius": 1},
        {"close_radius": 2},
        {"fill": True},
        {"min_size": 20},
        {"largest": True},
        {"open_radius": 1, "close_radius": 1, "fill": True, "min_size": 10, "largest": True},
    ],
)
@pytest.mark.parametrize("shape", [(64, 64), (20, 24, 18)])
def test_clean_mask_is_the_chain_of_its_steps(options, shape):
    mask = random_blobs(shape, seed=3, density=0.45)
    expected = mask.copy()
    # oracle: scikit-image's own operations, in the documented order
    fp = morphology.disk if len(shape) == 2 else morphology.ball
    if options.get("open_radius"):
        expected = morphology.opening(expected, fp(options["open_radius"]), mode="ignore")
    if options.get("close_radius"):
        expected = morphology.closing(expected, fp(options["close_radius"]), mode="ignore")
    if options.get("fill"):
        expected = ndi.binary_fill_holes(expected)
    if options.get("min_size"):
        expected = morphology.remove_small_objects(expected, max_size=options["min_size"] - 1)
    if options.get("largest"):
        lab = measure.label(expected, connectivity=1)
        if lab.max():
            expected = lab == np.argmax(np.bincount(lab.ravel())[1:]) + 1
    out = masks.clean_mask(mask, **options)
    assert out.dtype == np.bool_
    np.testing.assert_array_equal(out, expected)


def test_clean_mask_rejects_negative_sizes():
    with pytest.raises(ValueError, match="min_size must be"):
        masks.clean_mask(np.ones((4, 4), bool), min_size=-1)
