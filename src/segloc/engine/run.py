"""Run plumbing and the training loop that every trainer of segloc shares.

A training run keeps everything in one folder (:class:`RunFolder`): ``config.yaml``,
``split.json``, ``metrics.csv`` (one row per epoch), ``curves.png``, ``state.pt`` (the
resume point) and the ``best.safetensors`` / ``last.safetensors`` checkpoints. The loop,
:func:`fit`, runs a :class:`Task` -- the segmentation trainer (:mod:`segloc.engine.train`)
or the box localizer (:mod:`segloc.localize.cnn`) -- epoch after epoch under one
:class:`Budget` rule, validates, keeps the best checkpoint, writes the state first and the
other files after it, and stops early on ``patience``.

The rules, the same for every trainer:

- **budget**: the wall clock is checked before every step (rank 0's clock under DDP, shared
  with the other ranks); everything counts -- what the caller spent before :func:`fit`
  (``spent``: loading the data, planning), validation, writing checkpoints and curves -- and
  the last step leaves room for what follows it: the final validation (as long as the last
  one) and the task's own ``tail_seconds`` (decisions taken after training), so that the
  whole run ends on the budget; so that the clock knows early what a validation costs, the
  first epoch of a timed run ends after a tenth of the budget at the latest; a resumed
  run continues the same budget (``elapsed`` is part of the state);
- **resume**: ``resume=True`` needs ``state.pt`` in the run folder, and a run folder that
  holds one is never started afresh over it; the state is read with
  ``torch.load(weights_only=True)``, so nothing is unpickled;
- **a loss that is not finite**: the step is skipped (no update, on every DDP rank alike)
  and counted in ``metrics.csv`` (``skipped_steps``); :data:`MAX_NONFINITE` such steps in a
  row stop the run with :class:`NonFiniteLoss` naming the step;
- **what a kill loses**: the epoch in progress -- ``state.pt`` is written atomically at the
  end of each epoch, before ``last.safetensors``, ``metrics.csv`` and ``curves.png``, so
  those are never ahead of it (a resume rewrites them).
"""

from __future__ import annotations

import io as _io
import json
import math
import os
import random
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as torch_dist
from torch import nn

from segloc._validation import check_choice, write_atomic
from segloc.engine.heap import reusing_freed_memory
from segloc.io import write_csv

__all__ = [
    "MAX_NONFINITE",
    "NonFiniteLoss",
    "STATE_FILE",
    "Budget",
    "Dist",
    "Progress",
    "RunFolder",
    "Task",
    "fit",
    "load_training_state",
    "lr_factor",
    "parse_duration",
    "resolve_device",
    "rng_state",
    "save_training_state",
    "set_rng_state",
]

STATE_FILE = "state.pt"
#: steps in a row whose loss is NaN or infinite before a run stops (each one is skipped)
MAX_NONFINITE = 5


class NonFiniteLoss(ValueError):
    """The loss stayed NaN or infinite: the run stopped; ``state.pt`` holds the last epoch."""


# --------------------------------------------------------------------------- small pieces

_DURATION = re.compile(
    r"^\s*(?:(\d+(?:\.\d+)?)\s*h)?\s*(?:(\d+(?:\.\d+)?)\s*m)?\s*"
    r"(?:(\d+(?:\.\d+)?)\s*s?)?\s*$"
)


def parse_duration(text: str | float | int) -> float:
    """Seconds in a duration such as ``"20m"``, ``"1h30m"``, ``"90s"``, ``"45"`` (seconds).

    Examples
    --------
    >>> parse_duration("1h30m"), parse_duration("20m"), parse_duration(12)
    (5400.0, 1200.0, 12.0)
    """
    if isinstance(text, bool):
        raise TypeError(f"duration must be a string or a number, got {text!r}")
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        match = _DURATION.match(str(text))
        if not match or not any(match.groups()):
            raise ValueError(f"duration must look like 20m, 1h30m, 90s or 45, got {text!r}")
        h, m, s = (float(g) if g else 0.0 for g in match.groups())
        seconds = 3600 * h + 60 * m + s
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"duration must be positive, got {text!r}")
    return seconds


def resolve_device(name: str | torch.device = "auto", local_rank: int = 0) -> torch.device:
    """``"auto"`` -> CUDA when available (device ``local_rank``), else CPU.

    Raises
    ------
    ValueError
        ``"cuda"`` asked for on a machine without CUDA, or an unknown name.
    """
    if isinstance(name, torch.device):
        return name
    check_choice(name, ("auto", "cpu", "cuda"), name="device")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' was asked for but torch sees no CUDA device")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The ``torch.autocast`` dtype a precision name means on ``device`` (None: float32).

    ``"auto"`` is float16 on CUDA and float32 elsewhere; ``"bf16"`` runs on CUDA and on CPUs
    (fast where oneDNN has native bfloat16 units, :func:`segloc.engine.probe.bf16_supported`).

    Raises
    ------
    ValueError
        An unknown name, or ``"fp16"`` off CUDA.
    """
    check_choice(precision, PRECISIONS, name="precision")
    if precision == "auto":
        precision = "fp16" if device.type == "cuda" else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("precision 'fp16' needs CUDA; use 'bf16' or 'fp32' on the CPU")
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)


def rng_state() -> dict[str, Any]:
    """The global random generators' states (Python, NumPy, torch CPU and CUDA)."""
    numpy_state = np.random.get_state(legacy=False)  # noqa: NPY002 (third-party draws)
    state: dict[str, Any] = {
        "python": random.getstate(),
        # plain ints and tensors only, so that torch.load(weights_only=True) reads it back
        "numpy": {
            "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore states saved by :func:`rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    saved = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        {
            "bit_generator": "MT19937",
            "state": {"key": saved["key"].numpy().astype(np.uint32), "pos": saved["pos"]},
            "has_gauss": saved["has_gauss"],
            "gauss": saved["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_training_state(path: str | os.PathLike, state: Mapping[str, Any]) -> Path:
    """Write a training state (tensors, dicts, lists, plain values) atomically with torch.save.

    Only types that ``torch.load(weights_only=True)`` accepts may appear, so that
    :func:`load_training_state` never unpickles code.
    """
    buffer = _io.BytesIO()
    torch.save(dict(state), buffer)
    data = buffer.getvalue()
    return write_atomic(path, lambda tmp: tmp.write_bytes(data))


def load_training_state(path: str | os.PathLike) -> dict[str, Any]:
    """Read a state written by :func:`save_training_state` (``weights_only=True``).

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        The file is not a training state (named in the message).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no training state to resume from")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # the restricted unpickler fails in many ways
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(f"{path}: not a training state ({first})") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not a training state (expected a dict)")
    return state


def lr_factor(schedule: str, progress: float, warmup: float = 0.0) -> float:
    """Learning-rate multiplier at ``progress`` in [0, 1] of the run.

    ``"poly"``: ``(1 - t)^0.9`` (nnU-Net); ``"cosine"``: ``(1 + cos(pi t)) / 2`` (SGDR
    without restarts); ``"constant"``: 1. With ``warmup`` > 0 the factor also rises
    linearly from 0 over the first ``warmup`` of the run.

    Examples
    --------
    >>> lr_factor("cosine", 0.5), lr_factor("poly", 0.0), lr_factor("constant", 0.7)
    (0.5, 1.0, 1.0)
    >>> lr_factor("constant", 0.05, warmup=0.1)
    0.5
    """
    check_choice(schedule, ("poly", "cosine", "constant"), name="schedule")
    t = min(max(float(progress), 0.0), 1.0)
    if schedule == "poly":
        factor = (1.0 - t) ** 0.9
    elif schedule == "cosine":
        factor = 0.5 * (1.0 + math.cos(math.pi * t))
    else:
        factor = 1.0
    if warmup > 0 and t < warmup:
        factor *= t / warmup
    return factor


# --------------------------------------------------------------------------- distributed


@dataclass(frozen=True)
class Dist:
    """This process's place in a ``torchrun`` job (one process: world 1, rank 0)."""

    world: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def on(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> Dist:
        """From torchrun's ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        return cls(world, int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")))

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank when ``flag`` is true on some rank."""
        if not self.on:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        torch_dist.all_reduce(t, op=torch_dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def shared(self, value: float, device: torch.device) -> float:
        """Rank 0's ``value`` on every rank."""
        if not self.on:
            return value
        t = torch.tensor([float(value)], dtype=torch.float64, device=device)
        torch_dist.broadcast(t, 0)
        return float(t.item())

    def sync_buffers(self, model: nn.Module) -> None:
        """Give every rank rank 0's buffers (batch-norm statistics).

        DDP broadcasts them before each forward pass, so after the last step of an epoch
        each rank still holds the statistics of its own last batch.
        """
        if self.on:
            for buffer in model.buffers():
                torch_dist.broadcast(buffer, 0)

    def barrier(self) -> None:
        if self.on:
            torch_dist.barrier()


# --------------------------------------------------------------------------- run folder


#: First and last lines of the ``config.yaml`` a run writes. A file cut short can still be
#: valid YAML (it ends between two keys, or inside a number), so a run's config that starts
#: with the first line and lacks the last is refused.
RUN_CONFIG_START = "# segloc run config: the resolved settings of this run\n"
RUN_CONFIG_END = "# end of segloc run config\n"


class RunFolder:
    """The files of one training run, and the rules for starting and resuming one.

    Parameters
    ----------
    path : path-like
    main : bool
        Whether this process writes (rank 0 under DDP); the others only read.
    files : mapping, optional
        Name -> text of further files :meth:`create` writes beside ``config.yaml`` (a plan).
    """

    def __init__(
        self, path: str | os.PathLike, *, main: bool = True, files: Mapping[str, str] | None = None
    ) -> None:
        self.path = Path(path)
        self.main = main
        self.files = dict(files or {})
        self.config = self.path / "config.yaml"
        self.split = self.path / "split.json"
        self.metrics = self.path / "metrics.csv"
        self.curves = self.path / "curves.png"
        self.state = self.path / STATE_FILE
        self.best = self.path / "best.safetensors"
        self.last = self.path / "last.safetensors"
        self.model = self.path / "model.safetensors"

    def begin(self, *, resume: bool) -> dict[str, Any] | None:
        """The resume guard: the saved state with ``resume``, else None for a fresh run.

        Raises
        ------
        FileNotFoundError
            ``resume`` without a state in the folder.
        ValueError
            A fresh run into a folder that already holds a training state.
        """
        if resume:
            return load_training_state(self.state)
        if self.state.exists():
            raise ValueError(
                f"{self.path}: run folder already holds a training state; pass --resume to "
                "continue it or choose another --out"
            )
        return None

    def create(self, config: Mapping[str, Any], split: Mapping[str, Sequence[str]]) -> None:
        """Make the folder and write ``config.yaml`` and ``split.json`` (main process only).

        Called once the data passed its checks: a run refused for its data leaves no
        folder behind.
        """
        if not self.main:
            return
        import yaml

        self.path.mkdir(parents=True, exist_ok=True)
        text = RUN_CONFIG_START + yaml.safe_dump(dict(config), sort_keys=False) + RUN_CONFIG_END
        write_atomic(self.config, lambda tmp: tmp.write_text(text))
        doc = json.dumps({k: list(v) for k, v in split.items()}, indent=1)
        write_atomic(self.split, lambda tmp: tmp.write_text(doc))
        for name, content in self.files.items():
            write_atomic(self.path / name, lambda tmp, c=content: tmp.write_text(c))

    def save_state(self, state: Mapping[str, Any]) -> None:
        save_training_state(self.state, state)

    def record(
        self, history: Sequence[Mapping[str, Any]], curves: Mapping[str, list], title: str
    ) -> None:
        """``metrics.csv`` (one row per epoch) and ``curves.png``."""
        from segloc.viz import plot_curves

        write_csv(self.metrics, history)
        plot_curves(dict(curves), self.curves, title=title)


# --------------------------------------------------------------------------- budget


@dataclass(frozen=True)
class Budget:
    """When a run ends: after ``epochs`` epochs or ``seconds`` of wall time, first reached.

    Examples
    --------
    >>> b = Budget(epochs=10, seconds=100.0)
    >>> b.progress(step=50, steps_per_epoch=10, elapsed=20.0), b.out_of_time(100.0)
    (0.5, True)
    """

    epochs: int | None = None
    seconds: float | None = None

    def __post_init__(self) -> None:
        if self.epochs is None and self.seconds is None:
            raise ValueError("give epochs or time_budget (or both) to bound the run")

    @classmethod
    def of(cls, epochs: int | None, time_budget: str | float | None) -> Budget:
        """From a trainer's ``epochs`` and ``time_budget`` settings (a duration string)."""
        seconds = parse_duration(time_budget) if time_budget is not None else None
        return cls(epochs, seconds)

    def progress(
        self, step: int, steps_per_epoch: int, elapsed: float, reserve: float = 0.0
    ) -> float:
        """Fraction of the run done, by steps or by the clock, whichever is further.

        By the clock the run ends ``reserve`` seconds before the budget (the time what
        follows the last step needs), so a schedule reaches its end at the last step.
        """
        parts = []
        if self.epochs is not None:
            parts.append(step / (self.epochs * max(steps_per_epoch, 1)))
        if self.seconds is not None:
            usable = self.seconds - reserve
            parts.append(elapsed / usable if usable > 0 else 1.0)
        return min(max(parts), 1.0)

    def out_of_time(self, elapsed: float, reserve: float = 0.0) -> bool:
        return self.seconds is not None and elapsed + reserve >= self.seconds

    def done(self, epoch: int, elapsed: float) -> bool:
        return (self.epochs is not None and epoch >= self.epochs) or self.out_of_time(elapsed)


# --------------------------------------------------------------------------- the loop


class Task(Protocol):
    """What :func:`fit` needs of a trainer: one step function, one validate function.

    ``score`` names the validation row's entry to maximise (``"val_dice"``...).
    """

    score: str
    steps_per_epoch: int
    device: torch.device

    def batches(self, epoch: int) -> Iterable[Any]:
        """The training batches of ``epoch`` (1-based), seeded by it."""

    def train_step(self, batch: Any, progress: float) -> dict[str, float]:
        """One optimisation step at ``progress`` of the run; its losses (``loss`` first)."""

    def current_lr(self) -> float:
        """The learning rate of the last step."""

    def end_epoch(self, dist: Dist) -> None:
        """After the last step of an epoch (e.g. make the ranks' buffers agree)."""

    def validate(self, epoch: int) -> dict[str, float]:
        """Validation scores, ``score`` among them (main process only)."""

    def validated(self, epoch: int, best: bool) -> None:
        """After validation: ``best`` tells whether this epoch is the best so far."""

    def save(self, path: Path, row: Mapping[str, Any]) -> None:
        """Write the checkpoint of the scored weights, with ``row``'s epoch and score."""

    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs beyond :class:`Progress` (weights, optimiser...)."""

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...

    def curves(self, history: Sequence[Mapping[str, Any]]) -> dict[str, list]:
        """Series for ``curves.png``."""


@dataclass
class Progress:
    """Where a run is: what :func:`fit` saves in ``state.pt`` beside the task's own state."""

    epoch: int = 0
    step: int = 0
    elapsed: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    best: float = -math.inf
    best_epoch: int = 0
    since_best: int = 0
    #: steps in a row whose loss was not finite (across epochs; not saved)
    nonfinite_in_a_row: int = 0

    def to_state(self, score: str) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "step": self.step,
            "elapsed": self.elapsed,
            "history": self.history,
            f"best_{score.removeprefix('val_')}": self.best,
            "best_epoch": self.best_epoch,
            "since_best": self.since_best,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any], score: str) -> Progress:
        return cls(
            epoch=int(state["epoch"]),
            step=int(state.get("step", 0)),
            elapsed=float(state.get("elapsed", 0.0)),
            history=list(state["history"]),
            best=float(
                state.get(f"best_{score.removeprefix('val_')}", state.get("best", -math.inf))
            ),
            best_epoch=int(state.get("best_epoch", 0)),
            since_best=int(state.get("since_best", 0)),
        )


def fit(
    task: Task,
    run: RunFolder,
    budget: Budget,
    *,
    config: Mapping[str, Any],
    split: Mapping[str, Sequence[str]],
    state: Mapping[str, Any] | None = None,
    val_every: int = 1,
    patience: int | None = None,
    dist: Dist = Dist(),
    progress: bool = True,
    title: str = "",
    spent: float = 0.0,
) -> Progress:
    """Train ``task`` until ``budget`` (or ``patience``) ends it; see the module docstring.

    Parameters
    ----------
    task : Task
    run : RunFolder
    budget : Budget
    config, split : mapping
        Written to ``config.yaml`` and ``split.json`` once the state (if any) is restored:
        a resume with other settings is refused before any file changes.
    state : mapping, optional
        A saved state to resume from (:meth:`RunFolder.begin`); the task's own part is
        restored here, as are the random generators.
    val_every : int
        Validate every this many epochs, after the first and at the end.
    patience : int, optional
        Stop after this many validations without a better score.
    dist : Dist
    progress : bool
        A tqdm bar per epoch and a line per validation (main process).
    title : str
        Title of ``curves.png``.
    spent : float
        Seconds of the budget the caller spent before this call (loading, planning).

    Returns
    -------
    Progress
    """
    done_before = Progress()
    if state is not None:
        task.load_state_dict(state)
        done_before = Progress.from_state(state, task.score)
        set_rng_state(state["rng"])
    run.create(config, split)
    p = done_before
    clock = _Clock(p.elapsed + spent, dist, task.device)
    done = budget.done(p.epoch, p.elapsed)
    if done and state is not None and run.main and p.history:
        # nothing left to train, but a kill after the last state was saved can have left the
        # other files one epoch behind it
        _write_outputs(task, run, p, title)
    while not done:
        p.epoch += 1
        steps_before = p.step
        # freed activations stay in the heap for the next step (3D steps of 64³ 1.5x faster)
        with reusing_freed_memory():
            row, out_of_time = _train_epoch(task, budget, p, dist, progress, clock)
        if out_of_time and p.step == steps_before and p.history:
            # the clock ran out before this epoch's first step: the last epoch was the end
            p.epoch -= 1
            break
        done = out_of_time or (budget.epochs is not None and p.epoch >= budget.epochs)
        stop_early = False
        # the first epoch is always validated: its time is what the end of the run reserves
        if run.main and (done or p.epoch % val_every == 0 or p.epoch == 1):
            t0 = time.perf_counter()
            row.update(task.validate(p.epoch))
            score = row[task.score]
            best = math.isfinite(score) and score > p.best
            if best:
                p.best, p.best_epoch, p.since_best = score, p.epoch, 0
                task.save(run.best, row)
            else:
                p.since_best += 1
            task.validated(p.epoch, best=best or p.best_epoch == 0)
            clock.validation = time.perf_counter() - t0
            p.elapsed = clock.now()
            out_of_time = budget.out_of_time(p.elapsed, clock.reserve(task))
            stop_early = patience is not None and p.since_best >= patience
            if progress:
                name = task.score.removeprefix("val_").replace("_", " ")
                print(
                    f"epoch {p.epoch}: loss {row['train_loss']:.4f}, val {name} {score:.4f} "
                    f"(best {p.best:.4f} @ {p.best_epoch}), {p.elapsed:.0f} s",
                    flush=True,
                )
        p.history.append(row)
        # validation time counts: a budget spent during it ends the run here
        done = done or dist.any(stop_early or out_of_time, task.device)
        p.elapsed = dist.shared(clock.now(), task.device)
        if run.main:
            t0 = time.perf_counter()
            # the resume point first: a kill between these writes leaves the other files at
            # most one epoch behind it, never ahead (a resume rewrites them)
            run.save_state({**task.state_dict(), **p.to_state(task.score), "rng": rng_state()})
            _write_outputs(task, run, p, title)
            clock.writing = time.perf_counter() - t0
        dist.barrier()
        p.elapsed = dist.shared(clock.now(), task.device)
    return p


class _Clock:
    """The run's wall clock (rank 0's under DDP) and what the end of the run needs.

    ``now()`` counts from ``elapsed`` seconds before its creation; ``reserve(task)`` is what
    must be left after the last step: a final validation as long as the last one, the
    writing of the last epoch's files and the task's ``tail_seconds`` (if it has one).
    """

    def __init__(self, elapsed: float, dist: Dist, device: torch.device) -> None:
        self.start = time.perf_counter() - elapsed
        self.begin = elapsed  # where training starts on this clock
        self.dist, self.device = dist, device
        self.validation = 0.0
        self.writing = 0.0
        self.epochs = 0  # epochs begun in this process

    def now(self) -> float:
        return time.perf_counter() - self.start

    def shared_now(self) -> float:
        return self.dist.shared(self.now(), self.device)

    def first_cut(self, budget: Budget, seconds: float) -> bool:
        """End the first epoch of a timed run (in this process) after a tenth of the budget
        of training: its validation tells the clock what the end of the run needs before it
        is too late. ``seconds`` is rank 0's clock, so every rank cuts at the same step."""
        return budget.seconds is not None and seconds - self.begin >= 0.1 * budget.seconds

    def reserve(self, task: Any) -> float:
        tail = getattr(task, "tail_seconds", None)
        extra = float(tail(self.validation)) if tail is not None else 0.0
        return self.validation + self.writing + extra


def _train_epoch(
    task: Task, budget: Budget, p: Progress, dist: Dist, progress: bool, clock: _Clock
) -> tuple[dict[str, Any], bool]:
    """The steps of epoch ``p.epoch``; its metrics row and whether the clock ran out."""
    from tqdm.auto import tqdm

    bar = tqdm(
        total=task.steps_per_epoch,
        desc=f"epoch {p.epoch}",
        disable=not (progress and dist.main),
        leave=False,
        dynamic_ncols=True,
    )
    sums: dict[str, float] = {}
    seen = skipped = 0
    out_of_time = False
    # rank 0 validates and writes: its figures decide for every rank
    reserve = dist.shared(clock.reserve(task), task.device)
    first = clock.epochs == 0
    clock.epochs += 1
    try:
        for batch in task.batches(p.epoch):
            # rank 0's clock decides for every rank: the same learning rate and the same last
            # step everywhere, or DDP ranks would drift apart or wait for each other
            seconds = clock.shared_now()
            if budget.out_of_time(seconds, reserve):
                out_of_time = True
                break
            if first and seen and clock.first_cut(budget, seconds):
                break
            losses = task.train_step(
                batch, budget.progress(p.step, task.steps_per_epoch, seconds, reserve)
            )
            p.step += 1
            bar.update(1)
            if not math.isfinite(losses["loss"]):  # the task skipped the update
                skipped += 1
                p.nonfinite_in_a_row += 1
                if p.nonfinite_in_a_row >= MAX_NONFINITE:
                    bar.close()
                    raise NonFiniteLoss(
                        f"step {p.step} (epoch {p.epoch}): the loss was not finite "
                        f"{p.nonfinite_in_a_row} steps in a row; lower the learning rate or "
                        "check the data for NaN (state.pt keeps the last epoch)"
                    )
                continue
            p.nonfinite_in_a_row = 0
            seen += 1
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v
            bar.set_postfix(loss=f"{losses['loss']:.4f}", lr=f"{task.current_lr():.2e}")
    except RuntimeError as err:
        if "DataLoader worker" not in str(err):
            raise
        bar.close()
        message = str(err).strip().splitlines()[0]
        raise ChildProcessError(
            f"a data-loading worker died in epoch {p.epoch} ({message}); the run folder keeps "
            "the last epoch: continue with --resume (fewer workers if memory ran short)"
        ) from None
    bar.close()
    p.elapsed = clock.shared_now()
    task.end_epoch(dist)
    row: dict[str, Any] = {"epoch": p.epoch, "step": p.step, "seconds": round(p.elapsed, 2)}
    row["lr"] = task.current_lr()
    row["train_loss"] = sums.get("loss", math.nan) / seen if seen else math.nan
    for k, v in sums.items():
        if k != "loss":
            row[f"train_{k}"] = v / seen
    if skipped:
        row["skipped_steps"] = skipped
    return row, out_of_time


def _write_outputs(task: Task, run: RunFolder, p: Progress, title: str) -> None:
    """last.safetensors, metrics.csv and curves.png of the run as of its last epoch."""
    task.save(run.last, p.history[-1])
    run.record(p.history, task.curves(p.history), title)
