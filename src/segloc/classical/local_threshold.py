"""Local (adaptive) thresholds of grey 2D images and 3D volumes, as scikit-image's.

:func:`threshold_local` returns scikit-image's ``threshold_local`` bit for bit (but for float32
images, filtered here in float64); :func:`apply_local_threshold` returns the mask alone. 2D
images go through numba kernels that repeat ``scipy.ndimage``'s float64 arithmetic in the same
order, strips of rows on :mod:`segloc.classical.threshold`'s thread pool; volumes through
``scipy.ndimage`` itself. Timings against scikit-image and OpenCV: docs/results.md.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from scipy import ndimage as ndi

from segloc._validation import check_choice, check_int
from segloc.classical import threshold as th

__all__ = ["apply_local_threshold", "threshold_local"]

# ----------------------------------------------------------------------------------------------
# local thresholds: numba kernels that repeat scipy.ndimage's arithmetic


@numba.njit(nogil=True, inline="always")
def _reflect(i: int, n: int) -> int:  # pragma: no cover
    """Index ``i`` mirrored into ``0 .. n - 1`` the way ``mode="reflect"`` extends a line
    (``d c b a | a b c d | d c b a``, repeated for lines shorter than the filter)."""
    if n == 1:
        return 0
    i = i % (2 * n)
    return 2 * n - 1 - i if i >= n else i


@numba.njit(nogil=True, inline="always")
def _load_row(image: np.ndarray, q: int, ring: np.ndarray) -> None:  # pragma: no cover
    """Row ``q`` of ``image`` as float64 into its slot of the ring of rows."""
    src = image[q]
    dst = ring[q % ring.shape[0]]
    for j in range(src.size):
        dst[j] = np.float64(src[j])


@numba.njit(nogil=True, inline="always")
def _pad_row(row: np.ndarray, before: int, width: int, after: int) -> None:  # pragma: no cover
    """Fill ``row[:before]`` and ``row[before + width:]`` by reflecting ``row[before:...]``."""
    for p in range(before):
        row[p] = row[before + _reflect(p - before, width)]
    for p in range(after):
        row[before + width + p] = row[before + _reflect(width + p, width)]


@numba.njit(nogil=True, inline="always")
def _emit(image: np.ndarray, i: int, t: np.ndarray, offset: float, out: np.ndarray,
          mask: bool) -> None:  # fmt: skip  # pragma: no cover
    """Row ``i`` of the result: the threshold ``t - offset`` or the mask ``image > t - offset``."""
    if mask:
        src = image[i]
        for j in range(t.size):
            out[i, j] = np.float64(src[j]) > t[j] - offset
    else:
        for j in range(t.size):
            out[i, j] = t[j] - offset


#: columns per tile of the vertical pass (its rows of the ring stay in cache)
_TILE = 512


@numba.njit(nogil=True, cache=True)
def _gaussian_rows(image: np.ndarray, w: np.ndarray, offset: float, r0: int, r1: int,
                   out: np.ndarray, mask: bool) -> None:  # fmt: skip  # pragma: no cover
    """Rows ``r0 .. r1 - 1`` of the separable Gaussian threshold (or mask) of a 2D ``image``.

    ``w`` holds the centre weight then the weights outwards. Each 1D pass computes
    ``x[0] * w[0] + sum over k = r .. 1 of (x[-k] + x[k]) * w[k]`` in float64, in that order,
    rows first, as ``scipy.ndimage.correlate1d`` does for symmetric weights, so the result
    is bit-identical to ``scipy.ndimage.gaussian_filter``'s.
    """
    h, wd = image.shape
    r = w.size - 1
    ring = np.empty((min(2 * r + 1, h), wd))
    m = ring.shape[0]
    vrow = np.empty(wd + 2 * r)
    acc = np.empty(wd)
    w0 = w[0]
    loaded = max(0, r0 - r) - 1
    for i in range(r0, r1):
        while loaded < min(h - 1, i + r):
            loaded += 1
            _load_row(image, loaded, ring)
        # rows: vrow[r + j] is the vertical pass at (i, j)
        for c0 in range(0, wd, _TILE):
            n = min(wd - c0, _TILE)
            dst = vrow[r + c0 : r + c0 + n]
            centre = ring[i % m, c0 : c0 + n]
            for j in range(n):
                dst[j] = centre[j] * w0
            k = r
            # four taps per sweep: the same additions in the same order, a quarter of the
            # loads and stores of dst
            while k >= 4:
                a0 = ring[_reflect(i - k, h) % m, c0 : c0 + n]
                b0 = ring[_reflect(i + k, h) % m, c0 : c0 + n]
                a1 = ring[_reflect(i - k + 1, h) % m, c0 : c0 + n]
                b1 = ring[_reflect(i + k - 1, h) % m, c0 : c0 + n]
                a2 = ring[_reflect(i - k + 2, h) % m, c0 : c0 + n]
                b2 = ring[_reflect(i + k - 2, h) % m, c0 : c0 + n]
                a3 = ring[_reflect(i - k + 3, h) % m, c0 : c0 + n]
                b3 = ring[_reflect(i + k - 3, h) % m, c0 : c0 + n]
                w0_, w1_, w2_, w3_ = w[k], w[k - 1], w[k - 2], w[k - 3]
                for j in range(n):
                    v = dst[j] + (a0[j] + b0[j]) * w0_
                    v = v + (a1[j] + b1[j]) * w1_
                    v = v + (a2[j] + b2[j]) * w2_
                    dst[j] = v + (a3[j] + b3[j]) * w3_
                k -= 4
            while k >= 1:
                a0 = ring[_reflect(i - k, h) % m, c0 : c0 + n]
                b0 = ring[_reflect(i + k, h) % m, c0 : c0 + n]
                wk = w[k]
                for j in range(n):
                    dst[j] += (a0[j] + b0[j]) * wk
                k -= 1
        _pad_row(vrow, r, wd, r)
        for j in range(wd):
            acc[j] = vrow[r + j] * w0
        k = r
        while k >= 4:
            l0, h0 = vrow[r - k : r - k + wd], vrow[r + k : r + k + wd]
            l1, h1 = vrow[r - k + 1 : r - k + 1 + wd], vrow[r + k - 1 : r + k - 1 + wd]
            l2, h2 = vrow[r - k + 2 : r - k + 2 + wd], vrow[r + k - 2 : r + k - 2 + wd]
            l3, h3 = vrow[r - k + 3 : r - k + 3 + wd], vrow[r + k - 3 : r + k - 3 + wd]
            w0_, w1_, w2_, w3_ = w[k], w[k - 1], w[k - 2], w[k - 3]
            for j in range(wd):
                v = acc[j] + (l0[j] + h0[j]) * w0_
                v = v + (l1[j] + h1[j]) * w1_
                v = v + (l2[j] + h2[j]) * w2_
                acc[j] = v + (l3[j] + h3[j]) * w3_
            k -= 4
        while k >= 1:
            lo, hi = vrow[r - k : r - k + wd], vrow[r + k : r + k + wd]
            wk = w[k]
            for j in range(wd):
                acc[j] += (lo[j] + hi[j]) * wk
            k -= 1
        _emit(image, i, acc, offset, out, mask)


@numba.njit(nogil=True, inline="always")
def _running_sum(v: np.ndarray, size: int, acc: np.ndarray) -> None:  # pragma: no cover
    """``uniform_filter1d``'s running sum along the padded line ``v`` (not yet divided)."""
    s = 0.0
    for j in range(size):
        s += v[j]
    acc[0] = s
    for j in range(1, acc.size):
        s += v[j + size - 1] - v[j - 1]
        acc[j] = s


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _mean_rows(image: np.ndarray, size: int, offset: float, r0: int, r1: int,
               out: np.ndarray, mask: bool, replay: bool) -> None:  # fmt: skip  # pragma: no cover
    """Rows ``r0 .. r1 - 1`` of the box-mean threshold (or mask) of a 2D ``image``.

    Each 1D pass is ``scipy.ndimage.uniform_filter1d``'s running sum: the first window's sum,
    then ``+= x[entering] - x[leaving]`` along the line, each output that sum divided by
    ``size``, in float64, rows first, so the result is bit-identical to
    ``scipy.ndimage.uniform_filter``'s. The running sum down the columns starts at row 0; with
    ``replay`` a strip starting lower repeats it (without the second pass) up to its first
    row, without it the strip sums its own first window, which is the same for integer
    images (the sums are then exact integers, whatever the order of the additions). The
    second pass runs on four rows at once: four independent chains of additions instead of
    one, whose latency would set the pace.
    """
    h, wd = image.shape
    r = size // 2
    fsize = np.float64(size)
    col = np.zeros(wd)  # running sum down each column at the current row
    group = 4
    vrows = np.empty((group, wd + 2 * r))
    acc = np.empty((group, wd))
    start = 0 if replay else r0
    # the first window of every column: rows reflect(start - r) .. reflect(start + r)
    for d in range(start - r, start + r + 1):
        src = image[_reflect(d, h)]
        for j in range(wd):
            col[j] += np.float64(src[j])
    g = 0
    for i in range(start, r1):
        if i > start:
            enter = image[_reflect(i + r, h)]
            leave = image[_reflect(i - r - 1, h)]
            if i < r0:
                for j in range(wd):
                    col[j] += np.float64(enter[j]) - np.float64(leave[j])
                continue
            v = vrows[g, r : r + wd]
            for j in range(wd):
                c = col[j] + (np.float64(enter[j]) - np.float64(leave[j]))
                col[j] = c
                v[j] = c / fsize
        elif i < r0:
            continue
        else:
            v = vrows[g, r : r + wd]
            for j in range(wd):
                v[j] = col[j] / fsize
        _pad_row(vrows[g], r, wd, r)
        g += 1
        if g < group and i < r1 - 1:
            continue
        if g == group:
            v0, v1, v2, v3 = vrows[0], vrows[1], vrows[2], vrows[3]
            a0, a1, a2, a3 = acc[0], acc[1], acc[2], acc[3]
            s0 = s1 = s2 = s3 = 0.0
            for j in range(size):
                s0 += v0[j]
                s1 += v1[j]
                s2 += v2[j]
                s3 += v3[j]
            a0[0], a1[0], a2[0], a3[0] = s0, s1, s2, s3
            for j in range(1, wd):
                s0 += v0[j + size - 1] - v0[j - 1]
                s1 += v1[j + size - 1] - v1[j - 1]
                s2 += v2[j + size - 1] - v2[j - 1]
                s3 += v3[j + size - 1] - v3[j - 1]
                a0[j], a1[j], a2[j], a3[j] = s0, s1, s2, s3
        else:
            for e in range(g):
                _running_sum(vrows[e], size, acc[e])
        for e in range(g):
            t = acc[e]
            row = i - g + 1 + e
            if mask:
                src = image[row]
                for j in range(wd):
                    out[row, j] = np.float64(src[j]) > t[j] / fsize - offset
            else:
                for j in range(wd):
                    out[row, j] = t[j] / fsize - offset
        g = 0


# ----------------------------------------------------------------------------------------------
# the public functions


def threshold_local(
    image: Any, *, block_size: int, method: str = "gaussian", offset: float = 0.0
) -> np.ndarray:
    """Per-pixel threshold: a weighted mean of the ``block_size`` neighbourhood, minus ``offset``.

    ``image > threshold_local(image, ...)`` is the adaptive foreground. ``"mean"`` averages a
    ``block_size`` box (:func:`scipy.ndimage.uniform_filter`); ``"gaussian"`` uses a Gaussian
    with ``sigma = (block_size - 1) / 6`` (:func:`scipy.ndimage.gaussian_filter`, truncated at
    4 sigma), as scikit-image. Borders are mirrored (``mode="reflect"``). 3D images use a
    cubic block.

    Parameters
    ----------
    image : array_like, shape (rows, cols) or (rows, cols, slices)
        Grey image or volume, any numeric dtype (not bool).
    block_size : int
        Odd neighbourhood size, >= 3.
    method : {"gaussian", "mean"}, optional
        Weighting of the neighbourhood.
    offset : float, optional
        Subtracted from the weighted mean.

    Returns
    -------
    threshold : ndarray of float64, same shape as ``image``
        Bit for bit ``skimage.filters.threshold_local`` with the same arguments, for every
        dtype but float32: scikit-image filters float32 images in float32 and returns
        float32, segloc filters every image in float64 (they then agree to float32 rounding).
        2D images go through numba kernels that repeat ``scipy.ndimage``'s float64
        arithmetic in the same order (rows in strips on threads); volumes through
        ``scipy.ndimage`` itself. :func:`apply_local_threshold` gives the mask alone.

    References
    ----------
    .. [1] Gonzalez, R. C. and Woods, R. E., "Digital Image Processing", 2nd ed.,
           Prentice-Hall, 2002, pp. 600-612. ISBN 0-201-18075-8.

    Examples
    --------
    >>> image = np.array([[0, 0, 0], [0, 9, 0], [0, 0, 0]], dtype=np.uint8)
    >>> threshold_local(image, block_size=3, method="mean")[1, 1]
    np.float64(1.0)
    """
    image, block_size, method, offset = _check_local(image, block_size, method, offset)
    return _local(image, block_size, method, offset, mask=False)


def apply_local_threshold(
    image: Any, *, block_size: int, method: str = "gaussian", offset: float = 0.0
) -> np.ndarray:
    """The adaptive foreground ``image > threshold_local(image, ...)``, without the float image.

    For 2D images each row of the threshold is compared as soon as it is computed, so the
    float64 threshold image is never stored; the mask is the same as comparing with
    :func:`threshold_local`'s result (which is bit-identical to scikit-image's for every dtype
    but float32, see there). Arguments as :func:`threshold_local`.

    Returns
    -------
    mask : ndarray of bool, same shape as ``image``
        Equal to ``image > skimage.filters.threshold_local(image, block_size, method,
        offset=offset)``, but for float32 images (scikit-image filters them in float32).

    Examples
    --------
    >>> image = np.array([[0, 0, 0], [0, 9, 0], [0, 0, 0]], dtype=np.uint8)
    >>> apply_local_threshold(image, block_size=3, method="mean").astype(int)
    array([[0, 0, 0],
           [0, 1, 0],
           [0, 0, 0]])
    """
    image, block_size, method, offset = _check_local(image, block_size, method, offset)
    return _local(image, block_size, method, offset, mask=True)


def _check_local(image: Any, block_size: Any, method: Any, offset: Any) -> tuple:
    image = th._check_grey(image)
    block_size = check_int(block_size, name="block_size", minimum=3)
    if block_size % 2 == 0:
        raise ValueError(f"block_size must be odd, got {block_size}")
    check_choice(method, ("gaussian", "mean"), name="method")
    return image, block_size, method, th._check_real(offset, name="offset")


#: dtypes the local-threshold kernels read directly (others are converted to float64 first)
_KERNEL_DTYPES = frozenset("bBhHiIlLqQfd")


def _gaussian_weights(block_size: int) -> np.ndarray:
    """Centre weight then the weights outwards, as ``scipy.ndimage.gaussian_filter`` makes
    them (``sigma = (block_size - 1) / 6``, truncated at 4 sigma)."""
    sigma = (block_size - 1) / 6.0
    radius = int(4.0 * sigma + 0.5)
    x = np.arange(-radius, radius + 1)
    phi = np.exp(-0.5 / (sigma * sigma) * x**2)
    phi = phi / phi.sum()
    # scipy correlates with the reversed kernel; reversed back here, so bit for bit the same
    return np.ascontiguousarray(phi[::-1][radius:])


def _local(image: np.ndarray, block_size: int, method: str, offset: float, *, mask: bool):
    """threshold_local's float64 threshold image, or (``mask``) ``image >`` it, as bool."""
    if image.ndim != 2:
        # 3D volumes: scipy.ndimage's separable filters (the same arithmetic, in float64)
        t = np.empty(image.shape, dtype=np.float64)
        f64 = image.astype(np.float64, copy=False)
        if method == "gaussian":
            ndi.gaussian_filter(f64, (block_size - 1) / 6.0, output=t, mode="reflect", truncate=4.0)
        else:
            ndi.uniform_filter(f64, block_size, output=t, mode="reflect")
        if offset:
            t -= offset
        return image > t if mask else t
    if image.dtype.char not in _KERNEL_DTYPES or not image.dtype.isnative:
        source = image.astype(np.float64)
    else:
        source = np.ascontiguousarray(image)
    out = np.empty(image.shape, dtype=bool if mask else np.float64)
    if method == "gaussian":
        weights = _gaussian_weights(block_size)

        def rows(a: int, b: int) -> None:
            _gaussian_rows(source, weights, offset, a, b, out, mask)
    else:
        # integers of up to 32 bits sum exactly in float64 (below 2**53) down a column
        exact = np.issubdtype(source.dtype, np.integer) and source.dtype.itemsize <= 4
        replay = not (exact and block_size < 2**21)

        def rows(a: int, b: int) -> None:
            _mean_rows(source, block_size, offset, a, b, out, mask, replay)

    # strips of rows on the pool's threads (the kernels release the GIL)
    nstrips = max(1, min(th._n_threads(), image.size // _MIN_LOCAL_STRIP))
    bounds = np.linspace(0, image.shape[0], nstrips + 1).astype(np.int64).tolist()
    futures = [th._pool().submit(rows, bounds[s], bounds[s + 1]) for s in range(1, nstrips)]
    rows(bounds[0], bounds[1])
    for future in futures:
        future.result()
    return out


#: pixels per strip below which threads cost more than they save
_MIN_LOCAL_STRIP = 1 << 16
