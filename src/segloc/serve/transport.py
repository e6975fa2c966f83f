"""How arrays travel to the page: one 2D slice as raw little-endian bytes, shape in headers.

A slice of a 512x512 uint8 image is 256 KiB of bytes the page wraps in a typed array with no
decoding, where JSON lists would be megabytes to parse; window/level and the threshold preview
run on those values in the browser.
"""

from __future__ import annotations

import numpy as np

from segloc.viz import to_rgb

__all__ = ["SliceError", "encode", "take_slice"]

# dtypes JavaScript has a typed array for; others are sent as float32
_NATIVE = {"uint8", "int8", "uint16", "int16", "int32", "uint32", "float32"}


class SliceError(ValueError):
    """An axis or index that names no slice of the image."""


def take_slice(array: np.ndarray, axis: int, index: int, *, ndim: int) -> np.ndarray:
    """The 2D slice of a volume at ``index`` along ``axis``; a 2D image is its only slice.

    Parameters
    ----------
    array : ndarray
        ``(rows, cols[, channels])`` when ``ndim == 2``, ``(rows, cols, slices)`` when 3.
    axis : int
        0, 1 or 2; a 2D image has one slice, ``axis=2, index=0``.
    index : int
    ndim : int
        Spatial dimensions of ``array``.

    Raises
    ------
    SliceError
        Axis or index out of range.

    Examples
    --------
    >>> vol = np.arange(24).reshape(2, 3, 4)
    >>> take_slice(vol, 2, 1, ndim=3).tolist()
    [[1, 5, 9], [13, 17, 21]]
    """
    if axis not in (0, 1, 2):
        raise SliceError(f"axis must be 0, 1 or 2, got {axis}")
    if ndim == 2:
        if axis != 2 or index != 0:
            raise SliceError(
                f"a 2D image has one slice, axis 2 index 0; got axis {axis} index {index}"
            )
        return array
    size = array.shape[axis]
    if not 0 <= index < size:
        raise SliceError(f"index must be in 0..{size - 1} along axis {axis}, got {index}")
    where: list = [slice(None)] * array.ndim
    where[axis] = index
    return array[tuple(where)]  # a view: np.take would copy through the whole volume first


def encode(plane: np.ndarray) -> tuple[bytes, str, tuple[int, ...]]:
    """Bytes of a slice for the page: ``(body, dtype name, shape)``.

    Grey slices keep their dtype when JavaScript has a typed array for it (else float32);
    colour slices become ``"rgb8"`` (rows, cols, 3) uint8, stretched by
    :func:`segloc.viz.to_rgb` when they are not uint8 already.

    Examples
    --------
    >>> body, dtype, shape = encode(np.array([[1, 2]], np.int64))
    >>> dtype, shape, len(body)
    ('float32', (1, 2), 8)
    """
    if plane.ndim == 3:  # colour
        rgb = to_rgb(plane)
        return np.ascontiguousarray(rgb).tobytes(), "rgb8", rgb.shape
    if plane.dtype == np.bool_:
        plane = plane.view(np.uint8)
    name = plane.dtype.name
    if name not in _NATIVE:
        plane, name = plane.astype(np.float32), "float32"
    data = np.ascontiguousarray(plane, dtype=plane.dtype.newbyteorder("<"))
    return data.tobytes(), name, plane.shape
