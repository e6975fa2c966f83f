"""Taking files in: the format told from the bytes, sizes checked from headers, then segloc.io.

A file reaches the readers only after its header says it fits the limits, so a decompression
bomb, an oversized volume or a zip of millions of files is refused before any pixel is
decoded. Nothing the client sends becomes part of a server path: uploads are written under
fixed names chosen here (``upload``, then ``image<suffix>`` from the sniffed format; zip
members become ``dicom/00000.dcm``...), and a detached NRRD header, whose ``data file`` field
names another file, is refused.
"""

from __future__ import annotations

import bz2
import gzip
import shutil
import warnings
import zipfile
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np

from segloc.io import ImageMeta, read_image, read_mask
from segloc.io.formats import format_from_bytes
from segloc.serve.limits import Limits

__all__ = ["UploadError", "load_image", "load_mask", "prepare", "receive", "sniff"]

# sniffed format -> the suffix the file is renamed to, so that segloc.io and nibabel take
# their lazy, header-first paths (a .nii.gz is read through a gzip stream, never inflated whole)
_SUFFIX = {
    "png": ".png",
    "jpeg": ".jpg",
    "bmp": ".bmp",
    "tiff": ".tif",
    "nifti": ".nii",
    "nifti-gz": ".nii.gz",
    "nrrd": ".nrrd",
    "dicom": ".dcm",
}
_CHUNK = 1 << 20


class UploadError(ValueError):
    """A file the server refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def sniff(head: bytes, gunzipped: bytes | None = None) -> str | None:
    """Format from a file's first bytes (352 suffice), or None.

    Parameters
    ----------
    head : bytes
        The first bytes of the file.
    gunzipped : bytes, optional
        The first bytes of its decompressed content when ``head`` starts a gzip stream.

    Returns
    -------
    str or None
        ``"png"``, ``"jpeg"``, ``"bmp"``, ``"tiff"``, ``"nifti"``, ``"nifti-gz"``, ``"nrrd"``,
        ``"dicom"`` or ``"zip"``.

    Examples
    --------
    >>> sniff(b"\\x89PNG\\r\\n\\x1a\\n...."), sniff(b"PK\\x03\\x04"), sniff(b"hello")
    ('png', 'zip', None)
    """
    # a zip's first bytes cannot start any other format; a DICOM preamble may hold anything
    if head.startswith(b"PK\x03\x04") and head[128:132] != b"DICM":
        return "zip"
    fmt = format_from_bytes(head)
    if fmt is None and head[344:348] == b"ni1\x00":
        return "nifti"  # the header of a NIfTI-1 pair (.hdr/.img)
    if fmt is None and head.startswith(b"\x1f\x8b") and gunzipped is not None:
        return "nifti-gz" if format_from_bytes(gunzipped) == "nifti" else None
    return fmt


async def receive(stream: AsyncIterator[bytes], path: Path, limit: int) -> int:
    """Write a request body to ``path``, refusing it (413) as soon as it passes ``limit`` bytes.

    Returns
    -------
    int
        Bytes written.

    Raises
    ------
    UploadError
        Over the limit (413) or empty (400).
    """
    size = 0
    with open(path, "wb") as f:
        async for chunk in stream:
            size += len(chunk)
            if size > limit:
                raise UploadError(f"upload is over the limit of {limit >> 20} MiB", 413)
            f.write(chunk)
    if size == 0:
        raise UploadError("upload is empty")
    return size


def _head(path: Path) -> tuple[bytes, bytes | None]:
    with open(path, "rb") as f:
        head = f.read(352)
    gunzipped = None
    if head.startswith(b"\x1f\x8b"):
        try:
            with gzip.open(path, "rb") as f:
                gunzipped = f.read(352)
        except (OSError, EOFError, zlib.error):
            gunzipped = b""
    return head, gunzipped


def _check_count(what: str, voxels: int, limits: Limits) -> None:
    if voxels > limits.max_voxels:
        raise UploadError(
            f"{what} has {voxels:,} voxels, over the limit of {limits.max_voxels:,}", 413
        )


def _check_pillow(path: Path, limits: Limits) -> None:
    from PIL import Image

    with warnings.catch_warnings():
        # the size is checked below against our own limit, before any pixel is decoded
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as im:  # reads the header only
                width, height = im.size
                frames = getattr(im, "n_frames", 1)
        except Image.DecompressionBombError:
            raise UploadError("image is too large (decompression bomb guard)", 413) from None
        except Exception as exc:
            raise UploadError(f"corrupt image ({type(exc).__name__}: {exc})") from None
    _check_count("image", width * height * frames, limits)


def _check_tiff(path: Path, limits: Limits) -> None:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            voxels = sum(int(np.prod(s.shape, dtype=np.int64)) for s in tif.series)
    except Exception as exc:
        raise UploadError(f"corrupt TIFF ({type(exc).__name__}: {exc})") from None
    _check_count("TIFF", voxels, limits)


def _check_nifti(path: Path, limits: Limits) -> None:
    import nibabel as nib

    try:
        img = nib.load(path)  # the header only; the voxels are read later, lazily
        shape = tuple(int(s) for s in img.shape)
    except Exception as exc:
        raise UploadError(f"corrupt NIfTI ({type(exc).__name__}: {exc})") from None
    if len(shape) > 3 and any(s != 1 for s in shape[3:]):
        raise UploadError(f"NIfTI must be 2D or 3D, got shape {shape}")
    _check_count("NIfTI volume", int(np.prod(shape, dtype=np.int64)), limits)


def _nrrd_header(path: Path) -> tuple[dict[str, str], int]:
    """NRRD fields (lower-case keys) and the offset of the data that follows them."""
    with open(path, "rb") as f:
        head = f.read(_CHUNK)
    end = head.find(b"\n\n")
    if end < 0:
        raise UploadError("corrupt NRRD (no end of header in the first MiB)")
    fields: dict[str, str] = {}
    for line in head[:end].decode("latin-1").splitlines()[1:]:
        if line.startswith("#") or ":" not in line:
            continue
        key, _, value = line.partition(":")
        fields[key.strip().lower()] = value.lstrip("=").strip()
    return fields, end + 2


def _inflated_size(path: Path, offset: int, encoding: str, limit: int) -> int:
    """Bytes the compressed payload inflates to, counting no further than ``limit`` + 1."""
    if encoding in ("gzip", "gz"):
        inflater = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib header
    else:
        inflater = bz2.BZ2Decompressor()
    total = 0
    with open(path, "rb") as f:
        f.seek(offset)
        while chunk := f.read(_CHUNK):
            if encoding == "bzip2":
                total += len(inflater.decompress(chunk))
            else:
                out = inflater.decompress(chunk, _CHUNK)
                total += len(out)
                while inflater.unconsumed_tail and total <= limit:
                    out = inflater.decompress(inflater.unconsumed_tail, _CHUNK)
                    total += len(out)
            if total > limit:
                return total
    return total


def _check_nrrd(path: Path, limits: Limits) -> None:
    fields, offset = _nrrd_header(path)
    if "data file" in fields or "datafile" in fields:
        raise UploadError("NRRD with a detached data file is refused; send an attached .nrrd")
    try:
        sizes = [int(v) for v in fields["sizes"].split()]
    except (KeyError, ValueError):
        raise UploadError("corrupt NRRD (no valid sizes field)") from None
    voxels = int(np.prod(sizes, dtype=np.int64))
    _check_count("NRRD volume", voxels, limits)
    encoding = fields.get("encoding", "raw").lower()
    if encoding in ("gzip", "gz", "bzip2", "bz2"):
        # pynrrd inflates the whole payload in memory: bound it first, with bounded memory
        encoding = "bzip2" if encoding.startswith("bz") else "gzip"
        expected = voxels * 8  # the widest NRRD type
        limit = min(expected + _CHUNK, limits.max_unpacked_bytes)
        try:
            inflated = _inflated_size(path, offset, encoding, limit)
        except (zlib.error, OSError, EOFError) as exc:
            raise UploadError(f"corrupt NRRD payload ({exc})") from None
        if inflated > limit:
            raise UploadError(
                "NRRD payload inflates beyond its stated size (compression bomb)", 413
            )


def _check_dicom(path: Path, limits: Limits) -> int:
    """Pixels of one DICOM file, from its header."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    except Exception as exc:
        raise UploadError(f"corrupt DICOM ({type(exc).__name__}: {exc})") from None
    voxels = rows * cols * frames
    _check_count("DICOM image", voxels, limits)
    return voxels


def _unzip_dicom(path: Path, folder: Path, limits: Limits) -> Path:
    """Extract a zipped DICOM series under fixed names; the members' own names are not used."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UploadError(f"corrupt zip ({exc})") from None
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        if not members:
            raise UploadError("zip holds no files")
        if len(members) > limits.max_zip_members:
            raise UploadError(
                f"zip holds {len(members)} files, over the limit of {limits.max_zip_members}", 413
            )
        declared = sum(m.file_size for m in members)
        if declared > limits.max_unpacked_bytes:
            raise UploadError(
                f"zip unpacks to {declared >> 20} MiB, over the limit of "
                f"{limits.max_unpacked_bytes >> 20} MiB",
                413,
            )
        out = folder / "dicom"
        out.mkdir()
        for i, member in enumerate(members):
            target = out / f"{i:05d}.dcm"
            written = 0
            try:
                with archive.open(member) as src, open(target, "wb") as dst:
                    # the declared size can lie: stop one chunk past it
                    while chunk := src.read(_CHUNK):
                        written += len(chunk)
                        if written > member.file_size:
                            raise UploadError("zip member inflates beyond its size (bomb)", 413)
                        dst.write(chunk)
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
                raise UploadError(f"corrupt zip member ({exc})") from None
    slices = [p for p in sorted(out.iterdir()) if sniff(p.read_bytes()[:352]) == "dicom"]
    if not slices:
        raise UploadError("zip holds no DICOM files")
    _check_count("DICOM series", _check_dicom(slices[0], limits) * len(slices), limits)
    return out


def prepare(path: Path, folder: Path, limits: Limits, *, move: bool = True) -> Path:
    """Check a file against the limits and give it a name its reader will take.

    Parameters
    ----------
    path : Path
        The file as received, or a file of ``--data``.
    folder : Path
        The session's own folder, where a zip is unpacked and a file renamed or linked.
    limits : Limits
    move : bool
        Move ``path`` (a received file) under its new name; else link to it (a data file,
        which must stay where it is).

    Returns
    -------
    Path
        A file, or a folder of DICOM files, for :func:`segloc.io.read_image`.

    Raises
    ------
    UploadError
        Unknown format (415), over a limit (413), corrupt header (400).
    """
    fmt = sniff(*_head(path))
    if fmt is None:
        raise UploadError(
            "unknown file format (expected PNG, JPEG, BMP, TIFF, NIfTI, NRRD, DICOM "
            "or a zipped DICOM series)",
            415,
        )
    if fmt == "zip":
        out = _unzip_dicom(path, folder, limits)
        if move:
            path.unlink()
        return out
    named = folder / f"image{_SUFFIX[fmt]}"
    if move:
        path.replace(named)
    else:
        named.symlink_to(path)
    checks = {
        "png": _check_pillow,
        "jpeg": _check_pillow,
        "bmp": _check_pillow,
        "tiff": _check_tiff,
        "nifti": _check_nifti,
        "nifti-gz": _check_nifti,
        "nrrd": _check_nrrd,
        "dicom": _check_dicom,
    }
    checks[fmt](named, limits)
    return named


def _one_line(exc: BaseException, path: Path, name: str) -> str:
    """segloc.io's message without the server's temporary path, on one line."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text.replace(str(path), name).replace(f"{name}: ", "", 1)


def _discard(path: Path) -> None:
    if path.is_symlink():
        path.unlink()  # a link to a data file: the file itself stays
    elif path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def load_image(
    path: Path, folder: Path, limits: Limits, *, name: str = "upload", move: bool = True
) -> tuple[np.ndarray, np.ndarray, ImageMeta]:
    """Check and read an image or volume; a received file (``move=True``) is removed after.

    Returns
    -------
    image : ndarray
        As :func:`segloc.io.read_image` returns it (colour images keep their channels).
    grey : ndarray
        The image the methods work on: ``image`` itself, or its luminance for colour images.
    meta : ImageMeta

    Raises
    ------
    UploadError
        As :func:`prepare`, and for a file the readers cannot decode or a shape the server
        does not show (4D, 1D).
    """
    readable = prepare(path, folder, limits, move=move)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. uneven DICOM spacing: still shown
            image, meta = read_image(readable)
            grey = read_image(readable, as_gray=True)[0] if "channels" in meta.header else image
    except MemoryError:
        raise UploadError("image does not fit in memory", 413) from None
    except Exception as exc:  # every reader fails its own way; the client gets one line
        raise UploadError(f"cannot read {name}: {_one_line(exc, readable, name)}") from None
    finally:
        _discard(readable)
    same = grey is image
    # a memory map of the removed file, or a view: own the memory, so that it can be counted
    image = image if image.flags.owndata else np.array(image)
    grey = image if same else (grey if grey.flags.owndata else np.array(grey))
    if grey.ndim not in (2, 3) or min(grey.shape) < 1:
        raise UploadError(f"{name} must be a 2D image or a 3D volume, got shape {image.shape}")
    if image.dtype.kind not in "biuf":
        raise UploadError(f"{name} has pixels of type {image.dtype}, not numbers")
    meta.path = name
    return image, grey, meta


def load_mask(
    path: Path, folder: Path, limits: Limits, *, name: str = "mask", move: bool = True
) -> np.ndarray:
    """Check and read a ground-truth mask (:func:`segloc.io.read_mask`), as :func:`load_image`.

    Returns
    -------
    ndarray
        ``bool`` mask or ``int32`` label map.
    """
    readable = prepare(path, folder, limits, move=move)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a JPEG mask is thresholded at 128, as documented
            mask, _ = read_mask(readable)
    except MemoryError:
        raise UploadError("mask does not fit in memory", 413) from None
    except Exception as exc:
        raise UploadError(f"cannot read {name}: {_one_line(exc, readable, name)}") from None
    finally:
        _discard(readable)
    return np.array(mask)
