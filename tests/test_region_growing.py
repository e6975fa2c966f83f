"""Region growing: tolerance growing, seeded region growing, confidence connected.

Oracles: scikit-image's ``flood`` (one seed, seed reference), SciPy's connected-component
labelling, SimpleITK's ``ConfidenceConnected`` (face connectivity), slow pure-Python
references written here from the documented rules (a deque for tolerance growing, ``heapq``
for Adams & Bischof), and hand-computed cases.
"""

from __future__ import annotations

import heapq
import itertools
import math
import os
import zlib
from collections import deque
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image
from scipy import ndimage as ndi
from skimage.segmentation import flood

from segloc.classical import segment
from segloc.classical.region_growing import (
    confidence_connected,
    region_grow,
    seeded_region_growing,
)

DATA = Path(
    os.environ.get("SEGLOC_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data")
)
ISBI = DATA / "isbi2012" / "images" / "1.png"
HIPPO = DATA / "hippocampus"


def _isbi() -> np.ndarray:
    if not ISBI.exists():
        pytest.skip(f"real data not found: {ISBI}")
    return np.asarray(Image.open(ISBI))


def _hippocampus(n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """First ``n`` (image, label) pairs of the MSD hippocampus volumes."""
    nib = pytest.importorskip("nibabel")
    files = sorted((HIPPO / "images").glob("*.nii.gz"))[:n]
    if not files:
        pytest.skip(f"real data not found: {HIPPO}")
    return [
        (
            np.asanyarray(nib.load(f).dataobj),
            np.asanyarray(nib.load(HIPPO / "labels" / f.name).dataobj).astype(np.int32),
        )
        for f in files
    ]


def _offsets(ndim: int, rank: int) -> list[tuple[int, ...]]:
    """The documented neighbour order: itertools.product over (-1, 0, 1)."""
    return [d for d in itertools.product((-1, 0, 1), repeat=ndim) if 0 < sum(map(abs, d)) <= rank]


def _neighbours(p, shape, offs):
    for d in offs:
        q = tuple(a + b for a, b in zip(p, d, strict=True))
        if all(0 <= c < n for c, n in zip(q, shape, strict=True)):
            yield q


# ----------------------------------------------------------------------------------------------
# slow references


def slow_region_grow(image, seeds, tolerance, rank=1, reference="seed"):
    """Multi-seed breadth-first growing from the documented rules, one pixel at a time."""
    img = np.asarray(image, dtype=np.float64)
    shape = img.shape
    offs = _offsets(img.ndim, rank)
    labels = np.zeros(shape, dtype=np.int32)
    sums, counts, queue = {}, {}, deque()
    for i, s in enumerate(seeds, start=1):
        labels[s] = i
        sums[i], counts[i] = float(img[s]), 1
        queue.append(tuple(s))
    ref = {i: float(img[s]) for i, s in enumerate(seeds, start=1)}
    while queue:
        p = queue.popleft()
        lab = int(labels[p])
        for q in _neighbours(p, shape, offs):
            if labels[q] == 0 and abs(float(img[q]) - ref[lab]) <= tolerance:
                labels[q] = lab
                queue.append(q)
                if reference == "mean":
                    sums[lab] += float(img[q])
                    counts[lab] += 1
                    ref[lab] = sums[lab] / counts[lab]
    return labels


def slow_srg(image, seeds, rank=1, mark_boundaries=False):
    """Adams & Bischof with heapq: list each pixel once with its delta at listing time."""
    img = np.asarray(image, dtype=np.float64)
    shape = img.shape
    offs = _offsets(img.ndim, rank)
    n = len(seeds)
    labels = np.zeros(shape, dtype=np.int64)
    listed = np.zeros(shape, dtype=bool)
    sums = [0.0] * (n + 1)
    counts = [0] * (n + 1)
    for i, s in enumerate(seeds, start=1):
        labels[tuple(s)] = i
        sums[i], counts[i] = float(img[tuple(s)]), 1

    def regions_around(p):
        # {label: delta} over the regions next to p
        out = {}
        for q in _neighbours(p, shape, offs):
            lab = int(labels[q])
            if 1 <= lab <= n:
                out[lab] = abs(float(img[p]) - sums[lab] / counts[lab])
        return out

    heap, counter = [], itertools.count()

    def list_neighbours(p):
        for q in _neighbours(p, shape, offs):
            if labels[q] == 0 and not listed[q]:
                listed[q] = True
                heapq.heappush(heap, (min(regions_around(q).values()), next(counter), q))

    for s in seeds:
        list_neighbours(tuple(s))
    while heap:
        _, _, p = heapq.heappop(heap)
        around = regions_around(p)
        if mark_boundaries and len(around) > 1:
            labels[p] = n + 1
            continue
        lab = min(around, key=lambda k: (around[k], k))
        labels[p] = lab
        sums[lab] += float(img[p])
        counts[lab] += 1
        list_neighbours(p)
    return labels.astype(np.int32)


def sitk_confidence(image, seeds, *, multiplier, iterations, radius):
    """SimpleITK's filter; seeds (row, col[, slice]) become ITK indices (x, y[, z]) reversed."""
    out = sitk.ConfidenceConnected(
        sitk.GetImageFromArray(image),
        seedList=[tuple(int(v) for v in reversed(s)) for s in seeds],
        numberOfIterations=iterations,
        multiplier=multiplier,
        initialNeighborhoodRadius=radius,
        replaceValue=1,
    )
    return sitk.GetArrayFromImage(out).astype(bool)


def _itk_interval(mean, var, mult, seed_values, dtype):
    lower = min(mean - mult * math.sqrt(var), min(seed_values))
    upper = max(mean + mult * math.sqrt(var), max(seed_values))
    if np.issubdtype(dtype, np.integer):
        return math.trunc(max(lower, np.iinfo(dtype).min)), math.trunc(
            min(upper, np.iinfo(dtype).max)
        )
    return dtype.type(lower), dtype.type(upper)


def slow_confidence(image, seeds, *, multiplier, iterations, radius, rank):
    """ITK's steps with SciPy components: the fill is the components of the in-interval mask
    that hold a seed, for any connectivity."""
    img = np.asarray(image)
    values = img.astype(np.float64)
    seed_values = [values[tuple(s)] for s in seeds]
    padded = np.pad(values, radius, mode="edge")  # ITK's zero-flux Neumann border
    boxes = [padded[tuple(slice(c, c + 2 * radius + 1) for c in s)] for s in seeds]
    mean = float(np.mean([b.mean() for b in boxes]))
    allv = np.concatenate([b.ravel() for b in boxes])
    var = (np.sum(allv**2) - mean * mean * allv.size) / (allv.size - 1)
    structure = ndi.generate_binary_structure(img.ndim, rank)

    def fill(lo, hi):
        comp, _ = ndi.label((img >= lo) & (img <= hi), structure=structure)
        ids = {int(comp[tuple(s)]) for s in seeds} - {0}
        return np.isin(comp, list(ids))

    mask = fill(*_itk_interval(mean, var, multiplier, seed_values, img.dtype))
    for _ in range(iterations):
        region = values[mask]
        if region.size < 2 or region.var() == 0:
            break
        mean, var = region.mean(), region.var(ddof=1)
        mask = fill(*_itk_interval(mean, var, multiplier, seed_values, img.dtype))
    return mask


def _random_seeds(rng, shape, n):
    flat = rng.choice(int(np.prod(shape)), size=n, replace=False)
    return [tuple(int(v) for v in np.unravel_index(i, shape)) for i in flat]


def _blocky(rng, shape, dtype, levels=4):
    """Piecewise-constant regions plus noise: region growing has something to find."""
    coarse = rng.integers(0, levels, size=tuple(max(2, s // 5) for s in shape))
    zoom = [s / c for s, c in zip(shape, coarse.shape, strict=True)]
    base = ndi.zoom(coarse, zoom, order=0)[tuple(slice(0, s) for s in shape)] * 40.0 + 50
    image = base + rng.normal(0, 8, shape)
    if np.issubdtype(dtype, np.integer):
        image = np.clip(np.round(image), 0, 255)
    return image.astype(dtype)


# ----------------------------------------------------------------------------------------------
# (a) tolerance growing


@pytest.mark.parametrize(
    ("shape", "connectivity"),
    [
        ((40, 37), 1),
        ((40, 37), 2),
        ((14, 15, 13), 1),
        ((14, 15, 13), 2),
        ((14, 15, 13), 3),
        # thin shapes: no interior pixel, or a single slice whose "interior" must not count
        ((2, 40), 2),
        ((1, 40), 1),
        ((19, 17, 1), 3),
        ((1, 19, 17), 3),
    ],
)
@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64])
def test_region_grow_single_seed_matches_flood(shape, connectivity, dtype):
    rng = np.random.default_rng(zlib.crc32(repr((shape, connectivity, dtype)).encode()))
    image = _blocky(rng, shape, dtype)
    for seed in _random_seeds(rng, shape, 4):
        # integer tolerances for integer images: flood truncates fractional bounds
        tol = float(rng.integers(5, 30)) if dtype == np.uint8 else float(rng.uniform(5, 30))
        got = region_grow(image, [seed], tolerance=tol, connectivity=connectivity)
        want = flood(image, seed, tolerance=tol, connectivity=connectivity)
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, want.astype(np.int32))


@pytest.mark.parametrize(
    ("shape", "connectivity"),
    [((300, 310), 1), ((300, 310), 2), ((40, 41, 42), 1), ((40, 41, 42), 2), ((40, 41, 42), 3)],
)
def test_region_grow_single_seed_spans_match_flood_and_breadth_first(shape, connectivity):
    # one seed takes the span-filling path: noise near the tolerance makes a ragged region of
    # many short spans (the span stack outgrows its first 1024 slots); the breadth-first
    # kernel (two seeds, the second one isolated) must give the same first region
    rng = np.random.default_rng(sum(shape) + connectivity)
    image = rng.normal(0.0, 1.0, shape).astype(np.float32)
    seed = tuple(n // 2 for n in shape)
    image[seed] = 0.0
    corner = (0,) * len(shape)
    image[corner] = 1e6  # accepts nothing but itself
    got = region_grow(image, [seed], tolerance=0.9, connectivity=connectivity)
    want = flood(image, seed, tolerance=0.9, connectivity=connectivity)
    assert 1000 < want.sum() < want.size
    np.testing.assert_array_equal(got, want.astype(np.int32))
    both = region_grow(image, [seed, corner], tolerance=0.9, connectivity=connectivity)
    np.testing.assert_array_equal(both == 1, want)


def test_region_grow_integer_fractional_tolerance_differs_from_flood_as_documented():
    image = np.array([[100, 97, 98, 102, 103, 96]], dtype=np.uint8)
    # flood truncates 97.5 to 97 and admits it; |97 - 100| = 3 > 2.5 here
    assert flood(image, (0, 0), tolerance=2.5).tolist() == [[True, True, True, True, False, False]]
    assert region_grow(image, [(0, 0)], tolerance=2.5).tolist() == [[1, 0, 0, 0, 0, 0]]
    # with floor(tolerance) the two agree
    np.testing.assert_array_equal(
        region_grow(image, [(0, 0)], tolerance=2.5), flood(image, (0, 0), tolerance=2)
    )


@pytest.mark.parametrize("reference", ["seed", "mean"])
@pytest.mark.parametrize(
    ("shape", "connectivity"), [((30, 31), 1), ((30, 31), 2), ((9, 10, 11), 1), ((9, 10, 11), 3)]
)
def test_region_grow_multi_seed_matches_slow_reference(reference, shape, connectivity):
    rng = np.random.default_rng(7)
    for trial in range(3):
        image = _blocky(rng, shape, np.float32 if trial % 2 else np.uint8)
        seeds = _random_seeds(rng, shape, 2 + trial)
        tol = float(rng.integers(10, 40))
        got = region_grow(
            image, seeds, tolerance=tol, connectivity=connectivity, reference=reference
        )
        want = slow_region_grow(image, seeds, tol, rank=connectivity, reference=reference)
        np.testing.assert_array_equal(got, want)


def test_region_grow_multi_seed_regions_lie_in_their_floods():
    rng = np.random.default_rng(3)
    image = _blocky(rng, (60, 60), np.float64)
    seeds = _random_seeds(rng, image.shape, 6)
    labels = region_grow(image, seeds, tolerance=20.0)
    assert set(np.unique(labels)) <= set(range(7))
    for i, s in enumerate(seeds, start=1):
        assert labels[s] == i
        inside = labels == i
        assert not (inside & ~flood(image, s, tolerance=20.0)).any()


@pytest.mark.parametrize(
    ("image", "seeds", "tolerance", "connectivity", "want"),
    [
        # equal distance: the earlier seed's frontier is queued first
        ([[5, 5, 5, 5, 5]], [(0, 0), (0, 4)], 0.0, 1, [[1, 1, 1, 2, 2]]),
        ([[5, 5, 5, 5, 5]], [(0, 4), (0, 0)], 0.0, 1, [[2, 2, 1, 1, 1]]),
        # fewer steps wins whatever the seed order; equal steps go to the earlier seed
        ([[5, 5, 5, 5, 5, 5]], [(0, 0), (0, 4)], 0.0, 1, [[1, 1, 1, 2, 2, 2]]),
        ([[5, 5, 5, 5, 5, 5]], [(0, 4), (0, 0)], 0.0, 1, [[2, 2, 1, 1, 1, 1]]),
        # a pixel rejected by one region stays open to the other
        ([[0, 0, 9, 9], [0, 0, 5, 9]], [(0, 0), (0, 3)], 4.0, 1, [[1, 1, 2, 2], [1, 1, 2, 2]]),
        ([[0, 0, 9, 9], [0, 0, 4, 9]], [(0, 0), (0, 3)], 4.0, 1, [[1, 1, 2, 2], [1, 1, 1, 2]]),
        # diagonal steps only with full connectivity
        ([[1, 9], [9, 1]], [(0, 0)], 0.0, 1, [[1, 0], [0, 0]]),
        ([[1, 9], [9, 1]], [(0, 0)], 0.0, 8, [[1, 0], [0, 1]]),
    ],
)
def test_region_grow_hand_cases(image, seeds, tolerance, connectivity, want):
    got = region_grow(np.array(image), seeds, tolerance=tolerance, connectivity=connectivity)
    assert got.tolist() == want


def test_region_grow_mean_follows_a_ramp_the_seed_reference_stops_at():
    ramp = np.arange(20, dtype=np.float64)[None, :].repeat(3, axis=0)
    # from the seed value 0 only columns 0 and 1 are within 1.5; with the running mean,
    # column 2 meets a mean of 0s and 1s (>= 0.5 once a 1 is in) and joins, and the mean of
    # columns 0..2 (about 1) leaves column 3 two away
    seeded = region_grow(ramp, [(1, 0)], tolerance=1.5)
    assert (seeded > 0).tolist() == [[True] * 2 + [False] * 18] * 3
    grown = region_grow(ramp, [(1, 0)], tolerance=1.5, reference="mean")
    assert (grown > 0).tolist() == [[True] * 3 + [False] * 17] * 3
    np.testing.assert_array_equal(grown, slow_region_grow(ramp, [(1, 0)], 1.5, reference="mean"))


@pytest.mark.parametrize("channel_axis", [-1, 2, 0])
def test_region_grow_colour_matches_flood_of_the_colour_distance(channel_axis):
    rng = np.random.default_rng(11)
    rgb = np.stack([_blocky(rng, (50, 45), np.uint8) for _ in range(3)], axis=-1)
    seed = (20, 22)
    tol = 30.0
    # oracle: scikit-image flood of the Euclidean distance to the seed colour, from 0
    dist = np.linalg.norm(rgb.astype(np.float64) - rgb[seed].astype(np.float64), axis=-1)
    want = flood(dist, seed, tolerance=tol)
    image = rgb if channel_axis in (-1, 2) else np.moveaxis(rgb, -1, 0)
    got = region_grow(image, [seed], tolerance=tol, channel_axis=channel_axis)
    assert got.shape == (50, 45)
    np.testing.assert_array_equal(got > 0, want)


def test_region_grow_colour_multi_seed_and_rgba():
    rng = np.random.default_rng(12)
    rgb = np.stack([_blocky(rng, (40, 40), np.uint8) for _ in range(3)], axis=-1)
    rgba = np.concatenate([rgb, np.full((40, 40, 1), 255, np.uint8)], axis=-1)
    seeds = [(5, 5), (30, 30), (5, 35)]
    got = region_grow(rgba, seeds, tolerance=25.0, channel_axis=-1, reference="mean")
    # a constant alpha adds nothing to the distance
    np.testing.assert_array_equal(
        got, region_grow(rgb, seeds, tolerance=25.0, channel_axis=-1, reference="mean")
    )
    # one channel repeated three times is the grey image with tolerance scaled by sqrt(3)
    # (half-integer tolerance: integer grey differences never sit on the bound)
    grey = rgb[..., 0]
    tripled = np.repeat(grey[..., None], 3, axis=-1)
    np.testing.assert_array_equal(
        region_grow(tripled, seeds, tolerance=10.5 * math.sqrt(3), channel_axis=-1),
        region_grow(grey, seeds, tolerance=10.5),
    )


@pytest.mark.slow
def test_region_grow_real_isbi_matches_flood():
    image = _isbi()
    for seed, tol in [((100, 200), 30.0), ((256, 256), 60.0), ((400, 50), 100.0)]:
        got = region_grow(image, [seed], tolerance=tol, connectivity=2)
        np.testing.assert_array_equal(got > 0, flood(image, seed, tolerance=tol, connectivity=2))


@pytest.mark.slow
def test_region_grow_real_hippocampus_matches_flood():
    for image, label in _hippocampus(3):
        inside = np.argwhere(label == 1)
        seed = tuple(int(v) for v in inside[len(inside) // 2])
        tol = float(np.std(image[label > 0]))
        for rank in (1, 3):
            got = region_grow(image, [seed], tolerance=tol, connectivity=rank)
            want = flood(image, seed, tolerance=tol, connectivity=rank)
            np.testing.assert_array_equal(got > 0, want)


# ----------------------------------------------------------------------------------------------
# (b) seeded region growing


def test_srg_hand_computed_row():
    # seeds: col 0 (mean 1) and col 5 (mean 10). The list runs:
    #   col1 delta |2-1| = 1 -> region 1, mean 1.5, lists col2 with |8-1.5| = 6.5
    #   col4 delta |4-10| = 6 -> region 2, mean 7, lists col3 with |9-7| = 2
    #   col3 delta 2 -> region 2, mean 23/3
    #   col2 delta 6.5 (listed by region 1) now touches both: |8-1.5| > |8-23/3| -> region 2
    image = np.array([[1, 2, 8, 9, 4, 10]])
    assert seeded_region_growing(image, [(0, 0), (0, 5)]).tolist() == [[1, 1, 2, 2, 2, 2]]
    marked = seeded_region_growing(image, [(0, 0), (0, 5)], mark_boundaries=True)
    assert marked.tolist() == [[1, 1, 3, 2, 2, 2]]


def test_srg_hand_computed_square():
    # 3x3, seeds (0,0) = 0 -> 1 and (2,2) = 10 -> 2, 4-connectivity; (delta, counter, pixel):
    #   listed: (3, 0, (0,1)), (4, 1, (1,0)) by seed 1; (8, 2, (1,2)), (1, 3, (2,1)) by seed 2
    #   (2,1) -> 2, mean 9.5; lists (4.5, 4, (1,1)) and (8.5, 5, (2,0))
    #   (0,1) -> 1, mean 1.5; lists (4.5, 6, (0,2))
    #   (1,0) -> 1 (touches region 1 only), mean 7/3
    #   (1,1) touches 1 (|5 - 7/3| = 2.67) and 2 (|5 - 9.5| = 4.5): -> 1, mean 3
    #   (0,2) -> 1, mean 3.6; (1,2) touches 1 (|2 - 3.6|) and 2 (|2 - 9.5|): -> 1;
    #   (2,0) touches 1 (|1 - 10/3|) and 2 (|1 - 9.5|): -> 1
    # with boundaries, (1,1), then (1,2) and (2,0) touch both regions when they leave the list
    image = np.array([[0, 3, 6], [4, 5, 2], [1, 9, 10]])
    assert seeded_region_growing(image, [(0, 0), (2, 2)]).tolist() == [
        [1, 1, 1],
        [1, 1, 1],
        [1, 2, 2],
    ]
    marked = seeded_region_growing(image, [(0, 0), (2, 2)], mark_boundaries=True)
    assert marked.tolist() == [[1, 1, 1], [1, 3, 3], [3, 2, 2]]


@pytest.mark.parametrize("mark_boundaries", [False, True])
@pytest.mark.parametrize(
    ("shape", "connectivity"),
    [((12, 13), 1), ((12, 13), 2), ((6, 7, 5), 1), ((6, 7, 5), 2), ((6, 7, 5), 3)],
)
def test_srg_matches_heapq_reference(shape, connectivity, mark_boundaries):
    rng = np.random.default_rng(sum(shape) + connectivity)
    for trial in range(4):
        # integer data has many equal deltas, so it exercises the FIFO tie-break
        image = rng.integers(0, 6, shape) if trial % 2 else rng.normal(0, 1, shape)
        seeds = _random_seeds(rng, shape, 2 + trial)
        got = seeded_region_growing(
            image, seeds, connectivity=connectivity, mark_boundaries=mark_boundaries
        )
        want = slow_srg(image, seeds, rank=connectivity, mark_boundaries=mark_boundaries)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("connectivity", [1, 2])
def test_srg_assigns_every_pixel_in_connected_regions(connectivity):
    rng = np.random.default_rng(5)
    image = _blocky(rng, (64, 64), np.float64)
    seeds = _random_seeds(rng, image.shape, 7)
    labels = seeded_region_growing(image, seeds, connectivity=connectivity)
    assert labels.dtype == np.int32
    assert set(np.unique(labels)) == set(range(1, 8))
    structure = ndi.generate_binary_structure(2, connectivity)
    for i, s in enumerate(seeds, start=1):
        comp, n = ndi.label(labels == i, structure=structure)
        assert n == 1 and comp[s] == 1  # each region is one piece holding its seed


def test_srg_is_independent_of_seed_order_except_labels():
    rng = np.random.default_rng(8)
    for shape in [(40, 41), (10, 11, 12)]:
        image = rng.normal(0, 1, shape) + _blocky(rng, shape, np.float64) / 40
        seeds = _random_seeds(rng, shape, 5)
        # a seed next to another: their common neighbours are listed from both
        row = seeds[0][0] + 1 if seeds[0][0] + 1 < shape[0] else seeds[0][0] - 1
        seeds.append((row,) + seeds[0][1:])
        assert len(set(seeds)) == 6
        base = seeded_region_growing(image, seeds)
        for perm in (np.arange(6)[::-1], rng.permutation(6)):
            got = seeded_region_growing(image, [seeds[i] for i in perm])
            # label perm[k] + 1 in base is label k + 1 in got
            relabel = np.zeros(7, dtype=np.int32)
            relabel[perm + 1] = np.arange(1, 7)
            np.testing.assert_array_equal(got, relabel[base])


def test_srg_unreachable_behind_boundaries_stays_zero():
    # four corner seeds: every edge pixel touches two of them and becomes a boundary, which
    # lists no neighbours, so the centre is never reached
    image = np.array([[0, 1, 2], [3, 4, 5], [6, 7, 8]], dtype=float)
    seeds = [(0, 0), (0, 2), (2, 2), (2, 0)]
    walls = seeded_region_growing(image, seeds, mark_boundaries=True)
    assert walls.tolist() == [[1, 5, 2], [5, 0, 5], [4, 5, 3]]
    assert (seeded_region_growing(image, seeds) > 0).all()


@pytest.mark.slow
def test_srg_real_isbi_crop_matches_heapq_reference():
    image = _isbi()[200:248, 300:348]
    seeds = [(5, 5), (40, 10), (24, 24), (10, 40), (44, 44)]
    for mark in (False, True):
        np.testing.assert_array_equal(
            seeded_region_growing(image, seeds, connectivity=8, mark_boundaries=mark),
            slow_srg(image, seeds, rank=2, mark_boundaries=mark),
        )


@pytest.mark.slow
def test_srg_real_hippocampus_crop_matches_heapq_reference():
    image, label = _hippocampus(1)[0]
    inside = np.argwhere(label > 0)
    lo = inside.min(axis=0)
    crop = tuple(slice(a, a + 10) for a in lo)
    sub, sublabel = image[crop], label[crop]
    seeds = [tuple(int(v) for v in np.argwhere(sublabel == k)[0]) for k in np.unique(sublabel)]
    np.testing.assert_array_equal(
        seeded_region_growing(sub, seeds, connectivity=6), slow_srg(sub, seeds, rank=1)
    )


# ----------------------------------------------------------------------------------------------
# (c) confidence connected


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32, np.float64])
@pytest.mark.parametrize("shape", [(48, 41), (16, 17, 15)])
def test_confidence_matches_simpleitk_random(dtype, shape):
    rng = np.random.default_rng(zlib.crc32(repr((dtype, shape)).encode()))
    for trial in range(6):
        image = _blocky(rng, shape, dtype, levels=3)
        seeds = _random_seeds(rng, shape, 1 + trial % 3)
        kw = dict(
            multiplier=float(rng.uniform(1.0, 3.0)),
            iterations=int(rng.integers(0, 5)),
            radius=int(rng.integers(1 if len(seeds) == 1 else 0, 3)),
        )
        want = sitk_confidence(image, seeds, **kw)
        got = confidence_connected(
            image, seeds, multiplier=kw["multiplier"], iterations=kw["iterations"],
            initial_radius=kw["radius"],
        )  # fmt: skip
        assert got.dtype == np.bool_ and got.shape == shape
        _assert_same_as_itk(got, want, kw["iterations"])


def _assert_same_as_itk(got, want, iterations):
    """Equal masks, except the documented case: a lone seed that ITK's NaN bounds empty."""
    if got.sum() == 1 and want.sum() == 0 and iterations > 0:
        return
    np.testing.assert_array_equal(got, want)


def test_confidence_float32_statistics_are_accumulated_in_float64():
    # regression: with float32 squares the 4th re-estimate's lower bound rounded to the float32
    # just above a pixel at 122.78504 that ITK keeps (found by a 14,400-case sweep)
    rng = np.random.default_rng(135)
    shape = (16, 17, 15)
    for trial in range(4):
        image = _blocky(rng, shape, np.float32, levels=3)
        seeds = _random_seeds(rng, shape, 1 + trial % 3)
        mult = float(rng.uniform(1.0, 3.0))
        rng.integers(0, 5), rng.integers(1 if len(seeds) == 1 else 0, 3)
    want = sitk_confidence(image, seeds, multiplier=mult, iterations=4, radius=2)
    got = confidence_connected(image, seeds, multiplier=mult, iterations=4, initial_radius=2)
    assert want.sum() == 465
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(("shape", "rank"), [((48, 41), 2), ((16, 17, 15), 2), ((16, 17, 15), 3)])
def test_confidence_full_connectivity_matches_component_reference(shape, rank):
    rng = np.random.default_rng(rank * 100 + len(shape))
    for trial in range(4):
        image = _blocky(rng, shape, np.uint8 if trial % 2 else np.float32, levels=3)
        seeds = _random_seeds(rng, shape, 1 + trial % 2)
        kw = dict(multiplier=2.0, iterations=trial, radius=1)
        want = slow_confidence(image, seeds, rank=rank, **kw)
        got = confidence_connected(
            image, seeds, multiplier=2.0, iterations=trial, initial_radius=1, connectivity=rank
        )
        np.testing.assert_array_equal(got, want)
        # the component reference is ITK itself at rank 1
        _assert_same_as_itk(
            slow_confidence(image, seeds, rank=1, **kw), sitk_confidence(image, seeds, **kw), trial
        )


def test_confidence_seed_at_corner_uses_edge_replication():
    # replicated edge: box mean 29/3, variance 0.5 -> [7.9, 11.4]: 7.6 is out.
    # (the 4 pixels inside the image alone would give [7.4, 12.1] and let it in)
    image = np.zeros((6, 6), np.float32)
    image[:2, :2] = [[10, 9], [9, 11]]
    image[2, 0] = 7.6
    want = sitk_confidence(image, [(0, 0)], multiplier=2.5, iterations=0, radius=1)
    got = confidence_connected(image, [(0, 0)], iterations=0)
    np.testing.assert_array_equal(got, want)
    assert got.sum() == 4 and not got[2, 0]


def test_confidence_iterations_refine_the_interval():
    # ITK's NumberOfIterations counts re-estimations after the first fill
    rng = np.random.default_rng(2)
    image = rng.normal(100, 10, (64, 64)).astype(np.float32)
    image[16:48, 16:48] += 40
    sizes = [confidence_connected(image, [(32, 32)], iterations=k).sum() for k in range(4)]
    for k, size in enumerate(sizes):
        assert size == sitk_confidence(image, [(32, 32)], multiplier=2.5, iterations=k,
                                       radius=1).sum()  # fmt: skip
    assert len(set(sizes)) > 1


def test_confidence_single_pixel_region_keeps_the_seed_where_itk_empties_it():
    # the seed's box gives [27, 37] with multiplier 0.1, widened to the seed value 0: only the
    # seed fills; its variance 0/0 makes ITK's bounds NaN and its float mask empty
    image = np.zeros((9, 9), np.float32)
    image[3:6, 3:6] = 100
    image[4, 4] = 0
    for iterations, itk_size in [(0, 1), (1, 0)]:
        itk = sitk_confidence(image, [(4, 4)], multiplier=0.1, iterations=iterations, radius=2)
        assert itk.sum() == itk_size
        got = confidence_connected(
            image, [(4, 4)], multiplier=0.1, iterations=iterations, initial_radius=2
        )
        assert got.sum() == 1 and got[4, 4]


def test_confidence_constant_region_stops_on_zero_variance():
    image = np.full((10, 10), 7, np.uint8)
    image[:, 6:] = 200
    want = sitk_confidence(image, [(5, 2)], multiplier=2.5, iterations=4, radius=1)
    got = confidence_connected(image, [(5, 2)], iterations=4)
    np.testing.assert_array_equal(got, want)
    assert got[:, :6].all() and not got[:, 6:].any()


def test_confidence_bool_and_float16_are_read_as_uint8_and_float32():
    rng = np.random.default_rng(4)
    image = rng.random((30, 30)) > 0.3
    np.testing.assert_array_equal(
        confidence_connected(image, [(3, 3), (20, 20)], initial_radius=0),
        confidence_connected(image.astype(np.uint8), [(3, 3), (20, 20)], initial_radius=0),
    )
    f16 = rng.normal(0, 1, (30, 30)).astype(np.float16)
    np.testing.assert_array_equal(
        confidence_connected(f16, [(10, 10)]),
        sitk_confidence(f16.astype(np.float32), [(10, 10)], multiplier=2.5, iterations=2, radius=1),
    )


@pytest.mark.slow
def test_confidence_real_isbi_matches_simpleitk():
    image = _isbi()
    cases = [
        ([(100, 200)], 2.5, 2, 1),
        ([(256, 256), (300, 100)], 2.0, 4, 2),
        ([(50, 60)], 1.5, 0, 3),
    ]
    for seeds, mult, its, radius in cases:
        want = sitk_confidence(image, seeds, multiplier=mult, iterations=its, radius=radius)
        got = confidence_connected(
            image, seeds, multiplier=mult, iterations=its, initial_radius=radius
        )
        np.testing.assert_array_equal(got, want)


@pytest.mark.slow
def test_confidence_real_hippocampus_matches_simpleitk():
    for image, label in _hippocampus(4):
        inside = np.argwhere(label == 2)
        seeds = [tuple(int(v) for v in inside[len(inside) // 2])]
        for mult, its in [(2.5, 2), (1.5, 4)]:
            want = sitk_confidence(image, seeds, multiplier=mult, iterations=its, radius=1)
            got = confidence_connected(image, seeds, multiplier=mult, iterations=its)
            np.testing.assert_array_equal(got, want)


# ----------------------------------------------------------------------------------------------
# arguments


FUNCS = {
    "region_grow": lambda im, s, **kw: region_grow(im, s, tolerance=1.0, **kw),
    "srg": seeded_region_growing,
    "confidence": confidence_connected,
}


@pytest.mark.parametrize("func", sorted(FUNCS))
@pytest.mark.parametrize(
    ("seeds", "error", "match"),
    [
        ([(2, 9)], ValueError, r"seeds\[0\] = \(2, 9\) is outside the image of shape \(5, 6\)"),
        ([(0, 0), (-1, 2)], ValueError, r"seeds\[1\] = \(-1, 2\) is outside"),
        ([(1, 2, 3)], ValueError, r"seeds\[0\] = \(1, 2, 3\) has 3 coordinates for a 2D image"),
        ([], ValueError, "at least one seed"),
        ((1, 2), TypeError, r"wrap a single seed in a list: \[\(1, 2\)\]"),
        ([(1.5, 2)], TypeError, r"seeds\[0\] = \(1.5, 2\) must hold integer indices"),
        (np.array([[1.0, 2.0]]), TypeError, "integer indices, got dtype float64"),
        (np.array([1, 2]), ValueError, r"\(N, 2\) integer array"),
        ("ab", TypeError, "sequence of index tuples"),
        ([(1, 1), 5], TypeError, r"seeds\[1\] must be an index tuple, got 5"),
    ],
)
def test_bad_seeds(func, seeds, error, match):
    with pytest.raises(error, match=match):
        FUNCS[func](np.zeros((5, 6)), seeds)


@pytest.mark.parametrize("func", ["region_grow", "srg"])
def test_repeated_seed_rejected_for_labels(func):
    with pytest.raises(ValueError, match=r"seeds\[2\] = \(1, 1\) repeats seeds\[0\]"):
        FUNCS[func](np.zeros((5, 6)), [(1, 1), (2, 2), (1, 1)])
    # one region for all seeds: a repeat is harmless
    assert confidence_connected(np.zeros((5, 6)), [(1, 1), (1, 1)]).all()


def test_seed_arrays_and_colour_hint():
    image = np.arange(30.0).reshape(5, 6)
    np.testing.assert_array_equal(
        region_grow(image, np.array([[1, 1], [3, 4]]), tolerance=2.0),
        region_grow(image, [(1, 1), (3, 4)], tolerance=2.0),
    )
    rgb = np.zeros((5, 6, 3), np.uint8)
    with pytest.raises(ValueError, match="a colour image needs channel_axis=-1"):
        region_grow(rgb, [(1, 1)], tolerance=1.0)
    with pytest.raises(ValueError, match="convert a colour image to grey"):
        seeded_region_growing(rgb, [(1, 1)])
    # a genuine 3-slice volume with a 3-coordinate seed is fine
    assert region_grow(rgb, [(1, 1, 1)], tolerance=0.0).all()


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda im: region_grow(im, [(0, 0)], tolerance=-1.0), ValueError,
         "tolerance must be >= 0"),
        (lambda im: region_grow(im, [(0, 0)], tolerance="1"), TypeError,
         "tolerance must be a number"),
        (lambda im: region_grow(im, [(0, 0)], tolerance=1.0, reference="max"), ValueError,
         r"reference must be one of \['seed', 'mean'\], got 'max'"),
        (lambda im: region_grow(im, [(0, 0)], tolerance=1.0, connectivity=6), ValueError,
         r"connectivity must be one of \[4, 8, 1, 2\] for a 2D array, got 6"),
        (lambda im: region_grow(im, [(0, 0)], tolerance=1.0, channel_axis=-1), ValueError,
         "image must be 3D, got shape"),
        (lambda im: region_grow(im[..., None], [(0, 0)], tolerance=1.0, channel_axis=3),
         ValueError, "channel_axis must be in -3..2"),
        (lambda im: seeded_region_growing(im, [(0, 0)], mark_boundaries=1), TypeError,
         "mark_boundaries must be a bool"),
        (lambda im: seeded_region_growing(im, [(0, 0)], connectivity=26), ValueError,
         "connectivity must be one of"),
        (lambda im: confidence_connected(im, [(0, 0)], multiplier=-1.0), ValueError,
         "multiplier must be >= 0"),
        (lambda im: confidence_connected(im, [(0, 0)], multiplier=np.inf), ValueError,
         "multiplier must be finite"),
        (lambda im: confidence_connected(im, [(0, 0)], multiplier=True), TypeError,
         "multiplier must be a number, got bool"),
        (lambda im: confidence_connected(im, [(0, 0)], iterations=-1), ValueError,
         "iterations must be >= 0, got -1"),
        (lambda im: confidence_connected(im, [(0, 0)], iterations=1.0), TypeError,
         "iterations must be an integer, got float"),
        (lambda im: confidence_connected(im, [(0, 0)], initial_radius=0), ValueError,
         "initial_radius must be >= 1 with a single seed"),
        (lambda im: confidence_connected(np.zeros((2, 2, 2, 2)), [(0, 0, 0, 0)]), ValueError,
         "image must be 2D or 3D"),
        (lambda im: confidence_connected(np.array([[np.nan]]), [(0, 0)]), ValueError,
         "NaN or infinite"),
    ],
)  # fmt: skip
def test_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call(np.zeros((5, 6)))


def test_segment_dispatch_reaches_each_method():
    rng = np.random.default_rng(9)
    image = _blocky(rng, (30, 30), np.uint8)
    seeds = [(5, 5), (25, 25)]
    np.testing.assert_array_equal(
        segment(image, "region-grow", seeds=seeds, tolerance=10.0),
        region_grow(image, seeds, tolerance=10.0),
    )
    np.testing.assert_array_equal(
        segment(image, "srg", seeds=seeds), seeded_region_growing(image, seeds)
    )
    np.testing.assert_array_equal(
        segment(image, "confidence", seeds=seeds), confidence_connected(image, seeds)
    )
