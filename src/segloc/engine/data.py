"""Dataset folders: finding cases, reading them, checking them, splitting them.

A dataset folder holds an image folder (``images/``) and a label folder (``labels/`` or
``masks/``) whose files match by relative path and name, with an optional suffix on the
label names (``case_3.png`` <-> ``case_3_mask.png``), 2D (PNG, JPEG, TIFF) or 3D (NIfTI,
NRRD). :func:`find_cases` pairs them, :func:`check_dataset` reports what a training run
would meet, :func:`split_cases` splits deterministically (by patient when asked).

Arrays handed to a model are channels first: images ``(C, *spatial)`` float32 (grey:
C = 1, RGB: C = 3), label maps ``(*spatial)`` integers. Normalisation and resampling are in
:mod:`segloc.engine.preprocess`, patch sampling and the torch dataset in
:mod:`segloc.engine.patches`.

Label values: with ``label_mapping="auto"`` a label file whose values are a subset of
``{0, 255}`` or ``{0, 1}`` is a binary mask and gives classes 0/1; any other file is a
label map and keeps its values (:func:`segloc.io.read_mask`).

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
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segloc._validation import check_choice, check_positive
from segloc.io import (
    Header,
    ImageMeta,
    ImageReadError,
    case_stem,
    check_compatible,
    inspect,
    is_lossy,
    list_images,
    match_files,
    read_image,
    read_mask,
)
from segloc.io import headers as io_headers

__all__ = [
    "CaseFiles",
    "DatasetReport",
    "check_cases",
    "check_dataset",
    "check_label_values",
    "find_cases",
    "load_case",
    "split_cases",
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


#: how a user names each folder: the command line's flag, the Python argument
_FOLDER_ARGUMENTS = {"image_dir": "--images / image_dir", "label_dir": "--labels / label_dir"}


def _pick_dir(
    root: Path, given: str | os.PathLike | None, candidates: Sequence[str], what: str
) -> Path:
    if given is not None:
        folder = root / given
        if not folder.is_dir():
            raise ImageReadError(f"{folder}: no such folder ({what})")
        return folder
    found = [root / c for c in candidates if (root / c).is_dir()]
    name = _FOLDER_ARGUMENTS[what]
    if not found:
        raise ImageReadError(
            f"{root}: no {what} folder (looked for {', '.join(candidates)}); name it with {name}"
        )
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise ValueError(f"{root}: {what} is ambiguous ({names}); choose one with {name}")
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
        results = {}
        for s in options:
            try:
                results[s] = match_files(images, labels, truth_suffix=s)
            except ValueError:
                # a guessed ending can make two labels one case ("10" less "0" is "1"): not
                # the dataset's ending then; without any ending the error is the data's own
                if not s:
                    raise
        best = max(len(r[0]) for r in results.values())
        winners = [s for s, r in results.items() if len(r[0]) == best]
        if len(winners) > 1 and best > 0:
            raise ValueError(
                f"{root}: label_suffix is ambiguous: {winners} each match {best} files; "
                "choose one with --label-suffix / label_suffix"
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
    spatial = image.shape[:-1] if meta.is_colour else image.shape
    if len(spatial) not in (2, 3):
        raise ImageReadError(
            f"{case.image}: must be a 2D image or a 3D volume, got shape {image.shape}",
            path=case.image,
        )
    # "auto": bool for 0/255 and 0/1 files (-> classes 0/1), int32 for label maps
    kind = "auto" if label_mapping == "auto" else "labels"
    labels, label_meta = read_mask(case.label, kind=kind)
    check_compatible(image, labels, image_meta=meta, mask_meta=label_meta)
    if isinstance(label_mapping, Mapping):
        labels = _apply_mapping(labels, label_mapping)
    return _channels_first(image, meta), labels.astype(np.int64, copy=False), meta


def check_label_values(
    path: str | os.PathLike,
    labels: np.ndarray,
    num_classes: int,
    ignore_index: int | None = None,
) -> None:
    """Refuse class indices outside ``0..num_classes - 1`` (``ignore_index`` apart) in the
    labels read from ``path``, naming it."""
    values = np.unique(labels)
    bad = values[((values < 0) | (values >= num_classes)) & (values != ignore_index)]
    if bad.size:
        shown = ", ".join(str(int(v)) for v in bad[:10]) + (" ..." if bad.size > 10 else "")
        raise ImageReadError(
            f"{path}: labels must be in 0..{num_classes - 1} (the classes scored), got {shown}",
            path=path,
        )


def check_cases(
    cases: Sequence[CaseFiles],
    *,
    label_mapping: str | Mapping[int, int] | None = "auto",
    num_classes: int | None = None,
    ignore_index: int | None = None,
    check: Callable[[Header], None] | None = None,
    read_below: int | None = None,
) -> None:
    """Check every case of a job before it starts; the first bad file raises, named.

    First the headers (:func:`segloc.io.inspect`): every image 2D or 3D, ``check(header)``
    (what a model needs of it), every label the image's shape. Then, when the files
    together take at most ``read_below`` bytes (default
    :data:`segloc.io.FULL_CHECK_BYTES`), every case is read as :func:`load_case` reads it
    and its labels checked against ``num_classes``; larger jobs find bad values when they
    reach them.
    """
    total = 0
    for case in cases:
        image = inspect(case.image)
        if image.ndim not in (2, 3):
            raise ImageReadError(
                f"{case.image}: must be a 2D image or a 3D volume, got shape {image.shape}",
                path=case.image,
            )
        if check is not None:
            check(image)
        label = inspect(case.label)
        if label.shape != image.shape:
            raise ImageReadError(
                f"{case.label}: shape {label.shape} does not match the image shape "
                f"{image.shape} (image {case.image})",
                path=case.label,
            )
        total += image.nbytes + label.nbytes
    if total > (io_headers.FULL_CHECK_BYTES if read_below is None else read_below):
        return
    for case in cases:
        _, labels, _ = load_case(case, label_mapping=label_mapping)
        if num_classes is not None:
            check_label_values(case.label, labels, num_classes, ignore_index)


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
    dims: Counter = Counter()
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
        dims[len(spatial) - 1] += 1
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
    report.problems += _dataset_problems(report, images, dims)
    return report


def _dataset_problems(report: DatasetReport, images: Path, dims: Counter) -> list[str]:
    """What makes the dataset as a whole untrainable, whatever its cases say one by one."""
    problems = []
    if report.n_cases == 0:
        problems.append(f"{images}: no usable case (an image and a label file that pair)")
    if len(dims) > 1:
        counts = ", ".join(f"{n} {d}D" for d, n in sorted(dims.items()))
        problems.append(f"{images}: cases of different dimensions ({counts})")
    classes = sorted(report.class_voxels)
    if report.n_cases and classes == [0]:
        problems.append(f"{images}: every label is background: there is nothing to learn")
    missing = sorted(set(range(max(classes) + 1)) - set(classes)) if classes else []
    if missing:
        problems.append(
            f"{images}: the labels hold classes {classes}; {missing} never appear "
            "(training wants consecutive classes from 0)"
        )
    return problems


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
