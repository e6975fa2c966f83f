"""Segmentation metrics: overlap scores from per-class counts, and surface distances.

Overlap scores (Dice, IoU, precision, recall, specificity, accuracy) are computed in
two steps, as in segmentation_models.pytorch's ``metrics.functional``: first the per-class
counts ``tp, fp, fn, tn`` of a prediction against the truth (:func:`confusion_counts`),
then the scores from the counts (``*_from_counts``). Counts add up, so scores over a whole
data set ("micro" averaging) are ``dice_from_counts(sum(counts_per_case))``.

Surface distances (Hausdorff, HD95, ASSD) follow MONAI's definitions exactly
(``monai.metrics.compute_hausdorff_distance`` and ``compute_average_surface_distance``
with ``distance_metric="euclidean"``); the tests check them against MONAI 1.6 and
reproduce MONAI's own published test values.

Empty classes
-------------
A class absent from both the prediction and the truth has Dice and IoU ``0 / 0``.
What the peers do with it:

- MONAI ``DiceMetric`` / ``compute_dice``: with ``ignore_empty=True`` (the default) the
  score is NaN whenever the *truth* is empty, even if the prediction is not (so false
  positives on an empty image are not penalised); ``reduction="mean"`` then skips the NaNs.
  With ``ignore_empty=False``: 1.0 if both are empty, 0.0 if only the truth is.
  ``MeanIoU`` has the same ``ignore_empty`` switch.
- nnU-Net v2 (``nnunetv2/evaluation/evaluate_predictions.py``, ``compute_metrics``): if
  ``tp + fp + fn == 0`` Dice and IoU are NaN, and the per-class means over cases use
  ``np.nanmean``, so empty-empty cases are left out; an empty truth with a non-empty
  prediction scores 0.
- segmentation_models.pytorch (``smp.metrics``): ``zero_division`` (default 1.0) is the value
  of every ``0 / 0`` score; ``"warn"`` acts as 0 and warns.

segloc: ``empty="nan"`` (default, as nnU-Net) leaves a class absent from both out of every
mean (``np.nanmean``); ``"one"`` scores it 1.0 (as smp's default and MONAI's
``ignore_empty=False``); ``"zero"`` scores it 0.0. An empty truth with false positives
always scores Dice = IoU = 0, unlike MONAI's ``ignore_empty=True``. More generally ``empty``
is the value of any ``0 / 0`` score, like smp's ``zero_division``: precision when nothing is
predicted, recall when the truth is empty, specificity when every pixel is the class,
accuracy when every pixel is ignored.

Surface distances with an empty mask, as MONAI: both masks empty gives NaN (nothing to
measure); exactly one empty gives ``inf``, directed or not. One deliberate difference:
MONAI's *percentile* Hausdorff (e.g. HD95) with exactly one empty mask comes out NaN,
because ``torch.quantile`` interpolates between infinite distances (inf - inf); segloc
returns ``inf`` for every percentile, as MONAI's own tests state for the maximum.

Ignored pixels
--------------
``ignore_index`` is a *truth* value (CamVid's void, 255 in VOC): pixels where the truth has
it are left out of every count, whatever was predicted there (MONAI, nnU-Net and
torchmetrics do the same). A prediction equal to ``ignore_index`` at a scored pixel is an
ordinary predicted label: a false positive for class ``ignore_index`` when that is one of
the ``num_classes`` classes, otherwise a prediction of no class (a false negative for the
true class and a false positive for none).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import KDTree

from segloc._validation import (
    check_choice,
    check_connectivity,
    check_image,
    check_same_shape,
    check_spacing,
)

__all__ = [
    "Counts",
    "accuracy_from_counts",
    "assd",
    "confusion_counts",
    "dice",
    "dice_from_counts",
    "hausdorff",
    "hd95",
    "iou",
    "iou_from_counts",
    "overlap_scores",
    "precision_from_counts",
    "recall_from_counts",
    "specificity_from_counts",
    "surface_distances",
    "surface_scores",
]

EMPTY_POLICIES = ("nan", "one", "zero")
_EMPTY_VALUE = {"nan": np.nan, "one": 1.0, "zero": 0.0}

# Overlap arrays accept any dimensionality: counting pixels does not depend on geometry,
# and stacks of images (N, H, W) are common. Surfaces need 2D or 3D.
_ANY_NDIM = tuple(range(1, 33))


# --------------------------------------------------------------------------------------
# Counts
# --------------------------------------------------------------------------------------


@dataclass
class Counts:
    """Per-class confusion counts, each an ``int64`` array of shape ``(C,)``.

    For class ``c``: ``tp`` pixels predicted ``c`` whose truth is ``c``; ``fp`` predicted
    ``c``, truth another class; ``fn`` truth ``c``, predicted something else; ``tn`` the rest
    of the scored pixels. ``tp + fp + fn + tn`` is the same for every class: the number of
    scored (not ignored) pixels. Counts add: ``a + b`` pools two cases.
    """

    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    tn: np.ndarray

    @property
    def num_classes(self) -> int:
        return int(np.shape(self.tp)[0])

    @property
    def total(self) -> int:
        """Number of scored pixels (0 when every pixel was ignored)."""
        if self.num_classes == 0:
            return 0
        return int(self.tp[0] + self.fp[0] + self.fn[0] + self.tn[0])

    def __add__(self, other: Counts) -> Counts:
        if not isinstance(other, Counts):
            return NotImplemented
        if other.num_classes != self.num_classes:
            raise ValueError(
                f"counts must have the same number of classes, got {self.num_classes} "
                f"and {other.num_classes}"
            )
        return Counts(
            self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn
        )


def _check_labels(x: Any, *, name: str, ndim: tuple[int, ...] = _ANY_NDIM) -> np.ndarray:
    """Return a bool mask or an integer label map; floats are refused rather than rounded."""
    if np.ndim(x) == 0 and ndim == _ANY_NDIM:
        raise ValueError(f"{name} must be an array of at least 1 dimension, got shape ()")
    arr = check_image(x, name=name, ndim=ndim)
    if not (arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.integer)):
        raise TypeError(
            f"{name} must be a bool mask or an integer label map, got dtype {arr.dtype}"
        )
    return arr


def _infer_num_classes(pred: np.ndarray, truth: np.ndarray, ignore_index: int | None) -> int:
    # At least 2 so that an all-background label map is scored like a binary mask whose
    # foreground is absent, not as a problem with no foreground class at all.
    top = 1
    for arr in (pred, truth):
        if arr.dtype == np.bool_:
            continue
        vals = arr[arr != ignore_index] if ignore_index is not None else arr
        if vals.size:
            top = max(top, int(vals.max()))
    return top + 1


def _check_range(arr: np.ndarray, *, name: str, num_classes: int, ignore_index: int | None) -> None:
    if arr.dtype == np.bool_ and num_classes >= 2:
        return
    bad = (arr < 0) | (arr >= num_classes)
    if ignore_index is not None:
        bad &= arr != ignore_index
    if bad.any():
        value = arr[bad].flat[0]
        raise ValueError(
            f"{name} labels must be in [0, {num_classes - 1}] (num_classes={num_classes})"
            f"{'' if ignore_index is None else f' or equal ignore_index={ignore_index}'}, "
            f"got {value}"
        )


def _num_classes(pred: np.ndarray, truth: np.ndarray, num_classes: Any, ignore_index: Any) -> int:
    """Check ``num_classes`` and ``ignore_index``, infer the former, check label ranges."""
    if ignore_index is not None and (
        isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer))
    ):
        raise TypeError(f"ignore_index must be an int or None, got {type(ignore_index).__name__}")
    if num_classes is None:
        num_classes = _infer_num_classes(pred, truth, ignore_index)
    elif isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise TypeError(f"num_classes must be an int or None, got {type(num_classes).__name__}")
    elif num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    C = int(num_classes)
    _check_range(pred, name="pred", num_classes=C, ignore_index=ignore_index)
    _check_range(truth, name="truth", num_classes=C, ignore_index=ignore_index)
    return C


def confusion_counts(
    pred: Any,
    truth: Any,
    *,
    num_classes: int | None = None,
    ignore_index: int | None = None,
) -> Counts:
    """Per-class true/false positive/negative pixel counts of ``pred`` against ``truth``.

    Parameters
    ----------
    pred, truth : ndarray
        Bool masks (two classes: 0 = background, 1 = foreground) or integer label maps,
        same shape, any dimensionality.
    num_classes : int, optional
        Number of classes ``C`` including background. Default: the largest label in either
        map (``ignore_index`` excluded) plus one, and at least 2.
    ignore_index : int, optional
        Truth value whose pixels are left out of every count (see the module docstring for
        a prediction equal to it).

    Returns
    -------
    Counts
        ``tp, fp, fn, tn`` as ``int64`` arrays of shape ``(C,)``.

    Raises
    ------
    TypeError
        If either map is not bool or integer.
    ValueError
        On different shapes, or a label outside ``[0, C)`` that is not ``ignore_index``.

    Notes
    -----
    One pass: ``np.bincount`` over ``pred * C + truth`` gives the whole confusion matrix
    (rows = predicted class, columns = true class); a prediction of no class (``pred ==
    ignore_index`` outside ``[0, C)``) is an extra row.

    References
    ----------
    .. [1] Taha, A. A. & Hanbury, A. "Metrics for evaluating 3D medical image segmentation:
       analysis, selection, and tool." BMC Medical Imaging 15, 29 (2015).
       :doi:`10.1186/s12880-015-0068-x`

    Examples
    --------
    >>> c = confusion_counts(np.array([[1, 0], [0, 1]], bool), np.array([[1, 0], [1, 1]], bool))
    >>> c.tp, c.fp, c.fn, c.tn
    (array([1, 2]), array([1, 0]), array([0, 1]), array([2, 1]))
    """
    pred = _check_labels(pred, name="pred")
    truth = _check_labels(truth, name="truth")
    check_same_shape(pred, truth, names=("pred", "truth"))
    C = _num_classes(pred, truth, num_classes, ignore_index)

    p, t = pred.ravel(), truth.ravel()
    if ignore_index is not None:
        keep = t != ignore_index
        p, t = p[keep], t[keep]
    n = t.size
    idx = p.astype(np.intp)  # a copy: updated in place below to spare 3D-sized temporaries
    if ignore_index is not None and not 0 <= ignore_index < C:
        idx[p == ignore_index] = C  # "no class" row
    idx *= C
    idx += t
    cm = np.bincount(idx, minlength=(C + 1) * C).reshape(C + 1, C)  # (pred, truth)
    tp = np.diagonal(cm).astype(np.int64)
    fp = cm[:C].sum(axis=1, dtype=np.int64) - tp
    fn = cm.sum(axis=0, dtype=np.int64) - tp
    tn = n - tp - fp - fn
    return Counts(tp=tp, fp=fp, fn=fn, tn=tn)


# --------------------------------------------------------------------------------------
# Scores from counts
# --------------------------------------------------------------------------------------


def _ratio(num: np.ndarray, den: np.ndarray, empty: str) -> np.ndarray:
    check_choice(empty, EMPTY_POLICIES, name="empty")
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, _EMPTY_VALUE[empty])
    np.divide(num, den, out=out, where=den > 0)
    return out


def dice_from_counts(c: Counts, *, empty: str = "nan") -> np.ndarray:
    """Dice coefficient per class, ``2 tp / (2 tp + fp + fn)``, shape ``(C,)``.

    ``empty`` ("nan", "one" or "zero") is the score of a class absent from both prediction
    and truth.

    References
    ----------
    .. [1] Dice, L. R. "Measures of the amount of ecologic association between species."
       Ecology 26(3), 297-302 (1945). :doi:`10.2307/1932409`

    Examples
    --------
    >>> dice_from_counts(Counts(np.array([2, 0]), np.array([0, 0]), np.array([1, 0]),
    ...                         np.array([1, 4])))
    array([0.8, nan])
    """
    return _ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn, empty)


def iou_from_counts(c: Counts, *, empty: str = "nan") -> np.ndarray:
    """Intersection over union (Jaccard index) per class, ``tp / (tp + fp + fn)``.

    References
    ----------
    .. [1] Jaccard, P. "The distribution of the flora in the alpine zone." New Phytologist
       11(2), 37-50 (1912). :doi:`10.1111/j.1469-8137.1912.tb05611.x`
    """
    return _ratio(c.tp, c.tp + c.fp + c.fn, empty)


def precision_from_counts(c: Counts, *, empty: str = "nan") -> np.ndarray:
    """Precision (positive predictive value) per class, ``tp / (tp + fp)``.

    ``empty`` is the score when nothing was predicted as the class.

    References
    ----------
    .. [1] Taha & Hanbury (2015), :doi:`10.1186/s12880-015-0068-x`
    """
    return _ratio(c.tp, c.tp + c.fp, empty)


def recall_from_counts(c: Counts, *, empty: str = "nan") -> np.ndarray:
    """Recall (sensitivity) per class, ``tp / (tp + fn)``; ``empty`` when the truth lacks it.

    References
    ----------
    .. [1] Taha & Hanbury (2015), :doi:`10.1186/s12880-015-0068-x`
    """
    return _ratio(c.tp, c.tp + c.fn, empty)


def specificity_from_counts(c: Counts, *, empty: str = "nan") -> np.ndarray:
    """Specificity per class, ``tn / (tn + fp)``; ``empty`` when every pixel is the class.

    References
    ----------
    .. [1] Taha & Hanbury (2015), :doi:`10.1186/s12880-015-0068-x`
    """
    return _ratio(c.tn, c.tn + c.fp, empty)


def accuracy_from_counts(c: Counts, *, empty: str = "nan") -> float:
    """Overall pixel accuracy, ``sum(tp) / scored pixels``; ``empty`` if none were scored.

    References
    ----------
    .. [1] Taha & Hanbury (2015), :doi:`10.1186/s12880-015-0068-x`
    """
    return float(_ratio(np.sum(c.tp), c.total, empty))


_OVERLAP = {
    "dice": dice_from_counts,
    "iou": iou_from_counts,
    "precision": precision_from_counts,
    "recall": recall_from_counts,
    "specificity": specificity_from_counts,
}


def overlap_scores(
    pred: Any,
    truth: Any,
    *,
    num_classes: int | None = None,
    ignore_index: int | None = None,
    empty: str = "nan",
    include_background: bool = False,
) -> dict[str, np.ndarray]:
    """Per-class Dice, IoU, precision, recall and specificity of a prediction.

    Parameters
    ----------
    pred, truth, num_classes, ignore_index
        As in :func:`confusion_counts`.
    empty : {"nan", "one", "zero"}
        Score of a ``0 / 0`` ratio, e.g. Dice of a class absent from both maps.
    include_background : bool
        Keep class 0. When False (default) the arrays have ``C - 1`` entries and entry
        ``i`` is class ``i + 1``; when True, entry ``c`` is class ``c``.

    Returns
    -------
    dict
        ``{"dice", "iou", "precision", "recall", "specificity"}`` -> float64 arrays.

    References
    ----------
    .. [1] Maier-Hein, L. et al. "Metrics reloaded: recommendations for image analysis
       validation." Nature Methods 21, 195-212 (2024). :doi:`10.1038/s41592-023-02151-z`

    Examples
    --------
    >>> scores = overlap_scores(np.array([0, 1, 1, 2, 2, 0]), np.array([0, 1, 1, 2, 2, 2]))
    >>> scores["dice"], scores["recall"]
    (array([1. , 0.8]), array([1.        , 0.66666667]))
    """
    check_choice(empty, EMPTY_POLICIES, name="empty")
    counts = confusion_counts(pred, truth, num_classes=num_classes, ignore_index=ignore_index)
    first = 0 if include_background else 1
    return {name: f(counts, empty=empty)[first:] for name, f in _OVERLAP.items()}


def _nanmean(values: np.ndarray) -> float:
    """Mean of the non-NaN values; NaN (without numpy's warning) when there are none."""
    values = np.asarray(values, dtype=np.float64)
    keep = ~np.isnan(values)
    return float(values[keep].mean()) if keep.any() else float("nan")


def dice(
    pred: Any,
    truth: Any,
    *,
    num_classes: int | None = None,
    ignore_index: int | None = None,
    empty: str = "nan",
    include_background: bool = False,
) -> float:
    """Dice coefficient averaged over classes (NaN classes left out).

    For bool masks this is the foreground Dice. Options as in :func:`overlap_scores`.

    References
    ----------
    .. [1] Dice (1945), :doi:`10.2307/1932409`

    Examples
    --------
    >>> dice(np.array([[1, 0], [0, 1]], bool), np.array([[1, 0], [1, 1]], bool))
    0.8
    """
    scores = overlap_scores(
        pred,
        truth,
        num_classes=num_classes,
        ignore_index=ignore_index,
        empty=empty,
        include_background=include_background,
    )
    return _nanmean(scores["dice"])


def iou(
    pred: Any,
    truth: Any,
    *,
    num_classes: int | None = None,
    ignore_index: int | None = None,
    empty: str = "nan",
    include_background: bool = False,
) -> float:
    """Intersection over union averaged over classes (NaN classes left out): mean IoU.

    For bool masks this is the foreground IoU. Options as in :func:`overlap_scores`.

    References
    ----------
    .. [1] Jaccard (1912), :doi:`10.1111/j.1469-8137.1912.tb05611.x`
    """
    scores = overlap_scores(
        pred,
        truth,
        num_classes=num_classes,
        ignore_index=ignore_index,
        empty=empty,
        include_background=include_background,
    )
    return _nanmean(scores["iou"])


# --------------------------------------------------------------------------------------
# Surface distances
# --------------------------------------------------------------------------------------


def _check_mask(x: Any, *, name: str) -> np.ndarray:
    arr = _check_labels(x, name=name, ndim=(2, 3))
    if arr.dtype == np.bool_:
        return arr
    if ((arr != 0) & (arr != 1)).any():
        raise ValueError(
            f"{name} must be a bool mask or hold only 0 and 1, got values "
            f"{np.unique(arr)[:5].tolist()}; pass `labels == c` for one class of a label map"
        )
    return arr.astype(bool)


def _surface(mask: np.ndarray, structure: np.ndarray) -> np.ndarray:
    # MONAI's get_mask_edges: the mask minus its erosion; outside the array is background,
    # so a mask touching the border keeps its border voxels as surface.
    return mask & ~ndi.binary_erosion(mask, structure=structure, border_value=0)


# A KD-tree query costs about ten times more per surface voxel than the distance transform
# costs per box voxel (measured on 256^3 spheres), so the tree wins when surfaces are sparse.
_TREE_FACTOR = 10


def _distances(
    pred: np.ndarray,
    truth: np.ndarray,
    spacing: tuple[float, ...],
    rank: int,
    *,
    both: bool,
    method: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Distances pred surface -> truth surface (and the reverse if ``both``).

    ``method`` ("edt" or "tree") forces one of the two exact algorithms; by default the
    cheaper one for these surfaces.
    """
    empty = np.zeros(0, dtype=np.float64)
    box = ndi.find_objects((pred | truth).view(np.uint8))
    if not box:
        return empty, empty
    # Work inside the bounding box of both masks: outside it both are background, so the
    # erosion (border_value=0) and every surface voxel are unchanged, and the nearest
    # surface voxel of the other mask always lies inside the box, so distances are exact.
    pred, truth = pred[box[0]], truth[box[0]]
    structure = ndi.generate_binary_structure(pred.ndim, rank)
    sp, st = _surface(pred, structure), _surface(truth, structure)
    n_p, n_t = np.count_nonzero(sp), np.count_nonzero(st)
    if n_t == 0:
        # Distance to an empty surface is infinite (MONAI returns inf for each voxel).
        return np.full(n_p, np.inf), empty
    if n_p == 0:
        return empty, np.full(n_t, np.inf) if both else empty
    if method is None:
        method = "tree" if (n_p + n_t) * _TREE_FACTOR < sp.size else "edt"
    if method == "tree":
        # MONAI's CPU method: nearest neighbour among surface voxel centres in physical units.
        scale = np.asarray(spacing)
        cp, ct = np.argwhere(sp) * scale, np.argwhere(st) * scale  # C order, like sp[mask]
        d_pt = KDTree(ct).query(cp)[0]
        d_tp = KDTree(cp).query(ct)[0] if both else empty
    else:
        d_pt = ndi.distance_transform_edt(~st, sampling=spacing)[sp]
        d_tp = ndi.distance_transform_edt(~sp, sampling=spacing)[st] if both else empty
    return d_pt, d_tp


def surface_distances(
    pred: Any,
    truth: Any,
    *,
    spacing: Any = None,
    connectivity: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Distances from each surface voxel of one mask to the nearest surface voxel of the other.

    Parameters
    ----------
    pred, truth : ndarray
        2D or 3D bool masks (or 0/1 integers) of the same shape.
    spacing : float or sequence of float, optional
        Voxel size per axis (physical units); default 1.
    connectivity : int
        Neighbourhood of the erosion that defines the surface: 1 (faces, MONAI's choice;
        4 in 2D, 6 in 3D) up to ``ndim`` (full); neighbour counts (4/8, 6/18/26) also work.

    Returns
    -------
    pred_to_truth, truth_to_pred : ndarray of float64
        One distance per surface voxel of ``pred`` (resp. ``truth``), in C order of the
        voxels. A surface is the mask minus its erosion. If the other mask is empty the
        distances are ``inf``; an empty mask has no surface voxels (empty array).

    Notes
    -----
    Exact Euclidean distances, computed inside the bounding box of both masks only (exact,
    since both masks are background outside it). Two exact algorithms, chosen by cost:
    SciPy's distance transform [2]_ of the complement of the other surface with
    ``sampling=spacing`` (cost grows with the box volume), or, when the surfaces are sparse
    in the box, a KD-tree over the other surface's voxel centres in physical units (what
    MONAI does on CPU). MONAI returns float32; the values agree to that precision.

    References
    ----------
    .. [1] Taha & Hanbury (2015), :doi:`10.1186/s12880-015-0068-x`
    .. [2] Maurer, C. R., Qi, R. & Raghavan, V. "A linear time algorithm for computing exact
       Euclidean distance transforms of binary images in arbitrary dimensions." IEEE TPAMI
       25(2), 265-270 (2003). :doi:`10.1109/TPAMI.2003.1177156`

    Examples
    --------
    >>> a = np.zeros((5, 5), bool); a[1:3, 1:3] = True
    >>> b = np.zeros((5, 5), bool); b[1:3, 2:4] = True
    >>> surface_distances(a, b)[0]
    array([1., 0., 1., 0.])
    """
    pred = _check_mask(pred, name="pred")
    truth = _check_mask(truth, name="truth")
    check_same_shape(pred, truth, names=("pred", "truth"))
    spacing = check_spacing(spacing, pred.ndim)
    rank = check_connectivity(connectivity, pred.ndim)
    return _distances(pred, truth, spacing, rank, both=True)


def _summarise(
    d_pt: np.ndarray,
    d_tp: np.ndarray,
    *,
    pred_any: bool,
    truth_any: bool,
    percentile: float | None,
    directed: bool,
) -> float:
    """Hausdorff (a percentile) or, with ``percentile=None``, mean surface distance."""
    if not pred_any and not truth_any:
        return float("nan")  # nothing to measure (MONAI: nan)
    if not pred_any or not truth_any:
        return float("inf")  # one mask empty (MONAI: inf, directed or not)
    if percentile is None:
        # MONAI's symmetric ASSD: the mean over both distance sets pooled together.
        return float(np.mean(d_pt if directed else np.concatenate([d_pt, d_tp])))
    # np.percentile's default "linear" method is torch.quantile's, which MONAI uses;
    # the symmetric value is the larger of the two directed percentiles, as in MONAI.
    values = [np.percentile(d, percentile) for d in ((d_pt,) if directed else (d_pt, d_tp))]
    return float(max(values))


def _check_percentile(percentile: Any) -> float:
    if (
        isinstance(percentile, bool)
        or not np.isscalar(percentile)
        or not isinstance(percentile, (int, float, np.integer, np.floating))
    ):
        raise TypeError(f"percentile must be a number, got {type(percentile).__name__}")
    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile must be in [0, 100], got {percentile}")
    return float(percentile)


def _check_bool(value: Any, *, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return bool(value)


def _pair_summary(
    pred: Any, truth: Any, spacing: Any, *, percentile: float | None, directed: Any
) -> float:
    pred = _check_mask(pred, name="pred")
    truth = _check_mask(truth, name="truth")
    check_same_shape(pred, truth, names=("pred", "truth"))
    spacing = check_spacing(spacing, pred.ndim)
    directed = _check_bool(directed, name="directed")
    pred_any, truth_any = bool(pred.any()), bool(truth.any())
    if pred_any and truth_any:
        d_pt, d_tp = _distances(pred, truth, spacing, 1, both=not directed)
    else:
        d_pt = d_tp = np.zeros(0)
    return _summarise(
        d_pt,
        d_tp,
        pred_any=pred_any,
        truth_any=truth_any,
        percentile=percentile,
        directed=directed,
    )


def hausdorff(
    pred: Any,
    truth: Any,
    *,
    spacing: Any = None,
    percentile: float = 100,
    directed: bool = False,
) -> float:
    """Hausdorff distance between the surfaces of two masks, or a percentile of it.

    Parameters
    ----------
    pred, truth : ndarray
        2D or 3D bool masks of the same shape.
    spacing : float or sequence of float, optional
        Voxel size per axis; the result is in the same units.
    percentile : float
        100 (default) gives the Hausdorff distance, 95 the HD95.
    directed : bool
        Only the distances from the ``pred`` surface to the ``truth`` surface; by default
        the larger of both directions.

    Returns
    -------
    float
        NaN if both masks are empty, ``inf`` if exactly one is (as MONAI, except that
        MONAI's percentile variants give NaN there; see the module docstring).

    References
    ----------
    .. [1] Huttenlocher, D. P., Klanderman, G. A. & Rucklidge, W. J. "Comparing images using
       the Hausdorff distance." IEEE TPAMI 15(9), 850-863 (1993). :doi:`10.1109/34.232073`
    .. [2] Taha & Hanbury (2015), :doi:`10.1186/s12880-015-0068-x`

    Examples
    --------
    >>> a = np.zeros((6, 6), bool); a[1:3, 1:3] = True
    >>> b = np.zeros((6, 6), bool); b[1:3, 1:5] = True
    >>> hausdorff(a, b), hausdorff(a, b, directed=True), assd(a, b)
    (2.0, 0.0, 0.5)
    """
    q = _check_percentile(percentile)
    return _pair_summary(pred, truth, spacing, percentile=q, directed=directed)


def hd95(pred: Any, truth: Any, *, spacing: Any = None, directed: bool = False) -> float:
    """95th percentile Hausdorff distance: :func:`hausdorff` with ``percentile=95``.

    References
    ----------
    .. [1] Huttenlocher et al. (1993), :doi:`10.1109/34.232073`
    """
    return hausdorff(pred, truth, spacing=spacing, percentile=95, directed=directed)


def assd(pred: Any, truth: Any, *, spacing: Any = None, directed: bool = False) -> float:
    """Average symmetric surface distance (mean over the surface voxels of both masks).

    As MONAI's ``compute_average_surface_distance(symmetric=True)``, the mean is taken over
    both sets of distances pooled together, not the average of the two directed means.
    ``directed=True`` gives the mean distance from the ``pred`` surface to the ``truth``
    surface. NaN if both masks are empty, ``inf`` if exactly one is.

    References
    ----------
    .. [1] Heimann, T. et al. "Comparison and evaluation of methods for liver segmentation
       from CT datasets." IEEE TMI 28(8), 1251-1265 (2009). :doi:`10.1109/TMI.2009.2013851`
    .. [2] Taha & Hanbury (2015), :doi:`10.1186/s12880-015-0068-x`
    """
    return _pair_summary(pred, truth, spacing, percentile=None, directed=directed)


def surface_scores(
    pred: Any,
    truth: Any,
    *,
    num_classes: int | None = None,
    spacing: Any = None,
    ignore_index: int | None = None,
    include_background: bool = False,
) -> dict[str, np.ndarray]:
    """Per-class Hausdorff, HD95 and ASSD of two label maps.

    Class ``c`` compares ``pred == c`` with ``truth == c``; pixels where the truth equals
    ``ignore_index`` are removed from both masks first. Arrays are laid out as in
    :func:`overlap_scores` (entry ``i`` is class ``i + 1`` unless ``include_background``).
    Empty classes give NaN (both empty) or ``inf`` (one empty).

    References
    ----------
    .. [1] Taha & Hanbury (2015), :doi:`10.1186/s12880-015-0068-x`
    """
    pred = _check_labels(pred, name="pred", ndim=(2, 3))
    truth = _check_labels(truth, name="truth", ndim=(2, 3))
    check_same_shape(pred, truth, names=("pred", "truth"))
    C = _num_classes(pred, truth, num_classes, ignore_index)
    spacing = check_spacing(spacing, pred.ndim)
    keep = truth != ignore_index if ignore_index is not None else None
    first = 0 if include_background else 1
    out = {name: np.full(C - first, np.nan) for name in ("hausdorff", "hd95", "assd")}
    for i, c in enumerate(range(first, C)):
        pc, tc = pred == c, truth == c
        if keep is not None:
            pc &= keep
            tc &= keep
        d_pt, d_tp = _distances(pc, tc, spacing, 1, both=True)
        flags = {"pred_any": d_pt.size > 0, "truth_any": d_tp.size > 0, "directed": False}
        out["hausdorff"][i] = _summarise(d_pt, d_tp, percentile=100.0, **flags)
        out["hd95"][i] = _summarise(d_pt, d_tp, percentile=95.0, **flags)
        out["assd"][i] = _summarise(d_pt, d_tp, percentile=None, **flags)
    return out


# --------------------------------------------------------------------------------------
# Detection (average precision over boxes) goes below; it is added separately.
# --------------------------------------------------------------------------------------
