"""Proposal detectors (segloc.localize.proposal_detector) and detector save/load."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.draw import disk
from skimage.measure import label, regionprops

from segloc.boxes import box_iou
from segloc.coco import box_to_coco, coco_results
from segloc.detection_metrics import evaluate_detections
from segloc.localize.hog import HogSvmDetector
from segloc.localize.proposal_detector import (
    ProposalDetector,
    apply_regression,
    regression_targets,
)


def scene(rng, *, square=True, size=96):
    """Grey scene: a bright square (the object) among bright disks (distractors), noise."""
    img = rng.random((size, size)) * 0.25
    boxes = []
    occupied = np.zeros((size, size), bool)

    def free_spot(side):
        for _ in range(200):
            y, x = rng.integers(2, size - side - 2, size=2)
            if not occupied[y - 2 : y + side + 2, x - 2 : x + side + 2].any():
                occupied[y - 2 : y + side + 2, x - 2 : x + side + 2] = True
                return int(y), int(x)
        raise RuntimeError("no room")

    if square:
        side = int(rng.integers(22, 34))
        y, x = free_spot(side)
        img[y : y + side, x : x + side] = 0.85 + rng.random((side, side)) * 0.1
        boxes.append([x, y, x + side, y + side])
    for _ in range(2):
        d = int(rng.integers(14, 24))
        y, x = free_spot(d)
        rr, cc = disk((y + d / 2 - 0.5, x + d / 2 - 0.5), d / 2, shape=img.shape)
        img[rr, cc] = 0.85
    return img, np.array(boxes, np.float64).reshape(-1, 4)


@pytest.fixture(scope="module")
def trained():
    rng = np.random.default_rng(0)
    data = [scene(rng) for _ in range(10)]
    det = ProposalDetector(max_side=None, patch_size=32, context=4, C=0.1)
    det.fit([im for im, _ in data], [b for _, b in data], seed=0)
    return det


def test_regression_targets_hand_case_and_inverse():
    p = np.array([[0.0, 0.0, 10.0, 20.0], [5.0, 5.0, 9.0, 7.0]])
    g = np.array([[2.0, 4.0, 12.0, 44.0], [5.0, 5.0, 9.0, 7.0]])
    t = regression_targets(p, g)
    # centre (5, 10) -> (7, 24), size (10, 20) -> (10, 40)
    np.testing.assert_allclose(t[0], [0.2, 0.7, 0.0, np.log(2.0)])
    np.testing.assert_allclose(t[1], 0.0)
    np.testing.assert_allclose(apply_regression(p, t), g)
    with pytest.raises(ValueError, match="positive size"):
        regression_targets([[0, 0, 0, 5]], [[0, 0, 1, 1]])


def test_finds_the_object(trained):
    rng = np.random.default_rng(123)
    tests = [scene(rng) for _ in range(4)]
    truth = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "object"}]}
    results = []
    for k, (img, boxes) in enumerate(tests, start=1):
        truth["images"].append({"id": k, "height": img.shape[0], "width": img.shape[1]})
        for b in boxes:
            bb = box_to_coco(b)
            truth["annotations"].append(
                {"id": k, "image_id": k, "category_id": 1, "bbox": bb, "area": bb[2] * bb[3]}
            )
        found = trained.detect(img, score_threshold=-10.0)
        pred, scores = found.boxes, found.scores
        results += coco_results(k, pred, scores, np.ones(len(pred), np.int64))
        # the best box is the square
        assert box_iou(pred[:1], boxes)[0, 0] >= 0.5
    assert evaluate_detections(truth, results)["AP50"] >= 0.9


def test_finds_nothing_without_the_object(trained):
    rng = np.random.default_rng(7)
    for _ in range(3):
        img, boxes = scene(rng, square=False)
        assert len(boxes) == 0
        found = trained.detect(img)  # default: SVM margin >= 0
        pred, scores = found.boxes, found.scores
        assert len(pred) == 0, scores
    # while the same detector does fire on a scene with the square
    img, boxes = scene(rng)
    pred = trained.detect(img).boxes
    assert len(pred) >= 1 and box_iou(pred[:1], boxes)[0, 0] >= 0.5


def test_training_used_hard_negatives(trained):
    stats = trained.training_stats_
    assert stats["positives"][0] > 2 * 10  # truth + proposals with IoU >= 0.5, mirrored
    assert len(stats["negatives_per_round"]) == 2
    assert trained.reg_coef_.shape == (1, 4, trained.n_features)


def test_save_load_round_trip(trained, tmp_path):
    path = trained.save(tmp_path / "det.npz", metadata={"note": "x"})
    back = ProposalDetector.load(path)
    assert back.classes_ == trained.classes_ and back.metadata_ == {"note": "x"}
    assert repr(back) == repr(trained)
    img, _ = scene(np.random.default_rng(5))
    a, b = trained.detect(img, score_threshold=-5.0), back.detect(img, score_threshold=-5.0)
    for field in ("boxes", "scores", "classes"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_hog_svm_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    data = [scene(rng) for _ in range(6)]
    det = HogSvmDetector((32, 32), C=0.1).fit([im for im, _ in data], [b for _, b in data])
    path = det.save(tmp_path / "hog.npz", metadata={"max_side": 320})
    back = HogSvmDetector.load(path)
    assert back.metadata_ == {"max_side": 320} and back.window_ == det.window_
    img, _ = scene(rng)
    a, b = det.detect(img, score_threshold=-5.0), back.detect(img, score_threshold=-5.0)
    for field in ("boxes", "scores", "classes"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


@pytest.mark.parametrize("cls", [ProposalDetector, HogSvmDetector])
def test_load_rejects_other_files(cls, tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="bad.npz"):
        cls.load(bad)
    other = tmp_path / "other.npz"
    np.savez(other, meta=np.array('{"format": "something else"}'), coef=np.zeros(3))
    with pytest.raises(ValueError, match="other.npz"):
        cls.load(other)


def test_two_classes_are_told_apart():
    """Squares and disks as two classes: each scene's best box of each class is right."""
    rng = np.random.default_rng(1)
    images, boxes, names = [], [], []
    for _ in range(10):
        img, sq = scene(rng)
        # the disks' boxes: from the image, the bright blobs that are not the square
        lab = label(img > 0.8)
        dsk = [
            [r.bbox[1], r.bbox[0], r.bbox[3], r.bbox[2]]
            for r in regionprops(lab)
            if box_iou([[r.bbox[1], r.bbox[0], r.bbox[3], r.bbox[2]]], sq)[0, 0] < 0.5
        ]
        images.append(img)
        boxes.append(np.concatenate([sq, np.array(dsk, np.float64)]))
        names.append(["square"] + ["disk"] * len(dsk))
    det = ProposalDetector(max_side=None, patch_size=32, context=4, C=0.1, box_regression=False)
    det.fit(images, boxes, names, seed=0)
    assert det.classes_ == ["disk", "square"]
    img, sq = scene(np.random.default_rng(99))
    found = det.detect(img, score_threshold=-10.0)
    pred, cls = found.boxes, found.classes
    best_square = pred[cls == 1][0]
    assert box_iou([best_square], sq)[0, 0] >= 0.5


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"patch_size": 30}, "patch_size must be a multiple"),
        ({"context": 32}, "context must be less"),
        ({"C": 0}, "C"),
    ],
)
def test_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ProposalDetector(**kwargs)


def test_bad_fit_and_detect_inputs():
    det = ProposalDetector(max_side=None, patch_size=32)
    with pytest.raises(ValueError, match="fitted first"):
        det.detect(np.zeros((32, 32)))
    with pytest.raises(ValueError, match="one entry per image"):
        det.fit([np.zeros((32, 32))], [])
    with pytest.raises(ValueError, match="at least one object box"):
        det.fit([np.zeros((32, 32))], [np.zeros((0, 4))])
    with pytest.raises(ValueError, match=r"images\[0\] must have float values in \[0, 1\]"):
        det.fit([np.full((32, 32), 3.0)], [[[0, 0, 8, 8]]])
