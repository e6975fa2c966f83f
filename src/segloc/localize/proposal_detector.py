"""Proposal detectors: selective search boxes, raw or scored by SVMs on warped HOG (R-CNN style).

:class:`SelectiveSearchDetector` returns the ranked selective search boxes themselves (no
training); :class:`ProposalDetector` is the detector of Girshick et al. [RCNN]_ with
hand-made features in place of the CNN:

1. selective search proposals [UI]_ (:func:`segloc.localize.proposals.selective_search`,
   fast mode) on the image downscaled so that its longer side is at most ``max_side``;
2. every proposal, dilated so that ``context`` pixels of its surroundings remain around it
   after warping (R-CNN's context padding), is warped anisotropically to a fixed
   ``patch_size`` square (OpenCV ``resize``);
3. features: HOG of the warped grey patch (scikit-image ``hog``, L2-Hys), optionally an
   L1-normalised HSV colour histogram of the proposal;
4. one linear SVM per class (scikit-learn ``LinearSVC``): positives are the truth boxes and
   the proposals with IoU >= 0.5 with a truth box of the class, negatives the proposals with
   IoU < 0.3 with every truth box of the class; a random start, then rounds of hard-negative
   mining (add the margin violators with the highest scores, retrain). R-CNN's own SVMs
   take the truth boxes alone as positives (IoU >= 0.5 served its CNN fine-tuning); with
   fixed HOG features and few truth boxes, the overlapping proposals add jittered positives;
5. optional class-specific bounding-box regression (R-CNN Appendix C): ridge regression of
   ``(tx, ty, tw, th)`` on the features of the proposals with IoU >= 0.6;
6. per-class greedy non-maximum suppression (:func:`segloc.boxes.batched_nms`).

Boxes are segloc boxes ``(x0, y0, x1, y1)`` with half-open pixel edges in the input image's
coordinates (``docs/conventions.md``). A fitted detector is saved as ``.npz`` (arrays and a
JSON string of its parameters; loaded with ``allow_pickle=False``).

References
----------
.. [RCNN] Girshick, R., Donahue, J., Darrell, T. and Malik, J. "Rich feature hierarchies for
   accurate object detection and semantic segmentation", CVPR 2014,
   :doi:`10.1109/CVPR.2014.81` (Appendix C: bounding-box regression).
.. [UI] Uijlings, J. R. R. et al. "Selective Search for Object Recognition", IJCV 104(2)
   154-171, 2013, :doi:`10.1007/s11263-013-0620-5`
.. [DT] Dalal, N. and Triggs, B. "Histograms of Oriented Gradients for Human Detection",
   CVPR 2005, :doi:`10.1109/CVPR.2005.177`
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from skimage.color import rgb2hsv
from skimage.feature import hog
from sklearn.linear_model import Ridge
from sklearn.svm import LinearSVC

from segloc._validation import check_image, check_int, check_positive
from segloc.boxes import batched_nms, box_iou, check_boxes
from segloc.color import to_grey
from segloc.io.errors import CorruptFile
from segloc.localize.detect import Detections, read_detector_file, write_detector_file
from segloc.localize.proposals import selective_search

__all__ = ["ProposalDetector", "SelectiveSearchDetector", "regression_targets", "apply_regression"]


# --------------------------------------------------------------------------- box regression


def regression_targets(proposals: Any, truth: Any) -> np.ndarray:
    """R-CNN box-regression targets ``(tx, ty, tw, th)`` of proposals towards truth boxes.

    ``tx = (Gx - Px) / Pw``, ``ty = (Gy - Py) / Ph``, ``tw = log(Gw / Pw)``,
    ``th = log(Gh / Ph)`` with ``(x, y)`` box centres and ``(w, h)`` sizes [RCNN]_.

    Parameters
    ----------
    proposals, truth : array_like, shape (N, 4)
        Paired boxes ``(x0, y0, x1, y1)`` of positive size.

    Returns
    -------
    ndarray of float64, shape (N, 4)

    References
    ----------
    .. [1] Girshick et al., CVPR 2014, Appendix C, :doi:`10.1109/CVPR.2014.81`

    Examples
    --------
    >>> regression_targets([[0, 0, 10, 10]], [[5, 0, 15, 20]]).round(4)
    array([[0.5   , 0.5   , 0.    , 0.6931]])
    """
    p = np.asarray(proposals, np.float64).reshape(-1, 4)
    g = np.asarray(truth, np.float64).reshape(-1, 4)
    if p.shape != g.shape:
        raise ValueError(f"truth must pair with proposals {p.shape}, got {g.shape}")
    pw, ph = p[:, 2] - p[:, 0], p[:, 3] - p[:, 1]
    gw, gh = g[:, 2] - g[:, 0], g[:, 3] - g[:, 1]
    if np.any(pw <= 0) or np.any(ph <= 0) or np.any(gw <= 0) or np.any(gh <= 0):
        raise ValueError("proposals and truth must have boxes of positive size")
    return np.stack(
        [
            (g[:, 0] + gw / 2 - p[:, 0] - pw / 2) / pw,
            (g[:, 1] + gh / 2 - p[:, 1] - ph / 2) / ph,
            np.log(gw / pw),
            np.log(gh / ph),
        ],
        axis=1,
    )


def apply_regression(proposals: Any, deltas: Any) -> np.ndarray:
    """Move boxes by R-CNN regression deltas ``(tx, ty, tw, th)`` (inverse of the targets).

    Examples
    --------
    >>> apply_regression([[0, 0, 10, 10]], [[0.5, 0.5, 0.0, np.log(2)]])
    array([[ 5.,  0., 15., 20.]])
    """
    p = np.asarray(proposals, np.float64).reshape(-1, 4)
    d = np.asarray(deltas, np.float64).reshape(-1, 4)
    pw, ph = p[:, 2] - p[:, 0], p[:, 3] - p[:, 1]
    cx = p[:, 0] + pw / 2 + d[:, 0] * pw
    cy = p[:, 1] + ph / 2 + d[:, 1] * ph
    # a bounded exponent: a wild delta cannot make an infinite box
    w = pw * np.exp(np.clip(d[:, 2], -4, 4))
    h = ph * np.exp(np.clip(d[:, 3], -4, 4))
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


# --------------------------------------------------------------------------- detector


def _training_boxes(
    images: Sequence[Any],
    boxes_per_image: Sequence[Any],
    classes_per_image: Sequence[Sequence[str]] | None,
) -> tuple[list[np.ndarray], list[list[str]]]:
    """Checked truth boxes and their class names, per image."""
    truths, names = [], []
    for k, b in enumerate(boxes_per_image):
        b = np.asarray(check_boxes(b, name=f"boxes_per_image[{k}]"), np.float64)
        if b.ndim != 2 or b.shape[1] != 4:
            raise ValueError(f"boxes_per_image[{k}] must be 2D boxes (N, 4), got {b.shape}")
        if len(b) and np.any((b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1])):
            raise ValueError(f"boxes_per_image[{k}] must have boxes of positive size")
        truths.append(b)
        if classes_per_image is None:
            names.append(["object"] * len(b))
        else:
            if len(classes_per_image) != len(images):
                raise ValueError(
                    f"classes_per_image must have one entry per image ({len(images)}), "
                    f"got {len(classes_per_image)}"
                )
            c = [str(v) for v in classes_per_image[k]]
            if len(c) != len(b):
                raise ValueError(
                    f"classes_per_image[{k}] must name each of its {len(b)} boxes, got {len(c)}"
                )
            names.append(c)
    return truths, names


class ProposalDetector:
    """R-CNN-style detector: selective search proposals scored by per-class linear SVMs.

    Parameters
    ----------
    max_side : int or None, optional
        The image is downscaled so that its longer side is at most this (proposals and
        features are computed there; boxes come back in the input's coordinates).
    patch_size : int, optional
        Side of the square every proposal is warped to, context included; a multiple of
        ``cell``.
    context : int, optional
        Pixels of context around the proposal in the warped patch (R-CNN: 16 of 227).
    cell, block, orientations : int, optional
        HOG cell size, cells per block side, orientation bins [DT]_.
    color_bins : int, optional
        Bins per HSV channel of a colour histogram appended to HOG; 0 = HOG only.
    C : float, optional
        ``LinearSVC`` regularisation.
    box_regression : bool, optional
        Fit and apply class-specific ridge box regression [RCNN]_.
    ridge_alpha : float, optional
        Ridge penalty of the box regression (R-CNN's lambda = 1000).
    max_proposals : int, optional
        Best-ranked selective search boxes used per image.
    min_proposal_size : int, optional
        Proposals narrower or lower than this (in downscaled pixels) are dropped.

    Attributes
    ----------
    classes_ : list of str
        Class names; class ``k`` of :meth:`detect` is ``classes_[k]``.
    coef_ : ndarray, shape (n_classes, n_features); ``intercept_`` (n_classes,)
    reg_coef_ : ndarray, shape (n_classes, 4, n_features) or None; ``reg_intercept_``
    training_stats_ : dict

    References
    ----------
    .. [RCNN] Girshick et al. "Rich feature hierarchies for accurate object detection and
       semantic segmentation", CVPR 2014, :doi:`10.1109/CVPR.2014.81`
    .. [UI] Uijlings et al. "Selective Search for Object Recognition", IJCV 2013,
       :doi:`10.1007/s11263-013-0620-5`

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> imgs = [rng.random((64, 64)) * 0.2 for _ in range(4)]
    >>> for im in imgs: im[16:40, 20:44] = 0.9
    >>> det = ProposalDetector(max_side=None, patch_size=32, box_regression=False)
    >>> det = det.fit(imgs, [[[20, 16, 44, 40]]] * 4)
    >>> found = det.detect(imgs[0], max_detections=1)
    >>> bool(box_iou(found.boxes, [[20, 16, 44, 40]])[0, 0] > 0.5), det.classes[found.classes[0]]
    (True, 'object')
    """

    def __init__(
        self,
        *,
        max_side: int | None = 256,
        patch_size: int = 64,
        context: int = 8,
        cell: int = 8,
        block: int = 2,
        orientations: int = 9,
        color_bins: int = 0,
        C: float = 0.01,
        box_regression: bool = True,
        ridge_alpha: float = 1000.0,
        max_proposals: int = 1000,
        min_proposal_size: int = 4,
    ) -> None:
        self.max_side = (
            None if max_side is None else check_int(max_side, name="max_side", minimum=16)
        )
        self.cell = check_int(cell, name="cell", minimum=2)
        self.block = check_int(block, name="block", minimum=1)
        self.patch_size = check_int(patch_size, name="patch_size", minimum=self.cell * self.block)
        if self.patch_size % self.cell:
            raise ValueError(
                f"patch_size must be a multiple of cell={self.cell}, got {self.patch_size}"
            )
        self.context = check_int(context, name="context", minimum=0)
        if 2 * self.context >= self.patch_size:
            raise ValueError(
                f"context must be less than patch_size / 2 = {self.patch_size / 2}, got {context}"
            )
        self.orientations = check_int(orientations, name="orientations", minimum=1)
        self.color_bins = check_int(color_bins, name="color_bins", minimum=0)
        self.C = float(check_positive(C, name="C"))
        if not isinstance(box_regression, (bool, np.bool_)):
            raise TypeError(f"box_regression must be a bool, got {type(box_regression).__name__}")
        self.box_regression = bool(box_regression)
        self.ridge_alpha = float(check_positive(ridge_alpha, name="ridge_alpha"))
        self.max_proposals = check_int(max_proposals, name="max_proposals", minimum=1)
        self.min_proposal_size = check_int(min_proposal_size, name="min_proposal_size", minimum=1)
        self.classes_: list[str] = []
        self.coef_: np.ndarray | None = None
        self.intercept_: np.ndarray | None = None
        self.reg_coef_: np.ndarray | None = None
        self.reg_intercept_: np.ndarray | None = None
        self.training_stats_: dict = {}
        self.metadata_: dict = {}

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names; class ``k`` of :meth:`detect` is ``classes[k]``."""
        return tuple(self.classes_)

    def _params(self) -> dict:
        return {
            "max_side": self.max_side,
            "patch_size": self.patch_size,
            "context": self.context,
            "cell": self.cell,
            "block": self.block,
            "orientations": self.orientations,
            "color_bins": self.color_bins,
            "C": self.C,
            "box_regression": self.box_regression,
            "ridge_alpha": self.ridge_alpha,
            "max_proposals": self.max_proposals,
            "min_proposal_size": self.min_proposal_size,
        }

    def __repr__(self) -> str:
        return (
            "ProposalDetector(" + ", ".join(f"{k}={v!r}" for k, v in self._params().items()) + ")"
        )

    # ------------------------------------------------------------------ image preparation

    def _prepare(self, image: Any, name: str = "image") -> dict:
        """Downscaled RGB in [0, 1], its grey copy and the scale factor (small / input)."""
        arr = check_image(image, name=name, ndim=(2, 3))
        if arr.ndim == 3 and arr.shape[2] not in (1, 3, 4):
            raise ValueError(
                f"{name} must be (H, W) or (H, W, C) with C in 1, 3, 4, got {arr.shape}"
            )
        if arr.ndim == 3:
            arr = arr[..., 0] if arr.shape[2] == 1 else arr[..., :3]
        if np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool:
            info_max = 1.0 if arr.dtype == bool else float(np.iinfo(arr.dtype).max)
            rgb = arr.astype(np.float32) / info_max
        else:
            rgb = arr.astype(np.float32)
            if rgb.size and (np.nanmin(rgb) < 0 or np.nanmax(rgb) > 1):
                raise ValueError(f"{name} must have float values in [0, 1], got a wider range")
        h, w = rgb.shape[:2]
        f = 1.0
        if self.max_side is not None and max(h, w) > self.max_side:
            f = self.max_side / max(h, w)
            size = (max(1, round(w * f)), max(1, round(h * f)))  # OpenCV takes (width, height)
            rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        if rgb.ndim == 2:
            rgb = np.repeat(rgb[..., None], 3, axis=2)
        grey = to_grey(rgb).astype(np.float32)
        # the per-axis factors actually used (rounding makes them differ slightly)
        fx, fy = rgb.shape[1] / w, rgb.shape[0] / h
        return {"rgb": np.clip(rgb, 0, 1), "grey": grey, "factor": np.array([fx, fy, fx, fy])}

    def _proposals(self, prep: dict, seed: int = 0) -> np.ndarray:
        boxes, _ = selective_search(
            prep["rgb"], mode="fast", seed=seed, max_proposals=self.max_proposals
        )
        big = (boxes[:, 2] - boxes[:, 0] >= self.min_proposal_size) & (
            boxes[:, 3] - boxes[:, 1] >= self.min_proposal_size
        )
        return boxes[big]

    # ------------------------------------------------------------------ features

    @property
    def n_features(self) -> int:
        nb = self.patch_size // self.cell - self.block + 1
        return nb * nb * self.block * self.block * self.orientations + 3 * self.color_bins

    def features(self, prep: dict, boxes: np.ndarray, *, flip: bool = False) -> np.ndarray:
        """Features (N, n_features) of boxes given in the prepared (downscaled) image."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        out = np.empty((len(boxes), self.n_features), np.float32)
        if not len(boxes):
            return out
        grey = prep["grey"]
        h, w = grey.shape
        inner = self.patch_size - 2 * self.context
        # dilate each box so that the context strip of the patch shows its surroundings
        bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        mx, my = bw * self.context / inner, bh * self.context / inner
        x0 = np.floor(boxes[:, 0] - mx).astype(int)
        y0 = np.floor(boxes[:, 1] - my).astype(int)
        x1 = np.ceil(boxes[:, 2] + mx).astype(int)
        y1 = np.ceil(boxes[:, 3] + my).astype(int)
        pad = int(max(0, -x0.min(), -y0.min(), x1.max() - w, y1.max() - h))
        # outside the image: the border replicated (R-CNN fills with the image mean)
        src = cv2.copyMakeBorder(grey, pad, pad, pad, pad, cv2.BORDER_REPLICATE) if pad else grey
        hsv = rgb2hsv(prep["rgb"]) if self.color_bins else None
        p = self.patch_size
        for k in range(len(boxes)):
            crop = src[y0[k] + pad : y1[k] + pad, x0[k] + pad : x1[k] + pad]
            shrink = crop.shape[0] > p or crop.shape[1] > p
            patch = cv2.resize(
                crop, (p, p), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
            )
            if flip:
                patch = patch[:, ::-1]
            f = hog(
                patch,
                orientations=self.orientations,
                pixels_per_cell=(self.cell, self.cell),
                cells_per_block=(self.block, self.block),
                block_norm="L2-Hys",
                feature_vector=True,
            )
            if hsv is not None:
                bx0, by0 = max(0, int(boxes[k, 0])), max(0, int(boxes[k, 1]))
                bx1 = min(w, max(bx0 + 1, int(np.ceil(boxes[k, 2]))))
                by1 = min(h, max(by0 + 1, int(np.ceil(boxes[k, 3]))))
                region = hsv[by0:by1, bx0:bx1].reshape(-1, 3)
                hists = [
                    np.histogram(region[:, c], bins=self.color_bins, range=(0, 1))[0]
                    for c in range(3)
                ]
                colour = np.concatenate(hists).astype(np.float64) / max(1, len(region))
                f = np.concatenate([f, colour])
            out[k] = f
        return out

    # ------------------------------------------------------------------ training

    def fit(
        self,
        images: Sequence[Any],
        boxes_per_image: Sequence[Any],
        classes_per_image: Sequence[Sequence[str]] | None = None,
        *,
        negatives_per_image: int = 30,
        hard_negative_rounds: int = 1,
        hard_negatives_per_image: int = 30,
        flip: bool = True,
        max_iter: int = 5000,
        seed: int = 0,
    ) -> ProposalDetector:
        """Train the per-class SVMs (and box regressors) from box annotations.

        Parameters
        ----------
        images : sequence of array_like
            (H, W) or (H, W, 3) images (integers scaled by their dtype's range, floats in
            [0, 1]).
        boxes_per_image : sequence of array_like, shape (N_i, 4)
            Truth boxes ``(x0, y0, x1, y1)`` per image (may be empty: a negative image).
        classes_per_image : sequence of sequence of str, optional
            Class name of each truth box; default one class, ``"object"``.
        negatives_per_image : int, optional
            Random proposals with IoU < 0.3 with every truth box of a class, per image.
        hard_negative_rounds : int, optional
            Rounds of: score every training proposal with IoU < 0.3, add per image the
            highest-scoring ones that violate the margin (score > -1), retrain [RCNN]_.
        hard_negatives_per_image : int, optional
        flip : bool, optional
            Also train on left-right mirrored positives.
        max_iter : int, optional
            ``LinearSVC`` iteration limit.
        seed : int, optional
            Seeds the negative sampling and the proposals' rank diversification.

        Returns
        -------
        self
        """
        if len(images) != len(boxes_per_image):
            raise ValueError(
                f"boxes_per_image must have one entry per image ({len(images)}), "
                f"got {len(boxes_per_image)}"
            )
        if not len(images):
            raise ValueError("images must not be empty")
        neg_n = check_int(negatives_per_image, name="negatives_per_image", minimum=1)
        rounds = check_int(hard_negative_rounds, name="hard_negative_rounds", minimum=0)
        hard_n = check_int(hard_negatives_per_image, name="hard_negatives_per_image", minimum=1)
        max_iter = check_int(max_iter, name="max_iter", minimum=1)
        seed = check_int(seed, name="seed", minimum=0)
        t0 = time.perf_counter()
        truths, names = _training_boxes(images, boxes_per_image, classes_per_image)
        self.classes_ = sorted({c for cs in names for c in cs})
        if not self.classes_:
            raise ValueError("boxes_per_image must hold at least one object box")
        n_cls = len(self.classes_)
        rng = np.random.default_rng(seed)

        # per image: prepared image, proposals, truth (downscaled) and class index
        data = []
        for k, im in enumerate(images):
            prep = self._prepare(im, name=f"images[{k}]")
            props = self._proposals(prep, seed=seed)
            truth = truths[k] * prep["factor"]
            cls = np.array([self.classes_.index(c) for c in names[k]], np.int64)
            data.append((prep, props, truth, cls))

        pos, neg, reg_x, reg_y = self._examples(data, n_cls, neg_n, flip, rng)
        for c in range(n_cls):
            if not len(neg[c]):
                raise ValueError(
                    f"images must leave room for negative proposals of class "
                    f"{self.classes_[c]!r} (IoU < 0.3 with its boxes)"
                )
        n_neg = [[len(n) for n in neg]]
        self._train(pos, neg, max_iter, seed)
        for _ in range(rounds):
            added = self._hard_negatives(data, n_cls, hard_n)
            n_neg.append([sum(len(a) for a in added[c]) for c in range(n_cls)])
            if not any(added):
                break
            neg = [np.concatenate([neg[c]] + added[c]) for c in range(n_cls)]
            self._train(pos, neg, max_iter, seed)
        if self.box_regression:
            self.reg_coef_ = np.zeros((n_cls, 4, self.n_features))
            self.reg_intercept_ = np.zeros((n_cls, 4))
            for c in range(n_cls):
                ridge = Ridge(alpha=self.ridge_alpha).fit(
                    np.concatenate(reg_x[c]).astype(np.float64), np.concatenate(reg_y[c])
                )
                self.reg_coef_[c] = ridge.coef_
                self.reg_intercept_[c] = ridge.intercept_
        else:
            self.reg_coef_ = self.reg_intercept_ = None
        self.training_stats_ = {
            "positives": [len(p) for p in pos],
            "negatives_per_round": n_neg,
            "seconds": time.perf_counter() - t0,
        }
        return self

    def _examples(self, data: list, n_cls: int, neg_n: int, flip: bool, rng: Any) -> tuple:
        """Positive, random negative and box-regression examples of every class."""
        pos = [[] for _ in range(n_cls)]
        reg_x = [[] for _ in range(n_cls)]
        reg_y = [[] for _ in range(n_cls)]
        neg = [[] for _ in range(n_cls)]
        for prep, props, truth, cls in data:
            iou = box_iou(props, truth) if len(truth) and len(props) else np.zeros((len(props), 0))
            for c in range(n_cls):
                mine = cls == c
                best = iou[:, mine].max(axis=1) if mine.any() else np.zeros(len(props))
                if mine.any():
                    pb = np.concatenate([truth[mine], props[best >= 0.5]])
                    pos[c].append(self.features(prep, pb))
                    if flip:
                        pos[c].append(self.features(prep, pb, flip=True))
                    if self.box_regression:
                        arg = np.argmax(iou[:, mine], axis=1)
                        sel = best >= 0.6
                        rb = np.concatenate([truth[mine], props[sel]])
                        rt = np.concatenate([truth[mine], truth[mine][arg[sel]]])
                        reg_x[c].append(self.features(prep, rb))
                        reg_y[c].append(regression_targets(rb, rt))
                free = np.flatnonzero(best < 0.3)
                if free.size:
                    pick = rng.choice(free, size=min(neg_n, free.size), replace=False)
                    neg[c].append(self.features(prep, props[np.sort(pick)]))
        pos = [np.concatenate(p) if p else np.zeros((0, self.n_features), np.float32) for p in pos]
        neg = [np.concatenate(n) if n else np.zeros((0, self.n_features), np.float32) for n in neg]
        return pos, neg, reg_x, reg_y

    def _hard_negatives(self, data: list, n_cls: int, hard_n: int) -> list[list[np.ndarray]]:
        """Per class, the training proposals with IoU < 0.3 that violate the margin."""
        added = [[] for _ in range(n_cls)]
        for prep, props, truth, cls in data:
            if not len(props):
                continue
            feats = self.features(prep, props)
            scores = feats @ self.coef_.T + self.intercept_  # (N, n_cls)
            iou = box_iou(props, truth) if len(truth) else np.zeros((len(props), 0))
            for c in range(n_cls):
                mine = cls == c
                best = iou[:, mine].max(axis=1) if mine.any() else np.zeros(len(props))
                idx = np.flatnonzero((best < 0.3) & (scores[:, c] > -1.0))
                idx = idx[np.argsort(-scores[idx, c], kind="stable")[:hard_n]]
                if idx.size:
                    added[c].append(feats[np.sort(idx)])
        return added

    def _train(self, pos: list, neg: list, max_iter: int, seed: int) -> None:
        coef = np.zeros((len(pos), self.n_features))
        intercept = np.zeros(len(pos))
        for c, (p, n) in enumerate(zip(pos, neg, strict=True)):
            x = np.concatenate([p, n]).astype(np.float64)
            y = np.concatenate([np.ones(len(p)), np.zeros(len(n))])
            svm = LinearSVC(C=self.C, max_iter=max_iter, dual="auto", random_state=seed)
            svm.fit(x, y)
            coef[c] = svm.coef_[0]
            intercept[c] = svm.intercept_[0]
        self.coef_, self.intercept_ = coef, intercept

    # ------------------------------------------------------------------ detection

    def _check_fitted(self) -> None:
        if self.coef_ is None:
            raise ValueError("ProposalDetector must be fitted first: call fit(images, boxes)")

    def detect(
        self,
        image: Any,
        *,
        score_threshold: float | None = 0.0,
        iou_threshold: float = 0.3,
        max_detections: int = 100,
        seed: int = 0,
    ) -> Detections:
        """Detect objects in one image.

        Parameters
        ----------
        image : array_like, (H, W) or (H, W, 3)
        score_threshold : float or None, optional
            SVM margin below which a proposal is dropped (0, also for None, = the decision
            boundary).
        iou_threshold : float, optional
            Per-class NMS: a box overlapping a better one of its class by more goes
            (R-CNN: 0.3).
        max_detections : int, optional
        seed : int, optional
            Proposal rank diversification seed.

        Returns
        -------
        Detections
            ``(x0, y0, x1, y1)`` in the input's coordinates, by decreasing score; class
            ``k`` is ``classes[k]``.
        """
        self._check_fitted()
        if score_threshold is None:
            score_threshold = 0.0
        if isinstance(score_threshold, bool) or not isinstance(
            score_threshold, (int, float, np.number)
        ):
            raise TypeError(
                f"score_threshold must be a number, got {type(score_threshold).__name__}"
            )
        if not 0 <= iou_threshold <= 1:
            raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
        max_detections = check_int(max_detections, name="max_detections", minimum=1)
        prep = self._prepare(image)
        h, w = prep["grey"].shape
        props = self._proposals(prep, seed=seed)
        feats = self.features(prep, props).astype(np.float64)
        scores = feats @ self.coef_.T + self.intercept_  # (N, n_cls)
        n, n_cls = scores.shape
        boxes = np.repeat(props[:, None], n_cls, axis=1)  # (N, n_cls, 4)
        if self.reg_coef_ is not None and n:
            deltas = np.einsum("nf,cdf->ncd", feats, self.reg_coef_) + self.reg_intercept_
            boxes = apply_regression(boxes.reshape(-1, 4), deltas.reshape(-1, 4)).reshape(
                n, n_cls, 4
            )
        boxes = np.clip(boxes, 0, [w, h, w, h])
        cls = np.broadcast_to(np.arange(n_cls), (n, n_cls)).reshape(-1)
        boxes, scores = boxes.reshape(-1, 4), scores.reshape(-1)
        ok = (scores >= score_threshold) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, scores, cls = boxes[ok], scores[ok], cls[ok]
        keep = np.asarray(batched_nms(boxes, scores, cls, float(iou_threshold)))[:max_detections]
        boxes, scores, cls = boxes[keep] / prep["factor"], scores[keep], cls[keep].astype(np.int64)
        return Detections(boxes, scores, cls, self.classes)

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | os.PathLike, *, metadata: dict | None = None) -> Path:
        """Write the fitted detector to an ``.npz`` file (no pickle), atomically.

        ``metadata`` (JSON-serialisable) is stored alongside and comes back as
        ``metadata_`` from :meth:`load`.
        """
        self._check_fitted()
        meta = {
            "params": self._params(),
            "classes": self.classes_,
            "metadata": dict(metadata if metadata is not None else self.metadata_),
        }
        arrays = {"coef": self.coef_, "intercept": self.intercept_}
        if self.reg_coef_ is not None:
            arrays |= {"reg_coef": self.reg_coef_, "reg_intercept": self.reg_intercept_}
        return write_detector_file(path, "ProposalDetector", meta, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> ProposalDetector:
        """Read a detector written by :meth:`save`.

        Raises
        ------
        CorruptFile
            (a ``ValueError``) The file is not a saved ProposalDetector: another file, or one
            cut short (message starts with the path).
        OSError
            The system's error: a missing file, permission, I/O.
        """
        meta, arrays = read_detector_file(path, "ProposalDetector")
        try:
            det = cls(**meta["params"])
            det.classes_ = list(meta["classes"])
            det.coef_ = arrays["coef"]
            det.intercept_ = arrays["intercept"]
            det.reg_coef_ = arrays.get("reg_coef")
            det.reg_intercept_ = arrays.get("reg_intercept")
            det.metadata_ = meta.get("metadata", {})
            want = (len(det.classes_), det.n_features)
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptFile(
                path, f"not a saved ProposalDetector ({type(exc).__name__}: {exc})"
            ) from None
        if det.coef_.shape != want:
            raise CorruptFile(path, f"coef must have shape {want}, got {det.coef_.shape}")
        return det


class SelectiveSearchDetector:
    """The ranked selective search boxes of an image, as detections (nothing is learned).

    The image is shrunk so its longer side is at most ``max_side`` first (selective search
    slows with the pixel count); the ``top`` best-ranked proposals are scored
    ``1 / (1 + rank)``, so the first proposal scores 1.

    Parameters
    ----------
    top : int, optional
        Proposals kept.
    max_side : int, optional
        Longer side of the working image (>= 16).

    References
    ----------
    .. [UI] Uijlings et al. "Selective Search for Object Recognition", IJCV 2013,
       :doi:`10.1007/s11263-013-0620-5`
    """

    classes = ("object",)

    def __init__(self, *, top: int = 100, max_side: int = 500) -> None:
        self.top = check_int(top, name="top", minimum=1)
        self.max_side = check_int(max_side, name="max_side", minimum=16)

    def detect(
        self, image: Any, *, score_threshold: float | None = None, max_detections: int = 100
    ) -> Detections:
        """The ``top`` proposals (then ``score_threshold`` / ``max_detections``) by rank."""
        from skimage.transform import resize

        arr = check_image(image, ndim=(2, 3))
        stored = arr.dtype
        h, w = arr.shape[:2]
        f = 1.0
        if max(h, w) > self.max_side:
            f = self.max_side / max(h, w)
            size = (round(h * f), round(w * f))
            arr = resize(arr, size, anti_aliasing=True, preserve_range=True).astype(np.float32)
        # selective search takes uint8 as it is and anything else as [0, 1]
        if stored == np.uint8 and arr.dtype != np.uint8:
            arr = np.clip(arr / 255.0, 0, 1)
        elif np.issubdtype(stored, np.integer) and stored != np.uint8:
            arr = arr.astype(np.float32) / float(np.iinfo(stored).max)
        boxes, _ = selective_search(arr, mode="fast", max_proposals=self.top)
        scores = 1.0 / (1.0 + np.arange(len(boxes)))
        found = Detections(boxes, scores).scaled(f)
        return found.filter(score_threshold=score_threshold, max_detections=max_detections)

    def save(self, path: str | os.PathLike) -> Path:
        """Its two settings, in a detector file."""
        meta = {"top": self.top, "max_side": self.max_side}
        return write_detector_file(path, "SelectiveSearchDetector", meta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> SelectiveSearchDetector:
        meta, _ = read_detector_file(path, "SelectiveSearchDetector")
        try:
            return cls(**meta)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: not a saved SelectiveSearchDetector ({exc})") from None
