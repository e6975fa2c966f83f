"""Faults injected into training and writing: a kill mid-write, a full disk, damaged run files,
a loss that turns NaN, a data worker that dies. Nothing is lost beyond one checkpoint interval,
and every failure is one clear error naming what it concerns."""

from __future__ import annotations

import errno
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from segloc import io
from segloc.engine import run as engine_run
from segloc.engine.run import MAX_NONFINITE, NonFiniteLoss, load_training_state
from segloc.engine.train import train
from segloc.nn.checkpoint import CheckpointError, load_checkpoint


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _disks(root: Path, n: int = 6) -> Path:
    rng = np.random.default_rng(0)
    grid = np.indices((32, 32))
    for i in range(n):
        c = rng.uniform(10, 22, 2)
        mask = ((grid - c.reshape(2, 1, 1)) ** 2).sum(0) < 49
        image = np.clip(60 + 120 * mask + rng.normal(0, 20, mask.shape), 0, 255).astype(np.uint8)
        io.write_image(root / "images" / f"c{i}.png", image)
        io.write_mask(root / "labels" / f"c{i}.png", mask)
    return root


def _cfg(data: Path, out: Path, **kw) -> dict:
    cfg = dict(
        data=str(data),
        out=str(out),
        base_channels=4,
        depth=2,
        batch=2,
        samples_per_epoch=4,
        epochs=3,
        augment="light",
        device="cpu",
        panels=0,
        threads=1,
    )
    cfg.update(kw)
    return cfg


# --------------------------------------------------------------------------- kill mid-write

WRITER = textwrap.dedent(
    """
    import sys, numpy as np, torch
    from segloc import io
    from segloc.nn import create_model
    from segloc.nn.checkpoint import save_checkpoint
    target, kind = sys.argv[1], sys.argv[2]
    kw = {"in_channels": 1, "num_classes": 2, "base_channels": 8, "depth": 2}
    models = [create_model("unet", **kw) for _ in range(2)]
    for i, m in enumerate(models):
        for p in m.parameters():
            torch.nn.init.constant_(p, float(i + 1))
    masks = [np.zeros((512, 512), bool), np.ones((512, 512), bool)]
    print("ready", flush=True)
    i = 0
    while True:
        if kind == "checkpoint":
            save_checkpoint(target, "unet", kw, models[i % 2])
        else:
            io.write_mask(target, masks[i % 2])
        i += 1
    """
)


@pytest.mark.parametrize("kind", ["checkpoint", "mask"])
def test_a_kill_mid_write_leaves_the_old_file_or_the_new_one(tmp_path, kind):
    target = tmp_path / ("m.safetensors" if kind == "checkpoint" else "m.png")
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    seen = set()
    for delay in np.linspace(0.05, 0.6, 10):  # ten kill points across the write cycle
        proc = subprocess.Popen(
            [sys.executable, str(script), str(target), kind], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(float(delay))
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        proc.stdout.close()
        if not target.exists():
            continue  # killed before the first rename
        if kind == "checkpoint":
            _, _, state, _ = load_checkpoint(target)  # raises if torn
            value = float(next(iter(state.values())).flatten()[0])
        else:
            value = float(io.read_mask(target)[0].mean())
        assert value in (0.0, 1.0, 2.0), value
        seen.add(value)
    assert seen, "no kill landed after a complete write"


# --------------------------------------------------------------------------- a full disk


def _full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_during_training_keeps_the_last_state_and_resumes(tmp_path, monkeypatch):
    data = _disks(tmp_path / "d")
    out = tmp_path / "r"
    real = engine_run.save_training_state

    def full_at_epoch_2(path, state):
        if state["epoch"] == 2:
            _full_disk()
        return real(path, state)

    monkeypatch.setattr(engine_run, "save_training_state", full_at_epoch_2)
    with pytest.raises(OSError, match="No space left on device"):
        train(_cfg(data, out), progress=False)
    assert load_training_state(out / "state.pt")["epoch"] == 1
    assert not [p for p in out.iterdir() if ".tmp" in p.name]  # no temporary file left
    monkeypatch.setattr(engine_run, "save_training_state", real)
    done = train(_cfg(data, out, resume=True), progress=False)
    assert done.epochs == 3


def test_disk_full_during_predict_writes_nothing(tmp_path, monkeypatch):
    from segloc.engine import infer
    from segloc.engine.infer import Predictor, predict_to_folder
    from segloc.nn import create_model
    from segloc.nn.checkpoint import save_checkpoint

    kw = {"in_channels": 1, "num_classes": 2, "base_channels": 4, "depth": 2, "padding": "same"}
    meta = {"dims": 2, "in_channels": 1, "num_classes": 2, "patch_size": [32, 32]}
    save_checkpoint(
        tmp_path / "run" / "best.safetensors", "unet", kw, create_model("unet", **kw), extra=meta
    )
    images = _disks(tmp_path / "d") / "images"
    out = tmp_path / "out"
    out.mkdir()
    (out / "earlier.txt").write_text("an earlier output")
    calls = {"n": 0}
    real = infer.write_mask

    def fill_up(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            _full_disk()
        return real(*args, **kwargs)

    monkeypatch.setattr(infer, "write_mask", fill_up)
    with pytest.raises(OSError, match="No space left on device"):
        predict_to_folder(Predictor(tmp_path / "run", device="cpu"), [images], out, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["earlier.txt"]


# --------------------------------------------------------------------------- damaged run files


@pytest.mark.parametrize("damage", ["truncate", "garbage", "pickle"])
def test_damaged_run_files_are_named_and_never_unpickled(tmp_path, monkeypatch, damage):
    data = _disks(tmp_path / "d")
    out = tmp_path / "r"
    train(_cfg(data, out, epochs=1), progress=False)

    class Boom:
        def __reduce__(self):
            return (os.system, ("echo unpickled > " + str(tmp_path / "marker"),))

    for name in ("state.pt", "best.safetensors", "config.yaml"):
        path = out / name
        if damage == "truncate":
            path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
        elif damage == "garbage":
            path.write_bytes(b"\x00\xff" * 100)
        else:
            path.write_bytes(pickle.dumps({"model": Boom()}))
    with pytest.raises(ValueError, match="state.pt: not a training state"):
        train(_cfg(data, out, epochs=2, resume=True), progress=False)
    with pytest.raises(CheckpointError, match="best.safetensors"):
        load_checkpoint(out / "best.safetensors")
    from segloc.engine.config import TrainConfig

    with pytest.raises(ValueError, match="config.yaml"):
        TrainConfig.from_yaml(out / "config.yaml")
    assert not (tmp_path / "marker").exists()


def test_a_run_config_cut_between_keys_is_refused(tmp_path):
    """Cut at a line end, a run's config.yaml is still valid YAML: its last line says it is
    whole. A config a person writes (no first line of a run's) needs none."""
    from segloc.engine.config import TrainConfig
    from segloc.engine.run import RUN_CONFIG_START, RunFolder

    run = RunFolder(tmp_path / "r")
    run.create({"data": "d", "epochs": 3, "lr": 0.002}, {"train": ["a"], "val": ["b"]})
    text = run.config.read_text()
    assert TrainConfig.from_yaml(run.config).lr == 0.002
    lines = text.splitlines(keepends=True)
    for cut in (len(lines) - 1, 2, 1):
        run.config.write_text("".join(lines[:cut]))
        with pytest.raises(ValueError, match=r"r/config.yaml: cut short"):
            TrainConfig.from_yaml(run.config)
    run.config.write_text(RUN_CONFIG_START[:7])
    with pytest.raises(ValueError, match="cut short"):
        TrainConfig.from_yaml(run.config)
    mine = tmp_path / "mine.yaml"
    mine.write_text("data: d\nepochs: 3\n")
    assert TrainConfig.from_yaml(mine).epochs == 3


# --------------------------------------------------------------------------- NaN loss


class _NanAfter(torch.nn.Module):
    """Wraps a loss; returns NaN on the steps listed (0-based calls)."""

    def __init__(self, loss, nan_steps):
        super().__init__()
        self.loss, self.nan_steps, self.calls = loss, set(nan_steps), 0

    def forward(self, *args):
        value = self.loss(*args)
        step, self.calls = self.calls, self.calls + 1
        return value * float("nan") if step in self.nan_steps else value


def test_nan_losses_skip_the_step_then_stop_the_run(tmp_path, monkeypatch):
    import segloc.engine.train as engine_train

    real = engine_train._loss
    data = _disks(tmp_path / "d")
    monkeypatch.setattr(engine_train, "_loss", lambda cfg: _NanAfter(real(cfg), {1, 3}))
    done = train(_cfg(data, tmp_path / "a", epochs=2), progress=False)
    assert sum(r.get("skipped_steps", 0) for r in done.history) == 2
    assert all(torch.isfinite(p).all() for p in done.model.parameters())
    # the policy's limit: so many in a row stop the run, naming the step
    monkeypatch.setattr(engine_train, "_loss", lambda cfg: _NanAfter(real(cfg), set(range(2, 100))))
    with pytest.raises(NonFiniteLoss, match=f"step {2 + MAX_NONFINITE}"):
        train(_cfg(data, tmp_path / "b", epochs=5), progress=False)
    assert load_training_state(tmp_path / "b" / "state.pt")["epoch"] >= 0


# --------------------------------------------------------------------------- a worker dies


def test_a_killed_data_worker_is_a_clear_error_not_a_hang(tmp_path, monkeypatch):
    from segloc.engine.patches import SegmentationDataset

    data = _disks(tmp_path / "d")
    marker = tmp_path / "kill-now"
    real_item, real_save = SegmentationDataset.__getitem__, engine_run.save_training_state

    def item(self, index):
        if marker.exists():  # checked inside the worker process
            os.kill(os.getpid(), signal.SIGKILL)
        return real_item(self, index)

    def save_then_arm(path, state):
        real_save(path, state)
        marker.touch()  # epoch 1 is on disk: the next epoch's worker dies

    monkeypatch.setattr(SegmentationDataset, "__getitem__", item)
    monkeypatch.setattr(engine_run, "save_training_state", save_then_arm)
    start = time.time()
    with pytest.raises(ChildProcessError, match="data-loading worker died in epoch 2"):
        train(_cfg(data, tmp_path / "r", workers=1), progress=False)
    assert time.time() - start < 120
    assert load_training_state(tmp_path / "r" / "state.pt")["epoch"] == 1
