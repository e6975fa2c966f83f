"""Files of a folder: case names, image listings, matching predictions to truths by name."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segloc.io.errors import ImageReadError
from segloc.io.formats import _SUFFIXES, ImageMeta, _suffix


def case_stem(path: str | os.PathLike) -> str:
    """Name of a case: the file name without its format suffix (``.nii.gz`` counts as one).

    >>> case_stem("a/b/case_01.nii.gz"), case_stem("x/img.v2.png"), case_stem("dicom/ct_7")
    ('case_01', 'img.v2', 'ct_7')
    """
    p = Path(path)
    name = p.name
    if name.lower().endswith(".nii.gz"):
        return name[: -len(".nii.gz")]
    if p.suffix.lower() in _SUFFIXES:
        return p.stem
    return name


def _is_image_file(p: Path) -> bool:
    # temporary files of atomic writes and other hidden files start with "."
    return p.is_file() and not p.name.startswith(".") and _suffix(p) in _SUFFIXES


def list_images(folder: str | os.PathLike, *, recursive: bool = True) -> list[Path]:
    """Image files (known suffixes) under ``folder``, sorted.

    A sub-folder holding ``.dcm`` files is listed once, as one DICOM series. Hidden
    files (including the temporary files of atomic writes) are skipped.

    Raises
    ------
    ImageReadError
        If ``folder`` is missing or not a folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageReadError(f"{folder}: no such folder")
    found: list[Path] = []
    dirs = [folder]
    while dirs:
        d = dirs.pop()
        entries = sorted(d.iterdir())
        files = [p for p in entries if _is_image_file(p)]
        dicom = [p for p in files if _suffix(p) == ".dcm"]
        if dicom and d != folder:
            found.append(d)  # one DICOM series = one volume
            files = [p for p in files if _suffix(p) != ".dcm"]
        found.extend(files)
        if recursive:
            dirs.extend(p for p in entries if p.is_dir() and not p.name.startswith("."))
    return sorted(found)


def _keys(folder: Path, suffix: str) -> dict[str, Path]:
    """Relative path without format suffix (and without ``suffix`` at the end of the stem)."""
    out: dict[str, Path] = {}
    for p in list_images(folder):
        stem = case_stem(p)
        if suffix and stem.endswith(suffix) and len(stem) > len(suffix):
            stem = stem[: -len(suffix)]
        key = (p.parent.relative_to(folder) / stem).as_posix()
        if key in out:
            raise ImageReadError(f"{p}: same case name as {out[key]}; keep one file per case")
        out[key] = p
    return out


def match_files(
    pred_dir: str | os.PathLike, truth_dir: str | os.PathLike, *, truth_suffix: str = ""
) -> tuple[list[tuple[Path, Path]], list[Path], list[Path]]:
    """Pair prediction and truth files by case name.

    Files match when their paths relative to the two folders agree without the format
    suffix (``a/case_01.png`` and ``a/case_01.nii.gz``); the rest then match by bare
    name when that name is unique on both sides (flat predictions for nested truth).

    Parameters
    ----------
    pred_dir, truth_dir : str or path-like
        Folders searched recursively (:func:`list_images`).
    truth_suffix : str
        Removed from the end of truth names first, e.g. ``"_mask"`` pairs
        ``case_3.png`` with ``case_3_mask.png``.

    Returns
    -------
    pairs : list of (Path, Path)
        ``(prediction, truth)``, sorted by truth path.
    unmatched_pred, unmatched_truth : list of Path
        Sorted.

    Raises
    ------
    ImageReadError
        A folder is missing, or two files in one folder share a case name.
    """
    pred_dir, truth_dir = Path(pred_dir), Path(truth_dir)
    preds = _keys(pred_dir, "")
    truths = _keys(truth_dir, truth_suffix)
    pairs = [(preds.pop(k), truths.pop(k)) for k in sorted(set(preds) & set(truths))]

    def by_name(keys: dict[str, Path]) -> dict[str, str]:
        names: dict[str, list[str]] = {}
        for k in keys:
            names.setdefault(k.rsplit("/", 1)[-1], []).append(k)
        return {n: ks[0] for n, ks in names.items() if len(ks) == 1}

    pred_names, truth_names = by_name(preds), by_name(truths)
    for name in sorted(set(pred_names) & set(truth_names)):
        pairs.append((preds.pop(pred_names[name]), truths.pop(truth_names[name])))
    pairs.sort(key=lambda pt: pt[1])
    return pairs, sorted(preds.values()), sorted(truths.values())


def check_compatible(
    image: Any,
    mask: Any,
    *,
    image_meta: ImageMeta | None = None,
    mask_meta: ImageMeta | None = None,
    rtol: float = 1e-3,
) -> None:
    """Raise unless a mask fits an image: same spatial shape, spacing and affine.

    Parameters
    ----------
    image, mask : ndarray or tuple of int
        Arrays or their shapes. A colour axis ``(..., 3|4)`` on the image is ignored when
        the image has one more axis than the mask.
    image_meta, mask_meta : ImageMeta, optional
        When both are given, spacings (relative tolerance ``rtol``) and affines
        (within ``rtol`` times the largest spacing, in mm) must agree too.

    Raises
    ------
    ImageReadError
        On a mismatch, naming both files, when a path is known; plain ``ValueError``
        otherwise.
    """
    ishape = tuple(image) if isinstance(image, tuple) else np.shape(image)
    mshape = tuple(mask) if isinstance(mask, tuple) else np.shape(mask)
    if len(ishape) == len(mshape) + 1 and ishape[-1] in (3, 4):
        ishape = ishape[:-1]
    ipath = image_meta.path if image_meta is not None else None
    mpath = mask_meta.path if mask_meta is not None else None

    def fail(problem: str) -> ValueError:
        if mpath is None and ipath is None:
            return ValueError(f"mask and image: {problem}")
        return ImageReadError(f"{mpath or 'mask'}: {problem} (image {ipath or '<array>'})")

    if ishape != mshape:
        raise fail(f"shape {mshape} does not match the image shape {ishape}")
    if image_meta is None or mask_meta is None:
        return
    isp, msp = tuple(image_meta.spacing), tuple(mask_meta.spacing)
    if len(isp) == len(msp) and not np.allclose(isp, msp, rtol=rtol, atol=0):
        raise fail(f"spacing {msp} does not match the image spacing {isp}")
    if image_meta.affine is not None and mask_meta.affine is not None:
        ia, ma = np.asarray(image_meta.affine), np.asarray(mask_meta.affine)
        tol = rtol * max(max(isp, default=1.0), 1.0)
        if ia.shape != ma.shape or not np.allclose(ia, ma, rtol=0, atol=tol):
            raise fail("affine (voxel -> world position) does not match the image affine")


def mask_suffix(path: str | os.PathLike) -> str:
    """The suffix of the mask written for input ``path``: the input's format family.

    NIfTI stays ``.nii.gz``, NRRD ``.nrrd``, TIFF (2D or a stack) ``.tif``; a DICOM series
    (a folder) or file becomes ``.nii.gz`` (it keeps the affine); other 2D images ``.png``.

    Examples
    --------
    >>> [mask_suffix(p) for p in ("a.nii", "b.nrrd", "c.TIFF", "d.jpg", "e.dcm")]
    ['.nii.gz', '.nrrd', '.tif', '.png', '.nii.gz']
    """
    p = Path(path)
    name = p.name.lower()
    if name.endswith((".nii", ".nii.gz", ".dcm")) or p.is_dir():
        return ".nii.gz"
    if name.endswith((".nrrd", ".nhdr")):
        return ".nrrd"
    if name.endswith((".tif", ".tiff")):
        return ".tif"
    return ".png"


def output_paths(
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    suffix: Callable[[Path], str],
) -> list[Path]:
    """One output per input: ``out`` itself for a single input when it names a file (it
    has a suffix and is not a folder), else ``out/<stem><suffix(input)>``.

    Raises
    ------
    ValueError
        ``out`` is something other than a regular file or a folder (a device, say); several
        inputs and ``out`` a file, or a name that looks like one (``masks.png``) rather than
        a folder; two inputs with the same stem (their outputs would overwrite each other).
    """
    paths = [Path(p) for p in inputs]
    out = Path(out)
    if out.exists() and not (out.is_dir() or out.is_file()):
        raise ValueError(f"{out}: is neither a regular file nor a folder")
    if len(paths) == 1 and out.suffix and not out.is_dir():
        return [out]
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: with several inputs the output must be a folder")
    if len(paths) > 1 and out.suffix and not out.exists():
        raise ValueError(
            f"{out}: looks like a file name, but with {len(paths)} inputs the output is a "
            "folder; give a folder name"
        )
    stems = [case_stem(p) for p in paths]
    if len(set(stems)) != len(stems):
        dup = next(s for s in stems if stems.count(s) > 1)
        raise ValueError(f"two inputs share the name {dup!r}; outputs would overwrite each other")
    return [out / f"{s}{suffix(p)}" for s, p in zip(stems, paths, strict=True)]
