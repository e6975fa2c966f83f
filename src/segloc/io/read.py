"""Readers: PNG/JPEG/BMP/TIFF (multi-page = 3D), NIfTI, NRRD, DICOM files and series."""

from __future__ import annotations

import gzip
import os
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from segloc.color import to_grey
from segloc.io.formats import (
    _LPS_TO_RAS,
    _NRRD_SPACE_SIGNS,
    _PILLOW_FORMATS,
    ImageMeta,
    ImageReadError,
    _format_of,
    _library_error,
    _suffix,
)


def read_image(path: str | os.PathLike, *, as_gray: bool = False) -> tuple[np.ndarray, ImageMeta]:
    """Read a 2D image, a volume or a DICOM series.

    Parameters
    ----------
    path : str or path-like
        PNG, JPEG, BMP, TIFF (8/16-bit; several pages -> ``(rows, cols, pages)``),
        NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``, ``.nhdr``), a DICOM file, or a
        folder holding one DICOM series (-> ``(rows, cols, slices)``). The format comes
        from the suffix, then from the first bytes when the suffix is unknown.
    as_gray : bool, optional
        Convert a colour 2D image to luminance ``0.2125 R + 0.7154 G + 0.0721 B`` (alpha
        dropped) as float64 in [0, 1], like ``skimage.io.imread(as_gray=True)``;
        grey images and volumes are returned unchanged.

    Returns
    -------
    image : ndarray
        Pixel values in the stored dtype (NIfTI: as nibabel's ``dataobj`` gives them,
        scaling applied; DICOM: RescaleSlope/Intercept applied).
    meta : ImageMeta
        Format, spacing per spatial axis, affine (index -> RAS+ mm) when known.

    Raises
    ------
    ImageReadError
        Missing file, unknown format, corrupt or truncated file, an image above
        Pillow's ``Image.MAX_IMAGE_PIXELS`` (decompression bomb), an empty folder or
        one holding several DICOM series; the message starts with the path.

    References
    ----------
    .. [1] NIfTI-1 data format, https://nifti.nimh.nih.gov/nifti-1
    .. [2] Definition of NRRD file format, https://teem.sourceforge.net/nrrd/format.html
    .. [3] DICOM PS3.3 C.7.6.2.1.1 (Image Position and Image Orientation) and C.11.1
           (Modality LUT: RescaleSlope/Intercept), https://dicom.nema.org/medical/dicom/current/

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from segloc import io
    >>> d = tempfile.mkdtemp()
    >>> _ = io.write_image(f"{d}/a.png", np.array([[0, 7]], np.uint8))
    >>> image, meta = io.read_image(f"{d}/a.png")
    >>> image.tolist(), meta.format, meta.spacing
    ([[0, 7]], 'png', (1.0, 1.0))
    """
    image, meta = _read(Path(path))
    if as_gray and meta.is_colour:
        image = to_grey(image)
    return image, meta


def _read(path: Path, *, palette_indices: bool = False) -> tuple[np.ndarray, ImageMeta]:
    if not path.exists():
        raise ImageReadError(f"{path}: no such file or directory")
    fmt = _format_of(path)
    readers: dict[str, Callable[..., tuple[np.ndarray, ImageMeta]]] = {
        "nifti": _read_nifti,
        "nrrd": _read_nrrd,
        "dicom": _read_dicom_series if path.is_dir() else _read_dicom_file,
        "tiff": _read_tiff,
    }
    try:
        if fmt in readers:
            return readers[fmt](path)
        return _read_pillow(path, palette_indices=palette_indices)
    except ImageReadError:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # every library has its own exceptions; keep the path
        raise _library_error(path, exc) from exc


def _pillow_open(path: Path):
    from PIL import Image

    # Pillow only warns between MAX_IMAGE_PIXELS and twice that; a bomb is an error here
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(path)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageReadError(
                f"{path}: image too large (decompression bomb guard: {exc})"
            ) from exc
        try:
            im.load()
        except BaseException:
            im.close()  # a truncated file would otherwise stay open
            raise
    return im


def _pillow_to_array(im, *, palette_indices: bool) -> tuple[np.ndarray, dict]:
    mode = im.mode
    header: dict[str, Any] = {"mode": mode}
    if mode == "P" and palette_indices:
        arr = np.asarray(im)  # the indices: VOC-style label maps store labels this way
    elif mode in ("P", "PA"):
        im = im.convert("RGBA" if "transparency" in im.info or mode == "PA" else "RGB")
        arr = np.asarray(im)
    elif mode == "1":
        arr = np.asarray(im.convert("L"))
    elif mode in ("LA", "La"):
        arr = np.asarray(im.getchannel(0))  # the alpha of a grey image carries no pixel value
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa"):
        arr = np.asarray(im.convert("RGB"))
    elif mode.startswith("I;16"):
        arr = np.asarray(im).astype(np.uint16)  # native byte order for big-endian variants
    else:
        arr = np.asarray(im)
    if arr.ndim == 3:
        header["channels"] = arr.shape[-1]
    header["dtype"] = str(arr.dtype)
    return np.array(arr), header


def _read_pillow(path: Path, *, palette_indices: bool = False) -> tuple[np.ndarray, ImageMeta]:
    im = _pillow_open(path)
    with im:
        fmt = _PILLOW_FORMATS.get(im.format or "")
        if fmt is None:
            raise ImageReadError(f"{path}: unsupported image format {im.format}")
        n_frames = getattr(im, "n_frames", 1)
        if fmt == "tiff" and n_frames > 1:
            pages = []
            for i in range(n_frames):
                im.seek(i)
                pages.append(_pillow_to_array(im, palette_indices=False)[0])
            return _stack_pages(pages, path, {"pages": n_frames, "mode": im.mode})
        arr, header = _pillow_to_array(im, palette_indices=palette_indices)
    return arr, ImageMeta(str(path), fmt, (1.0, 1.0), None, header)


def _stack_pages(pages: list[np.ndarray], path: Path, header: dict) -> tuple[np.ndarray, ImageMeta]:
    shapes = {p.shape for p in pages}
    if len(shapes) > 1:
        raise ImageReadError(f"{path}: TIFF pages differ in shape {sorted(shapes)}")
    if pages[0].ndim != 2:
        raise ImageReadError(f"{path}: colour TIFF stacks are not supported (colour volumes)")
    arr = np.stack(pages, axis=-1)  # (rows, cols, pages)
    header = {**header, "dtype": str(arr.dtype)}
    return arr, ImageMeta(str(path), "tiff", (1.0, 1.0, 1.0), None, header)


def _read_tiff(path: Path) -> tuple[np.ndarray, ImageMeta]:
    import tifffile
    from PIL import Image

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        limit = Image.MAX_IMAGE_PIXELS
        # same guard per page as Pillow's, so a TIFF is no easier a bomb than a PNG
        if limit is not None and page.shape[0] * page.shape[1] > limit:
            raise ImageReadError(
                f"{path}: image too large ({page.shape[0]}x{page.shape[1]} pixels per page "
                f"> PIL.Image.MAX_IMAGE_PIXELS = {limit})"
            )
        n_pages = len(tif.pages)
        try:
            series = [s.asarray() for s in tif.series]
            axes = [s.axes for s in tif.series]
            photometric = page.photometric
        except ValueError as exc:
            if "imagecodecs" not in str(exc):
                raise
            series = None  # a compression tifffile cannot decode alone (LZW, JPEG): Pillow can
    if series is None:
        return _read_pillow(path)
    colour = photometric in (tifffile.PHOTOMETRIC.RGB, tifffile.PHOTOMETRIC.YCBCR)
    pages: list[np.ndarray] = []
    for arr, ax in zip(series, axes, strict=True):
        if "S" in ax and colour:
            arr = np.moveaxis(arr, ax.index("S"), -1)  # planar RGB -> (..., rows, cols, 3)
            pages.extend(arr.reshape(-1, *arr.shape[-3:]))
        elif "S" in ax:
            raise ImageReadError(f"{path}: unsupported TIFF layout (axes {ax!r})")
        else:
            pages.extend(arr.reshape(-1, *arr.shape[-2:]))
    header = {"pages": n_pages, "dtype": str(pages[0].dtype)}
    if len(pages) > 1:
        return _stack_pages(pages, path, header)
    arr = pages[0]
    if arr.ndim == 3:
        header["channels"] = arr.shape[-1]
    return arr, ImageMeta(str(path), "tiff", (1.0, 1.0), None, header)


def _positive_spacing(values: Iterable[float]) -> tuple[float, ...]:
    # unset zooms/spacings are stored as 0 or NaN; 1.0 keeps distances in voxel units
    return tuple(float(v) if np.isfinite(v) and v > 0 else 1.0 for v in values)


def _read_nifti(path: Path) -> tuple[np.ndarray, ImageMeta]:
    import nibabel as nib

    if _suffix(path) in (".nii", ".nii.gz"):
        img = nib.load(path)
    else:  # nibabel picks its reader from the suffix; give it the bytes instead
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        cls = nib.Nifti2Image if raw[4:8] == b"n+2\x00" else nib.Nifti1Image
        img = cls.from_bytes(raw)
    arr = np.asarray(img.dataobj)
    spacing = _positive_spacing(img.header.get_zooms()[: arr.ndim])
    header = {
        "dtype": str(img.get_data_dtype()),
        "qform_code": int(img.header["qform_code"]),
        "sform_code": int(img.header["sform_code"]),
    }
    return arr, ImageMeta(str(path), "nifti", spacing, np.array(img.affine, float), header)


def _read_nrrd(path: Path) -> tuple[np.ndarray, ImageMeta]:
    import nrrd

    # index_order "F": first array index = first NRRD axis (x), as nibabel does for NIfTI
    arr, hdr = nrrd.read(str(path), index_order="F")
    arr = np.asarray(arr)
    spacing = (1.0,) * arr.ndim
    affine = None
    directions = hdr.get("space directions")
    if directions is not None:
        directions = np.array(
            [[np.nan] * 3 if d is None else d for d in directions], dtype=float
        ).reshape(arr.ndim, -1)
        spacing = _positive_spacing(np.linalg.norm(directions, axis=1))
        space = str(hdr.get("space", "")).lower()
        if (
            space in _NRRD_SPACE_SIGNS
            and arr.ndim == 3
            and directions.shape[1] == 3
            and np.isfinite(directions).all()
        ):
            affine = np.eye(4)
            affine[:3, :3] = directions.T  # column j = world step of array axis j
            affine[:3, 3] = np.asarray(hdr.get("space origin", np.zeros(3)), float)
            affine = np.diag([*_NRRD_SPACE_SIGNS[space], 1.0]) @ affine
    elif hdr.get("spacings") is not None:
        spacing = _positive_spacing(hdr["spacings"])
    header = {"dtype": str(arr.dtype), "nrrd": {k: v for k, v in hdr.items() if k != "data file"}}
    return arr, ImageMeta(str(path), "nrrd", spacing, affine, header)


def _dicom_pixels(ds) -> np.ndarray:
    arr = ds.pixel_array
    slope = float(getattr(ds, "RescaleSlope", 1) or 1)
    intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
    if slope == 1 and intercept == 0:
        return arr
    values = arr * slope + intercept
    if slope.is_integer() and intercept.is_integer():
        return values.astype(np.int32)
    return values.astype(np.float32)


def _read_dicom_file(path: Path) -> tuple[np.ndarray, ImageMeta]:
    import pydicom

    ds = pydicom.dcmread(path)
    arr = _dicom_pixels(ds)
    if int(getattr(ds, "SamplesPerPixel", 1)) > 1 and arr.ndim == 4:
        raise ImageReadError(f"{path}: colour DICOM volumes are not supported")
    spacing = _positive_spacing([float(v) for v in getattr(ds, "PixelSpacing", [1.0, 1.0])])
    header = {"dtype": str(ds.pixel_array.dtype), "modality": str(getattr(ds, "Modality", ""))}
    if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
        arr = np.moveaxis(arr, 0, -1)  # (frames, rows, cols) -> (rows, cols, frames)
        step = getattr(ds, "SpacingBetweenSlices", None) or getattr(ds, "SliceThickness", None)
        spacing = (*spacing, *_positive_spacing([float(step or 1.0)]))
    elif arr.ndim == 3:
        header["channels"] = arr.shape[-1]
    return arr, ImageMeta(str(path), "dicom", spacing, None, header)


def _read_dicom_series(folder: Path) -> tuple[np.ndarray, ImageMeta]:
    import pydicom
    from pydicom.errors import InvalidDicomError

    datasets = []
    for f in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        if f.name.upper() == "DICOMDIR":
            continue
        try:
            datasets.append((f, pydicom.dcmread(f)))
        except InvalidDicomError:
            continue  # notes, thumbnails ... beside the slices
    datasets = [(f, ds) for f, ds in datasets if "PixelData" in ds]
    if not datasets:
        raise ImageReadError(f"{folder}: no DICOM image files in this folder")
    uids = sorted({str(getattr(ds, "SeriesInstanceUID", "")) for _, ds in datasets})
    if len(uids) > 1:
        raise ImageReadError(
            f"{folder}: mixed series ({len(uids)} SeriesInstanceUIDs: {', '.join(uids[:3])}"
            f"{' ...' if len(uids) > 3 else ''}); put each series in its own folder"
        )
    first = datasets[0][1]
    try:
        orient = np.array([float(v) for v in first.ImageOrientationPatient])
    except AttributeError:
        raise ImageReadError(f"{folder}: DICOM files lack ImageOrientationPatient") from None
    row_cos, col_cos = orient[:3], orient[3:]
    normal = np.cross(row_cos, col_cos)
    shapes = {(int(ds.Rows), int(ds.Columns)) for _, ds in datasets}
    if len(shapes) > 1:
        raise ImageReadError(f"{folder}: slices differ in size {sorted(shapes)}")
    for f, ds in datasets:
        other = np.array([float(v) for v in ds.ImageOrientationPatient])
        if not np.allclose(other, orient, atol=1e-4):
            raise ImageReadError(f"{f}: ImageOrientationPatient differs from the other slices")
    # slice order = position along the slice normal (C.7.6.2.1.1), not file or instance order
    positions = [np.array([float(v) for v in ds.ImagePositionPatient]) for _, ds in datasets]
    along = np.array([p @ normal for p in positions])
    order = np.argsort(along, kind="stable")
    along = along[order]
    if len(along) > 1 and np.min(np.diff(along)) < 1e-6:
        i = int(np.argmin(np.diff(along)))
        raise ImageReadError(
            f"{folder}: two slices share a position ({datasets[order[i]][0].name}, "
            f"{datasets[order[i + 1]][0].name})"
        )
    slices = [_dicom_pixels(datasets[i][1]) for i in order]
    if slices[0].ndim != 2:
        raise ImageReadError(f"{folder}: colour or multi-frame DICOM series are not supported")
    dtypes = {s.dtype for s in slices}
    dtype = np.result_type(*dtypes)
    vol = np.stack([s.astype(dtype, copy=False) for s in slices], axis=-1)  # (rows, cols, slices)
    # PixelSpacing = (between rows, between columns) = (axis 0, axis 1)
    pix = [float(v) for v in getattr(first, "PixelSpacing", [1.0, 1.0])]
    if len(along) > 1:
        steps = np.diff(along)
        step = float(np.mean(steps))
        if np.ptp(steps) > 1e-3 * max(step, 1e-6) + 1e-4:
            warnings.warn(
                f"{folder}: slice spacing is not uniform ({steps.min():.4g}..{steps.max():.4g} mm);"
                f" using the mean {step:.4g} mm",
                UserWarning,
                stacklevel=4,
            )
    else:
        step = float(
            getattr(first, "SpacingBetweenSlices", None)
            or getattr(first, "SliceThickness", None)
            or 1.0
        )
    spacing = _positive_spacing([pix[0], pix[1], step])
    lps = np.eye(4)
    lps[:3, 0] = col_cos * spacing[0]  # moving down a column = next row
    lps[:3, 1] = row_cos * spacing[1]  # moving along a row = next column
    lps[:3, 2] = normal * spacing[2]
    lps[:3, 3] = positions[order[0]]
    header = {
        "dtype": str(datasets[0][1].pixel_array.dtype),
        "files": [datasets[i][0].name for i in order],
        "series_uid": uids[0],
        "modality": str(getattr(first, "Modality", "")),
    }
    return vol, ImageMeta(str(folder), "dicom", spacing, _LPS_TO_RAS @ lps, header)


def describe(path: str | os.PathLike) -> dict[str, Any]:
    """What ``segloc info`` shows of a file: format, shape, dtype, spacing, affine, value
    range (finite values) and, for at most 32 distinct values, their pixel counts."""
    image, meta = read_image(path)
    arr = np.asarray(image)
    finite = arr[np.isfinite(arr)] if np.issubdtype(arr.dtype, np.floating) else arr
    doc: dict[str, Any] = {
        "file": str(path),
        "format": meta.format,
        "shape": tuple(arr.shape),
        "dtype": str(arr.dtype),
        "channels": meta.header.get("channels"),
        "spacing": tuple(round(float(s), 6) for s in meta.spacing),
        "affine": None if meta.affine is None else np.asarray(meta.affine),
        "range": (finite.min(), finite.max()) if finite.size else None,
        "values": None,
    }
    if arr.size <= 50_000_000:
        values, counts = np.unique(arr, return_counts=True)
        doc["values"] = (
            dict(zip(values.tolist(), counts.tolist(), strict=True))
            if values.size <= 32
            else int(values.size)
        )
    return doc
