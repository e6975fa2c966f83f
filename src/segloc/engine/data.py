"""Training data: dataset folders, checks, splits, normalisation, patches, loading.

A dataset folder holds an image folder (``images/``) and a label folder (``labels/`` or
``masks/``) whose files match by relative path and name, with an optional suffix on the
label names (``case_3.png`` <-> ``case_3_mask.png``), 2D (PNG, JPEG, TIFF) or 3D (NIfTI,
NRRD). :func:`find_cases` pairs them, :func:`check_dataset` reports what a training run
would meet, :func:`split_cases` splits deterministically (by patient when asked).

Arrays handed to a model are channels first: images ``(C, *spatial)`` float32 (grey:
C = 1, RGB: C = 3), label maps ``(*spatial)`` integers. Normalisation, resampling and
patch sampling are NumPy/SciPy, so they run cheaply in DataLoader workers;
:class:`SegmentationDataset` returns torch tensors.

Label values: with ``label_mapping="auto"`` a label file whose values are a subset of
``{0, 255}`` or ``{0, 1}`` is a binary mask and gives classes 0/1; any other file is a
label map and keeps its values (:func:`segloc.io.read_mask`).

Padding (patches larger than the image, :func:`pad_collate`): images are padded with 0
(after normalisation: the mean intensity for z-score) and label maps with
``ignore_index`` when one is given, else with 0 (background).

References
----------
.. [1] Isensee, F. et al. "nnU-Net: a self-configuring method for deep learning-based
   biomedical image segmentation", Nature Methods 18, 2021,
   :doi:`10.1038/s41592-020-01008-z` (z-score and percentile normalisation, resampling
   to a target spacing, patches with one third foreground oversampling).
"""

from __future__ import annotations

import os
import warnings
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage as ndi
from torch.utils.data import Dataset

from segloc._validation import check_choice, check_image, check_positive, check_spacing
from segloc.io import (
    ImageMeta,
    ImageReadError,
    case_stem,
    check_compatible,
    is_lossy,
    list_images,
    match_files,
    read_image,
    read_mask,
)

__all__ = [
    "CaseFiles",
    "DatasetReport",
    "PadCollate",
    "PatchSampler",
    "SegmentationDataset",
    "check_dataset",
    "find_cases",
    "load_case",
    "normalize",
    "pad_collate",
    "resample",
    "split_cases",
    "worker_init_fn",
    "BoxDataset",
    "box_input",
]

_IMAGE_DIRS = ("images", "imagesTr")
_LABEL_DIRS = ("labels", "masks", "labelsTr")


# --------------------------------------------------------------------------- finding cases


@dataclass(frozen=True)
class CaseFiles:
    """One training case.

    Attributes
    ----------
    name : str
        Path of the image relative to the image folder, without format suffix
        (``"TCGA_CS_4941_19960909/TCGA_CS_4941_19960909_10"``).
    image, label : Path
        The two files.
    """

    name: str
    image: Path
    label: Path


def _pick_dir(
    root: Path, given: str | os.PathLike | None, candidates: Sequence[str], what: str
) -> Path:
    if given is not None:
        folder = root / given
        if not folder.is_dir():
            raise ImageReadError(f"{folder}: no such folder ({what})")
        return folder
    found = [root / c for c in candidates if (root / c).is_dir()]
    if not found:
        raise ImageReadError(
            f"{root}: no {what} folder (looked for {', '.join(candidates)}); pass {what}="
        )
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise ValueError(f"{what} is ambiguous in {root} ({names}); pass {what}=")
    return found[0]


def _keys(folder: Path) -> list[str]:
    return [(p.parent.relative_to(folder) / case_stem(p)).as_posix() for p in list_images(folder)]


def _suffix_candidates(image_keys: list[str], label_keys: list[str]) -> list[str]:
    """Label-name endings that would make unmatched labels match an image, commonest first."""
    images = set(image_keys)
    endings: Counter[str] = Counter()
    for key in label_keys:
        if key in images:
            continue
        # the longest image name that starts this label name: "p_10" for "p_10_mask", not "p_1"
        for cut in range(len(key) - 1, 0, -1):
            if key[:cut] in images:
                endings[key[cut:]] += 1
                break
    return [e for e, _ in endings.most_common(5)]


def _match(
    root: str | os.PathLike,
    image_dir: str | os.PathLike | None,
    label_dir: str | os.PathLike | None,
    label_suffix: str | None,
) -> tuple[Path, Path, str, list[tuple[Path, Path]], list[Path], list[Path]]:
    root = Path(root)
    if not root.is_dir():
        raise ImageReadError(f"{root}: no such folder")
    images = _pick_dir(root, image_dir, _IMAGE_DIRS, "image_dir")
    labels = _pick_dir(root, label_dir, _LABEL_DIRS, "label_dir")
    if label_suffix is None:
        options = [""] + _suffix_candidates(_keys(images), _keys(labels))
        results = {s: match_files(images, labels, truth_suffix=s) for s in options}
        best = max(len(r[0]) for r in results.values())
        winners = [s for s, r in results.items() if len(r[0]) == best]
        if len(winners) > 1 and best > 0:
            raise ValueError(
                f"label_suffix is ambiguous: {winners} each match {best} files; pass label_suffix="
            )
        label_suffix = winners[0]
        pairs, lone_images, lone_labels = results[label_suffix]
    else:
        pairs, lone_images, lone_labels = match_files(images, labels, truth_suffix=label_suffix)
    return images, labels, label_suffix, pairs, lone_images, lone_labels


def _case_name(image: Path, folder: Path) -> str:
    return (image.parent.relative_to(folder) / case_stem(image)).as_posix()


def find_cases(
    root: str | os.PathLike,
    *,
    image_dir: str | os.PathLike | None = None,
    label_dir: str | os.PathLike | None = None,
    label_suffix: str | None = None,
) -> list[CaseFiles]:
    """Pair the images and labels of a dataset folder.

    Files match when their paths relative to the two folders agree without the format
    suffix and without ``label_suffix`` at the end of the label name (nested folders
    such as ``images/<patient>/<slice>.png`` work); see :func:`segloc.io.match_files`.

    Parameters
    ----------
    root : str or path-like
        The dataset folder.
    image_dir : str, optional
        Image folder relative to ``root`` (default: ``images``, or ``imagesTr``).
    label_dir : str, optional
        Label folder (default: whichever of ``labels``, ``masks``, ``labelsTr`` exists;
        an error when several do).
    label_suffix : str, optional
        Ending of label names, e.g. ``"_mask"``. Default: found from the names -- the
        ending that pairs the most files ("" when names are equal); an error when two
        endings pair equally many.

    Returns
    -------
    list of CaseFiles
        Sorted by case name. Unpaired files are left out (see :func:`check_dataset`).

    Raises
    ------
    ImageReadError
        A folder is missing, or no file pairs.
    ValueError
        The label folder or the suffix is ambiguous.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from segloc import io
    >>> d = tempfile.mkdtemp()
    >>> _ = io.write_image(f"{d}/images/p1/a_1.png", np.zeros((4, 4), np.uint8))
    >>> _ = io.write_mask(f"{d}/masks/p1/a_1_mask.png", np.zeros((4, 4), bool))
    >>> [c.name for c in find_cases(d)]
    ['p1/a_1']
    """
    images, labels, _, pairs, _, _ = _match(root, image_dir, label_dir, label_suffix)
    if not pairs:
        raise ImageReadError(f"{root}: no label file in {labels} matches an image in {images}")
    cases = [CaseFiles(_case_name(im, images), im, lab) for im, lab in pairs]
    return sorted(cases, key=lambda c: c.name)


# --------------------------------------------------------------------------- reading


def _apply_mapping(labels: np.ndarray, label_mapping: Mapping[int, int]) -> np.ndarray:
    out = labels.astype(np.int64)
    for old, new in label_mapping.items():
        out[labels == old] = new  # values the mapping does not name keep their value
    return out


def _channels_first(image: np.ndarray, meta: ImageMeta) -> np.ndarray:
    if meta.is_colour:  # a colour 2D image (rows, cols, 3|4): alpha dropped
        return np.moveaxis(image[..., :3], -1, 0)
    return image[None]


def load_case(
    case: CaseFiles, *, label_mapping: str | Mapping[int, int] | None = "auto"
) -> tuple[np.ndarray, np.ndarray, ImageMeta]:
    """Read one case as a model sees it, before normalisation.

    Returns
    -------
    image : (C, *spatial) ndarray
        Stored values (dtype as read), channels first: C = 1 for grey images and
        volumes, 3 for colour images.
    labels : (*spatial) int64 ndarray
        Class indices: ``"auto"`` turns 0/255 masks into 0/1 and keeps label maps;
        ``None`` keeps stored values; a dict maps stored values (others kept).
    meta : ImageMeta
        The image's metadata (spacing ...).

    Raises
    ------
    ImageReadError
        Unreadable files, or a label map whose shape, spacing or affine does not fit
        the image.
    """
    if isinstance(label_mapping, str):
        check_choice(label_mapping, ("auto",), name="label_mapping")
    elif label_mapping is not None and not isinstance(label_mapping, Mapping):
        raise TypeError(
            f"label_mapping must be 'auto', None or a dict, got {type(label_mapping).__name__}"
        )
    image, meta = read_image(case.image)
    # "auto": bool for 0/255 and 0/1 files (-> classes 0/1), int32 for label maps
    kind = "auto" if label_mapping == "auto" else "labels"
    labels, label_meta = read_mask(case.label, kind=kind)
    check_compatible(image, labels, image_meta=meta, mask_meta=label_meta)
    if isinstance(label_mapping, Mapping):
        labels = _apply_mapping(labels, label_mapping)
    return _channels_first(image, meta), labels.astype(np.int64, copy=False), meta


# --------------------------------------------------------------------------- checking


@dataclass
class DatasetReport:
    """What :func:`check_dataset` found; ``format()`` gives it as text.

    Attributes
    ----------
    root, image_dir, label_dir : Path
    label_suffix : str
        The label-name ending used for matching.
    n_cases : int
        Pairs found.
    unmatched_images, unmatched_labels : list of Path
    shapes, spacings : dict
        Spatial shape / spacing -> number of cases.
    channels : dict
        Image channels -> number of cases.
    label_values : list of int
        Stored label values over all cases.
    label_mapping : dict
        Stored value -> class index (``{0: 0, 255: 1}`` for 0/255 masks, else identity).
    class_voxels : dict
        Class index -> number of pixels/voxels.
    class_cases : dict
        Class index -> number of cases where it appears.
    lossy_labels : int
        Label files in a lossy format (JPEG, as Kvasir-SEG ships its masks): read as binary
        masks, value >= 128 (:func:`segloc.io.interpret_mask`), and counted as 0/255.
    problems : list of str
        One line per case that could not be used (unreadable, shape or spacing mismatch).
    """

    root: Path
    image_dir: Path
    label_dir: Path
    label_suffix: str
    n_cases: int = 0
    unmatched_images: list[Path] = field(default_factory=list)
    unmatched_labels: list[Path] = field(default_factory=list)
    shapes: dict[tuple[int, ...], int] = field(default_factory=dict)
    spacings: dict[tuple[float, ...], int] = field(default_factory=dict)
    channels: dict[int, int] = field(default_factory=dict)
    label_values: list[int] = field(default_factory=list)
    label_mapping: dict[int, int] = field(default_factory=dict)
    class_voxels: dict[int, int] = field(default_factory=dict)
    class_cases: dict[int, int] = field(default_factory=dict)
    lossy_labels: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every file pairs and every pair is usable."""
        return not (self.unmatched_images or self.unmatched_labels or self.problems)

    @property
    def class_fraction(self) -> dict[int, float]:
        """Class index -> share of all labelled pixels/voxels."""
        total = sum(self.class_voxels.values())
        return {c: n / total for c, n in self.class_voxels.items()} if total else {}

    def format(self, *, limit: int = 10) -> str:
        """A human-readable summary, listing at most ``limit`` files per problem kind."""

        def counts(d: Mapping) -> str:
            def name(k: Any) -> str:
                return "x".join(f"{v:g}" for v in k) if isinstance(k, tuple) else str(k)

            common = sorted(d.items(), key=lambda kv: -kv[1])
            if len(d) <= limit:
                return ", ".join(f"{name(k)}: {n}" for k, n in common)
            text = ", ".join(f"{name(k)}: {n}" for k, n in common[:3])
            # many sizes (3D scans): give the range per axis, then the commonest
            keys = [k for k in d if isinstance(k, tuple)]
            ranges = " x ".join(f"{min(v):g}..{max(v):g}" for v in zip(*keys, strict=True))
            return f"{len(d)} distinct, {ranges}; commonest {text}, ..."

        def listing(title: str, items: Sequence[Any]) -> list[str]:
            if not items:
                return []
            out = [f"{title} ({len(items)}):"]
            out += [f"  {p}" for p in items[:limit]]
            if len(items) > limit:
                out.append(f"  ... and {len(items) - limit} more")
            return out

        suffix = f" (label suffix {self.label_suffix!r})" if self.label_suffix else ""
        lines = [
            f"dataset {self.root}",
            f"images {self.image_dir}, labels {self.label_dir}{suffix}",
            f"cases: {self.n_cases}",
        ]
        lines += listing("unmatched images", self.unmatched_images)
        lines += listing("unmatched labels", self.unmatched_labels)
        if self.shapes:
            lines.append(f"shapes: {counts(self.shapes)}")
            lines.append(f"spacings: {counts(self.spacings)}")
            lines.append(f"channels: {counts(self.channels)}")
            lines.append(f"label values: {self.label_values}")
            if self.lossy_labels:
                lines.append(
                    f"lossy (JPEG) label files: {self.lossy_labels}, read as binary masks "
                    "(value >= 128)"
                )
            mapping = {k: v for k, v in self.label_mapping.items() if k != v}
            if mapping:
                lines.append(f"label mapping (stored -> class): {mapping}")
            fractions = self.class_fraction
            lines.append("class balance:")
            for c in sorted(self.class_voxels):
                lines.append(
                    f"  class {c}: {fractions[c]:.2%} of voxels, "
                    f"in {self.class_cases.get(c, 0)} of {self.n_cases} cases"
                )
        lines += listing("problems", self.problems)
        lines.append("OK" if self.ok else "NOT OK")
        return "\n".join(lines)


def check_dataset(
    root: str | os.PathLike,
    *,
    image_dir: str | os.PathLike | None = None,
    label_dir: str | os.PathLike | None = None,
    label_suffix: str | None = None,
) -> DatasetReport:
    """Read every case of a dataset folder and report what training would meet.

    Reports unpaired files, spatial shapes, spacings, channels, stored label values, the
    class mapping (0/255 masks -> classes 0/1) and the class balance; a case that cannot
    be read or whose label shape or spacing differs from its image is listed under
    ``problems`` rather than raised.

    Parameters
    ----------
    root, image_dir, label_dir, label_suffix
        As for :func:`find_cases`.

    Returns
    -------
    DatasetReport

    Raises
    ------
    ImageReadError
        Only when the folders themselves are missing.
    """
    images, labels, suffix, pairs, lone_images, lone_labels = _match(
        root, image_dir, label_dir, label_suffix
    )
    report = DatasetReport(Path(root), images, labels, suffix)
    report.unmatched_images, report.unmatched_labels = lone_images, lone_labels
    shapes: Counter = Counter()
    spacings: Counter = Counter()
    channels: Counter = Counter()
    voxels: Counter = Counter()
    cases_with: Counter = Counter()
    for image_path, label_path in pairs:
        name = _case_name(image_path, images)
        try:
            image, meta = read_image(image_path)
            lossy = is_lossy(label_path)
            with warnings.catch_warnings():
                # one line of the report for them all rather than a warning per file
                warnings.simplefilter("ignore", UserWarning)
                raw, label_meta = read_mask(label_path, kind="binary" if lossy else "labels")
            check_compatible(image, raw, image_meta=meta, mask_meta=label_meta)
            if lossy:  # what training reads: a binary mask, stored values shown as 0/255
                raw = raw.astype(np.uint8) * 255
                report.lossy_labels += 1
        except ValueError as exc:  # ImageReadError included: report it, keep going
            report.problems.append(f"{name}: {exc}")
            continue
        report.n_cases += 1
        spatial = _channels_first(image, meta).shape
        shapes[spatial[1:]] += 1
        spacings[tuple(round(s, 4) for s in meta.spacing)] += 1
        channels[spatial[0]] += 1
        values, n = np.unique(raw, return_counts=True)
        for v, k in zip(values.tolist(), n.tolist(), strict=True):
            voxels[v] += k
            cases_with[v] += 1
    stored = sorted(voxels)
    binary = bool(stored) and set(stored) <= {0, 255}
    mapping = {v: (1 if binary and v == 255 else v) for v in stored}
    report.shapes, report.spacings, report.channels = dict(shapes), dict(spacings), dict(channels)
    report.label_values, report.label_mapping = stored, mapping
    report.class_voxels = {mapping[v]: voxels[v] for v in stored}
    report.class_cases = {mapping[v]: cases_with[v] for v in stored}
    return report


# --------------------------------------------------------------------------- splitting


def split_cases(
    cases: Sequence[Any],
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
    group_by: Callable[[Any], Any] | None = None,
    order: str = "random",
) -> tuple[list[Any], list[Any]]:
    """Split cases into training and validation sets, deterministically.

    ``round(val_fraction * n_groups)`` groups (each case alone, or the cases sharing
    ``group_by(case)`` -- a patient), at least one and at most all but one when there are
    two groups or more and ``val_fraction > 0``, go to validation, so no group is in
    both sets. They are drawn at random with ``seed``, or with ``order="last"`` they are
    the last ones in sorted order.

    Parameters
    ----------
    cases : sequence
        Any items (usually :class:`CaseFiles`); order is kept within each set.
    val_fraction : float
        Share of the groups for validation, in [0, 1).
    seed : int
        Random seed; the same seed and cases give the same split.
    group_by : callable, optional
        Case -> hashable group key, e.g. ``lambda c: c.image.parent.name`` for one
        folder per patient.
    order : {"random", "last"}
        ``"last"`` holds out one contiguous block (the last groups by key, or the last
        cases in the given order): for video frames or neighbouring slices, whose
        neighbours are near-copies and would leak into a random split.

    Returns
    -------
    train, val : list

    Examples
    --------
    >>> train, val = split_cases(list(range(10)), val_fraction=0.3, seed=0)
    >>> len(train), len(val), sorted(train + val) == list(range(10))
    (7, 3, True)
    >>> split_cases(list(range(5)), val_fraction=0.4, order="last")
    ([0, 1, 2], [3, 4])
    """
    check_choice(order, ("random", "last"), name="order")
    check_positive(val_fraction, name="val_fraction", strict=False)
    if val_fraction >= 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    cases = list(cases)
    keys = [group_by(c) if group_by is not None else i for i, c in enumerate(cases)]
    groups = sorted(set(keys), key=repr) if group_by is not None else list(range(len(cases)))
    n_val = int(np.floor(val_fraction * len(groups) + 0.5))
    if val_fraction > 0 and len(groups) >= 2:
        n_val = min(max(n_val, 1), len(groups) - 1)
    if order == "last":
        val_groups = set(groups[len(groups) - n_val :])
    else:
        picked = np.random.default_rng(seed).permutation(len(groups))[:n_val]
        val_groups = {groups[i] for i in picked}
    train = [c for c, k in zip(cases, keys, strict=True) if k not in val_groups]
    val = [c for c, k in zip(cases, keys, strict=True) if k in val_groups]
    return train, val


# --------------------------------------------------------------------------- intensities


def _spatial_mask(mask: Any, shape: tuple[int, ...]) -> np.ndarray | None:
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.dtype != np.bool_:
        raise TypeError(f"mask must be a bool array, got dtype {mask.dtype}")
    if mask.shape != shape:
        raise ValueError(f"mask must have the spatial shape {shape}, got {mask.shape}")
    if not mask.any():
        raise ValueError("mask must select at least one pixel, got an empty mask")
    return mask


def normalize(
    image: Any,
    method: str = "zscore",
    *,
    channel_axis: int | None = None,
    mask: Any = None,
    lower: float = 0.5,
    upper: float = 99.5,
) -> np.ndarray:
    """Normalise intensities per channel; float32 result.

    - ``"zscore"``: ``(x - mean) / std`` (a constant channel becomes 0).
    - ``"percentile"``: clip to the ``lower`` and ``upper`` percentiles, then z-score
      with the mean and std of the clipped values (nnU-Net's CT scheme, here per image).
    - ``"minmax"``: ``(x - min) / (max - min)`` to [0, 1] (a constant channel becomes 0).

    Statistics come from the pixels under ``mask`` when given (e.g. the brain, or
    nonzero voxels of an MRI) and are applied to every pixel, so values outside the
    mask may fall beyond [0, 1] for ``"minmax"``.

    Parameters
    ----------
    image : ndarray
        Any shape; ``channel_axis`` marks a channel axis (each channel on its own).
    method : {"zscore", "percentile", "minmax"}
    channel_axis : int, optional
        None: the whole array is one channel.
    mask : bool ndarray, optional
        Spatial shape (the image's without the channel axis).
    lower, upper : float
        Percentiles for ``"percentile"``, 0 <= lower < upper <= 100.

    Returns
    -------
    float32 ndarray of the image's shape

    References
    ----------
    .. [1] Isensee et al., nnU-Net, Nature Methods 2021, :doi:`10.1038/s41592-020-01008-z`.

    Examples
    --------
    >>> import numpy as np
    >>> normalize(np.array([1.0, 3.0, 1.0, 3.0])).tolist()
    [-1.0, 1.0, -1.0, 1.0]
    >>> normalize(np.array([2.0, 4.0, 6.0]), "minmax").tolist()
    [0.0, 0.5, 1.0]
    """
    check_choice(method, ("zscore", "percentile", "minmax"), name="method")
    image = check_image(image, ndim=range(1, 33))
    if not (0 <= lower < upper <= 100):
        raise ValueError(
            f"lower and upper must satisfy 0 <= lower < upper <= 100, got {lower}, {upper}"
        )
    if channel_axis is None:
        stack = image[None]
    else:
        if not -image.ndim <= channel_axis < image.ndim:
            raise ValueError(
                f"channel_axis must be in {-image.ndim}..{image.ndim - 1}, got {channel_axis}"
            )
        stack = np.moveaxis(image, channel_axis, 0)
    mask = _spatial_mask(mask, stack.shape[1:])
    out = np.empty(stack.shape, np.float32)
    for c, channel in enumerate(stack):
        x = channel.astype(np.float64)
        values = x[mask] if mask is not None else x.ravel()
        if method == "minmax":
            lo, hi = values.min(), values.max()
            out[c] = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
            continue
        if method == "percentile":
            lo, hi = np.percentile(values, [lower, upper])
            x, values = np.clip(x, lo, hi), np.clip(values, lo, hi)
        mean, std = values.mean(), values.std()
        # nnU-Net's floor on the std: a constant channel becomes 0, not NaN
        out[c] = (x - mean) / max(std, 1e-8)
    return out[0] if channel_axis is None else np.moveaxis(out, 0, channel_axis)


def resample(
    image: Any,
    spacing: Sequence[float],
    target_spacing: Sequence[float],
    *,
    order: int = 1,
    channel_axis: int | None = None,
) -> tuple[np.ndarray, tuple[float, ...]]:
    """Resample an image or label map to a target pixel/voxel spacing.

    The output has ``round(shape * spacing / target_spacing)`` pixels per axis (halves
    rounded up, at least 1), and pixel edges of input and output span the same extent
    (:func:`scipy.ndimage.zoom` with ``grid_mode=True``, edge values repeated). Use
    ``order=0`` (nearest) for label maps: it keeps the dtype and creates no new value.
    No anti-aliasing filter is applied when shrinking.

    Parameters
    ----------
    image : ndarray
        Spatial axes plus an optional channel axis.
    spacing, target_spacing : sequence of float
        Current and wanted spacing per spatial axis (a scalar applies to all).
    order : int
        Spline order 0..5: 1 (linear) for images, 0 for labels.
    channel_axis : int, optional
        Axis that is not resampled.

    Returns
    -------
    resampled : ndarray
        float32 for ``order > 0``, the input dtype for ``order = 0``.
    spacing : tuple of float
        The actual new spacing ``spacing * old_shape / new_shape`` (equal to the
        target up to the rounding of the shape).

    References
    ----------
    .. [1] Isensee et al., nnU-Net, Nature Methods 2021, :doi:`10.1038/s41592-020-01008-z`.

    Examples
    --------
    >>> import numpy as np
    >>> out, sp = resample(np.zeros((35, 50, 35)), (1, 1, 1), (2, 2, 2))
    >>> out.shape, sp
    ((18, 25, 18), (1.9444444444444444, 2.0, 1.9444444444444444))
    """
    image = check_image(image, ndim=range(1, 33))
    check_choice(order, range(6), name="order")
    if channel_axis is not None:
        image = np.moveaxis(image, channel_axis, 0)
    spatial = image.shape[1:] if channel_axis is not None else image.shape
    ndim = len(spatial)
    spacing = check_spacing(spacing, ndim, name="spacing")
    target = check_spacing(target_spacing, ndim, name="target_spacing")
    new_shape = tuple(
        max(1, int(np.floor(n * s / t + 0.5)))  # halves up: 17.5 -> 18, as nnU-Net's round
        for n, s, t in zip(spatial, spacing, target, strict=True)
    )
    zoom = [m / n for m, n in zip(new_shape, spatial, strict=True)]
    if order > 0 and image.dtype != np.float64:
        image = image.astype(np.float32, copy=False)

    def one(x: np.ndarray) -> np.ndarray:
        out = ndi.zoom(x, zoom, order=order, mode="nearest", grid_mode=True)
        if out.shape != new_shape:  # zoom rounds shape * factor itself; guard against drift
            raise RuntimeError(f"zoom gave shape {out.shape}, expected {new_shape}")
        return out

    if channel_axis is None:
        out = one(image)
    else:
        out = np.moveaxis(np.stack([one(c) for c in image]), 0, channel_axis)
    if order > 0:
        out = out.astype(np.float32, copy=False)
    new_spacing = tuple(s * n / m for s, n, m in zip(spacing, spatial, new_shape, strict=True))
    return out, new_spacing


# --------------------------------------------------------------------------- patches


def _check_patch_size(patch_size: Any) -> tuple[int, ...]:
    size = tuple(patch_size) if not np.isscalar(patch_size) else None
    if (
        size is None
        or len(size) not in (2, 3)
        or any(not isinstance(s, (int, np.integer)) or isinstance(s, bool) or s < 1 for s in size)
    ):
        raise ValueError(f"patch_size must be 2 or 3 positive ints, got {patch_size!r}")
    return tuple(int(s) for s in size)


def _pad_to(
    image: np.ndarray, labels: np.ndarray, size: Sequence[int], label_value: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pad (C, *spatial) and (*spatial) evenly on both sides up to ``size``."""
    widths = []
    for n, p in zip(labels.shape, size, strict=True):
        extra = max(p - n, 0)
        widths.append((extra // 2, extra - extra // 2))
    if not any(a or b for a, b in widths):
        return image, labels
    image = np.pad(image, [(0, 0), *widths], constant_values=0)
    labels = np.pad(labels, widths, constant_values=label_value)
    return image, labels


class PatchSampler:
    """Random patches with foreground oversampling (nnU-Net: one third).

    Each draw is a foreground patch with probability ``foreground_fraction``: a class
    is picked uniformly among the foreground classes present (label > 0, not
    ``ignore_index``), then a voxel of that class uniformly, and the patch is centred on
    it (shifted to stay inside the image). Otherwise, or when the case has no
    foreground, the patch origin is uniform over all positions. An image smaller than
    the patch is first padded evenly: image with 0, labels with ``ignore_index`` (0
    when it is None).

    Parameters
    ----------
    patch_size : sequence of int
        Spatial patch shape (2 or 3 values).
    foreground_fraction : float
        Probability of a foreground-centred patch, in [0, 1].
    ignore_index : int, optional
        Label that is neither foreground nor a class (e.g. CamVid void = 11).
    seed : int, optional
        Seeds the sampler's own generator, used when no ``rng`` is passed.

    References
    ----------
    .. [1] Isensee et al., nnU-Net, Nature Methods 2021, :doi:`10.1038/s41592-020-01008-z`.

    Examples
    --------
    >>> import numpy as np
    >>> sampler = PatchSampler((4, 4), seed=0)
    >>> im, lab = sampler.sample(np.zeros((1, 10, 10)), np.zeros((10, 10), int))
    >>> im.shape, lab.shape
    ((1, 4, 4), (4, 4))
    """

    def __init__(
        self,
        patch_size: Sequence[int],
        *,
        foreground_fraction: float = 1 / 3,
        ignore_index: int | None = None,
        seed: int | None = None,
    ) -> None:
        self.patch_size = _check_patch_size(patch_size)
        check_positive(foreground_fraction, name="foreground_fraction", strict=False)
        if foreground_fraction > 1:
            raise ValueError(f"foreground_fraction must be in [0, 1], got {foreground_fraction}")
        self.foreground_fraction = float(foreground_fraction)
        self.ignore_index = ignore_index
        self.rng = np.random.default_rng(seed)

    def __repr__(self) -> str:
        return (
            f"PatchSampler({self.patch_size}, foreground_fraction={self.foreground_fraction:.3g}, "
            f"ignore_index={self.ignore_index})"
        )

    def origin(
        self,
        labels: np.ndarray,
        *,
        rng: np.random.Generator | None = None,
        foreground: bool | None = None,
    ) -> tuple[int, ...]:
        """Start index of a patch inside ``labels`` (at least the patch size on every axis).

        ``foreground`` forces (True) or forbids (False) a foreground-centred patch;
        None draws it with probability ``foreground_fraction``.
        """
        rng = self.rng if rng is None else rng
        labels = np.asarray(labels)
        if labels.ndim != len(self.patch_size):
            raise ValueError(
                f"labels must be {len(self.patch_size)}D for patch_size {self.patch_size}, "
                f"got shape {labels.shape}"
            )
        room = np.array(labels.shape) - np.array(self.patch_size)
        if (room < 0).any():
            raise ValueError(
                f"labels shape {labels.shape} is smaller than patch_size {self.patch_size}; "
                "use sample(), which pads"
            )
        if foreground is None:
            foreground = bool(rng.random() < self.foreground_fraction)
        if foreground:
            classes = np.unique(labels)
            classes = classes[classes > 0]
            if self.ignore_index is not None:
                classes = classes[classes != self.ignore_index]
            if classes.size:
                c = classes[rng.integers(classes.size)]
                where = np.flatnonzero(labels == c)
                centre = np.unravel_index(where[rng.integers(where.size)], labels.shape)
                start = np.array(centre) - np.array(self.patch_size) // 2
                return tuple(int(v) for v in np.clip(start, 0, room))
        return tuple(int(rng.integers(0, r + 1)) for r in room)

    def sample(
        self,
        image: np.ndarray,
        labels: np.ndarray,
        *,
        rng: np.random.Generator | None = None,
        foreground: bool | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Cut one patch: ``image`` (C, *spatial) -> (C, *patch), ``labels`` -> (*patch)."""
        image, labels = np.asarray(image), np.asarray(labels)
        if image.shape[1:] != labels.shape:
            raise ValueError(
                f"image (C, *spatial) and labels must share spatial shape, got {image.shape} "
                f"and {labels.shape}"
            )
        pad = self.ignore_index if self.ignore_index is not None else 0
        image, labels = _pad_to(image, labels, self.patch_size, pad)
        start = self.origin(labels, rng=rng, foreground=foreground)
        box = tuple(slice(s, s + p) for s, p in zip(start, self.patch_size, strict=True))
        return np.ascontiguousarray(image[(slice(None), *box)]), np.ascontiguousarray(labels[box])


# --------------------------------------------------------------------------- torch


class SegmentationDataset(Dataset):
    """A torch Dataset over :class:`CaseFiles`, reading lazily.

    Each item is ``dict(image=FloatTensor (C, *spatial), label=LongTensor (*spatial),
    case=name)``, plus ``weight=FloatTensor (*spatial)`` with ``pixel_weight``. Per case:
    read (:func:`load_case`), optionally resample to ``target_spacing`` (image linear, labels
    nearest), normalise per channel (:func:`normalize`); then per item: cut a patch
    (:class:`PatchSampler`) when ``patch_size`` is set, augment, and weigh.

    Randomness comes from the dataset's generator: seeded by ``seed`` in the main
    process and re-seeded in each DataLoader worker by :func:`worker_init_fn` from torch's
    per-worker seed, so workers differ and a run under ``torch.manual_seed`` repeats.

    Parameters
    ----------
    cases : sequence of CaseFiles
    patch_size : sequence of int, optional
        Patch mode: items are patches, ``samples_per_epoch`` of them (case
        ``index % len(cases)``). None: items are whole cases (batch them with
        :func:`pad_collate`).
    augment : callable, optional
        ``augment(image, labels, rng=generator) -> (image, labels)``, e.g.
        :class:`segloc.engine.augment.Augmenter`.
    normalize : {"zscore", "percentile", "minmax"} or None
        Per-channel normalisation over the whole case; None only casts to float32.
    cache : bool or int
        Keep loaded (resampled, normalised) cases in memory: True for all, an int for at
        most that many MiB (least recently used dropped first), False for none. Each
        worker process holds its own cache.
    samples_per_epoch : int, optional
        Length in patch mode (default: the number of cases).
    foreground_fraction : float
        Of the patch sampler.
    label_mapping : "auto", None or dict
        See :func:`load_case`.
    ignore_index : int, optional
        Label that pads patches and is no foreground class.
    target_spacing : sequence of float, optional
        Resample every case to this spacing first.
    pixel_weight : callable, optional
        ``pixel_weight(labels) -> float array of the labels' shape``, computed on each item's
        final (cut and augmented) labels, e.g. ``functools.partial(label_weight_map, w0=10)``
        for the U-Net paper's border weights (:mod:`segloc.nn.weight_map`). A deformed label map
        gets the weights of its own borders, as the paper's pre-computed maps would after the
        same deformation; near a patch's edge the objects beyond it are unseen.
    seed : int
        Seed of the generator used outside workers.
    """

    def __init__(
        self,
        cases: Sequence[CaseFiles],
        *,
        patch_size: Sequence[int] | None = None,
        augment: Callable[..., tuple[np.ndarray, np.ndarray]] | None = None,
        normalize: str | None = "zscore",
        cache: bool | int = False,
        samples_per_epoch: int | None = None,
        foreground_fraction: float = 1 / 3,
        label_mapping: str | Mapping[int, int] | None = "auto",
        ignore_index: int | None = None,
        target_spacing: Sequence[float] | None = None,
        pixel_weight: Callable[[np.ndarray], np.ndarray] | None = None,
        seed: int = 0,
    ) -> None:
        self.cases = list(cases)
        if not self.cases:
            raise ValueError("cases must not be empty")
        if normalize is not None:
            check_choice(normalize, ("zscore", "percentile", "minmax"), name="normalize")
        if augment is not None and not callable(augment):
            raise TypeError(f"augment must be callable, got {type(augment).__name__}")
        if pixel_weight is not None and not callable(pixel_weight):
            raise TypeError(f"pixel_weight must be callable, got {type(pixel_weight).__name__}")
        self.pixel_weight = pixel_weight
        if isinstance(cache, bool):
            self._cache_limit: float = float("inf") if cache else 0.0
        elif isinstance(cache, (int, np.integer)) and cache >= 0:
            self._cache_limit = float(cache) * 2**20
        else:
            raise ValueError(f"cache must be a bool or a number of MiB >= 0, got {cache!r}")
        if label_mapping is not None and not isinstance(label_mapping, Mapping):
            check_choice(label_mapping, ("auto",), name="label_mapping")
        self.augment = augment
        self.normalize = normalize
        self.label_mapping = label_mapping
        self.ignore_index = ignore_index
        self.target_spacing = (
            None if target_spacing is None else tuple(float(s) for s in target_spacing)
        )
        self.sampler = (
            None
            if patch_size is None
            else PatchSampler(
                patch_size, foreground_fraction=foreground_fraction, ignore_index=ignore_index
            )
        )
        if samples_per_epoch is None:
            samples_per_epoch = len(self.cases)
        if not isinstance(samples_per_epoch, (int, np.integer)) or samples_per_epoch < 1:
            raise ValueError(f"samples_per_epoch must be an int >= 1, got {samples_per_epoch!r}")
        self.samples_per_epoch = int(samples_per_epoch)
        self._cache: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._cache_bytes = 0
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        """Restart the random generator (called per worker by :func:`worker_init_fn`)."""
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.samples_per_epoch if self.sampler is not None else len(self.cases)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Case ``i`` resampled and normalised: (C, *spatial) float32, (*spatial) int64."""
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        image, labels, meta = load_case(self.cases[i], label_mapping=self.label_mapping)
        if self.target_spacing is not None:
            image, _ = resample(image, meta.spacing, self.target_spacing, order=1, channel_axis=0)
            labels, _ = resample(labels, meta.spacing, self.target_spacing, order=0)
        if self.normalize is None:
            image = image.astype(np.float32)
        else:
            image = normalize(image, self.normalize, channel_axis=0)
        size = image.nbytes + labels.nbytes
        if size <= self._cache_limit:
            while self._cache and self._cache_bytes + size > self._cache_limit:
                _, (old_image, old_labels) = self._cache.popitem(last=False)
                self._cache_bytes -= old_image.nbytes + old_labels.nbytes
            self._cache[i] = (image, labels)
            self._cache_bytes += size
        return image, labels

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index must be in 0..{len(self) - 1}, got {index}")
        i = index % len(self.cases)
        image, labels = self.load(i)
        if self.sampler is not None:
            image, labels = self.sampler.sample(image, labels, rng=self.rng)
        if self.augment is not None:
            image, labels = self.augment(image, labels, rng=self.rng)
        item = {
            "image": torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)),
            "label": torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64)),
            "case": self.cases[i].name,
        }
        if self.pixel_weight is not None:
            weight = np.asarray(self.pixel_weight(labels), dtype=np.float32)
            if weight.shape != labels.shape:
                raise ValueError(
                    f"pixel_weight returned shape {weight.shape} for labels of shape "
                    f"{labels.shape} (case {self.cases[i].name})"
                )
            item["weight"] = torch.from_numpy(np.ascontiguousarray(weight))
        return item


def worker_init_fn(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed each worker from torch's per-worker seed.

    torch gives worker ``k`` the seed ``base + k`` with ``base`` drawn from the main
    process' generator, so the workers' augmentations differ and repeat under
    ``torch.manual_seed``. Re-seeds the dataset (unwrapping ``Subset``-like wrappers
    through ``.dataset``).
    """
    info = torch.utils.data.get_worker_info()
    if info is None:
        return
    dataset = info.dataset
    while not hasattr(dataset, "reseed") and hasattr(dataset, "dataset"):
        dataset = dataset.dataset
    if hasattr(dataset, "reseed"):
        dataset.reseed(info.seed)


class PadCollate:
    """Collate whole images of different sizes by padding them to a common size.

    See :func:`pad_collate`.
    """

    def __init__(self, multiple: int = 16, *, label_value: int = 0) -> None:
        if (
            isinstance(multiple, bool)
            or not isinstance(multiple, (int, np.integer))
            or multiple < 1
        ):
            raise ValueError(f"multiple must be an int >= 1, got {multiple!r}")
        self.multiple = int(multiple)
        self.label_value = int(label_value)

    def __repr__(self) -> str:
        return f"PadCollate(multiple={self.multiple}, label_value={self.label_value})"

    def __call__(self, batch: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        if not batch:
            raise ValueError("batch must not be empty")
        shapes = [tuple(item["label"].shape) for item in batch]
        channels = {item["image"].shape[0] for item in batch}
        if len({len(s) for s in shapes}) != 1 or len(channels) != 1:
            raise ValueError(f"batch items must share dimensionality and channels, got {shapes}")
        m = self.multiple
        size = [-(-max(dim) // m) * m for dim in zip(*shapes, strict=True)]
        images = batch[0]["image"].new_zeros((len(batch), batch[0]["image"].shape[0], *size))
        labels = torch.full((len(batch), *size), self.label_value, dtype=torch.int64)
        # padding is no image: it carries no loss weight
        weights = torch.zeros((len(batch), *size)) if "weight" in batch[0] else None
        for k, item in enumerate(batch):
            box = tuple(slice(0, n) for n in item["label"].shape)
            images[(k, slice(None), *box)] = item["image"]
            labels[(k, *box)] = item["label"]
            if weights is not None:
                weights[(k, *box)] = item["weight"]
        out = {
            "image": images,
            "label": labels,
            "case": [item["case"] for item in batch],
            "shape": torch.tensor(shapes, dtype=torch.int64),
        }
        if weights is not None:
            out["weight"] = weights
        return out


def pad_collate(multiple: int = 16, *, label_value: int = 0) -> PadCollate:
    """Collate function that pads whole images to one size divisible by ``multiple``.

    Images are padded with 0 and label maps with ``label_value`` (pass the loss's
    ignore index to keep padding out of the loss) at the end of each spatial axis, so
    ``output[..., :rows, :cols]`` is the original extent. The batch dict holds
    ``image`` (B, C, *padded), ``label`` (B, *padded), ``case`` (names) and ``shape``
    (B, ndim) the original spatial shapes, plus ``weight`` (B, *padded) when the items have
    one (padding weighs 0).

    Examples
    --------
    >>> import torch
    >>> def item(n):
    ...     return {"image": torch.ones(1, n, 5), "label": torch.ones(n, 5).long(), "case": str(n)}
    >>> out = pad_collate(8)([item(3), item(9)])
    >>> tuple(out["image"].shape), out["shape"].tolist()
    ((2, 1, 16, 8), [[3, 5], [9, 5]])
    """
    return PadCollate(multiple, label_value=label_value)


# --------------------------------------------------------------------------- box targets

# ImageNet channel statistics: a fixed, documented normalisation (no statistics are fitted on
# the training images, so a checkpoint needs nothing but the image size to be used).
BOX_MEAN = (0.485, 0.456, 0.406)
BOX_STD = (0.229, 0.224, 0.225)


def _rgb_float(image: np.ndarray) -> np.ndarray:
    """(H, W[, C]) uint8/integer/float image -> (H, W, 3) float32 in [0, 1]."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(f"image must be (rows, cols) or (rows, cols, 1|3|4), got {image.shape}")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    image = image[..., :3]
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255
    if np.issubdtype(image.dtype, np.integer):
        return image.astype(np.float32) / np.float32(np.iinfo(image.dtype).max)
    if image.dtype == np.bool_:
        return image.astype(np.float32)
    return np.clip(image.astype(np.float32), 0, 1)  # float images are taken as [0, 1]


def _resize_rgb(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize (H, W, 3) float32 to ``size`` = (rows, cols); area averaging when shrinking."""
    import cv2

    rows, cols = size
    shrink = rows < image.shape[0] or cols < image.shape[1]
    interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(image), (cols, rows), interpolation=interp)


def box_input(image: Any, image_size: Sequence[int]) -> np.ndarray:
    """An image as :class:`BoxDataset` (without augmentation) hands it to a model.

    Resized (not letterboxed) to ``image_size`` = (rows, cols), scaled to [0, 1] (uint8 / 255)
    and normalised with the ImageNet channel mean and standard deviation.

    Returns
    -------
    (3, rows, cols) float32 ndarray
    """
    rows, cols = (int(v) for v in image_size)
    rgb = _resize_rgb(_rgb_float(image), (rows, cols))
    rgb = (rgb - np.asarray(BOX_MEAN, np.float32)) / np.asarray(BOX_STD, np.float32)
    return np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32)


class BoxDataset(Dataset):
    """Images with one target box each, for single-object classification + localization.

    Each item is the image resized to ``image_size`` (plain resize, not letterbox: the
    aspect ratio changes, but the box is scaled with the image through
    :func:`segloc.boxes.scale_boxes`, and IoU is unchanged by scaling the two axes) and
    its target box in normalised coordinates.

    With ``augment=True``, before resizing: a random crop that keeps the whole target box
    (each side of the crop cuts away a uniform random share in [0, ``crop``] of the margin
    between the image edge and the box edge, so crops never cut the object), then after
    resizing a horizontal flip with probability 0.5 and a mild colour jitter (brightness,
    contrast and saturation factors in [0.8, 1.2]). Randomness comes from
    ``numpy.random.default_rng([seed, epoch, index])``, so an item depends only on the seed,
    :meth:`set_epoch` and its index (the same in any DataLoader worker, and after resuming).

    Parameters
    ----------
    images : sequence
        ``(rows, cols)`` or ``(rows, cols, 3|4)`` arrays (uint8 -> /255; floats taken as
        [0, 1]) or paths read with :func:`segloc.io.read_image`.
    boxes_per_image : sequence of array_like
        Per image an ``(N, 4)`` array of segloc boxes ``(x0, y0, x1, y1)`` in pixels. The
        target is the **largest** box (by area; the first of equal ones); an image with
        no box gives label 0 (background) and box ``(0, 0, 0, 0)``.
    image_size : (int, int), optional
        Model input size (rows, cols).
    augment : bool, optional
    seed : int, optional
    crop : float, optional
        Largest share of each margin a crop removes (0: no cropping; 1: up to the box).
    labels_per_image : sequence of sequence of int, optional
        Class index (>= 1) of each box; default 1 for every box. Label 0 is "no object".
    names : sequence of str, optional
        Case names returned as ``case`` (default ``"0"``, ``"1"``, ...).

    Items are dicts: ``image`` (3, rows, cols) float32 tensor (ImageNet mean/std
    normalised), ``box`` (4,) float32 tensor ``(x0, y0, x1, y1)`` divided by (cols, rows)
    of the resized image, so in [0, 1], ``label`` int64 tensor, ``case`` str.

    Examples
    --------
    >>> import numpy as np
    >>> ds = BoxDataset([np.zeros((40, 80, 3), np.uint8)], [[[20, 10, 60, 30]]],
    ...                 image_size=(32, 32), augment=False)
    >>> item = ds[0]
    >>> tuple(item["image"].shape), item["box"].tolist(), int(item["label"])
    ((3, 32, 32), [0.25, 0.25, 0.75, 0.75], 1)
    """

    def __init__(
        self,
        images: Sequence[Any],
        boxes_per_image: Sequence[Any],
        *,
        image_size: Sequence[int] = (224, 224),
        augment: bool = True,
        seed: int = 0,
        crop: float = 1.0,
        labels_per_image: Sequence[Sequence[int]] | None = None,
        names: Sequence[str] | None = None,
    ) -> None:
        from segloc.boxes import box_area, check_boxes

        if len(images) != len(boxes_per_image):
            raise ValueError(
                f"boxes_per_image must have one entry per image ({len(images)}), "
                f"got {len(boxes_per_image)}"
            )
        size = tuple(int(v) for v in np.atleast_1d(image_size))
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"image_size must be two positive ints (rows, cols), got {image_size}")
        if names is not None and len(names) != len(images):
            raise ValueError(
                f"names must have one entry per image ({len(images)}), got {len(names)}"
            )
        self.images = list(images)
        self.image_size: tuple[int, int] = size  # type: ignore[assignment]
        self.augment = bool(augment)
        if not 0 <= crop <= 1:
            raise ValueError(f"crop must be in [0, 1], got {crop}")
        self.crop = float(crop)
        self.seed = int(seed)
        self.epoch = 0
        self.names = (
            [str(n) for n in names] if names is not None else [str(i) for i in range(len(images))]
        )
        self.boxes: list[np.ndarray] = []
        self.labels: list[int] = []
        for i, b in enumerate(boxes_per_image):
            b = np.asarray(
                check_boxes(np.asarray(b, np.float64).reshape(-1, 4), name=f"boxes_per_image[{i}]")
            )
            cls = (
                np.ones(len(b), np.int64)
                if labels_per_image is None
                else np.asarray(labels_per_image[i], np.int64).reshape(-1)
            )
            if len(cls) != len(b):
                raise ValueError(
                    f"labels_per_image[{i}] must have one label per box ({len(b)}), got {len(cls)}"
                )
            if len(b) and cls.min() < 1:
                raise ValueError(f"labels_per_image[{i}] must be >= 1, got {cls.tolist()}")
            if len(b) == 0:
                self.boxes.append(np.zeros(4))
                self.labels.append(0)
            else:
                k = int(np.argmax(box_area(b)))  # the largest box is the single target
                self.boxes.append(b[k])
                self.labels.append(int(cls[k]))

    def __len__(self) -> int:
        return len(self.images)

    def set_epoch(self, epoch: int) -> None:
        """Choose the augmentation draws of ``epoch`` (each epoch sees new ones)."""
        self.epoch = int(epoch)

    def _image(self, index: int) -> np.ndarray:
        image = self.images[index]
        if isinstance(image, (str, os.PathLike)):
            image, _ = read_image(image)
        return _rgb_float(image)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from segloc.boxes import scale_boxes

        rgb = self._image(index)
        box = self.boxes[index].copy()
        label = self.labels[index]
        rows, cols = self.image_size
        rng = np.random.default_rng([self.seed, self.epoch, index])
        if self.augment:
            h, w = rgb.shape[:2]
            if label > 0:  # the crop keeps the box: each edge between image edge and box edge
                cut = rng.uniform(0, self.crop, size=4)
                x0 = int(np.floor(cut[0] * box[0]))
                y0 = int(np.floor(cut[1] * box[1]))
                x1 = int(np.ceil(w - cut[2] * (w - box[2])))
                y1 = int(np.ceil(h - cut[3] * (h - box[3])))
            else:
                x0, y0, x1, y1 = 0, 0, w, h
            rgb = rgb[y0:y1, x0:x1]
            box = box - np.array([x0, y0, x0, y0], np.float64)
        h, w = rgb.shape[:2]
        rgb = _resize_rgb(rgb, (rows, cols))
        box = scale_boxes(box[None], (rows / h, cols / w))[0]
        if self.augment:
            if rng.random() < 0.5:
                rgb = rgb[:, ::-1]
                box = np.array([cols - box[2], box[1], cols - box[0], box[3]])
            brightness, contrast, saturation = rng.uniform(0.8, 1.2, size=3)
            grey = rgb.mean(axis=2, keepdims=True)
            rgb = grey + saturation * (rgb - grey)
            rgb = (rgb - rgb.mean()) * contrast + rgb.mean() * brightness
            rgb = np.clip(rgb, 0, 1)
        if label == 0:
            box = np.zeros(4)
        rgb = (rgb - np.asarray(BOX_MEAN, np.float32)) / np.asarray(BOX_STD, np.float32)
        image = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32))
        norm = box / np.array([cols, rows, cols, rows], np.float64)
        return {
            "image": image,
            "box": torch.as_tensor(np.clip(norm, 0, 1), dtype=torch.float32),
            "label": torch.tensor(label, dtype=torch.int64),
            "case": self.names[index],
        }
