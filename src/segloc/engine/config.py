"""The settings of a segmentation training run: ``segloc train``'s flags and YAML keys.

:class:`TrainConfig` is one flat record whose field names are the YAML keys and, with
dashes, the command-line flags; :meth:`TrainConfig.validate` refuses a bad value before
anything is read or built. What each option does is in ``docs/training.md``.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segloc._validation import check_choice, check_positive
from segloc.engine.augment import Augmenter
from segloc.engine.preprocess import NORMALIZATIONS
from segloc.engine.run import PRECISIONS, RUN_CONFIG_END, RUN_CONFIG_START, parse_duration
from segloc.nn import NORMS, SEGMENTATION_MODELS

__all__ = ["TrainConfig", "yaml_mapping"]


def yaml_mapping(path: str | os.PathLike) -> dict[str, Any]:
    """The mapping in a YAML file (keys with ``_`` for ``-``), or ValueError naming the file."""
    import yaml

    path = Path(path)
    if not path.is_file():  # a config the user named: bad input, as a missing image is
        raise ValueError(f"{path}: no such file (the training config)")
    try:
        text = path.read_text(encoding="utf-8")
        started = text.startswith(RUN_CONFIG_START) or (text and RUN_CONFIG_START.startswith(text))
        if started and not text.endswith(RUN_CONFIG_END):
            raise ValueError(
                f"{path}: cut short (a run's config without its last line, "
                f"{RUN_CONFIG_END.strip()!r}); the run folder is damaged"
            )
        values = yaml.safe_load(text)
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except yaml.YAMLError as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"{path}: not valid YAML ({first})") from None
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: a training config must be a YAML mapping")
    return {str(k).replace("-", "_"): v for k, v in values.items()}


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
    select : {"best", "last"}
        The weights ``model.safetensors`` (what ``segloc predict`` uses) holds: those of
        the best validation Dice, or those at the end of training.
    decide : list of str
        Choices made on the validation split after training and recorded in
        ``model.safetensors`` for ``segloc predict``: ``"tta"`` (flip test-time augmentation
        on or off) and ``"keep_largest"`` (keep only the largest connected component of a
        class). Their scores go to ``decisions.json``.
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
    normalize : {"zscore", "body", "ct", "percentile", "minmax"} or None
        Per case and channel (:func:`segloc.engine.preprocess.normalize_case`): ``"body"``
        z-scores over the image without its dark frame, ``"ct"`` clips and z-scores with the
        dataset-wide ``intensity_stats``.
    intensity_stats : list of dict, optional
        Per channel ``lo``, ``hi``, ``mean``, ``std`` for ``normalize: ct``.
    label_mapping : {"auto", "binary"}
        How label files become classes: ``"auto"`` (0/255 masks -> 0/1, label maps kept) or
        ``"binary"`` (any non-zero value -> 1: instance ids segmented as foreground).
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
    foreground_cases : bool
        A foreground draw on a case without foreground moves to a case with some (nnU-Net's
        2D loader), so the share holds where patches cover whole slices and few slices hold
        the object. False: keep the drawn case (segloc before 2026-12-06).
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
    norm : {"batch", "instance", None}
        Normalisation after each convolution (:func:`segloc.nn.blocks.norm_nd`): batch
        normalisation (the default, the 3D U-Net paper's), instance normalisation (nnU-Net's,
        independent of the batch) or none (``None``; ``"none"`` on the command line).
    extra_model_kwargs : dict
        Constructor arguments of the model over those the trainer sets (e.g.
        ``{"pools": ...}``).
    """

    data: str = ""
    out: str = "runs/run"
    model: str = "unet"
    classes: int | None = None
    base_channels: int | None = None
    depth: int | None = None
    norm: str | None = "batch"
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
    select: str = "best"
    decide: list[str] = field(default_factory=list)
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
    intensity_stats: list[dict[str, float]] | None = None
    label_mapping: str = "auto"
    target_spacing: list[float] | None = None
    ignore_index: int | None = None
    label_suffix: str | None = None
    image_dir: str | None = None
    label_dir: str | None = None
    augment: str = "default"
    augment_kwargs: dict[str, Any] = field(default_factory=dict)
    foreground_fraction: float = 1 / 3
    foreground_cases: bool = True
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
        if values.get("norm") == "none":  # the command line's spelling of YAML's null
            values["norm"] = None
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> TrainConfig:
        """Read settings from a YAML mapping (keys as in ``segloc train --help``)."""
        return cls.from_dict(yaml_mapping(path), source=str(path))

    @classmethod
    def from_sources(
        cls,
        path: str | os.PathLike | None = None,
        overrides: Mapping[str, Any] | None = None,
        *,
        plan: Mapping[str, Any] | None = None,
    ) -> TrainConfig:
        """Settings in layers: the defaults, then ``plan`` (a planner's settings), then the
        YAML file at ``path``, then ``overrides`` (the flags given): flag > file > plan.

        None values in ``overrides`` leave the layers below alone; the file's keys count
        as given only where the file names them.
        """
        values = dict(cls.from_dict(plan, source="plan").to_dict()) if plan else {}
        written = yaml_mapping(path) if path else {}
        values.update(written)
        flags = {k: v for k, v in (overrides or {}).items() if v is not None}
        values.update(flags)
        cfg = cls.from_dict(values, source=str(path) if path else "command line")
        if written:
            cfg._check_written(str(path), set(written) - set(flags))
        return cfg

    def _check_written(self, path: str, names: set[str]) -> None:
        """Raise ValueError naming ``path`` if the first bad setting is one of ``names``
        (written in that file, not overridden by a flag); other problems are left to
        :meth:`validate`, since a planner's layer may still fill them."""
        try:
            dataclasses.replace(self).validate()
        except ValueError as err:
            # yaml_mapping spells keys with underscores, as the messages name settings
            if str(err).split(" ", 1)[0].rstrip(":") in names:
                raise ValueError(f"{path}: {err}") from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> TrainConfig:
        """Check the settings; raise ValueError naming the first bad one (a message about
        one setting begins with its name)."""
        try:
            return self._validate()
        except TypeError as err:  # a number written as text in a YAML file is a bad value
            raise ValueError(str(err)) from None

    def _validate(self) -> TrainConfig:
        if not self.data:
            raise ValueError("data must name a dataset folder")
        data, out = Path(self.data).resolve(), Path(self.out).resolve()
        if out == data or data in out.parents:
            raise ValueError(
                f"out must be a folder outside the dataset, got {self.out} inside {self.data}"
            )
        check_choice(self.model, SEGMENTATION_MODELS, name="model")
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
        check_choice(self.precision, PRECISIONS, name="precision")
        check_choice(self.norm, NORMS, name="norm")
        if self.normalize is not None:
            check_choice(self.normalize, NORMALIZATIONS, name="normalize")
        if self.normalize == "ct" and not self.intensity_stats:
            raise ValueError("normalize 'ct' needs intensity_stats (lo, hi, mean, std per channel)")
        check_choice(self.label_mapping, ("auto", "binary"), name="label_mapping")
        check_choice(self.select, ("best", "last"), name="select")
        for name in ("deep_supervision", "foreground_cases", "resume"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if not isinstance(self.decide, list) or not set(self.decide) <= {"tta", "keep_largest"}:
            raise ValueError(
                f"decide must be a list of 'tta' and 'keep_largest', got {self.decide!r}"
            )
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
            try:
                parse_duration(self.time_budget)
            except (TypeError, ValueError) as err:
                raise ValueError(f"time_budget: {err}") from None
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
