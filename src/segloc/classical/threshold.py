"""Global and hysteresis thresholds for grey 2D images and 3D volumes.

Local (adaptive) thresholds, which share this module's checks and thread pool, are in
:mod:`segloc.classical.local_threshold`.

Functions follow scikit-image's ``skimage.filters.threshold_*``: the image comes first, options
are keyword-only, a global method returns one Python ``float`` and ``image > t`` is the
foreground. The thresholds equal scikit-image's on the same input (tests check every method
on uint8, uint16, int16 with negative values, float32 and float64, 2D and 3D), with these
choices, each documented where it applies:

- Histograms. Integer images get one bin per integer value between their minimum and maximum,
  as scikit-image does (``nbins`` is ignored), unless they span more than ``2**20`` values, in
  which case they are binned like float images (scikit-image would allocate the whole span).
  Float images get ``nbins`` equal-width bins from :func:`numpy.histogram` over
  ``[min, max]`` and a threshold is a bin centre, exactly as scikit-image.
- uint8, uint16, int8 and int16 histograms come from a numba kernel (compiled on first use and
  cached on disk) run on chunks in parallel threads, several times faster than
  :func:`numpy.bincount`. Timings against the peers: docs/results.md.
- Criteria are evaluated in float64 from exact integer counts. scikit-image rounds its
  histogram to float32, so where two splits score within about 1e-5 of each other it can
  rank them wrongly: multi-Otsu (in about 1 random image in 20), Yen and Otsu on histograms
  with thousands of bins then differ from scikit-image, and segloc's split is the one with
  the higher exact score (the tests check this with rational arithmetic). Otsu on uint8
  images agreed with scikit-image on every image tried. Where several thresholds score the
  same the lowest wins, which for empty bins between two grey levels means the lower grey
  level, as in scikit-image.
- Boolean images are rejected with ``TypeError`` (a mask has nothing left to threshold);
  NaN or infinite values raise ``ValueError``.
- A constant image has no threshold to find: the single-threshold methods return its value
  (so ``image > t`` is empty), as scikit-image does for Otsu, Li and the triangle method
  (scikit-image's Yen returns an arbitrary bin centre for a constant float image).
  :func:`threshold_multiotsu` raises ``ValueError`` when the image has fewer grey levels than
  ``classes``, as scikit-image.
- A 3D array whose last axis has length 3 or 4 draws a ``UserWarning`` (it may be an RGB(A)
  picture rather than a volume), as in scikit-image.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numba
import numpy as np
from scipy import ndimage as ndi

from segloc._validation import check_connectivity, check_image, check_int

__all__ = [
    "threshold_fixed",
    "threshold_otsu",
    "threshold_multiotsu",
    "threshold_li",
    "threshold_yen",
    "threshold_triangle",
    "apply_hysteresis_threshold",
    "apply_thresholds",
    "apply_threshold",
]

#: integer images spanning more values than this are binned with ``nbins`` like floats
_MAX_INTEGER_BINS = 2**20
#: dtypes whose whole range is histogrammed directly, without a min/max pass first
_SMALL_INTS = (np.uint8, np.int8, np.uint16, np.int16)


# ----------------------------------------------------------------------------------------------
# argument checks


def _check_grey(image: Any) -> np.ndarray:
    """check_image plus: no bool, and a warning for arrays that look like RGB(A) pictures."""
    arr = check_image(image)
    if arr.dtype == np.bool_:
        raise TypeError("image must be a numeric (not boolean) array, got dtype bool")
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        warnings.warn(
            f"image of shape {arr.shape} looks like an RGB(A) picture; thresholds are meant "
            "for grey images and volumes (choose one channel)",
            UserWarning,
            stacklevel=3,
        )
    return arr


def _check_real(value: Any, *, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return float(value)


# ----------------------------------------------------------------------------------------------
# histograms


# Parallelism: each chunk of pixels is counted by a serial, GIL-free numba kernel, and the chunks
# run on a small thread pool. numba's own parallel=True (OpenMP here) was as fast on an idle
# machine but its median call was 4-20x slower than a serial kernel's on a busy one (its
# threads wait for each other at the end of every parallel region).

#: pixels per chunk below which threads cost more than they save
_MIN_CHUNK = 1 << 20
_POOL: ThreadPoolExecutor | None = None


def _n_threads() -> int:
    # numba's configured thread count (NUMBA_NUM_THREADS, default: the usable CPUs); reading
    # the config does not start numba's own thread pool
    return max(1, int(numba.config.NUMBA_NUM_THREADS))


def _forget_pool() -> None:
    # a forked child (e.g. a DataLoader worker) inherits the pool object but not its threads:
    # work submitted there would wait forever
    global _POOL
    _POOL = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(
            max_workers=max(1, _n_threads() - 1), thread_name_prefix="segloc-hist"
        )
    return _POOL


def _chunked(
    kernel: Callable[..., None], data: np.ndarray, nbins: int, *args: Any, per_item: int = 1
) -> np.ndarray:
    """Sum of ``kernel(chunk, *args, out)`` over chunks of ``data``; int64 counts of nbins.

    ``per_item`` is the number of pixels in one element of ``data`` (8 for uint8 packed in
    uint64 words).
    """
    # no chunk holds more than 2**28 elements (2**31 pixels), so no uint32 sub-count overflows
    nchunks = max(min(_n_threads(), data.size * per_item // _MIN_CHUNK), -(-data.size // 2**28), 1)
    out = np.zeros((nchunks, nbins), dtype=np.int64)
    bounds = np.linspace(0, data.size, nchunks + 1).astype(np.int64)
    futures = [
        _pool().submit(kernel, data[bounds[c] : bounds[c + 1]], *args, out[c])
        for c in range(1, nchunks)
    ]
    kernel(data[bounds[0] : bounds[1]], *args, out[0])
    for future in futures:
        future.result()
    return out.sum(axis=0) if nchunks > 1 else out[0]


@numba.njit(nogil=True, cache=True)
def _packed_histogram_kernel(
    words: np.ndarray, bits: int, out: np.ndarray
) -> None:  # pragma: no cover
    """Add to ``out`` the counts of the ``bits``-bit (8 or 16) values packed in ``words``.

    One 8-byte load feeds 8 (uint8) or 4 (uint16) counts instead of one load per pixel. The
    counts go to 4 private sub-histograms in turn, so that runs of equal values do not
    increment the same counter back to back (a store-to-load forwarding stall), and are added
    to ``out`` at the end. The order of the values within a word does not matter for a
    histogram, so the machine's byte order does not either.
    """
    nbins = 1 << bits
    h = np.zeros((4, nbins), dtype=np.uint32)
    # unrolled by hand: a loop over the values of a word runs several times slower
    if bits == 8:
        for i in range(words.size):
            w = words[i]
            h[0, np.intp(w & 0xFF)] += 1
            h[1, np.intp((w >> 8) & 0xFF)] += 1
            h[2, np.intp((w >> 16) & 0xFF)] += 1
            h[3, np.intp((w >> 24) & 0xFF)] += 1
            h[0, np.intp((w >> 32) & 0xFF)] += 1
            h[1, np.intp((w >> 40) & 0xFF)] += 1
            h[2, np.intp((w >> 48) & 0xFF)] += 1
            h[3, np.intp(w >> 56)] += 1
    else:
        for i in range(words.size):
            w = words[i]
            h[0, np.intp(w & 0xFFFF)] += 1
            h[1, np.intp((w >> 16) & 0xFFFF)] += 1
            h[2, np.intp((w >> 32) & 0xFFFF)] += 1
            h[3, np.intp(w >> 48)] += 1
    for s in range(4):
        for b in range(nbins):
            out[b] += h[s, b]


@numba.njit(nogil=True, cache=True)
def _int_histogram_kernel(flat: np.ndarray, lo: Any, out: np.ndarray) -> None:  # pragma: no cover
    """Add to ``out`` the counts of the levels ``lo .. lo + out.size - 1`` found in ``flat``.

    Every value must lie in that range. ``lo`` has ``flat``'s dtype, so ``flat[i] - lo`` never
    overflows. Sub-histograms as in :func:`_packed_histogram_kernel`.
    """
    h = np.zeros((4, out.size), dtype=np.uint32)
    for i in range(flat.size):
        h[i & 3, np.intp(flat[i] - lo)] += 1
    for s in range(4):
        for b in range(out.size):
            out[b] += h[s, b]


def _small_int_histogram(flat: np.ndarray) -> np.ndarray:
    """int64 counts of every value of a contiguous 8- or 16-bit integer array, from its minimum.

    Signed values are histogrammed as their unsigned bit patterns, then rotated so that bin 0
    is the dtype's minimum.
    """
    bits = flat.itemsize * 8
    unsigned = flat.view(np.uint8 if bits == 8 else np.uint16)
    # the uint64 words start at an 8-byte boundary (aligned loads; for 16-bit values at an odd
    # address, as in a raw buffer, they stay unaligned, which numba reads correctly, slower);
    # the few pixels before the first word and after the last are counted apart
    head = min(unsigned.size, (-unsigned.ctypes.data % 8) // flat.itemsize)
    per_word = 64 // bits
    stop = head + (unsigned.size - head) // per_word * per_word
    words = unsigned[head:stop].view(np.uint64)
    counts = _chunked(_packed_histogram_kernel, words, 1 << bits, bits, per_item=per_word)
    np.add.at(counts, np.concatenate([unsigned[:head], unsigned[stop:]]).astype(np.intp), 1)
    if np.issubdtype(flat.dtype, np.signedinteger):
        half = 1 << (bits - 1)
        counts = np.concatenate([counts[half:], counts[:half]])
    return counts


def _int_histogram(flat: np.ndarray, lo: Any, nbins: int) -> np.ndarray:
    """int64 counts of the levels ``lo .. lo + nbins - 1`` of the integer array ``flat``."""
    return _chunked(_int_histogram_kernel, flat, nbins, lo)


class _Hist:
    """Histogram of an image: ``counts[i]`` pixels have grey level ``center(i)``.

    ``counts`` is int64 with non-zero first and last bins; for integer images bin ``i`` is the
    value ``lo + i`` (``step`` 1), for float images ``centers`` holds NumPy's bin centres.
    """

    def __init__(self, counts: np.ndarray, lo: int | None, centers: np.ndarray | None):
        self.counts = counts
        self.lo = lo
        self.centers = centers

    def center(self, i: int) -> float:
        if self.centers is None:
            return float(self.lo + int(i))
        return float(self.centers[i])

    def values(self) -> np.ndarray:
        """float64 grey level of every bin."""
        if self.centers is None:
            return self.lo + np.arange(self.counts.size, dtype=np.float64)
        return self.centers.astype(np.float64)


def _histogram(image: np.ndarray, nbins: int) -> _Hist:
    """Histogram the way scikit-image's ``exposure.histogram(..., source_range="image")`` does."""
    if not image.dtype.isnative:
        image = image.astype(image.dtype.newbyteorder("="))
    flat = image.reshape(-1)
    if image.dtype.type in _SMALL_INTS:
        lo = int(np.iinfo(image.dtype).min)
        counts = _small_int_histogram(np.ascontiguousarray(flat))
        occupied = np.flatnonzero(counts)
        first, last = int(occupied[0]), int(occupied[-1])
        return _Hist(counts[first : last + 1], lo + first, None)
    if np.issubdtype(image.dtype, np.integer):
        lo, hi = flat.min(), flat.max()
        span = int(hi) - int(lo) + 1
        if span <= _MAX_INTEGER_BINS:
            return _Hist(_int_histogram(flat, lo, span), int(lo), None)
        flat = flat.astype(np.float64)
    lo, hi = flat.min(), flat.max()
    if lo == hi:
        return _Hist(np.array([flat.size], dtype=np.int64), None, np.array([lo]))
    counts, edges = np.histogram(flat, bins=nbins, range=(lo, hi))
    # same centres as scikit-image, in the edges' dtype (float32 for float32 images)
    return _Hist(counts.astype(np.int64), None, (edges[:-1] + edges[1:]) / 2)


def apply_threshold(image: Any, t: float) -> np.ndarray:
    """The bool mask ``image > t`` for a scalar threshold ``t``.

    Integer images compare in their own dtype: comparing a uint8 image with a Python float
    converts every pixel to float64; for an integer ``x``, ``x > t`` is ``x > floor(t)``.

    Examples
    --------
    >>> apply_threshold(np.array([1, 2, 3], np.uint8), 1.5)
    array([False,  True,  True])
    """
    image = np.asarray(image)
    if not np.issubdtype(image.dtype, np.integer):
        return image > t
    info = np.iinfo(image.dtype)
    floor_t = math.floor(t)
    if floor_t < info.min:
        return np.ones(image.shape, dtype=bool)
    if floor_t >= info.max:
        return np.zeros(image.shape, dtype=bool)
    return image > image.dtype.type(floor_t)


# ----------------------------------------------------------------------------------------------
# global thresholds


def _levels(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct grey levels of ``image`` (increasing) and their pixel counts."""
    if image.dtype.type in _SMALL_INTS or (
        np.issubdtype(image.dtype, np.integer)
        and int(image.max()) - int(image.min()) < _MAX_INTEGER_BINS
    ):
        hist = _histogram(image, 2)
        occupied = np.flatnonzero(hist.counts)
        return hist.lo + occupied, hist.counts[occupied]
    return np.unique(image, return_counts=True)


def threshold_fixed(image: Any, value: float) -> np.ndarray:
    """Foreground mask of a fixed threshold: ``image > value``.

    Parameters
    ----------
    image : array_like, shape (rows, cols) or (rows, cols, slices)
        Grey image or volume, any numeric dtype (not bool).
    value : float
        Threshold; pixels strictly above it are foreground.

    Returns
    -------
    mask : ndarray of bool, same shape as ``image``

    References
    ----------
    .. [1] Gonzalez, R. C. and Woods, R. E., "Digital Image Processing", 4th ed., Pearson,
           2018, section 10.3 (intensity thresholding). ISBN 978-0-13-335672-4.

    Examples
    --------
    >>> threshold_fixed(np.array([[1, 5], [9, 3]], dtype=np.uint8), 3)
    array([[False,  True],
           [ True, False]])
    """
    image = _check_grey(image)
    return apply_threshold(image, _check_real(value, name="value"))


def threshold_otsu(image: Any, *, nbins: int = 256) -> float:
    """Otsu's threshold: the grey level that maximises the between-class variance.

    For a split after bin ``t`` with class weights ``w0, w1`` and means ``m0, m1`` the
    criterion is ``w0 * w1 * (m0 - m1) ** 2``; the threshold is the grey level of bin ``t``, so
    ``image > threshold`` is the brighter class.

    Parameters
    ----------
    image : array_like, shape (rows, cols) or (rows, cols, slices)
        Grey image or volume, any numeric dtype (not bool).
    nbins : int, optional
        Number of histogram bins for float images (>= 2). Ignored for integer images, which get
        one bin per value (see the module notes).

    Returns
    -------
    threshold : float
        The same value as ``skimage.filters.threshold_otsu`` (but for near-ties that
        scikit-image's float32 arithmetic ranks wrongly, see the module notes); the image's
        value if it is constant.

    References
    ----------
    .. [1] Otsu, N., "A Threshold Selection Method from Gray-Level Histograms", IEEE Trans.
           Systems, Man, and Cybernetics 9(1): 62-66, 1979. :doi:`10.1109/TSMC.1979.4310076`

    Examples
    --------
    >>> image = np.array([[10, 11, 12], [50, 51, 52]], dtype=np.uint8)
    >>> threshold_otsu(image)
    12.0
    """
    image = _check_grey(image)
    nbins = check_int(nbins, name="nbins", minimum=2)
    return _otsu(_histogram(image, nbins))


def _otsu(hist: _Hist) -> float:
    """Otsu's threshold of a histogram (:func:`threshold_otsu` after the histogram)."""
    if hist.counts.size == 1:
        return hist.center(0)
    counts = hist.counts
    # positions are bin indices: the criterion's argmax does not change under a shift and
    # scale of the grey levels, and integer positions keep the prefix sums exact
    idx = np.arange(counts.size, dtype=np.int64)
    w0 = np.cumsum(counts)[:-1].astype(np.float64)
    s0 = np.cumsum(counts * idx)[:-1].astype(np.float64)
    n = float(w0[-1] + counts[-1])
    mean = float(counts @ idx) / n
    # w0 w1 (m0 - m1)^2 = n^2 (s0 - mean w0)^2 / (w0 w1); the constant n^2 is dropped
    crit = (s0 - mean * w0) ** 2 / (w0 * (n - w0))
    return hist.center(int(np.argmax(crit)))


@numba.njit(cache=True)
def _multiotsu_split(w: np.ndarray, x: np.ndarray, classes: int) -> np.ndarray:  # pragma: no cover
    """Last occupied level of each of the first ``classes - 1`` classes (indices into ``w``).

    Maximises the between-class sum ``sum_k S_k**2 / W_k`` (``W_k``, ``S_k``: weight and
    weighted sum of centred positions ``x`` of class ``k``) over splits of the ``m`` occupied
    levels into ``classes`` non-empty runs. Dynamic programme over classes; within a class the
    optimal start of the last run is monotone in its end (1-D k-means costs satisfy the
    quadrangle inequality), so each row is filled by divide and conquer in O(m log m).
    Ties keep the lowest split.
    """
    m = w.size
    pw = np.zeros(m + 1)
    ps = np.zeros(m + 1)
    for i in range(m):
        pw[i + 1] = pw[i] + w[i]
        ps[i + 1] = ps[i] + w[i] * x[i]
    best = np.full((classes, m), -np.inf)
    arg = np.zeros((classes, m), dtype=np.int64)
    for i in range(m):
        s = ps[i + 1]
        best[0, i] = s * s / pw[i + 1]
    # explicit stack of (lo, hi, optlo, opthi): numba has no cheap recursion
    stack = np.empty((2 * 64 + 8, 4), dtype=np.int64)
    for k in range(1, classes):
        top = 0
        stack[0, 0], stack[0, 1], stack[0, 2], stack[0, 3] = k, m - 1, k - 1, m - 2
        while top >= 0:
            lo, hi, optlo, opthi = stack[top, 0], stack[top, 1], stack[top, 2], stack[top, 3]
            top -= 1
            if lo > hi:
                continue
            mid = (lo + hi) // 2
            bj = -1
            bv = -np.inf
            # the last run is j+1 .. mid; the first k classes end at j
            for j in range(optlo, min(mid - 1, opthi) + 1):
                s = ps[mid + 1] - ps[j + 1]
                v = best[k - 1, j] + s * s / (pw[mid + 1] - pw[j + 1])
                if v > bv:
                    bv = v
                    bj = j
            best[k, mid] = bv
            arg[k, mid] = bj
            top += 1
            stack[top, 0], stack[top, 1], stack[top, 2], stack[top, 3] = lo, mid - 1, optlo, bj
            top += 1
            stack[top, 0], stack[top, 1], stack[top, 2], stack[top, 3] = mid + 1, hi, bj, opthi
    ends = np.empty(classes - 1, dtype=np.int64)
    i = m - 1
    for k in range(classes - 1, 0, -1):
        i = arg[k, i]
        ends[k - 1] = i
    return ends


def threshold_multiotsu(image: Any, *, classes: int = 3, nbins: int = 256) -> np.ndarray:
    """Multi-level Otsu: ``classes - 1`` thresholds maximising the between-class variance.

    The criterion is Otsu's generalised to several classes, ``sum_k w_k (m_k - m) ** 2``
    (``w_k``, ``m_k``: weight and mean of class ``k``, ``m``: the image mean), maximised
    exactly over the histogram by dynamic programming. Threshold ``k`` is the grey level of the
    last bin of class ``k``; :func:`apply_thresholds` turns them into a label map.

    Parameters
    ----------
    image : array_like, shape (rows, cols) or (rows, cols, slices)
        Grey image or volume, any numeric dtype (not bool).
    classes : int, optional
        Number of classes (>= 2).
    nbins : int, optional
        Number of histogram bins for float images (>= 2); ignored for integer images.

    Returns
    -------
    thresholds : ndarray of float64, shape (classes - 1,)
        Increasing thresholds, equal to ``skimage.filters.threshold_multiotsu``'s but for
        near-ties that scikit-image's float32 arithmetic ranks wrongly (module notes).

    Raises
    ------
    ValueError
        If the histogram has fewer occupied bins than ``classes``.

    References
    ----------
    .. [1] Liao, P.-S., Chen, T.-S. and Chung, P.-C., "A Fast Algorithm for Multilevel
           Thresholding", Journal of Information Science and Engineering 17(5): 713-727, 2001.
           :doi:`10.6688/JISE.2001.17.5.1`
    .. [2] Wang, H. and Song, M., "Ckmeans.1d.dp: Optimal k-means Clustering in One Dimension
           by Dynamic Programming", The R Journal 3(2): 29-33, 2011.
           :doi:`10.32614/RJ-2011-015`

    Examples
    --------
    >>> image = np.array([[0, 1, 2], [50, 51, 52], [200, 201, 202]], dtype=np.uint8)
    >>> threshold_multiotsu(image, classes=3)
    array([ 2., 52.])
    """
    image = _check_grey(image)
    classes = check_int(classes, name="classes", minimum=2)
    nbins = check_int(nbins, name="nbins", minimum=2)
    return _multiotsu(_histogram(image, nbins), classes)


def _multiotsu(hist: _Hist, classes: int) -> np.ndarray:
    """Multi-Otsu thresholds of a histogram (:func:`threshold_multiotsu` after it)."""
    occupied = np.flatnonzero(hist.counts)
    if occupied.size < classes:
        raise ValueError(
            f"classes must be <= the number of occupied histogram bins ({occupied.size}), "
            f"got {classes}"
        )
    w = hist.counts[occupied].astype(np.float64)
    # centred positions: the criterion differs from sum_k S_k^2 / W_k by a constant, and
    # centring keeps the squares small (less rounding in the comparisons)
    x = occupied - (w @ occupied) / w.sum()
    ends = _multiotsu_split(w, x, classes)
    return np.array([hist.center(i) for i in occupied[ends]], dtype=np.float64)


def threshold_li(
    image: Any,
    *,
    tolerance: float | None = None,
    initial_guess: float | Callable[[np.ndarray], float] | None = None,
) -> float:
    """Li's minimum cross-entropy threshold, by the iteration of Li and Tam.

    Starting from ``initial_guess`` (default: the image mean), the threshold becomes
    ``(m_b - m_f) / (log m_b - log m_f)`` with ``m_b``, ``m_f`` the means (measured from the
    image minimum) of the pixels at or below and above it, until it moves by no more than
    ``tolerance``. It is computed from the grey levels and their counts, not the pixels.

    Parameters
    ----------
    image : array_like, shape (rows, cols) or (rows, cols, slices)
        Grey image or volume, any numeric dtype (not bool).
    tolerance : float, optional
        Stop when the threshold changes by at most this (> 0). Default: 0.5 for integer
        images, half the smallest gap between distinct values for float images.
    initial_guess : float or callable, optional
        Start of the iteration, strictly between the image minimum and maximum, or a function
        of the image (e.g. ``numpy.median``, ``threshold_otsu``) returning one. The callable
        receives the image itself (scikit-image passes the image minus its minimum; the
        result is the same for shift-equivariant functions such as these).

    Returns
    -------
    threshold : float
        The same value as ``skimage.filters.threshold_li`` (to rounding: scikit-image works in
        float32 for float32 images); the image's value if it is constant.

    References
    ----------
    .. [1] Li, C. H. and Lee, C. K., "Minimum Cross Entropy Thresholding", Pattern
           Recognition 26(4): 617-625, 1993. :doi:`10.1016/0031-3203(93)90115-D`
    .. [2] Li, C. H. and Tam, P. K. S., "An Iterative Algorithm for Minimum Cross Entropy
           Thresholding", Pattern Recognition Letters 18(8): 771-776, 1998.
           :doi:`10.1016/S0167-8655(98)00057-9`

    Examples
    --------
    >>> image = np.array([[10, 11, 12], [50, 51, 52]], dtype=np.uint8)
    >>> round(threshold_li(image), 3)  # 10 + 40 / ln(41)
    20.771
    """
    image = _check_grey(image)
    if tolerance is not None:
        tolerance = _check_real(tolerance, name="tolerance")
        if tolerance <= 0:
            raise ValueError(f"tolerance must be > 0, got {tolerance}")
    levels, counts = _levels(image)
    levels = levels.astype(np.float64)
    lo = levels[0]
    if levels.size == 1:
        return float(lo)
    # Li's criterion takes logarithms of means: measure grey levels from the minimum
    x = levels - lo
    if tolerance is not None:
        tol = tolerance
    elif np.issubdtype(image.dtype, np.integer):
        tol = 0.5
    else:
        tol = float(np.min(np.diff(x))) / 2
    counts = counts.astype(np.float64)
    wx = counts * x

    if initial_guess is None:
        t_next = float(wx.sum() / counts.sum())
    else:
        guess = initial_guess(image) if callable(initial_guess) else initial_guess
        guess = _check_real(guess, name="initial_guess")
        if not lo < guess < levels[-1]:
            raise ValueError(
                f"initial_guess must be strictly between the image minimum {lo:g} and "
                f"maximum {levels[-1]:g}, got {guess:g}"
            )
        t_next = guess - lo
    # cumulative sums by level; a threshold t splits after the last level <= t
    cw = np.cumsum(counts)
    cs = np.cumsum(wx)
    t_curr = -2 * tol
    while abs(t_next - t_curr) > tol:
        t_curr = t_next
        # levels[:k] <= t_curr are background; 0 <= t_curr < max keeps both classes non-empty
        # (t is the logarithmic mean of two class means, or a guess checked above)
        k = int(np.searchsorted(x, t_curr, side="right"))
        mean_back = cs[k - 1] / cw[k - 1]
        mean_fore = (cs[-1] - cs[k - 1]) / (cw[-1] - cw[k - 1])
        if mean_back == 0:
            # the background is the minimum alone; log(0) is undefined
            break
        t_next = (mean_back - mean_fore) / (np.log(mean_back) - np.log(mean_fore))
    return float(t_next + lo)


def threshold_yen(image: Any, *, nbins: int = 256) -> float:
    """Yen's threshold: the split that maximises the total "entropic correlation".

    For a split after bin ``t`` with probability ``P(t)`` below it the criterion is
    ``log(P (1 - P))**2 - log(sum_{i<=t} p_i**2) - log(sum_{i>t} p_i**2)``.

    Parameters
    ----------
    image : array_like, shape (rows, cols) or (rows, cols, slices)
        Grey image or volume, any numeric dtype (not bool).
    nbins : int, optional
        Number of histogram bins for float images (>= 2); ignored for integer images.

    Returns
    -------
    threshold : float
        The same value as ``skimage.filters.threshold_yen`` (but for near-ties, see the
        module notes); the image's value if it is constant.

    References
    ----------
    .. [1] Yen, J.-C., Chang, F.-J. and Chang, S., "A New Criterion for Automatic Multilevel
           Thresholding", IEEE Trans. Image Processing 4(3): 370-378, 1995.
           :doi:`10.1109/83.366472`
    .. [2] Sezgin, M. and Sankur, B., "Survey over Image Thresholding Techniques and
           Quantitative Performance Evaluation", Journal of Electronic Imaging 13(1):
           146-165, 2004. :doi:`10.1117/1.1631315`

    Examples
    --------
    >>> image = np.array([[10, 11, 12], [50, 51, 52]], dtype=np.uint8)
    >>> threshold_yen(image)
    12.0
    """
    image = _check_grey(image)
    nbins = check_int(nbins, name="nbins", minimum=2)
    return _yen(_histogram(image, nbins))


def _yen(hist: _Hist) -> float:
    """Yen's threshold of a histogram (:func:`threshold_yen` after it)."""
    counts = hist.counts
    if counts.size == 1:
        return hist.center(0)
    # from integer counts: P(1 - P) = w0 w1 / n^2 and the sums of p^2 are exact ratios; the
    # n^4 in both cancels, so only the argmax of the count form is needed
    c = counts.astype(np.float64)
    w0 = np.cumsum(c)[:-1]
    w1 = c.sum() - w0
    q = c * c
    q0 = np.cumsum(q)[:-1]
    q1 = np.cumsum(q[::-1])[::-1][1:]
    crit = 2 * np.log(w0) + 2 * np.log(w1) - np.log(q0) - np.log(q1)
    return hist.center(int(np.argmax(crit)))


def threshold_triangle(image: Any, *, nbins: int = 256) -> float:
    """Triangle threshold: the bin farthest from the line joining the peak to the far tail end.

    The line runs from the histogram peak to the end of the longer tail; the threshold is the
    bin between them whose count lies farthest below the line.

    Parameters
    ----------
    image : array_like, shape (rows, cols) or (rows, cols, slices)
        Grey image or volume, any numeric dtype (not bool).
    nbins : int, optional
        Number of histogram bins for float images (>= 2); ignored for integer images.

    Returns
    -------
    threshold : float
        The same value as ``skimage.filters.threshold_triangle``; the image's value if it is
        constant.

    References
    ----------
    .. [1] Zack, G. W., Rogers, W. E. and Latt, S. A., "Automatic Measurement of Sister
           Chromatid Exchange Frequency", Journal of Histochemistry and Cytochemistry 25(7):
           741-753, 1977. :doi:`10.1177/25.7.70454`

    Examples
    --------
    >>> image = np.array([0, 1, 1, 2, 2, 2, 2, 2, 2, 3, 3, 4, 4, 5, 5, 6, 7, 8], dtype=np.uint8)
    >>> threshold_triangle(image.reshape(3, 6))
    3.0
    """
    image = _check_grey(image)
    nbins = check_int(nbins, name="nbins", minimum=2)
    return _triangle(_histogram(image, nbins))


def _triangle(hist: _Hist) -> float:
    """The triangle method's threshold of a histogram (:func:`threshold_triangle` after it)."""
    counts = hist.counts
    n = counts.size
    if n == 1:
        return hist.center(0)
    peak = int(np.argmax(counts))
    # the histogram's first and last bins are occupied; walk along the longer tail
    flip = peak < (n - 1) - peak
    h = counts[::-1] if flip else counts
    p = (n - 1 - peak) if flip else peak
    # bins 0 .. p-1 of the tail; the line joins (0, 0) to (p, h[p]). Distance below the line is
    # proportional to h[p] * x - p * h[x], exact in integers.
    x = np.arange(p, dtype=np.int64)
    level = int(np.argmax(h[p] * x - p * h[:p]))
    return hist.center(n - 1 - level if flip else level)


# ----------------------------------------------------------------------------------------------
# hysteresis and several thresholds (local thresholds: segloc.classical.local_threshold)


def apply_hysteresis_threshold(
    image: Any, low: float, high: float, *, connectivity: int = 1
) -> np.ndarray:
    """Hysteresis: pixels above ``low`` that are connected to a pixel above ``high``.

    Parameters
    ----------
    image : array_like, shape (rows, cols) or (rows, cols, slices)
        Grey image or volume, any numeric dtype (not bool).
    low, high : float
        Thresholds, ``low <= high``; both strict (``image > low``, ``image > high``).
    connectivity : int, optional
        Neighbourhood of the connected components: 1 (default, faces only, as scikit-image)
        up to ``image.ndim``, or the neighbour count (4/8 in 2D, 6/18/26 in 3D).

    Returns
    -------
    mask : ndarray of bool, same shape as ``image``
        Equal to ``skimage.filters.apply_hysteresis_threshold`` for ``connectivity=1``.

    References
    ----------
    .. [1] Canny, J., "A Computational Approach to Edge Detection", IEEE Trans. Pattern
           Analysis and Machine Intelligence 8(6): 679-698, 1986.
           :doi:`10.1109/TPAMI.1986.4767851`

    Examples
    --------
    >>> image = np.array([[1, 2, 3, 2, 1, 2, 1, 3, 2]])
    >>> apply_hysteresis_threshold(image, 1.5, 2.5).astype(int)
    array([[0, 1, 1, 1, 0, 0, 0, 1, 1]])
    """
    image = _check_grey(image)
    low = _check_real(low, name="low")
    high = _check_real(high, name="high")
    if low > high:
        raise ValueError(f"low must be <= high, got low={low:g} and high={high:g}")
    rank = check_connectivity(connectivity, image.ndim)
    structure = ndi.generate_binary_structure(image.ndim, rank)
    labels, _ = ndi.label(apply_threshold(image, low), structure=structure)
    keep = np.unique(labels[apply_threshold(image, high)])
    # label 0 is the background; it is never above high because high >= low
    lut = np.zeros(labels.max() + 1, dtype=bool)
    lut[keep] = True
    return lut[labels]


def apply_thresholds(image: Any, thresholds: Sequence[float] | np.ndarray) -> np.ndarray:
    """Label map from increasing thresholds: ``np.digitize(image, thresholds)`` as int32.

    A pixel gets the number of thresholds it is at or above: 0 below ``thresholds[0]``, ``k``
    for ``thresholds[k-1] <= value < thresholds[k]``. This is how scikit-image applies
    :func:`threshold_multiotsu`'s thresholds; note that a pixel equal to a threshold goes to
    the upper class, whereas the single-threshold functions use ``image > t``.

    Parameters
    ----------
    image : array_like, shape (rows, cols) or (rows, cols, slices)
        Grey image or volume, any numeric dtype (not bool).
    thresholds : sequence of float
        One or more finite, non-decreasing thresholds.

    Returns
    -------
    labels : ndarray of int32, same shape as ``image``
        Values ``0 .. len(thresholds)``.

    References
    ----------
    .. [1] Liao, P.-S., Chen, T.-S. and Chung, P.-C., "A Fast Algorithm for Multilevel
           Thresholding", Journal of Information Science and Engineering 17(5): 713-727, 2001.
           :doi:`10.6688/JISE.2001.17.5.1`

    Examples
    --------
    >>> apply_thresholds(np.array([[0, 2, 3], [5, 6, 9]]), [2.0, 6.0])
    array([[0, 1, 1],
           [1, 2, 2]], dtype=int32)
    """
    image = _check_grey(image)
    t = np.asarray(thresholds)
    if t.dtype == object or not (np.issubdtype(t.dtype, np.number) and t.dtype != np.bool_):
        raise TypeError(f"thresholds must be numbers, got dtype {t.dtype}")
    t = t.astype(np.float64)
    if t.ndim != 1 or t.size == 0:
        raise ValueError(f"thresholds must be a non-empty 1D sequence, got shape {t.shape}")
    if not np.isfinite(t).all():
        raise ValueError(f"thresholds must be finite, got {t.tolist()}")
    if np.any(np.diff(t) < 0):
        raise ValueError(f"thresholds must be non-decreasing, got {t.tolist()}")
    return np.digitize(image, t).astype(np.int32)
