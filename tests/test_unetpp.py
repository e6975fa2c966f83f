"""Tests for segloc.nn.unetpp: the nested-node equation against a recursive oracle, parameter
counts derived by hand, deep supervision and pruning, shapes, gradients, errors, and a slow
overfit of an ISBI 2012 tile."""

from __future__ import annotations

import copy
import doctest
import functools
import os
from pathlib import Path

import monai.networks.nets
import numpy as np
import pytest
import torch

from segloc.nn import unetpp
from segloc.nn.unetpp import UNetPlusPlus

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


# ------------------------------------------------------------------------------------------
# parameter counts
# ------------------------------------------------------------------------------------------

# Paper configuration: filters f = 32, 64, 128, 256, 512, in_channels=1, one output channel,
# no normalisation, transposed-convolution U. A block H with c_in inputs and width f holds
# 9 f c_in + f + 9 f f + f; node x^{i,j} (j > 0) takes j*f_i + f_i channels (U maps f_{i+1} to
# f_i with 4 f_{i+1} f_i + f_i parameters).
#   encoder x^{0..4,0}: H(1,32) 9,568 + H(32,64) 55,424 + H(64,128) 221,440
#                       + H(128,256) 885,248 + H(256,512) 3,539,968            = 4,711,648
#   level 0, x^{0,1..4} (inputs 64, 96, 128, 160): 27,712 + 36,928 + 46,144 + 55,360
#                       + 4 up-convs 64->32 of 8,224                             =   199,040
#   level 1, x^{1,1..3} (inputs 128, 192, 256): 110,720 + 147,584 + 184,448
#                       + 3 up-convs 128->64 of 32,832                           =   541,248
#   level 2, x^{2,1..2} (inputs 256, 384): 442,624 + 590,080 + 2 x 131,200      = 1,295,104
#   level 3, x^{3,1} (input 512): 1,769,984 + up-conv 512->256 524,544           = 2,294,528
#   head 1x1 32 -> 1: 33
#   total = 4,711,648 + 199,040 + 541,248 + 1,295,104 + 2,294,528 + 33          = 9,041,601
# against the paper's 9.04M. Deep supervision adds 3 heads of 33 (9,041,700). Batch
# normalisation adds 2 f and removes the bias f per convolution: + sum over the 30 convs of f
# = 2*(32*5 + 64*4 + 128*3 + 256*2 + 512) = 3,648 -> 9,045,249. Bilinear U drops the up-convs
# (4*8,224 + 3*32,832 + 2*131,200 + 524,544 = 918,336) but widens each node's first conv by
# 9*f_i*(f_{i+1} - f_i) = 9*f_i^2 per node (4*9,216 + 3*36,864 + 2*147,456 + 589,824 =
# 1,032,192): 9,041,601 - 918,336 + 1,032,192 = 9,155,457.
PAPER = 9_041_601


def h(c_in: int, f: int, norm: bool = False) -> int:
    """Parameters of H: two 3x3 convolutions (+ batch norm without conv bias)."""
    return 9 * f * c_in + 9 * f * f + (4 * f if norm else 2 * f)


def expected_count(
    base: int, depth: int, c_in: int, k: int, *, norm: bool, up: str, ds: bool, prune=None
) -> int:
    L = depth if prune is None else prune
    f = [base * 2**i for i in range(L + 1)]
    total = sum(h(c_in if i == 0 else f[i - 1], f[i], norm) for i in range(L + 1))
    for i in range(L):
        for j in range(1, L - i + 1):
            if up == "transpose":
                total += 4 * f[i + 1] * f[i] + f[i] + h((j + 1) * f[i], f[i], norm)
            else:
                total += h(j * f[i] + f[i + 1], f[i], norm)
    heads = L if ds else 1
    return total + heads * (f[0] * k + k)


@pytest.mark.parametrize(
    "norm, up, ds, expected",
    [
        (None, "transpose", False, PAPER),
        (None, "transpose", True, 9_041_700),
        ("batch", "transpose", False, 9_045_249),
        (None, "bilinear", False, 9_155_457),
    ],
)
def test_paper_parameter_count(norm, up, ds, expected):
    kw = dict(norm=norm is not None, up=up, ds=ds)
    assert expected_count(32, 4, 1, 1, **kw) == expected
    torch.manual_seed(0)
    net = UNetPlusPlus(1, 1, norm=norm, upsample=up, deep_supervision=ds)
    assert count(net) == expected
    # the smallest valid input runs
    with torch.no_grad():
        out = net.eval()(torch.randn(1, 1, 16, 16))
    assert out.shape == (1, 1, 16, 16) and torch.isfinite(out).all()


@pytest.mark.parametrize(
    "base, depth, c_in, k, dims, norm, up, ds, prune",
    [
        (4, 2, 3, 2, 2, None, "transpose", True, None),
        (4, 3, 1, 3, 3, "batch", "bilinear", True, 2),
        (6, 3, 2, 1, 2, "instance", "transpose", True, 1),
        (2, 1, 1, 4, 3, None, "bilinear", False, None),
    ],
)
def test_parameter_count_formula(base, depth, c_in, k, dims, norm, up, ds, prune):
    net = UNetPlusPlus(
        c_in, k, base_channels=base, depth=depth, dims=dims, norm=norm, upsample=up,
        deep_supervision=ds, prune=prune,
    )  # fmt: skip
    want = expected_count(base, depth, c_in, k, norm=norm is not None, up=up, ds=ds, prune=prune)
    if dims == 3:  # 3x3x3 kernels (27 taps) and 2x2x2 up-convs (8 taps)
        net2d = UNetPlusPlus(
            c_in, k, base_channels=base, depth=depth, norm=norm, upsample=up,
            deep_supervision=ds, prune=prune,
        )  # fmt: skip
        conv_weights = sum(
            m.weight.numel() for m in net2d.modules() if isinstance(m, torch.nn.Conv2d)
        )
        up_weights = sum(
            m.weight.numel() for m in net2d.modules() if isinstance(m, torch.nn.ConvTranspose2d)
        )
        heads = sum(getattr(net2d, f"head_{j}").weight.numel() for j in net2d.head_ids)
        want += 2 * (conv_weights - heads) + up_weights  # 9 -> 27 and 4 -> 8 taps
    assert count(net) == want


def test_monai_basic_unetplusplus_count():
    # the module docstring's 9.12M: MONAI's nested U-Net with its norm layers, same filters
    net = monai.networks.nets.BasicUNetPlusPlus(
        spatial_dims=2, in_channels=1, out_channels=1, features=(32, 64, 128, 256, 512, 32)
    )
    assert count(net) == 9_118_756


# ------------------------------------------------------------------------------------------
# the nested equation
# ------------------------------------------------------------------------------------------


def reference_heads(net: UNetPlusPlus, x: torch.Tensor) -> list[torch.Tensor]:
    """x^{i,j} by the paper's equation, written recursively with memoisation."""

    @functools.cache
    def node(i: int, j: int) -> torch.Tensor:
        if j == 0:
            inp = x if i == 0 else net.pool(node(i - 1, 0))
        else:
            up = getattr(net, f"up_{i}_{j}")(node(i + 1, j - 1))
            inp = torch.cat([node(i, m) for m in range(j)] + [up], dim=1)
        return getattr(net, f"x_{i}_{j}")(inp)

    return [getattr(net, f"head_{j}")(node(0, j)) for j in net.head_ids]


@pytest.mark.parametrize("dims, up", [(2, "transpose"), (2, "bilinear"), (3, "transpose")])
def test_nodes_follow_the_equation(dims, up):
    torch.manual_seed(0)
    net = UNetPlusPlus(2, 3, base_channels=4, depth=3, dims=dims, upsample=up,
                       deep_supervision=True).eval()  # fmt: skip
    x = torch.randn(2, 2, *(8,) * dims)
    with torch.no_grad():
        for a, b in zip(net.heads(x), reference_heads(net, x), strict=True):
            torch.testing.assert_close(a, b)


def test_node_names_and_count():
    net = UNetPlusPlus(1, 1, base_channels=4)
    names = {n for n, _ in net.named_children() if n.startswith("x_")}
    assert names == {f"x_{i}_{j}" for i in range(5) for j in range(5 - i)}  # 15 nodes
    assert isinstance(net.x_0_1[0], torch.nn.Conv2d)
    assert net.x_0_4[0].in_channels == 5 * 4  # [x^{0,0..3}, U(x^{1,3})]


# ------------------------------------------------------------------------------------------
# deep supervision and pruning
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ds_net() -> UNetPlusPlus:
    torch.manual_seed(0)
    net = UNetPlusPlus(1, 2, base_channels=4, deep_supervision=True)
    # a few training steps so that batch-norm statistics and heads differ from the init
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    before = torch.get_num_threads()  # module-scoped: runs before _one_thread
    torch.set_num_threads(1)
    try:
        for _ in range(2):
            opt.zero_grad()
            sum(o.square().mean() for o in net(torch.randn(2, 1, 32, 32))).backward()
            opt.step()
    finally:
        torch.set_num_threads(before)
    return net.eval()


def test_deep_supervision_outputs(ds_net):
    x = torch.randn(1, 1, 32, 32)
    ds_net.train()
    try:
        outs = ds_net(x)
    finally:
        ds_net.eval()
    assert isinstance(outs, list) and len(outs) == 4
    assert all(o.shape == (1, 2, 32, 32) for o in outs)
    with torch.no_grad():
        heads = ds_net.heads(x)
        torch.testing.assert_close(ds_net(x), torch.stack(heads).mean(0))  # accurate
        fast = copy.deepcopy(ds_net)
        fast.inference = "fast"
        torch.testing.assert_close(fast(x), heads[-1])
    assert not torch.allclose(heads[0], heads[-1])


@pytest.mark.parametrize("level", [1, 2, 3, 4])
def test_pruned_equals_head_of_full_model(ds_net, level):
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        full = ds_net.heads(x)[level - 1]
        # a: built from the full model, sharing its modules (and its inference mode)
        fast = copy.copy(ds_net)
        fast.inference = "fast"
        shared = fast.pruned(level)
        assert shared.inference == "fast" and not shared.training
        torch.testing.assert_close(shared(x), full)
        # b: built on its own, loading the full state dict
        alone = UNetPlusPlus(1, 2, base_channels=4, deep_supervision=True, prune=level,
                             inference="fast").eval()  # fmt: skip
        missing, unexpected = alone.load_state_dict(ds_net.state_dict(), strict=False)
        assert not missing
        assert all(k.split(".")[0] not in dict(alone.named_children()) for k in unexpected)
        torch.testing.assert_close(alone(x), full)
    # unused nodes are not built
    nodes = {n for n, _ in alone.named_children() if n.startswith("x_")}
    assert nodes == {f"x_{i}_{j}" for i in range(level + 1) for j in range(level + 1 - i)}
    assert count(alone) < count(ds_net) or level == 4
    assert shared.x_0_0 is ds_net.x_0_0


def test_pruned_needs_only_its_own_divisibility():
    net = UNetPlusPlus(1, 1, base_channels=4, deep_supervision=True, prune=2).eval()
    assert net(torch.zeros(1, 1, 12, 20)).shape == (1, 1, 12, 20)


# ------------------------------------------------------------------------------------------
# shapes, gradients, errors
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dims, shape",
    [(2, (32, 48)), (3, (16, 8, 24))],
)
@pytest.mark.parametrize("up", ["transpose", "bilinear"])
def test_shapes(dims, shape, up):
    net = UNetPlusPlus(3, 5, base_channels=4, depth=3, dims=dims, upsample=up).eval()
    with torch.no_grad():
        assert net(torch.zeros(2, 3, *shape)).shape == (2, 5, *shape)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("norm", [None, "batch", "instance"])
def test_every_parameter_gets_a_gradient(dims, norm):
    torch.manual_seed(0)
    net = UNetPlusPlus(1, 2, base_channels=4, depth=2, dims=dims, norm=norm,
                       deep_supervision=True)  # fmt: skip
    outs = net(torch.randn(2, 1, *(8,) * dims))
    sum(o.square().mean() for o in outs).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    "kwargs, shape, message",
    [
        ({}, (1, 1, 100, 100), "input size 100x100 is not divisible by 16: pad to 112x112"),
        ({"depth": 2}, (1, 1, 16, 10), "input size 16x10 is not divisible by 4: pad to 16x12"),
        ({"dims": 3}, (1, 1, 16, 16), r"x must be 5D"),
        ({}, (1, 2, 16, 16), "x must have 1 channels"),
    ],
)
def test_bad_inputs(kwargs, shape, message):
    net = UNetPlusPlus(1, 1, base_channels=2, **kwargs)
    with pytest.raises(ValueError, match=message):
        net(torch.zeros(shape))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"prune": 5}, r"prune must be an int in \[1, 4\]"),
        ({"prune": 0}, r"prune must be an int in \[1, 4\]"),
        ({"prune": 2}, "unless deep_supervision=True"),
        ({"norm": "group"}, "norm must be one of"),
        ({"upsample": "nearest"}, "upsample must be one of"),
        ({"inference": "mean"}, "inference must be one of"),
        ({"base_channels": 0}, "base_channels must be >= 1"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        UNetPlusPlus(1, 1, **kwargs)


def test_pruned_errors():
    net = UNetPlusPlus(1, 1, base_channels=2, depth=2)
    with pytest.raises(ValueError, match="level must be 2 without deep supervision"):
        net.pruned(1)
    with pytest.raises(ValueError, match=r"level must be an int in \[1, 2\]"):
        net.pruned(3)


def test_doctests():
    result = doctest.testmod(unetpp, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# ------------------------------------------------------------------------------------------
# real data
# ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_unetpp_overfits_an_isbi_tile():
    from PIL import Image

    from segloc.nn.losses import DeepSupervisionLoss, DiceCELoss

    image_path = DATA / "isbi2012" / "images" / "1.png"
    if not image_path.exists():
        pytest.skip(f"{image_path} not found")
    image = np.asarray(Image.open(image_path), dtype=np.float32)[:128, :128]
    truth = np.asarray(Image.open(DATA / "isbi2012" / "labels" / "1.png"))[:128, :128] == 255
    image = (image - image.mean()) / image.std()
    x = torch.from_numpy(image)[None, None]  # (1, 1, 128, 128)
    y = torch.from_numpy(truth)[None, None].float()

    torch.manual_seed(0)
    net = UNetPlusPlus(1, 1, base_channels=16, deep_supervision=True)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    loss_fn = DeepSupervisionLoss(DiceCELoss("binary"))  # the paper's BCE + Dice per head
    dice = (0.0, 0.0)
    # about 25 steps reach 0.9 for both classes (~1 s each on one busy core)
    for step in range(100):
        net.train()
        opt.zero_grad()
        loss_fn(net(x), y).backward()
        opt.step()
        if step % 5 == 4:
            net.eval()  # accurate mode: mean of the four heads, batch-norm running statistics
            with torch.no_grad():
                pred = net(x) > 0
            cells, membranes = pred & (y > 0), ~pred & (y == 0)
            dice = (
                float(2 * cells.sum() / (pred.sum() + (y > 0).sum())),
                float(2 * membranes.sum() / ((~pred).sum() + (y == 0).sum())),
            )
            if min(dice) > 0.9:
                break
    # 78% of the crop is cell interior: "all cells" scores 0.88 there, so membranes count too
    assert min(dice) > 0.9, dice
