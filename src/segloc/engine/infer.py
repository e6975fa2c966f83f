"""Inference: Gaussian-weighted sliding windows, flip test-time augmentation, a predictor.

:func:`sliding_window_inference` runs a segmentation network over an image larger than its
training patch: overlapping windows (default half a patch), each window's output weighted by
a Gaussian that trusts the window centre more than its border [1]_, accumulated on the CPU
in one output array and one weight map (windows are batched and never all held at once).
:class:`Predictor` wraps a training checkpoint: it reads the checkpoint's preprocessing
(normalisation, target spacing, patch size) and turns an image as read from disk into class
probabilities on the input grid.
:class:`Ensemble` averages the probabilities of several predictors.

Window placement is MONAI's [2]_: windows start every ``int(patch * (1 - overlap))`` pixels
and the last one is moved back to end at the image border; inputs smaller than the patch are
zero-padded symmetrically (after normalisation, 0 is the mean for z-score) and cropped back.

References
----------
.. [1] Isensee, F. et al. "nnU-Net: a self-configuring method for deep learning-based
   biomedical image segmentation", Nature Methods 18, 2021,
   :doi:`10.1038/s41592-020-01008-z` (sliding windows with half-patch overlap, Gaussian
   importance weighting with sigma = patch / 8, mirroring test-time augmentation).
.. [2] MONAI, ``monai.inferers.sliding_window_inference``,
   https://docs.monai.io/en/stable/inferers.html
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage as ndi
from torch import nn

from segloc._validation import check_choice, check_int, check_not_inputs, check_spacing, naming
from segloc.coco import detections_to_coco, write_coco_json
from segloc.engine.preprocess import normalize_case, resample
from segloc.engine.run import autocast_dtype, resolve_device
from segloc.engine.windows import (
    WindowStats,
    flip_tta,
    gaussian_importance,
    label_dtype,
    sliding_window_inference,
    window_predictor,
    window_starts,
)
from segloc.instances import (
    detections_from_class_probability,
    detections_from_probability,
)
from segloc.io import (
    Header,
    ImageMeta,
    case_stem,
    check_files,
    list_images,
    mask_suffix,
    read_image,
    write_mask,
)
from segloc.masks import keep_largest
from segloc.nn.checkpoint import (
    CheckpointError,
    CheckpointMeta,
    load_checkpoint,
    load_model,
    resolve_checkpoint,
)
from segloc.nn.export import OnnxPredictor, export_onnx
from segloc.nn.fast import optimize_for_inference
from segloc.nn.unet import overlap_tile_predict
from segloc.viz import overlay_mask, save_png

__all__ = [
    "Ensemble",
    "Predictor",
    "expand_inputs",
    "flip_tta",
    "gaussian_importance",
    "keep_largest_classes",
    "load_predictor",
    "model_depth",
    "model_multiples",
    "predict_to_folder",
    "predict_whole",
    "sliding_window_inference",
    "window_starts",
]

#: the largest window overlap Predictor takes: windows 1/16 of a patch apart per axis
MAX_OVERLAP = 0.9375


def model_depth(model: nn.Module) -> int:
    """Poolings of a segloc network (``depth`` or ``levels``; 4 when it names neither)."""
    return int(getattr(model, "depth", getattr(model, "levels", 4)))


def model_multiples(model: nn.Module, dims: int) -> tuple[int, ...]:
    """Per axis, what a same-padding network's input must be a multiple of: the U-Net's
    ``multiples`` (its pooling per axis), else ``2**depth`` on every axis."""
    found = getattr(model, "multiples", None)
    if found is not None and len(found) == dims:
        return tuple(int(m) for m in found)
    return (2 ** model_depth(model),) * dims


def predict_whole(model: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """Logits of a whole case ``(B, C, *spatial)``, padded to what the model accepts.

    Same-padding models see the image zero-padded at the end of each axis to a multiple of
    its pooling (``2**depth``, or the U-Net's per-axis ``multiples``) and the output is cropped
    back; a valid-padding U-Net goes through
    :func:`segloc.nn.unet.overlap_tile_predict`. Runs without gradients in the model's
    current mode.
    """
    if getattr(model, "padding", "same") == "valid":
        from segloc.nn.unet import overlap_tile_predict

        return overlap_tile_predict(model, image)
    spatial = image.shape[2:]
    multiples = model_multiples(model, len(spatial))
    pad: list[int] = []
    for n, m in reversed(list(zip(spatial, multiples, strict=True))):
        pad += [0, -(-n // m) * m - n]
    with torch.no_grad():
        x = nn.functional.pad(image, pad) if any(pad) else image
        out = model(x)
        if isinstance(out, (list, tuple)):
            out = out[-1]
    return out[(slice(None), slice(None), *(slice(0, n) for n in spatial))]


# --------------------------------------------------------------------------- predictor


def _zoom_to(prob: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Linear resampling of ``(K, *spatial)`` probabilities onto exactly ``shape``.

    Pixel edges of both grids span the same extent (``grid_mode=True``), as in
    :func:`segloc.engine.preprocess.resample`, which this undoes; a linear interpolation of a
    partition of unity still sums to 1.
    """
    zoom = [t / s for t, s in zip(shape, prob.shape[1:], strict=True)]
    out = np.stack(
        [ndi.zoom(p, zoom, order=1, mode="nearest", grid_mode=True) for p in prob]
    ).astype(np.float32)
    if out.shape[1:] != tuple(shape):
        raise RuntimeError(f"zoom gave shape {out.shape[1:]}, expected {tuple(shape)}")
    return out


def keep_largest_classes(labels: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """``labels`` with only the largest connected component of each class in ``classes``
    (the other components become background, 0), as nnU-Net's post-processing.

    Examples
    --------
    >>> keep_largest_classes(np.array([[1, 1, 0, 1, 2]]), [1]).tolist()
    [[1, 1, 0, 0, 2]]
    """
    if not len(classes):
        return labels
    out = labels.copy()
    for c in classes:
        mask = labels == c
        if mask.any():
            out[mask & ~keep_largest(mask)] = 0
    return out


class _Probabilities:
    """What a predictor derives from its ``predict``: labels, files, the binary flag."""

    num_classes: int
    label_mapping: str | None
    dims: int
    in_channels: int
    meta: CheckpointMeta

    def predict(self, image: np.ndarray, spacing: Sequence[float] | None = None) -> np.ndarray:
        raise NotImplementedError

    @property
    def binary(self) -> bool:
        """True when the model's two classes stand for a 0/255 (or 0/1) mask."""
        return self.num_classes == 2 and self.label_mapping in ("auto", "binary")

    def labels(self, prob: np.ndarray) -> np.ndarray:
        """Label map from probabilities: a bool mask for binary models, else int32 classes.

        Classes named in the checkpoint's ``keep_largest`` keep only their largest connected
        component (the rest becomes background), as decided on the validation split.
        """
        lab = np.argmax(prob, axis=0)
        lab = keep_largest_classes(lab, self.meta.keep_largest)
        return lab.astype(bool) if self.binary else lab.astype(np.int32)

    def predict_labels(
        self, image: np.ndarray, spacing: Sequence[float] | None = None
    ) -> np.ndarray:
        """Label map of ``image`` (see :meth:`labels`); here from the full probabilities."""
        return self.labels(self.predict(image, spacing=spacing))

    def check_layout(self, shape: Sequence[int]) -> int:
        """The channels the model sees in an image of ``shape`` (as read: grey 1, RGB(A) 3);
        ``ValueError`` unless it suits the model's dimensions and input channels."""
        shape = tuple(int(n) for n in shape)
        if len(shape) == self.dims:
            channels = 1
        elif self.dims == 2 and len(shape) == 3 and shape[-1] in (3, 4):
            channels = 3
        else:
            want = "(rows, cols) or (rows, cols, 3)" if self.dims == 2 else "(rows, cols, slices)"
            raise ValueError(f"image must be {want} for this {self.dims}D model, got {shape}")
        if channels != self.in_channels:
            raise ValueError(
                f"image must have {self.in_channels} channel(s) for this model, "
                f"got {channels} (shape {shape})"
            )
        return channels

    def check_header(self, header: Header) -> None:
        """:meth:`check_layout` of a file from its header (:func:`segloc.io.inspect`),
        before anything is read; the error names the file."""
        colour = (header.channels,) if header.channels > 1 else ()
        with naming(header.path):
            self.check_layout(header.shape + colour)

    def predict_file(
        self, path: str | os.PathLike, *, probabilities: bool = True
    ) -> tuple[np.ndarray, np.ndarray | None, ImageMeta]:
        """Read ``path`` and predict it: ``(labels, probabilities (K, *spatial), meta)``.

        With ``probabilities=False`` the second item is None and the labels come from
        :meth:`predict_labels` (no float array of the image's size per class).
        """
        image, meta = read_image(path)
        spacing = meta.spacing if len(meta.spacing) == self.dims else None
        try:
            if not probabilities:
                return self.predict_labels(image, spacing=spacing), None, meta
            prob = self.predict(image, spacing=spacing)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
        return self.labels(prob), prob, meta


class Predictor(_Probabilities):
    """Class probabilities for images as read from disk, from a segloc training checkpoint.

    Parameters
    ----------
    model : path-like
        A run folder (its ``best.safetensors``, else ``last.safetensors``) or a checkpoint file
        written with :func:`segloc.nn.checkpoint.save_checkpoint`, whose ``extra`` holds
        ``dims``, ``in_channels``, ``num_classes``, ``normalize``, ``patch_size``,
        ``target_spacing`` and ``label_mapping``.
    device : {"auto", "cpu", "cuda"} or torch.device
        ``"auto"``: CUDA when available.
    backend : {"torch", "onnx"}
        ``"onnx"`` exports the network to a temporary ONNX file and runs it with ONNX Runtime on
        the CPU (:class:`segloc.nn.export.OnnxPredictor`).
    precision : {"auto", "fp32", "bf16", "fp16"}
        Autocast of the torch network's calls (:func:`sliding_window_inference`): ``"auto"``
        is float16 on CUDA, float32 on the CPU. The ONNX backend computes in float32 only.
    batch_size : int, optional
        Windows per network call. Default: 1 for a 3D network's windows (more than one slice
        thick) on the CPU, 4 otherwise. On the CPU one 96³ window per call of MONAI's 3D
        BasicUNet was faster than four (37.7 s against 40.6 s for 48 windows) at under half
        the peak memory (1,380 MiB against 3,570;
        ``benchmarks/results/sliding_window_heap.md``); in 2D four were faster (47.5 s against
        52.9 s for 961 windows of 256²).
    overlap, tta, mode, sigma_scale :
        Passed to :func:`sliding_window_inference`. ``tta`` mirrors the axes the checkpoint's
        :class:`~segloc.nn.checkpoint.CheckpointMeta` names in ``flip_axes`` (those training
        mirrored: none when it did not flip), all axes when it names none (``None``, or a
        checkpoint from before it was recorded). ``tta=None`` does what the checkpoint's
        ``tta`` says (decided on the validation split after training), else no TTA.
    progress : bool
        tqdm bar over windows.

    Notes
    -----
    A U-Net with ``padding="valid"`` is run with
    :func:`segloc.nn.unet.overlap_tile_predict` (mirrored borders, exact tiling) instead of
    Gaussian windows; it supports the torch backend only, and ``tta`` averages the soft-max
    over flips of the whole image.
    """

    def __init__(
        self,
        model: str | os.PathLike,
        *,
        device: str | torch.device = "auto",
        backend: str = "torch",
        precision: str = "auto",
        overlap: float = 0.5,
        batch_size: int | None = None,
        tta: bool | None = None,
        mode: str = "gaussian",
        sigma_scale: float = 0.125,
        progress: bool = False,
    ) -> None:
        check_choice(backend, ("torch", "onnx"), name="backend")
        # "cuda" without CUDA is a clear ValueError there, not an AssertionError at .to()
        self.device = resolve_device(device)
        self.autocast = autocast_dtype(precision, self.device)
        # the session's windows run on the CPU, where "auto" is float32 too
        if backend == "onnx" and precision not in ("auto", "fp32"):
            raise ValueError(
                f"backend 'onnx' computes in float32; precision {precision!r} needs 'torch'"
            )
        self.precision = precision
        if not isinstance(overlap, (int, float)) or not 0 <= overlap <= MAX_OVERLAP:
            raise ValueError(
                f"overlap must be in [0, {MAX_OVERLAP}], got {overlap!r}: beyond it windows "
                "overlap so much that the work grows hundreds of times for nothing"
            )
        self.path = resolve_checkpoint(model)
        name, kwargs, _, extra = load_checkpoint(self.path)
        meta = CheckpointMeta.from_extra(extra, path=self.path)
        for key in ("in_channels", "num_classes"):
            if key in kwargs and kwargs[key] != getattr(meta, key):
                raise CheckpointError(
                    f"{self.path}: metadata says {key} {getattr(meta, key)}, the model's "
                    f"arguments {kwargs[key]}"
                )
        self.model_name, self.kwargs, self.meta = name, kwargs, meta
        self.dims, self.in_channels = meta.dims, meta.in_channels
        self.num_classes, self.patch_size = meta.num_classes, meta.patch_size
        self.normalize, self.target_spacing = meta.normalize, meta.target_spacing
        self.label_mapping = meta.label_mapping
        self.backend = backend
        if batch_size is None:
            # a slice-wise network's windows are one slice thick: 2D-sized, so batched
            solid = self.dims == 3 and min(self.patch_size) > 1
            batch_size = 1 if solid and self.device.type == "cpu" else 4
        self.overlap, self.batch_size = overlap, check_int(batch_size, name="batch_size", minimum=1)
        self.tta = bool(meta.tta) if tta is None else bool(tta)
        # the axes training mirrored (None: not recorded, all); TTA mirrors only those
        self.tta_axes = meta.flip_axes
        self.mode, self.sigma_scale, self.progress = mode, sigma_scale, progress
        self.network: nn.Module = load_model(self.path, device=self.device)
        self.valid_unet = getattr(self.network, "padding", None) == "valid"
        #: windows blended, computed and reused (constant background) over this predictor's life
        self.stats = WindowStats()
        self._onnx = None
        if backend == "onnx":
            if self.valid_unet:
                raise ValueError(
                    "backend must be 'torch' for a U-Net with padding='valid', got 'onnx'"
                )
            self._onnx = self._export_onnx()
        else:
            # batch norm folded, channels-last weights: U-Net / U-Net++ forward passes 1.29x /
            # 1.22x faster on this CPU (benchmarks/results/models.md). Not before the ONNX
            # export, which refuses channels-last weights with dynamic sizes.
            self.network = optimize_for_inference(self.network)

    def _export_onnx(self):

        tmpdir = tempfile.mkdtemp(prefix="segloc-onnx-")
        path = Path(tmpdir) / "model.onnx"
        export_onnx(self.network.cpu(), path, example_shape=(1, self.in_channels, *self.patch_size))
        self.network.to(self.device)
        predictor = OnnxPredictor(path)
        # The session holds the model in memory; the file is not needed any more.
        path.unlink()
        os.rmdir(tmpdir)
        return predictor

    @property
    def paths(self) -> list[Path]:
        """The checkpoint file, as a list (an :class:`Ensemble` has several)."""
        return [self.path]

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        if self._onnx is not None:
            return torch.from_numpy(self._onnx(x.detach().cpu().numpy()))
        return self.network(x)

    def channels_first(self, image: np.ndarray) -> np.ndarray:
        """``(C, *spatial)`` view of an image as read (grey -> C = 1, RGB(A) -> C = 3)."""
        image = np.asarray(image)
        if self.check_layout(image.shape) == 1:
            return image[None]
        return np.moveaxis(image[..., :3], -1, 0)

    def predict(self, image: np.ndarray, spacing: Sequence[float] | None = None) -> np.ndarray:
        """Class probabilities ``(K, *spatial)`` float32 on the input's grid.

        Parameters
        ----------
        image : ndarray
            As :func:`segloc.io.read_image` returns it: ``(rows, cols)``, ``(rows, cols, 3)``
            or ``(rows, cols, slices)``.
        spacing : sequence of float, optional
            Pixel spacing; with the checkpoint's ``target_spacing`` the image is resampled to
            it and the probabilities back. None: taken to be at the target spacing already.
        """
        t, size, resampled = self._prepare(image, spacing)
        if self.valid_unet:
            prob = self._overlap_tile(t)
        else:
            prob = self._windows(t, "probabilities")
        prob = prob.numpy()
        if resampled:
            prob = _zoom_to(prob, size)
        return prob

    def predict_labels(
        self, image: np.ndarray, spacing: Sequence[float] | None = None
    ) -> np.ndarray:
        """Label map of ``image``: bool for binary models, else int32 (:meth:`labels`).

        Equal to ``labels(predict(image))``, but the arg-max is taken slab by slab as the
        sliding window finishes them (no float array of the image's size per class), unless
        the image is resampled or the model is a valid-padding U-Net.
        """
        t, size, resampled = self._prepare(image, spacing)
        if resampled or self.valid_unet:
            return super().predict_labels(image, spacing)
        lab = self._windows(t, "labels").numpy()
        return lab.astype(bool) if self.binary else lab.astype(np.int32)

    def normalized(self, image: np.ndarray) -> np.ndarray:
        """``(C, *spatial)`` float32: the image as the network sees it (before resampling)."""
        x = self.channels_first(image)
        return normalize_case(x, self.normalize, stats=self.meta.intensity_stats)

    def _prepare(
        self, image: np.ndarray, spacing: Sequence[float] | None
    ) -> tuple[torch.Tensor, tuple[int, ...], bool]:
        x = self.normalized(image)
        size = x.shape[1:]
        resampled = False
        if self.target_spacing is not None and spacing is not None:
            spacing = check_spacing(spacing, self.dims)
            if not np.allclose(spacing, self.target_spacing):
                x, _ = resample(x, spacing, self.target_spacing, order=1, channel_axis=0)
                resampled = True
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None]
        return t, size, resampled

    def window_options(self) -> dict[str, Any]:
        """The keyword arguments this predictor gives :func:`blend_windows`."""
        return {
            "mode": self.mode,
            "sigma_scale": self.sigma_scale,
            "batch_size": self.batch_size,
        }

    def window_function(self, softmax: bool = True):
        """``(N, C, *patch)`` -> ``(N, K, *patch)`` probabilities: the network (or its ONNX
        session) with this predictor's device and TTA, as :func:`blend_windows` calls it."""
        return window_predictor(
            self._call,
            device=self.device if self._onnx is None else "cpu",
            tta=self.tta,
            tta_axes=self.tta_axes,
            softmax=softmax,
            precision=self.precision,
        )

    def _windows(self, t: torch.Tensor, output: str) -> torch.Tensor:
        return sliding_window_inference(
            self._call,
            t,
            self.patch_size,
            overlap=self.overlap,
            mode=self.mode,
            sigma_scale=self.sigma_scale,
            batch_size=self.batch_size,
            device=self.device if self._onnx is None else "cpu",
            tta=self.tta,
            tta_axes=self.tta_axes,
            progress=self.progress,
            output=output,
            stats=self.stats,
            precision=self.precision,
            labels_dtype=label_dtype(self.num_classes),
        )[0]

    def _overlap_tile(self, t: torch.Tensor) -> torch.Tensor:

        def one(x: torch.Tensor) -> torch.Tensor:
            with torch.autocast(
                self.device.type, dtype=self.autocast, enabled=self.autocast is not None
            ):
                logits = overlap_tile_predict(
                    self.network, x.to(self.device), batch_size=self.batch_size
                )
            return torch.softmax(logits.float().cpu(), dim=1)

        if self.tta:
            return flip_tta(one, t, softmax=False, axes=self.tta_axes)[0]
        return one(t)[0]

    def __repr__(self) -> str:
        return (
            f"Predictor({str(self.path)!r}, model={self.model_name!r}, dims={self.dims}, "
            f"classes={self.num_classes}, patch={self.patch_size}, backend={self.backend!r}, "
            f"precision={self.precision!r})"
        )


class Ensemble(_Probabilities):
    """The mean of several predictors' class probabilities (nnU-Net ensembles its folds so).

    Each member predicts the image with its own preprocessing (normalisation, spacing,
    patch, TTA); the soft-max outputs, all on the input's grid, are averaged.

    Parameters
    ----------
    predictors : sequence of Predictor
        At least one; all for the same task: the same ``dims``, ``in_channels``,
        ``num_classes``, ``label_mapping`` and ``ignore_index``.

    Raises
    ------
    ValueError
        No predictor, or two that disagree on the task (the message names both checkpoints).

    References
    ----------
    .. [1] Isensee et al., nnU-Net, Nature Methods 2021, :doi:`10.1038/s41592-020-01008-z`
       (the average of the five cross-validation models' soft-max outputs).
    """

    def __init__(self, predictors: Sequence[Predictor]) -> None:
        self.members = list(predictors)
        if not self.members:
            raise ValueError("an ensemble needs at least one predictor")
        first = self.members[0]
        for other in self.members[1:]:
            for name in ("dims", "in_channels", "num_classes", "label_mapping"):
                a, b = getattr(first, name), getattr(other, name)
                if a != b:
                    raise ValueError(
                        f"{other.path}: {name} {b!r} differs from {first.path}'s {a!r}; "
                        "an ensemble averages models of one task"
                    )
            a, b = first.meta.ignore_index, other.meta.ignore_index
            if a != b:
                raise ValueError(
                    f"{other.path}: ignore_index {b!r} differs from {first.path}'s {a!r}"
                )
        self.dims, self.in_channels = first.dims, first.in_channels
        self.num_classes, self.label_mapping = first.num_classes, first.label_mapping
        self.meta = first.meta
        self.paths = [m.path for m in self.members]

    def predict(self, image: np.ndarray, spacing: Sequence[float] | None = None) -> np.ndarray:
        """Mean class probabilities ``(K, *spatial)`` float32; see :meth:`Predictor.predict`."""
        total = self.members[0].predict(image, spacing=spacing)
        for member in self.members[1:]:
            total += member.predict(image, spacing=spacing)
        return total / np.float32(len(self.members))

    def __repr__(self) -> str:
        return f"Ensemble({[str(p) for p in self.paths]!r}, classes={self.num_classes})"


# --------------------------------------------------------------------------- files


def load_predictor(
    models: str | os.PathLike | Sequence[str | os.PathLike], **options: Any
) -> Predictor | Ensemble:
    """A :class:`Predictor` for one model (run folder or checkpoint), the :class:`Ensemble`
    of several; ``options`` go to each :class:`Predictor`."""
    many = not isinstance(models, (str, os.PathLike))
    members = [Predictor(m, **options) for m in (models if many else [models])]
    return members[0] if len(members) == 1 else Ensemble(members)


def expand_inputs(inputs: Sequence[str | os.PathLike]) -> list[tuple[Path, Path]]:
    """Files and folders -> ``(file, output stem)`` pairs; folders are searched recursively.

    The stem keeps a file's sub-folder inside the given folder (``folder/p1/a.png`` ->
    ``p1/a``), so outputs of same-named files in different sub-folders do not collide.

    Raises
    ------
    FileNotFoundError
        An input that does not exist.
    ValueError
        A folder without images, or two inputs that would write the same output.
    """

    pairs: list[tuple[Path, Path]] = []
    for item in inputs:
        path = Path(item)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file or folder")
        if path.is_dir() and not _is_dicom_folder(path):
            files = list_images(path)
            if not files:
                raise ValueError(f"{path}: folder without image files")
            pairs += [(f, f.parent.relative_to(path) / case_stem(f)) for f in files]
        else:
            pairs.append((path, Path(case_stem(path))))
    stems = [s.as_posix() for _, s in pairs]
    if len(set(stems)) != len(stems):
        dup = next(s for s in stems if stems.count(s) > 1)
        raise ValueError(
            f"two inputs share the output name {dup!r}; they would overwrite each other"
        )
    return pairs


def _is_dicom_folder(path: Path) -> bool:
    return any(p.suffix.lower() == ".dcm" for p in path.iterdir() if p.is_file())


def _overlay_picture(image: np.ndarray, labels: np.ndarray) -> np.ndarray:

    labels = labels.astype(np.int64)
    if labels.ndim == 3:  # the slice with the most foreground (the middle one if none)
        counts = (labels > 0).sum(axis=(0, 1))
        k = int(np.argmax(counts)) if counts.any() else labels.shape[2] // 2
        image, labels = image[..., k], labels[..., k]
    return overlay_mask(image, labels)


def _detections(prob: np.ndarray, binary: bool) -> list[dict]:

    # connected components of the predicted mask (no watershed split), scored by mean prob
    if binary:
        return detections_from_probability(prob[1], threshold=0.5, split=False)
    return detections_from_class_probability(prob, split=False)


def predict_to_folder(
    predictor: Predictor | Ensemble,
    inputs: Sequence[str | os.PathLike],
    outdir: str | os.PathLike,
    *,
    probabilities: bool = False,
    overlay: bool = False,
    boxes: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Predict every input file and write the results under ``outdir``, all or nothing.

    For each input ``<stem>``: the mask ``<stem>.png`` (2D; binary models write 0/255) or
    ``<stem>.nii.gz`` / ``.nrrd`` (volumes, with the input's affine; binary as 0/1); with
    ``probabilities`` the class probabilities ``<stem>_prob.npy`` (``(K, *spatial)`` float32)
    or, for NIfTI inputs, ``<stem>_prob.nii.gz`` (``(rows, cols, slices, K)``, input affine);
    with ``overlay`` ``<stem>_overlay.png``. With ``boxes``, one ``boxes.json`` for the run:
    ``{"images": [{"id", "file_name", "shape"}], "annotations": [...]}`` where annotations are
    COCO results (``image_id``, ``category_id``, ``bbox`` [x, y, w, h], ``score``) plus
    ``box`` (segloc xyxy / xyzxyz) and ``area``; one per connected component of the predicted
    mask (per class), 3D entries without ``bbox``.

    Every input is checked before the first prediction (:func:`segloc.io.check_files`: its
    header, its dimensions and channels against the model, and its values when all the
    inputs together are small), and everything is written to a hidden staging folder inside
    ``outdir`` and moved into place only when every input succeeded, so a bad input leaves
    no partial output.

    Returns
    -------
    list of Path
        The files written.
    """

    pairs = expand_inputs(inputs)
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise ValueError(f"{outdir}: output must be a folder")
    if outdir.suffix and not outdir.exists():
        raise ValueError(f"{outdir}: looks like a file name; the output is a folder")
    # an input is never an output: not the folder itself, not any file written into it
    planned = [outdir / stem.with_name(stem.name + mask_suffix(p)) for p, stem in pairs]
    check_not_inputs([outdir, *planned], [*map(Path, inputs), *(p for p, _ in pairs)])
    check_files([p for p, _ in pairs], check=predictor.check_header)
    created = not outdir.exists()
    outdir.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".segloc-predict-", dir=outdir))
    written: list[Path] = []
    images_doc: list[dict] = []
    annotations: list[dict] = []
    try:
        items = pairs
        if progress:
            from tqdm import tqdm

            items = tqdm(pairs, desc="predict", unit="file")
        for image_id, (path, stem) in enumerate(items):
            # without probabilities or boxes the labels are reduced slab by slab
            labels, prob, meta = predictor.predict_file(path, probabilities=probabilities or boxes)
            rel = stem.with_name(stem.name + mask_suffix(path))
            write_mask(stage / rel, labels, meta=meta)
            written.append(rel)
            if probabilities:
                if meta.format == "nifti":
                    import nibabel as nib

                    rel = stem.with_name(stem.name + "_prob.nii.gz")
                    (stage / rel).parent.mkdir(parents=True, exist_ok=True)
                    affine = meta.affine if meta.affine is not None else np.eye(4)
                    nib.save(nib.Nifti1Image(np.moveaxis(prob, 0, -1), affine), stage / rel)
                else:
                    rel = stem.with_name(stem.name + "_prob.npy")
                    (stage / rel).parent.mkdir(parents=True, exist_ok=True)
                    np.save(stage / rel, prob.astype(np.float32))
                written.append(rel)
            if overlay:
                image, _ = read_image(path)
                rel = stem.with_name(stem.name + "_overlay.png")
                save_png(stage / rel, _overlay_picture(image, labels))
                written.append(rel)
            if boxes:
                images_doc.append(
                    {"id": image_id, "file_name": str(path), "shape": list(labels.shape)}
                )
                dets = _detections(prob, predictor.binary)
                coco = (
                    detections_to_coco(dets, image_id=image_id)
                    if labels.ndim == 2
                    else [
                        {"image_id": image_id, "category_id": int(d["class"]), "score": d["score"]}
                        for d in dets
                    ]
                )
                for entry, d in zip(coco, dets, strict=True):
                    entry["box"] = [float(v) for v in d["box"]]
                    entry["area"] = int(d["area"])
                annotations += coco
        if boxes:
            write_coco_json(
                stage / "boxes.json", {"images": images_doc, "annotations": annotations}
            )
            written.append(Path("boxes.json"))
        for rel in written:
            (outdir / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(stage / rel, outdir / rel)
    finally:
        import shutil

        shutil.rmtree(stage, ignore_errors=True)
        if created and not any(outdir.iterdir()):
            outdir.rmdir()
    return [outdir / rel for rel in written]
