"""Tests for segloc.coco: boxes <-> COCO/VOC, RLE against pycocotools, datasets and results."""

import contextlib
import io
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from _shapes import random_blobs, regionprops_boxes
from segloc import coco, instances

# pycocotools' compiled decode (annToMask too) trips a NumPy 2 deprecation we cannot fix
PYCOCOTOOLS_NUMPY2 = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)
DATA = Path(os.environ.get("SEGLOC_DATA", Path(__file__).resolve().parents[1] / "../shared/data"))


@pytest.mark.parametrize(
    ("voc", "box", "bbox"),
    [
        ((1, 1, 10, 20), (0, 0, 10, 20), [0, 0, 10, 20]),
        ((5, 7, 5, 7), (4, 6, 5, 7), [4, 6, 1, 1]),  # one pixel
        ((48, 240, 195, 371), (47, 239, 195, 371), [47, 239, 148, 132]),
    ],
)
def test_box_format_table(voc, box, bbox):
    assert coco.voc_to_box(*voc) == tuple(float(v) for v in box)
    assert coco.box_to_voc(box) == tuple(float(v) for v in voc)
    assert coco.box_to_coco(box) == [float(v) for v in bbox]
    out = coco.coco_to_box(bbox)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, box)


def test_voc_box_crops_the_inclusive_pixels():
    # VOC pixel (xmin..xmax) inclusive, 1-based == columns xmin-1 .. xmax-1, 0-based
    image = np.zeros((10, 10), bool)
    image[2:5, 3:8] = True  # rows 3..5, columns 4..8 in VOC's 1-based terms
    x0, y0, x1, y1 = (int(v) for v in coco.voc_to_box(4, 3, 8, 5))
    assert image[y0:y1, x0:x1].all() and image[y0:y1, x0:x1].sum() == image.sum()


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
    ours = coco.rle_encode(mask)
    assert ours == {"size": list(shape), "counts": ref["counts"].decode("ascii")}
    assert coco.rle_area(ours) == int(mask_api.area(ref)) == mask.sum()
    np.testing.assert_array_equal(coco.rle_decode(ours), mask_api.decode(ref).astype(bool))
    # pycocotools reads our str counts back
    np.testing.assert_array_equal(
        mask_api.decode({**ours, "counts": ours["counts"].encode()}), mask
    )


def test_rle_hand_case_and_uncompressed_counts():
    mask = np.array([[0, 1, 1], [0, 1, 0]], bool)
    # column-major: col0 = 0,0 ; col1 = 1,1 ; col2 = 1,0  -> runs 2 zeros, 3 ones, 1 zero
    counts = [2, 3, 1]
    np.testing.assert_array_equal(coco.rle_decode({"size": [2, 3], "counts": counts}), mask)
    assert coco.rle_area({"size": [2, 3], "counts": counts}) == 3
    assert coco.rle_encode(mask)["counts"] == "231"
    full = coco.rle_encode(np.ones((2, 2), bool))
    assert coco.rle_decode({"size": [2, 2], "counts": b"04"}).all() and full["counts"] == "04"


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
    np.testing.assert_array_equal(coco.rle_decode(rle), mask_api.decode(ref).astype(bool))
    assert coco.rle_encode(mask)["counts"] == ref["counts"].decode()


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
    rle = coco.rle_encode(mask)
    assert rle["size"] == list(mask.shape)
    assert set(rle["counts"]) <= {chr(c) for c in range(48, 112)}
    out = coco.rle_decode(rle)
    assert out.dtype == np.bool_
    np.testing.assert_array_equal(out, mask)
    assert coco.rle_area(rle) == mask.sum()


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.integers(1, 500), st.sampled_from([False, True]))
def test_rle_round_trip_constant_masks(h, w, value):
    # 1xN, Nx1-like and all-zero / all-one masks: the edge cases of run counting
    mask = np.full((h, w), value)
    rle = coco.rle_encode(mask)
    np.testing.assert_array_equal(coco.rle_decode(rle), mask)
    assert coco.rle_area(rle) == (h * w if value else 0)


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
        coco.rle_decode(rle)


def test_rle_encode_rejects_3d_and_label_maps():
    with pytest.raises(ValueError, match=r"mask must be 2D, got shape \(2, 2, 2\)"):
        coco.rle_encode(np.zeros((2, 2, 2), bool))
    with pytest.raises(ValueError, match="mask must hold only 0/1 or 0/255 values"):
        coco.rle_encode(np.array([[0, 2]]))


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
        new = coco.masks_to_coco_annotations(inst, class_of, image_id=image_id, start_id=start)
        start += len(new)
        anns += new
    # an annotation given as a raw mask, id and bbox left to coco_dataset
    extra = np.zeros((40, 30), bool)
    extra[20:23, 10:17] = True
    anns.append({"image_id": 2, "category_id": 1, "segmentation": extra})
    cats = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    dataset = coco.coco_dataset(images, anns, cats)

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
        ids, boxes = instances.instance_boxes(inst)
        results += coco.coco_results(
            image_id,
            boxes,
            np.linspace(0.9, 0.5, len(ids)),
            [class_of[int(i)] for i in ids],
            masks=[inst == i for i in ids],
        )
    results += coco.coco_results(2, [[10, 20, 17, 23]], [0.8], [1], masks=[extra])
    dt = _silent(gt.loadRes, results)
    assert len(dt.getAnnIds()) == 6
    for ann in dt.loadAnns(dt.getAnnIds()):
        # results with a bbox keep it (loadRes sets area = w * h); the mask must decode the same
        seg = ann["segmentation"]
        assert coco.rle_area(seg) == mask_api.area(seg)
        np.testing.assert_array_equal(dt.annToMask(ann).astype(bool), coco.rle_decode(seg))
        np.testing.assert_array_equal(mask_api.toBbox(seg), ann["bbox"])
    from pycocotools.cocoeval import COCOeval

    for iou_type in ("bbox", "segm"):
        ev = COCOeval(gt, dt, iou_type)
        _silent(ev.evaluate)
        _silent(ev.accumulate)
        _silent(ev.summarize)
        assert ev.stats[0] == pytest.approx(1.0)  # AP@[.5:.95]


def test_coco_results_form():
    out = coco.coco_results(
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
            "counts": coco.rle_encode(np.eye(3, dtype=bool))["counts"],
        },
    }
    assert out[1]["segmentation"]["counts"] == "9"
    assert coco.coco_results(1, np.zeros((0, 4)), [], []) == []
    assert "segmentation" not in coco.coco_results(1, [[0, 0, 1, 1]], [1.0], [1])[0]


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
        coco.coco_results(1, args.pop("boxes"), args.pop("scores"), args.pop("classes"), **args)


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
        coco.coco_dataset(images, anns, cats)


def test_coco_dataset_box_only_and_no_mutation():
    ann = {"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4]}
    out = coco.coco_dataset([{"id": 1, "height": 10, "width": 10}], [ann], [{"id": 1, "name": "a"}])
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
    anns = coco.masks_to_coco_annotations(inst, class_of, image_id=4, start_id=10)
    assert [a["id"] for a in anns] == [10, 11, 12]
    assert [a["category_id"] for a in anns] == [1, 2, 2]
    for a in anns:
        obj = inst == a["instance"]
        ref = mask_api.encode(np.asfortranarray(obj.astype(np.uint8)))
        assert a["segmentation"]["counts"] == ref["counts"].decode()
        assert a["area"] == obj.sum()
        np.testing.assert_array_equal(a["bbox"], mask_api.toBbox(ref))
    plain = coco.masks_to_coco_annotations(inst, None, image_id=4, with_rle=False)
    assert {a["category_id"] for a in plain} == {1} and "segmentation" not in plain[0]
    with pytest.raises(
        ValueError, match=r"class_of must give a class for every instance id, got none for \[9\]"
    ):
        coco.masks_to_coco_annotations(inst, {3: 1, 8: 2}, image_id=4)
    with pytest.raises(ValueError, match="start_id must be >= 1, got 0"):
        coco.masks_to_coco_annotations(inst, None, image_id=4, start_id=0)


@pytest.mark.slow
def test_dsb2018_nuclei_instances_boxes_and_rle():
    tifffile = pytest.importorskip("tifffile")
    mask_api = pytest.importorskip("pycocotools.mask")
    path = DATA / "dsb2018_nuclei" / "masks" / "img2d.tif"
    if not path.exists():
        pytest.skip(f"{path} not found")
    inst = tifffile.imread(path).astype(np.int32)  # ids not contiguous, up to 183
    ids, boxes = instances.instance_boxes(inst)
    ref_ids, ref_boxes = regionprops_boxes(inst)
    assert len(ids) == 125
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_array_equal(boxes, ref_boxes)
    anns = coco.masks_to_coco_annotations(inst, None, image_id=1)
    for a in anns[::5]:
        obj = np.asfortranarray((inst == a["instance"]).astype(np.uint8))
        assert a["segmentation"]["counts"] == mask_api.encode(obj)["counts"].decode()
    assert sum(a["area"] for a in anns) == (inst > 0).sum()


# --------------------------------------------------------------------------- checks of read files

_DS = {
    "images": [{"id": 1, "height": 10, "width": 12}, {"id": 2}],
    "categories": [{"id": 1, "name": "a"}, {"id": 3, "name": "b"}],
    "annotations": [{"id": 5, "image_id": 2, "category_id": 3, "bbox": [0, 0, 2, 2]}],
}


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda d: d.update(images={"id": 1}), "images must be a list of dicts, got dict"),
        (lambda d: d["images"].append("x"), r"images\[2\] must be a dict, got 'x'"),
        (lambda d: d["images"][0].update(height=0), r"images\[0\] height must be >= 1"),
        (lambda d: d["images"][0].update(width=2.5), "whole number"),
        (lambda d: d["images"][1].update(id=True), "ids must be integers >= 1"),
        (lambda d: d["annotations"][0].update(image_id=[1]), "image_id must be one of"),
        (lambda d: d["annotations"][0].update(bbox=[0, 0, 1e400, 1]), "must be finite"),
        (lambda d: d["annotations"][0].update(bbox="0 0 1 1"), r"\[x, y, width, height\]"),
        (lambda d: d["annotations"][0].update(area=-1), "area must be >= 0"),
        (lambda d: d["annotations"][0].update(area=10**400), "area must be finite"),
        (lambda d: d["annotations"][0].update(iscrowd=2), "iscrowd must be 0 or 1"),
        (lambda d: d["annotations"].append(dict(d["annotations"][0])), "duplicates"),
    ],
)
def test_check_coco_dataset_refuses(change, match):
    import copy

    d = copy.deepcopy(_DS)
    change(d)
    with pytest.raises(ValueError, match=f"^t.json: .*{match}"):
        coco.check_coco_dataset(d, name="t.json")


def test_check_coco_dataset_and_results_accept_valid_input_unchanged():
    import copy

    d = copy.deepcopy(_DS)
    assert coco.check_coco_dataset(d) is d and d == _DS
    res = [{"image_id": 1, "category_id": 7, "score": 0.5, "bbox": [0, 0, 1, 1]}]
    assert coco.check_coco_results(res, d) == res  # unknown category: COCOeval skips it
    with pytest.raises(ValueError, match=r"category_id must be one of the truth's \[1, 3\]"):
        coco.check_coco_results(res, d, unknown_categories="raise")
    masks = [
        {
            "image_id": 1,
            "category_id": 1,
            "score": 0.5,
            "segmentation": coco.rle_encode(np.eye(3, dtype=bool)),
        }
    ]
    assert coco.check_coco_results(masks, d, geometry="segm") == masks
    bad = [{**masks[0], "segmentation": {"size": [3, 3], "counts": [1, 2]}}]
    with pytest.raises(ValueError, match="sum to height"):
        coco.check_coco_results(bad, d, geometry="segm")


def test_align_results_refuses_what_it_would_misread():
    truth = {
        "images": [{"id": 1, "file_name": "a.jpg"}],
        "categories": [{"id": 1, "name": "c"}, {"id": 2, "name": "d"}],
    }
    doc = {
        "images": [{"id": 5, "file_name": "a.jpg"}],
        "categories": [{"id": 9, "name": "c"}],
        "annotations": [{"image_id": 5, "category_id": 9, "bbox": [0, 0, 1, 1], "score": 1}],
    }
    assert coco.align_results(doc, truth, name="p")[0]["category_id"] == 1
    doc["annotations"][0]["category_id"] = 2  # not the file's: would have scored as "d"
    with pytest.raises(ValueError, match="^p: annotations.0. names category id 2"):
        coco.align_results(doc, truth, name="p")
    with pytest.raises(ValueError, match=r"^p: results\[0\] category_id must be one of"):
        coco.align_results([{"image_id": 1, "category_id": 4}], truth, name="p")
