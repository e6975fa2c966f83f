"""U-Net (Ronneberger et al. 2015) and 3D U-Net (Çiçek et al. 2016), with overlap-tile prediction.

References
----------
.. [1] O. Ronneberger, P. Fischer, T. Brox, "U-Net: Convolutional Networks for Biomedical Image
       Segmentation", MICCAI 2015, LNCS 9351, pp. 234-241. :doi:`10.1007/978-3-319-24574-4_28`
.. [2] Ö. Çiçek, A. Abdulkadir, S. S. Lienkamp, T. Brox, O. Ronneberger, "3D U-Net: Learning
       Dense Volumetric Segmentation from Sparse Annotation", MICCAI 2016, LNCS 9901,
       pp. 424-432. :doi:`10.1007/978-3-319-46723-8_49`
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from segloc._validation import check_choice, check_int
from segloc.nn import NORMS
from segloc.nn.blocks import PADDINGS, UP_MODES, ConvBlock, Down, Up, conv_nd

__all__ = ["UNet", "overlap_tile_predict", "unet3d"]


def _fmt(size: Sequence[int]) -> str:
    return "x".join(str(s) for s in size)


class UNet(nn.Module):
    """U-Net for 2D images or 3D volumes, returning per-pixel class logits.

    With the defaults and ``padding="valid"``, ``in_channels=1``, ``num_classes=2`` this is exactly
    the network of [1]_: 23 convolutional layers (18 3x3 convolutions, 4 2x2 up-convolutions, one
    1x1 output convolution), 31,030,658 parameters, a 572x572 tile giving a 388x388 output.

    Parameters
    ----------
    in_channels : int
        Image channels.
    num_classes : int
        Output channels (logits; apply soft-max in the loss or at inference).
    base_channels : int, default 64
        Feature channels of the first level; each level down doubles them.
    depth : int, default 4
        Number of 2x2 max-pooling steps.
    padding : {"valid", "same"}
        ``"valid"``: unpadded convolutions as in [1]_; the output is smaller than the input and
        skip features are centre-cropped before concatenation. ``"same"``: zero-padded
        convolutions; the output has the input's size, which must be a multiple of ``2**depth``.
    dims : {2, 3}
        2 for images ``(B, C, H, W)``, 3 for volumes ``(B, C, D, H, W)`` [2]_.
    norm : {None, "batch", "instance"}
        Normalisation after each 3x3 convolution (convolutions then carry no bias).
    up : {"transpose", "bilinear"}
        Learned 2x2 up-convolution [1]_, or (tri)linear up-sampling followed by a 1x1 convolution.
    dropout : float, default 0.0
        Drop-out probability "at the end of the contracting path" [1]_, i.e. on the bottleneck's
        output.
    double_before_pool : bool, default False
        Çiçek's channel plan [2]_: in each level the first convolution outputs ``c`` and the second
        ``2c`` (32, 64 | 64, 128 | ...), the up-convolutions keep their channels and each decoder
        level outputs what its skip holds. See :func:`unet3d`.
    pools : sequence of sequences of int, optional
        ``same`` padding only: the pooling factor of each level per axis (``depth`` entries
        of ``dims`` factors, 1 or 2), e.g. ``[[2, 2, 1], [2, 2, 1], [2, 2, 2]]`` pools the
        last, coarsely sampled axis of an anisotropic volume only at the third level, as
        nnU-Net does [3]_. Each axis must then be a multiple of the product of its factors.
        Default: 2 on every axis at every level.
    slice_axis : int, optional
        ``dims=3`` and ``same`` padding only: a 2D U-Net run on every slice across this
        spatial axis of a volume, each slice on its own (nnU-Net's 2D configuration [3]_,
        for volumes whose slices are much thicker than their pixels). The layers are 2D;
        input and output are volumes ``(B, C, D, H, W)`` with any length along the axis,
        and ``pools`` (if given) has factor 1 on it.

    Notes
    -----
    A valid U-Net's input sizes are constrained: every pooling must see an even size and nothing
    may shrink to zero. :meth:`output_size` and :meth:`valid_input_size` do that arithmetic, and the
    forward pass raises ``ValueError`` naming the nearest valid size.

    References
    ----------
    .. [1] Ronneberger et al., MICCAI 2015. :doi:`10.1007/978-3-319-24574-4_28`
    .. [2] Çiçek et al., MICCAI 2016. :doi:`10.1007/978-3-319-46723-8_49`
    .. [3] Isensee et al., nnU-Net, Nature Methods 2021, :doi:`10.1038/s41592-020-01008-z`.

    Examples
    --------
    >>> net = UNet(1, 2)
    >>> net.output_size(572)
    (388, 388)
    >>> net.valid_input_size(388)
    (572, 572)
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        base_channels: int = 64,
        depth: int = 4,
        padding: str = "valid",
        dims: int = 2,
        norm: str | None = None,
        up: str = "transpose",
        dropout: float = 0.0,
        double_before_pool: bool = False,
        pools: Sequence[Sequence[int]] | None = None,
        slice_axis: int | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = check_int(in_channels, name="in_channels", minimum=1)
        self.num_classes = check_int(num_classes, name="num_classes", minimum=1)
        self.base_channels = check_int(base_channels, name="base_channels", minimum=1)
        self.depth = check_int(depth, name="depth", minimum=1)
        self.padding = check_choice(padding, PADDINGS, name="padding")
        self.dims = check_choice(dims, (2, 3), name="dims")
        self.norm = check_choice(norm, NORMS, name="norm")
        self.up = check_choice(up, UP_MODES, name="up")
        if not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be a float in [0, 1), got {dropout!r}")
        self.dropout_p = float(dropout)
        if not isinstance(double_before_pool, bool):
            raise TypeError(
                f"double_before_pool must be a bool, got {type(double_before_pool).__name__}"
            )
        self.double_before_pool = double_before_pool
        self.slice_axis = _check_slice_axis(slice_axis, dims, padding)
        if slice_axis is not None and pools is None:
            pools = [[1 if a == slice_axis else 2 for a in range(dims)]] * depth
        self.pools = _check_pools(pools, depth, dims, padding)
        if slice_axis is not None and any(level[slice_axis] != 1 for level in self.pools):
            raise ValueError(
                f"pools must have factor 1 on slice_axis {slice_axis} (each slice is pooled "
                f"on its own), got {pools!r}"
            )
        # per axis, what an input length must be a multiple of (same padding)
        self.multiples = tuple(math.prod(level[a] for level in self.pools) for a in range(dims))
        # the layers' own pooling: the slice axis is not one of their axes
        layer_pools = [
            tuple(f for a, f in enumerate(level) if a != slice_axis) for level in self.pools
        ]
        scales = [tuple(level) if len(set(level)) > 1 else level[0] for level in layer_pools]
        layer_dims = 2 if slice_axis is not None else dims

        common = {"dims": layer_dims, "padding": padding, "norm": norm}
        c = [base_channels * 2**i for i in range(depth + 2)]
        if double_before_pool:
            # Level i: c[i] then c[i+1] channels; the bottleneck ends with c[depth+1].
            mids, outs = c[: depth + 1], c[1 : depth + 2]
        else:
            # Level i: c[i] channels for both convolutions; the bottleneck has c[depth].
            mids, outs = c[: depth + 1], c[: depth + 1]

        self.encoder = nn.ModuleList(
            [ConvBlock(in_channels, outs[0], mid_channels=mids[0], **common)]
        )
        for i in range(1, depth):
            self.encoder.append(
                Down(outs[i - 1], outs[i], mid_channels=mids[i], scale=scales[i - 1], **common)
            )
        self.bottleneck = Down(
            outs[depth - 1],
            outs[depth],
            mid_channels=mids[depth],
            scale=scales[depth - 1],
            **common,
        )
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        # decoder[i] works at level i; it runs from the deepest level up.
        self.decoder = nn.ModuleList()
        for i in range(depth):
            deeper = outs[i + 1]  # the bottleneck's or the next deeper decoder level's output
            self.decoder.append(
                Up(
                    deeper,
                    outs[i],
                    outs[i],
                    up_channels=deeper if double_before_pool else deeper // 2,
                    mode=up,
                    scale=scales[i],
                    **common,
                )
            )
        self.head = conv_nd(layer_dims)(outs[0], num_classes, 1)

    # -- size arithmetic ------------------------------------------------------------------

    def _axis_output(self, s: int, axis: int = 0) -> int | None:
        """Output length along one axis, or None if ``s`` cannot pass through the network."""
        if self.padding == "same":
            return s if s > 0 and s % self.multiples[axis] == 0 else None
        for _ in range(self.depth):
            s -= 4  # two unpadded 3x3 convolutions
            if s <= 0 or s % 2:
                return None
            s //= 2  # 2x2 max pooling
        s -= 4  # bottleneck convolutions
        if s <= 0:
            return None
        for _ in range(self.depth):
            s = 2 * s - 4  # up-convolution, then two unpadded 3x3 convolutions
            if s <= 0:
                return None
        return s

    @property
    def input_steps(self) -> tuple[int, ...]:
        """Per axis, the distance between consecutive valid input lengths: the axis's own
        pooling with same padding (1 across a slice axis), ``2**depth`` with valid."""
        return self.multiples if self.padding == "same" else (2**self.depth,) * self.dims

    def _valid_inputs(self, axis: int = 0) -> itertools.count:
        """Yield the valid input lengths of one axis in increasing order."""
        step = self.input_steps[axis]
        if self.padding == "same":
            return itertools.count(step, step)
        # Walking the encoder backwards from a pooled length t gives step * t + 4 * (step - 1).
        first = next(t for t in itertools.count(1) if self._axis_output(step * t + 4 * (step - 1)))
        return itertools.count(step * first + 4 * (step - 1), step)

    def _nearest_valid(self, s: int, axis: int = 0) -> int:
        if self.padding == "same":
            step = self.multiples[axis]
            return max(step, -(-s // step) * step)
        best = None
        for v in self._valid_inputs():
            if best is None or abs(v - s) <= abs(best - s):
                best = v  # ties go to the larger size, which loses no pixels
            if v > s:
                return best
        raise AssertionError("unreachable")  # pragma: no cover

    def _sizes(self, size: int | Sequence[int], name: str) -> tuple[int, ...]:
        if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
            size = (int(size),) * self.dims
        size = tuple(size)
        if len(size) != self.dims or not all(
            isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in size
        ):
            raise ValueError(f"{name} must be an int or {self.dims} ints, got {size!r}")
        return tuple(int(s) for s in size)

    def output_size(self, input_size: int | Sequence[int]) -> tuple[int, ...]:
        """Spatial output size for an input of ``input_size`` (an int means every axis).

        Raises
        ------
        ValueError
            If the input cannot pass through the network, naming the nearest valid size
            (``padding="valid"``) or the next multiple of ``2**depth`` (``padding="same"``).
        """
        size = self._sizes(input_size, "input_size")
        out = [self._axis_output(s, a) for a, s in enumerate(size)]
        if any(o is None for o in out):
            fix = tuple(
                s if o is not None else self._nearest_valid(s, a)
                for a, (s, o) in enumerate(zip(size, out, strict=True))
            )
            raise ValueError(
                f"input size {_fmt(size)} is not valid for this U-Net "
                f"(padding={self.padding!r}, depth {self.depth}): use {_fmt(fix)}"
            )
        return tuple(out)

    def valid_input_size(self, min_output: int | Sequence[int]) -> tuple[int, ...]:
        """Smallest valid input size whose output is at least ``min_output`` along each axis."""
        size = self._sizes(min_output, "min_output")
        return tuple(
            next(v for v in self._valid_inputs(a) if self._axis_output(v, a) >= s)
            for a, s in enumerate(size)
        )

    # -- forward --------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes, *output_size(spatial))`` for ``x`` of ``(B, C, *spatial)``."""
        if x.ndim != self.dims + 2 or x.shape[1] != self.in_channels:
            want = "(B, C, H, W)" if self.dims == 2 else "(B, C, D, H, W)"
            raise ValueError(
                f"input must be {want} with C = {self.in_channels}, got shape {tuple(x.shape)}"
            )
        self.output_size(tuple(int(s) for s in x.shape[2:]))
        if self.slice_axis is not None:
            # every slice becomes a 2D sample of the batch, and back
            moved = x.movedim(2 + self.slice_axis, 1)
            y = self._layers(moved.flatten(0, 1))
            return y.unflatten(0, moved.shape[:2]).movedim(1, 2 + self.slice_axis)
        return self._layers(x)

    def _layers(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)  # (B, c_i, *spatial_i)
        x = self.dropout(self.bottleneck(x))
        for i in reversed(range(self.depth)):
            x = self.decoder[i](x, skips[i])
        return self.head(x)


def _check_slice_axis(slice_axis: int | None, dims: int, padding: str) -> int | None:
    if slice_axis is None:
        return None
    if dims != 3 or padding != "same":
        raise ValueError(
            f"slice_axis needs dims=3 and padding='same', got dims={dims}, padding={padding!r}"
        )
    return check_choice(check_int(slice_axis, name="slice_axis"), (0, 1, 2), name="slice_axis")


def _check_pools(
    pools: Sequence[Sequence[int]] | None, depth: int, dims: int, padding: str
) -> tuple[tuple[int, ...], ...]:
    """The pooling factors of every level and axis (2 everywhere when ``pools`` is None)."""
    if pools is None:
        return ((2,) * dims,) * depth
    if padding != "same":
        raise ValueError("pools needs padding='same' (valid padding pools every axis by 2)")
    levels = tuple(tuple(level) for level in pools)
    if len(levels) != depth or any(
        len(level) != dims
        or any(isinstance(f, bool) or not isinstance(f, int) or f not in (1, 2) for f in level)
        for level in levels
    ):
        raise ValueError(
            f"pools must be {depth} levels of {dims} factors 1 or 2 (one per axis), got {pools!r}"
        )
    return levels


def unet3d(
    in_channels: int,
    num_classes: int,
    *,
    base_channels: int = 32,
    depth: int = 3,
    padding: str = "same",
    norm: str | None = "batch",
    up: str = "transpose",
    dropout: float = 0.0,
) -> UNet:
    """The 3D U-Net of Çiçek et al. [1]_ as a :class:`UNet` preset.

    Three poolings, channels doubled before each pooling (32, 64 | 64, 128 | 128, 256, bottleneck
    256, 512), batch normalisation, 2x2x2 up-convolutions keeping their channels (512 -> 512),
    decoder levels of 256, 128, 64 channels and a final 1x1x1 convolution. The paper uses unpadded
    convolutions (132x132x116 -> 44x44x28); this preset defaults to ``padding="same"`` so that
    output and input sizes agree (pass ``padding="valid"`` for the paper's behaviour).

    References
    ----------
    .. [1] Çiçek et al., MICCAI 2016. :doi:`10.1007/978-3-319-46723-8_49`
    """
    return UNet(
        in_channels,
        num_classes,
        base_channels=base_channels,
        depth=depth,
        padding=padding,
        dims=3,
        norm=norm,
        up=up,
        dropout=dropout,
        double_before_pool=True,
    )


def _reflect_index(n: int, before: int, total: int) -> np.ndarray:
    """Indices into an axis of length ``n`` for ``total`` samples starting at ``-before``,
    mirrored without repeating the edge (NumPy's ``mode="reflect"``), any number of times."""
    i = np.arange(-before, total - before)
    if n == 1:
        return np.zeros_like(i)
    period = 2 * (n - 1)
    i = np.mod(i, period)
    return np.where(i >= n, period - i, i)


def overlap_tile_predict(
    model: UNet,
    image: torch.Tensor,
    *,
    tile_output: int | Sequence[int] | None = None,
    batch_size: int = 4,
) -> torch.Tensor:
    """Predict a whole image of any size with a valid U-Net, tile by tile (Fig. 2 of [1]_).

    The image is mirrored at its borders so that the network's valid output tiles cover it
    exactly: every output pixel sees its full context, missing context being the mirror image.

    Parameters
    ----------
    model : UNet
        A U-Net with ``padding="valid"``. It is run in eval mode (restored afterwards) without
        gradients.
    image : Tensor, shape (C, *spatial) or (N, C, *spatial)
    tile_output : int or sequence of int, optional
        Output size of one tile; must be a valid output size (see :meth:`UNet.output_size`) and at
        least ``2**depth``. Default: the smallest valid output covering ``min(size, 388)`` pixels
        per axis in 2D (the paper's tile), ``min(size, 64)`` in 3D.
    batch_size : int, default 4
        Tiles per forward pass.

    Returns
    -------
    Tensor, shape (num_classes, *spatial) or (N, num_classes, *spatial)
        Logits, same spatial size as ``image``.

    Notes
    -----
    A valid U-Net is shift-equivariant only for shifts that are multiples of ``2**depth`` (the
    pooling grid). Tiles therefore advance by the largest such multiple not larger than the tile
    output, overlapping by a few pixels (4 for the paper's 388-pixel tiles), so every tile sees the
    pooling grid at the same phase. The result is then the same for any tile size, and equal to one
    forward pass over the whole mirrored image.

    References
    ----------
    .. [1] Ronneberger et al., MICCAI 2015. :doi:`10.1007/978-3-319-24574-4_28`
    """
    if not isinstance(model, UNet):
        raise TypeError(f"model must be a UNet, got {type(model).__name__}")
    if model.padding != "valid":
        raise ValueError(f"model must have padding='valid', got padding={model.padding!r}")
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"image must be a torch.Tensor, got {type(image).__name__}")
    dims = model.dims
    if image.ndim not in (dims + 1, dims + 2):
        raise ValueError(
            f"image must have shape (C, *spatial) or (N, C, *spatial) with {dims} spatial axes, "
            f"got shape {tuple(image.shape)}"
        )
    check_int(batch_size, name="batch_size", minimum=1)
    batched = image.ndim == dims + 2
    x = image if batched else image.unsqueeze(0)  # (N, C, *spatial)
    size = tuple(int(s) for s in x.shape[2:])
    grid = 2**model.depth

    if tile_output is None:
        cap = 388 if dims == 2 else 64
        tile_in = model.valid_input_size(tuple(max(min(s, cap), grid) for s in size))
        tile_out = model.output_size(tile_in)
    else:
        tile_out = model._sizes(tile_output, "tile_output")
        ok = [t >= grid and model.output_size(model.valid_input_size(t))[0] == t for t in tile_out]
        if not all(ok):
            fix = tuple(
                t if good else model.output_size(model.valid_input_size(max(t, grid)))[0]
                for t, good in zip(tile_out, ok, strict=True)
            )
            raise ValueError(
                f"tile_output must be valid output sizes of at least {grid} for this U-Net, "
                f"got {_fmt(tile_out)}: use {_fmt(fix)}"
            )
        tile_in = model.valid_input_size(tile_out)
    half = (tile_in[0] - tile_out[0]) // 2  # context on each side, the same on every axis
    steps = [t // grid * grid for t in tile_out]
    counts = [
        1 + math.ceil(max(s - t, 0) / step)
        for s, t, step in zip(size, tile_out, steps, strict=True)
    ]
    covered = [(n - 1) * step + t for n, step, t in zip(counts, steps, tile_out, strict=True)]

    # Mirror-pad by gathering reflected indices: works for pads longer than the image too.
    padded = x  # (N, C, *[c + tile_in - tile_out for c in covered])
    for axis, (s, c) in enumerate(zip(size, covered, strict=True)):
        idx = _reflect_index(s, half, c + 2 * half)
        padded = padded.index_select(axis + 2, torch.from_numpy(idx).to(x.device))

    def window(corner: tuple[int, ...], extent: Sequence[int]) -> tuple[slice, ...]:
        return tuple(slice(a, a + e) for a, e in zip(corner, extent, strict=True))

    device = next(model.parameters()).device
    corners = itertools.product(
        *[range(0, c - t + 1, st) for c, t, st in zip(covered, tile_out, steps, strict=True)]
    )
    jobs = [(b, corner) for corner in corners for b in range(x.shape[0])]
    out = None
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for k in range(0, len(jobs), batch_size):
                chunk = jobs[k : k + batch_size]
                tiles = torch.stack(
                    [padded[(b, slice(None), *window(corner, tile_in))] for b, corner in chunk]
                ).to(device)  # (n_tiles, C, *tile_in)
                logits = model(tiles).to(x.device)  # (n_tiles, K, *tile_out)
                if out is None:
                    out = logits.new_empty((x.shape[0], logits.shape[1], *covered))
                for (b, corner), tile in zip(chunk, logits, strict=True):
                    # Overlapping pixels are equal (same pooling phase), so overwriting is exact.
                    out[(b, slice(None), *window(corner, tile_out))] = tile
    finally:
        model.train(was_training)
    out = out[(slice(None), slice(None), *(slice(0, s) for s in size))]
    return out if batched else out[0]
