"""Tests of segloc.engine.train: settings, schedules, run folder, exact resume, kill, DDP."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.optim.swa_utils import AveragedModel

from segloc import io
from segloc.engine.run import (
    STATE_FILE,
    load_training_state,
    lr_factor,
    parse_duration,
    rng_state,
    save_training_state,
    set_rng_state,
)
from segloc.engine.train import TrainConfig, ema_update, train
from segloc.nn.checkpoint import load_checkpoint, load_model


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _disks(root: Path, n: int = 8, size: int = 32, dims: int = 2, seed: int = 0) -> Path:
    """A dataset of bright noisy disks (balls) on a dark background: images/ + labels/."""
    rng = np.random.default_rng(seed)
    grid = np.indices((size,) * dims)
    for i in range(n):
        centre = rng.uniform(size * 0.3, size * 0.7, dims)
        radius = rng.uniform(size * 0.15, size * 0.3)
        mask = ((grid - centre.reshape((dims,) + (1,) * dims)) ** 2).sum(0) < radius**2
        image = 60 + 120 * mask + rng.normal(0, 25, mask.shape)
        image = np.clip(image, 0, 255).astype(np.uint8)
        suffix = ".png" if dims == 2 else ".nii.gz"
        io.write_image(root / "images" / f"c{i}{suffix}", image)
        io.write_mask(root / "labels" / f"c{i}{suffix}", mask)
    return root


def _rows(path: Path) -> list[dict]:
    return list(csv.DictReader(path.read_text().splitlines()))


def _config(data: Path, out: Path, **kw) -> dict:
    cfg = dict(
        data=str(data),
        out=str(out),
        base_channels=4,
        depth=2,
        batch=2,
        samples_per_epoch=4,
        epochs=2,
        augment="light",
        device="cpu",
        panels=1,
        threads=1,
    )
    cfg.update(kw)
    return cfg


# --------------------------------------------------------------------------- small pieces


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("20m", 1200.0), ("1h30m", 5400.0), ("90s", 90.0), ("45", 45.0), (2.5, 2.5), ("1.5h", 5400)],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "10 minutes", "-5", 0, "0m", True])
def test_parse_duration_rejects(text):
    with pytest.raises((ValueError, TypeError)):
        parse_duration(text)


@pytest.mark.parametrize(
    ("schedule", "t", "expected"),
    [
        ("poly", 0.0, 1.0),
        ("poly", 0.5, 0.5**0.9),  # nnU-Net: (1 - epoch / max_epochs) ** 0.9
        ("poly", 1.0, 0.0),
        ("cosine", 0.25, (1 + math.cos(math.pi / 4)) / 2),
        ("cosine", 1.0, 0.0),
        ("constant", 0.9, 1.0),
    ],
)
def test_lr_factor(schedule, t, expected):
    assert lr_factor(schedule, t) == pytest.approx(expected)


def test_rng_state_round_trip():
    state = rng_state()
    a = (np.random.random(), torch.rand(3))  # noqa: NPY002 (the global state is under test)
    set_rng_state(state)
    b = (np.random.random(), torch.rand(3))  # noqa: NPY002
    assert a[0] == b[0] and torch.equal(a[1], b[1])


def test_training_state_is_not_unpickled(tmp_path):
    save_training_state(tmp_path / "s.pt", {"epoch": 3, "w": torch.ones(2), "rng": rng_state()})
    assert load_training_state(tmp_path / "s.pt")["epoch"] == 3

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="evil.pt: not a training state"):
        load_training_state(tmp_path / "evil.pt")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"epochs": None}, "epochs or time_budget"),
        ({"model": "resnet"}, "model must be one of"),
        ({"optimizer": "adam"}, "optimizer must be one of"),
        ({"batch": 0}, "batch must be an int >= 1"),
        ({"time_budget": "soon"}, "duration must look like"),
        ({"deep_supervision": True}, "deep_supervision is for model 'unetpp'"),
        ({"classes": 1}, "classes must be an int >= 2"),
        ({"patch": [16, 0]}, "patch must be positive ints"),
        ({"val_split": "first"}, r"val_split must be one of \['random', 'last'\]"),
        ({"ema": 1.0}, r"ema must be a decay in \(0, 1\) or None, got 1.0"),
        ({"ema": True}, "ema must be a decay"),
        ({"border_weight": -1.0}, "border_weight must be >= 0, got -1.0"),
        ({"border_weight": True}, "border_weight must be a number, got True"),
        ({"border_sigma": 0}, "border_sigma must be > 0, got 0"),
        ({"border_weight": 10, "loss": "dice"}, "loss 'dice' has none"),
        ({"augment_kwargs": {"flip": 1}}, r"unknown Augmenter setting\(s\) \['flip'\]"),
        ({"augment_kwargs": [1]}, "augment_kwargs must be a mapping"),
        ({"augment": "none", "augment_kwargs": {"p_flip": 0}}, "not 'none'"),
        ({"foreground_cases": "yes"}, "foreground_cases must be true or false, got 'yes'"),
        ({"resume": 1}, "resume must be true or false, got 1"),
    ],
)
def test_config_rejects(settings, message):
    cfg = TrainConfig.from_dict({"data": "d", "epochs": 1, **settings})
    with pytest.raises(ValueError, match=message):
        cfg.validate()


@pytest.mark.parametrize("move", [True, False])
def test_training_patches_hand_foreground_cases_to_the_dataset(tmp_path, move):
    """The survey's read of every case names those holding foreground; the training set
    moves foreground draws to them unless ``foreground_cases: false``."""
    from segloc.engine.run import Dist
    from segloc.engine.train import _prepare_data

    data = _disks(tmp_path / "d", n=6)
    empty = sorted((data / "labels").iterdir())[:3]
    for path in empty:  # three slices without foreground
        io.write_mask(path, np.zeros(io.read_mask(path)[0].shape, bool))
    cfg = TrainConfig.from_dict(
        {
            "data": str(data),
            "epochs": 1,
            "patch": [32, 32],
            "val_fraction": 0.34,
            "foreground_cases": move,
            "foreground_fraction": 1.0,
        }
    ).validate()
    prepared = _prepare_data(cfg, Dist())
    names = [c.name for c in prepared.train_cases]
    holding = [i for i, n in enumerate(names) if n not in {p.stem for p in empty}]
    assert 0 < len(holding) < len(names)  # the split left empty and full slices to train on
    assert prepared.train.foreground_cases == (holding if move else [])
    drawn = {prepared.train[k]["case"] for k in range(len(prepared.train))}
    assert drawn <= {names[i] for i in holding} if move else drawn == set(names)


def test_ema_update_hand_computed():
    """decay 0.5, weights 1 then 3: the second update uses min(0.5, 2/11), so the average is
    2/11 * 1 + 9/11 * 3 = 29/11; then 5 with min(0.5, 3/12) = 1/4: 29/44 + 15/4 = 97/22."""
    net = torch.nn.Sequential(torch.nn.Linear(1, 1, bias=False), torch.nn.BatchNorm1d(1))
    avg = AveragedModel(net, multi_avg_fn=ema_update(0.5), use_buffers=True)
    for value in (1.0, 3.0, 5.0):
        with torch.no_grad():
            net[0].weight.fill_(value)
            net[1].running_mean.fill_(-value)
        avg.update_parameters(net)
    assert avg.module[0].weight.item() == pytest.approx(97 / 22)
    assert avg.module[1].running_mean.item() == pytest.approx(-97 / 22)  # statistics too
    assert net[0].weight.item() == 5.0  # the model itself is left alone


@pytest.mark.parametrize("decay", [0.9, 0.999])
def test_ema_update_reaches_its_decay(decay):
    """After the warm-up the plain recursion a <- decay * a + (1 - decay) * w holds."""
    net = torch.nn.Linear(1, 1, bias=False)
    avg = AveragedModel(net, multi_avg_fn=ema_update(decay), use_buffers=True)
    ramp_end = math.ceil((10 * decay - 1) / (1 - decay))  # (1 + n) / (10 + n) >= decay
    for n in range(ramp_end + 3):
        with torch.no_grad():
            net.weight.fill_(float(n % 7))
        before = avg.module.weight.item()
        avg.update_parameters(net)
    assert avg.module.weight.item() == pytest.approx(decay * before + (1 - decay) * (n % 7))


def test_config_from_yaml(tmp_path):
    (tmp_path / "a.yaml").write_text("data: d\nmodel: unetpp\ntime-budget: 20m\npatch: [64, 64]\n")
    cfg = TrainConfig.from_yaml(tmp_path / "a.yaml").validate()
    assert (cfg.model, cfg.time_budget, cfg.patch) == ("unetpp", "20m", [64, 64])
    (tmp_path / "b.yaml").write_text("data: d\nepochz: 3\n")
    with pytest.raises(ValueError, match=r"b.yaml: unknown setting\(s\) \['epochz'\]"):
        TrainConfig.from_yaml(tmp_path / "b.yaml")
    (tmp_path / "c.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="c.yaml: a training config must be a YAML mapping"):
        TrainConfig.from_yaml(tmp_path / "c.yaml")


# --------------------------------------------------------------------------- runs


def test_run_folder(tmp_path):
    data = _disks(tmp_path / "data", n=6)
    result = train(_config(data, tmp_path / "run"), progress=False)
    run = tmp_path / "run"
    for name in (
        "config.yaml",
        "split.json",
        "best.safetensors",
        "last.safetensors",
        STATE_FILE,
        "metrics.csv",
        "curves.png",
    ):
        assert (run / name).is_file(), name
    assert len(list((run / "samples").glob("*.png"))) == 1
    split = json.loads((run / "split.json").read_text())
    assert not set(split["train"]) & set(split["val"])
    assert sorted(split["train"] + split["val"]) == [f"c{i}" for i in range(6)]
    rows = _rows(run / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2] and result.epochs == 2
    name, kwargs, _, extra = load_checkpoint(run / "best.safetensors")
    assert name == "unet" and kwargs["num_classes"] == 2 and kwargs["in_channels"] == 1
    assert extra["dims"] == 2 and extra["normalize"] == "zscore" and extra["patch_size"] == [32, 32]
    assert extra["val_dice"] == pytest.approx(result.best_dice)
    assert load_model(run / "best.safetensors").num_classes == 2
    # a second run into the same folder must not clobber it
    with pytest.raises(ValueError, match="already holds a training state"):
        train(_config(data, run), progress=False)
    with pytest.raises(FileNotFoundError, match="no training state"):
        train(_config(data, tmp_path / "other", resume=True), progress=False)


def test_training_learns_disks(tmp_path):
    """A tiny U-Net separates bright disks from a noisy background within seconds."""
    data = _disks(tmp_path / "data", n=10, size=32)
    cfg = _config(data, tmp_path / "run", epochs=12, samples_per_epoch=8, lr=0.01, base_channels=8)
    result = train(cfg, progress=False)
    assert result.best_dice > 0.85, result.history
    first = result.history[0]["train_loss"]
    assert result.history[-1]["train_loss"] < 0.6 * first


def test_resume_is_exact(tmp_path):
    """Two epochs, stop, two more on resume == four epochs straight: same weights.

    (A constant schedule, since the poly/cosine rates depend on the planned epochs; the
    SIGKILL test below resumes a poly run with unchanged settings.)"""
    data = _disks(tmp_path / "data", n=6)
    kw = dict(augment="default", schedule="constant")
    straight = train(_config(data, tmp_path / "a", epochs=4, **kw), progress=False)
    train(_config(data, tmp_path / "b", epochs=2, **kw), progress=False)
    resumed = train(_config(data, tmp_path / "b", epochs=4, resume=True, **kw), progress=False)
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in straight.history]
    _, _, wa, _ = load_checkpoint(tmp_path / "a" / "last.safetensors")
    _, _, wb, _ = load_checkpoint(tmp_path / "b" / "last.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    with pytest.raises(ValueError, match="saved run has batch=2"):
        train(_config(data, tmp_path / "b", epochs=5, batch=3, resume=True), progress=False)


def test_resume_of_a_finished_run_restores_its_files(tmp_path):
    """A kill after the final state was written, before the files that follow it: --resume
    trains nothing and brings metrics.csv, curves.png and last.safetensors up to the state."""
    data = _disks(tmp_path / "data", n=6)
    run = tmp_path / "run"
    done = train(_config(data, run, epochs=2), progress=False)
    metrics = (run / "metrics.csv").read_text()
    (run / "metrics.csv").write_text("\n".join(metrics.splitlines()[:2]) + "\n")  # epoch 1 only
    (run / "last.safetensors").unlink()
    (run / "curves.png").unlink()
    again = train(_config(data, run, epochs=2, resume=True), progress=False)
    assert again.epochs == 2 and again.history == done.history
    assert (run / "metrics.csv").read_text() == metrics
    assert (run / "curves.png").exists()
    _, _, weights, extra = load_checkpoint(run / "last.safetensors")
    assert extra["epoch"] == 2
    state = done.model.state_dict()
    assert all(torch.equal(weights[k], state[k].contiguous()) for k in weights)


def test_ema_weights_are_validated_checkpointed_and_resumed(tmp_path):
    """With ema the checkpoints hold the moving average (not the raw weights the optimiser
    steps), the state holds both, and a resumed run ends with the same average."""
    data = _disks(tmp_path / "data", n=6)
    kw = dict(ema=0.9, schedule="constant", augment="default")
    straight = train(_config(data, tmp_path / "a", epochs=4, **kw), progress=False)
    state = load_training_state(tmp_path / "a" / STATE_FILE)
    assert int(state["ema"]["n_averaged"]) == straight.history[-1]["step"]
    average = {k.removeprefix("module."): v for k, v in state["ema"].items()}
    _, _, last, extra = load_checkpoint(tmp_path / "a" / "last.safetensors")
    assert all(torch.equal(last[k], average[k].contiguous()) for k in last)
    assert not all(torch.equal(last[k], state["model"][k].contiguous()) for k in last)
    returned = straight.model.state_dict()
    assert all(torch.equal(last[k], returned[k].contiguous()) for k in last)
    assert extra["val_dice"] == pytest.approx(straight.history[-1]["val_dice"])
    train(_config(data, tmp_path / "b", epochs=2, **kw), progress=False)
    resumed = train(_config(data, tmp_path / "b", epochs=4, resume=True, **kw), progress=False)
    assert [r["val_dice"] for r in resumed.history] == [r["val_dice"] for r in straight.history]
    _, _, again, _ = load_checkpoint(tmp_path / "b" / "last.safetensors")
    assert all(torch.equal(last[k], again[k]) for k in last)
    with pytest.raises(ValueError, match="saved run has ema=0.9"):
        train(_config(data, tmp_path / "b", epochs=5, resume=True), progress=False)


def test_border_weight_weighs_the_training_loss(tmp_path):
    """The same seeded run with the U-Net border weights: its first step's loss is the
    weighted one (every weight >= 1, the gaps between the two disks far above), and the run
    trains and saves as usual."""
    root = tmp_path / "data"
    grid = np.indices((32, 32))
    rng = np.random.default_rng(0)
    for i in range(4):
        # two disks 2-4 pixels apart: a narrow gap with a large border term
        gap = 2 + i % 3
        mask = ((grid[0] - 16) ** 2 + (grid[1] - 9) ** 2 < 36) | (
            (grid[0] - 16) ** 2 + (grid[1] - 21 - gap) ** 2 < 36
        )
        image = np.clip(60 + 120 * mask + rng.normal(0, 20, mask.shape), 0, 255)
        io.write_image(root / "images" / f"c{i}.png", image.astype(np.uint8))
        io.write_mask(root / "labels" / f"c{i}.png", mask)
    kw = dict(epochs=1, samples_per_epoch=2, batch=2, patch=[32], augment="none")
    plain = train(_config(root, tmp_path / "plain", **kw), progress=False)
    weighted = train(_config(root, tmp_path / "w", border_weight=20.0, **kw), progress=False)
    first_plain, first_weighted = plain.history[0]["train_loss"], weighted.history[0]["train_loss"]
    # same seed, same patches, same initial weights: without the map they would be equal
    assert first_weighted > 1.2 * first_plain
    assert (tmp_path / "w" / "best.safetensors").exists()


def test_val_split_last_holds_out_the_last_cases(tmp_path):
    data = _disks(tmp_path / "data", n=6)
    cfg = _config(data, tmp_path / "run", epochs=1, val_fraction=0.34, val_split="last")
    train(cfg, progress=False)
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert split["val"] == ["c4", "c5"] and split["train"] == ["c0", "c1", "c2", "c3"]


def test_warmup_follows_the_clock_within_an_epoch(tmp_path):
    """With a time budget the rate moves during the first epoch (it used to stay 0 there)."""
    data = _disks(tmp_path / "data", n=4)
    cfg = _config(data, tmp_path / "run", epochs=None, time_budget=2.0, warmup=0.99)
    result = train(cfg, progress=False)
    assert result.history[0]["lr"] > 0


def test_time_budget_stops(tmp_path):
    data = _disks(tmp_path / "data", n=4)
    t0 = time.perf_counter()
    result = train(
        _config(data, tmp_path / "run", epochs=None, time_budget=1.0, samples_per_epoch=2),
        progress=False,
    )
    assert time.perf_counter() - t0 < 60
    assert result.epochs >= 1 and math.isfinite(result.history[-1]["val_dice"])


@pytest.mark.parametrize(
    ("augment", "kwargs", "expected"),
    [
        ("default", {}, {"flip_axes": (0, 1), "p_rot90": 0.5, "p_affine": 0.2}),
        ("default", {"flip_axes": [1], "p_rot90": 0.0}, {"flip_axes": (1,), "p_rot90": 0.0}),
        ("light", {}, {"p_affine": 0.0, "p_elastic": 0.0, "p_rot90": 0.5}),
        ("light", {"p_elastic": 0.3}, {"p_affine": 0.0, "p_elastic": 0.3}),
    ],
)
def test_augment_kwargs_reach_the_augmenter(augment, kwargs, expected):
    from segloc.engine.train import _augmenter

    cfg = TrainConfig.from_dict(
        {"data": "d", "epochs": 1, "augment": augment, "augment_kwargs": kwargs}
    ).validate()
    aug = _augmenter(cfg, 2)
    assert {k: getattr(aug, k) for k in expected} == expected


@pytest.mark.parametrize(
    ("augment", "kwargs", "flip_axes"),
    [
        ("default", {}, [0, 1]),
        ("default", {"flip_axes": [1], "p_rot90": 0.0}, [1]),
        ("light", {"p_flip": 0.0}, []),
        ("none", {}, None),
    ],
)
def test_checkpoint_records_the_mirrored_axes(augment, kwargs, flip_axes):
    from segloc.engine.train import _augmenter, _flip_axes

    cfg = TrainConfig.from_dict(
        {"data": "d", "epochs": 1, "augment": augment, "augment_kwargs": kwargs}
    ).validate()
    assert _flip_axes(_augmenter(cfg, 2)) == flip_axes


def test_augment_kwargs_bad_value_stops_before_the_run(tmp_path):
    data = _disks(tmp_path / "d", n=4)
    cfg = _config(data, tmp_path / "run", augment_kwargs={"p_flip": 2.0})
    with pytest.raises(ValueError, match=r"augment_kwargs: p_flip must be in \[0, 1\], got 2.0"):
        train(cfg, progress=False)
    assert not (tmp_path / "run").exists()


def test_3d_and_bad_data(tmp_path):
    data = _disks(tmp_path / "data3", n=4, size=16, dims=3)
    result = train(
        _config(data, tmp_path / "run", model="unet3d", epochs=1, samples_per_epoch=2),
        progress=False,
    )
    _, kwargs, _, extra = load_checkpoint(tmp_path / "run" / "last.safetensors")
    assert extra["dims"] == 3 and extra["patch_size"] == [16, 16, 16] and result.epochs == 1
    flat = _disks(tmp_path / "data2", n=4)
    with pytest.raises(ValueError, match="model 'vnet' is 3D but .* holds 2D images"):
        train(_config(flat, tmp_path / "v", model="vnet"), progress=False)
    with pytest.raises(ValueError, match="divisible by 2\\*\\*depth = 4"):
        train(_config(flat, tmp_path / "p", patch=[30]), progress=False)
    # over twice the largest case rounded up to 2**depth a patch is mostly padding
    with pytest.raises(
        ValueError, match=r"over twice .* \(32x32\); use at most \[64, 64\], or \[32, 32\]"
    ):
        train(_config(flat, tmp_path / "p", patch=[68]), progress=False)
    with pytest.raises(ValueError, match=r"\(16x16x16\); use at most \[32, 32, 32\]"):
        train(_config(data, tmp_path / "p", model="unet3d", patch=[16, 36, 16]), progress=False)
    odd = _disks(tmp_path / "data30", n=4, size=30)
    result = train(_config(odd, tmp_path / "r30", patch=[64], epochs=1), progress=False)
    assert result.epochs == 1  # 30 rounded up to 2**depth = 4 is 32: a patch of 64 is allowed
    assert not (tmp_path / "p").exists()  # the refused runs left no folder


def test_anisotropic_pooling_trains_and_predicts(tmp_path):
    """A U-Net that pools the last axis later trains, checks its patch per axis, validates
    whole volumes and predicts through the run folder."""
    from segloc.engine.infer import Predictor

    data = _disks(tmp_path / "data3", n=4, size=16, dims=3)
    pools = {"pools": [[2, 2, 1], [2, 2, 2]]}  # multiples (4, 4, 2)
    with pytest.raises(ValueError, match=r"divisible by \[4, 4, 2\]"):
        train(
            _config(
                data,
                tmp_path / "bad",
                model="unet",
                depth=2,
                patch=[16, 14, 16],
                extra_model_kwargs=pools,
                epochs=1,
            ),
            progress=False,
        )
    result = train(
        _config(
            data,
            tmp_path / "run",
            model="unet",
            depth=2,
            patch=[16, 16, 10],
            extra_model_kwargs=pools,
            epochs=1,
            samples_per_epoch=2,
        ),
        progress=False,
    )
    assert result.model.multiples == (4, 4, 2)
    volume, _ = io.read_image(data / "images" / "c0.nii.gz")
    prob = Predictor(tmp_path / "run", device="cpu").predict(volume[:, :, :15])
    assert prob.shape == (2, 16, 16, 15) and np.allclose(prob.sum(0), 1, atol=1e-4)


# --------------------------------------------------------------------------- processes


def _segloc(*args: str) -> list[str]:
    return [sys.executable, "-m", "segloc.cli", *args]


def test_sigkill_then_resume_loses_at_most_one_epoch(tmp_path):
    """SIGKILL a training process mid-run; --resume continues from the last epoch saved and
    ends with the same weights as an uninterrupted run."""
    data = _disks(tmp_path / "data", n=6)
    common = [
        "train",
        "--data",
        str(data),
        "--base-channels",
        "4",
        "--depth",
        "2",
        "--batch",
        "2",
        "--samples-per-epoch",
        "4",
        "--augment",
        "light",
        "--device",
        "cpu",
        "--threads",
        "1",
        "--epochs",
        "15",
        # the plan picks the precision its timing probe finds fastest: on a CPU with native
        # bfloat16 the killed and the straight runs could pick differently
        "--precision",
        "fp32",
        "--quiet",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = tmp_path / "killed"
    proc = subprocess.Popen(_segloc(*common, "--out", str(run)), env=env)
    try:
        deadline = time.time() + 120
        epoch = 0
        while time.time() < deadline and proc.poll() is None:
            if (run / STATE_FILE).exists():
                try:
                    epoch = load_training_state(run / STATE_FILE)["epoch"]
                except ValueError:  # never half-written: the state is renamed into place
                    pytest.fail("a reader saw a half-written state")
                if epoch >= 3:
                    break
            time.sleep(0.05)
        assert proc.poll() is None, "training ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    saved = load_training_state(run / STATE_FILE)["epoch"]
    assert saved >= 3
    rows = _rows(run / "metrics.csv")
    # the state is written first: the other files never run ahead of it
    assert int(rows[-1]["epoch"]) in (saved - 1, saved)
    done = subprocess.run(
        _segloc(*common, "--out", str(run), "--resume"),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    rows = _rows(run / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == list(range(1, 16))
    straight = tmp_path / "straight"
    done = subprocess.run(
        _segloc(*common, "--out", str(straight)),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    _, _, wa, _ = load_checkpoint(run / "last.safetensors")
    _, _, wb, _ = load_checkpoint(straight / "last.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_ddp_two_processes_keep_identical_weights(tmp_path):
    """torchrun --nproc-per-node 2 (gloo): after training both ranks hold the same weights
    (here the moving average of ``ema``, batch-norm statistics included)."""
    data = _disks(tmp_path / "data", n=6)
    script = tmp_path / "ddp.py"
    script.write_text(
        "import json, sys\n"
        "import torch, torch.distributed as dist\n"
        "from segloc.engine.train import train\n"
        "torch.set_num_threads(1)\n"
        "cfg = json.loads(sys.argv[1])\n"
        "net = train(cfg, progress=False).model\n"
        "flat = torch.cat([p.detach().flatten() for p in net.state_dict().values()\n"
        "                  if p.is_floating_point()])\n"
        "gathered = [torch.zeros_like(flat) for _ in range(dist.get_world_size())]\n"
        "dist.all_gather(gathered, flat)\n"
        "if dist.get_rank() == 0:\n"
        "    same = all(torch.equal(gathered[0], g) for g in gathered)\n"
        "    json.dump({'same': same, 'world': dist.get_world_size(),\n"
        "               'norm': float(flat.norm())}, open(sys.argv[2], 'w'))\n"
        "dist.destroy_process_group()\n"
    )
    # with a time budget the learning rate follows the clock: rank 0's clock must rule
    cfg = _config(
        data, tmp_path / "run", epochs=2, samples_per_epoch=8, augment="default",
        time_budget=600, warmup=0.5, ema=0.9,
    )  # fmt: skip
    report = tmp_path / "report.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            str(script),
            json.dumps(cfg),
            str(report),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(report.read_text())
    assert result == {"same": True, "world": 2, "norm": pytest.approx(result["norm"])}
    rows = _rows(tmp_path / "run" / "metrics.csv")
    assert len(rows) == 2  # only rank 0 writes the run folder
    assert all(math.isfinite(float(r["train_loss"])) for r in rows)


def test_precision(tmp_path):
    data = _disks(tmp_path / "data", n=4)
    result = train(_config(data, tmp_path / "bf16", epochs=1, precision="bf16"), progress=False)
    assert math.isfinite(result.history[0]["train_loss"])
    with pytest.raises(ValueError, match="precision 'fp16' needs CUDA"):
        train(_config(data, tmp_path / "fp16", epochs=1, precision="fp16"), progress=False)


def test_unetpp_deep_supervision(tmp_path):
    """All heads are trained (the loss sees a list of outputs); checkpoints rebuild the model."""
    data = _disks(tmp_path / "data", n=4)
    cfg = _config(data, tmp_path / "run", model="unetpp", deep_supervision=True, epochs=1)
    result = train(cfg, progress=False)
    assert math.isfinite(result.history[0]["train_loss"])
    net = load_model(tmp_path / "run" / "last.safetensors")
    assert net.deep_supervision and net(torch.zeros(1, 1, 32, 32)).shape == (1, 2, 32, 32)


_NORM_LAYERS = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.modules.instancenorm._InstanceNorm)


@pytest.mark.parametrize(
    ("model", "norm", "layer"),
    [
        ("unet", "batch", torch.nn.BatchNorm2d),
        ("unet", "instance", torch.nn.InstanceNorm2d),
        ("unet", "none", None),
        ("unetpp", "instance", torch.nn.InstanceNorm2d),
    ],
)
def test_norm_setting_builds_the_model_the_run_folder_rebuilds(tmp_path, model, norm, layer):
    """``norm`` reaches every model the trainer builds; the checkpoint rebuilds it and
    predicts ("none" is the command line's spelling of YAML's null)."""
    data = _disks(tmp_path / "data", n=4)
    train(_config(data, tmp_path / "run", model=model, norm=norm, epochs=1), progress=False)
    net = load_model(tmp_path / "run" / "last.safetensors")
    found = {type(m) for m in net.modules() if isinstance(m, _NORM_LAYERS)}
    assert found == ({layer} if layer else set())
    from segloc.engine.infer import Predictor

    image, _ = io.read_image(data / "images" / "c0.png")
    prob = Predictor(tmp_path / "run", device="cpu").predict(image)
    assert prob.shape == (2, 32, 32) and np.allclose(prob.sum(0), 1, atol=1e-4)


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"extra_model_kwargs": {"bogus": 1}}, "extra_model_kwargs: .*bogus"),
        (
            {"extra_model_kwargs": {"in_channels": 5}},
            r"extra_model_kwargs: \['in_channels'\] come from",
        ),
        ({"depth": 20, "patch": [64]}, "must be divisible by 2\\*\\*depth"),
    ],
)
def test_model_settings_are_refused_before_the_run(tmp_path, settings, match):
    """Checked on the meta device, before any memory is taken or any file written (a depth
    of 20 once built a 7.9 GB model before the patch check)."""
    data = _disks(tmp_path / "d", n=4)
    with pytest.raises(ValueError, match=match):
        train(_config(data, tmp_path / "run", **settings), progress=False)
    assert not (tmp_path / "run").exists()
