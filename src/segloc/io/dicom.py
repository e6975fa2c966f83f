"""DICOM files and series through pydicom, every header checked before any pixel is decoded."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segloc.io.checks import _check_affine, _header_checked, _Options, _spacing, _truncated
from segloc.io.errors import (
    CorruptFile,
    SeglocIOError,
    UnsupportedFormat,
    is_os_error,
)
from segloc.io.formats import (
    _LPS_TO_RAS,
    ImageMeta,
    _library_error,
)


def _dcm_number(path: Path, ds, name: str, default: float | None) -> float | None:
    value = ds.get(name)
    if value is None or value == "":
        return default
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise CorruptFile(path, f"DICOM {name} is {value!r} (must be a number)") from None
    if not np.isfinite(out):
        raise CorruptFile(path, f"DICOM {name} is {out} (must be finite)")
    return out


def _dcm_int(path: Path, ds, name: str, default: int | None, minimum: int = 1) -> int:
    value = ds.get(name)
    if value is None or value == "":
        if default is None:
            raise CorruptFile(path, f"DICOM file lacks {name}")
        return default
    try:
        out = int(value)
    except (TypeError, ValueError):
        raise CorruptFile(path, f"DICOM {name} is {value!r} (must be an integer)") from None
    if out < minimum:
        raise CorruptFile(path, f"DICOM {name} is {out} (must be >= {minimum})")
    return out


@dataclass
class _DicomDeclared:
    rows: int
    cols: int
    frames: int
    samples: int
    out_itemsize: int
    data_bytes: int | None  # native pixel data: bytes it must have; None if compressed


def _dicom_declared(path: Path, ds) -> _DicomDeclared:
    if "PixelData" not in ds:
        raise CorruptFile(path, "DICOM file holds no pixel data")
    rows = _dcm_int(path, ds, "Rows", None)
    cols = _dcm_int(path, ds, "Columns", None)
    frames = _dcm_int(path, ds, "NumberOfFrames", 1)
    samples = _dcm_int(path, ds, "SamplesPerPixel", 1)
    bits = _dcm_int(path, ds, "BitsAllocated", None)
    if bits not in (1, 8, 16, 32, 64):
        raise CorruptFile(path, f"DICOM BitsAllocated is {bits} (must be 1, 8, 16, 32 or 64)")
    if samples not in (1, 3):
        raise UnsupportedFormat(path, f"DICOM SamplesPerPixel {samples} is not read")
    slope = _dcm_number(path, ds, "RescaleSlope", 1.0)
    intercept = _dcm_number(path, ds, "RescaleIntercept", 0.0)
    rescaled = not (slope in (None, 0.0, 1.0) and intercept in (None, 0.0))
    out_itemsize = max(-(-bits // 8), 4 if rescaled else 1)
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    compressed = bool(syntax is not None and getattr(syntax, "is_compressed", False))
    data_bytes = None if compressed else -(-(rows * cols * frames * samples * bits) // 8)
    return _DicomDeclared(rows, cols, frames, samples, out_itemsize, data_bytes)


def _dcmread(path: Path):
    """The dataset with its pixel data left in the file until it is decoded."""
    import pydicom

    return pydicom.dcmread(path, defer_size=4096)


def _dicom_pixel_bytes(path: Path, ds, declared: _DicomDeclared, opts: _Options) -> dict | None:
    """Check that the pixel data element holds the declared bytes (native syntaxes)."""
    if declared.data_bytes is None:
        return None
    elem = ds.get_item("PixelData", keep_deferred=True)
    length = getattr(elem, "length", None)
    tell = getattr(elem, "value_tell", None)
    if length is None or tell is None or length == 0xFFFFFFFF:
        return None
    present = min(length, max(0, path.stat().st_size - tell))
    if present >= declared.data_bytes:
        return None
    note = _truncated(path, opts, needed=declared.data_bytes, present=present, what="pixel bytes")
    with open(path, "rb") as f:
        f.seek(tell)
        data = f.read(present)
    ds.PixelData = data + bytes(declared.data_bytes - len(data))
    return note


def _dicom_pixels(path: Path, ds) -> tuple[np.ndarray, np.dtype]:
    """Pixels with RescaleSlope/Intercept applied, and the stored dtype."""
    try:
        arr = ds.pixel_array
    except (NotImplementedError, RuntimeError) as exc:
        text = str(exc).lower()
        if any(
            k in text for k in ("handler", "plugin", "decoder", "not supported", "unable to decode")
        ):
            syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "?")
            raise UnsupportedFormat(
                path, f"DICOM transfer syntax {syntax} needs a decoder that is not installed"
            ) from None
        raise
    slope = _dcm_number(path, ds, "RescaleSlope", 1.0) or 1.0
    intercept = _dcm_number(path, ds, "RescaleIntercept", 0.0) or 0.0
    if slope == 1 and intercept == 0:
        return arr, arr.dtype
    values = arr * slope + intercept
    if slope.is_integer() and intercept.is_integer():
        return values.astype(np.int32), arr.dtype
    return values.astype(np.float32), arr.dtype


def _dicom_spacing(path: Path, ds, n: int = 2) -> list[float]:
    values = ds.get("PixelSpacing")
    if values is None or values == "":
        return [1.0] * n
    try:
        pix = (
            [float(v) for v in values] if not isinstance(values, (str, float)) else [float(values)]
        )
    except (TypeError, ValueError):
        raise CorruptFile(path, f"DICOM PixelSpacing is {values!r} (must be two numbers)") from None
    if len(pix) != 2:
        raise CorruptFile(path, f"DICOM PixelSpacing has {len(pix)} values (must be 2)")
    for v in pix:
        if not (np.isfinite(v) and v > 0):
            raise CorruptFile(path, f"DICOM PixelSpacing is {pix} (must be finite and > 0)")
    return pix


def _read_dicom_file(path: Path, opts: _Options) -> tuple[np.ndarray, ImageMeta]:
    ds = _dcmread(path)
    d = _dicom_declared(path, ds)
    voxels = d.rows * d.cols * d.frames
    opts.limits.check(
        path,
        voxels,
        voxels * d.samples * d.out_itemsize,
        detail=f"{d.rows}x{d.cols} x {d.frames} frames x {d.samples} samples",
    )
    spacing = _dicom_spacing(path, ds)
    note = _dicom_pixel_bytes(path, ds, d, opts)
    shape = (d.rows, d.cols, d.frames) if d.frames > 1 else (d.rows, d.cols)
    _header_checked(
        opts, "dicom", shape, channels=d.samples, nbytes=voxels * d.samples * d.out_itemsize
    )
    arr, stored = _dicom_pixels(path, ds)
    if d.samples > 1 and arr.ndim == 4:
        raise UnsupportedFormat(path, "colour DICOM volumes are not supported")
    header: dict[str, Any] = {"dtype": str(stored), "modality": str(ds.get("Modality", ""))}
    if d.frames > 1:
        arr = np.moveaxis(arr, 0, -1)  # (frames, rows, cols) -> (rows, cols, frames)
        step = _dcm_number(path, ds, "SpacingBetweenSlices", None) or _dcm_number(
            path, ds, "SliceThickness", None
        )
        spacing = [*spacing, *_spacing(path, [step or 1.0], [d.frames], what="slice spacing")]
    elif arr.ndim == 3:
        header["channels"] = arr.shape[-1]
    if note is not None:
        header["truncated"] = note
    return arr, ImageMeta(str(path), "dicom", tuple(spacing), None, header)


def _dcm_vector(path: Path, ds, name: str, n: int) -> np.ndarray:
    value = ds.get(name)
    if value is None or value == "":
        raise CorruptFile(path, f"DICOM file lacks {name}")
    try:
        vec = np.array([float(v) for v in value], dtype=float)
    except (TypeError, ValueError):
        raise CorruptFile(path, f"DICOM {name} is {value!r} (must be {n} numbers)") from None
    if vec.shape != (n,) or not np.isfinite(vec).all():
        raise CorruptFile(path, f"DICOM {name} is {vec.tolist()} (must be {n} finite numbers)")
    return vec


def _series_datasets(folder: Path) -> tuple[list, str]:
    """The image slices of a DICOM series folder (headers only) and its series UID."""
    from pydicom.errors import InvalidDicomError

    datasets = []
    for f in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        if f.name.upper() == "DICOMDIR":
            continue
        try:
            ds = _dcmread(f)
        except InvalidDicomError:
            if f.suffix.lower() == ".dcm":  # a slice by its name: losing it would go unnoticed
                raise CorruptFile(
                    f, "cannot read (not a DICOM file, or cut before its header)"
                ) from None
            continue  # notes, thumbnails ... beside the slices
        except SeglocIOError:
            raise
        except OSError as exc:
            if is_os_error(exc):
                raise
            raise _library_error(f, exc) from exc
        except Exception as exc:  # a slice pydicom cannot parse: name that file
            raise _library_error(f, exc) from exc
        if "PixelData" in ds:
            datasets.append((f, ds))
        elif "Rows" in ds or "Columns" in ds:
            # an image slice cut before its pixel data; other objects (reports) have no Rows
            raise CorruptFile(f, "cannot read: truncated, image attributes but no pixel data")
    if not datasets:
        raise CorruptFile(folder, "no DICOM image files in this folder")
    uids = sorted({str(ds.get("SeriesInstanceUID", "")) for _, ds in datasets})
    if len(uids) > 1:
        raise CorruptFile(
            folder,
            f"mixed series ({len(uids)} SeriesInstanceUIDs: {', '.join(uids[:3])}"
            f"{' ...' if len(uids) > 3 else ''}); put each series in its own folder",
        )
    return datasets, uids[0]


def _series_geometry(folder: Path, datasets: list) -> tuple:
    """Slice order along the normal, positions and directions, in-plane spacing."""
    first = datasets[0][1]
    orient = _dcm_vector(datasets[0][0], first, "ImageOrientationPatient", 6)
    row_cos, col_cos = orient[:3], orient[3:]
    normal = np.cross(row_cos, col_cos)
    if not np.linalg.norm(normal) > 1e-6:
        raise CorruptFile(
            datasets[0][0], "DICOM ImageOrientationPatient rows and columns are parallel or zero"
        )
    for f, ds in datasets:
        other = _dcm_vector(f, ds, "ImageOrientationPatient", 6)
        if not np.allclose(other, orient, atol=1e-4):
            raise CorruptFile(f, "ImageOrientationPatient differs from the other slices")
    # slice order = position along the slice normal (C.7.6.2.1.1), not file or instance order
    positions = [_dcm_vector(f, ds, "ImagePositionPatient", 3) for f, ds in datasets]
    along = np.array([p @ normal for p in positions])
    order = np.argsort(along, kind="stable")
    along = along[order]
    if len(along) > 1 and np.min(np.diff(along)) < 1e-6:
        i = int(np.argmin(np.diff(along)))
        raise CorruptFile(
            folder,
            f"two slices share a position ({datasets[order[i]][0].name}, "
            f"{datasets[order[i + 1]][0].name})",
        )
    pix = _dicom_spacing(datasets[0][0], first)
    for f, ds in datasets[1:]:
        if not np.allclose(_dicom_spacing(f, ds), pix, rtol=1e-4):
            raise CorruptFile(f, "PixelSpacing differs from the other slices")
    return order, along, positions, (row_cos, col_cos, normal), pix


def _series_pixels(datasets: list, declared: list, order, opts: _Options, shape) -> tuple:
    """The slices' pixels in order as one (rows, cols, slices) volume; stored dtype; notes."""
    rows, cols = shape
    notes = {}
    slices = []
    stored = None
    for i in order:
        f, ds = datasets[i]
        note = _dicom_pixel_bytes(f, ds, declared[i], opts)
        if note is not None:
            notes[f.name] = note
        s, stored_i = _dicom_pixels(f, ds)
        stored = stored_i if stored is None else np.promote_types(stored, stored_i)
        if s.shape != (rows, cols):
            raise CorruptFile(f, f"pixel data of shape {s.shape}, header says {(rows, cols)}")
        slices.append(s)
    dtype = np.result_type(*{s.dtype for s in slices})
    vol = np.empty((rows, cols, len(slices)), dtype=dtype)  # (rows, cols, slices)
    for k, s in enumerate(slices):
        vol[..., k] = s
    del slices
    return vol, stored, notes


def _read_dicom_series(folder: Path, opts: _Options) -> tuple[np.ndarray, ImageMeta]:
    datasets, uid = _series_datasets(folder)
    declared = [_dicom_declared(f, ds) for f, ds in datasets]
    shapes = {(d.rows, d.cols) for d in declared}
    if len(shapes) > 1:
        raise CorruptFile(folder, f"slices differ in size {sorted(shapes)}")
    for (f, _), d in zip(datasets, declared, strict=True):
        if d.frames != 1 or d.samples != 1:
            raise UnsupportedFormat(f, "colour or multi-frame DICOM series are not supported")
    rows, cols = declared[0].rows, declared[0].cols
    voxels = rows * cols * len(datasets)
    itemsize = max(d.out_itemsize for d in declared)
    opts.limits.check(
        folder, voxels, voxels * itemsize, detail=f"{rows}x{cols} x {len(datasets)} slices"
    )
    first = datasets[0][1]
    order, along, positions, (row_cos, col_cos, normal), pix = _series_geometry(folder, datasets)
    _header_checked(opts, "dicom", (rows, cols, len(datasets)), nbytes=voxels * itemsize)
    vol, stored, notes = _series_pixels(datasets, declared, order, opts, (rows, cols))
    if len(along) > 1:
        steps = np.diff(along)
        step = float(np.mean(steps))
        if np.ptp(steps) > 1e-3 * max(step, 1e-6) + 1e-4:
            warnings.warn(
                f"{folder}: slice spacing is not uniform ({steps.min():.4g}..{steps.max():.4g} mm);"
                f" using the mean {step:.4g} mm",
                UserWarning,
                stacklevel=5,
            )
    else:
        step = float(
            _dcm_number(datasets[0][0], first, "SpacingBetweenSlices", None)
            or _dcm_number(datasets[0][0], first, "SliceThickness", None)
            or 1.0
        )
    spacing = _spacing(folder, [pix[0], pix[1], step], vol.shape, what="spacing")
    lps = np.eye(4)
    lps[:3, 0] = col_cos * spacing[0]  # moving down a column = next row
    lps[:3, 1] = row_cos * spacing[1]  # moving along a row = next column
    lps[:3, 2] = normal * spacing[2]
    lps[:3, 3] = positions[order[0]]
    header: dict[str, Any] = {
        "dtype": str(stored),
        "files": [datasets[i][0].name for i in order],
        "series_uid": uid,
        "modality": str(first.get("Modality", "")),
    }
    if notes:
        header["truncated"] = notes
    affine = _check_affine(folder, _LPS_TO_RAS @ lps)
    return vol, ImageMeta(str(folder), "dicom", spacing, affine, header)
