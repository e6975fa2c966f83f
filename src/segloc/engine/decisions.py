"""Choices made after training on the run's own validation split, for prediction to apply.

:func:`decide` predicts every validation case once without and once with flip test-time
augmentation (the mirrors training used), and keeps what scores better: TTA on or off, and,
class by class, whether keeping only the largest connected component raises that class's
Dice (nnU-Net's post-processing [1]_). Ties keep the cheaper or the untouched choice. The
scores are returned for ``decisions.json``; the choices go into the checkpoint's
:class:`~segloc.nn.checkpoint.CheckpointMeta` (``tta``, ``keep_largest``), which
:class:`~segloc.engine.infer.Predictor` honours.

References
----------
.. [1] Isensee, F. et al. "nnU-Net: a self-configuring method for deep learning-based
   biomedical image segmentation", Nature Methods 18, 2021,
   :doi:`10.1038/s41592-020-01008-z` (removing all but the largest component when it helps
   on the validation folds).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from segloc.engine.infer import flip_tta, keep_largest_classes, predict_whole
from segloc.engine.patches import SegmentationDataset
from segloc.metrics import overlap_scores

__all__ = ["CHOICES", "decide"]

#: the choices :func:`decide` can make
CHOICES = ("tta", "keep_largest")


def _probabilities(
    model: nn.Module, x: torch.Tensor, axes: Sequence[int] | None, tta: bool
) -> np.ndarray:
    def run(t: torch.Tensor) -> torch.Tensor:
        return predict_whole(model, t).float()

    if tta:
        prob = flip_tta(run, x, softmax=True, axes=axes)
    else:
        with torch.no_grad():
            prob = torch.softmax(run(x), dim=1)
    return prob[0].cpu().numpy()


def _dice(pred: np.ndarray, labels: np.ndarray, classes: int, ignore: int | None) -> np.ndarray:
    return overlap_scores(pred, labels, num_classes=classes, ignore_index=ignore, empty="nan")[
        "dice"
    ]


def _mean(table: list[np.ndarray]) -> float:
    """Mean over cases of the mean over the foreground classes present (the trainer's Dice)."""
    per_case = [float(np.nanmean(t)) for t in table if np.isfinite(t).any()]
    return float(np.mean(per_case)) if per_case else float("nan")


def _class_mean(table: list[np.ndarray], c: int) -> float:
    values = [t[c - 1] for t in table if np.isfinite(t[c - 1])]
    return float(np.mean(values)) if values else float("nan")


def decide(
    model: nn.Module,
    dataset: SegmentationDataset,
    *,
    classes: int,
    choices: Sequence[str],
    flip_axes: Sequence[int] | None,
    ignore_index: int | None = None,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Decide TTA and keep-largest on the cases of ``dataset`` (the validation split).

    Parameters
    ----------
    model : nn.Module
        The weights prediction will use (evaluation mode is set and restored).
    dataset : SegmentationDataset
        Whole validation cases (``dataset.load(i)``).
    classes : int
    choices : sequence of {"tta", "keep_largest"}
    flip_axes : sequence of int or None
        The axes TTA mirrors (those training mirrored; None: all).
    ignore_index : int, optional
    device : torch.device or str

    Returns
    -------
    dict
        ``{"cases": n, "tta": {"off": dice, "on": dice, "chosen": bool},
        "keep_largest": {class: {"before": dice, "after": dice, "chosen": bool}},
        "settings": {"tta": bool or None, "keep_largest": [classes]}, "score": dice}``
        with the parts asked for in ``choices``; ``score`` is the mean Dice of the
        predictions with every choice applied.
    """
    unknown = sorted(set(choices) - set(CHOICES))
    if unknown:
        raise ValueError(f"choices must be among {CHOICES}, got {unknown}")
    was_training = model.training
    model.eval()
    want_tta = "tta" in choices and flip_axes != []
    plain, mirrored, truths = [], [], []
    try:
        for i in range(len(dataset.cases)):
            image, labels = dataset.load(i)
            x = torch.from_numpy(image[None]).to(device)
            plain.append(_probabilities(model, x, flip_axes, tta=False).argmax(0))
            if want_tta:
                mirrored.append(_probabilities(model, x, flip_axes, tta=True).argmax(0))
            truths.append(labels)
    finally:
        model.train(was_training)
    out: dict[str, Any] = {"cases": len(truths), "settings": {"tta": None, "keep_largest": []}}
    scores = [_dice(p, t, classes, ignore_index) for p, t in zip(plain, truths, strict=True)]
    preds = plain
    if want_tta:
        with_tta = [
            _dice(p, t, classes, ignore_index) for p, t in zip(mirrored, truths, strict=True)
        ]
        off, on = _mean(scores), _mean(with_tta)
        chosen = bool(np.isfinite(on) and on > off)
        out["tta"] = {"off": off, "on": on, "chosen": chosen}
        out["settings"]["tta"] = chosen
        if chosen:
            scores, preds = with_tta, mirrored
    elif "tta" in choices:
        out["settings"]["tta"] = False
    if "keep_largest" in choices:
        out["keep_largest"] = {}
        for c in range(1, classes):
            if c == ignore_index:
                continue
            kept = [keep_largest_classes(p, [c]) for p in preds]
            after = [_dice(p, t, classes, ignore_index) for p, t in zip(kept, truths, strict=True)]
            before_c, after_c = _class_mean(scores, c), _class_mean(after, c)
            chosen = bool(np.isfinite(after_c) and after_c > before_c)
            out["keep_largest"][str(c)] = {"before": before_c, "after": after_c, "chosen": chosen}
            if chosen:
                out["settings"]["keep_largest"].append(c)
        kept_classes = out["settings"]["keep_largest"]
        if kept_classes:
            preds = [keep_largest_classes(p, kept_classes) for p in preds]
            scores = [
                _dice(p, t, classes, ignore_index) for p, t in zip(preds, truths, strict=True)
            ]
    out["score"] = _mean(scores)
    return out
