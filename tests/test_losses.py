"""Tests for segloc.nn.losses: MONAI's published values, MONAI / PyTorch oracles on random
inputs for every mode, and slow obvious references for what the peers lack (pixel weights,
ignore_index in Dice)."""

from __future__ import annotations

import doctest
import itertools
import math

import monai.losses
import pytest
import torch
import torch.nn.functional as F

from segloc.nn import losses
from segloc.nn.losses import (
    CrossEntropyLoss,
    DeepSupervisionLoss,
    DiceCELoss,
    DiceLoss,
    FocalLoss,
    cross_entropy,
    dice_loss,
    focal_loss,
)

TOL = dict(rtol=1e-5, atol=1e-5)
TIGHT = dict(rtol=1e-7, atol=1e-7)  # float64 comparisons (MONAI rounds some steps in float32)


@pytest.fixture(autouse=True)
def _one_thread():
    """Run each test on one thread: the suite shares 2 cores, and with several busy processes
    PyTorch's two-thread kernels wait on each other (tiny models got 20x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def random_case(mode: str, shape=(2, 3, 5, 6), seed=0, ignore: int | None = None):
    """float64 logits and a target of the given mode; ``ignore`` marks ~20% of pixels."""
    g = torch.Generator().manual_seed(seed)
    b, c, *spatial = shape
    if mode == "binary":
        c = 1
    logits = torch.randn(b, c, *spatial, generator=g, dtype=torch.float64) * 2
    if mode == "multiclass":
        target = torch.randint(0, c, (b, *spatial), generator=g)
    else:
        target = torch.randint(0, 2, (b, c, *spatial), generator=g).double()
    if ignore is not None:
        drop = torch.rand(target.shape, generator=g) < 0.2
        target = torch.where(drop, torch.as_tensor(ignore, dtype=target.dtype), target)
    return logits, target


# ------------------------------------------------------------------------------------------
# Dice: MONAI's published values and MONAI on random inputs
# ------------------------------------------------------------------------------------------

LOGITS = torch.tensor([[[[1.0, -1.0], [-1.0, 1.0]]]])
TARGET = torch.tensor([[[[1.0, 0.0], [1.0, 1.0]]]])


@pytest.mark.parametrize(
    "options, expected",
    [
        # MONAI tests/losses/test_dice_loss.py: sigmoid, smooth_nr = smooth_dr = 1e-6
        ({}, 0.307576),
        ({"squared": True}, 0.178337),
        ({"jaccard": True}, 0.470451),
    ],
)
def test_dice_published_values(options, expected):
    # the same numbers by hand: p = sigmoid(+-1) = 0.7311 / 0.2689, I = 2 * 0.7311 + 0.2689,
    # sum(p) = 2, sum(g) = 3, sum(p^2) = 2 * (0.7311^2 + 0.2689^2)
    p1, p0 = torch.sigmoid(torch.tensor(1.0)), torch.sigmoid(torch.tensor(-1.0))
    inter = 2 * p1 + p0
    by_hand = {
        (): 1 - 2 * inter / 5,
        ("squared",): 1 - 2 * inter / (2 * (p1**2 + p0**2) + 3),
        ("jaccard",): 1 - inter / (5 - inter),
    }[tuple(options)]
    got = DiceLoss("binary", smooth=1e-6, **options)(LOGITS, TARGET)
    assert float(got) == pytest.approx(expected, abs=1e-5)
    assert float(got) == pytest.approx(float(by_hand), abs=1e-6)


@pytest.mark.parametrize("mode", ["binary", "multiclass", "multilabel"])
@pytest.mark.parametrize(
    "squared, jaccard, include_background, batch",
    [
        (False, False, True, False),
        (True, False, True, False),
        (False, True, True, False),
        (True, True, False, False),
        (False, False, False, True),
        (True, False, True, True),
    ],
)
def test_dice_matches_monai(mode, squared, jaccard, include_background, batch):
    logits, target = random_case(mode)
    s = 1e-5
    ours = dice_loss(
        logits,
        target,
        mode=mode,
        smooth=s,
        squared=squared,
        jaccard=jaccard,
        include_background=include_background,
        batch=batch,
    )
    # segloc's Jaccard (I + s) / (U + s) is MONAI's (2 I + s') / (2 U + s') with s' = 2 s
    ms = 2 * s if jaccard else s
    ref_loss = monai.losses.DiceLoss(
        sigmoid=mode != "multiclass",
        softmax=mode == "multiclass",
        to_onehot_y=mode == "multiclass",
        squared_pred=squared,
        jaccard=jaccard,
        include_background=include_background or mode == "binary",
        batch=batch,
        smooth_nr=ms,
        smooth_dr=ms,
    )
    ref_target = target.unsqueeze(1) if mode == "multiclass" else target
    torch.testing.assert_close(ours, ref_loss(logits, ref_target), **TIGHT)


@pytest.mark.parametrize("mode", ["binary", "multiclass", "multilabel"])
def test_dice_reduction_none_and_sum(mode):
    logits, target = random_case(mode)
    none = dice_loss(logits, target, mode=mode, reduction="none")
    c = 1 if mode == "binary" else 3
    assert none.shape == (2, c)
    ref = monai.losses.DiceLoss(
        sigmoid=mode != "multiclass",
        softmax=mode == "multiclass",
        to_onehot_y=mode == "multiclass",
        reduction="none",
        smooth_nr=1e-5,
        smooth_dr=1e-5,
    )(logits, target.unsqueeze(1) if mode == "multiclass" else target)
    torch.testing.assert_close(none, ref.reshape(2, c), **TIGHT)
    torch.testing.assert_close(dice_loss(logits, target, mode=mode, reduction="sum"), none.sum())


def test_dice_binary_target_without_channel_axis():
    logits, target = random_case("binary")
    assert torch.equal(
        dice_loss(logits, target, mode="binary"), dice_loss(logits, target[:, 0], mode="binary")
    )


def test_dice_from_probabilities():
    logits, target = random_case("multiclass")
    probs = logits.softmax(1)
    torch.testing.assert_close(
        dice_loss(probs, target, mode="multiclass", from_logits=False),
        dice_loss(logits, target, mode="multiclass"),
    )


@pytest.mark.parametrize("mode", ["binary", "multiclass", "multilabel"])
def test_dice_ignore_index_equals_dropping_the_pixels(mode):
    # oracle: MONAI's Dice on the scored pixels only, one sample at a time, as a 1D "image"
    logits, target = random_case(mode, ignore=255)
    ours = dice_loss(logits, target, mode=mode, ignore_index=255, reduction="none")
    probs = logits.softmax(1) if mode == "multiclass" else logits.sigmoid()
    c = logits.shape[1]
    for b in range(logits.shape[0]):
        p = probs[b].flatten(1)  # (C, N)
        t = target[b].flatten(int(mode == "multilabel"))  # (N,), or (C, N) in multilabel mode
        if mode == "multilabel":
            # channels keep different pixels: one channel at a time
            for ch in range(c):
                keep = t[ch] != 255
                ref = monai.losses.DiceLoss(smooth_nr=1e-5, smooth_dr=1e-5)(
                    p[ch, keep][None, None], t[ch, keep][None, None]
                )
                torch.testing.assert_close(ours[b, ch], ref, **TIGHT)
            continue
        keep = t != 255
        if mode == "multiclass":
            onehot = F.one_hot(t[keep], c).T.double()  # (N,) -> (C, N)
        else:
            onehot = t[keep][None]
        ref = monai.losses.DiceLoss(smooth_nr=1e-5, smooth_dr=1e-5, reduction="none")(
            p[:, keep][None], onehot[None]
        )
        torch.testing.assert_close(ours[b], ref.flatten(), **TIGHT)


def test_dice_ignore_index_may_equal_a_class_outside_range():
    logits, target = random_case("multiclass", ignore=-1)
    loss = dice_loss(logits, target, mode="multiclass", ignore_index=-1)
    assert torch.isfinite(loss)


def test_dice_perfect_and_empty():
    target = torch.zeros(1, 1, 4, 4)
    target[..., 1:3, 1:3] = 1
    perfect = (target * 2 - 1) * 50  # logits saturating to the target
    assert float(dice_loss(perfect, target)) == pytest.approx(0.0, abs=1e-6)
    # empty prediction on an empty target: smoothing makes it a perfect score, not 0/0
    assert float(dice_loss(torch.full((1, 1, 4, 4), -50.0), torch.zeros(1, 1, 4, 4))) == (
        pytest.approx(0.0, abs=1e-6)
    )


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: dice_loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4)), "1 channel"),
        (
            lambda: dice_loss(torch.zeros(1, 1, 4, 4), torch.zeros(1, 2, 4, 4), mode="multiclass"),
            "at least 2",
        ),
        (
            lambda: dice_loss(torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 4), mode="multilabel"),
            r"target must have shape \(B, C, \*spatial\)",
        ),
        (
            lambda: dice_loss(torch.zeros(1, 3, 4, 4), torch.full((1, 4, 4), 3), mode="multiclass"),
            r"labels must be in \[0, 3\)",
        ),
        (
            lambda: dice_loss(torch.zeros(1, 1, 4, 4), torch.full((1, 4, 4), 255.0)),
            r"target values must be in \[0, 1\] in binary mode, got values in \[255, 255\]",
        ),
        (
            lambda: focal_loss(torch.zeros(1, 2, 4, 4), -torch.ones(1, 2, 4, 4), mode="multilabel"),
            r"target values must be in \[0, 1\] in multilabel mode",
        ),
        (lambda: dice_loss(torch.zeros(1, 1, 4, 4), torch.zeros(1, 4, 4), mode="x"), "mode"),
        (lambda: DiceLoss(reduction="avg"), "reduction must be one of"),
        (lambda: DiceLoss(smooth=-1), "smooth must be >= 0"),
        (lambda: dice_loss(torch.zeros(4, 4), torch.zeros(4, 4)), "logits must be"),
    ],
)
def test_loss_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_multiclass_float_labels_rejected():
    with pytest.raises(TypeError, match="integer labels"):
        dice_loss(torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 4), mode="multiclass")


# ------------------------------------------------------------------------------------------
# cross-entropy
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("weight", [None, [0.2, 1.0, 3.0]])
@pytest.mark.parametrize("ignore_index", [None, 1, 255])
@pytest.mark.parametrize("shape", [(2, 3, 5, 6), (2, 3, 4, 3, 5)])
def test_cross_entropy_matches_torch(weight, ignore_index, shape):
    logits, target = random_case("multiclass", shape=shape, ignore=ignore_index)
    w = None if weight is None else torch.tensor(weight, dtype=torch.float64)
    ref = F.cross_entropy(
        logits, target, weight=w, ignore_index=-100 if ignore_index is None else ignore_index
    )
    torch.testing.assert_close(
        cross_entropy(logits, target, weight=w, ignore_index=ignore_index), ref, **TIGHT
    )
    # the module, and a (B, 1, *spatial) target
    mod = CrossEntropyLoss(weight=weight, ignore_index=ignore_index).double()
    torch.testing.assert_close(mod(logits, target.unsqueeze(1)), ref, **TIGHT)


@pytest.mark.parametrize("weight", [None, (0.3, 2.0)])
@pytest.mark.parametrize("ignore_index", [None, 255])
def test_binary_cross_entropy_is_two_class_softmax(weight, ignore_index):
    # BCE(z, y) = CE on logits (0, z): an independent oracle for weights and ignore_index
    logits, target = random_case("binary", ignore=ignore_index)
    two = torch.cat([torch.zeros_like(logits), logits], dim=1)  # (B, 2, *S)
    labels = target[:, 0].long()
    w = None if weight is None else torch.tensor(weight, dtype=torch.float64)
    ref = F.cross_entropy(
        two, labels, weight=w, ignore_index=-100 if ignore_index is None else ignore_index
    )
    got = cross_entropy(logits, target, mode="binary", weight=weight, ignore_index=ignore_index)
    torch.testing.assert_close(got, ref, **TIGHT)


def test_multilabel_cross_entropy_matches_bce():
    logits, target = random_case("multilabel")
    torch.testing.assert_close(
        cross_entropy(logits, target, mode="multilabel"),
        F.binary_cross_entropy_with_logits(logits, target),
        **TIGHT,
    )


def slow_weighted_ce(logits, target, weight, pixel_weight, ignore_index):
    """The definition, one pixel at a time."""
    num, den = 0.0, 0.0
    b, c, h, w = logits.shape
    for n, i, j in itertools.product(range(b), range(h), range(w)):
        y = int(target[n, i, j])
        if y == ignore_index:
            continue
        z = logits[n, :, i, j].tolist()
        m = max(z)
        logsum = m + math.log(sum(math.exp(v - m) for v in z))
        wc = 1.0 if weight is None else weight[y]
        num += float(pixel_weight[n, i, j]) * wc * (logsum - z[y])
        den += wc
    return num / den


@pytest.mark.parametrize("weight", [None, [0.5, 1.0, 2.0]])
def test_cross_entropy_pixel_weight(weight):
    logits, target = random_case("multiclass", ignore=255)
    pw = torch.rand(target.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    got = cross_entropy(logits, target, weight=weight, pixel_weight=pw, ignore_index=255)
    assert float(got) == pytest.approx(slow_weighted_ce(logits, target, weight, pw, 255), rel=1e-9)
    # an all-ones map changes nothing; (B, 1, *S) maps are accepted
    ones = torch.ones_like(pw).unsqueeze(1)
    torch.testing.assert_close(
        cross_entropy(logits, target, weight=weight, pixel_weight=ones, ignore_index=255),
        cross_entropy(logits, target, weight=weight, ignore_index=255),
    )
    none = cross_entropy(logits, target, pixel_weight=pw, reduction="none", ignore_index=255)
    assert none.shape == target.shape
    assert torch.all(none[target == 255] == 0)


def test_cross_entropy_all_ignored_is_zero_not_nan():
    logits = torch.randn(1, 3, 2, 2)
    target = torch.full((1, 2, 2), 255)
    assert float(cross_entropy(logits, target, ignore_index=255)) == 0.0


def test_cross_entropy_bad_shapes():
    with pytest.raises(ValueError, match=r"weight must have shape \(3,\)"):
        cross_entropy(
            torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), weight=[1, 2]
        )
    with pytest.raises(ValueError, match="pixel_weight must have shape"):
        cross_entropy(
            torch.zeros(1, 3, 2, 2),
            torch.zeros(1, 2, 2, dtype=torch.long),
            pixel_weight=torch.ones(1, 3, 3),
        )


# ------------------------------------------------------------------------------------------
# Dice + CE
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["binary", "multiclass"])
@pytest.mark.parametrize("lambdas", [(1.0, 1.0), (0.3, 2.0)])
def test_dice_ce_matches_monai(mode, lambdas):
    logits, target = random_case(mode, shape=(2, 4, 6, 5, 3))
    ours = DiceCELoss(mode, lambda_dice=lambdas[0], lambda_ce=lambdas[1])(logits, target)
    ref = monai.losses.DiceCELoss(
        sigmoid=mode == "binary",
        softmax=mode == "multiclass",
        to_onehot_y=mode == "multiclass",
        smooth_nr=1e-5,
        smooth_dr=1e-5,
        lambda_dice=lambdas[0],
        lambda_ce=lambdas[1],
    )(logits, target.unsqueeze(1) if mode == "multiclass" else target)
    torch.testing.assert_close(ours, ref, **TIGHT)


def test_dice_ce_multilabel_is_dice_plus_bce():
    logits, target = random_case("multilabel")
    ref = monai.losses.DiceLoss(sigmoid=True, smooth_nr=1e-5, smooth_dr=1e-5)(logits, target)
    ref = ref + F.binary_cross_entropy_with_logits(logits, target)
    torch.testing.assert_close(DiceCELoss("multilabel")(logits, target), ref, **TIGHT)


@pytest.mark.parametrize("mode", ["binary", "multiclass"])
def test_dice_ce_pixel_weight_weighs_the_ce_term_only(mode):
    logits, target = random_case(mode, shape=(2, 3, 6, 5))
    spatial = target.shape if mode == "multiclass" else (target.shape[0], *target.shape[2:])
    pw = 0.5 + torch.rand(spatial, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    loss = DiceCELoss(mode, lambda_dice=0.7, lambda_ce=1.3)
    dice = DiceLoss(mode)(logits, target)
    if mode == "multiclass":
        ce = (F.cross_entropy(logits, target, reduction="none") * pw).mean()
    else:
        per_pixel = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        ce = (per_pixel * pw.unsqueeze(1)).mean()
    torch.testing.assert_close(loss(logits, target, pw), 0.7 * dice + 1.3 * ce, **TIGHT)
    torch.testing.assert_close(loss(logits, target, torch.ones_like(pw)), loss(logits, target))


def test_dice_ce_class_weight_matches_monai():
    logits, target = random_case("multiclass")
    w = torch.tensor([0.5, 1.0, 4.0], dtype=torch.float64)
    ref = monai.losses.DiceCELoss(
        softmax=True, to_onehot_y=True, smooth_nr=1e-5, smooth_dr=1e-5, weight=w
    )
    # MONAI's weight also weights the Dice term's classes; compare the CE part alone
    ce = F.cross_entropy(logits, target, weight=w)
    ours = DiceCELoss("multiclass", weight=w, lambda_dice=0.0)(logits, target)
    torch.testing.assert_close(ours, ce, **TIGHT)
    assert ref.lambda_ce == 1.0


# ------------------------------------------------------------------------------------------
# focal
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["binary", "multilabel"])
@pytest.mark.parametrize("gamma, alpha", [(2.0, None), (2.0, 0.25), (0.5, 0.75), (0.0, None)])
def test_sigmoid_focal_matches_monai(mode, gamma, alpha):
    logits, target = random_case(mode)
    ref = monai.losses.FocalLoss(gamma=gamma, alpha=alpha, reduction="none")(logits, target)
    # MONAI's FocalLoss computes in float32 whatever the input
    got = focal_loss(logits, target, mode=mode, gamma=gamma, alpha=alpha, reduction="none")
    torch.testing.assert_close(got.float(), ref, **TOL)
    torch.testing.assert_close(
        FocalLoss(mode, gamma=gamma, alpha=alpha)(logits, target).float(), ref.mean(), **TOL
    )


@pytest.mark.parametrize("gamma, alpha", [(2.0, None), (2.0, 0.25), (1.0, [0.2, 0.3, 0.5])])
def test_softmax_focal_matches_monai(gamma, alpha):
    logits, target = random_case("multiclass")
    ref = monai.losses.FocalLoss(
        gamma=gamma, alpha=alpha, use_softmax=True, to_onehot_y=True, reduction="none"
    )(logits, target.unsqueeze(1))
    # MONAI keeps one (mostly zero) value per class; the pixel's loss is their sum
    got = focal_loss(logits, target, mode="multiclass", gamma=gamma, alpha=alpha, reduction="none")
    torch.testing.assert_close(got.float(), ref.sum(1), **TOL)


@pytest.mark.parametrize("mode", ["binary", "multiclass", "multilabel"])
def test_focal_gamma_zero_is_cross_entropy(mode):
    logits, target = random_case(mode, ignore=255)
    torch.testing.assert_close(
        focal_loss(logits, target, mode=mode, gamma=0.0, ignore_index=255),
        cross_entropy(logits, target, mode=mode, ignore_index=255),
        **TIGHT,
    )


def test_focal_down_weights_easy_examples():
    # Lin et al.: with gamma = 2 an example at p_t = 0.9 loses 100x versus cross-entropy
    z = torch.logit(torch.tensor([[[[0.9]]]], dtype=torch.float64))
    y = torch.ones_like(z)
    ratio = focal_loss(z, y, gamma=2.0) / focal_loss(z, y, gamma=0.0)
    assert float(ratio) == pytest.approx(0.01)


def test_focal_errors():
    with pytest.raises(ValueError, match="alpha must be a float in"):
        focal_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), alpha=[0.5])
    with pytest.raises(ValueError, match="alpha must be a float or have 3 values"):
        focal_loss(
            torch.zeros(1, 3, 2, 2),
            torch.zeros(1, 2, 2, dtype=torch.long),
            mode="multiclass",
            alpha=[0.5, 0.5],
        )
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        FocalLoss(gamma=-1.0)


# ------------------------------------------------------------------------------------------
# deep supervision
# ------------------------------------------------------------------------------------------


def test_deep_supervision_averages():
    logits, target = random_case("multiclass")
    outs = [logits, logits * 0.5, logits.flip(-1)]
    base = DiceCELoss("multiclass")
    each = torch.stack([base(o, target) for o in outs])
    torch.testing.assert_close(DeepSupervisionLoss(base)(outs, target), each.mean())
    w = [4.0, 2.0, 1.0]
    torch.testing.assert_close(
        DeepSupervisionLoss(base, weights=w)(outs, target),
        (each * torch.tensor(w, dtype=each.dtype)).sum() / 7,
    )
    # a single tensor is just the loss
    torch.testing.assert_close(DeepSupervisionLoss(base)(logits, target), each[0])


@pytest.mark.parametrize("mode", ["binary", "multiclass", "multilabel"])
def test_deep_supervision_resizes_target_by_nearest(mode):
    logits, target = random_case(mode, shape=(2, 3, 8, 6))
    small = logits[..., ::2, ::2].contiguous()  # (B, C, 4, 3)
    base = DiceLoss(mode)
    got = DeepSupervisionLoss(base)([logits, small], target)
    # torch's "nearest" for a factor 1/2 takes every second pixel from the first
    expected = (base(logits, target) + base(small, target[..., ::2, ::2])) / 2
    torch.testing.assert_close(got, expected)


def test_deep_supervision_passes_the_pixel_weight_resized():
    logits, target = random_case("multiclass", shape=(2, 3, 8, 6))
    pw = torch.rand(target.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    small = logits[..., ::2, ::2].contiguous()
    base = DiceCELoss("multiclass")
    got = DeepSupervisionLoss(base)([logits, small], target, pw)
    expected = (
        base(logits, target, pw) + base(small, target[..., ::2, ::2], pw[..., ::2, ::2])
    ) / 2
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(
        DeepSupervisionLoss(base)(logits, target, pw), base(logits, target, pw)
    )
    # without a map a loss that takes none still works
    DeepSupervisionLoss(DiceLoss("multiclass"))([logits, small], target)


def test_deep_supervision_errors():
    with pytest.raises(ValueError, match="weights must be non-negative"):
        DeepSupervisionLoss(DiceLoss(), weights=[-1.0, 1.0])
    with pytest.raises(ValueError, match="one value per output"):
        DeepSupervisionLoss(DiceLoss(), weights=[1.0])(
            [torch.zeros(1, 1, 2, 2)] * 2, torch.zeros(1, 1, 2, 2)
        )
    with pytest.raises(TypeError, match="loss must be callable"):
        DeepSupervisionLoss(3)


# ------------------------------------------------------------------------------------------
# gradients and doctests
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "loss, mode",
    [
        (DiceLoss("binary", squared=True, ignore_index=255), "binary"),
        (DiceLoss("multiclass", jaccard=True, ignore_index=255), "multiclass"),
        (DiceCELoss("multilabel", ignore_index=255), "multilabel"),
        (FocalLoss("multiclass", ignore_index=255), "multiclass"),
        (CrossEntropyLoss("binary", ignore_index=255), "binary"),
    ],
)
def test_gradients_finite(loss, mode):
    logits, target = random_case(mode, ignore=255)
    logits = logits.float().requires_grad_(True)
    loss(logits, target if mode == "multiclass" else target.float()).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0


def test_doctests():
    result = doctest.testmod(losses, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
