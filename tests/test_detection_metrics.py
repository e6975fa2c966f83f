"""Tests for segloc.detection_metrics: COCO AP/AR against pycocotools' COCOeval on real
annotations (raccoon boxes, DSB 2018 nuclei masks) with seeded synthetic predictions, hand
cases, and instance matching / panoptic quality against hand counts and brute force."""

from __future__ import annotations

import contextlib
import copy
import io
import itertools
import math
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from segloc import detection_metrics as DM
from segloc.coco import (
    box_to_coco,
    coco_dataset,
    coco_results,
    masks_to_coco_annotations,
    voc_to_box,
)
from segloc.instances import instance_boxes

DATA = Path(
    os.environ.get("SEGLOC_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data")
)
KEYS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]


# --------------------------------------------------------------------------- pycocotools oracle


def cocoeval(truth, results, iou_type):
    """COCOeval stats (12,), precision (T, R, K, A, M) and recall (T, K, A, M)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):  # COCO prints progress
        gt = COCO()
        gt.dataset = copy.deepcopy(truth)
        gt.createIndex()
        dt = gt.loadRes(copy.deepcopy(results))  # loadRes adds keys to the dicts it gets
        ev = COCOeval(gt, dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats, ev.eval["precision"], ev.eval["recall"]


def coco_mean(values):
    v = values[values > -1]
    return float(np.mean(v)) if v.size else -1.0


def assert_matches_cocoeval(truth, results, iou_type):
    ours = DM.evaluate_detections(truth, results, iou_type=iou_type)
    stats, precision, recall = cocoeval(truth, results, iou_type)
    np.testing.assert_allclose([ours[k] for k in KEYS], stats, atol=1e-6, rtol=0)
    cat_ids = sorted(c["id"] for c in truth["categories"])
    for k, cat in enumerate(cat_ids):
        per = ours["per_class"][cat]
        assert per["AP"] == pytest.approx(coco_mean(precision[:, :, k, 0, -1]), abs=1e-6)
        assert per["AP50"] == pytest.approx(coco_mean(precision[0, :, k, 0, -1]), abs=1e-6)
        assert per["AP75"] == pytest.approx(coco_mean(precision[5, :, k, 0, -1]), abs=1e-6)
        assert per["APs"] == pytest.approx(coco_mean(precision[:, :, k, 1, -1]), abs=1e-6)
        assert per["AR1"] == pytest.approx(coco_mean(recall[:, k, 0, 0]), abs=1e-6)
        assert per["AR100"] == pytest.approx(coco_mean(recall[:, k, 0, -1]), abs=1e-6)
        assert per["ARl"] == pytest.approx(coco_mean(recall[:, k, 3, -1]), abs=1e-6)
    return ours, stats


# --------------------------------------------------------------------------- raccoon boxes


def raccoon_truth():
    folder = DATA / "raccoon" / "annotations"
    if not folder.is_dir():
        pytest.skip(f"raccoon data not found in {folder}")
    images, anns = [], []
    for k, path in enumerate(sorted(folder.glob("*.xml"))):
        root = ET.parse(path).getroot()
        size = root.find("size")
        images.append(
            {
                "id": k + 1,
                "file_name": root.findtext("filename"),
                "width": int(size.findtext("width")),
                "height": int(size.findtext("height")),
            }
        )
        for obj in root.iter("object"):
            bb = obj.find("bndbox")
            box = voc_to_box(*(float(bb.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax")))
            anns.append({"image_id": k + 1, "category_id": 1, "bbox": box_to_coco(box)})
    # a second category (every third box) and a category without truth exercise per-class
    # results and COCO's -1; a few crowd boxes exercise the crowd rules
    for j, a in enumerate(anns):
        if j % 3 == 2:
            a["category_id"] = 2
        if j % 40 == 7:
            a["iscrowd"] = 1
    cats = [{"id": 1, "name": "raccoon"}, {"id": 2, "name": "raccoon_b"}, {"id": 3, "name": "x"}]
    return coco_dataset(images, anns, cats)


def jittered_box_results(truth, seed):
    rng = np.random.default_rng(seed)
    sizes = {im["id"]: (im["width"], im["height"]) for im in truth["images"]}
    out = []
    for a in truth["annotations"]:
        if rng.random() < 0.15:  # missed
            continue
        for copy_ in range(1 + (rng.random() < 0.2)):  # some duplicates
            x, y, w, h = a["bbox"]
            dx, dy, dw, dh = rng.normal(0, 0.06, 4) * [w, h, w, h]
            box = [x + dx, y + dy, max(w + dw, 1.0), max(h + dh, 1.0)]
            cat = a["category_id"] if rng.random() > 0.05 else int(rng.integers(1, 4))
            score = round(float(rng.uniform(0.2, 1.0)) / (1 + copy_), 2)  # rounding: ties
            out.append({"image_id": a["image_id"], "category_id": cat, "bbox": box, "score": score})
    for im, (width, height) in sizes.items():
        n = int(rng.poisson(1.5)) + (130 if im == 5 else 0)  # one image over maxDets=100
        for j in range(n):
            w, h = rng.uniform(4, 0.8 * width), rng.uniform(4, 0.8 * height)
            if rng.random() < 0.5:  # small and medium false positives too
                w, h = w / 8, h / 8
            x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
            out.append(
                {
                    "image_id": im,
                    "category_id": 1 if j >= 3 else int(rng.integers(1, 4)),
                    "bbox": [x, y, w, h],
                    "score": round(float(rng.uniform(0, 0.8)), 2),
                }
            )
    return out


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_bbox_ap_equals_cocoeval_on_raccoon(seed):
    truth = raccoon_truth()
    assert len(truth["annotations"]) == 173
    results = jittered_box_results(truth, seed)
    ours, stats = assert_matches_cocoeval(truth, results, "bbox")
    assert 0.1 < ours["AP"] < 0.9  # predictions are neither useless nor perfect
    assert ours["per_class"][3]["AP"] == -1 and ours["per_class"][3]["AR100"] == -1


# --------------------------------------------------------------------------- nuclei masks


def nuclei_truth():
    path = DATA / "dsb2018_nuclei" / "masks" / "img2d.tif"
    if not path.is_file():
        pytest.skip(f"nuclei data not found at {path}")
    import tifffile

    inst = tifffile.imread(path).astype(np.int32)
    anns = masks_to_coco_annotations(inst, None, image_id=1)
    for a in anns:
        a.pop("instance")
    anns[3]["iscrowd"] = 1
    anns[50]["iscrowd"] = 1
    h, w = inst.shape
    truth = coco_dataset([{"id": 1, "height": h, "width": w}], anns, [{"id": 1, "name": "nucleus"}])
    return inst, truth


def perturbed_instances(inst, seed):
    """Masks eroded, dilated, shifted or kept; some dropped, some spurious disks added."""
    rng = np.random.default_rng(seed)
    masks = []
    for i in np.unique(inst)[1:]:
        m = inst == i
        r = rng.random()
        if r < 0.1:
            continue
        if r < 0.3:
            m = ndi.binary_erosion(m)
        elif r < 0.5:
            m = ndi.binary_dilation(m, iterations=int(rng.integers(1, 3)))
        elif r < 0.75:
            m = np.roll(m, tuple(rng.integers(-3, 4, 2)), axis=(0, 1))
        if m.any():
            masks.append(m)
    yy, xx = np.mgrid[: inst.shape[0], : inst.shape[1]]
    for _ in range(15):
        cy, cx, rad = (
            rng.integers(0, inst.shape[0]),
            rng.integers(0, inst.shape[1]),
            rng.integers(3, 20),
        )
        masks.append((yy - cy) ** 2 + (xx - cx) ** 2 <= rad**2)
    scores = np.round(rng.uniform(0, 1, len(masks)), 2)
    boxes = np.array([instance_boxes(m.astype(np.int32))[1][0] for m in masks])
    return coco_results(1, boxes, scores, np.ones(len(masks), np.int64), masks=masks)


@pytest.mark.slow
@pytest.mark.parametrize("with_bbox", [True, False])
def test_segm_ap_equals_cocoeval_on_nuclei(with_bbox):
    inst, truth = nuclei_truth()
    results = perturbed_instances(inst, seed=3)
    if not with_bbox:  # loadRes then takes areas (and boxes) from the masks
        results = [{k: v for k, v in r.items() if k != "bbox"} for r in results]
    ours, _ = assert_matches_cocoeval(truth, results, "segm")
    assert 0.1 < ours["AP"] < 0.9
    assert ours["APl"] == -1  # nuclei are all small or medium


@pytest.mark.slow
@pytest.mark.parametrize("with_bbox", [True, False])
def test_bbox_ap_equals_cocoeval_on_nuclei(with_bbox):
    inst, truth = nuclei_truth()
    results = perturbed_instances(inst, seed=4)
    if not with_bbox:  # boxes then come from the masks, as maskUtils.toBbox
        results = [{k: v for k, v in r.items() if k != "bbox"} for r in results]
    assert_matches_cocoeval(truth, results, "bbox")


# --------------------------------------------------------------------------- hand cases


def one_image_truth(boxes, crowd=(), cats=(1,)):
    anns = [
        {
            "image_id": 1,
            "category_id": 1,
            "bbox": list(b),
            "iscrowd": int(k in crowd),
        }
        for k, b in enumerate(boxes)
    ]
    return coco_dataset(
        [{"id": 1, "height": 200, "width": 200}], anns, [{"id": c, "name": str(c)} for c in cats]
    )


def res(bbox, score, cat=1):
    return {"image_id": 1, "category_id": cat, "bbox": list(bbox), "score": score}


def test_perfect_detection_scores_one():
    truth = one_image_truth([[10, 10, 50, 50]])
    out = DM.evaluate_detections(truth, [res([10, 10, 50, 50], 0.9)])
    for k in ("AP", "AP50", "AP75", "APm", "AR1", "AR10", "AR100", "ARm"):
        assert out[k] == pytest.approx(1.0, abs=1e-12), k
    assert out["APs"] == -1 and out["APl"] == -1  # no truth of those sizes


def test_no_detections_scores_zero():
    truth = one_image_truth([[10, 10, 50, 50], [100, 100, 20, 20]])
    out = DM.evaluate_detections(truth, [])
    for k in ("AP", "AP50", "AP75", "APs", "APm", "AR1", "AR100"):
        assert out[k] == 0.0, k
    assert out["per_class"][1]["AP"] == 0.0


def test_category_without_truth_is_minus_one_and_left_out_of_means():
    truth = one_image_truth([[10, 10, 50, 50]], cats=(1, 2))
    results = [res([10, 10, 50, 50], 0.9), res([0, 0, 30, 30], 0.8, cat=2)]
    out = DM.evaluate_detections(truth, results)
    assert out["per_class"][2]["AP"] == -1 and out["per_class"][2]["AR100"] == -1
    assert out["AP"] == pytest.approx(1.0)
    _, stats = assert_matches_cocoeval(truth, results, "bbox")
    assert stats[0] == pytest.approx(1.0)


def test_detection_on_crowd_region_is_not_a_false_positive():
    truth = one_image_truth([[10, 10, 50, 50], [100, 100, 80, 80]], crowd=(1,))
    crowd_hit = [res([110, 110, 20, 20], 0.95), res([10, 10, 50, 50], 0.9)]
    assert DM.evaluate_detections(truth, crowd_hit)["AP"] == pytest.approx(1.0)
    # the same detection without the crowd region is a false positive ranked first
    plain = one_image_truth([[10, 10, 50, 50]])
    assert DM.evaluate_detections(plain, crowd_hit)["AP"] == pytest.approx(0.5)


def test_half_right_detections_by_hand():
    # scores: fp 0.9, tp 0.8 -> precision 1/2 at recall 1 everywhere: AP = 0.5
    truth = one_image_truth([[10, 10, 50, 50]])
    out = DM.evaluate_detections(truth, [res([150, 150, 40, 40], 0.9), res([10, 10, 50, 50], 0.8)])
    assert out["AP"] == pytest.approx(0.5)
    assert out["AR1"] == 0.0 and out["AR10"] == pytest.approx(1.0)


def test_equal_iou_goes_to_the_last_truth_like_cocoeval():
    # det 1 has IoU 100/180 with both truths; COCO keeps the last, which leaves truth 0
    # (IoU 10/18 with det 2; truth 1 only 6/22) for det 2: two hits instead of one
    truth = one_image_truth([[0, 10, 10, 14], [0, 6, 10, 14]])
    results = [res([0, 10, 10, 10], 0.9), res([0, 14, 10, 14], 0.8)]
    out, stats = assert_matches_cocoeval(truth, results, "bbox")
    assert out["AP50"] == pytest.approx(1.0)


def test_iou_equal_to_threshold_matches():
    truth = one_image_truth([[0, 0, 10, 20]])
    out, _ = assert_matches_cocoeval(truth, [res([0, 0, 10, 10], 0.9)], "bbox")  # IoU 0.5
    assert out["AP50"] == pytest.approx(1.0)
    assert out["AP"] == pytest.approx(0.1)  # only the 0.50 threshold of ten


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda t: DM.evaluate_detections(t, [], iou_type="keypoints"), ValueError, "iou_type"),
        (lambda t: DM.evaluate_detections(t, [], max_dets=(10, 1)), ValueError, "increasing"),
        (lambda t: DM.evaluate_detections(t, [], max_dets=(0,)), ValueError, "positive"),
        (
            lambda t: DM.evaluate_detections(t, [dict(res([0, 0, 1, 1], 0.5), image_id=9)]),
            ValueError,
            "image_id must be one of",
        ),
        (lambda t: DM.evaluate_detections(t, [{"image_id": 1}]), ValueError, "category_id"),
        (lambda t: DM.evaluate_detections({"images": []}, []), ValueError, "annotations"),
    ],
)
def test_evaluate_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call(one_image_truth([[10, 10, 50, 50]]))


# --------------------------------------------------------------------------- average_precision_at


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("thr", [0.5, 0.75])
def test_average_precision_at_equals_coco_single_threshold(seed, thr):
    rng = np.random.default_rng(seed)
    truth_xyxy = rng.integers(0, 150, (6, 2)).repeat(2, 1)[:, [0, 2, 1, 3]] + [0, 0, 30, 30]
    truth_xyxy = truth_xyxy.astype(float)
    pred = truth_xyxy[rng.random(6) < 0.8] + rng.integers(-6, 7, (1, 4))
    pred = np.concatenate(
        [pred, rng.integers(0, 100, (3, 2)).repeat(2, 1)[:, [0, 2, 1, 3]] + [0, 0, 20, 20]]
    )
    pred = pred[np.all(pred[:, 2:] > pred[:, :2], 1)]
    scores = np.round(rng.random(len(pred)), 1)
    truth = one_image_truth([box_to_coco(b) for b in truth_xyxy])
    results = [res(box_to_coco(b), float(s)) for b, s in zip(pred, scores, strict=True)]
    coco = DM.evaluate_detections(truth, results, max_dets=(1000,))
    key = "AP50" if thr == 0.5 else "AP75"
    assert DM.average_precision_at(truth_xyxy, pred, scores, thr) == pytest.approx(
        coco[key], abs=1e-12
    )


def test_average_precision_at_3d_and_edges():
    truth = [[0, 0, 0, 4, 4, 4], [10, 10, 10, 12, 12, 12]]
    pred = [[0, 0, 0, 4, 4, 4], [20, 20, 20, 22, 22, 22]]
    # tp then fp: precision 1 up to recall 0.5, then 0 -> 51 of 101 points are 1
    assert DM.average_precision_at(truth, pred, [0.9, 0.1]) == pytest.approx(51 / 101, abs=1e-9)
    assert DM.average_precision_at(truth, np.zeros((0, 6)), []) == 0.0
    assert math.isnan(DM.average_precision_at(np.zeros((0, 6)), pred, [0.9, 0.1]))
    with pytest.raises(ValueError, match="one value per box"):
        DM.average_precision_at(truth, pred, [0.9])


# --------------------------------------------------------------------------- instance maps

HAND_TRUTH = np.array([1, 1, 1, 1, 0, 2, 2, 2, 2, 0, 3, 3])
HAND_PRED = np.array([5, 5, 5, 0, 0, 6, 6, 6, 6, 6, 0, 7])
# IoU(5, 1) = 3/4, IoU(6, 2) = 4/5, IoU(7, 3) = 1/2 exactly (not > 0.5)


@pytest.mark.parametrize(
    ("thr", "tp", "fp", "fn"),
    [(0.5, 2, 1, 1), (0.4, 3, 0, 0), (0.75, 1, 2, 2), (0.8, 0, 3, 3)],
)
def test_matched_f1_hand(thr, tp, fp, fn):
    out = DM.matched_f1(HAND_PRED, HAND_TRUTH, iou_threshold=thr)
    assert (out["tp"], out["fp"], out["fn"]) == (tp, fp, fn)
    assert out["precision"] == pytest.approx(tp / (tp + fp))
    assert out["recall"] == pytest.approx(tp / (tp + fn))
    assert out["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))


def test_panoptic_quality_hand():
    out = DM.panoptic_quality(HAND_PRED.reshape(3, 4), HAND_TRUTH.reshape(3, 4))
    assert (out["tp"], out["fp"], out["fn"]) == (2, 1, 1)
    assert out["sq"] == pytest.approx((0.75 + 0.8) / 2)
    assert out["rq"] == pytest.approx(2 / 3)
    assert out["pq"] == pytest.approx(1.55 / 3)
    assert out["pq"] == pytest.approx(out["sq"] * out["rq"])


def test_instance_metrics_empty_cases():
    z = np.zeros((4, 4), np.int32)
    one = z.copy()
    one[1:3, 1:3] = 4
    assert all(math.isnan(DM.panoptic_quality(z, z)[k]) for k in ("pq", "sq", "rq"))
    pq = DM.panoptic_quality(z, one)
    assert (pq["pq"], pq["sq"], pq["rq"]) == (0.0, 0.0, 0.0)
    f = DM.matched_f1(z, one)
    assert math.isnan(f["precision"]) and f["recall"] == 0.0 and f["f1"] == 0.0
    assert DM.panoptic_quality(one, one)["pq"] == 1.0
    with pytest.raises(ValueError, match="same shape"):
        DM.matched_f1(one, one[:3])
    with pytest.raises(TypeError, match="integer instance map"):
        DM.matched_f1(one.astype(float), one)


def brute_force_matching(iou, thr):
    """Most pairs with IoU > thr, then largest total IoU, over every one-to-one matching."""
    n_p, n_t = iou.shape
    best = (0, 0.0)
    for k in range(1, min(n_p, n_t) + 1):
        for rows in itertools.combinations(range(n_p), k):
            for cols in itertools.permutations(range(n_t), k):
                if all(iou[r, c] > thr for r, c in zip(rows, cols, strict=True)):
                    total = sum(iou[r, c] for r, c in zip(rows, cols, strict=True))
                    best = max(best, (k, total))
    return best


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("thr", [0.1, 0.3, 0.5])
def test_matched_f1_low_threshold_matches_brute_force(seed, thr):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 4, (6, 6)).astype(np.int32)  # up to 3 fragmented instances
    pred = rng.integers(0, 5, (6, 6)).astype(np.int32)
    iou = np.array(
        [
            [
                ((pred == p) & (truth == t)).sum() / ((pred == p) | (truth == t)).sum()
                for t in np.unique(truth)[1:]
            ]
            for p in np.unique(pred)[1:]
        ]
    )
    tp, total = brute_force_matching(iou, thr)
    out = DM.matched_f1(pred, truth, iou_threshold=thr)
    assert out["tp"] == tp
    if tp:
        assert out["mean_matched_iou"] * tp == pytest.approx(total)
