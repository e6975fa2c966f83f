"""Tests of segloc.localize.detect: the Detections record, the Detector protocol and registry,
and the jobs built on them (localize files, score boxes, train any detector)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from segloc import io
from segloc.detection_metrics import evaluate_detections
from segloc.localize.detect import (
    DETECTORS,
    Detections,
    Detector,
    detector_class,
    evaluate_boxes,
    load_detector,
    localize_images,
    localize_to_file,
)
from segloc.localize.train import train_detector


def test_detections_record():
    d = Detections(
        [[0, 0, 4, 2], [1, 1, 3, 3], [2, 2, 5, 5]], [0.2, 0.9, 0.5], [0, 1, 0], ("a", "b")
    )
    assert d.boxes.dtype == np.float64 and d.classes.dtype == np.int64 and len(d) == 3
    best = d.filter(score_threshold=0.4)
    assert best.scores.tolist() == [0.9, 0.5] and best.classes.tolist() == [1, 0]
    assert d.filter(max_detections=1).boxes.tolist() == [[1.0, 1.0, 3.0, 3.0]]
    np.testing.assert_array_equal(d.scaled(0.5).boxes, d.boxes * 2)
    coco = d.select([1]).to_coco(7)
    assert coco == [{"image_id": 7, "category_id": 2, "bbox": [1.0, 1.0, 2.0, 2.0], "score": 0.9}]
    empty = Detections(np.zeros((0, 4)), [])
    assert len(empty) == 0 and empty.to_coco(1) == []


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (([[0, 0, 1, 1]], [0.5, 0.4]), "one entry per box"),
        (([[0, 0, 1, 1]], [0.5], [2]), "classes must index class_names"),
    ],
)
def test_detections_refuse_inconsistent_arrays(args, match):
    with pytest.raises(ValueError, match=match):
        Detections(*args)


@pytest.mark.parametrize("method", sorted(DETECTORS))
def test_every_registered_detector_follows_the_protocol(method):
    cls = detector_class(method)
    for name in ("detect", "save", "load"):
        assert callable(getattr(cls, name)), (method, name)
    if method in ("from-mask", "selective-search"):  # nothing to learn: build and round-trip
        det = cls()
        assert isinstance(det, Detector)


def test_unknown_method_and_missing_model(tmp_path):
    with pytest.raises(ValueError, match="method must be one of"):
        detector_class("yolo")
    with pytest.raises(FileNotFoundError, match="no such model file or run folder"):
        load_detector("hog-svm", tmp_path / "none.npz")


def _blobs(path, *, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 30, (60, 80)).astype(np.uint8)
    image[10:25, 10:30] = 220
    image[35:52, 45:70] = 200
    io.write_image(path, image)
    return image


def test_localize_images_and_the_saved_mask_detector(tmp_path):
    from segloc.localize.from_mask import MaskDetector

    _blobs(tmp_path / "a.png")
    det = MaskDetector(split=False)
    back = MaskDetector.load(det.save(tmp_path / "m.npz"))
    doc, pictures = localize_images(back, [tmp_path / "a.png"], method="from-mask")
    boxes = sorted(a["bbox"] for a in doc["annotations"])
    # oracle: scikit-image's Otsu (exact on the uint8 levels) and connected regions
    from skimage.filters import threshold_otsu
    from skimage.measure import label, regionprops

    image = io.read_image(tmp_path / "a.png")[0]
    want = sorted(
        [
            float(r.bbox[1]),
            float(r.bbox[0]),
            float(r.bbox[3] - r.bbox[1]),
            float(r.bbox[2] - r.bbox[0]),
        ]
        for r in regionprops(label(image > threshold_otsu(image), connectivity=1))
        if r.area >= 10
    )
    assert boxes == want and len(boxes) == 2
    assert doc["images"][0]["height"] == 60 and pictures[0].shape == (60, 80)


def test_localize_to_file_writes_all_or_nothing(tmp_path):
    from segloc.localize.from_mask import MaskDetector

    _blobs(tmp_path / "a.png")
    (tmp_path / "blocker").write_text("a file where a folder must go")
    with pytest.raises((OSError, ValueError)):
        localize_to_file(
            MaskDetector(),
            [tmp_path / "a.png"],
            tmp_path / "boxes.json",
            overlays=[tmp_path / "blocker" / "a_boxes.png"],
        )
    assert not (tmp_path / "boxes.json").exists()
    with pytest.raises(ValueError, match="is also an input"):
        localize_to_file(MaskDetector(), [tmp_path / "a.png"], tmp_path / "a.png")


def test_evaluate_boxes_maps_localize_files_onto_the_truth(tmp_path):
    truth = {
        "images": [{"id": 5, "file_name": "a.png", "height": 60, "width": 80}],
        "annotations": [
            {
                "id": 1,
                "image_id": 5,
                "category_id": 1,
                "bbox": [10, 10, 20, 15],
                "area": 300,
                "iscrowd": 0,
            }
        ],
        "categories": [{"id": 1, "name": "blob"}],
    }
    (tmp_path / "t.json").write_text(json.dumps(truth))
    pred = {
        "images": [{"id": 1, "file_name": "a.png"}],
        "categories": [{"id": 1, "name": "object"}],
        "annotations": [
            {"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 15], "score": 0.9},
            {"image_id": 1, "category_id": 1, "bbox": [50, 40, 10, 10], "score": 0.5},
        ],
    }
    (tmp_path / "p.json").write_text(json.dumps(pred))
    scores = evaluate_boxes(tmp_path / "p.json", tmp_path / "t.json")
    # oracle: the same results with the truth's ids, scored directly
    results = [{**r, "image_id": 5} for r in pred["annotations"]]
    want = evaluate_detections(truth, results)
    assert scores["AP"] == pytest.approx(want["AP"]) and scores["AP50"] == pytest.approx(1.0)
    assert list(scores["per_class"]) == ["blob"]
    with pytest.raises(ValueError, match="p.json: image 'b.png' is not in the truth"):
        pred["images"][0]["file_name"] = "b.png"
        (tmp_path / "p.json").write_text(json.dumps(pred))
        evaluate_boxes(tmp_path / "p.json", tmp_path / "t.json")


@pytest.fixture(scope="module")
def colour_boxes(tmp_path_factory):
    """8 colour photos of one bright rectangle each, with labels.csv (VOC coordinates)."""
    root = tmp_path_factory.mktemp("colour")
    rng = np.random.default_rng(3)
    rows = []
    for i in range(8):
        image = rng.integers(0, 60, (192, 256, 3)).astype(np.uint8)
        x0, y0 = (int(v) for v in rng.integers(5, 100, 2))
        image[y0 : y0 + 60, x0 : x0 + 80] = (240, 180, 40)
        io.write_image(root / "images" / f"p{i}.png", image)
        rows.append([f"p{i}.png", 256, 192, "thing", x0 + 1, y0 + 1, x0 + 80, y0 + 60])
    with open(root / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax"])
        w.writerows(rows)
    return root


def test_hog_detector_sees_the_same_image_trained_from_files_and_called_from_python(
    colour_boxes, tmp_path
):
    """No train/serve mismatch: the detector converts and shrinks images itself, so files
    through train_detector / localize and arrays through detect() give the same boxes."""
    from segloc.color import to_grey
    from segloc.localize.hog import HogSvmDetector

    summary = train_detector(
        "hog-svm", colour_boxes, tmp_path / "hog.npz", max_side=128, hard_rounds=0
    )
    assert summary["train"] + summary["held_out"] == 8
    det = HogSvmDetector.load(tmp_path / "hog.npz")
    assert det.max_side == 128 and det.classes == ("thing",)
    path = colour_boxes / "images" / "p0.png"
    doc, _ = localize_images(det, [path], score_threshold=-10.0)
    rgb = io.read_image(path)[0]
    direct = det.detect(rgb, score_threshold=-10.0)
    files = np.array([a["bbox"] for a in doc["annotations"]]).reshape(-1, 4)
    np.testing.assert_allclose(files[:, :2], direct.boxes[:, :2])
    # the grey it works on is segloc.color.to_grey's luminance, not a channel mean
    grey, factor = det._grey(rgb)
    assert factor == 0.5 and grey.shape == (96, 128)
    from skimage.transform import resize

    want = resize(to_grey(rgb), (96, 128), anti_aliasing=True, preserve_range=True)
    np.testing.assert_allclose(grey, want)


@pytest.mark.parametrize(
    ("method", "kwargs", "match"),
    [
        ("hog-svm", {"epochs": 3}, "epochs apply to method cnn only"),
        ("proposals", {"resume": True}, "resume apply to method cnn only"),
        ("cnn", {}, "needs epochs"),
        ("yolo", {}, "method must be one of"),
    ],
)
def test_train_detector_refuses_options_of_other_methods(
    colour_boxes, tmp_path, method, kwargs, match
):
    with pytest.raises(ValueError, match=match):
        train_detector(method, colour_boxes, tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("method", ["hog-svm", "proposals", "from-mask", "selective-search"])
@pytest.mark.parametrize("damage", ["truncated", "garbage", "other-kind"])
def test_damaged_detector_files_are_refused_naming_the_file(tmp_path, method, damage):
    from segloc.localize.from_mask import MaskDetector

    good = MaskDetector().save(tmp_path / "good.npz")
    bad = tmp_path / "bad.npz"
    if damage == "truncated":
        bad.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    elif damage == "garbage":
        bad.write_bytes(b"\x00not a zip at all" * 10)
    else:
        bad.write_bytes(good.read_bytes())
    if damage == "other-kind" and method == "from-mask":
        return  # the right kind: loads
    with pytest.raises(ValueError, match=r"bad\.npz: not a saved"):
        load_detector(method, bad)
