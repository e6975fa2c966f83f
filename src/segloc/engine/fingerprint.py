"""The fingerprint of a dataset folder: what a training plan is derived from.

:func:`fingerprint` reads every case once, one at a time (never all images at once), and
keeps figures only: shapes, spacings, intensity statistics per channel (over the whole
image, the labelled foreground and the body, i.e. the image without a dark frame), label
values and class frequencies, the connected objects of each class, where each class lies
along each axis, and how the cases group (patient folders; names numbering the frames of
one sequence). Intensity percentiles come from a bounded sample of voxels per case, drawn
with a seed derived from the case's own pixels, so a renamed dataset gives the same figures.

The result is cached as JSON, keyed by the files' relative names, sizes and modification
times: in the user cache (``$SEGLOC_CACHE`` or ``~/.cache/segloc``) and wherever the caller
asks (a run folder's ``fingerprint.json``). :mod:`segloc.engine.plan` turns it into a plan.

References
----------
.. [1] Isensee, F. et al. "nnU-Net: a self-configuring method for deep learning-based
   biomedical image segmentation", Nature Methods 18, 2021,
   :doi:`10.1038/s41592-020-01008-z` (the dataset fingerprint: shapes, spacings, foreground
   intensity statistics and modality).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from segloc._validation import write_atomic
from segloc.engine.data import CaseFiles, find_cases, load_case
from segloc.engine.preprocess import body_mask
from segloc.io import is_lossy

__all__ = [
    "FINGERPRINT_VERSION",
    "Fingerprint",
    "dataset_key",
    "fingerprint",
    "load_fingerprint",
    "save_fingerprint",
]

#: bumped whenever the figures change meaning: older cached fingerprints are recomputed
FINGERPRINT_VERSION = 2

_SAMPLES = 1_000_000  # voxels kept per channel and region, over the whole dataset
_THUMB = 16  # side of the thumbnails compared between consecutive frames
_BINS = ("image", "foreground", "body")


def _stats(count: float, total: float, squares: float, sample: np.ndarray) -> dict[str, float]:
    """mean, std (exact, from sums) and the 0.5 / 50 / 99.5 percentiles (from the sample)."""
    if count == 0 or sample.size == 0:
        return {}
    mean = total / count
    std = float(np.sqrt(max(squares / count - mean**2, 0.0)))
    p = np.percentile(sample, [0.5, 50.0, 99.5])
    return {
        "mean": float(mean),
        "std": std,
        "p00_5": float(p[0]),
        "p50": float(p[1]),
        "p99_5": float(p[2]),
    }


@dataclass
class Fingerprint:
    """What :func:`fingerprint` found in a dataset folder (JSON-ready).

    Attributes
    ----------
    key : str
        Hash of the files' relative names, sizes and modification times (the cache key).
    names : list of str
        Case names, sorted (:func:`segloc.engine.data.find_cases`).
    dims, channels : int
    dtype : str
        The first image's stored dtype (``uint8``, ``int16``, ``float32``...).
    shapes, spacings : list
        Spatial shape and spacing of each case.
    intensity : list of dict
        Per channel: ``{"image": stats, "foreground": stats, "body": stats}``, each
        ``mean``, ``std``, ``p00_5``, ``p50``, ``p99_5`` of the stored values.
    body_fraction : list of float
        Share of each case inside :func:`segloc.engine.preprocess.body_mask`.
    classes : dict
        Class index -> ``{"voxels", "cases", "components", "size", "boundary"}``: voxels
        over all cases, cases holding it, median connected components per case holding it,
        median component size (voxels), and the share of its voxels on a class border.
    label_values : int
        How many distinct label values the files hold.
    binary_files : bool
        Every label file is a 0/1 or 0/255 mask.
    orientation : list of float
        Per spatial axis: the voxel-weighted mean of ``|mean centre of class k|`` along that
        axis (positions -1..1): near 0 when classes lie anywhere, large when a class keeps to
        one side in every case (sky up, road down).
    groups : dict
        ``{"folders": n, "largest": m}``: cases in sub-folders (patients) of the image folder.
    sequence : dict
        ``{"numbered": share of names ending in a number, "consecutive": median correlation
        of the thumbnails of consecutive frames, "random": of random pairs}`` (2D only).
    lossy_labels : int
        Label files in a lossy format (JPEG).
    ignore_hint : int or None
        A label value that marks unlabelled pixels (``dataset.json``'s ``ignore``, 255 in a
        label map, or a top value scattered into many small pieces on the other classes'
        borders, as CamVid's void).
    problems : list of str
        What makes the data unusable for training, each naming the file.
    """

    key: str = ""
    version: int = FINGERPRINT_VERSION
    names: list[str] = field(default_factory=list)
    dims: int = 0
    channels: int = 0
    dtype: str = ""
    shapes: list[list[int]] = field(default_factory=list)
    spacings: list[list[float]] = field(default_factory=list)
    intensity: list[dict[str, dict[str, float]]] = field(default_factory=list)
    body_fraction: list[float] = field(default_factory=list)
    classes: dict[str, dict[str, float]] = field(default_factory=dict)
    label_values: int = 0
    binary_files: bool = True
    orientation: list[float] = field(default_factory=list)
    groups: dict[str, int] = field(default_factory=dict)
    sequence: dict[str, float] = field(default_factory=dict)
    lossy_labels: int = 0
    ignore_hint: int | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def n_cases(self) -> int:
        return len(self.names)

    def median_shape(self) -> list[float]:
        return [float(v) for v in np.median(np.array(self.shapes), axis=0)] if self.shapes else []

    def median_spacing(self) -> list[float]:
        if not self.spacings:
            return []
        return [float(v) for v in np.median(np.array(self.spacings), axis=0)]

    def slices(self, axis: int) -> Fingerprint:
        """The fingerprint of the 2D slices across spatial ``axis`` of these volumes, as
        a 2D network trained on them sees it: the axis left out of shapes, spacings and
        orientation. An object's size keeps its share of the volume (the share of a
        slice it covers is not measured)."""
        if self.dims != 3 or axis not in (0, 1, 2):
            raise ValueError(
                f"slices need a 3D fingerprint and an axis 0-2, got {self.dims}D, axis {axis}"
            )
        depth = float(np.median([s[axis] for s in self.shapes])) if self.shapes else 1.0
        classes = {
            k: {**v, "size": float(v["size"]) / depth} if "size" in v else dict(v)
            for k, v in self.classes.items()
        }
        return replace(
            self,
            dims=2,
            shapes=[[v for a, v in enumerate(s) if a != axis] for s in self.shapes],
            spacings=[[v for a, v in enumerate(s) if a != axis] for s in self.spacings],
            orientation=[v for a, v in enumerate(self.orientation) if a != axis],
            classes=classes,
            sequence={},
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Fingerprint:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in values.items() if k in known})


# --------------------------------------------------------------------------- cache


def dataset_key(cases: Sequence[CaseFiles], root: str | os.PathLike) -> str:
    """Hash of the files' names (relative to ``root``), sizes and modification times."""
    root = Path(root)
    h = hashlib.sha256(f"v{FINGERPRINT_VERSION}".encode())
    for case in cases:
        for path in (case.image, case.label):
            st = path.stat()
            rel = os.path.relpath(path, root)
            h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def _cache_dir() -> Path:
    return Path(os.environ.get("SEGLOC_CACHE") or Path.home() / ".cache" / "segloc")


def save_fingerprint(fp: Fingerprint, path: str | os.PathLike) -> Path:
    """Write ``fp`` as indented JSON, atomically."""
    text = json.dumps(fp.to_dict(), indent=1, sort_keys=True)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, lambda tmp: tmp.write_text(text))


def load_fingerprint(path: str | os.PathLike) -> Fingerprint:
    """Read a fingerprint written by :func:`save_fingerprint`."""
    try:
        values = json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not a fingerprint ({err})") from None
    if not isinstance(values, dict) or "names" not in values:
        raise ValueError(f"{path}: not a fingerprint")
    return Fingerprint.from_dict(values)


def _cached(path: Path, key: str) -> Fingerprint | None:
    try:
        fp = load_fingerprint(path)
    except (OSError, ValueError, TypeError):
        return None
    return fp if fp.key == key and fp.version == FINGERPRINT_VERSION else None


# --------------------------------------------------------------------------- one case


@dataclass
class _CaseFigures:
    """The figures of one case, before they are pooled over the dataset."""

    shape: list[int]
    spacing: list[float]
    channels: int
    dtype: str
    sums: dict[str, np.ndarray]  # region -> (C, 3): count, sum, sum of squares
    samples: dict[str, list[np.ndarray]]  # region -> per channel sampled values
    body_fraction: float
    classes: dict[int, dict[str, float]]  # class -> voxels, components, size, boundary
    centres: dict[int, list[float]]  # class -> per-axis mean position (-1..1)
    thumb: np.ndarray | None


def _regions(image: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "image": np.ones(labels.shape, bool),
        "foreground": labels > 0,
        "body": body_mask(image),
    }


def _sample_regions(
    image: np.ndarray, regions: Mapping[str, np.ndarray], per_case: int, seed: int
) -> tuple[dict[str, np.ndarray], dict[str, list[np.ndarray]]]:
    rng = np.random.default_rng(seed)
    sums: dict[str, np.ndarray] = {}
    samples: dict[str, list[np.ndarray]] = {}
    for name, mask in regions.items():
        where = np.flatnonzero(mask)
        pick = where if where.size <= per_case else rng.choice(where, per_case, replace=False)
        pick.sort()
        s = np.zeros((image.shape[0], 3))
        drawn = []
        for c, channel in enumerate(image):
            values = channel.reshape(-1)[where].astype(np.float64)
            s[c] = (values.size, values.sum(), np.square(values).sum())
            drawn.append(channel.reshape(-1)[pick].astype(np.float32))
        sums[name], samples[name] = s, drawn
    return sums, samples


def _class_figures(labels: np.ndarray) -> tuple[dict[int, dict[str, float]], dict[int, list]]:
    """Voxels, connected components, median component size, border share and centre per class."""
    peak = ndi.maximum_filter(labels, size=3)
    low = ndi.minimum_filter(labels, size=3)
    border = peak != low
    figures, centres = {}, {}
    for k in np.unique(labels).tolist():
        mask = labels == k
        n = int(mask.sum())
        comps, count = ndi.label(mask)
        sizes = np.bincount(comps.ravel())[1:] if count else np.array([n])
        figures[int(k)] = {
            "voxels": float(n),
            "components": float(count),
            "size": float(np.median(sizes)),
            "boundary": float((border & mask).sum() / n),
        }
        centre = []
        for axis in range(labels.ndim):
            other = tuple(a for a in range(labels.ndim) if a != axis)
            profile = mask.sum(axis=other)
            pos = (np.arange(profile.size) + 0.5) / profile.size * 2 - 1
            centre.append(float((profile * pos).sum() / n))
        centres[int(k)] = centre
    return figures, centres


def _thumbnail(image: np.ndarray) -> np.ndarray | None:
    """A 16x16 z-scored thumbnail of the channel mean of a 2D image (None for volumes)."""
    if image.ndim != 3:
        return None
    grey = image.astype(np.float32).mean(axis=0)
    small = ndi.zoom(
        grey, [_THUMB / n for n in grey.shape], order=1, mode="nearest", grid_mode=True
    )
    small = small[:_THUMB, :_THUMB].ravel()
    return (small - small.mean()) / max(float(small.std()), 1e-6)


def _case_figures(case: CaseFiles, per_case: int, seed: int) -> _CaseFigures:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # lossy masks: counted once, not per file
        image, labels, meta = load_case(case)
    regions = _regions(image, labels)
    # the seed comes from the pixels, not the name or the order: a renamed dataset samples alike
    content = zlib.crc32(np.ascontiguousarray(image).view(np.uint8).ravel()[: 1 << 22])
    sums, samples = _sample_regions(image, regions, per_case, seed ^ content)
    classes, centres = _class_figures(labels)
    return _CaseFigures(
        shape=[int(n) for n in labels.shape],
        spacing=[float(round(s, 6)) for s in meta.spacing][: labels.ndim],
        channels=int(image.shape[0]),
        dtype=str(image.dtype),
        sums=sums,
        samples=samples,
        body_fraction=float(regions["body"].mean()),
        classes=classes,
        centres=centres,
        thumb=_thumbnail(image),
    )


# --------------------------------------------------------------------------- pooling


class _Pool:
    """Running totals over the cases; nothing per case but small figures."""

    def __init__(self) -> None:
        self.sums: dict[str, np.ndarray] = {}
        self.samples: dict[str, list[list[np.ndarray]]] = {}
        self.classes: dict[int, dict[str, list[float]]] = {}
        self.centres: dict[int, list[tuple[list[float], float]]] = {}
        self.thumbs: list[np.ndarray | None] = []

    def add(self, f: _CaseFigures) -> None:
        for region, s in f.sums.items():
            self.sums[region] = s if region not in self.sums else self.sums[region] + s
            per_channel = self.samples.setdefault(region, [[] for _ in range(f.channels)])
            for c, values in enumerate(f.samples[region]):
                per_channel[c].append(values)
        for k, figures in f.classes.items():
            pooled = self.classes.setdefault(
                k, {"voxels": [], "components": [], "size": [], "boundary": []}
            )
            for name, value in figures.items():
                pooled[name].append(value)
            self.centres.setdefault(k, []).append((f.centres[k], figures["voxels"]))
        self.thumbs.append(f.thumb)

    def intensity(self, channels: int) -> list[dict[str, dict[str, float]]]:
        out = []
        for c in range(channels):
            entry = {}
            for region in _BINS:
                count, total, squares = self.sums[region][c]
                sample = (
                    np.concatenate(self.samples[region][c])
                    if self.samples[region][c]
                    else (np.zeros(0))
                )
                entry[region] = _stats(count, total, squares, sample)
            out.append(entry)
        return out

    def class_table(self) -> dict[str, dict[str, float]]:
        table = {}
        for k in sorted(self.classes):
            p = self.classes[k]
            table[str(k)] = {
                "voxels": float(np.sum(p["voxels"])),
                "cases": float(len(p["voxels"])),
                "components": float(np.median(p["components"])),
                "size": float(np.median(p["size"])),
                "boundary": float(
                    np.sum(np.multiply(p["boundary"], p["voxels"])) / np.sum(p["voxels"])
                ),
            }
        return table

    def orientation(self, dims: int, ignore: int | None) -> list[float]:
        """Per axis: voxel-weighted ``|mean centre|`` of the classes (see Fingerprint)."""
        out = []
        for axis in range(dims):
            num = den = 0.0
            for k, entries in self.centres.items():
                if k == ignore:
                    continue
                w = np.array([v for _, v in entries])
                c = np.array([centre[axis] for centre, _ in entries])
                num += abs(float((c * w).sum() / w.sum())) * float(w.sum())
                den += float(w.sum())
            out.append(num / den if den else 0.0)
        return out


def _sequence(names: Sequence[str], thumbs: Sequence[np.ndarray | None]) -> dict[str, float]:
    """How much the cases look like numbered frames of one sequence (2D only)."""
    parsed = [re.match(r"^(.*?)(\d+)$", Path(n).name) for n in names]
    numbered = sum(m is not None for m in parsed) / max(len(names), 1)
    if any(t is None for t in thumbs) or len(thumbs) < 3:
        return {"numbered": numbered}
    keyed = sorted((m.group(1), int(m.group(2)), i) for i, m in enumerate(parsed) if m is not None)
    pairs = [(a[2], b[2]) for a, b in zip(keyed, keyed[1:], strict=False) if a[0] == b[0]]
    if not pairs:
        return {"numbered": numbered}

    def corr(i: int, j: int) -> float:
        return float(np.mean(thumbs[i] * thumbs[j]))

    rng = np.random.default_rng(0)
    others = rng.integers(0, len(thumbs), size=(min(200, 4 * len(pairs)), 2))
    random = [corr(i, j) for i, j in others if i != j]
    return {
        "numbered": round(numbered, 4),
        "consecutive": round(float(np.median([corr(i, j) for i, j in pairs])), 4),
        "random": round(float(np.median(random)), 4) if random else 0.0,
    }


def _groups(cases: Sequence[CaseFiles]) -> dict[str, int]:
    folders: dict[str, int] = {}
    for case in cases:
        folder = case.name.rsplit("/", 1)[0] if "/" in case.name else ""
        folders[folder] = folders.get(folder, 0) + 1
    named = {k: v for k, v in folders.items() if k}
    return {"folders": len(named), "largest": max(named.values()) if named else 0}


def _ignore_hint(root: Path, table: Mapping[str, Mapping[str, float]], binary: bool) -> int | None:
    """A label value that marks unlabelled pixels, or None; see :class:`Fingerprint`."""
    meta = root / "dataset.json"
    if meta.is_file():  # nnU-Net v2's dataset.json: "labels": {"ignore": N, ...}
        try:
            labels = json.loads(meta.read_text()).get("labels", {})
            if isinstance(labels.get("ignore"), int):
                return int(labels["ignore"])
        except (json.JSONDecodeError, AttributeError):
            pass
    values = sorted(int(k) for k in table)
    if binary or len(values) < 3:
        return None
    if 255 in values and max(v for v in values if v != 255) < 254:
        return 255  # VOC's border / void label
    top = values[-1]
    others = [table[str(k)]["components"] for k in values[:-1]]
    t = table[str(top)]
    if t["components"] >= 2 * max(others) and t["boundary"] >= 0.3:
        return top
    return None


def _problems(fp: Fingerprint, root: Path) -> list[str]:
    out = list(fp.problems)
    if fp.n_cases == 1:
        out.append(
            f"{root}: a single case ({fp.names[0]}): training needs at least 2, one to validate on"
        )
    if fp.classes and all(int(k) == 0 for k in fp.classes):
        out.append(f"{root}: every label file holds class 0 only: nothing to segment")
    elif len(fp.classes) == 1:
        (k,) = fp.classes
        out.append(f"{root}: every label file holds class {k} only: one class, nothing to tell")
    return out


def _check_consistent(f: _CaseFigures, first: _CaseFigures | None, case: CaseFiles) -> str | None:
    if first is None:
        return None
    if len(f.shape) != len(first.shape) or f.channels != first.channels:
        return (
            f"{case.image}: {len(f.shape)}D with {f.channels} channel(s), but the first case is "
            f"{len(first.shape)}D with {first.channels}"
        )
    return None


def _measure(
    root: Path,
    cases: Sequence[CaseFiles],
    seed: int,
    progress: Callable[[int, int], None] | None,
) -> Fingerprint:
    per_case = max(1000, min(20000, _SAMPLES // max(len(cases), 1)))
    pool, fp, first = _Pool(), Fingerprint(), None
    binary = True
    for i, case in enumerate(cases):
        if progress is not None:
            progress(i, len(cases))
        try:
            f = _case_figures(case, per_case, seed)
        except ValueError as err:  # unreadable, or a label that does not fit its image
            fp.problems.append(str(err) if str(case.image) in str(err) else f"{case.image}: {err}")
            continue
        problem = _check_consistent(f, first, case)
        if problem:
            fp.problems.append(problem)
            continue
        first = first or f
        pool.add(f)
        binary &= set(f.classes) <= {0, 1}
        fp.lossy_labels += int(is_lossy(case.label))
        fp.names.append(case.name)
        fp.shapes.append(f.shape)
        fp.spacings.append(f.spacing)
        fp.body_fraction.append(round(f.body_fraction, 4))
    if first is None:
        fp.problems = fp.problems or [f"{root}: no readable case"]
        return fp
    fp.dims, fp.channels, fp.dtype = len(first.shape), first.channels, first.dtype
    fp.intensity = pool.intensity(fp.channels)
    fp.classes = pool.class_table()
    fp.label_values = len(fp.classes)
    fp.binary_files = binary
    fp.ignore_hint = _ignore_hint(root, fp.classes, binary)
    fp.orientation = [round(v, 4) for v in pool.orientation(fp.dims, fp.ignore_hint)]
    kept = [c for c in cases if c.name in set(fp.names)]
    fp.groups = _groups(kept)
    fp.sequence = _sequence(fp.names, pool.thumbs)
    fp.problems = _problems(fp, root)
    return fp


def fingerprint(
    root: str | os.PathLike,
    *,
    image_dir: str | None = None,
    label_dir: str | None = None,
    label_suffix: str | None = None,
    cache: bool = True,
    save_to: str | os.PathLike | None = None,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> Fingerprint:
    """The fingerprint of the dataset folder ``root`` (computed once, then cached).

    Parameters
    ----------
    root, image_dir, label_dir, label_suffix
        As for :func:`segloc.engine.data.find_cases`.
    cache : bool
        Read and write the user cache (``$SEGLOC_CACHE`` or ``~/.cache/segloc``).
    save_to : path-like, optional
        Also write it there (a run folder's ``fingerprint.json``) unless it reports problems;
        read it from there when its key matches the files.
    seed : int
        Seed of the voxel sampling (mixed with each case's pixels).
    progress : callable, optional
        ``progress(i, n)`` before case ``i`` of ``n`` is read.

    Returns
    -------
    Fingerprint
        Unusable data is listed in ``problems`` (each line names a file), not raised.

    Raises
    ------
    ImageReadError
        No image or label folder, or no label file pairing an image (the message names it).
    """
    root = Path(root)
    cases = find_cases(root, image_dir=image_dir, label_dir=label_dir, label_suffix=label_suffix)
    key = dataset_key(cases, root)
    places = ([Path(save_to)] if save_to else []) + (
        [_cache_dir() / "fingerprints" / f"{key}.json"] if cache else []
    )
    found = next((fp for p in places if p.is_file() and (fp := _cached(p, key))), None)
    fp = found or _measure(root, cases, seed, progress)
    fp.key = key
    for place in places:
        if fp.problems and save_to and place == Path(save_to):
            continue  # the caller stops on them: no output beside its other outputs
        try:
            if not (place.is_file() and _cached(place, key)):
                save_fingerprint(fp, place)
        except OSError:
            pass  # a read-only cache is no reason to fail
    return fp
