"""Tests for segloc.nn.blocks, segloc.nn.unet and segloc.nn.weight_map.

Oracles: the paper's published figures (23 layers, 572 -> 388, 28x28 bottleneck), parameter
counts derived by hand, closed-form valid sizes, NumPy's reflect padding, a brute-force weight map
from full distance transforms, hand-computed 1-D weight maps, and real data (ISBI 2012, MSD
hippocampus) for the overfitting checks.
"""

from __future__ import annotations

import doctest
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi
from torch import nn

import segloc.nn.unet
import segloc.nn.weight_map
from segloc.nn.blocks import ConvBlock, Down, Up, center_crop, conv_nd, norm_nd
from segloc.nn.unet import UNet, _reflect_index, overlap_tile_predict, unet3d
from segloc.nn.weight_map import label_weight_map, unet_weight_map

DATA = Path(
    os.environ.get("SEGLOC_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data")
)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def strong_init(model: nn.Module, seed: int = 0) -> nn.Module:
    """He-normal weights and random biases: PyTorch's default init shrinks the signal so much that
    the deep path barely changes the output, which would hide pooling-phase effects."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu", generator=gen)
            if m.bias is not None:
                nn.init.normal_(m.bias, std=0.1, generator=gen)
    return model


def test_doctests():
    for module in (segloc.nn.unet, segloc.nn.weight_map):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0 and result.attempted > 0


# ------------------------------------------------------------------------------------------
# The paper's network
# ------------------------------------------------------------------------------------------


def test_paper_unet_layers_and_parameters():
    net = UNet(1, 2)
    convs = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    kernels = [(type(m).__name__, m.kernel_size) for m in convs]
    # 23 convolutional layers: 18 3x3 convolutions, 4 2x2 up-convolutions, 1 final 1x1.
    assert len(convs) == 23
    assert kernels.count(("Conv2d", (3, 3))) == 18
    assert kernels.count(("ConvTranspose2d", (2, 2))) == 4
    assert kernels.count(("Conv2d", (1, 1))) == 1
    assert n_params(net) == 31_030_658  # REFERENCES.md, derived from the layer list
    assert net.output_size(572) == (388, 388)
    assert net.valid_input_size(388) == (572, 572)
    # Smallest tile this network takes: 188 -> 4. A real forward with the paper's widths.
    with torch.inference_mode():
        assert net(torch.zeros(1, 1, 188, 188)).shape == (1, 2, 4, 4)


def test_paper_tile_572_gives_388_with_28x28_bottleneck():
    # Spatial arithmetic does not depend on the widths; base 8 keeps the 572x572 forward cheap.
    net = UNet(1, 2, base_channels=8).eval()
    seen = {}
    net.bottleneck.register_forward_hook(lambda m, i, o: seen.update(bottleneck=o.shape))
    with torch.inference_mode():
        out = net(torch.zeros(1, 1, 572, 572))
    assert out.shape == (1, 2, 388, 388)
    assert seen["bottleneck"] == (1, 8 * 16, 28, 28)


def test_paper_unet_channel_plan_reads_like_figure_1():
    net = UNet(1, 2)
    first_convs = [m for m in net.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert [c.out_channels for c in first_convs] == (
        [64, 64, 128, 128, 256, 256, 512, 512, 1024, 1024]  # contracting path and bottleneck
        + [64, 64, 128, 128, 256, 256, 512, 512]  # decoder, stored shallow to deep
    )
    ups = [m for m in net.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [(u.in_channels, u.out_channels) for u in ups] == [
        (128, 64),
        (256, 128),
        (512, 256),
        (1024, 512),
    ]


def test_unet3d_preset_parameter_count_derived_by_hand():
    net = unet3d(3, 3)  # Çiçek et al. use 3 input channels and 3 labels
    k3 = 27  # 3x3x3 kernel; convolutions followed by batch norm carry no bias
    conv = lambda cin, cout: k3 * cin * cout  # noqa: E731
    bn = lambda c: 2 * c  # noqa: E731 - gamma and beta (running stats are buffers)
    upconv = lambda c: 8 * c * c + c  # noqa: E731 - 2x2x2 transposed conv keeping c, with bias
    expected = (
        conv(3, 32)
        + bn(32)
        + conv(32, 64)
        + bn(64)  # 2,592 + 64 + 55,296 + 128
        + conv(64, 64)
        + bn(64)
        + conv(64, 128)
        + bn(128)  # 110,592 + 128 + 221,184 + 256
        + conv(128, 128)
        + bn(128)
        + conv(128, 256)
        + bn(256)  # 442,368 + 256 + 884,736 + 512
        + conv(256, 256)
        + bn(256)
        + conv(256, 512)
        + bn(512)  # 1,769,472 + 512 + 3,538,944 + 1,024
        + upconv(512)
        + conv(512 + 256, 256)
        + bn(256)
        + conv(256, 256)
        + bn(256)
        # 2,097,664 + 5,308,416 + 512 + 1,769,472 + 512
        + upconv(256)
        + conv(256 + 128, 128)
        + bn(128)
        + conv(128, 128)
        + bn(128)
        # 524,544 + 1,327,104 + 256 + 442,368 + 256
        + upconv(128)
        + conv(128 + 64, 64)
        + bn(64)
        + conv(64, 64)
        + bn(64)
        # 131,200 + 331,776 + 128 + 110,592 + 128
        + 64 * 3
        + 3  # final 1x1x1 convolution: 195
    )
    assert expected == 19_073_187
    assert n_params(net) == expected
    outs = [
        m.out_channels
        for m in net.modules()
        if isinstance(m, nn.Conv3d) and m.kernel_size == (3, 3, 3)
    ]
    assert outs == [32, 64, 64, 128, 128, 256, 256, 512, 64, 64, 128, 128, 256, 256]
    ups = [
        (m.in_channels, m.out_channels) for m in net.modules() if isinstance(m, nn.ConvTranspose3d)
    ]
    assert ups == [(128, 128), (256, 256), (512, 512)]
    assert sum(isinstance(m, nn.BatchNorm3d) for m in net.modules()) == 14


# ------------------------------------------------------------------------------------------
# Shapes, gradients, configuration errors
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("up", ["transpose", "bilinear"])
@pytest.mark.parametrize("norm", [None, "batch", "instance"])
def test_output_shapes(dims, padding, up, norm):
    # depth 2: valid inputs are 4t + 12 (t >= 8), giving 4t - 28; same inputs are multiples of 4.
    sizes = (
        {2: (44, 52), 3: (44, 48, 52)}[dims]
        if padding == "valid"
        else {2: (8, 12), 3: (8, 12, 4)}[dims]
    )
    expected = tuple(s - 40 for s in sizes) if padding == "valid" else sizes
    net = UNet(2, 3, base_channels=2, depth=2, padding=padding, dims=dims, norm=norm, up=up)
    assert net.output_size(sizes) == expected
    out = net(torch.randn(2, 2, *sizes))
    assert out.shape == (2, 3, *expected)


@pytest.mark.parametrize(
    "build",
    [
        lambda: UNet(1, 2, base_channels=4, depth=3),
        lambda: UNet(2, 3, base_channels=4, depth=2, padding="same", norm="batch", up="bilinear"),
        lambda: UNet(1, 2, base_channels=4, depth=2, norm="instance", dropout=0.2),
        lambda: UNet(1, 2, base_channels=2, depth=2, dims=3, padding="same", norm="batch"),
        lambda: unet3d(1, 3, base_channels=2),
        lambda: unet3d(1, 2, base_channels=2, up="bilinear", norm="instance"),
    ],
    ids=["valid", "same-bn-bilinear", "instance-dropout", "3d", "unet3d", "unet3d-bilinear"],
)
def test_every_parameter_gets_a_finite_gradient(build):
    torch.manual_seed(0)
    net = build().train()
    size = net.valid_input_size(4 if net.padding == "valid" else 16)
    x = torch.randn(2, net.in_channels, *size)
    out = net(x)
    assert torch.isfinite(out).all()
    (out * torch.randn_like(out)).sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    "padding, depth, size, suggestion",
    [
        ("valid", 4, (570, 570), "572x572"),
        ("valid", 4, (573, 572), "572x572"),
        ("valid", 4, (196, 188), "204x188"),  # 188 and 204 are equally near: the larger wins
        ("valid", 4, (100, 100), "188x188"),  # below the smallest valid tile
        ("same", 4, (100, 33), "112x48"),
        ("same", 4, (5, 16), "16x16"),
        ("same", 2, (6, 7), "8x8"),
    ],
)
def test_bad_sizes_name_the_fix(padding, depth, size, suggestion):
    net = UNet(1, 2, base_channels=2, depth=depth, padding=padding)
    msg = (
        f"input size {size[0]}x{size[1]} is not valid for this U-Net "
        f"(padding='{padding}', depth {depth}): use {suggestion}"
    )
    with pytest.raises(ValueError) as err:
        net.output_size(size)
    assert str(err.value) == msg
    with pytest.raises(ValueError, match="use " + suggestion):
        net(torch.zeros(1, 1, *size))
    fixed = tuple(int(s) for s in suggestion.split("x"))
    assert len(net.output_size(fixed)) == 2


def test_bad_size_message_3d():
    net = UNet(1, 2, base_channels=2, depth=3, dims=3, padding="same")
    with pytest.raises(ValueError, match=r"input size 8x9x20 .* depth 3\): use 8x16x24$"):
        net(torch.zeros(1, 1, 8, 9, 20))


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_valid_sizes_match_closed_form(depth):
    # Going back from a pooled length t through `depth` levels: input 2^d t + 4 (2^d - 1); the
    # bottleneck leaves t - 4 and every decoder level maps b to 2b - 4.
    g = 2**depth
    net = UNet(1, 2, base_channels=1, depth=depth)
    expected = {}
    for t in range(1, 601):
        b = t - 4
        ok = b > 0
        for _ in range(depth):
            b = 2 * b - 4
            ok = ok and b > 0
        if ok:
            expected[g * t + 4 * (g - 1)] = b
    for s in range(1, 600):
        if s in expected:
            assert net.output_size(s) == (expected[s], expected[s])
        else:
            with pytest.raises(ValueError):
                net.output_size(s)
    smallest = min(expected)
    assert net.valid_input_size(1) == (smallest, smallest)
    for want in (1, 17, 100, 388):
        got = net.valid_input_size(want)[0]
        assert got == min(s for s, o in expected.items() if o >= want)


@pytest.mark.parametrize(
    "depth, want, expected", [(4, 1, 16), (4, 16, 16), (4, 17, 32), (3, 100, 104)]
)
def test_valid_input_size_same_padding(depth, want, expected):
    net = UNet(1, 2, base_channels=1, depth=depth, padding="same")
    assert net.valid_input_size((want, want)) == (expected, expected)


def test_forward_matches_output_size_at_many_sizes():
    net = UNet(1, 1, base_channels=1, depth=3).eval()
    for size in [(100, 108), (108, 140), (116, 100)]:
        with torch.inference_mode():
            assert net(torch.zeros(1, 1, *size)).shape[2:] == net.output_size(size)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (
            {"padding": "full"},
            ValueError,
            r"padding must be one of \['valid', 'same'\], got 'full'",
        ),
        ({"dims": 4}, ValueError, "dims must be one of"),
        ({"norm": "group"}, ValueError, "norm must be one of"),
        ({"up": "nearest"}, ValueError, "up must be one of"),
        ({"depth": 0}, ValueError, "depth must be >= 1, got 0"),
        ({"base_channels": 2.5}, TypeError, "base_channels must be an integer, got float"),
        ({"dropout": 1.0}, ValueError, r"dropout must be a float in \[0, 1\), got 1.0"),
        ({"double_before_pool": 1}, TypeError, "double_before_pool must be a bool"),
    ],
)
def test_bad_options(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        UNet(1, 2, **kwargs)


def test_wrong_input_rank_or_channels():
    net = UNet(3, 2, base_channels=2, depth=2, padding="same")
    with pytest.raises(
        ValueError, match=r"input must be \(B, C, H, W\) with C = 3, got shape \(1, 1, 8, 8\)"
    ):
        net(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="input must be"):
        net(torch.zeros(3, 8, 8))


def test_dropout_acts_only_in_training():
    torch.manual_seed(0)
    net = UNet(1, 2, base_channels=4, depth=2, padding="same", dropout=0.5)
    x = torch.randn(1, 1, 16, 16)
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(x), net(x))
    net.train()
    with torch.no_grad():
        assert not torch.equal(net(x), net(x))


# ------------------------------------------------------------------------------------------
# Blocks
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, size, expected",
    [
        ((1, 2, 10, 12), (6, 8), (slice(2, 8), slice(2, 10))),
        (
            (1, 2, 10, 12),
            (7, 12),
            (slice(1, 8), slice(0, 12)),
        ),  # odd difference: extra pixel at the end
        ((2, 9, 7, 5), (3, 3, 3), (slice(3, 6), slice(2, 5), slice(1, 4))),
    ],
)
def test_center_crop(shape, size, expected):
    x = torch.arange(int(np.prod(shape))).reshape(shape)
    got = center_crop(x, size)
    lead = (slice(None),) * (len(shape) - len(size))
    assert torch.equal(got, x[lead + expected])


def test_center_crop_rejects_growth():
    with pytest.raises(
        ValueError, match=r"size must be within the input's spatial size \(4, 4\), got \(5, 4\)"
    ):
        center_crop(torch.zeros(1, 1, 4, 4), (5, 4))


def test_layer_helpers_pick_classes_by_dims():
    assert conv_nd(2) is nn.Conv2d and conv_nd(3) is nn.Conv3d
    assert isinstance(norm_nd("batch", 3, 4), nn.BatchNorm3d)
    inorm = norm_nd("instance", 2, 4)
    assert isinstance(inorm, nn.InstanceNorm2d) and inorm.affine
    assert isinstance(norm_nd(None, 2, 4), nn.Identity)
    with pytest.raises(ValueError, match="dims must be 2 or 3, got 1"):
        conv_nd(1)


def test_blocks_compute_what_the_figure_says():
    torch.manual_seed(0)
    block = ConvBlock(2, 3, dims=2, padding="valid")
    x = torch.randn(1, 2, 9, 9)
    c1, c2 = block[0], block[3]
    expected = F.relu(F.conv2d(F.relu(F.conv2d(x, c1.weight, c1.bias)), c2.weight, c2.bias))
    torch.testing.assert_close(block(x), expected)
    down = Down(3, 4, dims=2, padding="same")
    y = torch.randn(1, 3, 8, 8)
    torch.testing.assert_close(down(y), down[1](F.max_pool2d(y, 2)))
    up = Up(4, 2, 2, dims=2, padding="valid")
    deep, skip = torch.randn(1, 4, 3, 3), torch.randn(1, 2, 10, 10)
    upsampled = up.up(deep)
    assert upsampled.shape == (1, 2, 6, 6)
    torch.testing.assert_close(
        up(deep, skip), up.conv(torch.cat([skip[..., 2:8, 2:8], upsampled], 1))
    )


# ------------------------------------------------------------------------------------------
# Overlap-tile prediction
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n, before, total", [(4, 6, 20), (1, 3, 7), (5, 0, 5), (7, 20, 60)])
def test_reflect_index_matches_numpy(n, before, total):
    expected = np.pad(np.arange(n), (before, total - n - before), mode="reflect")
    assert np.array_equal(_reflect_index(n, before, total), expected)


@pytest.fixture(scope="module")
def tile_net():
    torch.manual_seed(0)
    return strong_init(UNet(2, 3, base_channels=2, depth=3)).eval()


@pytest.mark.parametrize("size", [(37, 29), (45, 41), (1, 5), (60, 61)])
def test_overlap_tile_output_has_input_size(tile_net, size):
    out = overlap_tile_predict(tile_net, torch.randn(2, *size), tile_output=20)
    assert out.shape == (3, *size)
    batched = overlap_tile_predict(tile_net, torch.randn(2, 2, *size), tile_output=(20, 12))
    assert batched.shape == (2, 3, *size)


def test_overlap_tile_single_tile_equals_forward_on_mirrored_image(tile_net):
    image = torch.randn(2, 30, 26)
    out = overlap_tile_predict(tile_net, image, tile_output=(36, 28))
    # One tile: output 36x28 needs a 124x116 input, i.e. 44 mirrored pixels before each axis.
    half = (tile_net.valid_input_size(36)[0] - 36) // 2
    assert half == 44
    padded = np.pad(
        image.numpy(), ((0, 0), (half, 124 - 30 - half), (half, 116 - 26 - half)), mode="reflect"
    )
    with torch.inference_mode():
        whole = tile_net(torch.from_numpy(padded)[None])[0]
    assert torch.equal(out, whole[:, :30, :26])


def test_overlap_tile_seams_are_exact(tile_net):
    image = torch.randn(2, 43, 37)
    ref = overlap_tile_predict(tile_net, image, tile_output=(44, 44))  # one tile
    for tile in [12, (20, 28), 36]:
        got = overlap_tile_predict(tile_net, image, tile_output=tile, batch_size=3)
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)
    assert ref.abs().max() > 1  # the network is far from constant


def test_shifts_off_the_pooling_grid_change_the_output(tile_net):
    # Why tiles advance by multiples of 2**depth: a shift by 4 (depth 3, grid 8) is not exact.
    x = torch.randn(1, 2, 108, 108)
    with torch.inference_mode():
        a = tile_net(x[..., :100, :100])
        b = tile_net(x[..., 4:104, 4:104])
        c = tile_net(x[..., 8:108, 8:108])
    torch.testing.assert_close(a[..., 8:, 8:], c[..., :-8, :-8], rtol=0, atol=1e-5)
    assert (a[..., 4:, 4:] - b[..., :-4, :-4]).abs().max() > 0.1


def test_overlap_tile_3d_and_default_tile():
    torch.manual_seed(1)
    net = strong_init(UNet(1, 2, base_channels=2, depth=2, dims=3)).eval()
    vol = torch.randn(1, 13, 9, 11)
    ref = overlap_tile_predict(net, vol)  # default: one tile covers the volume
    assert ref.shape == (2, 13, 9, 11)
    torch.testing.assert_close(
        overlap_tile_predict(net, vol, tile_output=(4, 8, 4)), ref, rtol=0, atol=1e-5
    )


def test_overlap_tile_restores_training_mode(tile_net):
    tile_net.train()
    try:
        overlap_tile_predict(tile_net, torch.randn(2, 10, 10), tile_output=12)
        assert tile_net.training
    finally:
        tile_net.eval()


def test_overlap_tile_errors(tile_net):
    with pytest.raises(
        ValueError,
        match=r"tile_output must be valid output sizes of at least 8 .* got 13x4: use 20x12",
    ):
        overlap_tile_predict(tile_net, torch.randn(2, 30, 30), tile_output=(13, 4))
    with pytest.raises(ValueError, match="model must have padding='valid', got padding='same'"):
        overlap_tile_predict(UNet(1, 2, base_channels=2, padding="same"), torch.randn(1, 32, 32))
    with pytest.raises(TypeError, match="model must be a UNet"):
        overlap_tile_predict(nn.Conv2d(1, 1, 1), torch.randn(1, 8, 8))
    with pytest.raises(ValueError, match="image must have shape"):
        overlap_tile_predict(tile_net, torch.randn(8, 8))


# ------------------------------------------------------------------------------------------
# Weight map (eq. 2)
# ------------------------------------------------------------------------------------------


def brute_force_weight_map(inst, w0=10.0, sigma=5.0, class_balance=True):
    """Full distance transform per object, sort, take the two smallest: the obvious way."""
    ids = [i for i in np.unique(inst) if i != 0]
    bg = inst == 0
    n = inst.size
    wc = np.ones(inst.shape)
    if class_balance and bg.any() and (~bg).any():
        wc = np.where(bg, n / (2 * bg.sum()), n / (2 * (~bg).sum()))
    if len(ids) < 2:
        return wc
    d = np.sort(np.stack([ndi.distance_transform_edt(inst != i) for i in ids]), axis=0)
    return wc + np.where(bg, w0 * np.exp(-((d[0] + d[1]) ** 2) / (2 * sigma**2)), 0.0)


def test_weight_map_hand_computed_1d():
    inst = np.array([[1, 0, 0, 0, 2, 2, 0, 0]], dtype=np.int32)
    # Objects: 3 pixels of 8, background 5: w_c = 8 / (2 * 3) inside, 8 / (2 * 5) outside.
    # Background columns: (d1, d2) = (1, 3), (2, 2), (1, 3), (1, 6), (2, 7).
    b = lambda s: 10 * np.exp(-(s**2) / 50)  # noqa: E731
    expected = [4 / 3, 0.8 + b(4), 0.8 + b(4), 0.8 + b(4), 4 / 3, 4 / 3, 0.8 + b(7), 0.8 + b(9)]
    got = unet_weight_map(inst)
    assert got.dtype == np.float32 and got.shape == inst.shape
    np.testing.assert_allclose(got[0], expected, rtol=1e-6)
    no_balance = unet_weight_map(inst, class_balance=False, w0=2.0, sigma=1.0)
    b1 = lambda s: 2 * np.exp(-(s**2) / 2)  # noqa: E731
    np.testing.assert_allclose(
        no_balance[0], [1, 1 + b1(4), 1 + b1(4), 1 + b1(4), 1, 1, 1 + b1(7), 1 + b1(9)], rtol=1e-6
    )


def test_weight_map_highest_between_touching_cells():
    inst = np.zeros((40, 60), dtype=np.int32)
    inst[10:30, 8:29] = 3
    inst[10:30, 30:52] = 9  # one background column (29) between the cells
    w = unet_weight_map(inst)
    gap = w[10:30, 29]
    assert np.all(gap == w.max())
    assert w.argmax() // 60 in range(10, 30) and w.argmax() % 60 == 29
    # Far from both cells (> 30 pixels from the nearest) only w_c remains.
    n_bg = (inst == 0).sum()
    assert np.allclose(w[inst > 0], inst.size / (2 * (inst > 0).sum()))
    assert abs(w[0, 0] - inst.size / (2 * n_bg)) < 1e-6


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("shape", [(70, 90), (24, 30, 20)])
def test_weight_map_matches_brute_force(seed, shape):
    rng = np.random.default_rng(seed)
    blobs = ndi.gaussian_filter(rng.random(shape), 2) > 0.52
    inst, n = ndi.label(blobs)
    assert n >= 5
    inst = (inst * 7).astype(np.int64)  # ids need not be contiguous
    got = unet_weight_map(inst, sigma=3.0 + seed)
    np.testing.assert_allclose(
        got, brute_force_weight_map(inst, sigma=3.0 + seed), rtol=1e-6, atol=1e-6
    )


def test_weight_map_on_real_nuclei():
    tifffile = pytest.importorskip("tifffile")
    path = DATA / "dsb2018_nuclei" / "masks" / "img2d.tif"
    if not path.exists():
        pytest.skip(f"{path} not found")
    inst = tifffile.imread(path).astype(np.int32)[:200, :200]
    np.testing.assert_allclose(
        unet_weight_map(inst), brute_force_weight_map(inst), rtol=1e-6, atol=1e-6
    )


@pytest.mark.parametrize(
    "inst, expected",
    [
        (np.zeros((4, 5), np.int32), np.ones((4, 5))),  # no object: only one class
        (np.full((4, 5), 2, np.int32), np.ones((4, 5))),  # all object
        (
            np.pad(np.ones((2, 2), np.int32), 1),
            np.where(np.pad(np.ones((2, 2)), 1) > 0, 2.0, 16 / 24),
        ),
    ],
)
def test_weight_map_fewer_than_two_objects(inst, expected):
    np.testing.assert_allclose(unet_weight_map(inst), expected, rtol=1e-6)


def test_weight_map_errors():
    with pytest.raises(TypeError, match="instances must be an integer array, got dtype float64"):
        unet_weight_map(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="instances must be >= 0, got minimum -1"):
        unet_weight_map(-np.ones((3, 3), np.int32))
    with pytest.raises(ValueError, match="sigma must be > 0, got 0"):
        unet_weight_map(np.zeros((3, 3), np.int32), sigma=0)
    with pytest.raises(ValueError, match="instances must be 2D or 3D"):
        unet_weight_map(np.zeros(3, np.int32))


@pytest.mark.parametrize("seed", [0, 1])
def test_label_weight_map_matches_brute_force_on_components(seed):
    """Objects are the 4-connected components of each class, computed here with ndimage alone;
    the ignore label is no object."""
    rng = np.random.default_rng(seed)
    labels = (ndi.gaussian_filter(rng.random((60, 70)), 2) > 0.5).astype(np.int64)
    labels[ndi.gaussian_filter(rng.random((60, 70)), 2) > 0.53] = 2
    labels[:5, :5] = 7  # ignore
    inst = np.zeros(labels.shape, np.int64)
    for c in (1, 2):
        comp, n = ndi.label(labels == c)
        inst[comp > 0] = comp[comp > 0] + 100 * c
    assert len(np.unique(inst)) > 6
    got = label_weight_map(labels, sigma=4.0, class_balance=False, ignore_index=7)
    expected = brute_force_weight_map(inst, sigma=4.0, class_balance=False)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    # a negative ignore label (padding, e.g. -1) is no object either
    negative = np.where(labels == 7, -1, labels)
    np.testing.assert_array_equal(
        label_weight_map(negative, sigma=4.0, class_balance=False, ignore_index=-1), got
    )


def test_label_weight_map_connectivity():
    """Two pixels touching at a corner are two objects with face connectivity (the default: the
    background corners between them get the border term), one object with full connectivity."""
    labels = np.array([[1, 0], [0, 1]])
    separate = label_weight_map(labels, class_balance=False)
    # each background pixel is 1 from both objects: d1 + d2 = 2
    expected = np.array([[1.0, 1 + 10 * np.exp(-4 / 50)], [1 + 10 * np.exp(-4 / 50), 1.0]])
    np.testing.assert_allclose(separate, expected, rtol=1e-6)
    np.testing.assert_allclose(label_weight_map(labels, class_balance=False, connectivity=2), 1)


def test_label_weight_map_errors():
    with pytest.raises(TypeError, match="labels must be an integer array, got dtype float64"):
        label_weight_map(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="labels must be >= 0"):
        label_weight_map(-np.ones((3, 3), np.int64))


def test_label_weight_map_on_isbi_membranes():
    """On an EM slice every membrane separates two cells: the border term lights it up, while
    cell interiors keep weight 1."""
    from PIL import Image

    path = DATA / "isbi2012" / "labels" / "1.png"
    if not path.exists():
        pytest.skip(f"{path} not found")
    labels = (np.asarray(Image.open(path))[:128, :128] > 127).astype(np.int64)
    w = label_weight_map(labels, class_balance=False)
    assert np.all(w[labels == 1] == 1)
    membrane = w[labels == 0]
    assert np.median(membrane) > 5  # membranes are a few pixels wide: d1 + d2 is small
    inst, n = ndi.label(labels == 1)
    np.testing.assert_allclose(w, brute_force_weight_map(inst, class_balance=False), rtol=1e-6)


# ------------------------------------------------------------------------------------------
# Real data: the networks can learn (slow)
# ------------------------------------------------------------------------------------------


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft Dice over foreground classes (Milletari et al. 2016), written out for the test."""
    probs = logits.softmax(1)[:, 1:]
    onehot = F.one_hot(target, logits.shape[1]).movedim(-1, 1)[:, 1:].float()
    axes = tuple(range(2, logits.ndim))
    inter = (probs * onehot).sum(axes)
    return 1 - ((2 * inter + 1) / (probs.sum(axes) + onehot.sum(axes) + 1)).mean()


def hard_dice(pred: torch.Tensor, target: torch.Tensor, cls: int) -> float:
    p, t = pred == cls, target == cls
    return 2 * (p & t).sum().item() / (p.sum().item() + t.sum().item())


def overfit(net, x, y, *, lr, max_steps, check_every, until):
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for step in range(1, max_steps + 1):
        net.train()
        logits = net(x)
        loss = F.cross_entropy(logits, y) + dice_loss(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % check_every == 0 or step == max_steps:
            net.eval()
            with torch.no_grad():
                pred = net(x).argmax(1)
            if until(pred):
                return pred, step
    return pred, max_steps


@pytest.mark.slow
def test_unet_overfits_an_isbi_tile():
    from PIL import Image

    folder = DATA / "isbi2012"
    if not (folder / "images" / "1.png").exists():
        pytest.skip(f"{folder} not found")
    torch.manual_seed(0)
    image = np.asarray(Image.open(folder / "images" / "1.png"), dtype=np.float32)[:128, :128]
    label = np.asarray(Image.open(folder / "labels" / "1.png"))[:128, :128]
    x = torch.from_numpy((image - image.mean()) / image.std())[None, None]  # (1, 1, 128, 128)
    y = torch.from_numpy((label == 255).astype(np.int64))[None]  # 255 = cell interior = class 1
    net = UNet(1, 2, base_channels=16, padding="same", norm="batch")
    pred, _ = overfit(
        net,
        x,
        y,
        lr=1e-2,
        max_steps=150,
        check_every=10,
        until=lambda p: hard_dice(p, y, 1) > 0.95 and hard_dice(p, y, 0) > 0.85,
    )
    # Cells cover ~77% of the tile, so "all cell" already scores 0.87: also ask for the membranes.
    assert hard_dice(pred, y, 1) > 0.9
    assert hard_dice(pred, y, 0) > 0.75


@pytest.mark.slow
def test_unet3d_overfits_a_hippocampus_volume():
    nib = pytest.importorskip("nibabel")
    folder = DATA / "hippocampus"
    path = folder / "images" / "hippocampus_003.nii.gz"
    if not path.exists():
        pytest.skip(f"{path} not found")
    torch.manual_seed(0)
    image = np.asarray(nib.load(path).dataobj, dtype=np.float32)
    label = np.rint(np.asarray(nib.load(folder / "labels" / path.name).dataobj)).astype(np.int64)
    assert set(np.unique(label)) == {0, 1, 2}
    # A 24x48x32 box (multiples of 8 for depth 3) that holds the whole hippocampus.
    box = (slice(5, 29), slice(3, 51), slice(2, 34))
    assert (label > 0).sum() == (label[box] > 0).sum()
    image, label = image[box], label[box]
    x = torch.from_numpy((image - image.mean()) / image.std())[None, None]  # (1, 1, 24, 48, 32)
    y = torch.from_numpy(label)[None]  # (1, 24, 48, 32)
    net = unet3d(1, 3, base_channels=8)
    foreground_dice = lambda p: hard_dice((p > 0).long(), (y > 0).long(), 1)  # noqa: E731
    pred, _ = overfit(
        net, x, y, lr=1e-2, max_steps=120, check_every=5, until=lambda p: foreground_dice(p) > 0.92
    )
    assert foreground_dice(pred) > 0.9


def test_pools_per_axis_pool_a_coarse_axis_later():
    """nnU-Net's anisotropic pooling: the last axis is pooled from the second level on."""
    net = UNet(
        1,
        3,
        base_channels=4,
        depth=3,
        padding="same",
        dims=3,
        pools=[[2, 2, 1], [2, 2, 2], [2, 2, 2]],
    )
    assert net.multiples == (8, 8, 4)
    x = torch.zeros(1, 1, 16, 24, 8)
    assert net(x).shape == (1, 3, 16, 24, 8)
    with pytest.raises(ValueError, match="use 16x24x8"):
        net(torch.zeros(1, 1, 16, 24, 6))
    # the default is 2 on every axis: the same parameters as without pools
    plain = UNet(1, 3, base_channels=4, depth=2, padding="same", dims=3)
    same = UNet(1, 3, base_channels=4, depth=2, padding="same", dims=3, pools=[[2] * 3] * 2)
    assert {k: v.shape for k, v in plain.state_dict().items()} == {
        k: v.shape for k, v in same.state_dict().items()
    }


@pytest.mark.parametrize(
    ("pools", "padding", "match"),
    [
        ([[2, 2, 1]], "same", "2 levels"),
        ([[2, 2], [2, 2]], "same", "2 levels of 3"),
        ([[2, 2, 3], [2, 2, 2]], "same", "factors 1 or 2"),
        ([[2, 2, 1], [2, 2, 2]], "valid", "padding='same'"),
    ],
)
def test_pools_are_checked(pools, padding, match):
    with pytest.raises(ValueError, match=match):
        UNet(1, 2, depth=2, padding=padding, dims=3, pools=pools)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slice_axis_runs_the_2d_network_on_each_slice(axis):
    """A slice-wise U-Net is the 2D U-Net, same weights, applied to each slice in turn."""
    torch.manual_seed(0)
    sliced = UNet(2, 3, base_channels=4, depth=2, padding="same", dims=3, slice_axis=axis)
    flat = UNet(2, 3, base_channels=4, depth=2, padding="same", dims=2)
    flat.load_state_dict(sliced.state_dict())  # same names and shapes: a 2D network
    sliced.eval(), flat.eval()
    shape = [8, 8, 8]
    shape[axis] = 5  # any length: the axis is never pooled
    x = torch.randn(2, 2, *shape)
    with torch.no_grad():
        y = sliced(x)
        ref = torch.stack([flat(x.select(2 + axis, k)) for k in range(5)], dim=2 + axis)
    assert y.shape == (2, 3, *shape)
    torch.testing.assert_close(y, ref, rtol=0, atol=1e-6)
    assert sliced.multiples == tuple(1 if a == axis else 4 for a in range(3))


def test_slice_axis_keeps_anisotropic_pools_in_plane():
    net = UNet(1, 2, base_channels=4, depth=2, padding="same", dims=3, slice_axis=2,
               pools=[[2, 1, 1], [2, 2, 1]])  # fmt: skip
    assert net.multiples == (4, 2, 1)
    assert net(torch.zeros(1, 1, 8, 6, 3)).shape == (1, 2, 8, 6, 3)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"dims": 2, "padding": "same", "slice_axis": 0}, "slice_axis needs dims=3"),
        ({"dims": 3, "padding": "valid", "slice_axis": 0}, "slice_axis needs dims=3"),
        ({"dims": 3, "padding": "same", "slice_axis": 3}, "slice_axis must be one of"),
        (
            {"dims": 3, "padding": "same", "slice_axis": 0, "pools": [[2, 2, 2]] * 2},
            "factor 1 on slice_axis 0",
        ),
    ],
)
def test_slice_axis_refuses_what_it_cannot_do(kwargs, message):
    with pytest.raises(ValueError, match=message):
        UNet(1, 2, base_channels=4, depth=2, **kwargs)
