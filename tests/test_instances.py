"""Tests for segloc.instances: components, instances, boxes, scores; nuclei end to end."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from scipy import ndimage as ndi
from skimage import measure

from _shapes import random_labels, regionprops_boxes
from segloc import instances
from segloc.coco import detections_to_coco, write_coco_json
from segloc.instances import (
    detections_from_class_probability,
    detections_from_probability,
    instances_from_class_probability,
    instances_from_probability,
    score_instances,
    split_touching,
)

DATA = Path(os.environ.get("SEGLOC_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def disk(shape, centre, radius):
    grid = np.indices(shape)
    return sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) <= radius**2


def iou(a, b):
    return (a & b).sum() / (a | b).sum()


# --------------------------------------------------------------------------- split_touching


@pytest.mark.parametrize(
    ("shape", "c1", "c2", "radius"),
    [
        ((40, 60), (20, 18), (20, 40), 12),  # overlapping disks: a neck between them
        ((40, 60), (18, 20), (23, 38), 10),  # off-axis
        ((30, 50), (15, 14), (15, 30), 8),  # tangent-ish (distance 16 = 2r)
        ((30, 30, 50), (15, 15, 14), (15, 15, 33), 10),  # two touching balls in 3D
    ],
)
def test_split_touching_two_disks_give_two_instances(shape, c1, c2, radius):
    a, b = disk(shape, c1, radius), disk(shape, c2, radius)
    mask = a | b
    assert ndi.label(mask)[1] == 1  # they do touch: one connected component
    inst = split_touching(mask, min_distance=4)
    assert inst.dtype == np.int32
    assert sorted(np.unique(inst)) == [0, 1, 2]
    np.testing.assert_array_equal(inst > 0, mask)  # every foreground pixel is assigned
    # each instance is one disk, up to the shared lens; the disk sides away from it are whole
    for d, other in ((a, b), (b, a)):
        best = max(iou(inst == k, d) for k in (1, 2))
        assert best > 0.85
        own = d & ~other
        k = np.bincount(inst[own]).argmax()
        assert (inst[own] == k).mean() > 0.98


@pytest.mark.parametrize(
    "mask",
    [
        disk((40, 40), (20, 20), 12),
        disk((40, 40), (20, 21), 11.5),
        np.pad(np.ones((8, 30), bool), 3),  # even width: a plateau ridge of maxima
        np.pad(np.ones((7, 7, 7), bool), 2),
        disk((40, 40), (0, 20), 10),  # cut by the image edge
    ],
)
def test_split_touching_one_object_stays_one(mask):
    inst = split_touching(mask, min_distance=5)
    assert sorted(np.unique(inst)) == [0, 1]
    np.testing.assert_array_equal(inst > 0, mask)


def test_split_touching_separate_objects_and_empty():
    mask = disk((30, 60), (15, 10), 6) | disk((30, 60), (15, 45), 6)
    inst = split_touching(mask)
    assert inst.max() == 2
    np.testing.assert_array_equal(inst, ndi.label(mask)[0])  # raster order, like ndi.label
    assert not split_touching(np.zeros((5, 5), bool)).any()


def test_split_touching_footprint_overrides_min_distance():
    mask = disk((40, 60), (20, 18), 12) | disk((40, 60), (20, 40), 11)
    assert split_touching(mask, min_distance=2).max() == 2
    # a footprint wider than the whole pair leaves one maximum, so one instance
    assert split_touching(mask, min_distance=2, footprint=np.ones((61, 61), bool)).max() == 1


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"min_distance": 0}, ValueError),
        ({"min_distance": 2.5}, TypeError),
        ({"connectivity": 5}, ValueError),
        ({"footprint": np.ones(3)}, ValueError),
    ],
)
def test_split_touching_rejects_bad_options(kwargs, error):
    with pytest.raises(error):
        split_touching(np.ones((5, 5), bool), **kwargs)


def test_split_touching_rejects_label_maps():
    with pytest.raises(ValueError, match="mask"):
        split_touching(np.array([[0, 1, 2]]))


# --------------------------------------------------------------------------- probability


def two_blobs():
    """(prob, hand-computed detections) for two separate blobs and one speck below threshold."""
    prob = np.zeros((6, 8))
    prob[1:3, 1:4] = [[0.6, 0.7, 0.8], [0.9, 1.0, 0.5]]  # mean 4.5 / 6 = 0.75
    prob[4, 5:8] = [0.55, 0.65, 0.45]  # 0.45 below threshold: blob is 2 pixels, mean 0.6
    prob[0, 7] = 0.4
    expected = [
        {"box": [1.0, 1.0, 4.0, 3.0], "score": 0.75, "class": 1, "area": 6, "instance": 1},
        {"box": [5.0, 4.0, 7.0, 5.0], "score": 0.6, "class": 1, "area": 2, "instance": 2},
    ]
    return prob, expected


@pytest.mark.parametrize("split", [False, True])
def test_detections_from_probability_hand_computed(split):
    prob, expected = two_blobs()
    dets = detections_from_probability(prob, threshold=0.5, split=split, min_distance=1)
    assert len(dets) == len(expected)
    for d, e in zip(dets, expected, strict=True):
        assert d["score"] == pytest.approx(e["score"])
        assert {k: v for k, v in d.items() if k != "score"} == {
            k: v for k, v in e.items() if k != "score"
        }
    json.dumps(dets)  # plain Python numbers


def test_detections_min_size_and_threshold():
    prob, _ = two_blobs()
    dets = detections_from_probability(prob, threshold=0.5, split=False, min_size=3)
    assert [d["area"] for d in dets] == [6]
    dets = detections_from_probability(prob, threshold=0.35, split=False)
    assert [d["area"] for d in dets] == [1, 6, 3]  # raster order: the speck at (0, 7) first
    assert dets[0]["score"] == pytest.approx(0.4)


def test_instances_from_probability_splits_touching_nuclei():
    mask = disk((40, 60), (20, 18), 12) | disk((40, 60), (20, 40), 12)
    prob = np.where(mask, 0.9, 0.1)
    assert instances_from_probability(prob, split=False).max() == 1
    inst = instances_from_probability(prob, split=True, min_distance=4)
    assert inst.max() == 2
    dets = score_instances(inst, prob)
    assert [d["score"] for d in dets] == pytest.approx([0.9, 0.9])
    assert sum(d["area"] for d in dets) == mask.sum()


def test_score_instances_sparse_ids_match_ndimage_mean():
    rng = np.random.default_rng(0)
    prob = rng.random((30, 40))
    inst = np.zeros((30, 40), np.int64)
    inst[2:10, 3:9] = 7
    inst[12:20, 5:30] = 2**31 - 5
    inst[25:28, 0:40] = 11
    dets = score_instances(inst, prob)
    ids = [7, 11, 2**31 - 5]
    assert [d["instance"] for d in dets] == ids
    oracle = ndi.mean(prob, labels=inst, index=ids)
    assert [d["score"] for d in dets] == pytest.approx(list(oracle))
    assert [d["area"] for d in dets] == [48, 120, 200]
    assert dets[0]["box"] == [3.0, 2.0, 9.0, 10.0]


def test_class_probability_hand_computed():
    # channel 0 background, 1 and 2 object classes; argmax picks the class per pixel
    bg = np.full((4, 6), 0.8)
    c1 = np.zeros((4, 6))
    c2 = np.zeros((4, 6))
    c1[0:2, 0:2] = 0.9
    c1[3, 5] = 0.7
    c2[2:4, 2:4] = [[0.6, 0.8], [0.7, 0.9]]
    bg[c1 > 0] = 0.1
    bg[c2 > 0] = 0.1
    c2[0, 0] = 0.4  # lower than class 1 there: stays class 1
    prob = np.stack([bg, c1, c2])
    inst, class_of = instances_from_class_probability(prob, split=False)
    assert class_of == {1: 1, 2: 1, 3: 2}
    dets = detections_from_class_probability(prob, split=False)
    assert [d["class"] for d in dets] == [1, 1, 2]
    assert [d["box"] for d in dets] == [[0, 0, 2, 2], [5, 3, 6, 4], [2, 2, 4, 4]]
    assert [d["score"] for d in dets] == pytest.approx([0.9, 0.7, 0.75])
    # a threshold above the class-2 mean drops its weaker pixels only
    dets = detections_from_class_probability(prob, split=False, threshold=0.75)
    assert [(d["class"], d["area"]) for d in dets] == [(1, 4), (2, 2)]
    # without a background channel the background-dominated pixels become class 0 objects
    _, class_of = instances_from_class_probability(prob, split=False, background=None)
    assert sorted(set(class_of.values())) == [0, 1, 2]


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: detections_from_probability(np.full((3, 3), 1.5)), ValueError, r"\[0, 1\]"),
        (lambda: detections_from_probability(np.ones((3, 3)), threshold=2), ValueError, "thr"),
        (lambda: detections_from_probability(np.ones((3, 3)), min_size=0), ValueError, "min_"),
        (lambda: detections_from_probability(np.ones((2, 3, 3, 3))), ValueError, "prob"),
        (
            lambda: detections_from_class_probability(np.ones((2, 3, 3)) / 2, background=2),
            ValueError,
            "background",
        ),
        (lambda: score_instances(np.ones((3, 3), int), np.ones((3, 4))), ValueError, "shape"),
        (
            lambda: score_instances(np.ones((3, 3), int), np.ones((2, 3, 3)), class_of={}),
            ValueError,
            "class_of",
        ),
        (
            lambda: score_instances(np.ones((3, 3), int), np.ones((2, 3, 3)), class_of={1: 4}),
            ValueError,
            "channels",
        ),
        (lambda: score_instances(np.ones((3, 3)), np.ones((3, 3))), TypeError, "integer"),
    ],
)
def test_detect_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


# --------------------------------------------------------------------------- COCO

# pycocotools' compiled decode trips a NumPy 2 deprecation we cannot fix
PYCOCOTOOLS_NUMPY2 = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)


@PYCOCOTOOLS_NUMPY2
def test_coco_results_load_in_pycocotools(tmp_path, capsys):
    mask = disk((40, 60), (20, 18), 12) | disk((40, 60), (20, 40), 12) | disk((40, 60), (5, 55), 3)
    prob = np.where(mask, 0.8, 0.0)
    prob[mask & (np.indices(mask.shape)[1] > 30)] = 0.6
    inst = instances_from_probability(prob, min_distance=4)
    dets = detections_from_probability(prob, min_distance=4)
    assert len(dets) == 3
    results = detections_to_coco(dets, image_id=3, instances=inst, category_ids={1: 5})
    path = write_coco_json(tmp_path / "results.json", results)

    truth = COCO()
    truth.dataset = {
        "images": [{"id": 3, "height": 40, "width": 60}],
        "categories": [{"id": 5, "name": "nucleus"}],
        "annotations": [],
    }
    truth.createIndex()
    loaded = truth.loadRes(str(path))
    anns = loaded.loadAnns(loaded.getAnnIds(imgIds=[3]))
    assert len(anns) == 3
    for ann, d in zip(anns, dets, strict=True):
        assert ann["category_id"] == 5
        assert ann["score"] == pytest.approx(d["score"])
        decoded = mask_utils.decode(ann["segmentation"]).astype(bool)
        np.testing.assert_array_equal(decoded, inst == d["instance"])
        # loadRes recomputes the box from the mask (toBbox): it must equal ours
        x0, y0, x1, y1 = d["box"]
        assert ann["bbox"] == pytest.approx([x0, y0, x1 - x0, y1 - y0])
        assert mask_utils.area(ann["segmentation"]) == d["area"]


def test_detections_to_coco_boxes_only_and_errors():
    dets = [{"box": [2, 1, 5, 3], "score": 0.5, "class": 2}]
    assert detections_to_coco(dets, image_id=1) == [
        {"image_id": 1, "category_id": 2, "bbox": [2.0, 1.0, 3.0, 2.0], "score": 0.5}
    ]
    assert detections_to_coco([], image_id=1) == []
    with pytest.raises(ValueError, match="category_ids"):
        detections_to_coco(dets, image_id=1, category_ids={1: 1})
    with pytest.raises(ValueError, match="instance"):
        detections_to_coco(dets, image_id=1, instances=np.zeros((4, 6), np.int32))
    dets[0]["instance"] = 9
    with pytest.raises(ValueError, match="lacks"):
        detections_to_coco(dets, image_id=1, instances=np.ones((4, 6), np.int32))


# --------------------------------------------------------------------------- real data

NUCLEI = DATA / "dsb2018_nuclei"


@pytest.mark.slow
@pytest.mark.skipif(not NUCLEI.is_dir(), reason="dsb2018_nuclei data not available")
def test_nuclei_otsu_watershed_f1_floor():
    """Otsu + watershed on the DSB 2018 image: F1@0.5 measured 0.736 (benchmarks/
    nuclei_instances.py, same settings); floor 0.65. Plain components score ~0.53."""
    from segloc.classical.threshold import threshold_otsu
    from segloc.detection_metrics import matched_f1
    from segloc.io import read_image, read_mask
    from segloc.masks import fill_holes

    image, _ = read_image(NUCLEI / "images" / "img2d.tif")
    truth, _ = read_mask(NUCLEI / "masks" / "img2d.tif", kind="labels")
    smooth = ndi.gaussian_filter(image.astype(np.float64), 1.0)
    mask = fill_holes(smooth > threshold_otsu(smooth))
    inst = instances_from_probability(mask, min_distance=6, min_size=20)
    split_f1 = matched_f1(inst, truth)["f1"]
    plain = instances_from_probability(mask, split=False, min_size=20)
    assert split_f1 > 0.65
    assert split_f1 > matched_f1(plain, truth)["f1"] + 0.1  # the watershed is what helps


def test_semantic_to_instances_hand_case():
    labels = np.array(
        [
            [1, 1, 0, 2],
            [0, 0, 0, 2],
            [1, 0, 2, 0],
        ]
    )
    inst, class_of = instances.semantic_to_instances(labels)
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
    inst8, class_of8 = instances.semantic_to_instances(labels, connectivity=8)
    assert class_of8 == {1: 1, 2: 1, 3: 2}
    assert inst8[2, 2] == inst8[0, 3] == 3
    only2, class_of2 = instances.semantic_to_instances(labels, classes=[2])
    assert class_of2 == {1: 2, 2: 2} and not only2[labels == 1].any()


@pytest.mark.parametrize(
    ("shape", "connectivity"), [((30, 40), 1), ((30, 40), 2), ((12, 10, 9), 3)]
)
def test_semantic_to_instances_matches_skimage_components(shape, connectivity):
    labels = random_labels(shape, seed=3)
    inst, class_of = instances.semantic_to_instances(labels, connectivity=connectivity)
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
    np.testing.assert_array_equal(instances.instances_to_semantic(inst, class_of), labels)


def test_instances_to_semantic():
    inst = np.array([[0, 4, 4], [9, 0, 7]])
    np.testing.assert_array_equal(instances.instances_to_semantic(inst), [[0, 1, 1], [1, 0, 1]])
    out = instances.instances_to_semantic(inst, {4: 2, 7: 3, 9: 2})
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, [[0, 2, 2], [2, 0, 3]])
    with pytest.raises(
        ValueError, match=r"class_of must give a class for every instance id, got none for \[9\]"
    ):
        instances.instances_to_semantic(inst, {4: 2, 7: 3})


@pytest.mark.parametrize("shape", [(37, 53), (11, 13, 9)])
@pytest.mark.parametrize("sparse", [False, True])
def test_instance_boxes_match_regionprops(shape, sparse):
    inst, _ = instances.semantic_to_instances(random_labels(shape, seed=10, num_classes=3))
    if sparse:
        # non-contiguous and huge ids take the compacting path
        inst = np.where(inst > 0, inst * 7919 + 1_000_000, 0).astype(np.int32)
    ids, boxes = instances.instance_boxes(inst)
    ref_ids, ref_boxes = regionprops_boxes(inst)
    assert ids.dtype == np.int64 and boxes.dtype == np.float64
    assert boxes.shape == (len(ref_ids), 2 * len(shape)) and len(ids) > 5
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_array_equal(boxes, ref_boxes)


def test_instance_boxes_hand_cases():
    inst = np.zeros((5, 6, 4), np.int32)
    inst[1:3, 2:6, 3] = 4
    ids, boxes = instances.instance_boxes(inst)
    np.testing.assert_array_equal(ids, [4])
    np.testing.assert_array_equal(boxes, [[2, 1, 3, 6, 3, 4]])  # x0 y0 z0 x1 y1 z1, half-open
    ids, boxes = instances.instance_boxes(np.zeros((4, 4), np.int32))
    assert ids.shape == (0,) and ids.dtype == np.int64 and boxes.shape == (0, 4)


def test_mask_to_boxes_hand_case():
    labels = np.zeros((6, 8), np.int32)
    labels[1:3, 1:4] = 2
    labels[4:6, 6:8] = 2
    labels[0, 7] = 1
    out = instances.mask_to_boxes(labels)
    assert out == [
        {"class": 1, "box": [7.0, 0.0, 8.0, 1.0], "area": 1, "instance": 1},
        {"class": 2, "box": [1.0, 1.0, 4.0, 3.0], "area": 6, "instance": 2},
        {"class": 2, "box": [6.0, 4.0, 8.0, 6.0], "area": 4, "instance": 3},
    ]
    assert all(type(v) in (int, list) for o in out for v in o.values())
    assert [o["class"] for o in instances.mask_to_boxes(labels, classes=[2])] == [2, 2]
    assert instances.mask_to_boxes(labels > 0, connectivity=8)[0]["class"] == 1


def test_mask_to_boxes_3d_crops_each_object():
    labels = random_labels((10, 12, 8), seed=11, num_classes=3)
    inst, _ = instances.semantic_to_instances(labels, connectivity=26)
    for o in instances.mask_to_boxes(labels, connectivity=26):
        x0, y0, z0, x1, y1, z1 = (int(v) for v in o["box"])
        obj = inst == o["instance"]
        assert obj[y0:y1, x0:x1, z0:z1].sum() == obj.sum() == o["area"]
        assert (labels[obj] == o["class"]).all()


@pytest.mark.parametrize("shape", [(30, 40), (9, 10, 11)])
def test_class_boxes_match_regionprops(shape):
    labels = random_labels(shape, seed=12, num_classes=4)
    labels[labels == 2] = 0  # an absent class gets no box
    out = instances.class_boxes(labels)
    ref_ids, ref_boxes = regionprops_boxes(labels)
    assert list(out) == ref_ids.tolist() == [1, 3]
    np.testing.assert_array_equal(np.array(list(out.values())), ref_boxes)


# --------------------------------------------------------------------------- region_table


def _skimage_box(bbox: tuple[int, ...]) -> list[float]:
    """scikit-image's (min_row, min_col[, min_pln], max_row, ...) as segloc's half-open box."""
    n = len(bbox) // 2
    order = (1, 0) if n == 2 else (1, 0, 2)
    return [float(bbox[a]) for a in order] + [float(bbox[n + a]) for a in order]


@pytest.mark.parametrize(
    ("shape", "connectivity", "spacing"),
    [
        ((37, 53), 1, None),
        ((37, 53), 2, (0.5, 2.0)),
        ((11, 13, 9), 1, (0.8, 0.9, 2.0)),
        ((11, 13, 9), 3, None),
    ],
)
def test_region_table_matches_regionprops(shape, connectivity, spacing):
    labels = random_labels(shape, seed=13, num_classes=5)
    labels[labels > 2] = 0  # classes 1 and 2 sparse enough to stay many objects at full rank
    image = np.random.default_rng(13).normal(100.0, 20.0, shape)
    inst, table = instances.region_table(labels, image, spacing=spacing, connectivity=connectivity)
    physical = spacing or (1.0,) * len(shape)
    # oracle: each class labelled on its own by scikit-image, whose numbering (raster order)
    # is ours within a class
    want = []
    for c in (1, 2):
        comp = measure.label(labels == c, connectivity=connectivity)
        props = measure.regionprops(comp, intensity_image=image)
        scaled = measure.regionprops(comp, spacing=physical)
        want += [(c, p, s) for p, s in zip(props, scaled, strict=True)]
    assert len(want) > 5 and len(table["instance"]) == len(want)
    np.testing.assert_array_equal(table["instance"], np.arange(1, len(want) + 1))
    np.testing.assert_array_equal(table["class"], [c for c, _, _ in want])
    np.testing.assert_array_equal(table["area"], [p.area for _, p, _ in want])
    np.testing.assert_allclose(table["size"], [s.area for _, _, s in want], rtol=1e-12)
    np.testing.assert_array_equal(table["box"], [_skimage_box(p.bbox) for _, p, _ in want])
    np.testing.assert_allclose(table["mean"], [p.intensity_mean for _, p, _ in want], rtol=1e-12)
    np.testing.assert_allclose(table["centre"], [p.centroid for _, p, _ in want], rtol=1e-12)
    # the returned instance map holds the measured objects
    ref = measure.regionprops(inst)
    np.testing.assert_array_equal(table["area"], [p.area for p in ref])
    assert {k: v.dtype for k, v in table.items()} == {
        "instance": np.int64, "class": np.int64, "area": np.int64, "size": np.float64,
        "box": np.float64, "centre": np.float64, "mean": np.float64,
    }  # fmt: skip


def test_region_table_hand_case_and_empty():
    labels = np.zeros((4, 6), bool)
    labels[1:3, 1:3] = True
    labels[0, 5] = True
    inst, table = instances.region_table(labels)  # a bool mask is class 1; no image, no mean
    assert sorted(table) == ["area", "box", "centre", "class", "instance", "size"]
    np.testing.assert_array_equal(table["area"], [1, 4])  # raster order of the first pixel
    np.testing.assert_array_equal(table["box"], [[5, 0, 6, 1], [1, 1, 3, 3]])
    np.testing.assert_array_equal(table["centre"], [[0, 5], [1.5, 1.5]])
    np.testing.assert_array_equal(table["size"], [1.0, 4.0])
    assert inst.dtype == np.int32 and inst[0, 5] == 1 and inst[2, 2] == 2
    _, empty = instances.region_table(np.zeros((3, 3, 2), np.uint8), np.ones((3, 3, 2)))
    assert {k: v.shape for k, v in empty.items()} == {
        "instance": (0,), "class": (0,), "area": (0,), "size": (0,), "box": (0, 6),
        "centre": (0, 3), "mean": (0,),
    }  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"image": np.ones((4, 5))}, ValueError, "image and labels must have the same shape"),
        ({"spacing": (1.0, 2.0, 3.0)}, ValueError, "spacing must have 2 values"),
        ({"spacing": (1.0, 0.0)}, ValueError, "positive and finite"),
        ({"connectivity": 3}, ValueError, "connectivity must be one of"),
        ({"image": np.full((4, 4), "a")}, TypeError, "image must be a numeric array"),
    ],
)
def test_region_table_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        instances.region_table(np.eye(4, dtype=np.int32), **kwargs)


@pytest.mark.slow
def test_hippocampus_labels_class_boxes_and_instances():
    nib = pytest.importorskip("nibabel")
    folder = DATA / "hippocampus" / "labels"
    files = sorted(folder.glob("*.nii.gz"))[:3] if folder.exists() else []
    if not files:
        pytest.skip(f"no labels in {folder}")
    for f in files:
        labels = np.asanyarray(nib.load(f).dataobj)  # float32 on disk
        out = instances.class_boxes(labels)
        ref_ids, ref_boxes = regionprops_boxes(labels.astype(np.int32))
        assert list(out) == ref_ids.tolist() == [1, 2]
        np.testing.assert_array_equal(np.array(list(out.values())), ref_boxes)
        inst, class_of = instances.semantic_to_instances(labels, connectivity=26)
        np.testing.assert_array_equal(instances.instances_to_semantic(inst, class_of), labels)
