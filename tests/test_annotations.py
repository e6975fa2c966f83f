"""Tests for segloc.localize.annotations: VOC XML and CSV box readers."""

from __future__ import annotations

import csv
import errno
import os
from pathlib import Path

import numpy as np
import pytest

from segloc import io
from segloc.localize.annotations import read_box_csv, read_voc_folder, read_voc_xml

DATA = Path(os.environ.get("SEGLOC_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
RACCOON = DATA / "raccoon"


def write_voc(path, objects, *, size=(50, 40), filename="a.jpg"):
    objs = "".join(
        f"<object><name>{name}</name><difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin>"
        f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for name, b, d in objects
    )
    path.write_text(
        f"<annotation><filename>{filename}</filename><size><width>{size[0]}</width>"
        f"<height>{size[1]}</height><depth>3</depth></size>{objs}</annotation>"
    )
    return path


def test_read_voc_xml_one_based_inclusive_to_half_open(tmp_path):
    p = write_voc(
        tmp_path / "a.xml",
        [("cat", (1, 1, 50, 40), 0), ("dog", (11, 21, 20, 30), 1), ("cat", (5, 5, 5, 5), 0)],
    )
    rec = read_voc_xml(p, classes=["cat", "dog"])
    # VOC xmin = 1 is column 0; xmax = 50 is the last column (49) -> half-open 50
    np.testing.assert_array_equal(rec["boxes"], [[0, 0, 50, 40], [10, 20, 20, 30], [4, 4, 5, 5]])
    assert rec["classes"] == ["cat", "dog", "cat"]
    assert rec["difficult"].tolist() == [False, True, False]
    assert (rec["width"], rec["height"]) == (50, 40)
    assert rec["image_path"] == tmp_path / "a.jpg"
    # the 10 x 10 inclusive box crops exactly 10 x 10 pixels
    x0, y0, x1, y1 = rec["boxes"][1].astype(int)
    assert np.zeros((40, 50))[y0:y1, x0:x1].shape == (10, 10)


@pytest.mark.parametrize(
    ("objects", "match"),
    [
        ([("cat", (0, 1, 10, 10), 0)], "inside the 50x40 image"),
        ([("cat", (1, 1, 51, 10), 0)], "inside the 50x40 image"),
        ([("cat", (1, 1, 10, 41), 0)], "inside the 50x40 image"),
        ([("cat", (20, 1, 10, 10), 0)], "xmax >= xmin"),
        ([("cat", (1, 12, 10, 11), 0)], "xmax >= xmin and ymax >= ymin"),
        ([("bird", (1, 1, 10, 10), 0)], "class must be one of"),
        ([("cat", (1, "a", 10, 10), 0)], "must be a number"),
    ],
)
def test_read_voc_xml_rejects_bad_boxes(tmp_path, objects, match):
    p = write_voc(tmp_path / "bad.xml", objects)
    with pytest.raises(ValueError, match=match) as info:
        read_voc_xml(p, classes=["cat", "dog"])
    assert str(info.value).startswith(str(p))


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("<annotation><size><width>5</width><height>5</height></size></annotation>", "filename"),
        ("<annotation><filename>a</filename></annotation>", "size/width"),
        ("<annotation", "not a readable VOC XML"),
        (
            "<annotation><filename>a</filename><size><width>5</width><height>5</height></size>"
            "<object><name>x</name></object></annotation>",
            "bndbox/xmin",
        ),
    ],
)
def test_read_voc_xml_rejects_broken_files(tmp_path, text, match):
    p = tmp_path / "broken.xml"
    p.write_text(text)
    with pytest.raises(ValueError, match=match):
        read_voc_xml(p)


def test_read_voc_folder_and_missing_image(tmp_path):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "images").mkdir()
    write_voc(tmp_path / "annotations" / "b.xml", [("cat", (1, 1, 10, 10), 0)], filename="b.jpg")
    write_voc(tmp_path / "annotations" / "a.xml", [], filename="a.jpg")
    # the images must be real: read_voc_folder checks their size against <size> (50x40)
    io.write_image(tmp_path / "images" / "a.jpg", np.zeros((40, 50, 3), np.uint8))
    with pytest.raises(ValueError, match="does not exist"):
        read_voc_folder(tmp_path)
    io.write_image(tmp_path / "images" / "b.jpg", np.zeros((40, 50, 3), np.uint8))
    recs = read_voc_folder(tmp_path)
    assert [r["image_path"].name for r in recs] == ["a.jpg", "b.jpg"]
    assert recs[0]["boxes"].shape == (0, 4)
    with pytest.raises(ValueError, match="must hold VOC"):
        read_voc_folder(tmp_path / "images")


def test_read_box_csv(tmp_path):
    p = tmp_path / "labels.csv"
    p.write_text(
        "filename,width,height,class,xmin,ymin,xmax,ymax\n"
        "b.jpg,50,40,cat,1,1,50,40\n"
        "a.jpg,30,20,dog,11,6,20,15\n"
        "b.jpg,50,40,dog,2,3,4,5\n"
    )
    recs = read_box_csv(p, image_folder=tmp_path / "img")
    assert [r["image_path"] for r in recs] == [
        tmp_path / "img" / "b.jpg",
        tmp_path / "img" / "a.jpg",
    ]
    np.testing.assert_array_equal(recs[0]["boxes"], [[0, 0, 50, 40], [1, 2, 4, 5]])
    assert recs[0]["classes"] == ["cat", "dog"]
    np.testing.assert_array_equal(recs[1]["boxes"], [[10, 5, 20, 15]])


@pytest.mark.parametrize(
    ("rows", "match"),
    [
        ("a.jpg,30,20,dog,0,1,5,5", "line 2 must lie inside"),
        ("a.jpg,30,20,dog,9,1,5,5", "line 2 must have xmax >= xmin"),
        ("a.jpg,30,20,cow,1,1,5,5", "class must be one of"),
        ("a.jpg,30,20,dog,1,1,5,5\na.jpg,31,20,dog,1,1,5,5", "line 3 gives a.jpg size 31x20"),
        ("a.jpg,30,20,dog,1,1,5", "fill every column"),
        ("a.jpg,-3,20,dog,1,1,5,5", "positive integer"),
    ],
)
def test_read_box_csv_rejects_bad_rows(tmp_path, rows, match):
    p = tmp_path / "labels.csv"
    p.write_text("filename,width,height,class,xmin,ymin,xmax,ymax\n" + rows + "\n")
    with pytest.raises(ValueError, match=match) as info:
        read_box_csv(p, classes=["dog"])
    assert str(info.value).startswith(str(p))


def test_read_box_csv_missing_columns(tmp_path):
    p = tmp_path / "labels.csv"
    p.write_text("filename,class,x0\na.jpg,dog,3\n")
    with pytest.raises(ValueError, match=r"missing \['width'"):
        read_box_csv(p)


@pytest.mark.skipif(not RACCOON.is_dir(), reason="raccoon data not available")
def test_raccoon_voc_and_csv_agree():
    recs = read_voc_folder(RACCOON, classes=["raccoon"])
    from_csv = read_box_csv(RACCOON / "labels.csv", image_folder=RACCOON / "images")
    assert len(recs) == len(from_csv) == 160
    assert sum(len(r["boxes"]) for r in recs) == 173
    by_name = {r["image_path"]: r for r in from_csv}
    with open(RACCOON / "labels.csv", newline="") as fh:
        raw = list(csv.DictReader(fh))
    for r in recs:
        np.testing.assert_array_equal(r["boxes"], by_name[r["image_path"]]["boxes"])
    # one row checked against the raw numbers: VOC (xmin, ymin, xmax, ymax) -> (xmin-1, ymin-1, ...)
    row = raw[0]
    box = by_name[RACCOON / "images" / row["filename"]]["boxes"][0]
    vals = [int(row[k]) for k in ("xmin", "ymin", "xmax", "ymax")]
    np.testing.assert_array_equal(box, [vals[0] - 1, vals[1] - 1, vals[2], vals[3]])


def test_annotation_readers_keep_system_errors(tmp_path, monkeypatch):
    from segloc.localize.annotations import read_box_csv, read_voc_xml

    xml = tmp_path / "a.xml"
    xml.write_text("<annotation/>")
    csv_file = tmp_path / "b.csv"
    csv_file.write_text("filename\n")

    def failing(self):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", failing)
    for reader, path in ((read_voc_xml, xml), (read_box_csv, csv_file)):
        with pytest.raises(PermissionError):
            reader(path)
