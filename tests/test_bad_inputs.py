"""Every bad input found by hand in the readers (issue 19), each with a test that failed on
the code before the hardening (commit 7ac4136): a traceback (AttributeError, IndexError,
BadZipFile, UnicodeDecodeError without the file's name) or, worse, a score or a box
computed from data that should have been refused.

Where the hand-found case was a command, the command is run (``segloc.cli.main``): exit 2,
one line on stderr naming the file, no output file. The library function underneath is
tested too, for its typed error.
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile

from segloc import io
from segloc.cli import main
from segloc.detection_metrics import evaluate_detections
from segloc.io import CorruptFile, SeglocIOError
from segloc.localize.annotations import (
    read_box_csv,
    read_box_dataset,
    read_box_predictions,
    read_box_truth,
    read_voc_folder,
)

TRUTH = {
    "images": [
        {"id": 1, "file_name": "a.jpg", "height": 60, "width": 100},
        {"id": 2, "file_name": "b.jpg", "height": 60, "width": 100},
    ],
    "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 30], "area": 1200},
        {"id": 2, "image_id": 2, "category_id": 2, "bbox": [0, 0, 30, 30], "area": 900},
    ],
}
GOOD = {"image_id": 1, "category_id": 1, "bbox": [12, 10, 38, 30], "score": 0.9}
DOC = {  # a segloc localize file: its own ids, matched to the truth by name
    "images": [{"id": 7, "file_name": "a.jpg"}, {"id": 8, "file_name": "b.jpg"}],
    "categories": [{"id": 3, "name": "cat"}],
    "annotations": [{"image_id": 7, "category_id": 3, "bbox": [12, 10, 38, 30], "score": 0.9}],
}


def run(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    _, err = capsys.readouterr()
    return code, err


def _doc(change) -> dict:
    d = json.loads(json.dumps(DOC))
    change(d)
    return d


# prediction files: (content, what the one-line error must say)
BAD_PREDICTIONS = {
    "list_of_numbers": ([1, 2, 3], "results[0] must be a dict, got 1"),
    "three_number_box": ([{**GOOD, "bbox": [1, 2, 3]}], "must have 4 numbers"),
    "entry_not_a_dict_first": (["x", GOOD], "results[0] must be a dict, got 'x'"),
    "entry_not_a_dict_later": ([GOOD, 5], "results[1] must be a dict, got 5"),
    "images_as_a_string": ({"images": "a.jpg", "annotations": []}, "images must be a list"),
    "nan_box": ([{**GOOD, "bbox": [float("nan"), 10, 38, 30]}], "bbox must be finite, got nan"),
    "infinity_box": ([{**GOOD, "bbox": [12, 10, float("inf"), 30]}], "must be finite, got inf"),
    "negative_width": ([{**GOOD, "bbox": [12, 10, -38, 30]}], "width and height >= 0"),
    "nan_score": ([{**GOOD, "score": float("nan")}], "score must be finite, got nan"),
    "unknown_category_in_a_list": ([{**GOOD, "category_id": 9}], "category_id must be one of"),
    "doc_duplicate_image_ids": (
        _doc(lambda d: d["images"][1].update(id=7)),
        "images ids must be unique, got duplicates [7]",
    ),
    "doc_annotation_of_a_missing_image": (
        _doc(lambda d: d["annotations"][0].update(image_id=99)),
        "names image id 99, not in its images",
    ),
    "doc_unknown_category": (
        # category 1 is not in the file's categories; as a raw id it would score as "cat"
        _doc(lambda d: d["annotations"][0].update(category_id=1)),
        "names category id 1, not in its categories",
    ),
}


def _truth(change) -> dict:
    t = json.loads(json.dumps(TRUTH))
    change(t)
    return t


BAD_TRUTHS = {
    "annotation_of_a_missing_image": (
        _truth(lambda t: t["annotations"][0].update(image_id=9)),
        "annotations[0] image_id must be one of the images' ids, got 9",
    ),
    "duplicate_image_ids": (
        _truth(lambda t: t["images"][1].update(id=1)),
        "images ids must be unique, got duplicates [1]",
    ),
    "unknown_category": (
        _truth(lambda t: t["annotations"][1].update(category_id=5)),
        "annotations[1] category_id must be one of [1, 2], got 5",
    ),
    "nan_box": (
        _truth(lambda t: t["annotations"][0].update(bbox=[float("nan"), 0, 5, 5])),
        "annotations[0] bbox must be finite",
    ),
    "images_as_a_string": (_truth(lambda t: t.update(images="a.jpg")), "images must be a list"),
    "annotation_not_a_dict": (
        _truth(lambda t: t["annotations"].append(3)),
        "annotations[2] must be a dict",
    ),
}


@pytest.fixture
def truth_file(tmp_path) -> Path:
    p = tmp_path / "truth.json"
    p.write_text(json.dumps(TRUTH))
    return p


@pytest.mark.parametrize("case", sorted(BAD_PREDICTIONS))
def test_evaluate_boxes_refuses_bad_predictions(case, truth_file, tmp_path, capsys):
    content, message = BAD_PREDICTIONS[case]
    pred = tmp_path / f"{case}.json"
    pred.write_text(json.dumps(content))
    out = tmp_path / "scores.json"
    code, err = run(capsys, "evaluate-boxes", pred, truth_file, "--json", out)
    assert code == 2, err
    assert err.count("\n") == 1 and str(pred) in err and message in err, err
    assert not out.exists()
    with pytest.raises(CorruptFile, match=f"^{re.escape(str(pred))}: .*{re.escape(message)}"):
        read_box_predictions(pred, read_box_truth(truth_file))


@pytest.mark.parametrize("case", sorted(BAD_TRUTHS))
def test_evaluate_boxes_refuses_bad_truth(case, tmp_path, capsys):
    content, message = BAD_TRUTHS[case]
    truth = tmp_path / f"{case}.json"
    truth.write_text(json.dumps(content))
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps([GOOD]))
    code, err = run(capsys, "evaluate-boxes", pred, truth)
    assert code == 2 and str(truth) in err and message in err, err
    with pytest.raises(CorruptFile, match=f"^{truth}: "):
        read_box_truth(truth)


def test_good_predictions_still_score(truth_file, tmp_path, capsys):
    for name, content in (("list.json", [GOOD]), ("doc.json", DOC)):
        pred = tmp_path / name
        pred.write_text(json.dumps(content))
        code, err = run(capsys, "evaluate-boxes", pred, truth_file)
        assert code == 0, err


@pytest.mark.parametrize(
    ("results", "match"),
    [
        ([{**GOOD, "bbox": [float("nan"), 0, 1, 1]}], r"results\[0\] bbox must be finite"),
        ([{**GOOD, "bbox": [0, 0, -1, 1]}], "width and height >= 0"),
        ([{**GOOD, "score": float("nan")}], r"results\[0\] score must be finite"),
        ([{**GOOD, "bbox": [1, 2, 3]}], "4 numbers"),
        ([GOOD, "x"], r"results\[1\] must be a dict"),
    ],
)
def test_evaluate_detections_refuses_what_cocoeval_would_score(results, match):
    with pytest.raises(ValueError, match=match):
        evaluate_detections(TRUTH, results)


def test_evaluate_detections_refuses_truth_cocoeval_would_skip():
    for content, message in BAD_TRUTHS.values():
        with pytest.raises(ValueError, match=message[:25].replace("[", r"\[")):
            evaluate_detections(content, [GOOD])


# --------------------------------------------------------------------------- VOC, CSV, .npz


def _voc_dataset(tmp_path: Path, real_size=(80, 50), stated=(100, 60)) -> Path:
    (tmp_path / "annotations").mkdir()
    (tmp_path / "images").mkdir()
    io.write_image(tmp_path / "images" / "a.png", np.zeros((real_size[1], real_size[0]), np.uint8))
    (tmp_path / "annotations" / "a.xml").write_text(
        f"<annotation><filename>a.png</filename><size><width>{stated[0]}</width>"
        f"<height>{stated[1]}</height></size><object><name>cat</name><bndbox><xmin>60</xmin>"
        "<ymin>40</ymin><xmax>95</xmax><ymax>58</ymax></bndbox></object></annotation>"
    )
    return tmp_path


def test_voc_image_whose_real_size_disagrees_with_its_xml_is_refused(tmp_path):
    root = _voc_dataset(tmp_path)  # the box lies outside the real 80x50 image
    xml = root / "annotations" / "a.xml"
    with pytest.raises(CorruptFile, match=f"^{xml}: states the image size 100x60, but .*80x50"):
        read_voc_folder(root)
    with pytest.raises(CorruptFile, match="100x60"):
        read_box_dataset(root)


def test_csv_dataset_image_size_checked_too(tmp_path):
    (tmp_path / "images").mkdir()
    io.write_image(tmp_path / "images" / "a.png", np.zeros((50, 80), np.uint8))
    (tmp_path / "labels.csv").write_text(
        "filename,width,height,class,xmin,ymin,xmax,ymax\na.png,100,60,cat,1,1,10,10\n"
    )
    with pytest.raises(CorruptFile, match="labels.csv: states the image size 100x60"):
        read_box_dataset(tmp_path)


def test_non_utf8_csv_names_the_file(tmp_path, truth_file, capsys):
    p = tmp_path / "latin.csv"
    p.write_bytes(
        "filename,width,height,class,xmin,ymin,xmax,ymax\nä.jpg,10,8,cat,1,1,10,8\n".encode(
            "latin-1"
        )
    )
    with pytest.raises(CorruptFile, match=rf"^{p}: is not UTF-8 text \(byte 0xe4 at offset 48\)"):
        read_box_csv(p)
    pred = tmp_path / "p.json"
    pred.write_text("[]")
    code, err = run(capsys, "evaluate-boxes", pred, p)
    assert code == 2 and str(p) in err and "UTF-8" in err
    # Excel's UTF-8 with a byte-order mark is UTF-8
    p.write_bytes(b"\xef\xbb\xbf" + p.read_bytes().decode("latin-1").encode())
    assert read_box_csv(p)[0]["image_path"].name == "ä.jpg"


def test_csv_field_above_the_csv_module_limit_is_a_typed_error(tmp_path):
    p = tmp_path / "huge.csv"
    p.write_text("filename,width,height,class,xmin,ymin,xmax,ymax\n" + "x" * 200_000 + "\n")
    with pytest.raises(CorruptFile, match="huge.csv: line .*field larger than field limit"):
        read_box_csv(p)


def test_deeply_nested_json_is_a_typed_error(tmp_path):
    p = tmp_path / "deep.json"
    p.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(CorruptFile, match="deep.json: not readable JSON .nested too deeply."):
        read_box_truth(p)
    with pytest.raises(CorruptFile, match="nested too deeply"):
        read_box_predictions(p, TRUTH)


@pytest.mark.parametrize(
    "load",
    [
        "segloc.localize.hog:HogSvmDetector",
        "segloc.localize.proposal_detector:ProposalDetector",
    ],
)
def test_truncated_npz_detector_is_a_typed_error(load, tmp_path):
    import importlib

    module, name = load.split(":")
    cls = getattr(importlib.import_module(module), name)
    p = tmp_path / "det.npz"
    np.savez(p, meta=np.array('{"format": "x"}'), coef=np.zeros((50, 50)))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with open(p, "rb") as fh, pytest.raises(zipfile.BadZipFile):  # uncaught before
        np.load(fh)
    with pytest.raises(CorruptFile, match=f"^{p}: not a saved {name} .BadZipFile"):
        cls.load(p)
    with pytest.raises(OSError) as err:  # a missing file is the system's error
        cls.load(tmp_path / "missing.npz")
    assert not isinstance(err.value, ValueError)


def test_boxes_on_a_nan_tiff_with_kind_binary_is_refused(tmp_path, capsys):
    m = np.zeros((20, 30), np.float32)
    m[2:6, 3:9] = 1
    m[15, 25] = np.nan
    p = tmp_path / "nan.tif"
    tifffile.imwrite(p, m)
    out = tmp_path / "boxes.json"
    code, err = run(capsys, "boxes", p, "--kind", "binary", "-o", out)
    assert code == 2 and str(p) in err and "NaN" in err, err
    assert not out.exists()
    with pytest.raises(SeglocIOError, match="mask holds NaN"):
        io.read_mask(p, kind="binary")
