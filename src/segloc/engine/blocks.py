"""Prediction for images larger than memory: streamed from a chunked file, written chunk by chunk.

:func:`predict_chunked` runs a :class:`~segloc.engine.infer.Predictor` over an image read
block by block (:func:`segloc.io.chunked.open_chunked`: Zarr, OME-Zarr, tiled TIFF, NIfTI)
and writes the label map (or the class probabilities) as it goes: the sliding window
(:func:`segloc.engine.windows.blend_windows`) hands over finished slabs of rows, each is
reduced to labels and written, and only one band of input rows, one slab of floats per class
and ``batch_size`` windows are in memory at any time.

:func:`predict_block` computes one box of the same output on its own (the windows that meet
the box, read with the halo they need): the unit of work of
:mod:`segloc.engine.distributed`. Every voxel receives its windows in the same order in both,
so a box computed alone equals the same box of the streamed image, bit for bit.

Normalisation needs the image's statistics before the first window: they are reduced over
blocks first (:func:`normalization_of`; z-score and min-max; the percentile scheme needs the
whole image and is refused).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segloc.engine.windows import (
    WindowGrid,
    WindowStats,
    blend_windows,
    class_argmax,
    label_dtype,
)
from segloc.io.chunked import ChunkedImage, ChunkedWriter, block_slices, open_chunked

__all__ = [
    "Normalization",
    "PredictionPlan",
    "normalization_of",
    "plan_prediction",
    "predict_block",
    "predict_chunked",
]


@dataclass(frozen=True)
class Normalization:
    """Per-channel ``(x - shift) / scale`` (float64, then float32), as
    :func:`segloc.engine.preprocess.normalize` computes it from the whole image."""

    shift: tuple[float, ...]
    scale: tuple[float, ...]
    zero: tuple[bool, ...]  # a constant channel becomes 0 (min-max)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """``(C, *spatial)`` -> float32."""
        out = np.empty(x.shape, np.float32)
        for c in range(x.shape[0]):
            if self.zero[c]:
                out[c] = 0.0
            else:
                out[c] = (x[c].astype(np.float64) - self.shift[c]) / self.scale[c]
        return out


def normalization_of(
    predictor: Any, source: Any, chunks: Sequence[int] | None = None
) -> Normalization | None:
    """The predictor's normalisation parameters for ``source``, reduced over blocks.

    z-score: mean and standard deviation merged block by block (Chan et al.'s pairwise update,
    float64); min-max: the extremes. None when the checkpoint does not normalise.

    Raises
    ------
    ValueError
        ``"percentile"`` normalisation (its percentiles need the whole image in memory).
    """
    method = predictor.normalize
    if method is None:
        return None
    if method not in ("zscore", "minmax"):
        raise ValueError(
            f"normalize {method!r} needs the whole image; block-wise prediction supports "
            "'zscore' and 'minmax'"
        )
    chunks = tuple(chunks) if chunks is not None else _chunks_of(source)
    moments = [
        block_moments(predictor, np.asarray(source[sl]))
        for _, sl in block_slices(source.shape, chunks)
    ]
    return merge_moments(method, moments)


def block_moments(predictor: Any, block: np.ndarray) -> tuple:
    """``(n, mean, M2, min, max)`` per channel of one block (float64)."""
    x = predictor.channels_first(block).astype(np.float64)
    flat = x.reshape(x.shape[0], -1)
    mean = flat.mean(axis=1)
    m2 = ((flat - mean[:, None]) ** 2).sum(axis=1)
    return flat.shape[1], mean, m2, flat.min(axis=1), flat.max(axis=1)


def merge_moments(method: str, moments: Sequence[tuple]) -> Normalization:
    """Merge :func:`block_moments` in the order given (block order: the same order gives
    the same float rounding, wherever the blocks were computed)."""
    n, mean, m2, lo, hi = moments[0]
    for bn, bmean, bm2, blo, bhi in moments[1:]:
        delta = bmean - mean
        tot = n + bn
        mean = mean + delta * bn / tot
        m2 = m2 + bm2 + delta**2 * n * bn / tot
        n, lo, hi = tot, np.minimum(lo, blo), np.maximum(hi, bhi)
    if method == "minmax":
        zero = tuple(bool(h <= l) for l, h in zip(lo, hi, strict=True))
        return Normalization(tuple(lo), tuple(hi - lo), zero)
    std = np.sqrt(m2 / n)
    return Normalization(tuple(mean), tuple(np.maximum(std, 1e-8)), (False,) * len(mean))


def _chunks_of(source: Any) -> tuple[int, ...]:
    chunks = getattr(source, "chunks", None)
    if chunks is None:
        return tuple(min(int(s), 512) for s in source.shape)
    return tuple(int(c) for c in chunks)


@dataclass
class PredictionPlan:
    """Everything a block of a prediction needs besides the network: picklable, so a Dask
    task receives it whole."""

    shape: tuple[int, ...]  # spatial shape of the image
    grid: WindowGrid
    norm: Normalization | None
    labels_dtype: str
    binary: bool
    num_classes: int


def plan_prediction(
    predictor: Any,
    source: Any,
    chunks: Sequence[int] | None = None,
    *,
    norm: Normalization | None | str = "compute",
) -> PredictionPlan:
    """Check that ``predictor`` can run block-wise on ``source`` and fix the plan
    (``norm``: the normalisation when already reduced elsewhere, else computed here)."""
    if getattr(predictor, "valid_unet", False):
        raise ValueError(
            "block-wise prediction needs a 'same'-padding model, not a valid-padding U-Net"
        )
    dims = predictor.dims
    shape = tuple(int(s) for s in source.shape[:dims])
    if len(source.shape) not in (dims, dims + 1):
        raise ValueError(
            f"image must have {dims} spatial axes for this model, got shape {source.shape}"
        )
    grid = WindowGrid(shape, tuple(predictor.patch_size), float(predictor.overlap))
    dtype = torch.empty(0, dtype=label_dtype(predictor.num_classes)).numpy().dtype.name
    return PredictionPlan(
        shape, grid, normalization_of(predictor, source, chunks) if norm == "compute" else norm,
        dtype, predictor.binary,
        predictor.num_classes,
    )  # fmt: skip


class _BandReader:
    """``read(lo, hi)`` for :func:`blend_windows` over a chunked source: the windows of one
    row of windows share their rows, so the band of those rows is read (and normalised) once."""

    def __init__(self, predictor: Any, source: Any, plan: PredictionPlan, corners: list):
        self.predictor, self.source, self.plan = predictor, source, plan
        patch = plan.grid.patch
        nd = len(patch)
        self.extent = [
            (min(c[a] for c in corners), max(c[a] for c in corners) + patch[a])
            for a in range(1, nd)
        ]
        self.rows: tuple[int, int] | None = None
        self.band: torch.Tensor | None = None

    def __call__(self, lo: Sequence[int], hi: Sequence[int]) -> torch.Tensor:
        if self.rows != (lo[0], hi[0]):
            self._load(lo[0], hi[0])
        assert self.band is not None
        sl = tuple(
            slice(l - e[0], h - e[0]) for l, h, e in zip(lo[1:], hi[1:], self.extent, strict=True)
        )
        return self.band[(slice(None), slice(None), *sl)]

    def _load(self, r0: int, r1: int) -> None:
        grid = self.plan.grid
        plo = [r0] + [e[0] for e in self.extent]
        phi = [r1] + [e[1] for e in self.extent]
        src, dst = [], []
        for l, h, b, s in zip(plo, phi, grid.before, grid.shape, strict=True):
            a, z = max(l - b, 0), min(h - b, s)
            src.append(slice(a, z))
            dst.append(slice(a + b - l, z + b - l))
        x = self.predictor.channels_first(np.asarray(self.source[tuple(src)]))
        x = self.plan.norm.apply(x) if self.plan.norm is not None else x.astype(np.float32)
        band = torch.zeros((x.shape[0], *(h - l for l, h in zip(plo, phi, strict=True))))
        band[(slice(None), *dst)] = torch.from_numpy(np.ascontiguousarray(x))
        self.band, self.rows = band, (r0, r1)


def _slabs(
    predictor: Any, source: Any, plan: PredictionPlan, lo, hi, stats: WindowStats, progress=False
):
    corners = plan.grid.corners(lo, hi)
    read = _BandReader(predictor, source, plan, corners)
    predict = predictor.window_function(softmax=True)
    with torch.no_grad():
        yield from blend_windows(
            predict, read, plan.grid, lo=lo, hi=hi, stats=stats, progress=progress,
            **predictor.window_options(),
        )  # fmt: skip


def _reduce(block: torch.Tensor, plan: PredictionPlan) -> np.ndarray:
    return class_argmax(block).numpy().astype(plan.labels_dtype, copy=False)


def predict_block(
    predictor: Any,
    source: Any,
    plan: PredictionPlan,
    lo: Sequence[int],
    hi: Sequence[int],
    *,
    probabilities: bool = False,
    stats: WindowStats | None = None,
) -> np.ndarray:
    """The labels (or ``(K, *box)`` probabilities) of the image box ``[lo, hi)`` alone.

    Equal, bit for bit, to the same box of :func:`predict_chunked`'s output for a network
    whose output for a window does not depend on the other windows of its batch.
    """
    stats = stats if stats is not None else WindowStats()
    parts = []
    for _, _, block in _slabs(predictor, source, plan, lo, hi, stats):
        parts.append(block.numpy() if probabilities else _reduce(block, plan))
    return np.concatenate(parts, axis=1 if probabilities else 0)


@dataclass
class ChunkedPrediction:
    """What :func:`predict_chunked` wrote and did."""

    path: Path
    stats: WindowStats = field(default_factory=WindowStats)


def default_chunks(shape: Sequence[int]) -> tuple[int, ...]:
    base = 1024 if len(shape) == 2 else 128
    return tuple(min(int(s), base) for s in shape)


def predict_chunked(
    predictor: Any,
    source: str | os.PathLike | ChunkedImage | Any,
    output: str | os.PathLike,
    *,
    chunks: Sequence[int] | None = None,
    probabilities: bool = False,
    progress: bool = False,
) -> ChunkedPrediction:
    """Predict an image larger than memory and write the result chunk by chunk.

    Parameters
    ----------
    predictor : Predictor
        Its patch, overlap, batch size, TTA and normalisation apply (z-score or min-max; no
        resampling: give the image at the model's spacing).
    source : path-like or array-like
        A path for :func:`segloc.io.chunked.open_chunked`, or an opened array.
    output : path-like
        ``.zarr``, ``.ome.zarr``, ``.tif`` or ``.nii``: the label map (uint8 0/1 for binary
        models; class indices otherwise), or with ``probabilities`` a float32 array
        ``(*spatial, K)``. Staged and renamed when complete.
    chunks : sequence of int, optional
        Output chunk shape (default 1024 per axis in 2D, 128 in 3D).

    Returns
    -------
    ChunkedPrediction
        The output path and the window counts (blended, computed, reused background).
    """
    opened = isinstance(source, (str, os.PathLike))
    image = open_chunked(source) if opened else source
    try:
        plan = plan_prediction(predictor, image)
        chunks = tuple(chunks) if chunks is not None else default_chunks(plan.shape)
        if probabilities:
            writer = ChunkedWriter(
                output, (*plan.shape, plan.num_classes), np.float32, (*chunks, plan.num_classes)
            )
        else:
            writer = ChunkedWriter(output, plan.shape, plan.labels_dtype, chunks)
        result = ChunkedPrediction(Path(output))
        try:
            for a, b, block in _slabs(predictor, image, plan, None, None, result.stats, progress):
                if probabilities:
                    writer.array[a:b] = np.moveaxis(block.numpy(), 0, -1)
                else:
                    writer.array[a:b] = _reduce(block, plan)
        except BaseException:
            writer.abort()
            raise
        writer.commit()
        return result
    finally:
        if opened:
            image.close()
