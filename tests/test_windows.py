"""Tests for segloc.engine.windows: the slab-wise blending behind every sliding window.

Oracles: MONAI's ``sliding_window_inference`` (same windows, same Gaussian), and the whole
image blended at once (a block, a slab or a reused background window must change nothing).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.inferers import sliding_window_inference as monai_sliding_window

from segloc.engine.windows import (
    WindowGrid,
    WindowStats,
    blend_windows,
    class_argmax,
    label_dtype,
    sliding_window_inference,
    window_predictor,
)


def small_net(dims: int = 2, k: int = 3, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    conv = torch.nn.Conv2d if dims == 2 else torch.nn.Conv3d
    return torch.nn.Sequential(
        conv(1, 4, 3, padding=1), torch.nn.ReLU(), conv(4, k, 3, padding=1)
    ).eval()


def with_background(shape, seed=0):
    """Noise in the middle, exact zeros around it (a head in its field of view)."""
    x = torch.zeros(shape)
    inner = tuple(slice(s // 3, s - s // 3) for s in shape[2:])
    g = torch.Generator().manual_seed(seed)
    x[(slice(None), slice(None), *inner)] = torch.randn(x[(..., *inner)].shape, generator=g)
    return x


@pytest.mark.parametrize(
    "shape,patch",
    [((1, 1, 150, 140), (32, 32)), ((1, 1, 70, 64, 48), (16, 16, 16))],
)
def test_background_windows_are_reused_and_output_matches_monai(shape, patch):
    dims = len(patch)
    net = small_net(dims)
    x = with_background(shape)
    stats = WindowStats()
    ours = sliding_window_inference(net, x, patch, output="probabilities", stats=stats)
    with torch.no_grad():
        ref = monai_sliding_window(x, patch, 4, lambda t: torch.softmax(net(t), 1), overlap=0.5,
                                   mode="gaussian", sigma_scale=0.125)  # fmt: skip
    # every voxel, kept or reused, within the 1e-4 of MONAI (which computes them all)
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), atol=1e-5)
    assert stats.reused > 0 and stats.computed + stats.reused == stats.windows
    assert stats.constant_values == [0.0]
    plain = WindowStats()
    again = sliding_window_inference(
        net, x, patch, output="probabilities", stats=plain, reuse_constant=False
    )
    assert plain.reused == 0 and plain.computed == stats.windows
    np.testing.assert_allclose(ours.numpy(), again.numpy(), atol=1e-6)


@pytest.mark.parametrize(
    "shape,patch,overlap",
    [
        ((2, 1, 90, 61), (32, 24), 0.5),
        ((1, 1, 20, 90), (32, 32), 0.25),
        ((1, 1, 30, 22, 19), (16, 16, 8), 0.5),
    ],
)
def test_labels_are_the_argmax_of_the_blended_probabilities(shape, patch, overlap):
    net = small_net(len(patch), k=4)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    prob = sliding_window_inference(net, x, patch, overlap=overlap, output="probabilities")
    lab = sliding_window_inference(net, x, patch, overlap=overlap, output="labels")
    assert lab.dtype == torch.int32 and lab.shape == (shape[0], *shape[2:])
    np.testing.assert_array_equal(lab.numpy(), prob.argmax(1).numpy())


@pytest.mark.parametrize("k", [1, 2, 5])
@pytest.mark.parametrize("spatial", [(7,), (6, 9), (3, 4, 5)])
def test_class_argmax_equals_torch_argmax_with_ties_and_nan(k, spatial):
    g = torch.Generator().manual_seed(k)
    # rounded scores tie often; NaN anywhere counts as the largest, as in torch.argmax
    scores = torch.round(torch.rand((k, *spatial), generator=g) * 3)
    scores[torch.rand(scores.shape, generator=g) < 0.1] = float("nan")
    got = class_argmax(scores)
    assert got.dtype == torch.int32
    np.testing.assert_array_equal(got.numpy(), scores.argmax(0).numpy())


def test_class_argmax_needs_a_class_axis():
    with pytest.raises(ValueError, match="K >= 1"):
        class_argmax(torch.zeros(0, 4))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.int64])
def test_labels_come_in_the_dtype_asked(dtype):
    net = small_net(k=4)
    x = torch.randn((2, 1, 40, 30), generator=torch.Generator().manual_seed(1))
    ref = sliding_window_inference(net, x, (16, 16), output="labels")
    got = sliding_window_inference(net, x, (16, 16), output="labels", labels_dtype=dtype)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got.numpy(), ref.numpy())


@pytest.mark.parametrize(
    "dtype,classes,match",
    [
        (torch.float32, 3, "integer torch dtype"),
        (torch.bool, 2, "integer"),
        (torch.uint8, 300, "cannot hold"),
    ],
)
def test_labels_dtype_is_checked(dtype, classes, match):
    net = torch.nn.Conv2d(1, classes, 1)
    with pytest.raises(ValueError, match=match):
        sliding_window_inference(
            net, torch.zeros(1, 1, 8, 8), (8, 8), output="labels", labels_dtype=dtype
        )


@pytest.mark.parametrize(
    "classes,dtype", [(2, torch.uint8), (255, torch.uint8), (256, torch.int32)]
)
def test_label_dtype_is_the_smallest_that_holds_the_classes(classes, dtype):
    assert label_dtype(classes) == dtype


@pytest.mark.parametrize("shape", [(0, 1, 8, 8), (1, 1, 0, 8)])
def test_an_empty_image_is_refused(shape):
    with pytest.raises(ValueError, match="a case with pixels"):
        sliding_window_inference(small_net(), torch.zeros(shape), (4, 4))


def test_slabs_tile_the_image_and_hold_about_one_window():
    net = small_net(2)
    x = torch.randn(1, 1, 200, 50, generator=torch.Generator().manual_seed(4))
    grid = WindowGrid((200, 50), (32, 32), 0.5)
    from segloc.engine.windows import _padded_reader

    with torch.no_grad():
        slabs = list(blend_windows(window_predictor(net), _padded_reader(x[0], grid.before), grid))
    assert slabs[0][0] == 0 and slabs[-1][1] == 200
    assert all(a[1] == b[0] for a, b in zip(slabs, slabs[1:], strict=False))
    # a slab spans the rows finished by one batch of windows: about one window's height
    assert max(s[1] - s[0] for s in slabs) <= 32 + 16
    whole = torch.cat([s[2] for s in slabs], 1)
    ref = sliding_window_inference(net, x, (32, 32), output="probabilities")[0]
    np.testing.assert_array_equal(whole.numpy(), ref.numpy())


@pytest.mark.parametrize(
    "shape,patch,box",
    [
        ((101, 77), (32, 32), ((10, 20), (60, 77))),
        ((101, 77), (32, 32), ((0, 0), (1, 1))),
        ((40, 35, 30), (16, 16, 16), ((5, 0, 16), (40, 20, 30))),
        ((20, 90), (32, 32), ((3, 40), (17, 60))),  # padded axis
    ],
)
def test_a_box_alone_equals_the_same_box_of_the_whole_image_bit_for_bit(shape, patch, box):
    from segloc.engine.windows import _padded_reader

    net = small_net(len(patch))
    x = torch.randn(1, 1, *shape, generator=torch.Generator().manual_seed(5))
    grid = WindowGrid(shape, patch, 0.5)
    read = _padded_reader(x[0], grid.before)
    predict = window_predictor(net)
    with torch.no_grad():
        whole = torch.cat([b for *_, b in blend_windows(predict, read, grid, batch_size=1)], 1)
        part = torch.cat(
            [b for *_, b in blend_windows(predict, read, grid, lo=box[0], hi=box[1], batch_size=1)],
            1,
        )
    sl = tuple(slice(a, b) for a, b in zip(*box, strict=True))
    np.testing.assert_array_equal(part.numpy(), whole[(slice(None), *sl)].numpy())


def test_grid_corners_of_a_box():
    g = WindowGrid((100,), (32,), 0.5)
    assert g.starts == ((0, 16, 32, 48, 64, 68),)
    assert g.corners((40,), (50,)) == [(16,), (32,), (48,)]
    assert g.corners() == [(s,) for s in g.starts[0]]
