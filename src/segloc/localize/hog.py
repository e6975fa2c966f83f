"""HOG sliding-window detection: image pyramid, vectorised windows, HOG + linear SVM, NMS.

A detector scans windows of a fixed size over an image pyramid, scores each window and keeps
the local bests by non-maximum suppression across all scales. Nothing loops in Python over
window positions:

- :func:`window_view` reads every window of a level as one strided view
  (``numpy.lib.stride_tricks.sliding_window_view``), scored in batches by any callable
  (:func:`detect_windows`; a torch classifier fits here);
- :class:`HogSvmDetector` computes HOG once per pyramid level on the cell grid and reads each
  window as a slice of blocks, and scores a linear SVM as a sum of per-offset block
  responses, the way Dalal and Triggs [DT]_ scan: much faster than a HOG per window.

Window boxes are segloc boxes ``(x0, y0, x1, y1)`` with half-open pixel edges in the input
image's coordinates (``docs/conventions.md``). A window's HOG is that of the window with one
cell of its surroundings (the image reflected at the border), so that gradients at the
window's edge see real neighbours; training crops are cut the same way, so training and
scanning see the same features.

References
----------
.. [DT] Dalal, N. and Triggs, B. "Histograms of Oriented Gradients for Human Detection",
   CVPR 2005, :doi:`10.1109/CVPR.2005.177`
.. [FZ] Felzenszwalb, P. F., Girshick, R. B., McAllester, D. and Ramanan, D. "Object Detection
   with Discriminatively Trained Part-Based Models", IEEE TPAMI 32(9) 1627-1645, 2010,
   :doi:`10.1109/TPAMI.2009.167` (hard-negative mining as used here: margin violators).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from skimage.feature import hog
from skimage.transform import resize
from sklearn.svm import LinearSVC

from segloc._validation import as_float, check_image, check_int, check_positive
from segloc.boxes import box_iou, check_boxes, nms
from segloc.color import to_grey
from segloc.io.errors import CorruptFile
from segloc.localize.detect import Detections, read_detector_file, write_detector_file

__all__ = [
    "ScanStats",
    "pyramid",
    "window_view",
    "window_boxes",
    "detect_windows",
    "HogSvmDetector",
]

Scorer = Callable[[np.ndarray], Any]


# --------------------------------------------------------------------------- checks


def _pair_of_ints(value: Any, *, name: str, minimum: int = 1) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        value = (value, value)
    try:
        vals = tuple(value)
    except TypeError:
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}") from None
    if len(vals) != 2 or any(
        isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) for v in vals
    ):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(vals) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {vals}")
    return int(vals[0]), int(vals[1])


def _check_scale(scale: Any) -> float:
    check_positive(scale, name="scale")
    if scale <= 1:
        raise ValueError(f"scale must be > 1 (the size ratio of two levels), got {scale}")
    return float(scale)


def _check_iou(value: Any, *, name: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not 0 <= value <= 1:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return float(value)


def _check_2d_image(image: Any, *, name: str = "image") -> np.ndarray:
    arr = check_image(image, name=name, ndim=(2, 3))
    if arr.ndim == 3 and arr.shape[2] not in (1, 3, 4):
        raise ValueError(f"{name} must be (H, W) or (H, W, C) with C in 1, 3, 4, got {arr.shape}")
    return arr


# --------------------------------------------------------------------------- pyramid, windows


def pyramid(
    image: Any, *, scale: float = 1.25, min_size: int | tuple[int, int]
) -> list[np.ndarray]:
    """Image pyramid: the image, then copies each ``scale`` times smaller.

    Level ``k`` is resized from the image itself (not from level ``k - 1``, so errors do not
    accumulate) to ``round(H / scale**k) x round(W / scale**k)`` with bilinear interpolation
    after a Gaussian anti-aliasing filter (scikit-image ``resize``). Levels stop before one
    would be smaller than ``min_size`` along either axis.

    Parameters
    ----------
    image : array_like, (H, W) or (H, W, C)
    scale : float, optional
        Size ratio between two levels, > 1 (Dalal and Triggs scan at 1.05-1.2).
    min_size : int or (int, int)
        Smallest level ``(height, width)`` kept: the detection window.

    Returns
    -------
    list of ndarray
        Floating levels (float32, float64 for 64-bit input), the first the image itself;
        empty when the image is already smaller than ``min_size``. Map a box of level ``k``
        back by the factors ``H / level.shape[0]`` (rows) and ``W / level.shape[1]``.

    References
    ----------
    .. [1] Dalal, N. and Triggs, B. "Histograms of Oriented Gradients for Human Detection",
       CVPR 2005, :doi:`10.1109/CVPR.2005.177`

    Examples
    --------
    >>> [lv.shape for lv in pyramid(np.zeros((100, 80)), scale=2, min_size=20)]
    [(100, 80), (50, 40), (25, 20)]
    """
    arr = as_float(_check_2d_image(image))
    scale = _check_scale(scale)
    mh, mw = _pair_of_ints(min_size, name="min_size")
    h, w = arr.shape[:2]
    levels = []
    k = 0
    while True:
        shape = (round(h / scale**k), round(w / scale**k))
        if shape[0] < mh or shape[1] < mw:
            return levels
        if k == 0:
            levels.append(arr)
        else:
            levels.append(
                resize(arr, shape, order=1, anti_aliasing=True, preserve_range=True).astype(
                    arr.dtype, copy=False
                )
            )
        k += 1


def _grid(size: int, length: int, stride: int) -> int:
    """Number of window positions 0, stride, ... with the window inside ``size``."""
    return 0 if size < length else (size - length) // stride + 1


def window_view(
    image: Any, window: int | tuple[int, int], *, stride: int | tuple[int, int] = 8
) -> np.ndarray:
    """Every window of an image as one read-only strided view (no copy).

    Parameters
    ----------
    image : array_like, (H, W) or (H, W, C)
    window : int or (int, int)
        Window ``(height, width)``.
    stride : int or (int, int), optional
        Step between windows ``(rows, cols)``.

    Returns
    -------
    ndarray, shape (ny, nx, h, w) or (ny, nx, h, w, C)
        ``out[i, j]`` is ``image[i*sy : i*sy + h, j*sx : j*sx + w]``; windows lie wholly in
        the image (``ny = (H - h) // sy + 1``, 0 when the window does not fit).

    Examples
    --------
    >>> window_view(np.arange(12).reshape(3, 4), 2, stride=2)[0, 1]
    array([[2, 3],
           [6, 7]])
    """
    arr = _check_2d_image(image)
    wh, ww = _pair_of_ints(window, name="window")
    sy, sx = _pair_of_ints(stride, name="stride")
    h, w = arr.shape[:2]
    if h < wh or w < ww:
        return np.empty((0, 0, wh, ww) + arr.shape[2:], arr.dtype)
    view = sliding_window_view(arr, (wh, ww), axis=(0, 1))[::sy, ::sx]  # (ny, nx, [C,] h, w)
    if arr.ndim == 3:
        view = np.moveaxis(view, 2, -1)  # (ny, nx, h, w, C)
    return view


def window_boxes(
    shape: Sequence[int], window: int | tuple[int, int], *, stride: int | tuple[int, int] = 8
) -> np.ndarray:
    """Boxes of the windows of :func:`window_view`, in row-major window order.

    Returns
    -------
    ndarray of float64, shape (ny * nx, 4)
        ``(x0, y0, x1, y1)`` of window ``(i, j)`` at row ``i * nx + j``.

    Examples
    --------
    >>> window_boxes((3, 4), 2, stride=2)
    array([[0., 0., 2., 2.],
           [2., 0., 4., 2.]])
    """
    wh, ww = _pair_of_ints(window, name="window")
    sy, sx = _pair_of_ints(stride, name="stride")
    ny, nx = _grid(int(shape[0]), wh, sy), _grid(int(shape[1]), ww, sx)
    y0, x0 = np.meshgrid(np.arange(ny) * sy, np.arange(nx) * sx, indexing="ij")
    x0, y0 = x0.ravel().astype(np.float64), y0.ravel().astype(np.float64)
    return np.stack([x0, y0, x0 + ww, y0 + wh], axis=1)


# --------------------------------------------------------------------------- scanning


@dataclass(frozen=True)
class ScanStats:
    """What one scan cost: windows scored, seconds (features + scoring), pyramid levels."""

    windows: int
    seconds: float
    levels: int

    @property
    def windows_per_second(self) -> float:
        return self.windows / self.seconds if self.seconds > 0 else float("inf")


def _select(
    boxes: list[np.ndarray],
    scores: list[np.ndarray],
    *,
    score_threshold: float,
    iou_threshold: float,
    max_detections: int,
    pre_nms_top_k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Threshold, keep the best ``pre_nms_top_k``, NMS across all levels, cap."""
    b = np.concatenate(boxes) if boxes else np.zeros((0, 4))
    s = np.concatenate(scores) if scores else np.zeros(0)
    keep = s >= score_threshold
    b, s = b[keep], s[keep]
    if len(s) > pre_nms_top_k:
        top = np.argsort(-s, kind="stable")[:pre_nms_top_k]
        b, s = b[top], s[top]
    kept = nms(b, s, iou_threshold)[:max_detections]
    return b[kept], s[kept]


def _check_scan_options(
    score_threshold: float, iou_threshold: float, max_detections: int, pre_nms_top_k: int
) -> tuple[float, float, int, int]:
    if isinstance(score_threshold, bool) or not isinstance(
        score_threshold, (int, float, np.number)
    ):
        raise TypeError(f"score_threshold must be a number, got {type(score_threshold).__name__}")
    if not np.isfinite(score_threshold):
        raise ValueError(f"score_threshold must be finite, got {score_threshold}")
    return (
        float(score_threshold),
        _check_iou(iou_threshold, name="iou_threshold"),
        check_int(max_detections, name="max_detections", minimum=1),
        check_int(pre_nms_top_k, name="pre_nms_top_k", minimum=1),
    )


def detect_windows(
    image: Any,
    scorer: Scorer,
    *,
    window: int | tuple[int, int],
    stride: int | tuple[int, int] = 8,
    scale: float = 1.25,
    score_threshold: float = 0.0,
    iou_threshold: float = 0.3,
    max_detections: int = 100,
    batch_size: int = 256,
    pre_nms_top_k: int = 5000,
) -> tuple[np.ndarray, np.ndarray, ScanStats]:
    """Detect objects with any window classifier over an image pyramid.

    Parameters
    ----------
    image : array_like, (H, W) or (H, W, C)
    scorer : callable
        Maps a batch of windows, float32 ``(N, h, w)`` or ``(N, h, w, C)``, to ``N`` scores
        (array-like or a torch tensor; higher = more object-like). A torch model fits in a
        few lines: ``lambda x: model(torch.from_numpy(x)[:, None]).squeeze(1).detach()``.
    window : int or (int, int)
        Window ``(height, width)`` in pixels.
    stride : int or (int, int), optional
        Step between windows at each level.
    scale : float, optional
        Pyramid ratio (:func:`pyramid`).
    score_threshold : float, optional
        Windows scoring below it are dropped.
    iou_threshold : float, optional
        NMS across all levels: a box overlapping a better one by more than this goes.
    max_detections : int, optional
    batch_size : int, optional
        About this many windows are copied and scored at a time (whole rows of windows).
    pre_nms_top_k : int, optional
        At most this many best windows enter NMS (bounds its cost on low thresholds).

    Returns
    -------
    boxes : ndarray of float64, shape (K, 4)
        ``(x0, y0, x1, y1)`` in image coordinates, by decreasing score.
    scores : ndarray of float64, shape (K,)
    stats : ScanStats
        Windows scored, seconds, levels; ``stats.windows_per_second``.

    References
    ----------
    .. [1] Dalal, N. and Triggs, B. "Histograms of Oriented Gradients for Human Detection",
       CVPR 2005, :doi:`10.1109/CVPR.2005.177`

    Examples
    --------
    >>> img = np.zeros((32, 32)); img[8:16, 16:24] = 1
    >>> boxes, scores, _ = detect_windows(img, lambda w: w.mean(axis=(1, 2)), window=8,
    ...                                   stride=4, scale=2, score_threshold=0.9)
    >>> boxes
    array([[16.,  8., 24., 16.]])
    """
    arr = _check_2d_image(image)
    if not callable(scorer):
        raise TypeError(f"scorer must be callable, got {type(scorer).__name__}")
    wh, ww = _pair_of_ints(window, name="window")
    stride = _pair_of_ints(stride, name="stride")
    batch_size = check_int(batch_size, name="batch_size", minimum=1)
    opts = _check_scan_options(score_threshold, iou_threshold, max_detections, pre_nms_top_k)
    t0 = time.perf_counter()
    levels = pyramid(arr.astype(np.float32, copy=False), scale=scale, min_size=(wh, ww))
    h, w = arr.shape[:2]
    all_boxes, all_scores, n_windows = [], [], 0
    for level in levels:
        view = window_view(level, (wh, ww), stride=stride)  # (ny, nx, h, w[, C])
        ny, nx = view.shape[:2]
        rows = max(1, batch_size // max(nx, 1))
        parts = []
        for r0 in range(0, ny, rows):
            # a writable copy of whole rows of windows (torch refuses read-only arrays)
            batch = np.array(view[r0 : r0 + rows]).reshape((-1,) + view.shape[2:])
            out = scorer(batch)
            out = out.detach().cpu().numpy() if hasattr(out, "detach") else np.asarray(out)
            out = np.asarray(out, np.float64).reshape(-1)
            if out.shape[0] != batch.shape[0]:
                raise ValueError(
                    f"scorer must return one score per window ({batch.shape[0]}), "
                    f"got shape {out.shape}"
                )
            parts.append(out)
        if not parts:
            continue
        boxes = window_boxes(level.shape, (wh, ww), stride=stride)
        boxes *= np.array([w / level.shape[1], h / level.shape[0]] * 2)
        all_boxes.append(boxes)
        all_scores.append(np.concatenate(parts))
        n_windows += ny * nx
    seconds = time.perf_counter() - t0
    boxes, scores = _select(
        all_boxes,
        all_scores,
        score_threshold=opts[0],
        iou_threshold=opts[1],
        max_detections=opts[2],
        pre_nms_top_k=opts[3],
    )
    return boxes, scores, ScanStats(n_windows, seconds, len(levels))


# --------------------------------------------------------------------------- HOG + SVM


@dataclass
class _Level:
    """Dense HOG of one pyramid level: blocks (NBy, NBx, F), window grid, box factors."""

    blocks: np.ndarray
    shape: tuple[int, int]
    ny: int
    nx: int
    factor: tuple[float, float]  # (x, y) level -> image


class HogSvmDetector:
    """Sliding-window object detector: HOG features and a linear SVM (Dalal and Triggs).

    Parameters
    ----------
    window : (int, int) or None, optional
        Detection window ``(height, width)``, multiples of ``cell``. None: set by
        :meth:`fit` from the training boxes' median aspect ratio, with about as many
        cells as a 64 x 64 window.
    cell : int, optional
        HOG cell size in pixels (8 in [DT]_); also the scanning stride.
    block : int, optional
        Cells per block side (2).
    orientations : int, optional
        Unsigned orientation bins over 0-180 degrees (9).
    C : float, optional
        SVM regularisation (``sklearn.svm.LinearSVC``; 0.01 in [DT]_).
    scale : float, optional
        Pyramid ratio between levels (Dalal and Triggs used 1.05; 1.25 is 4x fewer levels).
    max_side : int or None, optional
        Images are shrunk so their longer side is at most this before training and scanning
        (boxes come back in the input's pixels); None keeps every image's size.
    classes : sequence of str, optional
        The one class's name, for the boxes' ``class_names``.

    Attributes
    ----------
    window_ : (int, int)
        The window used after :meth:`fit`.
    coef_ : ndarray, shape (bh, bw, block * block * orientations)
        SVM weights per window block; ``intercept_`` the bias.
    scan_stats_ : ScanStats or None
        Cost of the last :meth:`detect` (``scan_stats_.windows_per_second``).
    training_stats_ : dict
        Positives, negatives per round, seconds.

    Notes
    -----
    Pre-processing is the detector's own, the same in :meth:`fit` and :meth:`detect`: colour
    images become grey by :func:`segloc.color.to_grey`, integer images are scaled to [0, 1],
    and images are shrunk to ``max_side``. HOG is scikit-image's ``hog`` (L2-Hys block
    normalisation, no gamma correction), computed once per pyramid level of the grey image
    reflected by one cell at the border; window
    ``(i, j)`` of a level is its block slice ``[i + 1 : i + 1 + bh, j + 1 : j + 1 + bw]``
    (``bh = window_h / cell - block + 1``), which equals the HOG of the window cut with a
    one-cell margin. The SVM score of every window is then ``sum over (a, c) of
    blocks[i + 1 + a, j + 1 + c] . coef_[a, c]``: one tensor product per level.

    References
    ----------
    .. [DT] Dalal, N. and Triggs, B. "Histograms of Oriented Gradients for Human
       Detection", CVPR 2005, :doi:`10.1109/CVPR.2005.177`
    .. [FZ] Felzenszwalb, P. F. et al. "Object Detection with Discriminatively Trained
       Part-Based Models", IEEE TPAMI 32(9) 1627-1645, 2010, :doi:`10.1109/TPAMI.2009.167`

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> imgs = [rng.random((96, 96)) * 0.3 for _ in range(4)]
    >>> for im in imgs: im[20:52, 30:62] += 0.7
    >>> det = HogSvmDetector((32, 32), C=1.0).fit(imgs, [[[30, 20, 62, 52]]] * 4, seed=0)
    >>> det.detect(imgs[0], max_detections=1).boxes.round(1)  # level-1 window nearest it
    array([[29.9, 19.9, 69.8, 59.8]])
    """

    def __init__(
        self,
        window: tuple[int, int] | None = (64, 64),
        *,
        cell: int = 8,
        block: int = 2,
        orientations: int = 9,
        C: float = 0.01,
        scale: float = 1.25,
        max_side: int | None = None,
        classes: Sequence[str] = ("object",),
    ) -> None:
        self.cell = check_int(cell, name="cell", minimum=2)
        self.block = check_int(block, name="block", minimum=1)
        self.orientations = check_int(orientations, name="orientations", minimum=1)
        self.C = float(check_positive(C, name="C"))
        self.scale = _check_scale(scale)
        self.window = None if window is None else self._check_window(window)
        self.max_side = (
            None if max_side is None else check_int(max_side, name="max_side", minimum=16)
        )
        self.classes = tuple(str(c) for c in classes)
        if len(self.classes) != 1:
            raise ValueError(f"classes must name the one class, got {self.classes}")
        self.window_: tuple[int, int] | None = self.window
        self.coef_: np.ndarray | None = None
        self.intercept_: float = 0.0
        self.scan_stats_: ScanStats | None = None
        self.training_stats_: dict = {}

    def __repr__(self) -> str:
        return (
            f"HogSvmDetector(window={self.window}, cell={self.cell}, block={self.block}, "
            f"orientations={self.orientations}, C={self.C}, scale={self.scale}, "
            f"max_side={self.max_side})"
        )

    # ------------------------------------------------------------------ geometry

    def _check_window(self, window: Any) -> tuple[int, int]:
        wh, ww = _pair_of_ints(window, name="window")
        least = self.block * self.cell
        if wh % self.cell or ww % self.cell or wh < least or ww < least:
            raise ValueError(
                f"window must be multiples of cell={self.cell} and at least block * cell = "
                f"{least} pixels, got {(wh, ww)}"
            )
        return wh, ww

    def _window_from_boxes(self, boxes: np.ndarray) -> tuple[int, int]:
        aspect = float(np.median((boxes[:, 2] - boxes[:, 0]) / (boxes[:, 3] - boxes[:, 1])))
        cells = (64 / self.cell) ** 2  # as many cells as a 64 x 64 window
        ch = max(self.block, round(np.sqrt(cells / aspect)))
        cw = max(self.block, round(np.sqrt(cells * aspect)))
        return ch * self.cell, cw * self.cell

    @property
    def _window_blocks(self) -> tuple[int, int]:
        wh, ww = self.window_
        return wh // self.cell - self.block + 1, ww // self.cell - self.block + 1

    @property
    def n_features(self) -> int:
        bh, bw = self._window_blocks
        return bh * bw * self.block * self.block * self.orientations

    # ------------------------------------------------------------------ features

    def _grey(self, image: Any, name: str = "image") -> tuple[np.ndarray, float]:
        """The working image: grey, in [0, 1] for integer input, shrunk to ``max_side``;
        and the factor applied (working pixels per input pixel)."""
        arr = _check_2d_image(image, name=name)
        if arr.ndim == 3:
            arr = arr[..., 0] if arr.shape[2] == 1 else to_grey(arr)
        if np.issubdtype(arr.dtype, np.integer):
            arr = arr / float(np.iinfo(arr.dtype).max)
        arr = arr.astype(np.float64, copy=False)
        h, w = arr.shape
        if self.max_side is None or max(h, w) <= self.max_side:
            return arr, 1.0
        f = self.max_side / max(h, w)
        small = resize(arr, (round(h * f), round(w * f)), anti_aliasing=True, preserve_range=True)
        return small, f

    def _blocks(self, grey: np.ndarray) -> np.ndarray:
        """HOG blocks (NBy, NBx, F) of a grey image reflected by one cell on every side."""
        padded = np.pad(grey, self.cell, mode="reflect")
        b = hog(
            padded,
            orientations=self.orientations,
            pixels_per_cell=(self.cell, self.cell),
            cells_per_block=(self.block, self.block),
            block_norm="L2-Hys",
            feature_vector=False,
        )  # (NBy, NBx, block, block, orientations)
        return b.reshape(b.shape[0], b.shape[1], -1)

    def _levels(self, grey: np.ndarray) -> list[_Level]:
        wh, ww = self.window_
        h, w = grey.shape
        out = []
        for level in pyramid(grey, scale=self.scale, min_size=(wh, ww)):
            lh, lw = level.shape
            ny = _grid(lh // self.cell, wh // self.cell, 1)
            nx = _grid(lw // self.cell, ww // self.cell, 1)
            if ny and nx:
                out.append(_Level(self._blocks(level), (lh, lw), ny, nx, (w / lw, h / lh)))
        return out

    def _level_boxes(self, lv: _Level) -> np.ndarray:
        """(ny * nx, 4) window boxes of a level in image coordinates, row-major."""
        # windows step by one cell and lie wholly in the level: the grid of window_boxes
        boxes = window_boxes(lv.shape, self.window_, stride=self.cell)
        return boxes * np.array(lv.factor * 2)

    def _level_features(self, lv: _Level, flat_index: np.ndarray) -> np.ndarray:
        """(K, n_features) features of the windows with row-major indices ``flat_index``."""
        bh, bw = self._window_blocks
        i, j = np.divmod(np.asarray(flat_index), lv.nx)
        view = sliding_window_view(lv.blocks, (bh, bw), axis=(0, 1))  # (.., .., F, bh, bw)
        feats = view[i + 1, j + 1]  # (K, F, bh, bw)
        return np.moveaxis(feats, 1, -1).reshape(len(i), -1)  # (K, bh * bw * F)

    def _level_scores(self, lv: _Level) -> np.ndarray:
        """(ny * nx,) SVM scores of every window of a level, row-major."""
        bh, bw = self._window_blocks
        resp = np.tensordot(lv.blocks, self.coef_, axes=([2], [2]))  # (NBy, NBx, bh, bw)
        scores = np.full((lv.ny, lv.nx), self.intercept_)
        for a in range(bh):
            for c in range(bw):
                scores += resp[1 + a : 1 + a + lv.ny, 1 + c : 1 + c + lv.nx, a, c]
        return scores.ravel()

    def _crop_features(self, grey: np.ndarray, box: np.ndarray, flip: bool) -> np.ndarray:
        """Features of a box resized to the window, cut with a one-cell margin."""
        wh, ww = self.window_
        x0, y0, x1, y1 = box
        mx = self.cell * (x1 - x0) / ww
        my = self.cell * (y1 - y0) / wh
        # integer crop with the margin; reflect where it leaves the image
        r0, r1 = int(np.floor(y0 - my)), int(np.ceil(y1 + my))
        c0, c1 = int(np.floor(x0 - mx)), int(np.ceil(x1 + mx))
        h, w = grey.shape
        pad = max(0, -r0, -c0, r1 - h, c1 - w)
        src = np.pad(grey, pad, mode="reflect") if pad else grey
        crop = src[r0 + pad : r1 + pad, c0 + pad : c1 + pad]
        patch = resize(crop, (wh + 2 * self.cell, ww + 2 * self.cell), order=1, anti_aliasing=True)
        if flip:
            patch = patch[:, ::-1]
        bh, bw = self._window_blocks
        return self._blocks_of_patch(patch)[:bh, :bw].reshape(-1)

    def _blocks_of_patch(self, patch: np.ndarray) -> np.ndarray:
        """HOG blocks of a patch that already holds its one-cell margin, window blocks first."""
        b = hog(
            patch,
            orientations=self.orientations,
            pixels_per_cell=(self.cell, self.cell),
            cells_per_block=(self.block, self.block),
            block_norm="L2-Hys",
            feature_vector=False,
        )
        return b[1:, 1:].reshape(b.shape[0] - 1, b.shape[1] - 1, -1)

    # ------------------------------------------------------------------ training

    def fit(
        self,
        images: Sequence[Any],
        boxes_per_image: Sequence[Any],
        *,
        negatives_per_image: int = 20,
        hard_negative_rounds: int = 1,
        hard_negatives_per_image: int | None = None,
        flip: bool = True,
        max_iter: int = 5000,
        seed: int = 0,
    ) -> HogSvmDetector:
        """Train from box annotations: positives, random negatives, hard-negative rounds.

        Parameters
        ----------
        images : sequence of array_like
            Training images, (H, W) or (H, W, C) (colour is turned grey).
        boxes_per_image : sequence of array_like, shape (N_i, 4)
            Object boxes ``(x0, y0, x1, y1)`` per image (may be empty: a negative image).
        negatives_per_image : int, optional
            Random windows (any pyramid level) whose IoU with every object box is below 0.3.
        hard_negative_rounds : int, optional
            Rounds of: scan the training images, add their highest-scoring windows with
            IoU < 0.3 that violate the margin (score > -1) [FZ]_, retrain [DT]_.
        hard_negatives_per_image : int, optional
            Most hard negatives added per image and round; default ``negatives_per_image``.
        flip : bool, optional
            Also train on left-right mirrored positives (as [DT]_).
        max_iter : int, optional
            ``LinearSVC`` iteration limit.
        seed : int, optional
            Seeds the negative sampling (the only randomness).

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
        negatives_per_image = check_int(negatives_per_image, name="negatives_per_image", minimum=1)
        rounds = check_int(hard_negative_rounds, name="hard_negative_rounds", minimum=0)
        hard_n = (
            negatives_per_image
            if hard_negatives_per_image is None
            else check_int(hard_negatives_per_image, name="hard_negatives_per_image", minimum=1)
        )
        max_iter = check_int(max_iter, name="max_iter", minimum=1)
        t0 = time.perf_counter()
        prepared = [self._grey(im, name=f"images[{k}]") for k, im in enumerate(images)]
        greys = [g for g, _ in prepared]
        truths = []
        for k, b in enumerate(boxes_per_image):
            b = check_boxes(b, name=f"boxes_per_image[{k}]") * prepared[k][1]
            if b.shape[1] != 4:
                raise ValueError(f"boxes_per_image[{k}] must be 2D boxes (N, 4), got {b.shape}")
            if len(b) and np.any((b[:, 2] - b[:, 0] <= 0) | (b[:, 3] - b[:, 1] <= 0)):
                raise ValueError(f"boxes_per_image[{k}] must have boxes of positive size")
            truths.append(b)
        all_boxes = np.concatenate(truths)
        if not len(all_boxes):
            raise ValueError("boxes_per_image must hold at least one object box")
        self.window_ = (
            self.window if self.window is not None else self._window_from_boxes(all_boxes)
        )
        rng = np.random.default_rng(seed)

        pos = [
            self._crop_features(g, box, f)
            for g, b in zip(greys, truths, strict=True)
            for box in b
            for f in ((False, True) if flip else (False,))
        ]
        neg = []
        for g, b in zip(greys, truths, strict=True):
            cands = [
                (lv, np.flatnonzero(self._free(lv, b))) for lv in self._levels(g)
            ]  # windows of each level clear of every object
            sizes = np.array([len(c) for _, c in cands])
            if sizes.sum() == 0:
                continue
            pick = rng.choice(
                sizes.sum(), size=min(negatives_per_image, sizes.sum()), replace=False
            )
            starts = np.concatenate([[0], np.cumsum(sizes)])
            for li, (lv, idx) in enumerate(cands):
                mine = pick[(pick >= starts[li]) & (pick < starts[li + 1])] - starts[li]
                if mine.size:
                    neg.append(self._level_features(lv, idx[np.sort(mine)]))
        if not neg:
            raise ValueError("images must leave room for negative windows (IoU < 0.3 with boxes)")
        pos = np.asarray(pos)
        neg = np.concatenate(neg)
        n_neg = [len(neg)]
        self._train(pos, neg, max_iter, seed)
        for _ in range(rounds):
            hard = []
            for g, b in zip(greys, truths, strict=True):
                feats, scores = [], []
                for lv in self._levels(g):
                    s = self._level_scores(lv)
                    idx = np.flatnonzero(self._free(lv, b) & (s > -1.0))
                    if idx.size:
                        feats.append((lv, idx))
                        scores.append(s[idx])
                if not feats:
                    continue
                s_all = np.concatenate(scores)
                order = np.argsort(-s_all, kind="stable")[:hard_n]
                starts = np.concatenate([[0], np.cumsum([len(s) for s in scores])])
                for li, (lv, idx) in enumerate(feats):
                    mine = order[(order >= starts[li]) & (order < starts[li + 1])] - starts[li]
                    if mine.size:
                        hard.append(self._level_features(lv, idx[np.sort(mine)]))
            n_neg.append(sum(len(h) for h in hard))
            if not hard:
                break
            neg = np.concatenate([neg] + hard)
            self._train(pos, neg, max_iter, seed)
        self.training_stats_ = {
            "positives": len(pos),
            "negatives_per_round": n_neg,
            "seconds": time.perf_counter() - t0,
        }
        return self

    def _free(self, lv: _Level, truth: np.ndarray) -> np.ndarray:
        """Bool (ny * nx,): windows whose IoU with every truth box is below 0.3."""
        boxes = self._level_boxes(lv)
        if not len(truth):
            return np.ones(len(boxes), bool)
        return box_iou(boxes, truth).max(axis=1) < 0.3

    def _train(self, pos: np.ndarray, neg: np.ndarray, max_iter: int, seed: int) -> None:
        x = np.concatenate([pos, neg])
        y = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
        svm = LinearSVC(C=self.C, max_iter=max_iter, dual="auto", random_state=seed)
        svm.fit(x, y)
        bh, bw = self._window_blocks
        self.coef_ = svm.coef_.reshape(bh, bw, -1)
        self.intercept_ = float(svm.intercept_[0])

    # ------------------------------------------------------------------ detection

    def decision_function(self, windows: Any) -> np.ndarray:
        """SVM scores of windows already cut to ``window_`` with a one-cell margin.

        Parameters
        ----------
        windows : array_like, shape (N, h + 2 * cell, w + 2 * cell)
            Grey patches: each window with one cell of its surroundings on every side.

        Returns
        -------
        ndarray of float64, shape (N,)
        """
        self._check_fitted()
        wh, ww = self.window_
        arr = check_image(windows, name="windows", ndim=(3,))
        want = (wh + 2 * self.cell, ww + 2 * self.cell)
        if arr.shape[1:] != want:
            raise ValueError(f"windows must have shape (N, {want[0]}, {want[1]}), got {arr.shape}")
        bh, bw = self._window_blocks
        feats = np.stack(
            [self._blocks_of_patch(p.astype(np.float64))[:bh, :bw].reshape(-1) for p in arr]
        )
        return feats @ self.coef_.reshape(-1) + self.intercept_

    def _check_fitted(self) -> None:
        if self.coef_ is None:
            raise ValueError("HogSvmDetector must be fitted first: call fit(images, boxes)")

    def detect(
        self,
        image: Any,
        *,
        score_threshold: float | None = 0.0,
        iou_threshold: float = 0.3,
        max_detections: int = 100,
        scorer: Scorer | None = None,
        batch_size: int = 256,
        pre_nms_top_k: int = 5000,
    ) -> Detections:
        """Detect objects in one image.

        Parameters
        ----------
        image : array_like, (H, W) or (H, W, C)
            Any dtype; prepared as in :meth:`fit` (grey, [0, 1], ``max_side``).
        score_threshold : float or None, optional
            SVM margin (0, also for None, = the SVM's decision boundary) or the
            ``scorer``'s score.
        iou_threshold : float, optional
            NMS across all pyramid levels.
        max_detections : int, optional
        scorer : callable, optional
            Replace HOG + SVM by any window classifier: float32 windows
            ``(N, h, w[, C])`` of the image (not grey-converted) -> ``N`` scores, in batches
            of about ``batch_size`` (see :func:`detect_windows`); the stride is ``cell``.
            Needs ``window_`` (given to the constructor or set by :meth:`fit`).
        batch_size, pre_nms_top_k : int, optional
            As in :func:`detect_windows`.

        Returns
        -------
        Detections
            Boxes ``(x0, y0, x1, y1)`` in the input's pixels by decreasing score.

        The scan's cost is left in ``scan_stats_`` (windows, seconds, windows_per_second).
        """
        if score_threshold is None:
            score_threshold = 0.0
        if scorer is not None:
            if self.window_ is None:
                raise ValueError("window must be set (constructor or fit) to use a scorer")
            boxes, scores, self.scan_stats_ = detect_windows(
                image,
                scorer,
                window=self.window_,
                stride=self.cell,
                scale=self.scale,
                score_threshold=score_threshold,
                iou_threshold=iou_threshold,
                max_detections=max_detections,
                batch_size=batch_size,
                pre_nms_top_k=pre_nms_top_k,
            )
            return Detections(boxes, scores, class_names=self.classes)
        self._check_fitted()
        opts = _check_scan_options(score_threshold, iou_threshold, max_detections, pre_nms_top_k)
        t0 = time.perf_counter()
        grey, factor = self._grey(image)
        levels = self._levels(grey)
        boxes = [self._level_boxes(lv) for lv in levels]
        scores = [self._level_scores(lv) for lv in levels]
        seconds = time.perf_counter() - t0
        self.scan_stats_ = ScanStats(sum(len(s) for s in scores), seconds, len(levels))
        boxes, scores = _select(
            boxes,
            scores,
            score_threshold=opts[0],
            iou_threshold=opts[1],
            max_detections=opts[2],
            pre_nms_top_k=opts[3],
        )
        return Detections(boxes, scores, class_names=self.classes).scaled(factor)

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | os.PathLike, *, metadata: dict | None = None) -> Path:
        """Write the fitted detector to an ``.npz`` file (no pickle), atomically.

        ``metadata`` (JSON-serialisable, e.g. the training split) is stored alongside and
        comes back as ``metadata_`` from :meth:`load`.
        """
        self._check_fitted()
        meta = {
            "params": {
                "window": list(self.window) if self.window is not None else None,
                "cell": self.cell,
                "block": self.block,
                "orientations": self.orientations,
                "C": self.C,
                "scale": self.scale,
                "max_side": self.max_side,
                "classes": list(self.classes),
            },
            "window_": list(self.window_),
            "intercept": self.intercept_,
            "metadata": dict(metadata if metadata is not None else getattr(self, "metadata_", {})),
        }
        return write_detector_file(path, "HogSvmDetector", meta, {"coef": self.coef_})

    @classmethod
    def load(cls, path: str | os.PathLike) -> HogSvmDetector:
        """Read a detector written by :meth:`save` (``allow_pickle=False``).

        Raises
        ------
        CorruptFile
            (a ``ValueError``) The file is not a saved HogSvmDetector: another file, or one
            cut short (message starts with the path).
        OSError
            The system's error: a missing file, permission, I/O.
        """
        meta, arrays = read_detector_file(path, "HogSvmDetector")
        try:
            coef = arrays["coef"]
            params = dict(meta["params"])
            window = params.pop("window")
            old = dict(meta.get("metadata", {}))
            # files written before the detector owned its size and class name kept them here
            params.setdefault("max_side", old.get("max_side"))
            params.setdefault("classes", old.get("classes") or ["object"])
            det = cls(tuple(window) if window is not None else None, **params)
            det.window_ = det._check_window(meta["window_"])
            det.coef_ = coef
            det.intercept_ = float(meta["intercept"])
            det.metadata_ = old
        except (KeyError, TypeError, ValueError) as exc:
            reason = f"not a saved HogSvmDetector ({type(exc).__name__}: {exc})"
            raise CorruptFile(path, reason) from None
        bh, bw = det._window_blocks
        want = (bh, bw, det.block * det.block * det.orientations)
        if coef.shape != want:
            raise CorruptFile(path, f"coef must have shape {want}, got {coef.shape}")
        return det
