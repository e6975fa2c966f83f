"""NRRD (attached and detached headers) through the header lines, data read bounded."""

from __future__ import annotations

import bz2
import contextlib
import errno
import io as _bytesio
import os
import stat
import zlib
from pathlib import Path

import numpy as np

from segloc.io.checks import (
    _CHUNK,
    _check_affine,
    _check_dims,
    _header_checked,
    _Options,
    _product,
    _read_upto,
    _spacing,
    _truncated,
)
from segloc.io.errors import (
    CorruptFile,
    UnsupportedFormat,
)
from segloc.io.formats import (
    _NRRD_SPACE_SIGNS,
    ImageMeta,
)

# bytes per value of the NRRD type names (teem's nrrdType; pynrrd decodes the values)
_NRRD_TYPE_NAMES = {
    1: "signed char, int8, int8_t, uchar, unsigned char, uint8, uint8_t",
    2: "short, short int, signed short, signed short int, int16, int16_t, ushort, "
    "unsigned short, unsigned short int, uint16, uint16_t",
    4: "int, signed int, int32, int32_t, uint, unsigned int, uint32, uint32_t, float",
    8: "longlong, long long, long long int, signed long long, signed long long int, int64, "
    "int64_t, ulonglong, unsigned long long, unsigned long long int, uint64, uint64_t, double",
}


_NRRD_ITEMSIZE = {
    name.strip(): size for size, names in _NRRD_TYPE_NAMES.items() for name in names.split(",")
}


_NRRD_ENCODINGS = {"raw", "gzip", "gz", "bzip2", "bz2", "ascii", "text", "txt"}


_NRRD_LOCATION = {"datafile", "lineskip", "byteskip"}


_NRRD_MAX_HEADER = 1 << 20  # NRRD headers are a few KB; stop looking for the blank line here

_NRRD_MAX_LINE_SKIP = 100_000
# errors of a data file name itself, not of the system reading it
_NOT_A_NAME = (errno.ENAMETOOLONG, errno.ENOTDIR, errno.ELOOP)


def _nrrd_header_lines(f, path: Path, detached: bool) -> tuple[list[bytes], int]:
    """Header lines up to the blank line, and the header's length in bytes (bounded)."""
    lines: list[bytes] = []
    total = 0
    while True:
        line = f.readline(_NRRD_MAX_HEADER - total + 1)
        total += len(line)
        if total > _NRRD_MAX_HEADER:
            raise CorruptFile(
                path, f"cannot read (NRRD header longer than {_NRRD_MAX_HEADER:,} bytes)"
            )
        if not line:
            if detached or not lines:
                return lines, total
            raise CorruptFile(
                path, "cannot read: truncated, the NRRD header has no end (blank line)"
            )
        if not line.strip(b"\r\n"):
            return lines, total
        lines.append(line)


def _nrrd_int(path: Path, hdr: dict, *names: str, default: int = 0) -> int:
    for name in names:
        if name in hdr:
            try:
                return int(hdr[name])
            except (TypeError, ValueError):
                raise CorruptFile(path, f"NRRD field {name!r} must be an integer") from None
    return default


def _read_stream(
    path: Path, fh, encoding: str, need: int, skip: int, opts: _Options
) -> tuple[bytes, int]:
    """At most ``skip + need`` decoded bytes of NRRD data; (data, bytes present)."""
    if encoding == "raw":
        if skip:
            fh.seek(skip, os.SEEK_CUR)
        buf = _read_upto(fh, need)
        return buf, len(buf)
    if encoding in ("gzip", "gz"):
        # max_length: inflate no further than the declared size, however much is there
        dec = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib header
        want, out, tail = skip + need, bytearray(), b""
        while len(out) < want and not dec.eof:
            if not tail:
                tail = fh.read(_CHUNK)
                if not tail:
                    break
            out += dec.decompress(tail, want - len(out))
            tail = dec.unconsumed_tail
        del out[:skip]
        return out, len(out)
    if encoding in ("bzip2", "bz2"):
        dec = bz2.BZ2Decompressor()
        want, out = skip + need, bytearray()
        while len(out) < want and not dec.eof:
            chunk = fh.read(_CHUNK) if dec.needs_input else b""
            if dec.needs_input and not chunk:
                break
            out += dec.decompress(chunk, want - len(out))
        del out[:skip]
        return out, len(out)
    # ascii: a value takes at most ~30 characters; read no more text than that
    text = fh.read(need * 32 + 4096)
    return text, len(text)


def _read_nrrd(path: Path, opts: _Options) -> tuple[np.ndarray, ImageMeta]:
    import nrrd

    detached = path.suffix.lower() == ".nhdr"
    with open(path, "rb") as f:
        lines, header_len = _nrrd_header_lines(f, path, detached)
        if not lines:
            raise CorruptFile(path, "cannot read (empty NRRD header)")
        try:
            hdr = nrrd.read_header([ln.decode("latin-1") for ln in lines])
        except nrrd.NRRDError as exc:
            raise CorruptFile(path, f"cannot read (NRRD header: {exc})") from None
        except (ValueError, TypeError, IndexError, KeyError) as exc:
            raise CorruptFile(
                path, f"cannot read (NRRD header: {type(exc).__name__}: {exc})"
            ) from None
        for name in ("dimension", "type", "encoding", "sizes"):
            if name not in hdr:
                raise CorruptFile(path, f"NRRD header lacks the required field {name!r}")
        sizes = _check_dims(path, hdr["sizes"], "size")
        if int(hdr["dimension"]) != len(sizes):
            raise CorruptFile(
                path, f"NRRD dimension is {hdr['dimension']} but sizes lists {len(sizes)} values"
            )
        type_name = str(hdr["type"]).strip().lower()
        if type_name == "block":
            raise UnsupportedFormat(path, "NRRD type 'block' is not read")
        if type_name not in _NRRD_ITEMSIZE:
            raise CorruptFile(path, f"unknown NRRD data type {hdr['type']!r}")
        itemsize = _NRRD_ITEMSIZE[type_name]
        encoding = str(hdr["encoding"]).strip().lower()
        if encoding not in _NRRD_ENCODINGS:
            raise UnsupportedFormat(path, f"NRRD encoding {hdr['encoding']!r} is not read")
        if itemsize > 1 and encoding not in ("ascii", "text", "txt"):
            if str(hdr.get("endian", "")).lower() not in ("little", "big"):
                raise CorruptFile(
                    path, f"NRRD endian must be little or big, got {hdr.get('endian')!r}"
                )
        voxels = _product(sizes)
        need = voxels * itemsize
        opts.limits.check(path, voxels, need, detail=f"{' x '.join(map(str, sizes))} {type_name}")
        spacing, affine = _nrrd_geometry(path, hdr, sizes)
        line_skip = _nrrd_int(path, hdr, "line skip", "lineskip")
        byte_skip = _nrrd_int(path, hdr, "byte skip", "byteskip")
        if not 0 <= line_skip <= _NRRD_MAX_LINE_SKIP:
            raise CorruptFile(
                path, f"NRRD line skip is {line_skip} (must be 0..{_NRRD_MAX_LINE_SKIP})"
            )
        if byte_skip < -1:
            raise CorruptFile(path, f"NRRD byte skip is {byte_skip} (must be >= -1)")
        opts.limits.check(path, voxels, max(byte_skip, 0), detail=f"byte skip {byte_skip:,}")
        data_file = hdr.get("data file", hdr.get("datafile"))
        if data_file is None and detached:
            raise CorruptFile(path, "NRRD header (.nhdr) names no data file")
        with contextlib.ExitStack() as stack:
            if data_file is not None:
                name = str(data_file).strip()
                if name.upper().startswith("LIST") or "%" in name:
                    raise UnsupportedFormat(path, "NRRD data split over several files is not read")
                target = Path(name) if os.path.isabs(name) else path.parent / name
                try:
                    st = target.stat()
                except FileNotFoundError:
                    raise CorruptFile(
                        path, f"names data file {target}, which does not exist"
                    ) from None
                except (OSError, ValueError) as exc:
                    # a name no file can have (too long, a NUL byte, a file as a folder): the
                    # header's fault, not the system's
                    if isinstance(exc, OSError) and exc.errno not in _NOT_A_NAME:
                        raise
                    shown = name if len(name) <= 80 else f"{name[:80]}..."
                    raise CorruptFile(
                        path, f"names data file {shown!r}, which cannot be a file name here"
                    ) from None
                if not stat.S_ISREG(st.st_mode):
                    raise CorruptFile(
                        path, f"names data file {target}, which is not a regular file"
                    )
                fh = stack.enter_context(open(target, "rb"))
            else:
                fh = f
                fh.seek(header_len)
            _header_checked(opts, "nrrd", sizes, nbytes=need)
            for _ in range(line_skip):
                if not fh.readline(_NRRD_MAX_HEADER):
                    break
            if byte_skip == -1:
                if encoding != "raw":
                    raise UnsupportedFormat(
                        path, "NRRD byte skip -1 with compressed data is not read"
                    )
                end = fh.seek(0, os.SEEK_END)
                fh.seek(max(0, end - need))
                byte_skip = 0
            data, present = _read_stream(path, fh, encoding, need, byte_skip, opts)
    note = None
    # pynrrd decodes the bytes already read, from memory: no second look at the file
    local = {k: v for k, v in hdr.items() if k.replace(" ", "") not in _NRRD_LOCATION}
    if encoding not in ("ascii", "text", "txt"):
        if present < need:
            note = _truncated(path, opts, needed=need, present=present)
            data = data[:present] + bytes(need - present)
        local["encoding"] = "raw"
    arr = nrrd.read_data(local, _bytesio.BytesIO(bytes(data)), index_order="F")
    arr = np.asarray(arr)
    header = {"dtype": str(arr.dtype), "nrrd": {k: v for k, v in hdr.items() if k != "data file"}}
    if note is not None:
        header["truncated"] = note
    return arr, ImageMeta(str(path), "nrrd", spacing, affine, header)


def _nrrd_geometry(path: Path, hdr: dict, sizes) -> tuple[tuple[float, ...], np.ndarray | None]:
    ndim = len(sizes)
    spacing: tuple[float, ...] = (1.0,) * ndim
    affine = None
    directions = hdr.get("space directions")
    if directions is not None:
        rows = []
        for i, d in enumerate(directions):
            # "none" (a non-spatial axis) comes as None or as a row of NaN
            if d is None or np.all(np.isnan(np.asarray(d, dtype=float))):
                rows.append(None)
                continue
            d = np.asarray(d, dtype=float).reshape(-1)
            if not np.isfinite(d).all():
                raise CorruptFile(path, f"NRRD space direction of axis {i} holds NaN or infinity")
            rows.append(d)
        if len(rows) != ndim:
            raise CorruptFile(path, f"NRRD space directions list {len(rows)} axes, sizes {ndim}")
        norms = [1.0 if r is None else float(np.linalg.norm(r)) for r in rows]
        spacing = _spacing(path, norms, sizes, what="NRRD space direction length")
        space = str(hdr.get("space", "")).lower()
        if (
            space in _NRRD_SPACE_SIGNS
            and ndim == 3
            and all(r is not None and r.shape == (3,) for r in rows)
        ):
            affine = np.eye(4)
            affine[:3, :3] = np.stack(rows, axis=1)  # column j = world step of array axis j
            origin = hdr.get("space origin")
            origin = np.zeros(3) if origin is None else np.asarray(origin, float).reshape(-1)
            if origin.shape != (3,):
                raise CorruptFile(path, f"NRRD space origin must have 3 values, got {origin.size}")
            affine[:3, 3] = origin
            affine = _check_affine(path, np.diag([*_NRRD_SPACE_SIGNS[space], 1.0]) @ affine)
    elif hdr.get("spacings") is not None:
        values = np.asarray(hdr["spacings"], dtype=float).reshape(-1)
        if values.size != ndim:
            raise CorruptFile(path, f"NRRD spacings list {values.size} values, sizes {ndim}")
        # NaN is the spec's "no spacing on this axis"; a sign gives the axis' direction
        values = np.where(np.isnan(values), 1.0, np.abs(values))
        spacing = _spacing(path, values, sizes, what="NRRD spacing")
    return spacing, affine
