"""Class-agnostic region proposals by selective search.

Selective search [UI]_ starts from a Felzenszwalb-Huttenlocher over-segmentation [FH]_
(:func:`skimage.segmentation.felzenszwalb`) and greedily merges the two most similar
neighbouring regions until one region is left. Every region ever formed, initial ones
included, is a proposal; its box is the union of the merged boxes. Similarity is a sum of

- colour: histogram intersection of L1-normalised colour histograms (25 bins per channel);
- texture: histogram intersection of gradient histograms (Gaussian derivatives, sigma = 1,
  in 8 orientations, 10 bins per orientation and channel);
- size: ``1 - (size_i + size_j) / size_image`` (small regions merge first);
- fill: ``1 - (size_BB_ij - size_i - size_j) / size_image`` (regions that fill each other's
  box merge first).

A merged region's histograms are the size-weighted average of its parts', so histograms are
computed once per initial region (:func:`numpy.bincount`), never per merge. The search is
diversified over colour spaces, Felzenszwalb's ``k`` and similarity sets; proposals of all
strategies are ranked together by ``hierarchy position * U(0, 1)`` (position 1 = the last
merge of a strategy, the whole image) as in the paper, and exact duplicate boxes are dropped
(the best-ranked copy stays).

Boxes are segloc boxes ``(x0, y0, x1, y1)`` with half-open pixel edges
(``docs/conventions.md``).

References
----------
.. [UI] Uijlings, J. R. R., van de Sande, K. E. A., Gevers, T. and Smeulders, A. W. M.
   "Selective Search for Object Recognition", IJCV 104(2) 154-171, 2013,
   :doi:`10.1007/s11263-013-0620-5`
.. [FH] Felzenszwalb, P. F. and Huttenlocher, D. P. "Efficient Graph-Based Image
   Segmentation", IJCV 59(2) 167-181, 2004, :doi:`10.1023/B:VISI.0000022288.19776.77`
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage as ndi
from skimage import color
from skimage.segmentation import felzenszwalb
from skimage.util import img_as_float

from segloc._validation import check_choice, check_image, check_int, check_positive

__all__ = [
    "COLOR_SPACES",
    "SIMILARITIES",
    "color_histograms",
    "fill_similarity",
    "histogram_intersection",
    "region_adjacency",
    "selective_search",
    "size_similarity",
    "texture_histograms",
]

COLOR_BINS = 25
TEXTURE_ORIENTATIONS = 8
TEXTURE_BINS = 10
COLOR_SPACES = ("rgb", "hsv", "lab")
# Letters: C colour, T texture, S size, F fill (the paper's names).
SIMILARITIES = ("CTSF", "TS", "C", "T", "S", "F", "CS", "CTS")
_FAST_SIMILARITIES = ("CTSF", "TS")


def _to_rgb(image: np.ndarray) -> np.ndarray:
    """Return ``image`` as float RGB in [0, 1], shape (rows, cols, 3)."""
    if image.ndim == 3 and image.shape[2] != 3:
        raise ValueError(
            f"image must be grey (rows, cols) or RGB (rows, cols, 3), got shape {image.shape}"
        )
    if image.dtype == np.bool_:
        image = image.astype(np.uint8) * 255
    if np.issubdtype(image.dtype, np.floating):
        lo, hi = float(image.min()), float(image.max())
        if lo < 0 or hi > 1:
            raise ValueError(f"float image values must be in [0, 1], got [{lo}, {hi}]")
        rgb = image.astype(np.float64)
    else:
        rgb = img_as_float(image)
    if rgb.ndim == 2:
        # A grey image is RGB with equal channels: its colour spaces still make sense
        # (hue and saturation are 0, a and b are 0), so we replicate rather than refuse.
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    return rgb


def _convert(rgb: np.ndarray, space: str) -> np.ndarray:
    """Return ``rgb`` in colour space ``space``, each channel scaled to [0, 1]."""
    if space == "rgb":
        out = rgb
    elif space == "hsv":
        out = color.rgb2hsv(rgb)
    else:
        lab = color.rgb2lab(rgb)
        # L is in [0, 100]; a and b within [-128, 127] for sRGB inputs.
        out = np.stack(
            [lab[..., 0] / 100.0, (lab[..., 1] + 128) / 255.0, (lab[..., 2] + 128) / 255.0], axis=2
        )
    return np.clip(out, 0.0, 1.0)


def histogram_intersection(h1: np.ndarray, h2: np.ndarray) -> np.ndarray:
    """Histogram intersection ``sum_k min(h1[k], h2[k])`` along the last axis.

    Parameters
    ----------
    h1, h2 : ndarray, shape (..., B)
        Histograms (L1-normalised for a similarity in [0, 1]); broadcast against each other.

    Returns
    -------
    ndarray, shape (...)

    References
    ----------
    .. [1] Swain, M. J. and Ballard, D. H. "Color Indexing", IJCV 7(1) 11-32, 1991,
       :doi:`10.1007/BF00130487`

    Examples
    --------
    >>> float(histogram_intersection(np.array([0.5, 0.5, 0.0]), np.array([0.2, 0.3, 0.5])))
    0.5
    """
    return np.minimum(h1, h2).sum(axis=-1)


def size_similarity(size_i: ArrayLike, size_j: ArrayLike, size_image: float) -> np.ndarray:
    """Selective search size similarity ``1 - (size_i + size_j) / size_image`` [UI]_.

    Examples
    --------
    >>> float(size_similarity(10, 30, 100))
    0.6
    """
    return 1.0 - (np.asarray(size_i) + np.asarray(size_j)) / float(size_image)


def fill_similarity(
    size_i: ArrayLike, size_j: ArrayLike, box_i: ArrayLike, box_j: ArrayLike, size_image: float
) -> np.ndarray:
    """Selective search fill similarity ``1 - (size_BB_ij - size_i - size_j) / size_image`` [UI]_.

    ``size_BB_ij`` is the area of the tightest box around both regions' boxes (segloc
    ``(x0, y0, x1, y1)`` boxes, half-open edges). ``box_i`` and ``box_j`` broadcast, shape
    (..., 4).

    Examples
    --------
    >>> float(fill_similarity(4, 4, [0, 0, 2, 2], [4, 0, 6, 2], 100))
    0.96
    """
    bi, bj = np.asarray(box_i, dtype=np.float64), np.asarray(box_j, dtype=np.float64)
    lo = np.minimum(bi[..., :2], bj[..., :2])
    hi = np.maximum(bi[..., 2:], bj[..., 2:])
    area = np.prod(hi - lo, axis=-1)
    return 1.0 - (area - np.asarray(size_i) - np.asarray(size_j)) / float(size_image)


def region_adjacency(labels: np.ndarray) -> np.ndarray:
    """Pairs of labels that touch horizontally or vertically (4-connectivity).

    Parameters
    ----------
    labels : ndarray of int, shape (rows, cols)

    Returns
    -------
    ndarray of int64, shape (E, 2)
        Unique pairs ``(a, b)`` with ``a < b``, sorted.

    Examples
    --------
    >>> region_adjacency(np.array([[0, 0, 1], [2, 2, 1]])).tolist()
    [[0, 1], [0, 2], [1, 2]]
    """
    labels = np.asarray(labels, dtype=np.int64)
    a = np.concatenate([labels[:, :-1].ravel(), labels[:-1, :].ravel()])
    b = np.concatenate([labels[:, 1:].ravel(), labels[1:, :].ravel()])
    keep = a != b
    lo, hi = np.minimum(a[keep], b[keep]), np.maximum(a[keep], b[keep])
    # One int64 key per pair: a 1D unique is much faster than np.unique(axis=0).
    n = int(labels.max()) + 1 if labels.size else 1
    key = np.unique(lo * n + hi)
    return np.stack([key // n, key % n], axis=1)


def _binned_histograms(
    labels: np.ndarray, bins: np.ndarray, n_labels: int, n_bins: int
) -> np.ndarray:
    """Per-label counts of ``bins`` (integers in [0, n_bins)), shape (n_labels, n_bins)."""
    flat = labels.ravel().astype(np.int64) * n_bins + bins.ravel()
    return np.bincount(flat, minlength=n_labels * n_bins).reshape(n_labels, n_bins)


def _l1(h: np.ndarray) -> np.ndarray:
    s = h.sum(axis=1, keepdims=True)
    return h / np.where(s > 0, s, 1)


def color_histograms(
    image: np.ndarray, labels: np.ndarray, *, bins: int = COLOR_BINS
) -> np.ndarray:
    """L1-normalised colour histograms of every label, ``bins`` per channel [UI]_.

    Parameters
    ----------
    image : ndarray, shape (rows, cols, C), values in [0, 1]
    labels : ndarray of int, shape (rows, cols), values 0..n-1
    bins : int, optional

    Returns
    -------
    ndarray, shape (n, C * bins)
        Channel histograms side by side, each row summing to 1.
    """
    n = int(labels.max()) + 1
    q = np.minimum((image * bins).astype(np.int64), bins - 1)  # value 1.0 goes to the last bin
    hists = [_binned_histograms(labels, q[..., c], n, bins) for c in range(image.shape[2])]
    return _l1(np.concatenate(hists, axis=1).astype(np.float64))


def _texture_bins(image: np.ndarray) -> np.ndarray:
    """Per-pixel bin index per channel and orientation, shape (rows, cols, C, 8)."""
    out = np.empty(image.shape[:2] + (image.shape[2], TEXTURE_ORIENTATIONS), dtype=np.int64)
    angles = np.arange(TEXTURE_ORIENTATIONS) * (2 * np.pi / TEXTURE_ORIENTATIONS)
    for c in range(image.shape[2]):
        gy = ndi.gaussian_filter(image[..., c], 1.0, order=(1, 0))
        gx = ndi.gaussian_filter(image[..., c], 1.0, order=(0, 1))
        # Half-wave rectified directional derivatives: opposite orientations (a dark-to-light
        # edge and a light-to-dark one) fall in different histograms, 8 in all.
        d = np.stack([np.maximum(np.cos(t) * gx + np.sin(t) * gy, 0.0) for t in angles], axis=-1)
        # One scale per channel, not per orientation: an orientation with only rounding noise
        # must stay in the first bin rather than be stretched to the full range.
        top = d.max()
        scaled = d / top if top > 0 else d
        out[..., c, :] = np.minimum((scaled * TEXTURE_BINS).astype(np.int64), TEXTURE_BINS - 1)
    return out


def texture_histograms(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """L1-normalised texture histograms of every label [UI]_.

    Gaussian derivatives (sigma = 1) of each channel in 8 orientations, half-wave rectified,
    scaled by the channel's maximum response over all orientations and cut in 10 bins:
    ``C * 8 * 10`` bins per region.

    Returns
    -------
    ndarray, shape (n, C * 80)
    """
    n = int(labels.max()) + 1
    return _texture_from_bins(_texture_bins(image), labels, n)


def _texture_from_bins(tb: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    hists = [
        _binned_histograms(labels, tb[..., c, o], n, TEXTURE_BINS)
        for c in range(tb.shape[2])
        for o in range(TEXTURE_ORIENTATIONS)
    ]
    return _l1(np.concatenate(hists, axis=1).astype(np.float64))


def _initial_boxes(labels: np.ndarray, n: int) -> np.ndarray:
    boxes = np.zeros((n, 4), dtype=np.float64)
    for i, sl in enumerate(ndi.find_objects(labels + 1, max_label=n)):
        boxes[i] = (sl[1].start, sl[0].start, sl[1].stop, sl[0].stop)
    return boxes


def _hierarchy(
    labels: np.ndarray,
    pairs: np.ndarray,
    colour: np.ndarray | None,
    texture: np.ndarray | None,
    measures: str,
) -> np.ndarray:
    """Greedy grouping; return the boxes of all regions in order of creation, shape (2n-1, 4)."""
    n = int(labels.max()) + 1
    total = 2 * n - 1
    size_image = float(labels.size)
    sizes = np.zeros(total, dtype=np.float64)
    sizes[:n] = np.bincount(labels.ravel(), minlength=n)
    boxes = np.zeros((total, 4), dtype=np.float64)
    boxes[:n] = _initial_boxes(labels, n)
    use_c, use_t = "C" in measures, "T" in measures
    col = np.zeros((total, colour.shape[1])) if use_c else None
    tex = np.zeros((total, texture.shape[1])) if use_t else None
    if use_c:
        col[:n] = colour
    if use_t:
        tex[:n] = texture

    def sim(i, js: np.ndarray) -> np.ndarray:
        # i is one region or an array of regions matching js
        s = np.zeros(len(js))
        if use_c:
            s += histogram_intersection(col[i], col[js])
        if use_t:
            s += histogram_intersection(tex[i], tex[js])
        if "S" in measures:
            s += size_similarity(sizes[i], sizes[js], size_image)
        if "F" in measures:
            s += fill_similarity(sizes[i], sizes[js], boxes[i], boxes[js], size_image)
        return s

    neighbours: list[set[int]] = [set() for _ in range(total)]
    for a, b in pairs.tolist():
        neighbours[a].add(b)
        neighbours[b].add(a)
    heap: list[tuple[float, int, int]] = []
    if len(pairs):
        s0 = sim(pairs[:, 0], pairs[:, 1])
        # The heap holds -similarity; ties break on the older pair, which keeps runs deterministic.
        heap = [(-float(s), int(a), int(b)) for s, (a, b) in zip(s0, pairs.tolist(), strict=True)]
        heapq.heapify(heap)
    alive = np.zeros(total, dtype=bool)
    alive[:n] = True
    t = n
    while heap:
        _, a, b = heapq.heappop(heap)
        if not (alive[a] and alive[b]):
            continue  # a stale pair: one side was merged already
        sa, sb = sizes[a], sizes[b]
        sizes[t] = sa + sb
        boxes[t, :2] = np.minimum(boxes[a, :2], boxes[b, :2])
        boxes[t, 2:] = np.maximum(boxes[a, 2:], boxes[b, 2:])
        if use_c:
            col[t] = (sa * col[a] + sb * col[b]) / sizes[t]
        if use_t:
            tex[t] = (sa * tex[a] + sb * tex[b]) / sizes[t]
        alive[a] = alive[b] = False
        alive[t] = True
        nb = (neighbours[a] | neighbours[b]) - {a, b}
        for k in nb:
            neighbours[k].discard(a)
            neighbours[k].discard(b)
            neighbours[k].add(t)
        neighbours[t] = nb
        neighbours[a] = neighbours[b] = set()
        if nb:
            js = np.fromiter(sorted(nb), dtype=np.int64, count=len(nb))
            for s, j in zip(sim(t, js).tolist(), js.tolist(), strict=True):
                heapq.heappush(heap, (-s, int(j), t))
        t += 1
    return boxes[:t]


def selective_search(
    image: np.ndarray,
    *,
    mode: str = "fast",
    ks: Sequence[float] = (50, 100),
    color_spaces: Sequence[str] = ("hsv", "lab"),
    similarities: Sequence[str] | None = None,
    min_size: int | None = None,
    sigma: float = 0.8,
    seed: int = 0,
    max_proposals: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Selective search region proposals [UI]_, ranked best first.

    Parameters
    ----------
    image : ndarray, shape (rows, cols, 3) or (rows, cols)
        RGB image (integers scaled by their dtype's range, floats in [0, 1]). A grey image is
        taken as RGB with three equal channels.
    mode : {"fast", "single"}, optional
        ``"fast"``: every colour space of ``color_spaces`` x every ``k`` of ``ks`` x the
        similarity sets ``("CTSF", "TS")`` (the paper's fast mode with the defaults: 8
        strategies). ``"single"``: one strategy, the first colour space, the first ``k``
        and ``"CTSF"``. ``similarities`` overrides the sets of either mode.
    ks : sequence of float, optional
        Felzenszwalb-Huttenlocher scale ``k`` (``scale`` of
        :func:`skimage.segmentation.felzenszwalb`, in 0-255 intensity units as [FH]_).
    color_spaces : sequence of {"rgb", "hsv", "lab"}, optional
    similarities : sequence of str, optional
        Each a combination of C (colour), T (texture), S (size), F (fill), e.g. ``"CTSF"``.
    min_size : int, optional
        Felzenszwalb minimum component size; default ``k`` for each ``k`` (as the paper's code).
    sigma : float, optional
        Gaussian pre-smoothing of the segmentation.
    seed : int, optional
        Seed of the random rank diversification; the same call gives the same answer.
    max_proposals : int, optional
        Keep only the best ``max_proposals`` boxes.

    Returns
    -------
    boxes : ndarray of float64, shape (N, 4)
        Unique ``(x0, y0, x1, y1)`` boxes (half-open pixel edges), best first.
    ranks : ndarray of float64, shape (N,)
        Their rank values ``hierarchy position * U(0, 1)``, ascending (lower is better).

    Raises
    ------
    ValueError
        ``image`` not grey or RGB, float values outside [0, 1], or a bad option.

    References
    ----------
    .. [1] Uijlings et al. 2013, :doi:`10.1007/s11263-013-0620-5` (grouping and ranking);
       Felzenszwalb and Huttenlocher 2004, :doi:`10.1023/B:VISI.0000022288.19776.77`.

    Examples
    --------
    >>> img = np.zeros((20, 30, 3), dtype=np.uint8)
    >>> img[5:15, 4:12] = (255, 0, 0)
    >>> boxes, ranks = selective_search(img, mode="single")
    >>> [4.0, 5.0, 12.0, 15.0] in boxes.tolist()
    True
    """
    image = check_image(image, ndim=(2, 3))
    rgb = _to_rgb(image)
    check_choice(mode, ("fast", "single"), name="mode")
    ks = [float(check_positive(k, name="ks")) for k in ks]
    color_spaces = [check_choice(c, COLOR_SPACES, name="color_spaces") for c in color_spaces]
    if not ks:
        raise ValueError("ks must hold at least one value, got none")
    if not color_spaces:
        raise ValueError("color_spaces must hold at least one value, got none")
    if similarities is None:
        similarities = _FAST_SIMILARITIES if mode == "fast" else ("CTSF",)
    similarities = list(similarities)
    for s in similarities:
        if not isinstance(s, str) or not s or set(s) - set("CTSF"):
            raise ValueError(f"similarities must be strings of the letters C, T, S, F, got {s!r}")
    if not similarities:
        raise ValueError("similarities must hold at least one value, got none")
    if mode == "single":
        ks, color_spaces, similarities = ks[:1], color_spaces[:1], similarities[:1]
    if min_size is not None:
        min_size = check_int(min_size, name="min_size", minimum=1)
    check_positive(sigma, name="sigma", strict=False)
    seed = check_int(seed, name="seed", minimum=0)
    if max_proposals is not None:
        max_proposals = check_int(max_proposals, name="max_proposals", minimum=1)

    rng = np.random.default_rng(seed)
    all_boxes, all_ranks = [], []
    for space in color_spaces:
        img = _convert(rgb, space)
        texture_bins = None
        for k in ks:
            ms = int(k) if min_size is None else min_size
            labels = felzenszwalb(img, scale=k, sigma=sigma, min_size=ms, channel_axis=-1)
            labels = labels.astype(np.int64)
            n = int(labels.max()) + 1
            colour = color_histograms(img, labels) if any("C" in s for s in similarities) else None
            texture = None
            if any("T" in s for s in similarities):
                if texture_bins is None:  # the same for every k of this colour space
                    texture_bins = _texture_bins(img)
                texture = _texture_from_bins(texture_bins, labels, n)
            pairs = region_adjacency(labels)
            for measures in similarities:
                boxes = _hierarchy(labels, pairs, colour, texture, measures)
                # Position 1 = the last region formed (the whole image), as the paper.
                position = np.arange(len(boxes), 0, -1, dtype=np.float64)
                all_boxes.append(boxes)
                all_ranks.append(position * rng.random(len(boxes)))
    boxes = np.concatenate(all_boxes)
    ranks = np.concatenate(all_ranks)
    order = np.argsort(ranks, kind="stable")
    boxes, ranks = boxes[order], ranks[order]
    _, first = np.unique(boxes, axis=0, return_index=True)
    first.sort()
    boxes, ranks = boxes[first], ranks[first]
    if max_proposals is not None:
        boxes, ranks = boxes[:max_proposals], ranks[:max_proposals]
    return boxes, ranks
