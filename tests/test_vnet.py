"""Tests for segloc.nn.vnet: parameter counts derived from the paper's Fig. 1, a functional
re-implementation of the forward pass as oracle, shapes, gradients, errors, and a slow overfit
of one MSD hippocampus volume."""

from __future__ import annotations

import doctest
import os
from pathlib import Path

import monai.networks.nets
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segloc.nn import vnet
from segloc.nn.vnet import VNet

DATA = Path(os.environ.get("SEGLOC_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(autouse=True)
def _one_thread():
    """Run each test on one thread: the suite shares 2 cores, and with several busy processes
    PyTorch's two-thread kernels wait on each other (tiny models got 20x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def prelu_count(module: torch.nn.Module) -> int:
    return sum(count(m) for m in module.modules() if isinstance(m, torch.nn.PReLU))


def conv(c_in: int, c_out: int, k: int, dims: int = 3) -> int:
    """Weights + biases of a k^dims convolution."""
    return c_in * c_out * k**dims + c_out


# ------------------------------------------------------------------------------------------
# parameter counts
# ------------------------------------------------------------------------------------------

# The paper's V-Net (Fig. 1), in_channels=1, num_classes=2, biases included, PReLU excluded:
#   left stages, 5x5x5 convs (125 taps):
#     16:  1 conv  1 -> 16          1*16*125 + 16            =      2,016
#     32:  2 convs 32 -> 32         2 * (32*32*125 + 32)     =    256,064
#     64:  3 convs                  3 * (64*64*125 + 64)     =  1,536,192
#     128: 3 convs                  3 * (128*128*125 + 128)  =  6,144,384
#     256: 3 convs                  3 * (256*256*125 + 256)  = 24,576,768
#   down-convs 2x2x2 (8 taps): 16*32*8+32 + 32*64*8+64 + 64*128*8+128 + 128*256*8+256
#                             = 4,128 + 16,448 + 65,664 + 262,400          =    348,640
#   up-convs 2x2x2: 256->128, 256->64, 128->32, 64->16
#                             = 262,272 + 131,136 + 32,800 + 8,208         =    434,416
#   right stages after concatenation: 3 convs at 256, 3 at 128, 2 at 64, 1 at 32
#                             = 24,576,768 + 6,144,384 + 1,024,128 + 128,032 = 31,873,312
#   final 1x1x1 conv 32 -> 2: 32*2 + 2                                     =         66
#   total = 2,016 + 256,064 + 1,536,192 + 6,144,384 + 24,576,768 + 348,640 + 434,416
#           + 31,873,312 + 66                                              = 65,171,858
# (derived from the paper's Fig. 1, which prints no count). PReLU slopes: one per channel of each
# PReLU = left 16*1 + 32*2 + 64*3 + 128*3 + 256*3 = 1,424, after down-convs 32+64+128+256 = 480,
# after up-convs 128+64+32+16 = 240, right 256*3 + 128*3 + 64*2 + 32*1 = 1,312: 3,456 in all;
# shared: one per PReLU layer, 12 + 4 + 4 + 9 = 29.
PAPER_WITHOUT_PRELU = 65_171_858
PAPER_PRELU_CHANNEL = 3_456
PAPER_PRELU_SHARED = 29


@pytest.fixture(scope="module")
def paper_vnet() -> VNet:
    torch.manual_seed(0)
    return VNet(1, 2)


def test_paper_parameter_count(paper_vnet):
    assert count(paper_vnet) - prelu_count(paper_vnet) == PAPER_WITHOUT_PRELU
    assert prelu_count(paper_vnet) == PAPER_PRELU_CHANNEL
    assert count(paper_vnet) == 65_175_314
    # it runs: the smallest valid input (one voxel at the bottom)
    with torch.no_grad():
        out = paper_vnet(torch.randn(1, 1, 16, 16, 16))
    assert out.shape == (1, 2, 16, 16, 16)
    assert torch.isfinite(out).all()


def test_shared_prelu_count():
    net = VNet(1, 2, prelu="shared", base_channels=2)
    assert prelu_count(net) == PAPER_PRELU_SHARED


def expected_count(base: int, depth: int, c_in: int, k: int, dims: int, kernel: int = 5) -> int:
    """The same reading of Fig. 1 for any width and depth (no PReLU)."""
    w = [base * 2**level for level in range(depth + 1)]
    n = [min(level + 1, 3) for level in range(depth + 1)]
    total = conv(c_in, w[0], kernel, dims) + (n[0] - 1) * conv(w[0], w[0], kernel, dims)
    for level in range(1, depth + 1):
        total += conv(w[level - 1], w[level], 2, dims)  # down-conv
        total += n[level] * conv(w[level], w[level], kernel, dims)
    for level in range(depth):
        below = w[depth] if level == depth - 1 else 2 * w[level + 1]
        total += conv(below, w[level], 2, dims)  # up-conv
        total += n[level] * conv(2 * w[level], 2 * w[level], kernel, dims)
    return total + conv(2 * w[0], k, 1, dims)


@pytest.mark.parametrize(
    "base, depth, c_in, k, dims",
    [(16, 4, 1, 2, 3), (8, 4, 1, 3, 3), (4, 2, 2, 1, 3), (8, 3, 4, 5, 2), (6, 1, 3, 2, 2)],
)
def test_parameter_count_formula(base, depth, c_in, k, dims):
    assert expected_count(16, 4, 1, 2, 3) == PAPER_WITHOUT_PRELU
    if base >= 16:
        return  # the paper size is built once, in test_paper_parameter_count
    net = VNet(c_in, k, base_channels=base, depth=depth, dims=dims)
    assert count(net) - prelu_count(net) == expected_count(base, depth, c_in, k, dims)


def test_monai_vnet_is_smaller():
    # the docstring's comparison: MONAI follows the Caffe prototxt's convolution counts
    m = monai.networks.nets.VNet(spatial_dims=3, in_channels=1, out_channels=2)
    assert count(m) == 45_597_898


# ------------------------------------------------------------------------------------------
# the forward pass against a functional re-implementation
# ------------------------------------------------------------------------------------------


def reference_forward(net: VNet, x: torch.Tensor) -> torch.Tensor:
    """V-Net written out with torch.nn.functional from the paper's description, reading the
    weights by name (norm=None)."""
    sd = {k: v for k, v in net.state_dict().items()}
    dims = net.dims
    convf = F.conv3d if dims == 3 else F.conv2d
    upf = F.conv_transpose3d if dims == 3 else F.conv_transpose2d

    def prelu(t, name):
        return F.prelu(t, sd[name])

    def stage(prefix, inp, residual):
        n = len({k.split(".")[3] for k in sd if k.startswith(prefix + ".convs.")})
        t = inp
        for i in range(n):
            t = convf(
                t, sd[f"{prefix}.convs.{i}.0.weight"], sd[f"{prefix}.convs.{i}.0.bias"], padding=2
            )
            if i < n - 1:
                t = prelu(t, f"{prefix}.convs.{i}.2.weight")
        return prelu(t + residual, f"{prefix}.act.weight")

    reps = net.base_channels // net.in_channels
    skips = [stage("encoders.0", x, torch.cat([x] * reps, dim=1))]
    for level in range(1, net.depth + 1):
        d = convf(
            skips[-1], sd[f"downs.{level - 1}.0.weight"], sd[f"downs.{level - 1}.0.bias"], stride=2
        )
        d = prelu(d, f"downs.{level - 1}.2.weight")
        skips.append(stage(f"encoders.{level}", d, d))
    y = skips.pop()
    for i in range(net.depth):
        u = upf(y, sd[f"ups.{i}.0.weight"], sd[f"ups.{i}.0.bias"], stride=2)
        u = prelu(u, f"ups.{i}.2.weight")
        y = torch.cat([u, skips.pop()], dim=1)
        y = stage(f"decoders.{i}", y, y)
    return convf(y, sd["head.weight"], sd["head.bias"])


@pytest.mark.parametrize(
    "c_in, base, depth, dims, shape, prelu",
    [
        (1, 4, 2, 3, (8, 12, 4), "channel"),
        (2, 4, 3, 3, (8, 8, 16), "shared"),
        (3, 6, 2, 2, (12, 8), "channel"),
    ],
)
def test_forward_matches_functional_reference(c_in, base, depth, dims, shape, prelu):
    torch.manual_seed(0)
    net = VNet(c_in, 3, base_channels=base, depth=depth, dims=dims, prelu=prelu)
    # random PReLU slopes, so that a slope read from the wrong layer shows
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.PReLU):
                m.weight.uniform_(-0.5, 0.5)
    x = torch.randn(2, c_in, *shape, dtype=torch.float64)
    net = net.double()
    torch.testing.assert_close(net(x), reference_forward(net, x))


def test_first_stage_residual_repeats_the_input():
    # with the first stage's convolution zeroed, its output is PReLU(input repeated)
    net = VNet(2, 1, base_channels=6, depth=1)
    with torch.no_grad():
        net.encoders[0].convs[0][0].weight.zero_()
        net.encoders[0].convs[0][0].bias.zero_()
        net.encoders[0].act.weight.fill_(1.0)  # identity PReLU
    x = torch.randn(1, 2, 4, 4, 2)
    out = net.encoders[0](x, x.repeat(1, 3, 1, 1, 1))
    expected = torch.cat([x[:, [0]], x[:, [1]]] * 3, dim=1)  # channels 0, 1, 0, 1, 0, 1
    torch.testing.assert_close(out, expected)


# ------------------------------------------------------------------------------------------
# shapes, gradients, options, errors
# ------------------------------------------------------------------------------------------


def test_paper_input_size_keeps_size():
    # the paper's 128x128x64 input, on a narrow model (the paper-size forward pass would need
    # ~100 GFLOP); the size rules do not depend on the width
    net = VNet(1, 2, base_channels=2)
    with torch.no_grad():
        out = net(torch.randn(1, 1, 128, 128, 64))
    assert out.shape == (1, 2, 128, 128, 64)


@pytest.mark.parametrize("norm", [None, "batch", "instance"])
@pytest.mark.parametrize("dims", [2, 3])
def test_every_parameter_gets_a_gradient(norm, dims):
    torch.manual_seed(0)
    net = VNet(1, 3, base_channels=4, depth=2, dims=dims, norm=norm)
    x = torch.randn(2, 1, *(8,) * dims)
    net(x).square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_norm_removes_conv_bias():
    net = VNet(1, 2, base_channels=4, depth=1, norm="batch")
    assert net.encoders[0].convs[0][0].bias is None
    assert net.head.bias is not None  # the output convolution is not normalised


@pytest.mark.parametrize(
    "shape, message",
    [
        ((1, 1, 100, 100, 64), "input size 100x100x64 is not divisible by 16: pad to 112x112x64"),
        ((1, 1, 16, 16, 8), "input size 16x16x8 is not divisible by 16: pad to 16x16x16"),
        ((1, 1, 16, 16), r"x must be 5D \(B, C, D, H, W\), got shape \(1, 1, 16, 16\)"),
        ((1, 2, 16, 16, 16), "x must have 1 channels"),
    ],
)
def test_bad_inputs(shape, message):
    net = VNet(1, 2, base_channels=2)
    with pytest.raises(ValueError, match=message):
        net(torch.zeros(shape))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(in_channels=3), "base_channels must be a multiple of in_channels"),
        (dict(prelu="elu"), "prelu must be one of"),
        (dict(norm="group"), "norm must be one of"),
        (dict(depth=0), "depth must be >= 1"),
        (dict(dims=1), "dims must be one of"),
        (dict(kernel_size=4), "kernel_size must be an odd positive int"),
    ],
)
def test_bad_arguments(kwargs, message):
    args = dict(in_channels=1, num_classes=2, base_channels=8) | kwargs
    c_in, k = args.pop("in_channels"), args.pop("num_classes")
    with pytest.raises(ValueError, match=message):
        VNet(c_in, k, **args)


def test_doctests():
    result = doctest.testmod(vnet, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# ------------------------------------------------------------------------------------------
# real data
# ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_narrow_vnet_overfits_one_hippocampus_volume():
    nib = pytest.importorskip("nibabel")
    image_path = DATA / "hippocampus" / "images" / "hippocampus_003.nii.gz"
    if not image_path.exists():
        pytest.skip(f"{image_path} not found")
    from segloc.nn.losses import DiceLoss

    image = np.asarray(nib.load(image_path).dataobj, dtype=np.float32)
    labels = np.asarray(nib.load(DATA / "hippocampus" / "labels" / image_path.name).dataobj)
    truth = labels > 0  # anterior (1) + posterior (2)
    image = (image - image.mean()) / image.std()
    pad = [(0, -s % 16) for s in image.shape]  # (34, 52, 35) -> (48, 64, 48)
    x = torch.from_numpy(np.pad(image, pad))[None, None]  # (1, 1, D, H, W)
    y = torch.from_numpy(np.pad(truth, pad))[None, None].float()

    # instance norm: without normalisation this 21-layer residual net diverges at useful rates
    torch.manual_seed(0)
    net = VNet(1, 1, base_channels=8, norm="instance")
    # channels-last makes CPU conv3d backward ~5x faster (oneDNN)
    net = net.to(memory_format=torch.channels_last_3d)
    x = x.contiguous(memory_format=torch.channels_last_3d)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    loss_fn = DiceLoss("binary", squared=True)  # the paper's Dice loss
    best = 0.0
    # about 30 steps reach 0.9 (1-3 s each on one busy core)
    for _ in range(60):
        opt.zero_grad()
        out = net(x)
        loss_fn(out, y).backward()
        opt.step()
        # instance norm has no running statistics: the training output is the eval output
        pred = out.detach() > 0
        best = max(best, float(2 * (pred & (y > 0)).sum() / (pred.sum() + (y > 0).sum())))
        if best > 0.9:
            break
    assert best > 0.9
