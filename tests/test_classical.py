"""Tests for segloc.classical: the METHODS registry, segment and segment_unattended."""

import numpy as np
import pytest
from skimage import filters as skf

from segloc.classical import METHODS, clustering, interior_point, segment, segment_unattended
from segloc.classical import region_growing as rg


def make_image(dtype, shape, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, shape).astype(dtype)


# ----------------------------------------------------------------------------------------------
# segment: the registry's dispatch


@pytest.mark.parametrize(
    ("method", "kwargs", "expected"),
    [
        ("fixed", {"value": 100}, lambda im: im > 100),
        ("otsu", {}, lambda im: im > skf.threshold_otsu(im)),
        ("li", {}, lambda im: im > skf.threshold_li(im)),
        ("yen", {}, lambda im: im > skf.threshold_yen(im)),
        ("triangle", {}, lambda im: im > skf.threshold_triangle(im)),
        (
            "multiotsu",
            {"classes": 3},
            lambda im: np.digitize(im, skf.threshold_multiotsu(im, classes=3)),
        ),
        (
            "local",
            {"block_size": 15, "offset": 1.0},
            lambda im: im > skf.threshold_local(im, 15, offset=1.0),
        ),
        (
            "local",
            {"block_size": 15, "local_method": "mean"},
            lambda im: im > skf.threshold_local(im, 15, "mean"),
        ),
        (
            "hysteresis",
            {"low": 90, "high": 150},
            lambda im: skf.apply_hysteresis_threshold(im, 90, 150),
        ),
    ],
)
def test_segment_thresholds_match_skimage(method, kwargs, expected):
    image = make_image("uint8", (48, 40), 0)
    got = segment(image, method, **kwargs)
    want = expected(image)
    assert got.dtype == (np.int32 if method == "multiotsu" else bool)
    np.testing.assert_array_equal(got, want)


def two_regions(shape=(40, 48)):
    image = np.full(shape, 40.0)
    image[8:30, 10:36] = 200
    image[32:38, 4:20] = 120
    noise = np.random.default_rng(0).normal(0, 6, shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


@pytest.mark.parametrize(
    ("method", "options", "oracle"),
    [
        (
            "region-grow",
            {"seeds": [(15, 15)], "tolerance": 10},
            lambda im, o: rg.region_grow(im, [(15, 15)], tolerance=10),
        ),
        (
            "srg",
            {"seeds": [(15, 15), (35, 2)]},
            lambda im, o: rg.seeded_region_growing(im, [(15, 15), (35, 2)]),
        ),
        (
            "confidence",
            {"seeds": [(15, 15)]},
            lambda im, o: rg.confidence_connected(im, [(15, 15)]),
        ),
        ("kmeans", {"k": 2}, lambda im, o: clustering.kmeans_intensity(im, 2).labels),
    ],
)
def test_segment_runs_the_registered_function(method, options, oracle):
    image = two_regions()
    np.testing.assert_array_equal(segment(image, method, **options), oracle(image, options))


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda im: segment(im, "sauvola"), ValueError, "method must be one of"),
        (lambda im: segment(im, "fixed"), ValueError, "method 'fixed' needs value"),
        (lambda im: segment(im, "hysteresis", low=1), ValueError, "needs high"),
        (lambda im: segment(im, "otsu", nbins=3), TypeError, r"unknown option\(s\) \['nbins'\]"),
        (lambda im: segment(im, "srg"), ValueError, "needs at least one seed"),
        (lambda im: segment(im, "region-grow", seeds=[(1, 1)]), ValueError, "needs tolerance"),
        (lambda im: segment(im, "otsu", channel_axis=-1), ValueError, "needs a grey image"),
    ],
)
def test_segment_refuses(call, error, match):
    with pytest.raises(error, match=match):
        call(two_regions())


def test_registry_descriptions_match_the_results():
    image = two_regions()
    seeds = {"seeds": [(15, 15)], "tolerance": 5, "value": 100, "low": 50, "high": 150}
    for name, spec in METHODS.items():
        out = segment(image, name, **seeds)
        assert out.shape == image.shape
        assert out.dtype == (np.bool_ if spec.returns.startswith("bool") else np.int32), name


def test_interior_point_is_farthest_from_the_border():
    region = np.zeros((9, 11), bool)
    region[1:8, 2:9] = True  # 7 x 7 square: its centre is the one farthest point
    assert interior_point(region) == (4, 5)
    assert interior_point(np.zeros((3, 3), bool)) is None


@pytest.mark.parametrize("method", ["otsu", "li", "yen", "triangle"])
def test_unattended_thresholds_are_class_one_above(method):
    image = two_regions()
    got = segment_unattended(image, method)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, image > getattr(skf, f"threshold_{method}")(image))


def test_unattended_seeded_methods_seed_at_the_interior_points():
    image = two_regions()
    # confidence: one seed at the interior point of the brighter Otsu class
    seed = interior_point(image > skf.threshold_otsu(image))
    np.testing.assert_array_equal(
        segment_unattended(image, "confidence"), rg.confidence_connected(image, [seed])
    )
    # srg with 3 classes: one seed per multi-Otsu class, region i -> class i
    classes = np.digitize(image, skf.threshold_multiotsu(image, classes=3))
    seeds = [interior_point(classes == c) for c in range(3)]
    want = rg.seeded_region_growing(image, seeds) - 1
    np.testing.assert_array_equal(segment_unattended(image, "srg", num_classes=3), want)


def test_unattended_refuses_what_needs_a_person():
    with pytest.raises(ValueError, match="method must be one of"):
        segment_unattended(two_regions(), "region-grow")
    with pytest.raises(ValueError, match="gives 2 classes"):
        segment_unattended(two_regions(), "otsu", num_classes=3)


# --------------------------------------------------------------------------- files


def test_segment_files_writes_all_or_nothing(tmp_path):
    from segloc import io
    from segloc.classical.files import segment_files

    for i in range(2):
        io.write_image(tmp_path / f"in{i}.png", two_regions())
    (tmp_path / "F").write_text("a file where the overlay folder must go")
    with pytest.raises((OSError, ValueError)):
        segment_files(
            [tmp_path / "in0.png", tmp_path / "in1.png"],
            [tmp_path / "out" / "in0.png", tmp_path / "out" / "in1.png"],
            "otsu",
            overlays=[tmp_path / "F" / "a.png", tmp_path / "F" / "b.png"],
        )
    assert not (tmp_path / "out").exists()
    written = segment_files([tmp_path / "in0.png"], [tmp_path / "o.png"], "otsu", invert=True)
    mask, _ = io.read_mask(tmp_path / "o.png")
    np.testing.assert_array_equal(mask, ~segment(two_regions(), "otsu"))
    assert written[0][1] == tmp_path / "o.png"


def test_segment_files_never_overwrites_an_input(tmp_path):
    from segloc import io
    from segloc.classical.files import segment_files

    io.write_image(tmp_path / "in.png", two_regions())
    before = (tmp_path / "in.png").read_bytes()
    with pytest.raises(ValueError, match="is also an input"):
        segment_files([tmp_path / "in.png"], [tmp_path / "in.png"], "otsu")
    assert (tmp_path / "in.png").read_bytes() == before


def test_segment_files_checks_seeds_against_each_image(tmp_path):
    from segloc import io
    from segloc.classical.files import segment_files

    io.write_image(tmp_path / "in.png", two_regions())
    with pytest.raises(ValueError, match=r"in.png: seed \(1, 2, 3\) has 3 coordinates for a 2D"):
        segment_files(
            [tmp_path / "in.png"], [tmp_path / "o.png"], "srg", options={"seeds": [(1, 2, 3)]}
        )
