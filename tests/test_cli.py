import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segloc import io
from segloc.cli import main, parse_point

DATA = Path(os.environ.get("SEGLOC_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture
def blobs(tmp_path):
    """Two bright squares on a dark noisy background, as 8-bit PNG."""
    rng = np.random.default_rng(0)
    img = rng.normal(40, 5, (64, 80))
    img[10:30, 10:30] += 150
    img[40:60, 50:75] += 150
    img = np.clip(img, 0, 255).astype(np.uint8)
    path = tmp_path / "blobs.png"
    Image.fromarray(img).save(path)
    truth = np.zeros_like(img)
    truth[10:30, 10:30] = 255
    truth[40:60, 50:75] = 255
    tpath = tmp_path / "truth" / "blobs.png"
    tpath.parent.mkdir()
    Image.fromarray(truth).save(tpath)
    return path, tpath


def test_parse_point_is_x_y():
    assert parse_point("10,20") == (20, 10)
    assert parse_point("1,2,3") == (2, 1, 3)


@pytest.mark.parametrize(
    "method_args",
    [
        ["--method", "otsu"],
        ["--method", "li"],
        ["--method", "local", "--block", "31"],
        ["--method", "multiotsu", "--classes", "3"],
        ["--method", "kmeans", "--k", "2"],
        ["--method", "region-grow", "--seeds", "20,20", "60,50", "--tolerance", "60"],
        ["--method", "srg", "--seeds", "20,20", "2,2"],
        ["--method", "confidence", "--seeds", "20,20"],
    ],
)
def test_segment_methods_write_masks(blobs, tmp_path, method_args, capsys):
    path, _ = blobs
    out = tmp_path / "out.png"
    overlay = tmp_path / "ov.png"
    assert (
        main(["segment", str(path), *method_args, "-o", str(out), "--overlay", str(overlay)]) == 0
    )
    mask, _ = io.read_mask(out, kind="labels")
    assert mask.shape == (64, 80)
    # the square with the seed / bright square is found: pixel (row 20, col 20) is foreground
    assert mask[20, 20] > 0
    if "srg" not in method_args and "multiotsu" not in method_args and "kmeans" not in method_args:
        assert mask[5, 5] == 0
    assert overlay.exists()


def test_segment_then_evaluate_and_boxes(blobs, tmp_path, capsys):
    path, tpath = blobs
    pred_dir = tmp_path / "pred"
    assert main(["segment", str(path), "--method", "otsu", "-o", str(pred_dir / "blobs.png")]) == 0
    csv_path, json_path = tmp_path / "s.csv", tmp_path / "s.json"
    assert (
        main(
            [
                "evaluate",
                str(pred_dir),
                str(tpath.parent),
                "--csv",
                str(csv_path),
                "--json",
                str(json_path),
            ]
        )
        == 0
    )
    doc = json.loads(json_path.read_text())
    assert doc["cases"][0]["case"] == "blobs"
    assert doc["cases"][0]["dice_1"] > 0.95
    assert "mean" in csv_path.read_text()
    boxes_path = tmp_path / "b.json"
    assert main(["boxes", str(pred_dir / "blobs.png"), "-o", str(boxes_path)]) == 0
    objects = json.loads(boxes_path.read_text())["objects"]
    boxes = sorted(o["box"] for o in objects)
    # half-open boxes of the two squares (a few noisy pixels may differ at the edges)
    np.testing.assert_allclose(boxes[0], [10, 10, 30, 30], atol=1)
    np.testing.assert_allclose(boxes[1], [50, 40, 75, 60], atol=1)


def test_segment_several_inputs_to_folder(blobs, tmp_path):
    path, _ = blobs
    other = tmp_path / "other.png"
    other.write_bytes(path.read_bytes())
    out = tmp_path / "many"
    assert main(["segment", str(path), str(other), "--method", "otsu", "-o", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["blobs.png", "other.png"]


def test_info_prints_labels(blobs, capsys):
    _, tpath = blobs
    assert main(["info", str(tpath)]) == 0
    out = capsys.readouterr().out
    assert "(64, 80)" in out and "uint8" in out and "255:" in out


# --------------------------------------------------------------------------- bad input


def _run_bad(argv, capsys, *, must_name: str):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2
    assert must_name in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    return err


def test_segment_missing_file(tmp_path, capsys):
    out = tmp_path / "o.png"
    _run_bad(
        ["segment", str(tmp_path / "nope.png"), "--method", "otsu", "-o", str(out)],
        capsys,
        must_name="nope.png",
    )
    assert not out.exists()


def test_segment_corrupt_file_leaves_no_output(blobs, tmp_path, capsys):
    path, _ = blobs
    bad = tmp_path / "bad.png"
    bad.write_bytes(path.read_bytes()[:100])
    out = tmp_path / "outdir"
    _run_bad(
        ["segment", str(path), str(bad), "--method", "otsu", "-o", str(out)],
        capsys,
        must_name="bad.png",
    )
    # the good input was not written either: inputs are all read before anything is written
    assert not out.exists() or not any(out.iterdir())


def test_segment_seed_outside_image(blobs, tmp_path, capsys):
    path, _ = blobs
    _run_bad(
        [
            "segment",
            str(path),
            "--method",
            "srg",
            "--seeds",
            "500,500",
            "-o",
            str(tmp_path / "o.png"),
        ],
        capsys,
        must_name="seed",
    )
    assert not (tmp_path / "o.png").exists()


def test_segment_seed_wrong_dimension(blobs, tmp_path, capsys):
    path, _ = blobs
    _run_bad(
        [
            "segment",
            str(path),
            "--method",
            "srg",
            "--seeds",
            "5,5,5",
            "-o",
            str(tmp_path / "o.png"),
        ],
        capsys,
        must_name=str(path),
    )


def test_segment_missing_parameter(blobs, tmp_path, capsys):
    path, _ = blobs
    _run_bad(
        [
            "segment",
            str(path),
            "--method",
            "region-grow",
            "--seeds",
            "5,5",
            "-o",
            str(tmp_path / "o.png"),
        ],
        capsys,
        must_name="tolerance",
    )


def test_evaluate_shape_mismatch(blobs, tmp_path, capsys):
    path, tpath = blobs
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(small)
    out = tmp_path / "s.csv"
    _run_bad(["evaluate", str(small), str(tpath), "--csv", str(out)], capsys, must_name="small.png")
    assert not out.exists()


def test_evaluate_folders_without_matches(tmp_path, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _run_bad(
        ["evaluate", str(tmp_path / "a"), str(tmp_path / "b")],
        capsys,
        must_name=str(tmp_path / "a"),
    )


def test_boxes_unknown_format(tmp_path, capsys):
    f = tmp_path / "x.xyz"
    f.write_text("hello")
    _run_bad(["boxes", str(f), "-o", str(tmp_path / "b.json")], capsys, must_name="x.xyz")
    assert not (tmp_path / "b.json").exists()


def test_info_missing(tmp_path, capsys):
    _run_bad(["info", str(tmp_path / "missing.nii.gz")], capsys, must_name="missing.nii.gz")


def test_export_missing_checkpoint(tmp_path, capsys):
    _run_bad(
        ["export", str(tmp_path / "none.safetensors"), "--onnx", str(tmp_path / "m.onnx")],
        capsys,
        must_name="none.safetensors",
    )
    assert not (tmp_path / "m.onnx").exists()


def test_usage_error_exits_2():
    proc = subprocess.run(
        [sys.executable, "-m", "segloc.cli", "segment"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "usage" in proc.stderr


def test_help_mentions_coordinates():
    proc = subprocess.run(
        [sys.executable, "-m", "segloc.cli", "segment", "--help"], capture_output=True, text=True
    )
    assert proc.returncode == 0
    assert "column,row" in proc.stdout


@pytest.mark.slow
@pytest.mark.skipif(not (DATA / "hippocampus").is_dir(), reason="shared data not found")
def test_segment_real_volume_keeps_affine(tmp_path):
    src = DATA / "hippocampus" / "images" / "hippocampus_003.nii.gz"
    image, meta = io.read_image(src)
    out = tmp_path / "h.nii.gz"
    r, c, s = (n // 2 for n in image.shape)
    assert (
        main(
            [
                "segment",
                str(src),
                "--method",
                "confidence",
                "--seeds",
                f"{c},{r},{s}",
                "-o",
                str(out),
                "--overlay",
                str(tmp_path / "h.png"),
            ]
        )
        == 0
    )
    mask, meta2 = io.read_mask(out)
    assert mask.shape == image.shape
    np.testing.assert_allclose(meta2.affine, meta.affine)
    assert (tmp_path / "h.png").exists()


def test_classical_modules_do_not_import_torch():
    code = (
        "import sys; import segloc.io, segloc.masks, segloc.metrics, segloc.viz, segloc.evaluate;"
        "import segloc.classical.threshold, segloc.classical.region_growing;"
        "import segloc.classical.clustering;"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_dataset_check_reports_and_fails_on_problems(blobs, tmp_path, capsys):
    path, tpath = blobs
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "images" / "a.png").write_bytes(path.read_bytes())
    (root / "labels" / "a.png").write_bytes(tpath.read_bytes())
    assert main(["dataset", "check", str(root)]) == 0
    out = capsys.readouterr().out
    assert "cases: 1" in out and "OK" in out
    (root / "images" / "orphan.png").write_bytes(path.read_bytes())
    assert main(["dataset", "check", str(root)]) == 2
    assert "orphan" in capsys.readouterr().out


def test_dataset_check_missing_folder(tmp_path, capsys):
    _run_bad(["dataset", "check", str(tmp_path / "nothing")], capsys, must_name="nothing")


def test_demo_wrong_data_folder(tmp_path, capsys):
    _run_bad(
        ["demo", "--data", str(tmp_path / "nodata"), "--out", str(tmp_path / "o")],
        capsys,
        must_name="nodata",
    )
    assert not (tmp_path / "o").exists()


def test_the_command_line_starts_without_torch():
    """Parsing (``segloc --help``, a typo) loads no model code: handlers import what they use."""
    code = (
        "import sys; from segloc.cli import build_parser; build_parser();"
        "heavy = [m for m in ('torch', 'matplotlib', 'skimage.segmentation') if m in sys.modules];"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
