"""Tests for the model factory in segloc.nn."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
import torch

from segloc.nn import SEGMENTATION_MODELS, create_model, list_models
from segloc.nn.unet import UNet


def test_list_models():
    assert list_models() == ["box_localizer", "unet", "unet3d", "unetpp", "vnet"]
    # segloc train trains the segmentation networks only
    assert SEGMENTATION_MODELS == ("unet", "unet3d", "unetpp", "vnet")
    net = create_model("box_localizer", in_channels=3, num_classes=1, image_size=(32, 32))
    assert type(net).__name__ == "BoxLocalizer"


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError) as err:
        create_model("resnet", in_channels=1, num_classes=2)
    assert str(err.value) == (
        "name must be one of ['box_localizer', 'unet', 'unet3d', 'unetpp', 'vnet'], got 'resnet'"
    )


def test_unet_from_factory_is_configured_by_kwargs():
    net = create_model(
        "unet", in_channels=3, num_classes=4, base_channels=8, depth=2, padding="same"
    )
    assert type(net) is UNet
    assert (net.in_channels, net.num_classes, net.base_channels, net.depth) == (3, 4, 8, 2)
    assert net(torch.zeros(1, 3, 16, 16)).shape == (1, 4, 16, 16)


def test_unet3d_from_factory_is_the_preset():
    net = create_model("unet3d", in_channels=1, num_classes=3, base_channels=4)
    assert (net.dims, net.depth, net.padding, net.norm, net.double_before_pool) == (
        3,
        3,
        "same",
        "batch",
        True,
    )
    assert net.eval()(torch.zeros(1, 1, 8, 8, 16)).shape == (1, 3, 8, 8, 16)


def test_bad_kwargs_reach_the_constructor():
    with pytest.raises(TypeError, match="unexpected keyword argument 'widht'"):
        create_model("unet", in_channels=1, num_classes=2, widht=3)


@pytest.mark.parametrize(
    "name, module, cls",
    [("vnet", "segloc.nn.vnet", "VNet"), ("unetpp", "segloc.nn.unetpp", "UNetPlusPlus")],
)
def test_other_models_are_resolved_lazily(name, module, cls):
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not written yet")
    net = create_model(name, in_channels=1, num_classes=2)
    assert type(net) is getattr(importlib.import_module(module), cls)


def test_import_is_light():
    # Importing the package must not pull in torch or any model module.
    code = (
        "import sys, segloc.nn; "
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('segloc.nn.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
