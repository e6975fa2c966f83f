"""Formats: told from the file name, else from the first bytes; what a reader learned."""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class ImageReadError(ValueError):
    """A file that cannot be read or written as asked; the message starts with its path."""


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


_LOSSY = {"jpeg"}


def _suffix(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return path.suffix.lower()


def _sniff(path: Path) -> str | None:
    """Format from the first bytes, for files whose suffix says nothing."""
    with open(path, "rb") as f:
        head = f.read(352)
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
    if head.startswith(b"\x1f\x8b"):
        try:
            with gzip.open(path, "rb") as f:
                head = f.read(352)
        except (OSError, EOFError):
            return None
    if head[344:348] == b"n+1\x00" or head[4:8] == b"n+2\x00":
        return "nifti"
    return None


def _format_of(path: Path) -> str:
    if path.is_dir():
        return "dicom"
    fmt = _SUFFIXES.get(_suffix(path))
    if fmt is None:
        fmt = _sniff(path)
    if fmt is None:
        raise ImageReadError(
            f"{path}: unknown image format (suffix {_suffix(path)!r}; known: "
            f"{', '.join(sorted(_SUFFIXES))})"
        )
    return fmt


def is_lossy(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds a lossy format (JPEG), told as :func:`read_image` tells formats.

    By the suffix, else by the file's first bytes. A mask read from such a file is
    thresholded (:func:`interpret_mask`): compression blurs its values.

    Raises
    ------
    ImageReadError
        For a file whose format cannot be told.
    """
    return _format_of(Path(path)) in _LOSSY


def _library_error(path: Path, exc: BaseException) -> ImageReadError:
    problem = str(exc) or type(exc).__name__
    return ImageReadError(f"{path}: cannot read ({type(exc).__name__}: {problem})")


def _fail(path: str | os.PathLike | None, problem: str) -> ValueError:
    if path is None:
        return ValueError(f"mask {problem}")
    return ImageReadError(f"{path}: mask {problem}")


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
