"""Sliding windows: where they go, how they are weighted, and the one loop that blends them.

One implementation serves three callers:

- :func:`sliding_window_inference`, a whole image held in memory (a tensor in, a tensor out);
- :func:`segloc.engine.blocks.predict_chunked`, an image larger than memory streamed from a
  chunked array and written chunk by chunk;
- :mod:`segloc.engine.distributed`, one block of a huge image per Dask task.

All three call :func:`blend_windows`, which visits the windows of one :class:`WindowGrid` in
one fixed order (row-major over the window corners, the first spatial axis slowest) and
yields the blended result a slab of rows at a time, as soon as no later window can touch
those rows. Only a slab of about one window's height is ever held as floats per class
(*early reduction*: the caller turns each slab into labels before the next one exists), and
every voxel receives its windows' contributions in the same order whichever region is asked
for, so a block computed alone equals the same block of the whole image, bit for bit.

Windows whose input is one constant value (the zeros around a head, the empty glass of a
slide) all give the same prediction, so that prediction is computed once and reused: exact,
not an approximation, and counted in :class:`WindowStats`.

Window placement is MONAI's [2]_: windows start every ``int(patch * (1 - overlap))`` pixels
and the last one is moved back to end at the image border; inputs smaller than the patch are
zero-padded symmetrically (after normalisation, 0 is the mean for z-score) and cropped back.

References
----------
.. [1] Isensee, F. et al. "nnU-Net: a self-configuring method for deep learning-based
   biomedical image segmentation", Nature Methods 18, 2021,
   :doi:`10.1038/s41592-020-01008-z` (sliding windows with half-patch overlap, Gaussian
   importance weighting with sigma = patch / 8, mirroring test-time augmentation).
.. [2] MONAI, ``monai.inferers.sliding_window_inference``,
   https://docs.monai.io/en/stable/inferers.html
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch

from segloc._validation import check_choice, check_int, check_positive
from segloc.engine.heap import reusing_freed_memory
from segloc.engine.run import autocast_dtype

__all__ = [
    "WindowGrid",
    "WindowStats",
    "blend_windows",
    "flip_tta",
    "gaussian_importance",
    "sliding_window_inference",
    "window_starts",
]

_FLOOR = 1e-3  # MONAI's floor for the importance map: border pixels still count a little


def gaussian_importance(patch_size: Sequence[int], sigma_scale: float = 0.125) -> np.ndarray:
    """Gaussian importance map of a window: 1 at the centre, ``sigma = patch * sigma_scale``.

    Parameters
    ----------
    patch_size : sequence of int
        Spatial window size (2D or 3D, any number of axes).
    sigma_scale : float, default 0.125
        Standard deviation per axis as a fraction of the patch size (nnU-Net: 1/8).

    Returns
    -------
    float32 ndarray of shape ``patch_size``
        Separable Gaussian centred at ``(patch - 1) / 2`` (symmetric, so flipping a window
        leaves its weights unchanged), floored at 1e-3 of the peak so no pixel has weight 0,
        divided by its maximum.

    References
    ----------
    .. [1] Isensee et al., nnU-Net, Nature Methods 2021, :doi:`10.1038/s41592-020-01008-z`.

    Examples
    --------
    >>> w = gaussian_importance((5, 5))
    >>> float(w[2, 2]), bool(w.min() > 0)
    (1.0, True)
    """
    size = tuple(check_int(p, name="patch_size", minimum=1) for p in patch_size)
    check_positive(sigma_scale, name="sigma_scale")
    out = np.ones((), np.float64)
    for p in size:
        x = np.arange(p, dtype=np.float64) - (p - 1) / 2.0
        g = np.exp(-(x**2) / (2.0 * (p * sigma_scale) ** 2))
        out = np.multiply.outer(out, g)
    # Floor before normalising, as MONAI, so the two maps differ by a constant factor only.
    out = np.maximum(out, max(out.min(), _FLOOR))
    return (out / out.max()).astype(np.float32)


def window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Start offsets of the windows along one axis (MONAI's placement).

    Windows start every ``max(1, int(patch * (1 - overlap)))`` pixels until one reaches the
    end; the last is moved back so it ends at the border. ``size <= patch`` gives ``[0]``.

    Examples
    --------
    >>> window_starts(10, 4, 0.5)
    [0, 2, 4, 6]
    >>> window_starts(11, 4, 0.5)
    [0, 2, 4, 6, 7]
    """
    if size <= patch:
        return [0]
    step = max(1, int(patch * (1 - overlap)))
    starts = []
    for i in itertools.count():
        starts.append(min(i * step, size - patch))
        if i * step + patch >= size:
            return starts
    raise AssertionError("unreachable")  # pragma: no cover


def _flips(ndim: int, axes: Sequence[int] | None = None) -> list[tuple[int, ...]]:
    """Every subset of the spatial ``axes`` (default all) as dims of a ``(B, C, *spatial)``
    tensor, the identity first."""
    if axes is None:
        axes = range(ndim)
    if any(isinstance(a, bool) or not 0 <= int(a) < ndim for a in axes):
        raise ValueError(f"flip axes must be spatial axes in 0..{ndim - 1}, got {list(axes)}")
    dims = sorted({2 + int(a) for a in axes})
    return [c for r in range(len(dims) + 1) for c in itertools.combinations(dims, r)]


def flip_tta(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    *,
    softmax: bool = True,
    axes: Sequence[int] | None = None,
) -> torch.Tensor:
    """Average of ``model`` over all flips of the spatial ``axes`` (default all: 2**ndim
    passes), flipped back.

    ``x`` is ``(N, C, *spatial)``; runs without gradients. ``axes`` counts spatial axes from
    0; a model trained with mirrors along some axes only (labels drawn with an offset along
    the others) should be averaged over those.

    With ``softmax`` the class probabilities are averaged (nnU-Net's mirroring), otherwise the
    raw outputs.
    """
    total = None
    flips = _flips(x.ndim - 2, axes)
    with torch.no_grad():
        for dims in flips:
            xi = torch.flip(x, dims) if dims else x
            y = model(xi).float()
            if softmax:
                y = torch.softmax(y, dim=1)
            y = torch.flip(y, dims) if dims else y
            total = y if total is None else total + y
    return total / len(flips)


# --------------------------------------------------------------------------- the grid


@dataclass(frozen=True)
class WindowGrid:
    """The windows of a sliding-window pass over an image of spatial ``shape``.

    Coordinates called *padded* count from the start of the zero-padded image (an axis
    shorter than the patch is padded symmetrically up to it, the extra pixel after, as
    MONAI); ``before[a]`` pixels of padding precede the image along axis ``a``.

    Examples
    --------
    >>> g = WindowGrid((10, 3), (4, 4), 0.5)
    >>> g.padded, g.before, g.starts
    ((10, 4), (0, 0), ((0, 2, 4, 6), (0,)))
    >>> g.corners((5, 0), (6, 3))  # the windows that meet row 5
    [(2, 0), (4, 0)]
    """

    shape: tuple[int, ...]
    patch: tuple[int, ...]
    overlap: float = 0.5

    @cached_property
    def before(self) -> tuple[int, ...]:
        return tuple(max(p - s, 0) // 2 for s, p in zip(self.shape, self.patch, strict=True))

    @cached_property
    def padded(self) -> tuple[int, ...]:
        return tuple(max(s, p) for s, p in zip(self.shape, self.patch, strict=True))

    @cached_property
    def starts(self) -> tuple[tuple[int, ...], ...]:
        return tuple(
            tuple(window_starts(s, p, self.overlap))
            for s, p in zip(self.padded, self.patch, strict=True)
        )

    def corners(
        self, lo: Sequence[int] | None = None, hi: Sequence[int] | None = None
    ) -> list[tuple[int, ...]]:
        """Padded corners of the windows that meet the image box ``[lo, hi)`` (image
        coordinates; default the whole image), in the order they are blended."""
        lo = tuple(lo) if lo is not None else (0,) * len(self.shape)
        hi = tuple(hi) if hi is not None else self.shape
        per_axis = [
            [s for s in starts if s < h + b and s + p > l + b]
            for starts, l, h, b, p in zip(self.starts, lo, hi, self.before, self.patch, strict=True)
        ]
        return list(itertools.product(*per_axis))


@dataclass
class WindowStats:
    """What a sliding-window pass did: windows blended, network evaluations, reuses.

    ``reused`` windows held one constant value (background) whose prediction had already
    been computed; they cost no network call and change no output value.
    """

    windows: int = 0
    computed: int = 0
    reused: int = 0
    constant_values: list[float] = field(default_factory=list)

    def add(self, other: WindowStats) -> None:
        self.windows += other.windows
        self.computed += other.computed
        self.reused += other.reused
        for v in other.constant_values:
            if v not in self.constant_values:
                self.constant_values.append(v)


def _weights(patch: tuple[int, ...], mode: str, sigma_scale: float) -> torch.Tensor:
    if mode == "gaussian":
        return torch.from_numpy(gaussian_importance(patch, sigma_scale))
    return torch.ones(patch, dtype=torch.float32)


# --------------------------------------------------------------------------- blending


class _Rows:
    """Float accumulators for padded rows ``[base, base + rows)`` of a region whose other
    axes span ``[lo[a], hi[a])`` (padded coordinates): the blended sum and the weight sum."""

    def __init__(self, lo: Sequence[int], hi: Sequence[int], classes: int, rows: int):
        self.lo, self.hi, self.base = tuple(lo), tuple(hi), lo[0]
        extent = [h - l for l, h in zip(lo[1:], hi[1:], strict=True)]
        self.out = torch.zeros((classes, rows, *extent), dtype=torch.float32)
        self.wsum = torch.zeros((rows, *extent), dtype=torch.float32)

    def ensure(self, end: int) -> None:
        """Room up to padded row ``end`` (exclusive): grow, keeping what is there."""
        have = self.out.shape[1]
        if end - self.base <= have:
            return
        grow = max(end - self.base, 2 * have) - have
        pad = (*([0] * 2 * (self.out.ndim - 2)), 0, grow)
        self.out = torch.nn.functional.pad(self.out, pad)
        self.wsum = torch.nn.functional.pad(self.wsum, pad)

    def add(self, corner: Sequence[int], patch: Sequence[int], y: torch.Tensor, w: torch.Tensor):
        """Add window ``y`` (``(K, *patch)``) at padded ``corner`` with weights ``w``, cropped
        to the region. The product ``y * w`` is taken on the crop only: the same float
        operations per voxel as on the whole window."""
        src, dst = [], []
        for a, (c, p) in enumerate(zip(corner, patch, strict=True)):
            l0, h0 = max(c, self.lo[a]), min(c + p, self.hi[a])
            src.append(slice(l0 - c, h0 - c))
            base = self.base if a == 0 else self.lo[a]
            dst.append(slice(l0 - base, h0 - base))
        self.ensure(min(corner[0] + patch[0], self.hi[0]))
        ws = w[tuple(src)]
        self.wsum[tuple(dst)] += ws
        self.out[(slice(None), *dst)] += y[(slice(None), *src)] * ws

    def flush(self, end: int) -> torch.Tensor:
        """The finished padded rows ``[base, end)`` divided by their weights; drops them."""
        n = end - self.base
        done = self.out[:, :n] / self.wsum[:n]
        self.out = torch.roll(self.out, -n, dims=1)
        self.wsum = torch.roll(self.wsum, -n, dims=0)
        self.out[:, -n:] = 0
        self.wsum[-n:] = 0
        self.base = end
        return done


def blend_windows(
    predict: Callable[[torch.Tensor], torch.Tensor],
    read: Callable[[Sequence[int], Sequence[int]], torch.Tensor],
    grid: WindowGrid,
    *,
    lo: Sequence[int] | None = None,
    hi: Sequence[int] | None = None,
    mode: str = "gaussian",
    sigma_scale: float = 0.125,
    batch_size: int = 4,
    reuse_constant: bool = True,
    stats: WindowStats | None = None,
    progress: bool = False,
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Blend the windows that meet the image box ``[lo, hi)``; yield it a slab of rows at a time.

    Parameters
    ----------
    predict : callable
        ``(N, C, *patch)`` float32 tensor -> ``(N, K, *patch)`` float32 CPU tensor (logits,
        or probabilities: what is blended).
    read : callable
        ``read(lo, hi)`` -> ``(C, *(hi - lo))`` float32 tensor of the zero-padded image
        between padded coordinates ``lo`` and ``hi`` (zeros where the padding is).
    grid : WindowGrid
    lo, hi : sequence of int, optional
        The box to compute, in image coordinates; default the whole image.
    mode, sigma_scale, batch_size :
        As in :func:`sliding_window_inference`.
    reuse_constant : bool, default True
        Predict a window whose input is one constant value once per value (exact: the
        network sees the same tensor).
    stats : WindowStats, optional
        Counts added here.
    progress : bool
        tqdm bar over windows.

    Yields
    ------
    (start, stop, blended)
        Image rows ``[start, stop)`` (first spatial axis) of the box, all of it along the other
        axes: ``blended`` is ``(K, stop - start, *box[1:])`` float32, the weighted mean of the
        windows' outputs. Consecutive slabs tile the box; each holds about one window's
        height, so memory stays at one slab of floats per class whatever the image's size.
    """
    ndim = len(grid.shape)
    lo = tuple(lo) if lo is not None else (0,) * ndim
    hi = tuple(hi) if hi is not None else grid.shape
    plo = [l + b for l, b in zip(lo, grid.before, strict=True)]
    phi = [h + b for h, b in zip(hi, grid.before, strict=True)]
    corners = grid.corners(lo, hi)
    weight = _weights(grid.patch, mode, sigma_scale)
    patch = grid.patch
    stats = stats if stats is not None else WindowStats()
    cache: dict[float, torch.Tensor] = {}
    rows: _Rows | None = None
    steps = range(0, len(corners), batch_size)
    if progress:
        from tqdm import tqdm

        steps = tqdm(steps, desc="windows", unit="batch", leave=False)
    for k in steps:
        chunk = corners[k : k + batch_size]
        x = [read(c, [a + p for a, p in zip(c, patch, strict=True)]) for c in chunk]
        ys = _predict_windows(predict, x, patch, cache if reuse_constant else None, stats)
        for corner, y in zip(chunk, ys, strict=True):
            if rows is None:
                rows = _Rows(plo, phi, y.shape[0], patch[0])
            rows.add(corner, patch, y, weight)
        stats.windows += len(chunk)
        # rows before the next window's first row are finished: no later window meets them
        nxt = corners[k + batch_size][0] if k + batch_size < len(corners) else phi[0]
        end = min(max(nxt, rows.base), phi[0])
        if end > rows.base:
            start = rows.base
            # the accumulators span the box only, so the slab holds no padding to crop
            yield start - grid.before[0], end - grid.before[0], rows.flush(end)


def label_dtype(num_classes: int) -> torch.dtype:
    """The smallest integer dtype a label map of ``num_classes`` classes is stored in:
    uint8 up to 255 classes (a quarter of int32's memory), else int32."""
    return torch.uint8 if num_classes <= 255 else torch.int32


def class_argmax(scores: torch.Tensor) -> torch.Tensor:
    """Arg-max over the class axis (0) of ``(K, *spatial)`` scores, as int32 labels.

    Equal to ``scores.argmax(0)`` (ties to the lowest class, NaN counts as the largest), but
    one pass per class over contiguous planes: torch reduces a short leading axis of a large
    tensor about 40x slower (0.21 s against 5 ms for a 2 x 256 x 4096 slab on 2 cores).
    """
    if scores.ndim < 1 or scores.shape[0] == 0:
        raise ValueError(f"scores must be (K, *spatial) with K >= 1, got {tuple(scores.shape)}")
    best = scores[0].clone()
    labels = torch.zeros(scores.shape[1:], dtype=torch.int32)
    seen_nan = torch.isnan(best)
    for k in range(1, scores.shape[0]):
        s = scores[k]
        nan = torch.isnan(s)
        wins = ((s > best) | nan) & ~seen_nan
        labels[wins] = k
        best = torch.where(wins, s, best)
        seen_nan |= nan
    return labels


def _predict_windows(
    predict: Callable[[torch.Tensor], torch.Tensor],
    x: list[torch.Tensor],
    patch: tuple[int, ...],
    cache: dict[float, torch.Tensor] | None,
    stats: WindowStats,
) -> list[torch.Tensor]:
    """``predict`` on the stacked windows, each constant window predicted once per value."""
    keys: list[float | None] = []
    for xi in x:
        key = None
        if cache is not None:
            lo, hi = torch.aminmax(xi)
            key = float(lo) if bool(lo == hi) else None
        keys.append(key)
    todo = [i for i, key in enumerate(keys) if key is None or key not in cache]
    # one network call per distinct constant value: later windows of it in this batch reuse it
    first: dict[float, int] = {}
    run = []
    for i in todo:
        if keys[i] is not None:
            if keys[i] in first:
                continue
            first[keys[i]] = i
        run.append(i)
    out: dict[int, torch.Tensor] = {}
    if run:
        y = predict(torch.stack([x[i] for i in run]))
        if y.ndim != len(patch) + 2 or tuple(y.shape[2:]) != patch or y.shape[0] != len(run):
            raise ValueError(
                f"model must return (N, K, *patch) = ({len(run)}, K, "
                f"{', '.join(map(str, patch))}), got {tuple(y.shape)}"
            )
        for i, yi in zip(run, y, strict=True):
            out[i] = yi
            if keys[i] is not None:
                cache[keys[i]] = yi
                stats.constant_values.append(keys[i])
        stats.computed += len(run)
    result = []
    for i, key in enumerate(keys):
        if i in out:
            result.append(out[i])
        else:
            result.append(cache[key])
            stats.reused += 1
    return result


def _padded_reader(image: torch.Tensor, before: Sequence[int]):
    """``read(lo, hi)`` over the zero-padded ``image`` (``(C, *spatial)``)."""
    shape = image.shape[1:]

    def read(lo: Sequence[int], hi: Sequence[int]) -> torch.Tensor:
        src, dst = [], []
        for l, h, b, s in zip(lo, hi, before, shape, strict=True):
            a, z = max(l - b, 0), min(h - b, s)
            src.append(slice(a, z))
            dst.append(slice(a + b - l, z + b - l))
        if all(d.start == 0 and d.stop == h - l for d, l, h in zip(dst, lo, hi, strict=True)):
            return image[(slice(None), *src)].to(torch.float32)
        out = torch.zeros((image.shape[0], *(h - l for l, h in zip(lo, hi, strict=True))))
        out[(slice(None), *dst)] = image[(slice(None), *src)]
        return out

    return read


def sliding_window_inference(
    model: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    patch_size: Sequence[int],
    *,
    overlap: float = 0.5,
    mode: str = "gaussian",
    sigma_scale: float = 0.125,
    batch_size: int = 4,
    device: str | torch.device | None = None,
    tta: bool = False,
    progress: bool = False,
    output: str = "logits",
    tta_axes: Sequence[int] | None = None,
    reuse_constant: bool = True,
    stats: WindowStats | None = None,
    precision: str = "auto",
    labels_dtype: torch.dtype = torch.int32,
    reuse_freed_memory: bool = True,
) -> torch.Tensor:
    """Predict a whole image window by window and blend the windows with importance weights.

    Parameters
    ----------
    model : callable
        ``(N, C, *patch_size)`` tensor -> ``(N, K, *patch_size)`` tensor (a network in eval
        mode, or any function). Called without gradients.
    image : Tensor, shape (B, C, *spatial)
        2D (``B, C, H, W``) or 3D (``B, C, D, H, W``); any device, float.
    patch_size : sequence of int
        Window size, one per spatial axis. Axes smaller than the window are zero-padded.
    overlap : float, default 0.5
        Fraction of a window shared with the next one, in [0, 1).
    mode : {"gaussian", "constant"}
        Window weights: :func:`gaussian_importance` or uniform (plain averaging).
    sigma_scale : float, default 0.125
        Gaussian sigma as a fraction of the window (``"gaussian"`` only).
    batch_size : int, default 4
        Windows per call of ``model``.
    device : str or torch.device, optional
        Where ``model`` runs (windows are moved there); default the image's device.
    precision : {"auto", "fp32", "bf16", "fp16"}
        ``torch.autocast`` of the model's calls: ``"auto"`` is float16 on CUDA and float32
        on the CPU; ``"bf16"`` on a CPU with native bfloat16 ran MONAI's 3D BasicUNet 1.8x
        faster than float32; labels equal float32's on 99.92% (ISBI) and 99.994%
        (hippocampus) of the voxels of trained models, the same Dice to 1e-4
        (``benchmarks/results/precision_agreement_*.md``). Only for a torch ``model``.
    tta : bool, default False
        Average each window's prediction over all flips of its spatial axes
        (:func:`flip_tta`); with ``output="logits"`` the logits are averaged.
    tta_axes : sequence of int, optional
        The spatial axes ``tta`` mirrors (default all).
    progress : bool, default False
        Show a tqdm bar over window batches.
    output : {"logits", "probabilities", "labels"}
        Blend raw outputs, or the soft-max of each window (class probabilities summing to 1);
        ``"labels"`` blends probabilities and returns their arg-max, taken slab by slab as
        the slabs are finished, so no float array of the image's size is ever held.
    labels_dtype : torch.dtype, default torch.int32
        The integer dtype of ``output="labels"``; :func:`label_dtype` gives the smallest
        that holds the model's classes (uint8: a quarter of the memory).
    reuse_constant : bool, default True
        Predict once the windows whose input is one constant value (background) and reuse
        that prediction: the same values, fewer network calls (:class:`WindowStats`).
    stats : WindowStats, optional
        Filled with the counts of windows blended, computed and reused.
    reuse_freed_memory : bool, default True
        Keep freed activations in the process's heap for the next window instead of
        unmapping them (:func:`segloc.engine.heap.reusing_freed_memory`, glibc only). With it,
        MONAI's 3D BasicUNet on MNI152's 96³ windows, one per call, ran 1.57x as fast as
        MONAI's own sliding window at 0.45x its peak memory
        (``benchmarks/results/sliding_window_heap.md``). Off for a model that returns its
        memory in other sizes each call (ONNX Runtime with its arena off peaked 1.95x higher
        with it on).

    Returns
    -------
    Tensor
        ``(B, K, *spatial)`` float32 on the CPU, or ``(B, *spatial)`` class indices in
        ``labels_dtype`` for ``output="labels"``. Memory besides the result: one slab of
        about a window's height per class, and ``batch_size`` windows.

    References
    ----------
    .. [1] Isensee et al., nnU-Net, Nature Methods 2021, :doi:`10.1038/s41592-020-01008-z`.
    .. [2] MONAI ``sliding_window_inference`` (same window placement and Gaussian).

    Examples
    --------
    >>> net = torch.nn.Conv2d(1, 2, 3, padding=1)
    >>> sliding_window_inference(net, torch.zeros(1, 1, 40, 50), (32, 32)).shape
    torch.Size([1, 2, 40, 50])
    """
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"image must be a torch.Tensor, got {type(image).__name__}")
    if image.ndim not in (4, 5):
        raise ValueError(f"image must be (B, C, H, W) or (B, C, D, H, W), got {tuple(image.shape)}")
    if image.shape[0] == 0 or min(image.shape[2:]) == 0:
        raise ValueError(f"image must hold a case with pixels, got shape {tuple(image.shape)}")
    ndim = image.ndim - 2
    patch = tuple(check_int(p, name="patch_size", minimum=1) for p in patch_size)
    if len(patch) != ndim:
        raise ValueError(f"patch_size must have {ndim} values, got {tuple(patch_size)}")
    if not isinstance(overlap, (int, float)) or not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap!r}")
    check_choice(mode, ("gaussian", "constant"), name="mode")
    check_choice(output, ("logits", "probabilities", "labels"), name="output")
    check_int(batch_size, name="batch_size", minimum=1)
    if (
        not isinstance(labels_dtype, torch.dtype)
        or labels_dtype.is_floating_point
        or labels_dtype.is_complex
        or labels_dtype == torch.bool
    ):
        raise ValueError(f"labels_dtype must be an integer torch dtype, got {labels_dtype!r}")
    device = torch.device(device) if device is not None else image.device
    predict = window_predictor(
        model,
        device=device,
        tta=tta,
        tta_axes=tta_axes,
        softmax=output != "logits",
        precision=precision,
    )
    grid = WindowGrid(tuple(int(s) for s in image.shape[2:]), patch, float(overlap))
    result: torch.Tensor | None = None
    for b in range(image.shape[0]):
        read = _padded_reader(image[b], grid.before)
        with torch.no_grad(), reusing_freed_memory() if reuse_freed_memory else nullcontext():
            for start, stop, block in blend_windows(
                predict,
                read,
                grid,
                mode=mode,
                sigma_scale=sigma_scale,
                batch_size=batch_size,
                reuse_constant=reuse_constant,
                stats=stats,
                progress=progress,
            ):
                # slabs are written into the result as they finish: no list of them to
                # concatenate, so the image-sized output is held once, not three times
                if result is None:
                    if output == "labels" and block.shape[0] - 1 > torch.iinfo(labels_dtype).max:
                        raise ValueError(
                            f"labels_dtype {labels_dtype} cannot hold the labels of "
                            f"{block.shape[0]} classes"
                        )
                    shape = (image.shape[0], *(() if output == "labels" else block.shape[:1]))
                    dtype = labels_dtype if output == "labels" else torch.float32
                    result = torch.empty((*shape, *grid.shape), dtype=dtype)
                if output == "labels":
                    result[b, start:stop] = class_argmax(block)
                else:
                    result[b, :, start:stop] = block
    return result


def window_predictor(
    model: Callable[[torch.Tensor], torch.Tensor],
    *,
    device: str | torch.device = "cpu",
    tta: bool = False,
    tta_axes: Sequence[int] | None = None,
    softmax: bool = True,
    precision: str = "auto",
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``model`` as :func:`blend_windows` calls it: windows moved to ``device``, run under
    autocast in ``precision`` (:func:`segloc.engine.run.autocast_dtype`), optional flip TTA
    and soft-max, the result float32 on the CPU."""
    device = torch.device(device)
    dtype = autocast_dtype(precision, device)

    def run(x: torch.Tensor) -> torch.Tensor:
        if dtype is not None:
            with torch.autocast(device.type, dtype=dtype):
                return model(x)
        return model(x)

    @torch.no_grad()
    def predict(x: torch.Tensor) -> torch.Tensor:
        x = x.to(device, torch.float32)
        if tta:
            y = flip_tta(run, x, softmax=softmax, axes=tta_axes)
        else:
            y = run(x).float()
            y = torch.softmax(y, dim=1) if softmax else y
        return y.to("cpu", torch.float32)

    return predict
