"""segloc localize, train-detector and evaluate-boxes end to end."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage.measure import label, regionprops

from segloc.cli import main
from segloc.detection_metrics import evaluate_detections

DATA = Path(os.environ.get("SEGLOC_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
RACCOON = DATA / "raccoon"
HAVE_CNN = importlib.util.find_spec("segloc.localize.cnn") is not None

VOC = """<annotation><filename>{name}</filename>
<size><width>{w}</width><height>{h}</height><depth>3</depth></size>{objects}</annotation>"""
OBJ = """<object><name>{cls}</name><difficult>0</difficult><bndbox><xmin>{x0}</xmin>
<ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"""


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def blobs(tmp_path):
    """Three bright rectangles (two touching discs would merge; these are apart), 8-bit PNG."""
    rng = np.random.default_rng(0)
    img = rng.normal(40, 5, (64, 96))
    img[8:28, 6:26] += 150
    img[36:58, 40:70] += 150
    img[10:20, 75:90] += 150
    img = np.clip(img, 0, 255).astype(np.uint8)
    path = tmp_path / "blobs.png"
    Image.fromarray(img).save(path)
    return path, img


# --------------------------------------------------------------------------- evaluate-boxes


@pytest.fixture
def hand_case(tmp_path):
    """Two images, two classes; truth as COCO JSON, VOC XML folder and CSV; predictions."""
    truth_boxes = {  # segloc boxes (half-open)
        "a.jpg": [("cat", [10, 10, 50, 40]), ("dog", [60, 5, 90, 45])],
        "b.jpg": [("cat", [0, 0, 30, 30])],
    }
    size = (100, 60)  # width, height
    names = sorted(truth_boxes)
    classes = ["cat", "dog"]
    coco = {
        "images": [
            {"id": k, "file_name": n, "width": size[0], "height": size[1]}
            for k, n in enumerate(names, start=1)
        ],
        "categories": [{"id": k + 1, "name": c} for k, c in enumerate(classes)],
        "annotations": [],
    }
    xml_dir = tmp_path / "voc"
    xml_dir.mkdir()
    csv_rows = ["filename,width,height,class,xmin,ymin,xmax,ymax"]
    for k, n in enumerate(names, start=1):
        objs = []
        for cls, (x0, y0, x1, y1) in truth_boxes[n]:
            coco["annotations"].append(
                {
                    "id": len(coco["annotations"]) + 1,
                    "image_id": k,
                    "category_id": classes.index(cls) + 1,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": 0,
                }
            )
            # VOC: 1-based inclusive
            objs.append(OBJ.format(cls=cls, x0=x0 + 1, y0=y0 + 1, x1=x1, y1=y1))
            csv_rows.append(f"{n},{size[0]},{size[1]},{cls},{x0 + 1},{y0 + 1},{x1},{y1}")
        (xml_dir / f"{Path(n).stem}.xml").write_text(
            VOC.format(name=n, w=size[0], h=size[1], objects="".join(objs))
        )
    (tmp_path / "truth.json").write_text(json.dumps(coco))
    (tmp_path / "truth.csv").write_text("\n".join(csv_rows) + "\n")
    results = [
        {"image_id": 1, "category_id": 1, "bbox": [12, 10, 38, 30], "score": 0.9},
        {"image_id": 1, "category_id": 1, "bbox": [60, 5, 30, 40], "score": 0.8},  # wrong class
        {"image_id": 1, "category_id": 2, "bbox": [62, 8, 28, 40], "score": 0.7},
        {"image_id": 2, "category_id": 1, "bbox": [40, 20, 30, 30], "score": 0.95},  # FP
        {"image_id": 2, "category_id": 1, "bbox": [2, 1, 30, 28], "score": 0.6},
    ]
    (tmp_path / "results.json").write_text(json.dumps(results))
    return tmp_path, coco, results


@pytest.mark.parametrize("truth_name", ["truth.json", "voc", "truth.csv"])
def test_evaluate_boxes_equals_detection_metrics(hand_case, truth_name, capsys):
    folder, coco, results = hand_case
    code, out, err = run(
        capsys,
        "evaluate-boxes",
        folder / "results.json",
        folder / truth_name,
        "--json",
        folder / "scores.json",
    )
    assert code == 0, err
    want = evaluate_detections(coco, results)
    got = json.loads((folder / "scores.json").read_text())
    for key in ("AP", "AP50", "AP75", "AR100"):
        assert got[key] == pytest.approx(want[key], abs=1e-12)
        assert got["per_class"]["dog"][key] == pytest.approx(want["per_class"][2][key], abs=1e-12)
    assert 0 < want["AP50"] < 1  # the case is not trivial
    assert "cat" in out and "dog" in out and f"{want['AP50']:.4f}" in out


def test_evaluate_boxes_matches_localize_files_by_file_name(hand_case, capsys):
    folder, coco, results = hand_case
    # a localize-style file listing the images in the other order (b then a)
    doc = {
        "images": [
            {"id": 1, "file_name": "b.jpg", "width": 100, "height": 60},
            {"id": 2, "file_name": "a.jpg", "width": 100, "height": 60},
        ],
        "categories": [{"id": 1, "name": "dog"}, {"id": 2, "name": "cat"}],
        "annotations": [
            {**r, "image_id": 3 - r["image_id"], "category_id": 3 - r["category_id"]}
            for r in results
        ],
    }
    (folder / "pred.json").write_text(json.dumps(doc))
    code, _, err = run(
        capsys, "evaluate-boxes", folder / "pred.json", folder / "voc", "--json", folder / "s.json"
    )
    assert code == 0, err
    got = json.loads((folder / "s.json").read_text())
    assert got["AP"] == pytest.approx(evaluate_detections(coco, results)["AP"], abs=1e-12)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "no such file"),
        ("{not json", "not valid JSON"),
        ('{"images": [{"id": 1, "file_name": "zzz.jpg"}], "annotations": []}', "zzz.jpg"),
    ],
)
def test_evaluate_boxes_bad_prediction(hand_case, content, match, capsys):
    folder, _, _ = hand_case
    pred = folder / "bad_pred.json"
    if content is not None:
        pred.write_text(content)
    code, out, err = run(
        capsys, "evaluate-boxes", pred, folder / "truth.json", "--json", folder / "o.json"
    )
    assert code == 2
    assert "bad_pred.json" in err and match in err
    assert not (folder / "o.json").exists()


def test_evaluate_boxes_bad_truth(hand_case, capsys):
    folder, _, _ = hand_case
    bad = folder / "bad.csv"
    bad.write_text("filename,width,height,class,xmin,ymin,xmax,ymax\na.jpg,100,60,cat,50,1,10,9\n")
    code, _, err = run(capsys, "evaluate-boxes", folder / "results.json", bad)
    assert code == 2 and "bad.csv" in err
    code, _, err = run(capsys, "evaluate-boxes", folder / "results.json", folder / "nothere")
    assert code == 2 and "nothere" in err


# --------------------------------------------------------------------------- localize


def test_localize_from_mask_threshold_boxes_equal_regionprops(blobs, tmp_path, capsys):
    path, img = blobs
    out = tmp_path / "boxes.json"
    overlay = tmp_path / "ov.png"
    code, _, err = run(
        capsys, "localize", path, "--method", "from-mask", "-o", out, "--overlay", overlay
    )
    assert code == 0, err
    doc = json.loads(out.read_text())
    assert doc["images"] == [
        {"id": 1, "file_name": "blobs.png", "path": str(path), "height": 64, "width": 96}
    ]
    got = sorted(tuple(a["bbox"]) for a in doc["annotations"])
    # oracle: scikit-image regionprops of the same Otsu mask (bbox = rows/cols half-open)
    from skimage.filters import threshold_otsu

    props = regionprops(label(img > threshold_otsu(img)))
    want = sorted(
        (
            float(p.bbox[1]),
            float(p.bbox[0]),
            float(p.bbox[3] - p.bbox[1]),
            float(p.bbox[2] - p.bbox[0]),
        )
        for p in props
        if p.area >= 10
    )
    assert got == want and len(got) == 3
    # scored by mean scaled intensity, best first
    scores = [a["score"] for a in doc["annotations"]]
    assert scores == sorted(scores, reverse=True) and 0.5 < min(scores) <= max(scores) <= 1
    assert overlay.is_file()
    drawn = np.asarray(Image.open(overlay))
    assert drawn.shape == (64, 96, 3)


def test_localize_from_mask_files(blobs, tmp_path, capsys):
    path, img = blobs
    mask = np.zeros(img.shape, np.uint8)
    mask[5:15, 5:25] = 255
    mpath = tmp_path / "m.png"
    Image.fromarray(mask).save(mpath)
    out = tmp_path / "b.json"
    code, _, err = run(
        capsys, "localize", path, "--method", "from-mask", "--mask", mpath, "-o", out
    )
    assert code == 0, err
    ann = json.loads(out.read_text())["annotations"]
    assert [a["bbox"] for a in ann] == [[5.0, 5.0, 20.0, 10.0]]
    assert ann[0]["score"] == 1.0


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--method", "sliding-window"], "needs --model"),
        (["--method", "proposals", "--model", "{bad}"], "bad.npz"),
        (["--method", "sliding-window", "--model", "{bad}"], "bad.npz"),
        (["--method", "from-mask", "--mask", "{missing}"], "missing.png"),
        (["--method", "from-mask", "--mask", "{a}", "{a}"], "one mask per image"),
    ],
)
def test_localize_bad_input_exits_2_and_writes_nothing(blobs, tmp_path, extra, match, capsys):
    path, _ = blobs
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"junk")
    names = {"bad": bad, "missing": tmp_path / "missing.png", "a": path}
    extra = [e.format(**names) for e in extra]
    out = tmp_path / "o.json"
    code, _, err = run(capsys, "localize", path, *extra, "-o", out, "--overlay", tmp_path / "ov")
    assert code == 2
    assert match in err
    assert not out.exists() and not (tmp_path / "ov").exists()


def test_localize_unreadable_image_names_it(blobs, tmp_path, capsys):
    path, _ = blobs
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    out = tmp_path / "o.json"
    code, _, err = run(capsys, "localize", path, broken, "--method", "from-mask", "-o", out)
    assert code == 2 and "broken.png" in err
    assert not out.exists()


def test_localize_raw_proposals_ranked(blobs, tmp_path, capsys):
    path, _ = blobs
    out = tmp_path / "p.json"
    code, _, err = run(capsys, "localize", path, "--method", "proposals", "--top", "15", "-o", out)
    assert code == 0, err
    ann = json.loads(out.read_text())["annotations"]
    assert 1 <= len(ann) <= 15
    scores = [a["score"] for a in ann]
    assert scores == sorted(scores, reverse=True)
    boxes = {tuple(a["bbox"]) for a in ann}
    assert (6.0, 8.0, 20.0, 20.0) in boxes or len(ann) == 15  # the first rectangle, usually


# --------------------------------------------------------------------------- raccoon end to end


@pytest.fixture(scope="module")
def raccoon_dir(tmp_path_factory):
    """Six raccoon images (symlinked, not copied) with their VOC files."""
    if not RACCOON.is_dir():
        pytest.skip("raccoon data not available")
    root = tmp_path_factory.mktemp("raccoon")
    (root / "images").mkdir()
    (root / "annotations").mkdir()
    stems = ["raccoon-1", "raccoon-2", "raccoon-3", "raccoon-4", "raccoon-6", "raccoon-7"]
    for s in stems:
        (root / "images" / f"{s}.jpg").symlink_to(RACCOON / "images" / f"{s}.jpg")
        (root / "annotations" / f"{s}.xml").symlink_to(RACCOON / "annotations" / f"{s}.xml")
    return root


@pytest.mark.slow
@pytest.mark.parametrize(
    ("train", "method"), [("proposals", "proposals"), ("hog-svm", "sliding-window")]
)
def test_raccoon_train_localize_evaluate(raccoon_dir, tmp_path, train, method, capsys):
    model = tmp_path / "det.npz"
    code, out, err = run(
        capsys,
        "train-detector",
        "--data",
        raccoon_dir,
        "--method",
        train,
        "-o",
        model,
        "--val-fraction",
        "0.34",
        "--max-side",
        "160",
    )
    assert code == 0, err
    assert model.is_file() and "4 images (2 held out)" in out
    images = sorted((raccoon_dir / "images").glob("*.jpg"))[:3]
    boxes = tmp_path / "boxes.json"
    overlays = tmp_path / "overlays"
    code, out, err = run(
        capsys,
        "localize",
        *images,
        "--method",
        method,
        "--model",
        model,
        "--score-threshold",
        "-100",
        "-o",
        boxes,
        "--overlay",
        overlays,
    )
    assert code == 0, err
    doc = json.loads(boxes.read_text())
    assert [im["file_name"] for im in doc["images"]] == [p.name for p in images]
    assert {a["image_id"] for a in doc["annotations"]} == {1, 2, 3}
    assert sorted(p.name for p in overlays.iterdir()) == [f"{p.stem}_boxes.png" for p in images]
    code, out, err = run(
        capsys, "evaluate-boxes", boxes, raccoon_dir / "annotations", "--json", tmp_path / "s.json"
    )
    assert code == 0, err
    scores = json.loads((tmp_path / "s.json").read_text())
    # three of the six truth images have predictions; AR is bounded by 3/6 of the boxes
    assert 0 <= scores["AP50"] <= 1 and scores["AR100"] <= 0.5 + 1e-9


def test_train_detector_bad_data(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = run(
        capsys,
        "train-detector",
        "--data",
        tmp_path / "empty",
        "--method",
        "proposals",
        "-o",
        tmp_path / "m.npz",
    )
    assert code == 2 and "empty" in err and not (tmp_path / "m.npz").exists()


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_CNN, reason="segloc.localize.cnn not available")
def test_raccoon_cnn_wiring(raccoon_dir, tmp_path, capsys):
    run_dir = tmp_path / "cnn_run"
    code, out, err = run(
        capsys,
        "train-detector",
        "--data",
        raccoon_dir,
        "--method",
        "cnn",
        "-o",
        run_dir,
        "--epochs",
        "1",
    )
    assert code == 0, err
    images = sorted((raccoon_dir / "images").glob("*.jpg"))[:2]
    boxes = tmp_path / "cnn.json"
    code, out, err = run(
        capsys,
        "localize",
        *images,
        "--method",
        "cnn",
        "--model",
        run_dir,
        "--score-threshold",
        "0",
        "-o",
        boxes,
    )
    assert code == 0, err
    doc = json.loads(boxes.read_text())
    assert [a["image_id"] for a in doc["annotations"]] == [1, 2]  # one box per image
    assert doc["categories"] == [{"id": 1, "name": "raccoon"}]
