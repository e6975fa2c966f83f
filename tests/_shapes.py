"""Random test shapes shared by several test modules."""

import numpy as np
from scipy import ndimage as ndi
from skimage import measure


def random_blobs(shape, *, seed, density=0.5, sigma=1.0):
    """Smooth random binary pattern: objects of many sizes, holes and touching corners."""
    rng = np.random.default_rng(seed)
    field = ndi.gaussian_filter(rng.random(shape), sigma)
    return field > np.quantile(field, 1 - density)


def random_labels(shape, *, seed, num_classes=4, sigma=1.0):
    rng = np.random.default_rng(seed)
    field = ndi.gaussian_filter(rng.random(shape), sigma)
    edges = np.quantile(field, np.linspace(0, 1, num_classes + 1)[1:-1])
    return np.digitize(field, edges).astype(np.int32)


def regionprops_boxes(labels):
    """segloc boxes via skimage, whose bbox is (min_row, min_col[, min_pln], max_row, ...)."""
    ids, boxes = [], []
    for p in measure.regionprops(labels):
        b = p.bbox
        if labels.ndim == 2:
            boxes.append([b[1], b[0], b[3], b[2]])
        else:
            boxes.append([b[1], b[0], b[2], b[4], b[3], b[5]])
        ids.append(p.label)
    return np.array(ids), np.array(boxes, float)
