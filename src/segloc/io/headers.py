"""Files checked before work: every input's header first, then (when they are small) its values.

A command given many files should refuse a bad one before it spends minutes on the others.
:func:`inspect` runs a reader up to the point where it would decode pixels: the header is
parsed and checked exactly as :func:`segloc.io.read_image` checks it (dimensions, data
type, spacing and geometry, the size limits, the data's length against the file's where
that is known without inflating it), and nothing is decoded. :func:`check_files` does that
for every file of a job, then reads them whole when together they are small, so that what
only the values show (NaN, a PNG cut short inside its compressed data, mask values) is
found before the first minute of work too.

``inspect`` runs in this process even where reads are untrusted
(:func:`segloc.io.set_default_untrusted`): it parses headers with Python code (Pillow's
plugins, tifffile, nibabel's header class, pynrrd, pydicom) and decodes no pixel data, which
is where the native decoders run; the whole reads of :func:`check_files` go through
:func:`segloc.io.read_image`, so through the sandbox when reads are untrusted.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from segloc.io.checks import _HeaderOnly, _Options
from segloc.io.limits import default_limits
from segloc.io.masks import read_mask
from segloc.io.read import _read, read_image

__all__ = ["FULL_CHECK_BYTES", "Header", "check_files", "inspect"]

#: :func:`check_files` reads the files whole when their arrays together take at most this
FULL_CHECK_BYTES = 256 * 2**20


@dataclass(frozen=True)
class Header:
    """What a file's header declares, checked.

    Attributes
    ----------
    path : str
    format : str
        ``"png"``, ``"jpeg"``, ``"bmp"``, ``"tiff"``, ``"nifti"``, ``"nrrd"`` or ``"dicom"``.
    shape : tuple of int
        The array's shape without its colour axis: ``(rows, cols)`` or
        ``(rows, cols, slices)`` (NIfTI and NRRD files may declare more axes).
    channels : int
        Colour samples per pixel (1: grey).
    nbytes : int
        Bytes of the array :func:`segloc.io.read_image` returns.
    """

    path: str
    format: str
    shape: tuple[int, ...]
    channels: int
    nbytes: int

    @property
    def ndim(self) -> int:
        """Spatial dimensions: 2 for a picture (grey or colour), 3 for a volume."""
        return len(self.shape)


def inspect(
    path: str | os.PathLike, *, max_voxels: int | None = None, max_bytes: int | None = None
) -> Header:
    """Read and check a file's header only; no pixel is decoded.

    Parameters
    ----------
    path : str or path-like
        Anything :func:`segloc.io.read_image` reads.
    max_voxels, max_bytes : int, optional
        As for :func:`segloc.io.read_image` (default: the process defaults).

    Returns
    -------
    Header

    Raises
    ------
    UnsupportedFormat, CorruptFile, ResourceLimitExceeded, SeglocIOError, OSError
        As :func:`segloc.io.read_image` raises them for the header.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from segloc import io
    >>> p = io.write_image(tempfile.mkdtemp() + "/a.png", np.zeros((3, 5, 3), np.uint8))
    >>> h = io.inspect(p)
    >>> h.format, h.shape, h.channels, h.nbytes
    ('png', (3, 5), 3, 45)
    """
    limits = default_limits(max_voxels, max_bytes)
    try:
        image, meta = _read(Path(path), _Options(limits, header_only=True))
    except _HeaderOnly as declared:
        return Header(str(path), declared.fmt, declared.shape, declared.channels, declared.nbytes)
    # a reader that decoded without stopping: describe what it returned
    channels = int(meta.header.get("channels", 1))
    shape = image.shape[:-1] if meta.is_colour else image.shape
    return Header(str(path), meta.format, tuple(shape), channels, int(image.nbytes))


def check_files(
    paths: Iterable[str | os.PathLike],
    *,
    check: Callable[[Header], None] | None = None,
    masks: bool = False,
    kind: str = "auto",
    read_below: int | None = None,
) -> list[Header]:
    """Check every file a job will read before the job starts; the first bad one raises.

    Every header is checked (:func:`inspect`, then ``check``: what the job needs of it, a
    2D image, a model's channels ...); then, when the arrays together take at most
    ``read_below`` bytes, every file is read whole (:func:`segloc.io.read_image`, or
    :func:`segloc.io.read_mask` with ``kind`` for ``masks``) and the arrays dropped: NaN
    values, data cut short inside a compressed stream and mask values are found only so.
    Larger jobs get the header checks only, and a file whose values are bad fails when the
    job reaches it.

    Parameters
    ----------
    paths : iterable of path-like
    check : callable, optional
        ``check(header)`` raises ``ValueError`` (naming ``header.path``) for a file the job
        cannot use; called for every file before any is read whole.
    masks : bool, optional
        The files are masks or label maps.
    kind : {"auto", "binary", "labels"}, optional
        How masks are read (:func:`segloc.io.read_mask`).
    read_below : int, optional
        Bytes below which the files are read whole (default :data:`FULL_CHECK_BYTES`);
        0: headers only.

    Returns
    -------
    list of Header
        In the order given.

    Raises
    ------
    SeglocIOError, OSError
        The first file that cannot be read, named.
    """
    files = [Path(p) for p in paths]
    headers = [inspect(p) for p in files]
    for header in headers if check is not None else []:
        check(header)
    if sum(h.nbytes for h in headers) <= (FULL_CHECK_BYTES if read_below is None else read_below):
        for path in files:
            if masks:
                read_mask(path, kind=kind)
            else:
                read_image(path)
    return headers
