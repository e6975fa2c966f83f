"""Faster CPU inference for trained models: batch normalisation folded into convolutions, and
the channels-last memory layout.

In eval mode a batch normalisation is a fixed per-channel affine map,
``y = gamma * (x - mean) / sqrt(var + eps) + beta``, so when it directly follows a convolution it
can be folded into that convolution's weights and bias [1]_ (as PyTorch's
``torch.nn.utils.fusion.fuse_conv_bn_eval`` does), removing one pass over every feature map.
Channels-last (NHWC / NDHWC) is the layout oneDNN's CPU convolutions run fastest in [2]_.
``benchmarks/models.py`` measures both on segloc's networks against MONAI's.

References
----------
.. [1] S. Ioffe, C. Szegedy, "Batch Normalization: Accelerating Deep Network Training by
       Reducing Internal Covariate Shift", ICML 2015, pp. 448-456. (arXiv:1502.03167)
.. [2] PyTorch tutorial, "(beta) Channels Last Memory Format in PyTorch",
       https://pytorch.org/tutorials/intermediate/memory_format_tutorial.html
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["fuse_batchnorm", "optimize_for_inference", "to_channels_last"]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _check_module(model: object) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return model


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    if not isinstance(bn, _NORMS) or not bn.track_running_stats or bn.running_mean is None:
        return False  # without running statistics the normalisation depends on the batch
    if isinstance(conv, _CONVS):
        return conv.out_channels == bn.num_features
    # A transposed convolution's weight is (in, out / groups, ...): PyTorch's folding scales
    # axis 1 as if it held every output channel, which is only true without groups.
    return (
        isinstance(conv, _TRANSPOSED) and conv.groups == 1 and conv.out_channels == bn.num_features
    )


def _receiver(parent: nn.Module, name: str) -> tuple[nn.Module, str]:
    """The module that first sees ``parent.name``'s input: descend into leading Sequentials."""
    module = parent._modules[name]
    while isinstance(module, nn.Sequential) and len(module):
        parent, name = module, next(iter(module._modules))
        module = parent._modules[name]
    return parent, name


def fuse_batchnorm(model: nn.Module) -> nn.Module:
    """Return an eval-mode copy of ``model`` with each batch normalisation folded into the
    convolution before it.

    A pair is folded when a convolution (or transposed convolution) is followed in an
    ``nn.Sequential`` by a ``BatchNorm`` with running statistics, either directly (segloc's
    models) or as the first layer of the next ``Sequential`` (MONAI's ``Convolution``: ``conv``
    then ``adn = (N, D, A)``). Only there is the convolution's output certain to feed nothing but
    the normalisation; other normalisations are left as they are. The folded normalisation is
    replaced by ``nn.Identity``, so module names keep their meaning.

    Parameters
    ----------
    model : nn.Module
        Left unchanged.

    Returns
    -------
    nn.Module
        For inference only: training it would train the folded weights, not the original ones.

    References
    ----------
    .. [1] Ioffe & Szegedy, ICML 2015 (arXiv:1502.03167).
    """
    model = copy.deepcopy(_check_module(model)).eval()
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for a, b in zip(names, names[1:], strict=False):
            conv = seq._modules[a]
            parent, name = _receiver(seq, b)
            bn = parent._modules[name]
            if isinstance(conv, _CONVS + _TRANSPOSED) and _foldable(conv, bn):
                seq._modules[a] = fuse_conv_bn_eval(
                    conv, bn, transpose=isinstance(conv, _TRANSPOSED)
                )
                parent._modules[name] = nn.Identity()
    return model


def optimize_for_inference(
    model: nn.Module, *, fuse_bn: bool = True, channels_last: bool = True
) -> nn.Module:
    """Return an eval-mode copy of ``model`` prepared for fast CPU inference.

    Parameters
    ----------
    model : nn.Module
        A trained model; left unchanged.
    fuse_bn : bool, default True
        Fold batch normalisations into the convolutions before them (:func:`fuse_batchnorm`).
    channels_last : bool, default True
        Store the weights in channels-last layout (``torch.channels_last`` when the model's first
        convolution is 2D, ``torch.channels_last_3d`` when it is 3D). Inputs need no conversion:
        convolutions follow their weights' layout, and so the logits come out channels-last too
        (same values; call ``.contiguous()`` if a later step needs the default layout).

    Returns
    -------
    nn.Module
        Same outputs as ``model.eval()`` up to float rounding (checked to 1e-4 in
        ``tests/test_nn_fast.py``). Run it under ``torch.inference_mode()``.

    References
    ----------
    .. [1] Ioffe & Szegedy, ICML 2015 (arXiv:1502.03167).
    .. [2] PyTorch, "Channels Last Memory Format in PyTorch",
           https://pytorch.org/tutorials/intermediate/memory_format_tutorial.html

    Examples
    --------
    >>> from segloc.nn.unet import UNet
    >>> net = UNet(1, 2, base_channels=4, depth=2, padding="same", norm="batch")
    >>> fast = optimize_for_inference(net)
    >>> sum(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    0
    >>> with torch.inference_mode():
    ...     bool(torch.allclose(fast(torch.ones(1, 1, 8, 8)), net.eval()(torch.ones(1, 1, 8, 8))))
    True
    """
    _check_module(model)
    for name, value in (("fuse_bn", fuse_bn), ("channels_last", channels_last)):
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    model = fuse_batchnorm(model) if fuse_bn else copy.deepcopy(model).eval()
    return to_channels_last(model) if channels_last else model


def to_channels_last(model: nn.Module) -> nn.Module:
    """Store ``model``'s weights channels-last, in place, for training or inference.

    The layout follows the first convolution: ``torch.channels_last`` (NHWC) for a 2D one,
    ``torch.channels_last_3d`` (NDHWC) for a 3D one; a model without, or with a 1D one, is
    left as it is. Convolutions follow their weights' layout, so the whole network then
    computes channels-last whatever the input's layout [2]_, with the default layout's
    values up to rounding. Measured speed-ups: docs/results.md.

    Returns
    -------
    nn.Module
        ``model`` itself.
    """
    _check_module(model)
    conv = next((m for m in model.modules() if isinstance(m, _CONVS + _TRANSPOSED)), None)
    if isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d)):
        model.to(memory_format=torch.channels_last)
    elif isinstance(conv, (nn.Conv3d, nn.ConvTranspose3d)):
        model.to(memory_format=torch.channels_last_3d)
    return model
