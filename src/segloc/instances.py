"""Instances: connected objects of masks, label maps and probability maps, and their boxes.

A semantic output (a mask, a label map, a foreground probability map or a ``(C, ...)``
class probability map) becomes objects in three steps:

1. threshold it into a mask (per class for a class map: the arg-max class, kept where its
   probability reaches the threshold);
2. split the mask into instances: connected components, and optionally a watershed on the
   distance transform so that touching round objects (nuclei, cells) come apart
   (:func:`split_touching`);
3. box every instance and score it by the mean probability of its pixels.

Instance maps are ``int32`` (0 = background, one id per object, ids need not be contiguous).
Boxes follow ``docs/conventions.md``: ``(x0, y0, x1, y1)`` (3D ``(x0, y0, z0, x1, y1, z1)``),
x = column (axis 1), y = row (axis 0), z = slice (axis 2), half-open pixel edges, so
``image[y0:y1, x0:x1]`` crops an object exactly. COCO output is in :mod:`segloc.coco`.

References
----------
.. [Beucher] Beucher, S. and Meyer, F. "The morphological approach to segmentation: the
   watershed transformation", in Mathematical Morphology in Image Processing, 433-481, 1993.
   :doi:`10.1201/9781482277234-12`
.. [Caicedo] Caicedo, J. C. et al. "Nucleus segmentation across imaging experiments: the
   2018 Data Science Bowl", Nature Methods 16, 1247-1253, 2019.
   :doi:`10.1038/s41592-019-0612-7`
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.segmentation import relabel_sequential, watershed

from segloc._validation import (
    INT32_MAX,
    check_classes,
    check_connectivity,
    check_image,
    check_int,
    check_labels,
    check_same_shape,
    check_spacing,
)
from segloc.masks import connected_components, connectivity_structure, remove_small_objects, to_bool

__all__ = [
    "semantic_to_instances",
    "instances_to_semantic",
    "instance_boxes",
    "mask_to_boxes",
    "class_boxes",
    "region_table",
    "split_touching",
    "instances_from_probability",
    "instances_from_class_probability",
    "score_instances",
    "detections_from_probability",
    "detections_from_class_probability",
]


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
    arr = check_labels(labels, ndim=(2, 3))
    structure = connectivity_structure(arr.ndim, connectivity)
    wanted = (
        [int(c) for c in np.unique(arr) if c != 0] if classes is None else check_classes(classes)
    )
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
    arr = check_labels(instances, name="instances")
    if class_of is None:
        return (arr != 0).astype(np.int32)
    ids, inverse = np.unique(arr, return_inverse=True)
    missing = [int(i) for i in ids if i != 0 and int(i) not in class_of]
    if missing:
        raise ValueError(
            f"class_of must give a class for every instance id, got none for {missing[:10]}"
        )
    lut = np.array([0 if i == 0 else int(class_of[int(i)]) for i in ids], np.int64)
    if lut.size and (lut.min() < 0 or lut.max() > INT32_MAX):
        raise ValueError(
            f"class_of classes must be in [0, {INT32_MAX}], got {lut.min()}..{lut.max()}"
        )
    return lut[inverse.reshape(arr.shape)].astype(np.int32)


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
    arr = check_labels(instances, name="instances", ndim=(2, 3))
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
    ids, boxes = instance_boxes(check_labels(labels, ndim=(2, 3)))
    return {int(i): b for i, b in zip(ids, boxes, strict=True)}


def region_table(
    labels: Any,
    image: Any = None,
    *,
    spacing: Sequence[float] | float | None = None,
    connectivity: int = 1,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Measure every connected object of each class: pixels, physical size, box, mean, centre.

    The objects are those of :func:`semantic_to_instances`; the table is a dict of columns,
    one row per object in the order of its instance id (as scikit-image's
    ``regionprops_table``, with segloc's box convention).

    Parameters
    ----------
    labels : array_like of int, 2D or 3D
        Label map, 0 = background; a bool mask is one class, 1.
    image : array_like, optional
        Intensity image of the same shape; its mean inside each object is the ``"mean"``
        column (left out without an image). NaN pixels make their object's mean NaN.
    spacing : float or sequence of float, optional
        Physical size of a pixel along each axis (row, col[, slice]); default 1.
    connectivity : int, optional
        1..ndim or 4/8 (2D), 6/18/26 (3D), as in :func:`segloc.masks.connected_components`.

    Returns
    -------
    instances : ndarray of int32
        The instance map: ids 1..N, class by class then in raster order, 0 elsewhere.
    table : dict of ndarray
        ``"instance"`` (N,) int64, ``"class"`` (N,) int64, ``"area"`` (N,) int64 pixel
        (voxel) count, ``"size"`` (N,) float64 area times the product of ``spacing``,
        ``"box"`` (N, 4) / (N, 6) float64 half-open ``[x0, y0, x1, y1]`` /
        ``[x0, y0, z0, x1, y1, z1]``, ``"centre"`` (N, ndim) float64 centre of mass as
        array indices (row, col[, slice]), and ``"mean"`` (N,) float64 with an ``image``.

    Raises
    ------
    ValueError
        If ``image`` does not have the shape of ``labels``, or ``spacing`` does not give
        one positive value per axis.

    References
    ----------
    .. [1] van der Walt, S. et al. "scikit-image: image processing in Python", PeerJ 2:e453,
       2014 (``skimage.measure.regionprops``, the reference for these measurements).
       :doi:`10.7717/peerj.453`

    Examples
    --------
    >>> inst, table = region_table(np.array([[1, 1, 0, 2]]), np.array([[2.0, 4.0, 0.0, 7.0]]),
    ...                            spacing=0.5)
    >>> table["class"], table["area"], table["size"], table["mean"]
    (array([1, 2]), array([2, 1]), array([0.5 , 0.25]), array([3., 7.]))
    >>> table["box"], table["centre"]
    (array([[0., 0., 2., 1.],
           [3., 0., 4., 1.]]), array([[0. , 0.5],
           [0. , 3. ]]))
    """
    arr = check_labels(labels, ndim=(2, 3))
    pixel_size = float(np.prod(check_spacing(spacing, arr.ndim)))
    values = None
    if image is not None:
        values = np.asarray(image)
        if values.dtype == object or not (
            np.issubdtype(values.dtype, np.number) or values.dtype == np.bool_
        ):
            raise TypeError(f"image must be a numeric array, got dtype {values.dtype}")
        check_same_shape(values, arr, names=("image", "labels"))
    instances, class_of = semantic_to_instances(arr, connectivity=connectivity)
    ids, boxes = instance_boxes(instances)
    flat = instances.ravel()
    # ids are 1..N (semantic_to_instances numbers them contiguously): one bincount slot each
    counts = np.bincount(flat, minlength=len(ids) + 1)
    area = counts[ids].astype(np.int64)
    centre = np.zeros((0, arr.ndim), np.float64)
    if ids.size:
        centre = np.array(ndi.center_of_mass(np.ones(arr.shape, np.uint8), instances, ids))
    table = {
        "instance": ids,
        "class": np.array([class_of[int(i)] for i in ids], np.int64),
        "area": area,
        "size": area * pixel_size,
        "box": boxes,
        "centre": centre.reshape(len(ids), arr.ndim).astype(np.float64),
    }
    if values is not None:
        sums = np.bincount(flat, weights=values.astype(np.float64).ravel(), minlength=len(counts))
        table["mean"] = sums[ids] / area
    return instances, table


def _check_threshold(value: Any) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise TypeError(f"threshold must be a number, got {type(value).__name__}")
    if not 0 <= value <= 1:
        raise ValueError(f"threshold must be in [0, 1], got {value}")
    return float(value)


def _check_prob(prob: Any, *, ndim: Sequence[int], name: str = "prob") -> np.ndarray:
    arr = check_image(prob, name=name, ndim=ndim)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.float32)
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0 or hi > 1:
        raise ValueError(f"{name} must hold probabilities in [0, 1], got values in [{lo}, {hi}]")
    return arr


def _check_footprint(footprint: Any, ndim: int) -> np.ndarray | None:
    if footprint is None:
        return None
    fp = np.asarray(footprint)
    if fp.ndim != ndim or fp.size == 0:
        raise ValueError(f"footprint must be a non-empty {ndim}D array, got shape {fp.shape}")
    return fp.astype(bool)


def split_touching(
    mask: Any,
    *,
    min_distance: int = 5,
    footprint: Any = None,
    connectivity: int = 1,
) -> np.ndarray:
    """Split a binary mask into instances, separating touching round objects.

    Every connected component is flooded by a watershed of the negated Euclidean distance
    transform from markers at its local distance maxima ([Beucher]_, the usual recipe for
    nuclei [Caicedo]_): two disks touching at a neck have two maxima and come apart along
    the neck. Maxima that form one plateau (an object of even width) are one marker, and a
    component gets exactly one instance when its maxima are closer than ``min_distance``.

    Parameters
    ----------
    mask : array_like, 2D or 3D
        bool mask (or 0/1, 0/255).
    min_distance : int, optional
        Smallest distance in pixels between two markers (``peak_local_max``): about the
        radius of the smallest object that should stay whole.
    footprint : array_like of bool, optional
        Neighbourhood in which a marker must be the maximum; overrides ``min_distance``
        for the maximum filter (scikit-image's rule).
    connectivity : int, optional
        Of components, markers and the watershed: 1..ndim or 4/8 (2D), 6/18/26 (3D).

    Returns
    -------
    ndarray of int32, same shape
        Instances numbered 1..N, 0 = background; every foreground pixel belongs to one.

    References
    ----------
    .. [1] Beucher, S. and Meyer, F. "The morphological approach to segmentation: the
       watershed transformation", 1993. :doi:`10.1201/9781482277234-12`
    .. [2] scikit-image example "Watershed segmentation" (distance transform + peak_local_max
       markers + watershed).

    Examples
    --------
    >>> yy, xx = np.mgrid[:20, :34]
    >>> two = ((yy - 10) ** 2 + (xx - 10) ** 2 < 64) | ((yy - 10) ** 2 + (xx - 23) ** 2 < 64)
    >>> int(split_touching(two, min_distance=4).max())
    2
    """
    arr = to_bool(check_image(mask, name="mask", ndim=(2, 3)))
    min_distance = check_int(min_distance, name="min_distance", minimum=1)
    rank = check_connectivity(connectivity, arr.ndim)
    fp = _check_footprint(footprint, arr.ndim)
    components, n = connected_components(arr, connectivity=rank)
    if n == 0:
        return np.zeros(arr.shape, np.int32)
    distance = ndi.distance_transform_edt(arr)
    peaks = peak_local_max(
        distance,
        min_distance=min_distance,
        footprint=fp,
        labels=components,
        exclude_border=False,  # objects cut by the image edge still need a marker
    )
    peak_mask = np.zeros(arr.shape, bool)
    peak_mask[tuple(peaks.T)] = True
    # peak_local_max thins a plateau of maxima (a ridge along an even-width or elongated
    # object) to peaks min_distance apart, which would cut the object into pieces: make each
    # plateau holding a peak one marker. A pixel no neighbour exceeds is on a flat top, and
    # two adjacent such pixels have equal values, so their components are the plateaus.
    flat_top = arr & (distance == ndi.maximum_filter(distance, size=3))
    structure = ndi.generate_binary_structure(arr.ndim, arr.ndim)
    plateaus, n_plateaus = ndi.label(flat_top, structure=structure)
    hit = np.zeros(n_plateaus + 1, bool)
    hit[plateaus[peak_mask]] = True
    hit[0] = False
    new_id = np.cumsum(hit).astype(np.int32) * hit
    markers = new_id[plateaus]
    n_markers = int(new_id.max())
    # a component without any peak would be left unlabelled by the watershed
    has_marker = np.zeros(n + 1, bool)
    has_marker[components[peak_mask]] = True
    for c in np.flatnonzero(~has_marker[1:]) + 1:
        pos = ndi.maximum_position(distance, components, c)
        n_markers += 1
        markers[pos] = n_markers
    instances = watershed(-distance, markers, mask=arr, connectivity=rank)
    return relabel_sequential(instances.astype(np.int32))[0].astype(np.int32)


def _instances_of_mask(
    mask: np.ndarray,
    *,
    split: bool,
    min_size: int,
    min_distance: int,
    footprint: Any,
    connectivity: int,
) -> np.ndarray:
    if min_size > 1:
        mask = remove_small_objects(mask, min_size, connectivity=connectivity)
    if split:
        inst = split_touching(
            mask, min_distance=min_distance, footprint=footprint, connectivity=connectivity
        )
        if min_size > 1:
            # watershed slivers below min_size are dropped, not merged (no guess about where)
            inst = relabel_sequential(remove_small_objects(inst, min_size))[0]
        return inst.astype(np.int32)
    return connected_components(mask, connectivity=connectivity)[0]


def instances_from_probability(
    prob: Any,
    *,
    threshold: float = 0.5,
    split: bool = True,
    min_size: int = 1,
    min_distance: int = 5,
    footprint: Any = None,
    connectivity: int = 1,
) -> np.ndarray:
    """Instance map from a foreground probability map.

    Parameters
    ----------
    prob : array_like of float, 2D or 3D
        Foreground probability in [0, 1] (a bool mask also works).
    threshold : float, optional
        Foreground where ``prob >= threshold``.
    split : bool, optional
        Split touching objects with :func:`split_touching`; False keeps connected components.
    min_size : int, optional
        Objects smaller than this many pixels are dropped, before and after splitting.
    min_distance, footprint : optional
        Passed to :func:`split_touching`.
    connectivity : int, optional
        1..ndim or 4/8 (2D), 6/18/26 (3D).

    Returns
    -------
    ndarray of int32, same shape
        Instances 1..N (raster order of their first marker / pixel), 0 = background.

    Examples
    --------
    >>> instances_from_probability(np.array([[0.9, 0.2, 0.6]]), split=False)
    array([[1, 0, 2]], dtype=int32)
    """
    arr = _check_prob(prob, ndim=(2, 3))
    threshold = _check_threshold(threshold)
    min_size = check_int(min_size, name="min_size", minimum=1)
    min_distance = check_int(min_distance, name="min_distance", minimum=1)
    rank = check_connectivity(connectivity, arr.ndim)
    return _instances_of_mask(
        arr >= threshold,
        split=bool(split),
        min_size=min_size,
        min_distance=min_distance,
        footprint=footprint,
        connectivity=rank,
    )


def instances_from_class_probability(
    prob: Any,
    *,
    threshold: float = 0.5,
    background: int | None = 0,
    split: bool = True,
    min_size: int = 1,
    min_distance: int = 5,
    footprint: Any = None,
    connectivity: int = 1,
) -> tuple[np.ndarray, dict[int, int]]:
    """Instance map and instance classes from a class probability map ``(C, ...)``.

    Each pixel takes its arg-max class ``c`` (the lowest on a tie) and is foreground when
    ``c`` is not ``background`` and ``prob[c] >= threshold``; each class's mask is then split
    into instances as in :func:`instances_from_probability`. Instances never overlap.

    Parameters
    ----------
    prob : array_like of float, shape (C, H, W) or (C, H, W, D)
        Per-class probabilities in [0, 1] (soft-max output; sigmoid outputs work too, the
        arg-max deciding between overlapping classes).
    threshold : float, optional
    background : int or None, optional
        Channel of the background class (never boxed); None when every channel is an
        object class.
    split, min_size, min_distance, footprint, connectivity : optional
        As in :func:`instances_from_probability`.

    Returns
    -------
    instances : ndarray of int32, shape (H, W[, D])
        Ids 1..N, numbered class by class (increasing channel), 0 = background.
    class_of : dict
        ``{instance_id: channel}``; the same shape as :func:`segloc.instances.semantic_to_instances`
        returns, ready for :func:`segloc.coco.masks_to_coco_annotations`.

    Examples
    --------
    >>> p = np.array([[[0.8, 0.1, 0.2]], [[0.1, 0.7, 0.1]], [[0.1, 0.2, 0.7]]])
    >>> instances_from_class_probability(p, split=False)
    (array([[0, 1, 2]], dtype=int32), {1: 1, 2: 2})
    """
    arr = _check_prob(prob, ndim=(3, 4))
    n_classes = arr.shape[0]
    threshold = _check_threshold(threshold)
    if background is not None:
        background = check_int(background, name="background", minimum=0)
        if background >= n_classes:
            raise ValueError(
                f"background must be a channel index below {n_classes}, got {background}"
            )
    min_size = check_int(min_size, name="min_size", minimum=1)
    min_distance = check_int(min_distance, name="min_distance", minimum=1)
    rank = check_connectivity(connectivity, arr.ndim - 1)
    best = arr.argmax(axis=0)  # (H, W[, D])
    confident = np.take_along_axis(arr, best[None], axis=0)[0] >= threshold
    instances = np.zeros(best.shape, np.int32)
    class_of: dict[int, int] = {}
    next_id = 1
    for c in range(n_classes):
        if c == background:
            continue
        inst = _instances_of_mask(
            (best == c) & confident,
            split=bool(split),
            min_size=min_size,
            min_distance=min_distance,
            footprint=footprint,
            connectivity=rank,
        )
        k = int(inst.max())
        if k:
            instances[inst > 0] = inst[inst > 0] + (next_id - 1)
            class_of.update({i: c for i in range(next_id, next_id + k)})
            next_id += k
    return instances, class_of


def score_instances(
    instances: Any, prob: Any, *, class_of: Mapping[int, int] | None = None
) -> list[dict]:
    """Box and score every instance by the mean probability of its pixels.

    Parameters
    ----------
    instances : array_like of int, 2D or 3D
        Instance map, 0 = background, ids need not be contiguous.
    prob : array_like of float
        Same shape as ``instances`` (every instance is class 1), or ``(C, *instances.shape)``
        with ``class_of`` (an instance of class ``c`` is scored on ``prob[c]``).
    class_of : mapping, optional
        ``{instance_id: class}``; required with a ``(C, ...)`` map.

    Returns
    -------
    list of dict
        One per instance, by increasing id: ``{"box": [x0, y0, x1, y1] (3D: 6 values),
        "score": float, "class": int, "area": int (pixels), "instance": int}``.

    Examples
    --------
    >>> inst = np.array([[1, 1, 0, 2]])
    >>> score_instances(inst, np.array([[0.6, 0.8, 0.1, 0.9]]))[0]["score"]
    0.7
    """
    inst = check_image(instances, name="instances", ndim=(2, 3), allow_empty=True)
    if not np.issubdtype(inst.dtype, np.integer):
        raise TypeError(f"instances must be an integer label map, got dtype {inst.dtype}")
    if inst.size and inst.min() < 0:
        raise ValueError(f"instances must be >= 0, got minimum {inst.min()}")
    p = _check_prob(prob, ndim=(2, 3, 4))
    ids, boxes = instance_boxes(inst)
    if class_of is None:
        if p.shape != inst.shape:
            raise ValueError(
                f"prob must have the shape of instances {inst.shape} without class_of, "
                f"got {p.shape}"
            )
        classes = np.ones(len(ids), np.int64)
    else:
        if p.shape[1:] != inst.shape:
            raise ValueError(
                f"prob must have shape (C, *{inst.shape}) with class_of, got {p.shape}"
            )
        missing = [int(i) for i in ids if int(i) not in class_of]
        if missing:
            raise ValueError(
                f"class_of must give a class for every instance, got none for {missing[:10]}"
            )
        classes = np.array([int(class_of[int(i)]) for i in ids], np.int64)
        bad = classes[(classes < 0) | (classes >= p.shape[0])]
        if bad.size:
            raise ValueError(
                f"class_of values must be channels of prob (0..{p.shape[0] - 1}), got {int(bad[0])}"
            )
    if not ids.size:
        return []
    # ids may be sparse (up to 2**31): count over the ids present only
    uniq, bins = np.unique(inst.ravel(), return_inverse=True)
    bins = bins.reshape(-1)
    slot = np.searchsorted(uniq, ids)  # (N,) bin of each instance
    areas = np.bincount(bins, minlength=len(uniq))[slot]
    sums = np.empty(len(ids), np.float64)
    # one weighted bincount per class present: O(classes * pixels), not O(instances * pixels)
    for c in np.unique(classes):
        plane = p if class_of is None else p[c]
        per_bin = np.bincount(bins, weights=plane.ravel().astype(np.float64), minlength=len(uniq))
        sel = classes == c
        sums[sel] = per_bin[slot[sel]]
    return [
        {
            "box": boxes[k].tolist(),
            "score": float(sums[k] / areas[k]),
            "class": int(classes[k]),
            "area": int(areas[k]),
            "instance": int(i),
        }
        for k, i in enumerate(ids)
    ]


def detections_from_probability(
    prob: Any,
    *,
    threshold: float = 0.5,
    split: bool = True,
    min_size: int = 1,
    min_distance: int = 5,
    footprint: Any = None,
    connectivity: int = 1,
) -> list[dict]:
    """Scored boxes of the objects of a foreground probability map.

    :func:`instances_from_probability` then :func:`score_instances`; the ``"instance"`` ids
    are those of ``instances_from_probability(prob, **same options)``.

    Parameters
    ----------
    prob : array_like of float, 2D or 3D
        Foreground probability in [0, 1].
    threshold, split, min_size, min_distance, footprint, connectivity : optional
        As in :func:`instances_from_probability`.

    Returns
    -------
    list of dict
        ``{"box", "score" (mean probability over the instance), "class": 1, "area",
        "instance"}``, by increasing instance id.

    Examples
    --------
    >>> dets = detections_from_probability(np.array([[0.9, 0.7, 0.0, 0.6]]), split=False)
    >>> [(d["box"], round(d["score"], 2)) for d in dets]
    [([0.0, 0.0, 2.0, 1.0], 0.8), ([3.0, 0.0, 4.0, 1.0], 0.6)]
    """
    inst = instances_from_probability(
        prob,
        threshold=threshold,
        split=split,
        min_size=min_size,
        min_distance=min_distance,
        footprint=footprint,
        connectivity=connectivity,
    )
    return score_instances(inst, prob)


def detections_from_class_probability(
    prob: Any,
    *,
    threshold: float = 0.5,
    background: int | None = 0,
    split: bool = True,
    min_size: int = 1,
    min_distance: int = 5,
    footprint: Any = None,
    connectivity: int = 1,
) -> list[dict]:
    """Scored boxes of the objects of a class probability map ``(C, ...)``.

    :func:`instances_from_class_probability` then :func:`score_instances`: an instance of
    class (channel) ``c`` is scored by the mean of ``prob[c]`` over its pixels.

    Returns
    -------
    list of dict
        ``{"box", "score", "class": channel, "area", "instance"}`` by increasing instance id.

    Examples
    --------
    >>> p = np.array([[[0.8, 0.1, 0.2]], [[0.1, 0.7, 0.1]], [[0.1, 0.2, 0.7]]])
    >>> [(d["class"], d["box"]) for d in detections_from_class_probability(p, split=False)]
    [(1, [1.0, 0.0, 2.0, 1.0]), (2, [2.0, 0.0, 3.0, 1.0])]
    """
    inst, class_of = instances_from_class_probability(
        prob,
        threshold=threshold,
        background=background,
        split=split,
        min_size=min_size,
        min_distance=min_distance,
        footprint=footprint,
        connectivity=connectivity,
    )
    return score_instances(inst, prob, class_of=class_of)
