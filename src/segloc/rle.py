"""COCO run-length encoding of masks: strings identical to pycocotools'.

COCO stores a mask as run lengths over the column-major (Fortran) pixel order, starting with
a run of zeros (possibly empty). The string form writes each count, from the fourth on as
the difference to the count two places before (runs of the same value), as a signed
little-endian base-32 number: 5 data bits per character, bit 0x20 = "more characters
follow", bit 0x10 of the last character = sign, character = value + 48 (so '0'..'o'). It is
LEB128 with 5-bit groups. Facts from the COCO API's maskApi.c description
(rleToString/rleFrString); the code below is our own.

References
----------
.. [COCO] Lin, T.-Y. et al. "Microsoft COCO: Common Objects in Context", ECCV 2014,
   :doi:`10.1007/978-3-319-10602-1_48`. Data format: https://cocodataset.org/#format-data
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from segloc._validation import check_mask

__all__ = ["rle_area", "rle_decode", "rle_encode"]


def _compress_counts(counts: Sequence[int]) -> str:
    out = []
    for i, count in enumerate(counts):
        x = int(count) - (int(counts[i - 2]) if i > 2 else 0)
        while True:
            c = x & 0x1F
            x >>= 5  # arithmetic shift: negative deltas keep their sign
            # stop once the remaining bits are pure sign extension of bit 0x10
            more = x != -1 if c & 0x10 else x != 0
            out.append(chr((c | 0x20 if more else c) + 48))
            if not more:
                break
    return "".join(out)


def _decompress_counts(s: str) -> list[int]:
    counts: list[int] = []
    p, n = 0, len(s)
    while p < n:
        x, shift = 0, 0
        while True:
            if p >= n:
                raise ValueError("rle counts string must end with a complete number, got a cut one")
            c = ord(s[p]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"rle counts must use characters '0'..'o', got {s[p]!r}")
            p += 1
            x |= (c & 0x1F) << shift
            shift += 5
            if not c & 0x20:
                if c & 0x10:
                    x -= 1 << shift  # sign-extend
                break
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def _runs_in_box(crop: np.ndarray, y0: int, x0: int, height: int, width: int) -> list[int]:
    """COCO counts of a (height, width) mask that is False outside ``crop`` at (y0, x0).

    Work on the crop only, so an object's RLE costs its box, not the whole image.
    """
    total = height * width
    if not crop.any():
        return [total]
    ch, cw = crop.shape
    # a False row above and below each column: every run starts and ends inside it
    padded = np.zeros((ch + 2, cw), bool)
    padded[1:-1] = crop
    flat = padded.ravel(order="F")
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1  # index of the first pixel after a change
    col, row = np.divmod(edges, ch + 2)
    pos = (x0 + col) * height + (y0 + row - 1)  # same place in the image's column-major order
    # a run that ends at the bottom of one column and restarts at the top of the next is one
    # run in column-major order: drop the end/start pair that lands on the same position
    uniq, times = np.unique(pos, return_counts=True)
    pos = uniq[times == 1]
    pos = pos[pos < total]  # a run reaching the last pixel ends the counts, no empty run after
    bounds = np.concatenate(([0], pos, [total]))
    return np.diff(bounds).tolist()


def _rle_size(rle: Any) -> tuple[int, int]:
    if not isinstance(rle, Mapping) or "size" not in rle or "counts" not in rle:
        raise ValueError(f"rle must be a dict with 'size' and 'counts', got {type(rle).__name__}")
    size = rle["size"]
    if len(size) != 2 or any(
        isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0 for v in size
    ):
        raise ValueError(f"rle['size'] must be [height, width] non-negative integers, got {size}")
    return int(size[0]), int(size[1])


def _rle_counts(rle: Any) -> tuple[tuple[int, int], list[int]]:
    h, w = _rle_size(rle)
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    counts = _decompress_counts(counts) if isinstance(counts, str) else [int(c) for c in counts]
    if any(c < 0 for c in counts):
        raise ValueError("rle counts must be >= 0, got a negative run")
    if sum(counts) != h * w:
        raise ValueError(f"rle counts must sum to height * width = {h * w}, got {sum(counts)}")
    return (h, w), counts


def rle_encode(mask: Any) -> dict:
    """Encode a 2D binary mask as COCO compressed RLE.

    Parameters
    ----------
    mask : array_like, 2D
        bool (or 0/1, 0/255) mask of shape (height, width).

    Returns
    -------
    dict
        ``{"size": [height, width], "counts": str}``, the string pycocotools'
        ``mask.encode`` gives (as ``str`` rather than ``bytes``, so it is JSON-ready).
        Counts run over the column-major pixel order and start with the zeros.

    References
    ----------
    .. [1] Lin, T.-Y. et al. "Microsoft COCO: Common Objects in Context", ECCV 2014,
       :doi:`10.1007/978-3-319-10602-1_48`; COCO API ``maskApi.c`` (rleToString).

    Examples
    --------
    >>> rle_encode(np.array([[0, 1], [0, 1]], bool))
    {'size': [2, 2], 'counts': '22'}
    """
    arr = check_mask(mask, ndim=(2,))
    h, w = arr.shape
    if arr.size == 0:
        return {"size": [h, w], "counts": _compress_counts([0])}
    rows = np.flatnonzero(arr.any(axis=1))
    cols = np.flatnonzero(arr.any(axis=0))
    if rows.size == 0:
        return {"size": [h, w], "counts": _compress_counts([h * w])}
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    counts = _runs_in_box(arr[y0:y1, x0:x1], int(y0), int(x0), h, w)
    return {"size": [h, w], "counts": _compress_counts(counts)}


def rle_decode(rle: Mapping) -> np.ndarray:
    """Decode a COCO RLE (compressed string or uncompressed list ``counts``) to a mask.

    Parameters
    ----------
    rle : dict
        ``{"size": [height, width], "counts": str | bytes | list of int}``.

    Returns
    -------
    ndarray of bool, shape (height, width)

    Raises
    ------
    ValueError
        If the counts are malformed or do not sum to ``height * width``.

    References
    ----------
    .. [1] Lin, T.-Y. et al. "Microsoft COCO: Common Objects in Context", ECCV 2014,
       :doi:`10.1007/978-3-319-10602-1_48`; COCO API ``maskApi.c`` (rleFrString).

    Examples
    --------
    >>> rle_decode({"size": [2, 2], "counts": [2, 2]}).astype(int)
    array([[0, 1],
           [0, 1]])
    """
    (h, w), counts = _rle_counts(rle)
    values = np.arange(len(counts)) % 2 == 1  # runs alternate, zeros first
    flat = np.repeat(values, counts)
    return flat.reshape((h, w), order="F")


def rle_area(rle: Mapping) -> int:
    """Number of foreground pixels of a COCO RLE (without decoding the mask).

    Examples
    --------
    >>> rle_area({"size": [2, 2], "counts": "22"})
    2
    """
    _, counts = _rle_counts(rle)
    return int(sum(counts[1::2]))
