"""Readers: PNG/JPEG/BMP/TIFF (multi-page = 3D), NIfTI, NRRD, DICOM files and series.

Every reader works in three steps:

1. Read the header only (Pillow's header parse, tifffile's page directory, nibabel's
   header block, pynrrd's header lines, pydicom with the pixel data deferred).
2. Check what it declares: dimensions >= 1, a known data type, finite spacing and
   geometry, and the size of the array it would become against the per-call limits
   (:mod:`segloc.io.limits`); then the bytes the data needs against the bytes the file
   holds (truncation), so that nothing is allocated for data that is not there.
3. Decode, reading at most the declared number of bytes (a gzip stream is inflated only
   that far, so a small file cannot expand into a large one).

Failures are typed (:mod:`segloc.io.errors`); an ``OSError`` that the system raised
(permission, I/O error) passes through unchanged.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from segloc._validation import check_choice
from segloc.color import to_grey
from segloc.io.checks import _Options
from segloc.io.dicom import _read_dicom_file, _read_dicom_series
from segloc.io.errors import (
    CorruptFile,
    ResourceLimitExceeded,
    SeglocIOError,
    is_os_error,
)
from segloc.io.formats import (
    ImageMeta,
    _format_of,
    _library_error,
    format_from_bytes,
)
from segloc.io.limits import default_limits, default_untrusted
from segloc.io.nifti import _read_nifti
from segloc.io.nrrd import _read_nrrd
from segloc.io.pillow import _TRUNCATION, _pillow_plugin, _read_pillow
from segloc.io.tiff import _read_tiff, _tiff_layout, _tifffile_log

NONFINITE_POLICIES = ("raise", "fill", "keep")


def read_image(
    path: str | os.PathLike,
    *,
    as_gray: bool = False,
    max_voxels: int | None = None,
    max_bytes: int | None = None,
    allow_truncated: bool = False,
    nonfinite: str = "raise",
    untrusted: bool | None = None,
) -> tuple[np.ndarray, ImageMeta]:
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
    max_voxels, max_bytes : int, optional
        Limits on the array the header declares (spatial elements; bytes of the returned
        array), checked before any pixel is decoded. Default: the module defaults
        (:func:`segloc.io.set_default_limits`), else 2**31 - 1 voxels and a quarter of
        the available memory.
    allow_truncated : bool, optional
        Return what a truncated file holds, the missing part as zeros, with a
        ``UserWarning`` and ``meta.header["truncated"]`` saying what is missing, instead
        of raising :class:`CorruptFile`.
    nonfinite : {"raise", "fill", "keep"}, optional
        What to do with NaN or infinite values in a float image: refuse the file; replace
        NaN and -inf by the smallest and +inf by the largest finite value, with a
        ``UserWarning`` and ``meta.header["nonfinite_filled"]``; or return them as stored.
    untrusted : bool, optional
        Decode in a child process under a time and memory limit
        (:func:`segloc.io.read_untrusted`), so that a native decoder crashing or hanging
        on a hostile file cannot take the caller down; a crash or a timeout is a
        :class:`CorruptFile`. Default: the process default
        (:func:`segloc.io.set_default_untrusted`; False unless changed).

    Returns
    -------
    image : ndarray
        Pixel values in the stored dtype (NIfTI: as nibabel's ``dataobj`` gives them,
        scaling applied; DICOM: RescaleSlope/Intercept applied).
    meta : ImageMeta
        Format, spacing per spatial axis, affine (index -> RAS+ mm) when known.

    Raises
    ------
    UnsupportedFormat
        A format or layout segloc does not read.
    CorruptFile
        A truncated or malformed file, a header stating impossible values (dimension 0,
        NaN spacing, unknown data type, data past the end), an empty folder or one
        holding several DICOM series.
    ResourceLimitExceeded
        The header declares more than ``max_voxels`` or ``max_bytes``.
    SeglocIOError
        The base of the three, also for a missing file or (``nonfinite="raise"``) NaN
        values. Every message starts with the path.
    OSError
        A system error (permission denied, I/O error), unchanged.

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
    check_choice(nonfinite, NONFINITE_POLICIES, name="nonfinite")
    limits = default_limits(max_voxels, max_bytes)
    if default_untrusted(untrusted):
        from segloc.io.sandbox import read_untrusted

        image, meta = read_untrusted(
            path,
            max_voxels=limits.max_voxels,
            max_bytes=limits.max_bytes,
            allow_truncated=allow_truncated,
        )
    else:
        image, meta = _read(Path(path), _Options(limits, allow_truncated))
    image = _nonfinite(image, meta, nonfinite)
    if as_gray and meta.is_colour:
        image = to_grey(image)
    return image, meta


def _nonfinite(image: np.ndarray, meta: ImageMeta, policy: str) -> np.ndarray:
    if policy == "keep" or not np.issubdtype(image.dtype, np.floating):
        return image
    bad = ~np.isfinite(image)
    count = int(np.count_nonzero(bad))
    if count == 0:
        return image
    if policy == "raise":
        raise SeglocIOError(
            f"{meta.path}: holds {count:,} NaN or infinite values; replace them in the file, "
            "or read it with nonfinite 'fill' (NaN and -inf become the minimum, +inf the "
            "maximum finite value) or 'keep'",
            path=meta.path,
        )
    finite = image[~bad]
    lo, hi = (finite.min(), finite.max()) if finite.size else (0, 0)
    image = np.array(image)  # the array may be read-only (a memory map, a buffer)
    image[np.isnan(image) | np.isneginf(image)] = lo
    image[np.isposinf(image)] = hi
    meta.header["nonfinite_filled"] = count
    warnings.warn(
        f"{meta.path}: {count:,} NaN or infinite values replaced ({lo} for NaN and -inf, "
        f"{hi} for +inf)",
        UserWarning,
        stacklevel=3,
    )
    return image


def _read(path: Path, opts: _Options) -> tuple[np.ndarray, ImageMeta]:
    """Read ``path`` with the reader of its format; every failure typed and naming the file."""
    if not path.exists():
        raise SeglocIOError(f"{path}: no such file or directory", path=path)
    fmt = _format_of(path)
    readers: dict[str, Callable[[Path, _Options], tuple[np.ndarray, ImageMeta]]] = {
        "nifti": _read_nifti,
        "nrrd": _read_nrrd,
        "dicom": _read_dicom_series if path.is_dir() else _read_dicom_file,
        "tiff": _read_tiff,
    }
    try:
        return readers.get(fmt, _read_pillow)(path, opts)
    except SeglocIOError:
        raise
    except MemoryError:
        # the limits passed, yet a decoder asked for more than the process could get
        raise ResourceLimitExceeded(
            path, None, opts.limits.max_bytes, detail="a decoder ran out of memory"
        ) from None
    except OSError as exc:
        if is_os_error(exc):  # permission, I/O error, disk: not the file's content
            raise
        raise _library_error(path, exc) from exc
    except RecursionError as exc:
        raise CorruptFile(path, "cannot read (structure nested too deeply)") from exc
    except Exception as exc:  # every library has its own exceptions; keep the path
        raise _library_error(path, exc) from exc


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(width, height)`` of a 2D image from its header; no pixel is decoded.

    For PNG, JPEG, BMP and TIFF only the header is read; other formats (volumes) are
    read whole and their first two axes give ``(cols, rows)``.

    Raises
    ------
    SeglocIOError
        As :func:`read_image` (missing file, unknown format, corrupt header).

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from segloc import io
    >>> p = io.write_image(tempfile.mkdtemp() + "/a.png", np.zeros((3, 5), np.uint8))
    >>> io.image_size(p)
    (5, 3)
    """
    path = Path(path)
    if not path.exists():
        raise SeglocIOError(f"{path}: no such file or directory", path=path)
    fmt = _format_of(path)
    if fmt not in ("png", "jpeg", "bmp", "tiff") or path.is_dir():
        image, _ = read_image(path, nonfinite="keep")
        return int(image.shape[1]), int(image.shape[0])
    try:
        if fmt == "tiff":
            import tifffile

            with _tifffile_log(), tifffile.TiffFile(path) as tif:
                rows, cols, _ = _tiff_layout(path, tif.pages[0], tifffile)
            return cols, rows
        with open(path, "rb") as f:
            magic = format_from_bytes(f.read(352))
            if magic not in ("png", "jpeg", "bmp", "tiff"):
                raise CorruptFile(path, f"cannot read (not a {fmt.upper()} file)")
            f.seek(0)
            with _TRUNCATION.holding(False):
                im = _pillow_plugin(magic)(f)
            with im:
                width, height = im.size
    except SeglocIOError:
        raise
    except OSError as exc:
        if is_os_error(exc):
            raise
        raise _library_error(path, exc) from exc
    except Exception as exc:
        raise _library_error(path, exc) from exc
    if width < 1 or height < 1:
        raise CorruptFile(path, f"image size is {width}x{height} (must be at least 1x1)")
    return int(width), int(height)


# --------------------------------------------------------------------------- shared checks


# --------------------------------------------------------------------------- Pillow


# --------------------------------------------------------------------------- TIFF


# --------------------------------------------------------------------------- NIfTI


# --------------------------------------------------------------------------- NRRD


# --------------------------------------------------------------------------- DICOM


def describe(path: str | os.PathLike) -> dict[str, Any]:
    """What ``segloc info`` shows of a file: format, shape, dtype, spacing, affine, value
    range (finite values) and, for at most 32 distinct values, their pixel counts."""
    # a description shows NaN volumes too, so they are kept rather than refused
    image, meta = read_image(path, nonfinite="keep")
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
