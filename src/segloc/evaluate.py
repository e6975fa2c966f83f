"""Score predicted masks against ground truth, one case or whole folders.

One row per case with Dice, IoU and HD95 per class (and their mean over classes), then
mean / std / median over cases. Files are matched by name (:func:`segloc.io.match_files`).
"""

from __future__ import annotations

import csv
import io as _io
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segloc import io, metrics
from segloc._validation import atomic_path

#: per-class scores computed for every case
SCORES = ("dice", "iou", "hd95")


def as_labels(mask: np.ndarray) -> np.ndarray:
    """bool masks become 0/1 int32 label maps; label maps pass through as int32."""
    mask = np.asarray(mask)
    return mask.astype(np.int32, copy=False)


def evaluate_case(
    pred: np.ndarray,
    truth: np.ndarray,
    *,
    num_classes: int | None = None,
    classes: Sequence[int] | None = None,
    ignore_index: int | None = None,
    spacing: Sequence[float] | None = None,
    empty: str = "nan",
    surface: bool = True,
) -> dict[str, float]:
    """Return ``{"dice_<c>", "iou_<c>", "hd95_<c>", "dice" (mean over classes), ...}`` for a case.

    Parameters
    ----------
    pred, truth : ndarray
        bool masks or int label maps of the same shape.
    num_classes : int, optional
        Label count including background; inferred from both maps when None.
    classes : sequence of int, optional
        Classes to report (default: every foreground class ``1..num_classes-1``).
    ignore_index : int, optional
        Truth value excluded from scoring (CamVid's void = 11).
    spacing : sequence of float, optional
        Voxel spacing for HD95 (physical units).
    """
    pred, truth = as_labels(pred), as_labels(truth)
    if pred.shape != truth.shape:
        raise ValueError(
            f"prediction and truth must have the same shape, got {pred.shape} and {truth.shape}"
        )
    if num_classes is None:
        valid = truth[truth != ignore_index] if ignore_index is not None else truth
        num_classes = int(max(valid.max(initial=0), pred.max(initial=0), 1)) + 1
    overlap = metrics.overlap_scores(
        pred,
        truth,
        num_classes=num_classes,
        ignore_index=ignore_index,
        empty=empty,
        include_background=True,
    )
    wanted = list(classes) if classes is not None else list(range(1, num_classes))
    row: dict[str, float] = {}
    for c in wanted:
        row[f"dice_{c}"] = float(overlap["dice"][c])
        row[f"iou_{c}"] = float(overlap["iou"][c])
        if surface:
            p, t = pred == c, truth == c
            if ignore_index is not None:
                keep = truth != ignore_index
                p, t = p & keep, t & keep
            row[f"hd95_{c}"] = _finite_or_nan(metrics.hd95(p, t, spacing=spacing))
    for name in SCORES if surface else SCORES[:2]:
        vals = [row[f"{name}_{c}"] for c in wanted]
        row[name] = float(np.nanmean(vals)) if np.isfinite(vals).any() else math.nan
    return row


def _finite_or_nan(value: float) -> float:
    """Surface distances to an empty mask are infinite or nan: report nan, counted apart."""
    value = float(value)
    return value if math.isfinite(value) else math.nan


@dataclass
class Evaluation:
    """Per-case rows and their summary over cases."""

    rows: list[dict] = field(default_factory=list)
    unmatched_pred: list[str] = field(default_factory=list)
    unmatched_truth: list[str] = field(default_factory=list)

    @property
    def columns(self) -> list[str]:
        cols: list[str] = []
        for row in self.rows:
            cols += [k for k in row if k not in cols and k != "case"]
        return cols

    def summary(self) -> dict[str, dict[str, float]]:
        """Mean, std, median and count (``n``) of every column over cases, nan ignored."""
        out: dict[str, dict[str, float]] = {"mean": {}, "std": {}, "median": {}, "n": {}}
        for col in self.columns:
            vals = np.array([r.get(col, math.nan) for r in self.rows], dtype=float)
            ok = vals[np.isfinite(vals)]
            out["n"][col] = int(ok.size)
            out["mean"][col] = float(ok.mean()) if ok.size else math.nan
            out["std"][col] = float(ok.std()) if ok.size else math.nan
            out["median"][col] = float(np.median(ok)) if ok.size else math.nan
        return out

    def to_csv(self, path: str | os.PathLike) -> Path:
        """Write per-case rows then mean/std/median rows, atomically."""
        cols = ["case", *self.columns]
        buf = _io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: _fmt(row.get(k, math.nan)) for k in cols})
        for stat, values in self.summary().items():
            if stat != "n":
                writer.writerow({"case": stat, **{k: _fmt(v) for k, v in values.items()}})
        with atomic_path(path) as tmp:
            tmp.write_text(buf.getvalue())
        return Path(path)

    def to_json(self, path: str | os.PathLike) -> Path:
        """Write ``{"cases": rows, "summary": ..., "unmatched": ...}`` (nan as null), atomically."""
        doc = {
            "cases": [{k: _json_value(v) for k, v in r.items()} for r in self.rows],
            "summary": {
                s: {k: _json_value(v) for k, v in d.items()} for s, d in self.summary().items()
            },
            "unmatched": {"prediction": self.unmatched_pred, "truth": self.unmatched_truth},
        }
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(doc, indent=2))
        return Path(path)


def _fmt(v):
    return f"{v:.6g}" if isinstance(v, float) else v


def _json_value(v):
    return None if isinstance(v, float) and not math.isfinite(v) else v


def evaluate_paths(
    pred: str | os.PathLike,
    truth: str | os.PathLike,
    *,
    num_classes: int | None = None,
    classes: Sequence[int] | None = None,
    ignore_index: int | None = None,
    truth_suffix: str = "",
    empty: str = "nan",
    surface: bool = True,
    kind: str = "auto",
) -> Evaluation:
    """Evaluate one prediction file against one truth file, or two folders matched by name.

    Raises
    ------
    ValueError
        If nothing matches, or a pair differs in shape (the message names both files).
    """
    pred, truth = Path(pred), Path(truth)
    if pred.is_dir() != truth.is_dir():
        raise ValueError(f"{pred} and {truth}: give two files or two folders, not one of each")
    if pred.is_dir():
        pairs, un_p, un_t = io.match_files(pred, truth, truth_suffix=truth_suffix)
        if not pairs:
            raise ValueError(f"{pred}: no prediction file matches a truth file in {truth}")
    else:
        pairs, un_p, un_t = [(pred, truth)], [], []
    result = Evaluation(
        unmatched_pred=[str(p) for p in un_p], unmatched_truth=[str(t) for t in un_t]
    )
    for p_path, t_path in pairs:
        p, _ = io.read_mask(p_path, kind=kind)
        t, t_meta = io.read_mask(t_path, kind=kind)
        if p.shape != t.shape:
            raise ValueError(
                f"{p_path}: shape {p.shape} does not match the truth {t_path} with shape {t.shape}"
            )
        spacing = t_meta.spacing if len(t_meta.spacing) == t.ndim else None
        row = evaluate_case(
            p,
            t,
            num_classes=num_classes,
            classes=classes,
            ignore_index=ignore_index,
            spacing=spacing,
            empty=empty,
            surface=surface,
        )
        result.rows.append({"case": io.case_stem(t_path), **row})
    return result
