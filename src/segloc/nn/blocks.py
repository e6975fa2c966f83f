"""Building blocks of encoder-decoder segmentation networks, for 2D and 3D.

The blocks read like the U-Net figure (Ronneberger et al. 2015, Fig. 1): a :class:`ConvBlock`
is the pair of 3x3 convolutions each followed by ReLU, :class:`Down` is "max pool 2x2" then a
ConvBlock, :class:`Up` is "up-conv 2x2", "copy and crop", then a ConvBlock. The layer classes
(``Conv2d``/``Conv3d``, ...) are picked by ``dims`` so one block serves 2D images and 3D volumes
(Çiçek et al. 2016).

References
----------
.. [1] O. Ronneberger, P. Fischer, T. Brox, "U-Net: Convolutional Networks for Biomedical Image
       Segmentation", MICCAI 2015, LNCS 9351, pp. 234-241. :doi:`10.1007/978-3-319-24574-4_28`
.. [2] Ö. Çiçek, A. Abdulkadir, S. S. Lienkamp, T. Brox, O. Ronneberger, "3D U-Net: Learning
       Dense Volumetric Segmentation from Sparse Annotation", MICCAI 2016, LNCS 9901,
       pp. 424-432. :doi:`10.1007/978-3-319-46723-8_49`
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from segloc._validation import check_choice
from segloc.nn import NORMS

__all__ = [
    "ConvBlock",
    "Down",
    "Up",
    "center_crop",
    "check_divisible",
    "conv_nd",
    "conv_transpose_nd",
    "max_pool_nd",
    "norm_nd",
]

PADDINGS = ("valid", "same")
UP_MODES = ("transpose", "bilinear")


def _check_dims(dims: int) -> int:
    if dims not in (2, 3):
        raise ValueError(f"dims must be 2 or 3, got {dims!r}")
    return dims


def conv_nd(dims: int) -> type[nn.Conv2d] | type[nn.Conv3d]:
    """Return ``nn.Conv2d`` or ``nn.Conv3d`` for ``dims`` 2 or 3."""
    return {2: nn.Conv2d, 3: nn.Conv3d}[_check_dims(dims)]


def conv_transpose_nd(dims: int) -> type[nn.ConvTranspose2d] | type[nn.ConvTranspose3d]:
    """Return ``nn.ConvTranspose2d`` or ``nn.ConvTranspose3d`` for ``dims`` 2 or 3."""
    return {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[_check_dims(dims)]


def max_pool_nd(dims: int) -> type[nn.MaxPool2d] | type[nn.MaxPool3d]:
    """Return ``nn.MaxPool2d`` or ``nn.MaxPool3d`` for ``dims`` 2 or 3."""
    return {2: nn.MaxPool2d, 3: nn.MaxPool3d}[_check_dims(dims)]


def norm_nd(kind: str | None, dims: int, channels: int) -> nn.Module:
    """Return a normalisation layer over ``channels`` feature maps.

    Parameters
    ----------
    kind : {None, "batch", "instance"}
        ``None`` gives ``nn.Identity`` (the 2015 U-Net has no normalisation), ``"batch"``
        batch normalisation (Ioffe & Szegedy 2015, used by the 3D U-Net [2]_), ``"instance"``
        instance normalisation (Ulyanov et al. 2016) with a learnable affine transform, so it
        holds as many parameters as batch normalisation.
    dims : {2, 3}
    channels : int

    References
    ----------
    .. [2] Çiçek et al., MICCAI 2016. :doi:`10.1007/978-3-319-46723-8_49`
    """
    check_choice(kind, NORMS, name="norm")
    _check_dims(dims)
    if kind is None:
        return nn.Identity()
    if kind == "batch":
        return {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dims](channels)
    return {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}[dims](channels, affine=True)


def check_divisible(x: torch.Tensor, factor: int, *, dims: int) -> None:
    """Raise ValueError unless ``x`` is ``(B, C, *spatial)`` with ``dims`` spatial axes, each
    divisible by ``factor``; the message gives the padded size to use."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != dims + 2:
        axes = "(B, C, H, W)" if dims == 2 else "(B, C, D, H, W)"
        raise ValueError(f"x must be {dims + 2}D {axes}, got shape {tuple(x.shape)}")
    size = tuple(x.shape[2:])
    if any(s % factor for s in size):
        fixed = tuple(-(-s // factor) * factor for s in size)
        raise ValueError(
            f"input size {'x'.join(map(str, size))} is not divisible by {factor}: "
            f"pad to {'x'.join(map(str, fixed))}"
        )


def center_crop(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Crop the trailing ``len(size)`` axes of ``x`` to ``size``, keeping the centre.

    This is the paper's "copy and crop" [1]_: the contracting path's feature map is larger than
    the up-sampled one because every unpadded convolution loses a border pixel. When a size
    difference is odd the extra pixel is dropped at the end.

    Parameters
    ----------
    x : Tensor, shape (..., *spatial)
    size : sequence of int
        Wanted spatial size, no larger than ``x``'s along any axis.

    Returns
    -------
    Tensor, shape (..., *size)
        A view of ``x``.

    References
    ----------
    .. [1] Ronneberger et al., MICCAI 2015. :doi:`10.1007/978-3-319-24574-4_28`
    """
    size = tuple(size)
    if not 1 <= len(size) <= x.ndim:
        raise ValueError(f"size must have 1 to {x.ndim} values, got {size}")
    have = tuple(x.shape[-len(size) :])
    if any(s > h for s, h in zip(size, have, strict=True)) or any(s < 0 for s in size):
        raise ValueError(f"size must be within the input's spatial size {have}, got {size}")
    index = [slice(None)] * (x.ndim - len(size))
    for s, h in zip(size, have, strict=True):
        start = (h - s) // 2
        index.append(slice(start, start + s))
    return x[tuple(index)]


class ConvBlock(nn.Sequential):
    """Two 3x3 (3x3x3) convolutions, each followed by optional normalisation and ReLU.

    Parameters
    ----------
    in_channels, out_channels : int
    mid_channels : int, optional
        Output channels of the first convolution (default ``out_channels``). The 3D U-Net [2]_
        doubles the channels inside the block, e.g. 32 then 64.
    dims : {2, 3}
    padding : {"valid", "same"}
        ``"valid"`` is the paper's unpadded convolution [1]_ (each block trims 2 pixels per side);
        ``"same"`` zero-pads by one pixel so the size is kept.
    norm : {None, "batch", "instance"}
        With a normalisation layer the convolutions carry no bias: the normalisation subtracts
        the per-channel mean, which would cancel it.

    References
    ----------
    .. [1] Ronneberger et al., MICCAI 2015. :doi:`10.1007/978-3-319-24574-4_28`
    .. [2] Çiçek et al., MICCAI 2016. :doi:`10.1007/978-3-319-46723-8_49`
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        mid_channels: int | None = None,
        dims: int = 2,
        padding: str = "valid",
        norm: str | None = None,
    ) -> None:
        check_choice(padding, PADDINGS, name="padding")
        check_choice(norm, NORMS, name="norm")
        mid = out_channels if mid_channels is None else mid_channels
        conv = conv_nd(dims)
        pad = 0 if padding == "valid" else 1
        bias = norm is None
        super().__init__(
            conv(in_channels, mid, 3, padding=pad, bias=bias),
            norm_nd(norm, dims, mid),
            nn.ReLU(inplace=True),
            conv(mid, out_channels, 3, padding=pad, bias=bias),
            norm_nd(norm, dims, out_channels),
            nn.ReLU(inplace=True),
        )


class Down(nn.Sequential):
    """2x2 (2x2x2) max pooling with stride 2, then a :class:`ConvBlock`.

    Parameters are those of :class:`ConvBlock`, and ``scale``: the pooling factor, one for
    every axis or one per axis (``(2, 2, 1)`` leaves the last axis alone).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        mid_channels: int | None = None,
        dims: int = 2,
        padding: str = "valid",
        norm: str | None = None,
        scale: int | tuple[int, ...] = 2,
    ) -> None:
        super().__init__(
            max_pool_nd(dims)(scale),
            ConvBlock(
                in_channels,
                out_channels,
                mid_channels=mid_channels,
                dims=dims,
                padding=padding,
                norm=norm,
            ),
        )


class Up(nn.Module):
    """Up-sample by 2, concatenate the centre-cropped skip features, then a :class:`ConvBlock`.

    Parameters
    ----------
    in_channels : int
        Channels of the deeper feature map being up-sampled.
    skip_channels : int
        Channels of the contracting path's feature map.
    out_channels : int
    up_channels : int, optional
        Channels after up-sampling; default ``in_channels // 2``, the paper's "up-convolution that
        halves the number of feature channels" [1]_. The 3D U-Net keeps them (``in_channels``) [2]_.
    mode : {"transpose", "bilinear"}
        ``"transpose"``: a learned 2x2 (2x2x2) transposed convolution with stride 2 (the paper's
        up-conv). ``"bilinear"``: (tri)linear interpolation followed by a 1x1 convolution to
        ``up_channels``, which has fewer parameters and no checkerboard artefacts.
    dims, padding, norm
        As for :class:`ConvBlock`.
    scale : int or tuple of int
        Up-sampling factor, one for every axis or one per axis (the matching :class:`Down`'s).

    References
    ----------
    .. [1] Ronneberger et al., MICCAI 2015. :doi:`10.1007/978-3-319-24574-4_28`
    .. [2] Çiçek et al., MICCAI 2016. :doi:`10.1007/978-3-319-46723-8_49`
    """

    def __init__(
        self,
        in_channels: int,
        skip_channels: int,
        out_channels: int,
        *,
        up_channels: int | None = None,
        mode: str = "transpose",
        dims: int = 2,
        padding: str = "valid",
        norm: str | None = None,
        scale: int | tuple[int, ...] = 2,
    ) -> None:
        super().__init__()
        check_choice(mode, UP_MODES, name="up")
        up_channels = in_channels // 2 if up_channels is None else up_channels
        if mode == "transpose":
            self.up: nn.Module = conv_transpose_nd(dims)(
                in_channels, up_channels, scale, stride=scale
            )
        else:
            factor = tuple(float(f) for f in scale) if isinstance(scale, tuple) else float(scale)
            self.up = nn.Sequential(
                nn.Upsample(
                    scale_factor=factor,
                    mode={2: "bilinear", 3: "trilinear"}[dims],
                    align_corners=False,
                ),
                conv_nd(dims)(in_channels, up_channels, 1),
            )
        self.conv = ConvBlock(
            skip_channels + up_channels, out_channels, dims=dims, padding=padding, norm=norm
        )
        self.crop = padding == "valid"

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)  # (B, up_channels, *scale * spatial)
        if self.crop:
            skip = center_crop(skip, x.shape[2:])
        # The skip comes first, as in the paper's figure (white boxes, then blue).
        return self.conv(torch.cat([skip, x], dim=1))  # (B, out_channels, *spatial)
