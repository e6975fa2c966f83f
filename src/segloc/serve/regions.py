"""A table of the objects in a label map: size in pixels and physical units, box, mean value.

The library splits classes into connected objects (:func:`segloc.instances.semantic_to_instances`)
and boxes them (:func:`segloc.instances.instance_boxes`); it has no table of per-object
measurements (scikit-image's ``regionprops`` plays that part elsewhere), so that table is
assembled here from those two functions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

from segloc.instances import instance_boxes, semantic_to_instances

__all__ = ["region_table"]


def region_table(
    labels: np.ndarray,
    image: np.ndarray,
    spacing: Sequence[float],
    *,
    connectivity: int = 1,
    max_rows: int = 2000,
) -> tuple[np.ndarray, list[dict], int]:
    """One row per connected object of each class, largest first.

    Parameters
    ----------
    labels : ndarray of int, 2D or 3D
        Label map, 0 = background.
    image : ndarray
        Grey image of the same shape; its mean inside each object is reported.
    spacing : sequence of float
        Physical size of a pixel along each axis (mm).
    connectivity : int
        As in :func:`segloc.masks.connected_components`.
    max_rows : int
        Most rows returned (the largest objects).

    Returns
    -------
    instances : ndarray of int32
        Object ids 1..N (class by class, raster order within a class), 0 elsewhere.
    rows : list of dict
        ``{"id", "class", "pixels", "size" (mm^2 in 2D, mm^3 in 3D), "box" ([x0, y0, x1, y1]
        or [x0, y0, z0, x1, y1, z1], half-open), "mean", "centre" ([row, col(, slice)],
        the centre of mass)}``.
    total : int
        Number of objects (rows beyond ``max_rows`` are left out).

    Examples
    --------
    >>> lab = np.array([[1, 1, 0, 2]])
    >>> _, rows, n = region_table(lab, np.array([[2.0, 4.0, 0.0, 7.0]]), (0.5, 0.5))
    >>> [(r["class"], r["pixels"], r["size"], r["mean"]) for r in rows], n
    ([(1, 2, 0.5, 3.0), (2, 1, 0.25, 7.0)], 2)
    """
    instances, class_of = semantic_to_instances(labels, connectivity=connectivity)
    ids, boxes = instance_boxes(instances)
    if ids.size == 0:
        return instances, [], 0
    flat = instances.ravel()
    pixels = np.bincount(flat, minlength=int(ids[-1]) + 1)
    sums = np.bincount(flat, weights=np.asarray(image, np.float64).ravel(), minlength=len(pixels))
    centres = ndi.center_of_mass(np.ones(instances.shape, np.uint8), instances, ids)
    unit = float(np.prod(spacing[: labels.ndim]))
    order = np.argsort(-pixels[ids], kind="stable")[:max_rows]
    rows = [
        {
            "id": int(ids[k]),
            "class": int(class_of[int(ids[k])]),
            "pixels": int(pixels[ids[k]]),
            "size": float(pixels[ids[k]] * unit),
            "box": [float(v) for v in boxes[k]],
            "mean": float(sums[ids[k]] / pixels[ids[k]]),
            "centre": [round(float(v), 2) for v in centres[k]],
        }
        for k in order
    ]
    return instances, rows, len(ids)
