"""Deep models (segmentation networks and the box localizer) and a name -> model factory.

``import segloc.nn`` imports neither torch nor any model module: each model is imported when
:func:`create_model` first builds it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

__all__ = ["NORMS", "SEGMENTATION_MODELS", "create_model", "list_models"]

# name -> "module:callable"; the callable takes (in_channels, num_classes, **options).
_MODELS = {
    "unet": "segloc.nn.unet:UNet",
    "unet3d": "segloc.nn.unet:unet3d",
    "vnet": "segloc.nn.vnet:VNet",
    "unetpp": "segloc.nn.unetpp:UNetPlusPlus",
    "box_localizer": "segloc.nn.localizer:BoxLocalizer",
}

#: the models that ``segloc train`` trains: (B, C, *spatial) -> (B, K, *spatial) logits
SEGMENTATION_MODELS = ("unet", "unet3d", "unetpp", "vnet")

#: their ``norm`` argument: none, batch or instance normalisation after each convolution
NORMS = (None, "batch", "instance")


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`, sorted."""
    return sorted(_MODELS)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the model registered as ``name`` with keyword arguments ``kwargs``.

    Parameters
    ----------
    name : str
        One of :func:`list_models`: ``"unet"`` (:class:`segloc.nn.unet.UNet`, Ronneberger et al.
        2015), ``"unet3d"`` (:func:`segloc.nn.unet.unet3d`, Çiçek et al. 2016), ``"vnet"``
        (Milletari et al. 2016), ``"unetpp"`` (U-Net++, Zhou et al. 2018), ``"box_localizer"``
        (:class:`segloc.nn.localizer.BoxLocalizer`).
    **kwargs
        Constructor arguments, e.g. ``in_channels=1, num_classes=2, base_channels=32``.

    Examples
    --------
    >>> net = create_model("unet", in_channels=1, num_classes=2, base_channels=8)
    >>> type(net).__name__
    'UNet'
    """
    if name not in _MODELS:
        raise ValueError(f"name must be one of {list_models()}, got {name!r}")
    module, attr = _MODELS[name].split(":")
    return getattr(importlib.import_module(module), attr)(**kwargs)
