"""Typed errors of everything that reads a user's file.

One base, :class:`SeglocIOError` (a ``ValueError``, so ``except ValueError`` keeps
catching it), and three kinds that say what went wrong:

- :class:`UnsupportedFormat`: the file may be fine, segloc does not read it (unknown
  suffix and content, a colour volume, a TIFF layout it cannot map to an array).
- :class:`CorruptFile`: the bytes are not a valid file of their format: truncated,
  a header stating impossible values (zero or negative dimensions, NaN spacing, an
  unknown data type, data past the end of the file), a decoder that gave up.
- :class:`ResourceLimitExceeded`: the header declares more voxels or bytes than the
  per-call limit allows; refused before any pixel is decoded.

A real operating-system error (permission denied, disk full, I/O error) is *not* turned
into one of these: it stays an ``OSError`` (with its ``errno``), because it says
nothing about the file's content and retrying may help. :func:`is_os_error` tells the
two apart, since Pillow and gzip also raise ``OSError`` for corrupt data (without an
``errno``).

Every message is one line that starts with the path: ``"a.nii.gz: truncated ..."``.
``ImageReadError`` (the name segloc used before these types) is the base class itself,
so ``except ImageReadError`` catches all of them.
"""

from __future__ import annotations

import errno
import os

__all__ = [
    "SeglocIOError",
    "ImageReadError",
    "UnsupportedFormat",
    "CorruptFile",
    "ResourceLimitExceeded",
    "is_os_error",
]


def _one_line(text: str) -> str:
    # library messages can span lines (nibabel's "- could the file be damaged?")
    return " ".join(str(text).split())


class SeglocIOError(ValueError):
    """A file that cannot be read or written as asked; the message starts with its path.

    Parameters
    ----------
    message : str
        The whole message, path first (``"a.png: mask values must be ..."``). Subclasses
        build it from their fields.
    path : str or path-like, optional
        The file; kept as :attr:`path`.
    """

    def __init__(self, message: str, *, path: str | os.PathLike | None = None) -> None:
        super().__init__(_one_line(message))
        self.path = None if path is None else str(path)


ImageReadError = SeglocIOError
"""The name used before the typed errors; the same class."""


class UnsupportedFormat(SeglocIOError):
    """A file segloc does not read (or cannot write under that name).

    Parameters
    ----------
    path : str or path-like
    reason : str
        What is unsupported, e.g. ``"unknown image format (suffix '.xyz')"``.
    """

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(f"{path}: {reason}", path=path)
        self.reason = _one_line(reason)


class CorruptFile(SeglocIOError):
    """A file whose bytes are not a valid file of its format, or state impossible values.

    Parameters
    ----------
    path : str or path-like
    reason : str
        What is wrong, e.g. ``"truncated: 1200 of 64000 data bytes"``.

    Examples
    --------
    >>> str(CorruptFile("a.nii", "dimension 2 is 0 (must be >= 1)"))
    'a.nii: dimension 2 is 0 (must be >= 1)'
    """

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(f"{path}: {reason}", path=path)
        self.reason = _one_line(reason)


def _amount(value: int | None, unit: str) -> str:
    if value is None:
        return "an unknown amount"
    if unit == "bytes":
        for scale, name in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
            if value >= scale:
                return f"{value / scale:.3g} {name} ({value:,} bytes)"
        return f"{value:,} bytes"
    return f"{value:,} {unit}"


class ResourceLimitExceeded(SeglocIOError):
    """A file that declares more than the per-call limit; nothing was decoded.

    Parameters
    ----------
    path : str or path-like
    declared : int or None
        What the header declares (None when a decoder asked for more than a sandbox
        allowed and the amount is not known).
    limit : int
        The limit in force.
    unit : {"voxels", "bytes"}
        What ``declared`` and ``limit`` count.
    detail : str, optional
        Where the number comes from (``"512 x 512 x 4000 int16"``).

    Examples
    --------
    >>> err = ResourceLimitExceeded("big.png", 10**10, 10**9, unit="voxels")
    >>> str(err)[:60]
    'big.png: declares 10,000,000,000 voxels, above the limit of '
    >>> err.declared, err.limit
    (10000000000, 1000000000)
    """

    def __init__(
        self,
        path: str | os.PathLike,
        declared: int | None,
        limit: int,
        *,
        unit: str = "bytes",
        detail: str = "",
    ) -> None:
        knob = "max_voxels / --max-voxels" if unit == "voxels" else "max_bytes / --max-mib"
        what = f" ({detail})" if detail else ""
        super().__init__(
            f"{path}: declares {_amount(declared, unit)}{what}, above the limit of "
            f"{_amount(limit, unit)} (raise {knob} to read it)",
            path=path,
        )
        self.declared = declared
        self.limit = limit
        self.unit = unit


def is_os_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a real operating-system error rather than a decoder's complaint.

    Pillow (``"image file is truncated"``), gzip (``BadGzipFile``) and others raise
    ``OSError`` without an ``errno`` for bad data; the system sets ``errno`` (``EACCES``,
    ``ENOSPC``, ``EIO`` ...). ``EINVAL`` is the exception: reading a regular file it comes
    from a seek to an offset the file's own header gave (a negative or huge TIFF IFD
    offset), so it is the content's fault.

    Examples
    --------
    >>> import errno
    >>> is_os_error(OSError(errno.EACCES, "Permission denied")), is_os_error(OSError("truncated"))
    (True, False)
    >>> is_os_error(OSError(errno.EINVAL, "Invalid argument"))  # seek(-1): the header's offset
    False
    """
    return isinstance(exc, OSError) and exc.errno not in (None, errno.EINVAL)
