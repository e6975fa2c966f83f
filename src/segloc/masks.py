"""Masks and label maps: conversions, connected components, morphology and clean-up.

Arrays follow ``docs/conventions.md``: masks are ``bool``, label maps are ``int32`` with
0 = background. Instances and their boxes are in :mod:`segloc.instances`, COCO in
:mod:`segloc.coco`.

NumPy, SciPy and scikit-image only: importable without torch.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from segloc._validation import (
    ANY_NDIM,
    check_classes,
    check_connectivity,
    check_image,
    check_int,
    check_labels,
    check_mask,
    preview_values,
)

__all__ = [
    "to_bool",
    "to_uint8",
    "label_to_onehot",
    "onehot_to_label",
    "split_classes",
    "connected_components",
    "remove_small_objects",
    "fill_holes",
    "keep_largest",
    "opening",
    "closing",
    "clean_mask",
]


# --------------------------------------------------------------------------- private helpers


def connectivity_structure(ndim: int, connectivity: int) -> np.ndarray:
    return ndi.generate_binary_structure(ndim, check_connectivity(connectivity, ndim))


def _label(mask: np.ndarray, connectivity: int) -> tuple[np.ndarray, int]:
    out = np.zeros(mask.shape, np.int32)
    count = ndi.label(mask, structure=connectivity_structure(mask.ndim, connectivity), output=out)
    return out, int(count)


# --------------------------------------------------------------------------- conversions


def to_bool(mask: Any) -> np.ndarray:
    """Return a binary mask as ``bool``.

    Parameters
    ----------
    mask : array_like
        ``bool``, or numbers that are all 0/1 or all 0/255 (PNG masks).

    Returns
    -------
    ndarray of bool, same shape

    Raises
    ------
    ValueError
        If a numeric ``mask`` holds any other value (a label map is not a mask).

    Examples
    --------
    >>> to_bool(np.array([0, 255, 255], np.uint8))
    array([False,  True,  True])
    """
    return check_mask(mask).copy()


def to_uint8(mask: Any) -> np.ndarray:
    """Return a binary mask as ``uint8`` 0/255 (what image viewers and PNG files expect).

    Examples
    --------
    >>> to_uint8(np.array([True, False]))
    array([255,   0], dtype=uint8)
    """
    return check_mask(mask).astype(np.uint8) * np.uint8(255)


def label_to_onehot(
    labels: Any, num_classes: int, *, ignore_index: int | None = None
) -> np.ndarray:
    """One-hot encode a label map along a new first axis.

    Parameters
    ----------
    labels : array_like of int
        Label map, any shape ``S``; values in ``[0, num_classes)`` or ``ignore_index``.
    num_classes : int
        Number of classes ``C`` (background 0 included).
    ignore_index : int, optional
        Label of unlabelled pixels (e.g. CamVid's void 11, or 255); their one-hot
        vector is all False. It may lie inside or outside ``[0, num_classes)``.

    Returns
    -------
    ndarray of bool, shape ``(C, *S)``

    Raises
    ------
    ValueError
        If a value is outside ``[0, num_classes)`` and is not ``ignore_index``.

    Examples
    --------
    >>> label_to_onehot(np.array([0, 2, 255]), 3, ignore_index=255).astype(int)
    array([[1, 0, 0],
           [0, 0, 0],
           [0, 1, 0]])
    """
    num_classes = check_int(num_classes, name="num_classes", minimum=1)
    arr = check_image(labels, name="labels", ndim=ANY_NDIM, allow_empty=True)
    if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
        raise TypeError(f"labels must be an integer array, got dtype {arr.dtype}")
    if ignore_index is not None:
        ignore_index = check_int(ignore_index, name="ignore_index", minimum=-(2**63))
    ignored = (arr == ignore_index) if ignore_index is not None else np.zeros(arr.shape, bool)
    bad = ~ignored & ((arr < 0) | (arr >= num_classes))
    if bad.any():
        raise ValueError(
            f"labels must be in [0, {num_classes}) or ignore_index={ignore_index}, "
            f"got values {preview_values(np.unique(arr[bad]))}"
        )
    classes = np.arange(num_classes).reshape((num_classes,) + (1,) * arr.ndim)
    onehot = arr[np.newaxis] == classes  # (C, *S)
    if ignore_index is not None and 0 <= ignore_index < num_classes:
        onehot[:, ignored] = False
    return onehot


def onehot_to_label(onehot: Any) -> np.ndarray:
    """Collapse a one-hot (or per-class score) array to labels: argmax over axis 0.

    Parameters
    ----------
    onehot : array_like, shape ``(C, *S)``
        Bool one-hot masks or per-class scores/probabilities.

    Returns
    -------
    ndarray of int32, shape ``S``
        The first class wins ties, so an all-False pixel becomes 0.

    Examples
    --------
    >>> onehot_to_label(np.array([[1, 0], [0, 1]], bool))
    array([0, 1], dtype=int32)
    """
    arr = check_image(onehot, name="onehot", ndim=range(2, 33))
    return np.argmax(arr, axis=0).astype(np.int32)


def split_classes(labels: Any, classes: Iterable[int] | None = None) -> dict[int, np.ndarray]:
    """One binary mask per class.

    Parameters
    ----------
    labels : array_like of int
        Label map, 0 = background.
    classes : iterable of int, optional
        Classes to return (0 included only if listed; absent classes give all-False masks).
        Default: every non-zero class present.

    Returns
    -------
    dict
        ``{class: bool mask}`` in increasing class order.

    Examples
    --------
    >>> {c: m.tolist() for c, m in split_classes(np.array([0, 2, 2, 5])).items()}
    {2: [False, True, True, False], 5: [False, False, False, True]}
    """
    arr = check_labels(labels)
    if classes is None:
        wanted = [int(c) for c in np.unique(arr) if c != 0]
    else:
        wanted = check_classes(classes)
    return {c: arr == c for c in wanted}


# --------------------------------------------------------------------------- cleanup


def connected_components(mask: Any, *, connectivity: int = 1) -> tuple[np.ndarray, int]:
    """Label the connected components of a binary mask.

    Parameters
    ----------
    mask : array_like, 2D or 3D
        bool (or 0/1, 0/255) mask.
    connectivity : int, optional
        1..ndim (scikit-image rank: 1 = faces only, ndim = faces, edges and corners) or the
        neighbour count: 4/8 in 2D, 6/18/26 in 3D.

    Returns
    -------
    labels : ndarray of int32
        Components numbered 1..count in raster order, 0 = background.
    count : int

    References
    ----------
    .. [1] Rosenfeld, A. and Pfaltz, J. L. "Sequential operations in digital picture
       processing", J. ACM 13(4) 471-494, 1966. :doi:`10.1145/321356.321357`

    Examples
    --------
    >>> labels, n = connected_components(np.eye(2, dtype=bool), connectivity=8)
    >>> n
    1
    """
    return _label(check_mask(mask, ndim=(2, 3)), connectivity)


def remove_small_objects(mask: Any, min_size: int, *, connectivity: int = 1) -> np.ndarray:
    """Remove objects with fewer than ``min_size`` pixels (voxels).

    Parameters
    ----------
    mask : array_like, 2D or 3D
        A bool mask, whose objects are its connected components; or a non-negative integer
        label map, whose objects are its labels (each label whole, connected or not, as
        scikit-image does; so a 0/1 integer array counts as one object).
    min_size : int
        Smallest size kept. Objects of exactly ``min_size`` pixels stay (scikit-image's
        ``remove_small_objects(ar, max_size=min_size - 1)``).
    connectivity : int, optional
        For bool masks, as in :func:`connected_components`.

    Returns
    -------
    ndarray
        Same dtype as ``mask`` (bool for a bool mask), small objects set to 0/False.

    References
    ----------
    .. [1] van der Walt, S. et al. "scikit-image: image processing in Python", PeerJ 2:e453,
       2014. :doi:`10.7717/peerj.453`

    Examples
    --------
    >>> remove_small_objects(np.array([[1, 1, 0, 1]], bool), 2)
    array([[ True,  True, False, False]])
    """
    arr = check_image(mask, name="mask", ndim=(2, 3), allow_empty=True)
    min_size = check_int(min_size, name="min_size", minimum=0)
    if arr.dtype == np.bool_:
        comp, _ = _label(arr, connectivity)
        sizes = np.bincount(comp.ravel())
        keep = sizes >= min_size
        keep[0] = False
        return keep[comp]
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"mask must be a bool mask or an integer label map, got dtype {arr.dtype}")
    check_connectivity(connectivity, arr.ndim)  # validated even though labels ignore it
    if arr.size and arr.min() < 0:
        raise ValueError(f"mask must be >= 0 as a label map, got minimum {arr.min()}")
    # labels may be sparse (ids up to 2**31): count over the ids present only
    ids, inverse, sizes = np.unique(arr, return_inverse=True, return_counts=True)
    keep = sizes >= min_size
    out = arr.copy()
    out[~keep[inverse.reshape(arr.shape)]] = 0
    return out


def fill_holes(mask: Any) -> np.ndarray:
    """Fill holes: background regions not connected to the array border.

    Background connectivity is 1 (faces), the complement of a fully connected foreground,
    so a background pocket that reaches the border only through a corner is a hole.

    Parameters
    ----------
    mask : array_like, 2D or 3D
        bool (or 0/1, 0/255) mask.

    Returns
    -------
    ndarray of bool

    References
    ----------
    .. [1] Soille, P. "Morphological Image Analysis", 2nd ed., Springer 2003, sec. 6.3.7
       (hole filling by reconstruction from the border). :doi:`10.1007/978-3-662-05088-0`

    Examples
    --------
    >>> ring = np.ones((3, 3), bool); ring[1, 1] = False
    >>> bool(fill_holes(ring)[1, 1])
    True
    """
    return ndi.binary_fill_holes(check_mask(mask, ndim=(2, 3)))


def keep_largest(mask: Any, *, connectivity: int = 1) -> np.ndarray:
    """Keep only the largest connected component (the first in raster order on a tie).

    Parameters
    ----------
    mask : array_like, 2D or 3D
        bool (or 0/1, 0/255) mask.
    connectivity : int, optional
        As in :func:`connected_components`.

    Returns
    -------
    ndarray of bool
        All False if ``mask`` is empty.

    References
    ----------
    .. [1] Rosenfeld, A. and Pfaltz, J. L. "Sequential operations in digital picture
       processing", J. ACM 13(4) 471-494, 1966. :doi:`10.1145/321356.321357`

    Examples
    --------
    >>> keep_largest(np.array([[1, 0, 1, 1]], bool))
    array([[False, False,  True,  True]])
    """
    comp, count = _label(check_mask(mask, ndim=(2, 3)), connectivity)
    if count == 0:
        return np.zeros(comp.shape, bool)
    sizes = np.bincount(comp.ravel())
    sizes[0] = 0
    return comp == int(np.argmax(sizes))


def _footprint(ndim: int, radius: Any) -> np.ndarray:
    from skimage.morphology import ball, disk

    radius = check_int(radius, name="radius", minimum=1)
    return (disk if ndim == 2 else ball)(radius).astype(bool)


def opening(mask: Any, *, radius: int = 1) -> np.ndarray:
    """Binary opening (erosion then dilation) with a disk (2D) or ball (3D) of ``radius``.

    Removes specks and thin spurs narrower than the footprint. Pixels outside the array
    do not take part (erosion treats them as foreground, dilation as background, as
    scikit-image's ``mode="ignore"``), so objects touching the border are not eaten.

    Parameters
    ----------
    mask : array_like, 2D or 3D
        bool (or 0/1, 0/255) mask.
    radius : int, optional
        Footprint radius in pixels, >= 1.

    Returns
    -------
    ndarray of bool

    References
    ----------
    .. [1] Serra, J. "Image Analysis and Mathematical Morphology", Academic Press, 1982.
       Soille, P. "Morphological Image Analysis", Springer 2003, ch. 4.
       :doi:`10.1007/978-3-662-05088-0`

    Examples
    --------
    >>> m = np.zeros((5, 5), bool); m[1:4, 1:4] = True; m[0, 0] = True
    >>> int(opening(m, radius=1).sum())
    5
    """
    arr = check_mask(mask, ndim=(2, 3))
    fp = _footprint(arr.ndim, radius)
    eroded = ndi.binary_erosion(arr, fp, border_value=1)
    return ndi.binary_dilation(eroded, fp, border_value=0)


def closing(mask: Any, *, radius: int = 1) -> np.ndarray:
    """Binary closing (dilation then erosion) with a disk (2D) or ball (3D) of ``radius``.

    Fills gaps and dents narrower than the footprint. Border handling as in
    :func:`opening`, so closing never removes a pixel (it is extensive).

    Parameters
    ----------
    mask : array_like, 2D or 3D
        bool (or 0/1, 0/255) mask.
    radius : int, optional
        Footprint radius in pixels, >= 1.

    Returns
    -------
    ndarray of bool

    References
    ----------
    .. [1] Serra, J. "Image Analysis and Mathematical Morphology", Academic Press, 1982.
       Soille, P. "Morphological Image Analysis", Springer 2003, ch. 4.
       :doi:`10.1007/978-3-662-05088-0`

    Examples
    --------
    >>> m = np.ones((3, 5), bool); m[:, 2] = False; m[1, 2] = True
    >>> bool(closing(m, radius=1)[0, 2])
    True
    """
    arr = check_mask(mask, ndim=(2, 3))
    fp = _footprint(arr.ndim, radius)
    dilated = ndi.binary_dilation(arr, fp, border_value=0)
    return ndi.binary_erosion(dilated, fp, border_value=1)


# --------------------------------------------------------------------------- clean-up chain


def clean_mask(
    mask: Any,
    *,
    open_radius: int = 0,
    close_radius: int = 0,
    fill: bool = False,
    min_size: int = 0,
    largest: bool = False,
    connectivity: int = 1,
) -> np.ndarray:
    """The usual clean-up of a binary segmentation, in a fixed order.

    Opening (removes specks and thin bridges), closing (fills small gaps), hole filling,
    removal of objects under ``min_size`` pixels, then only the largest object kept. Each step
    is off at its default, so ``clean_mask(m)`` returns ``m`` as bool.

    Parameters
    ----------
    mask : array_like, 2D or 3D
        bool, or numeric 0/1 or 0/255.
    open_radius, close_radius : int, optional
        Radius of the disk (2D) or ball (3D) of :func:`opening` / :func:`closing`; 0 = skip.
    fill : bool, optional
        :func:`fill_holes`.
    min_size : int, optional
        :func:`remove_small_objects` below this many pixels; 0 = skip.
    largest : bool, optional
        :func:`keep_largest`.
    connectivity : int, optional
        Of the object steps (``min_size``, ``largest``).

    Returns
    -------
    ndarray of bool, same shape

    Examples
    --------
    >>> m = np.array([[1, 1, 0, 1], [1, 1, 0, 0]], bool)
    >>> clean_mask(m, largest=True).astype(int)
    array([[1, 1, 0, 0],
           [1, 1, 0, 0]])
    """
    out = check_mask(mask, ndim=(2, 3))
    open_radius = check_int(open_radius, name="open_radius", minimum=0)
    close_radius = check_int(close_radius, name="close_radius", minimum=0)
    min_size = check_int(min_size, name="min_size", minimum=0)
    if open_radius:
        out = opening(out, radius=open_radius)
    if close_radius:
        out = closing(out, radius=close_radius)
    if fill:
        out = fill_holes(out)
    if min_size:
        out = remove_small_objects(out, min_size, connectivity=connectivity)
    if largest:
        out = keep_largest(out, connectivity=connectivity)
    return out
