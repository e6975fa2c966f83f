"""Classical methods on images larger than memory, block by block, with in-memory answers.

- Global thresholds (Otsu, multi-Otsu, Yen, triangle) and the exact 1-D k-means of integer
  images come from a histogram summed over blocks: the same counts as the whole image's, so
  the same threshold (:func:`block_histogram`, :func:`threshold_blocks`).
- A local threshold reads each block with a halo of the filter's radius: inside the block the
  filter sees what it sees on the whole image (:func:`local_threshold_blocks`).
- Connected components are labelled per block, then stitched across block faces with a
  union-find over the pairs of labels that touch across a face (edges and corners included
  for diagonal connectivity) [1]_. Final labels are numbered in raster order of each object's
  first voxel, which is how :func:`scipy.ndimage.label` numbers them: the stitched labelling
  equals the in-memory one, and it does not depend on the order in which blocks finished
  (:func:`label_blocks`). Boxes are merged in global coordinates.

Every function takes a *source*: any array-like with ``shape``, ``dtype`` and slicing (a
NumPy array, a memory map, :class:`segloc.io.chunked.ChunkedImage`, a Zarr array), and
reads it one block at a time; outputs go through :class:`segloc.io.chunked.ChunkedWriter`.

References
----------
.. [1] K. Wu, E. Otoo, K. Suzuki, "Optimizing two-pass connected-component labeling
   algorithms", Pattern Analysis and Applications 12, 2009, :doi:`10.1007/s10044-008-0109-y`
   (provisional labels and a union-find of their equivalences).
.. [2] dask-image ``ndmeasure.label`` (block labels joined across faces), whose test
   compares with :func:`scipy.ndimage.label` up to a one-to-one relabelling.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from segloc._validation import check_choice, check_connectivity, check_int
from segloc.classical import local_threshold as lt
from segloc.classical import threshold as th
from segloc.io.chunked import ChunkedWriter, block_slices

__all__ = [
    "BlockObjects",
    "StitchedLabels",
    "block_histogram",
    "kmeans_blocks",
    "label_blocks",
    "local_threshold_blocks",
    "read_with_halo",
    "segment_blocks",
    "stitch",
    "threshold_blocks",
]

_SMALL_INTS = th._SMALL_INTS


def _chunks(source: Any, chunks: Sequence[int] | None) -> tuple[int, ...]:
    if chunks is None:
        chunks = getattr(source, "chunks", None) or (512,) * len(source.shape)
    chunks = tuple(check_int(c, name="chunks", minimum=1) for c in chunks)
    if len(chunks) != len(source.shape):
        raise ValueError(f"chunks must have {len(source.shape)} values, got {chunks}")
    return chunks


def _blocks(source: Any, chunks: Sequence[int] | None):
    for _, sl in block_slices(source.shape, _chunks(source, chunks)):
        yield np.asarray(source[sl])


# --------------------------------------------------------------------------- histograms


def block_histogram(source: Any, *, nbins: int = 256, chunks: Sequence[int] | None = None):
    """The histogram :mod:`segloc.classical.threshold` takes of the whole image, summed
    over blocks (two passes for images that are not 8/16-bit: the range, then the counts).

    Integer bins are exact counts; float bins come from :func:`numpy.histogram` with the
    global range, which puts each value in a bin by itself, so the sums are the whole
    image's counts too.
    """
    dtype = np.dtype(source.dtype)
    if dtype == np.bool_:
        raise TypeError("image must be numeric, not bool (a mask has nothing left to threshold)")
    if dtype.type in _SMALL_INTS:
        total = None
        for block in _blocks(source, chunks):
            counts = th._small_int_histogram(np.ascontiguousarray(block.reshape(-1)))
            total = counts if total is None else total + counts
        occupied = np.flatnonzero(total)
        first, last = int(occupied[0]), int(occupied[-1])
        return th._Hist(total[first : last + 1], int(np.iinfo(dtype).min) + first, None)
    lo = hi = None
    for block in _blocks(source, chunks):
        if not np.isfinite(block).all():
            raise ValueError("image must not hold NaN or infinite values")
        bl, bh = block.min(), block.max()
        lo = bl if lo is None or bl < lo else lo
        hi = bh if hi is None or bh > hi else hi
    if np.issubdtype(dtype, np.integer) and int(hi) - int(lo) + 1 <= th._MAX_INTEGER_BINS:
        span = int(hi) - int(lo) + 1
        counts = sum(th._int_histogram(b.reshape(-1), lo, span) for b in _blocks(source, chunks))
        return th._Hist(counts, int(lo), None)
    if np.issubdtype(dtype, np.integer):
        lo, hi = np.float64(lo), np.float64(hi)
    if lo == hi:
        n = int(np.prod(source.shape))
        return th._Hist(np.array([n], dtype=np.int64), None, np.array([lo]))
    counts, edges = None, None
    for block in _blocks(source, chunks):
        if np.issubdtype(dtype, np.integer):
            block = block.astype(np.float64)
        c, edges = np.histogram(block.reshape(-1), bins=nbins, range=(lo, hi))
        counts = c.astype(np.int64) if counts is None else counts + c
    return th._Hist(counts, None, (edges[:-1] + edges[1:]) / 2)


_GLOBAL = {"otsu": th._otsu, "yen": th._yen, "triangle": th._triangle}


def threshold_blocks(
    source: Any,
    method: str = "otsu",
    *,
    classes: int = 3,
    nbins: int = 256,
    chunks: Sequence[int] | None = None,
) -> float | np.ndarray:
    """A global threshold from the block histogram: ``"otsu"``, ``"yen"``, ``"triangle"``
    (a float) or ``"multiotsu"`` (an array of ``classes - 1`` floats).

    Equal to :func:`segloc.classical.threshold.threshold_otsu` (and the others) on the
    whole image.

    Examples
    --------
    >>> image = np.array([[10, 11, 12], [50, 51, 52]], dtype=np.uint8)
    >>> threshold_blocks(image, "otsu", chunks=(1, 2))
    12.0
    """
    check_choice(method, (*_GLOBAL, "multiotsu"), name="method")
    hist = block_histogram(source, nbins=check_int(nbins, name="nbins", minimum=2), chunks=chunks)
    if method == "multiotsu":
        classes = check_int(classes, name="classes", minimum=2)
        return th._multiotsu(hist, classes)
    return _GLOBAL[method](hist)


def kmeans_blocks(
    source: Any, k: int = 3, *, chunks: Sequence[int] | None = None
) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """The exact 1-D k-means of an integer image's grey levels from its block histogram.

    Returns the ``k`` centres and a function mapping a block to its int32 cluster labels
    (nearest centre, 0 = darkest), equal to :func:`segloc.classical.clustering.
    kmeans_intensity` on the whole image.

    Raises
    ------
    TypeError
        A float image: its k-means bins sums of values, whose rounding depends on the
        blocks; threshold it or convert it to integers first.
    """
    from segloc.classical.clustering import _check_k, _check_k_distinct, _optimal_1d

    k = _check_k(k)
    if not np.issubdtype(np.dtype(source.dtype), np.integer):
        raise TypeError(f"kmeans_blocks needs an integer image, got dtype {source.dtype}")
    hist = block_histogram(source, chunks=chunks)
    levels = hist.values()
    occupied = hist.counts > 0
    _check_k_distinct(k, int(occupied.sum()))
    centers, _ = _optimal_1d(levels[occupied], hist.counts[occupied].astype(np.float64), k)
    mids = (centers[1:] + centers[:-1]) / 2

    def labels(block: np.ndarray) -> np.ndarray:
        # a level on a midpoint goes up, as kmeans_intensity's look-up table
        return np.digitize(block, mids).astype(np.int32)

    return centers, labels


# --------------------------------------------------------------------------- halos


def read_with_halo(
    source: Any, sl: Sequence[slice], halo: Sequence[int] | int
) -> tuple[np.ndarray, tuple[slice, ...]]:
    """``source[sl]`` grown by ``halo`` voxels on every side (clipped at the image border),
    and the slices that cut the block back out of it."""
    halo = (halo,) * len(sl) if isinstance(halo, int) else tuple(halo)
    outer, inner = [], []
    for s, h, n in zip(sl, halo, source.shape, strict=True):
        a, b = max(s.start - h, 0), min(s.stop + h, n)
        outer.append(slice(a, b))
        inner.append(slice(s.start - a, s.stop - a))
    return np.asarray(source[tuple(outer)]), tuple(inner)


def local_threshold_blocks(
    block_with_halo: np.ndarray, inner: tuple[slice, ...], *, block_size: int, method: str,
    offset: float
) -> np.ndarray:  # fmt: skip
    """``image > threshold_local(image)`` on one block read with :func:`local_halo` voxels."""
    t = lt.threshold_local(block_with_halo, block_size=block_size, method=method, offset=offset)
    return (block_with_halo > t)[inner]


def local_halo(block_size: int, method: str) -> int:
    """Voxels a local threshold reads beyond a pixel: the Gaussian's truncation (4 sigma,
    as :func:`threshold_local`) or half the box."""
    if method == "gaussian":
        return int(4.0 * (block_size - 1) / 6.0 + 0.5) + 1
    return block_size // 2 + 1


# --------------------------------------------------------------------------- labels


@dataclass
class BlockObjects:
    """The objects of one block, labelled on their own (1..count, raster order).

    ``first[i]`` is the global C-order flat index of label ``i + 1``'s first voxel (raster
    order within a block is raster order in the image, so this is also the object part's
    first voxel in the image); ``boxes[i]`` is ``(lo..., hi...)`` in global array indices,
    half-open; ``sizes[i]`` its voxel count.
    """

    index: tuple[int, ...]
    count: int
    first: np.ndarray
    boxes: np.ndarray
    sizes: np.ndarray


def label_block(
    mask: np.ndarray, origin: Sequence[int], shape: Sequence[int], structure: np.ndarray,
    index: tuple[int, ...] = (),
) -> tuple[np.ndarray, BlockObjects]:  # fmt: skip
    """Label one block of a mask; return the int32 labels and their :class:`BlockObjects`."""
    labels, n = ndi.label(mask, structure=structure)
    labels = labels.astype(np.int32, copy=False)
    flat = labels.reshape(-1)
    where = np.flatnonzero(flat)
    values = flat[where]
    # labels appear in raster order, so each one's first voxel is where its run of values starts
    _, first_local = np.unique(values, return_index=True)
    coords = np.unravel_index(where[first_local], labels.shape)
    glob = tuple(c + o for c, o in zip(coords, origin, strict=True))
    first = (
        np.ravel_multi_index(glob, tuple(shape)).astype(np.int64) if n else np.zeros(0, np.int64)
    )
    boxes = np.zeros((n, 2 * labels.ndim), np.int64)
    for i, sl in enumerate(ndi.find_objects(labels)):
        if sl is not None:
            boxes[i] = [s.start + o for s, o in zip(sl, origin, strict=True)] + [
                s.stop + o for s, o in zip(sl, origin, strict=True)
            ]
    sizes = np.bincount(values, minlength=n + 1)[1:].astype(np.int64)
    return labels, BlockObjects(tuple(index), int(n), first, boxes, sizes)


@dataclass
class StitchedLabels:
    """The global labelling: how each block's labels map to final ones, and the objects.

    ``luts[index]`` maps a block's local labels (0..count) to final int32 labels;
    ``boxes`` is ``(N, 2 * ndim)`` ``(lo..., hi...)`` global array indices, half-open, row
    ``i`` for final label ``i + 1``; ``sizes`` their voxel counts.
    """

    count: int
    luts: dict[tuple[int, ...], np.ndarray]
    boxes: np.ndarray
    sizes: np.ndarray

    def relabel(self, index: tuple[int, ...], local: np.ndarray) -> np.ndarray:
        return self.luts[tuple(index)][local]

    def xyxy(self) -> np.ndarray:
        """The boxes in segloc's convention: ``(x0, y0, x1, y1)`` or ``(x0, y0, z0, x1, y1,
        z1)`` with x = column (axis 1), y = row (axis 0)."""
        nd = self.boxes.shape[1] // 2
        lo, hi = self.boxes[:, :nd], self.boxes[:, nd:]
        order = [1, 0, 2][:nd]
        return np.concatenate([lo[:, order], hi[:, order]], axis=1).astype(np.float64)


def _find(parent: np.ndarray, i: int) -> int:
    root = i
    while parent[root] != root:
        root = parent[root]
    while parent[i] != root:  # path compression
        parent[i], i = root, parent[i]
    return root


def stitch(
    objects: Sequence[BlockObjects],
    read_local: Callable[[tuple[slice, ...]], np.ndarray],
    shape: Sequence[int],
    chunks: Sequence[int],
    structure: np.ndarray,
) -> StitchedLabels:
    """Join the blocks' labels across every block face: the union-find step.

    ``read_local(slices)`` reads the blocks' own labels (as :func:`label_block` wrote them)
    for any region; only the two voxel layers on either side of each block face are read.
    The result depends on the data only, not on the order of ``objects``.
    """
    shape, chunks = tuple(shape), tuple(chunks)
    by_index = {tuple(o.index): o for o in objects}
    order = sorted(by_index)
    offset, start = {}, 1
    for idx in order:
        offset[idx] = start
        start += by_index[idx].count
    total = start  # provisional ids 1 .. total-1
    parent = np.arange(total, dtype=np.int64)
    grid = [-(-s // c) for s, c in zip(shape, chunks, strict=True)]
    offsets = np.zeros(grid, dtype=np.int64)
    for idx in order:
        offsets[idx] = offset[idx]
    for a, (pairs_a, pairs_b) in _face_pairs(read_local, shape, chunks, structure, offsets):
        del a
        for u, v in zip(pairs_a.tolist(), pairs_b.tolist(), strict=True):
            ru, rv = _find(parent, u), _find(parent, v)
            if ru != rv:
                parent[max(ru, rv)] = min(ru, rv)
    roots = np.array([_find(parent, i) for i in range(total)], dtype=np.int64)
    first = np.full(total, np.iinfo(np.int64).max, np.int64)
    nd = len(shape)
    boxes_lo = np.full((total, nd), np.iinfo(np.int64).max, np.int64)
    boxes_hi = np.zeros((total, nd), np.int64)
    sizes = np.zeros(total, np.int64)
    for idx in order:
        o = by_index[idx]
        ids = roots[offset[idx] : offset[idx] + o.count]
        np.minimum.at(first, ids, o.first)
        np.minimum.at(boxes_lo, ids, o.boxes[:, :nd])
        np.maximum.at(boxes_hi, ids, o.boxes[:, nd:])
        np.add.at(sizes, ids, o.sizes)
    unique_roots = np.unique(roots[1:]) if total > 1 else np.zeros(0, np.int64)
    # final numbering: raster order of each object's first voxel, as scipy.ndimage.label
    ranked = unique_roots[np.argsort(first[unique_roots], kind="stable")]
    final = np.zeros(total, np.int32)
    final[ranked] = np.arange(1, ranked.size + 1, dtype=np.int32)
    luts = {}
    for idx in order:
        o = by_index[idx]
        lut = np.zeros(o.count + 1, np.int32)
        lut[1:] = final[roots[offset[idx] : offset[idx] + o.count]]
        luts[idx] = lut
    boxes = np.concatenate([boxes_lo[ranked], boxes_hi[ranked]], axis=1)
    return StitchedLabels(int(ranked.size), luts, boxes, sizes[ranked])


def _face_pairs(read_local, shape, chunks, structure, offsets):
    """For every face plane between blocks: the provisional ids that touch across it."""
    nd = len(shape)
    centre = (1,) * nd
    for a in range(nd):
        steps = [
            tuple(d - 1 for d in idx)
            for idx in zip(*np.nonzero(structure), strict=True)
            if idx[a] == 2  # neighbours one step further along axis a
        ]
        for c in range(chunks[a], shape[a], chunks[a]):
            lo_sl = tuple(slice(c - 1, c) if k == a else slice(None) for k in range(nd))
            hi_sl = tuple(slice(c, c + 1) if k == a else slice(None) for k in range(nd))
            p0 = _provisional(read_local(lo_sl), lo_sl, shape, chunks, offsets)
            p1 = _provisional(read_local(hi_sl), hi_sl, shape, chunks, offsets)
            p0, p1 = np.squeeze(p0, a), np.squeeze(p1, a)
            us, vs = [], []
            for d in steps:
                other = [d[k] for k in range(nd) if k != a]
                src = tuple(
                    slice(max(-o, 0), n - max(o, 0)) for o, n in zip(other, p0.shape, strict=True)
                )
                dst = tuple(
                    slice(max(o, 0), n + min(o, 0)) for o, n in zip(other, p0.shape, strict=True)
                )
                u, v = p0[src], p1[dst]
                both = (u > 0) & (v > 0)
                us.append(u[both])
                vs.append(v[both])
            if us:
                pairs = np.unique(np.stack([np.concatenate(us), np.concatenate(vs)]), axis=1)
                yield a, (pairs[0], pairs[1])
    del centre


def _provisional(local, sl, shape, chunks, offsets) -> np.ndarray:
    """Block-local labels -> provisional global ids (the block's offset added)."""
    local = np.asarray(local).astype(np.int64)
    grids = []
    for s, n, c in zip(sl, shape, chunks, strict=True):
        start, stop, _ = s.indices(n)
        grids.append(np.arange(start, stop) // c)
    block_of = offsets[np.ix_(*grids)]
    return np.where(local > 0, local + block_of - 1, 0)


def label_blocks(
    source: Any,
    output: str | os.PathLike | None = None,
    *,
    connectivity: int = 1,
    chunks: Sequence[int] | None = None,
    to_mask: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[StitchedLabels, Any]:
    """Connected components of a mask larger than memory, block by block, stitched.

    Parameters
    ----------
    source : array-like
        The mask (non-zero = foreground), or an image with ``to_mask`` applied per block.
    output : path-like, optional
        Where to write the int32 label map (``.zarr``, ``.ome.zarr``, ``.tif``, ``.nii``);
        without it the labels are returned in memory (for tests and small images).
    connectivity : int
        1 (faces) .. ndim (full), or the neighbour count (4/8, 6/18/26).
    chunks : sequence of int, optional
        Block shape (default the source's chunks, else 512 per axis).

    Returns
    -------
    (StitchedLabels, labels)
        ``labels`` is the output path, or the int32 array without ``output``. The labelling
        equals :func:`scipy.ndimage.label` with the same connectivity (numbering included).
    """
    shape = tuple(int(s) for s in source.shape)
    chunks = _chunks(source, chunks)
    structure = ndi.generate_binary_structure(
        len(shape), check_connectivity(connectivity, len(shape))
    )
    writer = None
    if output is not None:
        writer = ChunkedWriter(output, shape, np.int32, chunks)
        local_store = writer.array
    else:
        local_store = np.zeros(shape, np.int32)
    objects = []
    for idx, sl in block_slices(shape, chunks):
        block = np.asarray(source[sl])
        mask = to_mask(block) if to_mask is not None else block != 0
        origin = [s.start for s in sl]
        local, obj = label_block(mask, origin, shape, structure, idx)
        local_store[sl] = local
        objects.append(obj)
    stitched = stitch(objects, lambda s: np.asarray(local_store[s]), shape, chunks, structure)
    for idx, sl in block_slices(shape, chunks):
        local_store[sl] = stitched.relabel(idx, np.asarray(local_store[sl]))
    if writer is not None:
        return stitched, writer.commit()
    return stitched, local_store


# --------------------------------------------------------------------------- segment


BLOCK_METHODS = ("fixed", "otsu", "yen", "triangle", "multiotsu", "kmeans", "local")


def segment_blocks(
    source: Any,
    output: str | os.PathLike,
    method: str,
    *,
    value: float | None = None,
    classes: int = 3,
    k: int = 3,
    block_size: int = 35,
    local_method: str = "gaussian",
    offset: float = 0.0,
    invert: bool = False,
    chunks: Sequence[int] | None = None,
) -> tuple[Any, os.PathLike]:
    """Segment an image larger than memory with a classical method, block by block.

    The result equals :func:`segloc.classical.segment` on the whole image: global thresholds
    from the block histogram (:func:`threshold_blocks`), k-means from it
    (:func:`kmeans_blocks`, integer images), the local threshold with a halo of its radius.
    Binary results are written as uint8 0/1, label maps as int32.

    Returns
    -------
    (threshold or centres or None, output path)
    """
    check_choice(method, BLOCK_METHODS, name="method")
    shape = tuple(int(s) for s in source.shape)
    chunks = _chunks(source, chunks)
    found: Any = None
    halo = 0
    if method == "fixed":
        if value is None:
            raise ValueError("method 'fixed' needs value")
        found = float(value)
        op = lambda b: th.apply_threshold(b, found)  # noqa: E731
    elif method in _GLOBAL:
        found = threshold_blocks(source, method, chunks=chunks)
        op = lambda b: th.apply_threshold(b, found)  # noqa: E731
    elif method == "multiotsu":
        found = threshold_blocks(source, "multiotsu", classes=classes, chunks=chunks)
        op = lambda b: th.apply_thresholds(b, found)  # noqa: E731
    elif method == "kmeans":
        found, op = kmeans_blocks(source, k, chunks=chunks)
    else:
        halo = local_halo(block_size, local_method)
    binary = method not in ("multiotsu", "kmeans")
    if invert and not binary:
        raise ValueError(f"invert applies to binary methods only, not {method!r}")
    writer = ChunkedWriter(output, shape, np.uint8 if binary else np.int32, chunks)
    try:
        for _, sl in block_slices(shape, chunks):
            if method == "local":
                block, inner = read_with_halo(source, sl, halo)
                result = local_threshold_blocks(
                    block, inner, block_size=block_size, method=local_method, offset=offset
                )
            else:
                result = op(np.asarray(source[sl]))
            if invert:
                result = ~result
            writer.array[sl] = result
    except BaseException:
        writer.abort()
        raise
    return found, writer.commit()
