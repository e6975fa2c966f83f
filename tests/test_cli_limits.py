"""The command line's exit codes for system errors, and its reading flags (issue 19):
``--max-voxels``, ``--max-mib`` and ``--untrusted`` on every command that reads images.

Exit 2 is bad input (a file segloc refuses, a wrong value); exit 1 is the system refusing
(an ``OSError`` with an errno), one line naming the path, or a data worker that died."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from segloc import io
from segloc.cli import main
from segloc.io import limits as io_limits

SRC = Path(__file__).resolve().parents[1] / "src"


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 60, (32, 32)).astype(np.uint8)
    image[8:24, 10:30] = 200
    io.write_image(tmp_path / "a.png", image)
    io.write_mask(tmp_path / "a_t.png", image > 100)
    return tmp_path


# --------------------------------------------------------------------------- exit codes


def test_permission_denied_is_exit_1_naming_the_path(images, capsys):
    folder = images / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as root: a 0500 folder is writable (see the ENOTDIR test)")
        code, _, err = run(
            capsys, "segment", images / "a.png", "--method", "otsu", "-o", folder / "o.png"
        )
    finally:
        folder.chmod(0o700)
    assert code == 1, err
    assert str(folder) in err and "Permission denied" in err and len(err.splitlines()) == 1


def test_an_output_under_a_regular_file_is_exit_1_naming_the_path(images, capsys):
    """ENOTDIR: the system's refusal, whoever runs the test (root writes into 0500 folders)."""
    (images / "plain").write_text("a file, not a folder")
    target = images / "plain" / "sub" / "o.png"
    code, _, err = run(capsys, "segment", images / "a.png", "--method", "otsu", "-o", target)
    assert code == 1, err
    assert err.strip() == f"segloc segment: error: {images / 'plain' / 'sub'}: Not a directory"


def test_a_full_disk_is_exit_1_naming_the_file_being_written(images, tmp_path, capsys, monkeypatch):
    from segloc.io import write

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")  # as write() raises it: no name

    monkeypatch.setattr(write, "_save_pillow", full)
    out = tmp_path / "out" / "o.png"
    code, _, err = run(capsys, "segment", images / "a.png", "--method", "otsu", "-o", out)
    assert code == 1, err
    assert f"{out.parent}: No space left on device" in err and "Errno" not in err
    assert not out.parent.exists() or not list(out.parent.iterdir())


def test_a_dead_data_worker_is_exit_1(images, capsys, monkeypatch):
    """``engine.run`` raises ChildProcessError for a killed worker (tests/test_faults.py
    kills a real one); the command line reports it as a failure, not as bad input."""
    import segloc.engine.train as engine_train

    def worker_died(cfg, **kwargs):
        raise ChildProcessError(
            "a data-loading worker died in epoch 2 (DataLoader worker (pid 1) is killed by "
            "signal: Killed.); the run folder keeps the last epoch: continue with --resume"
        )

    monkeypatch.setattr(engine_train, "train", worker_died)
    # --no-plan: this fixture's few pairs are no dataset to plan; the error mapping is tested
    code, _, err = run(capsys, "train", "--data", images, "--epochs", "1", "--no-plan", "-q")
    assert code == 1, err
    assert err.startswith("segloc train: error: a data-loading worker died in epoch 2")
    assert len(err.splitlines()) == 1


def test_a_missing_input_is_bad_input_exit_2(images, capsys):
    code, _, err = run(
        capsys, "segment", images / "missing.png", "--method", "otsu", "-o", images / "o.png"
    )
    assert code == 2 and "missing.png: no such file or directory" in err
    code, _, err = run(capsys, "train", "--config", images / "missing.yaml")
    assert code == 2 and "missing.yaml: no such file (the training config)" in err


# --------------------------------------------------------------------------- --max-voxels


@pytest.mark.parametrize(
    "argv",
    [
        ["segment", "{d}/a.png", "--method", "otsu", "-o", "{d}/o.png"],
        ["boxes", "{d}/a_t.png"],
        ["info", "{d}/a.png"],
        ["evaluate", "{d}/a_t.png", "{d}/a_t.png"],
        ["localize", "{d}/a.png", "--method", "from-mask", "-o", "{d}/b.json"],
    ],
)
def test_max_voxels_refuses_a_larger_image_naming_it_and_the_limit(images, capsys, argv):
    code, _, err = run(capsys, *[a.format(d=images) for a in argv], "--max-voxels", "100")
    assert code == 2, err
    named = Path(err.split(": error: ")[1].split(":")[0])
    assert named.parent == images and named.name in ("a.png", "a_t.png")
    assert "declares 1,024 voxels" in err and "limit of 100 voxels" in err
    assert "--max-voxels" in err and len(err.splitlines()) == 1
    assert not (images / "o.png").exists() and not (images / "b.json").exists()
    code, _, err = run(capsys, *[a.format(d=images) for a in argv], "--max-voxels", "1024")
    assert code == 0, err


def test_max_voxels_on_predict_evaluate_model_compare_train_and_dataset_check(
    images, tmp_path, capsys
):
    from test_cli_errors import tiny_run

    model = tiny_run(tmp_path / "run")
    data = tmp_path / "d"
    for i in range(3):
        io.write_image(data / "images" / f"c{i}.png", np.zeros((32, 32), np.uint8))
        io.write_mask(data / "labels" / f"c{i}.png", np.eye(32, dtype=bool))
    for argv in (
        ["predict", "--model", model, images / "a.png", "-o", tmp_path / "p", "-q"],
        ["evaluate", "--model", model, "--data", data, "-o", tmp_path / "e", "-q"],
        ["compare", "--data", data, "--methods", "otsu", "-o", tmp_path / "c", "-q"],
        ["train", "--data", data, "--epochs", "1", "--out", tmp_path / "r", "-q"],
    ):
        code, _, err = run(capsys, *argv, "--max-voxels", "100")
        assert code == 2 and "limit of 100 voxels" in err, (argv[0], err)
    for name in ("p", "e", "c", "r"):
        assert not (tmp_path / name).exists()
    code, out, _ = run(capsys, "dataset", "check", data, "--max-voxels", "100")
    assert code == 2 and "limit of 100 voxels" in out


def test_max_mib_refuses_an_array_above_it(tmp_path, capsys):
    io.write_image(tmp_path / "big.tif", np.zeros((1024, 1024), np.uint16))  # 2 MiB
    code, _, err = run(capsys, "info", tmp_path / "big.tif", "--max-mib", "1")
    assert code == 2 and "big.tif: declares 2 MiB" in err and "--max-mib" in err
    code, _, err = run(capsys, "info", tmp_path / "big.tif", "--max-mib", "2")
    assert code == 0, err


@pytest.mark.parametrize(
    ("value", "message"),
    [("0", "must be >= 1"), ("-5", "must be >= 1"), ("abc", "whole number"), ("1.5", "whole")],
)
def test_read_limits_must_be_positive_whole_numbers(images, capsys, value, message):
    for flag in ("--max-voxels", "--max-mib"):
        with pytest.raises(SystemExit) as stop:
            main(["info", str(images / "a.png"), flag, value])
        err = capsys.readouterr().err
        assert stop.value.code == 2 and f"argument {flag}: " in err and message in err, err


def test_the_process_defaults_are_put_back(images, capsys):
    before = io.default_limits().max_voxels
    code, _, _ = run(capsys, "info", images / "a.png", "--max-voxels", "100", "--untrusted")
    assert code == 2
    assert io.default_limits().max_voxels == before == io_limits.VOXEL_LIMIT
    assert io.default_untrusted() is False


def test_dask_refuses_read_flags_it_cannot_pass_on(images, tmp_path, capsys):
    code, _, err = run(
        capsys,
        "predict",
        "--model",
        tmp_path,
        images / "a.png",
        "-o",
        tmp_path / "p",
        "--dask",
        "local:1",
        "--untrusted",
    )
    assert code == 2 and "--dask workers do not take --untrusted" in err


# --------------------------------------------------------------------------- --untrusted


def test_untrusted_reads_every_file_in_the_sandbox(images, capsys, monkeypatch):
    from segloc.io import sandbox

    children = []
    real_run = subprocess.run

    def spy(cmd, *args, **kwargs):
        if cmd[1:] == ["-m", "segloc.io.sandbox"]:
            children.append(kwargs["input"])
        return real_run(cmd, *args, **kwargs)

    monkeypatch.setattr(sandbox.subprocess, "run", spy)
    code, out, err = run(
        capsys, "segment", images / "a.png", "--method", "otsu", "-o", images / "o.png"
    )
    assert code == 0 and children == []
    code, out, err = run(
        capsys,
        "segment",
        images / "a.png",
        "--method",
        "otsu",
        "-o",
        images / "o2.png",
        "--untrusted",
    )
    assert code == 0, err
    assert len(children) == 1 and str((images / "a.png").resolve()) in children[0]
    assert np.array_equal(io.read_mask(images / "o.png")[0], io.read_mask(images / "o2.png")[0])
    children.clear()
    code, _, err = run(capsys, "evaluate", images / "a_t.png", images / "a_t.png", "--untrusted")
    assert code == 0 and len(children) == 2, err  # prediction and truth


CRASHING_DECODER = textwrap.dedent(
    """
    import os, signal
    import segloc.io.read as r
    _orig = r._read
    def _read(path, opts):
        if path.name.startswith("crash"):
            os.kill(os.getpid(), signal.SIGSEGV)
        return _orig(path, opts)
    r._read = _read
    """
)


def test_untrusted_survives_a_decoder_that_crashes_the_interpreter(tmp_path):
    """A decoder that kills its process (SIGSEGV, here injected by a ``sitecustomize``):
    without --untrusted segloc dies with it; with it, one line and exit 2."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(CRASHING_DECODER)
    io.write_image(tmp_path / "crash.png", np.zeros((8, 8), np.uint8))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(hooks), str(SRC)]),
        "OMP_NUM_THREADS": "1",
    }
    argv = [sys.executable, "-m", "segloc.cli", "info", str(tmp_path / "crash.png")]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGSEGV
    done = subprocess.run([*argv, "--untrusted"], env=env, capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (
        f"segloc info: error: {tmp_path / 'crash.png'}: the decoder crashed (SIGSEGV) "
        "reading it in the sandbox"
    )
