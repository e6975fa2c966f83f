"""V-Net: a volumetric, fully convolutional network with residual stages (Milletari et al. 2016).

Read from the paper's Fig. 1 [1]_:

- Left (compression) path: five stages of 1, 2, 3, 3, 3 convolutions 5x5x5 (padding 2, so the
  size is kept) with 16, 32, 64, 128, 256 channels. Each stage learns a residual function: its
  input is added to the output of its last convolution. Between stages a 2x2x2 convolution with
  stride 2 halves the resolution and doubles the channels (no pooling).
- Right (decompression) path: a 2x2x2 transposed convolution with stride 2 doubles the
  resolution; its output is concatenated with the features of the left stage at that
  resolution ("fine-grained features forwarded"), giving 256, 128, 64, 32 channels; residual
  stages of 3, 3, 2, 1 convolutions follow (the concatenation is the residual's input).
- A final 1x1x1 convolution maps to ``num_classes`` (the paper's two channels, then soft-max;
  here the model returns logits).
- PReLU after every convolution and (de-)convolution.

Implementation choices the paper leaves open (documented because they change the weights):

- The first stage's residual: the input has 1 channel and the stage output 16, so the input is
  repeated 16 times along the channel axis (``x.repeat(1, 16, 1, 1, 1)``), as the original Caffe
  model and MONAI do. With ``in_channels`` channels it is repeated
  ``base_channels / in_channels`` times (input channels ``0, 1, .., c-1, 0, 1, ..``), which needs
  ``base_channels`` to be a multiple of ``in_channels``.
- Where the non-linearity sits in a residual stage: every convolution but the last is followed
  by a PReLU; the last convolution's output is added to the stage input and the sum goes through
  a PReLU (the residual unit of He et al. 2016, which the paper cites). So a stage of n
  convolutions has n PReLUs either way.
- PReLU parameters: ``prelu="channel"`` (default) learns one slope per channel, the default of
  the Caffe ``PReLU`` layer the authors used (``channel_shared: false``); ``prelu="shared"`` learns
  one slope per PReLU layer. The paper does not say.
- No normalisation by default (the paper has none); ``norm="batch"`` / ``"instance"`` add one after
  every convolution (then the convolutions carry no bias).

Parameter counts (``in_channels=1, num_classes=2``), derived in ``tests/test_vnet.py``:

================================================  ==========  =================================
model                                             parameters  notes
================================================  ==========  =================================
segloc ``VNet`` without PReLU parameters          65,171,858  Fig. 1 as read above
segloc ``VNet``, ``prelu="channel"`` (default)    65,175,314  + 3,456 slopes (one per channel)
segloc ``VNet``, ``prelu="shared"``               65,171,887  + 29 slopes (one per PReLU layer)
``monai.networks.nets.VNet(3, 1, 2)``             45,597,898  measured, MONAI 1.6.1
================================================  ==========  =================================

The first figure agrees with the project's reference notes, derived from the same reading.

Why MONAI's VNet is smaller: it follows the convolution counts of the released Caffe prototxt
rather than the figure (the PyTorch port it adapts notes "the number of convolutions in each
layer corresponds to what is in the actual prototxt, not the intent"): left stages of
1, 1, 2, 3, 2 convolutions and right stages of 2, 2, 1, 1, i.e. 15 stage convolutions where the
figure has 21; the two dropped 5x5x5 convolutions at 256 channels alone weigh 16.4M. It adds a
5x5x5 convolution (32 -> classes) before the 1x1x1 output convolution, batch normalisation after
every convolution (convolutions without bias), ELU instead of PReLU by default, and dropout.

References
----------
.. [1] F. Milletari, N. Navab, S.-A. Ahmadi, "V-Net: Fully Convolutional Neural Networks for
       Volumetric Medical Image Segmentation", 3DV 2016, pp. 565-571.
       :doi:`10.1109/3DV.2016.79` (arXiv:1606.04797)
.. [2] K. He, X. Zhang, S. Ren, J. Sun, "Deep Residual Learning for Image Recognition",
       CVPR 2016. :doi:`10.1109/CVPR.2016.90`
"""

from __future__ import annotations

import torch
from torch import nn

from segloc._validation import check_choice, check_int
from segloc.nn import NORMS
from segloc.nn.blocks import check_divisible, conv_nd, conv_transpose_nd, norm_nd

__all__ = ["VNet"]

PRELUS = ("channel", "shared")


def _prelu(kind: str, channels: int) -> nn.PReLU:
    return nn.PReLU(channels if kind == "channel" else 1)


class _ConvAct(nn.Sequential):
    """Convolution, optional normalisation, PReLU (the act is left out when ``act=False``)."""

    def __init__(
        self,
        conv: nn.Module,
        channels: int,
        *,
        dims: int,
        norm: str | None,
        prelu: str,
        act: bool = True,
    ) -> None:
        super().__init__(conv, norm_nd(norm, dims, channels))
        if act:
            self.append(_prelu(prelu, channels))


class ResidualStage(nn.Module):
    """``num_convs`` 5x5x5 convolutions learning a residual: ``PReLU(F(x) + residual)``.

    Parameters
    ----------
    in_channels, channels : int
        The first convolution maps ``in_channels`` to ``channels``; the others keep
        ``channels``. ``forward(x, residual)`` needs ``residual`` with ``channels`` channels.
    num_convs : int
    dims : {2, 3}
    norm : {None, "batch", "instance"}
    prelu : {"channel", "shared"}
    kernel_size : int
        5 in the paper; padding keeps the size.
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        num_convs: int,
        *,
        dims: int = 3,
        norm: str | None = None,
        prelu: str = "channel",
        kernel_size: int = 5,
    ) -> None:
        super().__init__()
        conv = conv_nd(dims)
        self.convs = nn.Sequential(
            *(
                _ConvAct(
                    conv(
                        in_channels if i == 0 else channels,
                        channels,
                        kernel_size,
                        padding=kernel_size // 2,
                        bias=norm is None,
                    ),
                    channels,
                    dims=dims,
                    norm=norm,
                    prelu=prelu,
                    act=i < num_convs - 1,  # the last one's PReLU comes after the sum
                )
                for i in range(num_convs)
            )
        )
        self.act = _prelu(prelu, channels)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.act(self.convs(x) + residual)


class VNet(nn.Module):
    """V-Net [1]_ for 3D volumes (or 2D images with ``dims=2``); returns logits.

    See the module docstring for the architecture as read from the paper's Fig. 1, the choices
    it leaves open and the comparison with MONAI's ``VNet``.

    Parameters
    ----------
    in_channels : int
        Input channels; must divide ``base_channels`` (the first stage's residual repeats the
        input to ``base_channels`` channels).
    num_classes : int
        Output channels (2 in the paper, with a soft-max; use a loss from
        :mod:`segloc.nn.losses`).
    base_channels : int
        Channels of the first stage (16 in the paper); stage ``l`` has ``base_channels * 2**l``.
        8 gives a narrow V-Net (1/4 of the parameters) for CPU training.
    depth : int
        Number of down-sampling steps (4 in the paper, five resolutions). Left stage ``l`` has
        ``min(l + 1, 3)`` convolutions and right stage ``l`` the same, which is the paper's
        1, 2, 3, 3, 3 / 3, 3, 2, 1 for depth 4. Each spatial size of the input must be divisible
        by ``2**depth``.
    dims : {3, 2}
        Spatial dimensions (the paper is 3D; 2D uses 5x5 / 2x2 kernels).
    norm : {None, "batch", "instance"}
        Normalisation after every convolution; None in the paper.
    prelu : {"channel", "shared"}
        One PReLU slope per channel (default, Caffe's default) or per layer.
    kernel_size : int
        Odd size of the stage convolutions (5 in the paper).

    Notes
    -----
    On CPU, oneDNN's 3D convolutions can train faster in channels-last layout:
    ``net.to(memory_format=torch.channels_last_3d)`` and
    ``x.contiguous(memory_format=torch.channels_last_3d)``. Measured figures: docs/results.md.

    Examples
    --------
    >>> net = VNet(1, 2, base_channels=4, depth=2)
    >>> net(torch.zeros(1, 1, 8, 8, 4)).shape
    torch.Size([1, 2, 8, 8, 4])

    References
    ----------
    .. [1] Milletari, Navab, Ahmadi, 3DV 2016, Fig. 1. :doi:`10.1109/3DV.2016.79`
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        base_channels: int = 16,
        depth: int = 4,
        dims: int = 3,
        norm: str | None = None,
        prelu: str = "channel",
        kernel_size: int = 5,
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_channels", in_channels),
            ("num_classes", num_classes),
            ("base_channels", base_channels),
            ("depth", depth),
        ):
            check_int(value, name=name, minimum=1)
        if base_channels % in_channels:
            raise ValueError(
                f"base_channels must be a multiple of in_channels (the first stage's residual "
                f"repeats the input), got base_channels={base_channels}, in_channels={in_channels}"
            )
        check_choice(dims, (2, 3), name="dims")
        check_choice(norm, NORMS, name="norm")
        check_choice(prelu, PRELUS, name="prelu")
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be an odd positive int, got {kernel_size!r}")
        self.in_channels, self.num_classes = in_channels, num_classes
        self.base_channels, self.depth, self.dims = base_channels, depth, dims

        conv, up = conv_nd(dims), conv_transpose_nd(dims)
        opts = dict(dims=dims, norm=norm, prelu=prelu)
        width = [base_channels * 2**level for level in range(depth + 1)]
        num_convs = [min(level + 1, 3) for level in range(depth + 1)]

        # left path: stage 0 takes the input, stage l > 0 the down-convolution's output
        self.encoders = nn.ModuleList(
            ResidualStage(
                in_channels if level == 0 else width[level],
                width[level],
                num_convs[level],
                kernel_size=kernel_size,
                **opts,
            )
            for level in range(depth + 1)
        )
        self.downs = nn.ModuleList(
            _ConvAct(
                conv(width[level], width[level + 1], 2, stride=2, bias=norm is None),
                width[level + 1],
                **opts,
            )
            for level in range(depth)
        )
        # right path, listed from the deepest level up: up-convolution to width[l], concatenate
        # with encoder l (width[l]) -> 2 * width[l] channels, residual stage at that width
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for level in reversed(range(depth)):
            below = width[depth] if level == depth - 1 else 2 * width[level + 1]
            self.ups.append(
                _ConvAct(
                    up(below, width[level], 2, stride=2, bias=norm is None), width[level], **opts
                )
            )
            self.decoders.append(
                ResidualStage(
                    2 * width[level],
                    2 * width[level],
                    num_convs[level],
                    kernel_size=kernel_size,
                    **opts,
                )
            )
        self.head = conv(2 * width[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes, *spatial)`` for ``x`` of shape ``(B, in_channels, *spatial)``
        with every spatial size divisible by ``2**depth``."""
        check_divisible(x, 2**self.depth, dims=self.dims)
        if x.shape[1] != self.in_channels:
            raise ValueError(f"x must have {self.in_channels} channels, got shape {tuple(x.shape)}")
        repeat = self.base_channels // self.in_channels
        # (B, c, *S) -> (B, c * repeat, *S): channel order 0..c-1, 0..c-1, ...
        residual = x.repeat(1, repeat, *[1] * self.dims)
        skips = [self.encoders[0](x, residual)]
        for down, stage in zip(self.downs, self.encoders[1:], strict=True):
            d = down(skips[-1])  # (B, 2C, *S/2)
            skips.append(stage(d, d))
        y = skips.pop()
        for up, stage in zip(self.ups, self.decoders, strict=True):
            y = torch.cat([up(y), skips.pop()], dim=1)  # (B, 2 * width, *S)
            y = stage(y, y)
        return self.head(y)
