"""segloc.io: every format against an independent reader/writer (OpenCV, Pillow, SimpleITK,
tifffile, nibabel), hand-built DICOM series, the mask rules, errors that name the file, atomic
writes, file matching, and real files from the shared data."""

import os
import warnings
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import tifffile
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from segloc import io
from segloc.io import ImageMeta, ImageReadError

DATA = Path(
    os.environ.get("SEGLOC_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data")
)
LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # ITK world (LPS) <-> RAS+, its own inverse


def rng_image(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    hi = np.iinfo(dtype).max if np.issubdtype(dtype, np.integer) else 1000
    return rng.integers(0, hi, size=shape, endpoint=True).astype(dtype)


def sitk_affine(img: sitk.Image) -> np.ndarray:
    """SimpleITK geometry as a RAS+ affine over numpy axes (i, j, k) = ITK (x, y, z)."""
    direction = np.array(img.GetDirection()).reshape(3, 3)
    aff = np.eye(4)
    aff[:3, :3] = direction * np.array(img.GetSpacing())
    aff[:3, 3] = img.GetOrigin()
    return LPS @ aff


def sitk_array(img: sitk.Image) -> np.ndarray:
    # SimpleITK arrays are (z, y, x); segloc/nibabel order is (x, y, z)
    return sitk.GetArrayFromImage(img).transpose()


def rotation(deg_z: float, deg_x: float) -> np.ndarray:
    a, b = np.deg2rad(deg_z), np.deg2rad(deg_x)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rz @ rx


def oblique_affine(spacing=(0.5, 0.8, 2.5), origin=(-20.0, 35.5, 7.25)) -> np.ndarray:
    aff = np.eye(4)
    aff[:3, :3] = rotation(30, 20) * np.array(spacing)
    aff[:3, 3] = origin
    return aff


# --------------------------------------------------------------------------- 2D formats


@pytest.mark.parametrize(
    ("suffix", "shape", "dtype"),
    [
        (".png", (7, 9), np.uint8),
        (".png", (7, 9), np.uint16),
        (".png", (7, 9, 3), np.uint8),
        (".bmp", (7, 9), np.uint8),
        (".tif", (7, 9), np.uint8),
        (".tif", (7, 9), np.uint16),
        (".tif", (7, 9, 3), np.uint8),
    ],
)
def test_2d_round_trip_against_opencv(tmp_path, suffix, shape, dtype):
    image = rng_image(shape, dtype)
    path = io.write_image(tmp_path / f"a{suffix}", image)
    oracle = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if len(shape) == 3:
        oracle = oracle[..., ::-1]  # OpenCV gives BGR
    np.testing.assert_array_equal(oracle, image)
    assert oracle.dtype == dtype
    back, meta = io.read_image(path)
    np.testing.assert_array_equal(back, image)
    assert back.dtype == dtype
    assert meta.spacing == (1.0, 1.0) and meta.affine is None
    assert meta.format == {".png": "png", ".bmp": "bmp", ".tif": "tiff"}[suffix]
    assert ("channels" in meta.header) == (len(shape) == 3)


@pytest.mark.parametrize(
    ("suffix", "dtype"), [(".png", np.uint8), (".png", np.uint16), (".tif", np.uint16)]
)
def test_reads_files_written_by_opencv(tmp_path, suffix, dtype):
    image = rng_image((6, 11), dtype, seed=3)
    cv2.imwrite(str(tmp_path / f"b{suffix}"), image)
    back, _ = io.read_image(tmp_path / f"b{suffix}")
    np.testing.assert_array_equal(back, image)
    assert back.dtype == dtype


def test_jpeg_reads_like_pillow(tmp_path):
    image = rng_image((16, 24, 3), np.uint8)
    Image.fromarray(image).save(tmp_path / "c.jpg", quality=90)
    back, meta = io.read_image(tmp_path / "c.jpg")
    np.testing.assert_array_equal(back, np.asarray(Image.open(tmp_path / "c.jpg")))
    assert meta.format == "jpeg"


def test_as_gray_matches_skimage(tmp_path):
    from skimage.color import rgb2gray

    image = rng_image((5, 8, 3), np.uint8)
    io.write_image(tmp_path / "rgb.png", image)
    grey, _ = io.read_image(tmp_path / "rgb.png", as_gray=True)
    np.testing.assert_allclose(grey, rgb2gray(image), rtol=1e-12)
    plain = rng_image((5, 8), np.uint16)
    io.write_image(tmp_path / "grey.png", plain)
    same, _ = io.read_image(tmp_path / "grey.png", as_gray=True)
    assert same.dtype == np.uint16  # grey images are not converted, as scikit-image
    np.testing.assert_array_equal(same, plain)


def test_pillow_modes(tmp_path):
    idx = np.array([[0, 1], [2, 1]], np.uint8)
    p = Image.fromarray(idx, mode="P")
    p.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    p.save(tmp_path / "p.png")
    rgb, meta = io.read_image(tmp_path / "p.png")
    np.testing.assert_array_equal(rgb, np.asarray(p.convert("RGB")))
    assert meta.header["channels"] == 3
    Image.fromarray(np.array([[0, 255]], np.uint8)).convert("1").save(tmp_path / "b.png")
    bits, _ = io.read_image(tmp_path / "b.png")
    np.testing.assert_array_equal(bits, [[0, 255]])
    assert bits.dtype == np.uint8
    Image.fromarray(np.array([[[9, 200], [10, 0]]], np.uint8), mode="LA").save(tmp_path / "la.png")
    grey, _ = io.read_image(tmp_path / "la.png")
    np.testing.assert_array_equal(grey, [[9, 10]])


# --------------------------------------------------------------------------- TIFF stacks


def test_multipage_tiff_written_by_tifffile_is_rows_cols_pages(tmp_path):
    stack = rng_image((4, 6, 5), np.uint16)  # (pages, rows, cols)
    tifffile.imwrite(tmp_path / "s.tif", stack, photometric="minisblack")
    vol, meta = io.read_image(tmp_path / "s.tif")
    assert vol.shape == (6, 5, 4)
    np.testing.assert_array_equal(vol, np.moveaxis(stack, 0, -1))
    assert meta.spacing == (1.0, 1.0, 1.0) and meta.header["pages"] == 4


def test_multipage_lzw_tiff_written_by_pillow(tmp_path):
    # LZW needs imagecodecs in tifffile; the reader falls back to Pillow
    stack = rng_image((3, 8, 9), np.uint8, seed=5)
    pages = [Image.fromarray(s) for s in stack]
    pages[0].save(
        tmp_path / "m.tiff", save_all=True, append_images=pages[1:], compression="tiff_lzw"
    )
    vol, meta = io.read_image(tmp_path / "m.tiff")
    np.testing.assert_array_equal(vol, np.moveaxis(stack, 0, -1))
    assert meta.format == "tiff"


def test_tiff_volume_round_trip_against_opencv(tmp_path):
    vol = rng_image((6, 7, 3), np.uint16)  # 3 slices, must not become RGB
    io.write_image(tmp_path / "v.tif", vol)
    ok, pages = cv2.imreadmulti(str(tmp_path / "v.tif"), flags=cv2.IMREAD_UNCHANGED)
    assert ok and len(pages) == 3
    np.testing.assert_array_equal(np.stack(pages, axis=-1), vol)
    back, _ = io.read_image(tmp_path / "v.tif")
    np.testing.assert_array_equal(back, vol)


def test_planar_rgb_tiff_is_rows_cols_channels(tmp_path):
    planes = rng_image((3, 6, 7), np.uint8)
    tifffile.imwrite(tmp_path / "p.tif", planes, photometric="rgb", planarconfig="separate")
    rgb, meta = io.read_image(tmp_path / "p.tif")
    np.testing.assert_array_equal(rgb, np.moveaxis(planes, 0, -1))
    assert meta.header["channels"] == 3


def test_write_image_bool_and_rgba(tmp_path):
    mask = np.array([[True, False]])
    io.write_image(tmp_path / "b.png", mask)
    np.testing.assert_array_equal(
        cv2.imread(str(tmp_path / "b.png"), cv2.IMREAD_UNCHANGED), [[255, 0]]
    )
    rgba = rng_image((3, 4, 4), np.uint8)
    io.write_image(tmp_path / "a.png", rgba)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a.png")), rgba)
    with pytest.raises(ImageReadError, match="alpha"):
        io.write_image(tmp_path / "a.jpg", rgba)


# --------------------------------------------------------------------------- NIfTI / NRRD


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32])
def test_nifti_round_trip_against_simpleitk(tmp_path, suffix, dtype):
    vol = rng_image((5, 6, 4), dtype)
    aff = oblique_affine()
    meta = ImageMeta(affine=aff, spacing=(0.5, 0.8, 2.5))
    path = io.write_image(tmp_path / f"v{suffix}", vol, meta=meta)
    oracle = sitk.ReadImage(str(path))
    np.testing.assert_array_equal(sitk_array(oracle), vol)
    np.testing.assert_allclose(oracle.GetSpacing(), (0.5, 0.8, 2.5), rtol=1e-6)
    np.testing.assert_allclose(sitk_affine(oracle), aff, atol=1e-5)
    back, got = io.read_image(path)
    np.testing.assert_array_equal(back, vol)
    assert back.dtype == dtype
    np.testing.assert_allclose(got.spacing, (0.5, 0.8, 2.5), rtol=1e-6)
    np.testing.assert_allclose(got.affine, aff, atol=1e-5)
    assert got.format == "nifti"


def test_reads_nifti_written_by_simpleitk(tmp_path):
    vol = rng_image((5, 6, 4), np.int16, seed=2)
    img = sitk.GetImageFromArray(vol.transpose())
    img.SetSpacing((1.5, 0.7, 3.0))
    img.SetOrigin((10.0, -4.0, 2.0))
    img.SetDirection(rotation(-25, 10).ravel().tolist())
    sitk.WriteImage(img, str(tmp_path / "s.nii.gz"))
    back, meta = io.read_image(tmp_path / "s.nii.gz")
    np.testing.assert_array_equal(back, vol)
    np.testing.assert_allclose(meta.spacing, (1.5, 0.7, 3.0), rtol=1e-6)
    np.testing.assert_allclose(meta.affine, sitk_affine(img), atol=1e-5)


def test_nifti_without_meta_uses_spacing_or_identity(tmp_path):
    vol = rng_image((3, 4, 5), np.uint8)
    io.write_image(tmp_path / "a.nii.gz", vol)
    _, meta = io.read_image(tmp_path / "a.nii.gz")
    np.testing.assert_array_equal(meta.affine, np.eye(4))
    io.write_image(tmp_path / "b.nii.gz", vol, meta=ImageMeta(spacing=(2.0, 3.0, 4.0)))
    _, meta = io.read_image(tmp_path / "b.nii.gz")
    np.testing.assert_array_equal(meta.affine, np.diag([2.0, 3.0, 4.0, 1.0]))
    assert meta.spacing == (2.0, 3.0, 4.0)


def test_nrrd_round_trip_against_simpleitk(tmp_path):
    vol = rng_image((5, 6, 4), np.int16)
    aff = oblique_affine(spacing=(0.7, 0.9, 3.0))
    path = io.write_image(tmp_path / "v.nrrd", vol, meta=ImageMeta(affine=aff))
    oracle = sitk.ReadImage(str(path))
    np.testing.assert_array_equal(sitk_array(oracle), vol)
    np.testing.assert_allclose(oracle.GetSpacing(), (0.7, 0.9, 3.0), rtol=1e-6)
    np.testing.assert_allclose(sitk_affine(oracle), aff, atol=1e-5)
    back, meta = io.read_image(path)
    np.testing.assert_array_equal(back, vol)
    np.testing.assert_allclose(meta.spacing, (0.7, 0.9, 3.0), rtol=1e-6)
    np.testing.assert_allclose(meta.affine, aff, atol=1e-5)


def test_reads_nrrd_written_by_simpleitk(tmp_path):
    vol = rng_image((4, 7, 3), np.uint8, seed=4)
    img = sitk.GetImageFromArray(vol.transpose())
    img.SetSpacing((0.25, 0.5, 1.75))
    img.SetOrigin((-1.0, 2.0, 3.0))
    img.SetDirection(rotation(40, -15).ravel().tolist())
    sitk.WriteImage(img, str(tmp_path / "s.nrrd"))
    back, meta = io.read_image(tmp_path / "s.nrrd")
    np.testing.assert_array_equal(back, vol)
    np.testing.assert_allclose(meta.spacing, (0.25, 0.5, 1.75), rtol=1e-6)
    np.testing.assert_allclose(meta.affine, sitk_affine(img), atol=1e-5)


def test_nrrd_spacings_field(tmp_path):
    import nrrd

    nrrd.write(str(tmp_path / "p.nrrd"), np.zeros((3, 4), np.uint8), {"spacings": [0.5, 2.0]})
    _, meta = io.read_image(tmp_path / "p.nrrd")
    assert meta.spacing == (0.5, 2.0) and meta.affine is None


def test_nifti_affine_survives_nrrd_and_back(tmp_path):
    vol = rng_image((4, 5, 3), np.uint8)
    meta = ImageMeta(affine=oblique_affine())
    io.write_image(tmp_path / "a.nii.gz", vol, meta=meta)
    _, m1 = io.read_image(tmp_path / "a.nii.gz")
    io.write_image(tmp_path / "b.nrrd", vol, meta=m1)
    _, m2 = io.read_image(tmp_path / "b.nrrd")
    np.testing.assert_allclose(m2.affine, meta.affine, atol=1e-5)


# --------------------------------------------------------------------------- DICOM


def _dicom_slice(path, pixels, *, position, orientation, series_uid, spacing=(0.7, 0.9), n=1):
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = "1.2.3.4"
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = "1.2.3.5"
    ds.Modality = "CT"
    ds.PatientName = "Test^Phantom"
    ds.PatientID = "0"
    ds.InstanceNumber = n
    ds.ImagePositionPatient = [float(v) for v in position]
    ds.ImageOrientationPatient = [float(v) for v in orientation]
    ds.PixelSpacing = list(spacing)
    ds.SliceThickness = 2.5
    ds.RescaleSlope = 2
    ds.RescaleIntercept = -100
    ds.set_pixel_data(pixels, photometric_interpretation="MONOCHROME2", bits_stored=16)
    ds.save_as(path, enforce_file_format=True)


def _build_series(
    folder: Path, orientation, *, uid="1.2.826.0.1.3680043.2.1125.1", order=(2, 0, 3, 1)
):
    """4 slices 2.5 mm apart written in shuffled order; stored value = pixel id + 100 * slice."""
    folder.mkdir(parents=True, exist_ok=True)
    row_cos, col_cos = np.array(orientation[:3]), np.array(orientation[3:])
    normal = np.cross(row_cos, col_cos)
    origin = np.array([-30.0, 12.0, 40.0])
    rows, cols = 5, 6
    stored = np.arange(rows * cols, dtype=np.uint16).reshape(rows, cols)
    for k in order:
        _dicom_slice(
            folder / f"IM{order.index(k):03d}.dcm",
            stored + 100 * k,
            position=origin + 2.5 * k * normal,
            orientation=orientation,
            series_uid=uid,
            n=order.index(k) + 1,  # instance numbers do not follow the geometry
        )
    expected = np.stack([2 * (stored.astype(np.int32) + 100 * k) - 100 for k in range(4)], axis=-1)
    return expected, origin


AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
OBLIQUE = (*rotation(30, 0)[:, 0], *(rotation(30, 0) @ rotation(0, 25))[:, 1])


@pytest.mark.parametrize("orientation", [AXIAL, OBLIQUE], ids=["axial", "oblique"])
def test_dicom_series_against_simpleitk(tmp_path, orientation):
    expected, origin = _build_series(tmp_path / "ct", orientation)
    vol, meta = io.read_image(tmp_path / "ct")
    # hand-computed: slices sorted by position, (rows, cols, slices), slope 2, intercept -100
    assert vol.shape == (5, 6, 4)
    np.testing.assert_array_equal(vol, expected)
    np.testing.assert_allclose(meta.spacing, (0.7, 0.9, 2.5), rtol=1e-6)
    assert meta.format == "dicom"
    # SimpleITK: array (slice, row, col), spacing (col, row, slice), LPS geometry
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path / "ct")))
    oracle = reader.Execute()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(oracle).transpose(1, 2, 0), vol)
    sx, sy, sz = oracle.GetSpacing()
    np.testing.assert_allclose(meta.spacing, (sy, sx, sz), rtol=1e-5)
    itk = sitk_affine(oracle)  # columns: x = col, y = row, z = slice
    np.testing.assert_allclose(meta.affine[:, [1, 0, 2, 3]], itk, atol=1e-4)
    np.testing.assert_allclose(meta.affine[:3, 3], (LPS @ [*origin, 1])[:3], atol=1e-6)


def test_dicom_single_file(tmp_path):
    pixels = np.arange(12, dtype=np.uint16).reshape(3, 4)
    _dicom_slice(
        tmp_path / "one.dcm", pixels, position=(0, 0, 0), orientation=AXIAL, series_uid="1.2"
    )
    image, meta = io.read_image(tmp_path / "one.dcm")
    np.testing.assert_array_equal(image, 2 * pixels.astype(np.int32) - 100)
    assert meta.spacing == (0.7, 0.9)


def test_dicom_errors_name_the_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not dicom")
    with pytest.raises(ImageReadError, match="no DICOM image files") as err:
        io.read_image(tmp_path / "empty")
    assert str(err.value).startswith(str(tmp_path / "empty"))
    _build_series(tmp_path / "mixed", AXIAL, uid="1.2.3.100")
    _dicom_slice(
        tmp_path / "mixed" / "other.dcm",
        np.zeros((5, 6), np.uint16),
        position=(0, 0, 99),
        orientation=AXIAL,
        series_uid="1.2.3.200",
    )
    with pytest.raises(ImageReadError, match="mixed series") as err:
        io.read_image(tmp_path / "mixed")
    assert str(err.value).startswith(str(tmp_path / "mixed"))


def test_dicom_uneven_and_duplicate_slices(tmp_path):
    (tmp_path / "uneven").mkdir()
    for z, name in zip((0.0, 2.5, 5.0, 10.0), "abcd", strict=True):
        _dicom_slice(
            tmp_path / "uneven" / f"{name}.dcm",
            np.zeros((2, 3), np.uint16),
            position=(0, 0, z),
            orientation=AXIAL,
            series_uid="1.9",
        )
    with pytest.warns(UserWarning, match="slice spacing is not uniform"):
        vol, meta = io.read_image(tmp_path / "uneven")
    assert vol.shape == (2, 3, 4)
    np.testing.assert_allclose(meta.spacing[2], 10.0 / 3)
    (tmp_path / "dup").mkdir()
    for name in "ab":
        _dicom_slice(
            tmp_path / "dup" / f"{name}.dcm",
            np.zeros((2, 3), np.uint16),
            position=(0, 0, 1.0),
            orientation=AXIAL,
            series_uid="1.9",
        )
    with pytest.raises(ImageReadError, match="share a position") as err:
        io.read_image(tmp_path / "dup")
    assert str(err.value).startswith(str(tmp_path / "dup"))


# --------------------------------------------------------------------------- format detection


@pytest.mark.parametrize(
    ("writer_suffix", "fmt"),
    [(".png", "png"), (".tif", "tiff"), (".nii.gz", "nifti"), (".nii", "nifti"), (".nrrd", "nrrd")],
)
def test_unknown_suffix_falls_back_to_magic_bytes(tmp_path, writer_suffix, fmt):
    image = rng_image((4, 5), np.uint8)
    io.write_image(tmp_path / f"a{writer_suffix}", image)
    (tmp_path / f"a{writer_suffix}").rename(tmp_path / "a.data")
    back, meta = io.read_image(tmp_path / "a.data")
    assert meta.format == fmt
    np.testing.assert_array_equal(back, image)


# --------------------------------------------------------------------------- errors


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _corrupt_cases(tmp_path):
    png = io.write_image(tmp_path / "t.png", rng_image((64, 64), np.uint8))
    _truncate(png)
    gz = io.write_image(tmp_path / "t.nii.gz", rng_image((20, 20, 20), np.int16))
    _truncate(gz)
    nr = io.write_image(tmp_path / "t.nrrd", rng_image((20, 20, 20), np.int16))
    _truncate(nr)
    tif = io.write_image(tmp_path / "t.tif", rng_image((64, 64), np.uint16))
    _truncate(tif, 0.3)
    junk = tmp_path / "junk.xyz"
    junk.write_bytes(b"just some bytes, no image")
    fake = tmp_path / "fake.png"
    fake.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    return [
        (png, "cannot read"),
        (gz, "cannot read"),
        (nr, "cannot read"),
        (tif, "cannot read"),
        (junk, "unknown image format"),
        (fake, "cannot read"),
        (tmp_path / "missing.png", "no such file"),
    ]


def test_read_errors_name_the_file(tmp_path):
    for path, problem in _corrupt_cases(tmp_path):
        with pytest.raises(ImageReadError, match=problem) as err:
            io.read_image(path)
        assert str(err.value).startswith(f"{path}: "), str(err.value)
        with pytest.raises(ImageReadError) as err:
            io.read_mask(path)
        assert str(err.value).startswith(f"{path}: ")


@pytest.mark.parametrize("side", [40, 50])
def test_decompression_bomb_is_an_error(tmp_path, monkeypatch, side):
    # the guard is the per-call limit: Pillow's process-wide MAX_IMAGE_PIXELS decides nothing
    # (40x40 used to need a warning filter: Pillow only warns between the limit and twice it)
    io.write_image(tmp_path / "big.png", np.zeros((side, side), np.uint8))
    io.write_image(tmp_path / "big.tif", np.zeros((side, side), np.uint8))
    for pillow_limit in (None, 10**9, 1000):
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pillow_limit)
        for name in ("big.png", "big.tif"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the reader must not rely on the caller's filters
                with pytest.raises(io.ResourceLimitExceeded, match="above the limit") as err:
                    io.read_image(tmp_path / name, max_voxels=1000)
            assert str(err.value).startswith(str(tmp_path / name))
            assert err.value.declared == side * side and err.value.limit == 1000
            # at the limit: fine, whatever the process-wide setting
            assert io.read_image(tmp_path / name, max_voxels=side * side)[0].shape == (side, side)
        assert Image.MAX_IMAGE_PIXELS == pillow_limit  # left as the caller set it


@pytest.mark.parametrize(
    ("name", "array", "writer", "problem"),
    [
        (
            "f.png",
            np.zeros((3, 3), np.float32),
            io.write_image,
            "PNG cannot store image of dtype float32",
        ),
        ("i.jpg", np.zeros((3, 3), np.uint16), io.write_image, "JPEG cannot store"),
        ("v.png", np.zeros((3, 3, 5), np.uint8), io.write_image, "2D"),
        ("h.nii.gz", np.zeros((3, 3), np.float16), io.write_image, "NIFTI cannot store"),
        ("x.abc", np.zeros((3, 3), np.uint8), io.write_image, "cannot choose a format"),
        ("m.jpg", np.zeros((3, 3), bool), io.write_mask, "JPEG"),
        ("big.png", np.full((2, 2), 70000), io.write_mask, "<= 65535"),
        ("big.tif", np.full((2, 2), 70000), io.write_mask, "<= 65535"),
        ("neg.png", np.full((2, 2), -1), io.write_mask, ">= 0"),
        ("frac.nii.gz", np.full((2, 2), 0.5), io.write_mask, "whole numbers"),
    ],
)
def test_write_errors_name_the_file_and_leave_nothing(tmp_path, name, array, writer, problem):
    with pytest.raises(ImageReadError, match=problem) as err:
        writer(tmp_path / name, array)
    assert str(err.value).startswith(str(tmp_path / name))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "saver"),
    [
        ("a.png", "_save_pillow"),
        ("a.tif", "_save_tiff"),
        ("a.nii.gz", "_save_nifti"),
        ("a.nrrd", "_save_nrrd"),
    ],
)
def test_failed_write_leaves_no_file_and_no_temp_file(tmp_path, monkeypatch, name, saver):
    def broken(tmp, *args, **kwargs):
        Path(tmp).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(io.write, saver, broken)
    with pytest.raises(OSError, match="disk full"):
        io.write_image(tmp_path / name, np.zeros((4, 4), np.uint8))
    with pytest.raises(OSError, match="disk full"):
        io.write_mask(tmp_path / name, np.zeros((4, 4), bool))
    assert list(tmp_path.iterdir()) == []
    # an existing file keeps its old content
    (tmp_path / name).write_bytes(b"old")
    with pytest.raises(OSError, match="disk full"):
        io.write_mask(tmp_path / name, np.zeros((4, 4), bool))
    assert (tmp_path / name).read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == [name]


# --------------------------------------------------------------------------- mask rules

U8 = np.uint8


@pytest.mark.parametrize(
    ("array", "kwargs", "expected"),
    [
        (np.array([[0, 255]], U8), {}, np.array([[False, True]])),
        (np.array([[0, 1]], U8), {}, np.array([[False, True]])),
        (np.array([[0, 0]], U8), {}, np.array([[False, False]])),
        (np.array([[255, 255]], U8), {}, np.array([[True, True]])),
        (np.array([[1, 1]], np.uint16), {}, np.array([[True, True]])),
        (np.array([[True, False]]), {}, np.array([[True, False]])),
        (np.array([[0, 1, 2]], U8), {}, np.array([[0, 1, 2]], np.int32)),
        (np.array([[0, 128]], U8), {}, np.array([[0, 128]], np.int32)),
        (np.array([[0, 1, 255]], U8), {}, np.array([[0, 1, 255]], np.int32)),
        (np.array([[0, 255]], U8), {"kind": "labels"}, np.array([[0, 255]], np.int32)),
        (np.array([[0, 1]], U8), {"kind": "labels"}, np.array([[0, 1]], np.int32)),
        (np.array([[True, False]]), {"kind": "labels"}, np.array([[1, 0]], np.int32)),
        (np.array([[0, 1, 2]], U8), {"kind": "binary"}, np.array([[False, True, True]])),
        (np.array([[0.0, 1.0, 2.0]], np.float32), {}, np.array([[0, 1, 2]], np.int32)),
        (np.array([[0.0, 1.0]], np.float32), {}, np.array([[False, True]])),
        (np.array([[0.0, 0.3]], np.float32), {"kind": "binary"}, np.array([[False, True]])),
        (np.array([[0, 70000]], np.int64), {}, np.array([[0, 70000]], np.int32)),
        # RGB whose channels agree is grey
        (np.array([[[0, 0, 0], [255, 255, 255]]], U8), {}, np.array([[False, True]])),
        (np.array([[[0, 0, 0, 255], [2, 2, 2, 255]]], U8), {}, np.array([[0, 2]], np.int32)),
        # channel picks one channel, then the single-channel rules
        (np.array([[[9, 0, 3], [7, 255, 3]]], U8), {"channel": 1}, np.array([[False, True]])),
        (np.array([[[9, 0, 3], [7, 255, 3]]], U8), {"channel": 0}, np.array([[9, 7]], np.int32)),
        # palettes: dict colour -> label, or rows = labels
        (
            np.array([[[0, 0, 0], [128, 0, 0], [0, 128, 0]]], U8),
            {"palette": {(0, 0, 0): 0, (128, 0, 0): 5, (0, 128, 0): 7}},
            np.array([[0, 5, 7]], np.int32),
        ),
        (
            np.array([[[0, 0, 0], [128, 0, 0], [0, 128, 0]]], U8),
            {"palette": np.array([[0, 0, 0], [0, 128, 0], [128, 0, 0]])},
            np.array([[0, 2, 1]], np.int32),
        ),
        (
            np.array([[[0, 0, 0], [128, 0, 0]]], U8),
            {"palette": {(0, 0, 0): 0, (128, 0, 0): 1}, "kind": "labels"},
            np.array([[0, 1]], np.int32),
        ),
        # a volume with 3 slices is not colour when the caller says so
        (
            np.dstack([np.zeros((2, 2)), np.ones((2, 2)), 2 * np.ones((2, 2))]).astype(U8),
            {"is_color": False},
            np.dstack([np.zeros((2, 2)), np.ones((2, 2)), 2 * np.ones((2, 2))]),
        ),
    ],
)
def test_interpret_mask_rules(array, kwargs, expected):
    out = io.interpret_mask(array, **kwargs)
    assert out.dtype == (np.bool_ if expected.dtype == np.bool_ else np.int32)
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize(
    ("array", "kwargs", "err", "match"),
    [
        (np.array([[[0, 0, 0], [10, 20, 30]]], U8), {}, ImageReadError, r"in colour.*palette"),
        (
            np.array([[[0, 0, 0], [10, 20, 30]]], U8),
            {"palette": {(0, 0, 0): 0}},
            ImageReadError,
            r"colour \(10, 20, 30\) at \(0, 1\) is not in the palette",
        ),
        (np.array([[0.0, 0.5]]), {}, ImageReadError, "whole numbers, got 0.5"),
        (np.array([[0, -3]]), {}, ImageReadError, ">= 0, got -3"),
        (np.array([[0.0, np.nan]]), {}, ImageReadError, "NaN"),
        (np.array([[0, 1]], U8), {"kind": "soft"}, ValueError, "kind must be one of"),
        (np.array([[0, 1]], U8), {"palette": {(0, 0, 0): 0}}, ValueError, "colour masks"),
        (
            np.zeros((1, 2, 3), U8),
            {"palette": {(0, 0, 0): 0}, "channel": 0},
            ValueError,
            "not both",
        ),
        (np.zeros((1, 2, 3), U8), {"channel": 3}, ValueError, r"channel must be in 0..2, got 3"),
        (np.zeros((1, 2, 3), U8), {"palette": np.zeros((3, 2))}, ValueError, "palette must be"),
        (np.zeros((1, 2), U8), {"lossy": True, "kind": "labels"}, ImageReadError, "lossy"),
    ],
)
def test_interpret_mask_errors_name_the_file(array, kwargs, err, match):
    path = "some/dir/mask_7.png"
    with pytest.raises(err, match=match) as info:
        io.interpret_mask(array, path=path, **kwargs)
    if err is ImageReadError:
        assert str(info.value).startswith(f"{path}: ")


def test_interpret_mask_without_path_raises_plain_valueerror():
    with pytest.raises(ValueError, match="^mask values must be whole numbers") as info:
        io.interpret_mask(np.array([[0.5]]))
    assert not isinstance(info.value, ImageReadError)


def test_lossy_mask_is_thresholded_at_128_with_a_warning():
    grey = np.array([[0, 127, 128, 250]], U8)
    with pytest.warns(UserWarning, match="x.jpg: lossy .* thresholded at 128"):
        out = io.interpret_mask(grey, lossy=True, path="x.jpg")
    np.testing.assert_array_equal(out, [[False, False, True, True]])


def test_read_mask_jpeg_warns_and_thresholds(tmp_path):
    mask = np.zeros((32, 32), U8)
    mask[8:24, 8:24] = 255
    Image.fromarray(mask).save(tmp_path / "m.jpg", quality=95)
    with pytest.warns(UserWarning, match="thresholded at 128"):
        out, meta = io.read_mask(tmp_path / "m.jpg")
    raw = np.asarray(Image.open(tmp_path / "m.jpg"))
    np.testing.assert_array_equal(out, raw >= 128)
    assert out.dtype == np.bool_ and meta.format == "jpeg"
    assert abs(int(out.sum()) - 256) <= 8  # the square survives compression


@pytest.mark.parametrize(
    "name, save, lossy",
    [
        ("a.jpg", "JPEG", True),
        ("a.JPEG", "JPEG", True),
        ("a.png", "PNG", False),
        ("a.tif", "TIFF", False),
        ("a.bin", "JPEG", True),  # no known suffix: told by its first bytes
        ("b.bin", "PNG", False),
    ],
)
def test_is_lossy(tmp_path, name, save, lossy):
    Image.fromarray(np.zeros((4, 4), U8)).save(tmp_path / name, format=save)
    assert io.is_lossy(tmp_path / name) is lossy


def test_is_lossy_unknown_format(tmp_path):
    (tmp_path / "x.bin").write_bytes(b"nothing an image starts with")
    with pytest.raises(ImageReadError, match="x.bin: unknown image format"):
        io.is_lossy(tmp_path / "x.bin")


def test_read_mask_palette_png(tmp_path):
    idx = np.array([[0, 1, 2], [2, 2, 0]], U8)
    colours = [0, 0, 0, 128, 0, 0, 0, 128, 0]
    p = Image.fromarray(idx, mode="P")
    p.putpalette(colours + [0] * (768 - len(colours)))
    p.save(tmp_path / "voc.png")
    labels, _ = io.read_mask(tmp_path / "voc.png")  # indices are the labels
    np.testing.assert_array_equal(labels, idx)
    assert labels.dtype == np.int32
    swapped = {(0, 0, 0): 0, (128, 0, 0): 2, (0, 128, 0): 1}  # colours decide when given
    labels, _ = io.read_mask(tmp_path / "voc.png", palette=swapped)
    np.testing.assert_array_equal(labels, [[0, 2, 1], [1, 1, 0]])


def test_read_mask_rgb_png_needs_palette(tmp_path):
    rgb = np.zeros((2, 2, 3), U8)
    rgb[0, 1] = (128, 64, 128)
    io.write_image(tmp_path / "road.png", rgb)
    with pytest.raises(ImageReadError, match="palette") as err:
        io.read_mask(tmp_path / "road.png")
    assert str(err.value).startswith(str(tmp_path / "road.png"))
    labels, _ = io.read_mask(tmp_path / "road.png", palette={(0, 0, 0): 0, (128, 64, 128): 3})
    np.testing.assert_array_equal(labels, [[0, 3], [0, 0]])


# --------------------------------------------------------------------------- write_mask


def test_write_mask_png_binary_is_0_255_uint8(tmp_path):
    mask = np.zeros((5, 7), bool)
    mask[1:3, 2:6] = True
    io.write_mask(tmp_path / "m.png", mask)
    raw = cv2.imread(str(tmp_path / "m.png"), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint8 and set(np.unique(raw)) == {0, 255}
    np.testing.assert_array_equal(raw == 255, mask)
    back, _ = io.read_mask(tmp_path / "m.png")
    assert back.dtype == np.bool_
    np.testing.assert_array_equal(back, mask)


@pytest.mark.parametrize(
    ("suffix", "top", "stored"),
    [
        (".png", 7, np.uint8),
        (".png", 300, np.uint16),
        (".tif", 65535, np.uint16),
        (".nii.gz", 7, np.uint8),
        (".nii.gz", 300, np.int16),
        (".nii.gz", 70000, np.int32),
        (".nrrd", 300, np.int16),
    ],
)
def test_write_mask_labels_smallest_dtype(tmp_path, suffix, top, stored):
    labels = np.zeros((4, 6), np.int32)
    labels[1, 1], labels[2, 3] = 2, top
    path = io.write_mask(tmp_path / f"l{suffix}", labels)
    if suffix in (".png", ".tif"):
        raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    else:
        raw = sitk_array(sitk.ReadImage(str(path)))
    assert raw.dtype == stored
    np.testing.assert_array_equal(raw, labels)
    back, _ = io.read_mask(path)
    assert back.dtype == np.int32
    np.testing.assert_array_equal(back, labels)


def test_write_mask_volumes(tmp_path):
    labels = np.zeros((6, 5, 3), np.int32)  # 3 slices: must not be taken for RGB
    labels[1:3, 1:4, 0], labels[2:5, 0:2, 2] = 1, 4
    meta = ImageMeta(affine=oblique_affine())
    for suffix in (".tif", ".nii.gz", ".nrrd"):
        io.write_mask(tmp_path / f"v{suffix}", labels, meta=meta)
        back, got = io.read_mask(tmp_path / f"v{suffix}")
        np.testing.assert_array_equal(back, labels)
        if suffix != ".tif":
            np.testing.assert_allclose(got.affine, meta.affine, atol=1e-5)
    io.write_mask(tmp_path / "b.nii.gz", labels > 0)
    raw = nib.load(tmp_path / "b.nii.gz")
    assert raw.get_data_dtype() == np.uint8 and set(np.unique(np.asarray(raw.dataobj))) == {0, 1}


# --------------------------------------------------------------------------- files


@pytest.mark.parametrize(
    ("path", "stem"),
    [
        ("a/b/case_01.nii.gz", "case_01"),
        ("case.NII.GZ", "case"),
        ("x/img.v2.png", "img.v2"),
        ("s.nrrd", "s"),
        ("t.tiff", "t"),
        ("dicom/ct_7", "ct_7"),
        ("p/q.mask.tif", "q.mask"),
    ],
)
def test_case_stem(path, stem):
    assert io.case_stem(path) == stem


def _touch(root: Path, *names: str) -> None:
    for n in names:
        (root / n).parent.mkdir(parents=True, exist_ok=True)
        (root / n).write_bytes(b"")


def test_list_images(tmp_path):
    _touch(tmp_path, "b.png", "a/c.nii.gz", "a/d.txt", ".e.tmp.png", "ser/1.dcm", "ser/2.dcm")
    assert io.list_images(tmp_path) == [
        tmp_path / "a" / "c.nii.gz",
        tmp_path / "b.png",
        tmp_path / "ser",
    ]
    assert io.list_images(tmp_path, recursive=False) == [tmp_path / "b.png"]
    with pytest.raises(ImageReadError, match="no such folder"):
        io.list_images(tmp_path / "nope")


def test_match_files(tmp_path):
    pred, truth = tmp_path / "pred", tmp_path / "truth"
    _touch(
        pred,
        "p1/c1.png",
        "p1/c2.png",
        "c3.nii.gz",
        "flat_only.png",
        "extra.png",
        "dup/x.png",
        "dup2/x.png",
    )
    _touch(
        truth,
        "p1/c1_mask.png",
        "p1/c2_mask.png",
        "c3_mask.nii.gz",
        "deep/er/flat_only_mask.png",
        "lonely_mask.png",
        "a/x_mask.png",
    )
    pairs, un_p, un_t = io.match_files(pred, truth, truth_suffix="_mask")
    assert pairs == [
        (pred / "c3.nii.gz", truth / "c3_mask.nii.gz"),
        (pred / "flat_only.png", truth / "deep/er/flat_only_mask.png"),  # unique bare name
        (pred / "p1/c1.png", truth / "p1/c1_mask.png"),
        (pred / "p1/c2.png", truth / "p1/c2_mask.png"),
    ]
    # "x" is ambiguous on the prediction side, so it is left unmatched rather than guessed
    assert un_p == [pred / "dup/x.png", pred / "dup2/x.png", pred / "extra.png"]
    assert un_t == [truth / "a/x_mask.png", truth / "lonely_mask.png"]
    pairs, _, un_t = io.match_files(pred, truth)  # without the suffix nothing matches
    assert pairs == [] and len(un_t) == 6


def test_match_files_rejects_two_files_for_one_case(tmp_path):
    _touch(tmp_path / "p", "c.png", "c.nii.gz")
    _touch(tmp_path / "t", "c.png")
    with pytest.raises(ImageReadError, match="same case name"):
        io.match_files(tmp_path / "p", tmp_path / "t")


def test_check_compatible(tmp_path):
    io.check_compatible(np.zeros((4, 5, 3)), np.zeros((4, 5), bool))  # colour image, 2D mask
    io.check_compatible((4, 5, 6), (4, 5, 6))
    with pytest.raises(ValueError, match=r"shape \(4, 6\) does not match the image shape \(4, 5\)"):
        io.check_compatible((4, 5), (4, 6))
    img_meta = ImageMeta(
        path="img/case.nii.gz",
        format="nifti",
        spacing=(1.0, 1.0, 2.0),
        affine=np.diag([1.0, 1.0, 2.0, 1.0]),
    )
    mask_meta = ImageMeta(
        path="lab/case.nii.gz",
        format="nifti",
        spacing=(1.0, 1.0, 3.0),
        affine=np.diag([1.0, 1.0, 3.0, 1.0]),
    )
    with pytest.raises(ImageReadError, match="spacing") as err:
        io.check_compatible((2, 2, 2), (2, 2, 2), image_meta=img_meta, mask_meta=mask_meta)
    assert str(err.value).startswith("lab/case.nii.gz: ") and "img/case.nii.gz" in str(err.value)
    with pytest.raises(ImageReadError, match="lab/case.nii.gz: shape .*img/case.nii.gz"):
        io.check_compatible((2, 2, 2), (2, 2, 3), image_meta=img_meta, mask_meta=mask_meta)
    shifted = ImageMeta(
        path="lab/case.nii.gz",
        spacing=(1.0, 1.0, 2.0),
        affine=np.diag([1.0, 1.0, 2.0, 1.0]) + np.eye(4, k=3) * 0,
    )
    shifted.affine[0, 3] = 5.0
    with pytest.raises(ImageReadError, match="affine"):
        io.check_compatible((2, 2, 2), (2, 2, 2), image_meta=img_meta, mask_meta=shifted)
    ok = ImageMeta(
        path="lab/case.nii.gz", spacing=(1.0, 1.0, 2.0000001), affine=np.diag([1.0, 1.0, 2.0, 1.0])
    )
    io.check_compatible((2, 2, 2), (2, 2, 2), image_meta=img_meta, mask_meta=ok)


# --------------------------------------------------------------------------- real data


def _need(folder: str) -> Path:
    path = DATA / folder
    if not path.is_dir():
        pytest.skip(f"shared dataset {path} is missing")
    return path


@pytest.mark.slow
def test_real_isbi_label_is_binary():
    labels = _need("isbi2012/labels")
    # 0.png is among the slices held back for evaluation; take the first one present
    path = labels / "0.png" if (labels / "0.png").exists() else sorted(labels.glob("*.png"))[0]
    mask, meta = io.read_mask(path)
    raw = np.asarray(Image.open(path))
    assert set(np.unique(raw)) == {0, 255}
    assert mask.dtype == np.bool_ and mask.shape == (512, 512) and meta.format == "png"
    np.testing.assert_array_equal(mask, raw == 255)
    assert 0.6 < mask.mean() < 0.9  # ~78% cell interior (dataset notes)
    image, _ = io.read_image(DATA / "isbi2012" / "images" / path.name)
    io.check_compatible(image, mask)


@pytest.mark.slow
def test_real_hippocampus_nifti_against_simpleitk():
    root = _need("hippocampus")
    names = sorted(p.name for p in (root / "labels").glob("*.nii.gz"))
    float_labels = [
        n for n in names if nib.load(root / "labels" / n).get_data_dtype() == np.float32
    ]
    assert float_labels, "the dataset notes promise float32 label files"
    for name in [*names[:3], *float_labels]:
        image, imeta = io.read_image(root / "images" / name)
        labels, lmeta = io.read_mask(root / "labels" / name, kind="labels")
        assert labels.dtype == np.int32
        assert set(np.unique(labels)) <= {0, 1, 2} and labels.max() > 0
        oracle = sitk.ReadImage(str(root / "labels" / name))
        np.testing.assert_array_equal(labels, sitk_array(oracle))
        np.testing.assert_allclose(lmeta.spacing, oracle.GetSpacing(), rtol=1e-6)
        np.testing.assert_allclose(lmeta.affine, sitk_affine(oracle), atol=1e-4)
        assert imeta.format == "nifti" and image.ndim == 3
        io.check_compatible(image, labels, image_meta=imeta, mask_meta=lmeta)
    auto, _ = io.read_mask(root / "labels" / float_labels[0])
    assert auto.dtype in (np.bool_, np.int32)  # auto: {0,1} -> bool, {0,1,2} -> labels


@pytest.mark.slow
def test_real_pyradiomics_nrrd_against_simpleitk():
    root = _need("pyradiomics")
    for name in ("brain1.nrrd", "breast1.nrrd"):
        image, imeta = io.read_image(root / "images" / name)
        oracle = sitk.ReadImage(str(root / "images" / name))
        np.testing.assert_array_equal(image, sitk_array(oracle))
        np.testing.assert_allclose(imeta.spacing, oracle.GetSpacing(), rtol=1e-5)
        np.testing.assert_allclose(imeta.affine, sitk_affine(oracle), atol=1e-4)
        mask, mmeta = io.read_mask(root / "labels" / name)
        assert mask.dtype == np.bool_ and mask.any()
        io.check_compatible(image, mask, image_meta=imeta, mask_meta=mmeta)
    _, meta = io.read_image(root / "images" / "brain1.nrrd")
    np.testing.assert_allclose(meta.spacing, (0.78125, 0.78125, 6.5))
    assert int(io.read_mask(root / "labels" / "brain1.nrrd")[0].sum()) == 4137  # SOURCE.md


@pytest.mark.slow
def test_real_camvid_labels_are_0_to_11():
    root = _need("camvid/labels")
    path = sorted(root.glob("*.png"))[0]
    labels, meta = io.read_mask(path)
    assert labels.dtype == np.int32 and labels.shape == (360, 480)
    np.testing.assert_array_equal(labels, np.asarray(Image.open(path)))
    assert set(np.unique(labels)) <= set(range(12)) and labels.max() > 1


@pytest.mark.slow
def test_real_lgg_masks_are_binary():
    root = _need("lgg_mri/masks")
    paths = sorted(root.rglob("*_mask.png"))[:40]
    masks = [io.read_mask(p)[0] for p in paths]
    assert all(m.dtype == np.bool_ and m.shape == (256, 256) for m in masks)
    assert any(m.any() for m in masks) and any(not m.any() for m in masks)
    pairs, un_p, _ = io.match_files(DATA / "lgg_mri" / "images", root, truth_suffix="_mask")
    assert pairs and not un_p
    image, _ = io.read_image(pairs[0][0])
    assert image.shape == (256, 256, 3)
    io.check_compatible(image, io.read_mask(pairs[0][1])[0])


@pytest.mark.slow
def test_real_kvasir_jpeg_mask_and_dsb_instances():
    kvasir = _need("kvasir/masks")
    path = sorted(kvasir.glob("*.jpg"))[0]
    with pytest.warns(UserWarning, match="thresholded at 128"):
        mask, _ = io.read_mask(path)
    raw = np.asarray(Image.open(path))
    np.testing.assert_array_equal(mask, raw[..., 0] >= 128)
    dsb = _need("dsb2018_nuclei/masks")
    inst, meta = io.read_mask(dsb / "img2d.tif")
    assert inst.dtype == np.int32 and meta.format == "tiff"
    ids = np.unique(inst)
    assert len(ids) - 1 == 125 and ids.max() == 183  # dataset notes


# --------------------------------------------------------------------------- output naming


@pytest.mark.parametrize(
    ("name", "suffix"),
    [
        ("a.png", ".png"),
        ("a.jpg", ".png"),
        ("a.bmp", ".png"),
        ("a.tif", ".tif"),
        ("a.TIFF", ".tif"),
        ("a.nii", ".nii.gz"),
        ("a.nii.gz", ".nii.gz"),
        ("a.nrrd", ".nrrd"),
        ("a.dcm", ".nii.gz"),
    ],
)
def test_mask_suffix_keeps_the_input_family(name, suffix):
    assert io.mask_suffix(name) == suffix


def test_output_paths(tmp_path):
    assert io.output_paths(["x/a.png"], tmp_path / "m.png", io.mask_suffix) == [tmp_path / "m.png"]
    many = io.output_paths(["x/a.png", "y/b.nii.gz"], tmp_path / "out", io.mask_suffix)
    assert many == [tmp_path / "out" / "a.png", tmp_path / "out" / "b.nii.gz"]
    (tmp_path / "f.png").write_text("x")
    with pytest.raises(ValueError, match="with several inputs the output must be a folder"):
        io.output_paths(["a.png", "b.png"], tmp_path / "f.png", io.mask_suffix)
    with pytest.raises(ValueError, match="share the name 'a'"):
        io.output_paths(["x/a.png", "y/a.png"], tmp_path / "o", io.mask_suffix)
