"""Box annotations from PASCAL VOC XML files and CSV tables, checked and in segloc boxes.

VOC boxes are 1-based and inclusive; they come back as segloc boxes ``(x0, y0, x1, y1)``
with half-open edges, ``(xmin - 1, ymin - 1, xmax, ymax)`` (:func:`segloc.coco.voc_to_box`,
``docs/conventions.md``). Every reader rejects an annotation it cannot trust with a
:class:`segloc.io.CorruptFile` (a ``ValueError``) whose message starts with the file's path:
a box outside the image, a box with ``xmax < xmin`` or ``ymax < ymin``, a class not in
``classes``, a missing field, text that is not UTF-8, JSON nested too deeply to parse, an
image whose real size differs from the size its annotation states. A missing file is a
:class:`segloc.io.SeglocIOError`; a system error (permission, I/O) stays an ``OSError``.

Each image's annotation is a dict::

    {"image_path": Path, "width": int, "height": int,
     "boxes": float64 array (N, 4), "classes": list of N class names,
     "difficult": bool array (N,)}

References
----------
.. [VOC] Everingham, M. et al. "The PASCAL Visual Object Classes (VOC) Challenge", IJCV 88(2)
   303-338, 2010. :doi:`10.1007/s11263-009-0275-4`
"""

from __future__ import annotations

import csv
import io as _textio
import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from segloc.coco import (
    align_results,
    check_coco_results,
    records_to_coco,
    voc_to_box,
)
from segloc.detection_metrics import check_detection_truth
from segloc.engine.data import split_cases
from segloc.io import CorruptFile, SeglocIOError, default_limits, image_size

__all__ = [
    "read_voc_xml",
    "read_voc_folder",
    "read_box_csv",
    "read_box_dataset",
    "split_records",
    "read_box_truth",
    "read_box_predictions",
]

CSV_COLUMNS = ("filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax")


def _read_bytes(path: Path, max_bytes: int | None = None) -> bytes:
    """The file's bytes; a missing file or one above the byte limit is a typed error."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise SeglocIOError(f"{path}: no such file", path=path) from None
    limits = default_limits(max_bytes=max_bytes)
    # parsed text takes several times its size in memory: the limit applies to the file
    limits.check(path, 0, size, detail="annotation file")
    if path.is_dir():
        raise SeglocIOError(f"{path}: is a folder, not a file", path=path)
    return path.read_bytes()


def _read_text(path: Path, max_bytes: int | None = None) -> str:
    """The file as UTF-8 text (a byte-order mark, as Excel writes, is dropped)."""
    data = _read_bytes(path, max_bytes)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CorruptFile(
            path,
            f"is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "save it as UTF-8",
        ) from None


def _read_json(path: Path) -> object:
    text = _read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CorruptFile(path, f"not valid JSON ({exc})") from None
    except RecursionError:
        raise CorruptFile(path, "not readable JSON (nested too deeply)") from None


def _number(text: str | None, *, path: Path, what: str) -> float:
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise CorruptFile(path, f"{what} must be a number, got {text!r}") from None
    if not np.isfinite(value):
        raise CorruptFile(path, f"{what} must be finite, got {text!r}")
    return value


def _box(
    xmin: float,
    ymin: float,
    xmax: float,
    ymax: float,
    *,
    width: int,
    height: int,
    path: Path,
    where: str,
) -> tuple[float, ...]:
    """Checked segloc box from VOC values: ordered and inside the width x height image."""
    if xmax < xmin or ymax < ymin:
        raise CorruptFile(
            path,
            f"{where} must have xmax >= xmin and ymax >= ymin, "
            f"got (xmin, ymin, xmax, ymax) = ({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g})",
        )
    box = voc_to_box(xmin, ymin, xmax, ymax)
    if box[0] < 0 or box[1] < 0 or box[2] > width or box[3] > height:
        raise CorruptFile(
            path,
            f"{where} must lie inside the {width}x{height} image (VOC 1-based: "
            f"1 <= xmin, xmax <= width), got (xmin, ymin, xmax, ymax) = "
            f"({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g})",
        )
    return box


def _check_class(name: str, classes: Sequence[str] | None, *, path: Path, where: str) -> str:
    if classes is not None and name not in classes:
        raise CorruptFile(path, f"{where} class must be one of {list(classes)}, got {name!r}")
    return name


def _record(
    image_path: Path,
    width: int,
    height: int,
    boxes: list,
    classes: list[str],
    difficult: list[bool],
) -> dict:
    return {
        "image_path": image_path,
        "width": width,
        "height": height,
        "boxes": np.asarray(boxes, np.float64).reshape(-1, 4),
        "classes": classes,
        "difficult": np.asarray(difficult, bool),
    }


def _size(value: str | None, *, path: Path, what: str) -> int:
    v = _number(value, path=path, what=what)
    if v <= 0 or v != int(v):
        raise CorruptFile(path, f"{what} must be a positive integer, got {value!r}")
    if v > 2**31 - 1:
        raise CorruptFile(path, f"{what} must be at most 2**31 - 1, got {value!r}")
    return int(v)


def read_voc_xml(
    path: str | os.PathLike,
    *,
    image_folder: str | os.PathLike | None = None,
    classes: Sequence[str] | None = None,
) -> dict:
    """Read one PASCAL VOC annotation file.

    Parameters
    ----------
    path : str or path-like
        The ``.xml`` file.
    image_folder : str or path-like, optional
        Where the image named by ``<filename>`` lives; default the XML file's folder.
        The image is not opened (nor required to exist).
    classes : sequence of str, optional
        Allowed class names; an object of another class is an error.

    Returns
    -------
    dict
        ``image_path``, ``width``, ``height``, ``boxes`` (float64 ``(N, 4)``, segloc
        half-open boxes), ``classes`` (N names), ``difficult`` (bool ``(N,)``).

    Raises
    ------
    CorruptFile
        (a ``ValueError``) Message starting with ``path``: unreadable XML, missing
        ``<filename>``/``<size>``/``<bndbox>`` fields, a box with ``xmax < xmin``, outside
        the image or of an unknown class.
    SeglocIOError
        The file does not exist.

    References
    ----------
    .. [1] Everingham, M. et al. "The PASCAL Visual Object Classes (VOC) Challenge",
       IJCV 88(2) 303-338, 2010. :doi:`10.1007/s11263-009-0275-4`

    Examples
    --------
    >>> import tempfile; p = Path(tempfile.mkdtemp()) / "a.xml"
    >>> _ = p.write_text("<annotation><filename>a.jpg</filename><size><width>10</width>"
    ...     "<height>8</height></size><object><name>cat</name><bndbox><xmin>1</xmin>"
    ...     "<ymin>2</ymin><xmax>10</xmax><ymax>8</ymax></bndbox></object></annotation>")
    >>> read_voc_xml(p)["boxes"]
    array([[ 0.,  1., 10.,  8.]])
    """
    path = Path(path)
    data = _read_bytes(path)
    try:
        # expat refuses entity expansion bombs and does not fetch external entities
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        problem = str(exc)
        if b"encoding=" not in data[:100]:
            try:
                data.decode("utf-8")
            except UnicodeDecodeError as err:
                problem = f"not UTF-8 text: byte 0x{data[err.start]:02x} at offset {err.start}"
        raise CorruptFile(path, f"not a readable VOC XML file ({problem})") from None

    def text(node: ET.Element, tag: str, where: str) -> str:
        child = node.find(tag)
        if child is None or child.text is None or not child.text.strip():
            raise CorruptFile(path, f"{where} must have a <{tag}>, got none")
        return child.text.strip()

    filename = text(root, "filename", "<annotation>")
    width = _size(text(root, "size/width", "<annotation>"), path=path, what="<size><width>")
    height = _size(text(root, "size/height", "<annotation>"), path=path, what="<size><height>")
    boxes, names, difficult = [], [], []
    for k, obj in enumerate(root.findall("object")):
        where = f"object {k}"
        names.append(_check_class(text(obj, "name", where), classes, path=path, where=where))
        vals = [
            _number(text(obj, f"bndbox/{t}", where), path=path, what=f"{where} {t}")
            for t in ("xmin", "ymin", "xmax", "ymax")
        ]
        boxes.append(_box(*vals, width=width, height=height, path=path, where=where))
        diff = obj.find("difficult")
        difficult.append(diff is not None and (diff.text or "0").strip() == "1")
    folder = Path(image_folder) if image_folder is not None else path.parent
    return _record(folder / filename, width, height, boxes, names, difficult)


def read_voc_folder(
    folder: str | os.PathLike,
    *,
    annotations: str = "annotations",
    images: str = "images",
    classes: Sequence[str] | None = None,
) -> list[dict]:
    """Read every VOC ``.xml`` file of a dataset folder.

    Parameters
    ----------
    folder : str or path-like
        Dataset root holding ``annotations/*.xml`` and ``images/``.
    annotations, images : str, optional
        Sub-folder names (``Annotations``/``JPEGImages`` in VOC itself).
    classes : sequence of str, optional
        Allowed class names.

    Returns
    -------
    list of dict
        One per XML file, sorted by file name, as :func:`read_voc_xml`. Each image must
        exist and have the size its ``<size>`` states (read from its header only).

    Raises
    ------
    ValueError
        No XML file, a missing image, an image whose size differs from ``<size>``, or any
        error of :func:`read_voc_xml`.

    Examples
    --------
    >>> read_voc_folder("/nonexistent")
    Traceback (most recent call last):
    ...
    segloc.io.errors.SeglocIOError: /nonexistent/annotations: must hold VOC .xml files, got none
    """
    folder = Path(folder)
    ann_dir = folder / annotations
    files = sorted(ann_dir.glob("*.xml")) if ann_dir.is_dir() else []
    if not files:
        raise SeglocIOError(f"{ann_dir}: must hold VOC .xml files, got none", path=ann_dir)
    out = []
    for f in files:
        rec = read_voc_xml(f, image_folder=folder / images, classes=classes)
        if not rec["image_path"].is_file():
            raise CorruptFile(f, f"names image {rec['image_path']}, which does not exist")
        _check_image_size(f, rec)
        out.append(rec)
    return out


def _check_image_size(annotation: Path, rec: dict) -> None:
    """Refuse a record whose image is not the width x height its annotation states.

    Boxes are checked against the stated size; an image of another size would put them
    elsewhere, or outside it (an IndexError later, when a crop is taken).
    """
    width, height = image_size(rec["image_path"])
    if (width, height) != (rec["width"], rec["height"]):
        raise CorruptFile(
            annotation,
            f"states the image size {rec['width']}x{rec['height']}, but "
            f"{rec['image_path']} is {width}x{height}",
        )


def read_box_csv(
    path: str | os.PathLike,
    *,
    image_folder: str | os.PathLike | None = None,
    classes: Sequence[str] | None = None,
) -> list[dict]:
    """Read a box table with columns ``filename,width,height,class,xmin,ymin,xmax,ymax``.

    One row per box, VOC coordinates (1-based, inclusive), as written by the common
    ``xml_to_csv`` scripts (the raccoon data set's ``labels.csv``).

    Parameters
    ----------
    path : str or path-like
    image_folder : str or path-like, optional
        Folder of the images; default the CSV file's folder.
    classes : sequence of str, optional
        Allowed class names.

    Returns
    -------
    list of dict
        One per image, in order of first appearance, as :func:`read_voc_xml`
        (``difficult`` all False). Rows of one image must agree on its size.

    Raises
    ------
    ValueError
        Message starting with ``path`` and naming the line: missing columns, a bad number,
        a box with ``xmax < xmin``, outside the image or of an unknown class.

    Examples
    --------
    >>> import tempfile; p = Path(tempfile.mkdtemp()) / "b.csv"
    >>> _ = p.write_text("filename,width,height,class,xmin,ymin,xmax,ymax\\n"
    ...                  "a.jpg,10,8,cat,1,1,10,8\\n")
    >>> read_box_csv(p)[0]["boxes"]
    array([[ 0.,  0., 10.,  8.]])
    """
    path = Path(path)
    folder = Path(image_folder) if image_folder is not None else path.parent
    reader = csv.DictReader(_textio.StringIO(_read_text(path), newline=""))
    try:
        rows = list(reader)
        header = list(reader.fieldnames or [])
    except csv.Error as exc:  # a field above csv.field_size_limit(), a stray quote ...
        raise CorruptFile(path, f"line {reader.line_num}: not readable CSV ({exc})") from None
    missing = [c for c in CSV_COLUMNS if c not in header]
    if missing:
        raise CorruptFile(path, f"must have columns {list(CSV_COLUMNS)}, missing {missing}")
    grouped: dict[str, dict] = {}
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        where = f"line {line}"
        if any(row[c] is None or not str(row[c]).strip() for c in CSV_COLUMNS):
            shown = {c: row.get(c) for c in CSV_COLUMNS}
            raise CorruptFile(path, f"{where} must fill every column, got {shown}")
        name = row["filename"].strip()
        width = _size(row["width"], path=path, what=f"{where} width")
        height = _size(row["height"], path=path, what=f"{where} height")
        vals = [_number(row[c], path=path, what=f"{where} {c}") for c in CSV_COLUMNS[4:]]
        box = _box(*vals, width=width, height=height, path=path, where=where)
        cls = _check_class(row["class"].strip(), classes, path=path, where=where)
        rec = grouped.setdefault(name, {"size": (width, height), "boxes": [], "classes": []})
        if rec["size"] != (width, height):
            raise CorruptFile(
                path,
                f"{where} gives {name} size {width}x{height}, earlier rows "
                f"{rec['size'][0]}x{rec['size'][1]}",
            )
        rec["boxes"].append(box)
        rec["classes"].append(cls)
    return [
        _record(folder / name, *r["size"], r["boxes"], r["classes"], [False] * len(r["boxes"]))
        for name, r in grouped.items()
    ]


# --------------------------------------------------------------------------- dataset folders


def read_box_dataset(folder: str | os.PathLike) -> list[dict]:
    """Box records of a dataset folder: ``annotations/*.xml`` (VOC) or ``labels.csv``,
    beside ``images/``; sorted by image file name.

    Raises
    ------
    ValueError
        The folder holds neither, or any error of the readers (naming the file).
    """
    root = Path(folder)
    if (root / "annotations").is_dir():
        records = read_voc_folder(root)
    elif (root / "labels.csv").is_file():
        records = read_box_csv(root / "labels.csv", image_folder=root / "images")
        for rec in records:
            if not Path(rec["image_path"]).is_file():
                raise CorruptFile(
                    root / "labels.csv", f"names image {rec['image_path']}, which does not exist"
                )
            _check_image_size(root / "labels.csv", rec)
    else:
        raise SeglocIOError(
            f"{root}: must hold annotations/*.xml or labels.csv beside images/", path=root
        )
    return sorted(records, key=lambda r: Path(r["image_path"]).name)


def split_records(
    records: Sequence[dict], *, val_fraction: float = 0.2, seed: int = 0
) -> tuple[list[dict], list[dict]]:
    """Train/validation split of box records: :func:`segloc.engine.data.split_cases` of the
    sorted image stems (the split every detector of segloc uses).

    Raises
    ------
    ValueError
        Two records name images with the same stem (``a.jpg`` and ``a.png``): a split by
        name could not keep them apart.
    """

    by_stem: dict[str, dict] = {}
    for r in records:
        stem = Path(r["image_path"]).stem
        if stem in by_stem:
            raise ValueError(
                f"{r['image_path']}: same image name as {by_stem[stem]['image_path']}; "
                "a split by name needs each image once"
            )
        by_stem[stem] = r
    train, val = split_cases(sorted(by_stem), val_fraction=val_fraction, seed=seed)
    return [by_stem[s] for s in train], [by_stem[s] for s in val]


def read_box_truth(path: str | os.PathLike) -> dict:
    """A COCO dataset of true boxes from a COCO ``.json``, a folder of VOC ``.xml`` files (or
    a dataset folder with ``annotations/``), or a box ``.csv``.

    VOC and CSV images are numbered 1.. in file-name order (:func:`segloc.coco.records_to_coco`).

    Raises
    ------
    ValueError
        Not one of these, or a file that does not parse (its path starts the message).
    """
    path = Path(path)
    if path.is_dir():
        folder = path / "annotations" if (path / "annotations").is_dir() else path
        files = sorted(folder.glob("*.xml"))
        if not files:
            raise SeglocIOError(f"{path}: must hold VOC .xml files, got none", path=path)
        records = [read_voc_xml(f) for f in files]
    elif path.suffix.lower() == ".csv":
        records = read_box_csv(path)
    elif path.suffix.lower() == ".json":
        truth = _read_json(path)
        if not isinstance(truth, dict) or not all(
            k in truth for k in ("images", "annotations", "categories")
        ):
            raise CorruptFile(path, "must be a COCO dataset with images, annotations, categories")
        try:
            # what COCOeval would skip or misread (annotations of images or categories the
            # file lacks, repeated ids, NaN boxes), or scoring needs (areas), is refused here
            check_detection_truth(truth, iou_type="bbox", name=None)
        except ValueError as exc:
            raise CorruptFile(path, str(exc)) from None
        return truth
    else:
        raise SeglocIOError(
            f"{path}: truth must be a COCO .json, a VOC XML folder or a .csv", path=path
        )
    return records_to_coco(sorted(records, key=lambda r: r["image_path"].name))


def read_box_predictions(path: str | os.PathLike, truth: dict) -> list[dict]:
    """Predicted boxes from a JSON file, as COCO results with ``truth``'s ids, checked.

    The file is a COCO results list (ids already those of the truth) or a document with
    ``images``, ``categories`` and ``annotations`` (as ``segloc localize`` writes),
    mapped onto the truth by :func:`segloc.coco.align_results`. Every result must be a
    dict naming an image and a category of the truth, with a finite ``score`` and a
    ``bbox`` of four finite numbers, width and height >= 0.

    Parameters
    ----------
    path : str or path-like
    truth : dict
        COCO dataset, e.g. from :func:`read_box_truth`.

    Returns
    -------
    list of dict
        COCO results for :func:`segloc.detection_metrics.evaluate_detections`.

    Raises
    ------
    CorruptFile
        Not UTF-8, not JSON, neither form, or a result that is not as above; the message
        starts with ``path``.
    SeglocIOError
        The file does not exist.

    Examples
    --------
    >>> import tempfile; p = Path(tempfile.mkdtemp()) / "p.json"
    >>> truth = {"images": [{"id": 1}], "categories": [{"id": 1, "name": "cat"}],
    ...          "annotations": []}
    >>> _ = p.write_text('[{"image_id": 1, "category_id": 1, "bbox": [0, 0, 2, 1], '
    ...                  '"score": NaN}]')
    >>> read_box_predictions(p, truth)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    segloc.io.errors.CorruptFile: ...p.json: results[0] score must be finite, got nan
    """
    path = Path(path)
    pred = _read_json(path)
    results = align_results(pred, truth, name=str(path))
    try:
        return check_coco_results(
            results, truth, name=None, geometry="bbox", unknown_categories="raise"
        )
    except ValueError as exc:
        raise CorruptFile(path, str(exc)) from None
