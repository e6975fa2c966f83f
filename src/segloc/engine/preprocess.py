"""Intensity normalisation and resampling, as training and inference both apply them.

NumPy/SciPy only, so they run cheaply in DataLoader workers.

References
----------
.. [1] Isensee, F. et al. "nnU-Net: a self-configuring method for deep learning-based
   biomedical image segmentation", Nature Methods 18, 2021,
   :doi:`10.1038/s41592-020-01008-z` (z-score and percentile normalisation, resampling
   to a target spacing).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from segloc._validation import check_choice, check_image, check_spacing

__all__ = ["NORMALIZATIONS", "body_mask", "normalize", "normalize_case", "resample"]

#: the per-case normalisations of training and inference (:func:`normalize_case`)
NORMALIZATIONS = ("zscore", "body", "ct", "percentile", "minmax")


def _spatial_mask(mask: Any, shape: tuple[int, ...]) -> np.ndarray | None:
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.dtype != np.bool_:
        raise TypeError(f"mask must be a bool array, got dtype {mask.dtype}")
    if mask.shape != shape:
        raise ValueError(f"mask must have the spatial shape {shape}, got {mask.shape}")
    if not mask.any():
        raise ValueError("mask must select at least one pixel, got an empty mask")
    return mask


def normalize(
    image: Any,
    method: str = "zscore",
    *,
    channel_axis: int | None = None,
    mask: Any = None,
    lower: float = 0.5,
    upper: float = 99.5,
) -> np.ndarray:
    """Normalise intensities per channel; float32 result.

    - ``"zscore"``: ``(x - mean) / std`` (a constant channel becomes 0).
    - ``"percentile"``: clip to the ``lower`` and ``upper`` percentiles, then z-score
      with the mean and std of the clipped values (nnU-Net's CT scheme, here per image).
    - ``"minmax"``: ``(x - min) / (max - min)`` to [0, 1] (a constant channel becomes 0).

    Statistics come from the pixels under ``mask`` when given (e.g. the brain, or
    nonzero voxels of an MRI) and are applied to every pixel, so values outside the
    mask may fall beyond [0, 1] for ``"minmax"``.

    Parameters
    ----------
    image : ndarray
        Any shape; ``channel_axis`` marks a channel axis (each channel on its own).
    method : {"zscore", "percentile", "minmax"}
    channel_axis : int, optional
        None: the whole array is one channel.
    mask : bool ndarray, optional
        Spatial shape (the image's without the channel axis).
    lower, upper : float
        Percentiles for ``"percentile"``, 0 <= lower < upper <= 100.

    Returns
    -------
    float32 ndarray of the image's shape

    References
    ----------
    .. [1] Isensee et al., nnU-Net, Nature Methods 2021, :doi:`10.1038/s41592-020-01008-z`.

    Examples
    --------
    >>> import numpy as np
    >>> normalize(np.array([1.0, 3.0, 1.0, 3.0])).tolist()
    [-1.0, 1.0, -1.0, 1.0]
    >>> normalize(np.array([2.0, 4.0, 6.0]), "minmax").tolist()
    [0.0, 0.5, 1.0]
    """
    check_choice(method, ("zscore", "percentile", "minmax"), name="method")
    image = check_image(image, ndim=range(1, 33))
    if not (0 <= lower < upper <= 100):
        raise ValueError(
            f"lower and upper must satisfy 0 <= lower < upper <= 100, got {lower}, {upper}"
        )
    if channel_axis is None:
        stack = image[None]
    else:
        if not -image.ndim <= channel_axis < image.ndim:
            raise ValueError(
                f"channel_axis must be in {-image.ndim}..{image.ndim - 1}, got {channel_axis}"
            )
        stack = np.moveaxis(image, channel_axis, 0)
    mask = _spatial_mask(mask, stack.shape[1:])
    out = np.empty(stack.shape, np.float32)
    for c, channel in enumerate(stack):
        x = channel.astype(np.float64)
        values = x[mask] if mask is not None else x.ravel()
        if method == "minmax":
            lo, hi = values.min(), values.max()
            out[c] = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
            continue
        if method == "percentile":
            lo, hi = np.percentile(values, [lower, upper])
            x, values = np.clip(x, lo, hi), np.clip(values, lo, hi)
        mean, std = values.mean(), values.std()
        # nnU-Net's floor on the std: a constant channel becomes 0, not NaN
        out[c] = (x - mean) / max(std, 1e-8)
    return out[0] if channel_axis is None else np.moveaxis(out, 0, channel_axis)


def resample(
    image: Any,
    spacing: Sequence[float],
    target_spacing: Sequence[float],
    *,
    order: int = 1,
    channel_axis: int | None = None,
) -> tuple[np.ndarray, tuple[float, ...]]:
    """Resample an image or label map to a target pixel/voxel spacing.

    The output has ``round(shape * spacing / target_spacing)`` pixels per axis (halves
    rounded up, at least 1), and pixel edges of input and output span the same extent
    (:func:`scipy.ndimage.zoom` with ``grid_mode=True``, edge values repeated). Use
    ``order=0`` (nearest) for label maps: it keeps the dtype and creates no new value.
    No anti-aliasing filter is applied when shrinking.

    Parameters
    ----------
    image : ndarray
        Spatial axes plus an optional channel axis.
    spacing, target_spacing : sequence of float
        Current and wanted spacing per spatial axis (a scalar applies to all).
    order : int
        Spline order 0..5: 1 (linear) for images, 0 for labels.
    channel_axis : int, optional
        Axis that is not resampled.

    Returns
    -------
    resampled : ndarray
        float32 for ``order > 0``, the input dtype for ``order = 0``.
    spacing : tuple of float
        The actual new spacing ``spacing * old_shape / new_shape`` (equal to the
        target up to the rounding of the shape).

    References
    ----------
    .. [1] Isensee et al., nnU-Net, Nature Methods 2021, :doi:`10.1038/s41592-020-01008-z`.

    Examples
    --------
    >>> import numpy as np
    >>> out, sp = resample(np.zeros((35, 50, 35)), (1, 1, 1), (2, 2, 2))
    >>> out.shape, sp
    ((18, 25, 18), (1.9444444444444444, 2.0, 1.9444444444444444))
    """
    image = check_image(image, ndim=range(1, 33))
    check_choice(order, range(6), name="order")
    if channel_axis is not None:
        image = np.moveaxis(image, channel_axis, 0)
    spatial = image.shape[1:] if channel_axis is not None else image.shape
    ndim = len(spatial)
    spacing = check_spacing(spacing, ndim, name="spacing")
    target = check_spacing(target_spacing, ndim, name="target_spacing")
    new_shape = tuple(
        max(1, int(np.floor(n * s / t + 0.5)))  # halves up: 17.5 -> 18, as nnU-Net's round
        for n, s, t in zip(spatial, spacing, target, strict=True)
    )
    zoom = [m / n for m, n in zip(new_shape, spatial, strict=True)]
    if order > 0 and image.dtype != np.float64:
        image = image.astype(np.float32, copy=False)

    def one(x: np.ndarray) -> np.ndarray:
        out = ndi.zoom(x, zoom, order=order, mode="nearest", grid_mode=True)
        if out.shape != new_shape:  # zoom rounds shape * factor itself; guard against drift
            raise RuntimeError(f"zoom gave shape {out.shape}, expected {new_shape}")
        return out

    if channel_axis is None:
        out = one(image)
    else:
        out = np.moveaxis(np.stack([one(c) for c in image]), 0, channel_axis)
    if order > 0:
        out = out.astype(np.float32, copy=False)
    new_spacing = tuple(s * n / m for s, n, m in zip(spacing, spatial, new_shape, strict=True))
    return out, new_spacing


def body_mask(image: Any) -> np.ndarray:
    """The body of a ``(C, *spatial)`` image: everything but a dark frame around it.

    A pixel is dark in a channel when it lies in the lowest tenth of the channel's 1-99
    percentile range; the frame is the dark pixels (dark in most channels: two of three, one
    of one) connected to the image border. The rest is the body: the head of an MRI slice
    without the air around it, the patient of a CT without the table's surroundings. A
    channel with a bright or text-marked background is outvoted by the others. Images
    without such a frame, or whose frame would leave less than 5% of the image, are all
    body.

    Returns
    -------
    bool ndarray of the spatial shape

    Examples
    --------
    >>> import numpy as np
    >>> x = np.zeros((1, 8, 8)); x[0, 2:6, 2:6] = np.arange(16).reshape(4, 4) + 10
    >>> int(body_mask(x).sum())
    16
    """
    image = np.asarray(image)
    if image.ndim < 2:
        raise ValueError(f"image must be (C, *spatial), got shape {image.shape}")
    spatial = image.shape[1:]
    step = tuple(slice(None, None, max(1, n // 64)) for n in spatial)
    votes = np.zeros(spatial, np.int32)
    for channel in image:
        lo, hi = np.percentile(channel[step], [1, 99])
        votes += channel <= lo + 0.1 * (hi - lo)
    dark = votes * 2 > image.shape[0]
    labels, _ = ndi.label(dark)
    edge = np.zeros(spatial, bool)
    for axis in range(len(spatial)):
        index = [slice(None)] * len(spatial)
        for end in (0, -1):
            index[axis] = end
            edge[tuple(index)] = True
    frame_ids = np.unique(labels[edge & dark])
    body = ~np.isin(labels, frame_ids[frame_ids > 0])
    return body if body.mean() >= 0.05 else np.ones(spatial, bool)


def normalize_case(
    image: Any, method: str | None, *, stats: Sequence[Mapping[str, float]] | None = None
) -> np.ndarray:
    """Normalise a ``(C, *spatial)`` case for a model, as training and inference both do.

    - ``"zscore"``: each channel ``(x - mean) / std`` over the whole image.
    - ``"body"``: each channel z-scored over :func:`body_mask` (the frame is left out of
      the statistics and set to 0, the body's mean), as nnU-Net does for MRI whose
      non-zero region is much smaller than the image [1]_.
    - ``"ct"``: nnU-Net's CT scheme [1]_ with dataset-wide figures: each channel clipped to
      ``stats[c]["lo"]``..``["hi"]`` (the foreground's 0.5 and 99.5 percentiles) and
      z-scored with ``["mean"]`` and ``["std"]`` (the foreground's).
    - ``"percentile"``, ``"minmax"``: per image, see :func:`normalize`.
    - None: float32 only.

    References
    ----------
    .. [1] Isensee et al., nnU-Net, Nature Methods 2021, :doi:`10.1038/s41592-020-01008-z`.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([[[0.0, 10.0, 30.0]]])
    >>> normalize_case(x, "ct", stats=[{"lo": 0, "hi": 20, "mean": 10, "std": 5}]).tolist()
    [[[-2.0, 0.0, 2.0]]]
    """
    image = np.asarray(image)
    if method is None:
        return image.astype(np.float32)
    check_choice(method, NORMALIZATIONS, name="normalize")
    if method == "ct":
        if stats is None or len(stats) != image.shape[0]:
            raise ValueError(
                f"normalize 'ct' needs intensity stats for each of the {image.shape[0]} "
                f"channel(s), got {stats!r}"
            )
        out = np.empty(image.shape, np.float32)
        for c, (channel, s) in enumerate(zip(image, stats, strict=True)):
            x = np.clip(channel.astype(np.float32), s["lo"], s["hi"])
            out[c] = (x - np.float32(s["mean"])) / np.float32(max(s["std"], 1e-8))
        return out
    if method == "body":
        body = body_mask(image)
        out = normalize(image, "zscore", channel_axis=0, mask=body)
        out[:, ~body] = 0.0
        return out
    return normalize(image, method, channel_axis=0)
