"""Reading an untrusted file in a child process, under a time and an address-space limit.

The decoders segloc relies on (libpng, libjpeg, libtiff inside Pillow; zlib; NumPy) are
C code. A hostile file can make such code crash the interpreter or spin forever, which
no ``try``/``except`` catches. :func:`read_untrusted` runs the ordinary reader in a
fresh Python process that limits its own address space (``RLIMIT_AS``) and CPU time
(``RLIMIT_CPU``) before it imports any decoder; the parent waits at most ``timeout``
seconds. The array comes back through a ``.npy`` file in a private temporary folder
(read with ``allow_pickle=False``, its declared size checked against the limits before
it is loaded) and the metadata as JSON, so nothing the child writes is executed.

A crash, a timeout or a memory limit hit in the child becomes a :class:`CorruptFile`
(or :class:`ResourceLimitExceeded`) naming the file; the typed errors the reader raised
in the child are raised again in the parent, and its warnings are re-emitted.

The child is started as ``python -m segloc.io.sandbox``, one process per file: about
half a second of start-up, which is what this protection costs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from segloc.io.errors import CorruptFile, ResourceLimitExceeded, SeglocIOError, UnsupportedFormat
from segloc.io.formats import ImageMeta
from segloc.io.limits import default_limits

__all__ = ["read_untrusted", "DEFAULT_TIMEOUT"]

DEFAULT_TIMEOUT = 60.0
# the child's interpreter, NumPy, Pillow, nibabel, pydicom, tifffile and their libraries
# map about 0.6-1 GB of address space before reading anything
_BASE_ADDRESS_SPACE = 1536 * 2**20


def _encode(value: Any) -> Any:
    """JSON-safe form of metadata values (arrays tagged so that they come back as arrays)."""
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__ndarray__", "dtype"}:
            dtype = np.dtype(value["dtype"])
            if dtype.kind not in "biuf":
                raise ValueError(f"unexpected dtype {dtype}")
            return np.array(value["__ndarray__"], dtype=dtype)
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _child_main() -> int:  # pragma: no cover - runs in the child process
    request = json.loads(sys.stdin.read())
    out = Path(request["out"])
    try:
        import resource

        mem = int(request["address_space"])
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        cpu = int(request["cpu_seconds"])
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    except (ImportError, ValueError, OSError):
        pass  # no resource module (Windows): the parent's timeout still applies
    result: dict[str, Any]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            from segloc.io.limits import Limits
            from segloc.io.read import _Options, _read

            opts = _Options(
                Limits(int(request["max_voxels"]), int(request["max_bytes"])),
                bool(request["allow_truncated"]),
                palette_indices=bool(request["palette_indices"]),
            )
            arr, meta = _read(Path(request["path"]), opts)
            np.save(out / "array.npy", np.ascontiguousarray(arr), allow_pickle=False)
            result = {
                "meta": {
                    "path": meta.path,
                    "format": meta.format,
                    "spacing": [float(v) for v in meta.spacing],
                    "affine": None if meta.affine is None else _encode(np.asarray(meta.affine)),
                    "header": _encode(meta.header),
                }
            }
        except SeglocIOError as exc:
            result = {"error": type(exc).__name__, "message": str(exc), "path": exc.path}
            for name in ("reason", "declared", "limit", "unit"):
                if hasattr(exc, name):
                    result[name] = getattr(exc, name)
        except OSError as exc:
            result = {
                "error": "OSError",
                "errno": exc.errno,
                "message": exc.strerror or str(exc),
                "filename": None if exc.filename is None else str(exc.filename),
            }
        except MemoryError:
            result = {"error": "MemoryError"}
    result["warnings"] = [
        [w.category.__name__, str(w.message)] for w in caught if issubclass(w.category, Warning)
    ][:20]
    (out / "result.json").write_text(json.dumps(result))
    return 0


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    # the child must import this very segloc, wherever it was imported from
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = "1"  # each BLAS thread reserves address space the limit would count
    return env


def _raise_child_error(path: Path, result: dict, limits) -> None:
    kind = result["error"]
    if kind == "OSError":
        raise OSError(result.get("errno"), result.get("message"), result.get("filename"))
    if kind == "MemoryError":
        raise ResourceLimitExceeded(
            path, None, limits.max_bytes, detail="the decoder ran out of memory in the sandbox"
        )
    where = result.get("path") or str(path)
    if kind == "ResourceLimitExceeded":
        raise ResourceLimitExceeded(
            where,
            result.get("declared"),
            int(result["limit"]),
            unit=str(result.get("unit", "bytes")),
        )
    if kind == "CorruptFile":
        raise CorruptFile(where, str(result.get("reason", result["message"])))
    if kind == "UnsupportedFormat":
        raise UnsupportedFormat(where, str(result.get("reason", result["message"])))
    raise SeglocIOError(str(result["message"]), path=where)


def _load_array(path: Path, npy: Path, limits) -> np.ndarray:
    """The child's array, its header checked before anything is loaded."""
    fmt = np.lib.format
    with open(npy, "rb") as f:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = fmt.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = fmt.read_array_header_2_0(f)
        else:
            raise CorruptFile(path, f"the sandbox returned a .npy of version {version}")
    if dtype.hasobject or dtype.kind not in "biuf" or any(int(n) < 0 for n in shape):
        raise CorruptFile(path, f"the sandbox returned an array of dtype {dtype}")
    count = int(np.prod(shape, dtype=object)) if shape else 1
    limits.check(path, count, count * dtype.itemsize, detail="array from the sandbox")
    return np.load(npy, allow_pickle=False)


def read_untrusted(
    path: str | os.PathLike,
    *,
    max_voxels: int | None = None,
    max_bytes: int | None = None,
    allow_truncated: bool = False,
    palette_indices: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    address_space: int | None = None,
) -> tuple[np.ndarray, ImageMeta]:
    """Read an image or volume in a child process with a time and memory limit.

    Parameters
    ----------
    path : str or path-like
        Anything :func:`segloc.io.read_image` reads.
    max_voxels, max_bytes, allow_truncated
        As for :func:`segloc.io.read_image`.
    palette_indices : bool, optional
        Return a palette image's indices (what :func:`segloc.io.read_mask` needs).
    timeout : float, optional
        Seconds of wall time the child gets; also its CPU-time limit.
    address_space : int, optional
        Bytes of address space the child may map; default about 1.5 GiB for the
        interpreter and its libraries plus three times ``max_bytes``.

    Returns
    -------
    image : ndarray
    meta : ImageMeta
        As from :func:`segloc.io.read_image`, without ``nonfinite`` and ``as_gray``
        processing (the caller applies those).

    Raises
    ------
    CorruptFile
        The child crashed (a signal), ran out of time, or the reader refused the file.
    ResourceLimitExceeded
        The header declares more than the limits, or the child hit its memory limit.
    UnsupportedFormat, SeglocIOError, OSError
        As the reader raised them in the child.
    """
    path = Path(path)
    limits = default_limits(max_voxels, max_bytes)
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0, got {timeout}")
    if address_space is None:
        address_space = _BASE_ADDRESS_SPACE + 3 * limits.max_bytes
    tmp = Path(tempfile.mkdtemp(prefix="segloc-sandbox-"))
    try:
        request = {
            "path": str(path.resolve()) if path.exists() else str(path),
            "out": str(tmp),
            "max_voxels": limits.max_voxels,
            "max_bytes": limits.max_bytes,
            "allow_truncated": allow_truncated,
            "palette_indices": palette_indices,
            "address_space": int(address_space),
            "cpu_seconds": max(1, int(timeout) + 1),
        }
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "segloc.io.sandbox"],
                input=json.dumps(request),
                capture_output=True,
                text=True,
                timeout=timeout,
                env=_child_env(),
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise CorruptFile(
                path, f"reading it took longer than {timeout:g} s in the sandbox; refused"
            ) from None
        result_file = tmp / "result.json"
        if proc.returncode != 0 or not result_file.exists():
            if proc.returncode < 0:
                sig = signal.Signals(-proc.returncode).name
                if sig == "SIGXCPU":
                    raise CorruptFile(
                        path, f"reading it used more than {timeout:g} s of CPU in the sandbox"
                    )
                raise CorruptFile(path, f"the decoder crashed ({sig}) reading it in the sandbox")
            last = (proc.stderr or "").strip().splitlines()[-1:] or ["no message"]
            raise CorruptFile(
                path, f"the sandbox failed (exit code {proc.returncode}: {last[0][:200]})"
            )
        result = json.loads(result_file.read_text())
        for category, message in result.get("warnings", []):
            cls = {"UserWarning": UserWarning, "RuntimeWarning": RuntimeWarning}.get(
                category, UserWarning
            )
            warnings.warn(message, cls, stacklevel=3)
        if "error" in result:
            _raise_child_error(path, result, limits)
        arr = _load_array(path, tmp / "array.npy", limits)
        m = result["meta"]
        affine = None if m["affine"] is None else _decode(m["affine"])
        meta = ImageMeta(
            str(path),
            str(m["format"]),
            tuple(float(v) for v in m["spacing"]),
            affine,
            _decode(m["header"]),
        )
        return arr, meta
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_child_main())
