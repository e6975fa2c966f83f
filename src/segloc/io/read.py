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

import bz2
import contextlib
import gzip
import io as _bytesio
import logging
import math
import os
import stat
import threading
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segloc._validation import check_choice
from segloc.color import to_grey
from segloc.io.errors import (
    CorruptFile,
    ResourceLimitExceeded,
    SeglocIOError,
    UnsupportedFormat,
    is_os_error,
)
from segloc.io.formats import (
    _LPS_TO_RAS,
    _NRRD_SPACE_SIGNS,
    _PILLOW_FORMATS,
    ImageMeta,
    _format_of,
    _library_error,
    _magic,
    _unsupported_magic,
)
from segloc.io.limits import Limits, default_limits

NONFINITE_POLICIES = ("raise", "fill", "keep")

# DEFLATE codes at most 258 bytes in 2 bits: no zlib stream inflates more than 1032-fold
_DEFLATE_MAX_RATIO = 1032
_CHUNK = 1 << 20


@dataclass(frozen=True)
class _Options:
    """What one call asked for, handed to every reader."""

    limits: Limits
    allow_truncated: bool = False
    palette_indices: bool = False


def read_image(
    path: str | os.PathLike,
    *,
    as_gray: bool = False,
    max_voxels: int | None = None,
    max_bytes: int | None = None,
    allow_truncated: bool = False,
    nonfinite: str = "raise",
    untrusted: bool = False,
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
        :class:`CorruptFile`.

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
    if untrusted:
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
            f"{meta.path}: holds {count:,} NaN or infinite values; pass nonfinite='fill' to "
            "replace them (NaN and -inf by the minimum, +inf by the maximum finite value) "
            "or nonfinite='keep'",
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
            magic = _magic(f.read(352))
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


def _product(values) -> int:
    """Exact product in Python integers (a NumPy int64 product of huge sizes wraps)."""
    return math.prod(int(v) for v in values)


def _check_dims(path: Path, shape, what: str = "dimension") -> tuple[int, ...]:
    shape = tuple(int(v) for v in shape)
    if not shape:
        raise CorruptFile(path, f"declares no {what}s")
    for i, n in enumerate(shape):
        if n < 1:
            raise CorruptFile(path, f"{what} {i} is {n} (must be >= 1)")
    return shape


def _spacing(path: Path, values, sizes, *, what: str, absolute: bool = False) -> tuple[float, ...]:
    """Validated spacing per axis.

    Finite and > 0 wherever the axis holds more than one sample; on a single-sample axis
    the spacing means nothing and an unset value (0, NaN) becomes 1.0. ``absolute``
    takes the magnitude of negative values (NIfTI pixdims, as nibabel fixes them).
    """
    out = []
    for i, (v, n) in enumerate(zip(values, sizes, strict=False)):
        v = float(v)
        if absolute:
            v = abs(v)
        if np.isfinite(v) and v > 0:
            out.append(v)
        elif int(n) <= 1 and (v == 0 or np.isnan(v)):
            out.append(1.0)
        else:
            raise CorruptFile(path, f"{what} of axis {i} is {v} (must be finite and > 0)")
    return tuple(out)


def _check_affine(path: Path, affine: np.ndarray, what: str = "affine") -> np.ndarray:
    affine = np.asarray(affine, dtype=float)
    if not np.isfinite(affine).all():
        raise CorruptFile(path, f"{what} holds NaN or infinite values")
    return affine


def _truncated(
    path: Path,
    opts: _Options,
    *,
    needed: int | None,
    present: int,
    what: str = "data bytes",
    reason: str = "",
) -> dict:
    """Refuse a truncated file, or (``allow_truncated``) warn and describe what is missing.

    ``needed`` None: the decoder stopped (``reason``) and the size it wanted is unknown.
    """
    if needed is None:
        amount = f"the decoder stopped ({reason}) after {present:,} bytes"
    else:
        amount = f"{present:,} of {needed:,} {what} present"
    if not opts.allow_truncated:
        raise CorruptFile(
            path,
            f"cannot read: truncated, {amount} (allow_truncated=True reads the rest as zeros)",
        )
    note = {"needed": needed, "present": int(present), "unit": what}
    if reason:
        note["reason"] = reason
    warnings.warn(f"{path}: truncated, {amount}; the rest is zeros", UserWarning, stacklevel=5)
    return note


def _read_upto(f, count: int) -> bytearray:
    """Up to ``count`` bytes of ``f``, the buffer growing only as data arrives.

    A stream that ends early (a truncated .gz) costs what it held, not what it declared:
    nothing of the declared size is allocated before the data is there.
    """
    buf = bytearray()
    while len(buf) < count:
        try:
            chunk = f.read(min(_CHUNK, count - len(buf)))
        except EOFError:  # gzip: the stream ends before its end-of-stream marker
            break
        if not chunk:
            break
        buf += chunk  # large buffers grow in place (realloc/mremap), no copy of the whole
    return buf


def _readinto_full(f, buf: bytearray | memoryview) -> int:
    """Fill ``buf`` from ``f`` as far as the file goes; the number of bytes read."""
    view = memoryview(buf)
    got = 0
    while got < len(view):
        n = f.readinto(view[got : got + _CHUNK])
        if not n:
            break
        got += n
    return got


# --------------------------------------------------------------------------- Pillow


class _TruncationSwitch:
    """``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` set for the length of a group of loads.

    Pillow decides on truncated data from that module global. Loads that want the same
    value run together; a load that wants the other value waits until they finish, sets
    it, and the caller's value is restored when the last load of a group ends. So no
    segloc read changes the switch under another, and the process keeps its own setting.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._users = 0
        self._value: bool | None = None
        self._saved: bool | None = None

    @contextlib.contextmanager
    def holding(self, value: bool) -> Iterator[None]:
        from PIL import ImageFile

        with self._cond:
            while self._users and self._value != value:
                self._cond.wait()
            if self._users == 0:
                self._saved = ImageFile.LOAD_TRUNCATED_IMAGES
                ImageFile.LOAD_TRUNCATED_IMAGES = value
                self._value = value
            self._users += 1
        try:
            yield
        finally:
            with self._cond:
                self._users -= 1
                if self._users == 0:
                    ImageFile.LOAD_TRUNCATED_IMAGES = self._saved
                    self._value = None
                    self._cond.notify_all()


_TRUNCATION = _TruncationSwitch()


def _pillow_plugin(fmt: str):
    """The Pillow class for ``fmt``: only this plugin ever parses the bytes.

    Calling it directly (rather than ``Image.open``) skips Pillow's decompression-bomb
    check, which reads the process-wide ``Image.MAX_IMAGE_PIXELS``; segloc's per-call
    limit is checked instead, on the same header, before anything is decoded.
    """
    if fmt == "png":
        from PIL import PngImagePlugin

        return PngImagePlugin.PngImageFile
    if fmt == "jpeg":
        from PIL import JpegImagePlugin

        return JpegImagePlugin.jpeg_factory
    if fmt == "bmp":
        from PIL import BmpImagePlugin

        return BmpImagePlugin.BmpImageFile
    from PIL import TiffImagePlugin

    return TiffImagePlugin.TiffImageFile


# mode -> (channels, bytes per channel) of the array segloc returns for it
_PILLOW_OUT = {
    "1": (1, 1),
    "L": (1, 1),
    "LA": (1, 1),
    "La": (1, 1),
    "P": (3, 1),
    "PA": (4, 1),
    "RGB": (3, 1),
    "RGBA": (4, 1),
    "RGBa": (4, 1),
    "RGBX": (3, 1),
    "CMYK": (3, 1),
    "YCbCr": (3, 1),
    "LAB": (3, 1),
    "HSV": (3, 1),
    "I": (1, 4),
    "F": (1, 4),
}


def _pillow_out(path: Path, im, palette_indices: bool) -> tuple[int, int]:
    mode = im.mode
    if mode.startswith("I;16"):
        return 1, 2
    if mode == "P" and (palette_indices or "transparency" not in im.info):
        return (1, 1) if palette_indices else (3, 1)
    if mode == "P":
        return 4, 1
    if mode not in _PILLOW_OUT:
        raise UnsupportedFormat(path, f"image mode {mode!r} is not read")
    return _PILLOW_OUT[mode]


def _png_min_raw_bytes(path: Path) -> int | None:
    """Smallest number of bytes the PNG's pixel data inflates to, from its IHDR."""
    with open(path, "rb") as f:
        head = f.read(29)
    if len(head) < 29 or head[12:16] != b"IHDR":
        return None
    width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    depth, colour = head[24], head[25]
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(colour)
    if channels is None:
        return None
    return height * (1 + -(-width * depth * channels // 8))  # a filter byte per row


def _check_pillow_header(path: Path, im, fmt: str, opts: _Options, frames: int = 1) -> None:
    width, height = im.size
    if width < 1 or height < 1:
        raise CorruptFile(path, f"image size is {width}x{height} (must be at least 1x1)")
    channels, itemsize = _pillow_out(path, im, opts.palette_indices)
    voxels = width * height * frames
    opts.limits.check(
        path,
        voxels,
        voxels * channels * itemsize,
        detail=f"{width}x{height}{f' x {frames} pages' if frames > 1 else ''} {im.mode}",
    )
    if fmt == "png" and not opts.allow_truncated:
        # a PNG whose header asks for more than its compressed bytes can possibly hold is
        # cut short: refuse it before Pillow allocates the whole image
        raw = _png_min_raw_bytes(path)
        size = path.stat().st_size
        if raw is not None and raw > _DEFLATE_MAX_RATIO * size + 1024:
            raise CorruptFile(
                path,
                f"cannot read: truncated, its {width}x{height} pixels need at least "
                f"{raw:,} bytes, more than {size:,} compressed bytes can hold",
            )


def _pillow_decode(path: Path, fmt: str, opts: _Options, allow_truncated: bool):
    """Open with the format's own plugin, check the header, decode; the loaded image."""
    f = open(path, "rb")
    try:
        with _TRUNCATION.holding(allow_truncated):
            im = _pillow_plugin(fmt)(f)
            try:
                frames = getattr(im, "n_frames", 1) if fmt == "tiff" else 1
                _check_pillow_header(path, im, fmt, opts, frames)
                im.load()
            except BaseException:
                im.close()
                raise
    except BaseException:
        f.close()
        raise
    return im, f


def _read_pillow(path: Path, opts: _Options) -> tuple[np.ndarray, ImageMeta]:
    with open(path, "rb") as f:
        head = f.read(352)
    fmt = _magic(head)
    if fmt not in ("png", "jpeg", "bmp", "tiff"):
        other = _unsupported_magic(head)
        if other is not None:
            raise UnsupportedFormat(path, f"{other} images are not read")
        raise CorruptFile(path, f"cannot read (not a PNG, JPEG, BMP or TIFF file: {head[:8]!r})")
    note = None
    try:
        im, f = _pillow_decode(path, fmt, opts, allow_truncated=False)
    except (SeglocIOError, MemoryError):
        raise
    except Exception as exc:
        if not opts.allow_truncated or is_os_error(exc):
            raise
        # decode again, this time keeping what the data holds up to where it breaks off
        im, f = _pillow_decode(path, fmt, opts, allow_truncated=True)
        note = _truncated(
            path,
            opts,
            needed=None,
            present=path.stat().st_size,
            reason=f"{type(exc).__name__}: {exc}",
        )
    with f, im:
        fmt = _PILLOW_FORMATS.get(im.format or "", fmt)
        n_frames = getattr(im, "n_frames", 1)
        if fmt == "tiff" and n_frames > 1:
            pages = []
            for i in range(n_frames):
                im.seek(i)
                pages.append(_pillow_to_array(im, palette_indices=False)[0])
            arr, meta = _stack_pages(pages, path, {"pages": n_frames, "mode": im.mode})
        else:
            arr, header = _pillow_to_array(im, palette_indices=opts.palette_indices)
            meta = ImageMeta(str(path), fmt, (1.0, 1.0), None, header)
    if note is not None:
        meta.header["truncated"] = note
    return arr, meta


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
    elif mode == "RGBa":
        arr = np.asarray(im.convert("RGBA"))  # premultiplied alpha: keep it, as a 4th channel
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        arr = np.asarray(im.convert("RGB"))  # RGBX's 4th band is padding, not alpha
    elif mode.startswith("I;16"):
        arr = np.asarray(im).astype(np.uint16)  # native byte order for big-endian variants
    else:
        arr = np.asarray(im)
    if arr.ndim == 3:
        header["channels"] = arr.shape[-1]
    header["dtype"] = str(arr.dtype)
    return np.array(arr), header


def _stack_pages(pages: list[np.ndarray], path: Path, header: dict) -> tuple[np.ndarray, ImageMeta]:
    shapes = {p.shape for p in pages}
    if len(shapes) > 1:
        raise CorruptFile(path, f"TIFF pages differ in shape {sorted(shapes)}")
    dtypes = {str(p.dtype) for p in pages}
    if len(dtypes) > 1:
        raise CorruptFile(path, f"TIFF pages differ in data type {sorted(dtypes)}")
    if pages[0].ndim != 2:
        raise UnsupportedFormat(path, "colour TIFF stacks are not supported (colour volumes)")
    arr = np.stack(pages, axis=-1)  # (rows, cols, pages)
    header = {**header, "dtype": str(arr.dtype)}
    return arr, ImageMeta(str(path), "tiff", (1.0, 1.0, 1.0), None, header)


# --------------------------------------------------------------------------- TIFF

# tifffile logs (rather than raises) what it skips; these messages mean pixels are lost
_TIFF_LOSS = (
    "invalid page offset",
    "invalid offset to first page",
    "incorrect StripByteCounts",
    "incorrect StripOffsets",
    "incorrect TileByteCounts",
    "incorrect TileOffsets",
    "missing data offset",
    "missing data ByteCounts",
    "failed to reshape",
    "expected",  # read_segments: expected N segments, got M
    "corrupted",
)


class _LogCollector(logging.Handler):
    """Collect tifffile's log records of this thread during one read.

    While attached it is a handler of the ``tifffile`` logger, so Python's last-resort
    handler no longer prints tifffile's complaints to stderr mid-read.
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.thread = threading.get_ident()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.messages.append(record.getMessage())


@contextlib.contextmanager
def _tifffile_log() -> Iterator[list[str]]:
    logger = logging.getLogger("tifffile")
    handler = _LogCollector()
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


def _tiff_layout(path: Path, page, tifffile) -> tuple[int, int, int]:
    """(rows, cols, channels) of a page; refuses layouts segloc does not map to arrays."""
    axes, shape = page.axes, page.shape
    colour = page.photometric in (tifffile.PHOTOMETRIC.RGB, tifffile.PHOTOMETRIC.YCBCR)
    dims = dict(zip(axes, shape, strict=True))
    if set(axes) - {"Y", "X", "S"} or "Y" not in dims or "X" not in dims:
        raise UnsupportedFormat(path, f"unsupported TIFF layout (page axes {axes!r})")
    samples = dims.get("S", 1)
    if samples > 1 and not (colour and samples in (3, 4)):
        raise UnsupportedFormat(path, f"unsupported TIFF layout (axes {axes!r})")
    return int(dims["Y"]), int(dims["X"]), int(samples)


def _read_tiff(path: Path, opts: _Options) -> tuple[np.ndarray, ImageMeta]:
    import tifffile

    size = path.stat().st_size
    with _tifffile_log() as log, tifffile.TiffFile(path) as tif:
        pages: list = []
        broken = None
        seen: set[int] = set()
        # an IFD takes at least 2 + 12 + 4 bytes: no file holds more pages than that allows
        most = size // 18 + 1
        try:
            for page in tif.pages:
                # a chain of page directories that points back to an earlier one would be
                # followed for ever (tifffile does not notice): found by fuzzing
                offset = int(getattr(page, "offset", -1))
                if offset in seen or len(pages) >= most:
                    raise CorruptFile(
                        path,
                        f"TIFF page directory loops (page {len(pages)} is again the one at "
                        f"offset {offset})",
                    )
                seen.add(offset)
                pages.append(page)
        except CorruptFile:
            raise
        except Exception as exc:  # a cut or damaged page directory: keep the pages before it
            broken = f"{type(exc).__name__}: {exc}"
        lost = [m for m in log if any(k in m for k in _TIFF_LOSS)]
        if broken is not None:
            lost.insert(0, broken)
        if not pages:
            raise CorruptFile(
                path, f"cannot read (no readable TIFF page{'; ' + lost[0] if lost else ''})"
            )
        # reduced-resolution copies (thumbnails, pyramid levels) are not image data
        main = [p for p in pages if not int(getattr(p, "subfiletype", 0) or 0) & 1]
        if not main:
            raise CorruptFile(path, "cannot read (only reduced-resolution pages)")
        for p in main:
            _check_dims(path, p.shape, "page dimension")
        layouts = [_tiff_layout(path, p, tifffile) for p in main]
        first = layouts[0]
        for i, (p, lay) in enumerate(zip(main, layouts, strict=True)):
            if lay != first or p.dtype != main[0].dtype:
                raise CorruptFile(
                    path,
                    f"TIFF pages differ: page {i} is {lay[0]}x{lay[1]}x{lay[2]} {p.dtype}, "
                    f"page 0 is {first[0]}x{first[1]}x{first[2]} {main[0].dtype}",
                )
        if main[0].dtype is None:
            raise UnsupportedFormat(path, "unsupported TIFF sample format")
        rows, cols, samples = first
        if samples > 1 and len(main) > 1:
            raise UnsupportedFormat(path, "colour TIFF stacks are not supported (colour volumes)")
        voxels = rows * cols * len(main)
        itemsize = np.dtype(main[0].dtype).itemsize
        opts.limits.check(
            path,
            voxels,
            voxels * samples * itemsize,
            detail=f"{rows}x{cols} x {len(main)} pages {main[0].dtype}",
        )
        if lost and not opts.allow_truncated:
            raise CorruptFile(
                path,
                f"cannot read: truncated or damaged page directory after {len(pages)} "
                f"page(s) ({lost[0]})",
            )
        incomplete = [
            i
            for i, p in enumerate(main)
            if any(o + c > size for o, c in zip(p.dataoffsets, p.databytecounts, strict=False))
            or not p.dataoffsets
        ]
        header: dict[str, Any] = {"pages": len(pages), "dtype": str(np.dtype(main[0].dtype))}
        if len(main) < len(pages):
            header["reduced_pages"] = len(pages) - len(main)
        if incomplete:
            need = sum(sum(p.databytecounts) for p in main)
            have = sum(
                max(0, min(o + c, size) - o)
                for p in main
                for o, c in zip(p.dataoffsets, p.databytecounts, strict=False)
            )
            header["truncated"] = _truncated(path, opts, needed=need, present=have)
            header["truncated"]["zero_pages"] = incomplete
        if lost:
            note = header.get("truncated")
            if note is None:
                note = _truncated(
                    path, opts, needed=None, present=size, reason=f"page directory: {lost[0]}"
                )
                header["truncated"] = note
            note["pages_lost"] = lost[:5]
        shape = (rows, cols) if len(main) == 1 else (rows, cols, len(main))
        if samples > 1:
            shape = (rows, cols, samples)
        out = np.zeros(shape, dtype=np.dtype(main[0].dtype))
        try:
            for i, p in enumerate(main):
                if i in incomplete:
                    continue
                arr = p.asarray()
                if "S" in p.axes:
                    arr = np.moveaxis(arr, p.axes.index("S"), -1)  # planar RGB -> (..., 3)
                if len(main) == 1:
                    out[...] = arr.reshape(out.shape)
                else:
                    out[..., i] = arr.reshape(rows, cols)
        except ValueError as exc:
            if "imagecodecs" not in str(exc):
                raise
            # a compression tifffile cannot decode alone (LZW, JPEG): Pillow can
            return _read_pillow(path, opts)
    if samples > 1:
        header["channels"] = samples
    spacing = (1.0, 1.0) if len(main) == 1 else (1.0, 1.0, 1.0)
    return out, ImageMeta(str(path), "tiff", spacing, None, header)


# --------------------------------------------------------------------------- NIfTI


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _nifti_header(path: Path, head: bytes):
    """(image class, header) from the first bytes; sizeof_hdr tells NIfTI-1 from -2 and
    the byte order."""
    import nibabel as nib

    for klass, size in ((nib.Nifti1Image, 348), (nib.Nifti2Image, 540)):
        for order in ("<", ">"):
            if (
                len(head) >= 4
                and int.from_bytes(head[:4], "little" if order == "<" else "big") == size
            ):
                if len(head) < size:
                    raise CorruptFile(
                        path, f"cannot read: truncated, {len(head)} of {size} header bytes present"
                    )
                hdr = klass.header_class(head[:size], check=False)
                magic = bytes(hdr["magic"]).rstrip(b"\x00")
                if magic not in (b"n+1", b"n+2"):
                    if magic in (b"ni1", b"ni2"):
                        raise UnsupportedFormat(
                            path, "NIfTI header/image pairs (.hdr/.img) are not read; use .nii"
                        )
                    raise CorruptFile(path, f"cannot read (bad NIfTI magic {magic!r})")
                return klass, hdr, size
    raise CorruptFile(path, "cannot read (not a NIfTI-1 or NIfTI-2 header)")


def _read_nifti(path: Path, opts: _Options) -> tuple[np.ndarray, ImageMeta]:
    from nibabel.spatialimages import HeaderDataError
    from nibabel.volumeutils import apply_read_scaling

    gz = _is_gzip(path)  # by content: a ".gz" name on plain bytes is read as plain
    opener = gzip.open(path, "rb") if gz else open(path, "rb")
    with opener as f:
        head = bytes(_read_upto(f, 540))
        _, hdr, hdr_size = _nifti_header(path, head)
        ndim = int(hdr["dim"][0])
        if not 1 <= ndim <= 7:
            raise CorruptFile(path, f"dim[0] (number of dimensions) is {ndim} (must be 1..7)")
        try:
            shape = hdr.get_data_shape()
        except (HeaderDataError, ValueError) as exc:
            raise CorruptFile(path, f"cannot read (dimensions: {exc})") from None
        shape = _check_dims(path, shape)
        try:
            dtype = hdr.get_data_dtype()
        except (HeaderDataError, KeyError, ValueError, TypeError):
            raise CorruptFile(path, f"unknown data type code {int(hdr['datatype'])}") from None
        if dtype.fields is not None or dtype.kind in "cOV":
            raise UnsupportedFormat(path, f"NIfTI data type {dtype} is not read (RGB/complex)")
        try:
            slope, inter = hdr.get_slope_inter()
        except HeaderDataError as exc:
            raise CorruptFile(path, f"scaling: {exc}") from None
        # nibabel's ArrayProxy: scale factors in the slope's type, then apply_read_scaling
        scl_slope = np.asanyarray(1.0 if slope is None else slope)
        scl_inter = np.asanyarray(0.0 if inter is None else inter)
        if np.can_cast(scl_inter, scl_slope.dtype):
            scl_inter = scl_inter.astype(scl_slope.dtype)
        out_dtype = apply_read_scaling(np.zeros(1, dtype), scl_slope, scl_inter).dtype
        voxels = _product(shape)
        opts.limits.check(
            path,
            voxels,
            voxels * out_dtype.itemsize,
            detail=f"{' x '.join(map(str, shape))} {dtype}",
        )
        spacing = _spacing(
            path, hdr.get_zooms()[:ndim], shape, what="pixdim (spacing)", absolute=True
        )
        try:
            affine = hdr.get_best_affine()
        except (HeaderDataError, ValueError, np.linalg.LinAlgError) as exc:
            raise CorruptFile(path, f"affine (qform/sform): {exc}") from None
        affine = _check_affine(path, affine, "affine (qform/sform)")
        offset = int(hdr.get_data_offset())
        minimum = 352 if hdr_size == 348 else 544  # header + the 4-byte extension flag
        if offset == 0:
            # "unset": the data follows the header (nibabel would read the header as voxels)
            offset = minimum
        elif offset < minimum:  # as nibabel refuses it
            raise CorruptFile(
                path, f"vox_offset {offset} is inside the header (must be >= {minimum})"
            )
        raw_bytes = voxels * dtype.itemsize
        opts.limits.check(path, voxels, offset, detail=f"data offset {offset:,}")
        note = None
        if gz:
            # GzipFile.seek inflates forward in small pieces; then read only what is there
            try:
                f.seek(offset)
                at_data = f.tell() == offset
            except EOFError:
                at_data = False
            buf = _read_upto(f, raw_bytes) if at_data else bytearray()
            if len(buf) < raw_bytes:
                note = _truncated(path, opts, needed=raw_bytes, present=len(buf))
                buf += bytes(raw_bytes - len(buf))
        else:
            present = max(0, min(raw_bytes, path.stat().st_size - offset))
            if present < raw_bytes:  # known before anything is allocated
                note = _truncated(path, opts, needed=raw_bytes, present=present)
            buf = np.zeros(raw_bytes, np.uint8)  # calloc: pages cost memory once written
            f.seek(offset)
            _readinto_full(f, buf)
    raw = np.frombuffer(buf, dtype=dtype, count=voxels).reshape(shape, order="F")
    arr = apply_read_scaling(raw, scl_slope, scl_inter)
    header = {
        "dtype": str(dtype),
        "qform_code": int(hdr["qform_code"]),
        "sform_code": int(hdr["sform_code"]),
    }
    if note is not None:
        header["truncated"] = note
    return arr, ImageMeta(str(path), "nifti", spacing, affine, header)


# --------------------------------------------------------------------------- NRRD

# bytes per value of the NRRD type names (teem's nrrdType; pynrrd decodes the values)
_NRRD_TYPE_NAMES = {
    1: "signed char, int8, int8_t, uchar, unsigned char, uint8, uint8_t",
    2: "short, short int, signed short, signed short int, int16, int16_t, ushort, "
    "unsigned short, unsigned short int, uint16, uint16_t",
    4: "int, signed int, int32, int32_t, uint, unsigned int, uint32, uint32_t, float",
    8: "longlong, long long, long long int, signed long long, signed long long int, int64, "
    "int64_t, ulonglong, unsigned long long, unsigned long long int, uint64, uint64_t, double",
}
_NRRD_ITEMSIZE = {
    name.strip(): size for size, names in _NRRD_TYPE_NAMES.items() for name in names.split(",")
}
_NRRD_ENCODINGS = {"raw", "gzip", "gz", "bzip2", "bz2", "ascii", "text", "txt"}
_NRRD_LOCATION = {"datafile", "lineskip", "byteskip"}
_NRRD_MAX_HEADER = 1 << 20  # NRRD headers are a few KB; stop looking for the blank line here
_NRRD_MAX_LINE_SKIP = 100_000


def _nrrd_header_lines(f, path: Path, detached: bool) -> tuple[list[bytes], int]:
    """Header lines up to the blank line, and the header's length in bytes (bounded)."""
    lines: list[bytes] = []
    total = 0
    while True:
        line = f.readline(_NRRD_MAX_HEADER - total + 1)
        total += len(line)
        if total > _NRRD_MAX_HEADER:
            raise CorruptFile(
                path, f"cannot read (NRRD header longer than {_NRRD_MAX_HEADER:,} bytes)"
            )
        if not line:
            if detached or not lines:
                return lines, total
            raise CorruptFile(
                path, "cannot read: truncated, the NRRD header has no end (blank line)"
            )
        if not line.strip(b"\r\n"):
            return lines, total
        lines.append(line)


def _nrrd_int(path: Path, hdr: dict, *names: str, default: int = 0) -> int:
    for name in names:
        if name in hdr:
            try:
                return int(hdr[name])
            except (TypeError, ValueError):
                raise CorruptFile(path, f"NRRD field {name!r} must be an integer") from None
    return default


def _read_stream(
    path: Path, fh, encoding: str, need: int, skip: int, opts: _Options
) -> tuple[bytes, int]:
    """At most ``skip + need`` decoded bytes of NRRD data; (data, bytes present)."""
    if encoding == "raw":
        if skip:
            fh.seek(skip, os.SEEK_CUR)
        buf = _read_upto(fh, need)
        return buf, len(buf)
    if encoding in ("gzip", "gz"):
        # max_length: inflate no further than the declared size, however much is there
        dec = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib header
        want, out, tail = skip + need, bytearray(), b""
        while len(out) < want and not dec.eof:
            if not tail:
                tail = fh.read(_CHUNK)
                if not tail:
                    break
            out += dec.decompress(tail, want - len(out))
            tail = dec.unconsumed_tail
        del out[:skip]
        return out, len(out)
    if encoding in ("bzip2", "bz2"):
        dec = bz2.BZ2Decompressor()
        want, out = skip + need, bytearray()
        while len(out) < want and not dec.eof:
            chunk = fh.read(_CHUNK) if dec.needs_input else b""
            if dec.needs_input and not chunk:
                break
            out += dec.decompress(chunk, want - len(out))
        del out[:skip]
        return out, len(out)
    # ascii: a value takes at most ~30 characters; read no more text than that
    text = fh.read(need * 32 + 4096)
    return text, len(text)


def _read_nrrd(path: Path, opts: _Options) -> tuple[np.ndarray, ImageMeta]:
    import nrrd

    detached = path.suffix.lower() == ".nhdr"
    with open(path, "rb") as f:
        lines, header_len = _nrrd_header_lines(f, path, detached)
        if not lines:
            raise CorruptFile(path, "cannot read (empty NRRD header)")
        try:
            hdr = nrrd.read_header([ln.decode("latin-1") for ln in lines])
        except nrrd.NRRDError as exc:
            raise CorruptFile(path, f"cannot read (NRRD header: {exc})") from None
        except (ValueError, TypeError, IndexError, KeyError) as exc:
            raise CorruptFile(
                path, f"cannot read (NRRD header: {type(exc).__name__}: {exc})"
            ) from None
        for name in ("dimension", "type", "encoding", "sizes"):
            if name not in hdr:
                raise CorruptFile(path, f"NRRD header lacks the required field {name!r}")
        sizes = _check_dims(path, hdr["sizes"], "size")
        if int(hdr["dimension"]) != len(sizes):
            raise CorruptFile(
                path, f"NRRD dimension is {hdr['dimension']} but sizes lists {len(sizes)} values"
            )
        type_name = str(hdr["type"]).strip().lower()
        if type_name == "block":
            raise UnsupportedFormat(path, "NRRD type 'block' is not read")
        if type_name not in _NRRD_ITEMSIZE:
            raise CorruptFile(path, f"unknown NRRD data type {hdr['type']!r}")
        itemsize = _NRRD_ITEMSIZE[type_name]
        encoding = str(hdr["encoding"]).strip().lower()
        if encoding not in _NRRD_ENCODINGS:
            raise UnsupportedFormat(path, f"NRRD encoding {hdr['encoding']!r} is not read")
        if itemsize > 1 and encoding not in ("ascii", "text", "txt"):
            if str(hdr.get("endian", "")).lower() not in ("little", "big"):
                raise CorruptFile(
                    path, f"NRRD endian must be little or big, got {hdr.get('endian')!r}"
                )
        voxels = _product(sizes)
        need = voxels * itemsize
        opts.limits.check(path, voxels, need, detail=f"{' x '.join(map(str, sizes))} {type_name}")
        spacing, affine = _nrrd_geometry(path, hdr, sizes)
        line_skip = _nrrd_int(path, hdr, "line skip", "lineskip")
        byte_skip = _nrrd_int(path, hdr, "byte skip", "byteskip")
        if not 0 <= line_skip <= _NRRD_MAX_LINE_SKIP:
            raise CorruptFile(
                path, f"NRRD line skip is {line_skip} (must be 0..{_NRRD_MAX_LINE_SKIP})"
            )
        if byte_skip < -1:
            raise CorruptFile(path, f"NRRD byte skip is {byte_skip} (must be >= -1)")
        opts.limits.check(path, voxels, max(byte_skip, 0), detail=f"byte skip {byte_skip:,}")
        data_file = hdr.get("data file", hdr.get("datafile"))
        if data_file is None and detached:
            raise CorruptFile(path, "NRRD header (.nhdr) names no data file")
        with contextlib.ExitStack() as stack:
            if data_file is not None:
                name = str(data_file).strip()
                if name.upper().startswith("LIST") or "%" in name:
                    raise UnsupportedFormat(path, "NRRD data split over several files is not read")
                target = Path(name) if os.path.isabs(name) else path.parent / name
                try:
                    st = target.stat()
                except FileNotFoundError:
                    raise CorruptFile(
                        path, f"names data file {target}, which does not exist"
                    ) from None
                if not stat.S_ISREG(st.st_mode):
                    raise CorruptFile(
                        path, f"names data file {target}, which is not a regular file"
                    )
                fh = stack.enter_context(open(target, "rb"))
            else:
                fh = f
                fh.seek(header_len)
            for _ in range(line_skip):
                if not fh.readline(_NRRD_MAX_HEADER):
                    break
            if byte_skip == -1:
                if encoding != "raw":
                    raise UnsupportedFormat(
                        path, "NRRD byte skip -1 with compressed data is not read"
                    )
                end = fh.seek(0, os.SEEK_END)
                fh.seek(max(0, end - need))
                byte_skip = 0
            data, present = _read_stream(path, fh, encoding, need, byte_skip, opts)
    note = None
    # pynrrd decodes the bytes already read, from memory: no second look at the file
    local = {k: v for k, v in hdr.items() if k.replace(" ", "") not in _NRRD_LOCATION}
    if encoding not in ("ascii", "text", "txt"):
        if present < need:
            note = _truncated(path, opts, needed=need, present=present)
            data = data[:present] + bytes(need - present)
        local["encoding"] = "raw"
    arr = nrrd.read_data(local, _bytesio.BytesIO(bytes(data)), index_order="F")
    arr = np.asarray(arr)
    header = {"dtype": str(arr.dtype), "nrrd": {k: v for k, v in hdr.items() if k != "data file"}}
    if note is not None:
        header["truncated"] = note
    return arr, ImageMeta(str(path), "nrrd", spacing, affine, header)


def _nrrd_geometry(path: Path, hdr: dict, sizes) -> tuple[tuple[float, ...], np.ndarray | None]:
    ndim = len(sizes)
    spacing: tuple[float, ...] = (1.0,) * ndim
    affine = None
    directions = hdr.get("space directions")
    if directions is not None:
        rows = []
        for i, d in enumerate(directions):
            # "none" (a non-spatial axis) comes as None or as a row of NaN
            if d is None or np.all(np.isnan(np.asarray(d, dtype=float))):
                rows.append(None)
                continue
            d = np.asarray(d, dtype=float).reshape(-1)
            if not np.isfinite(d).all():
                raise CorruptFile(path, f"NRRD space direction of axis {i} holds NaN or infinity")
            rows.append(d)
        if len(rows) != ndim:
            raise CorruptFile(path, f"NRRD space directions list {len(rows)} axes, sizes {ndim}")
        norms = [1.0 if r is None else float(np.linalg.norm(r)) for r in rows]
        spacing = _spacing(path, norms, sizes, what="NRRD space direction length")
        space = str(hdr.get("space", "")).lower()
        if (
            space in _NRRD_SPACE_SIGNS
            and ndim == 3
            and all(r is not None and r.shape == (3,) for r in rows)
        ):
            affine = np.eye(4)
            affine[:3, :3] = np.stack(rows, axis=1)  # column j = world step of array axis j
            origin = hdr.get("space origin")
            origin = np.zeros(3) if origin is None else np.asarray(origin, float).reshape(-1)
            if origin.shape != (3,):
                raise CorruptFile(path, f"NRRD space origin must have 3 values, got {origin.size}")
            affine[:3, 3] = origin
            affine = _check_affine(path, np.diag([*_NRRD_SPACE_SIGNS[space], 1.0]) @ affine)
    elif hdr.get("spacings") is not None:
        values = np.asarray(hdr["spacings"], dtype=float).reshape(-1)
        if values.size != ndim:
            raise CorruptFile(path, f"NRRD spacings list {values.size} values, sizes {ndim}")
        # NaN is the spec's "no spacing on this axis"; a sign gives the axis' direction
        values = np.where(np.isnan(values), 1.0, np.abs(values))
        spacing = _spacing(path, values, sizes, what="NRRD spacing")
    return spacing, affine


# --------------------------------------------------------------------------- DICOM


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


def _read_dicom_series(folder: Path, opts: _Options) -> tuple[np.ndarray, ImageMeta]:
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
        "series_uid": uids[0],
        "modality": str(first.get("Modality", "")),
    }
    if notes:
        header["truncated"] = notes
    affine = _check_affine(folder, _LPS_TO_RAS @ lps)
    return vol, ImageMeta(str(folder), "dicom", spacing, affine, header)
