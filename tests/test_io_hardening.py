"""segloc.io hardening: typed errors, limits checked before memory is taken (measured in a
fresh process), truncation, metadata checks, NaN policy, the untrusted sandbox, umask.

Independent oracles: nibabel's own ``dataobj`` for NIfTI values and scaling, pynrrd's type
table for NRRD, Pillow/tifffile for what a file holds.
"""

from __future__ import annotations

import errno
import gzip
import io as _bytesio
import json
import os
import struct
import subprocess
import sys
import textwrap
import threading
import warnings
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile
from PIL import Image, ImageFile

from segloc import io
from segloc.io import CorruptFile, ResourceLimitExceeded, SeglocIOError, UnsupportedFormat

SRC = Path(__file__).resolve().parents[1] / "src"
U8 = np.uint8


def rng_image(shape, dtype=np.uint8, seed=0):
    rng = np.random.default_rng(seed)
    hi = np.iinfo(dtype).max if np.issubdtype(dtype, np.integer) else 1000
    return rng.integers(0, hi, size=shape, endpoint=True).astype(dtype)


# --------------------------------------------------------------------------- typed errors


def test_error_types_form_one_tree_under_value_error():
    for cls in (UnsupportedFormat, CorruptFile, ResourceLimitExceeded):
        assert issubclass(cls, SeglocIOError) and issubclass(cls, ValueError)
    assert io.ImageReadError is SeglocIOError  # `except ImageReadError` catches them all
    err = ResourceLimitExceeded("a.nii", 10**12, 10**9, unit="voxels", detail="x")
    assert (err.path, err.declared, err.limit, err.unit) == ("a.nii", 10**12, 10**9, "voxels")
    assert str(err).startswith("a.nii: declares 1,000,000,000,000 voxels")
    err = CorruptFile("b.png", "line one\n - line two")
    assert str(err) == "b.png: line one - line two" and err.reason == "line one - line two"


def _corrupt_files(tmp_path):
    """(path, expected type, read options) for one file per failure kind."""
    png = io.write_image(tmp_path / "t.png", rng_image((64, 64)))
    png.write_bytes(png.read_bytes()[: len(png.read_bytes()) // 2])
    gif = tmp_path / "g.gif"
    Image.fromarray(rng_image((4, 4))).save(gif)
    junk = tmp_path / "junk.xyz"
    junk.write_bytes(b"no image")
    big = io.write_image(tmp_path / "big.png", np.zeros((64, 64), U8))
    return [
        (png, CorruptFile, {}),
        (gif, UnsupportedFormat, {}),
        (junk, UnsupportedFormat, {}),
        (big, ResourceLimitExceeded, {"max_voxels": 100}),
    ]


def test_each_failure_has_its_type_and_one_line_naming_the_file(tmp_path):
    for path, cls, kwargs in _corrupt_files(tmp_path):
        with pytest.raises(cls) as err:
            io.read_image(path, **kwargs)
        assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)
        assert err.value.path == str(path)


@pytest.mark.parametrize("code", [errno.EACCES, errno.EIO, errno.ENOSPC])
def test_a_system_error_stays_an_os_error(tmp_path, monkeypatch, code):
    p = io.write_image(tmp_path / "v.nii.gz", np.zeros((3, 4, 5), np.int16))

    def failing(path, opts):
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(io.read, "_read_nifti", failing)
    with pytest.raises(OSError) as err:
        io.read_image(p)
    assert not isinstance(err.value, ValueError) and err.value.errno == code
    # a decoder's OSError without errno ("image file is truncated") is the file's fault
    monkeypatch.setattr(
        io.read, "_read_nifti", lambda path, opts: (_ for _ in ()).throw(OSError("bad data"))
    )
    with pytest.raises(CorruptFile, match="v.nii.gz: cannot read .OSError: bad data."):
        io.read_image(p)


# --------------------------------------------------------------------------- limits


def test_default_limits_are_a_share_of_available_memory(monkeypatch):
    monkeypatch.setattr(io.limits, "available_memory", lambda: 8 * 2**30)
    lim = io.default_limits()
    assert lim.max_bytes == 2 * 2**30 and lim.max_voxels == 2**31 - 1
    assert io.limits.available_memory.__module__ == __name__ or True
    old = io.set_default_limits(max_voxels=1000)
    try:
        assert io.default_limits().max_voxels == 1000
        assert io.default_limits(max_voxels=5).max_voxels == 5  # the call wins
    finally:
        io.set_default_limits(max_voxels=old[0], max_bytes=old[1])
    for bad in (0, -1):
        with pytest.raises(ValueError, match="max_voxels must be >= 1"):
            io.default_limits(max_voxels=bad)


def test_available_memory_reads_the_system():
    mem = io.limits.available_memory()
    assert 64 * 2**20 < mem < 2**50


def test_module_default_applies_to_every_reader(tmp_path):
    p = io.write_image(tmp_path / "v.nrrd", np.zeros((10, 10, 10), np.int16))
    old = io.set_default_limits(max_voxels=999)
    try:
        with pytest.raises(ResourceLimitExceeded, match="1,000 voxels"):
            io.read_image(p)
        with pytest.raises(ResourceLimitExceeded):
            io.read_mask(p)
        assert io.read_image(p, max_voxels=1000)[0].shape == (10, 10, 10)
    finally:
        io.set_default_limits(max_voxels=old[0], max_bytes=old[1])


@pytest.mark.parametrize(
    ("name", "array"),
    [
        ("a.png", np.zeros((20, 30, 3), U8)),
        ("a.jpg", np.zeros((20, 30), U8)),
        ("a.bmp", np.zeros((20, 30), U8)),
        ("a.tif", np.zeros((20, 30, 2), np.uint16)),
        ("a.nii.gz", np.zeros((20, 30, 2), np.float32)),
        ("a.nrrd", np.zeros((20, 30, 2), np.int32)),
    ],
)
def test_limits_count_voxels_and_bytes_of_the_returned_array(tmp_path, name, array):
    p = io.write_image(tmp_path / name, array)
    voxels = 600 * (array.shape[2] if array.ndim == 3 and array.shape[2] != 3 else 1)
    nbytes = array.size * array.dtype.itemsize
    with pytest.raises(ResourceLimitExceeded) as err:
        io.read_image(p, max_voxels=voxels - 1)
    assert err.value.declared == voxels and err.value.unit == "voxels"
    with pytest.raises(ResourceLimitExceeded) as err:
        io.read_image(p, max_bytes=nbytes - 1)
    assert err.value.declared == nbytes and err.value.unit == "bytes"
    assert io.read_image(p, max_voxels=voxels, max_bytes=nbytes)[0].shape == array.shape


def test_scaled_nifti_counts_the_float_it_becomes(tmp_path):
    img = nib.Nifti1Image(np.zeros((10, 10, 10), np.int16), np.eye(4))
    img.header.set_slope_inter(0.5, 1.0)
    nib.save(img, tmp_path / "s.nii")
    # 1000 voxels of what nibabel's scaling returns (float64 here), not of the stored int16
    itemsize = np.asarray(nib.load(tmp_path / "s.nii").dataobj).dtype.itemsize
    assert itemsize > 2
    with pytest.raises(ResourceLimitExceeded, match=f"{1000 * itemsize:,} bytes"):
        io.read_image(tmp_path / "s.nii", max_bytes=1000 * itemsize - 1)
    assert (
        io.read_image(tmp_path / "s.nii", max_bytes=1000 * itemsize)[0].dtype.itemsize == itemsize
    )


def test_dicom_series_is_refused_before_any_slice_is_decoded(tmp_path, monkeypatch):
    from test_io import AXIAL, _build_series

    _build_series(tmp_path / "ct", AXIAL)
    decoded = []
    monkeypatch.setattr(io.dicom, "_dicom_pixels", lambda *a: decoded.append(a) or 1 / 0)
    with pytest.raises(ResourceLimitExceeded, match="5x6 x 4 slices"):
        io.read_image(tmp_path / "ct", max_voxels=5 * 6 * 4 - 1)
    assert decoded == []


# hostile files, read in a fresh interpreter whose peak RSS is measured around the read
_MEASURE = textwrap.dedent(
    """
    import json, resource, sys, time
    from segloc import io
    warm = sys.argv[2]
    io.read_image(warm)  # imports and first-use allocations are not the read's
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    kwargs = json.loads(sys.argv[3])
    try:
        io.read_image(sys.argv[1], **kwargs)
        outcome = "read"
    except Exception as exc:
        outcome = type(exc).__name__ + ": " + str(exc)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"outcome": outcome, "growth_mb": (after - before) / 1024,
                      "seconds": time.perf_counter() - t0}))
    """
)


def measure_read(path: Path, warm: Path, **kwargs) -> dict:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(path), str(warm), json.dumps(kwargs)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def nifti_header_declaring(dims, datatype=2, bitpix=8) -> bytes:
    """A NIfTI-1 single file with a valid header declaring ``dims`` and no data."""
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.uint8)
    block = bytearray(hdr.binaryblock)
    struct.pack_into("<8h", block, 40, len(dims), *dims, *([1] * (7 - len(dims))))
    struct.pack_into("<hh", block, 70, datatype, bitpix)
    struct.pack_into("<f", block, 108, 352.0)
    return bytes(block) + b"\x00" * 4


@pytest.fixture
def warm_file(tmp_path):
    return io.write_image(tmp_path / "warm.nii.gz", np.zeros((4, 4, 4), np.int16))


def test_tiny_nii_gz_declaring_1e12_voxels_is_refused_in_little_memory(tmp_path, warm_file):
    p = tmp_path / "bomb.nii.gz"
    p.write_bytes(gzip.compress(nifti_header_declaring((10_000, 10_000, 10_000)), mtime=0))
    assert p.stat().st_size < 300  # the "300-byte" file: 54 bytes here
    with pytest.raises(ResourceLimitExceeded, match="1,000,000,000,000 voxels"):
        io.read_image(p)  # default limits
    m = measure_read(p, warm_file)
    assert m["outcome"].startswith("ResourceLimitExceeded"), m
    assert m["growth_mb"] < 100, m


def _png_declaring(width: int, height: int) -> bytes:
    buf = _bytesio.BytesIO()
    Image.fromarray(np.zeros((2, 2), U8)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    struct.pack_into(">II", data, 16, width, height)
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


def test_png_header_claiming_100000x100000_is_refused_in_little_memory(tmp_path, warm_file):
    p = tmp_path / "bomb.png"
    p.write_bytes(_png_declaring(100_000, 100_000))
    for pillow_limit in (None, Image.MAX_IMAGE_PIXELS):  # whatever the process-wide switch
        old = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = pillow_limit
        try:
            with pytest.raises(ResourceLimitExceeded, match="10,000,000,000 voxels"):
                io.read_image(p)
        finally:
            Image.MAX_IMAGE_PIXELS = old
    m = measure_read(p, warm_file)
    assert m["outcome"].startswith("ResourceLimitExceeded"), m
    assert m["growth_mb"] < 100, m


def test_png_within_the_limits_but_cut_short_is_refused_before_allocation(tmp_path, warm_file):
    # 20000 x 20000 grey = 400 MB declared, under a 1 GB limit, in a 70-byte file: the
    # compressed bytes cannot hold it (DEFLATE expands at most 1032-fold)
    p = tmp_path / "short.png"
    p.write_bytes(_png_declaring(20_000, 20_000))
    m = measure_read(p, warm_file, max_bytes=2**30)
    assert m["outcome"].startswith("CorruptFile") and "truncated" in m["outcome"], m
    assert m["growth_mb"] < 100, m


def _multi_member_gzip(header: bytes, total: int, chunk: int = 2**20) -> bytes:
    """gzip members whose concatenation inflates to header + ``total`` zero bytes.

    One member of a MiB of zeros, repeated: ~1 KB per MiB, without compressing a GiB.
    """
    zeros = gzip.compress(bytes(chunk), compresslevel=9, mtime=0)
    return gzip.compress(header, mtime=0) + zeros * (total // chunk)


def test_1mb_nii_gz_holding_1gib_is_refused_before_decompression(tmp_path, warm_file):
    p = tmp_path / "gib.nii.gz"
    p.write_bytes(_multi_member_gzip(nifti_header_declaring((1024, 1024, 1024)), 2**30))
    assert p.stat().st_size < 2**21
    m = measure_read(p, warm_file, max_bytes=256 * 2**20)
    assert m["outcome"].startswith("ResourceLimitExceeded: ") and "1 GiB" in m["outcome"], m
    assert m["growth_mb"] < 100 and m["seconds"] < 2, m  # nothing inflated
    # the same construction at 16 MiB is a valid file: it reads, all zeros
    small = tmp_path / "small.nii.gz"
    small.write_bytes(_multi_member_gzip(nifti_header_declaring((256, 256, 256)), 2**24))
    arr, _ = io.read_image(small, max_bytes=64 * 2**20)
    assert arr.shape == (256, 256, 256) and not arr.any()


def test_gzip_bomb_after_the_declared_data_is_never_inflated(tmp_path, warm_file):
    vol = rng_image((8, 8, 8), np.int16)
    raw = nib.Nifti1Image(vol, np.eye(4)).to_bytes()
    p = tmp_path / "tail.nii.gz"
    p.write_bytes(gzip.compress(raw, mtime=0) + _multi_member_gzip(b"", 2**30))
    m = measure_read(p, warm_file)
    assert m["outcome"] == "read" and m["growth_mb"] < 100 and m["seconds"] < 2, m
    np.testing.assert_array_equal(io.read_image(p)[0], vol)


# --------------------------------------------------------------------------- Pillow's switches


def test_pillow_globals_are_left_as_the_caller_set_them(tmp_path, monkeypatch):
    p = io.write_image(tmp_path / "a.png", rng_image((32, 32)))
    cut = tmp_path / "cut.png"
    cut.write_bytes(p.read_bytes()[:-30])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # set by someone else
    with pytest.raises(CorruptFile, match="truncated"):
        io.read_image(cut)  # still refused: the per-call default is allow_truncated=False
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", False)
    with pytest.warns(UserWarning, match="truncated"):
        io.read_image(cut, allow_truncated=True)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_pillow_switch_is_safe_between_threads(tmp_path):
    p = io.write_image(tmp_path / "a.png", rng_image((64, 64)))
    cut = tmp_path / "cut.png"
    cut.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])
    errors: list[str] = []

    def strict():
        for _ in range(30):
            try:
                io.read_image(cut)
                errors.append("a truncated file was read without allow_truncated")
            except CorruptFile:
                pass

    def lenient():
        for _ in range(30):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                arr, meta = io.read_image(cut, allow_truncated=True)
            if "truncated" not in meta.header:
                errors.append("no truncation note")

    threads = [threading.Thread(target=f) for f in (strict, lenient, strict, lenient)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


# --------------------------------------------------------------------------- truncation


def _cut(path: Path, keep: float) -> Path:
    data = path.read_bytes()
    out = path.with_name("cut_" + path.name)
    out.write_bytes(data[: int(len(data) * keep)])
    return out


@pytest.mark.parametrize(
    ("name", "array", "keep"),
    [
        ("v.nii", rng_image((6, 5, 8), np.int16), 0.6),
        ("v.nii.gz", rng_image((6, 5, 8), np.int16), 0.6),
        ("v.nrrd", rng_image((6, 5, 8), np.int16), 0.7),
        ("t.tif", rng_image((6, 5, 4), np.uint16), 0.7),
    ],
)
def test_truncated_volumes_refused_or_read_with_a_note(tmp_path, name, array, keep):
    if name.endswith(".nrrd"):  # an uncompressed NRRD: its cut is in the data
        import nrrd

        nrrd.write(str(tmp_path / name), array, {"encoding": "raw"}, index_order="F")
        full = tmp_path / name
    else:
        full = io.write_image(tmp_path / name, array)
    cut = _cut(full, keep)
    with pytest.raises(CorruptFile, match=r"truncated"):
        io.read_image(cut)
    with pytest.warns(UserWarning, match="truncated"):
        arr, meta = io.read_image(cut, allow_truncated=True)
    note = meta.header["truncated"]
    if name.endswith(".tif"):
        # pages whose directory is lost cannot be counted; those read are exact or zero
        assert arr.shape[:2] == array.shape[:2] and 1 <= arr.shape[2] <= array.shape[2]
        zero = note.get("zero_pages", [])
        good = [k for k in range(arr.shape[2]) if k not in zero]
        assert good and (zero or arr.shape[2] < array.shape[2] or note.get("pages_lost"))
        np.testing.assert_array_equal(arr[..., good], array[..., good])
        assert not arr[..., zero].any()
    else:
        assert (
            arr.shape == array.shape and note["present"] < note["needed"]
        )  # file order (Fortran): the first `present` bytes are exact, the rest zero
        flat_read, flat_true = arr.ravel(order="F"), array.ravel(order="F")
        n = note["present"] // array.dtype.itemsize
        np.testing.assert_array_equal(flat_read[:n], flat_true[:n])
        assert not flat_read[n + 1 :].any()


@pytest.mark.parametrize("name", ["a.png", "a.jpg", "a.bmp"])
def test_truncated_2d_images_read_with_allow_truncated(tmp_path, name):
    full = io.write_image(tmp_path / name, rng_image((40, 30)))
    cut = _cut(full, 0.6)
    with pytest.raises(CorruptFile, match="truncated"):
        io.read_image(cut)
    with pytest.warns(UserWarning, match="truncated"):
        arr, meta = io.read_image(cut, allow_truncated=True)
    assert arr.shape == (40, 30) and "reason" in meta.header["truncated"]


def test_truncated_dicom_file_and_series_slice(tmp_path):
    from test_io import AXIAL, _build_series, _dicom_slice

    one = tmp_path / "one.dcm"
    _dicom_slice(
        one,
        np.arange(20, dtype=np.uint16).reshape(4, 5),
        position=(0, 0, 0),
        orientation=AXIAL,
        series_uid="1.2",
    )
    one.write_bytes(one.read_bytes()[:-10])
    with pytest.raises(CorruptFile, match="30 of 40 pixel bytes"):
        io.read_image(one)
    with pytest.warns(UserWarning, match="truncated"):
        arr, meta = io.read_image(one, allow_truncated=True)
    assert arr.shape == (4, 5) and meta.header["truncated"]["present"] == 30
    # a slice of a series cut before its pixel data was silently left out before
    _build_series(tmp_path / "ct", AXIAL)
    victim = sorted((tmp_path / "ct").iterdir())[1]
    data = victim.read_bytes()
    victim.write_bytes(data[: data.index(b"\xe0\x7f\x10\x00")])
    with pytest.raises(CorruptFile, match=f"{victim.name}: cannot read: truncated"):
        io.read_image(tmp_path / "ct")
    victim.write_bytes(b"")  # an empty .dcm is not a note beside the slices
    with pytest.raises(CorruptFile, match=victim.name):
        io.read_image(tmp_path / "ct")


def test_multipage_tiff_cut_in_its_page_directory_is_not_silently_shorter(tmp_path):
    full = io.write_image(tmp_path / "s.tif", rng_image((16, 16, 6), np.uint16))
    with tifffile.TiffFile(full) as tif:
        cut_at = tif.pages[3].offset + 4  # inside the 4th page's directory
    cut = tmp_path / "cut.tif"
    cut.write_bytes(full.read_bytes()[:cut_at])
    with pytest.raises(CorruptFile):
        io.read_image(cut)


# --------------------------------------------------------------------------- metadata


def _nifti(tmp_path, name="v.nii", shape=(4, 5, 6), zooms=(1.0, 2.0, 3.0), **hdr):
    img = nib.Nifti1Image(np.ones(shape, np.int16), np.diag([*zooms, 1.0]))
    img.header.set_zooms(zooms)
    for k, v in hdr.items():
        img.header[k] = v
    p = tmp_path / name
    p.write_bytes(img.to_bytes())
    return p


def _poke_pixdim(path: Path, axis: int, value: float) -> Path:
    b = bytearray(path.read_bytes())
    struct.pack_into("<f", b, 76 + 4 * axis, value)
    path.write_bytes(bytes(b))
    return path


@pytest.mark.parametrize("value", [float("nan"), 0.0, float("inf")])
def test_nifti_spacing_must_be_finite_and_positive(tmp_path, value):
    p = _poke_pixdim(_nifti(tmp_path), 2, value)
    with pytest.raises(CorruptFile, match=f"pixdim .spacing. of axis 1 is {value}"):
        io.read_image(p)


def test_nifti_spacing_of_a_single_slice_axis_may_be_unset(tmp_path):
    p = _poke_pixdim(_nifti(tmp_path, shape=(4, 5, 1)), 3, 0.0)
    assert io.read_image(p)[1].spacing == (1.0, 2.0, 1.0)
    p = _poke_pixdim(_nifti(tmp_path, name="n.nii"), 1, -1.5)  # nibabel takes the magnitude
    assert io.read_image(p)[1].spacing == (1.5, 2.0, 3.0)
    assert nib.load(p).header.get_zooms()[0] == pytest.approx(1.5)


@pytest.mark.parametrize(("dim", "value"), [(1, 0), (2, -1), (0, 0), (0, 8)])
def test_nifti_dimensions_must_be_positive(tmp_path, dim, value):
    p = _nifti(tmp_path)
    b = bytearray(p.read_bytes())
    struct.pack_into("<h", b, 40 + 2 * dim, value)
    p.write_bytes(bytes(b))
    with pytest.raises(CorruptFile, match="dim|dimension"):
        io.read_image(p)


def test_nifti_unknown_datatype_and_nan_affine(tmp_path):
    p = _nifti(tmp_path)
    b = bytearray(p.read_bytes())
    struct.pack_into("<h", b, 70, 9999)
    p.write_bytes(bytes(b))
    with pytest.raises(CorruptFile, match="unknown data type code 9999"):
        io.read_image(p)
    p = _nifti(tmp_path, name="a.nii", sform_code=1)
    b = bytearray(p.read_bytes())
    struct.pack_into("<f", b, 280, float("nan"))
    p.write_bytes(bytes(b))
    with pytest.raises(CorruptFile, match="affine .qform/sform. holds NaN"):
        io.read_image(p)


@pytest.mark.parametrize(
    ("dtype", "slope", "inter"),
    [
        (np.int16, None, None),
        (np.int16, 2.0, -10.0),
        (np.uint8, 0.5, 3.0),
        (np.int32, 1.5, 0.0),
        (np.float32, 2.0, 1.0),
        (np.float64, None, None),
        (np.uint16, 1.0, 0.0),
    ],
)
@pytest.mark.parametrize("name", ["v.nii", "v.nii.gz"])
def test_nifti_values_and_geometry_equal_nibabel(tmp_path, dtype, slope, inter, name):
    data = rng_image((7, 6, 5), dtype if np.issubdtype(dtype, np.integer) else np.int16, seed=3)
    img = nib.Nifti1Image(
        data.astype(dtype),
        np.array([[0.8, 0.1, 0, -20], [0, 0.9, 0.2, 30], [0.1, 0, 2.5, 5], [0, 0, 0, 1]]),
    )
    if slope is not None:
        img.header.set_slope_inter(slope, inter)
    nib.save(img, tmp_path / name)
    ours, meta = io.read_image(tmp_path / name, nonfinite="keep")
    oracle = nib.load(tmp_path / name)
    want = np.asarray(oracle.dataobj)
    assert ours.dtype == want.dtype
    np.testing.assert_array_equal(ours, want)
    np.testing.assert_allclose(meta.affine, oracle.affine)
    np.testing.assert_allclose(meta.spacing, oracle.header.get_zooms())


def test_nifti_big_endian_and_nifti2_equal_nibabel(tmp_path):
    data = rng_image((5, 4, 3), np.int16)
    img = nib.Nifti1Image(data, np.eye(4))
    be = img.header.as_byteswapped(">")
    nib.Nifti1Image(data, np.eye(4), be).to_filename(tmp_path / "be.nii")
    nib.save(nib.Nifti2Image(data, np.eye(4)), tmp_path / "two.nii.gz")
    for name in ("be.nii", "two.nii.gz"):
        np.testing.assert_array_equal(
            io.read_image(tmp_path / name)[0], np.asarray(nib.load(tmp_path / name).dataobj)
        )


def test_nrrd_type_table_agrees_with_pynrrd():
    from nrrd.reader import _TYPEMAP_NRRD2NUMPY

    assert set(io.nrrd._NRRD_ITEMSIZE) == set(_TYPEMAP_NRRD2NUMPY) - {"block"}
    for name, size in io.nrrd._NRRD_ITEMSIZE.items():
        assert np.dtype(_TYPEMAP_NRRD2NUMPY[name]).itemsize == size, name


def test_nrrd_spacing_rules(tmp_path):
    import nrrd

    vol = np.zeros((3, 4, 5), np.int16)
    nrrd.write(str(tmp_path / "a.nrrd"), vol, {"spacings": [np.nan, 2.0, -3.0]}, index_order="F")
    assert io.read_image(tmp_path / "a.nrrd")[1].spacing == (1.0, 2.0, 3.0)  # NaN = unknown
    nrrd.write(str(tmp_path / "b.nrrd"), vol, {"spacings": [1.0, 0.0, 1.0]}, index_order="F")
    with pytest.raises(CorruptFile, match="NRRD spacing of axis 1 is 0.0"):
        io.read_image(tmp_path / "b.nrrd")


def test_nrrd_data_file_must_be_a_regular_file(tmp_path):
    (tmp_path / "z.nhdr").write_text(
        "NRRD0004\ntype: uint8\ndimension: 2\nsizes: 4 4\nencoding: raw\ndata file: /dev/zero\n"
    )
    with pytest.raises(CorruptFile, match="not a regular file"):
        io.read_image(tmp_path / "z.nhdr")


@pytest.mark.parametrize(
    "name",
    [
        "x" * 5000,  # ENAMETOOLONG (found by the fuzzer)
        "z.nhdr/inside.raw",  # ENOTDIR: the header itself as a folder
        "nul\x00byte.raw",  # ValueError from the path
    ],
)
def test_nrrd_data_file_that_cannot_be_a_name_is_the_headers_fault(tmp_path, name):
    (tmp_path / "z.nhdr").write_text(
        f"NRRD0004\ntype: uint8\ndimension: 2\nsizes: 4 4\nencoding: raw\ndata file: {name}\n"
    )
    with pytest.raises(CorruptFile, match="which cannot be a file name here"):
        io.read_image(tmp_path / "z.nhdr")


def test_tiff_pages_must_share_shape_and_type(tmp_path):
    with tifffile.TiffWriter(tmp_path / "d.tif") as w:
        w.write(np.zeros((8, 9), np.uint16), photometric="minisblack", metadata=None)
        w.write(np.zeros((8, 9), np.uint8), photometric="minisblack", metadata=None)
    with pytest.raises(CorruptFile, match="TIFF pages differ: page 1 is 8x9x1 uint8"):
        io.read_image(tmp_path / "d.tif")
    with tifffile.TiffWriter(tmp_path / "s.tif") as w:
        w.write(np.zeros((8, 9), np.uint16), photometric="minisblack", metadata=None)
        w.write(np.zeros((4, 9), np.uint16), photometric="minisblack", metadata=None)
    with pytest.raises(CorruptFile, match="page 1 is 4x9x1"):
        io.read_image(tmp_path / "s.tif")


def test_tiff_reduced_resolution_pages_are_named_not_stacked(tmp_path):
    a = rng_image((8, 10), np.uint16)
    with tifffile.TiffWriter(tmp_path / "r.tif") as w:
        w.write(a, photometric="minisblack")
        w.write(a[::2, ::2], subfiletype=1, photometric="minisblack")
    arr, meta = io.read_image(tmp_path / "r.tif")
    np.testing.assert_array_equal(arr, a)
    assert meta.header["pages"] == 2 and meta.header["reduced_pages"] == 1


def test_dicom_pixel_spacing_and_series_geometry_checked(tmp_path):
    from test_io import AXIAL, _build_series, _dicom_slice

    px = np.zeros((4, 5), np.uint16)
    _dicom_slice(
        tmp_path / "z.dcm",
        px,
        position=(0, 0, 0),
        orientation=AXIAL,
        series_uid="1",
        spacing=(0.0, 0.0),
    )
    with pytest.raises(CorruptFile, match="PixelSpacing is .0.0, 0.0."):
        io.read_image(tmp_path / "z.dcm")
    _build_series(tmp_path / "ct", AXIAL)
    import pydicom

    f = sorted((tmp_path / "ct").iterdir())[2]
    ds = pydicom.dcmread(f)
    ds.PixelSpacing = [0.5, 0.5]
    ds.save_as(f)
    with pytest.raises(CorruptFile, match=f"{f.name}: PixelSpacing differs"):
        io.read_image(tmp_path / "ct")


# --------------------------------------------------------------------------- NaN, RGBA, masks


def test_nonfinite_policy(tmp_path):
    vol = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    vol[0, 0, 0], vol[1, 2, 3], vol[1, 0, 0] = np.nan, np.inf, -np.inf
    p = io.write_image(tmp_path / "n.nii.gz", vol)
    with pytest.raises(SeglocIOError, match=r"n.nii.gz: holds 3 NaN or infinite values"):
        io.read_image(p)
    kept, _ = io.read_image(p, nonfinite="keep")
    np.testing.assert_array_equal(kept, vol)
    with pytest.warns(UserWarning, match="3 NaN or infinite values replaced"):
        filled, meta = io.read_image(p, nonfinite="fill")
    finite = vol[np.isfinite(vol)]
    assert filled[0, 0, 0] == filled[1, 0, 0] == finite.min()
    assert filled[1, 2, 3] == finite.max() and meta.header["nonfinite_filled"] == 3
    with pytest.raises(ValueError, match="nonfinite must be one of"):
        io.read_image(p, nonfinite="ignore")


def test_rgba_is_four_channels_in_every_reader(tmp_path):
    a = rng_image((8, 9, 4))
    io.write_image(tmp_path / "a.png", a)
    io.write_image(tmp_path / "a.tif", a)
    Image.fromarray(a, "RGBA").save(tmp_path / "lzw.tif", compression="tiff_lzw")  # Pillow path
    pal = Image.fromarray(a[..., :3]).convert("P")
    pal.info["transparency"] = 0
    pal.save(tmp_path / "p.png", transparency=0)
    for name in ("a.png", "a.tif", "lzw.tif", "p.png"):
        arr, meta = io.read_image(tmp_path / name)
        assert arr.shape == (8, 9, 4) and meta.header["channels"] == 4, name
    # premultiplied alpha (Pillow mode RGBa) keeps its alpha as a 4th channel
    arr, header = io.pillow._pillow_to_array(
        Image.fromarray(a, "RGBA").convert("RGBa"), palette_indices=False
    )
    assert arr.shape == (8, 9, 4) and header["channels"] == 4


def test_nan_mask_is_refused_whatever_kind(tmp_path):
    # hand-found: `segloc boxes --kind binary` on a NaN TIFF gave one box around the image
    m = np.zeros((6, 7), np.float32)
    m[1:3, 2:4] = 1
    m[5, 6] = np.nan
    p = tmp_path / "nan.tif"
    tifffile.imwrite(p, m)
    for kind in ("binary", "labels", "auto"):
        with pytest.raises(SeglocIOError, match="nan.tif: mask holds NaN"):
            io.read_mask(p, kind=kind)
        with pytest.raises(ValueError, match="NaN"):
            io.interpret_mask(m, kind=kind)


def test_read_mask_classes(tmp_path):
    p = io.write_mask(tmp_path / "l.png", np.array([[0, 1], [2, 7]], np.int32))
    assert io.read_mask(p, classes=8)[0].max() == 7
    with pytest.raises(SeglocIOError, match="l.png: mask labels must be in 0..2, got 7"):
        io.read_mask(p, classes=3)


def test_image_size_reads_only_the_header(tmp_path, monkeypatch):
    io.write_image(tmp_path / "a.jpg", np.zeros((30, 40, 3), U8))
    io.write_image(tmp_path / "a.tif", np.zeros((30, 40), np.uint16))
    monkeypatch.setattr(io.read, "_read", lambda *a: 1 / 0)  # no decoding allowed
    assert io.image_size(tmp_path / "a.jpg") == (40, 30)
    assert io.image_size(tmp_path / "a.tif") == (40, 30)


# --------------------------------------------------------------------------- untrusted


def test_untrusted_read_equals_the_trusted_one(tmp_path):
    vol = rng_image((5, 6, 7), np.int16)
    p = io.write_image(tmp_path / "v.nrrd", vol, meta=io.ImageMeta(spacing=(0.5, 0.7, 2.0)))
    trusted, tmeta = io.read_image(p)
    arr, meta = io.read_image(p, untrusted=True)
    np.testing.assert_array_equal(arr, trusted)
    assert arr.dtype == trusted.dtype and meta.spacing == tmeta.spacing
    np.testing.assert_allclose(meta.affine, tmeta.affine)
    assert meta.header["nrrd"]["sizes"].tolist() == [5, 6, 7]
    mask = io.write_mask(tmp_path / "m.png", np.array([[0, 3], [1, 0]], np.int32))
    np.testing.assert_array_equal(io.read_mask(mask, untrusted=True)[0], io.read_mask(mask)[0])


def test_untrusted_errors_are_the_trusted_errors(tmp_path):
    for path, cls, kwargs in _corrupt_files(tmp_path):
        with pytest.raises(cls) as err:
            io.read_image(path, untrusted=True, **kwargs)
        assert str(err.value).startswith(str(path))


@pytest.fixture
def faulty_child(tmp_path, monkeypatch):
    """Make the sandbox child crash, hang or over-allocate on files named so.

    A ``sitecustomize`` on the child's PYTHONPATH wraps the reader: the library has no
    test hook, the child is an ordinary ``python -m segloc.io.sandbox``.
    """
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(
        textwrap.dedent(
            """
            import os, signal, time
            import segloc.io.read as r
            _orig = r._read
            def _read(path, opts):
                if path.name.startswith("crash"):
                    os.kill(os.getpid(), signal.SIGSEGV)
                if path.name.startswith("hang"):
                    time.sleep(600)
                if path.name.startswith("hog"):
                    blocks = [bytearray(2**28) for _ in range(64)]
                return _orig(path, opts)
            r._read = _read
            """
        )
    )
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(hooks), os.environ.get("PYTHONPATH", "")])
    )
    for name in ("crash.png", "hang.png", "hog.png"):
        io.write_image(tmp_path / name, np.zeros((4, 4), U8))
    return tmp_path


def test_untrusted_crash_timeout_and_memory_become_typed_errors(faulty_child):
    with pytest.raises(CorruptFile, match=r"crash.png: the decoder crashed \(SIGSEGV\)"):
        io.read_untrusted(faulty_child / "crash.png")
    with pytest.raises(CorruptFile, match=r"hang.png: reading it took longer than 2 s"):
        io.read_untrusted(faulty_child / "hang.png", timeout=2)
    with pytest.raises(ResourceLimitExceeded, match="hog.png: .*ran out of memory in the sandbox"):
        io.read_untrusted(faulty_child / "hog.png", max_bytes=2**20)


def test_untrusted_parent_checks_what_the_child_returns(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(CorruptFile, match="dtype object"):
        io.sandbox._load_array(tmp_path / "x", tmp_path / "obj.npy", io.default_limits())
    np.save(tmp_path / "big.npy", np.zeros(1000, np.uint8))
    with pytest.raises(ResourceLimitExceeded):
        io.sandbox._load_array(
            tmp_path / "x", tmp_path / "big.npy", io.default_limits(max_voxels=10)
        )


def test_tiff_page_directory_that_loops_is_refused(tmp_path):
    # found by fuzzing: tifffile follows a chain of page directories that points back to an
    # earlier one for ever; the last page's "next IFD" is pointed at the first page here
    p = io.write_image(tmp_path / "s.tif", rng_image((4, 5, 3), np.uint16))
    with tifffile.TiffFile(p) as tif:
        first, last = tif.pages[0].offset, tif.pages[-1].offset
    data = bytearray(p.read_bytes())
    (ntags,) = struct.unpack_from("<H", data, last)
    struct.pack_into("<I", data, last + 2 + 12 * ntags, first)
    p.write_bytes(bytes(data))
    with pytest.raises(CorruptFile, match="TIFF page directory loops"):
        io.read_image(p)


@pytest.mark.parametrize(("value", "ok"), [(0.0, True), (207.0, False), (-352.0, False)])
def test_nifti_vox_offset(tmp_path, value, ok):
    a = rng_image((2, 3, 4), np.int16)
    b = bytearray(nib.Nifti1Image(a, np.eye(4)).to_bytes())
    struct.pack_into("<f", b, 108, value)
    p = tmp_path / "o.nii"
    p.write_bytes(bytes(b))
    if ok:  # 0 = unset: the data follows the header (nibabel reads the header as voxels)
        np.testing.assert_array_equal(io.read_image(p)[0], a)
    else:
        with pytest.raises(CorruptFile, match="vox_offset .* is inside the header"):
            io.read_image(p)
