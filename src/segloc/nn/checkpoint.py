"""Model checkpoints that rebuild without code and never unpickle anything.

A checkpoint holds the factory name, the constructor keyword arguments and the weights, so
``load_model(path)`` calls :func:`segloc.nn.create_model` and loads the state dict strictly.
The native format is safetensors (tensors plus a string-to-string metadata header); ``.pt`` files
holding ``{"model": name, "kwargs": {...}, "state_dict": {...}}`` are read with
``torch.load(weights_only=True)``, which refuses arbitrary Python objects.

The training engine extends checkpoints through ``extra`` (any JSON-serialisable dict); what
a segmentation trainer writes there is a :class:`CheckpointMeta` record and what the box
localizer writes a :class:`LocalizerMeta`, each read back with ``from_extra`` (checked, and
naming the file when something is missing or wrong).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from segloc._validation import atomic_path
from segloc.nn import create_model, list_models

__all__ = [
    "CheckpointError",
    "CheckpointMeta",
    "LocalizerMeta",
    "load_checkpoint",
    "load_model",
    "resolve_checkpoint",
    "save_checkpoint",
]

_TORCH_SUFFIXES = (".pt", ".pth")


class CheckpointError(ValueError):
    """A file that is not a usable segloc checkpoint; the message starts with its path."""


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint file, or a run folder's ``model.safetensors`` (the weights the run chose,
    with the choices made on its validation split), else ``best.safetensors``, else
    ``last.safetensors``.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist or a run folder holds neither file.
    """
    path = Path(path)
    if path.is_dir():
        for name in ("model.safetensors", "best.safetensors", "last.safetensors"):
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"{path}: run folder without best.safetensors or last.safetensors")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file or run folder")
    return path


def _int(extra: Mapping[str, Any], key: str, path: Any, *, minimum: int = 0) -> int:
    value = extra.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise CheckpointError(
            f"{path}: checkpoint {key} must be an int >= {minimum}, got {value!r}"
        )
    return value


def _ints(value: Any, key: str, path: Any) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise CheckpointError(f"{path}: checkpoint {key} must be a list of ints, got {value!r}")
    return tuple(value)


def _stats(value: Any, path: Any) -> tuple[dict[str, float], ...] | None:
    """Per-channel ``lo``, ``hi``, ``mean``, ``std`` figures, checked."""
    if value is None:
        return None
    keys = ("lo", "hi", "mean", "std")
    ok = isinstance(value, (list, tuple)) and all(
        isinstance(v, Mapping)
        and all(isinstance(v.get(k), (int, float)) and not isinstance(v.get(k), bool) for k in keys)
        for v in value
    )
    if not ok:
        raise CheckpointError(
            f"{path}: checkpoint intensity_stats must be a list of {{lo, hi, mean, std}} numbers"
        )
    return tuple({k: float(v[k]) for k in keys} for v in value)


@dataclass(frozen=True)
class CheckpointMeta:
    """What inference needs of a segmentation checkpoint; the trainer writes it as ``extra``.

    Attributes
    ----------
    dims, in_channels, num_classes : int
        2 or 3 spatial axes; image channels; classes including background.
    patch_size : tuple of int
        The training patch, the inference window.
    normalize : str or None
        :func:`segloc.engine.preprocess.normalize` method.
    target_spacing : tuple of float or None
        Spacing cases were resampled to (3D).
    ignore_index : int or None
        Label left out of the loss and the scores.
    label_mapping : {"auto", None}
        How label files became classes (:func:`segloc.engine.data.load_case`).
    flip_axes : tuple of int or None
        Spatial axes training mirrored (flip TTA mirrors only these); None: not recorded.
    intensity_stats : tuple of dict or None
        Per channel ``lo``, ``hi``, ``mean``, ``std``: the dataset-wide figures of the
        ``"ct"`` normalisation.
    tta : bool or None
        Whether prediction averages the mirrored axes, as decided on the validation split
        after training; None: not decided (prediction does as it is told, without by default).
    keep_largest : tuple of int
        Classes of which prediction keeps only the largest connected component (decided on
        the validation split after training).
    epoch : int or None
    val_dice : float or None
        Where the weights were taken and their validation Dice.
    """

    dims: int
    in_channels: int
    num_classes: int
    patch_size: tuple[int, ...]
    normalize: str | None = "zscore"
    target_spacing: tuple[float, ...] | None = None
    ignore_index: int | None = None
    label_mapping: str | None = "auto"
    flip_axes: tuple[int, ...] | None = None
    intensity_stats: tuple[dict[str, float], ...] | None = None
    tta: bool | None = None
    keep_largest: tuple[int, ...] = ()
    epoch: int | None = None
    val_dice: float | None = None

    def to_extra(self) -> dict[str, Any]:
        """JSON-ready dict (tuples as lists, a non-finite Dice as None)."""
        out = dataclasses.asdict(self)
        for key in ("patch_size", "target_spacing", "flip_axes", "intensity_stats", "keep_largest"):
            if out[key] is not None:
                out[key] = list(out[key])
        if out["val_dice"] is not None and not math.isfinite(out["val_dice"]):
            out["val_dice"] = None
        return out

    @classmethod
    def from_extra(cls, extra: Mapping[str, Any], *, path: Any = "checkpoint") -> CheckpointMeta:
        """Read and check the record (other keys are ignored).

        Raises
        ------
        CheckpointError
            A required field missing (not from the segloc trainer) or of the wrong type,
            naming ``path``.
        """
        missing = [
            k for k in ("dims", "in_channels", "num_classes", "patch_size") if k not in extra
        ]
        if missing:
            raise CheckpointError(
                f"{path}: checkpoint extra lacks {missing} (not from the segloc trainer?)"
            )
        dims = _int(extra, "dims", path, minimum=2)
        if dims not in (2, 3):
            raise CheckpointError(f"{path}: checkpoint dims must be 2 or 3, got {dims}")
        patch = _ints(extra["patch_size"], "patch_size", path)
        if len(patch) != dims or min(patch) < 1:
            raise CheckpointError(f"{path}: checkpoint patch_size must be {dims} ints >= 1")
        spacing = extra.get("target_spacing")
        if spacing is not None:
            spacing = [spacing] if isinstance(spacing, (int, float)) else list(spacing)
            spacing = spacing * dims if len(spacing) == 1 else spacing  # one value: every axis
            if len(spacing) != dims or not all(
                isinstance(s, (int, float)) and math.isfinite(s) and s > 0 for s in spacing
            ):
                raise CheckpointError(
                    f"{path}: checkpoint target_spacing must be {dims} positive numbers"
                )
            spacing = tuple(float(s) for s in spacing)
        flips = extra.get("flip_axes")
        ignore = extra.get("ignore_index")
        if ignore is not None and (isinstance(ignore, bool) or not isinstance(ignore, int)):
            raise CheckpointError(f"{path}: checkpoint ignore_index must be an int or null")
        tta = extra.get("tta")
        if tta is not None and not isinstance(tta, bool):
            raise CheckpointError(f"{path}: checkpoint tta must be true, false or null")
        return cls(
            dims=dims,
            in_channels=_int(extra, "in_channels", path, minimum=1),
            num_classes=_int(extra, "num_classes", path, minimum=2),
            patch_size=patch,
            normalize=extra.get("normalize"),
            target_spacing=spacing,
            ignore_index=ignore,
            label_mapping=extra.get("label_mapping"),
            flip_axes=None if flips is None else _ints(flips, "flip_axes", path),
            intensity_stats=_stats(extra.get("intensity_stats"), path),
            tta=tta,
            keep_largest=_ints(extra.get("keep_largest") or [], "keep_largest", path),
            epoch=extra.get("epoch"),
            val_dice=extra.get("val_dice"),
        )


@dataclass(frozen=True)
class LocalizerMeta:
    """What a box-localizer checkpoint keeps beside its weights (``extra``).

    Attributes
    ----------
    classes : tuple of str
        Class names; the network's class ``k`` (1-based, 0 = no object) is ``classes[k - 1]``.
    epoch : int or None
    metrics : dict
        The epoch's row of ``metrics.csv`` (losses, validation IoU and AP).
    """

    classes: tuple[str, ...] = ("object",)
    epoch: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    def to_extra(self) -> dict[str, Any]:
        """JSON-ready dict (non-finite metrics as None)."""
        metrics = {k: (float(v) if math.isfinite(v) else None) for k, v in self.metrics.items()}
        return {"classes": list(self.classes), "epoch": self.epoch, "metrics": metrics}

    @classmethod
    def from_extra(cls, extra: Mapping[str, Any], *, path: Any = "checkpoint") -> LocalizerMeta:
        classes = extra.get("classes") or ["object"]
        if not isinstance(classes, Sequence) or not all(isinstance(c, str) for c in classes):
            raise CheckpointError(f"{path}: checkpoint classes must be a list of names")
        return cls(tuple(classes), extra.get("epoch"), dict(extra.get("metrics") or {}))


def _json(value: Any, *, name: str) -> str:
    try:
        return json.dumps(value, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be JSON-serialisable, got {value!r}: {err}") from None


def save_checkpoint(
    path: str | os.PathLike,
    model_name: str,
    kwargs: dict[str, Any],
    model: nn.Module,
    *,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model``'s weights and how to rebuild it to a safetensors file, atomically.

    Parameters
    ----------
    path : path-like
        Output file, conventionally ``*.safetensors``.
    model_name : str
        Factory name (see :func:`segloc.nn.list_models`).
    kwargs : dict
        Keyword arguments with which ``create_model(model_name, **kwargs)`` rebuilds ``model``;
        JSON-serialisable.
    model : nn.Module
    extra : dict, optional
        Anything else to keep (epoch, metrics...), JSON-serialisable.

    Returns
    -------
    Path
        ``path``.

    Notes
    -----
    Tensors are stored contiguous, on the CPU. The safetensors metadata holds
    ``segloc_model``, ``segloc_kwargs`` and ``segloc_extra`` (JSON strings).
    """
    if model_name not in list_models():
        raise ValueError(f"model_name must be one of {list_models()}, got {model_name!r}")
    if not isinstance(kwargs, dict):
        raise TypeError(f"kwargs must be a dict, got {type(kwargs).__name__}")
    if extra is not None and not isinstance(extra, dict):
        raise TypeError(f"extra must be a dict or None, got {type(extra).__name__}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    metadata = {
        "segloc_model": model_name,
        "segloc_kwargs": _json(kwargs, name="kwargs"),
        "segloc_extra": _json(extra or {}, name="extra"),
    }
    # clone() gives every tensor its own storage: safetensors refuses shared ones.
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return Path(path)


def _load_torch(path: Path) -> tuple[str, dict, dict[str, torch.Tensor], dict]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # the restricted unpickler fails in many ways
        # weights_only refuses anything but tensors, dicts, lists and plain values.
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{path}: not a segloc checkpoint (refused by torch.load "
            f"with weights_only=True: {first})"
        ) from None
    keys = {"model", "kwargs", "state_dict"}
    if not isinstance(obj, dict) or not keys <= set(obj):
        raise CheckpointError(
            f"{path}: not a segloc checkpoint (expected a dict with keys {sorted(keys)})"
        )
    name, kwargs, state, extra = obj["model"], obj["kwargs"], obj["state_dict"], obj.get("extra")
    extra = {} if extra is None else extra
    if not (isinstance(name, str) and isinstance(kwargs, dict) and isinstance(extra, dict)):
        raise CheckpointError(
            f"{path}: not a segloc checkpoint ('model' must be a str, 'kwargs' and 'extra' dicts)"
        )
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise CheckpointError(f"{path}: 'state_dict' must map names to tensors")
    return name, kwargs, dict(state), extra


def _load_safetensors(path: Path) -> tuple[str, dict, dict[str, torch.Tensor], dict]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            if "segloc_model" not in meta or "segloc_kwargs" not in meta:
                raise CheckpointError(
                    f"{path}: not a segloc checkpoint (no segloc_model/segloc_kwargs metadata)"
                )
            state = {k: f.get_tensor(k) for k in f.keys()}
    except SafetensorError as err:
        raise CheckpointError(f"{path}: not a segloc checkpoint (not safetensors: {err})") from None
    try:
        kwargs = json.loads(meta["segloc_kwargs"])
        extra = json.loads(meta.get("segloc_extra", "{}"))
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: corrupt segloc metadata ({err})") from None
    if not isinstance(kwargs, dict) or not isinstance(extra, dict):
        raise CheckpointError(f"{path}: corrupt segloc metadata (kwargs and extra must be dicts)")
    return meta["segloc_model"], kwargs, state, extra


def load_checkpoint(
    path: str | os.PathLike,
) -> tuple[str, dict[str, Any], dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint` (or a ``.pt``/``.pth`` dict);
    ``path`` may be a run folder (:func:`resolve_checkpoint`).

    Returns
    -------
    model_name : str
    kwargs : dict
    state_dict : dict of str -> Tensor (on the CPU)
    extra : dict

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    CheckpointError
        A ``ValueError`` naming the file, if it is not a segloc checkpoint. ``.pt``/``.pth``
        files go through ``torch.load(weights_only=True)``: a pickled object is refused.
    """
    path = resolve_checkpoint(path)
    if path.suffix.lower() in _TORCH_SUFFIXES:
        return _load_torch(path)
    return _load_safetensors(path)


def load_model(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model stored in ``path`` and load its weights strictly, in eval mode.

    Raises
    ------
    FileNotFoundError, CheckpointError
        As :func:`load_checkpoint`; also ``CheckpointError`` when the model cannot be built from
        the stored arguments or the tensors do not match it (missing, unexpected or misshapen).
    """
    path = resolve_checkpoint(path)
    name, kwargs, state, _ = load_checkpoint(path)
    try:
        # on the meta device first: arguments that ask for terabytes cost nothing there, and
        # the stored tensors must fit before any memory is taken
        with torch.device("meta"):
            shell = create_model(name, **kwargs)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: cannot rebuild model {name!r}: {err}") from None
    problems = _mismatches(shell.state_dict(), state)
    if problems:
        raise CheckpointError(f"{path}: weights do not fit model {name!r}: {problems}")
    model = create_model(name, **kwargs)
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


def _mismatches(expected: dict[str, torch.Tensor], stored: dict[str, torch.Tensor]) -> str:
    """Short summary of how ``stored`` differs from ``expected`` ('' if it fits)."""

    def listing(names: list[str]) -> str:
        return ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")

    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    shapes = [
        f"{k}: {tuple(stored[k].shape)} stored, {tuple(v.shape)} expected"
        for k, v in expected.items()
        if k in stored and stored[k].shape != v.shape
    ]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing ({listing(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected ({listing(unexpected)})")
    if shapes:
        more = "; ..." if len(shapes) > 1 else ""
        parts.append(f"{len(shapes)} tensors of the wrong shape ({shapes[0]}{more})")
    return "; ".join(parts)
