"""Tests for segloc.masks: each function against an independent oracle or a hand case."""

import contextlib
import io
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import ndimage as ndi
from skimage import measure, morphology

from segloc import masks

# pycocotools' compiled decode (annToMask too) trips a NumPy 2 deprecation we cannot fix
PYCOCOTOOLS_NUMPY2 = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)
DATA = Path(os.environ.get("SEGLOC_DATA", Path(__file__).resolve().parents[1] / "../shared/data"))


def random_blobs(shape, *, seed, density=0.5, sigma=1.0):
    """Smooth random binary pattern: objects of many sizes, holes and touching corners."""
    rng = np.random.default_rng(seed)
    field = ndi.gaussian_filter(rng.random(shape), sigma)
    return field > np.quantile(field, 1 - density)


def random_labels(shape, *, seed, num_classes=4, sigma=1.0):
    rng = np.random.default_rng(seed)
    field = ndi.gaussian_filter(rng.random(shape), sigma)
    edges = np.quantile(field, np.linspace(0, 1, num_classes + 1)[1:-1])
    return np.digitize(field, edges).astype(np.int32)


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


def test_semantic_to_instances_hand_case():
    labels = np.array(
        [
            [1, 1, 0, 2],
            [0, 0, 0, 2],
            [1, 0, 2, 0],
        ]
    )
    inst, class_of = masks.semantic_to_instances(labels)
    expected = np.array(
        [
            [1, 1, 0, 3],
            [0, 0, 0, 3],
            [2, 0, 4, 0],
        ]
    )
    np.testing.assert_array_equal(inst, expected)
    assert inst.dtype == np.int32
    assert class_of == {1: 1, 2: 1, 3: 2, 4: 2}
    # with 8-connectivity the class-2 pixels touch at a corner
    inst8, class_of8 = masks.semantic_to_instances(labels, connectivity=8)
    assert class_of8 == {1: 1, 2: 1, 3: 2}
    assert inst8[2, 2] == inst8[0, 3] == 3
    only2, class_of2 = masks.semantic_to_instances(labels, classes=[2])
    assert class_of2 == {1: 2, 2: 2} and not only2[labels == 1].any()


@pytest.mark.parametrize(
    ("shape", "connectivity"), [((30, 40), 1), ((30, 40), 2), ((12, 10, 9), 3)]
)
def test_semantic_to_instances_matches_skimage_components(shape, connectivity):
    labels = random_labels(shape, seed=3)
    inst, class_of = masks.semantic_to_instances(labels, connectivity=connectivity)
    assert sorted(class_of) == list(range(1, len(class_of) + 1))
    total = 0
    for c in range(1, 4):
        ref = measure.label(labels == c, connectivity=connectivity, background=0)
        total += ref.max()
        # same partition: each skimage component is exactly one instance of class c
        for r in range(1, ref.max() + 1):
            ids = np.unique(inst[ref == r])
            assert ids.size == 1 and class_of[int(ids[0])] == c
    assert total == len(class_of)
    np.testing.assert_array_equal(masks.instances_to_semantic(inst, class_of), labels)


def test_instances_to_semantic():
    inst = np.array([[0, 4, 4], [9, 0, 7]])
    np.testing.assert_array_equal(masks.instances_to_semantic(inst), [[0, 1, 1], [1, 0, 1]])
    out = masks.instances_to_semantic(inst, {4: 2, 7: 3, 9: 2})
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, [[0, 2, 2], [2, 0, 3]])
    with pytest.raises(
        ValueError, match=r"class_of must give a class for every instance id, got none for \[9\]"
    ):
        masks.instances_to_semantic(inst, {4: 2, 7: 3})


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


def regionprops_boxes(labels):
    """segloc boxes via skimage, whose bbox is (min_row, min_col[, min_pln], max_row, ...)."""
    ids, boxes = [], []
    for p in measure.regionprops(labels):
        b = p.bbox
        if labels.ndim == 2:
            boxes.append([b[1], b[0], b[3], b[2]])
        else:
            boxes.append([b[1], b[0], b[2], b[4], b[3], b[5]])
        ids.append(p.label)
    return np.array(ids), np.array(boxes, float)


@pytest.mark.parametrize("shape", [(37, 53), (11, 13, 9)])
@pytest.mark.parametrize("sparse", [False, True])
def test_instance_boxes_match_regionprops(shape, sparse):
    inst, _ = masks.semantic_to_instances(random_labels(shape, seed=10, num_classes=3))
    if sparse:
        # non-contiguous and huge ids take the compacting path
        inst = np.where(inst > 0, inst * 7919 + 1_000_000, 0).astype(np.int32)
    ids, boxes = masks.instance_boxes(inst)
    ref_ids, ref_boxes = regionprops_boxes(inst)
    assert ids.dtype == np.int64 and boxes.dtype == np.float64
    assert boxes.shape == (len(ref_ids), 2 * len(shape)) and len(ids) > 5
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_array_equal(boxes, ref_boxes)


def test_instance_boxes_hand_cases():
    inst = np.zeros((5, 6, 4), np.int32)
    inst[1:3, 2:6, 3] = 4
    ids, boxes = masks.instance_boxes(inst)
    np.testing.assert_array_equal(ids, [4])
    np.testing.assert_array_equal(boxes, [[2, 1, 3, 6, 3, 4]])  # x0 y0 z0 x1 y1 z1, half-open
    ids, boxes = masks.instance_boxes(np.zeros((4, 4), np.int32))
    assert ids.shape == (0,) and ids.dtype == np.int64 and boxes.shape == (0, 4)


def test_mask_to_boxes_hand_case():
    labels = np.zeros((6, 8), np.int32)
    labels[1:3, 1:4] = 2
    labels[4:6, 6:8] = 2
    labels[0, 7] = 1
    out = masks.mask_to_boxes(labels)
    assert out == [
        {"class": 1, "box": [7.0, 0.0, 8.0, 1.0], "area": 1, "instance": 1},
        {"class": 2, "box": [1.0, 1.0, 4.0, 3.0], "area": 6, "instance": 2},
        {"class": 2, "box": [6.0, 4.0, 8.0, 6.0], "area": 4, "instance": 3},
    ]
    assert all(type(v) in (int, list) for o in out for v in o.values())
    assert [o["class"] for o in masks.mask_to_boxes(labels, classes=[2])] == [2, 2]
    assert masks.mask_to_boxes(labels > 0, connectivity=8)[0]["class"] == 1


def test_mask_to_boxes_3d_crops_each_object():
    labels = random_labels((10, 12, 8), seed=11, num_classes=3)
    inst, _ = masks.semantic_to_instances(labels, connectivity=26)
    for o in masks.mask_to_boxes(labels, connectivity=26):
        x0, y0, z0, x1, y1, z1 = (int(v) for v in o["box"])
        obj = inst == o["instance"]
        assert obj[y0:y1, x0:x1, z0:z1].sum() == obj.sum() == o["area"]
        assert (labels[obj] == o["class"]).all()


@pytest.mark.parametrize("shape", [(30, 40), (9, 10, 11)])
def test_class_boxes_match_regionprops(shape):
    labels = random_labels(shape, seed=12, num_classes=4)
    labels[labels == 2] = 0  # an absent class gets no box
    out = masks.class_boxes(labels)
    ref_ids, ref_boxes = regionprops_boxes(labels)
    assert list(out) == ref_ids.tolist() == [1, 3]
    np.testing.assert_array_equal(np.array(list(out.values())), ref_boxes)


@pytest.mark.parametrize(
    ("voc", "box", "coco"),
    [
        ((1, 1, 10, 20), (0, 0, 10, 20), [0, 0, 10, 20]),
        ((5, 7, 5, 7), (4, 6, 5, 7), [4, 6, 1, 1]),  # one pixel
        ((48, 240, 195, 371), (47, 239, 195, 371), [47, 239, 148, 132]),
    ],
)
def test_box_format_table(voc, box, coco):
    assert masks.voc_to_box(*voc) == tuple(float(v) for v in box)
    assert masks.box_to_voc(box) == tuple(float(v) for v in voc)
    assert masks.box_to_coco(box) == [float(v) for v in coco]
    out = masks.coco_to_box(coco)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, box)


def test_voc_box_crops_the_inclusive_pixels():
    # VOC pixel (xmin..xmax) inclusive, 1-based == columns xmin-1 .. xmax-1, 0-based
    image = np.zeros((10, 10), bool)
    image[2:5, 3:8] = True  # rows 3..5, columns 4..8 in VOC's 1-based terms
    x0, y0, x1, y1 = (int(v) for v in masks.voc_to_box(4, 3, 8, 5))
    assert image[y0:y1, x0:x1].all() and image[y0:y1, x0:x1].sum() == image.sum()


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: masks.voc_to_box(5, 1, 4, 2), "VOC box must have xmax >= xmin and ymax >= ymin"),
        (lambda: masks.box_to_voc([3, 3, 3, 5]), "box must have positive width and height for VOC"),
        (
            lambda: masks.box_to_coco([0, 0, 1, 1, 1, 1]),
            r"box must have 4 values, got shape \(6,\)",
        ),
        (lambda: masks.box_to_coco([5, 0, 1, 1]), "box must have x1 >= x0"),
        (lambda: masks.box_to_coco([0, 0, np.nan, 1]), "box must be finite"),
        (lambda: masks.coco_to_box([0, 0, -1, 2]), "bbox must be finite with width, height >= 0"),
        (lambda: masks.coco_to_box([0, 0, 1]), r"bbox must have 4 values \[x, y, width, height\]"),
    ],
)
def test_box_format_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# --------------------------------------------------------------------------- RLE


@pytest.mark.parametrize(
    ("shape", "density", "seed"),
    [
        ((1, 1), 0.5, 0),
        ((1, 37), 0.5, 1),
        ((37, 1), 0.5, 2),
        ((20, 30), 0.1, 3),
        ((20, 30), 0.9, 4),
        ((300, 200), 0.5, 5),
        ((512, 700), 0.02, 6),
        ((64, 64), 0.0, 7),
        ((64, 64), 1.0, 8),
    ],
)
@PYCOCOTOOLS_NUMPY2
def test_rle_matches_pycocotools(shape, density, seed):
    mask_api = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(seed)
    # mix of isolated pixels and long runs, so counts need 1..4 characters and deltas go negative
    mask = rng.random(shape) < density
    if min(shape) > 8:
        mask |= (
            random_blobs(shape, seed=seed, density=density, sigma=3.0) if 0 < density < 1 else mask
        )
    ref = mask_api.encode(np.asfortranarray(mask.astype(np.uint8)))
    ours = masks.rle_encode(mask)
    assert ours == {"size": list(shape), "counts": ref["counts"].decode("ascii")}
    assert masks.rle_area(ours) == int(mask_api.area(ref)) == mask.sum()
    np.testing.assert_array_equal(masks.rle_decode(ours), mask_api.decode(ref).astype(bool))
    # pycocotools reads our str counts back
    np.testing.assert_array_equal(
        mask_api.decode({**ours, "counts": ours["counts"].encode()}), mask
    )


def test_rle_hand_case_and_uncompressed_counts():
    mask = np.array([[0, 1, 1], [0, 1, 0]], bool)
    # column-major: col0 = 0,0 ; col1 = 1,1 ; col2 = 1,0  -> runs 2 zeros, 3 ones, 1 zero
    counts = [2, 3, 1]
    np.testing.assert_array_equal(masks.rle_decode({"size": [2, 3], "counts": counts}), mask)
    assert masks.rle_area({"size": [2, 3], "counts": counts}) == 3
    assert masks.rle_encode(mask)["counts"] == "231"
    full = masks.rle_encode(np.ones((2, 2), bool))
    assert masks.rle_decode({"size": [2, 2], "counts": b"04"}).all() and full["counts"] == "04"


@PYCOCOTOOLS_NUMPY2
def test_rle_decode_uncompressed_matches_pycocotools():
    mask_api = pytest.importorskip("pycocotools.mask")
    mask = random_blobs((40, 30), seed=13, density=0.3)
    flat = mask.ravel(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    counts = np.diff(np.concatenate(([0], change, [flat.size]))).tolist()
    if flat[0]:
        counts = [0, *counts]
    rle = {"size": [40, 30], "counts": counts}
    ref = mask_api.frPyObjects(rle, 40, 30)
    np.testing.assert_array_equal(masks.rle_decode(rle), mask_api.decode(ref).astype(bool))
    assert masks.rle_encode(mask)["counts"] == ref["counts"].decode()


@settings(max_examples=150, deadline=None)
@given(
    hnp.arrays(
        bool,
        st.tuples(st.integers(1, 24), st.integers(1, 24)),
        elements=st.booleans(),
        fill=st.sampled_from([False, True]) | st.nothing(),
    )
)
def test_rle_round_trip(mask):
    rle = masks.rle_encode(mask)
    assert rle["size"] == list(mask.shape)
    assert set(rle["counts"]) <= {chr(c) for c in range(48, 112)}
    out = masks.rle_decode(rle)
    assert out.dtype == np.bool_
    np.testing.assert_array_equal(out, mask)
    assert masks.rle_area(rle) == mask.sum()


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.integers(1, 500), st.sampled_from([False, True]))
def test_rle_round_trip_constant_masks(h, w, value):
    # 1xN, Nx1-like and all-zero / all-one masks: the edge cases of run counting
    mask = np.full((h, w), value)
    rle = masks.rle_encode(mask)
    np.testing.assert_array_equal(masks.rle_decode(rle), mask)
    assert masks.rle_area(rle) == (h * w if value else 0)


@pytest.mark.parametrize(
    ("rle", "match"),
    [
        ({"size": [2, 2], "counts": [1, 2]}, r"rle counts must sum to height \* width = 4, got 3"),
        ({"size": [2, 2], "counts": "1"}, r"must sum to height \* width = 4, got 1"),
        ({"size": [2, 2], "counts": "4p"}, r"rle counts must use characters '0'..'o', got 'p'"),
        ({"size": [2, 2], "counts": "4R"}, "rle counts string must end with a complete number"),
        ({"size": [2, 2], "counts": [5, -1]}, "rle counts must be >= 0"),
        ({"size": [2], "counts": [2]}, r"rle\['size'\] must be \[height, width\]"),
        ({"counts": [4]}, "rle must be a dict with 'size' and 'counts'"),
    ],
)
def test_rle_decode_rejects_malformed(rle, match):
    with pytest.raises(ValueError, match=match):
        masks.rle_decode(rle)


def test_rle_encode_rejects_3d_and_label_maps():
    with pytest.raises(ValueError, match=r"mask must be 2D, got shape \(2, 2, 2\)"):
        masks.rle_encode(np.zeros((2, 2, 2), bool))
    with pytest.raises(ValueError, match="mask must hold only 0/1 or 0/255 values"):
        masks.rle_encode(np.array([[0, 2]]))


# --------------------------------------------------------------------------- COCO


@pytest.fixture
def coco_scene():
    """Two images with instance maps and classes, as a detector's truth."""
    inst_a = np.zeros((48, 64), np.int32)
    inst_a[5:20, 4:30] = 3
    inst_a[25:45, 40:60] = 8
    inst_a[30:34, 10:14] = 9
    inst_a[31:33, 11:13] = 0  # a hole
    inst_b = np.zeros((40, 30), np.int32)
    inst_b[0:40, 0:5] = 1  # touches three borders
    inst_b[10:12, 20:30] = 2
    return {
        1: (inst_a, {3: 1, 8: 2, 9: 2}),
        2: (inst_b, {1: 2, 2: 1}),
    }


def _silent(fn, *args):
    # pycocotools prints progress; keep the test output readable
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args)


@PYCOCOTOOLS_NUMPY2
def test_coco_dataset_and_results_load_in_pycocotools(coco_scene):
    coco_mod = pytest.importorskip("pycocotools.coco")
    mask_api = pytest.importorskip("pycocotools.mask")
    images = [
        {"id": i, "height": m.shape[0], "width": m.shape[1], "file_name": f"{i}.png"}
        for i, (m, _) in coco_scene.items()
    ]
    anns = []
    start = 1
    for image_id, (inst, class_of) in coco_scene.items():
        new = masks.masks_to_coco_annotations(inst, class_of, image_id=image_id, start_id=start)
        start += len(new)
        anns += new
    # an annotation given as a raw mask, id and bbox left to coco_dataset
    extra = np.zeros((40, 30), bool)
    extra[20:23, 10:17] = True
    anns.append({"image_id": 2, "category_id": 1, "segmentation": extra})
    cats = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    dataset = masks.coco_dataset(images, anns, cats)

    gt = coco_mod.COCO()
    gt.dataset = dataset
    _silent(gt.createIndex)
    assert sorted(gt.getAnnIds()) == list(range(1, 7))
    added = gt.loadAnns(6)[0]
    assert added["bbox"] == [10.0, 20.0, 7.0, 3.0] and added["area"] == 21
    for ann in gt.loadAnns(gt.getAnnIds()):
        truth = gt.annToMask(ann).astype(bool)
        if "instance" in ann:
            inst, _ = coco_scene[ann["image_id"]]
            np.testing.assert_array_equal(truth, inst == ann["instance"])
        rle = ann["segmentation"]
        assert isinstance(rle["counts"], str)
        assert ann["area"] == mask_api.area(rle) == truth.sum()
        np.testing.assert_array_equal(mask_api.toBbox(rle), ann["bbox"])

    # perfect detections: COCOeval must give AP = 1 for boxes and masks
    results = []
    for image_id, (inst, class_of) in coco_scene.items():
        ids, boxes = masks.instance_boxes(inst)
        results += masks.coco_results(
            image_id,
            boxes,
            np.linspace(0.9, 0.5, len(ids)),
            [class_of[int(i)] for i in ids],
            masks=[inst == i for i in ids],
        )
    results += masks.coco_results(2, [[10, 20, 17, 23]], [0.8], [1], masks=[extra])
    dt = _silent(gt.loadRes, results)
    assert len(dt.getAnnIds()) == 6
    for ann in dt.loadAnns(dt.getAnnIds()):
        # results with a bbox keep it (loadRes sets area = w * h); the mask must decode the same
        seg = ann["segmentation"]
        assert masks.rle_area(seg) == mask_api.area(seg)
        np.testing.assert_array_equal(dt.annToMask(ann).astype(bool), masks.rle_decode(seg))
        np.testing.assert_array_equal(mask_api.toBbox(seg), ann["bbox"])
    from pycocotools.cocoeval import COCOeval

    for iou_type in ("bbox", "segm"):
        ev = COCOeval(gt, dt, iou_type)
        _silent(ev.evaluate)
        _silent(ev.accumulate)
        _silent(ev.summarize)
        assert ev.stats[0] == pytest.approx(1.0)  # AP@[.5:.95]


def test_coco_results_form():
    out = masks.coco_results(
        5,
        np.array([[1, 2, 4, 6], [0, 0, 1, 1]]),
        [0.5, 0.25],
        np.array([3, 1]),
        masks=[np.eye(3, dtype=bool), {"size": [3, 3], "counts": [9]}],
    )
    assert out[0] == {
        "image_id": 5,
        "category_id": 3,
        "bbox": [1.0, 2.0, 3.0, 4.0],
        "score": 0.5,
        "segmentation": {
            "size": [3, 3],
            "counts": masks.rle_encode(np.eye(3, dtype=bool))["counts"],
        },
    }
    assert out[1]["segmentation"]["counts"] == "9"
    assert masks.coco_results(1, np.zeros((0, 4)), [], []) == []
    assert "segmentation" not in masks.coco_results(1, [[0, 0, 1, 1]], [1.0], [1])[0]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"scores": [0.1, 0.2]}, r"scores must have one entry per box \(1\), got 2"),
        ({"classes": [1, 2]}, r"classes must have one entry per box \(1\), got 2"),
        ({"boxes": [[0, 0, 1]]}, r"boxes must have shape \(N, 4\), got \(1, 3\)"),
        ({"masks": []}, r"masks must have one entry per box \(1\), got 0"),
    ],
)
def test_coco_results_errors(kwargs, match):
    args = {"boxes": [[0, 0, 1, 1]], "scores": [0.1], "classes": [1], **kwargs}
    with pytest.raises(ValueError, match=match):
        masks.coco_results(1, args.pop("boxes"), args.pop("scores"), args.pop("classes"), **args)


@pytest.mark.parametrize(
    ("images", "anns", "cats", "match"),
    [
        (
            [{"id": 1, "height": 4, "width": 4}] * 2,
            [],
            [{"id": 1, "name": "a"}],
            r"images ids must be unique, got duplicates \[1\]",
        ),
        (
            [{"id": 0, "height": 4, "width": 4}],
            [],
            [{"id": 1, "name": "a"}],
            "images ids must be integers >= 1, got 0",
        ),
        (
            [{"id": 1, "width": 4}],
            [],
            [{"id": 1, "name": "a"}],
            r"images entries must have keys .* got none for \['height'\]",
        ),
        (
            [{"id": 1, "height": 4, "width": 4}],
            [{"image_id": 2, "category_id": 1, "bbox": [0, 0, 1, 1]}],
            [{"id": 1, "name": "a"}],
            r"annotations\[0\] image_id must be one of the images' ids, got 2",
        ),
        (
            [{"id": 1, "height": 4, "width": 4}],
            [{"image_id": 1, "category_id": 5, "bbox": [0, 0, 1, 1]}],
            [{"id": 1, "name": "a"}],
            r"annotations\[0\] category_id must be one of \[1\], got 5",
        ),
        (
            [{"id": 1, "height": 4, "width": 4}],
            [{"image_id": 1, "category_id": 1, "segmentation": np.zeros((3, 4), bool)}],
            [{"id": 1, "name": "a"}],
            r"annotations\[0\] segmentation must have the image's size \[4, 4\], got \[3, 4\]",
        ),
        (
            [{"id": 1, "height": 4, "width": 4}],
            [{"image_id": 1, "category_id": 1, "segmentation": [[0, 0, 1, 0, 1, 1]]}],
            [{"id": 1, "name": "a"}],
            r"annotations\[0\] segmentation must be a 2D mask array or an RLE dict, got list",
        ),
        (
            [{"id": 1, "height": 4, "width": 4}],
            [{"image_id": 1, "category_id": 1}],
            [{"id": 1, "name": "a"}],
            r"annotations\[0\] must have a segmentation or a bbox, got neither",
        ),
        (
            [{"id": 1, "height": 4, "width": 4}],
            [{"id": 2, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}] * 2,
            [{"id": 1, "name": "a"}],
            r"annotations ids must be unique, got duplicates \[2\]",
        ),
    ],
)
def test_coco_dataset_errors(images, anns, cats, match):
    with pytest.raises(ValueError, match=match):
        masks.coco_dataset(images, anns, cats)


def test_coco_dataset_box_only_and_no_mutation():
    ann = {"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4]}
    out = masks.coco_dataset(
        [{"id": 1, "height": 10, "width": 10}], [ann], [{"id": 1, "name": "a"}]
    )
    assert out["annotations"] == [
        {
            "image_id": 1,
            "category_id": 1,
            "bbox": [1.0, 2.0, 3.0, 4.0],
            "id": 1,
            "area": 12.0,
            "iscrowd": 0,
        }
    ]
    assert ann == {"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4]}


def test_masks_to_coco_annotations_matches_pycocotools(coco_scene):
    mask_api = pytest.importorskip("pycocotools.mask")
    inst, class_of = coco_scene[1]
    anns = masks.masks_to_coco_annotations(inst, class_of, image_id=4, start_id=10)
    assert [a["id"] for a in anns] == [10, 11, 12]
    assert [a["category_id"] for a in anns] == [1, 2, 2]
    for a in anns:
        obj = inst == a["instance"]
        ref = mask_api.encode(np.asfortranarray(obj.astype(np.uint8)))
        assert a["segmentation"]["counts"] == ref["counts"].decode()
        assert a["area"] == obj.sum()
        np.testing.assert_array_equal(a["bbox"], mask_api.toBbox(ref))
    plain = masks.masks_to_coco_annotations(inst, None, image_id=4, with_rle=False)
    assert {a["category_id"] for a in plain} == {1} and "segmentation" not in plain[0]
    with pytest.raises(
        ValueError, match=r"class_of must give a class for every instance id, got none for \[9\]"
    ):
        masks.masks_to_coco_annotations(inst, {3: 1, 8: 2}, image_id=4)
    with pytest.raises(ValueError, match="start_id must be >= 1, got 0"):
        masks.masks_to_coco_annotations(inst, None, image_id=4, start_id=0)


# --------------------------------------------------------------------------- real data


@pytest.mark.slow
def test_dsb2018_nuclei_instances_boxes_and_rle():
    tifffile = pytest.importorskip("tifffile")
    mask_api = pytest.importorskip("pycocotools.mask")
    path = DATA / "dsb2018_nuclei" / "masks" / "img2d.tif"
    if not path.exists():
        pytest.skip(f"{path} not found")
    inst = tifffile.imread(path).astype(np.int32)  # ids not contiguous, up to 183
    ids, boxes = masks.instance_boxes(inst)
    ref_ids, ref_boxes = regionprops_boxes(inst)
    assert len(ids) == 125
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_array_equal(boxes, ref_boxes)
    anns = masks.masks_to_coco_annotations(inst, None, image_id=1)
    for a in anns[::5]:
        obj = np.asfortranarray((inst == a["instance"]).astype(np.uint8))
        assert a["segmentation"]["counts"] == mask_api.encode(obj)["counts"].decode()
    assert sum(a["area"] for a in anns) == (inst > 0).sum()


@pytest.mark.slow
def test_hippocampus_labels_class_boxes_and_instances():
    nib = pytest.importorskip("nibabel")
    folder = DATA / "hippocampus" / "labels"
    files = sorted(folder.glob("*.nii.gz"))[:3] if folder.exists() else []
    if not files:
        pytest.skip(f"no labels in {folder}")
    for f in files:
        labels = np.asanyarray(nib.load(f).dataobj)  # float32 on disk
        out = masks.class_boxes(labels)
        ref_ids, ref_boxes = regionprops_boxes(labels.astype(np.int32))
        assert list(out) == ref_ids.tolist() == [1, 2]
        np.testing.assert_array_equal(np.array(list(out.values())), ref_boxes)
        inst, class_of = masks.semantic_to_instances(labels, connectivity=26)
        np.testing.assert_array_equal(masks.instances_to_semantic(inst, class_of), labels)
