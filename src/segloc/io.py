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

File problems raise :class:`ImageReadError` (a ``ValueError``) whose message starts
with the path.
"""

from __future__ import annotations

import gzip
import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segloc._validation import atomic_path, check_choice

__all__ = [
    "ImageMeta",
    "ImageReadError",
    "case_stem",
    "check_compatible",
    "interpret_mask",
    "is_lossy",
    "list_images",
    "match_files",
    "read_image",
    "read_mask",
    "write_image",
    "write_mask",
]


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


# --------------------------------------------------------------------------- formats

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


# --------------------------------------------------------------------------- readers


def read_image(path: str | os.PathLike, *, as_gray: bool = False) -> tuple[np.ndarray, ImageMeta]:
    """Read a 2D image, a volume or a DICOM series.

    Parameters
    ----------
    path : str or path-like
        PNG, JPEG, BMP, TIFF (8/16-bit; several pages -> ``(rows, cols, pages)``),
        NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``, ``.nhdr``), a DICOM file, or a
        folder holding one DICOM series (-> ``(rows, cols, slices)``). The format comes
        from the suffix, then from the first bytes when the suffix is unknown.
    as_gray : bool, optional
        Convert a colour 2D image to luminance ``0.2125 R + 0.7154 G + 0.0721 B`` (alpha
        dropped) as float64 in [0, 1], like ``skimage.io.imread(as_gray=True)``;
        grey images and volumes are returned unchanged.

    Returns
    -------
    image : ndarray
        Pixel values in the stored dtype (NIfTI: as nibabel's ``dataobj`` gives them,
        scaling applied; DICOM: RescaleSlope/Intercept applied).
    meta : ImageMeta
        Format, spacing per spatial axis, affine (index -> RAS+ mm) when known.

    Raises
    ------
    ImageReadError
        Missing file, unknown format, corrupt or truncated file, an image above
        Pillow's ``Image.MAX_IMAGE_PIXELS`` (decompression bomb), an empty folder or
        one holding several DICOM series; the message starts with the path.

    References
    ----------
    .. [1] NIfTI-1 data format, https://nifti.nimh.nih.gov/nifti-1
    .. [2] Definition of NRRD file format, https://teem.sourceforge.net/nrrd/format.html
    .. [3] DICOM PS3.3 C.7.6.2.1.1 (Image Position and Image Orientation) and C.11.1
           (Modality LUT: RescaleSlope/Intercept), https://dicom.nema.org/medical/dicom/current/

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from segloc import io
    >>> d = tempfile.mkdtemp()
    >>> _ = io.write_image(f"{d}/a.png", np.array([[0, 7]], np.uint8))
    >>> image, meta = io.read_image(f"{d}/a.png")
    >>> image.tolist(), meta.format, meta.spacing
    ([[0, 7]], 'png', (1.0, 1.0))
    """
    image, meta = _read(Path(path))
    if as_gray and "channels" in meta.header:
        image = _rgb_to_gray(image)
    return image, meta


def _read(path: Path, *, palette_indices: bool = False) -> tuple[np.ndarray, ImageMeta]:
    if not path.exists():
        raise ImageReadError(f"{path}: no such file or directory")
    fmt = _format_of(path)
    readers: dict[str, Callable[..., tuple[np.ndarray, ImageMeta]]] = {
        "nifti": _read_nifti,
        "nrrd": _read_nrrd,
        "dicom": _read_dicom_series if path.is_dir() else _read_dicom_file,
        "tiff": _read_tiff,
    }
    try:
        if fmt in readers:
            return readers[fmt](path)
        return _read_pillow(path, palette_indices=palette_indices)
    except ImageReadError:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # every library has its own exceptions; keep the path
        raise _library_error(path, exc) from exc


def _rgb_to_gray(image: np.ndarray) -> np.ndarray:
    # the weights and the [0, 1] scaling of skimage.color.rgb2gray (ITU-R BT.709)
    rgb = image[..., :3]
    if np.issubdtype(rgb.dtype, np.integer):
        rgb = rgb / float(np.iinfo(rgb.dtype).max)
    return rgb.astype(np.float64) @ np.array([0.2125, 0.7154, 0.0721])


def _pillow_open(path: Path):
    from PIL import Image

    # Pillow only warns between MAX_IMAGE_PIXELS and twice that; a bomb is an error here
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(path)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageReadError(
                f"{path}: image too large (decompression bomb guard: {exc})"
            ) from exc
        try:
            im.load()
        except BaseException:
            im.close()  # a truncated file would otherwise stay open
            raise
    return im


def _pillow_to_array(im, *, palette_indices: bool) -> tuple[np.ndarray, dict]:
    mode = im.mode
    header: dict[str, Any] = {"mode": mode}
    if mode == "P" and palette_indices:
        arr = np.asarray(im)  # the indices: VOC-style label maps store labels this way
    elif mode in ("P", "PA"):
        im = im.convert("RGBA" if "transparency" in im.info or mode == "PA" else "RGB")
        arr = np.asarray(im)
    elif mode == "1":
        arr = np.asarray(im.convert("L"))
    elif mode in ("LA", "La"):
        arr = np.asarray(im.getchannel(0))  # the alpha of a grey image carries no pixel value
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa"):
        arr = np.asarray(im.convert("RGB"))
    elif mode.startswith("I;16"):
        arr = np.asarray(im).astype(np.uint16)  # native byte order for big-endian variants
    else:
        arr = np.asarray(im)
    if arr.ndim == 3:
        header["channels"] = arr.shape[-1]
    header["dtype"] = str(arr.dtype)
    return np.array(arr), header


def _read_pillow(path: Path, *, palette_indices: bool = False) -> tuple[np.ndarray, ImageMeta]:
    im = _pillow_open(path)
    with im:
        fmt = _PILLOW_FORMATS.get(im.format or "")
        if fmt is None:
            raise ImageReadError(f"{path}: unsupported image format {im.format}")
        n_frames = getattr(im, "n_frames", 1)
        if fmt == "tiff" and n_frames > 1:
            pages = []
            for i in range(n_frames):
                im.seek(i)
                pages.append(_pillow_to_array(im, palette_indices=False)[0])
            return _stack_pages(pages, path, {"pages": n_frames, "mode": im.mode})
        arr, header = _pillow_to_array(im, palette_indices=palette_indices)
    return arr, ImageMeta(str(path), fmt, (1.0, 1.0), None, header)


def _stack_pages(pages: list[np.ndarray], path: Path, header: dict) -> tuple[np.ndarray, ImageMeta]:
    shapes = {p.shape for p in pages}
    if len(shapes) > 1:
        raise ImageReadError(f"{path}: TIFF pages differ in shape {sorted(shapes)}")
    if pages[0].ndim != 2:
        raise ImageReadError(f"{path}: colour TIFF stacks are not supported (colour volumes)")
    arr = np.stack(pages, axis=-1)  # (rows, cols, pages)
    header = {**header, "dtype": str(arr.dtype)}
    return arr, ImageMeta(str(path), "tiff", (1.0, 1.0, 1.0), None, header)


def _read_tiff(path: Path) -> tuple[np.ndarray, ImageMeta]:
    import tifffile
    from PIL import Image

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        limit = Image.MAX_IMAGE_PIXELS
        # same guard per page as Pillow's, so a TIFF is no easier a bomb than a PNG
        if limit is not None and page.shape[0] * page.shape[1] > limit:
            raise ImageReadError(
                f"{path}: image too large ({page.shape[0]}x{page.shape[1]} pixels per page "
                f"> PIL.Image.MAX_IMAGE_PIXELS = {limit})"
            )
        n_pages = len(tif.pages)
        try:
            series = [s.asarray() for s in tif.series]
            axes = [s.axes for s in tif.series]
            photometric = page.photometric
        except ValueError as exc:
            if "imagecodecs" not in str(exc):
                raise
            series = None  # a compression tifffile cannot decode alone (LZW, JPEG): Pillow can
    if series is None:
        return _read_pillow(path)
    colour = photometric in (tifffile.PHOTOMETRIC.RGB, tifffile.PHOTOMETRIC.YCBCR)
    pages: list[np.ndarray] = []
    for arr, ax in zip(series, axes, strict=True):
        if "S" in ax and colour:
            arr = np.moveaxis(arr, ax.index("S"), -1)  # planar RGB -> (..., rows, cols, 3)
            pages.extend(arr.reshape(-1, *arr.shape[-3:]))
        elif "S" in ax:
            raise ImageReadError(f"{path}: unsupported TIFF layout (axes {ax!r})")
        else:
            pages.extend(arr.reshape(-1, *arr.shape[-2:]))
    header = {"pages": n_pages, "dtype": str(pages[0].dtype)}
    if len(pages) > 1:
        return _stack_pages(pages, path, header)
    arr = pages[0]
    if arr.ndim == 3:
        header["channels"] = arr.shape[-1]
    return arr, ImageMeta(str(path), "tiff", (1.0, 1.0), None, header)


def _positive_spacing(values: Iterable[float]) -> tuple[float, ...]:
    # unset zooms/spacings are stored as 0 or NaN; 1.0 keeps distances in voxel units
    return tuple(float(v) if np.isfinite(v) and v > 0 else 1.0 for v in values)


def _read_nifti(path: Path) -> tuple[np.ndarray, ImageMeta]:
    import nibabel as nib

    if _suffix(path) in (".nii", ".nii.gz"):
        img = nib.load(path)
    else:  # nibabel picks its reader from the suffix; give it the bytes instead
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        cls = nib.Nifti2Image if raw[4:8] == b"n+2\x00" else nib.Nifti1Image
        img = cls.from_bytes(raw)
    arr = np.asarray(img.dataobj)
    spacing = _positive_spacing(img.header.get_zooms()[: arr.ndim])
    header = {
        "dtype": str(img.get_data_dtype()),
        "qform_code": int(img.header["qform_code"]),
        "sform_code": int(img.header["sform_code"]),
    }
    return arr, ImageMeta(str(path), "nifti", spacing, np.array(img.affine, float), header)


def _read_nrrd(path: Path) -> tuple[np.ndarray, ImageMeta]:
    import nrrd

    # index_order "F": first array index = first NRRD axis (x), as nibabel does for NIfTI
    arr, hdr = nrrd.read(str(path), index_order="F")
    arr = np.asarray(arr)
    spacing = (1.0,) * arr.ndim
    affine = None
    directions = hdr.get("space directions")
    if directions is not None:
        directions = np.array(
            [[np.nan] * 3 if d is None else d for d in directions], dtype=float
        ).reshape(arr.ndim, -1)
        spacing = _positive_spacing(np.linalg.norm(directions, axis=1))
        space = str(hdr.get("space", "")).lower()
        if (
            space in _NRRD_SPACE_SIGNS
            and arr.ndim == 3
            and directions.shape[1] == 3
            and np.isfinite(directions).all()
        ):
            affine = np.eye(4)
            affine[:3, :3] = directions.T  # column j = world step of array axis j
            affine[:3, 3] = np.asarray(hdr.get("space origin", np.zeros(3)), float)
            affine = np.diag([*_NRRD_SPACE_SIGNS[space], 1.0]) @ affine
    elif hdr.get("spacings") is not None:
        spacing = _positive_spacing(hdr["spacings"])
    header = {"dtype": str(arr.dtype), "nrrd": {k: v for k, v in hdr.items() if k != "data file"}}
    return arr, ImageMeta(str(path), "nrrd", spacing, affine, header)


def _dicom_pixels(ds) -> np.ndarray:
    arr = ds.pixel_array
    slope = float(getattr(ds, "RescaleSlope", 1) or 1)
    intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
    if slope == 1 and intercept == 0:
        return arr
    values = arr * slope + intercept
    if slope.is_integer() and intercept.is_integer():
        return values.astype(np.int32)
    return values.astype(np.float32)


def _read_dicom_file(path: Path) -> tuple[np.ndarray, ImageMeta]:
    import pydicom

    ds = pydicom.dcmread(path)
    arr = _dicom_pixels(ds)
    if int(getattr(ds, "SamplesPerPixel", 1)) > 1 and arr.ndim == 4:
        raise ImageReadError(f"{path}: colour DICOM volumes are not supported")
    spacing = _positive_spacing([float(v) for v in getattr(ds, "PixelSpacing", [1.0, 1.0])])
    header = {"dtype": str(ds.pixel_array.dtype), "modality": str(getattr(ds, "Modality", ""))}
    if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
        arr = np.moveaxis(arr, 0, -1)  # (frames, rows, cols) -> (rows, cols, frames)
        step = getattr(ds, "SpacingBetweenSlices", None) or getattr(ds, "SliceThickness", None)
        spacing = (*spacing, *_positive_spacing([float(step or 1.0)]))
    elif arr.ndim == 3:
        header["channels"] = arr.shape[-1]
    return arr, ImageMeta(str(path), "dicom", spacing, None, header)


def _read_dicom_series(folder: Path) -> tuple[np.ndarray, ImageMeta]:
    import pydicom
    from pydicom.errors import InvalidDicomError

    datasets = []
    for f in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        if f.name.upper() == "DICOMDIR":
            continue
        try:
            datasets.append((f, pydicom.dcmread(f)))
        except InvalidDicomError:
            continue  # notes, thumbnails ... beside the slices
    datasets = [(f, ds) for f, ds in datasets if "PixelData" in ds]
    if not datasets:
        raise ImageReadError(f"{folder}: no DICOM image files in this folder")
    uids = sorted({str(getattr(ds, "SeriesInstanceUID", "")) for _, ds in datasets})
    if len(uids) > 1:
        raise ImageReadError(
            f"{folder}: mixed series ({len(uids)} SeriesInstanceUIDs: {', '.join(uids[:3])}"
            f"{' ...' if len(uids) > 3 else ''}); put each series in its own folder"
        )
    first = datasets[0][1]
    try:
        orient = np.array([float(v) for v in first.ImageOrientationPatient])
    except AttributeError:
        raise ImageReadError(f"{folder}: DICOM files lack ImageOrientationPatient") from None
    row_cos, col_cos = orient[:3], orient[3:]
    normal = np.cross(row_cos, col_cos)
    shapes = {(int(ds.Rows), int(ds.Columns)) for _, ds in datasets}
    if len(shapes) > 1:
        raise ImageReadError(f"{folder}: slices differ in size {sorted(shapes)}")
    for f, ds in datasets:
        other = np.array([float(v) for v in ds.ImageOrientationPatient])
        if not np.allclose(other, orient, atol=1e-4):
            raise ImageReadError(f"{f}: ImageOrientationPatient differs from the other slices")
    # slice order = position along the slice normal (C.7.6.2.1.1), not file or instance order
    positions = [np.array([float(v) for v in ds.ImagePositionPatient]) for _, ds in datasets]
    along = np.array([p @ normal for p in positions])
    order = np.argsort(along, kind="stable")
    along = along[order]
    if len(along) > 1 and np.min(np.diff(along)) < 1e-6:
        i = int(np.argmin(np.diff(along)))
        raise ImageReadError(
            f"{folder}: two slices share a position ({datasets[order[i]][0].name}, "
            f"{datasets[order[i + 1]][0].name})"
        )
    slices = [_dicom_pixels(datasets[i][1]) for i in order]
    if slices[0].ndim != 2:
        raise ImageReadError(f"{folder}: colour or multi-frame DICOM series are not supported")
    dtypes = {s.dtype for s in slices}
    dtype = np.result_type(*dtypes)
    vol = np.stack([s.astype(dtype, copy=False) for s in slices], axis=-1)  # (rows, cols, slices)
    # PixelSpacing = (between rows, between columns) = (axis 0, axis 1)
    pix = [float(v) for v in getattr(first, "PixelSpacing", [1.0, 1.0])]
    if len(along) > 1:
        steps = np.diff(along)
        step = float(np.mean(steps))
        if np.ptp(steps) > 1e-3 * max(step, 1e-6) + 1e-4:
            warnings.warn(
                f"{folder}: slice spacing is not uniform ({steps.min():.4g}..{steps.max():.4g} mm);"
                f" using the mean {step:.4g} mm",
                UserWarning,
                stacklevel=4,
            )
    else:
        step = float(
            getattr(first, "SpacingBetweenSlices", None)
            or getattr(first, "SliceThickness", None)
            or 1.0
        )
    spacing = _positive_spacing([pix[0], pix[1], step])
    lps = np.eye(4)
    lps[:3, 0] = col_cos * spacing[0]  # moving down a column = next row
    lps[:3, 1] = row_cos * spacing[1]  # moving along a row = next column
    lps[:3, 2] = normal * spacing[2]
    lps[:3, 3] = positions[order[0]]
    header = {
        "dtype": str(datasets[0][1].pixel_array.dtype),
        "files": [datasets[i][0].name for i in order],
        "series_uid": uids[0],
        "modality": str(getattr(first, "Modality", "")),
    }
    return vol, ImageMeta(str(folder), "dicom", spacing, _LPS_TO_RAS @ lps, header)


# --------------------------------------------------------------------------- masks


def _fail(path: str | os.PathLike | None, problem: str) -> ValueError:
    if path is None:
        return ValueError(f"mask {problem}")
    return ImageReadError(f"{path}: mask {problem}")


def _palette_lookup(palette: Any) -> tuple[np.ndarray, np.ndarray]:
    """Palette as (colours (K, 3) uint8, labels (K,) int32)."""
    if isinstance(palette, Mapping):
        colours = np.array([tuple(c)[:3] for c in palette], dtype=np.int64).reshape(-1, 3)
        labels = np.array(list(palette.values()), dtype=np.int64)
    else:
        colours = np.asarray(palette)
        if colours.ndim != 2 or colours.shape[1] not in (3, 4):
            raise ValueError(f"palette must be a dict or a (K, 3) array, got shape {colours.shape}")
        colours = colours[:, :3].astype(np.int64)
        labels = np.arange(len(colours))
    if colours.size and (colours.min() < 0 or colours.max() > 255):
        raise ValueError("palette colours must be in 0..255")
    keys = colours @ np.array([65536, 256, 1])
    if len(np.unique(keys)) != len(keys):
        raise ValueError("palette must not list a colour twice")
    return keys, labels


def _apply_palette(rgb: np.ndarray, palette: Any, path) -> np.ndarray:
    keys, labels = _palette_lookup(palette)
    pixel_keys = rgb[..., :3].astype(np.int64) @ np.array([65536, 256, 1])
    uniq, inverse = np.unique(pixel_keys, return_inverse=True)
    order = np.argsort(keys)
    pos = np.clip(np.searchsorted(keys[order], uniq), 0, max(len(keys) - 1, 0))
    known = (keys[order][pos] == uniq) if len(keys) else np.zeros(len(uniq), bool)
    if not known.all():
        k = int(uniq[np.argmax(~known)])
        where = np.argwhere(pixel_keys == k)[0]
        colour = (k >> 16, (k >> 8) & 255, k & 255)
        raise _fail(
            path, f"colour {colour} at {tuple(int(i) for i in where)} is not in the palette"
        )
    return labels[order][pos][inverse].reshape(pixel_keys.shape).astype(np.int32)


def _single_channel(arr: np.ndarray, kind: str, path) -> np.ndarray:
    if arr.dtype == np.bool_:
        return arr.astype(np.int32) if kind == "labels" else arr
    if kind == "binary":
        return arr != 0
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise _fail(path, "holds NaN or infinite values")
        if not np.array_equal(arr, np.round(arr)):
            bad = arr[arr != np.round(arr)].flat[0]
            raise _fail(path, f"values must be whole numbers, got {bad} (use kind='binary')")
    elif not np.issubdtype(arr.dtype, np.integer):
        raise _fail(path, f"dtype must be numeric, got {arr.dtype}")
    values = np.unique(arr)
    if values.size and values[0] < 0:
        raise _fail(path, f"labels must be >= 0, got {values[0]}")
    if values.size and values[-1] > np.iinfo(np.int32).max:
        raise _fail(path, f"labels must fit int32, got {values[-1]}")
    if kind == "auto" and (set(values.tolist()) <= {0, 255} or set(values.tolist()) <= {0, 1}):
        return arr != 0
    return arr.astype(np.int32)


def interpret_mask(
    array: Any,
    *,
    kind: str = "auto",
    palette: Any = None,
    channel: int | None = None,
    lossy: bool = False,
    path: str | os.PathLike | None = None,
    is_color: bool | None = None,
) -> np.ndarray:
    """Turn stored mask pixels into a ``bool`` mask or an ``int32`` label map.

    Rules, in order:

    1. A colour mask (``(rows, cols, 3|4)``) needs ``palette`` (colour -> label) or
       ``channel`` (that channel, then the single-channel rules); one whose colour
       channels are identical is read as grey. Alpha is ignored.
    2. A lossy (JPEG) single-channel mask is thresholded, ``value >= 128``, with a
       ``UserWarning``; it cannot hold labels.
    3. A single-channel mask whose values are a subset of ``{0, 255}`` or of ``{0, 1}``
       is binary unless ``kind="labels"``; other values are labels (whole numbers
       >= 0). ``kind="binary"`` keeps every nonzero pixel.

    Parameters
    ----------
    array : array-like
        Mask pixels as stored.
    kind : {"auto", "binary", "labels"}
        Force the result type, or let the values decide.
    palette : dict or (K, 3) array, optional
        ``{(r, g, b): label}``, or rows of colours where row ``i`` is label ``i``
        (e.g. the CamVid or VOC palette).
    channel : int, optional
        Colour channel that holds the mask.
    lossy : bool
        The pixels come from a lossy format (JPEG).
    path : str or path-like, optional
        File the pixels came from; named in errors.
    is_color : bool, optional
        Whether the last axis is colour; default: ``array.ndim == 3`` and the last axis
        has 3 or 4 entries (pass False for a volume with 3 or 4 slices).

    Returns
    -------
    ndarray
        ``bool`` mask or ``int32`` label map with the spatial shape of ``array``.

    Raises
    ------
    ValueError
        (:class:`ImageReadError` when ``path`` is given) for a colour mask without
        palette/channel, a colour missing from the palette, negative, fractional or
        NaN values, or labels from a lossy file.

    References
    ----------
    .. [1] Everingham et al., "The PASCAL Visual Object Classes (VOC) Challenge", IJCV 88,
           2010, doi:10.1007/s11263-009-0275-4 (colour-coded class masks).
    .. [2] Jha et al., "Kvasir-SEG: A Segmented Polyp Dataset", MMM 2020,
           doi:10.1007/978-3-030-37734-2_37 (JPEG masks read by thresholding at 128).

    Examples
    --------
    >>> import numpy as np
    >>> interpret_mask(np.array([[0, 255]], np.uint8)).tolist()
    [[False, True]]
    >>> interpret_mask(np.array([[0, 2]], np.uint8)).tolist()
    [[0, 2]]
    """
    check_choice(kind, ("auto", "binary", "labels"), name="kind")
    if palette is not None and channel is not None:
        raise ValueError("give palette or channel, not both")
    arr = np.asarray(array)
    if is_color is None:
        is_color = arr.ndim == 3 and arr.shape[-1] in (3, 4)
    if is_color:
        if palette is not None:
            return _single_channel(_apply_palette(arr, palette, path), kind, path)
        if channel is not None:
            if not 0 <= channel < arr.shape[-1]:
                raise ValueError(f"channel must be in 0..{arr.shape[-1] - 1}, got {channel}")
            arr = arr[..., channel]
        elif all(np.array_equal(arr[..., 0], arr[..., c]) for c in (1, 2)):
            arr = arr[..., 0]  # a grey mask saved as RGB
        else:
            colour = tuple(int(v) for v in arr[..., :3].reshape(-1, 3)[0])
            raise _fail(
                path,
                f"is in colour (shape {arr.shape}, first colour {colour}); "
                "pass palette= (colour -> label) or channel=",
            )
    elif palette is not None or channel is not None:
        raise ValueError(f"palette and channel apply to colour masks, got shape {arr.shape}")
    if lossy and arr.dtype != np.bool_:
        if kind == "labels":
            raise _fail(path, "from a lossy (JPEG) file cannot hold labels; save it as PNG")
        warnings.warn(
            f"{path if path is not None else 'mask'}: lossy (JPEG) mask thresholded at 128",
            UserWarning,
            stacklevel=2,
        )
        return arr >= 128
    return _single_channel(arr, kind, path)


def read_mask(
    path: str | os.PathLike,
    *,
    kind: str = "auto",
    palette: Any = None,
    channel: int | None = None,
) -> tuple[np.ndarray, ImageMeta]:
    """Read a mask or label map: :func:`read_image`, then :func:`interpret_mask`.

    A palette PNG (mode ``"P"``) gives its indices as labels unless ``palette`` is
    passed, in which case its colours are matched. JPEG masks are thresholded at 128
    with a ``UserWarning``. Float NIfTI label maps holding whole numbers come back as
    ``int32`` labels.

    Parameters
    ----------
    path : str or path-like
        Any file :func:`read_image` reads.
    kind, palette, channel
        See :func:`interpret_mask`.

    Returns
    -------
    mask : ndarray
        ``bool`` mask or ``int32`` label map.
    meta : ImageMeta
        As from :func:`read_image`.

    References
    ----------
    .. [1] Everingham et al., "The PASCAL Visual Object Classes (VOC) Challenge", IJCV 88,
           2010, doi:10.1007/s11263-009-0275-4 (indexed-colour class masks).
    """
    path = Path(path)
    check_choice(kind, ("auto", "binary", "labels"), name="kind")
    arr, meta = _read(path, palette_indices=palette is None)
    mask = interpret_mask(
        arr,
        kind=kind,
        palette=palette,
        channel=channel,
        lossy=meta.format in _LOSSY,
        path=path,
        is_color="channels" in meta.header,
    )
    return mask, meta


# --------------------------------------------------------------------------- writers


def _write_format(path: Path) -> str:
    fmt = _SUFFIXES.get(_suffix(path))
    if fmt is None or fmt == "dicom" or _suffix(path) == ".nhdr":
        raise ImageReadError(
            f"{path}: cannot choose a format for writing from the suffix {_suffix(path)!r}; "
            "use .png, .jpg, .bmp, .tif, .nii, .nii.gz or .nrrd"
        )
    return fmt


def _affine_for(meta: ImageMeta | None, ndim: int) -> np.ndarray:
    if meta is not None and meta.affine is not None:
        affine = np.asarray(meta.affine, dtype=float)
        if affine.shape != (4, 4):
            raise ValueError(f"meta.affine must be 4x4, got shape {affine.shape}")
        return affine
    spacing = (1.0,) * 3
    if meta is not None and len(meta.spacing) >= min(ndim, 3):
        spacing = (*tuple(meta.spacing)[:3], 1.0, 1.0)[:3]
    return np.diag([*spacing, 1.0])


def _save_pillow(tmp: Path, arr: np.ndarray, fmt: str) -> None:
    from PIL import Image

    options = {"quality": 95} if fmt == "jpeg" else {}
    Image.fromarray(np.ascontiguousarray(arr)).save(tmp, format=fmt.upper(), **options)


def _save_tiff(tmp: Path, arr: np.ndarray, colour: bool) -> None:
    import tifffile

    if colour:
        tifffile.imwrite(tmp, arr, photometric="rgb")
    elif arr.ndim == 3:
        # one page per slice; minisblack stops tifffile from reading 3 pages as RGB
        tifffile.imwrite(tmp, np.moveaxis(arr, -1, 0), photometric="minisblack")
    else:
        tifffile.imwrite(tmp, arr, photometric="minisblack")


def _save_nifti(tmp: Path, arr: np.ndarray, meta: ImageMeta | None) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(arr, _affine_for(meta, arr.ndim))
    img.header.set_xyzt_units("mm")
    nib.save(img, tmp)


def _save_nrrd(tmp: Path, arr: np.ndarray, meta: ImageMeta | None) -> None:
    import nrrd

    header: dict[str, Any] = {"encoding": "gzip"}
    if arr.ndim == 3:
        lps = _LPS_TO_RAS @ _affine_for(meta, 3)  # RAS+ -> the LPS space ITK/Slicer expect
        header["space"] = "left-posterior-superior"
        header["space directions"] = lps[:3, :3].T
        header["space origin"] = lps[:3, 3]
    else:
        spacing = meta.spacing if meta is not None else (1.0,) * arr.ndim
        header["spacings"] = np.array((*spacing, 1.0, 1.0)[: arr.ndim], float)
    nrrd.write(str(tmp), np.asarray(arr), header, index_order="F")


def _check_dtype(path: Path, arr: np.ndarray, fmt: str, colour: bool, what: str) -> None:
    allowed = {
        "png": ("uint8",) if colour else ("uint8", "uint16"),
        "jpeg": ("uint8",),
        "bmp": ("uint8",),
        "tiff": ("uint8",)
        if colour
        else ("uint8", "uint16", "int8", "int16", "uint32", "int32", "float32", "float64"),
        "nifti": ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64"),
        "nrrd": (
            "uint8",
            "int8",
            "uint16",
            "int16",
            "uint32",
            "int32",
            "uint64",
            "int64",
            "float32",
            "float64",
        ),
    }[fmt]
    if str(arr.dtype) not in allowed:
        raise ImageReadError(
            f"{path}: {fmt.upper()} cannot store {'colour ' if colour else ''}{what} of dtype "
            f"{arr.dtype}; use one of {', '.join(allowed)}"
        )


def _write(path: Path, arr: np.ndarray, meta: ImageMeta | None, fmt: str, what: str) -> Path:
    colour = (
        arr.ndim == 3
        and arr.shape[-1] in (3, 4)
        and (fmt in ("png", "jpeg", "bmp") or (fmt == "tiff" and arr.dtype == np.uint8))
    )
    if fmt in ("png", "jpeg", "bmp") and arr.ndim != 2 and not colour:
        raise ImageReadError(
            f"{path}: {fmt.upper()} holds 2D images, got shape {arr.shape}; use .tif or .nii.gz"
        )
    if fmt in ("jpeg", "bmp") and colour and arr.shape[-1] == 4:
        raise ImageReadError(f"{path}: {fmt.upper()} cannot store an alpha channel")
    _check_dtype(path, arr, fmt, colour, what)
    if arr.ndim not in (2, 3):
        raise ImageReadError(f"{path}: {what} must be 2D or 3D, got shape {arr.shape}")
    writers: dict[str, Callable[[Path], None]] = {
        "png": lambda tmp: _save_pillow(tmp, arr, "png"),
        "jpeg": lambda tmp: _save_pillow(tmp, arr, "jpeg"),
        "bmp": lambda tmp: _save_pillow(tmp, arr, "bmp"),
        "tiff": lambda tmp: _save_tiff(tmp, arr, colour),
        "nifti": lambda tmp: _save_nifti(tmp, arr, meta),
        "nrrd": lambda tmp: _save_nrrd(tmp, arr, meta),
    }
    with atomic_path(path) as tmp:
        writers[fmt](tmp)
    return path


def write_image(path: str | os.PathLike, image: Any, *, meta: ImageMeta | None = None) -> Path:
    """Write an image or a volume; the format comes from the suffix. Atomic.

    Parameters
    ----------
    path : str or path-like
        ``.png`` (uint8 grey/RGB/RGBA, uint16 grey), ``.jpg`` (uint8 grey/RGB, quality
        95), ``.bmp`` (uint8), ``.tif`` (one page per slice for ``(rows, cols, slices)``;
        ``(rows, cols, 3|4)`` uint8 is RGB(A)), ``.nii``/``.nii.gz`` and
        ``.nrrd`` (numeric dtypes; bool becomes uint8).
    image : array-like
        2D image, colour image or 3D volume.
    meta : ImageMeta, optional
        ``meta.affine`` (index -> RAS+ mm) for NIfTI/NRRD; without it, ``diag(spacing)``
        from ``meta.spacing``, else identity.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ImageReadError
        Unknown suffix, or a dtype or shape the format cannot hold (message starts with
        the path). The target is untouched when writing fails.

    References
    ----------
    .. [1] NIfTI-1 data format, https://nifti.nimh.nih.gov/nifti-1
    .. [2] Definition of NRRD file format, https://teem.sourceforge.net/nrrd/format.html
    """
    path = Path(path)
    fmt = _write_format(path)
    arr = np.asarray(image)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * (255 if fmt in ("png", "jpeg", "bmp", "tiff") else 1)
    return _write(path, arr, meta, fmt, "image")


def _smallest_label_dtype(arr: np.ndarray, fmt: str, path: Path) -> np.ndarray:
    if arr.size == 0:
        return arr.astype(np.uint8)
    lo, hi = arr.min(), arr.max()
    if lo < 0:
        raise ImageReadError(f"{path}: mask labels must be >= 0, got {lo}")
    if hi <= 255:
        return arr.astype(np.uint8)
    if fmt in ("png", "tiff", "jpeg", "bmp"):
        if hi > 65535:
            raise ImageReadError(
                f"{path}: {fmt.upper()} label maps hold labels <= 65535, got {hi}; "
                "use .nii.gz or .nrrd"
            )
        if fmt in ("jpeg", "bmp"):
            raise ImageReadError(f"{path}: {fmt.upper()} label maps hold labels <= 255, got {hi}")
        return arr.astype(np.uint16)
    if hi <= np.iinfo(np.int16).max:
        return arr.astype(np.int16)
    return arr.astype(np.int32)


def write_mask(path: str | os.PathLike, mask: Any, *, meta: ImageMeta | None = None) -> Path:
    """Write a ``bool`` mask or an integer label map; the format comes from the suffix. Atomic.

    ``bool`` masks become 0/255 uint8 in PNG/TIFF/BMP (what viewers show) and 0/1 uint8 in
    NIfTI/NRRD (what medical tools expect). Label maps use the smallest type that holds
    them: uint8 up to 255, then uint16 in PNG/TIFF (above 65535 is an error) and
    int16/int32 in NIfTI/NRRD. JPEG is refused: it would change the labels.

    Parameters
    ----------
    path : str or path-like
        ``.png``, ``.bmp``, ``.tif``, ``.nii``, ``.nii.gz`` or ``.nrrd``.
    mask : array-like
        ``bool`` or whole-number labels >= 0, 2D or 3D.
    meta : ImageMeta, optional
        Geometry for NIfTI/NRRD, as in :func:`write_image`.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ImageReadError
        Unknown suffix, JPEG, negative or fractional labels, labels beyond the format.

    References
    ----------
    .. [1] NIfTI-1 data format, https://nifti.nimh.nih.gov/nifti-1
    """
    path = Path(path)
    fmt = _write_format(path)
    if fmt == "jpeg":
        raise ImageReadError(f"{path}: masks cannot be saved as JPEG (lossy); use .png")
    arr = np.asarray(mask)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * (1 if fmt in ("nifti", "nrrd") else 255)
    else:
        if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
            raise ImageReadError(f"{path}: mask must be bool or integer labels, got {arr.dtype}")
        if np.issubdtype(arr.dtype, np.floating) and not (
            np.isfinite(arr).all() and np.array_equal(arr, np.round(arr))
        ):
            raise ImageReadError(f"{path}: mask labels must be whole numbers")
        arr = _smallest_label_dtype(arr, fmt, path)
    if arr.ndim == 3 and fmt in ("png", "bmp"):
        raise ImageReadError(f"{path}: {fmt.upper()} holds 2D masks, got shape {arr.shape}")
    if arr.ndim == 3 and fmt == "tiff":
        # a (rows, cols, 3) label volume must not be taken for RGB
        return _write_mask_tiff_volume(path, arr)
    return _write(path, arr, meta, fmt, "mask")


def _write_mask_tiff_volume(path: Path, arr: np.ndarray) -> Path:
    with atomic_path(path) as tmp:
        _save_tiff(tmp, arr, colour=False)
    return path


# --------------------------------------------------------------------------- files


def case_stem(path: str | os.PathLike) -> str:
    """Name of a case: the file name without its format suffix (``.nii.gz`` counts as one).

    >>> case_stem("a/b/case_01.nii.gz"), case_stem("x/img.v2.png"), case_stem("dicom/ct_7")
    ('case_01', 'img.v2', 'ct_7')
    """
    p = Path(path)
    name = p.name
    if name.lower().endswith(".nii.gz"):
        return name[: -len(".nii.gz")]
    if p.suffix.lower() in _SUFFIXES:
        return p.stem
    return name


def _is_image_file(p: Path) -> bool:
    # temporary files of atomic writes and other hidden files start with "."
    return p.is_file() and not p.name.startswith(".") and _suffix(p) in _SUFFIXES


def list_images(folder: str | os.PathLike, *, recursive: bool = True) -> list[Path]:
    """Image files (known suffixes) under ``folder``, sorted.

    A sub-folder holding ``.dcm`` files is listed once, as one DICOM series. Hidden
    files (including the temporary files of atomic writes) are skipped.

    Raises
    ------
    ImageReadError
        If ``folder`` is missing or not a folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageReadError(f"{folder}: no such folder")
    found: list[Path] = []
    dirs = [folder]
    while dirs:
        d = dirs.pop()
        entries = sorted(d.iterdir())
        files = [p for p in entries if _is_image_file(p)]
        dicom = [p for p in files if _suffix(p) == ".dcm"]
        if dicom and d != folder:
            found.append(d)  # one DICOM series = one volume
            files = [p for p in files if _suffix(p) != ".dcm"]
        found.extend(files)
        if recursive:
            dirs.extend(p for p in entries if p.is_dir() and not p.name.startswith("."))
    return sorted(found)


def _keys(folder: Path, suffix: str) -> dict[str, Path]:
    """Relative path without format suffix (and without ``suffix`` at the end of the stem)."""
    out: dict[str, Path] = {}
    for p in list_images(folder):
        stem = case_stem(p)
        if suffix and stem.endswith(suffix) and len(stem) > len(suffix):
            stem = stem[: -len(suffix)]
        key = (p.parent.relative_to(folder) / stem).as_posix()
        if key in out:
            raise ImageReadError(f"{p}: same case name as {out[key]}; keep one file per case")
        out[key] = p
    return out


def match_files(
    pred_dir: str | os.PathLike, truth_dir: str | os.PathLike, *, truth_suffix: str = ""
) -> tuple[list[tuple[Path, Path]], list[Path], list[Path]]:
    """Pair prediction and truth files by case name.

    Files match when their paths relative to the two folders agree without the format
    suffix (``a/case_01.png`` and ``a/case_01.nii.gz``); the rest then match by bare
    name when that name is unique on both sides (flat predictions for nested truth).

    Parameters
    ----------
    pred_dir, truth_dir : str or path-like
        Folders searched recursively (:func:`list_images`).
    truth_suffix : str
        Removed from the end of truth names first, e.g. ``"_mask"`` pairs
        ``case_3.png`` with ``case_3_mask.png``.

    Returns
    -------
    pairs : list of (Path, Path)
        ``(prediction, truth)``, sorted by truth path.
    unmatched_pred, unmatched_truth : list of Path
        Sorted.

    Raises
    ------
    ImageReadError
        A folder is missing, or two files in one folder share a case name.
    """
    pred_dir, truth_dir = Path(pred_dir), Path(truth_dir)
    preds = _keys(pred_dir, "")
    truths = _keys(truth_dir, truth_suffix)
    pairs = [(preds.pop(k), truths.pop(k)) for k in sorted(set(preds) & set(truths))]

    def by_name(keys: dict[str, Path]) -> dict[str, str]:
        names: dict[str, list[str]] = {}
        for k in keys:
            names.setdefault(k.rsplit("/", 1)[-1], []).append(k)
        return {n: ks[0] for n, ks in names.items() if len(ks) == 1}

    pred_names, truth_names = by_name(preds), by_name(truths)
    for name in sorted(set(pred_names) & set(truth_names)):
        pairs.append((preds.pop(pred_names[name]), truths.pop(truth_names[name])))
    pairs.sort(key=lambda pt: pt[1])
    return pairs, sorted(preds.values()), sorted(truths.values())


def check_compatible(
    image: Any,
    mask: Any,
    *,
    image_meta: ImageMeta | None = None,
    mask_meta: ImageMeta | None = None,
    rtol: float = 1e-3,
) -> None:
    """Raise unless a mask fits an image: same spatial shape, spacing and affine.

    Parameters
    ----------
    image, mask : ndarray or tuple of int
        Arrays or their shapes. A colour axis ``(..., 3|4)`` on the image is ignored when
        the image has one more axis than the mask.
    image_meta, mask_meta : ImageMeta, optional
        When both are given, spacings (relative tolerance ``rtol``) and affines
        (within ``rtol`` times the largest spacing, in mm) must agree too.

    Raises
    ------
    ImageReadError
        On a mismatch, naming both files, when a path is known; plain ``ValueError``
        otherwise.
    """
    ishape = tuple(image) if isinstance(image, tuple) else np.shape(image)
    mshape = tuple(mask) if isinstance(mask, tuple) else np.shape(mask)
    if len(ishape) == len(mshape) + 1 and ishape[-1] in (3, 4):
        ishape = ishape[:-1]
    ipath = image_meta.path if image_meta is not None else None
    mpath = mask_meta.path if mask_meta is not None else None

    def fail(problem: str) -> ValueError:
        if mpath is None and ipath is None:
            return ValueError(f"mask and image: {problem}")
        return ImageReadError(f"{mpath or 'mask'}: {problem} (image {ipath or '<array>'})")

    if ishape != mshape:
        raise fail(f"shape {mshape} does not match the image shape {ishape}")
    if image_meta is None or mask_meta is None:
        return
    isp, msp = tuple(image_meta.spacing), tuple(mask_meta.spacing)
    if len(isp) == len(msp) and not np.allclose(isp, msp, rtol=rtol, atol=0):
        raise fail(f"spacing {msp} does not match the image spacing {isp}")
    if image_meta.affine is not None and mask_meta.affine is not None:
        ia, ma = np.asarray(image_meta.affine), np.asarray(mask_meta.affine)
        tol = rtol * max(max(isp, default=1.0), 1.0)
        if ia.shape != ma.shape or not np.allclose(ia, ma, rtol=0, atol=tol):
            raise fail("affine (voxel -> world position) does not match the image affine")
