"""Classical segmentation: thresholds, region growing, k-means clustering.

Plain NumPy/SciPy/numba functions in the scikit-image manner; importing this package never
imports torch. :func:`segment` maps the CLI's method names onto them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: method name -> what it returns
METHODS = {
    "fixed": "bool mask: image > value",
    "otsu": "bool mask: image > Otsu threshold",
    "li": "bool mask: image > Li threshold",
    "yen": "bool mask: image > Yen threshold",
    "triangle": "bool mask: image > triangle threshold",
    "multiotsu": "int32 label map with `classes` classes (0 = darkest)",
    "local": "bool mask: image > local (adaptive) threshold",
    "hysteresis": "bool mask: hysteresis between low and high",
    "region-grow": "int32 label map: one label per seed (tolerance growing)",
    "srg": "int32 label map: seeded region growing (Adams & Bischof 1994)",
    "confidence": "bool mask: confidence-connected growing (as ITK)",
    "kmeans": "int32 label map with k clusters ordered by mean (0 = darkest)",
}

_NEEDS_SEEDS = ("region-grow", "srg", "confidence")


def segment(
    image: np.ndarray,
    method: str,
    *,
    seeds: Sequence[Sequence[int]] | None = None,
    value: float | None = None,
    classes: int = 3,
    block_size: int = 35,
    local_method: str = "gaussian",
    offset: float = 0.0,
    low: float | None = None,
    high: float | None = None,
    tolerance: float | None = None,
    connectivity: int = 1,
    multiplier: float = 2.5,
    iterations: int = 2,
    initial_radius: int = 1,
    k: int = 3,
    color_space: str = "lab",
    spatial_weight: float = 0.0,
    seed: int = 0,
    channel_axis: int | None = None,
) -> np.ndarray:
    """Run one classical method by name; return a bool mask or an int32 label map.

    ``image`` is grey 2D/3D; only ``region-grow`` and ``kmeans`` accept a colour image
    (``channel_axis=-1``). Seeds are array indices ``(row, col[, slice])``.

    Raises
    ------
    ValueError
        Unknown method, or a parameter the method needs is missing.
    """
    from segloc._validation import check_choice

    check_choice(method, tuple(METHODS), name="method")
    if method in _NEEDS_SEEDS and not seeds:
        raise ValueError(f"method {method!r} needs at least one seed")
    colour = channel_axis is not None
    if colour and method not in ("region-grow", "kmeans"):
        raise ValueError(
            f"method {method!r} needs a grey image; choose a channel of the colour image"
        )

    if method in ("fixed", "otsu", "li", "yen", "triangle", "multiotsu", "local", "hysteresis"):
        from segloc.classical import threshold as th

        if method == "fixed":
            if value is None:
                raise ValueError("method 'fixed' needs a threshold value")
            return th.threshold_fixed(image, value)
        if method == "multiotsu":
            return th.apply_thresholds(image, th.threshold_multiotsu(image, classes=classes))
        if method == "local":
            return image > th.threshold_local(
                image, block_size=block_size, method=local_method, offset=offset
            )
        if method == "hysteresis":
            if low is None or high is None:
                raise ValueError("method 'hysteresis' needs low and high thresholds")
            return th.apply_hysteresis_threshold(image, low, high)
        func = {
            "otsu": th.threshold_otsu,
            "li": th.threshold_li,
            "yen": th.threshold_yen,
            "triangle": th.threshold_triangle,
        }[method]
        return image > func(image)

    if method in _NEEDS_SEEDS:
        from segloc.classical import region_growing as rg

        if method == "region-grow":
            if tolerance is None:
                raise ValueError("method 'region-grow' needs a tolerance")
            return rg.region_grow(
                image,
                seeds,
                tolerance=tolerance,
                connectivity=connectivity,
                channel_axis=channel_axis,
            )
        if method == "srg":
            return rg.seeded_region_growing(image, seeds, connectivity=connectivity)
        return rg.confidence_connected(
            image,
            seeds,
            multiplier=multiplier,
            iterations=iterations,
            initial_radius=initial_radius,
            connectivity=connectivity,
        )

    from segloc.classical import clustering

    if colour:
        return clustering.kmeans_color(
            image, k, color_space=color_space, spatial_weight=spatial_weight, seed=seed
        ).labels
    return clustering.kmeans_intensity(image, k).labels
