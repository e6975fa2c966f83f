"""Classical methods block by block (segloc.classical.blocks) and chunked files (segloc.io.chunked).

Oracles: the in-memory functions on the whole image (thresholds, k-means, local threshold),
scipy.ndimage.label (stitched components, compared up to a one-to-one relabelling as
dask-image's tests do, and here also numbering included), and segloc.instances boxes.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from scipy import ndimage as ndi

from segloc.classical import segment, threshold
from segloc.classical.blocks import (
    block_histogram,
    kmeans_blocks,
    label_block,
    label_blocks,
    segment_blocks,
    stitch,
    threshold_blocks,
)
from segloc.classical.clustering import kmeans_intensity
from segloc.instances import instance_boxes
from segloc.io.chunked import ChunkedWriter, block_slices, open_chunked, write_ome_zarr


def one_to_one(a: np.ndarray, b: np.ndarray) -> bool:
    """dask-image's assertion: the two labellings differ by a bijection of the labels."""
    if not np.array_equal(a > 0, b > 0):
        return False
    pairs = np.unique(np.stack([a[a > 0], b[b > 0]]), axis=1)
    return len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))


def images(dtype, shape=(70, 90), seed=0):
    rng = np.random.default_rng(seed)
    x = ndi.gaussian_filter(rng.random(shape), 3) * 1000
    if dtype == np.int16:
        return (x - 500).astype(np.int16)
    if dtype == np.int32:
        return (x * 3000).astype(np.int32)  # spans more than 2**20 levels: binned as floats
    return x.astype(dtype)


# --------------------------------------------------------------------------- thresholds


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("method", ["otsu", "yen", "triangle"])
def test_global_threshold_from_block_histogram_equals_in_memory(dtype, method):
    image = images(dtype)
    whole = getattr(threshold, f"threshold_{method}")(image)
    for chunks in [(70, 90), (16, 16), (7, 90), (70, 11)]:
        assert threshold_blocks(image, method, chunks=chunks) == whole


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32])
def test_multiotsu_and_histogram_counts_from_blocks(dtype):
    image = images(dtype, (40, 30, 20), seed=1)
    whole = threshold.threshold_multiotsu(image, classes=4)
    got = threshold_blocks(image, "multiotsu", classes=4, chunks=(9, 13, 7))
    np.testing.assert_array_equal(got, whole)
    a = block_histogram(image, chunks=(9, 13, 7))
    b = threshold._histogram(image, 256)
    np.testing.assert_array_equal(a.counts, b.counts)


def test_kmeans_from_blocks_equals_kmeans_intensity():
    image = images(np.uint16, (50, 60), seed=2)
    centers, labels = kmeans_blocks(image, 3, chunks=(16, 25))
    ref = kmeans_intensity(image, 3)
    np.testing.assert_array_equal(centers, ref.centers)
    np.testing.assert_array_equal(labels(image), ref.labels)
    with pytest.raises(TypeError, match="integer image"):
        kmeans_blocks(image.astype(np.float32), 3)


@pytest.mark.parametrize(
    "method,opts",
    [("otsu", {}), ("multiotsu", {"classes": 3}), ("kmeans", {"k": 3}),
     ("local", {"block_size": 15, "local_method": "gaussian"}),
     ("local", {"block_size": 9, "local_method": "mean", "offset": 2.0})],
)  # fmt: skip
def test_segment_blocks_writes_what_segment_gives_in_memory(tmp_path, method, opts):
    image = images(np.uint8, (90, 70), seed=3)
    _, out = segment_blocks(image, tmp_path / "m.zarr", method, chunks=(32, 24), **opts)
    got = open_chunked(out)[:]
    ref = segment(image, method, **opts)
    np.testing.assert_array_equal(got, ref.astype(got.dtype))
    assert not (tmp_path / ".m.zarr.partial").exists()


# --------------------------------------------------------------------------- components


def crossing_objects_3d():
    """Objects that cross 1, 2 and 3 block faces of a 2x2x2 grid of 10-voxel blocks."""
    m = np.zeros((20, 20, 20), bool)
    m[8:12, 2:4, 2:4] = True  # crosses the face x0 = 10
    m[8:12, 8:12, 15:17] = True  # crosses two faces (an edge of four blocks)
    m[7:13, 7:13, 7:13] = True  # crosses all three faces (the centre corner of eight blocks)
    m[1:3, 1:3, 1:3] = True  # inside one block
    m[12:19, 15, 3:18] = True  # a plate crossing one face along z
    # touching only diagonally across the corner: joined for connectivity 3 only
    m[9, 17, 9] = m[10, 18, 10] = True
    return m


@pytest.mark.parametrize("connectivity", [1, 2, 3])
@pytest.mark.parametrize("chunks", [(10, 10, 10), (7, 10, 13), (20, 3, 20)])
def test_stitched_labels_equal_in_memory_labels_3d(connectivity, chunks):
    m = crossing_objects_3d()
    stitched, labels = label_blocks(m, connectivity=connectivity, chunks=chunks)
    ref, n = ndi.label(m, ndi.generate_binary_structure(3, connectivity))
    assert stitched.count == n
    assert one_to_one(labels, ref)
    np.testing.assert_array_equal(labels, ref)  # numbering included: raster order
    # boxes in global coordinates, as segloc.instances computes them on the whole map
    ids, boxes = instance_boxes(ref)
    np.testing.assert_array_equal(stitched.xyxy(), boxes)
    np.testing.assert_array_equal(stitched.sizes, np.bincount(ref.ravel())[1:])


@pytest.mark.parametrize("connectivity", [1, 2])
def test_stitched_labels_2d_random_blobs(connectivity):
    rng = np.random.default_rng(4)
    m = ndi.gaussian_filter(rng.random((130, 110)), 2) > 0.52
    ref, n = ndi.label(m, ndi.generate_binary_structure(2, connectivity))
    for chunks in [(13, 17), (64, 110), (130, 9)]:
        stitched, labels = label_blocks(m, connectivity=connectivity, chunks=chunks)
        assert stitched.count == n and one_to_one(labels, ref)
        np.testing.assert_array_equal(labels, ref)


def test_block_completion_order_changes_no_label():
    m = crossing_objects_3d()
    shape, chunks = m.shape, (7, 10, 13)
    structure = ndi.generate_binary_structure(3, 1)
    local = np.zeros(shape, np.int32)
    objects = []
    for idx, sl in block_slices(shape, chunks):
        lab, obj = label_block(m[sl], [s.start for s in sl], shape, structure, idx)
        local[sl] = lab
        objects.append(obj)
    ref = stitch(objects, lambda s: local[s], shape, chunks, structure)
    for seed in range(3):
        random.Random(seed).shuffle(objects)
        other = stitch(objects, lambda s: local[s], shape, chunks, structure)
        assert other.count == ref.count
        for idx in ref.luts:
            np.testing.assert_array_equal(other.luts[idx], ref.luts[idx])


def test_label_blocks_to_zarr(tmp_path):
    m = crossing_objects_3d()
    _, out = label_blocks(m, tmp_path / "lab.zarr", chunks=(10, 10, 10))
    ref, _ = ndi.label(m)
    np.testing.assert_array_equal(open_chunked(out)[:], ref)


# --------------------------------------------------------------------------- files


@pytest.mark.parametrize("name", ["a.zarr", "a.ome.zarr", "a.tif", "a.nii"])
def test_chunked_writer_round_trip(tmp_path, name):
    a = np.random.default_rng(5).integers(0, 255, (70, 90)).astype(np.uint8)
    w = ChunkedWriter(tmp_path / name, a.shape, a.dtype, (32, 32))
    for _, sl in block_slices(a.shape, (32, 32)):
        w.array[sl] = a[sl]
    assert not (tmp_path / name).exists()  # nothing visible until commit
    out = w.commit()
    with open_chunked(out) as image:
        assert image.shape == a.shape
        np.testing.assert_array_equal(image[5:60, 7:80], a[5:60, 7:80])


def test_ome_zarr_levels_and_errors(tmp_path):
    from segloc.io import ImageReadError

    a = np.arange(64 * 48, dtype=np.uint16).reshape(64, 48)
    out = write_ome_zarr(tmp_path / "i.ome.zarr", a, chunks=(16, 16), levels=3, spacing=(0.5, 0.5))
    assert open_chunked(out).meta.header["levels"] == 3
    lvl1 = open_chunked(out, level=1)
    assert lvl1.shape == (32, 24) and lvl1.meta.spacing == (1.0, 1.0)
    np.testing.assert_array_equal(lvl1[:], a.reshape(32, 2, 24, 2).mean((1, 3)).round())
    with pytest.raises(ImageReadError, match="level 5"):
        open_chunked(out, level=5)
    with pytest.raises(ImageReadError, match="no such file"):
        open_chunked(tmp_path / "missing.zarr")
    with pytest.raises(ImageReadError, match="no block-wise reader"):
        (tmp_path / "x.png").write_bytes(b"")
        open_chunked(tmp_path / "x.png")
