"""Colour images to grey: one conversion for every method that needs a grey image.

Colour images are ``(rows, cols, 3|4)`` arrays as :func:`segloc.io.read_image` returns them
(``meta.header["channels"]`` set); a fourth (alpha) channel is dropped.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["LUMA_WEIGHTS", "to_grey"]

#: ITU-R BT.709 luma weights, as scikit-image's ``rgb2gray``
LUMA_WEIGHTS = (0.2125, 0.7154, 0.0721)


def to_grey(image: Any, *, channel: int | None = None) -> np.ndarray:
    """Grey version of a colour image; a grey image comes back unchanged.

    Parameters
    ----------
    image : array_like, (rows, cols) or (rows, cols, 3|4)
    channel : int, optional
        Take this channel instead of the luminance (e.g. 1 = FLAIR in the LGG slices).

    Returns
    -------
    ndarray
        float64 luminance ``image[..., :3] @ LUMA_WEIGHTS`` with integer images scaled to
        [0, 1] first (equal to ``skimage.color.rgb2gray``); the channel as stored with
        ``channel``; a 2D input as given.

    Raises
    ------
    ValueError
        Neither 2D nor (rows, cols, 3|4); ``channel`` out of range or given for a grey image.

    Examples
    --------
    >>> to_grey(np.array([[[255, 255, 255], [255, 0, 0]]], np.uint8))
    array([[1.    , 0.2125]])
    """
    image = np.asarray(image)
    if image.ndim == 2:
        if channel is not None:
            raise ValueError(f"channel needs a colour image, got shape {image.shape}")
        return image
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise ValueError(f"image must be (rows, cols) or (rows, cols, 3|4), got {image.shape}")
    if channel is not None:
        if isinstance(channel, bool) or not 0 <= int(channel) < image.shape[-1]:
            raise ValueError(f"channel must be in 0..{image.shape[-1] - 1}, got {channel}")
        return image[..., int(channel)]
    rgb = image[..., :3]
    if np.issubdtype(rgb.dtype, np.integer):
        rgb = rgb / float(np.iinfo(rgb.dtype).max)
    return rgb.astype(np.float64) @ np.array(LUMA_WEIGHTS)
