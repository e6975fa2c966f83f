"""Classical segmentation: thresholds, region growing, k-means clustering.

Plain NumPy/SciPy/numba functions in the scikit-image manner; importing this package never
imports torch. :data:`METHODS` is the one registry of methods by name: :func:`segment` runs
one with the options a person gives (the CLI's ``segment``, the web page),
:func:`segment_unattended` runs one with no click and no value (``compare``, the demo).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from segloc._validation import check_choice, check_int

__all__ = [
    "METHODS",
    "Method",
    "Options",
    "check_unattended",
    "interior_point",
    "segment",
    "segment_unattended",
]


@dataclass(frozen=True)
class Options:
    """Every option of every method; each method reads the ones it needs.

    Seeds are array indices ``(row, col[, slice])``. ``channel_axis=-1`` marks a colour
    image (``region-grow`` and ``kmeans`` only).
    """

    seeds: Sequence[Sequence[int]] | None = None
    value: float | None = None
    classes: int = 3
    block_size: int = 35
    local_method: str = "gaussian"
    offset: float = 0.0
    low: float | None = None
    high: float | None = None
    tolerance: float | None = None
    connectivity: int = 1
    multiplier: float = 2.5
    iterations: int = 2
    initial_radius: int = 1
    k: int = 3
    color_space: str = "lab"
    spatial_weight: float = 0.0
    seed: int = 0
    channel_axis: int | None = None


@dataclass(frozen=True)
class Method:
    """One classical method: how to run it and what it needs.

    Attributes
    ----------
    run : callable
        ``(image, Options) -> result``.
    returns : str
        What the result is (bool mask or int32 label map), for help texts.
    needs : tuple of str
        Options that must not be None (e.g. ``value`` for ``fixed``).
    seeds : bool
        Needs at least one seed point.
    colour : bool
        Accepts a colour image (``channel_axis=-1``).
    unattended : bool
        Runs on a dataset with no user input (:func:`segment_unattended`).
    """

    run: Callable[[np.ndarray, Options], np.ndarray]
    returns: str
    needs: tuple[str, ...] = ()
    seeds: bool = False
    colour: bool = False
    unattended: bool = False


def _threshold(name: str) -> Callable[[np.ndarray, Options], np.ndarray]:
    def run(image: np.ndarray, o: Options) -> np.ndarray:
        from segloc.classical import threshold as th

        return th.apply_threshold(image, getattr(th, f"threshold_{name}")(image))

    return run


def _fixed(image: np.ndarray, o: Options) -> np.ndarray:
    from segloc.classical.threshold import threshold_fixed

    return threshold_fixed(image, o.value)


def _multiotsu(image: np.ndarray, o: Options) -> np.ndarray:
    from segloc.classical.threshold import apply_thresholds, threshold_multiotsu

    return apply_thresholds(image, threshold_multiotsu(image, classes=o.classes))


def _local(image: np.ndarray, o: Options) -> np.ndarray:
    from segloc.classical.local_threshold import apply_local_threshold

    return apply_local_threshold(
        image, block_size=o.block_size, method=o.local_method, offset=o.offset
    )


def _hysteresis(image: np.ndarray, o: Options) -> np.ndarray:
    from segloc.classical.threshold import apply_hysteresis_threshold

    return apply_hysteresis_threshold(image, o.low, o.high)


def _region_grow(image: np.ndarray, o: Options) -> np.ndarray:
    from segloc.classical.region_growing import region_grow

    return region_grow(
        image,
        o.seeds,
        tolerance=o.tolerance,
        connectivity=o.connectivity,
        channel_axis=o.channel_axis,
    )


def _srg(image: np.ndarray, o: Options) -> np.ndarray:
    from segloc.classical.region_growing import seeded_region_growing

    return seeded_region_growing(image, o.seeds, connectivity=o.connectivity)


def _confidence(image: np.ndarray, o: Options) -> np.ndarray:
    from segloc.classical.region_growing import confidence_connected

    return confidence_connected(
        image,
        o.seeds,
        multiplier=o.multiplier,
        iterations=o.iterations,
        initial_radius=o.initial_radius,
        connectivity=o.connectivity,
    )


def _kmeans(image: np.ndarray, o: Options) -> np.ndarray:
    from segloc.classical import clustering

    if o.channel_axis is not None:
        return clustering.kmeans_color(
            image, o.k, color_space=o.color_space, spatial_weight=o.spatial_weight, seed=o.seed
        ).labels
    return clustering.kmeans_intensity(image, o.k).labels


#: method name -> :class:`Method`; the one list of classical methods (CLI choices included)
METHODS: dict[str, Method] = {
    "fixed": Method(_fixed, "bool mask: image > value", needs=("value",)),
    "otsu": Method(_threshold("otsu"), "bool mask: image > Otsu threshold", unattended=True),
    "li": Method(_threshold("li"), "bool mask: image > Li threshold", unattended=True),
    "yen": Method(_threshold("yen"), "bool mask: image > Yen threshold", unattended=True),
    "triangle": Method(
        _threshold("triangle"), "bool mask: image > triangle threshold", unattended=True
    ),
    "multiotsu": Method(
        _multiotsu, "int32 label map with `classes` classes (0 = darkest)", unattended=True
    ),
    "local": Method(_local, "bool mask: image > local (adaptive) threshold"),
    "hysteresis": Method(
        _hysteresis, "bool mask: hysteresis between low and high", needs=("low", "high")
    ),
    "region-grow": Method(
        _region_grow,
        "int32 label map: one label per seed (tolerance growing)",
        needs=("tolerance",),
        seeds=True,
        colour=True,
    ),
    "srg": Method(
        _srg,
        "int32 label map: seeded region growing (Adams & Bischof 1994)",
        seeds=True,
        unattended=True,
    ),
    "confidence": Method(
        _confidence,
        "bool mask: confidence-connected growing (as ITK)",
        seeds=True,
        unattended=True,
    ),
    "kmeans": Method(
        _kmeans,
        "int32 label map with k clusters ordered by mean (0 = darkest)",
        colour=True,
        unattended=True,
    ),
}


def segment(image: np.ndarray, method: str, **options: Any) -> np.ndarray:
    """Run one classical method by name; return a bool mask or an int32 label map.

    ``image`` is grey 2D/3D; only methods marked ``colour`` in :data:`METHODS`
    (``region-grow``, ``kmeans``) accept a colour image (``channel_axis=-1``).

    Parameters
    ----------
    image : ndarray
    method : str
        A key of :data:`METHODS`.
    **options
        Fields of :class:`Options` (seeds as array indices ``(row, col[, slice])``, value,
        classes, block_size, tolerance, k, ...); each method reads the ones it needs.

    Raises
    ------
    ValueError
        Unknown method, or an option the method needs is missing.
    TypeError
        An option that no method has.

    Examples
    --------
    >>> image = np.array([[10, 11, 12], [50, 51, 52]], dtype=np.uint8)
    >>> segment(image, "otsu")
    array([[False, False, False],
           [ True,  True,  True]])
    """
    check_choice(method, tuple(METHODS), name="method")
    known = {f.name for f in fields(Options)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"segment() got unknown option(s) {unknown}; known: {sorted(known)}")
    opts = Options(**options)
    spec = METHODS[method]
    if spec.seeds and not opts.seeds:
        raise ValueError(f"method {method!r} needs at least one seed")
    for name in spec.needs:
        if getattr(opts, name) is None:
            raise ValueError(f"method {method!r} needs {name}")
    if opts.channel_axis is not None and not spec.colour:
        raise ValueError(
            f"method {method!r} needs a grey image; choose a channel of the colour image"
        )
    return spec.run(image, opts)


def interior_point(region: np.ndarray) -> tuple[int, ...] | None:
    """The pixel of ``region`` farthest from its border (None for an empty region): the
    point a person would click to mark it."""
    from scipy import ndimage as ndi

    if not region.any():
        return None
    dist = ndi.distance_transform_edt(region)
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(dist)), region.shape))


def check_unattended(method: str, num_classes: int = 2) -> int:
    """Check that ``method`` runs unattended into ``num_classes`` classes; return the count.

    Raises
    ------
    ValueError
        A method that needs a person (seeds, a value), or two-class methods asked for more.
    """
    choices = tuple(n for n, m in METHODS.items() if m.unattended)
    check_choice(method, choices, name="method")
    num_classes = check_int(num_classes, name="num_classes", minimum=2)
    if method in ("otsu", "li", "yen", "triangle", "confidence") and num_classes != 2:
        raise ValueError(
            f"method {method!r} gives 2 classes, got num_classes={num_classes}; "
            "use multiotsu, kmeans or srg"
        )
    return num_classes


def segment_unattended(image: np.ndarray, method: str, *, num_classes: int = 2) -> np.ndarray:
    """Run a classical method with no user input; int32 class indices in intensity order.

    For scoring a method on a dataset, where nobody clicks or picks a value. Classes
    follow intensity (class 0 = darkest): threshold methods (two classes only) give class 1
    above the threshold, ``multiotsu`` and ``kmeans`` give ``num_classes`` classes. The
    seeded methods get automatic seeds: ``srg`` one seed per multi-Otsu class at its
    :func:`interior_point`, region ``i`` becoming class ``i``; ``confidence`` one seed at the
    interior point of the brighter Otsu class, growing class 1. A dataset whose foreground
    is darker than its background scores badly -- an honest result for a method that cannot
    know.

    Parameters
    ----------
    image : ndarray, grey 2D or 3D
        Grey images keep their dtype: histogram thresholds bin integers exactly.
    method : str
        A key of :data:`METHODS` marked ``unattended``.
    num_classes : int

    Examples
    --------
    >>> segment_unattended(np.array([[1, 1, 9, 9]], np.uint8), "otsu")
    array([[0, 0, 1, 1]], dtype=int32)
    """
    num_classes = check_unattended(method, num_classes)
    if method == "multiotsu":
        return segment(image, "multiotsu", classes=num_classes)
    if method == "kmeans":
        return segment(image, "kmeans", k=num_classes)
    if method not in ("srg", "confidence"):
        return segment(image, method).astype(np.int32)
    if num_classes == 2 or method == "confidence":
        classes = segment(image, "otsu").astype(np.int32)
    else:
        classes = segment(image, "multiotsu", classes=num_classes)
    if method == "confidence":
        seed = interior_point(classes == 1)
        if seed is None:
            return np.zeros(image.shape, np.int32)
        return segment(image, "confidence", seeds=[seed]).astype(np.int32)
    seeds = [interior_point(classes == c) for c in range(num_classes)]
    present = [(c, s) for c, s in enumerate(seeds) if s is not None]
    regions = segment(image, "srg", seeds=[s for _, s in present])
    lut = np.array([0] + [c for c, _ in present], np.int32)  # region i+1 -> class
    return lut[regions]
