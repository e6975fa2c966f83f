"""Argument checks shared by every public function.

Errors follow one pattern: the parameter's name, what was expected, what came
(``image must be 2D or 3D, got shape (3, 4, 5, 6)``).
"""

from __future__ import annotations

import contextlib
import errno
import numbers
import os
import secrets
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

ANY_NDIM = range(1, 33)  # NumPy's own limit; "any array that is not a scalar"
INT32_MAX = np.iinfo(np.int32).max


def check_image(
    image: Any,
    *,
    name: str = "image",
    ndim: Iterable[int] = (2, 3),
    allow_empty: bool = False,
) -> np.ndarray:
    """Return ``image`` as an ndarray after checking its dimensionality and values.

    Raises
    ------
    TypeError
        If ``image`` is not array-like with a numeric or boolean dtype.
    ValueError
        If its dimensionality is not in ``ndim``, it is empty, or it holds NaN/inf.
    """
    arr = np.asarray(image)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise TypeError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    ndim = tuple(ndim)
    if arr.ndim not in ndim:
        want = " or ".join(f"{d}D" for d in ndim)
        raise ValueError(f"{name} must be {want}, got shape {arr.shape}")
    if not allow_empty and arr.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.floating) and arr.size and not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def check_same_shape(a: np.ndarray, b: np.ndarray, *, names: tuple[str, str] = ("a", "b")) -> None:
    """Raise ValueError unless ``a`` and ``b`` have the same shape."""
    if np.shape(a) != np.shape(b):
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same shape, "
            f"got {np.shape(a)} and {np.shape(b)}"
        )


def check_choice(value: Any, choices: Sequence[Any], *, name: str) -> Any:
    """Return ``value`` if it is one of ``choices``, else raise ValueError listing them."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def check_int(value: Any, *, name: str, minimum: int | None = None) -> int:
    """Return ``value`` as an int if it is an integer (not a bool) >= ``minimum``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_positive(value: float, *, name: str, strict: bool = True) -> float:
    """Return ``value`` if it is > 0 (or >= 0 when ``strict`` is False)."""
    if not isinstance(value, numbers.Real) or isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if (value <= 0) if strict else (value < 0):
        op = ">" if strict else ">="
        raise ValueError(f"{name} must be {op} 0, got {value}")
    return value


def check_spacing(spacing: Any, ndim: int, *, name: str = "spacing") -> tuple[float, ...]:
    """Return voxel spacing as a tuple of ``ndim`` positive floats (None means all ones)."""
    if spacing is None:
        return (1.0,) * ndim
    if np.isscalar(spacing):
        spacing = (float(spacing),) * ndim
    sp = tuple(float(s) for s in spacing)
    if len(sp) != ndim:
        raise ValueError(f"{name} must have {ndim} values for a {ndim}D array, got {len(sp)}")
    if any(not np.isfinite(s) or s <= 0 for s in sp):
        raise ValueError(f"{name} values must be positive and finite, got {sp}")
    return sp


def check_connectivity(connectivity: int, ndim: int) -> int:
    """Accept scikit-image's rank (1..ndim) or the neighbour count (4/8, 6/18/26).

    Returns the scikit-image/SciPy rank: 1 = faces only, ndim = full.
    """
    by_count = {2: {4: 1, 8: 2}, 3: {6: 1, 18: 2, 26: 3}}
    if connectivity in by_count.get(ndim, {}):
        return by_count[ndim][connectivity]
    if isinstance(connectivity, (int, np.integer)) and 1 <= connectivity <= ndim:
        return int(connectivity)
    allowed = sorted(by_count.get(ndim, {})) + list(range(1, ndim + 1))
    raise ValueError(
        f"connectivity must be one of {allowed} for a {ndim}D array, got {connectivity}"
    )


def as_float(image: np.ndarray) -> np.ndarray:
    """Return ``image`` as float32 if it fits losslessly enough, float64 for 64-bit inputs."""
    image = np.asarray(image)
    if image.dtype in (np.float64, np.int64, np.uint64, np.int32, np.uint32):
        return image.astype(np.float64, copy=False)
    return image.astype(np.float32, copy=False)


def _create_beside(path: Path, suffix: str) -> Path:
    """Create an empty, uniquely named file beside ``path`` with mode ``0o666``.

    ``tempfile.mkstemp`` creates files with mode 0600, which the rename would hand on to
    every output. Opening with 0666 lets the kernel apply the umask (and a folder's
    default ACL), exactly as for a file written in place.
    """
    for _ in range(100):
        tmp = path.parent / f".{path.stem}.{secrets.token_hex(4)}.tmp{suffix}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"{path.parent}: cannot create a temporary file beside {path.name}")


@contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    Readers never see a half-written file: on error the temporary file is removed and
    ``path`` keeps whatever it held before. ``suffix`` (default: the target's suffixes)
    keeps writers that choose a format from the file name happy.

    The new file gets the permissions a plain ``open(path, "w")`` would give it: those of
    the file it replaces, else ``0o666`` less the umask.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix is None:
        suffix = "".join(path.suffixes)
    try:
        keep_mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        keep_mode = None
    tmp_path = _create_beside(path, suffix)
    try:
        yield tmp_path
        if keep_mode is not None:
            os.chmod(tmp_path, keep_mode)
        os.replace(tmp_path, path)
    except BaseException as exc:
        tmp_path.unlink(missing_ok=True)
        _name_the_target(exc, path, [tmp_path])
        raise


def _name_the_target(exc: BaseException, target: Path, temps: Sequence[Path]) -> None:
    """A system error while writing (disk full, I/O error) names the file being written.

    ``write()`` on a full disk raises ``OSError(ENOSPC)`` without a file name, and one
    raised on the temporary file names that hidden name: both become the target's.
    """
    if not isinstance(exc, OSError) or exc.errno is None:
        return
    if exc.filename is None or str(exc.filename) in {str(t) for t in temps}:
        exc.filename = str(target)


@contextmanager
def atomic_paths(paths: Iterable[str | os.PathLike]) -> Iterator[list[Path]]:
    """:func:`atomic_path` for several files at once: all of them or none.

    Yields one temporary path per target (beside it, with its suffixes); only when the
    block succeeds are they renamed onto the targets. On error every temporary file is
    removed, and folders made for the targets are removed again when left empty.
    """
    targets = [Path(p) for p in paths]
    if len(set(targets)) != len(targets):
        raise ValueError("two outputs have the same path; one would overwrite the other")
    for path in targets:  # found now, not after the first files were renamed into place
        if path.is_dir():
            raise ValueError(f"{path}: is a folder, where a file is to be written")
    made: list[Path] = []
    temps: list[Path] = []
    try:
        for path in targets:
            missing = [d for d in (path.parent, *path.parent.parents) if not d.exists()]
            path.parent.mkdir(parents=True, exist_ok=True)
            made += missing
            temps.append(_create_beside(path, "".join(path.suffixes)))
        yield list(temps)
        for tmp, path in zip(temps, targets, strict=True):
            os.replace(tmp, path)
    except BaseException as exc:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
        for folder in sorted(made, key=lambda d: len(d.parts), reverse=True):
            with contextlib.suppress(OSError):
                folder.rmdir()
        if targets:  # which of the files failed is not known: name their folder
            folder = os.path.commonpath([t.resolve().parent for t in targets])
            _name_the_target(exc, Path(folder), temps)
        raise


@contextmanager
def naming(path: str | os.PathLike) -> Iterator[None]:
    """A ``ValueError`` raised inside names ``path``, the file being worked on, unless its
    message already names a file (``"image must be 2D or 3D, got shape (8, 8, 8, 2)"``
    becomes ``"v.nii.gz: image must be 2D or 3D, ..."``)."""
    try:
        yield
    except ValueError as err:
        if str(path) in str(err) or getattr(err, "path", None) is not None:
            raise
        raise ValueError(f"{path}: {err}") from None


def check_output_folder(path: str | os.PathLike) -> Path:
    """Refuse, before any work, an output folder the system would not let us create or
    write: a file in its place or in the way (``NotADirectoryError``), a parent we may not
    write (``PermissionError``). The error is the system's own kind, naming ``path``;
    nothing is created.
    """
    path = Path(path)
    existing = path
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path))
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(existing))
    return path


def check_not_inputs(
    outputs: Iterable[str | os.PathLike], inputs: Iterable[str | os.PathLike]
) -> None:
    """Raise ValueError when an output would overwrite an input (or sits inside an input
    folder's place): an input is never an output."""
    ins = [Path(p).resolve() for p in inputs]
    for out in outputs:
        target = Path(out).resolve()
        for src in ins:
            if target == src:
                raise ValueError(f"{out}: is also an input; choose another output")


def write_atomic(path: str | os.PathLike, writer: Callable[[Path], None]) -> Path:
    """Call ``writer(tmp_path)`` and rename the result onto ``path``."""
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def preview_values(values: np.ndarray, limit: int = 10) -> str:
    """Short list of values for error messages (large masks have many)."""
    shown = values[:limit].tolist()
    return f"{shown}{' ...' if values.size > limit else ''}"


def check_mask(mask: Any, *, name: str = "mask", ndim: Iterable[int] = ANY_NDIM) -> np.ndarray:
    """bool array from a bool mask or a 0/1 or 0/255 numeric one; anything else is an error."""
    arr = check_image(mask, name=name, ndim=ndim, allow_empty=True)
    if arr.dtype == np.bool_:
        return arr
    values = np.unique(arr)
    # {0}, {1}, {0, 1}, {255}, {0, 255}: an all-ones 0/1 mask and an all-255 one are both "full"
    if np.isin(values, (0, 1)).all() or np.isin(values, (0, 255)).all():
        return arr != 0
    raise ValueError(
        f"{name} must hold only 0/1 or 0/255 values, got values {preview_values(values)}"
    )


def check_labels(
    labels: Any, *, name: str = "labels", ndim: Iterable[int] = ANY_NDIM
) -> np.ndarray:
    """int32 label map from bool (True = 1), integer or integral-float input; no negatives."""
    arr = check_image(labels, name=name, ndim=ndim, allow_empty=True)
    if arr.dtype == np.bool_:
        return arr.astype(np.int32)
    if np.issubdtype(arr.dtype, np.floating):
        # NIfTI label volumes are often stored as float32 (MSD hippocampus): accept exact integers
        if arr.size and not np.array_equal(arr, np.round(arr)):
            raise ValueError(f"{name} must hold integer values, got non-integer floats")
    if arr.size:
        lo, hi = arr.min(), arr.max()
        if lo < 0:
            raise ValueError(f"{name} must be >= 0, got minimum {lo}")
        if hi > INT32_MAX:
            raise ValueError(f"{name} must fit in int32 (<= {INT32_MAX}), got maximum {hi}")
    return arr.astype(np.int32, copy=False)


def check_classes(classes: Any, *, name: str = "classes") -> list[int]:
    """Sorted, duplicate-free list of non-negative class ids."""
    out = []
    for c in np.atleast_1d(np.asarray(list(classes))).tolist():
        if isinstance(c, bool) or not isinstance(c, int):
            raise TypeError(f"{name} must hold integers, got {c!r}")
        if c < 0:
            raise ValueError(f"{name} must be >= 0, got {c}")
        out.append(c)
    return sorted(set(out))
