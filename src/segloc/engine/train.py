"""Training: ``segloc train`` -- a run folder, checkpoints, exact resume, time budgets, DDP.

:func:`train` fits a segmentation model (:func:`segloc.nn.create_model`) on a dataset folder
(:func:`segloc.engine.data.find_cases`) and keeps everything in a *run folder*:

- ``config.yaml``: the resolved settings (classes, channels, patch ... filled in);
- ``split.json``: the training and validation case names;
- ``best.safetensors`` (best validation Dice) and ``last.safetensors``: segloc checkpoints
  (:func:`segloc.nn.checkpoint.save_checkpoint`) whose ``extra`` holds what inference needs
  (``dims``, ``in_channels``, ``num_classes``, ``normalize``, ``patch_size``,
  ``target_spacing``, ``ignore_index``, ``label_mapping``) and the epoch and Dice;
- ``state.pt``: the training state (weights, optimiser, epoch, step, elapsed time, history,
  random generators), written atomically at the end of each epoch and read back with
  ``torch.load(weights_only=True)`` by ``resume=True``: a killed run loses at most the
  epoch in progress (``samples_per_epoch`` sets its length);
- ``metrics.csv`` (one row per epoch), ``curves.png``, ``samples/*.png`` (image | truth |
  prediction with the Dice in the title, for the first validation cases).

With ``ema`` set, an exponential moving average of the weights (and batch-norm statistics)
is kept beside them [4]_; it is what is validated, checkpointed and returned, while the
optimiser goes on stepping the raw weights (both are in ``state.pt``).

Under ``torchrun --nproc-per-node N`` (environment variables ``WORLD_SIZE``, ``RANK``,
``LOCAL_RANK``) the model is wrapped in :class:`torch.nn.parallel.DistributedDataParallel`
(gloo on CPU, NCCL on CUDA), each rank draws its own patches (seed + rank) from a
:class:`~torch.utils.data.DistributedSampler`, and rank 0 validates and writes the run folder.
The time budget and early stopping are decided jointly so that all ranks stop together.

References
----------
.. [1] Ronneberger, Fischer, Brox, "U-Net", MICCAI 2015, :doi:`10.1007/978-3-319-24574-4_28`
   (SGD with momentum 0.99; the border weight map of ``border_weight``).
.. [2] Isensee et al., "nnU-Net", Nature Methods 2021, :doi:`10.1038/s41592-020-01008-z`
   (Dice + CE, poly learning rate ``(1 - t)^0.9``, one third foreground patches).
.. [3] Loshchilov & Hutter, "SGDR" (cosine schedule), ICLR 2017, :arxiv:`1608.03983`;
   "Decoupled weight decay regularization" (AdamW), ICLR 2019, :arxiv:`1711.05101`.
.. [4] Polyak & Juditsky, "Acceleration of stochastic approximation by averaging", SIAM J.
   Control Optim. 30(4), 1992 (averaged weights); the exponential average with the warm-up
   ``min(decay, (1 + n) / (10 + n))`` of TensorFlow's ``tf.train.ExponentialMovingAverage``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import io as _io
import json
import math
import os
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as torch_dist
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from segloc._validation import check_choice, check_positive, write_atomic
from segloc.engine.augment import Augmenter
from segloc.engine.data import (
    CaseFiles,
    SegmentationDataset,
    find_cases,
    split_cases,
    worker_init_fn,
)
from segloc.io import write_csv
from segloc.metrics import overlap_scores
from segloc.nn import create_model, list_models
from segloc.nn.checkpoint import save_checkpoint
from segloc.nn.fast import to_channels_last
from segloc.nn.weight_map import label_weight_map

__all__ = [
    "STATE_FILE",
    "TrainConfig",
    "TrainResult",
    "ema_update",
    "lr_factor",
    "load_training_state",
    "parse_duration",
    "predict_whole",
    "resolve_device",
    "rng_state",
    "save_training_state",
    "set_rng_state",
    "train",
]

STATE_FILE = "state.pt"
_MODELS_3D = ("unet3d", "vnet")

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
    return _write_bytes(path, buffer.getvalue())


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


def _write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_bytes(data))


def lr_factor(schedule: str, progress: float) -> float:
    """Learning-rate multiplier at ``progress`` in [0, 1] of the run.

    ``"poly"``: ``(1 - t)^0.9`` (nnU-Net); ``"cosine"``: ``(1 + cos(pi t)) / 2`` (SGDR
    without restarts); ``"constant"``: 1.

    Examples
    --------
    >>> lr_factor("cosine", 0.5), lr_factor("poly", 0.0), lr_factor("constant", 0.7)
    (0.5, 1.0, 1.0)
    """
    check_choice(schedule, ("poly", "cosine", "constant"), name="schedule")
    t = min(max(float(progress), 0.0), 1.0)
    if schedule == "poly":
        return (1.0 - t) ** 0.9
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    return 1.0


# --------------------------------------------------------------------------- configuration


@dataclass
class TrainConfig:
    """Settings of one training run (the same keys as ``segloc train`` and its YAML file).

    Attributes
    ----------
    data : str
        Dataset folder (``images/`` + ``labels/`` or ``masks/``).
    out : str
        Run folder.
    model : {"unet", "unetpp", "vnet", "unet3d"}
    classes : int, optional
        Number of classes including background; default: found from the training labels.
    base_channels, depth : int, optional
        Model width and number of poolings (default: the model's own).
    deep_supervision : bool
        U-Net++ only: train all heads (loss averaged over them).
    patch : list of int, optional
        Training patch size; default 256 per axis in 2D (at most the smallest image, rounded
        down to a multiple of ``2**depth``) and the largest volume rounded up in 3D.
    batch : int
    epochs : int, optional
        Stop after this many epochs; with ``time_budget`` whichever comes first.
    time_budget : str or float, optional
        Wall-time budget of the optimisation, e.g. ``"20m"`` (validation included).
    samples_per_epoch : int
        Patches drawn per epoch (the checkpoint interval).
    optimizer : {"adamw", "sgd"}
    lr, weight_decay, momentum : float
        ``momentum`` is SGD's (0.99 as in U-Net, Nesterov).
    schedule : {"poly", "cosine", "constant"}
        Learning rate over the run's progress (epochs, or elapsed time with a budget).
    warmup : float
        Fraction of the run with a linear learning-rate warm-up.
    ema : float, optional
        Decay of an exponential moving average of the weights, e.g. 0.999; the average is
        validated and checkpointed. Off by default. The decay ramps up as
        ``(1 + n) / (10 + n)`` after ``n`` steps, which weighs step ``k`` about as
        ``(k / n)**9`` (61% of the weight on the last tenth of the steps, 87% on the last
        fifth), until the ramp reaches ``ema`` (at 9000 steps for 0.999; from then on the
        average spans about the last 1000 steps).
    loss : {"dice_ce", "ce", "dice"}
    border_weight : float
        ``w0`` of the U-Net paper's weight map [1]_ (10 there; 0, the default, is off): the
        cross-entropy term weighs each background pixel by
        ``1 + w0 * exp(-(d1 + d2)**2 / (2 * border_sigma**2))``, ``d1``, ``d2`` its distances to
        the nearest and second-nearest object (connected component of a foreground class),
        so the thin gaps that separate touching objects count most
        (:func:`segloc.nn.weight_map.label_weight_map`, computed on every augmented patch). The
        paper's class-balancing term is left out: the Dice term balances classes.
    border_sigma : float
        Width of the border term in pixels (about 5 in the paper).
    val : str, optional
        A separate validation dataset folder; otherwise ``val_fraction`` of the cases.
    val_fraction : float
    group_by : {"case", "folder"}
        Split whole folders (e.g. one per patient) rather than single cases.
    val_split : {"random", "last"}
        Validation groups drawn at random, or the last ones in name order (one
        contiguous block of video frames, where random frames would leak).
    val_every : int
        Validate every this many epochs (and at the end).
    patience : int, optional
        Early stopping: stop after this many validations without a better Dice.
    normalize : {"zscore", "percentile", "minmax"} or None
    target_spacing : list of float, optional
        Resample 3D cases to this spacing first.
    ignore_index : int, optional
        Label left out of the loss and the scores (e.g. CamVid void = 11).
    label_suffix, image_dir, label_dir : str, optional
        See :func:`segloc.engine.data.find_cases`.
    augment : {"default", "light", "none"}
        ``"default"``: flips, 90 degree turns, affine, elastic, intensity, noise; ``"light"``:
        flips and 90 degree turns.
    augment_kwargs : dict
        Settings of :class:`segloc.engine.augment.Augmenter` over those of ``augment``, e.g.
        ``{"flip_axes": [1], "p_rot90": 0.0}`` to mirror left-right only, for labels drawn
        with a consistent offset along the rows.
    foreground_fraction : float
        Share of patches centred on foreground.
    workers : int
        DataLoader worker processes.
    cache_mib : int
        Memory for loaded (normalised) cases, per process; least recently used cases are
        dropped beyond it, so any dataset size trains in bounded memory.
    device : {"auto", "cpu", "cuda"}
    precision : {"auto", "fp32", "bf16", "fp16"}
        Autocast precision of the forward pass: ``"auto"`` is float16 with gradient scaling
        on CUDA and float32 on CPU; ``"bf16"`` also runs on CPUs with bfloat16 units. The
        loss is always computed in float32.
    seed : int
    panels : int
        Validation cases drawn as sample panels.
    resume : bool
        Continue the run in ``out`` from its ``state.pt``.
    threads : int, optional
        torch intra-op threads (default: torch's choice).
    extra_model_kwargs : dict
        Constructor arguments of the model over those the trainer sets (e.g.
        ``{"norm": "instance"}``).
    """

    data: str = ""
    out: str = "runs/run"
    model: str = "unet"
    classes: int | None = None
    base_channels: int | None = None
    depth: int | None = None
    deep_supervision: bool = False
    patch: list[int] | None = None
    batch: int = 4
    epochs: int | None = None
    time_budget: str | float | None = None
    samples_per_epoch: int = 200
    optimizer: str = "adamw"
    lr: float | None = None
    weight_decay: float = 1e-4
    momentum: float = 0.99
    schedule: str = "poly"
    warmup: float = 0.0
    ema: float | None = None
    loss: str = "dice_ce"
    border_weight: float = 0.0
    border_sigma: float = 5.0
    val: str | None = None
    val_fraction: float = 0.2
    group_by: str = "case"
    val_split: str = "random"
    val_every: int = 1
    patience: int | None = None
    normalize: str | None = "zscore"
    target_spacing: list[float] | None = None
    ignore_index: int | None = None
    label_suffix: str | None = None
    image_dir: str | None = None
    label_dir: str | None = None
    augment: str = "default"
    augment_kwargs: dict[str, Any] = field(default_factory=dict)
    foreground_fraction: float = 1 / 3
    workers: int = 0
    cache_mib: int = 4096
    device: str = "auto"
    precision: str = "auto"
    seed: int = 0
    panels: int = 2
    resume: bool = False
    threads: int | None = None
    extra_model_kwargs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, source: str = "config") -> TrainConfig:
        """Build from a mapping; unknown keys are an error naming ``source``."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {str(k).replace("-", "_"): v for k, v in values.items()}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"{source}: unknown setting(s) {unknown}; known: {sorted(names)}")
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> TrainConfig:
        """Read settings from a YAML mapping (keys as in ``segloc train --help``)."""
        import yaml

        path = Path(path)
        try:
            values = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise ValueError(f"{path}: not valid YAML ({err})") from None
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise ValueError(f"{path}: a training config must be a YAML mapping")
        return cls.from_dict(values, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> TrainConfig:
        """Check the settings; raise ValueError naming the first bad one."""
        if not self.data:
            raise ValueError("data must name a dataset folder")
        check_choice(self.model, tuple(list_models()), name="model")
        check_choice(self.optimizer, ("adamw", "sgd"), name="optimizer")
        check_choice(self.schedule, ("poly", "cosine", "constant"), name="schedule")
        check_choice(self.loss, ("dice_ce", "ce", "dice"), name="loss")
        check_choice(self.group_by, ("case", "folder"), name="group_by")
        check_choice(self.val_split, ("random", "last"), name="val_split")
        check_choice(self.augment, ("default", "light", "none"), name="augment")
        if not isinstance(self.augment_kwargs, Mapping):
            raise ValueError(f"augment_kwargs must be a mapping, got {self.augment_kwargs!r}")
        known = set(inspect.signature(Augmenter).parameters) - {"dims"}
        unknown = sorted(set(self.augment_kwargs) - known)
        if unknown:
            raise ValueError(
                f"augment_kwargs: unknown Augmenter setting(s) {unknown}; known: {sorted(known)}"
            )
        if self.augment == "none" and self.augment_kwargs:
            raise ValueError("augment_kwargs needs augment 'default' or 'light', not 'none'")
        check_choice(self.precision, ("auto", "fp32", "bf16", "fp16"), name="precision")
        if self.normalize is not None:
            check_choice(self.normalize, ("zscore", "percentile", "minmax"), name="normalize")
        for name in ("batch", "samples_per_epoch", "val_every", "panels", "cache_mib"):
            value = getattr(self, name)
            minimum = 0 if name in ("panels", "cache_mib") else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
        for name in ("epochs", "patience", "classes", "base_channels", "depth", "threads"):
            value = getattr(self, name)
            minimum = 2 if name == "classes" else 1
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < minimum
            ):
                raise ValueError(f"{name} must be an int >= {minimum} or None, got {value!r}")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 0:
            raise ValueError(f"workers must be an int >= 0, got {self.workers!r}")
        if self.epochs is None and self.time_budget is None:
            raise ValueError("give epochs or time_budget (or both) to bound the run")
        if self.time_budget is not None:
            parse_duration(self.time_budget)
        if self.lr is not None:
            check_positive(self.lr, name="lr")
        check_positive(self.weight_decay, name="weight_decay", strict=False)
        check_positive(self.momentum, name="momentum", strict=False)
        if not 0 <= self.warmup < 1:
            raise ValueError(f"warmup must be in [0, 1), got {self.warmup}")
        if self.ema is not None and (
            isinstance(self.ema, bool)
            or not isinstance(self.ema, (int, float))
            or not 0 < self.ema < 1
        ):
            raise ValueError(f"ema must be a decay in (0, 1) or None, got {self.ema!r}")
        for name in ("border_weight", "border_sigma"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name} must be a number, got {value!r}")
        check_positive(self.border_weight, name="border_weight", strict=False)
        check_positive(self.border_sigma, name="border_sigma")
        if self.border_weight and self.loss == "dice":
            raise ValueError(
                "border_weight weighs the cross-entropy, but loss 'dice' has none; "
                "use loss 'dice_ce' or 'ce'"
            )
        if not 0 < self.val_fraction < 1 and self.val is None:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.patch is not None:
            if isinstance(self.patch, int):
                self.patch = [self.patch]
            if not self.patch or any(
                isinstance(p, bool) or not isinstance(p, int) or p < 1 for p in self.patch
            ):
                raise ValueError(f"patch must be positive ints, got {self.patch!r}")
        if self.deep_supervision and self.model != "unetpp":
            raise ValueError(f"deep_supervision is for model 'unetpp', got model {self.model!r}")
        return self


@dataclass
class TrainResult:
    """What :func:`train` returns: the run folder, the best validation Dice and its epoch,
    the epochs run, the per-epoch history rows and the trained model (last weights, or their
    moving average with ``ema``)."""

    out: Path
    best_dice: float
    best_epoch: int
    epochs: int
    history: list[dict[str, Any]]
    model: nn.Module


# --------------------------------------------------------------------------- distributed


@dataclass(frozen=True)
class _Dist:
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
    def from_env(cls) -> _Dist:
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


# --------------------------------------------------------------------------- model pieces


def _model_kwargs(cfg: TrainConfig, dims: int, in_channels: int, classes: int) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"in_channels": in_channels, "num_classes": classes}
    if cfg.base_channels is not None:
        kwargs["base_channels"] = cfg.base_channels
    if cfg.depth is not None:
        kwargs["depth"] = cfg.depth
    if cfg.model == "unet":
        kwargs.update(padding="same", dims=dims, norm="batch")
    elif cfg.model in ("unetpp", "vnet"):
        kwargs["dims"] = dims
        if cfg.model == "unetpp":
            kwargs["deep_supervision"] = bool(cfg.deep_supervision)
        else:
            kwargs["norm"] = "batch"
    kwargs.update(cfg.extra_model_kwargs)
    return kwargs


def _depth(model: nn.Module) -> int:
    return int(getattr(model, "depth", getattr(model, "levels", 4)))


def predict_whole(model: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """Logits of a whole case ``(B, C, *spatial)``, padded to what the model accepts.

    Same-padding models see the image zero-padded at the end of each axis to a multiple of
    ``2**depth`` and the output is cropped back; a valid-padding U-Net goes through
    :func:`segloc.nn.unet.overlap_tile_predict`. Runs without gradients in the model's
    current mode.
    """
    if getattr(model, "padding", "same") == "valid":
        from segloc.nn.unet import overlap_tile_predict

        return overlap_tile_predict(model, image)
    m = 2 ** _depth(model)
    spatial = image.shape[2:]
    pad: list[int] = []
    for n in reversed(spatial):
        pad += [0, -(-n // m) * m - n]
    with torch.no_grad():
        x = nn.functional.pad(image, pad) if any(pad) else image
        out = model(x)
        if isinstance(out, (list, tuple)):
            out = out[-1]
    return out[(slice(None), slice(None), *(slice(0, n) for n in spatial))]


def _loss(cfg: TrainConfig) -> nn.Module:
    from segloc.nn.losses import CrossEntropyLoss, DeepSupervisionLoss, DiceCELoss, DiceLoss

    if cfg.loss == "dice_ce":
        loss: nn.Module = DiceCELoss(
            "multiclass", ignore_index=cfg.ignore_index, include_background=False, batch=True
        )
    elif cfg.loss == "dice":
        loss = DiceLoss(
            "multiclass", ignore_index=cfg.ignore_index, include_background=False, batch=True
        )
    else:
        loss = CrossEntropyLoss("multiclass", ignore_index=cfg.ignore_index)
    return DeepSupervisionLoss(loss) if cfg.deep_supervision else loss


def _weight_map(cfg: TrainConfig) -> Callable[[np.ndarray], np.ndarray] | None:
    """The U-Net border weight map of each training patch, or None when ``border_weight`` is 0.

    A ``functools.partial`` of a module-level function pickles into DataLoader workers.
    """
    if not cfg.border_weight:
        return None
    return functools.partial(
        label_weight_map,
        w0=float(cfg.border_weight),
        sigma=float(cfg.border_sigma),
        class_balance=False,
        ignore_index=cfg.ignore_index,
    )


def _augmenter(cfg: TrainConfig, dims: int) -> Augmenter | None:
    if cfg.augment == "none":
        return None
    kwargs: dict[str, Any] = {}
    if cfg.augment == "light":
        kwargs = {"p_affine": 0.0, "p_elastic": 0.0, "p_intensity": 0.0, "p_noise": 0.0}
    kwargs.update(cfg.augment_kwargs)
    try:
        return Augmenter(dims, **kwargs)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"augment_kwargs: {exc}") from None


def _optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.momentum > 0,
            weight_decay=cfg.weight_decay,
        )
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


# --------------------------------------------------------------------------- data pieces


def _cases(cfg: TrainConfig) -> tuple[list[CaseFiles], list[CaseFiles]]:
    found = find_cases(
        cfg.data,
        image_dir=cfg.image_dir,
        label_dir=cfg.label_dir,
        label_suffix=cfg.label_suffix,
    )
    if cfg.val is not None:
        val = find_cases(
            cfg.val, image_dir=cfg.image_dir, label_dir=cfg.label_dir, label_suffix=cfg.label_suffix
        )
        return found, val
    group = (lambda c: c.image.parent.as_posix()) if cfg.group_by == "folder" else None
    train, val = split_cases(
        found, val_fraction=cfg.val_fraction, seed=cfg.seed, group_by=group, order=cfg.val_split
    )
    if not train or not val:
        raise ValueError(
            f"{cfg.data}: {len(found)} case(s) cannot be split into training and validation; "
            "add cases or pass a separate val folder"
        )
    return train, val


def _survey(dataset: SegmentationDataset, ignore_index: int | None) -> tuple[int, int, int, list]:
    """dims, channels, classes (max label + 1) and spatial shapes of a dataset's cases."""
    dims = channels = None
    top = 0
    shapes = []
    for i in range(len(dataset.cases)):
        image, labels = dataset.load(i)
        if dims is None:
            dims, channels = labels.ndim, image.shape[0]
        elif labels.ndim != dims or image.shape[0] != channels:
            raise ValueError(
                f"{dataset.cases[i].image}: {labels.ndim}D with {image.shape[0]} channel(s), "
                f"but the first case is {dims}D with {channels}"
            )
        values = np.unique(labels)
        if ignore_index is not None:
            values = values[values != ignore_index]
        if values.size and values.min() < 0:
            raise ValueError(f"{dataset.cases[i].label}: negative label {values.min()}")
        top = max(top, int(values.max()) if values.size else 0)
        shapes.append(labels.shape)
    assert dims is not None and channels is not None
    return dims, channels, top + 1, shapes


def _largest_padded(shapes: list, depth: int) -> list[int]:
    """The largest case along each axis, rounded up to a multiple of ``2**depth``."""
    m = 2**depth
    return [int(-(-n // m) * m) for n in np.max(np.array(shapes), axis=0)]


def _default_patch(dims: int, shapes: list, depth: int) -> list[int]:
    m = 2**depth
    if dims == 2:
        smallest = np.min(np.array(shapes), axis=0)
        return [max(m, min(256, int(n) // m * m)) for n in smallest]
    return _largest_padded(shapes, depth)


# --------------------------------------------------------------------------- validation


def _validate(
    model: nn.Module,
    dataset: SegmentationDataset,
    classes: int,
    ignore_index: int | None,
    device: torch.device,
    panels: int,
) -> tuple[dict[str, Any], list[tuple[str, np.ndarray, np.ndarray, np.ndarray, float]]]:
    """Per-case Dice (mean over foreground classes present) and its mean over cases.

    Also returns ``(name, image, truth, prediction, dice)`` of the first ``panels`` cases, for
    :func:`_draw_panels`.
    """
    was_training = model.training
    model.eval()
    per_case, per_class, shown = [], [], []
    try:
        for i in range(len(dataset.cases)):
            image, labels = dataset.load(i)
            x = torch.from_numpy(image[None]).to(device)
            pred = predict_whole(model, x)[0].argmax(0).cpu().numpy()
            scores = overlap_scores(
                pred, labels, num_classes=classes, ignore_index=ignore_index, empty="nan"
            )["dice"]
            per_class.append(scores)
            case_dice = float(np.nanmean(scores)) if np.isfinite(scores).any() else float("nan")
            per_case.append(case_dice)
            if i < panels:
                truth = labels
                if ignore_index is not None:
                    truth = np.where(labels == ignore_index, 0, labels)
                shown.append((dataset.cases[i].name, image, truth, pred, case_dice))
    finally:
        model.train(was_training)
    cases = np.array(per_case, dtype=float)
    table = np.array(per_class, dtype=float)
    with np.errstate(invalid="ignore"), _quiet_nanmean():
        class_means = np.nanmean(table, axis=0) if len(table) else np.array([])
        mean = float(np.nanmean(cases)) if np.isfinite(cases).any() else float("nan")
    row = {"val_dice": mean}
    for c, value in enumerate(class_means, start=1):
        row[f"val_dice_{c}"] = float(value)
    return row, shown


def _draw_panels(
    shown: list[tuple[str, np.ndarray, np.ndarray, np.ndarray, float]], folder: Path, epoch: int
) -> None:
    """image | truth | prediction PNGs of validation cases, one per case, Dice in the title."""
    from segloc.viz import comparison_panel

    for name, image, truth, pred, dice in shown:
        flat = name.replace("/", "_")
        comparison_panel(
            np.moveaxis(image, 0, -1) if image.shape[0] == 3 else image[0],
            truth,
            pred,
            folder / f"{flat}.png",
            dice=dice,
            title=f"{flat}, epoch {epoch}",
        )


@contextlib.contextmanager
def _quiet_nanmean() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN class columns stay NaN
        yield


# --------------------------------------------------------------------------- training


def _checkpoint_extra(
    cfg: TrainConfig, dims: int, channels: int, classes: int, augmenter: Augmenter | None
) -> dict[str, Any]:
    return {
        "dims": dims,
        "in_channels": channels,
        "num_classes": classes,
        "normalize": cfg.normalize,
        "patch_size": list(cfg.patch or []),
        "target_spacing": cfg.target_spacing,
        "ignore_index": cfg.ignore_index,
        "label_mapping": "auto",
        # what the model was taught to be mirror-invariant along: the Predictor's flip TTA
        # averages over these axes only
        "flip_axes": _flip_axes(augmenter),
    }


def _flip_axes(aug: Augmenter | None) -> list[int] | None:
    """Spatial axes training mirrored; None when it did not augment (TTA then mirrors all)."""
    if aug is None:
        return None
    return [int(a) for a in aug.flip_axes] if aug.p_flip > 0 else []


def _as_float(logits: torch.Tensor | Sequence[torch.Tensor]) -> Any:
    if isinstance(logits, torch.Tensor):
        return logits.float()
    return [t.float() for t in logits]


def ema_update(decay: float) -> Any:
    """``multi_avg_fn`` of :class:`torch.optim.swa_utils.AveragedModel`: an exponential
    moving average whose decay ramps up as ``min(decay, (1 + n) / (10 + n))`` after ``n``
    updates, so that the random initial weights are soon forgotten in short runs."""

    def update(averaged: list, current: list, num_averaged: torch.Tensor | int) -> None:
        n = float(num_averaged)
        get_ema_multi_avg_fn(min(decay, (1 + n) / (10 + n)))(averaged, current, num_averaged)

    return update


def _data_seed(seed: int, rank: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, rank, epoch]).generate_state(1, np.uint64)[0] >> 1)


def _bare(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def train(config: TrainConfig | Mapping[str, Any], *, progress: bool = True) -> TrainResult:
    """Train a segmentation model as described by ``config``; see the module docstring.

    Parameters
    ----------
    config : TrainConfig or mapping
        Settings (a mapping goes through :meth:`TrainConfig.from_dict`).
    progress : bool
        Show a tqdm bar per epoch with the loss (on rank 0).

    Returns
    -------
    TrainResult

    Raises
    ------
    ValueError
        Bad settings; a run folder that already holds a state without ``resume``.
    FileNotFoundError
        ``resume`` without a state in the run folder.
    """
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    cfg = dataclasses.replace(cfg).validate()
    dist = _Dist.from_env()
    device = resolve_device(cfg.device, dist.local_rank)
    if dist.on and not torch_dist.is_initialized():
        torch_dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    state_path = out / STATE_FILE
    if cfg.resume:
        state = load_training_state(state_path)
    else:
        if state_path.exists():
            raise ValueError(
                f"{out}: run folder already holds a training state; pass --resume to continue "
                "it or choose another --out"
            )
        state = None

    train_cases, val_cases = _cases(cfg)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)  # noqa: NPY002 (libraries drawing from the global state)
    torch.manual_seed(cfg.seed)
    common = {
        "normalize": cfg.normalize,
        "cache": cfg.cache_mib,
        "ignore_index": cfg.ignore_index,
        "target_spacing": cfg.target_spacing,
    }
    probe = SegmentationDataset(train_cases, **common)
    dims, channels, classes, shapes = _survey(probe, cfg.ignore_index)
    val_dataset = SegmentationDataset(val_cases, **common)
    _, val_channels, val_classes, _ = _survey(val_dataset, cfg.ignore_index)
    if val_channels != channels:
        raise ValueError(
            f"validation images have {val_channels} channel(s), training images {channels}"
        )
    if cfg.classes is None:
        cfg.classes = max(classes, val_classes, 2)
    elif max(classes, val_classes) > cfg.classes:
        raise ValueError(
            f"classes is {cfg.classes} but the labels hold class {max(classes, val_classes) - 1}"
        )
    if cfg.model in _MODELS_3D and dims != 3:
        raise ValueError(f"model {cfg.model!r} is 3D but {cfg.data} holds {dims}D images")
    kwargs = _model_kwargs(cfg, dims, channels, cfg.classes)
    model = create_model(cfg.model, **kwargs)
    depth = _depth(model)
    if cfg.patch is None:
        cfg.patch = _default_patch(dims, shapes, depth)
    elif len(cfg.patch) == 1:
        cfg.patch = cfg.patch * dims
    if len(cfg.patch) != dims:
        raise ValueError(f"patch must have {dims} values for {dims}D data, got {cfg.patch}")
    if any(p % 2**depth for p in cfg.patch):
        raise ValueError(f"patch {cfg.patch} must be divisible by 2**depth = {2**depth}")
    largest = [int(n) for n in np.max(np.array(shapes), axis=0)]
    room = _largest_padded(shapes, depth)
    if any(p > 2 * r for p, r in zip(cfg.patch, room, strict=True)):
        # more padding than image on that axis: costs memory and time (a 256^3 patch of a
        # small MRI set takes tens of GB) and teaches nothing. Some padding is fine (PH2's
        # 192x256 photos in 256 patches)
        raise ValueError(
            f"patch {cfg.patch} is over twice the largest training case on some axis "
            f"({'x'.join(map(str, largest))}); use at most {[2 * r for r in room]}, or "
            f"{room} to pad nothing"
        )
    if cfg.lr is None:
        cfg.lr = 0.01 if cfg.optimizer == "sgd" else 1e-3
    budget = parse_duration(cfg.time_budget) if cfg.time_budget is not None else None

    augmenter = _augmenter(cfg, dims)
    train_dataset = SegmentationDataset(
        train_cases,
        patch_size=cfg.patch,
        augment=augmenter,
        samples_per_epoch=cfg.samples_per_epoch,
        foreground_fraction=cfg.foreground_fraction,
        pixel_weight=_weight_map(cfg),
        seed=cfg.seed + dist.rank,
        **common,
    )
    # hand over the cases the survey already read, normalised, rather than read them twice
    train_dataset._cache, train_dataset._cache_bytes = probe._cache, probe._cache_bytes
    generator = torch.Generator()
    to_channels_last(model.to(device))
    optimizer = _optimizer(cfg, model)
    ema = (
        AveragedModel(model, multi_avg_fn=ema_update(cfg.ema), use_buffers=True)
        if cfg.ema is not None
        else None
    )
    # the weights that are validated, checkpointed and returned
    scored = ema.module if ema is not None else model
    precision = cfg.precision
    if precision == "auto":
        precision = "fp16" if device.type == "cuda" else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("precision 'fp16' needs CUDA; use 'bf16' or 'fp32' on the CPU")
    autocast_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
    use_amp = precision == "fp16"  # gradient scaling: float16 only
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    loss_fn = _loss(cfg)

    epoch, step, elapsed = 0, 0, 0.0
    history: list[dict[str, Any]] = []
    best_dice, best_epoch, since_best = -math.inf, 0, 0
    if state is not None:
        saved_cfg = state.get("config", {})
        for key in ("model", "classes", "patch", "batch", "optimizer", "ema"):
            if key in saved_cfg and saved_cfg[key] != getattr(cfg, key):
                raise ValueError(
                    f"{state_path}: saved run has {key}={saved_cfg[key]!r}, this one "
                    f"{getattr(cfg, key)!r}; resume with the same settings"
                )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if ema is not None and "ema" in state:
            ema.load_state_dict(state["ema"])
        if use_amp and "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        epoch, step, elapsed = int(state["epoch"]), int(state["step"]), float(state["elapsed"])
        history = list(state["history"])
        best_dice, best_epoch = float(state["best_dice"]), int(state["best_epoch"])
        since_best = int(state["since_best"])
        set_rng_state(state["rng"])

    if dist.on:
        net: nn.Module = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
        sampler: Any = DistributedSampler(
            train_dataset, num_replicas=dist.world, rank=dist.rank, seed=cfg.seed
        )
    else:
        net = model
        sampler = RandomSampler(train_dataset, generator=generator)
    loader = DataLoader(
        train_dataset,
        batch_size=cfg.batch,
        sampler=sampler,
        num_workers=cfg.workers,
        worker_init_fn=worker_init_fn,
        generator=generator,
        drop_last=len(train_dataset) // dist.world >= cfg.batch,
        pin_memory=device.type == "cuda",
    )
    extra = _checkpoint_extra(cfg, dims, channels, cfg.classes, augmenter)
    if dist.main:
        import yaml

        # only now: a run refused for its data leaves no folder behind
        out.mkdir(parents=True, exist_ok=True)
        _write_bytes(out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False).encode())
        split = {"train": [c.name for c in train_cases], "val": [c.name for c in val_cases]}
        _write_bytes(out / "split.json", json.dumps(split, indent=1).encode())
    steps_per_epoch = max(len(loader), 1)

    def progress_fraction(seconds: float) -> float:
        parts = []
        if cfg.epochs is not None:
            parts.append(step / (cfg.epochs * steps_per_epoch))
        if budget is not None:
            parts.append(seconds / budget)
        return min(max(parts), 1.0)

    def set_lr(seconds: float) -> float:
        t = progress_fraction(seconds)
        factor = lr_factor(cfg.schedule, t)
        if cfg.warmup > 0 and t < cfg.warmup:
            factor *= t / cfg.warmup
        lr = cfg.lr * factor
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    done = (cfg.epochs is not None and epoch >= cfg.epochs) or (
        budget is not None and elapsed >= budget
    )
    if done and state is not None and dist.main:
        # nothing left to train, but a kill after the last state was saved can have left the
        # other files one epoch behind it
        _write_outputs(out, cfg, kwargs, scored, extra, epoch=epoch, history=history)
    net.train()
    while not done:
        epoch += 1
        # the data pipeline's randomness is a function of (seed, rank, epoch): a resumed run
        # draws the same patches as an uninterrupted one, with or without workers
        data_seed = _data_seed(cfg.seed, dist.rank, epoch)
        generator.manual_seed(data_seed)
        train_dataset.reseed(data_seed)
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)
        from tqdm.auto import tqdm

        bar = tqdm(
            total=steps_per_epoch,
            desc=f"epoch {epoch}",
            disable=not (progress and dist.main),
            leave=False,
            dynamic_ncols=True,
        )
        losses = []
        start = time.perf_counter()
        out_of_time = False
        for batch in loader:
            # rank 0's clock decides for every rank: the same learning rate and the same
            # last step everywhere, or DDP ranks would drift apart or wait for each other
            seconds = dist.shared(elapsed + time.perf_counter() - start, device)
            if budget is not None and seconds >= budget:
                out_of_time = True
                break
            lr = set_lr(seconds)
            x = batch["image"].to(device, non_blocking=True)
            y = batch["label"].to(device, non_blocking=True)
            # the weight map, when there is one, is the loss's third argument
            weight = [batch["weight"].to(device, non_blocking=True)] if "weight" in batch else []
            with torch.autocast(
                device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None
            ):
                logits = net(x)
            loss = loss_fn(_as_float(logits), y, *weight)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if ema is not None:
                ema.update_parameters(model)
            step += 1
            losses.append(float(loss.detach()))
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.4f}", lr=f"{lr:.2e}")
        bar.close()
        elapsed = dist.shared(elapsed + time.perf_counter() - start, device)
        dist.sync_buffers(model)
        if ema is not None:
            dist.sync_buffers(ema.module)  # its batch-norm averages followed rank-local batches
        done = out_of_time or (cfg.epochs is not None and epoch >= cfg.epochs)
        row: dict[str, Any] = {
            "epoch": epoch,
            "step": step,
            "seconds": round(elapsed, 2),
            "lr": optimizer.param_groups[0]["lr"],
            "train_loss": float(np.mean(losses)) if losses else float("nan"),
        }
        stop_early = False
        if dist.main and (done or epoch % cfg.val_every == 0):
            t0 = time.perf_counter()
            scores, shown = _validate(
                scored, val_dataset, cfg.classes, cfg.ignore_index, device, cfg.panels
            )
            row.update(scores)
            dice = row["val_dice"]
            if math.isfinite(dice) and dice > best_dice:
                best_dice, best_epoch, since_best = dice, epoch, 0
                save_checkpoint(
                    out / "best.safetensors",
                    cfg.model,
                    kwargs,
                    scored,
                    extra={**extra, "epoch": epoch, "val_dice": dice},
                )
            else:
                since_best += 1
            # the panels show the best checkpoint (or the latest while no Dice is finite):
            # drawing them every epoch cost ~7% of an ISBI run's budget
            if best_epoch in (epoch, 0):
                _draw_panels(shown, out / "samples", epoch)
            elapsed += time.perf_counter() - t0
            out_of_time = budget is not None and elapsed >= budget
            stop_early = cfg.patience is not None and since_best >= cfg.patience
            if progress:
                print(
                    f"epoch {epoch}: loss {row['train_loss']:.4f}, val Dice {dice:.4f} "
                    f"(best {best_dice:.4f} @ {best_epoch}), {elapsed:.0f} s",
                    flush=True,
                )
        history.append(row)
        # validation time counts: a budget spent during it ends the run here
        done = done or dist.any(stop_early or out_of_time, device)
        elapsed = dist.shared(elapsed, device)
        if dist.main:
            # the resume point first: a kill between these writes leaves the other files at
            # most one epoch behind it, never ahead (a resume rewrites them)
            _save_state(
                out / STATE_FILE,
                cfg,
                model,
                ema,
                optimizer,
                scaler if use_amp else None,
                epoch=epoch,
                step=step,
                elapsed=elapsed,
                history=history,
                best=(best_dice, best_epoch, since_best),
            )
            _write_outputs(out, cfg, kwargs, scored, extra, epoch=epoch, history=history)
        dist.barrier()
    return TrainResult(out, best_dice, best_epoch, epoch, history, scored)


def _save_state(
    path: Path,
    cfg: TrainConfig,
    model: nn.Module,
    ema: AveragedModel | None,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    *,
    epoch: int,
    step: int,
    elapsed: float,
    history: list[dict[str, Any]],
    best: tuple[float, int, int],
) -> None:
    state = {
        "config": cfg.to_dict(),
        "model": _bare(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": epoch,
        "step": step,
        "elapsed": elapsed,
        "history": history,
        "best_dice": best[0],
        "best_epoch": best[1],
        "since_best": best[2],
        "rng": rng_state(),
    }
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    if ema is not None:
        state["ema"] = ema.state_dict()
    save_training_state(path, state)


def _write_outputs(
    out: Path,
    cfg: TrainConfig,
    kwargs: dict[str, Any],
    model: nn.Module,
    extra: dict[str, Any],
    *,
    epoch: int,
    history: list[dict[str, Any]],
) -> None:
    """last.safetensors, metrics.csv and curves.png of the run as of ``epoch``."""
    last = history[-1]
    save_checkpoint(
        out / "last.safetensors",
        cfg.model,
        kwargs,
        model,
        extra={**extra, "epoch": epoch, "val_dice": last.get("val_dice")},
    )
    write_csv(out / "metrics.csv", history)
    curves: dict[str, list[float]] = {"train loss": [r["train_loss"] for r in history]}
    dice_rows = [r.get("val_dice", float("nan")) for r in history]
    if any(np.isfinite(dice_rows)):
        curves["val Dice"] = dice_rows
    from segloc.viz import plot_curves

    plot_curves(curves, out / "curves.png", title=f"{cfg.model} on {Path(cfg.data).name}")
