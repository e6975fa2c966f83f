"""``segloc train-detector``: train any learning detector on a folder of box annotations.

Every detector holds out the same images for validation
(:func:`segloc.localize.annotations.split_records`: :func:`segloc.engine.data.split_cases`
of the sorted image names), so their scores compare.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from segloc import io
from segloc.localize import TRAINABLE
from segloc.localize.annotations import read_box_dataset, split_records
from segloc.localize.cnn import train_localizer
from segloc.localize.hog import HogSvmDetector
from segloc.localize.proposal_detector import ProposalDetector

__all__ = ["train_detector"]


def train_detector(
    method: str,
    data: str | os.PathLike,
    out: str | os.PathLike,
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
    max_side: int | None = None,
    hard_rounds: int = 1,
    epochs: int | None = None,
    time_budget: str | float | None = None,
    resume: bool = False,
    device: str = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    """Train a ``hog-svm``, ``proposals`` or ``cnn`` detector on dataset folder ``data``.

    Parameters
    ----------
    method : {"hog-svm", "proposals", "cnn"}
    data : path-like
        ``images/`` beside ``annotations/*.xml`` (VOC) or ``labels.csv``.
    out : path-like
        The detector file (``.npz``) for ``hog-svm`` and ``proposals``, the run folder for
        ``cnn``.
    max_side : int, optional
        Working size of the images (default 320 for ``hog-svm``, 256 for ``proposals``;
        ``cnn`` keeps decoded images at twice its input size).
    hard_rounds : int
        Hard-negative mining rounds (``hog-svm``, ``proposals``).
    epochs, time_budget, resume, device :
        ``cnn`` only (:func:`segloc.localize.cnn.train_localizer`).

    Returns
    -------
    dict
        ``method``, ``path``, ``train`` and ``held_out`` image counts, ``seconds``.

    Raises
    ------
    ValueError
        Unknown method, an option of another method, or bad data (naming the file).
    """
    if method not in TRAINABLE:
        raise ValueError(f"method must be one of {list(TRAINABLE)}, got {method!r}")
    data = Path(data)
    if not data.is_dir():
        raise ValueError(f"{data}: data must be a dataset folder")
    t0 = time.perf_counter()
    if method == "cnn":
        if Path(out).suffix and not Path(out).is_dir():
            raise ValueError(f"{out}: method cnn writes a run folder; give a folder name")
        if epochs is None and time_budget is None:
            raise ValueError("method cnn needs epochs and/or a time budget")
        path = train_localizer(
            data,
            out,
            epochs=epochs,
            time_budget=time_budget,
            resume=resume,
            val_fraction=val_fraction,
            seed=seed,
            device=device,
            max_side=max_side,
            progress=progress,
        )
        records = read_box_dataset(data)
        train, val = split_records(records, val_fraction=val_fraction, seed=seed)
        return _summary(method, path, train, val, time.perf_counter() - t0)
    given = [n for n, v in (("epochs", epochs), ("time_budget", time_budget)) if v is not None]
    if resume:
        given.append("resume")
    if given:
        raise ValueError(f"{', '.join(given)} apply to method cnn only, not {method!r}")

    records = read_box_dataset(data)
    train, val = split_records(records, val_fraction=val_fraction, seed=seed)
    images = [io.read_image(r["image_path"])[0] for r in train]
    images = [im[..., :3] if im.ndim == 3 else im for im in images]
    classes = sorted({c for r in train for c in r["classes"]})
    meta = {
        "data": str(data),
        "held_out": sorted(Path(r["image_path"]).stem for r in val),
        "val_fraction": val_fraction,
        "seed": seed,
    }
    if method == "hog-svm":
        if len(classes) > 1:
            raise ValueError(f"{data}: hog-svm trains one class, got {len(classes)}: {classes}")
        det: Any = HogSvmDetector(None, scale=1.2, max_side=max_side or 320, classes=classes)
        det.fit(
            images,
            [r["boxes"] for r in train],
            negatives_per_image=30,
            hard_negative_rounds=hard_rounds,
            seed=seed,
        )
    else:
        det = ProposalDetector(max_side=max_side or 256).fit(
            images,
            [r["boxes"] for r in train],
            [r["classes"] for r in train],
            hard_negative_rounds=hard_rounds,
            seed=seed,
        )
    det.save(out, metadata=meta)
    return _summary(method, Path(out), train, val, det.training_stats_["seconds"])


def _summary(method: str, path: Path, train: list, val: list, seconds: float) -> dict[str, Any]:
    return {
        "method": method,
        "path": path,
        "train": len(train),
        "held_out": len(val),
        "seconds": float(seconds),
    }
