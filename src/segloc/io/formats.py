"""Formats: told from the file name, else from the first bytes; what a reader learned."""

from __future__ import annotations

import gzip
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segloc.io.errors import CorruptFile, SeglocIOError, UnsupportedFormat


@dataclass
class ImageMeta:
    """What a reader learned about a file besides its pixels.

    Attributes
    ----------
    path : str or None
        The file (or DICOM folder) read.
    format : str
        One of ``"png"``, ``"jpeg"``, ``"bmp"``, ``"tiff"``, ``"nifti"``, ``"nrrd"``,
        ``"dicom"``.
    spacing : tuple of float
        Physical size of a pixel along each spatial array axis (the colour axis of an
        RGB image has none): ``(1.0, 1.0)`` for plain 2D images.
    affine : (4, 4) ndarray or None
        Array index -> RAS+ millimetres, when the file states it (NIfTI, NRRD, DICOM).
    header : dict
        Small extras: ``"dtype"`` (stored dtype), ``"channels"`` (colour images only),
        ``"pages"`` (TIFF), ``"mode"`` (Pillow), ``"nrrd"`` (NRRD header fields) ...
    """

    path: str | None = None
    format: str = ""
    spacing: tuple[float, ...] = (1.0, 1.0)
    affine: np.ndarray | None = None
    header: dict = field(default_factory=dict)

    @property
    def is_colour(self) -> bool:
        """True for a colour 2D image, read as ``(rows, cols, 3|4)``."""
        return "channels" in self.header


_SUFFIXES = {
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".bmp": "bmp",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".nii": "nifti",
    ".nii.gz": "nifti",
    ".nrrd": "nrrd",
    ".nhdr": "nrrd",
    ".dcm": "dicom",
}


_PILLOW_FORMATS = {"PNG": "png", "JPEG": "jpeg", "BMP": "bmp", "TIFF": "tiff", "MPO": "jpeg"}

# image formats that are recognisable but not read: named in the error instead of "corrupt"
_UNSUPPORTED_MAGIC = {
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
    b"\x00\x00\x00\x0cjP  ": "JPEG 2000",
    b"\xff\x4f\xff\x51": "JPEG 2000 codestream",
    b"8BPS": "Photoshop (PSD)",
}


_LOSSY = {"jpeg"}


def _suffix(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return path.suffix.lower()


def format_from_bytes(head: bytes) -> str | None:
    """Format from a file's first bytes (352 suffice; gzip excluded), or None.

    One of ``"png"``, ``"jpeg"``, ``"bmp"``, ``"tiff"``, ``"nrrd"``, ``"dicom"``, ``"nifti"``
    (single-file NIfTI-1 or NIfTI-2): the table every reader and the web server's uploads use.

    Examples
    --------
    >>> format_from_bytes(b"\\x89PNG\\r\\n\\x1a\\n...."), format_from_bytes(b"hello")
    ('png', None)
    """
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"BM"):
        return "bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head.startswith(b"NRRD000"):
        return "nrrd"
    if head[128:132] == b"DICM":
        return "dicom"
    if head[344:348] == b"n+1\x00" or head[4:8] == b"n+2\x00":
        return "nifti"
    return None


def _unsupported_magic(head: bytes) -> str | None:
    """Name of a recognisable image format segloc does not read, from the first bytes."""
    for magic, name in _UNSUPPORTED_MAGIC.items():
        if head.startswith(magic):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    return None


def _sniff(path: Path) -> str | None:
    """Format from the first bytes, for files whose suffix says nothing."""
    with open(path, "rb") as f:
        head = f.read(352)
    if head.startswith(b"\x1f\x8b"):
        try:
            with gzip.open(path, "rb") as f:
                head = f.read(352)
        except (OSError, EOFError, zlib.error) as exc:
            if getattr(exc, "errno", None) is not None:
                raise
            return None
    return format_from_bytes(head)


def _format_of(path: Path) -> str:
    if path.is_dir():
        return "dicom"
    fmt = _SUFFIXES.get(_suffix(path))
    if fmt is None:
        fmt = _sniff(path)
    if fmt is None:
        with open(path, "rb") as f:
            other = _unsupported_magic(f.read(16))
        known = ", ".join(sorted(_SUFFIXES))
        if other is not None:
            raise UnsupportedFormat(path, f"{other} images are not read (known: {known})")
        raise UnsupportedFormat(
            path, f"unknown image format (suffix {_suffix(path)!r}; known: {known})"
        )
    return fmt


def is_lossy(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds a lossy format (JPEG), told as :func:`read_image` tells formats.

    By the suffix, else by the file's first bytes. A mask read from such a file is
    thresholded (:func:`interpret_mask`): compression blurs its values.

    Raises
    ------
    UnsupportedFormat
        For a file whose format cannot be told.
    """
    return _format_of(Path(path)) in _LOSSY


def _library_error(path: Path, exc: BaseException) -> CorruptFile:
    """A decoder's complaint as a :class:`CorruptFile` naming the file (one line)."""
    problem = str(exc) or type(exc).__name__
    return CorruptFile(path, f"cannot read ({type(exc).__name__}: {problem})")


def _fail(path: str | os.PathLike | None, problem: str) -> ValueError:
    if path is None:
        return ValueError(f"mask {problem}")
    return SeglocIOError(f"{path}: mask {problem}", path=path)


# spaces whose first two axes point the other way from RAS (sign per world axis)
_NRRD_SPACE_SIGNS = {
    "right-anterior-superior": (1, 1, 1),
    "ras": (1, 1, 1),
    "left-anterior-superior": (-1, 1, 1),
    "las": (-1, 1, 1),
    "left-posterior-superior": (-1, -1, 1),
    "lps": (-1, -1, 1),
}


_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
