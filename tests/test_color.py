"""Tests for segloc.color: one grey conversion, equal to scikit-image's rgb2gray."""

import numpy as np
import pytest
from skimage.color import rgb2gray

from segloc.color import to_grey


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
@pytest.mark.parametrize("channels", [3, 4])
def test_to_grey_equals_rgb2gray(dtype, channels):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 200, (7, 9, channels)).astype(dtype)
    if np.issubdtype(np.dtype(dtype), np.floating):
        image = image / 255.0
    np.testing.assert_allclose(to_grey(image), rgb2gray(image[..., :3]), rtol=1e-6)


def test_to_grey_passes_grey_and_picks_channels():
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert to_grey(grey) is grey
    rgb = np.dstack([grey, grey + 1, grey + 2])
    np.testing.assert_array_equal(to_grey(rgb, channel=2), grey + 2)


@pytest.mark.parametrize(
    ("image", "channel", "match"),
    [
        (np.zeros((3, 4)), 0, "channel needs a colour image"),
        (np.zeros((3, 4, 3)), 3, r"channel must be in 0\.\.2"),
        (np.zeros((3, 4, 5)), None, r"must be \(rows, cols\) or \(rows, cols, 3\|4\)"),
        (np.zeros(5), None, "must be"),
    ],
)
def test_to_grey_refuses(image, channel, match):
    with pytest.raises(ValueError, match=match):
        to_grey(image, channel=channel)
