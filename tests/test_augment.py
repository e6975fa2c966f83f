"""segloc.engine.augment: exact transforms against NumPy, interpolated ones against
scikit-image / hand lookups, label sets preserved, determinism, the U-Net elastic field."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import transform as sktf

from segloc.engine.augment import (
    Augmenter,
    adjust_intensity,
    affine_transform,
    elastic_deform,
    elastic_field,
    flip,
    gaussian_noise,
    rot90,
)


def pair(shape, *, channels=2, seed=0, values=(0, 3, 7)):
    rng = np.random.default_rng(seed)
    image = rng.normal(size=(channels, *shape)).astype(np.float32)
    labels = rng.choice(np.array(values, dtype=np.int64), size=shape)
    return image, labels


# --------------------------------------------------------------------------- flips, rot90


@pytest.mark.parametrize(
    "shape, axes",
    [((6, 7), 0), ((6, 7), 1), ((6, 7), (0, 1)), ((4, 5, 3), 2), ((4, 5, 3), (0, 2))],
)
def test_flip_matches_numpy_and_is_an_involution(shape, axes):
    image, labels = pair(shape)
    out, lab = flip(image, labels, axes)
    ax = (axes,) if isinstance(axes, int) else axes
    np.testing.assert_array_equal(out, np.flip(image, tuple(a + 1 for a in ax)))
    np.testing.assert_array_equal(lab, np.flip(labels, ax))
    back, back_lab = flip(out, lab, axes)
    np.testing.assert_array_equal(back, image)
    np.testing.assert_array_equal(back_lab, labels)


@pytest.mark.parametrize("axes", [2, (0, 2)])
def test_flip_of_a_one_slice_patch_is_a_plain_copy(axes):
    """A patch one slice thick (a 2D network on slices) flipped across that slice: NumPy
    calls the flipped view contiguous, but its negative stride is refused by torch."""
    image, labels = pair((4, 5, 1))
    out, lab = flip(image, labels, axes)
    assert min(out.strides) > 0 and min(lab.strides) > 0
    torch.from_numpy(out), torch.from_numpy(lab)


@pytest.mark.parametrize("k", [1, 2, 3, -1])
@pytest.mark.parametrize("shape, axes", [((6, 6), (0, 1)), ((5, 7), (0, 1)), ((4, 4, 3), (0, 1))])
def test_rot90_matches_numpy_and_inverts(shape, axes, k):
    image, labels = pair(shape)
    out, lab = rot90(image, labels, k, axes=axes)
    np.testing.assert_array_equal(out, np.rot90(image, k, axes=(axes[0] + 1, axes[1] + 1)))
    np.testing.assert_array_equal(lab, np.rot90(labels, k, axes=axes))
    back, back_lab = rot90(out, lab, -k, axes=axes)
    np.testing.assert_array_equal(back, image)
    np.testing.assert_array_equal(back_lab, labels)


# --------------------------------------------------------------------------- affine


@pytest.mark.parametrize("n", [7, 8])
@pytest.mark.parametrize("angle, k", [(90, 1), (180, 2), (-90, -1), (270, 3)])
def test_affine_quarter_turns_equal_rot90(n, angle, k):
    image, labels = pair((n, n))
    out, lab = affine_transform(image, labels, rotation=angle, order=0)
    np.testing.assert_array_equal(out, np.rot90(image, k, axes=(1, 2)))
    np.testing.assert_array_equal(lab, np.rot90(labels, k))


@pytest.mark.parametrize("axis, plane", [(0, (1, 2)), (1, (0, 2)), (2, (0, 1))])
def test_affine_3d_quarter_turn_about_each_axis(axis, plane):
    image, labels = pair((5, 5, 5), channels=1)
    angles = [0.0, 0.0, 0.0]
    angles[axis] = 90.0
    out, lab = affine_transform(image, labels, rotation=angles, order=0)
    np.testing.assert_array_equal(out[0], np.rot90(image[0], 1, axes=plane))
    np.testing.assert_array_equal(lab, np.rot90(labels, 1, axes=plane))


def test_affine_integer_shift_moves_pixels():
    image, labels = pair((12, 10))
    out, lab = affine_transform(image, labels, translation=(3, -2), order=1)
    # output pixel (i, j) holds input pixel (i - 3, j + 2) wherever that exists
    np.testing.assert_allclose(out[:, 3:, :8], image[:, :9, 2:], atol=1e-6)
    np.testing.assert_array_equal(lab[3:, :8], labels[:9, 2:])


@pytest.mark.parametrize(
    "rotation, scale, translation", [(30.0, 1.0, (0, 0)), (-20.0, 1.3, (2.5, -1.0)), (0, 0.8, 0)]
)
def test_affine_matches_skimage_warp(rotation, scale, translation):
    rng = np.random.default_rng(3)
    image = rng.random((1, 40, 33)).astype(np.float32)
    labels = np.zeros((40, 33), np.int64)
    out, _ = affine_transform(
        image, labels, rotation=rotation, scale=scale, translation=translation, order=1
    )
    # the same forward map built independently in scikit-image's (x = col, y = row) frame:
    # p -> R S (p - c) + c + t, with +angle turning rows towards cols (np.rot90's sense)
    c = (np.array([40, 33]) - 1) / 2
    t = np.broadcast_to(np.asarray(translation, float), (2,))
    about_centre = sktf.AffineTransform(translation=(-c[1], -c[0]))
    # rows towards cols is clockwise in (x, y) = (col, row), i.e. a negative x->y angle
    turn = sktf.AffineTransform(scale=scale, rotation=-np.deg2rad(rotation))
    back = sktf.AffineTransform(translation=(c[1] + t[1], c[0] + t[0]))
    forward = about_centre + turn + back
    expected = sktf.warp(image[0], forward.inverse, order=1, mode="symmetric", preserve_range=True)
    # scipy's "reflect" and skimage's "symmetric" agree inside; compare away from edges
    np.testing.assert_allclose(out[0][4:-4, 4:-4], expected[4:-4, 4:-4], atol=1e-5)


@pytest.mark.parametrize("mode", ["reflect", "nearest", "mirror"])
def test_affine_never_creates_label_values(mode):
    image, labels = pair((30, 31), values=(2, 5, 9))
    _, lab = affine_transform(
        image, labels, rotation=23.0, scale=1.17, translation=(1.3, -4.2), mode=mode
    )
    assert lab.dtype == labels.dtype
    assert set(np.unique(lab)) <= {2, 5, 9}


# --------------------------------------------------------------------------- elastic


@pytest.mark.parametrize("shape", [(65, 49), (17, 21, 13)])
def test_elastic_field_passes_through_the_coarse_displacements(shape):
    field = elastic_field(shape, grid=3, sigma=10.0, rng=np.random.default_rng(4))
    coarse = np.random.default_rng(4).normal(0.0, 10.0, size=(len(shape),) + (3,) * len(shape))
    assert field.shape == (len(shape), *shape)
    nodes = np.ix_(*[[0, (n - 1) // 2, n - 1] for n in shape])
    for axis in range(len(shape)):
        # middle node exactly on a pixel only for odd sizes; corners always
        corner = tuple(np.array(shape) - 1)
        assert field[axis][(0,) * len(shape)] == pytest.approx(
            coarse[axis][(0,) * len(shape)], abs=1e-4
        )
        assert field[axis][corner] == pytest.approx(coarse[axis][(2,) * len(shape)], abs=1e-4)
        if all(n % 2 for n in shape):
            np.testing.assert_allclose(field[axis][nodes], coarse[axis], atol=1e-4)


@pytest.mark.parametrize(
    "shape, grid", [((65, 49), 3), ((12, 20, 9), 3), ((30, 31), 5), ((1, 6), 3)]
)
def test_elastic_field_equals_a_cubic_spline_zoom(shape, grid):
    from scipy import ndimage as ndi

    field = elastic_field(shape, grid=grid, sigma=10.0, rng=np.random.default_rng(2))
    coarse = np.random.default_rng(2).normal(0.0, 10.0, size=(len(shape),) + (grid,) * len(shape))
    zoom = [n / grid for n in shape]
    expected = [ndi.zoom(c, zoom, order=3, mode="mirror", grid_mode=False) for c in coarse]
    np.testing.assert_allclose(field, np.stack(expected), atol=1e-4)


def test_elastic_field_std_is_sigma_at_nodes_and_smooth_between():
    rng = np.random.default_rng(0)
    fields = np.stack([elastic_field((65, 65), sigma=10.0, rng=rng) for _ in range(300)])
    nodes = fields[:, :, [0, 32, 64]][:, :, :, [0, 32, 64]]  # 300 * 2 * 9 = 5400 samples
    # the std of 5400 N(0, 10) draws lies within 10 * (1 +- 5 / sqrt(2 * 5400)) w.h.p.
    assert nodes.std() == pytest.approx(10.0, rel=0.05)
    # cubic interpolation between independent nodes averages them: smaller, not larger
    assert 0.6 * 10.0 < fields.std() < 10.0
    # smooth: neighbouring pixels move almost together (3 nodes over 64 px)
    assert np.abs(np.diff(fields, axis=2)).max() < 10.0


def test_elastic_deform_samples_at_the_displaced_points():
    image, labels = pair((40, 36), channels=1, values=(0, 1, 2, 3))
    image[0] = np.arange(40)[:, None] + 0.0 * np.arange(36)  # a ramp along rows
    out, lab = elastic_deform(image, labels, sigma=3.0, rng=np.random.default_rng(9))
    field = elastic_field((40, 36), sigma=3.0, rng=np.random.default_rng(9))
    coords = np.indices((40, 36)) + field
    inside = (coords >= 0).all(0) & (coords[0] <= 39) & (coords[1] <= 35)
    nearest = np.round(coords).astype(int)
    np.testing.assert_array_equal(lab[inside], labels[nearest[0][inside], nearest[1][inside]])
    # linear interpolation of a row ramp gives the displaced row coordinate itself
    np.testing.assert_allclose(out[0][inside], coords[0][inside], atol=1e-4)


def test_elastic_deform_with_zero_sigma_is_identity():
    image, labels = pair((9, 11, 5))
    out, lab = elastic_deform(image, labels, sigma=0.0, rng=np.random.default_rng(0))
    np.testing.assert_allclose(out, image, atol=1e-6)
    np.testing.assert_array_equal(lab, labels)


@pytest.mark.parametrize("shape", [(48, 40), (20, 18, 16)])
def test_elastic_deform_never_creates_label_values(shape):
    image, labels = pair(shape, values=(1, 4, 6))
    _, lab = elastic_deform(image, labels, rng=np.random.default_rng(1))
    assert lab.dtype == labels.dtype and lab.shape == labels.shape
    assert set(np.unique(lab)) <= {1, 4, 6}
    assert not np.array_equal(lab, labels)  # it did move something


# --------------------------------------------------------------------------- intensity


@pytest.mark.parametrize(
    "x, kwargs, expected",
    [
        ([[1.0, 2.0, 3.0]], {"brightness": 2.0}, [[2.0, 4.0, 6.0]]),
        ([[0.0, 1.0, 2.0]], {"contrast": 2.0}, [[-1.0, 1.0, 3.0]]),
        ([[0.0, 0.5, 1.0]], {"gamma": 2.0}, [[0.0, 0.25, 1.0]]),
        ([[2.0, 3.0, 4.0]], {"gamma": 2.0}, [[2.0, 2.5, 4.0]]),  # gamma on the channel range
        ([[5.0, 5.0]], {"gamma": 3.0}, [[5.0, 5.0]]),  # constant channel untouched
        ([[0.0, 2.0], [10.0, 30.0]], {"contrast": 0.5}, [[0.5, 1.5], [15.0, 25.0]]),  # per channel
    ],
)
def test_adjust_intensity_hand_values(x, kwargs, expected):
    out = adjust_intensity(np.array(x), **kwargs)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_gaussian_noise_std_and_determinism():
    image = np.zeros((1, 200, 200), np.float32)
    a = gaussian_noise(image, 0.5, rng=np.random.default_rng(2))
    b = gaussian_noise(image, 0.5, rng=np.random.default_rng(2))
    np.testing.assert_array_equal(a, b)
    assert a.std() == pytest.approx(0.5, rel=0.02)  # 40000 draws: relative SE 0.35 %


# --------------------------------------------------------------------------- Augmenter


def test_augmenter_all_off_is_identity_and_flip_on_flips_every_axis():
    image, labels = pair((8, 9, 4))
    off = Augmenter(3, p_flip=0, p_rot90=0, p_affine=0, p_elastic=0, p_intensity=0, p_noise=0)
    out, lab = off(image, labels, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(out, image)
    np.testing.assert_array_equal(lab, labels)
    only_flip = Augmenter(3, p_flip=1, p_rot90=0, p_affine=0, p_elastic=0, p_intensity=0, p_noise=0)
    out, lab = only_flip(image, labels, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(out, np.flip(image, (1, 2, 3)))
    np.testing.assert_array_equal(lab, np.flip(labels))


@pytest.mark.parametrize("shape", [(32, 32), (32, 24), (16, 16, 12), (12, 16, 16)])
def test_augmenter_keeps_shapes_and_label_values(shape):
    image, labels = pair(shape)
    aug = Augmenter(
        len(shape), p_flip=0.5, p_rot90=1, p_affine=1, p_elastic=1, p_intensity=1, p_noise=1
    )
    rng = np.random.default_rng(0)
    for _ in range(4):
        out, lab = aug(image, labels, rng=rng)
        assert out.shape == image.shape and out.dtype == np.float32
        assert lab.shape == labels.shape and lab.dtype == labels.dtype
        assert set(np.unique(lab)) <= {0, 3, 7}


def test_augmenter_is_deterministic_under_a_seed():
    image, labels = pair((24, 24))
    aug = Augmenter(2, p_affine=0.5, p_elastic=0.5, p_intensity=0.5, p_noise=0.5)
    runs = [
        [aug(image, labels, rng=rng) for _ in range(5)]
        for rng in (np.random.default_rng(7), np.random.default_rng(7), np.random.default_rng(8))
    ]
    for (a, la), (b, lb) in zip(runs[0], runs[1], strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(la, lb)
    assert any(not np.array_equal(a, c) for (a, _), (c, _) in zip(runs[0], runs[2], strict=True))


def test_augmenter_flip_probability():
    image, labels = pair((4, 4), channels=1)
    aug = Augmenter(
        2, p_flip=0.5, flip_axes=(0,), p_rot90=0, p_affine=0, p_elastic=0, p_intensity=0, p_noise=0
    )
    rng = np.random.default_rng(0)
    flipped = sum(
        np.array_equal(aug(image, labels, rng=rng)[1], np.flip(labels, 0)) for _ in range(2000)
    )
    # binomial(2000, 0.5): sd 22.4; 5 sd bound
    assert abs(flipped - 1000) < 112


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda: flip(np.zeros((4, 4)), np.zeros((4, 4), int), 0), ValueError),  # no channel axis
        (lambda: flip(np.zeros((1, 4, 4)), np.zeros((4, 5), int), 0), ValueError),
        (lambda: flip(np.zeros((1, 4, 4)), np.zeros((4, 4)), 0), TypeError),  # float labels
        (lambda: flip(np.zeros((1, 4, 4)), np.zeros((4, 4), int), 2), ValueError),
        (lambda: rot90(np.zeros((1, 4, 4)), np.zeros((4, 4), int), 1.5), TypeError),
        (lambda: affine_transform(np.zeros((1, 4, 4)), np.zeros((4, 4), int), scale=0), ValueError),
        (
            lambda: affine_transform(np.zeros((1, 4, 4, 4)), np.zeros((4, 4, 4), int), rotation=5),
            ValueError,
        ),
        (lambda: elastic_field((8, 8), grid=1, rng=np.random.default_rng()), ValueError),
        (lambda: elastic_field((8, 8), rng=np.random.RandomState(0)), TypeError),
        (lambda: adjust_intensity(np.zeros((1, 3)), gamma=0), ValueError),
        (lambda: Augmenter(4), ValueError),
        (lambda: Augmenter(2, p_flip=1.5), ValueError),
        (lambda: Augmenter(2, scale=(1.2, 0.8)), ValueError),
        (
            lambda: Augmenter(2)(
                np.zeros((1, 4, 4, 4)), np.zeros((4, 4, 4), int), rng=np.random.default_rng()
            ),
            ValueError,
        ),
    ],
)
def test_bad_arguments(call, error):
    with pytest.raises(error):
        call()


def test_docstring_examples():
    import doctest

    from segloc.engine import augment

    result = doctest.testmod(augment, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 6 and result.failed == 0
