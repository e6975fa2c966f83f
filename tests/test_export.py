"""Tests for segloc.nn.export: ONNX Runtime must reproduce PyTorch's logits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import segloc.nn.export as export_mod
from segloc.nn.checkpoint import save_checkpoint
from segloc.nn.export import OnnxPredictor, export_checkpoint, export_onnx
from segloc.nn.unet import UNet, unet3d


def torch_logits(net: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return net.eval()(torch.from_numpy(x)).numpy()


def input_dims(path: Path) -> list:
    shape = onnx.load(str(path)).graph.input[0].type.tensor_type.shape
    return [d.dim_param or d.dim_value for d in shape.dim]


def test_checkpoint_export_2d_same_matches_pytorch(tmp_path):
    torch.manual_seed(0)
    kwargs = {
        "in_channels": 1,
        "num_classes": 2,
        "base_channels": 8,
        "padding": "same",
        "norm": "batch",
    }
    net = UNet(**kwargs)
    with torch.no_grad():  # non-trivial batch-norm statistics
        net.train()(torch.randn(2, 1, 32, 32) * 3 + 1)
    ckpt = save_checkpoint(tmp_path / "m.safetensors", "unet", kwargs, net)
    out = export_checkpoint(ckpt, tmp_path / "m.onnx")
    assert out == tmp_path / "m.onnx"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "m.onnx",
        "m.safetensors",
    ]  # weights inside
    predictor = OnnxPredictor(out)
    rng = np.random.default_rng(0)
    for shape in [(1, 1, 16, 16), (2, 1, 48, 80)]:  # other batch and spatial sizes than traced
        x = rng.standard_normal(shape, dtype=np.float32)
        got = predictor(x)
        assert got.shape == (shape[0], 2, *shape[2:])
        np.testing.assert_allclose(got, torch_logits(net, x), rtol=0, atol=1e-4)


def test_export_3d_matches_pytorch(tmp_path):
    torch.manual_seed(1)
    net = unet3d(1, 3, base_channels=4)
    with torch.no_grad():
        net.train()(torch.randn(2, 1, 16, 16, 16))
    path = export_onnx(net, tmp_path / "m3.onnx", example_shape=(1, 1, 16, 24, 16))
    predictor = OnnxPredictor(path)
    x = np.random.default_rng(1).standard_normal((1, 1, 24, 16, 32), dtype=np.float32)
    np.testing.assert_allclose(predictor(x), torch_logits(net, x), rtol=0, atol=1e-4)
    with pytest.raises(
        ValueError, match=r"image must have 5 axes \(N, C, \*spatial\), got shape \(1, 24, 16, 32\)"
    ):
        predictor(x[0])


@pytest.mark.parametrize(
    "kwargs, example, dims, other",
    [
        # a coarse axis pooled once: its own grid (2), not 2**depth
        ({"pools": [[2, 2, 1], [2, 2, 2]]}, (1, 1, 16, 24, 4), ["4*t0", "4*t1", "2*t2"],
         (2, 1, 16, 32, 6)),
        # 2D layers on every slice: batch free, the slice axis as traced (one window's)
        ({"slice_axis": 2}, (1, 1, 16, 24, 1), ["4*t0", "4*t1", 1], (3, 1, 24, 16, 1)),
    ],
)  # fmt: skip
def test_export_anisotropic_and_slice_wise_unets(tmp_path, kwargs, example, dims, other):
    torch.manual_seed(3)
    net = UNet(1, 3, base_channels=4, depth=2, padding="same", dims=3, norm="instance", **kwargs)
    path = export_onnx(net, tmp_path / "a.onnx", example_shape=example)
    assert input_dims(path)[0] == "batch" and input_dims(path)[2:] == dims
    x = np.random.default_rng(3).standard_normal(other, dtype=np.float32)
    np.testing.assert_allclose(OnnxPredictor(path)(x), torch_logits(net, x), rtol=0, atol=1e-4)


def test_export_valid_padding_keeps_valid_sizes_dynamic(tmp_path):
    torch.manual_seed(2)
    net = UNet(2, 3, base_channels=4, depth=2, norm="instance")
    # Traced at the smallest valid size 44 (exported one grid step larger internally).
    path = export_onnx(net, tmp_path / "v.onnx", example_shape=(1, 2, 44, 44))
    assert net.training  # mode restored
    predictor = OnnxPredictor(path)
    x = np.random.default_rng(2).standard_normal((3, 2, 44, 60), dtype=np.float32)
    got = predictor(x)
    assert got.shape == (3, 3, 4, 20)
    np.testing.assert_allclose(got, torch_logits(net, x), rtol=0, atol=1e-4)


def test_export_static_spatial(tmp_path):
    net = UNet(1, 2, base_channels=2, depth=2, padding="same")
    path = export_onnx(net, tmp_path / "s.onnx", example_shape=(1, 1, 8, 12), dynamic_spatial=False)
    dims = input_dims(path)
    assert isinstance(dims[0], str) and dims[1:] == [1, 8, 12]
    x = np.zeros((2, 1, 8, 12), np.float32)
    np.testing.assert_allclose(OnnxPredictor(path)(x), torch_logits(net, x), rtol=0, atol=1e-4)


@pytest.mark.parametrize("arena, threads", [(False, None), (True, 1), (False, 2)])
def test_predictor_session_options_keep_the_logits(tmp_path, arena, threads):
    net = UNet(1, 2, base_channels=2, depth=2, padding="same")
    path = export_onnx(net, tmp_path / "s.onnx", example_shape=(1, 1, 8, 12))
    predictor = OnnxPredictor(path, memory_arena=arena, threads=threads)
    options = predictor.session.get_session_options()
    assert options.enable_cpu_mem_arena is arena
    assert options.intra_op_num_threads == (threads or 0)  # 0: ONNX Runtime's own choice
    x = np.random.default_rng(0).normal(size=(3, 1, 16, 12)).astype(np.float32)
    np.testing.assert_allclose(predictor(x), torch_logits(net, x), rtol=0, atol=1e-4)


def test_export_rejects_bad_example_before_writing(tmp_path):
    net = UNet(1, 2, base_channels=2, depth=2, padding="same")
    with pytest.raises(ValueError, match="input size 10x12 is not valid .* use 12x12"):
        export_onnx(net, tmp_path / "x.onnx", example_shape=(1, 1, 10, 12))
    with pytest.raises(
        ValueError, match=r"example_shape must be \(N, C, H, W\) or \(N, C, D, H, W\)"
    ):
        export_onnx(net, tmp_path / "x.onnx", example_shape=(1, 8, 8))
    assert list(tmp_path.iterdir()) == []


def test_failed_export_leaves_nothing(tmp_path, monkeypatch):
    def half_export(model, args, f, **kw):
        Path(f).write_bytes(b"partial")
        raise RuntimeError("exporter failed")

    monkeypatch.setattr(export_mod.torch.onnx, "export", half_export)
    target = tmp_path / "m.onnx"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="exporter failed"):
        export_onnx(
            UNet(1, 2, base_channels=2, depth=2, padding="same"), target, example_shape=(1, 1, 8, 8)
        )
    assert target.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [target]


def test_predictor_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"^{tmp_path / 'none.onnx'}: no such ONNX file$"):
        OnnxPredictor(tmp_path / "none.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not onnx")
    with pytest.raises(ValueError, match=rf"^{junk}: not a loadable ONNX model"):
        OnnxPredictor(junk)
    with pytest.raises(ValueError, match="threads must be an int >= 1 or None, got 0"):
        OnnxPredictor(junk, threads=0)
