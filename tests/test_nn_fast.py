"""segloc.nn.fast: folded batch norms and channels-last weights must not change the logits."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import BasicUNet
from torch import nn

from segloc.nn.fast import fuse_batchnorm, optimize_for_inference, to_channels_last
from segloc.nn.unet import UNet, unet3d
from segloc.nn.unetpp import UNetPlusPlus
from segloc.nn.vnet import VNet

BN = nn.modules.batchnorm._BatchNorm


def _randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Running statistics and affine parameters far from their (0, 1) initial values, so a
    folding that forgot one of them, or used the wrong axis, changes the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, BN):
                n = m.num_features
                if m.running_mean is None:  # track_running_stats=False
                    continue
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                if m.affine:
                    m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                    m.bias.copy_(torch.rand(n, generator=g) - 0.5)
    return model


MODELS = {
    "unet-2d-same": (
        lambda: UNet(1, 2, base_channels=4, depth=2, padding="same", norm="batch"),
        (2, 1, 16, 16),
    ),
    "unet-2d-valid-bilinear": (
        lambda: UNet(2, 3, base_channels=4, depth=2, norm="batch", up="bilinear"),
        (1, 2, 44, 44),
    ),
    "unet3d": (lambda: unet3d(1, 2, base_channels=2, depth=2), (1, 1, 8, 8, 8)),
    "unetpp-2d": (lambda: UNetPlusPlus(1, 2, base_channels=4, depth=2), (2, 1, 16, 16)),
    "unetpp-3d-bilinear": (
        lambda: UNetPlusPlus(1, 2, base_channels=2, depth=2, dims=3, upsample="bilinear"),
        (1, 1, 8, 8, 8),
    ),
    # batch norm after the transposed convolutions too
    "vnet-batch": (lambda: VNet(1, 2, base_channels=4, depth=2, norm="batch"), (1, 1, 8, 8, 8)),
    "vnet-paper-no-norm": (lambda: VNet(1, 2, base_channels=4, depth=2), (1, 1, 8, 8, 8)),
    "monai-basicunet": (
        lambda: BasicUNet(2, 1, 2, features=(4, 4, 8, 8, 16, 4), norm="batch"),
        (1, 1, 32, 32),
    ),
}


@pytest.mark.parametrize(("fuse_bn", "channels_last"), [(True, True), (True, False), (False, True)])
@pytest.mark.parametrize("name", list(MODELS))
def test_optimised_logits_equal_original(name: str, fuse_bn: bool, channels_last: bool) -> None:
    build, shape = MODELS[name]
    torch.manual_seed(0)
    model = _randomise_bn(build())
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    fast = optimize_for_inference(model, fuse_bn=fuse_bn, channels_last=channels_last)
    with torch.inference_mode():
        want = model.eval()(x)
        got = fast(x)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)
    n_bn = sum(isinstance(m, BN) for m in model.modules())
    left = sum(isinstance(m, BN) for m in fast.modules())
    assert left == (0 if fuse_bn else n_bn)
    assert not fast.training


@pytest.mark.parametrize("name", ["unet-2d-same", "unet3d", "vnet-batch"])
def test_weights_are_channels_last(name: str) -> None:
    build, shape = MODELS[name]
    fast = optimize_for_inference(build())
    fmt = torch.channels_last if len(shape) == 4 else torch.channels_last_3d
    weights = [m.weight for m in fast.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))]
    # a 1x1 (x1) kernel with one input channel is contiguous in both layouts; look at the rest
    assert all(w.is_contiguous(memory_format=fmt) for w in weights)
    assert any(not w.is_contiguous() for w in weights)


@pytest.mark.parametrize("name", ["unet-2d-same", "unetpp-2d", "unet3d", "vnet-batch"])
def test_channels_last_training_step_matches_default_layout(name: str) -> None:
    """What the trainer does: the same loss, gradients and updated weights in either layout."""
    build, shape = MODELS[name]
    torch.manual_seed(0)
    plain = build()
    fast = build()
    fast.load_state_dict(plain.state_dict())
    assert to_channels_last(fast) is fast
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    results = []
    for model in (plain, fast):
        # SGD: the update is linear in the gradient (Adam would amplify rounding in tiny ones)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        loss = model.train()(x).square().mean()
        loss.backward()
        grads = [p.grad.clone() for p in model.parameters()]
        optimizer.step()
        results.append((loss.detach(), grads, model.state_dict()))
    (loss_a, grads_a, state_a), (loss_b, grads_b, state_b) = results
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-5, atol=1e-6)
    for ga, gb in zip(grads_a, grads_b, strict=True):
        torch.testing.assert_close(gb, ga, rtol=1e-3, atol=1e-5)
    for k in state_a:
        torch.testing.assert_close(state_b[k], state_a[k], rtol=1e-4, atol=1e-5)
    fmt = torch.channels_last if len(shape) == 4 else torch.channels_last_3d
    moved = [p for p in fast.parameters() if not p.is_contiguous()]
    assert moved and all(p.is_contiguous(memory_format=fmt) for p in moved)


def test_channels_last_leaves_models_without_2d_or_3d_convolutions() -> None:
    net = nn.Sequential(nn.Conv1d(2, 3, 3), nn.Linear(4, 4))
    strides = [p.stride() for p in net.parameters()]
    assert to_channels_last(net) is net
    assert [p.stride() for p in net.parameters()] == strides
    with pytest.raises(TypeError):
        to_channels_last("unet")


def test_original_model_untouched() -> None:
    torch.manual_seed(0)
    model = _randomise_bn(UNet(1, 2, base_channels=4, depth=2, padding="same", norm="batch"))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimize_for_inference(model)
    assert model.training
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.is_contiguous() for p in model.parameters())


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("transpose", [False, True])
def test_folded_weights_match_hand_formula(bias: bool, transpose: bool) -> None:
    # w' = w * gamma / sqrt(var + eps) along the output-channel axis,
    # b' = (b - mean) * gamma / sqrt(var + eps) + beta
    torch.manual_seed(0)
    conv = (nn.ConvTranspose2d if transpose else nn.Conv2d)(3, 5, 2, bias=bias)
    bn = nn.BatchNorm2d(5, eps=1e-3)
    model = _randomise_bn(nn.Sequential(conv, bn, nn.ReLU()))
    fused = fuse_batchnorm(model)
    assert isinstance(fused[1], nn.Identity)
    scale = bn.weight / torch.sqrt(bn.running_var + 1e-3)  # (5,)
    axis_shape = (1, 5, 1, 1) if transpose else (5, 1, 1, 1)
    b = conv.bias if bias else torch.zeros(5)
    torch.testing.assert_close(fused[0].weight, conv.weight * scale.reshape(axis_shape))
    torch.testing.assert_close(fused[0].bias, (b - bn.running_mean) * scale + bn.bias)


def test_pairs_that_must_not_fold_are_kept() -> None:
    torch.manual_seed(0)
    model = _randomise_bn(
        nn.Sequential(
            nn.BatchNorm2d(1),  # nothing before it
            nn.Conv2d(1, 4, 3, padding=1),
            nn.BatchNorm2d(4, track_running_stats=False),  # batch statistics even in eval
            nn.ConvTranspose2d(4, 4, 2, stride=2, groups=2),
            nn.BatchNorm2d(4),  # grouped transposed convolution
            nn.Conv2d(4, 4, 1),
            nn.ReLU(),
            nn.BatchNorm2d(4),  # not directly after the convolution
        )
    )
    fused = fuse_batchnorm(model)
    assert [type(m) for m in fused] == [type(m) for m in model]
    assert all(type(m) is not nn.Identity for m in fused.modules())
    x = torch.randn(2, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        torch.testing.assert_close(fused(x), model.eval()(x))


def test_normalisation_at_the_start_of_the_next_sequential_is_folded() -> None:
    # MONAI's Convolution layout: Sequential(conv, Sequential(norm, dropout, act))
    torch.manual_seed(0)
    inner = nn.Sequential(nn.BatchNorm2d(4), nn.Dropout(0.0), nn.LeakyReLU(0.1))
    model = _randomise_bn(nn.Sequential(nn.Conv2d(1, 4, 3), nn.Sequential(inner)))
    fused = fuse_batchnorm(model)
    assert isinstance(fused[1][0][0], nn.Identity)
    x = torch.randn(2, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        torch.testing.assert_close(fused(x), model.eval()(x))


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got str"):
        optimize_for_inference("unet")
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got int"):
        fuse_batchnorm(3)
    with pytest.raises(TypeError, match="channels_last must be a bool, got str"):
        optimize_for_inference(nn.Conv2d(1, 1, 1), channels_last="yes")
