"""``io.inspect``: a reader stopped where it would decode pixels. It must agree with
``read_image`` on every valid file of every format, never refuse a file ``read_image``
reads, and refuse at least what the header alone shows; ``io.check_files`` reads whole only
small jobs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import _fuzzing as F
from segloc import io
from segloc.io import CorruptFile, ResourceLimitExceeded, SeglocIOError


def _image_seeds():
    return [s for s in F.seeds() if s.kind in ("image", "mask")]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("inspect")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [(c, c.write(root)) for c in F.cases(_image_seeds())]


def _read(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return io.read_image(path, nonfinite="keep", **F.READ_LIMITS)


def test_inspect_agrees_with_read_image_on_every_valid_file(corpus):
    valid = [(c, p) for c, p in corpus if c.name.endswith("--valid")]
    assert len(valid) >= 20
    for case, path in valid:
        image, meta = _read(path)
        header = io.inspect(path, **F.READ_LIMITS)
        shape = image.shape[:-1] if meta.is_colour else image.shape
        assert header.shape == shape, case.name
        assert header.channels == (image.shape[-1] if meta.is_colour else 1), case.name
        assert header.nbytes == image.nbytes, case.name
        assert header.format == meta.format, case.name


def test_inspect_never_refuses_what_read_image_reads(corpus):
    """Over the whole mutation corpus: inspect refuses a subset of what read_image refuses,
    with typed errors only; and it refuses some (a header alone shows them)."""
    refused_by_inspect = 0
    for case, path in corpus:
        try:
            io.inspect(path, **F.READ_LIMITS)
        except (SeglocIOError, OSError) as exc:
            assert F.is_typed(exc, str(path)), (case.name, exc)
            refused_by_inspect += 1
            with pytest.raises((SeglocIOError, OSError)):
                _read(path)
    assert refused_by_inspect > 100


def test_inspect_decodes_nothing(tmp_path, monkeypatch):
    """Pillow's decoder (``ImageFile.load``) is never called."""
    from PIL import ImageFile

    path = io.write_image(tmp_path / "a.png", np.zeros((8, 8), np.uint8))
    calls = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: calls.append(1))
    assert io.inspect(path).shape == (8, 8) and calls == []


def test_inspect_applies_the_limits(tmp_path):
    path = io.write_image(tmp_path / "a.png", np.zeros((32, 32), np.uint8))
    with pytest.raises(ResourceLimitExceeded, match="a.png: declares 1,024 voxels"):
        io.inspect(path, max_voxels=100)
    old = io.set_default_limits(max_voxels=100)
    try:
        with pytest.raises(ResourceLimitExceeded):
            io.inspect(path)
    finally:
        io.set_default_limits(max_voxels=old[0], max_bytes=old[1])


def test_check_files_reads_small_jobs_whole_and_large_ones_by_header(tmp_path):
    good = io.write_image(tmp_path / "a.png", np.zeros((8, 8), np.uint8))
    nan = np.ones((8, 8), np.float32)
    nan[2, 2] = np.nan
    bad = io.write_image(tmp_path / "nan.tif", nan)
    with pytest.raises(SeglocIOError, match="nan.tif: holds 1 NaN"):
        io.check_files([good, bad])
    headers = io.check_files([good, bad], read_below=0)  # NaN needs the values
    assert [h.shape for h in headers] == [(8, 8), (8, 8)]
    cut = tmp_path / "cut.nii"
    io.write_image(tmp_path / "v.nii", np.zeros((8, 8, 8), np.float32))
    cut.write_bytes((tmp_path / "v.nii").read_bytes()[:600])
    with pytest.raises(CorruptFile, match="cut.nii: cannot read: truncated"):
        io.check_files([good, cut], read_below=0)  # a plain .nii's length is a header fact


def test_check_files_reads_masks_as_masks(tmp_path):
    frac = io.write_image(tmp_path / "m.tif", np.array([[0, 0.5]], np.float32))
    io.check_files([frac])
    with pytest.raises(SeglocIOError, match="m.tif: mask values must be whole numbers"):
        io.check_files([frac], masks=True)
    io.check_files([frac], masks=True, kind="binary")
