"""Writers of images, volumes and masks, atomic; the format comes from the suffix."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from segloc._validation import atomic_path
from segloc.io.errors import ImageReadError, UnsupportedFormat
from segloc.io.formats import (
    _LPS_TO_RAS,
    _SUFFIXES,
    ImageMeta,
    _suffix,
)


def _write_format(path: Path) -> str:
    fmt = _SUFFIXES.get(_suffix(path))
    if fmt is None or fmt == "dicom" or _suffix(path) == ".nhdr":
        raise UnsupportedFormat(
            path,
            f"cannot choose a format for writing from the suffix {_suffix(path)!r}; "
            "use .png, .jpg, .bmp, .tif, .nii, .nii.gz or .nrrd",
        )
    return fmt


def _affine_for(meta: ImageMeta | None, ndim: int) -> np.ndarray:
    if meta is not None and meta.affine is not None:
        affine = np.asarray(meta.affine, dtype=float)
        if affine.shape != (4, 4):
            raise ValueError(f"meta.affine must be 4x4, got shape {affine.shape}")
        return affine
    spacing = (1.0,) * 3
    if meta is not None and len(meta.spacing) >= min(ndim, 3):
        spacing = (*tuple(meta.spacing)[:3], 1.0, 1.0)[:3]
    return np.diag([*spacing, 1.0])


def _save_pillow(tmp: Path, arr: np.ndarray, fmt: str) -> None:
    from PIL import Image

    options = {"quality": 95} if fmt == "jpeg" else {}
    Image.fromarray(np.ascontiguousarray(arr)).save(tmp, format=fmt.upper(), **options)


def _save_tiff(tmp: Path, arr: np.ndarray, colour: bool) -> None:
    import tifffile

    if colour:
        tifffile.imwrite(tmp, arr, photometric="rgb")
    elif arr.ndim == 3:
        # one page per slice; minisblack stops tifffile from reading 3 pages as RGB
        tifffile.imwrite(tmp, np.moveaxis(arr, -1, 0), photometric="minisblack")
    else:
        tifffile.imwrite(tmp, arr, photometric="minisblack")


def _save_nifti(tmp: Path, arr: np.ndarray, meta: ImageMeta | None) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(arr, _affine_for(meta, arr.ndim))
    img.header.set_xyzt_units("mm")
    nib.save(img, tmp)


def _save_nrrd(tmp: Path, arr: np.ndarray, meta: ImageMeta | None) -> None:
    import nrrd

    header: dict[str, Any] = {"encoding": "gzip"}
    if arr.ndim == 3:
        lps = _LPS_TO_RAS @ _affine_for(meta, 3)  # RAS+ -> the LPS space ITK/Slicer expect
        header["space"] = "left-posterior-superior"
        header["space directions"] = lps[:3, :3].T
        header["space origin"] = lps[:3, 3]
    else:
        spacing = meta.spacing if meta is not None else (1.0,) * arr.ndim
        header["spacings"] = np.array((*spacing, 1.0, 1.0)[: arr.ndim], float)
    nrrd.write(str(tmp), np.asarray(arr), header, index_order="F")


def _check_dtype(path: Path, arr: np.ndarray, fmt: str, colour: bool, what: str) -> None:
    allowed = {
        "png": ("uint8",) if colour else ("uint8", "uint16"),
        "jpeg": ("uint8",),
        "bmp": ("uint8",),
        "tiff": ("uint8",)
        if colour
        else ("uint8", "uint16", "int8", "int16", "uint32", "int32", "float32", "float64"),
        "nifti": ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64"),
        "nrrd": (
            "uint8",
            "int8",
            "uint16",
            "int16",
            "uint32",
            "int32",
            "uint64",
            "int64",
            "float32",
            "float64",
        ),
    }[fmt]
    if str(arr.dtype) not in allowed:
        raise ImageReadError(
            f"{path}: {fmt.upper()} cannot store {'colour ' if colour else ''}{what} of dtype "
            f"{arr.dtype}; use one of {', '.join(allowed)}"
        )


def _write(path: Path, arr: np.ndarray, meta: ImageMeta | None, fmt: str, what: str) -> Path:
    colour = (
        arr.ndim == 3
        and arr.shape[-1] in (3, 4)
        and (fmt in ("png", "jpeg", "bmp") or (fmt == "tiff" and arr.dtype == np.uint8))
    )
    if fmt in ("png", "jpeg", "bmp") and arr.ndim != 2 and not colour:
        raise ImageReadError(
            f"{path}: {fmt.upper()} holds 2D images, got shape {arr.shape}; use .tif or .nii.gz"
        )
    if fmt in ("jpeg", "bmp") and colour and arr.shape[-1] == 4:
        raise ImageReadError(f"{path}: {fmt.upper()} cannot store an alpha channel")
    _check_dtype(path, arr, fmt, colour, what)
    if arr.ndim not in (2, 3):
        raise ImageReadError(f"{path}: {what} must be 2D or 3D, got shape {arr.shape}")
    writers: dict[str, Callable[[Path], None]] = {
        "png": lambda tmp: _save_pillow(tmp, arr, "png"),
        "jpeg": lambda tmp: _save_pillow(tmp, arr, "jpeg"),
        "bmp": lambda tmp: _save_pillow(tmp, arr, "bmp"),
        "tiff": lambda tmp: _save_tiff(tmp, arr, colour),
        "nifti": lambda tmp: _save_nifti(tmp, arr, meta),
        "nrrd": lambda tmp: _save_nrrd(tmp, arr, meta),
    }
    with atomic_path(path) as tmp:
        writers[fmt](tmp)
    return path


def write_image(path: str | os.PathLike, image: Any, *, meta: ImageMeta | None = None) -> Path:
    """Write an image or a volume; the format comes from the suffix. Atomic.

    Parameters
    ----------
    path : str or path-like
        ``.png`` (uint8 grey/RGB/RGBA, uint16 grey), ``.jpg`` (uint8 grey/RGB, quality
        95), ``.bmp`` (uint8), ``.tif`` (one page per slice for ``(rows, cols, slices)``;
        ``(rows, cols, 3|4)`` uint8 is RGB(A)), ``.nii``/``.nii.gz`` and
        ``.nrrd`` (numeric dtypes; bool becomes uint8).
    image : array-like
        2D image, colour image or 3D volume.
    meta : ImageMeta, optional
        ``meta.affine`` (index -> RAS+ mm) for NIfTI/NRRD; without it, ``diag(spacing)``
        from ``meta.spacing``, else identity.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ImageReadError
        Unknown suffix, or a dtype or shape the format cannot hold (message starts with
        the path). The target is untouched when writing fails.

    References
    ----------
    .. [1] NIfTI-1 data format, https://nifti.nimh.nih.gov/nifti-1
    .. [2] Definition of NRRD file format, https://teem.sourceforge.net/nrrd/format.html
    """
    path = Path(path)
    fmt = _write_format(path)
    arr = np.asarray(image)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * (255 if fmt in ("png", "jpeg", "bmp", "tiff") else 1)
    return _write(path, arr, meta, fmt, "image")


def _smallest_label_dtype(arr: np.ndarray, fmt: str, path: Path) -> np.ndarray:
    if arr.size == 0:
        return arr.astype(np.uint8)
    lo, hi = arr.min(), arr.max()
    if lo < 0:
        raise ImageReadError(f"{path}: mask labels must be >= 0, got {lo}")
    if hi <= 255:
        return arr.astype(np.uint8)
    if fmt in ("png", "tiff", "jpeg", "bmp"):
        if hi > 65535:
            raise ImageReadError(
                f"{path}: {fmt.upper()} label maps hold labels <= 65535, got {hi}; "
                "use .nii.gz or .nrrd"
            )
        if fmt in ("jpeg", "bmp"):
            raise ImageReadError(f"{path}: {fmt.upper()} label maps hold labels <= 255, got {hi}")
        return arr.astype(np.uint16)
    if hi <= np.iinfo(np.int16).max:
        return arr.astype(np.int16)
    return arr.astype(np.int32)


def write_mask(path: str | os.PathLike, mask: Any, *, meta: ImageMeta | None = None) -> Path:
    """Write a ``bool`` mask or an integer label map; the format comes from the suffix. Atomic.

    ``bool`` masks become 0/255 uint8 in PNG/TIFF/BMP (what viewers show) and 0/1 uint8 in
    NIfTI/NRRD (what medical tools expect). Label maps use the smallest type that holds
    them: uint8 up to 255, then uint16 in PNG/TIFF (above 65535 is an error) and
    int16/int32 in NIfTI/NRRD. JPEG is refused: it would change the labels.

    Parameters
    ----------
    path : str or path-like
        ``.png``, ``.bmp``, ``.tif``, ``.nii``, ``.nii.gz`` or ``.nrrd``.
    mask : array-like
        ``bool`` or whole-number labels >= 0, 2D or 3D.
    meta : ImageMeta, optional
        Geometry for NIfTI/NRRD, as in :func:`write_image`.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ImageReadError
        Unknown suffix, JPEG, negative or fractional labels, labels beyond the format.

    References
    ----------
    .. [1] NIfTI-1 data format, https://nifti.nimh.nih.gov/nifti-1
    """
    path = Path(path)
    fmt = _write_format(path)
    if fmt == "jpeg":
        raise ImageReadError(f"{path}: masks cannot be saved as JPEG (lossy); use .png")
    arr = np.asarray(mask)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * (1 if fmt in ("nifti", "nrrd") else 255)
    else:
        if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
            raise ImageReadError(f"{path}: mask must be bool or integer labels, got {arr.dtype}")
        if np.issubdtype(arr.dtype, np.floating) and not (
            np.isfinite(arr).all() and np.array_equal(arr, np.round(arr))
        ):
            raise ImageReadError(f"{path}: mask labels must be whole numbers")
        arr = _smallest_label_dtype(arr, fmt, path)
    if arr.ndim == 3 and fmt in ("png", "bmp"):
        raise ImageReadError(f"{path}: {fmt.upper()} holds 2D masks, got shape {arr.shape}")
    if arr.ndim == 3 and fmt == "tiff":
        # a (rows, cols, 3) label volume must not be taken for RGB
        return _write_mask_tiff_volume(path, arr)
    return _write(path, arr, meta, fmt, "mask")


def _write_mask_tiff_volume(path: Path, arr: np.ndarray) -> Path:
    with atomic_path(path) as tmp:
        _save_tiff(tmp, arr, colour=False)
    return path


def write_csv(
    path: str | os.PathLike, rows: Iterable[Mapping[str, Any]], *, missing: Any = ""
) -> Path:
    """Write one CSV row per dict, atomically.

    Columns are the union of the rows' keys in first-seen order; floats are written with
    six significant digits (``f"{v:.6g}"``); a key a row lacks is written as ``missing``.

    Examples
    --------
    >>> import tempfile; p = Path(tempfile.mkdtemp()) / "t.csv"
    >>> print(write_csv(p, [{"a": 1, "b": 0.1234567}, {"a": 2, "c": "x"}]).read_text())
    a,b,c
    1,0.123457,
    2,,x
    <BLANKLINE>
    """
    import csv
    import io as _io

    rows = list(rows)
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]

    def cell(v: Any) -> Any:
        return f"{v:.6g}" if isinstance(v, float) else v

    text = _io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: cell(row.get(k, missing)) for k in columns})
    with atomic_path(path) as tmp:
        tmp.write_text(text.getvalue())
    return Path(path)
