"""Tests for segloc.nn.checkpoint: round trips, the on-disk format (read back with safetensors
itself), and refusal of anything that would need unpickling."""

from __future__ import annotations

import copy
import functools
import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import segloc.nn.checkpoint as ckpt
from segloc.nn import create_model
from segloc.nn.checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint

KWARGS = {
    "in_channels": 1,
    "num_classes": 3,
    "base_channels": 4,
    "depth": 2,
    "padding": "same",
    "norm": "batch",
}


def trained(name: str, kwargs: dict) -> torch.nn.Module:
    """A model whose weights and batch-norm statistics are no longer the initial ones."""
    return copy.deepcopy(_trained(name, json.dumps(kwargs, sort_keys=True)))


@functools.cache
def _trained(name: str, kwargs_json: str) -> torch.nn.Module:
    kwargs = json.loads(kwargs_json)
    torch.manual_seed(0)
    net = create_model(name, **kwargs)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(2):
        x = torch.randn(2, kwargs["in_channels"], *net.valid_input_size(16))
        loss = net(x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("unet", KWARGS),
        (
            "unet",
            {
                "in_channels": 2,
                "num_classes": 2,
                "base_channels": 2,
                "depth": 2,
                "norm": "instance",
                "up": "bilinear",
            },
        ),
        ("unet3d", {"in_channels": 1, "num_classes": 2, "base_channels": 2}),
    ],
)
def test_round_trip_gives_bitwise_equal_outputs(tmp_path, name, kwargs):
    net = trained(name, kwargs)
    path = save_checkpoint(
        tmp_path / "m.safetensors", name, kwargs, net, extra={"epoch": 3, "dice": 0.5}
    )
    assert path == tmp_path / "m.safetensors"
    loaded = load_model(path)
    assert type(loaded) is type(net) and not loaded.training
    x = torch.randn(1, kwargs["in_channels"], *net.valid_input_size(16))
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))
    for (k1, v1), (k2, v2) in zip(
        net.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert k1 == k2 and torch.equal(v1, v2)
    got_name, got_kwargs, state, extra = load_checkpoint(path)
    assert (got_name, got_kwargs, extra) == (name, kwargs, {"epoch": 3, "dice": 0.5})
    assert state.keys() == net.state_dict().keys()


def test_file_is_plain_safetensors_with_segloc_metadata(tmp_path):
    net = trained("unet", KWARGS)
    path = save_checkpoint(tmp_path / "m.safetensors", "unet", KWARGS, net)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        assert set(meta) == {"segloc_model", "segloc_kwargs", "segloc_extra"}
        assert meta["segloc_model"] == "unet"
        assert json.loads(meta["segloc_kwargs"]) == KWARGS
        assert json.loads(meta["segloc_extra"]) == {}
        assert set(f.keys()) == set(net.state_dict())
        key = "encoder.0.1.running_mean"
        assert torch.equal(f.get_tensor(key), net.state_dict()[key])
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_pt_dict_is_accepted(tmp_path):
    net = trained("unet", KWARGS)
    path = tmp_path / "m.pt"
    torch.save(
        {"model": "unet", "kwargs": KWARGS, "state_dict": net.state_dict(), "extra": {"a": 1}}, path
    )
    name, kwargs, state, extra = load_checkpoint(path)
    assert (name, kwargs, extra) == ("unet", KWARGS, {"a": 1})
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(load_model(path)(x), net(x))


class Boom:
    """Unpickling this object would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("payload", ["object", "dict-with-object"])
def test_pickled_objects_are_refused_and_never_run(tmp_path, payload):
    marker = tmp_path / "pwned"
    obj = Boom(marker)
    if payload == "dict-with-object":
        obj = {"model": "unet", "kwargs": KWARGS, "state_dict": {}, "extra": obj}
    path = tmp_path / "evil.pt"
    with path.open("wb") as fh:
        pickle.dump(obj, fh, protocol=2)  # legacy (non-zip) torch files are pickle streams
    with pytest.raises(
        CheckpointError, match=rf"^{path}: not a segloc checkpoint \(refused by torch.load"
    ):
        load_checkpoint(path)
    zipped = tmp_path / "evil_zip.pt"
    torch.save(obj, zipped)
    with pytest.raises(CheckpointError, match=rf"^{zipped}: not a segloc checkpoint"):
        load_model(zipped)
    assert not marker.exists()


def test_missing_file(tmp_path):
    path = tmp_path / "nope.safetensors"
    with pytest.raises(
        FileNotFoundError, match=rf"^{path}: no such checkpoint file or run folder$"
    ):
        load_model(path)


def test_safetensors_without_segloc_metadata(tmp_path):
    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(
        CheckpointError, match=rf"^{path}: not a segloc checkpoint \(no segloc_model"
    ):
        load_checkpoint(path)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_garbage_file(tmp_path, suffix):
    path = tmp_path / f"junk{suffix}"
    path.write_bytes(b"this is not a checkpoint at all")
    with pytest.raises(CheckpointError, match=rf"^{path}: not a segloc checkpoint"):
        load_checkpoint(path)


def test_pt_dict_without_required_keys(tmp_path):
    path = tmp_path / "sd.pt"
    torch.save({"encoder.0.0.weight": torch.zeros(1)}, path)  # a bare state dict
    with pytest.raises(
        CheckpointError, match=r"expected a dict with keys \['kwargs', 'model', 'state_dict'\]"
    ):
        load_checkpoint(path)


def test_wrong_tensors_name_the_file(tmp_path):
    net = trained("unet", KWARGS)
    path = save_checkpoint(tmp_path / "m.safetensors", "unet", {**KWARGS, "base_channels": 8}, net)
    with pytest.raises(CheckpointError) as err:
        load_model(path)
    # Every weight but head.bias and the batch-norm counters: 3 blocks x 10 (2 convs, 2 x 4
    # batch-norm tensors) + 2 decoder levels x 12 (up-conv weight and bias, a block) + head.weight.
    assert str(err.value) == (
        f"{path}: weights do not fit model 'unet': 55 tensors of the wrong shape "
        "(encoder.0.0.weight: (4, 1, 3, 3) stored, (8, 1, 3, 3) expected; ...)"
    )
    path2 = tmp_path / "m2.pt"
    state = dict(net.state_dict())
    del state["head.bias"]
    torch.save({"model": "unet", "kwargs": KWARGS, "state_dict": state}, path2)
    with pytest.raises(
        CheckpointError,
        match=rf"^{path2}: weights do not fit model 'unet': 1 missing \(head.bias\)$",
    ):
        load_model(path2)
    path3 = tmp_path / "m3.pt"
    state = {**net.state_dict(), "extra.weight": torch.zeros(1), "extra.bias": torch.zeros(1)}
    torch.save({"model": "unet", "kwargs": KWARGS, "state_dict": state}, path3)
    with pytest.raises(CheckpointError, match=r"2 unexpected \(extra.bias, extra.weight\)$"):
        load_model(path3)


def test_unbuildable_kwargs_name_the_file(tmp_path):
    net = trained("unet", KWARGS)
    path = save_checkpoint(tmp_path / "m.safetensors", "unet", {**KWARGS, "padding": "full"}, net)
    with pytest.raises(
        CheckpointError, match=rf"^{path}: cannot rebuild model 'unet': padding must be"
    ):
        load_model(path)


def test_save_argument_errors(tmp_path):
    net = trained("unet", KWARGS)
    with pytest.raises(
        ValueError,
        match=r"model_name must be one of \['box_localizer', 'unet', 'unet3d', 'unetpp', 'vnet'\]",
    ):
        save_checkpoint(tmp_path / "a.safetensors", "resnet", KWARGS, net)
    with pytest.raises(TypeError, match="kwargs must be JSON-serialisable"):
        save_checkpoint(tmp_path / "a.safetensors", "unet", {**KWARGS, "x": object()}, net)
    with pytest.raises(TypeError, match="extra must be a dict or None"):
        save_checkpoint(tmp_path / "a.safetensors", "unet", KWARGS, net, extra=[1])
    assert list(tmp_path.iterdir()) == []


def test_failed_save_keeps_the_old_file(tmp_path, monkeypatch):
    net = trained("unet", KWARGS)
    path = save_checkpoint(tmp_path / "m.safetensors", "unet", KWARGS, net)
    before = path.read_bytes()

    def half_write(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "save_file", half_write)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, "unet", KWARGS, net, extra={"epoch": 9})
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]


def test_load_model_device_and_mode(tmp_path):
    net = trained("unet", KWARGS).train()
    path = save_checkpoint(tmp_path / "m.safetensors", "unet", KWARGS, net)
    loaded = load_model(path, device=torch.device("cpu"))
    assert not loaded.training
    assert all(p.device.type == "cpu" for p in loaded.parameters())


# --------------------------------------------------------------------------- run folders, metadata


def test_run_folders_resolve_to_best_then_last(tmp_path):
    from segloc.nn.checkpoint import resolve_checkpoint

    kwargs = {"in_channels": 1, "num_classes": 2, "base_channels": 4, "depth": 2}
    net = create_model("unet", **kwargs)
    save_checkpoint(tmp_path / "last.safetensors", "unet", kwargs, net)
    assert resolve_checkpoint(tmp_path) == tmp_path / "last.safetensors"
    save_checkpoint(tmp_path / "best.safetensors", "unet", kwargs, net)
    assert resolve_checkpoint(tmp_path) == tmp_path / "best.safetensors"
    assert load_model(tmp_path).depth == 2
    with pytest.raises(FileNotFoundError, match="run folder without best.safetensors"):
        resolve_checkpoint(tmp_path / "empty" if (tmp_path / "empty").mkdir() is None else "")


def test_absurd_model_arguments_are_refused_before_memory_is_taken(tmp_path):
    """Metadata asking for a million base channels: refused on the meta device (a real
    build would try to allocate terabytes)."""
    kwargs = {"in_channels": 1, "num_classes": 2, "base_channels": 4, "depth": 2}
    path = save_checkpoint(
        tmp_path / "m.safetensors", "unet", kwargs, create_model("unet", **kwargs)
    )
    forged = tmp_path / "forged.safetensors"
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = dict(f.metadata())
    meta["segloc_kwargs"] = json.dumps({**kwargs, "base_channels": 1_000_000})
    save_file(tensors, str(forged), metadata=meta)
    with pytest.raises(CheckpointError, match="weights do not fit model 'unet'"):
        load_model(forged)


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ({}, r"lacks \['dims', 'in_channels', 'num_classes', 'patch_size'\]"),
        ({"dims": 4, "in_channels": 1, "num_classes": 2, "patch_size": [8]}, "dims must be 2 or 3"),
        ({"dims": 2, "in_channels": 0, "num_classes": 2, "patch_size": [8, 8]}, "in_channels"),
        (
            {"dims": 2, "in_channels": 1, "num_classes": 2, "patch_size": [8]},
            "patch_size must be 2",
        ),
        (
            {
                "dims": 3,
                "in_channels": 1,
                "num_classes": 2,
                "patch_size": [8] * 3,
                "target_spacing": [1.0, float("nan"), 1.0],
            },
            "target_spacing must be 3 positive numbers",
        ),
    ],
)
def test_checkpoint_meta_refuses_bad_records(extra, match):
    from segloc.nn.checkpoint import CheckpointMeta

    with pytest.raises(CheckpointError, match=f"x.safetensors: checkpoint .*{match}"):
        CheckpointMeta.from_extra(extra, path="x.safetensors")


def test_checkpoint_meta_round_trip():
    from segloc.nn.checkpoint import CheckpointMeta

    meta = CheckpointMeta(3, 1, 3, (32, 32, 16), target_spacing=(1.0, 1.0, 2.5), flip_axes=(0, 1))
    extra = json.loads(json.dumps(meta.to_extra()))
    assert CheckpointMeta.from_extra(extra) == meta
    # one spacing value means every axis, as the trainer's config allows
    one = CheckpointMeta.from_extra({**extra, "target_spacing": 2.0})
    assert one.target_spacing == (2.0, 2.0, 2.0)
    # a Dice that is not finite is written as null, not as an invalid JSON number
    assert CheckpointMeta(2, 1, 2, (8, 8), val_dice=float("nan")).to_extra()["val_dice"] is None
