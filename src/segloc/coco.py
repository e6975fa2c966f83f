"""COCO: box <-> bbox conversions, run-length encoded masks, datasets and results.

A COCO ``bbox`` is ``[x0, y0, x1 - x0, y1 - y0]`` on segloc's half-open pixel edges
(``docs/conventions.md``); PASCAL VOC boxes are 1-based and inclusive. Masks are stored as
COCO RLE strings identical to pycocotools'. :func:`records_to_coco` turns box records
(read from VOC XML or CSV by :mod:`segloc.localize.annotations`) into a COCO dataset and
:func:`align_results` maps a prediction file's image and category ids onto a truth's.

NumPy only: importable without torch.

References
----------
.. [COCO] Lin, T.-Y. et al. "Microsoft COCO: Common Objects in Context", ECCV 2014,
   :doi:`10.1007/978-3-319-10602-1_48`. Data format: https://cocodataset.org/#format-data
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segloc._validation import atomic_path, check_int, check_labels, naming
from segloc.boxes import check_box
from segloc.instances import instance_boxes, mask_to_boxes
from segloc.io.errors import CorruptFile
from segloc.rle import _compress_counts, _rle_counts, _runs_in_box, rle_area, rle_decode, rle_encode

__all__ = [
    "voc_to_box",
    "box_to_voc",
    "box_to_coco",
    "coco_to_box",
    "rle_encode",
    "rle_decode",
    "rle_area",
    "coco_dataset",
    "coco_results",
    "masks_to_coco_annotations",
    "detections_to_coco",
    "write_coco_json",
    "records_to_coco",
    "align_results",
    "objects_document",
    "check_coco_dataset",
    "check_coco_results",
]


def voc_to_box(xmin: float, ymin: float, xmax: float, ymax: float) -> tuple[float, ...]:
    """PASCAL VOC box (1-based, inclusive pixels) to a segloc box (0-based, half-open).

    Returns
    -------
    tuple of float
        ``(xmin - 1, ymin - 1, xmax, ymax)``.

    References
    ----------
    .. [1] Everingham, M. et al. "The PASCAL Visual Object Classes (VOC) Challenge",
       IJCV 88(2) 303-338, 2010. :doi:`10.1007/s11263-009-0275-4`

    Examples
    --------
    >>> voc_to_box(1, 1, 10, 20)
    (0.0, 0.0, 10.0, 20.0)
    """
    vals = np.asarray([xmin, ymin, xmax, ymax], np.float64)
    if not np.isfinite(vals).all():
        raise ValueError(f"VOC box must be finite, got {vals.tolist()}")
    if vals[2] < vals[0] or vals[3] < vals[1]:
        raise ValueError(f"VOC box must have xmax >= xmin and ymax >= ymin, got {vals.tolist()}")
    return (float(vals[0] - 1), float(vals[1] - 1), float(vals[2]), float(vals[3]))


def box_to_voc(box: Any) -> tuple[float, ...]:
    """segloc 2D box to PASCAL VOC ``(xmin, ymin, xmax, ymax)``: 1-based, inclusive.

    Examples
    --------
    >>> box_to_voc([0, 0, 10, 20])
    (1.0, 1.0, 10.0, 20.0)
    """
    b = check_box(box, sizes=(4,))
    if b[2] == b[0] or b[3] == b[1]:
        raise ValueError(f"box must have positive width and height for VOC, got {b.tolist()}")
    return (float(b[0] + 1), float(b[1] + 1), float(b[2]), float(b[3]))


def box_to_coco(box: Any) -> list[float]:
    """segloc 2D box ``(x0, y0, x1, y1)`` to a COCO bbox ``[x, y, width, height]``.

    Examples
    --------
    >>> box_to_coco([2, 1, 5, 3])
    [2.0, 1.0, 3.0, 2.0]
    """
    b = check_box(box, sizes=(4,))
    return [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]


def coco_to_box(bbox: Any) -> np.ndarray:
    """COCO bbox ``[x, y, width, height]`` to a segloc box ``(x0, y0, x1, y1)`` float64.

    Examples
    --------
    >>> coco_to_box([2, 1, 3, 2])
    array([2., 1., 5., 3.])
    """
    b = np.asarray(bbox, dtype=np.float64)
    if b.shape != (4,):
        raise ValueError(f"bbox must have 4 values [x, y, width, height], got shape {b.shape}")
    if not np.isfinite(b).all() or b[2] < 0 or b[3] < 0:
        raise ValueError(f"bbox must be finite with width, height >= 0, got {b.tolist()}")
    return np.array([b[0], b[1], b[0] + b[2], b[1] + b[3]])


def _show(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _entries(items: Any, *, name: str) -> list[Mapping]:
    """``items`` as a list of dicts, or a ValueError naming what came instead."""
    if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Sequence):
        raise ValueError(f"{name} must be a list of dicts, got {type(items).__name__}")
    for k, it in enumerate(items):
        if not isinstance(it, Mapping):
            raise ValueError(f"{name}[{k}] must be a dict, got {_show(it)}")
    return list(items)


def _finite(value: Any, *, what: str) -> float:
    """A finite real number (not a bool, not a string)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, (int, float, np.integer, np.floating)
    ):
        raise ValueError(f"{what} must be a number, got {_show(value)}")
    try:
        out = float(value)
    except OverflowError:  # a JSON integer such as 10**400
        out = float("inf")
    if not np.isfinite(out):
        raise ValueError(f"{what} must be finite, got {_show(value)}")
    return out


def _whole(value: Any, *, what: str) -> int:
    """A whole number >= 0 (an int, or a float such as 4.0 from JSON)."""
    v = _finite(value, what=what)
    if v < 0 or v != int(v):
        raise ValueError(f"{what} must be a whole number >= 0, got {_show(value)}")
    return int(v)


def _coco_bbox(value: Any, *, what: str) -> list[float]:
    """A COCO bbox ``[x, y, w, h]``: four finite numbers, ``w, h >= 0``."""
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (Sequence, np.ndarray)):
        raise ValueError(f"{what} must be [x, y, width, height], got {_show(value)}")
    if len(value) != 4:
        raise ValueError(f"{what} must have 4 numbers [x, y, width, height], got {_show(value)}")
    b = [_finite(v, what=what) for v in value]
    if b[2] < 0 or b[3] < 0:
        raise ValueError(f"{what} must have width and height >= 0, got {b}")
    return b


def _require(d: Mapping, keys: Sequence[str], *, name: str) -> None:
    missing = [k for k in keys if k not in d]
    if missing:
        raise ValueError(f"{name} must have keys {list(keys)}, got none for {missing}")


def _unique_ids(items: Sequence[Mapping], *, name: str) -> set:
    ids = [it["id"] for it in items]
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or i < 1:
            # COCOeval treats id 0 as "no match", so ids start at 1
            raise ValueError(f"{name} ids must be integers >= 1, got {i!r}")
    unique = set(ids)
    if len(unique) != len(ids):
        from collections import Counter

        dup = sorted(i for i, n in Counter(ids).items() if n > 1)
        raise ValueError(f"{name} ids must be unique, got duplicates {dup[:10]}")
    return unique


def _as_rle(segmentation: Any, *, size: tuple[int, int] | None, name: str) -> dict:
    """Compressed RLE (str counts) from a mask array or an RLE dict."""
    if isinstance(segmentation, Mapping):
        (h, w), counts = _rle_counts(segmentation)
        rle = {"size": [h, w], "counts": _compress_counts(counts)}
    elif isinstance(segmentation, np.ndarray):
        rle = rle_encode(segmentation)
    else:
        raise ValueError(
            f"{name} must be a 2D mask array or an RLE dict, got {type(segmentation).__name__}"
        )
    if size is not None and tuple(rle["size"]) != size:
        raise ValueError(f"{name} must have the image's size {list(size)}, got {rle['size']}")
    return rle


def _rle_bbox(rle: dict) -> list[float]:
    mask = rle_decode(rle)
    ids, boxes = instance_boxes(mask)
    return box_to_coco(boxes[0]) if ids.size else [0.0, 0.0, 0.0, 0.0]


def coco_dataset(
    images: Sequence[Mapping], annotations: Sequence[Mapping], categories: Sequence[Mapping]
) -> dict:
    """Assemble and check a COCO detection/segmentation dataset dict.

    Parameters
    ----------
    images : list of dict
        Each with ``id`` (int >= 1), ``height``, ``width``; other keys (``file_name``...) kept.
    annotations : list of dict
        Each with ``image_id``, ``category_id`` and a ``segmentation`` (a 2D mask array or an
        RLE dict) and/or a ``bbox`` ``[x, y, w, h]``. Filled in when absent: ``id``
        (numbered on from the largest given), ``bbox`` (from the segmentation), ``area``
        (pixel count of the segmentation, else ``w * h``), ``iscrowd`` = 0. Segmentations are
        stored as RLE with ``str`` counts. Polygons are not accepted.
    categories : list of dict
        Each with ``id`` (int >= 1) and ``name``.

    Returns
    -------
    dict
        ``{"images", "annotations", "categories"}`` with fresh dicts (inputs are not
        modified), loadable by ``pycocotools.coco.COCO``.

    Raises
    ------
    ValueError
        Missing keys, duplicate or non-positive ids, references to unknown images or
        categories, a segmentation of another size than its image, a malformed bbox.

    References
    ----------
    .. [1] Lin, T.-Y. et al. "Microsoft COCO: Common Objects in Context", ECCV 2014,
       :doi:`10.1007/978-3-319-10602-1_48`. Format: https://cocodataset.org/#format-data
    """
    images = [dict(im) for im in _entries(images, name="images")]
    categories = [dict(c) for c in _entries(categories, name="categories")]
    annotations = _entries(annotations, name="annotations")
    for im in images:
        _require(im, ("id", "height", "width"), name="images entries")
    for c in categories:
        _require(c, ("id", "name"), name="categories entries")
    _unique_ids(images, name="images")
    sizes = {
        im["id"]: (
            _whole(im["height"], what="images height"),
            _whole(im["width"], what="images width"),
        )
        for im in images
    }
    cat_ids = _unique_ids(categories, name="categories")

    given = [a for a in annotations if "id" in a]
    _unique_ids(given, name="annotations")
    next_id = max((int(a["id"]) for a in given), default=0) + 1
    out_anns = []
    for k, ann in enumerate(annotations):
        where = f"annotations[{k}]"
        _require(ann, ("image_id", "category_id"), name=where)
        if ann["image_id"] not in sizes:
            raise ValueError(
                f"{where} image_id must be one of the images' ids, got {ann['image_id']!r}"
            )
        if ann["category_id"] not in cat_ids:
            raise ValueError(
                f"{where} category_id must be one of {sorted(cat_ids)}, got {ann['category_id']!r}"
            )
        if "segmentation" not in ann and "bbox" not in ann:
            raise ValueError(f"{where} must have a segmentation or a bbox, got neither")
        new = dict(ann)
        if "id" not in new:
            new["id"] = next_id
            next_id += 1
        rle = None
        if "segmentation" in ann:
            rle = _as_rle(
                ann["segmentation"], size=sizes[ann["image_id"]], name=f"{where} segmentation"
            )
            new["segmentation"] = rle
        if "bbox" in ann:
            new["bbox"] = box_to_coco(coco_to_box(ann["bbox"]))
        else:
            new["bbox"] = _rle_bbox(rle)
        if "area" not in ann:
            new["area"] = (
                float(rle_area(rle)) if rle is not None else new["bbox"][2] * new["bbox"][3]
            )
        new.setdefault("iscrowd", 0)
        out_anns.append(new)
    return {"images": images, "annotations": out_anns, "categories": categories}


def coco_results(
    image_id: int,
    boxes: Any,
    scores: Any,
    classes: Any,
    *,
    masks: Any = None,
) -> list[dict]:
    """Detections of one image in the COCO results format (for ``COCO.loadRes``).

    Parameters
    ----------
    image_id : int
    boxes : array_like, shape (N, 4)
        segloc boxes ``(x0, y0, x1, y1)``.
    scores : array_like, shape (N,)
    classes : array_like of int, shape (N,)
        COCO category ids.
    masks : array_like, shape (N, H, W), or sequence of N masks or RLE dicts, optional
        Adds ``"segmentation"`` as compressed RLE.

    Returns
    -------
    list of dict
        ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"[, "segmentation"]}``.

    References
    ----------
    .. [1] COCO results format: https://cocodataset.org/#format-results

    Examples
    --------
    >>> coco_results(3, [[2, 1, 5, 3]], [0.9], [1])
    [{'image_id': 3, 'category_id': 1, 'bbox': [2.0, 1.0, 3.0, 2.0], 'score': 0.9}]
    """
    b = np.asarray(boxes, np.float64)
    if b.size == 0:
        b = b.reshape(0, 4)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"boxes must have shape (N, 4), got {b.shape}")
    s = np.asarray(scores, np.float64).reshape(-1)
    c = np.asarray(classes).reshape(-1)
    n = len(b)
    if len(s) != n:
        raise ValueError(f"scores must have one entry per box ({n}), got {len(s)}")
    if len(c) != n:
        raise ValueError(f"classes must have one entry per box ({n}), got {len(c)}")
    if n and not np.issubdtype(c.dtype, np.integer):
        raise TypeError(f"classes must be integers, got dtype {c.dtype}")
    if masks is not None and len(masks) != n:
        raise ValueError(f"masks must have one entry per box ({n}), got {len(masks)}")
    out = []
    for k in range(n):
        res = {
            "image_id": int(image_id),
            "category_id": int(c[k]),
            "bbox": box_to_coco(b[k]),
            "score": float(s[k]),
        }
        if masks is not None:
            m = masks[k]
            res["segmentation"] = _as_rle(
                m if isinstance(m, Mapping) else np.asarray(m), size=None, name=f"masks[{k}]"
            )
        out.append(res)
    return out


def masks_to_coco_annotations(
    instances: Any,
    class_of: Mapping[int, int] | None,
    *,
    image_id: int,
    start_id: int = 1,
    with_rle: bool = True,
) -> list[dict]:
    """COCO annotations, one per instance of a 2D instance map.

    Parameters
    ----------
    instances : array_like of int, 2D
        Instance map, 0 = background.
    class_of : mapping or None
        ``{instance_id: category_id}``; None puts every instance in category 1.
    image_id : int
    start_id : int, optional
        Annotation id of the first instance (>= 1); the others follow in instance-id order.
    with_rle : bool, optional
        Add ``"segmentation"`` (compressed RLE, ``str`` counts).

    Returns
    -------
    list of dict
        ``{"id", "image_id", "category_id", "bbox", "area", "iscrowd": 0,
        "instance"[, "segmentation"]}``; ``area`` is the pixel count.

    References
    ----------
    .. [1] Lin, T.-Y. et al. "Microsoft COCO: Common Objects in Context", ECCV 2014,
       :doi:`10.1007/978-3-319-10602-1_48`.

    Examples
    --------
    >>> inst = np.zeros((3, 4), np.int32); inst[1, 1:3] = 5
    >>> masks_to_coco_annotations(inst, None, image_id=1)[0]["bbox"]
    [1.0, 1.0, 2.0, 1.0]
    """
    arr = check_labels(instances, name="instances", ndim=(2,))
    start_id = check_int(start_id, name="start_id", minimum=1)
    ids, boxes = instance_boxes(arr)
    if class_of is not None:
        missing = [int(i) for i in ids if int(i) not in class_of]
        if missing:
            raise ValueError(
                f"class_of must give a class for every instance id, got none for {missing[:10]}"
            )
    h, w = arr.shape
    out = []
    for k, (i, box) in enumerate(zip(ids, boxes, strict=True)):
        x0, y0, x1, y1 = (int(v) for v in box)
        crop = arr[y0:y1, x0:x1] == i
        ann = {
            "id": start_id + k,
            "image_id": int(image_id),
            "category_id": 1 if class_of is None else int(class_of[int(i)]),
            "bbox": box_to_coco(box),
            "area": float(crop.sum()),
            "iscrowd": 0,
            "instance": int(i),
        }
        if with_rle:
            counts = _runs_in_box(crop, y0, x0, h, w)
            ann["segmentation"] = {"size": [h, w], "counts": _compress_counts(counts)}
        out.append(ann)
    return out


def detections_to_coco(
    detections: Sequence[Mapping],
    *,
    image_id: int,
    instances: Any = None,
    category_ids: Mapping[int, int] | None = None,
) -> list[dict]:
    """Detections of one 2D image in the COCO results format (``COCO.loadRes``).

    Parameters
    ----------
    detections : sequence of dict
        With ``"box"``, ``"score"``, ``"class"`` (and ``"instance"`` when ``instances`` is
        given), as the ``detections_from_*`` functions return.
    image_id : int
    instances : array_like of int, 2D, optional
        The instance map the detections came from: adds each instance's mask as a compressed
        COCO RLE ``"segmentation"``.
    category_ids : mapping, optional
        ``{class: COCO category id}``; default the class itself.

    Returns
    -------
    list of dict
        ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"[, "segmentation"]}``.

    References
    ----------
    .. [1] COCO results format: https://cocodataset.org/#format-results

    Examples
    --------
    >>> detections_to_coco([{"box": [2, 1, 5, 3], "score": 0.9, "class": 1}], image_id=7)
    [{'image_id': 7, 'category_id': 1, 'bbox': [2.0, 1.0, 3.0, 2.0], 'score': 0.9}]
    """
    for k, d in enumerate(detections):
        for key in ("box", "score", "class") + (("instance",) if instances is not None else ()):
            if key not in d:
                raise ValueError(f"detections[{k}] must have key {key!r}, got {sorted(d)}")
    classes = [int(d["class"]) for d in detections]
    if category_ids is not None:
        missing = sorted({c for c in classes if c not in category_ids})
        if missing:
            raise ValueError(f"category_ids must map every class, got none for {missing}")
        classes = [int(category_ids[c]) for c in classes]
    boxes = np.array([d["box"] for d in detections], np.float64).reshape(-1, 4)
    scores = np.array([d["score"] for d in detections], np.float64)
    masks = None
    if instances is not None:
        # RLE straight from the instance map, one crop per instance (no full-size masks)
        rle_of = {
            a["instance"]: a["segmentation"]
            for a in masks_to_coco_annotations(instances, None, image_id=image_id)
        }
        masks = []
        for k, d in enumerate(detections):
            if int(d["instance"]) not in rle_of:
                raise ValueError(
                    f"detections[{k}] names instance {d['instance']}, which instances lacks"
                )
            masks.append(rle_of[int(d["instance"])])
    return coco_results(image_id, boxes, scores, np.asarray(classes, np.int64), masks=masks)


def write_coco_json(path: str | os.PathLike, data: Any) -> Path:
    """Write COCO results or a COCO dataset as JSON, atomically (no half-written file).

    Examples
    --------
    >>> import tempfile; d = tempfile.mkdtemp()
    >>> write_coco_json(Path(d) / "r.json", []).read_text()
    '[]'
    """
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data))
    return Path(path)


# --------------------------------------------------------------------------- checks


def check_coco_dataset(
    data: Any, *, name: str | None = "dataset", geometry: str | None = "bbox"
) -> Mapping:
    """Check a COCO dataset as read from a file, without changing it.

    What COCOeval would silently skip or misread is refused: entries that are not dicts,
    ids that are not integers >= 1 or repeat, annotations of images or categories the
    dataset lacks, boxes that are not four finite numbers with width, height >= 0,
    areas that are NaN or negative.

    Parameters
    ----------
    data : dict
        ``{"images", "annotations", "categories"}``.
    name : str or None, optional
        What to call it in messages (a file name); None: no prefix.
    geometry : {"bbox", "segm", None}, optional
        Which annotation field must be present and valid; None: neither is required.

    Returns
    -------
    dict
        ``data`` itself.

    Raises
    ------
    ValueError
        Message starting with ``name``.

    Examples
    --------
    >>> d = {"images": [{"id": 1}], "categories": [{"id": 1, "name": "a"}],
    ...      "annotations": [{"id": 1, "image_id": 2, "category_id": 1, "bbox": [0, 0, 1, 1]}]}
    >>> check_coco_dataset(d, name="t.json")
    Traceback (most recent call last):
    ...
    ValueError: t.json: annotations[0] image_id must be one of the images' ids, got 2
    """
    prefix = f"{name}: " if name else ""
    if not isinstance(data, Mapping):
        raise ValueError(f"{prefix}must be a COCO dataset (a dict), got {type(data).__name__}")
    missing = [k for k in ("images", "annotations", "categories") if k not in data]
    if missing:
        raise ValueError(
            f"{prefix}must be a COCO dataset with images, annotations, categories, "
            f"missing {missing}"
        )
    try:
        images = _entries(data["images"], name="images")
        categories = _entries(data["categories"], name="categories")
        annotations = _entries(data["annotations"], name="annotations")
        for k, im in enumerate(images):
            _require(im, ("id",), name=f"images[{k}]")
            for key in ("height", "width"):
                if key in im and _whole(im[key], what=f"images[{k}] {key}") < 1:
                    raise ValueError(f"images[{k}] {key} must be >= 1, got {im[key]}")
        for k, c in enumerate(categories):
            _require(c, ("id", "name"), name=f"categories[{k}]")
        image_ids = _unique_ids(images, name="images")
        cat_ids = _unique_ids(categories, name="categories")
        _unique_ids([a for a in annotations if "id" in a], name="annotations")
        for k, ann in enumerate(annotations):
            where = f"annotations[{k}]"
            _require(ann, ("image_id", "category_id"), name=where)
            if not _hashable(ann["image_id"]) or ann["image_id"] not in image_ids:
                raise ValueError(
                    f"{where} image_id must be one of the images' ids, got {_show(ann['image_id'])}"
                )
            if not _hashable(ann["category_id"]) or ann["category_id"] not in cat_ids:
                raise ValueError(
                    f"{where} category_id must be one of {sorted(cat_ids)[:20]}, "
                    f"got {_show(ann['category_id'])}"
                )
            if geometry == "bbox" or (geometry is None and "bbox" in ann):
                _require(ann, ("bbox",), name=where)
                _coco_bbox(ann["bbox"], what=f"{where} bbox")
            if geometry == "segm":
                _require(ann, ("segmentation",), name=where)
                _rle_counts(ann["segmentation"])
            if "area" in ann and _finite(ann["area"], what=f"{where} area") < 0:
                raise ValueError(f"{where} area must be >= 0, got {ann['area']}")
            if "iscrowd" in ann and ann["iscrowd"] not in (0, 1):
                raise ValueError(f"{where} iscrowd must be 0 or 1, got {_show(ann['iscrowd'])}")
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name}: {exc}" if name else str(exc)) from None
    return data


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def check_coco_results(
    results: Any,
    dataset: Mapping,
    *,
    name: str | None = "results",
    geometry: str = "bbox",
    unknown_categories: str = "skip",
) -> list[dict]:
    """Check COCO results against the dataset they are scored on, without changing them.

    Each result must be a dict with an ``image_id`` of the dataset, an integer
    ``category_id``, a finite ``score`` and, as ``geometry`` says, a ``bbox`` of four
    finite numbers with width, height >= 0 or an RLE ``segmentation``. Whether boxes or
    masks are required follows ``COCO.loadRes``: the first result decides.

    Parameters
    ----------
    results : list of dict
    dataset : dict
        A dataset :func:`check_coco_dataset` accepts.
    name : str or None, optional
        What to call the results in messages (a file name); None: no prefix.
    geometry : {"bbox", "segm"}, optional
    unknown_categories : {"skip", "raise"}, optional
        A result of a category the dataset lacks: allowed (COCOeval skips it) or an error.

    Returns
    -------
    list of dict
        ``results`` as a list.

    Raises
    ------
    ValueError
        Message starting with ``name``.

    Examples
    --------
    >>> d = {"images": [{"id": 1}], "categories": [{"id": 1, "name": "a"}], "annotations": []}
    >>> check_coco_results([{"image_id": 1, "category_id": 1, "score": float("nan"),
    ...                      "bbox": [0, 0, 1, 1]}], d, name="p.json")
    Traceback (most recent call last):
    ...
    ValueError: p.json: results[0] score must be finite, got nan
    """
    if unknown_categories not in ("skip", "raise"):
        raise ValueError(
            f"unknown_categories must be 'skip' or 'raise', got {unknown_categories!r}"
        )
    image_ids = {im["id"] for im in dataset["images"]}
    cat_ids = {c["id"] for c in dataset["categories"]}
    try:
        results = _entries(results, name="results")
        need_box = bool(results) and bool(results[0].get("bbox"))
        for k, res in enumerate(results):
            where = f"results[{k}]"
            for key in ("image_id", "category_id", "score"):
                if key not in res:
                    raise ValueError(f"{where} must have {key!r}, got none")
            if not _hashable(res["image_id"]) or res["image_id"] not in image_ids:
                raise ValueError(
                    f"{where} image_id must be one of the truth's images, got "
                    f"{_show(res['image_id'])}"
                )
            cat = res["category_id"]
            if isinstance(cat, (bool, np.bool_)) or not isinstance(cat, (int, np.integer)):
                raise ValueError(f"{where} category_id must be an integer, got {_show(cat)}")
            if unknown_categories == "raise" and cat not in cat_ids:
                raise ValueError(
                    f"{where} category_id must be one of the truth's {sorted(cat_ids)[:20]}, "
                    f"got {cat}"
                )
            _finite(res["score"], what=f"{where} score")
            # COCO.loadRes: boxes in results[0] -> every result has one; else masks
            if need_box and "bbox" not in res:
                raise ValueError(f"{where} must have 'bbox' like results[0], got none")
            if not need_box and "segmentation" not in res:
                raise ValueError(f"{where} must have 'segmentation' like results[0], got none")
            if geometry == "segm" and "segmentation" not in res:
                raise ValueError(f"{where} must have 'segmentation' for iou_type='segm'")
            if "bbox" in res and (need_box or res["bbox"]):
                _coco_bbox(res["bbox"], what=f"{where} bbox")
            if "segmentation" in res:
                _rle_counts(res["segmentation"])
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name}: {exc}" if name else str(exc)) from None
    return results


# --------------------------------------------------------------------------- box records


def records_to_coco(records: Sequence[Mapping]) -> dict:
    """COCO dataset of box records, as :mod:`segloc.localize.annotations` reads them.

    Parameters
    ----------
    records : sequence of dict
        Each with ``image_path`` (or ``file_name``), ``height``, ``width``, ``boxes``
        ``(N, 4)`` segloc boxes, ``classes`` (N names) and optionally ``difficult`` (N
        flags, kept as ``iscrowd`` so that COCOeval neither rewards nor punishes them).

    Returns
    -------
    dict
        Images numbered 1.. in the given order (``file_name`` = the file's name),
        categories 1.. for the sorted class names, one annotation per box.

    Examples
    --------
    >>> rec = {"file_name": "a.png", "height": 4, "width": 6, "boxes": [[1, 1, 3, 2]],
    ...        "classes": ["cat"]}
    >>> d = records_to_coco([rec])
    >>> d["annotations"][0]["bbox"], d["categories"]
    ([1.0, 1.0, 2.0, 1.0], [{'id': 1, 'name': 'cat'}])
    """
    names = sorted({str(c) for r in records for c in r["classes"]})
    images, annotations = [], []
    for k, r in enumerate(records, start=1):
        name = Path(r["image_path"]).name if "image_path" in r else str(r["file_name"])
        images.append({"id": k, "file_name": name, "height": r["height"], "width": r["width"]})
        boxes = np.asarray(r["boxes"], np.float64).reshape(-1, 4)
        difficult = r.get("difficult")
        difficult = [False] * len(boxes) if difficult is None else list(difficult)
        for box, c, diff in zip(boxes, r["classes"], difficult, strict=True):
            annotations.append(
                {
                    "image_id": k,
                    "category_id": names.index(str(c)) + 1,
                    "bbox": box_to_coco(box),
                    "iscrowd": int(bool(diff)),
                }
            )
    categories = [{"id": k + 1, "name": c} for k, c in enumerate(names)]
    return coco_dataset(images, annotations, categories)


def align_results(pred: Any, truth: Mapping, *, name: str = "predictions") -> list[dict]:
    """COCO results of ``pred`` with image and category ids mapped onto ``truth``'s.

    ``pred`` is a plain COCO results list (ids already those of the truth: a category id
    the truth lacks is an error, not skipped) or a document
    with ``images``, ``categories`` and ``annotations`` (as ``segloc localize`` writes),
    whose images are matched to the truth's by ``file_name`` and categories by ``name``; a
    one-class prediction (a detector's generic "object") scores against a one-class truth.

    Raises
    ------
    CorruptFile
        (a ``ValueError``) ``pred`` is neither form, is not made of dicts, repeats an image
        id, names an image or category the truth lacks, or holds an annotation of an image
        or category it does not list; ``name`` (the file) starts the message.
    """

    def fail(problem: str) -> CorruptFile:
        return CorruptFile(name, problem)

    truth_cat_ids = {c["id"] for c in truth["categories"]}
    if isinstance(pred, list):
        try:
            out = [dict(r) for r in _entries(pred, name="results")]
        except ValueError as exc:
            raise fail(str(exc)) from None
        for k, r in enumerate(out):
            cat = r.get("category_id")
            if not _hashable(cat) or cat not in truth_cat_ids:
                # COCOeval would drop it without a word: a results file of another label set
                raise fail(
                    f"results[{k}] category_id must be one of the truth's "
                    f"{sorted(truth_cat_ids)[:20]}, got {_show(cat)}"
                )
        return out
    if not isinstance(pred, Mapping) or "annotations" not in pred or "images" not in pred:
        raise fail("must be a COCO results list or a segloc localize file")
    try:
        images = _entries(pred["images"], name="images")
        categories = _entries(pred.get("categories", []), name="categories")
        annotations = _entries(pred["annotations"], name="annotations")
        for k, im in enumerate(images):
            _require(im, ("id", "file_name"), name=f"images[{k}]")
        for k, c in enumerate(categories):
            _require(c, ("id", "name"), name=f"categories[{k}]")
        _unique_ids(images, name="images")
        _unique_ids(categories, name="categories")
    except ValueError as exc:
        raise fail(str(exc)) from None
    truth_ids = {im.get("file_name"): im["id"] for im in truth["images"]}
    image_map = {}
    for im in images:
        if not _hashable(im["file_name"]) or im["file_name"] not in truth_ids:
            raise fail(f"image {_show(im['file_name'])} is not in the truth")
        image_map[im["id"]] = truth_ids[im["file_name"]]
    truth_cats = {c["name"]: c["id"] for c in truth["categories"]}
    cat_map = {}
    for c in categories:
        if _hashable(c["name"]) and c["name"] in truth_cats:
            cat_map[c["id"]] = truth_cats[c["name"]]
        elif len(truth_cats) == 1:
            cat_map[c["id"]] = next(iter(truth_cats.values()))
        else:
            raise fail(f"category {_show(c['name'])} is not in the truth")
    out = []
    for k, r in enumerate(annotations):
        for key in ("image_id", "category_id"):
            if key not in r:
                raise fail(f"annotations[{k}] must have {key!r}, got none")
        if not _hashable(r["image_id"]) or r["image_id"] not in image_map:
            raise fail(f"annotations[{k}] names image id {_show(r['image_id'])}, not in its images")
        if categories and (not _hashable(r["category_id"]) or r["category_id"] not in cat_map):
            # an id the file does not list could collide with a truth id and be scored as it
            raise fail(
                f"annotations[{k}] names category id {_show(r['category_id'])}, "
                "not in its categories"
            )
        out.append(
            {
                **r,
                "image_id": image_map[r["image_id"]],
                "category_id": cat_map.get(r["category_id"], r["category_id"]),
            }
        )
    return out


def objects_document(labels: Any, *, connectivity: int = 1, source: str = "") -> dict:
    """A JSON-ready description of the objects of a mask: one box per connected object of
    each class (:func:`mask_to_boxes`), with its COCO ``bbox`` in 2D. Errors name ``source``
    (the mask's file) when given.

    Examples
    --------
    >>> doc = objects_document(np.array([[0, 1, 1], [0, 0, 0]]), source="m.png")
    >>> doc["objects"][0]["bbox"], doc["box_format"]
    ([1.0, 0.0, 2.0, 1.0], 'xyxy')
    """

    with naming(source) if source else contextlib.nullcontext():
        arr = check_labels(labels, ndim=(2, 3))
        objects = mask_to_boxes(arr, connectivity=connectivity)
    return {
        "image": source,
        "shape": list(arr.shape),
        "box_format": "xyxy" if arr.ndim == 2 else "xyzxyz",
        "convention": "half-open pixel edges; x = column, y = row, z = slice",
        "objects": [
            {**o, "bbox": box_to_coco(o["box"]) if arr.ndim == 2 else None} for o in objects
        ],
    }
