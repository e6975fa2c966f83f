"""segloc.engine.data: case matching on the real layouts, dataset checks, splits,
normalisation (hand values, MONAI), resampling (scikit-image), patch sampling
statistics, the torch Dataset, collation and worker seeding."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import transform as sktf
from torch.utils.data import DataLoader

from segloc import io
from segloc.engine.augment import Augmenter
from segloc.engine.data import CaseFiles, check_dataset, find_cases, load_case, split_cases
from segloc.engine.patches import PatchSampler, SegmentationDataset, pad_collate, worker_init_fn
from segloc.engine.preprocess import normalize, resample
from segloc.nn.weight_map import label_weight_map

DATA = Path(
    os.environ.get("SEGLOC_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data")
)


def need(folder: str) -> Path:
    path = DATA / folder
    if not path.is_dir():
        pytest.skip(f"{path} not available")
    return path


def write_case(root: Path, name: str, image, labels, *, label_dir="labels", suffix=""):
    ext = ".nii.gz" if np.ndim(labels) == 3 else ".png"
    io.write_image(root / "images" / f"{name}{ext}", image)
    io.write_mask(root / label_dir / f"{name}{suffix}{ext}", labels)


# --------------------------------------------------------------------------- finding cases


@pytest.mark.parametrize(
    "folder, n, label_dir, suffix, example",
    [
        ("isbi2012", 22, "labels", "", "1"),
        ("hippocampus", 200, "labels", "", "hippocampus_003"),
        ("lgg_mri", 235, "masks", "_mask", "TCGA_CS_4941_19960909/TCGA_CS_4941_19960909_10"),
        ("ph2", 150, "masks", "", "IMD003"),
        ("camvid", 71, "labels", "", "0016E5_07963"),
    ],
)
def test_find_cases_on_real_layouts(folder, n, label_dir, suffix, example):
    root = need(folder)
    cases = find_cases(root)
    assert len(cases) == n
    assert [c.name for c in cases] == sorted(c.name for c in cases)
    by_name = {c.name: c for c in cases}
    assert example in by_name
    for case in cases:
        rel_image = case.image.relative_to(root / "images")
        rel_label = case.label.relative_to(root / label_dir)
        assert rel_label.parent == rel_image.parent  # same patient folder when nested
        assert io.case_stem(rel_label) == io.case_stem(rel_image) + suffix
        assert case.name == (rel_image.parent / io.case_stem(rel_image)).as_posix()


def test_find_cases_suffix_nested_and_explicit(tmp_path):
    z = np.zeros((4, 4), np.uint8)
    for patient, n in (("p1", 1), ("p1", 10), ("p2", 1)):
        io.write_image(tmp_path / "images" / patient / f"{patient}_{n}.png", z)
        io.write_mask(tmp_path / "masks" / patient / f"{patient}_{n}_mask.png", z.astype(bool))
    cases = find_cases(tmp_path)
    assert [c.name for c in cases] == ["p1/p1_1", "p1/p1_10", "p2/p2_1"]
    assert cases[1].label.name == "p1_10_mask.png"  # not paired with p1_1 by a prefix
    assert find_cases(tmp_path, label_dir="masks", label_suffix="_mask") == cases
    with pytest.raises(io.ImageReadError, match="no label file"):
        find_cases(tmp_path, label_suffix="_seg")


def test_find_cases_ambiguities(tmp_path):
    z = np.zeros((4, 4), np.uint8)
    write_case(tmp_path, "a", z, z.astype(bool), suffix="_x")
    write_case(tmp_path, "b", z, z.astype(bool), suffix="_y")
    with pytest.raises(ValueError, match="label_suffix is ambiguous"):
        find_cases(tmp_path)
    assert [c.name for c in find_cases(tmp_path, label_suffix="_x")] == ["a"]
    (tmp_path / "masks").mkdir()
    with pytest.raises(ValueError, match="label_dir is ambiguous"):
        find_cases(tmp_path)
    with pytest.raises(io.ImageReadError, match="no such folder"):
        find_cases(tmp_path / "missing")
    with pytest.raises(io.ImageReadError, match="image_dir"):
        find_cases(tmp_path / "images")


# --------------------------------------------------------------------------- check_dataset


def test_check_dataset_reports_unmatched_mismatch_and_corrupt(tmp_path):
    lab = np.zeros((6, 8), bool)
    lab[:3] = True  # 24 of 48 pixels foreground
    write_case(tmp_path, "good", np.ones((6, 8), np.uint8), lab)
    write_case(tmp_path, "good_rgb", np.ones((6, 8, 3), np.uint8), lab)
    write_case(tmp_path, "wrong_shape", np.ones((6, 9), np.uint8), lab)
    io.write_image(tmp_path / "images" / "lonely.png", np.ones((6, 8), np.uint8))
    io.write_mask(tmp_path / "labels" / "orphan.png", lab)
    io.write_image(tmp_path / "images" / "broken.png", np.ones((6, 8), np.uint8))
    (tmp_path / "labels" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    report = check_dataset(tmp_path)
    assert not report.ok
    assert report.n_cases == 2
    assert [p.name for p in report.unmatched_images] == ["lonely.png"]
    assert [p.name for p in report.unmatched_labels] == ["orphan.png"]
    assert len(report.problems) == 2
    assert any(p.startswith("wrong_shape:") and "(6, 8)" in p for p in report.problems)
    assert any(p.startswith("broken:") for p in report.problems)
    assert report.shapes == {(6, 8): 2}
    assert report.channels == {1: 1, 3: 1}
    assert report.label_values == [0, 255]
    assert report.label_mapping == {0: 0, 255: 1}
    assert report.class_voxels == {0: 48, 1: 48}
    assert report.class_fraction == {0: 0.5, 1: 0.5}
    text = report.format()
    for needle in ("lonely.png", "orphan.png", "wrong_shape", "class 1: 50.00%", "NOT OK"):
        assert needle in text


def test_check_dataset_reads_jpeg_masks_as_training_does(tmp_path, recwarn):
    # Kvasir-SEG ships its masks as JPEG: compression leaves grey values along the edges
    rng = np.random.default_rng(0)
    (tmp_path / "masks").mkdir()
    for name in ("a", "b"):
        mask = np.zeros((40, 48), np.uint8)
        r, c = rng.integers(4, 20, size=2)
        mask[r : r + 17, c : c + 23] = 255
        image = rng.integers(0, 255, (40, 48), np.uint8)
        io.write_image(tmp_path / "images" / f"{name}.png", image)
        Image.fromarray(mask).save(tmp_path / "masks" / f"{name}.jpg", quality=75)
    expected = 0
    for case in find_cases(tmp_path):
        stored = np.asarray(Image.open(case.label))
        assert len(np.unique(stored)) > 2
        expected += int((stored >= 128).sum())
        np.testing.assert_array_equal(load_case(case)[1], stored >= 128)
    recwarn.clear()  # load_case warns once per JPEG mask; the report does not
    report = check_dataset(tmp_path)
    assert report.ok, report.format()
    assert report.lossy_labels == 2
    assert report.label_values == [0, 255] and report.label_mapping == {0: 0, 255: 1}
    assert report.class_voxels == {0: 2 * 40 * 48 - expected, 1: expected}
    assert "lossy (JPEG) label files: 2" in report.format()
    assert not [w for w in recwarn if "lossy" in str(w.message)]


def test_check_dataset_label_map_keeps_values(tmp_path):
    lab = np.array([[0, 1, 2, 2]], np.uint8)
    write_case(tmp_path, "a", np.ones((1, 4), np.uint8), lab)
    report = check_dataset(tmp_path)
    assert report.ok and report.format().endswith("OK")
    assert report.label_mapping == {0: 0, 1: 1, 2: 2}
    assert report.class_voxels == {0: 1, 1: 1, 2: 2}


def test_check_dataset_isbi_class_balance():
    root = need("isbi2012")
    report = check_dataset(root)
    assert report.ok and report.n_cases == 22
    assert report.shapes == {(512, 512): 22}
    # oracle: count the label PNGs directly with Pillow
    counts = np.zeros(256, np.int64)
    for path in sorted((root / "labels").glob("*.png")):
        counts += np.bincount(np.asarray(Image.open(path)).ravel(), minlength=256)
    assert report.class_voxels == {0: int(counts[0]), 1: int(counts[255])}
    assert report.class_fraction[1] == pytest.approx(0.78, abs=0.02)


@pytest.mark.slow
def test_check_dataset_hippocampus_float_labels_and_many_shapes():
    import nibabel as nib

    root = need("hippocampus")
    report = check_dataset(root)
    assert report.ok and report.n_cases == 200 and report.label_values == [0, 1, 2]
    counts = np.zeros(3, np.int64)
    for path in sorted((root / "labels").glob("*.nii.gz")):
        counts += np.bincount(np.asarray(nib.load(path).dataobj).astype(int).ravel(), minlength=3)
    assert report.class_voxels == {0: counts[0], 1: counts[1], 2: counts[2]}
    assert sum(report.shapes.values()) == 200 and report.spacings == {(1.0, 1.0, 1.0): 200}
    line = next(t for t in report.format().splitlines() if t.startswith("shapes:"))
    assert "distinct" in line and len(line) < 200


# --------------------------------------------------------------------------- splits


def test_split_cases_deterministic_disjoint_and_sized():
    cases = list(range(23))
    train, val = split_cases(cases, val_fraction=0.2, seed=1)
    assert (train, val) == split_cases(cases, val_fraction=0.2, seed=1)
    assert len(val) == 5 and sorted(train + val) == cases  # round(4.6) = 5
    assert train == sorted(train) and val == sorted(val)  # original order kept
    assert split_cases(cases, val_fraction=0.2, seed=2)[1] != val
    assert split_cases(cases, val_fraction=0.0) == (cases, [])
    assert len(split_cases([1, 2], val_fraction=0.01)[1]) == 1  # at least one
    assert len(split_cases([1, 2], val_fraction=0.99)[1]) == 1  # at most all but one


def test_split_cases_groups_patients_on_lgg():
    cases = find_cases(need("lgg_mri"))
    patient = lambda c: c.image.parent.name  # noqa: E731
    train, val = split_cases(cases, val_fraction=0.2, seed=0, group_by=patient)
    assert {patient(c) for c in train}.isdisjoint({patient(c) for c in val})
    assert len({patient(c) for c in val}) == 2  # round(0.2 * 8 patients)
    assert len(train) + len(val) == len(cases)


@pytest.mark.parametrize(
    ("cases", "group_by", "fraction", "val"),
    [
        (list(range(10)), None, 0.3, [7, 8, 9]),
        (list(range(10)), None, 0.01, [9]),  # at least one
        (["b1", "a2", "b2", "a1", "c1"], lambda c: c[0], 0.34, ["c1"]),  # round(1.02) groups
        (["b1", "a2", "b2", "a1", "c1"], lambda c: c[0], 0.5, ["b1", "b2", "c1"]),
    ],
)
def test_split_cases_last_holds_out_a_contiguous_block(cases, group_by, fraction, val):
    train, held = split_cases(cases, val_fraction=fraction, group_by=group_by, order="last")
    assert held == val
    assert train == [c for c in cases if c not in val]
    # the seed plays no part
    assert (
        split_cases(cases, val_fraction=fraction, group_by=group_by, order="last", seed=5)[1] == val
    )


def test_split_cases_rejects_order():
    with pytest.raises(ValueError, match="order must be one of"):
        split_cases([1, 2, 3], order="first")


@pytest.mark.parametrize("fraction", [-0.1, 1.0])
def test_split_cases_rejects_fraction(fraction):
    with pytest.raises(ValueError, match="val_fraction"):
        split_cases([1, 2, 3], val_fraction=fraction)


# --------------------------------------------------------------------------- normalize


@pytest.mark.parametrize(
    "x, method, kwargs, expected",
    [
        ([1.0, 3.0, 1.0, 3.0], "zscore", {}, [-1.0, 1.0, -1.0, 1.0]),
        ([5.0, 5.0, 5.0], "zscore", {}, [0.0, 0.0, 0.0]),
        ([2.0, 4.0, 6.0], "minmax", {}, [0.0, 0.5, 1.0]),
        ([7.0, 7.0], "minmax", {}, [0.0, 0.0]),
        # statistics from the masked pixels (1, 3) applied everywhere
        ([1.0, 3.0, 5.0], "zscore", {"mask": np.array([True, True, False])}, [-1.0, 1.0, 3.0]),
        ([1.0, 3.0, 5.0], "minmax", {"mask": np.array([True, True, False])}, [0.0, 1.0, 2.0]),
        # percentiles 10 and 90 of 0..10 are 1 and 9; clipped values have mean 5 and
        # variance (2*16 + 2*16 + 2*9 + 2*4 + 2*1) / 11 = 92 / 11
        (
            list(np.arange(11.0)),
            "percentile",
            {"lower": 10, "upper": 90},
            list((np.clip(np.arange(11.0), 1, 9) - 5) / np.sqrt(92 / 11)),
        ),
    ],
)
def test_normalize_hand_values(x, method, kwargs, expected):
    out = normalize(np.array(x), method, **kwargs)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)


def test_normalize_per_channel_matches_monai():
    from monai.transforms import ClipIntensityPercentiles, NormalizeIntensity, ScaleIntensity

    rng = np.random.default_rng(0)
    image = (rng.gamma(2.0, size=(3, 20, 30)) * np.array([1, 10, 100])[:, None, None]).astype(
        np.float32
    )
    np.testing.assert_allclose(
        normalize(image, "zscore", channel_axis=0),
        np.asarray(NormalizeIntensity(channel_wise=True)(image)),
        rtol=1e-4,
        atol=1e-5,
    )
    np.testing.assert_allclose(
        normalize(image, "minmax", channel_axis=0),
        np.asarray(ScaleIntensity(minv=0.0, maxv=1.0, channel_wise=True)(image)),
        atol=1e-6,
    )
    clipped = np.asarray(ClipIntensityPercentiles(0.5, 99.5, channel_wise=True)(image))
    np.testing.assert_allclose(
        normalize(image, "percentile", channel_axis=0),
        np.asarray(NormalizeIntensity(channel_wise=True)(clipped)),
        rtol=1e-4,
        atol=1e-4,
    )
    # channels last gives the same numbers
    np.testing.assert_allclose(
        normalize(np.moveaxis(image, 0, -1), "zscore", channel_axis=-1),
        np.moveaxis(normalize(image, "zscore", channel_axis=0), 0, -1),
    )


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"method": "robust"}, ValueError),
        ({"lower": 60, "upper": 40}, ValueError),
        ({"mask": np.zeros(4, bool)}, ValueError),
        ({"mask": np.ones(3, bool)}, ValueError),
        ({"mask": np.ones(4)}, TypeError),
        ({"channel_axis": 3}, ValueError),
    ],
)
def test_normalize_rejects(kwargs, error):
    with pytest.raises(error):
        normalize(np.arange(4.0), **kwargs)


# --------------------------------------------------------------------------- resample


def test_resample_shape_spacing_and_nearest_labels():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=(35, 50, 35)).astype(np.int32)
    out, spacing = resample(labels, (1, 1, 1), (2, 2, 2), order=0)
    assert out.shape == (18, 25, 18)  # 17.5 -> 18, 25, 17.5 -> 18
    assert out.dtype == np.int32 and set(np.unique(out)) == {0, 1, 2}
    assert spacing == pytest.approx((35 / 18, 2.0, 35 / 18))
    up, spacing = resample(np.zeros((5, 6)), (1.0, 0.6), (0.5, 0.5))
    assert up.shape == (10, 7) and up.dtype == np.float32  # 7.2 -> 7
    assert spacing == pytest.approx((0.5, 6 * 0.6 / 7))
    same, _ = resample(labels, 1.0, 1.0, order=0)
    np.testing.assert_array_equal(same, labels)


@pytest.mark.parametrize(
    "shape, spacing, target", [((30, 41), (1, 1), (1.7, 0.6)), ((12, 9, 7), (2, 1, 3), (1, 1.5, 2))]
)
def test_resample_linear_matches_skimage_resize(shape, spacing, target):
    image = np.random.default_rng(1).random(shape)
    out, _ = resample(image, spacing, target, order=1)
    expected = sktf.resize(
        image, out.shape, order=1, mode="edge", anti_aliasing=False, preserve_range=True
    )
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_resample_channel_axis_and_real_hippocampus_labels():
    root = need("hippocampus")
    case = find_cases(root)[0]
    image, labels, meta = load_case(case)
    assert image.shape == (1, *labels.shape) and set(np.unique(labels)) == {0, 1, 2}
    small, spacing = resample(image, meta.spacing, (2.0, 2.0, 2.0), channel_axis=0)
    small_labels, _ = resample(labels, meta.spacing, (2.0, 2.0, 2.0), order=0)
    assert small.shape == (1, *small_labels.shape)
    assert small_labels.shape == tuple(int(np.floor(n / 2 + 0.5)) for n in labels.shape)
    assert set(np.unique(small_labels)) <= {0, 1, 2}


# --------------------------------------------------------------------------- patches


def test_patch_sampler_is_deterministic_under_a_seed():
    labels = np.zeros((60, 50), np.int64)
    labels[40:45, 5:9] = 1
    image = np.random.default_rng(0).random((1, 60, 50))

    def draws(seed):
        sampler = PatchSampler((16, 16), seed=seed)
        return [sampler.sample(image, labels) for _ in range(20)]

    first, again, other = draws(3), draws(3), draws(4)
    for (a, la), (b, lb) in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(la, lb)
    assert any(not np.array_equal(a, c) for (a, _), (c, _) in zip(first, other, strict=True))
    # an explicit rng overrides the sampler's own generator
    s1 = PatchSampler((16, 16), seed=1).origin(labels, rng=np.random.default_rng(5))
    s2 = PatchSampler((16, 16), seed=2).origin(labels, rng=np.random.default_rng(5))
    assert s1 == s2


def test_patch_sampler_foreground_fraction_statistics():
    labels = np.zeros((120, 120), np.int64)
    labels[60, 60] = 1  # one foreground pixel
    sampler = PatchSampler((16, 16), foreground_fraction=1 / 3, seed=0)
    n = 3000
    hits = sum(
        labels[tuple(slice(o, o + 16) for o in sampler.origin(labels))].any() for _ in range(n)
    )
    # a random patch covers the pixel in 16*16 of its 105*105 positions
    q = 16 * 16 / 105**2
    p = 1 / 3 + (2 / 3) * q
    assert abs(hits / n - p) < 5 * np.sqrt(p * (1 - p) / n)


def test_patch_sampler_centres_on_foreground_and_stays_inside():
    labels = np.zeros((200, 200), np.int64)
    labels[100, 100] = 2
    sampler = PatchSampler((16, 16), seed=0)
    assert sampler.origin(labels, foreground=True) == (92, 92)
    labels[:] = 0
    labels[2, 198] = 1
    assert sampler.origin(labels, foreground=True) == (0, 184)


def test_patch_sampler_picks_classes_uniformly_and_skips_ignore():
    labels = np.zeros((100, 100), np.int64)
    labels[:, 50:] = 1  # a large class
    labels[10, 10] = 2  # a one-pixel class: chosen half the time, not 1 in 5000
    sampler = PatchSampler((8, 8), seed=0)
    n = 2000
    small = sum(
        labels[tuple(slice(o, o + 8) for o in sampler.origin(labels, foreground=True))].max() == 2
        for _ in range(n)
    )
    assert abs(small / n - 0.5) < 5 * np.sqrt(0.25 / n)
    only_void = np.full((30, 30), 11, np.int64)
    only_void[:5] = 0
    ignoring = PatchSampler((8, 8), ignore_index=11, seed=0)
    # void is no foreground: "foreground" draws fall back to uniform origins
    origins = {ignoring.origin(only_void, foreground=True) for _ in range(50)}
    assert len(origins) > 10


def test_patch_sampler_pads_small_images():
    image = np.arange(35.0).reshape(1, 5, 7) + 1
    labels = np.ones((5, 7), np.int64)
    patch, lab = PatchSampler((8, 8), ignore_index=11, seed=0).sample(image, labels)
    np.testing.assert_array_equal(patch, np.pad(image, [(0, 0), (1, 2), (0, 1)]))
    np.testing.assert_array_equal(lab, np.pad(labels, [(1, 2), (0, 1)], constant_values=11))
    _, lab0 = PatchSampler((8, 8), seed=0).sample(image, labels)
    assert set(np.unique(lab0)) == {0, 1}  # without ignore_index the padding is background


def test_patch_sampler_3d():
    labels = np.zeros((20, 30, 10), np.int64)
    labels[5, 25, 3] = 1
    sampler = PatchSampler((8, 8, 16), seed=0)
    image, lab = sampler.sample(np.zeros((1, 20, 30, 10)), labels, foreground=True)
    assert image.shape == (1, 8, 8, 16) and lab.shape == (8, 8, 16)
    assert lab.sum() == 1


@pytest.mark.parametrize(
    "args, kwargs",
    [(((8,),), {}), (((8, 0),), {}), (((8, 8.5),), {}), (((8, 8),), {"foreground_fraction": 1.5})],
)
def test_patch_sampler_rejects(args, kwargs):
    with pytest.raises(ValueError):
        PatchSampler(*args, **kwargs)


# --------------------------------------------------------------------------- dataset


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    for i, shape in enumerate([(20, 30), (33, 17)]):
        lab = np.zeros(shape, bool)
        lab[5:10, 5:12] = True
        write_case(tmp_path, f"grey{i}", rng.integers(0, 255, shape, dtype=np.uint8), lab)
    lab = np.zeros((24, 24), bool)
    lab[2:4] = True
    write_case(tmp_path, "rgb", rng.integers(0, 255, (24, 24, 3), dtype=np.uint8), lab)
    return tmp_path


def test_load_case_label_mappings(folder):
    case = next(c for c in find_cases(folder) if c.name == "grey0")
    image, labels, _ = load_case(case)
    assert image.shape == (1, 20, 30) and image.dtype == np.uint8
    assert labels.dtype == np.int64 and set(np.unique(labels)) == {0, 1}
    _, raw, _ = load_case(case, label_mapping=None)
    assert set(np.unique(raw)) == {0, 255}
    _, mapped, _ = load_case(case, label_mapping={255: 4})
    np.testing.assert_array_equal(mapped, labels * 4)
    with pytest.raises(ValueError, match="label_mapping"):
        load_case(case, label_mapping="binary")


def test_dataset_whole_images_and_pad_collate(folder):
    cases = find_cases(folder)
    ds = SegmentationDataset(cases, normalize="zscore")
    assert len(ds) == 3
    items = [ds[i] for i in range(3)]
    assert [tuple(it["image"].shape) for it in items] == [(1, 20, 30), (1, 33, 17), (3, 24, 24)]
    for it in items:
        assert it["image"].dtype == torch.float32 and it["label"].dtype == torch.int64
        mean = it["image"].mean(dim=(1, 2))
        torch.testing.assert_close(mean, torch.zeros_like(mean), atol=1e-5, rtol=0)
    grey = [items[0], items[1]]
    batch = pad_collate(16, label_value=-1)(grey)
    assert tuple(batch["image"].shape) == (2, 1, 48, 32)
    assert tuple(batch["label"].shape) == (2, 48, 32)
    assert batch["case"] == ["grey0", "grey1"] and batch["shape"].tolist() == [[20, 30], [33, 17]]
    torch.testing.assert_close(batch["image"][1, :, :33, :17], items[1]["image"])
    assert (batch["label"][0, 20:] == -1).all() and (batch["image"][0, :, 20:] == 0).all()
    assert torch.equal(batch["label"][0, :20, :30], items[0]["label"])
    with pytest.raises(ValueError, match="channels"):
        pad_collate()(items)  # grey and RGB do not stack
    with pytest.raises(IndexError):
        ds[3]


def test_dataset_pixel_weight_follows_the_augmented_labels(folder, tmp_path_factory):
    """The weight is computed on each item's final labels (patch cut and augmented), and
    pad_collate gives padding no weight."""
    rng = np.random.default_rng(1)
    cells = np.zeros((40, 40), bool)
    for r in range(2, 40, 9):
        for c in range(3, 40, 8):
            cells[r : r + 6, c : c + 6] = True  # a grid of squares 2-3 px apart
    root = tmp_path_factory.mktemp("cells")
    write_case(root, "a", rng.integers(0, 255, (40, 40), dtype=np.uint8), cells)
    aug = Augmenter(2, p_affine=1.0, p_elastic=1.0)
    weigh = functools.partial(label_weight_map, w0=5.0, sigma=2.0, class_balance=False)
    ds = SegmentationDataset(
        find_cases(root), patch_size=(24, 24), augment=aug, pixel_weight=weigh, samples_per_epoch=4
    )
    for i in range(4):
        item = ds[i]
        assert item["weight"].dtype == torch.float32 and item["weight"].max() > 2
        expected = weigh(item["label"].numpy())
        np.testing.assert_array_equal(item["weight"].numpy(), expected)
    cases = find_cases(folder)
    assert "weight" not in SegmentationDataset(cases)[0]
    whole = SegmentationDataset(cases, pixel_weight=lambda labels: np.full(labels.shape, 2.0))
    batch = pad_collate(16)([whole[0], whole[1]])
    assert tuple(batch["weight"].shape) == (2, 48, 32)
    assert (batch["weight"][0, :20, :30] == 2).all() and (batch["weight"][0, 20:] == 0).all()
    with pytest.raises(TypeError, match="pixel_weight must be callable, got float"):
        SegmentationDataset(cases, pixel_weight=1.0)
    bad = SegmentationDataset(cases, pixel_weight=lambda labels: np.ones(3))
    with pytest.raises(ValueError, match=r"pixel_weight returned shape \(3,\) .* \(case grey0\)"):
        bad[0]


def test_dataset_cache(folder):
    cases = find_cases(folder)
    cached = SegmentationDataset(cases, cache=True)
    assert cached.load(0)[0] is cached.load(0)[0]
    uncached = SegmentationDataset(cases, cache=False)
    assert uncached.load(0)[0] is not uncached.load(0)[0]
    # one 20x30 case is 2400 B of float32 + 4800 B of int64; a 0 MiB cache holds nothing,
    # and the LRU keeps the limit
    tiny = SegmentationDataset(cases, cache=0)
    assert tiny.load(0)[0] is not tiny.load(0)[0]
    bounded = SegmentationDataset(cases, cache=1)
    bounded._cache_limit = 7200 + 3  # room for case 0 only
    first = bounded.load(0)[0]
    bounded.load(1)
    assert list(bounded._cache) == [1] and bounded._cache_bytes <= bounded._cache_limit
    assert bounded.load(0)[0] is not first  # evicted, read again


@pytest.fixture
def slices(tmp_path):
    """Four 16x16 slices of which only "s2" holds foreground (class 1); "s3" holds only the
    ignore label 5."""
    rng = np.random.default_rng(1)
    for i in range(4):
        lab = np.zeros((16, 16), np.uint8)
        if i == 2:
            lab[6:9, 6:9] = 1
        if i == 3:
            lab[:2] = 5
        write_case(tmp_path, f"s{i}", rng.integers(0, 255, (16, 16), dtype=np.uint8), lab)
    return find_cases(tmp_path)


def _drawn_cases(ds, n):
    return [ds[k % len(ds)]["case"] for k in range(n)]


def test_dataset_foreground_draws_move_to_a_case_that_holds_foreground(slices):
    # whole-slice patches: without the move, oversampling could not change a single patch
    kw = dict(patch_size=(16, 16), label_mapping=None, ignore_index=5, samples_per_epoch=400)
    always = SegmentationDataset(slices, foreground_fraction=1.0, **kw)
    assert set(_drawn_cases(always, 400)) == {"s2"}
    assert always.foreground_cases == [2]  # found by reading every case (ignore label apart)
    never = SegmentationDataset(slices, foreground_fraction=0.0, **kw)
    assert _drawn_cases(never, 8) == ["s0", "s1", "s2", "s3"] * 2
    kept = SegmentationDataset(slices, foreground_fraction=1.0, foreground_cases=[], **kw)
    assert _drawn_cases(kept, 8) == ["s0", "s1", "s2", "s3"] * 2
    # half the draws are foreground; of the other half, one case in four is s2: 0.625
    half = SegmentationDataset(slices, foreground_fraction=0.5, seed=3, **kw)
    share = np.mean([c == "s2" for c in _drawn_cases(half, 4000)])
    assert abs(share - 0.625) < 0.03, share  # binomial sd 0.008
    # the cases found by reading equal the cases given (the trainer's survey passes them)
    given = SegmentationDataset(slices, foreground_fraction=0.5, seed=3, foreground_cases=[2], **kw)
    found = SegmentationDataset(slices, foreground_fraction=0.5, seed=3, **kw)
    assert _drawn_cases(given, 400) == _drawn_cases(found, 400)


def test_dataset_patches_unchanged_where_every_case_holds_foreground(folder):
    # the dataset draws the foreground coin itself; the random stream must be the sampler's
    cases = find_cases(folder)
    ds = SegmentationDataset(cases, patch_size=(12, 12), samples_per_epoch=30, seed=4)
    rng = np.random.default_rng(4)
    sampler = PatchSampler((12, 12))
    for k in range(30):
        image, labels = ds.load(k % len(cases))
        want_image, want_labels = sampler.sample(image, labels, rng=rng)
        item = ds[k]
        np.testing.assert_array_equal(item["image"].numpy(), want_image)
        np.testing.assert_array_equal(item["label"].numpy(), want_labels)
    assert ds.foreground_cases is None  # never needed: nothing was read beyond the draws


def test_dataset_rejects_foreground_cases_outside_the_cases(folder):
    with pytest.raises(ValueError, match=r"foreground_cases must index the 3 cases, got \[3\]"):
        SegmentationDataset(find_cases(folder), foreground_cases=[0, 3])


def test_dataset_3d_patches_on_hippocampus():
    cases = find_cases(need("hippocampus"))[:2]
    ds = SegmentationDataset(
        cases,
        patch_size=(24, 24, 24),
        samples_per_epoch=6,
        augment=Augmenter(3, p_elastic=0.5),
        foreground_fraction=1.0,
        target_spacing=(1.5, 1.5, 1.5),
        seed=0,
    )
    assert len(ds) == 6
    for i in range(6):
        item = ds[i]
        assert tuple(item["image"].shape) == (1, 24, 24, 24)
        assert tuple(item["label"].shape) == (24, 24, 24)
        assert set(item["label"].unique().tolist()) <= {0, 1, 2}
        assert item["label"].max() > 0  # every patch centred on foreground
        assert item["case"] == cases[i % 2].name


def _collect(ds, *, seed, init=worker_init_fn, workers=2):
    torch.manual_seed(seed)
    loader = DataLoader(ds, batch_size=2, num_workers=workers, worker_init_fn=init)
    return [batch for batch in loader]


def test_dataloader_workers_on_isbi_patches():
    case = find_cases(need("isbi2012"))[0]
    # one case, so any difference between items comes from the random draws
    ds = SegmentationDataset(
        [case], patch_size=(96, 96), samples_per_epoch=8, augment=Augmenter(2), seed=0
    )
    batches = _collect(ds, seed=0)
    assert len(batches) == 4
    for b in batches:
        assert tuple(b["image"].shape) == (2, 1, 96, 96) and b["image"].dtype == torch.float32
        assert tuple(b["label"].shape) == (2, 96, 96) and b["label"].dtype == torch.int64
        assert set(b["label"].unique().tolist()) <= {0, 1}
    # batches 0 and 1 come from workers 0 and 1: their first draws must differ
    assert not torch.equal(batches[0]["image"], batches[1]["image"])
    again = _collect(ds, seed=0)
    for a, b in zip(batches, again, strict=True):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    other = _collect(ds, seed=1)
    assert not torch.equal(batches[0]["image"], other[0]["image"])
    # without the init function both workers copy the same generator: identical draws
    same = _collect(ds, seed=0, init=None)
    assert torch.equal(same[0]["image"], same[1]["image"])


def test_worker_init_fn_outside_a_worker_is_a_no_op():
    worker_init_fn(0)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"normalize": "robust"}, ValueError),
        ({"cache": -1}, ValueError),
        ({"cache": "lots"}, ValueError),
        ({"samples_per_epoch": 0, "patch_size": (8, 8)}, ValueError),
        ({"augment": 3}, TypeError),
        ({"label_mapping": "binary"}, ValueError),
    ],
)
def test_dataset_rejects(folder, kwargs, error):
    with pytest.raises(error):
        SegmentationDataset(find_cases(folder), **kwargs)


def test_dataset_rejects_empty_cases():
    with pytest.raises(ValueError, match="cases"):
        SegmentationDataset([])
    assert CaseFiles("a", Path("a.png"), Path("b.png")).name == "a"


def test_docstring_examples():
    import doctest

    from segloc.engine import data

    result = doctest.testmod(data, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 8 and result.failed == 0
