"""Masks, label maps and instances: conversions, cleanup, boxes, COCO and its RLE.

Arrays follow ``docs/conventions.md``: masks are ``bool``, label maps and instance maps
are ``int32`` with 0 = background. Boxes are ``float64`` ``(x0, y0, x1, y1)`` in 2D and
``(x0, y0, z0, x1, y1, z1)`` in 3D with x = column (axis 1), y = row (axis 0),
z = slice (axis 2) and half-open pixel edges, so ``image[y0:y1, x0:x1]`` crops an object
exactly. A COCO ``bbox`` is ``[x0, y0, x1 - x0, y1 - y0]`` on the same edges.

NumPy, SciPy and scikit-image only: importable without torch.

References
----------
.. [COCO] Lin, T.-Y. et al. "Microsoft COCO: Common Objects in Context", ECCV 2014,
   :doi:`10.1007/978-3-319-10602-1_48`. Data format: https://cocodataset.org/#format-data
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from segloc._validation import check_connectivity, check_image, check_int

__all__ = [
    "to_bool",
    "to_uint8",
    "label_to_onehot",
    "onehot_to_label",
    "split_classes",
    "semantic_to_instances",
    "instances_to_semantic",
    "connected_components",
    "remove_small_objects",
    "fill_holes",
    "keep_largest",
    "opening",
    "closing",
    "instance_boxes",
    "mask_to_boxes",
    "class_boxes",
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
]

_ANY_NDIM = range(1, 33)  # NumPy's own limit; "any array that is not a scalar"
_INT32_MAX = np.iinfo(np.int32).max


# --------------------------------------------------------------------------- private checks


def _values_preview(values: np.ndarray, limit: int = 10) -> str:
    """Short list of values for error messages (large masks have many)."""
    shown = values[:limit].tolist()
    return f"{shown}{' ...' if values.size > limit else ''}"


def _binary(mask: Any, *, name: str = "mask", ndim: Iterable[int] = _ANY_NDIM) -> np.ndarray:
    """bool array from a bool mask or a 0/1 or 0/255 numeric one; anything else is an error."""
    arr = check_image(mask, name=name, ndim=ndim, allow_empty=True)
    if arr.dtype == np.bool_:
        return arr
    values = np.unique(arr)
    # {0}, {1}, {0, 1}, {255}, {0, 255}: an all-ones 0/1 mask and an all-255 one are both "full"
    if np.isin(values, (0, 1)).all() or np.isin(values, (0, 255)).all():
        return arr != 0
    raise ValueError(
        f"{name} must hold only 0/1 or 0/255 values, got values {_values_preview(values)}"
    )


def _labels(labels: Any, *, name: str = "labels", ndim: Iterable[int] = _ANY_NDIM) -> np.ndarray:
    """int32 label map from bool (True = 1), integer or integral-float input; no negatives."""
    arr = check_image(labels, name=name, ndim=ndim, allow_empty=True)
    if arr.dtype == np.bool_:
        return arr.astype(np.int32)
    if np.issubdtype(arr.dtype, np.floating):
        # NIfTI label volumes are often stored as float32 (MSD hippocampus): accept exact integers
        if arr.size and not np.array_equal(arr, np.round(arr)):
            raise ValueError(f"{name} must hold integer values, got non-integer floats")
    if arr.size:
        lo, hi = arr.min(), arr.max()
        if lo < 0:
            raise ValueError(f"{name} must be >= 0, got minimum {lo}")
        if hi > _INT32_MAX:
            raise ValueError(f"{name} must fit in int32 (<= {_INT32_MAX}), got maximum {hi}")
    return arr.astype(np.int32, copy=False)


def _class_list(classes: Any, *, name: str = "classes") -> list[int]:
    """Sorted, duplicate-free list of non-negative class ids."""
    out = []
    for c in np.atleast_1d(np.asarray(list(classes))).tolist():
        if isinstance(c, bool) or not isinstance(c, int):
            raise TypeError(f"{name} must hold integers, got {c!r}")
        if c < 0:
            raise ValueError(f"{name} must be >= 0, got {c}")
        out.append(c)
    return sorted(set(out))


def _structure(ndim: int, connectivity: int) -> np.ndarray:
    return ndi.generate_binary_structure(ndim, check_connectivity(connectivity, ndim))


def _label(mask: np.ndarray, connectivity: int) -> tuple[np.ndarray, int]:
    out = np.zeros(mask.shape, np.int32)
    count = ndi.label(mask, structure=_structure(mask.ndim, connectivity), output=out)
    return out, int(count)


def _check_box(box: Any, *, name: str = "box", sizes: Sequence[int] = (4, 6)) -> np.ndarray:
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
    return _binary(mask).copy()


def to_uint8(mask: Any) -> np.ndarray:
    """Return a binary mask as ``uint8`` 0/255 (what image viewers and PNG files expect).

    Examples
    --------
    >>> to_uint8(np.array([True, False]))
    array([255,   0], dtype=uint8)
    """
    return _binary(mask).astype(np.uint8) * np.uint8(255)


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
    arr = check_image(labels, name="labels", ndim=_ANY_NDIM, allow_empty=True)
    if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
        raise TypeError(f"labels must be an integer array, got dtype {arr.dtype}")
    if ignore_index is not None:
        ignore_index = check_int(ignore_index, name="ignore_index", minimum=-(2**63))
    ignored = (arr == ignore_index) if ignore_index is not None else np.zeros(arr.shape, bool)
    bad = ~ignored & ((arr < 0) | (arr >= num_classes))
    if bad.any():
        raise ValueError(
            f"labels must be in [0, {num_classes}) or ignore_index={ignore_index}, "
            f"got values {_values_preview(np.unique(arr[bad]))}"
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
    arr = _labels(labels)
    if classes is None:
        wanted = [int(c) for c in np.unique(arr) if c != 0]
    else:
        wanted = _class_list(classes)
    return {c: arr == c for c in wanted}


def semantic_to_instances(
    labels: Any, *, connectivity: int = 1, classes: Iterable[int] | None = None
) -> tuple[np.ndarray, dict[int, int]]:
    """Split each class of a label map into connected components (instances).

    Parameters
    ----------
    labels : array_like of int, 2D or 3D
        Label map, 0 = background; a bool mask is one class, 1.
    connectivity : int, optional
        1..ndim (scikit-image rank) or neighbour count 4/8 (2D), 6/18/26 (3D).
    classes : iterable of int, optional
        Classes to split; default every non-zero class present.

    Returns
    -------
    instances : ndarray of int32
        Ids 1..N numbered class by class (increasing), then in raster order within a class;
        0 elsewhere.
    class_of : dict
        ``{instance_id: class}``.

    References
    ----------
    .. [1] Rosenfeld, A. and Pfaltz, J. L. "Sequential operations in digital picture
       processing", J. ACM 13(4) 471-494, 1966. :doi:`10.1145/321356.321357`

    Examples
    --------
    >>> inst, class_of = semantic_to_instances(np.array([[1, 0, 1], [2, 2, 0]]))
    >>> inst
    array([[1, 0, 2],
           [3, 3, 0]], dtype=int32)
    >>> class_of
    {1: 1, 2: 1, 3: 2}
    """
    arr = _labels(labels, ndim=(2, 3))
    structure = _structure(arr.ndim, connectivity)
    wanted = [int(c) for c in np.unique(arr) if c != 0] if classes is None else _class_list(classes)
    instances = np.zeros(arr.shape, np.int32)
    class_of: dict[int, int] = {}
    next_id = 1
    for c in wanted:
        comp, count = ndi.label(arr == c, structure=structure)
        if count == 0:
            continue
        hit = comp > 0
        instances[hit] = comp[hit] + (next_id - 1)
        class_of.update({i: c for i in range(next_id, next_id + count)})
        next_id += count
    return instances, class_of


def instances_to_semantic(instances: Any, class_of: Mapping[int, int] | None = None) -> np.ndarray:
    """Label map from an instance map.

    Parameters
    ----------
    instances : array_like of int
        Instance map, 0 = background, ids need not be contiguous.
    class_of : mapping, optional
        ``{instance_id: class}`` for every id present; default: every instance is class 1.

    Returns
    -------
    ndarray of int32

    Raises
    ------
    ValueError
        If ``class_of`` misses an id present in ``instances``.

    Examples
    --------
    >>> instances_to_semantic(np.array([0, 4, 7]), {4: 2, 7: 3})
    array([0, 2, 3], dtype=int32)
    """
    arr = _labels(instances, name="instances")
    if class_of is None:
        return (arr != 0).astype(np.int32)
    ids, inverse = np.unique(arr, return_inverse=True)
    missing = [int(i) for i in ids if i != 0 and int(i) not in class_of]
    if missing:
        raise ValueError(
            f"class_of must give a class for every instance id, got none for {missing[:10]}"
        )
    lut = np.array([0 if i == 0 else int(class_of[int(i)]) for i in ids], np.int64)
    if lut.size and (lut.min() < 0 or lut.max() > _INT32_MAX):
        raise ValueError(
            f"class_of classes must be in [0, {_INT32_MAX}], got {lut.min()}..{lut.max()}"
        )
    return lut[inverse.reshape(arr.shape)].astype(np.int32)


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
    return _label(_binary(mask, ndim=(2, 3)), connectivity)


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
    return ndi.binary_fill_holes(_binary(mask, ndim=(2, 3)))


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
    comp, count = _label(_binary(mask, ndim=(2, 3)), connectivity)
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
    arr = _binary(mask, ndim=(2, 3))
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
    arr = _binary(mask, ndim=(2, 3))
    fp = _footprint(arr.ndim, radius)
    dilated = ndi.binary_dilation(arr, fp, border_value=0)
    return ndi.binary_erosion(dilated, fp, border_value=1)


# --------------------------------------------------------------------------- masks -> boxes


def _boxes_from_slices(slices: Sequence[tuple[slice, ...]], ndim: int) -> np.ndarray:
    """(N, 2*ndim) float64 boxes from find_objects slices, x = axis 1, y = axis 0, z = axis 2."""
    order = (1, 0) if ndim == 2 else (1, 0, 2)
    boxes = np.empty((len(slices), 2 * ndim), np.float64)
    for k, sl in enumerate(slices):
        boxes[k, :ndim] = [sl[a].start for a in order]
        boxes[k, ndim:] = [sl[a].stop for a in order]
    return boxes


def instance_boxes(instances: Any) -> tuple[np.ndarray, np.ndarray]:
    """Bounding box of every instance.

    Parameters
    ----------
    instances : array_like of int, 2D or 3D
        Instance (or label) map, 0 = background, ids need not be contiguous.

    Returns
    -------
    ids : ndarray of int64, shape (N,)
        Instance ids present, increasing.
    boxes : ndarray of float64, shape (N, 4) or (N, 6)
        ``(x0, y0, x1, y1)`` / ``(x0, y0, z0, x1, y1, z1)``, half-open:
        ``x1 = max column + 1``.

    Examples
    --------
    >>> inst = np.zeros((4, 5), np.int32); inst[1:3, 2:5] = 7
    >>> instance_boxes(inst)
    (array([7]), array([[2., 1., 5., 3.]]))
    """
    arr = _labels(instances, name="instances", ndim=(2, 3))
    ids = np.unique(arr)
    ids = ids[ids != 0].astype(np.int64)
    if ids.size == 0:
        return ids, np.zeros((0, 2 * arr.ndim), np.float64)
    if ids[-1] > 4 * ids.size + 1024:
        # find_objects keeps one slot per id up to the largest: compact sparse ids first
        compact = np.searchsorted(ids, arr).astype(np.int32) + 1
        compact[arr == 0] = 0
        slices = ndi.find_objects(compact)
    else:
        found = ndi.find_objects(arr)
        slices = [found[i - 1] for i in ids]
    return ids, _boxes_from_slices(slices, arr.ndim)


def mask_to_boxes(
    labels: Any, *, connectivity: int = 1, classes: Iterable[int] | None = None
) -> list[dict]:
    """One box per connected object of each class.

    Parameters
    ----------
    labels : array_like of int, 2D or 3D
        Label map (0 = background) or bool mask (class 1).
    connectivity : int, optional
        As in :func:`connected_components`.
    classes : iterable of int, optional
        Classes to box; default every non-zero class present.

    Returns
    -------
    list of dict
        ``{"class": int, "box": [x0, y0, x1, y1] (3D: [x0, y0, z0, x1, y1, z1]),
        "area": int (pixel count), "instance": int}``, ordered as the instance ids of
        :func:`semantic_to_instances`. Plain Python numbers, ready for JSON.

    Examples
    --------
    >>> mask_to_boxes(np.array([[1, 0, 2], [1, 0, 0]]))
    [{'class': 1, 'box': [0.0, 0.0, 1.0, 2.0], 'area': 2, 'instance': 1}, \
{'class': 2, 'box': [2.0, 0.0, 3.0, 1.0], 'area': 1, 'instance': 2}]
    """
    instances, class_of = semantic_to_instances(labels, connectivity=connectivity, classes=classes)
    ids, boxes = instance_boxes(instances)
    areas = np.bincount(instances.ravel(), minlength=int(ids.max(initial=0)) + 1)
    return [
        {"class": class_of[int(i)], "box": box.tolist(), "area": int(areas[i]), "instance": int(i)}
        for i, box in zip(ids, boxes, strict=True)
    ]


def class_boxes(labels: Any) -> dict[int, np.ndarray]:
    """One box per class covering all of its pixels (connected or not).

    Parameters
    ----------
    labels : array_like of int, 2D or 3D
        Label map, 0 = background (no box).

    Returns
    -------
    dict
        ``{class: float64 box of 4 (2D) or 6 (3D) values}``, increasing class.

    Examples
    --------
    >>> class_boxes(np.array([[1, 0, 1]]))
    {1: array([0., 0., 3., 1.])}
    """
    ids, boxes = instance_boxes(_labels(labels, ndim=(2, 3)))
    return {int(i): b for i, b in zip(ids, boxes, strict=True)}


# --------------------------------------------------------------------------- box formats


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
    b = _check_box(box, sizes=(4,))
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
    b = _check_box(box, sizes=(4,))
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


# --------------------------------------------------------------------------- COCO RLE
#
# COCO stores a mask as run lengths over the column-major (Fortran) pixel order, starting
# with a run of zeros (possibly empty). The string form writes each count, from the
# fourth on as the difference to the count two places before (runs of the same value),
# as a signed little-endian base-32 number: 5 data bits per character, bit 0x20 = "more
# characters follow", bit 0x10 of the last character = sign, character = value + 48
# (so '0'..'o'). It is LEB128 with 5-bit groups. Facts from the COCO API's maskApi.c
# description (rleToString/rleFrString); the code below is our own.


def _compress_counts(counts: Sequence[int]) -> str:
    out = []
    for i, count in enumerate(counts):
        x = int(count) - (int(counts[i - 2]) if i > 2 else 0)
        while True:
            c = x & 0x1F
            x >>= 5  # arithmetic shift: negative deltas keep their sign
            # stop once the remaining bits are pure sign extension of bit 0x10
            more = x != -1 if c & 0x10 else x != 0
            out.append(chr((c | 0x20 if more else c) + 48))
            if not more:
                break
    return "".join(out)


def _decompress_counts(s: str) -> list[int]:
    counts: list[int] = []
    p, n = 0, len(s)
    while p < n:
        x, shift = 0, 0
        while True:
            if p >= n:
                raise ValueError("rle counts string must end with a complete number, got a cut one")
            c = ord(s[p]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"rle counts must use characters '0'..'o', got {s[p]!r}")
            p += 1
            x |= (c & 0x1F) << shift
            shift += 5
            if not c & 0x20:
                if c & 0x10:
                    x -= 1 << shift  # sign-extend
                break
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def _runs_in_box(crop: np.ndarray, y0: int, x0: int, height: int, width: int) -> list[int]:
    """COCO counts of a (height, width) mask that is False outside ``crop`` at (y0, x0).

    Work on the crop only, so an object's RLE costs its box, not the whole image.
    """
    total = height * width
    if not crop.any():
        return [total]
    ch, cw = crop.shape
    # a False row above and below each column: every run starts and ends inside it
    padded = np.zeros((ch + 2, cw), bool)
    padded[1:-1] = crop
    flat = padded.ravel(order="F")
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1  # index of the first pixel after a change
    col, row = np.divmod(edges, ch + 2)
    pos = (x0 + col) * height + (y0 + row - 1)  # same place in the image's column-major order
    # a run that ends at the bottom of one column and restarts at the top of the next is one
    # run in column-major order: drop the end/start pair that lands on the same position
    uniq, times = np.unique(pos, return_counts=True)
    pos = uniq[times == 1]
    pos = pos[pos < total]  # a run reaching the last pixel ends the counts, no empty run after
    bounds = np.concatenate(([0], pos, [total]))
    return np.diff(bounds).tolist()


def _rle_size(rle: Any) -> tuple[int, int]:
    if not isinstance(rle, Mapping) or "size" not in rle or "counts" not in rle:
        raise ValueError(f"rle must be a dict with 'size' and 'counts', got {type(rle).__name__}")
    size = rle["size"]
    if len(size) != 2 or any(
        isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0 for v in size
    ):
        raise ValueError(f"rle['size'] must be [height, width] non-negative integers, got {size}")
    return int(size[0]), int(size[1])


def _rle_counts(rle: Any) -> tuple[tuple[int, int], list[int]]:
    h, w = _rle_size(rle)
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    counts = _decompress_counts(counts) if isinstance(counts, str) else [int(c) for c in counts]
    if any(c < 0 for c in counts):
        raise ValueError("rle counts must be >= 0, got a negative run")
    if sum(counts) != h * w:
        raise ValueError(f"rle counts must sum to height * width = {h * w}, got {sum(counts)}")
    return (h, w), counts


def rle_encode(mask: Any) -> dict:
    """Encode a 2D binary mask as COCO compressed RLE.

    Parameters
    ----------
    mask : array_like, 2D
        bool (or 0/1, 0/255) mask of shape (height, width).

    Returns
    -------
    dict
        ``{"size": [height, width], "counts": str}``, the string pycocotools'
        ``mask.encode`` gives (as ``str`` rather than ``bytes``, so it is JSON-ready).
        Counts run over the column-major pixel order and start with the zeros.

    References
    ----------
    .. [1] Lin, T.-Y. et al. "Microsoft COCO: Common Objects in Context", ECCV 2014,
       :doi:`10.1007/978-3-319-10602-1_48`; COCO API ``maskApi.c`` (rleToString).

    Examples
    --------
    >>> rle_encode(np.array([[0, 1], [0, 1]], bool))
    {'size': [2, 2], 'counts': '22'}
    """
    arr = _binary(mask, ndim=(2,))
    h, w = arr.shape
    if arr.size == 0:
        return {"size": [h, w], "counts": _compress_counts([0])}
    rows = np.flatnonzero(arr.any(axis=1))
    cols = np.flatnonzero(arr.any(axis=0))
    if rows.size == 0:
        return {"size": [h, w], "counts": _compress_counts([h * w])}
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    counts = _runs_in_box(arr[y0:y1, x0:x1], int(y0), int(x0), h, w)
    return {"size": [h, w], "counts": _compress_counts(counts)}


def rle_decode(rle: Mapping) -> np.ndarray:
    """Decode a COCO RLE (compressed string or uncompressed list ``counts``) to a mask.

    Parameters
    ----------
    rle : dict
        ``{"size": [height, width], "counts": str | bytes | list of int}``.

    Returns
    -------
    ndarray of bool, shape (height, width)

    Raises
    ------
    ValueError
        If the counts are malformed or do not sum to ``height * width``.

    References
    ----------
    .. [1] Lin, T.-Y. et al. "Microsoft COCO: Common Objects in Context", ECCV 2014,
       :doi:`10.1007/978-3-319-10602-1_48`; COCO API ``maskApi.c`` (rleFrString).

    Examples
    --------
    >>> rle_decode({"size": [2, 2], "counts": [2, 2]}).astype(int)
    array([[0, 1],
           [0, 1]])
    """
    (h, w), counts = _rle_counts(rle)
    values = np.arange(len(counts)) % 2 == 1  # runs alternate, zeros first
    flat = np.repeat(values, counts)
    return flat.reshape((h, w), order="F")


def rle_area(rle: Mapping) -> int:
    """Number of foreground pixels of a COCO RLE (without decoding the mask).

    Examples
    --------
    >>> rle_area({"size": [2, 2], "counts": "22"})
    2
    """
    _, counts = _rle_counts(rle)
    return int(sum(counts[1::2]))


# --------------------------------------------------------------------------- COCO helpers


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
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"{name} ids must be unique, got duplicates {dup[:10]}")
    return set(ids)


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
    images = [dict(im) for im in images]
    categories = [dict(c) for c in categories]
    for im in images:
        _require(im, ("id", "height", "width"), name="images entries")
    for c in categories:
        _require(c, ("id", "name"), name="categories entries")
    sizes = {im["id"]: (int(im["height"]), int(im["width"])) for im in images}
    _unique_ids(images, name="images")
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
    arr = _labels(instances, name="instances", ndim=(2,))
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
