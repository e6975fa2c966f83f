"""Per-call size limits, checked against a file's header before any pixel is decoded.

A reader learns the declared shape and data type from the header (Pillow's header
parse, tifffile's pages, nibabel's header, pynrrd's header, pydicom without pixel
data), multiplies them out and compares the result with two limits:

- ``max_voxels``: spatial elements (rows x cols x slices/pages/frames; colour channels
  are not counted). Default 2**31 - 1: beyond it int32 indices overflow (SciPy's
  labelling, many C extensions) and no segloc model or method is meant for it.
- ``max_bytes``: bytes of the array returned (channels and the returned dtype counted,
  so a scaled NIfTI stored as int16 but returned as float32 counts 4 bytes a voxel).
  Default a quarter of the memory available when the call starts (``MemAvailable`` in
  ``/proc/meminfo``, else ``os.sysconf``, else 2 GiB): a read holds the decoded array
  and usually one copy, and the caller needs room for its own work.

A limit passed to a call wins; otherwise the module defaults apply, which
:func:`set_default_limits` changes (the command line's ``--max-voxels`` and ``--max-mib``
do). :func:`set_default_untrusted` likewise makes every read that does not say otherwise
run in the sandbox (:mod:`segloc.io.sandbox`; the command line's ``--untrusted``). Nothing
here changes process-wide state of another library: Pillow's ``MAX_IMAGE_PIXELS`` is
left as the caller set it except for the length of one read (:mod:`segloc.io.read`).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from segloc.io.errors import ResourceLimitExceeded

__all__ = [
    "Limits",
    "available_memory",
    "default_limits",
    "default_untrusted",
    "set_default_limits",
    "set_default_untrusted",
]

_FALLBACK_MEMORY = 8 * 2**30  # a modest machine, when the system does not say
MEMORY_SHARE = 0.25
VOXEL_LIMIT = 2**31 - 1

_lock = threading.Lock()
_defaults: dict[str, int | None] = {"max_voxels": None, "max_bytes": None}
_untrusted = {"default": False}


def available_memory() -> int:
    """Bytes of memory available to a new allocation now, as the system reports them.

    ``MemAvailable`` from ``/proc/meminfo`` (Linux), else free pages from
    ``os.sysconf``, else 8 GiB.
    """
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return _FALLBACK_MEMORY


@dataclass(frozen=True)
class Limits:
    """The limits in force for one read.

    Attributes
    ----------
    max_voxels : int
        Largest number of spatial elements.
    max_bytes : int
        Largest size in bytes of the returned array.
    """

    max_voxels: int
    max_bytes: int

    def check(self, path: os.PathLike | str, voxels: int, nbytes: int, *, detail: str = "") -> None:
        """Raise :class:`ResourceLimitExceeded` if ``voxels`` or ``nbytes`` is above its limit."""
        if voxels > self.max_voxels:
            raise ResourceLimitExceeded(path, voxels, self.max_voxels, unit="voxels", detail=detail)
        if nbytes > self.max_bytes:
            raise ResourceLimitExceeded(path, nbytes, self.max_bytes, unit="bytes", detail=detail)


def _positive(value: int | None, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) and not hasattr(value, "__index__"):
        raise TypeError(f"{name} must be an integer or None, got {type(value).__name__}")
    value = int(value)
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def default_limits(max_voxels: int | None = None, max_bytes: int | None = None) -> Limits:
    """The limits for one read: the arguments where given, else the module defaults.

    Examples
    --------
    >>> default_limits(max_voxels=100).max_voxels
    100
    >>> default_limits().max_bytes > 0
    True
    """
    max_voxels = _positive(max_voxels, "max_voxels")
    max_bytes = _positive(max_bytes, "max_bytes")
    with _lock:
        dv, db = _defaults["max_voxels"], _defaults["max_bytes"]
    if max_voxels is None:
        max_voxels = dv if dv is not None else VOXEL_LIMIT
    if max_bytes is None:
        max_bytes = db if db is not None else int(available_memory() * MEMORY_SHARE)
    return Limits(max_voxels, max(max_bytes, 1))


def set_default_limits(
    *, max_voxels: int | None = None, max_bytes: int | None = None
) -> tuple[int | None, int | None]:
    """Set the limits used by reads that do not pass their own; None restores the built-in one.

    Returns the previous settings, so that a caller can put them back.

    Examples
    --------
    >>> old = set_default_limits(max_voxels=10**6)
    >>> default_limits().max_voxels
    1000000
    >>> _ = set_default_limits(max_voxels=old[0], max_bytes=old[1])
    """
    max_voxels = _positive(max_voxels, "max_voxels")
    max_bytes = _positive(max_bytes, "max_bytes")
    with _lock:
        old = (_defaults["max_voxels"], _defaults["max_bytes"])
        _defaults["max_voxels"], _defaults["max_bytes"] = max_voxels, max_bytes
    return old


def default_untrusted(untrusted: bool | None = None) -> bool:
    """Whether a read runs in the sandbox: ``untrusted`` where given, else the default.

    Examples
    --------
    >>> default_untrusted(), default_untrusted(True)
    (False, True)
    """
    if untrusted is None:
        with _lock:
            return _untrusted["default"]
    if not isinstance(untrusted, bool):
        raise TypeError(f"untrusted must be a bool or None, got {type(untrusted).__name__}")
    return untrusted


def set_default_untrusted(untrusted: bool) -> bool:
    """Make every read that does not pass ``untrusted=`` run in the sandbox (True) or not.

    :func:`segloc.io.read_image` and :func:`segloc.io.read_mask` then decode in a child
    process under a time and memory limit (:func:`segloc.io.read_untrusted`). Returns the
    previous setting, so that a caller can put it back.

    Examples
    --------
    >>> old = set_default_untrusted(True)
    >>> default_untrusted()
    True
    >>> _ = set_default_untrusted(old)
    """
    if not isinstance(untrusted, bool):
        raise TypeError(f"untrusted must be a bool, got {type(untrusted).__name__}")
    with _lock:
        old, _untrusted["default"] = _untrusted["default"], untrusted
    return old
