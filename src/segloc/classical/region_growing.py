"""Region growing from seed points, in 2D and 3D: three classic variants.

- :func:`region_grow`: tolerance growing. Seed ``i`` (label ``i``, 1-based) takes the connected
  pixels whose value lies within ``tolerance`` of its seed value (or of its running mean); grey
  images or 2D colour images (Euclidean distance between colour vectors).
- :func:`seeded_region_growing`: seeded region growing of Adams & Bischof (1994); every pixel
  connected to a seed joins the neighbouring region whose mean is nearest its value, in order of
  that distance, so the whole connected image is partitioned with no parameter to tune.
- :func:`confidence_connected`: ITK's ``ConfidenceConnectedImageFilter``: flood fill within
  ``mean +/- multiplier * std``, the statistics re-estimated on the grown region.

Seeds are array indices ``(row, col[, slice])``, as a sequence of tuples or an ``(N, ndim)``
integer array. Connectivity is scikit-image's rank (1 = faces only, ``ndim`` = full) or the
neighbour count (4/8 in 2D, 6/18/26 in 3D). Label maps are ``int32`` (0 = not reached); masks
are ``bool``.

The growing loops are compiled with numba. Every image is walked as a flat C-order array of
shape ``(n0, n1, n2)`` (a 2D image is ``(rows, cols, 1)``), so one kernel serves 2D and 3D.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numba
import numpy as np

from segloc._validation import (
    check_choice,
    check_connectivity,
    check_image,
    check_int,
    check_positive,
)

__all__ = ["region_grow", "seeded_region_growing", "confidence_connected"]


# ----------------------------------------------------------------------------------------------
# argument checks


def _check_seeds(
    seeds: Any, shape: tuple[int, ...], *, unique: bool, colour_hint: str = ""
) -> np.ndarray:
    """Return the seeds as an ``(N, ndim)`` int64 array of in-bounds indices."""
    ndim = len(shape)
    if isinstance(seeds, np.ndarray):
        if seeds.ndim != 2:
            raise ValueError(
                f"seeds must be an (N, {ndim}) integer array, got an array of shape {seeds.shape}"
            )
        if seeds.size and not np.issubdtype(seeds.dtype, np.integer):
            raise TypeError(f"seeds must hold integer indices, got dtype {seeds.dtype}")
        rows = [tuple(row) for row in seeds.tolist()]
    elif isinstance(seeds, Sequence) and not isinstance(seeds, (str, bytes)):
        rows = list(seeds)
        if rows and all(_is_int(v) for v in rows):
            raise TypeError(
                f"seeds must be a sequence of index tuples (row, col[, slice]), got the flat "
                f"sequence {tuple(rows)}; wrap a single seed in a list: [{tuple(rows)}]"
            )
    else:
        raise TypeError(
            "seeds must be a sequence of index tuples (row, col[, slice]) or an (N, ndim) "
            f"integer array, got {type(seeds).__name__}"
        )
    if not rows:
        raise ValueError("seeds must hold at least one seed, got none")
    out = np.empty((len(rows), ndim), dtype=np.int64)
    first_at: dict[tuple[int, ...], int] = {}
    for i, row in enumerate(rows):
        try:
            coords = tuple(row)
        except TypeError:
            raise TypeError(f"seeds[{i}] must be an index tuple, got {row!r}") from None
        if not all(_is_int(v) for v in coords):
            raise TypeError(f"seeds[{i}] = {row!r} must hold integer indices")
        coords = tuple(int(v) for v in coords)
        if len(coords) != ndim:
            # a 2-coordinate seed in an (M, N, 3) array is most likely a colour image
            looks_rgb = len(coords) == 2 and ndim == 3 and shape[-1] in (3, 4)
            raise ValueError(
                f"seeds[{i}] = {coords} has {len(coords)} coordinates for a {ndim}D image of "
                f"shape {shape}{colour_hint if looks_rgb else ''}"
            )
        if any(not 0 <= c < n for c, n in zip(coords, shape, strict=True)):
            raise ValueError(f"seeds[{i}] = {coords} is outside the image of shape {shape}")
        if unique:
            if coords in first_at:
                raise ValueError(
                    f"seeds[{i}] = {coords} repeats seeds[{first_at[coords]}]; "
                    "each seed gives its own label, so seeds must be distinct"
                )
            first_at[coords] = i
        out[i] = coords
    return out


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _check_nonnegative(value: Any, *, name: str) -> float:
    # check_positive lets strings through to the comparison (np.isscalar("1") is True)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return float(check_positive(value, name=name, strict=False))


def _numeric(arr: np.ndarray) -> np.ndarray:
    """C-contiguous array of a dtype the kernels compile for (bool as 0/1 bytes, float16 up)."""
    if arr.dtype == np.bool_:
        arr = arr.view(np.uint8)
    elif arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    return np.ascontiguousarray(arr)


def _grid(shape: tuple[int, ...], rank: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What the kernels need to step between neighbours of a C-order image of ``shape``.

    Returns ``geo = (n0, n1, n2, deep)`` (a 2D image is ``(rows, cols, 1)``), the ``(K, 3)``
    neighbour steps of the connectivity ``rank`` and the same steps as flat-index offsets.
    The step order (itertools.product over -1, 0, 1) fixes the visiting order and so every
    breadth-first tie-break below.
    """
    ndim = len(shape)
    n0, n1, n2 = shape[0], shape[1], shape[2] if ndim == 3 else 1
    steps = [
        d + (0,) * (3 - ndim)
        for d in itertools.product((-1, 0, 1), repeat=ndim)
        if 0 < sum(abs(v) for v in d) <= rank
    ]
    offs = np.array(steps, dtype=np.int64)
    flat = (offs[:, 0] * n1 + offs[:, 1]) * n2 + offs[:, 2]
    return np.array([n0, n1, n2, ndim == 3], dtype=np.int64), offs, flat


def _flat_seeds(seeds: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return np.ravel_multi_index(tuple(seeds.T), shape).astype(np.int64)


def _queue(n: int) -> np.ndarray:
    # every pixel enters a queue at most once, so n slots suffice; int32 halves the memory
    return np.empty(n, dtype=np.int32 if n < 2**31 else np.int64)


# ----------------------------------------------------------------------------------------------
# compiled kernels
#
# Pixel values are widened with np.float64(...), not float(...): numba keeps float(x) of a
# float32 as float32, and the sums of squares then lost the low digits that decide whether a
# pixel sits on ITK's (float32-rounded) bound.


@numba.njit(cache=True, inline="always")
def _locate(p, geo):
    """(row, col, slice, interior) of flat pixel ``p``, once per pixel, not per neighbour.

    ``geo`` is ``(n0, n1, n2, deep)``; an interior pixel (off every border face; the slice
    axis counts only when ``deep``, i.e. for 3D images) has all its neighbours in the image.
    """
    n0, n1, n2 = geo[0], geo[1], geo[2]
    t = p // n2
    i, j, k = t // n1, t % n1, p % n2
    inside = 0 < i < n0 - 1 and 0 < j < n1 - 1 and (geo[3] == 0 or 0 < k < n2 - 1)
    return i, j, k, inside


@numba.njit(cache=True, inline="always")
def _neighbour(p, i, j, k, inside, o, offs, flat, geo):
    """Flat index of neighbour ``o`` of pixel ``p`` = (i, j, k), or -1 outside the image."""
    if inside:
        # most pixels: one addition, no bounds checks
        return p + flat[o]
    ii = i + offs[o, 0]
    jj = j + offs[o, 1]
    kk = k + offs[o, 2]
    if ii < 0 or ii >= geo[0] or jj < 0 or jj >= geo[1] or kk < 0 or kk >= geo[2]:
        return -1
    return (ii * geo[1] + jj) * geo[2] + kk


@numba.njit(cache=True)
def _grow_tolerance(img, geo, offs, flat, seeds, tol, use_mean, labels, queue):
    """Breadth-first growing from all seeds at once; ``img`` is ``(n, channels)``."""
    ns = seeds.size
    nc = img.shape[1]
    ref = np.empty((ns + 1, nc))
    sums = np.zeros((ns + 1, nc))
    counts = np.zeros(ns + 1, dtype=np.int64)
    tail = 0
    for s in range(ns):
        p = seeds[s]
        labels[p] = s + 1
        queue[tail] = p
        tail += 1
        counts[s + 1] = 1
        for c in range(nc):
            ref[s + 1, c] = np.float64(img[p, c])
            sums[s + 1, c] = np.float64(img[p, c])
    head = 0
    n_off = offs.shape[0]
    while head < tail:
        p = queue[head]
        head += 1
        lab = labels[p]
        i, j, k, inside = _locate(p, geo)
        for o in range(n_off):
            q = _neighbour(p, i, j, k, inside, o, offs, flat, geo)
            if q < 0 or labels[q] != 0:
                continue
            if nc == 1:
                d = abs(np.float64(img[q, 0]) - ref[lab, 0])
            else:
                d2 = 0.0
                for c in range(nc):
                    diff = np.float64(img[q, c]) - ref[lab, c]
                    d2 += diff * diff
                d = math.sqrt(d2)
            if d <= tol:
                labels[q] = lab
                queue[tail] = q
                tail += 1
                if use_mean:
                    counts[lab] += 1
                    for c in range(nc):
                        sums[lab, c] += np.float64(img[q, c])
                        ref[lab, c] = sums[lab, c] / counts[lab]


@numba.njit(cache=True, inline="always")
def _accepts(img, q, ref, tol):
    """``|img[q] - ref| <= tol`` in float64 (Euclidean over the channels), as in
    :func:`_grow_tolerance`."""
    nc = img.shape[1]
    if nc == 1:
        return abs(np.float64(img[q, 0]) - ref[0]) <= tol
    d2 = 0.0
    for c in range(nc):
        diff = np.float64(img[q, c]) - ref[c]
        d2 += diff * diff
    return math.sqrt(d2) <= tol


@numba.njit(cache=True)
def _fill_spans(img, lines, length, nbr, seed, tol, labels):
    """One seed's region by scanline (span) filling; the same pixels as :func:`_grow_tolerance`.

    With one seed and the seed's value as reference, a pixel is accepted or not whatever the
    order of the visit, so the region is the connected component of the accepted pixels
    that holds the seed, which spans find with one test per pixel and neighbouring line
    instead of one per pixel and neighbour. The image is ``lines`` (a 2D ``(n0,)`` or 3D
    ``(n0, n1)`` grid) of lines of ``length`` pixels along the last axis; ``nbr`` rows are
    ``(d0, d1, extend)``: a neighbouring line and whether diagonal steps reach one pixel past
    a span's ends.
    """
    nc = img.shape[1]
    ref = np.empty(nc)
    for c in range(nc):
        ref[c] = np.float64(img[seed, c])
    m0 = lines[0]
    m1 = lines[1]
    stack = np.empty(1024, dtype=np.int64)
    stack[0] = seed
    top = 1
    while top > 0:
        top -= 1
        p = stack[top]
        if labels[p] != 0:
            continue
        line = p // length
        start = line * length
        lo = p - start
        hi = lo
        while lo > 0 and labels[start + lo - 1] == 0 and _accepts(img, start + lo - 1, ref, tol):
            lo -= 1
        while (
            hi < length - 1
            and labels[start + hi + 1] == 0
            and _accepts(img, start + hi + 1, ref, tol)
        ):
            hi += 1
        for x in range(lo, hi + 1):
            labels[start + x] = 1
        i0 = line // m1
        i1 = line - i0 * m1
        for b in range(nbr.shape[0]):
            j0 = i0 + nbr[b, 0]
            j1 = i1 + nbr[b, 1]
            if j0 < 0 or j0 >= m0 or j1 < 0 or j1 >= m1:
                continue
            other = (j0 * m1 + j1) * length
            a = max(0, lo - nbr[b, 2])
            z = min(length - 1, hi + nbr[b, 2])
            run = False
            for x in range(a, z + 1):
                q = other + x
                if labels[q] == 0 and _accepts(img, q, ref, tol):
                    if not run:
                        if top == stack.size:
                            grown = np.empty(2 * stack.size, dtype=np.int64)
                            grown[:top] = stack
                            stack = grown
                        stack[top] = q
                        top += 1
                        run = True
                else:
                    run = False


def _span_neighbours(ndim: int, rank: int) -> np.ndarray:
    """``(d0, d1, extend)`` rows for :func:`_fill_spans`: the lines next to a line (offsets
    in the axes before the last) and whether a step of -1/+1 along the line joins them too."""
    rows = []
    for d in itertools.product((-1, 0, 1), repeat=ndim - 1):
        moved = sum(v != 0 for v in d)
        if 0 < moved <= rank:
            d2 = (0,) * (3 - ndim) + d  # (d0, d1): a 2D image's lines form an (n0,) = (1, n0) grid
            rows.append((d2[0], d2[1], int(moved < rank)))
    return np.array(rows, dtype=np.int64).reshape(-1, 3)


@numba.njit(cache=True, inline="always")
def _before(d1, c1, d2, c2):
    """Heap order: smaller delta first, then smaller insertion counter (first in, first out)."""
    return d1 < d2 or (d1 == d2 and c1 < c2)


@numba.njit(cache=True)
def _heap_push(key, cnt, pix, size, d, c, p):
    """Push (d, c, p) on the binary min-heap of ``size`` items; return the new size."""
    # move the hole up from the end instead of swapping: one write per level
    i = size
    while i > 0:
        parent = (i - 1) // 2
        if not _before(d, c, key[parent], cnt[parent]):
            break
        key[i] = key[parent]
        cnt[i] = cnt[parent]
        pix[i] = pix[parent]
        i = parent
    key[i] = d
    cnt[i] = c
    pix[i] = p
    return size + 1


@numba.njit(cache=True)
def _heap_pop(key, cnt, pix, size):
    """Remove the smallest (key, counter) item; return (its pixel, the new size)."""
    top = pix[0]
    size -= 1
    d = key[size]
    c = cnt[size]
    p = pix[size]
    i = 0
    while True:
        child = 2 * i + 1
        if child >= size:
            break
        if child + 1 < size and _before(key[child + 1], cnt[child + 1], key[child], cnt[child]):
            child += 1
        if not _before(key[child], cnt[child], d, c):
            break
        key[i] = key[child]
        cnt[i] = cnt[child]
        pix[i] = pix[child]
        i = child
    key[i] = d
    cnt[i] = c
    pix[i] = p
    return top, size


@numba.njit(cache=True)
def _nearest_region(p, img, labels, sums, counts, ns, geo, offs, flat):
    """(label, delta, number of distinct labels) over the regions next to pixel ``p``.

    delta = |g(p) - mean(A_i)| is minimised over the neighbouring regions A_i; equal deltas go
    to the lower label. Labels outside 1..ns (queued, boundary, unassigned) are not regions.
    """
    g = np.float64(img[p])
    best = 0
    best_d = np.inf
    first = 0
    distinct = 0
    i, j, k, inside = _locate(p, geo)
    for o in range(offs.shape[0]):
        q = _neighbour(p, i, j, k, inside, o, offs, flat, geo)
        if q < 0:
            continue
        lab = labels[q]
        if lab < 1 or lab > ns:
            continue
        if first == 0:
            first = lab
            distinct = 1
        elif lab != first:
            distinct = 2
        d = abs(g - sums[lab] / counts[lab])
        if d < best_d or (d == best_d and lab < best):
            best_d = d
            best = lab
    return best, best_d, distinct


@numba.njit(cache=True)
def _seeded_region_growing(img, geo, offs, flat, seeds, mark, labels, key, cnt, pix):
    """Adams & Bischof's sequentially sorted list as a binary heap keyed by (delta, counter).

    ``labels`` holds 0 (unassigned), -1 (in the list), 1..ns (regions) or ns + 1 (boundary).
    """
    ns = seeds.size
    sums = np.zeros(ns + 1)
    counts = np.ones(ns + 1, dtype=np.int64)
    for s in range(ns):
        p = seeds[s]
        labels[p] = s + 1
        sums[s + 1] = np.float64(img[p])
    size = 0
    counter = 0
    n_off = offs.shape[0]
    # all seeds are labelled before any neighbour is listed, so a pixel touching two seeds
    # gets the delta of the nearer seed mean whatever the seed order
    for s in range(ns):
        p = seeds[s]
        i, j, k, inside = _locate(p, geo)
        for o in range(n_off):
            q = _neighbour(p, i, j, k, inside, o, offs, flat, geo)
            if q >= 0 and labels[q] == 0:
                _, d, _ = _nearest_region(q, img, labels, sums, counts, ns, geo, offs, flat)
                labels[q] = -1
                size = _heap_push(key, cnt, pix, size, d, counter, q)
                counter += 1
    while size > 0:
        p, size = _heap_pop(key, cnt, pix, size)
        lab, _, distinct = _nearest_region(p, img, labels, sums, counts, ns, geo, offs, flat)
        if mark and distinct > 1:
            labels[p] = ns + 1
            continue
        labels[p] = lab
        sums[lab] += np.float64(img[p])
        counts[lab] += 1
        i, j, k, inside = _locate(p, geo)
        for o in range(n_off):
            q = _neighbour(p, i, j, k, inside, o, offs, flat, geo)
            if q >= 0 and labels[q] == 0:
                _, d, _ = _nearest_region(q, img, labels, sums, counts, ns, geo, offs, flat)
                labels[q] = -1
                size = _heap_push(key, cnt, pix, size, d, counter, q)
                counter += 1


@numba.njit(cache=True)
def _fill_between(img, geo, offs, flat, seeds, lo, hi, mask, queue):
    """Flood ``mask`` (zeroed first) from the seeds over pixels with lo <= value <= hi.

    Returns (count, sum, sum of squares) of the filled values, in float64, so the next
    re-estimation needs no second pass over the region.
    """
    mask[:] = 0
    tail = 0
    total = 0.0
    total2 = 0.0
    for s in range(seeds.size):
        p = seeds[s]
        v = img[p]
        if mask[p] == 0 and lo <= v and v <= hi:
            mask[p] = 1
            queue[tail] = p
            tail += 1
            x = np.float64(v)
            total += x
            total2 += x * x
    head = 0
    n_off = offs.shape[0]
    while head < tail:
        p = queue[head]
        head += 1
        i, j, k, inside = _locate(p, geo)
        for o in range(n_off):
            q = _neighbour(p, i, j, k, inside, o, offs, flat, geo)
            if q < 0 or mask[q] != 0:
                continue
            v = img[q]
            if lo <= v and v <= hi:
                mask[q] = 1
                queue[tail] = q
                tail += 1
                x = np.float64(v)
                total += x
                total2 += x * x
    return tail, total, total2


# ----------------------------------------------------------------------------------------------
# public functions


def region_grow(
    image: Any,
    seeds: Any,
    *,
    tolerance: float,
    connectivity: int = 1,
    reference: str = "seed",
    channel_axis: int | None = None,
) -> np.ndarray:
    """Grow one labelled region from each seed over pixels within ``tolerance``.

    Seed ``i`` (label ``i + 1``) takes the pixels connected to it whose value lies within
    ``tolerance`` of its reference: the seed's own value (``reference="seed"``, as
    :func:`skimage.segmentation.flood`) or the running mean of its region (``"mean"``).

    Parameters
    ----------
    image : ndarray, shape (M, N[, P]) or (M, N, C) with ``channel_axis``
        Grey 2D/3D image of any numeric dtype, or a 2D colour image.
    seeds : sequence of tuple of int, or ndarray of int, shape (S, ndim)
        Distinct array indices ``(row, col[, slice])``; seed ``i`` gets label ``i + 1``.
    tolerance : float
        Largest accepted distance ``|value - reference|`` (>= 0); for colour images the
        Euclidean distance between colour vectors, all channels counted (alpha too).
    connectivity : int, optional
        Rank 1..ndim or neighbour count (4/8 in 2D, 6/18/26 in 3D). Default 1 (faces).
    reference : {"seed", "mean"}, optional
        What a candidate pixel is compared with: the seed value, or the mean of the region at
        the moment the pixel is tested (it changes as the region grows).
    channel_axis : int or None, optional
        Axis of the colour channels (e.g. ``-1``); ``None`` (default) means a grey image.

    Returns
    -------
    labels : ndarray of int32, spatial shape of ``image``
        ``i + 1`` where seed ``i``'s region reached, 0 elsewhere.

    Notes
    -----
    All seeds grow at once, breadth first, through one queue that starts with the seeds in the
    given order; neighbours are visited in a fixed order. A pixel is labelled the first time a
    region reaches it and accepts it, and never changes afterwards, so a pixel within reach of
    several seeds goes to the region that gets there in fewer steps, and at equal steps to the
    region whose frontier pixel was queued first (for pixels next to the seeds, the earlier
    seed). A pixel one region rejects stays open to the others, and to that region's later
    visits (with ``reference="mean"`` its mean may have moved). One seed with
    ``reference="seed"`` has no such order to respect (whether a pixel is accepted does not
    depend on when it is visited), so it is filled span by span along the last axis, which
    gives the same region faster.

    Distances are computed in float64 as ``|value - reference| <= tolerance``. For a single
    seed and ``reference="seed"`` this is scikit-image's ``flood`` except for integer images
    with a fractional tolerance: ``flood`` casts ``seed - tolerance`` to the image dtype,
    which truncates (seed 100, tolerance 2.5 admits 97 there, not here); and ``flood`` with
    neither ``connectivity`` nor ``footprint`` uses full connectivity, this function faces only.
    For float32 images ``flood`` also rounds ``seed +/- tolerance`` to float32, so a pixel
    within that rounding of the bound may fall on the other side.

    References
    ----------
    .. [1] R. C. Gonzalez and R. E. Woods, *Digital Image Processing*, 4th ed., Pearson, 2018,
       section 10.4 "Region growing".
    .. [2] scikit-image, ``skimage.segmentation.flood``:
       https://scikit-image.org/docs/stable/api/skimage.segmentation.html#skimage.segmentation.flood

    Examples
    --------
    >>> image = np.array([[1, 2, 9, 9],
    ...                   [1, 3, 8, 9]])
    >>> region_grow(image, [(0, 0), (0, 3)], tolerance=1)
    array([[1, 1, 2, 2],
           [1, 0, 2, 2]], dtype=int32)

    The running mean lets a region follow a slow ramp that the seed value would stop:

    >>> ramp = np.array([[0, 1, 2, 3, 4, 5]])
    >>> region_grow(ramp, [(0, 0)], tolerance=1.5)
    array([[1, 1, 0, 0, 0, 0]], dtype=int32)
    >>> region_grow(ramp, [(0, 0)], tolerance=1.5, reference="mean")
    array([[1, 1, 1, 0, 0, 0]], dtype=int32)
    """
    check_choice(reference, ("seed", "mean"), name="reference")
    tolerance = _check_nonnegative(tolerance, name="tolerance")
    if channel_axis is None:
        arr = _numeric(check_image(image))
        spatial = arr.shape
        pixels = arr.reshape(-1, 1)
    else:
        arr = check_image(image, ndim=(3,))
        if not _is_int(channel_axis):
            raise TypeError(f"channel_axis must be an integer or None, got {channel_axis!r}")
        if not -3 <= channel_axis < 3:
            raise ValueError(f"channel_axis must be in -3..2 for a 3D array, got {channel_axis}")
        arr = _numeric(np.moveaxis(arr, channel_axis, -1))
        spatial = arr.shape[:2]
        pixels = arr.reshape(-1, arr.shape[2])
    ndim = len(spatial)
    rank = check_connectivity(connectivity, ndim)
    pts = _check_seeds(
        seeds, spatial, unique=True, colour_hint="; a colour image needs channel_axis=-1"
    )
    labels = np.zeros(pixels.shape[0], dtype=np.int32)
    if len(pts) == 1 and reference == "seed":
        # one region whose test does not change as it grows: any visiting order gives the
        # same pixels, and span filling is the fast one
        lines = (1, spatial[0]) if ndim == 2 else spatial[:2]
        _fill_spans(
            pixels, np.array(lines, dtype=np.int64), spatial[-1], _span_neighbours(ndim, rank),
            int(_flat_seeds(pts, spatial)[0]), float(tolerance), labels,
        )  # fmt: skip
        return labels.reshape(spatial)
    _grow_tolerance(
        pixels, *_grid(spatial, rank), _flat_seeds(pts, spatial),
        float(tolerance), reference == "mean", labels, _queue(labels.size),
    )  # fmt: skip
    return labels.reshape(spatial)


def seeded_region_growing(
    image: Any, seeds: Any, *, connectivity: int = 1, mark_boundaries: bool = False
) -> np.ndarray:
    """Seeded region growing (Adams & Bischof 1994): every seed grows its own region.

    Unassigned pixels that touch a region wait in a list sorted by
    ``delta(x) = |g(x) - mean(A_i)|``, the distance of their value to the mean of the
    neighbouring region (the nearest one when they touch several). The pixel with the
    smallest delta joins the neighbouring region whose mean is nearest, that mean is updated,
    and its unlisted neighbours enter the list. Growth stops when the list is empty, so every
    pixel connected to a seed is labelled.

    Parameters
    ----------
    image : ndarray, shape (M, N[, P])
        Grey 2D/3D image, any numeric dtype (values are compared in float64).
    seeds : sequence of tuple of int, or ndarray of int, shape (S, ndim)
        Distinct array indices ``(row, col[, slice])``; seed ``i`` gets label ``i + 1``.
    connectivity : int, optional
        Rank 1..ndim or neighbour count (4/8 in 2D, 6/18/26 in 3D). Default 1 (faces).
    mark_boundaries : bool, optional
        If True, a pixel that touches two or more regions when it leaves the list is labelled
        ``len(seeds) + 1`` (the boundary label) and, as in the paper, joins no region and
        lists no neighbours.

    Returns
    -------
    labels : ndarray of int32, shape of ``image``
        ``1..len(seeds)`` for the regions, ``len(seeds) + 1`` for boundary pixels (only with
        ``mark_boundaries``), 0 for pixels not connected to any seed (and, with
        ``mark_boundaries``, pixels reachable only through boundary pixels).

    Notes
    -----
    This is the paper's sequentially sorted list (SSL): a pixel enters the list once, with the
    delta it has at that moment, and keeps that delta while region means drift; the list is a
    binary heap keyed by ``(delta, insertion counter)``, so equal deltas leave first in, first
    out. When a pixel leaves the list its region is decided afresh, from the current means of
    the regions it touches then (which may differ from the region that listed it), equal
    distances going to the lower label. Region means are updated on every assignment; seeds
    start as one-pixel regions. The seed pixels are all labelled before their neighbours are
    listed, so, barring exact ties in the data, the result does not depend on the seed order
    (except for the label numbers). The result does depend on processing order in the ways
    Mehnert & Jackway (1997) describe; this is the original algorithm, not their improved one.

    References
    ----------
    .. [1] R. Adams and L. Bischof, "Seeded region growing", IEEE Transactions on Pattern
       Analysis and Machine Intelligence 16(6):641-647, 1994. :doi:`10.1109/34.295913`
    .. [2] A. Mehnert and P. Jackway, "An improved seeded region growing algorithm", Pattern
       Recognition Letters 18(10):1065-1071, 1997. :doi:`10.1016/S0167-8655(97)00131-1`

    Examples
    --------
    >>> image = np.array([[1, 2, 8, 9, 4, 10]])
    >>> seeded_region_growing(image, [(0, 0), (0, 5)])
    array([[1, 1, 2, 2, 2, 2]], dtype=int32)
    >>> seeded_region_growing(image, [(0, 0), (0, 5)], mark_boundaries=True)
    array([[1, 1, 3, 2, 2, 2]], dtype=int32)
    """
    if not isinstance(mark_boundaries, (bool, np.bool_)):
        raise TypeError(f"mark_boundaries must be a bool, got {type(mark_boundaries).__name__}")
    arr = _numeric(check_image(image))
    rank = check_connectivity(connectivity, arr.ndim)
    pts = _check_seeds(
        seeds, arr.shape, unique=True, colour_hint="; convert a colour image to grey first"
    )
    n = arr.size
    labels = np.zeros(n, dtype=np.int32)
    _seeded_region_growing(
        arr.reshape(-1), *_grid(arr.shape, rank), _flat_seeds(pts, arr.shape),
        bool(mark_boundaries), labels, np.empty(n), np.empty(n, dtype=np.int64), _queue(n),
    )  # fmt: skip
    return labels.reshape(arr.shape)


def _itk_bounds(
    mean: float, variance: float, multiplier: float, seed_lo: float, seed_hi: float, dtype
) -> tuple[Any, Any]:
    """ITK's interval: mean -/+ multiplier*std, widened to the seeds, clamped, cast to dtype."""
    std = math.sqrt(variance)
    lower = mean - multiplier * std
    upper = mean + multiplier * std
    lower = min(lower, seed_lo)
    upper = max(upper, seed_hi)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        lower = max(lower, float(info.min))
        upper = min(upper, float(info.max))
        # C++ static_cast truncates toward zero; clamp again because float(info.max) of a
        # 64-bit type rounds up past the largest integer
        return (
            dtype.type(min(max(math.trunc(lower), info.min), info.max)),
            dtype.type(min(max(math.trunc(upper), info.min), info.max)),
        )
    finfo = np.finfo(dtype)
    lower = max(lower, float(finfo.min))
    upper = min(upper, float(finfo.max))
    return dtype.type(lower), dtype.type(upper)


def confidence_connected(
    image: Any,
    seeds: Any,
    *,
    multiplier: float = 2.5,
    iterations: int = 2,
    initial_radius: int = 1,
    connectivity: int = 1,
) -> np.ndarray:
    """Confidence-connected region growing, as ITK's ``ConfidenceConnectedImageFilter``.

    The mean and variance are first estimated from a box of radius ``initial_radius`` around
    every seed; the pixels connected to the seeds with values in
    ``[mean - multiplier * std, mean + multiplier * std]`` are flood filled; then, ``iterations``
    times, mean and variance are re-estimated from the filled region and the fill is redone.

    Parameters
    ----------
    image : ndarray, shape (M, N[, P])
        Grey 2D/3D image of any numeric dtype (bool is read as 0/1, float16 as float32).
    seeds : sequence of tuple of int, or ndarray of int, shape (S, ndim)
        Array indices ``(row, col[, slice])``; all seeds grow one region (repeats are allowed).
    multiplier : float, optional
        Half-width of the interval in standard deviations (>= 0). Default 2.5.
    iterations : int, optional
        Number of re-estimations after the first fill (ITK's ``NumberOfIterations``; 0 stops
        after the fill from the seed neighbourhoods). Default 2 (ITK's own default is 4).
    initial_radius : int, optional
        Radius of the ``(2r + 1)^ndim`` box around each seed for the first estimate (ITK's
        ``InitialNeighborhoodRadius``); 0 uses the seed values alone and then needs at least
        two seeds. Default 1.
    connectivity : int, optional
        Rank 1..ndim or neighbour count (4/8 in 2D, 6/18/26 in 3D). ITK always uses 1
        (faces); other values go beyond it. Default 1.

    Returns
    -------
    mask : ndarray of bool, shape of ``image``
        The grown region (it always contains the seeds).

    Notes
    -----
    Follows ITK 5.4 step by step, so that for ``connectivity=1`` the masks equal SimpleITK's:

    - first estimate: the box is read with edge replication at the image border (ITK's
      zero-flux Neumann condition); the mean is the average of the per-seed box means and the
      variance is ``(sum of squares - mean^2 * n) / (n - 1)`` over all ``n`` box values;
      with radius 0 the mean and sample variance of the seed values;
    - each interval is widened to contain every seed value, clamped to the dtype's range and
      cast to the image dtype before comparing (integer bounds truncate toward zero; float32
      bounds round to nearest), and a pixel is in when ``lower <= value <= upper``;
    - re-estimates use the sample variance (n - 1) of the filled region; the iterations stop
      early when that variance is (almost, |v| <= 0.1 * eps) zero, and the last fill stands.

    Where ITK is undefined this function stops iterating and keeps the last fill instead: a
    one-pixel region (variance 0/0) or a variance rounded below zero both make ITK's bounds
    NaN, which empties a float image's mask and is undefined behaviour for integer images.
    Sums are accumulated in a different order than ITK's, so a float image whose value lies
    within rounding error of a bound may in rare cases fall on the other side; integer
    images (sums exact in float64 below 2^53) are not affected.

    References
    ----------
    .. [1] T. S. Yoo (ed.), *Insight into Images: Principles and Practice for Segmentation,
       Registration, and Image Analysis*, A K Peters, 2004, ch. "Region growing".
    .. [2] ITK ``ConfidenceConnectedImageFilter``:
       https://itk.org/Doxygen/html/classitk_1_1ConfidenceConnectedImageFilter.html

    Examples
    --------
    The first interval, from the 3 x 3 box around the seed, is ``10.2 +/- 2.5 * 0.67``, cast
    to uint8 ``[8, 11]``: the 12 stays out, and the all-10 region has no spread left to widen it.

    >>> image = np.full((5, 7), 10, dtype=np.uint8)
    >>> image[:, 4:] = 50
    >>> image[2, 1] = 12
    >>> confidence_connected(image, [(2, 2)]).astype(int)
    array([[1, 1, 1, 1, 0, 0, 0],
           [1, 1, 1, 1, 0, 0, 0],
           [1, 0, 1, 1, 0, 0, 0],
           [1, 1, 1, 1, 0, 0, 0],
           [1, 1, 1, 1, 0, 0, 0]])
    """
    multiplier = _check_nonnegative(multiplier, name="multiplier")
    iterations = check_int(iterations, name="iterations", minimum=0)
    radius = check_int(initial_radius, name="initial_radius", minimum=0)
    arr = _numeric(check_image(image))
    rank = check_connectivity(connectivity, arr.ndim)
    pts = _check_seeds(
        seeds, arr.shape, unique=False, colour_hint="; convert a colour image to grey first"
    )
    if radius == 0 and len(pts) < 2:
        raise ValueError(
            "initial_radius must be >= 1 with a single seed (the spread of one value is "
            "undefined), got 0"
        )
    seed_values = arr[tuple(pts.T)].astype(np.float64)
    seed_lo, seed_hi = float(seed_values.min()), float(seed_values.max())

    if radius > 0:
        mean = 0.0
        sum_sq = 0.0
        for pt in pts:
            axes = [np.clip(np.arange(c - radius, c + radius + 1), 0, n - 1)
                    for c, n in zip(pt, arr.shape, strict=True)]  # fmt: skip
            box = arr[np.ix_(*axes)].astype(np.float64)
            mean += box.sum() / box.size
            sum_sq += float(np.sum(box * box))
        total = len(pts) * (2 * radius + 1) ** arr.ndim
        mean /= len(pts)
        variance = (sum_sq - mean * mean * total) / (total - 1.0)
    else:
        total_sum = float(seed_values.sum())
        variance = (float(np.sum(seed_values**2)) - total_sum * total_sum / len(pts)) / (
            len(pts) - 1.0
        )
        mean = total_sum / len(pts)
    variance = max(variance, 0.0)  # a box of equal values can round below zero

    flat = arr.reshape(-1)
    grid = _grid(arr.shape, rank)
    flat_seeds = _flat_seeds(pts, arr.shape)
    mask = np.empty(flat.size, dtype=np.uint8)
    queue = _queue(flat.size)
    lo, hi = _itk_bounds(mean, variance, multiplier, seed_lo, seed_hi, arr.dtype)
    count, s1, s2 = _fill_between(flat, *grid, flat_seeds, lo, hi, mask, queue)
    for _ in range(iterations):
        if count < 2:
            break
        mean = s1 / count
        variance = (s2 - s1 * s1 / count) / (count - 1.0)
        if abs(variance) <= 0.1 * np.finfo(np.float64).eps or variance < 0:
            break
        lo, hi = _itk_bounds(mean, variance, multiplier, seed_lo, seed_hi, arr.dtype)
        count, s1, s2 = _fill_between(flat, *grid, flat_seeds, lo, hi, mask, queue)
    return mask.view(bool).reshape(arr.shape)
