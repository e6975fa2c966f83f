"""Trained runs under ``--runs``: listed by name, loaded on demand, a few kept in memory.

A run is named by its path inside the runs folder, and a client's name is only ever looked up
in the listing, never joined to a path. Prediction is segloc's
:class:`segloc.engine.infer.Predictor` (Gaussian sliding windows); a forward hook on its
network counts the windows done so that a job can report progress.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np

from segloc.engine.infer import Predictor, window_starts
from segloc.nn.checkpoint import load_checkpoint

__all__ = ["ModelStore", "UnknownModel", "predict_labels"]

_progress = threading.local()  # the callback of the prediction running on this thread
_LIST_TTL = 10.0  # seconds a listing of the runs folder is reused


#: the checkpoints of a run folder, in the order one stands for the run
_RUN_FILES = ("model.safetensors", "best.safetensors", "last.safetensors")


class UnknownModel(KeyError):
    """A model name that is not in the runs listing."""

    def __str__(self) -> str:
        return f"unknown model {self.args[0]!r}; GET /api/models lists them"


def _count_windows(module, inputs, output) -> None:
    callback = getattr(_progress, "callback", None)
    if callback is not None:
        callback(int(inputs[0].shape[0]))


class ModelStore:
    """The runs under one folder, and the predictors loaded from them (least recent dropped).

    Parameters
    ----------
    runs : Path or None
        Folder of run folders (each holding ``best.safetensors`` or ``last.safetensors``) or
        checkpoint files; None serves no models.
    keep : int
        Predictors kept loaded.
    """

    def __init__(self, runs: Path | None, *, keep: int = 2, max_runs: int = 500) -> None:
        self.runs = None if runs is None else Path(runs).resolve()
        self.keep, self.max_runs = keep, max_runs
        self._listing: tuple[float, dict[str, Path]] | None = None
        self._meta: dict[tuple[Path, float], dict] = {}
        self._loaded: OrderedDict[str, Predictor] = OrderedDict()
        self._lock = threading.Lock()

    def _scan(self) -> dict[str, Path]:
        if self.runs is None or not self.runs.is_dir():
            return {}
        now = time.monotonic()
        if self._listing is not None and now - self._listing[0] < _LIST_TTL:
            return self._listing[1]
        found: dict[str, Path] = {}
        for path in sorted(self.runs.rglob("*.safetensors")):
            if len(found) >= self.max_runs:
                break
            rel = path.relative_to(self.runs)
            if any(part.startswith(".") for part in rel.parts):
                continue
            if path.name in _RUN_FILES:
                name = rel.parent.as_posix() or "."
                # a run folder is one model: its chosen model, else its best, else its last
                if name in found and _RUN_FILES.index(found[name].name) < _RUN_FILES.index(
                    path.name
                ):
                    continue
                found[name] = path
            else:
                found[rel.as_posix()] = path
        self._listing = (now, found)
        return found

    def path(self, name: str) -> Path:
        """The checkpoint of run ``name``. Raises :class:`UnknownModel`."""
        listing = self._scan()
        if name not in listing:
            raise UnknownModel(name)
        return listing[name]

    def describe(self, name: str) -> dict:
        """``{"name", "model", "dims", "in_channels", "num_classes", "patch_size"}``."""
        path = self.path(name)
        key = (path, path.stat().st_mtime)
        if key not in self._meta:
            model, _, _, extra = load_checkpoint(path)
            self._meta[key] = {
                "model": model,
                "dims": extra.get("dims"),
                "in_channels": extra.get("in_channels"),
                "num_classes": extra.get("num_classes"),
                "patch_size": extra.get("patch_size"),
            }
        return {"name": name, **self._meta[key]}

    def list(self) -> list[dict]:
        """Every run, described; a checkpoint that cannot be read is listed with its error."""
        out = []
        for name in self._scan():
            try:
                out.append(self.describe(name))
            except Exception as exc:  # a broken file must not hide the others
                out.append({"name": name, "error": str(exc).splitlines()[0]})
        return out

    def predictor(self, name: str) -> Predictor:
        """The loaded predictor of run ``name`` (loaded now if needed, on the CPU)."""
        path = self.path(name)
        with self._lock:
            if name in self._loaded and self._loaded[name].path == path:
                self._loaded.move_to_end(name)
                return self._loaded[name]
        predictor = Predictor(path, device="cpu")
        predictor.network.register_forward_hook(_count_windows)
        with self._lock:
            self._loaded[name] = predictor
            while len(self._loaded) > self.keep:
                self._loaded.popitem(last=False)
        return predictor


def _expected_windows(predictor: Predictor, shape: tuple[int, ...], spacing) -> int:
    """Windows the predictor will run over an image of ``shape`` (for the progress bar)."""
    size = list(shape[: predictor.dims])
    if predictor.target_spacing is not None and spacing is not None:
        size = [
            max(1, round(s * sp / t))
            for s, sp, t in zip(size, spacing, predictor.target_spacing, strict=True)
        ]
    counts = [
        len(window_starts(max(s, p), p, predictor.overlap))
        for s, p in zip(size, predictor.patch_size, strict=True)
    ]
    return max(1, math.prod(counts))


def predict_labels(
    predictor: Predictor,
    image: np.ndarray,
    spacing,
    progress: Callable[[float], None] | None = None,
) -> np.ndarray:
    """Label map of ``image`` by ``predictor``, as uint8, reporting the fraction of windows done.

    Raises
    ------
    ValueError
        Image and model do not fit (dimensions, channels), or more than 255 classes.
    """
    if predictor.num_classes > 256:
        raise ValueError(f"models of at most 256 classes are served, got {predictor.num_classes}")
    spacing = spacing if spacing is not None and len(spacing) == predictor.dims else None
    total = _expected_windows(predictor, image.shape, spacing)
    done = 0

    def count(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(min(done / total, 0.99))  # the estimate can be short; 1.0 means finished

    _progress.callback = count
    try:
        prob = predictor.predict(image, spacing=spacing)
    finally:
        _progress.callback = None
    return predictor.labels(prob).astype(np.uint8)
