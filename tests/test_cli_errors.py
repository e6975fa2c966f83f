"""Bad input on the command line: exit 2, one line naming the file and the problem, nothing
half-written, no input ever overwritten. Each case was found by hand on the code before it
(issue 19's list) and fails there."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from segloc import io
from segloc.cli import main
from segloc.nn import create_model
from segloc.nn.checkpoint import save_checkpoint


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        image = rng.integers(0, 60, (40, 48)).astype(np.uint8)
        image[8:24, 10:30] = 200
        io.write_image(tmp_path / f"{name}.png", image)
        io.write_mask(tmp_path / f"{name}_t.png", image > 100)
    return tmp_path


def tiny_run(folder: Path, **extra) -> Path:
    torch.manual_seed(0)
    kw = {"in_channels": 1, "num_classes": 2, "base_channels": 4, "depth": 2, "padding": "same"}
    meta = {"dims": 2, "in_channels": 1, "num_classes": 2, "patch_size": [32, 32], **extra}
    save_checkpoint(folder / "best.safetensors", "unet", kw, create_model("unet", **kw), extra=meta)
    return folder


# --------------------------------------------------------------------------- inputs never outputs


@pytest.mark.parametrize(
    "argv",
    [
        ["segment", "{d}/a.png", "--method", "otsu", "-o", "{d}/a.png"],
        ["boxes", "{d}/a_t.png", "-o", "{d}/a_t.png"],
        ["localize", "{d}/a.png", "--method", "from-mask", "-o", "{d}/a.png"],
        ["evaluate", "{d}/a_t.png", "{d}/b_t.png", "--csv", "{d}/a_t.png"],
        ["evaluate", "{d}/a_t.png", "{d}/b_t.png", "--json", "{d}/b_t.png"],
    ],
)
def test_an_input_is_never_an_output(images, capsys, argv):
    before = {p.name: p.read_bytes() for p in images.iterdir()}
    code, _, err = run(capsys, *[a.format(d=images) for a in argv])
    assert code == 2 and "is also an input" in err, err
    assert {p.name: p.read_bytes() for p in images.iterdir()} == before


def test_evaluate_boxes_and_export_refuse_to_overwrite_their_inputs(tmp_path, capsys):
    boxes = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "x"}]}
    (tmp_path / "t.json").write_text(json.dumps(boxes))
    (tmp_path / "p.json").write_text("[]")
    code, _, err = run(
        capsys,
        "evaluate-boxes",
        tmp_path / "p.json",
        tmp_path / "t.json",
        "--json",
        tmp_path / "t.json",
    )
    assert code == 2 and "is also an input" in err
    ckpt = tiny_run(tmp_path / "run") / "best.safetensors"
    before = ckpt.read_bytes()
    code, _, err = run(capsys, "export", ckpt, "--onnx", ckpt)
    assert code == 2 and "is also an input" in err and ckpt.read_bytes() == before


def test_predict_refuses_its_input_folder_and_file_names_as_output(images, tmp_path, capsys):
    model = tiny_run(tmp_path / "run")
    folder = tmp_path / "in"
    folder.mkdir()
    (images / "a.png").rename(folder / "a.png")
    before = (folder / "a.png").read_bytes()
    code, _, err = run(capsys, "predict", "--model", model, folder, "-o", folder, "-q")
    assert code == 2 and "is also an input" in err
    assert (folder / "a.png").read_bytes() == before
    code, _, err = run(capsys, "predict", "--model", model, folder, "-o", tmp_path / "out.png")
    assert code == 2 and "looks like a file name" in err and not (tmp_path / "out.png").exists()


# --------------------------------------------------------------------------- all or nothing


def test_segment_writes_every_output_or_none(images, capsys):
    out = images / "D"
    (out / "b.png").mkdir(parents=True)  # a folder where the second mask must go
    code, _, err = run(
        capsys, "segment", images / "a.png", images / "b.png", "--method", "otsu", "-o", out
    )
    assert code == 2 and "b.png" in err
    assert sorted(p.name for p in out.iterdir()) == ["b.png"]  # a.png was not written


def test_evaluate_writes_both_tables_or_neither(images, capsys):
    (images / "J").mkdir()
    code, _, err = run(
        capsys,
        "evaluate",
        images / "a_t.png",
        images / "b_t.png",
        "--csv",
        images / "s.csv",
        "--json",
        images / "J",
    )
    assert code == 2 and not (images / "s.csv").exists()


@pytest.mark.parametrize(
    ("target", "message"),
    [("/dev/full", "neither a regular file nor a folder"), ("{d}/o.jpg", None)],
)
def test_segment_output_names(images, capsys, target, message):
    target = target.format(d=images)
    if message is None:  # an overlay that is not named .png
        code, _, err = run(
            capsys,
            "segment",
            images / "a.png",
            "--method",
            "otsu",
            "-o",
            images / "o.png",
            "--overlay",
            target,
        )
        assert code == 2 and "give the file a .png name" in err
        assert not (images / "o.png").exists()
        return
    code, _, err = run(capsys, "segment", images / "a.png", "--method", "otsu", "-o", target)
    assert code == 2 and message in err


def test_several_inputs_never_make_a_folder_named_like_a_file(images, capsys):
    code, _, err = run(
        capsys,
        "segment",
        images / "a.png",
        images / "b.png",
        "--method",
        "otsu",
        "-o",
        images / "out.png",
    )
    assert code == 2 and "looks like a file name" in err
    assert not (images / "out.png").exists()


# --------------------------------------------------------------------------- arguments


def test_negative_numbers_are_values_not_flags(images, capsys):
    code, _, err = run(
        capsys,
        "segment",
        images / "a.png",
        "--method",
        "local",
        "--block",
        "7",
        "--offset",
        "-2",
        "-o",
        images / "o.png",
    )
    assert code == 0, err
    code, _, err = run(
        capsys,
        "segment",
        images / "a.png",
        "--method",
        "srg",
        "--seeds",
        "-5,10",
        "-o",
        images / "o2.png",
    )
    assert code == 2 and "expected at least one argument" not in err and "seed" in err
    code, _, err = run(capsys, "train", "--data", images, "--time-budget", "-5m")
    assert code == 2 and "duration must look like 20m" in err


@pytest.mark.parametrize(
    "argv",
    [
        [
            "localize",
            "{d}/a.png",
            "--method",
            "from-mask",
            "-o",
            "{d}/b.json",
            "--score-threshold",
            "nan",
        ],
        ["segment", "{d}/a.png", "--method", "fixed", "--value", "inf", "-o", "{d}/o.png"],
        ["segment", "{d}/a.png", "--method", "srg", "--seeds", "inf,3", "-o", "{d}/o.png"],
    ],
)
def test_numbers_that_are_not_finite_are_refused(images, capsys, argv):
    with pytest.raises(SystemExit) as stop:
        main([a.format(d=images) for a in argv])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "finite" in err or "point must be x,y or x,y,z numbers" in err


def test_report_classes(images, capsys):
    code, out, err = run(
        capsys, "evaluate", images / "a_t.png", images / "b_t.png", "--report", "5"
    )
    assert code == 0 and "dice_5" in out, err  # a class absent from both: nan, not a crash
    code, _, err = run(
        capsys, "evaluate", images / "a_t.png", images / "b_t.png", "--report", "abc"
    )
    assert code == 2 and "--report must be comma-separated class numbers" in err
    code, _, err = run(
        capsys,
        "evaluate",
        images / "a_t.png",
        images / "b_t.png",
        "--classes",
        "2",
        "--report",
        "3",
    )
    assert code == 2 and "a_t.png" in err and "below num_classes=2" in err


def test_export_refuses_a_giant_example_and_takes_run_folders(tmp_path, capsys):
    model = tiny_run(tmp_path / "run")
    code, _, err = run(
        capsys, "export", model, "--onnx", tmp_path / "m.onnx", "--size", "100000x100000"
    )
    assert code == 2 and "at most 2**24 voxels" in err
    code, _, err = run(capsys, "export", model, "--onnx", tmp_path / "m.onnx", "--size", "abc")
    assert code == 2 and "--size must look like 256x256" in err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--overlap", "0.999"], "overlap must be in [0, 0.9375]"),
        (["--device", "cuda"], "torch sees no CUDA device"),
    ],
)
def test_predict_options_refused_before_any_work(images, tmp_path, capsys, flags, message):
    if "cuda" in flags and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    model = tiny_run(tmp_path / "run")
    code, _, err = run(
        capsys, "predict", "--model", model, images / "a.png", "-o", tmp_path / "out", "-q", *flags
    )
    assert code == 2 and message in err
    assert not (tmp_path / "out").exists()


def test_detector_option_checks(images, tmp_path, capsys):
    code, _, err = run(
        capsys,
        "localize",
        images / "a.png",
        "--method",
        "proposals",
        "--max-side",
        "0",
        "-o",
        tmp_path / "b.json",
    )
    assert code == 2 and "max_side must be" in err
    code, _, err = run(
        capsys,
        "train-detector",
        "--data",
        tmp_path,
        "--method",
        "hog-svm",
        "--epochs",
        "3",
        "-o",
        tmp_path / "m.npz",
    )
    assert code == 2 and "apply to method cnn only" in err


# --------------------------------------------------------------------------- training data


def _labelled(root: Path, masks: list[np.ndarray]) -> Path:
    rng = np.random.default_rng(1)
    for i, m in enumerate(masks):
        io.write_image(root / "images" / f"c{i}.png", rng.integers(0, 255, m.shape, np.uint8))
        io.write_mask(root / "labels" / f"c{i}.png", m)
    return root


def test_train_refuses_labels_with_gaps_and_an_absent_ignore_label(tmp_path, capsys):
    m = np.zeros((32, 32), np.uint8)
    m[4:10, 4:10], m[12:20, 12:20] = 1, 7
    data = _labelled(tmp_path / "d", [m] * 4)
    base = ["train", "--data", data, "--epochs", "1", "--out", tmp_path / "r", "-q"]
    code, _, err = run(capsys, *base)
    assert code == 2 and "[2, 3, 4, 5, 6] never appear" in err
    assert not (tmp_path / "r").exists()
    code, _, err = run(capsys, *base, "--classes", "8", "--ignore-index", "300")
    assert code == 2 and "ignore_index 300 appears in no label file" in err
    code, _, err = run(capsys, "train", "--data", data, "--epochs", "1", "--out", data / "run")
    assert code == 2 and "outside the dataset" in err and not (data / "run").exists()


def test_train_config_that_is_not_utf8_is_named(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_bytes(b"data: \xff\xfe\n")
    code, _, err = run(capsys, "train", "--config", config)
    assert code == 2 and "c.yaml: not UTF-8 text" in err


@pytest.mark.parametrize(
    "written, flags, message",
    [
        ("batch: 0", [], "c.yaml: batch must be an int >= 1, got 0"),
        ("norm: group", [], "c.yaml: norm must be one of"),
        # a number written as text was an untyped TypeError (a traceback, exit 1)
        ("lr: abc", [], "c.yaml: lr must be a number, got str"),
        ("time_budget: 5 minutes", [], "c.yaml: time_budget: duration must look like"),
        # a key spelled as the flag is
        ("time-budget: 5 minutes", [], "c.yaml: time_budget: duration must look like"),
        ("warmup: 1.5", [], "c.yaml: warmup must be in [0, 1)"),
        # the flag's value is the bad one: the file is not blamed
        ("batch: 2", ["--batch", "-1"], "error: batch must be an int >= 1, got -1"),
    ],
)
def test_train_config_file_errors_name_the_file(tmp_path, capsys, written, flags, message):
    data = _labelled(tmp_path / "d", [np.eye(32, dtype=np.uint8)] * 4)
    config = tmp_path / "c.yaml"
    config.write_text(f"data: {data}\nepochs: 1\n{written}\n")
    out = tmp_path / "r"
    code, _, err = run(capsys, "train", "--config", config, "--out", out, "--no-plan", *flags)
    assert code == 2 and message in err, err
    assert not out.exists()


def test_train_flag_overrides_a_bad_value_in_the_config_file(tmp_path):
    from segloc.engine.config import TrainConfig

    config = tmp_path / "c.yaml"
    config.write_text("data: d\nepochs: 1\nbatch: 0\n")
    with pytest.raises(ValueError, match=r"c.yaml: batch must be"):
        TrainConfig.from_sources(config, {})
    assert TrainConfig.from_sources(config, {"batch": 2}).validate().batch == 2


@pytest.mark.parametrize("predicted", ["nothing", "everything"])
def test_validation_without_foreground_still_gives_a_usable_run(
    tmp_path, capsys, monkeypatch, predicted
):
    """All-background validation. A model that predicts nothing there has no finite Dice, so
    no best checkpoint, but the run ends cleanly with last.safetensors (the metadata's Dice is
    null, not an invalid NaN); one that predicts foreground there scores 0, a finite Dice.

    The prediction is pinned: what one epoch of training predicts differs between CPUs."""
    import segloc.engine.train as train_module

    def pinned(model, x):
        logits = torch.zeros((x.shape[0], 2, *x.shape[2:]))
        logits[:, 0 if predicted == "nothing" else 1] = 1.0
        return logits

    monkeypatch.setattr(train_module, "predict_whole", pinned)
    m = np.zeros((32, 32), bool)
    m[8:20, 8:20] = True
    masks = [m, m, m, np.zeros_like(m)]
    data = _labelled(tmp_path / "d", masks)
    code, out, err = run(
        capsys,
        "train",
        "--data",
        data,
        "--epochs",
        "1",
        "--out",
        tmp_path / "r",
        "--val",
        _labelled(tmp_path / "v", [masks[-1]]),
        "--base-channels",
        "4",
        "--depth",
        "2",
        "--batch",
        "2",
        "--samples-per-epoch",
        "2",
        "-q",
    )
    assert code == 0, err
    assert (tmp_path / "r" / "last.safetensors").is_file()
    if predicted == "nothing":
        assert "no finite validation" in out
    else:
        assert "best validation Dice 0.0000 at epoch 1" in out
    assert (tmp_path / "r" / "model.safetensors").is_file()


@pytest.mark.parametrize("problem", ["empty", "nan", "mixed", "background"])
def test_dataset_check_fails_on_untrainable_data(tmp_path, capsys, problem):
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    m = np.zeros((16, 16), bool)
    m[4:8, 4:8] = True
    if problem == "nan":
        image = np.ones((16, 16), np.float32)
        image[3, 3] = np.nan
        io.write_image(root / "images" / "a.tif", image)
        io.write_mask(root / "labels" / "a.png", m)
    elif problem == "mixed":
        io.write_image(root / "images" / "a.png", np.ones((16, 16), np.uint8))
        io.write_mask(root / "labels" / "a.png", m)
        io.write_image(root / "images" / "b.nii.gz", np.ones((8, 8, 8), np.uint8))
        io.write_mask(root / "labels" / "b.nii.gz", np.ones((8, 8, 8), bool))
    elif problem == "background":
        io.write_image(root / "images" / "a.png", np.ones((16, 16), np.uint8))
        io.write_mask(root / "labels" / "a.png", np.zeros((16, 16), bool))
    code, out, _ = run(capsys, "dataset", "check", root)
    assert code == 2 and "NOT OK" in out
    expected = {
        "empty": "no usable case",
        "nan": "a.tif: ",
        "mixed": "cases of different dimensions (1 2D, 1 3D)",
        "background": "every label is background",
    }[problem]
    assert expected in out
    if problem == "nan":
        assert "NaN" in out and "[0] never appear" not in out


def test_dataset_check_names_the_missing_image(tmp_path, capsys):
    masks = [np.eye(16, dtype=bool)] * 10
    root = _labelled(tmp_path / "ds", masks)
    for i in range(10):
        (root / "images" / f"c{i}.png").rename(root / "images" / f"{i + 1}.png")
        (root / "labels" / f"c{i}.png").rename(root / "labels" / f"{i + 1}.png")
    (root / "images" / "10.png").unlink()
    code, out, err = run(capsys, "dataset", "check", root)
    assert code == 2 and "unmatched labels (1)" in out and "10.png" in out, err


# --------------------------------------------------------------------------- signals, warnings


def test_sigterm_during_predict_leaves_nothing_behind(tmp_path):
    model = tiny_run(tmp_path / "run")
    folder = tmp_path / "in"
    rng = np.random.default_rng(0)
    for i in range(40):
        io.write_image(folder / f"i{i}.png", rng.integers(0, 255, (256, 256), np.uint8))
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "segloc.cli",
            "predict",
            "--model",
            str(model),
            str(folder),
            "-o",
            str(out),
            "-q",
            "--device",
            "cpu",
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 60
    while time.time() < deadline and not any(out.glob(".segloc-predict-*/*")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert not out.exists() or not list(out.iterdir())


def test_warnings_are_one_line(tmp_path):
    from PIL import Image

    mask = np.zeros((16, 16), np.uint8)
    mask[4:12, 4:12] = 255
    Image.fromarray(mask).save(tmp_path / "m.jpg", quality=75)
    done = subprocess.run(
        [sys.executable, "-m", "segloc.cli", "boxes", str(tmp_path / "m.jpg")],
        capture_output=True,
        text=True,
    )
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 0 and lines and all(line.startswith("warning: ") for line in lines)
