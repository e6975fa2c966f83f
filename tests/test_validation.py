import os
import stat

import numpy as np
import pytest

from segloc import _validation as v
from segloc import io

U8 = np.uint8


@pytest.mark.parametrize(
    ("arr", "kwargs", "err", "match"),
    [
        (
            np.zeros((2, 3, 4, 5)),
            {},
            ValueError,
            r"image must be 2D or 3D, got shape \(2, 3, 4, 5\)",
        ),
        (np.zeros((0, 3)), {}, ValueError, "must not be empty"),
        (np.array([[1.0, np.nan]]), {}, ValueError, "NaN or infinite"),
        (np.array([["a"]]), {}, TypeError, "numeric array"),
        (np.zeros(3), {"name": "seeds", "ndim": (2,)}, ValueError, "seeds must be 2D"),
    ],
)
def test_check_image_errors(arr, kwargs, err, match):
    with pytest.raises(err, match=match):
        v.check_image(arr, **kwargs)


def test_check_image_passes_through():
    a = np.ones((3, 4), np.uint16)
    assert v.check_image(a) is a


@pytest.mark.parametrize(
    ("conn", "ndim", "rank"),
    [(4, 2, 1), (8, 2, 2), (1, 2, 1), (2, 2, 2), (6, 3, 1), (18, 3, 2), (26, 3, 3), (3, 3, 3)],
)
def test_check_connectivity(conn, ndim, rank):
    assert v.check_connectivity(conn, ndim) == rank


@pytest.mark.parametrize(("conn", "ndim"), [(6, 2), (8, 3), (0, 2), (3, 2), (5, 3)])
def test_check_connectivity_rejects(conn, ndim):
    with pytest.raises(ValueError, match="connectivity must be one of"):
        v.check_connectivity(conn, ndim)


def test_check_spacing():
    assert v.check_spacing(None, 3) == (1.0, 1.0, 1.0)
    assert v.check_spacing(0.5, 2) == (0.5, 0.5)
    with pytest.raises(ValueError, match="must have 3 values"):
        v.check_spacing((1, 1), 3)
    with pytest.raises(ValueError, match="positive and finite"):
        v.check_spacing((1, 0, 1), 3)


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), v.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
    with v.atomic_path(target) as tmp:
        assert tmp.name.endswith(".txt")  # writers that pick the format by suffix still work
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


@pytest.mark.parametrize("bad", ["1", True, None, [1]])
def test_check_positive_rejects_non_numbers(bad):
    with pytest.raises(TypeError, match="tol must be a number"):
        v.check_positive(bad, name="tol")


def test_check_positive_bounds():
    assert v.check_positive(np.float32(2.0), name="x") == 2.0
    assert v.check_positive(0, name="x", strict=False) == 0
    with pytest.raises(ValueError, match="x must be > 0, got 0"):
        v.check_positive(0, name="x")


# --------------------------------------------------------------------------- atomic writes: modes


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_outputs_honour_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        paths = [
            io.write_image(tmp_path / "a.png", np.zeros((2, 2), U8)),
            io.write_mask(tmp_path / "m.nii.gz", np.zeros((2, 2, 2), bool)),
            io.write_csv(tmp_path / "t.csv", [{"a": 1}]),
        ]
    finally:
        os.umask(old)
    for p in paths:
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask, p


def test_an_existing_output_keeps_its_permissions(tmp_path):
    p = io.write_image(tmp_path / "a.png", np.zeros((2, 2), U8))
    p.chmod(0o640)
    io.write_image(p, np.ones((2, 2), U8))
    assert stat.S_IMODE(p.stat().st_mode) == 0o640
    assert io.read_image(p)[0].tolist() == [[1, 1], [1, 1]]
    assert [q.name for q in tmp_path.iterdir()] == ["a.png"]  # no temporary file left
