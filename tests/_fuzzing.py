"""Seeds, mutations and a read pool shared by ``test_io_fuzz.py`` and ``fuzz_readers.py``.

A *seed* is a small valid file of one format, written by an independent library
(Pillow, tifffile, nibabel, pynrrd, pydicom, json, ElementTree). A *case* is a seed with
one mutation: a truncation (0, header - 1, header, 50 %, length - 1), bytes of the header
flipped, or one field edited to a value a reader must refuse (a dimension of 2**31 - 1,
0 or -1, a NaN or zero spacing, an unknown data type, data past the end, a ``.gz`` name
on bytes that are not gzip ...).

:class:`ReadPool` reads cases in worker processes, each read under a time limit and an
RSS cap enforced from outside (the worker is killed), so that a hang, a crash of a
native decoder or a runaway allocation is reported as such instead of taking the test
run down. An outcome is ``"array"`` (a valid array or record), ``"typed"`` (one of
segloc's typed errors, message starting with the path) or ``"failure"`` (anything else).
"""

from __future__ import annotations

import gzip
import io as _bytesio
import json
import multiprocessing as mp
import os
import re
import shutil
import struct
import time
import traceback
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CRASHERS = HERE / "data" / "crashers"

# every fuzzed read runs with these limits: a header above them must be refused before
# decoding, so that no mutation can make a worker allocate more than the RSS cap
READ_LIMITS = {"max_bytes": 64 * 2**20, "max_voxels": 16 * 2**20}
RSS_CAP_MB = 300  # growth of a worker's resident memory during one read
TIME_LIMIT = 10.0  # seconds per read

# --------------------------------------------------------------------------- readers


def _read_image(path: str):
    from segloc import io

    try:
        return io.read_image(path, **READ_LIMITS)
    except TypeError as exc:  # before the limits existed (the code these tests were run on)
        if "max_bytes" not in str(exc):
            raise
        return io.read_image(path)


def _read_mask(path: str):
    from segloc import io

    try:
        return io.read_mask(path, **READ_LIMITS)
    except TypeError as exc:
        if "max_bytes" not in str(exc):
            raise
        return io.read_mask(path)


def _read_box_truth(path: str):
    from segloc.localize.annotations import read_box_truth

    return read_box_truth(path)


def _read_voc(path: str):
    from segloc.localize.annotations import read_voc_xml

    return read_voc_xml(path)


def _read_csv(path: str):
    from segloc.localize.annotations import read_box_csv

    return read_box_csv(path)


PRED_TRUTH = {
    "images": [
        {"id": 1, "file_name": "a.jpg", "height": 100, "width": 120},
        {"id": 2, "file_name": "b.jpg", "height": 100, "width": 120},
    ],
    "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 30, 20], "area": 600},
        {"id": 2, "image_id": 2, "category_id": 2, "bbox": [50, 40, 20, 30], "area": 600},
    ],
}


def _score_predictions(path: str):
    """What ``segloc evaluate-boxes`` does with a prediction file, against a fixed truth."""
    from segloc import coco
    from segloc.detection_metrics import evaluate_detections
    from segloc.localize import annotations

    truth = {k: [dict(v) for v in vs] for k, vs in PRED_TRUTH.items()}
    if hasattr(annotations, "read_box_predictions"):
        results = annotations.read_box_predictions(path, truth)
    else:  # the CLI's code before read_box_predictions existed
        try:
            pred = json.loads(Path(path).read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
        results = coco.align_results(pred, truth, name=str(path))
    try:
        return evaluate_detections(truth, results)
    except (ValueError, KeyError, TypeError) as exc:  # as the CLI maps them
        if getattr(exc, "path", None) is not None or str(exc).startswith(str(path)):
            raise
        raise ValueError(f"{path}: {exc}") from None


READERS: dict[str, Callable[[str], object]] = {
    "image": _read_image,
    "mask": _read_mask,
    "box_truth": _read_box_truth,
    "voc": _read_voc,
    "csv": _read_csv,
    "predictions": _score_predictions,
}


def is_typed(exc: BaseException, path: str) -> bool:
    """One of segloc's typed errors (or, on code before they existed, a ValueError) naming
    the file first."""
    try:
        from segloc.io import SeglocIOError
    except ImportError:  # the code before the typed errors
        SeglocIOError = ValueError  # noqa: N806
    if not isinstance(exc, SeglocIOError):
        return False
    return str(exc).startswith(str(path)) and "\n" not in str(exc)


def _valid_result(result: object) -> str | None:
    """None if ``result`` is what a reader may return, else what is wrong with it."""
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], np.ndarray):
        arr = result[0]
        if arr.dtype == object or not (
            np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_
        ):
            return f"array of dtype {arr.dtype}"
        if arr.size == 0 or min(arr.shape) < 1:
            return f"empty array of shape {arr.shape}"
        return None
    if isinstance(result, (dict, list)):
        return None
    return f"unexpected result {type(result).__name__}"


# --------------------------------------------------------------------------- worker pool


def _status_kb(field_name: str, pid: int | str = "self") -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _reset_peak() -> bool:
    # writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def run_one(kind: str, path: str) -> dict:
    """Read ``path`` with reader ``kind`` in this process; the outcome as a dict."""
    outcome: dict = {"kind": kind, "path": path}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = READERS[kind](path)
        except BaseException as exc:  # noqa: BLE001 - every outcome is recorded
            if isinstance(exc, KeyboardInterrupt):
                raise
            outcome["error"] = type(exc).__name__
            outcome["message"] = str(exc)[:500]
            outcome["status"] = "typed" if is_typed(exc, path) else "failure"
            if outcome["status"] == "failure":
                outcome["traceback"] = "".join(traceback.format_exc(limit=-4))[-2000:]
        else:
            problem = _valid_result(result)
            outcome["status"] = "array" if problem is None else "failure"
            if problem:
                outcome["message"] = problem
    outcome["warnings"] = [str(w.message)[:200] for w in caught][:5]
    return outcome


def _worker_main(conn) -> None:  # pragma: no cover - runs in the worker processes
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import resource

        # a backstop for the shared machine; the parent's RSS cap is the real limit
        resource.setrlimit(resource.RLIMIT_AS, (6 * 2**30, 6 * 2**30))
    except (ImportError, ValueError, OSError):
        pass
    import segloc.io  # noqa: F401 - warm the imports so that a read's time is its own
    from segloc.localize import annotations  # noqa: F401

    conn.send({"ready": True})
    while True:
        task = conn.recv()
        if task is None:
            return
        kind, path = task
        resettable = _reset_peak()
        before = _status_kb("VmRSS")
        t0 = time.perf_counter()
        outcome = run_one(kind, path)
        outcome["seconds"] = time.perf_counter() - t0
        peak = _status_kb("VmHWM") if resettable else _status_kb("VmRSS")
        outcome["rss_growth_mb"] = max(0, peak - before) / 1024
        conn.send(outcome)


@dataclass
class _Worker:
    process: mp.Process
    conn: object


@dataclass
class ReadPool:
    """Worker processes that read cases one at a time, under a time limit and an RSS cap.

    A read that exceeds either, or kills its worker, becomes a ``"failure"`` outcome and
    the worker is replaced.
    """

    workers: int = 2
    time_limit: float = TIME_LIMIT
    rss_cap_mb: float = RSS_CAP_MB
    _pool: list[_Worker] = field(default_factory=list)

    def __enter__(self) -> ReadPool:
        ctx = mp.get_context("spawn")  # a clean interpreter: no state inherited from pytest
        self._ctx = ctx
        for _ in range(self.workers):
            self._pool.append(self._start())
        return self

    def _start(self) -> _Worker:
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(target=_worker_main, args=(child,), daemon=True)
        proc.start()
        child.close()
        if not parent.poll(120):
            proc.kill()
            raise RuntimeError("fuzz worker did not start")
        parent.recv()
        return _Worker(proc, parent)

    def __exit__(self, *exc) -> None:
        for w in self._pool:
            try:
                w.conn.send(None)
            except (OSError, BrokenPipeError):
                pass
        for w in self._pool:
            w.process.join(5)
            if w.process.is_alive():
                w.process.kill()
        self._pool.clear()

    def _replace(self, i: int) -> None:
        w = self._pool[i]
        if w.process.is_alive():
            w.process.kill()
        w.process.join(5)
        self._pool[i] = self._start()

    def run(self, tasks: list[tuple[str, str, str]]) -> list[dict]:
        """Outcomes of ``(case name, reader kind, path)`` tasks, in order."""
        results: list[dict | None] = [None] * len(tasks)
        pending = list(enumerate(tasks))
        busy: dict[int, tuple[int, float]] = {}  # worker -> (task index, start time)
        while pending or busy:
            for wi in range(len(self._pool)):
                if wi not in busy and pending:
                    ti, (_, kind, path) = pending.pop(0)
                    self._pool[wi].conn.send((kind, path))
                    busy[wi] = (ti, time.monotonic())
            time.sleep(0.002)
            for wi, (ti, start) in list(busy.items()):
                w = self._pool[wi]
                name, kind, path = tasks[ti]
                base = {"case": name, "kind": kind, "path": path}
                if w.conn.poll():
                    try:
                        results[ti] = {**base, **w.conn.recv()}
                    except EOFError:
                        results[ti] = {**base, "status": "failure", "message": "worker died"}
                        self._replace(wi)
                    del busy[wi]
                elif not w.process.is_alive():
                    code = w.process.exitcode
                    results[ti] = {
                        **base,
                        "status": "failure",
                        "message": f"worker crashed (exit code {code})",
                    }
                    self._replace(wi)
                    del busy[wi]
                elif time.monotonic() - start > self.time_limit:
                    results[ti] = {
                        **base,
                        "status": "failure",
                        "message": f"no answer within {self.time_limit} s (hang)",
                    }
                    self._replace(wi)
                    del busy[wi]
                else:
                    rss = _status_kb("VmRSS", w.process.pid) / 1024
                    if rss > self.rss_cap_mb + 600:  # the worker's own footprint is < 600 MB
                        results[ti] = {
                            **base,
                            "status": "failure",
                            "message": f"RSS {rss:.0f} MB above the cap",
                        }
                        self._replace(wi)
                        del busy[wi]
        for r in results:
            if r and r.get("status") != "failure" and r.get("rss_growth_mb", 0) > self.rss_cap_mb:
                r["status"] = "failure"
                r["message"] = f"RSS grew {r['rss_growth_mb']:.0f} MB during the read"
        return results  # type: ignore[return-value]


# --------------------------------------------------------------------------- seeds


@dataclass
class Seed:
    """A valid file (or folder) of one format and how to read it.

    ``files`` maps relative paths to bytes; ``target`` is the path read (a file, or a
    folder for a DICOM series); ``mutable`` is the file that mutations change;
    ``header`` is the length of its header in bytes.
    """

    name: str
    kind: str
    files: dict[str, bytes]
    target: str
    mutable: str
    header: int
    edits: dict[str, bytes] = field(default_factory=dict)


def _png_bytes(arr: np.ndarray, mode: str | None = None, **kw) -> bytes:
    from PIL import Image

    buf = _bytesio.BytesIO()
    im = Image.fromarray(arr) if mode is None else Image.fromarray(arr).convert(mode)
    im.save(buf, format=kw.pop("format", "PNG"), **kw)
    return buf.getvalue()


def _png_chunk_start(data: bytes, kind: bytes) -> int:
    pos = 8
    while pos + 8 <= len(data):
        length = struct.unpack(">I", data[pos : pos + 4])[0]
        if data[pos + 4 : pos + 8] == kind:
            return pos
        pos += 12 + length
    raise ValueError(f"no {kind!r} chunk")


def _png_ihdr(data: bytes, **fields: int) -> bytes:
    """PNG with IHDR fields replaced and the chunk's CRC recomputed."""
    start = 8
    ihdr = bytearray(data[start + 8 : start + 8 + 13])
    layout = {"width": (0, ">I"), "height": (4, ">I"), "depth": (8, "B"), "colour": (9, "B")}
    for k, v in fields.items():
        off, fmt = layout[k]
        struct.pack_into(fmt, ihdr, off, v & (0xFFFFFFFF if fmt == ">I" else 0xFF))
    crc = zlib.crc32(b"IHDR" + bytes(ihdr)) & 0xFFFFFFFF
    return data[: start + 8] + bytes(ihdr) + struct.pack(">I", crc) + data[start + 25 :]


def _png_seeds() -> list[Seed]:
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 255, (48, 64), dtype=np.uint8)
    rgb = rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)
    grey16 = rng.integers(0, 65535, (20, 24), dtype=np.uint16)
    seeds = []
    for name, data in (
        ("png_grey", _png_bytes(grey)),
        ("png_rgb", _png_bytes(rgb)),
        ("png_palette", _png_bytes(rgb, "P")),
        ("png_grey16", _png_bytes(grey16)),
    ):
        header = _png_chunk_start(data, b"IDAT")
        edits = {
            "width_2e31-1": _png_ihdr(data, width=2**31 - 1),
            "width_0": _png_ihdr(data, width=0),
            "height_negative": _png_ihdr(data, height=-1),
            "size_100000x100000": _png_ihdr(data, width=100_000, height=100_000),
            "depth_3": _png_ihdr(data, depth=3),
            "colour_type_5": _png_ihdr(data, colour=5),
            "idat_crc_broken": data[: header + 8] + b"\x00" + data[header + 9 :],
        }
        seeds.append(Seed(name, "image", {"x.png": data}, "x.png", "x.png", header, edits))
    mask = np.zeros((32, 32), np.uint8)
    mask[4:20, 6:30] = 1
    mask[22:30, 2:10] = 3
    data = _png_bytes(mask)
    seeds.append(
        Seed(
            "mask_png",
            "mask",
            {"m.png": data},
            "m.png",
            "m.png",
            _png_chunk_start(data, b"IDAT"),
            {"size_100000x100000": _png_ihdr(data, width=100_000, height=100_000)},
        )
    )
    return seeds


def _jpeg_seeds() -> list[Seed]:
    rng = np.random.default_rng(2)
    rgb = (rng.random((40, 48, 3)) * 255).astype(np.uint8)
    out = []
    for name, arr in (("jpeg_rgb", rgb), ("jpeg_grey", rgb[..., 0])):
        data = _png_bytes(arr, format="JPEG", quality=90)
        sof = data.index(b"\xff\xc0")
        sos = data.index(b"\xff\xda")

        def sof_edit(height=None, width=None, comps=None, data=data, sof=sof) -> bytes:
            b = bytearray(data)
            if height is not None:
                struct.pack_into(">H", b, sof + 5, height)
            if width is not None:
                struct.pack_into(">H", b, sof + 7, width)
            if comps is not None:
                b[sof + 9] = comps
            return bytes(b)

        edits = {
            "height_0": sof_edit(height=0),
            "width_65535_height_65535": sof_edit(height=65535, width=65535),
            "components_0": sof_edit(comps=0),
            "components_7": sof_edit(comps=7),
            "no_eoi": data[:-2],
        }
        out.append(Seed(name, "image", {"x.jpg": data}, "x.jpg", "x.jpg", sos + 2, edits))
    return out


def _bmp_seeds() -> list[Seed]:
    rng = np.random.default_rng(3)
    out = []
    for name, arr in (
        ("bmp_rgb", rng.integers(0, 255, (21, 30, 3), dtype=np.uint8)),
        ("bmp_grey", rng.integers(0, 255, (17, 13), dtype=np.uint8)),
    ):
        data = _png_bytes(arr, format="BMP")
        offbits = struct.unpack("<I", data[10:14])[0]

        def edit(off: int, fmt: str, value: int, data=data) -> bytes:
            b = bytearray(data)
            struct.pack_into(fmt, b, off, value)
            return bytes(b)

        edits = {
            "width_2e31-1": edit(18, "<i", 2**31 - 1),
            "width_0": edit(18, "<i", 0),
            "width_negative": edit(18, "<i", -5),
            "height_min_int": edit(22, "<i", -(2**31)),
            "height_100000_width_100000": edit(22, "<i", 100_000)[:18]
            + struct.pack("<i", 100_000)
            + edit(22, "<i", 100_000)[22:],
            "bpp_7": edit(28, "<H", 7),
            "data_offset_past_end": edit(10, "<I", len(data) + 10_000),
        }
        out.append(Seed(name, "image", {"x.bmp": data}, "x.bmp", "x.bmp", offbits, edits))
    return out


def _tiff_bytes(write: Callable[[str], None]) -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "t.tif")
        write(p)
        return Path(p).read_bytes()


def _tiff_edit(data: bytes, tag: str, value: int, page: int = 0) -> bytes:
    """TIFF with the first value of ``tag`` on ``page`` replaced (in place, same type)."""
    import tifffile

    with tifffile.TiffFile(_bytesio.BytesIO(data)) as tif:
        t = tif.pages[page].tags[tag]
        fmt = tif.byteorder + {3: "H", 4: "I", 16: "Q", 8: "h", 9: "i"}[int(t.dtype)]
        off = t.valueoffset
    b = bytearray(data)
    size = struct.calcsize(fmt)
    mask = (1 << (8 * size)) - 1
    struct.pack_into(fmt, b, off, value & mask if fmt[-1].isupper() else value)
    return bytes(b)


def _tiff_seeds() -> list[Seed]:
    import tifffile

    rng = np.random.default_rng(4)
    stack = rng.integers(0, 4000, (3, 20, 24), dtype=np.uint16)
    rgb = rng.integers(0, 255, (16, 18, 3), dtype=np.uint8)
    multi = _tiff_bytes(lambda p: tifffile.imwrite(p, stack, photometric="minisblack"))
    single_rgb = _tiff_bytes(lambda p: tifffile.imwrite(p, rgb, photometric="rgb"))
    from PIL import Image

    lzw = _tiff_bytes(lambda p: Image.fromarray(rgb).save(p, compression="tiff_lzw"))
    out = []
    for name, data in (("tiff_multi", multi), ("tiff_rgb", single_rgb), ("tiff_lzw", lzw)):
        with tifffile.TiffFile(_bytesio.BytesIO(data)) as tif:
            header = min(tif.pages[0].dataoffsets)
        edits = {
            "width_2e31-1": _tiff_edit(data, "ImageWidth", 2**31 - 1),
            "width_0": _tiff_edit(data, "ImageWidth", 0),
            "length_negative": _tiff_edit(data, "ImageLength", -1),
            "bits_3": _tiff_edit(data, "BitsPerSample", 3),
            "samples_0": _tiff_edit(data, "SamplesPerPixel", 0),
            "strip_offset_past_end": _tiff_edit(data, "StripOffsets", len(data) + 4096),
            "strip_bytes_huge": _tiff_edit(data, "StripByteCounts", 2**31 - 1),
        }
        if name == "tiff_multi":
            edits["page2_width_10"] = _tiff_edit(data, "ImageWidth", 10, page=2)
            edits["page1_length_2e31-1"] = _tiff_edit(data, "ImageLength", 2**31 - 1, page=1)
        out.append(Seed(name, "image", {"x.tif": data}, "x.tif", "x.tif", header, edits))
    return out


# NIfTI-1 field offsets (NIfTI-1 header, 348 bytes, little endian as nibabel writes)
_N1 = {"dim": 40, "datatype": 70, "bitpix": 72, "pixdim": 76, "vox_offset": 108}
_N1.update({"scl_slope": 112, "scl_inter": 116, "quatern_b": 256, "srow_x": 280})


def _nifti1(arr: np.ndarray, **kw) -> bytes:
    import nibabel as nib

    img = nib.Nifti1Image(arr, np.diag([0.8, 0.9, 2.5, 1.0]))
    if "slope" in kw:
        img.header.set_slope_inter(kw["slope"], kw.get("inter", 0.0))
    return img.to_bytes()


def _n1_edit(data: bytes, **fields) -> bytes:
    b = bytearray(data)
    for name, value in fields.items():
        if name.startswith("dim"):
            struct.pack_into("<h", b, _N1["dim"] + 2 * int(name[3:]), value)
        elif name.startswith("pixdim"):
            struct.pack_into("<f", b, _N1["pixdim"] + 4 * int(name[6:]), value)
        elif name in ("datatype", "bitpix"):
            struct.pack_into("<h", b, _N1[name], value)
        else:
            struct.pack_into("<f", b, _N1[name], value)
    return bytes(b)


def _nifti_seeds() -> list[Seed]:
    import nibabel as nib

    rng = np.random.default_rng(5)
    vol = rng.integers(-500, 1500, (16, 12, 5)).astype(np.int16)
    raw = _nifti1(vol, slope=2.0, inter=-10.0)
    floatvol = _nifti1(rng.random((10, 9, 4)).astype(np.float32))
    edits = {
        "dim1_32767": _n1_edit(raw, dim1=32767),
        "dim1_0": _n1_edit(raw, dim1=0),
        "dim2_negative": _n1_edit(raw, dim2=-1),
        "dim0_0": _n1_edit(raw, dim0=0),
        "dim0_9": _n1_edit(raw, dim0=9),
        "all_dims_32767": _n1_edit(raw, dim1=32767, dim2=32767, dim3=32767),
        "pixdim1_nan": _n1_edit(raw, pixdim1=float("nan")),
        "pixdim2_0": _n1_edit(raw, pixdim2=0.0),
        "pixdim3_inf": _n1_edit(raw, pixdim3=float("inf")),
        "datatype_unknown": _n1_edit(raw, datatype=9999),
        "bitpix_wrong": _n1_edit(raw, bitpix=64),
        "vox_offset_past_end": _n1_edit(raw, vox_offset=1e9),
        "vox_offset_negative": _n1_edit(raw, vox_offset=-352.0),
        "slope_inf": _n1_edit(raw, scl_slope=float("inf")),
        "quatern_nan": _n1_edit(raw, quatern_b=float("nan")),
        "srow_nan": _n1_edit(raw, srow_x=float("nan")),
    }
    nan_vol = rng.random((6, 5, 4)).astype(np.float32)
    nan_vol[1, 2, 3] = np.nan
    edits["values_nan"] = _nifti1(nan_vol)
    nii_edits = {**edits, "gzip_named_nii": gzip.compress(raw, mtime=0)}
    n2 = nib.Nifti2Image(vol, np.eye(4)).to_bytes()
    b = bytearray(n2)
    struct.pack_into("<q", b, 16 + 8, 2**31 - 1)  # dim[1] of NIfTI-2 (int64)
    n2_big = bytes(b)
    seeds = [
        Seed("nii", "image", {"v.nii": raw}, "v.nii", "v.nii", 352, nii_edits),
        Seed(
            "nii_gz",
            "image",
            {"v.nii.gz": gzip.compress(floatvol, mtime=0)},
            "v.nii.gz",
            "v.nii.gz",
            30,
            {
                **{k: gzip.compress(v, mtime=0) for k, v in edits.items()},
                "not_gzip_named_gz": raw,
                "gz_trailing_garbage": gzip.compress(floatvol, mtime=0) + b"\x00" * 100,
                "gz_bomb_trailing_zeros": gzip.compress(floatvol + bytes(50 * 2**20), mtime=0),
            },
        ),
        Seed(
            "nii2",
            "image",
            {"v.nii": n2},
            "v.nii",
            "v.nii",
            540,
            {"dim1_2e31-1": n2_big, "dim1_2e31-1_gz_named": n2_big},
        ),
        Seed(
            "mask_nii",
            "mask",
            {"m.nii.gz": gzip.compress(_nifti1((vol > 500).astype(np.uint8) * 2), mtime=0)},
            "m.nii.gz",
            "m.nii.gz",
            30,
            {"labels_nan": gzip.compress(_nifti1(nan_vol), mtime=0)},
        ),
    ]
    return seeds


def _nrrd_bytes(arr: np.ndarray, header: dict, name: str = "v.nrrd") -> dict[str, bytes]:
    import tempfile

    import nrrd

    with tempfile.TemporaryDirectory() as d:
        nrrd.write(
            os.path.join(d, name),
            arr,
            header,
            index_order="F",
            detached_header=name.endswith(".nhdr"),
        )
        return {p.name: p.read_bytes() for p in Path(d).iterdir()}


def _header_end(data: bytes) -> int:
    return data.index(b"\n\n") + 2


def _nrrd_edit(data: bytes, pattern: str, repl: str) -> bytes:
    end = _header_end(data)
    head = data[:end].decode("latin-1")
    new, n = re.subn(pattern, repl, head, flags=re.MULTILINE)
    if n == 0:  # add the field
        new = head[:-1] + repl + "\n\n"
    return new.encode("latin-1") + data[end:]


def _nrrd_seeds() -> list[Seed]:
    rng = np.random.default_rng(6)
    vol = rng.integers(-100, 900, (12, 10, 6)).astype(np.int16)
    geo = {
        "space": "left-posterior-superior",
        "space directions": np.diag([0.7, 0.8, 2.0]),
        "space origin": np.array([1.0, 2.0, 3.0]),
    }
    raw = _nrrd_bytes(vol, {**geo, "encoding": "raw"})["v.nrrd"]
    gz = _nrrd_bytes(vol, {**geo, "encoding": "gzip"})["v.nrrd"]

    def edits(data: bytes) -> dict[str, bytes]:
        return {
            "sizes_2e31-1": _nrrd_edit(data, r"^sizes:.*$", "sizes: 2147483647 10 6"),
            "sizes_0": _nrrd_edit(data, r"^sizes:.*$", "sizes: 0 10 6"),
            "sizes_negative": _nrrd_edit(data, r"^sizes:.*$", "sizes: -12 10 6"),
            "sizes_huge_product": _nrrd_edit(
                data, r"^sizes:.*$", "sizes: 4000000000 4000000000 4000000000"
            ),
            "dimension_mismatch": _nrrd_edit(data, r"^dimension:.*$", "dimension: 9"),
            "type_unknown": _nrrd_edit(data, r"^type:.*$", "type: quaternion"),
            "type_block": _nrrd_edit(data, r"^type:.*$", "type: block"),
            "endian_middle": _nrrd_edit(data, r"^endian:.*$", "endian: middle"),
            "space_directions_nan": _nrrd_edit(
                data, r"^space directions:.*$", "space directions: (nan,0,0) (0,0.8,0) (0,0,2)"
            ),
            "space_directions_zero": _nrrd_edit(
                data, r"^space directions:.*$", "space directions: (0,0,0) (0,0.8,0) (0,0,2)"
            ),
            "spacings_nan": _nrrd_edit(
                _nrrd_edit(data, r"^space directions:.*\n", ""), r"^space:.*\n", ""
            ).replace(b"sizes:", b"spacings: nan nan nan\nsizes:", 1),
            "spacings_0": _nrrd_edit(
                _nrrd_edit(data, r"^space directions:.*\n", ""), r"^space:.*\n", ""
            ).replace(b"sizes:", b"spacings: 0 0 0\nsizes:", 1),
            "byte_skip_past_end": _nrrd_edit(data, r"^byte skip:.*$", "byte skip: 999999999"),
            "line_skip_huge": _nrrd_edit(data, r"^line skip:.*$", "line skip: 99999999"),
            "data_file_dev_zero": _nrrd_edit(
                data, r"^encoding:.*$", "encoding: raw\ndata file: /dev/zero"
            ),
            "no_blank_line": data.replace(b"\n\n", b"\n", 1),
            "header_only_magic_no_newline": b"NRRD0004" + b"x" * 4096,
        }

    gz_edits = edits(gz)
    gz_edits["encoding_gzip_on_raw_data"] = _nrrd_edit(raw, r"^encoding:.*$", "encoding: gzip")
    gz_edits["gzip_bomb"] = gz[: _header_end(gz)] + gzip.compress(
        vol.tobytes(order="F") + bytes(200 * 2**20), mtime=0
    )
    raw_edits = edits(raw)
    raw_edits["encoding_raw_on_gzip_data"] = _nrrd_edit(gz, r"^encoding:.*$", "encoding: raw")
    raw_edits["raw_trailing_data"] = raw + bytes(2 * 2**20)
    detached = _nrrd_bytes(vol, {**geo, "encoding": "raw"}, name="v.nhdr")
    nhdr = detached["v.nhdr"]
    return [
        Seed("nrrd_raw", "image", {"v.nrrd": raw}, "v.nrrd", "v.nrrd", _header_end(raw), raw_edits),
        Seed("nrrd_gzip", "image", {"v.nrrd": gz}, "v.nrrd", "v.nrrd", _header_end(gz), gz_edits),
        Seed(
            "nhdr",
            "image",
            detached,
            "v.nhdr",
            "v.nhdr",
            len(nhdr),
            {
                "data_file_missing": re.sub(rb"data file: .*", b"data file: nothere.raw", nhdr),
                "data_file_dev_zero": re.sub(rb"data file: .*", b"data file: /dev/zero", nhdr),
                "data_file_is_folder": re.sub(rb"data file: .*", b"data file: .", nhdr),
                "sizes_2e31-1": re.sub(rb"sizes: .*", b"sizes: 2147483647 10 6", nhdr),
            },
        ),
    ]


def _dicom_bytes(pixels: np.ndarray, **overrides) -> bytes:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4.5.6"
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = "1.2.3.4"
    ds.SeriesInstanceUID = "1.2.3.4.1"
    ds.Modality = "CT"
    ds.ImagePositionPatient = [0.0, 0.0, overrides.pop("z", 0.0)]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [0.7, 0.9]
    ds.SliceThickness = 2.5
    ds.RescaleSlope = 2
    ds.RescaleIntercept = -100
    ds.set_pixel_data(pixels, photometric_interpretation="MONOCHROME2", bits_stored=16)
    for k, v in overrides.items():
        setattr(ds, k, v)
    buf = _bytesio.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _pixel_data_offset(data: bytes) -> int:
    return data.index(b"\xe0\x7f\x10\x00")  # (7FE0,0010) little endian


def _dicom_seeds() -> list[Seed]:
    pixels = np.arange(16 * 20, dtype=np.uint16).reshape(16, 20)
    base = _dicom_bytes(pixels)
    pd = _pixel_data_offset(base)

    def length_edit(value: int) -> bytes:
        b = bytearray(base)
        struct.pack_into("<I", b, pd + 8, value)  # tag(4) VR(2) reserved(2) length(4)
        return bytes(b)

    edits = {
        "rows_0": _dicom_bytes(pixels, Rows=0),
        "columns_65535": _dicom_bytes(pixels, Columns=65535, Rows=65535),
        "bits_allocated_7": _dicom_bytes(pixels, BitsAllocated=7),
        "frames_2e31-1": _dicom_bytes(pixels, NumberOfFrames="2147483647"),
        "frames_0": _dicom_bytes(pixels, NumberOfFrames="0"),
        "frames_negative": _dicom_bytes(pixels, NumberOfFrames="-3"),
        "samples_3": _dicom_bytes(pixels, SamplesPerPixel=3),
        "pixel_spacing_nan": _dicom_bytes(pixels, PixelSpacing=["nan", "nan"]),
        "pixel_spacing_0": _dicom_bytes(pixels, PixelSpacing=[0, 0]),
        "slope_nan": _dicom_bytes(pixels, RescaleSlope="nan"),
        "pixel_data_length_past_end": length_edit(2**31),
        "pixel_data_length_short": length_edit(100),
        "pixel_data_length_odd": length_edit(641),
    }
    single = Seed("dicom_file", "image", {"x.dcm": base}, "x.dcm", "x.dcm", pd + 12, edits)
    series = {f"s/IM{k}.dcm": _dicom_bytes(pixels + k, z=2.5 * k) for k in range(3)}
    mid = series["s/IM1.dcm"]
    series_edits = {
        "rows_0": _dicom_bytes(pixels + 1, z=2.5, Rows=0),
        "rows_65535": _dicom_bytes(pixels + 1, z=2.5, Rows=65535, Columns=65535),
        "position_nan": _dicom_bytes(pixels + 1, z=float("nan")),
        "no_position": _dicom_bytes(pixels + 1, z=2.5, ImagePositionPatient=None),
        "orientation_zero": _dicom_bytes(
            pixels + 1, z=2.5, ImageOrientationPatient=[0, 0, 0, 0, 0, 0]
        ),
        "pixel_spacing_nan": _dicom_bytes(pixels + 1, z=2.5, PixelSpacing=["nan", "nan"]),
        "frames_2e31-1": _dicom_bytes(pixels + 1, z=2.5, NumberOfFrames="2147483647"),
    }
    dseries = Seed(
        "dicom_series",
        "image",
        series,
        "s",
        "s/IM1.dcm",
        _pixel_data_offset(mid) + 12,
        series_edits,
    )
    return [single, dseries]


def _coco_seeds() -> list[Seed]:
    truth = json.loads(json.dumps(PRED_TRUTH))
    data = json.dumps(truth).encode()

    def tedit(fn) -> bytes:
        t = json.loads(data)
        fn(t)
        return json.dumps(t).encode()

    truth_edits = {
        "images_string": tedit(lambda t: t.update(images="a.jpg")),
        "annotations_not_dicts": tedit(lambda t: t["annotations"].append(3)),
        "annotation_missing_image": tedit(lambda t: t["annotations"][0].update(image_id=99)),
        "duplicate_image_ids": tedit(lambda t: t["images"][1].update(id=1)),
        "unknown_category": tedit(lambda t: t["annotations"][0].update(category_id=7)),
        "bbox_nan": tedit(lambda t: t["annotations"][0].update(bbox=[float("nan"), 0, 1, 1])),
        "bbox_three_numbers": tedit(lambda t: t["annotations"][0].update(bbox=[1, 2, 3])),
        "bbox_negative_width": tedit(lambda t: t["annotations"][0].update(bbox=[1, 2, -3, 4])),
        "id_string": tedit(lambda t: t["images"][0].update(id="one")),
        "deep_nesting": b"[" * 5_000 + b"]" * 5_000,
        "not_utf8": '{"images": [], "x": "\u00e9"}'.encode("latin-1"),
        "number_list": b"[1, 2, 3]",
        "huge_number": tedit(lambda t: t["annotations"][0].update(area=10**400)),
    }
    pred = [
        {"image_id": 1, "category_id": 1, "bbox": [10, 10, 30, 20], "score": 0.9},
        {"image_id": 2, "category_id": 2, "bbox": [50, 40, 20, 30], "score": 0.8},
    ]
    pdata = json.dumps(pred).encode()

    def pedit(fn) -> bytes:
        p = json.loads(pdata)
        out = fn(p)
        return json.dumps(p if out is None else out).encode()

    doc = {
        "images": [{"id": 7, "file_name": "a.jpg"}, {"id": 8, "file_name": "b.jpg"}],
        "categories": [{"id": 3, "name": "cat"}, {"id": 4, "name": "dog"}],
        "annotations": [{"image_id": 7, "category_id": 3, "bbox": [10, 10, 30, 20], "score": 0.9}],
    }

    def dedit(fn) -> bytes:
        d = json.loads(json.dumps(doc))
        fn(d)
        return json.dumps(d).encode()

    pred_edits = {
        "number_list": b"[1, 2, 3]",
        "box_three_numbers": pedit(lambda p: p[0].update(bbox=[1, 2, 3])),
        "entry_not_dict": pedit(lambda p: ["x", *p]),
        "entry_number_after_dict": pedit(lambda p: [*p, 5]),
        "bbox_nan": pedit(lambda p: p[0].update(bbox=[float("nan"), 10, 30, 20])),
        "bbox_infinity": pedit(lambda p: p[0].update(bbox=[10, 10, float("inf"), 20])),
        "bbox_negative_width": pedit(lambda p: p[0].update(bbox=[10, 10, -30, 20])),
        "bbox_strings": pedit(lambda p: p[0].update(bbox=["a", "b", "c", "d"])),
        "score_nan": pedit(lambda p: p[0].update(score=float("nan"))),
        "score_string": pedit(lambda p: p[0].update(score="high")),
        "image_id_missing": pedit(lambda p: p[0].update(image_id=99)),
        "category_unknown": pedit(lambda p: p[0].update(category_id=9)),
        "doc_images_string": dedit(lambda d: d.update(images="a.jpg")),
        "doc_duplicate_image_ids": dedit(lambda d: d["images"][1].update(id=7)),
        "doc_annotation_missing_image": dedit(lambda d: d["annotations"][0].update(image_id=9)),
        "doc_unknown_category": dedit(lambda d: d["annotations"][0].update(category_id=1)),
        "doc_categories_not_dicts": dedit(lambda d: d.update(categories=[1, 2])),
        "doc_image_without_id": dedit(lambda d: d["images"][0].pop("id")),
        "deep_nesting": b"[" * 5_000 + b"]" * 5_000,
        "not_utf8": b"[\xff\xfe]",
    }
    return [
        Seed("coco_truth", "box_truth", {"t.json": data}, "t.json", "t.json", 12, truth_edits),
        Seed("predictions", "predictions", {"p.json": pdata}, "p.json", "p.json", 12, pred_edits),
    ]


def _voc_xml(width="120", height="100", box=("11", "11", "40", "30"), name="cat") -> bytes:
    return (
        (
            "<annotation><filename>a.jpg</filename><size><width>{}</width><height>{}</height>"
            "<depth>3</depth></size><object><name>{}</name><difficult>0</difficult><bndbox>"
            "<xmin>{}</xmin><ymin>{}</ymin><xmax>{}</xmax><ymax>{}</ymax></bndbox></object>"
            "</annotation>"
        )
        .format(width, height, name, *box)
        .encode()
    )


def _csv_seed() -> bytes:
    return (
        b"filename,width,height,class,xmin,ymin,xmax,ymax\n"
        b"a.jpg,120,100,cat,11,11,40,30\n"
        b"b.jpg,120,100,dog,51,41,70,70\n"
    )


def _text_seeds() -> list[Seed]:
    voc = _voc_xml()
    laughs = (
        b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
        + b"".join(
            f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">'.encode() for i in range(9)
        )
        + b"]><annotation><filename>&j;</filename></annotation>"
    )
    voc_edits = {
        "width_nan": _voc_xml(width="nan"),
        "width_0": _voc_xml(width="0"),
        "width_2e31-1": _voc_xml(width="2147483647"),
        "box_outside": _voc_xml(box=("1", "1", "500", "30")),
        "box_inverted": _voc_xml(box=("40", "11", "11", "30")),
        "box_infinity": _voc_xml(box=("1", "1", "inf", "30")),
        "billion_laughs": laughs,
        "external_entity": b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY e SYSTEM "file:///etc/passwd">]><annotation><filename>&e;</filename></annotation>',
        "not_utf8": _voc_xml(name="\u00e9").replace(b"\xc3\xa9", b"\xe9"),
        "deep_nesting": b"<a>" * 50_000 + b"</a>" * 50_000,
    }
    csv_data = _csv_seed()
    csv_edits = {
        "not_utf8": csv_data.replace(b"cat", b"ch\xe2t\xff"),
        "utf8_bom": b"\xef\xbb\xbf" + csv_data,
        "huge_field": csv_data + b"c.jpg,120,100," + b"x" * 200_000 + b",1,1,2,2\n",
        "nul_byte": csv_data.replace(b"cat", b"c\x00t"),
        "width_nan": csv_data.replace(b"a.jpg,120", b"a.jpg,nan"),
        "box_infinity": csv_data.replace(b"40,30", b"inf,30"),
        "missing_column": csv_data.replace(b",ymax", b""),
        "short_row": csv_data + b"c.jpg,120\n",
        "quote_unclosed": csv_data + b'"c.jpg,120,100,cat,1,1,2,2\n',
    }
    return [
        Seed("voc_xml", "voc", {"a.xml": voc}, "a.xml", "a.xml", 40, voc_edits),
        Seed("csv", "csv", {"b.csv": csv_data}, "b.csv", "b.csv", 49, csv_edits),
    ]


def seeds() -> list[Seed]:
    """One or more valid seeds of every format segloc reads."""
    return [
        *_png_seeds(),
        *_jpeg_seeds(),
        *_bmp_seeds(),
        *_tiff_seeds(),
        *_nifti_seeds(),
        *_nrrd_seeds(),
        *_dicom_seeds(),
        *_coco_seeds(),
        *_text_seeds(),
    ]


# --------------------------------------------------------------------------- mutations


def truncations(data: bytes, header: int) -> dict[str, bytes]:
    """The five cuts of the issue: 0, header - 1, header, 50 %, length - 1 bytes kept."""
    header = min(max(header, 1), len(data) - 1)
    return {
        "cut_0": b"",
        "cut_header-1": data[: header - 1],
        "cut_header": data[:header],
        "cut_50%": data[: len(data) // 2],
        "cut_length-1": data[:-1],
    }


def header_flips(data: bytes, header: int, count: int = 8) -> dict[str, bytes]:
    """``count`` single-byte flips spread over the header (XOR 0xFF), and the header zeroed."""
    header = min(max(header, 1), len(data))
    out = {}
    for k in range(count):
        pos = (k * header) // count + (header // (2 * count))
        b = bytearray(data)
        b[pos] ^= 0xFF
        out[f"flip_{pos}"] = bytes(b)
    out["header_zeroed"] = bytes(header) + data[header:]
    return out


@dataclass
class Case:
    name: str
    seed: Seed
    data: bytes | None  # new bytes of seed.mutable (None: the seed as it is)

    def write(self, root: Path) -> Path:
        """Write the case's files under ``root/name``; the path to read."""
        folder = root / self.name
        if folder.exists():
            shutil.rmtree(folder)
        for rel, content in self.seed.files.items():
            p = folder / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(
                self.data if (rel == self.seed.mutable and self.data is not None) else content
            )
        target = folder / self.seed.target
        if self.name.endswith("gz_named") and not str(target).endswith(".gz"):
            target.rename(target.with_name(target.name + ".gz"))  # a .gz name on plain bytes
            target = target.with_name(target.name + ".gz")
        return target


def cases(seed_list: list[Seed] | None = None) -> Iterator[Case]:
    """Every seed as it is, then every mutation of it."""
    for seed in seed_list if seed_list is not None else seeds():
        data = seed.files[seed.mutable]
        yield Case(f"{seed.name}--valid", seed, None)
        for label, mutated in {
            **truncations(data, seed.header),
            **header_flips(data, seed.header),
            **seed.edits,
        }.items():
            yield Case(f"{seed.name}--{label}", seed, mutated)


# --------------------------------------------------------------------------- crashers


def crasher_tasks(root: Path, scratch: Path) -> list[tuple[str, str, str]]:
    """``(name, reader kind, path)`` of every saved crasher under ``root``.

    ``root/<kind>/<name>`` is a file read by reader ``kind`` (its suffix tells the format)
    or a folder (a DICOM series, or a detached NRRD read through its ``.nhdr``);
    ``root/fuzz/*`` are libFuzzer artifacts, selector byte first (``fuzz_readers.TARGETS``),
    unpacked into ``scratch``.
    """
    tasks = []
    for kind_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if kind_dir.name == "fuzz":
            from fuzz_readers import TARGETS

            for f in sorted(kind_dir.iterdir()):
                if f.name.startswith(".") or not f.is_file():
                    continue
                data = f.read_bytes()
                if not data:
                    continue
                name, kind, file_name = TARGETS[data[0] % len(TARGETS)]
                out = scratch / f"fuzz-{f.name}" / file_name
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(data[1:])
                tasks.append((f"fuzz/{f.name}", kind, str(out)))
            continue
        if kind_dir.name not in READERS:
            continue
        for entry in sorted(kind_dir.iterdir()):
            if entry.name.startswith("."):
                continue
            target = entry
            if entry.is_dir():
                nhdr = sorted(entry.glob("*.nhdr"))
                target = nhdr[0] if nhdr else entry
            tasks.append((f"{kind_dir.name}/{entry.name}", kind_dir.name, str(target)))
    return tasks


def save_crasher(case: Case, root: Path) -> Path:
    """Write ``case`` under ``root/<kind>/``: a file named after the case, or a folder."""
    out = root / case.seed.kind
    out.mkdir(parents=True, exist_ok=True)
    if len(case.seed.files) > 1:
        return case.write(out).parent
    target = case.write(out / ".tmp")
    suffix = "".join(Path(target.name).suffixes)
    dest = out / f"{case.name}{suffix}"
    dest.write_bytes(target.read_bytes())
    shutil.rmtree(out / ".tmp")
    return dest


# --------------------------------------------------------------------------- the docs' table


def _short(outcome: dict | None) -> str:
    if outcome is None:
        return ""
    if outcome["status"] == "array":
        return "read"
    message = str(outcome.get("message", ""))
    path = str(outcome.get("path", ""))
    for p in sorted({path, str(Path(path).parent)}, key=len, reverse=True):
        if p and p != ".":
            message = message.replace(p + "/", "").replace(p, "<file>")
    message = " ".join(message.split()).removeprefix("<file>: ")[:150].replace("|", "\\|")
    kind = outcome.get("error", "")
    if outcome["status"] == "failure":
        return f"**failure** {kind}: {message}".strip()
    return f"{kind}: {message}"


def markdown_table(now: list[dict], before: list[dict] | None = None) -> str:
    """One row per case: seed, mutation, what the readers at 7ac4136 did, what they do now."""
    old = {o["case"]: o for o in before or []}
    lines = [
        "| input | mutation | before (7ac4136) | now |",
        "|---|---|---|---|",
    ]
    for o in now:
        seed, _, label = o["case"].partition("--")
        lines.append(f"| {seed} | {label} | {_short(old.get(o['case']))} | {_short(o)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python tests/_fuzzing.py OUT.md [BEFORE.json]: the docs' table
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        all_cases = list(cases())
        tasks = [(c.name, c.seed.kind, str(c.write(Path(tmp)))) for c in all_cases]
        with ReadPool(workers=2) as pool:
            outcomes = pool.run(tasks)
    if len(sys.argv) > 3:
        Path(sys.argv[3]).write_text(json.dumps(outcomes))
    before = json.loads(Path(sys.argv[2]).read_text()) if len(sys.argv) > 2 else None
    Path(sys.argv[1]).write_text(markdown_table(outcomes, before))
