"""Hand corrections of a mask on the shown slice: brush strokes and hole filling.

The brush is the one drawing tool the library has no use for, so it lives here: a stroke is
the set of pixels whose centre lies within ``radius`` of the polyline through its points (a
chain of capsules), painted in one go. Filling a hole uses the library's
:func:`segloc.masks.fill_holes` and :func:`segloc.masks.connected_components`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from segloc.masks import connected_components, fill_holes

__all__ = ["hole_at", "stroke_pixels"]


def stroke_pixels(
    shape: tuple[int, int], points: Sequence[Sequence[float]], radius: float
) -> np.ndarray:
    """Pixels covered by a brush of ``radius`` dragged through ``points``.

    Parameters
    ----------
    shape : (rows, cols)
    points : sequence of (row, col)
        Pixel coordinates, pixel ``(r, c)`` centred on ``(r, c)``; one point is a dot.
    radius : float
        Half the brush size, in pixels (> 0).

    Returns
    -------
    ndarray of bool, shape ``shape``

    Examples
    --------
    >>> stroke_pixels((3, 5), [(1, 0), (1, 4)], 0.5).astype(int)
    array([[0, 0, 0, 0, 0],
           [1, 1, 1, 1, 1],
           [0, 0, 0, 0, 0]])
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    out = np.zeros(shape, bool)
    if len(pts) == 1:
        pts = np.concatenate([pts, pts])
    for a, b in zip(pts[:-1], pts[1:], strict=True):
        lo = np.floor(np.minimum(a, b) - radius).astype(int)
        hi = np.ceil(np.maximum(a, b) + radius).astype(int) + 1
        lo = np.maximum(lo, 0)
        hi = np.minimum(hi, shape)
        if np.any(hi <= lo):
            continue  # the segment's box lies outside the slice
        rows, cols = np.mgrid[lo[0] : hi[0], lo[1] : hi[1]]
        # distance of each pixel centre to the segment a-b
        d = b - a
        length2 = float(d @ d)
        t = 0.0
        if length2 > 0:
            t = np.clip(((rows - a[0]) * d[0] + (cols - a[1]) * d[1]) / length2, 0.0, 1.0)
        dist2 = (rows - (a[0] + t * d[0])) ** 2 + (cols - (a[1] + t * d[1])) ** 2
        out[lo[0] : hi[0], lo[1] : hi[1]] |= dist2 <= radius * radius
    return out


def hole_at(labels: np.ndarray, point: tuple[int, int]) -> tuple[np.ndarray, int]:
    """The hole of a labelled region that holds ``point``, and that region's label.

    A hole of label ``L`` is a background area enclosed by ``L``
    (:func:`segloc.masks.fill_holes` of ``labels == L``); only its background pixels are
    returned, so other labels inside it are kept.

    Parameters
    ----------
    labels : ndarray of int, 2D
    point : (row, col)

    Returns
    -------
    hole : ndarray of bool
    label : int

    Raises
    ------
    ValueError
        If ``point`` is not background enclosed by one label.
    """
    r, c = point
    if labels[r, c] != 0:
        raise ValueError(f"point ({r}, {c}) is labelled {int(labels[r, c])}, not a hole")
    background = labels == 0
    for label in (int(v) for v in np.unique(labels) if v != 0):
        filled = fill_holes(labels == label)
        if filled[r, c]:
            comp, _ = connected_components(filled & background, connectivity=1)
            return comp == comp[r, c], label
    raise ValueError(f"point ({r}, {c}) is not inside a hole of any region")
