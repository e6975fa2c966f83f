"""Box operations: formats, area, clipping, IoU, GIoU, NMS, class-aware NMS and Soft-NMS.

Convention, stated once (``docs/conventions.md``): a 2D box is ``(x0, y0, x1, y1)`` (format
``"xyxy"``) and a 3D box ``(x0, y0, z0, x1, y1, z1)`` (``"xyzxyz"``), with x = column (axis 1),
y = row (axis 0), z = slice (axis 2) and half-open pixel edges, like slicing: an object's box is
``x0 = min col``, ``x1 = max col + 1``, so ``image[y0:y1, x0:x1]`` crops it and its area is
``(x1 - x0) * (y1 - y0)`` (no ``+ 1``). Other formats: ``"xywh"`` / ``"xyzwhd"`` (corner and
size) and ``"cxcywh"`` / ``"cxcyczwhd"`` (centre and size).

Every function takes ``N`` boxes as an ``(N, 4)`` (2D) or ``(N, 6)`` (3D) NumPy array (or
anything ``np.asarray`` accepts) or a torch tensor, and returns the same kind. NumPy input is
computed in ``float64``; a torch tensor keeps its floating dtype (integer tensors become
``float64``) and device, and the results are differentiable where that makes sense (IoU, GIoU).
torch is only imported when a tensor is passed: ``import segloc.boxes`` does not import it.

Degenerate (zero-size) boxes are allowed. Where a ratio would be ``0 / 0`` (two boxes of zero
size: empty union, empty enclosing box) IoU is 0 and GIoU equals IoU, instead of NaN.

References
----------
.. [NMS] Neubeck, A. and Van Gool, L. "Efficient Non-Maximum Suppression", ICPR 2006,
   :doi:`10.1109/ICPR.2006.479`.
.. [GIoU] Rezatofighi, H. et al. "Generalized Intersection over Union: A Metric and a Loss for
   Bounding Box Regression", CVPR 2019, :doi:`10.1109/CVPR.2019.00075`.
.. [SoftNMS] Bodla, N. et al. "Soft-NMS -- Improving Object Detection With One Line of Code",
   ICCV 2017, :doi:`10.1109/ICCV.2017.593`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from segloc._validation import check_choice, check_positive

__all__ = [
    "FORMATS_2D",
    "FORMATS_3D",
    "check_box",
    "check_boxes",
    "convert",
    "box_area",
    "clip_boxes",
    "scale_boxes",
    "box_iou",
    "generalized_box_iou",
    "nms",
    "batched_nms",
    "soft_nms",
]

FORMATS_2D = ("xyxy", "xywh", "cxcywh")
FORMATS_3D = ("xyzxyz", "xyzwhd", "cxcyczwhd")
_SOFT_METHODS = ("gaussian", "linear")


# --------------------------------------------------------------------------- backend


def _torch_of(x: Any) -> Any:
    """The torch module if ``x`` is a tensor, else None (never imports torch itself)."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        return torch
    return None


def _as_boxes(boxes: Any, *, name: str = "boxes") -> tuple[Any, Any]:
    """(float boxes of shape (N, 4) or (N, 6), torch module or None); no ordering check."""
    torch = _torch_of(boxes)
    if torch is not None:
        b = boxes if boxes.is_floating_point() else boxes.to(torch.float64)
        if b.numel() == 0 and b.ndim == 1:
            b = b.reshape(0, 4)
        shape = tuple(b.shape)
        finite = bool(torch.isfinite(b).all())
    else:
        arr = np.asarray(boxes)
        if arr.dtype == object or not (
            np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_
        ):
            raise TypeError(f"{name} must be a numeric array, got dtype {arr.dtype}")
        b = arr.astype(np.float64, copy=False)
        if b.size == 0 and b.ndim == 1:
            b = b.reshape(0, 4)
        shape = b.shape
        finite = bool(np.isfinite(b).all())
    if len(shape) != 2 or shape[1] not in (4, 6):
        raise ValueError(f"{name} must have shape (N, 4) or (N, 6), got {shape}")
    if not finite:
        raise ValueError(f"{name} must be finite, got NaN or infinite values")
    return b, torch


def _check_order(b: Any, torch: Any, name: str) -> None:
    half = b.shape[1] // 2
    bad = b[:, half:] < b[:, :half]  # (N, d)
    bad = bad.any(1)
    if bool(bad.any()):
        i = int(bad.nonzero()[0][0]) if torch is not None else int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{name}[{i}] must have x1 >= x0, y1 >= y0 (and z1 >= z0), got {b[i].tolist()}"
        )


def check_box(box: Any, *, name: str = "box", sizes: Sequence[int] = (4, 6)) -> np.ndarray:
    """One box as float64 (4 values in 2D, 6 in 3D), finite, with max corner >= min corner."""
    arr = np.asarray(box, dtype=np.float64)
    if arr.ndim != 1 or arr.size not in sizes:
        want = " or ".join(str(s) for s in sizes)
        raise ValueError(f"{name} must have {want} values, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite, got {arr.tolist()}")
    half = arr.size // 2
    if (arr[half:] < arr[:half]).any():
        raise ValueError(f"{name} must have x1 >= x0, y1 >= y0 (and z1 >= z0), got {arr.tolist()}")
    return arr


def check_boxes(boxes: Any, *, name: str = "boxes") -> Any:
    """Check boxes in the segloc convention and return them as floats.

    Parameters
    ----------
    boxes : array_like or Tensor, shape (N, 4) or (N, 6)
        ``xyxy`` or ``xyzxyz`` boxes; an empty input (``[]``) is read as ``(0, 4)``.
    name : str, optional
        Parameter name used in error messages.

    Returns
    -------
    ndarray of float64 or Tensor (floating dtype kept, integers become float64)

    Raises
    ------
    TypeError
        If ``boxes`` is not numeric.
    ValueError
        If the shape is wrong, a value is not finite, or a box has ``x1 < x0`` (or
        ``y1 < y0``, ``z1 < z0``): the message names the first such box and its index.

    Examples
    --------
    >>> check_boxes([[0, 0, 2, 3]])
    array([[0., 0., 2., 3.]])
    """
    b, torch = _as_boxes(boxes, name=name)
    _check_order(b, torch, name)
    return b


def _pair(a: Any, b: Any) -> tuple[Any, Any, Any]:
    """Both box sets checked, same kind and same dimensionality."""
    ba, ta = _as_boxes(a, name="boxes1")
    bb, tb = _as_boxes(b, name="boxes2")
    if (ta is None) != (tb is None):
        raise TypeError("boxes1 and boxes2 must both be NumPy arrays or both torch tensors")
    if ba.shape[1] != bb.shape[1]:
        raise ValueError(
            f"boxes1 and boxes2 must both be 2D (N, 4) or both 3D (N, 6), "
            f"got {tuple(ba.shape)} and {tuple(bb.shape)}"
        )
    if ta is not None and ba.dtype != bb.dtype:
        dtype = ta.promote_types(ba.dtype, bb.dtype)
        ba, bb = ba.to(dtype), bb.to(dtype)
    _check_order(ba, ta, "boxes1")
    _check_order(bb, tb, "boxes2")
    return ba, bb, ta


def _xp(torch: Any) -> Any:
    return np if torch is None else torch


def _safe_div(num: Any, den: Any, xp: Any) -> Any:
    """num / den, 0 where den == 0 (without a division warning or a NaN gradient)."""
    zero = den == 0
    ones = xp.ones_like(den)
    return xp.where(zero, 0 * num, num / xp.where(zero, ones, den))


# --------------------------------------------------------------------------- formats


def _fmt_family(fmt: str, name: str) -> int:
    check_choice(fmt, FORMATS_2D + FORMATS_3D, name=name)
    return 2 if fmt in FORMATS_2D else 3


def convert(boxes: Any, in_fmt: str, out_fmt: str) -> Any:
    """Convert boxes between formats.

    Parameters
    ----------
    boxes : array_like or Tensor, shape (N, 4) or (N, 6)
    in_fmt, out_fmt : str
        2D: ``"xyxy"`` (corners), ``"xywh"`` (corner and size), ``"cxcywh"`` (centre and
        size). 3D: ``"xyzxyz"``, ``"xyzwhd"``, ``"cxcyczwhd"``. Both 2D or both 3D.

    Returns
    -------
    ndarray of float64 or Tensor, same shape

    Raises
    ------
    ValueError
        Unknown format, 2D/3D mismatch, or boxes with a negative size.

    References
    ----------
    .. [1] torchvision ``ops.box_convert`` (same format names in 2D).

    Examples
    --------
    >>> convert([[1, 2, 4, 8]], "xyxy", "cxcywh")
    array([[2.5, 5. , 3. , 6. ]])
    """
    d_in = _fmt_family(in_fmt, "in_fmt")
    d_out = _fmt_family(out_fmt, "out_fmt")
    if d_in != d_out:
        raise ValueError(
            f"out_fmt must be a {d_in}D format like in_fmt={in_fmt!r}, got {out_fmt!r}"
        )
    b, torch = _as_boxes(boxes)
    if b.shape[0] == 0:  # [] is read as (0, 4); a 3D format wants (0, 6)
        b = b.reshape(0, 2 * d_in)
    if b.shape[1] != 2 * d_in:
        raise ValueError(
            f"boxes must have shape (N, {2 * d_in}) for {in_fmt!r}, got {tuple(b.shape)}"
        )
    xp = _xp(torch)
    d = d_in
    lo, hi = b[:, :d], b[:, d:]
    # everything goes through corners: (lo, hi)
    if in_fmt in ("xyxy", "xyzxyz"):
        _check_order(b, torch, "boxes")
    elif in_fmt in ("xywh", "xyzwhd"):
        if bool((hi < 0).any()):
            raise ValueError(f"boxes sizes must be >= 0 for {in_fmt!r}, got a negative size")
        lo, hi = lo, lo + hi
    else:
        if bool((hi < 0).any()):
            raise ValueError(f"boxes sizes must be >= 0 for {in_fmt!r}, got a negative size")
        lo, hi = lo - hi / 2, lo + hi / 2
    if out_fmt in ("xyxy", "xyzxyz"):
        parts = (lo, hi)
    elif out_fmt in ("xywh", "xyzwhd"):
        parts = (lo, hi - lo)
    else:
        parts = ((lo + hi) / 2, hi - lo)
    return xp.concatenate(parts, 1) if torch is None else torch.cat(parts, 1)


# --------------------------------------------------------------------------- geometry


def box_area(boxes: Any) -> Any:
    """Area (2D) or volume (3D) of each box, ``(x1 - x0) * (y1 - y0) [* (z1 - z0)]``.

    Parameters
    ----------
    boxes : array_like or Tensor, shape (N, 4) or (N, 6)

    Returns
    -------
    ndarray of float64 or Tensor, shape (N,)

    Examples
    --------
    >>> box_area([[0, 0, 2, 3], [1, 1, 1, 5]])
    array([6., 0.])
    """
    b = check_boxes(boxes)
    d = b.shape[1] // 2
    sizes = b[:, d:] - b[:, :d]  # (N, d)
    return sizes.prod(1)


def clip_boxes(boxes: Any, shape: Sequence[int]) -> Any:
    """Clip boxes to an image or volume of array shape ``shape``.

    Parameters
    ----------
    boxes : array_like or Tensor, shape (N, 4) or (N, 6)
    shape : sequence of int
        Array shape ``(rows, cols)`` for 2D boxes, ``(rows, cols, slices)`` for 3D ones
        (extra trailing entries, such as colour channels, are ignored). x is clipped to
        ``[0, cols]``, y to ``[0, rows]``, z to ``[0, slices]`` (half-open edges).

    Returns
    -------
    ndarray of float64 or Tensor, shape (N, 4) or (N, 6)
        A box wholly outside the image becomes a zero-size box on its border.

    Examples
    --------
    >>> clip_boxes([[-2, 1, 9, 4]], (3, 5))
    array([[0., 1., 5., 3.]])
    """
    b, torch = _as_boxes(boxes)
    _check_order(b, torch, "boxes")
    d = b.shape[1] // 2
    shape = tuple(shape)
    if len(shape) < d or any(
        isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0 for s in shape[:d]
    ):
        raise ValueError(f"shape must start with {d} non-negative integers, got {shape}")
    # x is columns (axis 1), y rows (axis 0), z slices (axis 2)
    limits = [float(shape[1]), float(shape[0])] + ([float(shape[2])] if d == 3 else [])
    cols = [b[:, k].clip(0, limits[k % d]) for k in range(2 * d)]
    xp = _xp(torch)
    return xp.stack(cols, 1)


def scale_boxes(boxes: Any, factor: float | Sequence[float]) -> Any:
    """Scale box coordinates, as when the image is resized by ``factor``.

    Parameters
    ----------
    boxes : array_like or Tensor, shape (N, 4) or (N, 6)
    factor : float or sequence of float
        One factor for every axis, or one per array axis in array order ``(rows, cols[,
        slices])`` like ``scipy.ndimage.zoom``: the y coordinates are multiplied by
        ``factor[0]``, x by ``factor[1]``, z by ``factor[2]``. Factors must be > 0.

    Returns
    -------
    ndarray of float64 or Tensor, same shape

    Examples
    --------
    >>> scale_boxes([[1, 2, 3, 4]], (10, 2))
    array([[ 2., 20.,  6., 40.]])
    """
    b, torch = _as_boxes(boxes)
    _check_order(b, torch, "boxes")
    d = b.shape[1] // 2
    f = np.atleast_1d(np.asarray(factor, dtype=np.float64))
    if f.ndim != 1 or f.size not in (1, d):
        raise ValueError(f"factor must be a number or {d} numbers, got {np.shape(factor)}")
    if not (np.isfinite(f).all() and (f > 0).all()):
        raise ValueError(f"factor must be finite and > 0, got {f.tolist()}")
    f = np.broadcast_to(f, (d,))
    per_coord = np.array([f[1], f[0]] + ([f[2]] if d == 3 else []))  # x, y[, z]
    per_coord = np.concatenate([per_coord, per_coord])
    if torch is not None:
        return b * torch.as_tensor(per_coord, dtype=b.dtype, device=b.device)
    return b * per_coord


def _inter_union(a: Any, b: Any, xp: Any) -> tuple[Any, Any, Any, Any]:
    """Pairwise intersection and union (N, M), plus the corners of each pair's overlap."""
    d = a.shape[1] // 2
    area_a = (a[:, d:] - a[:, :d]).prod(1)  # (N,)
    area_b = (b[:, d:] - b[:, :d]).prod(1)  # (M,)
    lo = xp.maximum(a[:, None, :d], b[None, :, :d])  # (N, M, d)
    hi = xp.minimum(a[:, None, d:], b[None, :, d:])  # (N, M, d)
    inter = (hi - lo).clip(0, None).prod(2)  # (N, M)
    union = area_a[:, None] + area_b[None, :] - inter
    return inter, union, lo, hi


def box_iou(boxes1: Any, boxes2: Any) -> Any:
    """Intersection over union of every pair of boxes.

    Parameters
    ----------
    boxes1 : array_like or Tensor, shape (N, 4) or (N, 6)
    boxes2 : array_like or Tensor, shape (M, 4) or (M, 6)
        Same dimensionality as ``boxes1``.

    Returns
    -------
    ndarray of float64 or Tensor, shape (N, M)
        0 where the union is empty (two zero-size boxes).

    References
    ----------
    .. [1] Everingham, M. et al. "The PASCAL Visual Object Classes (VOC) Challenge",
       IJCV 88(2) 303-338, 2010. :doi:`10.1007/s11263-009-0275-4`

    Examples
    --------
    >>> box_iou([[0, 0, 2, 2]], [[1, 0, 3, 2], [5, 5, 6, 6]])
    array([[0.33333333, 0.        ]])
    """
    a, b, torch = _pair(boxes1, boxes2)
    xp = _xp(torch)
    inter, union, _, _ = _inter_union(a, b, xp)
    return _safe_div(inter, union, xp)


def generalized_box_iou(boxes1: Any, boxes2: Any) -> Any:
    """Generalized IoU of every pair: ``IoU - (C - U) / C``, C the smallest enclosing box.

    Parameters
    ----------
    boxes1 : array_like or Tensor, shape (N, 4) or (N, 6)
    boxes2 : array_like or Tensor, shape (M, 4) or (M, 6)

    Returns
    -------
    ndarray of float64 or Tensor, shape (N, M)
        Values in ``(-1, 1]``; equals IoU where the enclosing box is empty.

    References
    ----------
    .. [1] Rezatofighi, H. et al. "Generalized Intersection over Union: A Metric and a Loss
       for Bounding Box Regression", CVPR 2019, :doi:`10.1109/CVPR.2019.00075`

    Examples
    --------
    >>> generalized_box_iou([[0, 0, 1, 1]], [[2, 0, 3, 1]])
    array([[-0.33333333]])
    """
    a, b, torch = _pair(boxes1, boxes2)
    xp = _xp(torch)
    d = a.shape[1] // 2
    inter, union, _, _ = _inter_union(a, b, xp)
    iou = _safe_div(inter, union, xp)
    lo = xp.minimum(a[:, None, :d], b[None, :, :d])  # (N, M, d)
    hi = xp.maximum(a[:, None, d:], b[None, :, d:])
    enclose = (hi - lo).prod(2)  # (N, M)
    return iou - _safe_div(enclose - union, enclose, xp)


# --------------------------------------------------------------------------- suppression


def _check_scores(scores: Any, n: int, torch: Any, like: Any, *, name: str = "scores") -> Any:
    if torch is not None:
        if _torch_of(scores) is None:
            raise TypeError(
                f"{name} must be a torch tensor like boxes, got {type(scores).__name__}"
            )
        s = scores if scores.is_floating_point() else scores.to(like.dtype)
        s = s.reshape(-1)
        finite = bool(torch.isfinite(s).all())
    else:
        s = np.asarray(scores, dtype=np.float64).reshape(-1)
        finite = bool(np.isfinite(s).all())
    if s.shape[0] != n:
        raise ValueError(f"{name} must have one value per box ({n}), got {s.shape[0]}")
    if not finite:
        raise ValueError(f"{name} must be finite, got NaN or infinite values")
    return s


def _check_threshold(value: Any, *, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not 0 <= value <= 1:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return float(value)


def _iou_row(box: Any, others: Any, xp: Any) -> Any:
    """IoU of one box (2d,) against boxes (K, 2d) -> (K,), same arithmetic as box_iou."""
    inter, union, _, _ = _inter_union(box[None, :], others, xp)
    return _safe_div(inter, union, xp)[0]


def _empty_index(torch: Any, like: Any) -> Any:
    if torch is not None:
        return torch.empty(0, dtype=torch.int64, device=like.device)
    return np.empty(0, np.int64)


def _order_desc(s: Any, torch: Any) -> Any:
    """Indices by decreasing score; ties keep the lower index first (deterministic)."""
    if torch is not None:
        return torch.argsort(s, descending=True, stable=True)
    return np.argsort(-s, kind="stable")


def _nms(b: Any, s: Any, threshold: float, torch: Any) -> Any:
    xp = _xp(torch)
    order = _order_desc(s, torch)
    keep = []
    while len(order):
        i = order[0]
        keep.append(i)
        rest = order[1:]
        order = rest[_iou_row(b[i], b[rest], xp) <= threshold]
    if not keep:
        return _empty_index(torch, b)
    if torch is not None:
        return torch.stack(keep).to(torch.int64)
    return np.asarray(keep, np.int64)


def nms(boxes: Any, scores: Any, iou_threshold: float) -> Any:
    """Greedy non-maximum suppression.

    Repeatedly keep the highest-scoring box left and drop every other box whose IoU with it
    is greater than ``iou_threshold``.

    Parameters
    ----------
    boxes : array_like or Tensor, shape (N, 4) or (N, 6)
    scores : array_like or Tensor, shape (N,)
    iou_threshold : float
        In ``[0, 1]``; boxes with IoU ``> iou_threshold`` are suppressed.

    Returns
    -------
    ndarray of int64 or Tensor of int64, shape (K,)
        Indices of the kept boxes by decreasing score (equal scores: lower index first).

    References
    ----------
    .. [1] Neubeck, A. and Van Gool, L. "Efficient Non-Maximum Suppression", ICPR 2006,
       :doi:`10.1109/ICPR.2006.479`

    Examples
    --------
    >>> nms([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30]], [0.9, 0.8, 0.7], 0.5)
    array([0, 2])
    """
    b = check_boxes(boxes)
    torch = _torch_of(b)
    s = _check_scores(scores, b.shape[0], torch, b)
    threshold = _check_threshold(iou_threshold, name="iou_threshold")
    return _nms(b, s, threshold, torch)


def batched_nms(boxes: Any, scores: Any, classes: Any, iou_threshold: float) -> Any:
    """Non-maximum suppression within each class (boxes of different classes never suppress).

    Parameters
    ----------
    boxes : array_like or Tensor, shape (N, 4) or (N, 6)
    scores : array_like or Tensor, shape (N,)
    classes : array_like or Tensor of int, shape (N,)
    iou_threshold : float

    Returns
    -------
    ndarray of int64 or Tensor of int64, shape (K,)
        Kept indices by decreasing score (equal scores: lower index first).

    Notes
    -----
    One :func:`nms` call on boxes shifted by ``rank(class) * (max - min + 1)`` along every
    axis, so that boxes of different classes cannot overlap (torchvision's offset trick,
    with the span taken from the smallest coordinate too so that negative coordinates work).

    Examples
    --------
    >>> batched_nms([[0, 0, 10, 10], [1, 0, 11, 10]], [0.9, 0.8], [1, 2], 0.5)
    array([0, 1])
    """
    b = check_boxes(boxes)
    torch = _torch_of(b)
    s = _check_scores(scores, b.shape[0], torch, b)
    threshold = _check_threshold(iou_threshold, name="iou_threshold")
    n = b.shape[0]
    if torch is not None:
        if _torch_of(classes) is None:
            raise TypeError(
                f"classes must be a torch tensor like boxes, got {type(classes).__name__}"
            )
        c = classes.reshape(-1)
        if n and (c.is_floating_point() or c.dtype == torch.bool):
            raise TypeError(f"classes must be integers, got dtype {c.dtype}")
    else:
        c = np.asarray(classes).reshape(-1)
        if n and not np.issubdtype(c.dtype, np.integer):
            raise TypeError(f"classes must be integers, got dtype {c.dtype}")
    if c.shape[0] != n:
        raise ValueError(f"classes must have one value per box ({n}), got {c.shape[0]}")
    if n == 0:
        return _empty_index(torch, b)
    if torch is not None:
        rank = torch.unique(c, return_inverse=True)[1].to(b.dtype)
    else:
        rank = np.unique(c, return_inverse=True)[1].reshape(-1).astype(np.float64)
    span = float(b.max() - b.min()) + 1.0
    shifted = b + (rank * span)[:, None]
    return _nms(shifted, s, threshold, torch)


def soft_nms(
    boxes: Any,
    scores: Any,
    *,
    sigma: float = 0.5,
    iou_threshold: float = 0.3,
    score_threshold: float = 0.001,
    method: str = "gaussian",
) -> tuple[Any, Any]:
    """Soft-NMS: decay the scores of overlapping boxes instead of dropping them.

    Repeatedly take the box ``M`` with the highest current score, then multiply the score of
    every remaining box ``b`` by ``exp(-IoU(M, b)**2 / sigma)`` (``"gaussian"``) or, when
    ``IoU(M, b) >= iou_threshold``, by ``1 - IoU(M, b)`` (``"linear"``); boxes whose score
    falls below ``score_threshold`` are dropped.

    Parameters
    ----------
    boxes : array_like or Tensor, shape (N, 4) or (N, 6)
    scores : array_like or Tensor, shape (N,)
    sigma : float, optional
        Width of the Gaussian penalty (> 0); the paper's 0.5 by default.
    iou_threshold : float, optional
        ``N_t`` of the linear method (ignored by the Gaussian one); the paper's 0.3.
    score_threshold : float, optional
        Boxes scoring below it (initially or after decay) are dropped.
    method : {"gaussian", "linear"}, optional

    Returns
    -------
    keep : ndarray of int64 or Tensor of int64, shape (K,)
        Indices of the kept boxes in the order they were selected, which is by decreasing
        decayed score (equal scores: lower index first).
    scores : ndarray of float64 or Tensor, shape (K,)
        Their decayed scores.

    References
    ----------
    .. [1] Bodla, N., Singh, B., Chellappa, R. and Davis, L. S. "Soft-NMS -- Improving Object
       Detection With One Line of Code", ICCV 2017, :doi:`10.1109/ICCV.2017.593`

    Examples
    --------
    >>> keep, s = soft_nms([[0, 0, 2, 1], [1, 0, 3, 1]], [0.9, 0.8], method="linear")
    >>> keep, s.round(4)
    (array([0, 1]), array([0.9   , 0.5333]))
    """
    b = check_boxes(boxes)
    torch = _torch_of(b)
    s = _check_scores(scores, b.shape[0], torch, b)
    check_choice(method, _SOFT_METHODS, name="method")
    sigma = float(check_positive(sigma, name="sigma"))
    nt = _check_threshold(iou_threshold, name="iou_threshold")
    if isinstance(score_threshold, bool) or not np.isscalar(score_threshold):
        raise TypeError(f"score_threshold must be a number, got {type(score_threshold).__name__}")
    xp = _xp(torch)
    s = s.clone() if torch is not None else s.copy()
    if torch is not None:
        idx = torch.arange(b.shape[0], device=b.device)
    else:
        idx = np.arange(b.shape[0])
    idx = idx[s >= score_threshold]
    keep, kept_scores = [], []
    while len(idx):
        j = int(s[idx].argmax())  # first maximum: lower index wins ties (idx stays sorted)
        i = idx[j]
        keep.append(i)
        kept_scores.append(s[i])
        rest = (
            xp.concatenate((idx[:j], idx[j + 1 :]))
            if torch is None
            else torch.cat((idx[:j], idx[j + 1 :]))
        )
        if not len(rest):
            break
        iou = _iou_row(b[i], b[rest], xp)
        if method == "gaussian":
            weight = xp.exp(-(iou * iou) / sigma)
        else:
            weight = xp.where(iou >= nt, 1 - iou, xp.ones_like(iou))
        s[rest] = s[rest] * weight
        idx = rest[s[rest] >= score_threshold]
    if not keep:
        empty = _empty_index(torch, b)
        return empty, (s[:0] if torch is not None else np.empty(0, np.float64))
    if torch is not None:
        return torch.stack(keep).to(torch.int64), torch.stack(kept_scores)
    return np.asarray(keep, np.int64), np.asarray(kept_scores, np.float64)
