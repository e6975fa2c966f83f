"""Reading and writing images, volumes and masks.

One entry point per direction: :func:`read_image` / :func:`read_mask` and
:func:`write_image` / :func:`write_mask`. The format comes from the file name
(then from the first bytes when the suffix is unknown); a directory is a DICOM
series.

Array layout follows ``docs/conventions.md``: 2D images are ``(rows, cols)`` or
``(rows, cols, channels)``; volumes are ``(rows, cols, slices)`` -- NIfTI and NRRD
in the voxel order their readers give (first index = first file axis), multi-page
TIFF and DICOM series stacked along the last axis.

World coordinates: :attr:`ImageMeta.affine` maps a 0-based array index
``(i, j, k, 1)`` to RAS+ millimetres, as nibabel's ``img.affine`` does. NRRD
files stating a left-posterior-superior space and DICOM (whose patient system is
LPS) are converted on reading and back on writing, so an affine read from any of
them can be written to any other.

Every write is atomic (:func:`segloc._validation.atomic_path`): a reader never sees
a half-written file, and a failed write leaves the target as it was.

File problems raise typed errors (:mod:`segloc.io.errors`), all ``ValueError``s with a
one-line message that starts with the path: :class:`UnsupportedFormat`,
:class:`CorruptFile` (truncated, malformed, impossible header values) and
:class:`ResourceLimitExceeded` (a header declaring more than ``max_voxels`` or
``max_bytes``, refused before anything is decoded), under one base
:class:`SeglocIOError` (also named :class:`ImageReadError`). A system error (permission,
I/O) stays an ``OSError``. Limits, truncation, NaN handling and the sandbox for
untrusted files are described in ``docs/hardening.md``.

:func:`inspect` checks a file's header without decoding it, and :func:`check_files` every
file of a job before the job starts (headers, then whole reads when the files are small).
"""

from segloc.io.errors import (
    CorruptFile,
    ImageReadError,
    ResourceLimitExceeded,
    SeglocIOError,
    UnsupportedFormat,
)
from segloc.io.files import (
    case_stem,
    check_compatible,
    list_images,
    mask_suffix,
    match_files,
    output_paths,
)
from segloc.io.formats import ImageMeta, is_lossy
from segloc.io.headers import FULL_CHECK_BYTES, Header, check_files, inspect
from segloc.io.limits import (
    Limits,
    default_limits,
    default_untrusted,
    set_default_limits,
    set_default_untrusted,
)
from segloc.io.masks import interpret_mask, read_mask
from segloc.io.read import describe, image_size, read_image
from segloc.io.sandbox import read_untrusted
from segloc.io.write import write_csv, write_image, write_mask

__all__ = [
    "FULL_CHECK_BYTES",
    "CorruptFile",
    "Header",
    "ImageMeta",
    "ImageReadError",
    "Limits",
    "ResourceLimitExceeded",
    "SeglocIOError",
    "UnsupportedFormat",
    "case_stem",
    "check_compatible",
    "check_files",
    "describe",
    "image_size",
    "inspect",
    "interpret_mask",
    "is_lossy",
    "list_images",
    "mask_suffix",
    "match_files",
    "output_paths",
    "read_image",
    "read_mask",
    "read_untrusted",
    "set_default_limits",
    "set_default_untrusted",
    "default_limits",
    "default_untrusted",
    "write_csv",
    "write_image",
    "write_mask",
]
