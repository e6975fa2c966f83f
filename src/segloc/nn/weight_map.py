"""The U-Net loss weight map that separates touching objects (Ronneberger et al. 2015, eq. 2).

NumPy and SciPy only, so it can run in data-loading workers without torch.

References
----------
.. [1] O. Ronneberger, P. Fischer, T. Brox, "U-Net: Convolutional Networks for Biomedical Image
       Segmentation", MICCAI 2015, LNCS 9351, pp. 234-241. :doi:`10.1007/978-3-319-24574-4_28`
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

from segloc._validation import check_image, check_positive
from segloc.instances import semantic_to_instances

__all__ = ["label_weight_map", "unet_weight_map"]

# Border terms below this are dropped: they are under float32 resolution next to w_c >= ~1e-1.
_NEGLIGIBLE = 1e-9


def unet_weight_map(
    instances: np.ndarray,
    *,
    w0: float = 10.0,
    sigma: float = 5.0,
    class_balance: bool = True,
) -> np.ndarray:
    """Pixel weights ``w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))**2 / (2 * sigma**2))`` [1]_.

    ``d1`` and ``d2`` are the Euclidean distances to the nearest and the second-nearest object.
    The border term is large in narrow background gaps between objects, which makes the
    cross-entropy pay attention to the thin separations between touching cells.

    Parameters
    ----------
    instances : ndarray of int, shape (rows, cols) or (rows, cols, slices)
        Instance map: 0 = background, one id per object (ids need not be contiguous).
    w0 : float, default 10.0
        Border weight, 10 in the paper.
    sigma : float, default 5.0
        Border width in pixels, about 5 in the paper.
    class_balance : bool, default True
        If True, ``w_c(x) = N / (K * n_c)`` where ``n_c`` is the number of pixels of ``x``'s class
        (background or object), ``N`` the number of pixels and ``K`` the number of classes present:
        each class then carries the same total weight and ``w_c`` averages to one over the image.
        If False, ``w_c = 1``.

    Returns
    -------
    ndarray of float32, same shape as ``instances``

    Notes
    -----
    The border term is added on background pixels only: inside an object ``d1 = 0`` and the term
    would only up-weight object pixels that happen to lie near a neighbour, whereas the paper's
    aim (its Fig. 3d) is to weight the separating background. With fewer than two objects the
    border term is zero. Distances are computed per object with SciPy's exact Euclidean distance
    transform on the object's bounding box grown by the distance beyond which the term is
    negligible (``w0 * exp(-r**2 / (2 sigma**2)) < 1e-9``), so the cost grows with the objects'
    area, not with their number times the image size.

    References
    ----------
    .. [1] Ronneberger et al., MICCAI 2015, eq. 2. :doi:`10.1007/978-3-319-24574-4_28`

    Examples
    --------
    >>> inst = np.array([[1, 0, 0, 0, 2, 2, 0, 0]])
    >>> w = unet_weight_map(inst, class_balance=False)
    >>> print(w.round(2))  # column 2: d1 = d2 = 2, so 1 + 10 * exp(-16 / 50)
    [[1.   8.26 8.26 8.26 1.   1.   4.75 2.98]]
    """
    inst = check_image(instances, name="instances")
    if not np.issubdtype(inst.dtype, np.integer):
        raise TypeError(f"instances must be an integer array, got dtype {inst.dtype}")
    if inst.size and inst.min() < 0:
        raise ValueError(f"instances must be >= 0, got minimum {inst.min()}")
    w0 = float(check_positive(w0, name="w0", strict=False))
    sigma = float(check_positive(sigma, name="sigma"))
    if not isinstance(class_balance, bool):
        raise TypeError(f"class_balance must be a bool, got {type(class_balance).__name__}")

    foreground = inst > 0
    weights = np.ones(inst.shape, dtype=np.float64)
    n_fg = int(foreground.sum())
    n_bg = inst.size - n_fg
    if class_balance and n_fg and n_bg:
        weights[foreground] = inst.size / (2 * n_fg)
        weights[~foreground] = inst.size / (2 * n_bg)

    # Compact ids 1..K keep find_objects' list short whatever the ids are.
    ids, compact = np.unique(inst, return_inverse=True)
    compact = compact.reshape(inst.shape)
    if ids[0] != 0:
        compact += 1
    n_objects = int(compact.max())
    if n_objects < 2 or w0 == 0:
        return weights.astype(np.float32)

    # Farther than `reach` from an object, that object's share of the term is negligible.
    reach = sigma * math.sqrt(2.0 * math.log(max(w0 / _NEGLIGIBLE, 1.0)))
    grow = int(math.ceil(reach))
    d1 = np.full(inst.shape, np.inf)
    d2 = np.full(inst.shape, np.inf)
    for label, box in enumerate(ndi.find_objects(compact), start=1):
        region = tuple(
            slice(max(s.start - grow, 0), min(s.stop + grow, n))
            for s, n in zip(box, inst.shape, strict=True)
        )
        # Exact distances to this object for every pixel of the grown box.
        d = ndi.distance_transform_edt(compact[region] != label)
        r1, r2 = d1[region], d2[region]  # views: updated in place
        # Keep the two smallest distances seen so far.
        np.minimum(r2, np.maximum(r1, d), out=r2)
        np.minimum(r1, d, out=r1)

    background = ~foreground
    border = w0 * np.exp(-((d1[background] + d2[background]) ** 2) / (2.0 * sigma**2))
    weights[background] += border
    return weights.astype(np.float32)


def label_weight_map(
    labels: np.ndarray,
    *,
    w0: float = 10.0,
    sigma: float = 5.0,
    class_balance: bool = True,
    ignore_index: int | None = None,
    connectivity: int = 1,
) -> np.ndarray:
    """The U-Net weight map [1]_ of a semantic label map: its objects are the connected components
    of each foreground class.

    This is what a training loop has at hand (class labels, not instance ids). Two cells of one
    class separated by a one-pixel membrane are two objects with face connectivity (the
    default), which is what makes the border term light up on the membrane.

    Parameters
    ----------
    labels : ndarray of int, 2D or 3D
        Class map, 0 = background.
    w0, sigma, class_balance
        As in :func:`unet_weight_map`.
    ignore_index : int, optional
        Label that is no object (e.g. void or padding): counted as background here; the loss
        leaves those pixels out anyway.
    connectivity : int, default 1
        Of the components (see :func:`segloc.instances.semantic_to_instances`).

    Returns
    -------
    ndarray of float32, same shape as ``labels``

    References
    ----------
    .. [1] Ronneberger et al., MICCAI 2015, eq. 2. :doi:`10.1007/978-3-319-24574-4_28`

    Examples
    --------
    >>> w = label_weight_map(np.array([[1, 0, 0, 0, 1, 1, 0, 0]]), class_balance=False)
    >>> print(w.round(2))  # two components of class 1: the map of unet_weight_map's example
    [[1.   8.26 8.26 8.26 1.   1.   4.75 2.98]]
    """
    arr = check_image(labels, name="labels")
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"labels must be an integer array, got dtype {arr.dtype}")
    if ignore_index is not None:
        arr = np.where(arr == ignore_index, 0, arr)  # a negative ignore label is allowed too
    instances, _ = semantic_to_instances(arr, connectivity=connectivity)
    return unet_weight_map(instances, w0=w0, sigma=sigma, class_balance=class_balance)
