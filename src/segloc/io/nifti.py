"""NIfTI (.nii, .nii.gz): nibabel header checked, gzip inflated only as far as declared."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from segloc.io.checks import (
    _check_affine,
    _check_dims,
    _header_checked,
    _Options,
    _product,
    _read_upto,
    _readinto_full,
    _spacing,
    _truncated,
)
from segloc.io.errors import (
    CorruptFile,
    UnsupportedFormat,
)
from segloc.io.formats import (
    ImageMeta,
)


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
        if not gz:
            present = max(0, min(raw_bytes, path.stat().st_size - offset))
            if present < raw_bytes:  # known before anything is allocated
                note = _truncated(path, opts, needed=raw_bytes, present=present)
        _header_checked(opts, "nifti", shape, nbytes=voxels * out_dtype.itemsize)
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
