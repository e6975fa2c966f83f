"""Detectors: one record of boxes, one protocol, one registry, and the jobs built on them.

Every box detector of segloc -- HOG sliding windows (:mod:`segloc.localize.hog`),
selective-search proposals scored by SVMs (:mod:`segloc.localize.proposal_detector`), the CNN
box localizer (:mod:`segloc.localize.cnn`) and boxes of a mask's objects
(:mod:`segloc.localize.from_mask`) -- is a :class:`Detector`: ``detect(image)`` takes a 2D
grey or colour image of any dtype, does its own pre-processing (grey conversion, shrinking to
its working size) and returns :class:`Detections` in the image's pixels; ``save`` / ``load``
keep it in a file that is never unpickled. :data:`DETECTORS` maps the names the command line
uses to the classes.

Boxes are ``(x0, y0, x1, y1)`` with half-open pixel edges (``docs/conventions.md``).
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from segloc import io
from segloc._validation import atomic_path, atomic_paths, check_not_inputs, naming
from segloc.coco import coco_results
from segloc.detection_metrics import evaluate_detections
from segloc.io.errors import CorruptFile, is_os_error
from segloc.localize import DETECTORS
from segloc.localize.annotations import read_box_predictions, read_box_truth

__all__ = [
    "DETECTORS",
    "Detections",
    "Detector",
    "detector_class",
    "evaluate_boxes",
    "load_detector",
    "localize_images",
    "localize_to_file",
]


@dataclass(frozen=True)
class Detections:
    """Boxes found in one 2D image, best first.

    Attributes
    ----------
    boxes : ndarray of float64, shape (N, 4)
        ``(x0, y0, x1, y1)`` in the image's pixels.
    scores : ndarray of float64, shape (N,)
        The detector's own score (an SVM margin, a probability, a rank score).
    classes : ndarray of int64, shape (N,)
        Index into ``class_names``.
    class_names : tuple of str

    Examples
    --------
    >>> d = Detections([[0, 0, 4, 2], [1, 1, 3, 3]], [0.9, 0.2], [0, 0])
    >>> len(d), d.select(d.scores > 0.5).boxes.tolist()
    (2, [[0.0, 0.0, 4.0, 2.0]])
    """

    boxes: Any
    scores: Any
    classes: Any = None
    class_names: tuple[str, ...] = ("object",)

    def __post_init__(self) -> None:
        boxes = np.asarray(self.boxes, np.float64).reshape(-1, 4)
        scores = np.asarray(self.scores, np.float64).reshape(-1)
        n = len(boxes)
        classes = (
            np.zeros(n, np.int64)
            if self.classes is None
            else np.asarray(self.classes).reshape(-1).astype(np.int64)
        )
        if len(scores) != n or len(classes) != n:
            raise ValueError(
                f"boxes, scores and classes must have one entry per box, got {n}, "
                f"{len(scores)} and {len(classes)}"
            )
        names = tuple(str(c) for c in self.class_names)
        if n and (classes.min() < 0 or classes.max() >= len(names)):
            raise ValueError(f"classes must index class_names {names}, got {classes.tolist()}")
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "classes", classes)
        object.__setattr__(self, "class_names", names)

    def __len__(self) -> int:
        return len(self.boxes)

    def select(self, keep: Any) -> Detections:
        """The detections picked by a bool mask or an index array."""
        return Detections(self.boxes[keep], self.scores[keep], self.classes[keep], self.class_names)

    def filter(
        self, *, score_threshold: float | None = None, max_detections: int | None = None
    ) -> Detections:
        """Those scoring at least ``score_threshold``, the best ``max_detections`` of them."""
        keep = np.arange(len(self))
        if score_threshold is not None:
            keep = keep[self.scores[keep] >= score_threshold]
        keep = keep[np.argsort(-self.scores[keep], kind="stable")]
        if max_detections is not None:
            keep = keep[:max_detections]
        return self.select(keep)

    def scaled(self, factor: float) -> Detections:
        """Boxes divided by ``factor``: from a shrunk working image back to the input."""
        return Detections(self.boxes / factor, self.scores, self.classes, self.class_names)

    def to_coco(self, image_id: int) -> list[dict]:
        """COCO results (category id = class index + 1)."""
        return coco_results(image_id, self.boxes, self.scores, self.classes + 1)


@runtime_checkable
class Detector(Protocol):
    """Finds boxes in a 2D image; owns its pre-processing (grey, size)."""

    classes: tuple[str, ...]

    def detect(
        self,
        image: np.ndarray,
        *,
        score_threshold: float | None = None,
        max_detections: int = 100,
    ) -> Detections:
        """Boxes of the objects in ``image`` ((rows, cols) or (rows, cols, 3|4), any dtype)."""

    def save(self, path: str | os.PathLike) -> Path:
        """Write the detector to ``path``, atomically; nothing in it is ever unpickled."""

    @classmethod
    def load(cls, path: str | os.PathLike) -> Detector:
        """Read a detector written by :meth:`save`."""


def detector_class(method: str) -> type:
    """The :class:`Detector` class registered as ``method``."""
    if method not in DETECTORS:
        raise ValueError(f"method must be one of {sorted(DETECTORS)}, got {method!r}")
    module, name = DETECTORS[method].split(":")
    return getattr(importlib.import_module(module), name)


def load_detector(method: str, path: str | os.PathLike) -> Detector:
    """Read the ``method`` detector saved at ``path`` (a file or a run folder)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such model file or run folder")
    return detector_class(method).load(path)


def _as_2d_image(image: np.ndarray, path: Path) -> np.ndarray:
    if image.ndim != 2 and not (image.ndim == 3 and image.shape[2] in (3, 4)):
        raise ValueError(f"{path}: must be a 2D grey or colour image, got shape {image.shape}")
    return image[..., :3] if image.ndim == 3 else image


def _check_2d(header: io.Header) -> None:
    if header.ndim != 2:
        raise ValueError(
            f"{header.path}: must be a 2D grey or colour image, got shape {header.shape}"
        )


def _check_inputs(
    images: Sequence[str | os.PathLike], masks: Sequence[str | os.PathLike] | None
) -> None:
    """Every image (and mask) checked before the first detection: headers, 2D, the masks'
    shapes; the values too when the files are small (:func:`segloc.io.check_files`)."""
    headers = io.check_files(images, check=_check_2d)
    if masks is None:
        return
    for image, mask in zip(headers, io.check_files(masks, masks=True), strict=True):
        if mask.shape != image.shape:
            raise ValueError(
                f"{mask.path}: mask shape {mask.shape} must match its image {image.shape} "
                f"({image.path})"
            )


def localize_images(
    detector: Detector,
    images: Sequence[str | os.PathLike],
    *,
    method: str = "",
    masks: Sequence[str | os.PathLike] | None = None,
    score_threshold: float | None = None,
    max_detections: int = 100,
    progress: Any = None,
) -> tuple[dict, list[np.ndarray]]:
    """Detect the objects of image files; a COCO-style document and the images read.

    Every image (and mask) is checked before the first detection: its header, that it is
    2D, and its values when the files together are small (:func:`segloc.io.check_files`).

    Parameters
    ----------
    detector : Detector
    images : sequence of path-like
    method : str
        Recorded in the document.
    masks : sequence of path-like, optional
        One mask file per image, for a detector whose ``detect`` takes ``mask=``
        (:class:`~segloc.localize.from_mask.MaskDetector`).
    score_threshold, max_detections :
        Passed to ``detect``.
    progress : callable, optional
        Called as ``progress(path, detections)`` after each image.

    Returns
    -------
    doc : dict
        ``{"method", "convention", "images": [{"id" (1-based position), "file_name", "path",
        "height", "width"}], "categories", "annotations"}`` with COCO results
        (``image_id``, ``category_id``, ``bbox``, ``score``) plus ``id`` and ``area``.
    pictures : list of ndarray
        The images as read (colour images without alpha), for drawing.
    """

    if masks is not None and len(masks) != len(images):
        raise ValueError(f"masks must give one mask per image ({len(images)}), got {len(masks)}")
    _check_inputs(images, masks)
    names = list(detector.classes)
    doc: dict[str, Any] = {
        "method": method,
        "convention": "COCO bbox [x, y, width, height], half-open pixel edges; "
        "image_id = position in 'images' (1-based)",
        "images": [],
        "categories": [{"id": k + 1, "name": c} for k, c in enumerate(names)],
        "annotations": [],
    }
    pictures = []
    for k, item in enumerate(images, start=1):
        path = Path(item)
        image = _as_2d_image(io.read_image(path)[0], path)
        extra = {"mask": Path(masks[k - 1])} if masks is not None else {}
        found = detector.detect(
            image, score_threshold=score_threshold, max_detections=max_detections, **extra
        )
        h, w = image.shape[:2]
        doc["images"].append(
            {"id": k, "file_name": path.name, "path": str(path), "height": h, "width": w}
        )
        for r in found.to_coco(k):
            r["id"] = len(doc["annotations"]) + 1
            r["area"] = r["bbox"][2] * r["bbox"][3]
            doc["annotations"].append(r)
        pictures.append(image)
        if progress is not None:
            progress(path, found)
    return doc, pictures


def evaluate_boxes(pred: str | os.PathLike, truth: str | os.PathLike) -> dict:
    """COCO AP/AR of a prediction file against a truth file or folder.

    ``pred`` is a ``segloc localize`` file or a COCO results list; ``truth`` a COCO JSON, a
    folder of VOC XML files or a box CSV (:func:`segloc.localize.annotations.read_box_truth`).

    Returns
    -------
    dict
        :func:`segloc.detection_metrics.evaluate_detections`'s scores with ``per_class``
        keyed by class name.

    Raises
    ------
    FileNotFoundError
        A missing file.
    ValueError
        Either file malformed (the message names it).
    """

    pred, truth = Path(pred), Path(truth)
    if not pred.is_file():
        raise FileNotFoundError(f"{pred}: no such file")
    if not truth.exists():
        raise FileNotFoundError(f"{truth}: no such file or folder")
    # the truth first, checked for everything scoring needs: its faults name it, not pred
    dataset = read_box_truth(truth)
    results = read_box_predictions(pred, dataset)
    with naming(f"{pred} against {truth}"):
        scores = evaluate_detections(dataset, results)
    names = {c["id"]: c["name"] for c in dataset["categories"]}
    per_class = {names.get(c, str(c)): v for c, v in scores["per_class"].items()}
    return {**{k: v for k, v in scores.items() if k != "per_class"}, "per_class": per_class}


def localize_to_file(
    detector: Detector,
    images: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    method: str = "",
    masks: Sequence[str | os.PathLike] | None = None,
    overlays: Sequence[str | os.PathLike] | None = None,
    score_threshold: float | None = None,
    max_detections: int = 100,
    progress: Any = None,
) -> dict:
    """:func:`localize_images`, then the document as JSON at ``output`` and, with
    ``overlays``, one picture per image with its boxes drawn; all written or none.

    Returns
    -------
    dict
        The document written.
    """

    from segloc import viz  # matplotlib: only when pictures are asked for

    pictures = [viz.check_png_name(p) for p in overlays] if overlays is not None else []
    check_not_inputs([output, *pictures], [*images, *(masks or [])])
    doc, read = localize_images(
        detector,
        images,
        method=method,
        masks=masks,
        score_threshold=score_threshold,
        max_detections=max_detections,
        progress=progress,
    )
    names = list(detector.classes)
    with atomic_paths([output, *pictures]) as temps:
        temps[0].write_text(json.dumps(doc))
        for k, (image, tmp) in enumerate(zip(read, temps[1:], strict=False), start=1):
            # temps[1:] is empty without overlays: nothing to draw
            anns = [a for a in doc["annotations"] if a["image_id"] == k]
            boxes = np.array([a["bbox"] for a in anns], np.float64).reshape(-1, 4)
            boxes[:, 2:] += boxes[:, :2]
            labels = [names[a["category_id"] - 1] for a in anns]
            scores = [a["score"] for a in anns]
            viz.save_png(tmp, viz.draw_boxes(image, boxes, labels=labels, scores=scores))
    return doc


# --------------------------------------------------------------------------- detector files


def write_detector_file(
    path: str | os.PathLike,
    kind: str,
    meta: dict,
    arrays: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write a detector as ``.npz``: its JSON metadata (``format`` = ``segloc.<kind>/1``) and
    its arrays, atomically; nothing in it needs unpickling."""

    doc = json.dumps({"format": f"segloc.{kind}/1", **meta})
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, meta=np.array(doc), **(arrays or {}))
    return Path(path)


def read_detector_file(path: str | os.PathLike, kind: str) -> tuple[dict, dict[str, np.ndarray]]:
    """Read what :func:`write_detector_file` wrote for ``kind``: (metadata, arrays).

    Raises
    ------
    segloc.io.CorruptFile
        Not such a file (truncated, another format, another detector), naming ``path``.
    OSError
        A real system error (missing file, permission, I/O), as the system said it.
    """
    path = Path(path)
    try:
        # our own handle: np.load leaks it when the zip directory is broken
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            arrays = {k: z[k] for k in z.files if k != "meta"}
    except Exception as exc:  # zip, npy and JSON readers each fail their own way
        if is_os_error(exc):
            raise
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CorruptFile(path, f"not a saved {kind} ({type(exc).__name__}: {first})") from None
    if not isinstance(meta, dict) or meta.pop("format", None) != f"segloc.{kind}/1":
        raise CorruptFile(path, f"not a saved {kind}")
    return meta, arrays
