"""Tests for segloc.engine.infer: sliding windows against MONAI, TTA, the Predictor."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.data.utils import compute_importance_map
from monai.inferers import sliding_window_inference as monai_sliding_window
from scipy import ndimage as ndi

from segloc.engine.infer import (
    Ensemble,
    Predictor,
    flip_tta,
    gaussian_importance,
    resolve_checkpoint,
    sliding_window_inference,
    window_starts,
)
from segloc.engine.preprocess import normalize, resample
from segloc.nn import create_model
from segloc.nn.checkpoint import CheckpointError, save_checkpoint


def small_net(dims: int = 2, cin: int = 1, k: int = 3, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    conv = torch.nn.Conv2d if dims == 2 else torch.nn.Conv3d
    return torch.nn.Sequential(
        conv(cin, 4, 3, padding=1), torch.nn.ReLU(), conv(4, k, 3, padding=1)
    ).eval()


def extra(**kw):
    base = {
        "dims": 2,
        "in_channels": 1,
        "num_classes": 2,
        "normalize": "zscore",
        "patch_size": [32, 32],
        "target_spacing": None,
        "ignore_index": None,
        "label_mapping": "auto",
    }
    base.update(kw)
    return base


def make_ckpt(path, *, seed=0, model_kw=None, **kw):
    torch.manual_seed(seed)
    mk = {"in_channels": 1, "num_classes": 2, "base_channels": 4, "depth": 2, "padding": "same"}
    mk.update(model_kw or {})
    model = create_model("unet", **mk)
    save_checkpoint(path, "unet", mk, model, extra=extra(**kw))
    return model.eval()


# --------------------------------------------------------------------------- Gaussian map


@pytest.mark.parametrize("patch", [(32, 32), (33, 17), (16, 24, 8)])
def test_gaussian_importance_properties(patch):
    w = gaussian_importance(patch)
    assert w.shape == patch and w.dtype == np.float32
    assert w.min() > 0 and math.isclose(float(w.max()), 1.0, rel_tol=1e-6)
    # symmetric about the centre, so the peak is at (p - 1) / 2 (the central pixel(s))
    for axis in range(w.ndim):
        np.testing.assert_allclose(w, np.flip(w, axis), rtol=1e-6)
    centre = tuple(p // 2 for p in patch)
    assert w[centre] == w.max()
    # sigma = patch / 8: ratio between two pixels on the central line of axis 0
    p0 = patch[0]
    c = tuple((p - 1) / 2 for p in patch)
    i, j = p0 // 2, p0 // 2 + 2
    line = [slice(None)] + [p // 2 for p in patch[1:]]
    prof = w[tuple(line)].astype(np.float64)
    sigma = p0 / 8
    expect = math.exp(-((j - c[0]) ** 2 - (i - c[0]) ** 2) / (2 * sigma**2))
    assert math.isclose(prof[j] / prof[i], expect, rel_tol=1e-5)


@pytest.mark.parametrize("patch", [(32, 32), (21, 40), (16, 24, 8)])
def test_gaussian_importance_is_monai_map_up_to_scale(patch):
    ours = gaussian_importance(patch)
    theirs = compute_importance_map(patch, mode="gaussian", sigma_scale=0.125).numpy()
    ratio = ours / theirs
    np.testing.assert_allclose(ratio, ratio.flat[0], rtol=1e-5)


def test_window_starts_cover_and_match_hand_values():
    assert window_starts(10, 4, 0.5) == [0, 2, 4, 6]
    assert window_starts(11, 4, 0.5) == [0, 2, 4, 6, 7]
    assert window_starts(3, 4, 0.5) == [0]
    assert window_starts(100, 32, 0.0) == [0, 32, 64, 68]


# --------------------------------------------------------------------------- sliding windows


@pytest.mark.parametrize(
    "shape,patch,overlap,mode",
    [
        ((2, 1, 70, 53), (32, 32), 0.5, "gaussian"),
        ((1, 1, 20, 90), (32, 32), 0.25, "gaussian"),  # smaller than the patch along axis 0
        ((1, 1, 45, 64), (16, 32), 0.5, "constant"),
        ((1, 1, 30, 22, 19), (16, 16, 8), 0.5, "gaussian"),  # 3D
    ],
)
def test_sliding_window_matches_monai(shape, patch, overlap, mode):
    dims = len(shape) - 2
    net = small_net(dims, k=3)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    ours = sliding_window_inference(net, x, patch, overlap=overlap, mode=mode, batch_size=3)
    with torch.no_grad():
        ref = monai_sliding_window(x, patch, 3, net, overlap=overlap, mode=mode, sigma_scale=0.125)
    assert ours.shape == (shape[0], 3, *shape[2:])
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), atol=1e-5)


@pytest.mark.parametrize("shape", [(1, 1, 32, 32), (2, 1, 16, 16, 8)])
def test_fits_one_window_equals_whole_image(shape):
    net = small_net(len(shape) - 2)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    out = sliding_window_inference(net, x, shape[2:])
    with torch.no_grad():
        whole = net(x)
    np.testing.assert_allclose(out.numpy(), whole.numpy(), atol=1e-6)


def test_pointwise_model_equals_whole_image_for_any_size():
    # a 1x1 convolution sees no context: every window agrees, so any blend equals one pass
    torch.manual_seed(0)
    net = torch.nn.Conv2d(2, 3, 1).eval()
    x = torch.randn(1, 2, 75, 41)
    out = sliding_window_inference(net, x, (16, 16), overlap=0.5, output="probabilities")
    with torch.no_grad():
        ref = torch.softmax(net(x), 1)
    np.testing.assert_allclose(out.numpy(), ref.numpy(), atol=1e-6)


def test_probabilities_sum_to_one_and_windows_are_batched():
    net = small_net(2, k=4)
    sizes = []

    def counting(x):
        sizes.append(x.shape[0])
        return net(x)

    x = torch.randn(1, 1, 80, 80)
    out = sliding_window_inference(counting, x, (32, 32), batch_size=3, output="probabilities")
    np.testing.assert_allclose(out.sum(1).numpy(), 1.0, atol=1e-5)
    n_windows = len(window_starts(80, 32, 0.5)) ** 2
    assert sum(sizes) == n_windows and max(sizes) == 3


def test_tta_on_flip_equivariant_model_changes_nothing():
    torch.manual_seed(3)
    conv = torch.nn.Conv2d(1, 3, 3, padding=1)
    with torch.no_grad():  # symmetric kernels: the convolution commutes with both flips
        w = conv.weight
        w.copy_((w + w.flip(2) + w.flip(3) + w.flip(2, 3)) / 4)
    conv.eval()
    x = torch.randn(1, 1, 50, 37)
    plain = sliding_window_inference(conv, x, (32, 32), output="probabilities")
    tta = sliding_window_inference(conv, x, (32, 32), output="probabilities", tta=True)
    np.testing.assert_allclose(tta.numpy(), plain.numpy(), atol=1e-6)


def test_tta_averages_softmax_over_all_flips():
    net = small_net(3, k=2)
    x = torch.randn(1, 1, 8, 8, 8)
    out = sliding_window_inference(net, x, (8, 8, 8), tta=True, output="probabilities")
    with torch.no_grad():
        flips = [(), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4)]
        ref = sum(torch.softmax(net(x.flip(f)), 1).flip(f) for f in flips) / 8
    np.testing.assert_allclose(out.numpy(), ref.numpy(), atol=1e-6)
    assert len(flips) == 8
    np.testing.assert_allclose(flip_tta(net, x).numpy(), ref.numpy(), atol=1e-6)


@pytest.mark.parametrize(
    "axes, flips",
    [
        ([2], [(), (4,)]),
        ([0, 2], [(), (2,), (4,), (2, 4)]),
        ([], [()]),
        ([1, 1], [(), (3,)]),
    ],
)
def test_tta_mirrors_only_the_given_axes(axes, flips):
    net = small_net(3, k=2)
    x = torch.randn(1, 1, 8, 8, 8)
    with torch.no_grad():
        ref = sum(torch.softmax(net(x.flip(f)), 1).flip(f) for f in flips) / len(flips)
    np.testing.assert_allclose(flip_tta(net, x, axes=axes).numpy(), ref.numpy(), atol=1e-6)
    out = sliding_window_inference(
        net, x, (8, 8, 8), tta=True, tta_axes=axes, output="probabilities"
    )
    np.testing.assert_allclose(out.numpy(), ref.numpy(), atol=1e-6)


@pytest.mark.parametrize("axes", [[3], [-1], [True]])
def test_tta_rejects_axes_that_are_not_spatial(axes):
    with pytest.raises(ValueError, match="flip axes must be spatial axes in 0..2"):
        flip_tta(small_net(3, k=2), torch.zeros(1, 1, 8, 8, 8), axes=axes)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"overlap": 1.0}, "overlap"),
        ({"mode": "box"}, "mode"),
        ({"output": "masks"}, "output"),
        ({"batch_size": 0}, "batch_size"),
        ({"precision": "fp8"}, "precision"),
        ({"precision": "fp16"}, "needs CUDA"),
    ],
)
def test_sliding_window_rejects_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sliding_window_inference(small_net(), torch.zeros(1, 1, 8, 8), (8, 8), **kwargs)


def test_sliding_window_rejects_wrong_patch_and_model_output():
    with pytest.raises(ValueError, match="patch_size"):
        sliding_window_inference(small_net(), torch.zeros(1, 1, 8, 8), (8, 8, 8))
    with pytest.raises(ValueError, match="model must return"):
        sliding_window_inference(lambda x: x[..., :4], torch.zeros(1, 1, 8, 8), (8, 8))


@pytest.mark.parametrize(
    "precision,dtype", [("auto", None), ("fp32", None), ("bf16", torch.bfloat16)]
)
def test_sliding_window_runs_the_model_under_the_precision_asked(precision, dtype):
    seen = []

    def model(x):
        seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        return small_net()(x)

    sliding_window_inference(model, torch.zeros(1, 1, 8, 8), (8, 8), precision=precision)
    assert seen == [dtype]


def test_bf16_windows_give_nearly_the_float32_labels():
    net = small_net(k=3)
    x = torch.randn((1, 1, 60, 50), generator=torch.Generator().manual_seed(5))
    fp32 = sliding_window_inference(net, x, (32, 32), output="probabilities")
    bf16 = sliding_window_inference(net, x, (32, 32), output="probabilities", precision="bf16")
    # bfloat16 keeps 8 bits of mantissa: probabilities move by up to ~1e-2, labels rarely
    assert 0 < (bf16 - fp32).abs().max() < 3e-2
    assert (bf16.argmax(1) == fp32.argmax(1)).float().mean() > 0.97


# --------------------------------------------------------------------------- Predictor


def test_predictor_matches_manual_pipeline(tmp_path):
    model = make_ckpt(tmp_path / "run" / "best.safetensors", normalize="zscore")
    pred = Predictor(tmp_path / "run", device="cpu")
    image = np.random.default_rng(0).integers(0, 255, (32, 32)).astype(np.uint8)
    prob = pred.predict(image)
    x = torch.from_numpy(normalize(image[None], "zscore", channel_axis=0))[None]
    with torch.no_grad():
        ref = torch.softmax(model(x), 1)[0].numpy()
    np.testing.assert_allclose(prob, ref, atol=1e-5)
    assert pred.labels(prob).dtype == bool  # binary 0/255 model


@pytest.mark.parametrize(
    "dims, patch, asked, expected",
    [
        (2, [32, 32], None, 4),
        (3, [16, 16, 16], None, 1),  # 3D windows on the CPU: one per call
        (3, [1, 16, 16], None, 4),  # a slice-wise network's windows are 2D-sized
        (3, [16, 16, 16], 3, 3),
    ],
)
def test_predictor_windows_per_call(tmp_path, dims, patch, asked, expected):
    make_ckpt(tmp_path / "m.safetensors", model_kw={"dims": dims}, dims=dims, patch_size=patch)
    pred = Predictor(tmp_path / "m.safetensors", device="cpu", batch_size=asked)
    assert pred.batch_size == expected == pred.window_options()["batch_size"]


def test_predictor_rejects_a_batch_below_one(tmp_path):
    make_ckpt(tmp_path / "m.safetensors")
    with pytest.raises(ValueError, match="batch_size"):
        Predictor(tmp_path / "m.safetensors", device="cpu", batch_size=0)


@pytest.mark.parametrize(
    "flip_axes, flips",
    [(None, [(), (2,), (3,), (2, 3)]), ([1], [(), (3,)]), ([], [()])],
)
def test_predictor_tta_mirrors_the_axes_training_mirrored(tmp_path, flip_axes, flips):
    model = make_ckpt(tmp_path / "run" / "best.safetensors", flip_axes=flip_axes)
    pred = Predictor(tmp_path / "run", device="cpu", tta=True)
    image = np.random.default_rng(1).integers(0, 255, (32, 32)).astype(np.uint8)
    x = torch.from_numpy(normalize(image[None], "zscore", channel_axis=0))[None]
    with torch.no_grad():
        ref = sum(torch.softmax(model(x.flip(f)), 1).flip(f) for f in flips) / len(flips)
    np.testing.assert_allclose(pred.predict(image), ref[0].numpy(), atol=1e-5)


def test_ensemble_averages_the_members_softmax(tmp_path):
    models = [make_ckpt(tmp_path / f"m{i}.safetensors", seed=i) for i in range(3)]
    members = [Predictor(tmp_path / f"m{i}.safetensors", device="cpu") for i in range(3)]
    image = np.random.default_rng(2).integers(0, 255, (32, 32)).astype(np.uint8)  # one window
    x = torch.from_numpy(normalize(image[None], "zscore", channel_axis=0))[None]
    with torch.no_grad():  # oracle: the three networks' soft-max averaged by hand
        ref = sum(torch.softmax(m(x), 1)[0] for m in models).numpy() / 3
    ens = Ensemble(members)
    prob = ens.predict(image)
    np.testing.assert_allclose(prob, ref, atol=1e-5)
    assert prob.dtype == np.float32
    assert not np.allclose(prob, members[0].predict(image), atol=1e-3)  # the members differ
    np.testing.assert_allclose(Ensemble(members[:1]).predict(image), members[0].predict(image))
    assert ens.binary and ens.labels(prob).dtype == bool
    assert ens.paths == [tmp_path / f"m{i}.safetensors" for i in range(3)]
    assert members[0].paths == [tmp_path / "m0.safetensors"]


@pytest.mark.parametrize(
    "model_kw, kw, needle",
    [
        ({"num_classes": 3}, {"num_classes": 3}, "num_classes 3 differs from .*a.safetensors's 2"),
        ({"in_channels": 3}, {"in_channels": 3}, "in_channels 3 differs"),
        ({}, {"label_mapping": None}, "label_mapping None differs"),
        ({}, {"ignore_index": 255}, "ignore_index 255 differs"),
    ],
)
def test_ensemble_refuses_models_of_another_task(tmp_path, model_kw, kw, needle):
    make_ckpt(tmp_path / "a.safetensors")
    make_ckpt(tmp_path / "b.safetensors", model_kw=model_kw, **kw)
    members = [Predictor(tmp_path / f"{n}.safetensors", device="cpu") for n in "ab"]
    with pytest.raises(ValueError, match=needle) as err:
        Ensemble(members)
    assert "b.safetensors" in str(err.value)


def test_ensemble_needs_a_member():
    with pytest.raises(ValueError, match="at least one predictor"):
        Ensemble([])


def test_predictor_run_folder_falls_back_to_last(tmp_path):
    make_ckpt(tmp_path / "last.safetensors")
    assert resolve_checkpoint(tmp_path).name == "last.safetensors"
    make_ckpt(tmp_path / "best.safetensors")
    assert resolve_checkpoint(tmp_path).name == "best.safetensors"
    with pytest.raises(FileNotFoundError, match="run folder"):
        resolve_checkpoint(tmp_path / "nothing")


def test_predictor_resamples_to_target_spacing_and_back(tmp_path):
    model = make_ckpt(
        tmp_path / "c.safetensors",
        normalize="minmax",
        patch_size=[32, 32],
        target_spacing=[1.0, 1.0],
    )
    pred = Predictor(tmp_path / "c.safetensors", device="cpu")
    image = np.random.default_rng(1).random((64, 48)).astype(np.float32)
    prob = pred.predict(image, spacing=(0.5, 0.5))
    assert prob.shape == (2, 64, 48)
    np.testing.assert_allclose(prob.sum(0), 1.0, atol=1e-5)
    # the hand pipeline: normalise, resample to 32 x 24, predict, zoom back
    x = normalize(image[None], "minmax", channel_axis=0)
    x, _ = resample(x, (0.5, 0.5), (1.0, 1.0), channel_axis=0)
    assert x.shape == (1, 32, 24)
    small = sliding_window_inference(
        model, torch.from_numpy(x)[None], (32, 32), output="probabilities"
    )[0].numpy()
    ref = np.stack([ndi.zoom(p, 2, order=1, mode="nearest", grid_mode=True) for p in small])
    np.testing.assert_allclose(prob, ref, atol=1e-5)


def test_predictor_valid_unet_uses_overlap_tile(tmp_path):
    from segloc.nn.unet import overlap_tile_predict

    model = make_ckpt(
        tmp_path / "v.safetensors",
        model_kw={"padding": "valid"},
        normalize=None,
        patch_size=[44, 44],
    )
    pred = Predictor(tmp_path / "v.safetensors", device="cpu")
    image = np.random.default_rng(2).random((40, 30)).astype(np.float32)
    prob = pred.predict(image)
    ref = torch.softmax(overlap_tile_predict(model, torch.from_numpy(image)[None]), 0).numpy()
    np.testing.assert_allclose(prob, ref, atol=1e-5)
    with pytest.raises(ValueError, match="backend"):
        Predictor(tmp_path / "v.safetensors", backend="onnx")


def test_predictor_rgb_and_channel_errors(tmp_path):
    make_ckpt(tmp_path / "rgb.safetensors", model_kw={"in_channels": 3}, in_channels=3)
    pred = Predictor(tmp_path / "rgb.safetensors", device="cpu")
    rgb = np.random.default_rng(3).integers(0, 255, (40, 36, 3)).astype(np.uint8)
    assert pred.predict(rgb).shape == (2, 40, 36)
    with pytest.raises(ValueError, match="3 channel"):
        pred.predict(rgb[..., 0])


def test_predictor_rejects_checkpoint_without_extra(tmp_path):
    net = create_model("unet", in_channels=1, num_classes=2, base_channels=4, depth=2)
    save_checkpoint(
        tmp_path / "x.safetensors",
        "unet",
        {"in_channels": 1, "num_classes": 2, "base_channels": 4, "depth": 2},
        net,
    )
    with pytest.raises(CheckpointError, match="extra lacks"):
        Predictor(tmp_path / "x.safetensors")


def test_onnx_backend_equals_torch(tmp_path):
    make_ckpt(
        tmp_path / "o.safetensors", num_classes=3, model_kw={"num_classes": 3}, label_mapping=None
    )
    image = np.random.default_rng(4).random((50, 40)).astype(np.float32)
    a = Predictor(tmp_path / "o.safetensors", device="cpu").predict(image)
    b = Predictor(tmp_path / "o.safetensors", backend="onnx").predict(image)
    np.testing.assert_allclose(b, a, atol=1e-4)
    with pytest.raises(ValueError, match="float32"):
        Predictor(tmp_path / "o.safetensors", backend="onnx", precision="bf16")


def test_predictor_precision_reaches_the_windows(tmp_path):
    make_ckpt(tmp_path / "p.safetensors", num_classes=3, model_kw={"num_classes": 3})
    image = np.random.default_rng(6).random((50, 40)).astype(np.float32)
    a = Predictor(tmp_path / "p.safetensors", device="cpu").predict(image)
    bf16 = Predictor(tmp_path / "p.safetensors", device="cpu", precision="bf16")
    b = bf16.predict(image)
    assert "precision='bf16'" in repr(bf16)
    assert 0 < np.abs(b - a).max() < 3e-2
    with pytest.raises(ValueError, match="needs CUDA"):
        Predictor(tmp_path / "p.safetensors", device="cpu", precision="fp16")


def test_predictor_3d_volume(tmp_path):
    make_ckpt(
        tmp_path / "d.safetensors",
        model_kw={"dims": 3},
        dims=3,
        patch_size=[16, 16, 8],
    )
    vol = np.random.default_rng(5).random((20, 18, 9)).astype(np.float32)
    prob = Predictor(tmp_path / "d.safetensors", device="cpu").predict(vol, spacing=(1, 1, 2))
    assert prob.shape == (2, 20, 18, 9)
    np.testing.assert_allclose(prob.sum(0), 1.0, atol=1e-5)


def test_predictor_accepts_one_target_spacing_value_for_all_axes(tmp_path):
    make_ckpt(tmp_path / "s.safetensors", target_spacing=[2.0])
    pred = Predictor(tmp_path / "s.safetensors", device="cpu")
    assert pred.target_spacing == (2.0, 2.0)
    assert pred.predict(np.zeros((40, 30), np.float32), spacing=(1.0, 1.0)).shape == (2, 40, 30)
