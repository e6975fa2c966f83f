"""TIFF and multi-page TIFF stacks through tifffile, pages checked before decoding."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from segloc.io.checks import _check_dims, _header_checked, _Options, _truncated
from segloc.io.errors import (
    CorruptFile,
    UnsupportedFormat,
)
from segloc.io.formats import (
    ImageMeta,
)
from segloc.io.pillow import _read_pillow

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
        _header_checked(opts, "tiff", shape, channels=samples, nbytes=voxels * samples * itemsize)
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
