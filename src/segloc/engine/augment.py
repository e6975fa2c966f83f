"""Data augmentation for segmentation on the CPU, 2D and 3D.

Every function takes an image laid out channels first, ``(C, *spatial)`` (what
:class:`segloc.engine.data.SegmentationDataset` feeds a model), and the label map of the
same spatial shape, ``(*spatial)``, and transforms both the same way. Label maps are
only ever moved (flips, 90 degree turns) or resampled with nearest-neighbour
interpolation (``order=0``), so no transform creates a label value that was not there.

Randomness comes only from a ``numpy.random.Generator`` passed in as ``rng``; the same
generator state gives the same result. NumPy and SciPy only (no torch), so the
transforms run cheaply inside DataLoader workers.

References
----------
.. [1] Ronneberger, O., Fischer, P. and Brox, T. "U-Net: Convolutional Networks for
   Biomedical Image Segmentation", MICCAI 2015, :doi:`10.1007/978-3-319-24574-4_28`
   (elastic deformations on a coarse 3x3 grid, sigma 10 px, bicubic interpolation).
.. [2] Isensee, F. et al. "nnU-Net: a self-configuring method for deep learning-based
   biomedical image segmentation", Nature Methods 18, 2021,
   :doi:`10.1038/s41592-020-01008-z` (mirroring, rotation and scaling, brightness,
   contrast, gamma and Gaussian noise with these default ranges).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from segloc._validation import check_choice, check_positive

__all__ = [
    "Augmenter",
    "adjust_intensity",
    "affine_transform",
    "elastic_deform",
    "elastic_field",
    "flip",
    "gaussian_noise",
    "rot90",
]


# --------------------------------------------------------------------------- checks


def _check_pair(image: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    image = np.asarray(image)
    labels = np.asarray(labels)
    if image.ndim not in (3, 4):
        raise ValueError(
            f"image must be (C, rows, cols) or (C, rows, cols, slices), got shape {image.shape}"
        )
    if labels.shape != image.shape[1:]:
        raise ValueError(
            f"labels must have the spatial shape of image {image.shape[1:]}, got {labels.shape}"
        )
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == np.bool_):
        raise TypeError(f"labels must be an integer or bool array, got dtype {labels.dtype}")
    return image, labels


def _check_rng(rng: Any) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return rng


def _check_axes(axes: Any, ndim: int, *, name: str) -> tuple[int, ...]:
    axes = (axes,) if np.isscalar(axes) else tuple(axes)
    for a in axes:
        if not isinstance(a, (int, np.integer)) or not 0 <= a < ndim:
            raise ValueError(f"{name} must be spatial axes in 0..{ndim - 1}, got {axes}")
    if len(set(axes)) != len(axes):
        raise ValueError(f"{name} must not repeat an axis, got {axes}")
    return tuple(int(a) for a in axes)


def _check_range(value: Any, *, name: str, low: float | None = None) -> tuple[float, float]:
    lo, hi = (float(v) for v in value)
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo > hi:
        raise ValueError(f"{name} must be a (low, high) pair with low <= high, got {value}")
    if low is not None and lo < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return lo, hi


# --------------------------------------------------------------------------- exact transforms


def flip(image: Any, labels: Any, axes: int | Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Mirror image and labels along spatial ``axes`` (0 = rows).

    Parameters
    ----------
    image : (C, *spatial) ndarray
    labels : (*spatial) integer ndarray
    axes : int or sequence of int
        Spatial axes, counted without the channel axis.

    Returns
    -------
    image, labels : ndarray
        Contiguous copies.

    Examples
    --------
    >>> import numpy as np
    >>> im, lab = flip(np.arange(4.0).reshape(1, 2, 2), np.eye(2, dtype=int), 1)
    >>> im[0].tolist(), lab.tolist()
    ([[1.0, 0.0], [3.0, 2.0]], [[0, 1], [1, 0]])
    """
    image, labels = _check_pair(image, labels)
    axes = _check_axes(axes, labels.ndim, name="axes")
    out_image = np.flip(image, axis=tuple(a + 1 for a in axes))
    # copy(), not ascontiguousarray: a flipped axis of length 1 counts as contiguous to
    # NumPy, which then returns the view with its negative stride (refused by torch)
    return out_image.copy(), np.flip(labels, axis=axes).copy()


def rot90(
    image: Any, labels: Any, k: int = 1, *, axes: tuple[int, int] = (0, 1)
) -> tuple[np.ndarray, np.ndarray]:
    """Turn image and labels by ``k`` quarter turns in the plane of spatial ``axes``.

    The direction is :func:`numpy.rot90`'s (from the first axis towards the second);
    for 3D volumes the default plane ``(0, 1)`` is the in-plane (rows, cols) turn.

    Examples
    --------
    >>> import numpy as np
    >>> im, lab = rot90(np.arange(4.0).reshape(1, 2, 2), np.eye(2, dtype=int))
    >>> im[0].tolist(), lab.tolist()
    ([[1.0, 3.0], [0.0, 2.0]], [[0, 1], [1, 0]])
    """
    image, labels = _check_pair(image, labels)
    axes = _check_axes(axes, labels.ndim, name="axes")
    if len(axes) != 2:
        raise ValueError(f"axes must be two spatial axes, got {axes}")
    if not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    out_image = np.rot90(image, k, axes=(axes[0] + 1, axes[1] + 1))
    return np.ascontiguousarray(out_image), np.ascontiguousarray(np.rot90(labels, k, axes=axes))


# --------------------------------------------------------------------------- interpolated


def _rotation_matrix(rotation: Any, ndim: int) -> np.ndarray:
    """Forward rotation in array-index coordinates; angles in degrees.

    2D: one angle, turning from axis 0 towards axis 1 as :func:`numpy.rot90` does
    (90 degrees == ``np.rot90(k=1)``). 3D: three angles, the turn about axis ``i``
    happening in the plane of the two other axes, composed as R0 @ R1 @ R2; a
    scalar 0 means no turn.
    """
    angles = np.atleast_1d(np.asarray(rotation, dtype=float))
    want = 1 if ndim == 2 else 3
    if angles.shape != (want,) and not (angles.shape == (1,) and want == 3 and angles[0] == 0):
        raise ValueError(
            f"rotation must be {'one angle' if ndim == 2 else 'three angles'} for {ndim}D, "
            f"got {rotation!r}"
        )
    if not np.isfinite(angles).all():
        raise ValueError(f"rotation must be finite, got {rotation!r}")
    if ndim == 3 and angles.shape == (1,):
        angles = np.zeros(3)

    def plane(theta: float, a: int, b: int) -> np.ndarray:
        # np.rot90 (k=1) maps output (i, j) to input (j, -i) about the centre, so the
        # forward map of +90 degrees is (i, j) -> (-j, i)
        c, s = np.cos(np.deg2rad(theta)), np.sin(np.deg2rad(theta))
        m = np.eye(ndim)
        m[a, a], m[a, b], m[b, a], m[b, b] = c, -s, s, c
        return m

    if ndim == 2:
        return plane(angles[0], 0, 1)
    return plane(angles[0], 1, 2) @ plane(angles[1], 0, 2) @ plane(angles[2], 0, 1)


def affine_transform(
    image: Any,
    labels: Any,
    *,
    rotation: float | Sequence[float] = 0.0,
    scale: float | Sequence[float] = 1.0,
    translation: float | Sequence[float] = 0.0,
    order: int = 1,
    mode: str = "reflect",
) -> tuple[np.ndarray, np.ndarray]:
    """Rotate, scale and shift image and labels about the array centre.

    A point ``p`` of the input moves to ``R S (p - c) + c + t``, with ``c`` the centre
    ``(shape - 1) / 2``. The image is resampled with a spline of ``order`` (1: linear),
    the labels with nearest neighbour, by :func:`scipy.ndimage.affine_transform`.

    Parameters
    ----------
    image : (C, *spatial) ndarray
    labels : (*spatial) integer ndarray
    rotation : float or three floats
        Degrees. 2D: one angle; ``90`` equals :func:`numpy.rot90` with ``k=1``.
        3D: angles about axes 0, 1 and 2 (each a turn in the plane of the other two).
    scale : float or one per spatial axis
        Zoom factor, > 0 (2 = objects twice as large).
    translation : float or one per spatial axis
        Shift in pixels.
    order : int
        Spline order for the image (0..5).
    mode : str
        How values beyond the edge are filled, for image and labels alike (SciPy's
        modes; ``"reflect"`` invents no label value, ``"constant"`` fills with 0).

    Returns
    -------
    image : float32 ndarray
    labels : ndarray of the labels' dtype

    References
    ----------
    .. [1] Isensee et al., nnU-Net, Nature Methods 2021, :doi:`10.1038/s41592-020-01008-z`.

    Examples
    --------
    >>> import numpy as np
    >>> im = np.arange(9.0).reshape(1, 3, 3)
    >>> out, lab = affine_transform(im, np.zeros((3, 3), int), rotation=90, order=0)
    >>> np.array_equal(out[0], np.rot90(im[0]))
    True
    """
    image, labels = _check_pair(image, labels)
    ndim = labels.ndim
    rot = _rotation_matrix(rotation, ndim)
    scale = np.broadcast_to(np.asarray(scale, dtype=float), (ndim,))
    if not (np.isfinite(scale).all() and (scale > 0).all()):
        raise ValueError(f"scale must be positive, got {scale.tolist()}")
    shift = np.broadcast_to(np.asarray(translation, dtype=float), (ndim,))
    if not np.isfinite(shift).all():
        raise ValueError(f"translation must be finite, got {shift.tolist()}")
    check_choice(order, range(6), name="order")
    centre = (np.asarray(labels.shape, dtype=float) - 1) / 2
    # scipy maps output -> input: in = S^-1 R^T (out - c - t) + c
    matrix = np.diag(1 / scale) @ rot.T
    offset = centre - matrix @ (centre + shift)
    out = np.empty(image.shape, np.float32)
    for c in range(image.shape[0]):
        out[c] = ndi.affine_transform(
            image[c].astype(np.float32, copy=False), matrix, offset, order=order, mode=mode
        )
    out_labels = ndi.affine_transform(labels, matrix, offset, order=0, mode=mode)
    return out, out_labels


def elastic_field(
    shape: Sequence[int], *, grid: int = 3, sigma: float = 10.0, rng: np.random.Generator
) -> np.ndarray:
    """Smooth random displacement field of the U-Net paper.

    Displacements drawn from ``N(0, sigma^2)`` (pixels) on a coarse grid of
    ``grid`` points per axis, spanning the array from its first to its last pixel,
    are interpolated to every pixel with a cubic spline (order 3, the paper's
    "bicubic interpolation").

    Parameters
    ----------
    shape : sequence of int
        Spatial shape (2D or 3D).
    grid : int
        Grid points per axis, >= 2.
    sigma : float
        Standard deviation of the displacements at the grid points, in pixels.
    rng : numpy.random.Generator

    Returns
    -------
    field : (ndim, *shape) float32 ndarray
        ``field[i]`` is the displacement along axis ``i``.

    References
    ----------
    .. [1] Ronneberger et al., U-Net, MICCAI 2015, :doi:`10.1007/978-3-319-24574-4_28`.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise ValueError(f"shape must be a 2D or 3D shape, got {shape}")
    if not isinstance(grid, (int, np.integer)) or isinstance(grid, bool) or grid < 2:
        raise ValueError(f"grid must be an int >= 2, got {grid!r}")
    check_positive(sigma, name="sigma", strict=False)
    rng = _check_rng(rng)
    coarse = rng.normal(0.0, sigma, size=(len(shape),) + (grid,) * len(shape))
    # Cubic-spline zoom is linear and separable (per-axis prefilter, tensor-product
    # kernel), so it is one small (n, grid) matrix per axis; applying them in turn costs
    # far less than ndimage.zoom's 4**ndim-term kernel at every output pixel.
    field = coarse
    for axis, n in enumerate(shape):
        weights = _spline_upsampling_matrix(grid, n)  # (n, grid)
        field = np.moveaxis(np.tensordot(field, weights, axes=([axis + 1], [1])), -1, axis + 1)
    return field.astype(np.float32)


def _spline_upsampling_matrix(grid: int, n: int) -> np.ndarray:
    """(n, grid) matrix of ``ndimage.zoom(values, n / grid, order=3)`` along one axis.

    ``grid_mode=False`` puts the first and last grid points on the first and last pixels.
    """
    eye = np.eye(grid)
    return np.stack(
        [ndi.zoom(e, n / grid, order=3, mode="mirror", grid_mode=False) for e in eye], axis=1
    )


def elastic_deform(
    image: Any,
    labels: Any,
    *,
    grid: int = 3,
    sigma: float = 10.0,
    rng: np.random.Generator,
    order: int = 1,
    mode: str = "reflect",
) -> tuple[np.ndarray, np.ndarray]:
    """Warp image and labels by a smooth random field (:func:`elastic_field`).

    The output pixel ``p`` takes the input value at ``p + field(p)``: spline of
    ``order`` for the image, nearest neighbour for the labels
    (:func:`scipy.ndimage.map_coordinates`).

    Parameters
    ----------
    image : (C, *spatial) ndarray
    labels : (*spatial) integer ndarray
    grid, sigma
        See :func:`elastic_field`: 3 points per axis (3x3, or 3x3x3 in 3D), 10 px.
    rng : numpy.random.Generator
    order : int
        Spline order for the image.
    mode : str
        SciPy's edge mode for samples beyond the array.

    Returns
    -------
    image : float32 ndarray
    labels : ndarray of the labels' dtype

    References
    ----------
    .. [1] Ronneberger et al., U-Net, MICCAI 2015, :doi:`10.1007/978-3-319-24574-4_28`.

    Examples
    --------
    >>> import numpy as np
    >>> lab = np.zeros((32, 32), int); lab[8:24, 8:24] = 2
    >>> _, out = elastic_deform(np.zeros((1, 32, 32)), lab, rng=np.random.default_rng(0))
    >>> sorted(np.unique(out).tolist())
    [0, 2]
    """
    image, labels = _check_pair(image, labels)
    check_choice(order, range(6), name="order")
    field = elastic_field(labels.shape, grid=grid, sigma=sigma, rng=rng)
    coords = np.indices(labels.shape, dtype=np.float32) + field  # (ndim, *spatial)
    out = np.empty(image.shape, np.float32)
    for c in range(image.shape[0]):
        out[c] = ndi.map_coordinates(
            image[c].astype(np.float32, copy=False), coords, order=order, mode=mode
        )
    out_labels = ndi.map_coordinates(labels, coords, order=0, mode=mode)
    return out, out_labels


# --------------------------------------------------------------------------- intensity


def adjust_intensity(
    image: Any, *, brightness: float = 1.0, contrast: float = 1.0, gamma: float = 1.0
) -> np.ndarray:
    """Brightness, contrast and gamma, per channel, in that order.

    ``x * brightness``; then ``(x - m) * contrast + m`` with ``m`` the channel mean;
    then gamma on the channel's range: ``((x - lo) / (hi - lo)) ** gamma * (hi - lo) + lo``
    (a constant channel is left alone by the gamma step).

    Parameters
    ----------
    image : (C, *spatial) ndarray
    brightness, contrast, gamma : float
        Factors (> 0 for brightness and gamma, >= 0 for contrast).

    Returns
    -------
    float32 ndarray

    References
    ----------
    .. [1] Isensee et al., nnU-Net, Nature Methods 2021, :doi:`10.1038/s41592-020-01008-z`.

    Examples
    --------
    >>> import numpy as np
    >>> adjust_intensity(np.array([[0.0, 1.0, 2.0]]), contrast=2.0).tolist()
    [[-1.0, 1.0, 3.0]]
    """
    image = np.asarray(image)
    if image.ndim < 2:
        raise ValueError(f"image must be (C, *spatial), got shape {image.shape}")
    check_positive(brightness, name="brightness")
    check_positive(contrast, name="contrast", strict=False)
    check_positive(gamma, name="gamma")
    out = image.astype(np.float32) * np.float32(brightness)
    axes = tuple(range(1, image.ndim))
    if contrast != 1.0:
        mean = out.mean(axis=axes, keepdims=True)
        out = (out - mean) * np.float32(contrast) + mean
    if gamma != 1.0:
        lo = out.min(axis=axes, keepdims=True)
        span = out.max(axis=axes, keepdims=True) - lo
        safe = np.where(span > 0, span, 1)
        out = np.where(span > 0, ((out - lo) / safe) ** np.float32(gamma) * span + lo, out)
    return out.astype(np.float32, copy=False)


def gaussian_noise(image: Any, std: float, *, rng: np.random.Generator) -> np.ndarray:
    """Add zero-mean Gaussian noise of standard deviation ``std`` (float32 result)."""
    check_positive(std, name="std", strict=False)
    rng = _check_rng(rng)
    image = np.asarray(image, dtype=np.float32)
    return image + rng.normal(0.0, std, size=image.shape).astype(np.float32)


# --------------------------------------------------------------------------- pipeline


class Augmenter:
    """Random spatial and intensity augmentation for ``(image, labels)`` pairs.

    Each call draws, from the ``rng`` it is given, in this order: a mirror of each
    spatial axis in ``flip_axes`` (probability ``p_flip`` each); a quarter turn
    ``k in {1, 2, 3}`` in ``rot90_axes`` (``p_rot90``; only ``k = 2`` when the two axes
    differ in length, so the shape never changes); a random affine transform
    (``p_affine``: rotation uniform in ``+-rotation`` degrees -- about every axis in 3D --,
    isotropic scale uniform in ``scale``, shift uniform in ``+-translation`` times the
    size of each axis); the U-Net elastic deformation (``p_elastic``); brightness,
    contrast and gamma (``p_intensity`` each, factors uniform in their ranges); Gaussian
    noise (``p_noise``, std uniform in ``noise_std``).

    Parameters
    ----------
    dims : {2, 3}
        Spatial dimensions of the data.
    p_flip, p_rot90, p_affine, p_elastic, p_intensity, p_noise : float
        Probabilities in [0, 1].
    flip_axes : sequence of int, optional
        Spatial axes that may be mirrored (default: all).
    rot90_axes : (int, int)
        Plane of the quarter turns ((0, 1): rows and cols, in-plane for 3D).
    rotation : float
        Largest rotation, degrees.
    scale : (float, float)
        Range of the zoom factor.
    translation : float
        Largest shift as a fraction of each axis length.
    elastic_grid, elastic_sigma
        See :func:`elastic_deform`.
    brightness, contrast, gamma : (float, float)
        Ranges of the factors of :func:`adjust_intensity`.
    noise_std : (float, float)
        Range of the noise standard deviation (in normalised intensity units).
    per_channel : bool
        Draw brightness, contrast and gamma for each channel on its own (each channel of a
        multi-channel scan comes from its own acquisition, and shifts on its own).
    shift : (float, float), optional
        Range of an additive offset (normalised units), drawn with ``p_intensity`` (per
        channel with ``per_channel``); None: no offset.
    order : int
        Spline order for the image in the affine and elastic steps.
    mode : str
        SciPy edge mode of the affine and elastic steps.

    References
    ----------
    .. [1] Ronneberger et al., U-Net, MICCAI 2015, :doi:`10.1007/978-3-319-24574-4_28`.
    .. [2] Isensee et al., nnU-Net, Nature Methods 2021, :doi:`10.1038/s41592-020-01008-z`.

    Examples
    --------
    >>> import numpy as np
    >>> aug = Augmenter(2, p_affine=0.0, p_elastic=0.0)
    >>> im, lab = aug(np.zeros((1, 8, 8), np.float32), np.zeros((8, 8), int),
    ...               rng=np.random.default_rng(0))
    >>> im.shape, lab.shape
    ((1, 8, 8), (8, 8))
    """

    def __init__(
        self,
        dims: int,
        *,
        p_flip: float = 0.5,
        p_rot90: float = 0.5,
        p_affine: float = 0.2,
        p_elastic: float = 0.2,
        p_intensity: float = 0.3,
        p_noise: float = 0.1,
        flip_axes: Sequence[int] | None = None,
        rot90_axes: tuple[int, int] = (0, 1),
        rotation: float = 15.0,
        scale: tuple[float, float] = (0.85, 1.25),
        translation: float = 0.05,
        elastic_grid: int = 3,
        elastic_sigma: float = 10.0,
        brightness: tuple[float, float] = (0.75, 1.25),
        contrast: tuple[float, float] = (0.75, 1.25),
        gamma: tuple[float, float] = (0.7, 1.5),
        noise_std: tuple[float, float] = (0.0, 0.1),
        order: int = 1,
        mode: str = "reflect",
        per_channel: bool = False,
        shift: tuple[float, float] | None = None,
    ) -> None:
        self.dims = check_choice(dims, (2, 3), name="dims")
        probs = {
            "p_flip": p_flip,
            "p_rot90": p_rot90,
            "p_affine": p_affine,
            "p_elastic": p_elastic,
            "p_intensity": p_intensity,
            "p_noise": p_noise,
        }
        for name, p in probs.items():
            check_positive(p, name=name, strict=False)
            if p > 1:
                raise ValueError(f"{name} must be in [0, 1], got {p}")
        self.p_flip, self.p_rot90, self.p_affine = float(p_flip), float(p_rot90), float(p_affine)
        self.p_elastic, self.p_intensity = float(p_elastic), float(p_intensity)
        self.p_noise = float(p_noise)
        all_axes = tuple(range(dims))
        self.flip_axes = (
            all_axes if flip_axes is None else _check_axes(flip_axes, dims, name="flip_axes")
        )
        self.rot90_axes = _check_axes(rot90_axes, dims, name="rot90_axes")
        if len(self.rot90_axes) != 2:
            raise ValueError(f"rot90_axes must be two spatial axes, got {rot90_axes}")
        self.rotation = float(check_positive(rotation, name="rotation", strict=False))
        self.scale = _check_range(scale, name="scale")
        if self.scale[0] <= 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.translation = float(check_positive(translation, name="translation", strict=False))
        self.elastic_grid = int(elastic_grid)
        if self.elastic_grid < 2:
            raise ValueError(f"elastic_grid must be >= 2, got {elastic_grid}")
        check_positive(elastic_sigma, name="elastic_sigma", strict=False)
        self.elastic_sigma = float(elastic_sigma)
        self.brightness = _check_range(brightness, name="brightness")
        self.contrast = _check_range(contrast, name="contrast", low=0.0)
        self.gamma = _check_range(gamma, name="gamma")
        if self.brightness[0] <= 0 or self.gamma[0] <= 0:
            raise ValueError(f"brightness and gamma must be > 0, got {brightness} and {gamma}")
        self.noise_std = _check_range(noise_std, name="noise_std", low=0.0)
        self.order = check_choice(order, range(6), name="order")
        self.mode = mode
        if not isinstance(per_channel, bool):
            raise TypeError(f"per_channel must be a bool, got {type(per_channel).__name__}")
        self.per_channel = per_channel
        self.shift = None if shift is None else _check_range(shift, name="shift")

    def __repr__(self) -> str:
        return (
            f"Augmenter({self.dims}, p_flip={self.p_flip}, p_rot90={self.p_rot90}, "
            f"p_affine={self.p_affine}, p_elastic={self.p_elastic}, "
            f"p_intensity={self.p_intensity}, p_noise={self.p_noise})"
        )

    def __call__(
        self, image: Any, labels: Any, *, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Augment one ``(image (C, *spatial), labels (*spatial))`` pair.

        Returns float32 image and labels of the input dtype, same shapes.
        """
        image, labels = _check_pair(image, labels)
        rng = _check_rng(rng)
        if labels.ndim != self.dims:
            raise ValueError(
                f"labels must be {self.dims}D for this Augmenter, got shape {labels.shape}"
            )
        image = image.astype(np.float32, copy=False)
        axes = [a for a in self.flip_axes if rng.random() < self.p_flip]
        if axes:
            image, labels = flip(image, labels, axes)
        if rng.random() < self.p_rot90:
            a, b = self.rot90_axes
            k = int(rng.integers(1, 4)) if labels.shape[a] == labels.shape[b] else 2
            image, labels = rot90(image, labels, k, axes=(a, b))
        if rng.random() < self.p_affine:
            n_angles = 1 if self.dims == 2 else 3
            angles = rng.uniform(-self.rotation, self.rotation, size=n_angles)
            zoom = rng.uniform(*self.scale)
            shift = rng.uniform(-1, 1, size=self.dims) * self.translation * np.array(labels.shape)
            image, labels = affine_transform(
                image,
                labels,
                rotation=angles if self.dims == 3 else float(angles[0]),
                scale=zoom,
                translation=shift,
                order=self.order,
                mode=self.mode,
            )
        if rng.random() < self.p_elastic:
            image, labels = elastic_deform(
                image,
                labels,
                grid=self.elastic_grid,
                sigma=self.elastic_sigma,
                rng=rng,
                order=self.order,
                mode=self.mode,
            )
        if self.per_channel:
            image = np.concatenate(
                [self._intensity(image[c : c + 1], rng) for c in range(image.shape[0])]
            )
        else:
            image = self._intensity(image, rng)
        if rng.random() < self.p_noise:
            image = gaussian_noise(image, float(rng.uniform(*self.noise_std)), rng=rng)
        return image, labels

    def _intensity(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Brightness, contrast, gamma (each with ``p_intensity``), then the offset."""
        factors = {}
        for name in ("brightness", "contrast", "gamma"):
            if rng.random() < self.p_intensity:
                factors[name] = float(rng.uniform(*getattr(self, name)))
        if factors:
            image = adjust_intensity(image, **factors)
        if self.shift is not None and rng.random() < self.p_intensity:
            image = image + np.float32(rng.uniform(*self.shift))
        return image
