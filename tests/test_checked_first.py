"""Every input and output checked before the work starts (issue 19): a bad file last of
three is refused before the first prediction, detection or segmentation, and every message
names the right file. "Before" is shown by counting the work done (model calls, detections,
full reads), never by the clock."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from segloc import io
from segloc.cli import main
from segloc.engine import infer
from test_cli_errors import tiny_run


def _nifti(path: Path, arr: np.ndarray) -> None:
    import nibabel as nib  # segloc writes 2D and 3D only: a 4D file needs nibabel

    nib.save(nib.Nifti1Image(arr, np.eye(4)), str(path))


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def files(tmp_path):
    """a.png, b.png (fine), nan.tif (NaN inside), v4.nii.gz (4D), cut.nii (header fine,
    data cut: found from the file size), cut.png (decoding fails half-way)."""
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        image = rng.integers(0, 60, (32, 32)).astype(np.uint8)
        image[8:24, 10:30] = 200
        io.write_image(tmp_path / f"{name}.png", image)
    nan = np.ones((32, 32), np.float32)
    nan[3, 3] = np.nan
    io.write_image(tmp_path / "nan.tif", nan)
    _nifti(tmp_path / "v4.nii.gz", np.ones((8, 8, 8, 2), np.float32))
    io.write_image(tmp_path / "whole.nii", np.zeros((32, 32, 4), np.float32))
    (tmp_path / "cut.nii").write_bytes((tmp_path / "whole.nii").read_bytes()[:2000])
    (tmp_path / "cut.png").write_bytes((tmp_path / "a.png").read_bytes()[:-200])
    return tmp_path


@pytest.fixture
def predictions(monkeypatch):
    """Count the files predicted (the model's work)."""
    calls = []
    real = infer._Probabilities.predict_file

    def counted(self, path, **kwargs):
        calls.append(Path(path).name)
        return real(self, path, **kwargs)

    monkeypatch.setattr(infer._Probabilities, "predict_file", counted)
    return calls


# --------------------------------------------------------------------------- predict


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("nan.tif", "nan.tif: holds 1 NaN or infinite values"),
        ("v4.nii.gz", "v4.nii.gz: image must be (rows, cols) or (rows, cols, 3) for this 2D"),
        ("cut.png", "cut.png: cannot read"),
    ],
)
def test_predict_refuses_a_bad_last_input_before_predicting(
    files, tmp_path, capsys, predictions, bad, message
):
    model = tiny_run(tmp_path / "run")
    argv = ["predict", "--model", model, files / "a.png", files / "b.png", files / bad]
    code, _, err = run(capsys, *argv, "-o", tmp_path / "out", "-q")
    assert code == 2 and message in err, err
    assert predictions == []  # before: a.png and b.png were predicted first
    assert not (tmp_path / "out").exists()


def test_predict_of_a_large_job_checks_headers_first_and_values_when_reached(
    files, tmp_path, capsys, predictions, monkeypatch
):
    """Above io.FULL_CHECK_BYTES the inputs are not read twice: what a header shows is
    still refused first; NaN values are found when the file's turn comes, and nothing is
    written (all or nothing)."""
    monkeypatch.setattr("segloc.io.headers.FULL_CHECK_BYTES", 0)
    model = tiny_run(tmp_path / "run")
    base = ["predict", "--model", model, files / "a.png", files / "b.png"]
    code, _, err = run(capsys, *base, files / "cut.nii", "-o", tmp_path / "out", "-q")
    assert code == 2 and "cut.nii: cannot read: truncated" in err and predictions == []
    code, _, err = run(capsys, *base, files / "nan.tif", "-o", tmp_path / "out", "-q")
    assert code == 2 and "nan.tif: holds 1 NaN" in err
    assert predictions == ["a.png", "b.png", "nan.tif"]
    assert not (tmp_path / "out").exists()


def test_predict_limit_is_checked_before_any_prediction(files, tmp_path, capsys, predictions):
    big = io.write_image(files / "big.png", np.zeros((64, 64), np.uint8))
    model = tiny_run(tmp_path / "run")
    argv = ["predict", "--model", model, files / "a.png", files / "b.png", big]
    code, _, err = run(capsys, *argv, "-o", tmp_path / "out", "-q", "--max-voxels", "1024")
    assert code == 2 and "big.png: declares 4,096 voxels" in err and predictions == []


# --------------------------------------------------------------------------- segment


def test_segment_checks_every_header_before_reading_any_file(files, capsys, monkeypatch):
    reads = []
    real = io.read_image

    def counted(path, **kwargs):
        reads.append(Path(path).name)
        return real(path, **kwargs)

    monkeypatch.setattr(io, "read_image", counted)
    argv = ["segment", files / "a.png", files / "b.png", files / "cut.nii"]
    code, _, err = run(capsys, *argv, "--method", "otsu", "-o", files / "out")
    assert code == 2 and "cut.nii: cannot read: truncated" in err
    assert reads == []  # before: a.png and b.png were read whole first
    argv = ["segment", files / "a.png", files / "v4.nii.gz", "--method", "otsu"]
    code, _, err = run(capsys, *argv, "-o", files / "out")
    assert code == 2 and "v4.nii.gz: must be a 2D image or a 3D volume" in err and reads == []
    assert not (files / "out").exists()


def test_segment_errors_name_the_image(files, capsys):
    """A method's complaint about an image names it (before: no file at all)."""
    flat = io.write_image(files / "flat.png", np.full((16, 16), 7, np.uint8))
    code, _, err = run(capsys, "segment", flat, "--method", "kmeans", "--k", "3", "-o", files / "o")
    assert code == 2, err
    assert err.startswith(f"segloc segment: error: {flat}: ")


# --------------------------------------------------------------------------- localize


def test_localize_refuses_a_bad_last_image_before_detecting(files, capsys, monkeypatch):
    from segloc.localize.from_mask import MaskDetector

    detections = []
    real = MaskDetector.detect

    def counted(self, image, **kwargs):
        detections.append(image.shape)
        return real(self, image, **kwargs)

    monkeypatch.setattr(MaskDetector, "detect", counted)
    for bad, message in (
        ("nan.tif", "nan.tif: holds 1 NaN"),
        ("v4.nii.gz", "v4.nii.gz: must be a 2D grey or colour image"),
    ):
        argv = ["localize", files / "a.png", files / "b.png", files / bad]
        code, out, err = run(capsys, *argv, "--method", "from-mask", "-o", files / "l.json")
        assert code == 2 and message in err, err
        assert detections == [] and out == ""  # before: "a.png: 9 boxes" came first
    masks = [
        io.write_mask(files / f"m{i}.png", np.zeros(s, bool))
        for i, s in enumerate([(32, 32), (32, 32), (16, 32)])
    ]
    argv = ["localize", files / "a.png", files / "b.png", files / "a.png", "--mask", *masks]
    code, _, err = run(capsys, *argv, "--method", "from-mask", "-o", files / "l.json")
    assert code == 2 and "m2.png: mask shape (16, 32) must match its image (32, 32)" in err
    assert detections == [] and not (files / "l.json").exists()


# --------------------------------------------------------------------------- datasets


def _dataset(root: Path, last_image=None, last_label=None) -> Path:
    rng = np.random.default_rng(1)
    m = np.zeros((32, 32), np.uint8)
    m[8:20, 8:20] = 1
    for i in range(3):
        io.write_image(root / "images" / f"c{i}.png", rng.integers(0, 255, (32, 32), np.uint8))
        io.write_mask(root / "labels" / f"c{i}.png", m.astype(bool))
    if last_image is not None:
        (root / "images" / "c2.png").unlink()
        last_image(root / "images")
    if last_label is not None:
        (root / "labels" / "c2.png").unlink()
        last_label(root / "labels")
    return root


def _label_7(folder: Path) -> None:
    m = np.zeros((32, 32), np.uint8)
    m[8:20, 8:20], m[24:28, 24:28] = 1, 7
    io.write_mask(folder / "c2.png", m)


def _cut_label(folder: Path) -> None:
    io.write_mask(folder / "full.png", np.random.default_rng(2).integers(0, 2, (32, 32)) > 0)
    (folder / "c2.png").write_bytes((folder / "full.png").read_bytes()[:-60])
    (folder / "full.png").unlink()


def _volume_4d(folder: Path) -> None:
    _nifti(folder / "c2.nii.gz", np.ones((32, 32, 4, 2), np.float32))


BAD_CASES = {
    "label_7": (
        None,
        _label_7,
        "labels/c2.png: labels must be in 0..1 (the classes scored), got 7",
    ),
    "cut_label": (None, _cut_label, "labels/c2.png: cannot read"),
    "image_4d": (_volume_4d, None, "images/c2.nii.gz: must be a 2D image or a 3D volume"),
}


@pytest.fixture
def model_calls(monkeypatch):
    calls = []
    real = infer.Predictor.predict

    def counted(self, image, spacing=None):
        calls.append(image.shape)
        return real(self, image, spacing=spacing)

    monkeypatch.setattr(infer.Predictor, "predict", counted)
    return calls


@pytest.mark.parametrize("problem", sorted(BAD_CASES))
def test_evaluate_model_checks_every_case_before_predicting(tmp_path, capsys, model_calls, problem):
    image, label, message = BAD_CASES[problem]
    data = _dataset(tmp_path / "d", image, label)
    model = tiny_run(tmp_path / "run", label_mapping="auto")
    argv = ["evaluate", "--model", model, "--data", data, "-o", tmp_path / "e", "-q"]
    code, _, err = run(capsys, *argv)
    assert code == 2 and message in err, err
    assert model_calls == []  # before: c0 and c1 were predicted (12 s on real data)
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize("problem", sorted(BAD_CASES))
def test_compare_checks_every_case_before_segmenting(tmp_path, capsys, monkeypatch, problem):
    import segloc.evaluate as evaluate

    calls = []
    real = evaluate.segment_unattended
    monkeypatch.setattr(
        evaluate, "segment_unattended", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    image, label, message = BAD_CASES[problem]
    data = _dataset(tmp_path / "d", image, label)
    code, _, err = run(capsys, "compare", "--data", data, "--methods", "otsu", "-o", tmp_path / "c")
    assert code == 2 and message in err, err
    assert calls == [] and not (tmp_path / "c").exists()


def test_label_values_of_a_large_dataset_are_named_when_reached(
    tmp_path, capsys, model_calls, monkeypatch
):
    monkeypatch.setattr("segloc.io.headers.FULL_CHECK_BYTES", 0)
    data = _dataset(tmp_path / "d", None, _label_7)
    model = tiny_run(tmp_path / "run", label_mapping="auto")
    argv = ["evaluate", "--model", model, "--data", data, "-o", tmp_path / "e", "-q"]
    code, _, err = run(capsys, *argv)
    assert code == 2 and "labels/c2.png: labels must be in 0..1" in err, err
    assert len(model_calls) == 2  # the header pass cannot see values: found at case 3


def test_evaluate_and_compare_outputs_are_checked_before_any_work(tmp_path, capsys, model_calls):
    data = _dataset(tmp_path / "d")
    model = tiny_run(tmp_path / "run", label_mapping="auto")
    (tmp_path / "plain").write_text("a file where the output folder would go")
    for argv in (
        ["evaluate", "--model", model, "--data", data, "-o", tmp_path / "plain" / "e", "-q"],
        ["compare", "--data", data, "--methods", f"u:{model}", "-o", tmp_path / "plain", "-q"],
    ):
        code, _, err = run(capsys, *argv)
        assert code == 1, err
        assert f"{argv[argv.index('-o') + 1]}: Not a directory" in err
    assert model_calls == []  # before: every case predicted, then exit 2 on writing


def test_evaluate_and_compare_take_the_dataset_layout(tmp_path, capsys):
    data = _dataset(tmp_path / "d")
    (data / "labels").rename(data / "gt")
    code, _, err = run(capsys, "compare", "--data", data, "--methods", "otsu", "-o", tmp_path / "c")
    assert code == 2 and "no label_dir folder" in err and "name it with --labels" in err
    argv = ["compare", "--data", data, "--methods", "otsu", "-o", tmp_path / "c"]
    code, out, err = run(capsys, *argv, "--labels", "gt")
    assert code == 0 and "3 case(s)" in out, err


# --------------------------------------------------------------------------- train


def test_train_names_the_label_file_of_a_class_out_of_range(tmp_path, capsys):
    data = _dataset(tmp_path / "d", None, _label_7)
    argv = ["train", "--data", data, "--classes", "2", "--epochs", "1", "-q"]
    code, _, err = run(capsys, *argv, "--out", tmp_path / "r")
    assert code == 2 and f"{data / 'labels' / 'c2.png'}: holds class 7, but classes is 2" in err
    data4 = _dataset(tmp_path / "d4", _volume_4d, _volume_4d)
    code, _, err = run(capsys, "train", "--data", data4, "--epochs", "1", "--out", tmp_path / "r")
    assert code == 2 and "images/c2.nii.gz: must be a 2D image or a 3D volume" in err, err
    assert not (tmp_path / "r").exists()


def test_train_names_a_validation_case_of_other_dimensions(tmp_path, capsys):
    data = _dataset(tmp_path / "d")
    val = tmp_path / "v"
    io.write_image(val / "images" / "v.nii.gz", np.zeros((16, 16, 8), np.float32))
    io.write_mask(val / "labels" / "v.nii.gz", np.ones((16, 16, 8), bool))
    argv = ["train", "--data", data, "--val", val, "--epochs", "1", "-q"]
    code, _, err = run(capsys, *argv, "--out", tmp_path / "r")
    assert code == 2, err
    assert "v.nii.gz: 3D with 1 channel(s), but the first case" in err and "c0.png" in err


# --------------------------------------------------------------------------- messages


def test_boxes_names_the_mask(files, capsys):
    code, _, err = run(capsys, "boxes", files / "v4.nii.gz")
    assert code == 2 and f"{files / 'v4.nii.gz'}: labels must be 2D or 3D" in err


def test_evaluate_boxes_blames_the_truth_for_the_truths_faults(tmp_path, capsys):
    truth = {
        "images": [{"id": 1, "file_name": "a.jpg", "height": 60, "width": 100}],
        "categories": [{"id": 1, "name": "cat"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 30]}],
    }
    (tmp_path / "t.json").write_text(json.dumps(truth))  # no "area": scoring needs it
    pred = [{"image_id": 1, "category_id": 1, "bbox": [12, 10, 38, 30], "score": 0.9}]
    (tmp_path / "p.json").write_text(json.dumps(pred))
    code, _, err = run(capsys, "evaluate-boxes", tmp_path / "p.json", tmp_path / "t.json")
    assert code == 2
    assert err.strip() == (
        f"segloc evaluate-boxes: error: {tmp_path / 't.json'}: annotations[0] must have "
        "'area', got none"
    )  # before: "p.json: truth annotations[0] must have 'area', got none"


@pytest.mark.parametrize(
    ("make", "flag"),
    [
        (lambda d: (d / "labels").rename(d / "gt"), "--labels"),
        (lambda d: (d / "images").rename(d / "pics"), "--images"),
        (lambda d: (d / "masks").mkdir(), "--labels"),
    ],
)
def test_dataset_messages_name_the_flag_not_a_python_argument(tmp_path, capsys, make, flag):
    data = _dataset(tmp_path / "d")
    make(data)
    code, _, err = run(capsys, "train", "--data", data, "--epochs", "1", "--out", tmp_path / "r")
    assert code == 2 and flag in err and "pass " not in err, err


def test_no_library_message_tells_a_command_line_user_to_pass_a_python_argument():
    """Messages that tell the user what to do name the flag (with the Python name beside
    it); none says only ``pass name=``."""
    import ast
    import re

    src = Path(io.__file__).resolve().parents[1]
    found = []
    for path in sorted(src.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if re.search(r"\bpass [a-z_]+=", node.value):
                    found.append(f"{path.relative_to(src)}:{node.lineno}: {node.value!r}")
    assert found == []


def test_export_prints_no_torchvision_notices(tmp_path):
    import os
    import subprocess
    import sys

    model = tiny_run(tmp_path / "run")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "segloc.cli",
            "export",
            str(model),
            "--onnx",
            str(tmp_path / "m.onnx"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "torchvision" not in done.stderr, done.stderr  # before: four lines of it
    assert (tmp_path / "m.onnx").is_file()
