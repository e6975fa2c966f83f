"""What every reader checks: declared dimensions, spacing, affine, truncation; bounded reads."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segloc.io.errors import (
    CorruptFile,
)
from segloc.io.limits import Limits

# DEFLATE codes at most 258 bytes in 2 bits: no zlib stream inflates more than 1032-fold
_DEFLATE_MAX_RATIO = 1032


_CHUNK = 1 << 20


@dataclass(frozen=True)
class _Options:
    """What one call asked for, handed to every reader.

    ``header_only``: stop where decoding would begin (:func:`_header_checked`), for
    :func:`segloc.io.inspect`.
    """

    limits: Limits
    allow_truncated: bool = False
    palette_indices: bool = False
    header_only: bool = False


class _HeaderOnly(BaseException):
    """A reader reached the pixel data with ``header_only`` set: what its header declares.

    A ``BaseException`` so that no reader's ``except Exception`` (which turns a library's
    own errors into :class:`CorruptFile`) mistakes it for a failure; only
    :func:`segloc.io.inspect` catches it.
    """

    def __init__(self, fmt: str, shape: tuple[int, ...], channels: int, nbytes: int) -> None:
        super().__init__(fmt)
        self.fmt, self.shape, self.channels, self.nbytes = fmt, shape, channels, nbytes


def _header_checked(opts: _Options, fmt: str, shape, *, channels: int = 1, nbytes: int) -> None:
    """Every reader calls this once its header is checked (dimensions, type, limits,
    geometry, the data's size against the file's), just before the pixel data is read.

    ``shape`` is the array's shape without its colour axis, ``channels`` the colour
    samples (1 for grey), ``nbytes`` the size of the array :func:`segloc.io.read_image`
    would return.
    """
    if opts.header_only:
        raise _HeaderOnly(fmt, tuple(int(n) for n in shape), int(channels), int(nbytes))


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
            f"cannot read: truncated, {amount} (read with allow_truncated, the rest is zeros)",
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
