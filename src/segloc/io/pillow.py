"""PNG, JPEG and BMP through Pillow, each header checked before any pixel is decoded."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from segloc.io.checks import _DEFLATE_MAX_RATIO, _header_checked, _Options, _truncated
from segloc.io.errors import (
    CorruptFile,
    SeglocIOError,
    UnsupportedFormat,
    is_os_error,
)
from segloc.io.formats import (
    _PILLOW_FORMATS,
    ImageMeta,
    _unsupported_magic,
    format_from_bytes,
)


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
    nbytes = voxels * channels * itemsize
    opts.limits.check(
        path,
        voxels,
        nbytes,
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
    shape = (height, width, frames) if frames > 1 else (height, width)
    _header_checked(opts, fmt, shape, channels=channels, nbytes=nbytes)


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
    fmt = format_from_bytes(head)
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
