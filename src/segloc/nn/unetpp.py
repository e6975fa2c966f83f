"""U-Net++: nested, dense skip pathways and deep supervision (Zhou et al. 2018).

The nodes follow the paper's notation [1]_: ``x^{i,j}`` is the node at down-sampling level ``i``
and position ``j`` along its skip pathway, with ::

    x^{i,0} = H(D(x^{i-1,0}))                                   (the encoder; x^{0,0} = H(input))
    x^{i,j} = H([x^{i,0}, x^{i,1}, ..., x^{i,j-1}, U(x^{i+1,j-1})])   for j > 0

``H`` two 3x3 convolutions (each followed by optional normalisation and ReLU), ``D`` 2x2 max
pooling, ``U`` 2x up-sampling, ``[ ]`` concatenation along channels. Node ``x^{i,j}`` is the
attribute ``x_{i}_{j}`` (``self.x_0_1``); the up-sampling that feeds it is ``up_{i}_{j}``;
the 1x1 output convolution on ``x^{0,j}`` is ``head_{j}``.

``U`` is a 2x2 transposed convolution with stride 2 mapping ``x^{i+1,j-1}`` to the width of level
``i`` by default (``upsample="transpose"``), as the authors' Keras code does
(``Conv2DTranspose(nb_filter[i], (2, 2), strides=(2, 2))`` before each ``standard_unit``);
``upsample="bilinear"`` (trilinear in 3D) has no parameters and keeps the channels of level
``i + 1``, as MONAI's ``BasicUNetPlusPlus`` (``upsample="nontrainable"``) and smp do.

Deep supervision [1]_: a 1x1 head on each of ``x^{0,1}, ..., x^{0,L}``; in training mode the
model returns the list of head logits and :class:`segloc.nn.losses.DeepSupervisionLoss`
averages their losses. At inference, ``inference="accurate"`` returns the mean of the heads
and ``"fast"`` the last head. ``prune=L`` builds only the nodes ``x^{i,j}`` with ``i + j <= L``,
so its output is head ``L`` of the full model with the same weights (:meth:`UNetPlusPlus.pruned`).
Note: segloc's accurate mode averages the heads' *logits* (the model returns logits); the paper
averages the heads' sigmoid outputs. The two agree where the heads agree and give the same
decisions at 0.5 when all heads are on the same side.

Parameter counts, 2D, backbone filters 32, 64, 128, 256, 512 (``base_channels=32, depth=4``),
``in_channels=1, num_classes=1`` (derived by hand in ``tests/test_unetpp.py``):

=========================================================  ==========  =====================
model                                                      parameters  source
=========================================================  ==========  =====================
U-Net (same filters, transposed convolutions)                 7.76M    paper's table
U-Net++                                                       9.04M    paper's table
segloc ``UNetPlusPlus(norm=None)``                         9,041,601   this module
segloc ``UNetPlusPlus(norm=None, deep_supervision=True)``  9,041,700   + 3 heads of 33
segloc ``UNetPlusPlus()`` (batch norm, no conv bias)       9,045,249   this module
MONAI ``BasicUNetPlusPlus`` (its norm layers)                 9.12M    measured
=========================================================  ==========  =====================

So the paper's 9.04M is this network without normalisation (its Keras code has none) and with
transposed-convolution up-sampling; ``upsample="bilinear"`` gives 9,155,457 (wider concatenations,
no up-sampling weights).

References
----------
.. [1] Z. Zhou, M. M. R. Siddiquee, N. Tajbakhsh, J. Liang, "UNet++: A Nested U-Net Architecture
       for Medical Image Segmentation", DLMIA 2018, LNCS 11045, pp. 3-11.
       :doi:`10.1007/978-3-030-00889-5_1` (arXiv:1807.10165)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from segloc._validation import check_choice, check_int
from segloc.nn import NORMS
from segloc.nn.blocks import ConvBlock, check_divisible

__all__ = ["UNetPlusPlus"]

UPSAMPLES = ("transpose", "bilinear")
INFERENCES = ("accurate", "fast")


class UNetPlusPlus(nn.Module):
    """U-Net++ [1]_ for 2D images or 3D volumes; returns logits.

    Parameters
    ----------
    in_channels : int
    num_classes : int
        Channels of each head (1 for the paper's sigmoid outputs).
    base_channels : int
        Width of level 0; level ``i`` has ``base_channels * 2**i`` (32 .. 512 in the paper).
    depth : int
        Number of down-sampling steps (4 in the paper, nodes ``x^{0,0} .. x^{4,0}``).
    dims : {2, 3}
    deep_supervision : bool
        Build a head on every ``x^{0,j}``, ``j = 1 .. L``; in training mode ``forward`` returns
        the list of their logits. Without it there is one head, on ``x^{0,L}``.
    prune : int, optional
        ``L`` in ``1 .. depth``: build only the sub-network up to ``x^{0,L}`` (nodes with
        ``i + j <= L``) and output head ``L``. Default ``depth`` (no pruning). A pruned network
        is only meaningful when the heads were trained, so ``prune < depth`` needs
        ``deep_supervision=True``.
    norm : {"batch", None, "instance"}
        Normalisation after every 3x3 convolution (the paper's code has none; batch
        normalisation is the common choice, e.g. MONAI and smp).
    upsample : {"transpose", "bilinear"}
        ``U``: 2x2 transposed convolution to level ``i``'s width (the authors' code), or
        parameter-free bilinear / trilinear interpolation keeping level ``i + 1``'s width.
    inference : {"accurate", "fast"}
        With deep supervision, in eval mode: mean of the heads' logits ("accurate") or the last
        head only ("fast").

    Examples
    --------
    >>> net = UNetPlusPlus(1, 2, base_channels=4, depth=2).eval()
    >>> net(torch.zeros(1, 1, 8, 8)).shape
    torch.Size([1, 2, 8, 8])

    References
    ----------
    .. [1] Zhou, Siddiquee, Tajbakhsh, Liang, DLMIA 2018. :doi:`10.1007/978-3-030-00889-5_1`
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        base_channels: int = 32,
        depth: int = 4,
        dims: int = 2,
        deep_supervision: bool = False,
        prune: int | None = None,
        norm: str | None = "batch",
        upsample: str = "transpose",
        inference: str = "accurate",
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_channels", in_channels),
            ("num_classes", num_classes),
            ("base_channels", base_channels),
            ("depth", depth),
        ):
            check_int(value, name=name, minimum=1)
        check_choice(dims, (2, 3), name="dims")
        check_choice(norm, NORMS, name="norm")
        check_choice(upsample, UPSAMPLES, name="upsample")
        check_choice(inference, INFERENCES, name="inference")
        if prune is None:
            prune = depth
        if not isinstance(prune, int) or isinstance(prune, bool) or not 1 <= prune <= depth:
            raise ValueError(f"prune must be an int in [1, {depth}] or None, got {prune!r}")
        if prune < depth and not deep_supervision:
            raise ValueError(
                "prune must be None or depth unless deep_supervision=True (only deep supervision "
                f"trains the heads of the pruned networks), got prune={prune}"
            )
        self._kwargs: dict[str, Any] = dict(
            in_channels=in_channels,
            num_classes=num_classes,
            base_channels=base_channels,
            depth=depth,
            dims=dims,
            deep_supervision=deep_supervision,
            norm=norm,
            upsample=upsample,
            inference=inference,
        )
        self.depth, self.dims, self.levels = depth, dims, prune
        self.deep_supervision, self.inference = deep_supervision, inference
        self.in_channels = in_channels

        width = [base_channels * 2**i for i in range(prune + 1)]
        self.pool = {2: nn.MaxPool2d, 3: nn.MaxPool3d}[dims](2)
        up = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[dims]
        mode = "bilinear" if dims == 2 else "trilinear"
        # k = i + j is the anti-diagonal; x^{i,j} only needs nodes on earlier diagonals
        for k in range(prune + 1):
            for j in range(k + 1):
                i = k - j
                if j == 0:
                    c_in = in_channels if i == 0 else width[i - 1]
                else:
                    if upsample == "transpose":
                        u = up(width[i + 1], width[i], 2, stride=2)
                        c_up = width[i]
                    else:
                        u = nn.Upsample(scale_factor=2, mode=mode, align_corners=False)
                        c_up = width[i + 1]
                    setattr(self, f"up_{i}_{j}", u)
                    c_in = j * width[i] + c_up  # [x^{i,0} .. x^{i,j-1}, U(x^{i+1,j-1})]
                setattr(
                    self,
                    f"x_{i}_{j}",
                    ConvBlock(c_in, width[i], dims=dims, padding="same", norm=norm),
                )
        conv = {2: nn.Conv2d, 3: nn.Conv3d}[dims]
        self.head_ids = list(range(1, prune + 1)) if deep_supervision else [prune]
        for j in self.head_ids:
            setattr(self, f"head_{j}", conv(width[0], num_classes, 1))

    def heads(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every head, ``[head_1(x^{0,1}), ..., head_L(x^{0,L})]`` (only the last
        without deep supervision), whatever the training mode."""
        check_divisible(x, 2**self.levels, dims=self.dims)
        if x.shape[1] != self.in_channels:
            raise ValueError(f"x must have {self.in_channels} channels, got shape {tuple(x.shape)}")
        nodes: dict[tuple[int, int], torch.Tensor] = {}
        for k in range(self.levels + 1):
            for j in range(k + 1):
                i = k - j
                block = getattr(self, f"x_{i}_{j}")
                if j == 0:
                    inp = x if i == 0 else self.pool(nodes[i - 1, 0])  # (B, C, *S / 2**i)
                else:
                    up = getattr(self, f"up_{i}_{j}")(nodes[i + 1, j - 1])
                    inp = torch.cat([nodes[i, m] for m in range(j)] + [up], dim=1)
                nodes[i, j] = block(inp)
        return [getattr(self, f"head_{j}")(nodes[0, j]) for j in self.head_ids]

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """Logits ``(B, num_classes, *spatial)``, or with deep supervision in training mode
        the list of every head's logits (see the class docstring)."""
        outs = self.heads(x)
        if not self.deep_supervision:
            return outs[-1]
        if self.training:
            return outs
        if self.inference == "fast":
            return outs[-1]
        return torch.stack(outs).mean(0)  # (L, B, K, *S) -> (B, K, *S)

    def pruned(self, level: int) -> UNetPlusPlus:
        """A U-Net++ pruned at ``level`` (``prune=level``) that *shares* this model's modules.

        Its output in "fast" mode is head ``level`` of this model; training either model
        changes both. Use ``copy.deepcopy`` on the result for independent weights.
        """
        if not isinstance(level, int) or not 1 <= level <= self.levels:
            raise ValueError(f"level must be an int in [1, {self.levels}], got {level!r}")
        if not self.deep_supervision and level != self.levels:
            raise ValueError(
                f"level must be {self.levels} without deep supervision (the other heads do not "
                f"exist), got {level}"
            )
        # build on the meta device (no memory, no initialisation), then point at our modules
        with torch.device("meta"):
            small = UNetPlusPlus(**self._kwargs, prune=level)
        for name in list(small._modules):
            small._modules[name] = self._modules[name]
        small.inference = self.inference
        small.train(self.training)
        return small
