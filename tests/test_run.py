"""Tests of segloc.engine.run: the run folder, the budget rule, the shared training loop."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import torch

from segloc.engine.run import STATE_FILE, Budget, Dist, Progress, RunFolder, autocast_dtype, fit


class CountingTask:
    """A linear model fitted to y = 2x: every call of the loop is counted."""

    score = "val_score"

    def __init__(self, steps_per_epoch: int = 3, sleep: float = 0.0, scores=None) -> None:
        torch.manual_seed(0)
        self.model = torch.nn.Linear(1, 1)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1)
        self.steps_per_epoch = steps_per_epoch
        self.device = torch.device("cpu")
        self.sleep = sleep
        self.scores = list(scores or [])
        self.calls: list[tuple] = []
        self.saved: list[tuple[str, int]] = []

    def batches(self, epoch):
        self.calls.append(("batches", epoch))
        g = torch.Generator().manual_seed(epoch)
        return [torch.rand(4, 1, generator=g) for _ in range(self.steps_per_epoch)]

    def train_step(self, batch, progress):
        time.sleep(self.sleep)
        loss = ((self.model(batch) - 2 * batch) ** 2).mean()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.calls.append(("step", round(progress, 6)))
        return {"loss": float(loss.detach()), "extra": 1.0}

    def current_lr(self):
        return 0.1

    def end_epoch(self, dist):
        self.calls.append(("end", None))

    def validate(self, epoch):
        value = (
            self.scores[epoch - 1] if self.scores else -(float(self.model.weight.item() - 2) ** 2)
        )
        return {"val_score": value}

    def validated(self, epoch, best):
        self.calls.append(("validated", epoch, best))

    def save(self, path, row):
        self.saved.append((Path(path).name, row["epoch"]))
        torch.save({"w": self.model.weight.detach().clone()}, path)

    def state_dict(self):
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state):
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])

    def curves(self, history):
        return {"train loss": [r["train_loss"] for r in history]}


def _fit(task, run, budget, **kw):
    return fit(task, run, budget, config={"a": 1}, split={"train": ["x"], "val": ["y"]}, **kw)


def test_budget_rule():
    with pytest.raises(ValueError, match="give epochs or time_budget"):
        Budget()
    b = Budget.of(4, "1m")
    assert b.seconds == 60.0
    # the further of steps and clock
    assert b.progress(step=6, steps_per_epoch=3, elapsed=6.0) == 0.5
    assert b.progress(step=1, steps_per_epoch=3, elapsed=45.0) == 0.75
    assert b.progress(step=100, steps_per_epoch=3, elapsed=0.0) == 1.0
    assert not b.out_of_time(59.9) and b.out_of_time(60.0)
    assert b.done(4, 0.0) and b.done(1, 61.0) and not b.done(3, 1.0)
    with pytest.raises(ValueError, match="duration"):
        Budget.of(None, "-5m")


def test_run_folder_guard(tmp_path):
    run = RunFolder(tmp_path / "r")
    assert run.begin(resume=False) is None
    with pytest.raises(FileNotFoundError, match="no training state to resume from"):
        run.begin(resume=True)
    run.create({"lr": 0.1}, {"train": ["a"], "val": ["b"]})
    assert json.loads(run.split.read_text()) == {"train": ["a"], "val": ["b"]}
    assert "lr: 0.1" in run.config.read_text()
    run.save_state({"epoch": 1})
    with pytest.raises(ValueError, match="already holds a training state"):
        run.begin(resume=False)
    assert run.begin(resume=True) == {"epoch": 1}
    # only the main process writes
    other = RunFolder(tmp_path / "other", main=False)
    other.create({"lr": 0.1}, {"train": [], "val": []})
    assert not other.path.exists()


def test_fit_runs_the_phases_in_order(tmp_path):
    task = CountingTask()
    run = RunFolder(tmp_path / "r")
    done = _fit(task, run, Budget(epochs=2), progress=False)
    assert done.epoch == 2 and done.step == 6
    kinds = [c[0] for c in task.calls]
    assert kinds == ["batches"] + ["step"] * 3 + ["end", "validated"] + ["batches"] + [
        "step"
    ] * 3 + ["end", "validated"]
    # progress by steps: 0, 1/6, ... 5/6 before each step
    steps = [c[1] for c in task.calls if c[0] == "step"]
    assert steps == [round(k / 6, 6) for k in range(6)]
    for name in ("config.yaml", "split.json", "metrics.csv", "curves.png", STATE_FILE):
        assert (run.path / name).is_file(), name
    rows = (run.path / "metrics.csv").read_text().splitlines()
    assert rows[0].split(",") == [
        "epoch",
        "step",
        "seconds",
        "lr",
        "train_loss",
        "train_extra",
        "val_score",
    ]
    assert ("last.safetensors", 2) in task.saved and task.saved[0] == ("best.safetensors", 1)


def test_budget_is_checked_before_every_step_and_counts_validation(tmp_path):
    task = CountingTask(steps_per_epoch=50, sleep=0.02)
    done = _fit(task, RunFolder(tmp_path / "r"), Budget(seconds=0.2), progress=False)
    # 50 steps of 0.02 s would take 1 s: the clock stopped the run long before one epoch's
    # worth of steps (the first epoch is cut at a tenth of the budget; whether a second one
    # starts depends on how fast validation and writing were), and every epoch was validated
    assert 1 <= done.step < 50
    assert done.history[0]["step"] < 50
    assert all(math.isfinite(row["val_score"]) for row in done.history)


class SlowValidation(CountingTask):
    """Validation takes ``val_sleep`` seconds; the end of the run needs ``tail`` more."""

    def __init__(self, val_sleep: float, tail: float, **kw) -> None:
        super().__init__(**kw)
        self.val_sleep, self.tail = val_sleep, tail

    def validate(self, epoch):
        time.sleep(self.val_sleep)
        return super().validate(epoch)

    def tail_seconds(self, validation):
        return self.tail


def test_the_run_ends_on_its_budget_with_room_for_what_follows(tmp_path):
    """spent (before fit) counts, the first epoch is cut at a tenth of the budget, and the
    last step leaves room for the final validation and the task's tail."""
    RunFolder(tmp_path / "warm").record([{"epoch": 1, "train_loss": 1.0}], {"x": [1.0]}, "")
    task = SlowValidation(0.15, 0.3, steps_per_epoch=800, sleep=0.01)
    t0 = time.perf_counter()
    time.sleep(0.2)  # what the caller spent loading
    done = _fit(task, RunFolder(tmp_path / "r"), Budget(seconds=4.0), spent=0.2, progress=False)
    time.sleep(task.tail)  # what follows fit (decisions)
    wall = time.perf_counter() - t0
    first = done.history[0]["step"]
    assert 1 <= first < 800 and done.epoch >= 2  # the first epoch was cut
    assert wall <= 4.0 * 1.05 + 0.1, wall  # 0.1 s: the last epoch's writing varies
    # the learning-rate schedule reached its end at the last step (progress by the clock)
    progress = [c[1] for c in task.calls if c[0] == "step"]
    assert progress[-1] > 0.8


def test_patience_stops_and_best_is_kept(tmp_path):
    task = CountingTask(scores=[0.5, 0.7, 0.6, 0.65, 0.1, 0.9])
    done = _fit(task, RunFolder(tmp_path / "r"), Budget(epochs=6), patience=2, progress=False)
    assert done.epoch == 4 and done.best == 0.7 and done.best_epoch == 2
    assert [s for s in task.saved if s[0] == "best.safetensors"] == [
        ("best.safetensors", 1),
        ("best.safetensors", 2),
    ]


def test_resume_repeats_the_uninterrupted_run(tmp_path):
    straight = CountingTask()
    _fit(straight, RunFolder(tmp_path / "a"), Budget(epochs=4), progress=False)
    first = CountingTask()
    run = RunFolder(tmp_path / "b")
    _fit(first, run, Budget(epochs=2), progress=False)
    second = CountingTask()
    state = run.begin(resume=True)
    done = _fit(second, run, Budget(epochs=4), state=state, progress=False)
    assert done.epoch == 4
    assert torch.equal(second.model.weight, straight.model.weight)
    assert Progress.from_state(run.begin(resume=True), "val_score").epoch == 4


def test_a_finished_run_resumed_rewrites_its_files(tmp_path):
    run = RunFolder(tmp_path / "r")
    _fit(CountingTask(), run, Budget(epochs=1), progress=False)
    run.metrics.unlink()
    again = CountingTask()
    done = _fit(again, run, Budget(epochs=1), state=run.begin(resume=True), progress=False)
    assert done.epoch == 1 and run.metrics.is_file()
    assert not [c for c in again.calls if c[0] == "step"]


def test_dist_defaults_to_one_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    d = Dist.from_env()
    assert (d.world, d.rank, d.on, d.main) == (1, 0, False, True)
    assert d.shared(3.5, torch.device("cpu")) == 3.5 and d.any(True, torch.device("cpu"))


@pytest.mark.parametrize(
    "precision,device,dtype",
    [
        ("auto", "cpu", None),
        ("auto", "cuda", torch.float16),
        ("fp32", "cuda", None),
        ("bf16", "cpu", torch.bfloat16),
        ("bf16", "cuda", torch.bfloat16),
        ("fp16", "cuda", torch.float16),
    ],
)
def test_autocast_dtype_of_each_precision(precision, device, dtype):
    assert autocast_dtype(precision, torch.device(device)) is dtype


@pytest.mark.parametrize("precision,match", [("fp16", "needs CUDA"), ("half", "precision")])
def test_autocast_dtype_refuses(precision, match):
    with pytest.raises(ValueError, match=match):
        autocast_dtype(precision, torch.device("cpu"))
