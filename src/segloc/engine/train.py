"""Training: ``segloc train`` -- a run folder, checkpoints, exact resume, time budgets, DDP.

:func:`train` fits a segmentation model (:func:`segloc.nn.create_model`) on a dataset folder
(:func:`segloc.engine.data.find_cases`) with the shared loop of :mod:`segloc.engine.run`
(:func:`~segloc.engine.run.fit`, one budget rule, one resume guard) and keeps everything in a
*run folder* (:class:`~segloc.engine.run.RunFolder`):

- ``config.yaml``: the resolved settings (classes, channels, patch ... filled in);
- ``split.json``: the training and validation case names;
- ``best.safetensors`` (best validation Dice) and ``last.safetensors``: segloc checkpoints
  (:func:`segloc.nn.checkpoint.save_checkpoint`) whose ``extra`` is a
  :class:`~segloc.nn.checkpoint.CheckpointMeta`: what inference needs, the epoch and Dice;
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
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as torch_dist
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from segloc._validation import write_atomic
from segloc.engine.augment import Augmenter
from segloc.engine.config import TrainConfig
from segloc.engine.data import CaseFiles, find_cases, split_cases
from segloc.engine.infer import model_depth as _depth
from segloc.engine.infer import model_multiples, predict_whole
from segloc.engine.patches import SegmentationDataset, worker_init_fn
from segloc.engine.run import (
    Budget,
    Dist,
    RunFolder,
    autocast_dtype,
    fit,
    lr_factor,
    resolve_device,
)
from segloc.metrics import overlap_scores
from segloc.nn import create_model
from segloc.nn.checkpoint import CheckpointMeta, save_checkpoint
from segloc.nn.fast import to_channels_last
from segloc.nn.losses import CrossEntropyLoss, DeepSupervisionLoss, DiceCELoss, DiceLoss
from segloc.nn.weight_map import label_weight_map
from segloc.viz import comparison_panel

__all__ = ["TrainConfig", "TrainResult", "ema_update", "predict_whole", "train"]

_MODELS_3D = ("unet3d", "vnet")


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


# --------------------------------------------------------------------------- model pieces


def _model_kwargs(cfg: TrainConfig, dims: int, in_channels: int, classes: int) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"in_channels": in_channels, "num_classes": classes}
    if cfg.base_channels is not None:
        kwargs["base_channels"] = cfg.base_channels
    if cfg.depth is not None:
        kwargs["depth"] = cfg.depth
    kwargs["norm"] = cfg.norm
    if cfg.model == "unet":
        kwargs.update(padding="same", dims=dims)
    elif cfg.model in ("unetpp", "vnet"):
        kwargs["dims"] = dims
        if cfg.model == "unetpp":
            kwargs["deep_supervision"] = bool(cfg.deep_supervision)
    clash = sorted(set(cfg.extra_model_kwargs) & {"in_channels", "num_classes", "dims"})
    if clash:
        raise ValueError(
            f"extra_model_kwargs: {clash} come from the data; set classes in the config instead"
        )
    kwargs.update(cfg.extra_model_kwargs)
    return kwargs


def _loss(cfg: TrainConfig) -> nn.Module:

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


def _flip_axes(aug: Augmenter | None) -> list[int] | None:
    """Spatial axes training mirrored; None when it did not augment (TTA then mirrors all)."""
    if aug is None:
        return None
    return [int(a) for a in aug.flip_axes] if aug.p_flip > 0 else []


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


def ema_update(decay: float) -> Any:
    """``multi_avg_fn`` of :class:`torch.optim.swa_utils.AveragedModel`: an exponential
    moving average whose decay ramps up as ``min(decay, (1 + n) / (10 + n))`` after ``n``
    updates, so that the random initial weights are soon forgotten in short runs."""

    def update(averaged: list, current: list, num_averaged: torch.Tensor | int) -> None:
        n = float(num_averaged)
        get_ema_multi_avg_fn(min(decay, (1 + n) / (10 + n)))(averaged, current, num_averaged)

    return update


def _as_float(logits: torch.Tensor | Sequence[torch.Tensor]) -> Any:
    if isinstance(logits, torch.Tensor):
        return logits.float()
    return [t.float() for t in logits]


def _bare(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


# --------------------------------------------------------------------------- data


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
            "add cases or give a separate validation dataset (--val / val)"
        )
    return train, val


@dataclass
class _Survey:
    """What the cases of a dataset hold: dims, channels, label values, spatial shapes."""

    dims: int
    channels: int
    values: set[int]
    shapes: list
    ignore_seen: bool
    first: Path  # the first case's image
    where: dict[int, Path]  # a label value -> the first label file holding it
    foreground: list[int]  # indices of the cases holding a class > 0 (ignore label apart)

    @property
    def classes(self) -> int:
        return max(self.values, default=0) + 1


def _survey(
    dataset: SegmentationDataset, ignore_index: int | None, like: _Survey | None = None
) -> _Survey:
    """Read every case once (normalised, cached for training) and note what it holds;
    every case must have the dimensions and channels of the first (of ``like``'s first)."""
    dims, channels = (like.dims, like.channels) if like is not None else (None, None)
    first = like.first if like is not None else None
    values: set[int] = set()
    where: dict[int, Path] = {}
    shapes, ignore_seen, foreground = [], False, []
    for i, case in enumerate(dataset.cases):
        try:
            image, labels = dataset.load(i)
        except ValueError as err:
            message = str(err)
            named = message if str(case.image) in message else f"{case.image}: {message}"
            raise ValueError(named) from None
        if dims is None:
            dims, channels, first = labels.ndim, image.shape[0], case.image
        elif labels.ndim != dims or image.shape[0] != channels:
            raise ValueError(
                f"{case.image}: {labels.ndim}D with {image.shape[0]} channel(s), "
                f"but the first case ({first}) is {dims}D with {channels}"
            )
        found = np.unique(labels)
        if ignore_index is not None:
            ignore_seen = ignore_seen or bool((found == ignore_index).any())
            found = found[found != ignore_index]
        if found.size and found.min() < 0:
            raise ValueError(f"{case.label}: negative label {found.min()}")
        for v in found.tolist():
            where.setdefault(int(v), case.label)
        values.update(int(v) for v in found)
        shapes.append(labels.shape)
        if found.size and found.max() > 0:
            foreground.append(i)
    assert dims is not None and channels is not None and first is not None
    return _Survey(dims, channels, values, shapes, ignore_seen, first, where, foreground)


def _check_classes(cfg: TrainConfig, train: _Survey, val: _Survey) -> None:
    """Settle ``cfg.classes``: consecutive label values from 0, an ignore label that occurs."""
    values = train.values | val.values
    top = max(values, default=0)
    if cfg.classes is None:
        missing = sorted(set(range(top + 1)) - values)
        if missing:
            raise ValueError(
                f"{cfg.data}: the labels hold classes {sorted(values)}, so {missing} never "
                f"appear: relabel them to consecutive classes, or set classes (e.g. "
                f"classes: {top + 1}) to train the empty ones on purpose"
            )
        cfg.classes = max(top + 1, 2)
    elif top >= cfg.classes:
        holder = train.where.get(top) or val.where[top]
        raise ValueError(
            f"{holder}: holds class {top}, but classes is {cfg.classes} (labels must be in "
            f"0..{cfg.classes - 1})"
        )
    if cfg.ignore_index is not None and not (train.ignore_seen or val.ignore_seen):
        raise ValueError(
            f"{cfg.data}: ignore_index {cfg.ignore_index} appears in no label file; "
            "leave it out or give the value the labels use for unlabelled pixels"
        )


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


@dataclass
class _Data:
    """The checked data of a run: cases, datasets, what the survey found."""

    train_cases: list[CaseFiles]
    val_cases: list[CaseFiles]
    train: SegmentationDataset
    val: SegmentationDataset
    dims: int
    channels: int
    augmenter: Augmenter | None


def _check_patch(cfg: TrainConfig, dims: int, shapes: list, shell: nn.Module) -> None:
    """Fill in or check ``cfg.patch`` (divisible by the pooling, not mostly padding)."""
    depth = _depth(shell)
    multiples = model_multiples(shell, dims)
    if cfg.patch is None:
        cfg.patch = _default_patch(dims, shapes, depth)
    elif len(cfg.patch) == 1:
        cfg.patch = cfg.patch * dims
    if len(cfg.patch) != dims:
        raise ValueError(f"patch must have {dims} values for {dims}D data, got {cfg.patch}")
    if any(p % m for p, m in zip(cfg.patch, multiples, strict=True)):
        what = f"2**depth = {2**depth}" if len(set(multiples)) == 1 else f"{list(multiples)}"
        raise ValueError(f"patch {cfg.patch} must be divisible by {what}")
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


def _prepare_data(cfg: TrainConfig, dist: Dist) -> _Data:
    """Find, split and survey the cases; settle classes and patch; build the datasets.

    Fills in ``cfg.classes``, ``cfg.patch`` and ``cfg.lr`` where they were left open.
    """
    train_cases, val_cases = _cases(cfg)
    common = {
        "normalize": cfg.normalize,
        "intensity_stats": cfg.intensity_stats,
        "label_mapping": cfg.label_mapping,
        "cache": cfg.cache_mib,
        "ignore_index": cfg.ignore_index,
        "target_spacing": cfg.target_spacing,
    }
    probe = SegmentationDataset(train_cases, **common)
    survey = _survey(probe, cfg.ignore_index)
    dims, channels, shapes = survey.dims, survey.channels, survey.shapes
    val = SegmentationDataset(val_cases, **common)
    val_survey = _survey(val, cfg.ignore_index, like=survey)  # the training cases' layout
    _check_classes(cfg, survey, val_survey)
    if cfg.model in _MODELS_3D and dims != 3:
        raise ValueError(f"model {cfg.model!r} is 3D but {cfg.data} holds {dims}D images")
    _check_patch(cfg, dims, shapes, _shell(cfg, dims, channels))
    if cfg.lr is None:
        cfg.lr = 0.01 if cfg.optimizer == "sgd" else 1e-3
    augmenter = _augmenter(cfg, dims)
    train = SegmentationDataset(
        train_cases,
        patch_size=cfg.patch,
        augment=augmenter,
        samples_per_epoch=cfg.samples_per_epoch,
        foreground_fraction=cfg.foreground_fraction,
        foreground_cases=survey.foreground if cfg.foreground_cases else [],
        pixel_weight=_weight_map(cfg),
        seed=cfg.seed + dist.rank,
        **common,
    )
    # hand over the cases the survey already read, normalised, rather than read them twice
    train._cache, train._cache_bytes = probe._cache, probe._cache_bytes
    return _Data(train_cases, val_cases, train, val, dims, channels, augmenter)


def _shell(cfg: TrainConfig, dims: int, channels: int) -> nn.Module:
    """The model on the meta device: its depth and arguments checked, no memory taken."""
    kwargs = _model_kwargs(cfg, dims, channels, cfg.classes or 2)
    try:
        with torch.device("meta"):
            return create_model(cfg.model, **kwargs)
    except TypeError as err:
        raise ValueError(f"extra_model_kwargs: {err}") from None


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


# --------------------------------------------------------------------------- the task


def _data_seed(seed: int, rank: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, rank, epoch]).generate_state(1, np.uint64)[0] >> 1)


class _SegmentationTask:
    """One segmentation run for :func:`segloc.engine.run.fit`: model, optimiser, data."""

    score = "val_dice"

    def __init__(self, cfg: TrainConfig, data: _Data, device: torch.device, dist: Dist) -> None:
        self.cfg, self.data, self.device, self.dist = cfg, data, device, dist
        self.kwargs = _model_kwargs(cfg, data.dims, data.channels, cfg.classes)
        self.model = create_model(cfg.model, **self.kwargs)
        to_channels_last(self.model.to(device))
        self.optimizer = _optimizer(cfg, self.model)
        self.ema = (
            AveragedModel(self.model, multi_avg_fn=ema_update(cfg.ema), use_buffers=True)
            if cfg.ema is not None
            else None
        )
        # the weights that are validated, checkpointed and returned
        self.scored = self.ema.module if self.ema is not None else self.model
        self.autocast = autocast_dtype(cfg.precision, device)
        self.use_amp = self.autocast == torch.float16  # gradient scaling: float16 only
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.loss_fn = _loss(cfg)
        self.meta = CheckpointMeta(
            dims=data.dims,
            in_channels=data.channels,
            num_classes=cfg.classes,
            patch_size=tuple(cfg.patch),
            normalize=cfg.normalize,
            target_spacing=None if cfg.target_spacing is None else tuple(cfg.target_spacing),
            ignore_index=cfg.ignore_index,
            label_mapping=cfg.label_mapping,
            # what the model was taught to be mirror-invariant along: flip TTA averages
            # over these axes only
            flip_axes=_flip_axes(data.augmenter),
            intensity_stats=None if cfg.intensity_stats is None else tuple(cfg.intensity_stats),
        )
        self._loader()
        self._shown: list = []

    def _loader(self) -> None:
        cfg, dist, dataset = self.cfg, self.dist, self.data.train
        self.generator = torch.Generator()
        if dist.on:
            self.net: nn.Module = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
            self.sampler: Any = DistributedSampler(
                dataset, num_replicas=dist.world, rank=dist.rank, seed=cfg.seed
            )
        else:
            self.net = self.model
            self.sampler = RandomSampler(dataset, generator=self.generator)
        self.loader = DataLoader(
            dataset,
            batch_size=cfg.batch,
            sampler=self.sampler,
            num_workers=cfg.workers,
            worker_init_fn=worker_init_fn,
            generator=self.generator,
            drop_last=len(dataset) // dist.world >= cfg.batch,
            pin_memory=self.device.type == "cuda",
        )
        self.steps_per_epoch = max(len(self.loader), 1)

    def batches(self, epoch: int) -> Iterable[Any]:
        # the data pipeline's randomness is a function of (seed, rank, epoch): a resumed run
        # draws the same patches as an uninterrupted one, with or without workers
        seed = _data_seed(self.cfg.seed, self.dist.rank, epoch)
        self.generator.manual_seed(seed)
        self.data.train.reseed(seed)
        if isinstance(self.sampler, DistributedSampler):
            self.sampler.set_epoch(epoch)
        self.net.train()
        return self.loader

    def train_step(self, batch: Mapping[str, torch.Tensor], progress: float) -> dict[str, float]:
        lr = self.cfg.lr * lr_factor(self.cfg.schedule, progress, self.cfg.warmup)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        x = batch["image"].to(self.device, non_blocking=True)
        y = batch["label"].to(self.device, non_blocking=True)
        # the weight map, when there is one, is the loss's third argument
        weight = [batch["weight"].to(self.device, non_blocking=True)] if "weight" in batch else []
        with torch.autocast(
            self.device.type, dtype=self.autocast, enabled=self.autocast is not None
        ):
            logits = self.net(x)
        loss = self.loss_fn(_as_float(logits), y, *weight)
        self.optimizer.zero_grad(set_to_none=True)
        # decided on every rank alike: a rank skipping backward alone would hang DDP
        if self.dist.any(not bool(torch.isfinite(loss.detach())), self.device):
            return {"loss": float("nan")}
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        return {"loss": float(loss.detach())}

    def current_lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def tail_seconds(self, validation: float) -> float:
        """What follows training (:func:`_finish`), from the last validation pass (without
        its panels): one pass without and, for TTA, one per mirror combination, plus writing
        the model (a quarter of a second)."""
        if not self.cfg.decide:
            return 0.25
        flips = self.meta.flip_axes
        mirrors = 2 ** (self.data.dims if flips is None else len(flips))
        passes = 1 + (mirrors if "tta" in self.cfg.decide and flips != [] else 0)
        return 0.25 + passes * getattr(self, "_val_seconds", validation)

    def end_epoch(self, dist: Dist) -> None:
        dist.sync_buffers(self.model)
        if self.ema is not None:
            dist.sync_buffers(self.ema.module)  # its batch-norm averages followed rank batches

    def validate(self, epoch: int) -> dict[str, float]:
        cfg = self.cfg
        t0 = time.perf_counter()
        row, self._shown = _validate(
            self.scored, self.data.val, cfg.classes, cfg.ignore_index, self.device, cfg.panels
        )
        self._val_seconds = time.perf_counter() - t0
        return row

    def validated(self, epoch: int, best: bool) -> None:
        # the panels show the best checkpoint (or the latest while no Dice is finite):
        # drawing them every epoch cost ~7% of an ISBI run's budget
        if best:
            _draw_panels(self._shown, Path(self.cfg.out) / "samples", epoch)

    def save(self, path: Path, row: Mapping[str, Any]) -> None:
        meta = dataclasses.replace(self.meta, epoch=row["epoch"], val_dice=row.get("val_dice"))
        save_checkpoint(path, self.cfg.model, self.kwargs, self.scored, extra=meta.to_extra())

    def state_dict(self) -> dict[str, Any]:
        state = {
            "config": self.cfg.to_dict(),
            "model": _bare(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
        }
        if self.use_amp:
            state["scaler"] = self.scaler.state_dict()
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        saved = state.get("config", {})
        for key in ("model", "classes", "patch", "batch", "optimizer", "ema"):
            if key in saved and saved[key] != getattr(self.cfg, key):
                raise ValueError(
                    f"{Path(self.cfg.out) / 'state.pt'}: saved run has {key}={saved[key]!r}, "
                    f"this one {getattr(self.cfg, key)!r}; resume with the same settings"
                )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None and "ema" in state:
            self.ema.load_state_dict(state["ema"])
        if self.use_amp and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])

    def curves(self, history: Sequence[Mapping[str, Any]]) -> dict[str, list]:
        curves: dict[str, list] = {"train loss": [r["train_loss"] for r in history]}
        dice = [r.get("val_dice", float("nan")) for r in history]
        if any(np.isfinite(dice)):
            curves["val Dice"] = dice
        return curves


# --------------------------------------------------------------------------- training


def train(
    config: TrainConfig | Mapping[str, Any],
    *,
    progress: bool = True,
    started: float | None = None,
    files: Mapping[str, str] | None = None,
) -> TrainResult:
    """Train a segmentation model as described by ``config``; see the module docstring.

    Parameters
    ----------
    config : TrainConfig or mapping
        Settings (a mapping goes through :meth:`TrainConfig.from_dict`).
    progress : bool
        Show a tqdm bar per epoch with the loss (on rank 0).
    started : float, optional
        ``time.perf_counter()`` when the run began (e.g. before planning it): the time
        budget counts from there. Default: this call.
    files : mapping, optional
        File name -> text to keep in the run folder (``plan.yaml``, ``fingerprint.json``).

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
    started = time.perf_counter() if started is None else started
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    cfg = dataclasses.replace(cfg).validate()
    dist = Dist.from_env()
    device = resolve_device(cfg.device, dist.local_rank)
    if dist.on and not torch_dist.is_initialized():
        torch_dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    run = RunFolder(cfg.out, main=dist.main, files=files)
    state = run.begin(resume=cfg.resume)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)  # noqa: NPY002 (libraries drawing from the global state)
    torch.manual_seed(cfg.seed)
    data = _prepare_data(cfg, dist)
    task = _SegmentationTask(cfg, data, device, dist)
    split = {"train": [c.name for c in data.train_cases], "val": [c.name for c in data.val_cases]}
    done = fit(
        task,
        run,
        Budget.of(cfg.epochs, cfg.time_budget),
        config=cfg.to_dict(),
        split=split,
        state=state,
        val_every=cfg.val_every,
        patience=cfg.patience,
        dist=dist,
        progress=progress,
        title=f"{cfg.model} on {Path(cfg.data).name}",
        spent=time.perf_counter() - started,
    )
    if dist.main:
        _finish(task, run, done)
    return TrainResult(run.path, done.best, done.best_epoch, done.epoch, done.history, task.scored)


def _finish(task: _SegmentationTask, run: RunFolder, done: Any) -> None:
    """``model.safetensors``: the weights ``select`` names, with the choices ``decide`` made
    on the validation split (scores in ``decisions.json``)."""
    import json

    from segloc.engine.decisions import decide
    from segloc.nn.checkpoint import load_model

    cfg = task.cfg
    model = task.scored
    source = run.last
    if cfg.select == "best" and run.best.is_file():
        model, source = load_model(run.best, device=task.device), run.best
    row = (
        done.history[-1]
        if source == run.last
        else {"epoch": done.best_epoch, "val_dice": done.best}
    )
    meta = dataclasses.replace(task.meta, epoch=row["epoch"], val_dice=row.get("val_dice"))
    if cfg.decide:
        found = decide(
            model,
            task.data.val,
            classes=cfg.classes,
            choices=cfg.decide,
            flip_axes=task.meta.flip_axes,
            ignore_index=cfg.ignore_index,
            device=task.device,
        )
        settings = found["settings"]
        meta = dataclasses.replace(
            meta, tta=settings["tta"], keep_largest=tuple(settings["keep_largest"])
        )
        found["weights"] = source.name
        text = json.dumps(found, indent=1, sort_keys=True, allow_nan=True)
        write_atomic(run.path / "decisions.json", lambda tmp: tmp.write_text(text))
    save_checkpoint(run.model, cfg.model, task.kwargs, model, extra=meta.to_extra())
