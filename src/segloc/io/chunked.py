"""Images larger than memory: chunked arrays read and written a block at a time.

Readers (:func:`open_chunked`) give an array-like whose slices are read from disk on demand:

- Zarr arrays (``.zarr`` folders, format 2 or 3) and OME-Zarr multiscale images (a group whose
  ``multiscales`` metadata names the levels; level 0 is full resolution) [1]_ [2]_;
- TIFF through tifffile's Zarr view of its tiles or strips (tiled whole-slide TIFFs read one
  tile at a time) [3]_;
- uncompressed NIfTI (``.nii``) and NumPy ``.npy`` files, memory-mapped; a ``.nii.gz`` is
  read through nibabel's array proxy (correct, but each slab re-reads the stream from the
  start: convert it to ``.nii`` or Zarr first for large volumes).

Writers (:class:`ChunkedWriter`) create the output in a staging location beside the target
(``.<name>.partial``) and rename it onto the target when every block is written, so a reader
never sees a half-written output. Zarr is written chunk by chunk; a tiled TIFF is written from
the finished staging Zarr, one tile at a time; an uncompressed NIfTI is written through a
memory map. The staging location is fixed (not random) so that a run that was stopped can
resume: :mod:`segloc.engine.distributed` keeps done markers beside it.

Array layout follows ``docs/conventions.md``: ``(rows, cols[, slices])``. OME-Zarr axes are
written in that order, named ``y, x`` (2D) or ``y, x, z`` (3D), all of type ``space``.

References
----------
.. [1] Zarr storage specification, version 3, https://zarr-specs.readthedocs.io/
.. [2] J. Moore et al., "OME-NGFF: a next-generation file format for expanding bioimaging
   data-access strategies", Nature Methods 18, 2021, :doi:`10.1038/s41592-021-01326-w`
   (multiscales metadata, version 0.4).
.. [3] tifffile, ``TiffFile.aszarr`` and ``TiffWriter.write(tile=...)``,
   https://github.com/cgohlke/tifffile
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segloc.io.errors import ImageReadError
from segloc.io.formats import ImageMeta, _suffix

__all__ = [
    "ChunkedImage",
    "ChunkedWriter",
    "block_slices",
    "is_chunked_path",
    "open_chunked",
    "stage_path",
    "write_ome_zarr",
]

_ZARR = (".zarr", ".ome.zarr")
_TIFF = (".tif", ".tiff", ".ome.tif", ".ome.tiff")
#: chunk shape used where a file has none to offer (memory maps, strips)
DEFAULT_CHUNKS = {2: (1024, 1024), 3: (128, 128, 128)}


def _kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(_ZARR) or (path.is_dir() and (path / "zarr.json").exists()):
        return "zarr"
    if path.is_dir() and ((path / ".zarray").exists() or (path / ".zgroup").exists()):
        return "zarr"
    if name.endswith(_TIFF):
        return "tiff"
    if name.endswith(".nii"):
        return "nifti"
    if name.endswith(".nii.gz"):
        return "nifti.gz"
    if name.endswith(".npy"):
        return "npy"
    return "other"


def is_chunked_path(path: str | os.PathLike) -> bool:
    """True for a Zarr store (``.zarr`` / ``.ome.zarr``, or a folder holding Zarr metadata)."""
    return _kind(Path(path)) == "zarr"


@dataclass
class ChunkedImage:
    """An image on disk read a block at a time.

    Attributes
    ----------
    path : Path
    array : array-like
        Supports ``shape``, ``dtype`` and slicing with a tuple of slices.
    chunks : tuple of int
        The file's own block shape (read whole blocks for speed).
    meta : ImageMeta
        Format (``"zarr"``, ``"ome-zarr"``, ``"tiff"``, ``"nifti"``, ``"npy"``), spacing,
        affine (NIfTI), and in ``header`` the number of OME levels.
    """

    path: Path
    array: Any
    chunks: tuple[int, ...]
    meta: ImageMeta
    _close: list = field(default_factory=list, repr=False)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.array.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.array.dtype)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        try:
            return np.asarray(self.array[key])
        except (OSError, ValueError, KeyError) as exc:
            raise ImageReadError(f"{self.path}: cannot read block {key} ({exc})") from None

    def close(self) -> None:
        for closer in self._close:
            with contextlib.suppress(Exception):
                closer()
        self._close.clear()

    def __enter__(self) -> ChunkedImage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_chunked(path: str | os.PathLike, *, level: int = 0) -> ChunkedImage:
    """Open an image for block-wise reading (see the module docstring for the formats).

    Parameters
    ----------
    path : path-like
    level : int, default 0
        OME-Zarr resolution level (0 = full resolution).

    Raises
    ------
    ImageReadError
        Missing file, a format without block-wise reading, or a Zarr group that is not an
        OME-Zarr image; the message starts with the path.
    """
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: no such file or folder")
    kind = _kind(path)
    try:
        if kind == "zarr":
            return _open_zarr(path, level)
        if kind == "tiff":
            return _open_tiff(path)
        if kind in ("nifti", "nifti.gz"):
            return _open_nifti(path)
        if kind == "npy":
            arr = np.load(path, mmap_mode="r")
            return ChunkedImage(path, arr, _default_chunks(arr.shape), _meta(path, "npy", arr))
    except ImageReadError:
        raise
    except Exception as exc:  # the libraries raise many kinds; name the file
        raise ImageReadError(f"{path}: cannot open ({type(exc).__name__}: {exc})") from None
    raise ImageReadError(
        f"{path}: no block-wise reader for {_suffix(path) or 'this file'}; "
        "use Zarr, OME-Zarr, TIFF, .nii or .npy"
    )


def _default_chunks(shape: Sequence[int]) -> tuple[int, ...]:
    base = DEFAULT_CHUNKS.get(len(shape), (256,) * len(shape))
    return tuple(min(int(s), c) for s, c in zip(shape, base + (1,) * len(shape), strict=False))


def _meta(path: Path, fmt: str, arr: Any, spacing=None, affine=None, **header) -> ImageMeta:
    nd = min(len(arr.shape), 3)
    spacing = tuple(float(s) for s in spacing) if spacing is not None else (1.0,) * nd
    return ImageMeta(str(path), fmt, spacing, affine, {"dtype": str(arr.dtype), **header})


def _open_zarr(path: Path, level: int) -> ChunkedImage:
    import zarr

    node = zarr.open(str(path), mode="r")
    if isinstance(node, zarr.Array):
        spacing = node.attrs.get("segloc_spacing")
        return ChunkedImage(path, node, tuple(node.chunks), _meta(path, "zarr", node, spacing))
    attrs = dict(node.attrs)
    multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
    if not multiscales:
        raise ImageReadError(f"{path}: Zarr group without OME multiscales metadata")
    datasets = multiscales[0]["datasets"]
    if not 0 <= level < len(datasets):
        raise ImageReadError(f"{path}: level {level} not in 0..{len(datasets) - 1}")
    arr = node[datasets[level]["path"]]
    scale = next(
        (t["scale"] for t in datasets[level].get("coordinateTransformations", [])
         if t.get("type") == "scale"),
        None,
    )  # fmt: skip
    meta = _meta(path, "ome-zarr", arr, scale, levels=len(datasets), level=level)
    return ChunkedImage(path, arr, tuple(arr.chunks), meta)


def _open_tiff(path: Path) -> ChunkedImage:
    import tifffile
    import zarr

    tif = tifffile.TiffFile(path)
    try:
        store = tif.series[0].aszarr()
        node = zarr.open(store, mode="r")
        arr = node if isinstance(node, zarr.Array) else node["0"]
    except Exception:
        tif.close()
        raise
    image = ChunkedImage(path, arr, tuple(arr.chunks), _meta(path, "tiff", arr))
    image._close += [store.close, tif.close]
    return image


def _open_nifti(path: Path) -> ChunkedImage:
    import nibabel as nib

    img = nib.load(path, mmap=True)
    proxy = img.dataobj  # slicing reads only that part (memory-mapped when uncompressed)
    spacing = tuple(float(z) if z > 0 else 1.0 for z in img.header.get_zooms()[: len(proxy.shape)])
    meta = _meta(path, "nifti", proxy, spacing, np.array(img.affine, float))
    return ChunkedImage(path, proxy, _default_chunks(proxy.shape), meta)


def block_slices(
    shape: Sequence[int], chunks: Sequence[int]
) -> list[tuple[tuple[int, ...], tuple[slice, ...]]]:
    """Every block of a ``chunks`` grid over ``shape``: ``(block index, slices)``, C order.

    Examples
    --------
    >>> [s for _, s in block_slices((5,), (2,))]
    [(slice(0, 2, None),), (slice(2, 4, None),), (slice(4, 5, None),)]
    """
    import itertools

    counts = [-(-int(s) // int(c)) for s, c in zip(shape, chunks, strict=True)]
    out = []
    for idx in itertools.product(*(range(n) for n in counts)):
        sl = tuple(
            slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(idx, chunks, shape, strict=True)
        )
        out.append((idx, sl))
    return out


# --------------------------------------------------------------------------- writing


def stage_path(path: str | os.PathLike) -> Path:
    """Where the output ``path`` is built before its rename: ``.<name>.partial`` beside it.

    Fixed, so that a stopped run finds its finished blocks again."""
    path = Path(path)
    return path.parent / f".{path.name}.partial"


class ChunkedWriter:
    """An output written a block at a time and renamed into place when complete.

    Parameters
    ----------
    path : path-like
        ``.zarr`` (Zarr format 3), ``.ome.zarr`` (OME-Zarr 0.4 on Zarr format 2, one level),
        ``.tif`` / ``.tiff`` (tiled, zlib; built from a staging Zarr store at
        :meth:`commit`) or ``.nii`` (uncompressed NIfTI through a memory map).
    shape, dtype, chunks :
        The array. ``chunks`` is the block shape writers should fill whole (for TIFF, the
        tile shape along the first two axes).
    meta : ImageMeta, optional
        Spacing (and affine for NIfTI) to record.
    resume : bool, default False
        Keep what a previous run staged (the done markers decide what is redone); otherwise
        any staged data is removed first.

    Examples
    --------
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> w = ChunkedWriter(f"{d}/m.zarr", (4, 6), np.uint8, (2, 3))
    >>> w.array[0:2, 0:3] = 7
    >>> out = w.commit()
    >>> int(open_chunked(out)[:].sum())
    42
    """

    def __init__(
        self,
        path: str | os.PathLike,
        shape: Sequence[int],
        dtype: Any,
        chunks: Sequence[int],
        *,
        meta: ImageMeta | None = None,
        resume: bool = False,
    ) -> None:
        self.path = Path(path)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.chunks = tuple(min(int(c), s) for c, s in zip(chunks, self.shape, strict=True))
        self.meta = meta
        self.kind = _kind(self.path)
        if self.kind not in ("zarr", "tiff", "nifti"):
            raise ImageReadError(
                f"{self.path}: cannot write block by block to {_suffix(self.path) or 'this'}; "
                "use .zarr, .ome.zarr, .tif or .nii"
            )
        self.stage = stage_path(self.path)
        if not resume and self.stage.exists():
            _remove(self.stage)
        self.stage.mkdir(parents=True, exist_ok=True)
        try:
            self.array = self._create()
        except Exception as exc:
            raise ImageReadError(
                f"{self.path}: cannot create ({type(exc).__name__}: {exc})"
            ) from None

    @property
    def markers(self) -> Path:
        """Folder of done markers (one empty file per finished block)."""
        return self.stage / "done"

    def _create(self) -> Any:
        import zarr

        spacing = list(self.meta.spacing) if self.meta is not None else None
        if self.kind == "nifti":
            return _nifti_memmap(self.stage / "data.nii", self.shape, self.dtype, self.meta)
        if self.path.name.lower().endswith(".ome.zarr"):
            root = zarr.open_group(str(self.stage / "data"), mode="a", zarr_format=2)
            arr = root.require_array("0", shape=self.shape, chunks=self.chunks, dtype=self.dtype,
                                     fill_value=0)  # fmt: skip
            root.attrs["multiscales"] = [
                _multiscales(len(self.shape), [spacing or [1.0] * len(self.shape)])
            ]
            return arr
        store = str(self.stage / "data")
        if (self.stage / "data").exists():
            arr = zarr.open_array(store, mode="r+")
            if arr.shape == self.shape and arr.dtype == self.dtype:
                return arr
            _remove(self.stage / "data")
        arr = zarr.create_array(store, shape=self.shape, chunks=self.chunks, dtype=self.dtype,
                                fill_value=0)  # fmt: skip
        if spacing is not None:
            arr.attrs["segloc_spacing"] = spacing
        return arr

    def commit(self) -> Path:
        """Move the finished output onto ``path`` (a TIFF is written tile by tile first)."""
        if self.kind == "nifti":
            self.array.flush()
            del self.array
            os.replace(self.stage / "data.nii", self.path)
        elif self.kind == "tiff":
            _write_tiled_tiff(self.path, self.array, self.chunks)
        else:
            old = self.path.parent / f".{self.path.name}.old"
            if self.path.exists():
                _remove(old)
                os.replace(self.path, old)
            os.replace(self.stage / "data", self.path)
            if old.exists():
                _remove(old)
        _remove(self.stage)
        return self.path

    def abort(self) -> None:
        """Remove the staged output (a run that failed and will not resume)."""
        _remove(self.stage)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _multiscales(ndim: int, scales: list[list[float]]) -> dict:
    names = ["y", "x", "z"][:ndim]
    return {
        "version": "0.4",
        "axes": [{"name": n, "type": "space"} for n in names],
        "datasets": [
            {"path": str(k), "coordinateTransformations": [{"type": "scale", "scale": s}]}
            for k, s in enumerate(scales)
        ],
    }


def _nifti_memmap(path: Path, shape, dtype, meta: ImageMeta | None) -> np.memmap:
    import nibabel as nib

    affine = meta.affine if meta is not None and meta.affine is not None else None
    if affine is None:
        spacing = meta.spacing if meta is not None else (1.0,) * len(shape)
        affine = np.diag([*spacing[:3], *([1.0] * (4 - min(len(spacing), 3)))])
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_qform(affine, code=1)  # also sets the voxel sizes
    header.set_sform(affine, code=1)
    offset = 352  # the NIfTI-1 header (348 bytes) and an empty extension flag
    header["vox_offset"] = offset
    with open(path, "wb") as f:
        f.write(header.binaryblock)
        f.write(b"\0" * (offset - len(header.binaryblock)))
    # NIfTI stores voxels in Fortran order
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    with open(path, "r+b") as f:
        f.truncate(offset + size)
    return np.memmap(path, dtype=dtype, mode="r+", offset=offset, shape=tuple(shape), order="F")


def _write_tiled_tiff(path: Path, array: Any, chunks: Sequence[int]) -> None:
    import tifffile

    from segloc._validation import atomic_path

    tile = tuple(max(16, (int(c) // 16) * 16) for c in chunks[:2])
    rows, cols = array.shape[:2]
    extra = tuple(array.shape[2:])

    def tiles() -> Iterator[np.ndarray]:
        for i in range(0, rows, tile[0]):
            band = np.asarray(array[i : i + tile[0]])  # one row of tiles at a time
            for j in range(0, cols, tile[1]):
                t = np.zeros((*tile, *extra), array.dtype)
                part = band[:, j : j + tile[1]]
                t[: part.shape[0], : part.shape[1]] = part
                yield t

    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=True) as tw:
        tw.write(tiles(), shape=array.shape, dtype=array.dtype, tile=tile, compression="zlib")


def write_ome_zarr(
    path: str | os.PathLike,
    source: Any,
    *,
    chunks: Sequence[int] | None = None,
    levels: int = 3,
    labels: bool = False,
    spacing: Sequence[float] | None = None,
) -> Path:
    """Write ``source`` (any sliceable array, e.g. a :class:`ChunkedImage`) as an OME-Zarr
    multiscale image, block by block: level ``k`` is level ``k - 1`` halved along every axis
    (the mean of each 2x2(x2) cell for images, its top-left voxel for label maps, so labels
    stay labels). Written in a staging folder and renamed when complete.
    """
    import zarr

    path = Path(path)
    shape = tuple(int(s) for s in source.shape)
    chunks = tuple(chunks) if chunks is not None else _default_chunks(shape)
    chunks = tuple(min(c, s) for c, s in zip(chunks, shape, strict=True))
    spacing = list(spacing) if spacing is not None else [1.0] * len(shape)
    stage = stage_path(path)
    _remove(stage)
    root = zarr.open_group(str(stage), mode="w", zarr_format=2)
    prev: Any = source
    scales = []
    for k in range(levels):
        lshape = tuple(max(1, s >> k) for s in shape)
        lchunks = tuple(min(c, s) for c, s in zip(chunks, lshape, strict=True))
        arr = root.create_array(
            str(k), shape=lshape, chunks=lchunks, dtype=source.dtype, fill_value=0
        )
        for _, sl in block_slices(lshape, arr.chunks):
            if k == 0:
                arr[sl] = np.asarray(prev[sl])
            else:
                src = tuple(slice(2 * s.start, 2 * s.stop) for s in sl)
                arr[sl] = _halve(np.asarray(prev[src]), tuple(s.stop - s.start for s in sl), labels)
        scales.append([v * 2**k for v in spacing])
        prev = arr
        if min(lshape) == 1:
            break
    root.attrs["multiscales"] = [_multiscales(len(shape), scales)]
    if path.exists():
        _remove(path)
    os.replace(stage, path)
    return path


def _halve(block: np.ndarray, out_shape: tuple[int, ...], labels: bool) -> np.ndarray:
    if labels:
        return block[tuple(slice(0, 2 * n, 2) for n in out_shape)]
    pad = [(0, 2 * n - s) for n, s in zip(out_shape, block.shape, strict=True)]
    b = np.pad(block.astype(np.float64), pad, mode="edge")
    for axis in range(b.ndim):
        b = b.reshape(*b.shape[:axis], -1, 2, *b.shape[axis + 1 :]).mean(axis=axis + 1)
    return b.astype(block.dtype) if block.dtype.kind == "f" else np.rint(b).astype(block.dtype)
