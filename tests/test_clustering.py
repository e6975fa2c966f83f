"""k-means segmentation: exact 1-D optimum, grey images on their histogram, colour Lloyd.

Oracles: brute force over every contiguous partition and a slow O(k n^2) dynamic programme for
the 1-D optimum; scikit-learn's KMeans on the raw pixels or features; SciPy's cdist for nearest
centres; hand-computed cases.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from scipy.spatial.distance import cdist
from skimage.color import rgb2gray, rgb2lab
from sklearn.cluster import KMeans

from segloc.classical import clustering as cl

DATA = Path(
    os.environ.get("SEGLOC_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data")
)
ISBI = DATA / "isbi2012" / "images" / "1.png"
PH2 = DATA / "ph2" / "images" / "IMD003.jpg"


def _load(path: Path) -> np.ndarray:
    if not path.exists():
        pytest.skip(f"real data not found: {path}")
    return np.asarray(Image.open(path))


# ----------------------------------------------------------------------------------------------
# oracles


def brute_force_1d(x, w, k):
    """Least weighted SSE over every split of the sorted distinct values into k runs."""
    x = np.asarray(x, float)
    w = np.asarray(w, float)
    uniq = np.unique(x)
    wu = np.array([w[x == u].sum() for u in uniq])
    uniq, wu = uniq[wu > 0], wu[wu > 0]
    best = np.inf
    for cuts in itertools.combinations(range(1, uniq.size), k - 1):
        sse = 0.0
        for seg in np.split(np.arange(uniq.size), cuts):
            c = np.average(uniq[seg], weights=wu[seg])
            sse += float(np.sum(wu[seg] * (uniq[seg] - c) ** 2))
        best = min(best, sse)
    return best


def slow_dp_1d(x, w, k):
    """Textbook O(k n^2) dynamic programme with each cluster's SSE from np.average."""
    n = x.size
    cost = np.full((n, n), np.inf)
    for j in range(n):
        for i in range(j, n):
            c = np.average(x[j : i + 1], weights=w[j : i + 1])
            cost[j, i] = np.sum(w[j : i + 1] * (x[j : i + 1] - c) ** 2)
    D = cost[0].copy()
    for _ in range(1, k):
        D = np.array(
            [min([np.inf] + [D[j - 1] + cost[j, i] for j in range(1, i + 1)]) for i in range(n)]
        )
    return D[-1]


def sklearn_inertia(X, k, n_init, seed=0):
    X = np.asarray(X, float)
    return KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(X).inertia_


# ----------------------------------------------------------------------------------------------
# kmeans_1d


@pytest.mark.parametrize(
    ("values", "weights", "k", "centers", "inertia"),
    [
        ([1, 2, 3, 10, 11, 30], None, 3, [2.0, 10.5, 30.0], 2.5),
        ([30, 1, 11, 3, 10, 2], None, 3, [2.0, 10.5, 30.0], 2.5),  # order does not matter
        ([0, 1, 5], [3, 1, 2], 2, [0.25, 5.0], 0.75),
        ([0, 0, 0, 1, 5, 5], None, 2, [0.25, 5.0], 0.75),  # repeats = weights
        ([4, 7, 9], None, 3, [4.0, 7.0, 9.0], 0.0),  # k = n: every value alone
        ([0, 1, 2, 3], [1, 0, 0, 1], 2, [0.0, 3.0], 0.0),  # zero weight = absent
        ([-5.5, -4.5, 100.0], None, 2, [-5.0, 100.0], 0.5),
        ([0, 4, 6, 10], None, 2, [2.0, 8.0], 16.0),  # 0 | 4, 6, 10 would cost 18.67
    ],
)
def test_kmeans_1d_hand_cases(values, weights, k, centers, inertia):
    got_c, got_i = cl.kmeans_1d(values, k, weights=weights)
    np.testing.assert_allclose(got_c, centers, rtol=1e-12, atol=1e-12)
    assert got_i == pytest.approx(inertia, rel=1e-12, abs=1e-12)
    assert got_c.dtype == np.float64 and isinstance(got_i, float)


@pytest.mark.parametrize("seed", range(12))
def test_kmeans_1d_equals_brute_force_on_random_histograms(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 10))
    values = rng.choice(50, size=n, replace=False).astype(float) * rng.uniform(0.1, 10)
    counts = rng.integers(1, 1000, size=n).astype(float)
    for k in range(2, min(n, 5) + 1):
        _, inertia = cl.kmeans_1d(values, k, weights=counts)
        assert inertia == pytest.approx(brute_force_1d(values, counts, k), rel=1e-9, abs=1e-9)


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        # weights: histogram counts (0 = absent) or positive floats within a sane dynamic range
        st.tuples(
            st.integers(-1000, 1000),
            st.one_of(st.integers(0, 1000).map(float), st.floats(1e-3, 50.0)),
        ),
        min_size=2,
        max_size=9,
    ),
    st.integers(2, 5),
)
def test_kmeans_1d_equals_brute_force_hypothesis(pairs, k):
    values = np.array([p[0] for p in pairs], float)
    weights = np.array([p[1] for p in pairs], float)
    distinct = np.unique(values[weights > 0]).size
    if k > distinct:
        with pytest.raises(ValueError, match="k must be <= the number of distinct"):
            cl.kmeans_1d(values, k, weights=weights)
        return
    centers, inertia = cl.kmeans_1d(values, k, weights=weights)
    scale = float(np.sum(weights * (values - np.average(values, weights=weights)) ** 2))
    assert inertia == pytest.approx(brute_force_1d(values, weights, k), rel=1e-9, abs=1e-9 * scale)
    assert np.all(np.diff(centers) > 0)


@pytest.mark.parametrize(("n", "k", "seed"), [(60, 2, 0), (90, 4, 1), (120, 6, 2)])
def test_kmeans_1d_equals_slow_dp(n, k, seed):
    # larger n than brute force can enumerate: checks the divide-and-conquer search
    rng = np.random.default_rng(seed)
    x = np.sort(np.concatenate([rng.normal(m, 1.0, n // 3) for m in (0, 3, 9)]))
    w = rng.integers(1, 50, size=x.size).astype(float)
    _, inertia = cl.kmeans_1d(x, k, weights=w)
    assert inertia == pytest.approx(slow_dp_1d(x, w, k), rel=1e-10)


def test_kmeans_1d_never_worse_than_sklearn_on_large_offset_data():
    # 3000 distinct values around 1e6 with a small spread: prefix sums must not cancel
    rng = np.random.default_rng(3)
    x = 1e6 + np.concatenate(
        [rng.normal(0, 1, 1000), rng.normal(5, 1, 1000), rng.normal(9, 2, 1000)]
    )
    centers, inertia = cl.kmeans_1d(x, 3)
    ref = sklearn_inertia(x[:, None], 3, n_init=10)
    assert inertia <= ref * (1 + 1e-9)
    # the reported inertia is the SSE of the reported centres' clusters
    lab = np.argmin(np.abs(x[:, None] - centers[None]), axis=1)
    assert inertia == pytest.approx(float(np.sum((x - centers[lab]) ** 2)), rel=1e-9)


# ----------------------------------------------------------------------------------------------
# kmeans_intensity


def _check_grey_result(image, result, k, *, exact_means=True):
    """Labels = nearest centre, ordered by mean, inertia = SSE of the labels, int32."""
    x = image.astype(float).ravel()
    lab = result.labels.ravel()
    assert result.labels.dtype == np.int32 and result.labels.shape == image.shape
    assert set(np.unique(lab)) <= set(range(k))
    d = np.abs(x[:, None] - result.centers[None])
    np.testing.assert_array_equal(d[np.arange(x.size), lab], d.min(axis=1))  # nearest centre
    assert np.all(np.diff(result.centers) > 0)
    means = np.array([x[lab == j].mean() for j in range(k)])
    assert np.all(np.diff(means) > 0)  # 0 = darkest
    if exact_means:
        np.testing.assert_allclose(result.centers, means, rtol=1e-12)
    assert result.inertia == pytest.approx(float(np.sum((x - result.centers[lab]) ** 2)), rel=1e-9)


def test_kmeans_intensity_hand_case():
    image = np.array([[0, 0, 10], [10, 200, 210]], dtype=np.uint8)
    result = cl.kmeans_intensity(image, 3)
    np.testing.assert_array_equal(result.labels, [[0, 0, 1], [1, 2, 2]])
    assert result.centers.tolist() == [0.0, 10.0, 205.0]
    assert result.inertia == 50.0


@pytest.mark.parametrize("k", [2, 3, 4])
def test_kmeans_intensity_real_crop_vs_sklearn(k):
    image = _load(ISBI)[100:228, 200:328]  # 128 x 128 of real EM
    result = cl.kmeans_intensity(image, k)
    _check_grey_result(image, result, k)
    assert result.inertia <= sklearn_inertia(image.reshape(-1, 1), k, n_init=10) * (1 + 1e-9)
    # the histogram route gives what kmeans_1d gives on every pixel
    centers, inertia = cl.kmeans_1d(image.ravel(), k)
    np.testing.assert_allclose(result.centers, centers, rtol=1e-12)
    assert result.inertia == pytest.approx(inertia, rel=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("k", [2, 3, 5])
def test_kmeans_intensity_real_image_never_worse_than_sklearn(k):
    image = _load(ISBI)  # 512 x 512
    result = cl.kmeans_intensity(image, k)
    _check_grey_result(image, result, k)
    assert result.inertia <= sklearn_inertia(image.reshape(-1, 1), k, n_init=10) * (1 + 1e-9)


@pytest.mark.parametrize(
    "dtype, lo, hi",
    [
        (np.uint8, 0, 256),
        (np.uint16, 1000, 5000),
        (np.int16, -3000, 2000),  # negative levels
        (np.int32, -40000, 20000),  # 60000 levels: still one bin per level
        (np.int64, 7, 70),
    ],
)
def test_kmeans_intensity_integer_images_are_exact(dtype, lo, hi):
    rng = np.random.default_rng(4)
    image = rng.integers(lo, hi, size=(40, 50)).astype(dtype)
    result = cl.kmeans_intensity(image, 3)
    _check_grey_result(image, result, 3)
    centers, inertia = cl.kmeans_1d(image.ravel(), 3)
    np.testing.assert_allclose(result.centers, centers, rtol=1e-12)
    assert result.inertia == pytest.approx(inertia, rel=1e-12)


def test_kmeans_intensity_volume():
    rng = np.random.default_rng(5)
    volume = rng.integers(0, 30, size=(9, 11, 7)).astype(np.uint8)
    volume[:4] += 100
    result = cl.kmeans_intensity(volume, 4)
    _check_grey_result(volume, result, 4)
    np.testing.assert_allclose(result.centers, cl.kmeans_1d(volume.ravel(), 4)[0], rtol=1e-12)


def test_kmeans_intensity_bool_image():
    image = np.zeros((5, 6), bool)
    image[1:3, 2:5] = True
    result = cl.kmeans_intensity(image, 2)
    np.testing.assert_array_equal(result.labels, image.astype(np.int32))
    assert result.centers.tolist() == [0.0, 1.0] and result.inertia == 0.0


def test_kmeans_intensity_float_with_few_values_is_exact():
    # 256 distinct values land in 256 different bins out of 1024: nothing is merged
    rng = np.random.default_rng(6)
    levels = rng.integers(0, 256, size=(60, 70))
    image = (levels / 255.0).astype(np.float32)
    result = cl.kmeans_intensity(image, 3)
    _check_grey_result(image, result, 3)
    exact = cl.kmeans_intensity(levels.astype(np.uint8), 3)
    np.testing.assert_array_equal(result.labels, exact.labels)
    assert result.inertia == pytest.approx(exact.inertia / 255.0**2, rel=1e-6)


@pytest.mark.parametrize("nbins", [None, 64, 4096])
def test_kmeans_intensity_float_binned_close_to_exact(nbins):
    rng = np.random.default_rng(7)
    image = np.concatenate(
        [rng.normal(0, 1, 3000), rng.normal(4, 0.5, 1000), rng.normal(7, 1, 2000)]
    )
    image = image.reshape(60, 100)
    result = cl.kmeans_intensity(image, 3, nbins=nbins)
    _check_grey_result(image, result, 3, exact_means=False)
    _, exact = cl.kmeans_1d(image.ravel(), 3)  # 6000 distinct values
    assert exact * (1 - 1e-12) <= result.inertia <= exact * (1 + (1e-2 if nbins == 64 else 1e-3))
    assert result.inertia <= sklearn_inertia(image.reshape(-1, 1), 3, n_init=10) * (1 + 1e-3)


def test_kmeans_intensity_float_outlier_falls_back_to_distinct_values():
    # one huge value leaves everything else in the first of 1024 bins
    rng = np.random.default_rng(8)
    image = rng.random((20, 20))
    image[0, 0] = 1e9
    result = cl.kmeans_intensity(image, 3)
    centers, inertia = cl.kmeans_1d(image.ravel(), 3)
    np.testing.assert_allclose(result.centers, centers, rtol=1e-12)
    assert result.inertia == pytest.approx(inertia, rel=1e-9)
    assert result.labels[0, 0] == 2 and (result.labels == 2).sum() == 1


def test_kmeans_intensity_wide_integer_range_is_binned():
    rng = np.random.default_rng(9)
    image = rng.integers(0, 1_000_000, size=(50, 50)).astype(np.int32)
    result = cl.kmeans_intensity(image, 3)
    _check_grey_result(image, result, 3, exact_means=False)
    _, exact = cl.kmeans_1d(image.ravel(), 3)
    assert exact * (1 - 1e-12) <= result.inertia <= exact * (1 + 1e-3)


@pytest.mark.parametrize("dtype", [np.uint8, np.float64])
def test_kmeans_intensity_mask(dtype):
    rng = np.random.default_rng(10)
    image = rng.integers(0, 200, size=(30, 40)).astype(dtype)
    image[:, :10] = 250  # bright band outside the mask
    mask = np.zeros(image.shape, bool)
    mask[5:25, 12:38] = True
    result = cl.kmeans_intensity(image, 3, mask=mask)
    centers, inertia = cl.kmeans_1d(image[mask], 3)
    np.testing.assert_allclose(result.centers, centers, rtol=1e-9)
    assert result.inertia == pytest.approx(inertia, rel=1e-9)
    # every pixel is labelled, outside the mask too: the bright band goes to the top cluster
    assert (result.labels[:, :10] == 2).all()


# ----------------------------------------------------------------------------------------------
# kmeans_color


def _features(image, color_space):
    if color_space == "lab":
        return rgb2lab(image).reshape(-1, 3)
    return image.reshape(-1, 3) / 255.0


@pytest.fixture(scope="module")
def ph2_small():
    return _load(PH2)[::4, ::4]  # 144 x 192 RGB


@pytest.mark.parametrize("color_space", ["rgb", "lab"])
def test_kmeans_color_real_image_vs_sklearn(ph2_small, color_space):
    image = ph2_small
    result = cl.kmeans_color(image, 3, color_space=color_space, seed=0)
    X = _features(image, color_space)
    # labels are the nearest centres and the inertia is their SSE
    lab = result.labels.ravel()
    assert result.labels.dtype == np.int32 and result.labels.shape == image.shape[:2]
    np.testing.assert_array_equal(lab, cdist(X, result.centers, "sqeuclidean").argmin(axis=1))
    assert result.inertia == pytest.approx(float(((X - result.centers[lab]) ** 2).sum()), rel=1e-9)
    # measured 1.00004 (rgb) and 1.00001 (lab) of sklearn's best of 10
    assert result.inertia <= sklearn_inertia(X, 3, n_init=10) * 1.01
    # ordered by brightness: luma of the centre (rgb) or L* (lab), and per-label pixel means
    key = (
        result.centers[:, 0] if color_space == "lab" else result.centers @ [0.2125, 0.7154, 0.0721]
    )
    assert np.all(np.diff(key) > 0)
    grey = rgb2gray(image).ravel()
    assert np.all(np.diff([grey[lab == j].mean() for j in range(3)]) > 0)


@pytest.mark.slow
@pytest.mark.parametrize("color_space", ["rgb", "lab"])
def test_kmeans_color_mostly_beats_sklearn_single_init(ph2_small, color_space):
    # Both methods reach the same local optimum up to their stopping tolerance, so the
    # comparison is a coin toss at the 1e-4 level; measured 8 of 10 seeds at or below
    # sklearn (n_init=1) for both colour spaces, and never more than 2.1e-4 above.
    X = _features(ph2_small, color_space)
    ratios = np.array(
        [
            cl.kmeans_color(ph2_small, 3, color_space=color_space, seed=s).inertia
            / sklearn_inertia(X, 3, n_init=1, seed=s)
            for s in range(10)
        ]
    )
    assert ratios.max() <= 1 + 1e-3
    assert (ratios <= 1 + 1e-6).sum() >= 6


def test_kmeans_color_deterministic_for_a_seed(ph2_small):
    runs = [
        cl.kmeans_color(ph2_small, 4, color_space="lab", seed=s, spatial_weight=0.5)
        for s in (7, 7, 8)
    ]
    np.testing.assert_array_equal(runs[0].labels, runs[1].labels)
    np.testing.assert_array_equal(runs[0].centers, runs[1].centers)
    assert runs[0].inertia == runs[1].inertia
    assert runs[2].inertia == pytest.approx(runs[0].inertia, rel=1e-2)  # another seed, same job


def test_kmeans_color_subsample_then_assign():
    image = _load(PH2)[::2, ::2]  # 287 x 383 = 110k pixels
    X = _features(image, "rgb")
    fitted_on_part = cl.kmeans_color(image, 3, sample=5000, seed=1)
    fitted_on_all = cl.kmeans_color(image, 3, sample=None, seed=1)
    lab = fitted_on_part.labels.ravel()
    # inertia is over every pixel, with every pixel at its nearest fitted centre
    assert fitted_on_part.inertia == pytest.approx(
        float(((X - fitted_on_part.centers[lab]) ** 2).sum()), rel=1e-9
    )
    np.testing.assert_array_equal(lab, cdist(X, fitted_on_part.centers, "sqeuclidean").argmin(1))
    assert fitted_on_part.inertia <= fitted_on_all.inertia * 1.01


def test_kmeans_color_spatial_weight_splits_a_flat_image_in_halves():
    # one colour only: the position decides; the best 2-split of a 10 x 20 grid is left | right
    image = np.full((10, 20, 3), 90, np.uint8)
    result = cl.kmeans_color(image, 2, spatial_weight=1.0, seed=0)
    assert result.centers.shape == (2, 5)
    left, right = result.labels[:, :10], result.labels[:, 10:]
    assert len(np.unique(left)) == 1 and len(np.unique(right)) == 1 and left[0, 0] != right[0, 0]
    scale = 1.0 / 19  # the longer side (20 px) spans spatial_weight * 1
    cols = np.sort(result.centers[:, 4])
    np.testing.assert_allclose(cols, [4.5 * scale, 14.5 * scale], rtol=1e-12)
    np.testing.assert_allclose(result.centers[:, 3], 4.5 * scale, rtol=1e-12)
    np.testing.assert_allclose(result.centers[:, :3], 90 / 255, rtol=1e-12)


def test_kmeans_color_hand_case_and_float_input():
    image = np.zeros((4, 6, 3), np.uint8)
    image[:, 2:4] = (200, 30, 30)
    image[:, 4:] = (250, 250, 250)
    for img in (image, image / 255.0):
        result = cl.kmeans_color(img, 3, seed=0)
        np.testing.assert_array_equal(result.labels, np.repeat([[0, 0, 1, 1, 2, 2]], 4, axis=0))
        np.testing.assert_allclose(
            result.centers,
            [[0, 0, 0], [200 / 255, 30 / 255, 30 / 255], [250 / 255] * 3],
            atol=1e-12,
        )
        assert result.inertia == pytest.approx(0.0, abs=1e-20)


def test_kmeans_color_rare_colours_missed_by_the_sample_refit_on_all():
    image = np.zeros((200, 300, 3), np.uint8)
    image[10, 10] = (255, 0, 0)
    image[150, 250] = (255, 255, 255)
    result = cl.kmeans_color(image, 3, sample=100, seed=0)
    assert result.inertia == 0.0
    assert result.labels[150, 250] == 2 and (result.labels == 0).sum() == 200 * 300 - 2


# ----------------------------------------------------------------------------------------------
# dispatch


def test_segment_kmeans_dispatches(ph2_small):
    grey = _load(ISBI)[:64, :64]
    np.testing.assert_array_equal(cl.segment_kmeans(grey, 3), cl.kmeans_intensity(grey, 3).labels)
    np.testing.assert_array_equal(
        cl.segment_kmeans(ph2_small, 2, color_space="lab", seed=3),
        cl.kmeans_color(ph2_small, 2, color_space="lab", seed=3).labels,
    )
    with pytest.raises(TypeError):
        cl.segment_kmeans(grey, 3, color_space="lab")  # a colour option for a grey image


def test_classical_segment_uses_kmeans(ph2_small):
    from segloc.classical import segment

    grey = _load(ISBI)[:64, :64]
    np.testing.assert_array_equal(segment(grey, "kmeans", k=2), cl.kmeans_intensity(grey, 2).labels)
    np.testing.assert_array_equal(
        segment(ph2_small, "kmeans", k=3, channel_axis=-1, color_space="rgb", seed=0),
        cl.kmeans_color(ph2_small, 3, seed=0).labels,
    )


# ----------------------------------------------------------------------------------------------
# bad input

_GREY = np.arange(12, dtype=np.uint8).reshape(3, 4)
_RGB = np.random.default_rng(0).integers(0, 256, size=(8, 9, 3)).astype(np.uint8)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda: cl.kmeans_intensity(np.zeros((2, 2, 2, 2)), 2),
            ValueError,
            "image must be 2D or 3D",
        ),
        (lambda: cl.kmeans_intensity(np.zeros(5), 2), ValueError, "image must be 2D or 3D"),
        (lambda: cl.kmeans_intensity(_GREY, 1), ValueError, "k must be >= 2, got 1"),
        (lambda: cl.kmeans_intensity(_GREY, 2.5), TypeError, "k must be an integer, got float"),
        (lambda: cl.kmeans_intensity(_GREY, True), TypeError, "k must be an integer, got bool"),
        (
            lambda: cl.kmeans_intensity(np.array([[1, 1, 2, 3]]), 4),
            ValueError,
            r"k must be <= the number of distinct values \(3\), got 4",
        ),
        (
            lambda: cl.kmeans_intensity(np.full((3, 3), 0.5), 2),
            ValueError,
            r"distinct values \(1\), got 2",
        ),
        (lambda: cl.kmeans_intensity(np.array([[0.0, np.nan]]), 2), ValueError, "NaN"),
        (lambda: cl.kmeans_intensity(_GREY, 2, nbins=1), ValueError, "nbins must be >= 2, got 1"),
        (
            lambda: cl.kmeans_intensity(_GREY, 2, mask=np.ones((4, 3), bool)),
            ValueError,
            "image and mask must have the same shape",
        ),
        (
            lambda: cl.kmeans_intensity(_GREY, 2, mask=np.zeros((3, 4), bool)),
            ValueError,
            "mask must select at least one pixel",
        ),
        (
            lambda: cl.kmeans_intensity(_GREY, 3, mask=_GREY < 2),
            ValueError,
            r"distinct values \(2\), got 3",
        ),
        (lambda: cl.kmeans_1d(np.zeros((2, 2)), 2), ValueError, "values must be 1D, got shape"),
        (lambda: cl.kmeans_1d([1, 2, 3], 2, weights=[1, -1, 1]), ValueError, "weights must be"),
        (lambda: cl.kmeans_1d([1, 2, 3], 2, weights=[1, 1]), ValueError, "same shape"),
        (
            lambda: cl.kmeans_1d([1, 2, 3], 2, weights=[0, 0, 5]),
            ValueError,
            r"distinct values with positive weight \(1\), got 2",
        ),
        (lambda: cl.kmeans_1d(["a", "b"], 2), TypeError, "values must be a numeric array"),
        (lambda: cl.kmeans_color(_GREY, 2), ValueError, "image must be 3D"),
        (
            lambda: cl.kmeans_color(np.zeros((4, 4, 4)), 2),
            ValueError,
            r"image must have shape \(rows, cols, 3\), got shape \(4, 4, 4\)",
        ),
        (
            lambda: cl.kmeans_color(_RGB, 2, color_space="hsv"),
            ValueError,
            r"color_space must be one of \['rgb', 'lab'\], got 'hsv'",
        ),
        (
            lambda: cl.kmeans_color(_RGB, 2, spatial_weight=-1.0),
            ValueError,
            "spatial_weight must be >= 0, got -1.0",
        ),
        (lambda: cl.kmeans_color(_RGB, 2, n_init=0), ValueError, "n_init must be >= 1, got 0"),
        (lambda: cl.kmeans_color(_RGB, 2, max_iter=0), ValueError, "max_iter must be >= 1"),
        (lambda: cl.kmeans_color(_RGB, 2, tol=-1.0), ValueError, "tol must be >= 0"),
        (lambda: cl.kmeans_color(_RGB, 3, sample=2), ValueError, "sample must be >= 3, got 2"),
        (lambda: cl.kmeans_color(_RGB, 2, seed=1.5), TypeError, "seed must be an integer"),
        (
            lambda: cl.kmeans_color(np.zeros((5, 5, 3)), 2),
            ValueError,
            r"k must be <= the number of distinct colours \(1\), got 2",
        ),
    ],
)
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_kmeans_intensity_warns_on_what_looks_like_colour():
    with pytest.warns(UserWarning, match="looks like a colour image"):
        cl.kmeans_intensity(_RGB, 2)
