"""End-to-end tests of `segloc predict`, `segloc evaluate --model` and `segloc compare`."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from skimage.filters import threshold_otsu
from skimage.measure import label, regionprops

from segloc import io
from segloc.cli import main
from segloc.engine.infer import Predictor
from segloc.nn import create_model
from segloc.nn.checkpoint import save_checkpoint

DATA = Path(os.environ.get("SEGLOC_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def make_run(folder: Path, *, dims=2, classes=2, patch=(32, 32), seed=0, split=None) -> Path:
    torch.manual_seed(seed)
    kw = {
        "in_channels": 1,
        "num_classes": classes,
        "base_channels": 4,
        "depth": 2,
        "padding": "same",
        "dims": dims,
    }
    model = create_model("unet", **kw)
    extra = {
        "dims": dims,
        "in_channels": 1,
        "num_classes": classes,
        "normalize": "zscore",
        "patch_size": list(patch),
        "target_spacing": None,
        "ignore_index": None,
        "label_mapping": "auto",
        "epoch": 1,
    }
    save_checkpoint(folder / "best.safetensors", "unet", kw, model, extra=extra)
    if split is not None:
        (folder / "split.json").write_text(json.dumps(split))
    return folder


def squares_dataset(root: Path, n: int = 4, shape=(48, 40)) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        truth = np.zeros(shape, bool)
        y, x = rng.integers(4, 20, 2)
        truth[y : y + 16, x : x + 14] = True
        image = (truth * 150 + 40 + rng.normal(0, 10, shape)).clip(0, 255).astype(np.uint8)
        io.write_image(root / "images" / f"c{i}.png", image)
        io.write_mask(root / "labels" / f"c{i}.png", truth)
    return root


def dice(p: np.ndarray, t: np.ndarray) -> float:
    return 2 * np.sum(p & t) / (p.sum() + t.sum())


def read_csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------- predict


def test_predict_png_writes_masks_probabilities_overlays_and_boxes(tmp_path):
    run = make_run(tmp_path / "run")
    data = squares_dataset(tmp_path / "ds", n=2)
    out = tmp_path / "out"
    code = main(
        ["predict", "--model", str(run), str(data / "images"), "-o", str(out), "-q"]
        + ["--probabilities", "--overlay", "--boxes"]
    )
    assert code == 0
    pred = Predictor(run, device="cpu")
    boxes = json.loads((out / "boxes.json").read_text())
    for i in range(2):
        image, _ = io.read_image(data / "images" / f"c{i}.png")
        expect = pred.predict(image)
        raw, _ = io.read_image(out / f"c{i}.png")
        assert raw.dtype == np.uint8 and set(np.unique(raw)) <= {0, 255}
        np.testing.assert_array_equal(raw == 255, expect.argmax(0) == 1)
        np.testing.assert_allclose(np.load(out / f"c{i}_prob.npy"), expect, atol=1e-6)
        assert io.read_image(out / f"c{i}_overlay.png")[0].shape == (48, 40, 3)
        # boxes: the connected components of the written mask (skimage oracle, 4-connected)
        mine = sorted(
            a["box"] for a in boxes["annotations"] if a["image_id"] == boxes["images"][i]["id"]
        )
        props = regionprops(label(raw == 255, connectivity=1))
        ref = sorted(
            [float(p.bbox[1]), float(p.bbox[0]), float(p.bbox[3]), float(p.bbox[2])] for p in props
        )
        assert mine == ref
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging left


def test_predict_nifti_keeps_affine_and_writes_prob_volume(tmp_path):
    run = make_run(tmp_path / "run", dims=3, classes=3, patch=(16, 16, 8))
    affine = np.array([[0, -1.5, 0, 10], [2.0, 0, 0, -5], [0, 0, 3.0, 7], [0, 0, 0, 1]])
    vol = np.random.default_rng(1).random((20, 18, 9)).astype(np.float32)
    nib.save(nib.Nifti1Image(vol, affine), tmp_path / "vol.nii.gz")
    out = tmp_path / "out"
    assert (
        main(
            [
                "predict",
                "--model",
                str(run),
                str(tmp_path / "vol.nii.gz"),
                "-o",
                str(out),
                "--probabilities",
                "-q",
            ]
        )
        == 0
    )
    mask = nib.load(out / "vol.nii.gz")
    np.testing.assert_allclose(mask.affine, affine)
    prob = nib.load(out / "vol_prob.nii.gz")
    np.testing.assert_allclose(prob.affine, affine)
    p = np.asarray(prob.dataobj)
    assert p.shape == (20, 18, 9, 3)
    np.testing.assert_array_equal(np.asarray(mask.dataobj), p.argmax(-1))
    # spacing from the affine reaches the predictor: same result as the API on the file
    labels, ref, _ = Predictor(run, device="cpu").predict_file(tmp_path / "vol.nii.gz")
    np.testing.assert_allclose(np.moveaxis(p, -1, 0), ref, atol=1e-6)


def test_predict_onnx_backend_gives_the_same_masks(tmp_path):
    run = make_run(tmp_path / "run")
    data = squares_dataset(tmp_path / "ds", n=1, shape=(50, 45))
    a, b = tmp_path / "a", tmp_path / "b"
    img = str(data / "images" / "c0.png")
    assert main(["predict", "--model", str(run), img, "-o", str(a), "-q", "--probabilities"]) == 0
    assert (
        main(
            [
                "predict",
                "--model",
                str(run),
                img,
                "-o",
                str(b),
                "-q",
                "--probabilities",
                "--backend",
                "onnx",
            ]
        )
        == 0
    )
    np.testing.assert_allclose(np.load(b / "c0_prob.npy"), np.load(a / "c0_prob.npy"), atol=1e-4)


def test_predict_bad_input_exits_2_and_writes_nothing(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    data = squares_dataset(tmp_path / "ds", n=2)
    bad = data / "images" / "zz_broken.png"
    bad.write_bytes(b"not a png at all")
    out = tmp_path / "out"
    code = main(["predict", "--model", str(run), str(data / "images"), "-o", str(out), "-q"])
    assert code == 2
    assert "zz_broken.png" in capsys.readouterr().err
    assert not out.exists()  # the good files predicted first were not moved into place


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--model", "{tmp}/missing"], "missing"),
        (["--model", "{tmp}/run", "{tmp}/nope.png"], "nope.png"),
        (["--model", "{tmp}/run", "{tmp}/rgb.png"], "rgb.png"),  # 3 channels, model wants 1
        (["--model", "{tmp}/junk.safetensors"], "junk.safetensors"),
    ],
)
def test_predict_error_paths(tmp_path, capsys, args, needle):
    make_run(tmp_path / "run")
    io.write_image(tmp_path / "ok.png", np.zeros((32, 32), np.uint8))
    io.write_image(tmp_path / "rgb.png", np.zeros((32, 32, 3), np.uint8))
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    argv = ["predict", *(a.format(tmp=tmp_path) for a in args)]
    if len(args) == 2:
        argv.append(str(tmp_path / "ok.png"))
    out = tmp_path / "out"
    assert main([*argv, "-o", str(out), "-q"]) == 2
    assert needle in capsys.readouterr().err
    assert not out.exists()


# --------------------------------------------------------------------------- evaluate --model


def test_evaluate_model_scores_match_hand_dice(tmp_path):
    data = squares_dataset(tmp_path / "ds", n=4)
    run = make_run(tmp_path / "run", split={"train": ["c0", "c1"], "val": ["c2", "c3"]})
    pred_dir = tmp_path / "pred"
    assert (
        main(["predict", "--model", str(run), str(data / "images"), "-o", str(pred_dir), "-q"]) == 0
    )
    out = tmp_path / "ev"
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(run),
                "--data",
                str(data),
                "--split",
                "val",
                "-o",
                str(out),
                "-q",
            ]
        )
        == 0
    )
    rows = {r["case"]: r for r in read_csv(out / "per_case.csv")}
    assert set(rows) == {"c2", "c3", "mean", "std", "median"}
    for case in ("c2", "c3"):
        p = io.read_image(pred_dir / f"{case}.png")[0] == 255
        t = io.read_image(data / "labels" / f"{case}.png")[0] == 255
        assert float(rows[case]["dice_1"]) == pytest.approx(dice(p, t), abs=1e-5)
    doc = json.loads((out / "per_case.json").read_text())
    assert [c["case"] for c in doc["cases"]] == ["c2", "c3"]
    assert (out / "best.png").is_file() and (out / "worst.png").is_file()
    # --val-only is the same selection
    out2 = tmp_path / "ev2"
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(run),
                "--data",
                str(data),
                "--val-only",
                "-o",
                str(out2),
                "-q",
                "--no-surface",
            ]
        )
        == 0
    )
    assert [r["case"] for r in read_csv(out2 / "per_case.csv")][:2] == ["c2", "c3"]


def test_predict_and_evaluate_an_ensemble_of_runs(tmp_path, capsys):
    data = squares_dataset(tmp_path / "ds", n=4)
    runs = [
        make_run(tmp_path / f"run{i}", seed=i, split={"train": ["c0", "c1"], "val": ["c2", "c3"]})
        for i in range(2)
    ]
    models = [a for r in runs for a in ("--model", str(r))]
    out = tmp_path / "out"
    assert (
        main(["predict", *models, str(data / "images"), "-o", str(out), "-q", "--probabilities"])
        == 0
    )
    assert (
        f"({runs[0] / 'best.safetensors'}, {runs[1] / 'best.safetensors'})"
        in capsys.readouterr().out
    )
    members = [Predictor(r, device="cpu") for r in runs]
    hand = {}
    for i in range(4):
        image, _ = io.read_image(data / "images" / f"c{i}.png")
        mean = (members[0].predict(image) + members[1].predict(image)) / 2
        np.testing.assert_allclose(np.load(out / f"c{i}_prob.npy"), mean, atol=1e-6)
        mask = io.read_image(out / f"c{i}.png")[0] == 255
        np.testing.assert_array_equal(mask, mean.argmax(0) == 1)
        hand[f"c{i}"] = dice(mask, io.read_image(data / "labels" / f"c{i}.png")[0] == 255)
    ev = tmp_path / "ev"
    argv = ["evaluate", *models, "--data", str(data), "--split", "val", "-o", str(ev), "-q"]
    assert main([*argv, "--no-surface"]) == 0
    rows = {r["case"]: r for r in read_csv(ev / "per_case.csv")}
    for case in ("c2", "c3"):
        assert float(rows[case]["dice_1"]) == pytest.approx(hand[case], abs=1e-5)
    # a model of another task is refused before anything is written
    make_run(tmp_path / "run3", classes=3)
    bad = tmp_path / "bad"
    argv = ["predict", *models, "--model", str(tmp_path / "run3"), str(data / "images")]
    assert main([*argv, "-o", str(bad), "-q"]) == 2
    assert "num_classes 3 differs" in capsys.readouterr().err and not bad.exists()


EVALUATE = ["evaluate", "--model", "{run}", "-o", "{tmp}/ev"]
COMPARE = ["compare", "--methods", "otsu,unet:{run}", "-o", "{tmp}/cmp"]


@pytest.mark.parametrize(
    "command, split, note",
    [
        (EVALUATE, [], "note: 2 of the 4 cases (e.g. c0)"),
        (EVALUATE, ["--split", "val"], None),
        (EVALUATE, ["--split", "train"], "2 of the 2"),
        (COMPARE, [], "2 of the 4 cases"),
        (COMPARE, ["--split", "val"], None),
    ],
)
def test_scoring_training_cases_is_noted(tmp_path, capsys, command, split, note):
    data = squares_dataset(tmp_path / "ds", n=4)
    run = make_run(tmp_path / "run", split={"train": ["c0", "c1"], "val": ["c2", "c3"]})
    argv = [a.format(run=run, tmp=tmp_path) for a in command]
    assert main([*argv, "--data", str(data), *split, "-q", "--no-surface"]) == 0
    err = capsys.readouterr().err
    if note is None:
        assert "trained the model" not in err
    else:
        assert note in err and "split.json" in err and "--split val" in err


def test_evaluate_keeps_the_pred_truth_form(tmp_path):
    t = np.zeros((20, 20), bool)
    t[5:15, 5:15] = True
    p = np.zeros_like(t)
    p[5:15, 5:10] = True
    io.write_mask(tmp_path / "p.png", p)
    io.write_mask(tmp_path / "t.png", t)
    assert (
        main(
            [
                "evaluate",
                str(tmp_path / "p.png"),
                str(tmp_path / "t.png"),
                "--csv",
                str(tmp_path / "e.csv"),
            ]
        )
        == 0
    )
    assert float(read_csv(tmp_path / "e.csv")[0]["dice_1"]) == pytest.approx(dice(p, t))


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["evaluate"], "PRED and TRUTH"),
        (["evaluate", "--model", "{run}"], "--data"),
        (
            ["evaluate", "--model", "{run}", "--data", "{ds}", "-o", "{tmp}/o", "--split", "val"],
            "split.json",
        ),
        (["evaluate", "--model", "{run}", "--data", "{ds}"], "--output"),
    ],
)
def test_evaluate_model_error_paths(tmp_path, capsys, argv, needle):
    run = make_run(tmp_path / "run")
    ds = squares_dataset(tmp_path / "ds", n=1)
    argv = [a.format(run=run, ds=ds, tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- compare


def test_compare_table_classical_and_deep(tmp_path, capsys):
    data = squares_dataset(tmp_path / "ds", n=3)
    run = make_run(tmp_path / "run")
    out = tmp_path / "cmp"
    code = main(
        [
            "compare",
            "--data",
            str(data),
            "--methods",
            f"otsu,kmeans,srg,unet:{run}",
            "-o",
            str(out),
            "-q",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    rows = {r["method"]: r for r in read_csv(out / "compare.csv")}
    assert list(rows) == ["otsu", "kmeans", "srg", "unet"] and "unet" in printed
    # otsu against skimage's threshold and a hand Dice, per case then averaged
    hand = []
    for i in range(3):
        image = io.read_image(data / "images" / f"c{i}.png")[0]
        t = io.read_image(data / "labels" / f"c{i}.png")[0] == 255
        hand.append(dice(image > threshold_otsu(image), t))
    assert float(rows["otsu"]["dice"]) == pytest.approx(np.mean(hand), abs=1e-5)
    # bright squares on a dark background: every classical method finds them
    for m in ("otsu", "kmeans", "srg"):
        assert float(rows[m]["dice"]) > 0.95
    # the deep row is what `evaluate --model` reports on the same cases
    ev = tmp_path / "ev"
    assert main(["evaluate", "--model", str(run), "--data", str(data), "-o", str(ev), "-q"]) == 0
    mean = next(r for r in read_csv(ev / "per_case.csv") if r["case"] == "mean")
    assert float(rows["unet"]["dice"]) == pytest.approx(float(mean["dice"]), abs=1e-5)
    long = read_csv(out / "compare_cases.csv")
    assert len(long) == 12 and {r["method"] for r in long} == set(rows)


@pytest.mark.parametrize(
    "methods,needle",
    [("otsu,watershed", "watershed"), ("a:{run},a:{run}", "unique"), ("", "at least one")],
)
def test_compare_error_paths(tmp_path, capsys, methods, needle):
    run = make_run(tmp_path / "run")
    data = squares_dataset(tmp_path / "ds", n=1)
    argv = [
        "compare",
        "--data",
        str(data),
        "--methods",
        methods.format(run=run),
        "-o",
        str(tmp_path / "o"),
    ]
    assert main(argv) == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_compare_multiclass_methods(tmp_path):
    rng = np.random.default_rng(2)
    for i in range(2):
        truth = np.zeros((40, 40), np.int32)
        truth[5:20, 5:35] = 1
        truth[24:36, 8:30] = 2
        image = (truth * 90 + 20 + rng.normal(0, 5, truth.shape)).clip(0, 255).astype(np.uint8)
        io.write_image(tmp_path / "ds" / "images" / f"m{i}.png", image)
        io.write_mask(tmp_path / "ds" / "labels" / f"m{i}.png", truth)
    out = tmp_path / "cmp"
    assert (
        main(
            [
                "compare",
                "--data",
                str(tmp_path / "ds"),
                "--methods",
                "multiotsu,kmeans,srg",
                "--classes",
                "3",
                "-o",
                str(out),
                "-q",
                "--no-surface",
            ]
        )
        == 0
    )
    rows = {r["method"]: r for r in read_csv(out / "compare.csv")}
    for m in rows:
        assert float(rows[m]["dice_1"]) > 0.95 and float(rows[m]["dice_2"]) > 0.95


# --------------------------------------------------------------------------- real data


@pytest.mark.slow
def test_real_isbi_slices_compare_and_hippocampus_predict(tmp_path):
    isbi = DATA / "isbi2012"
    hip = DATA / "hippocampus"
    if not isbi.is_dir() or not hip.is_dir():
        pytest.skip("shared data not available")
    ds = tmp_path / "isbi"
    for name in ("1", "10"):
        image = io.read_image(isbi / "images" / f"{name}.png")[0][:96, :96]
        truth = io.read_image(isbi / "labels" / f"{name}.png")[0][:96, :96]
        io.write_image(ds / "images" / f"{name}.png", image)
        io.write_mask(ds / "labels" / f"{name}.png", truth > 127)
    run = make_run(tmp_path / "run")
    out = tmp_path / "cmp"
    assert (
        main(["compare", "--data", str(ds), "--methods", f"otsu,unet:{run}", "-o", str(out), "-q"])
        == 0
    )
    rows = {r["method"]: r for r in read_csv(out / "compare.csv")}
    hand = []
    for name in ("1", "10"):
        image = io.read_image(ds / "images" / f"{name}.png")[0]
        t = io.read_image(ds / "labels" / f"{name}.png")[0] == 255
        hand.append(dice(image > threshold_otsu(image), t))
    assert float(rows["otsu"]["dice"]) == pytest.approx(np.mean(hand), abs=1e-5)
    assert 0.5 < float(rows["otsu"]["dice"]) < 1  # cell interiors are bright; membranes thin
    # a real NIfTI volume keeps its affine through predict
    vol = sorted((hip / "images").glob("*.nii.gz"))[0]
    run3 = make_run(tmp_path / "run3", dims=3, classes=3, patch=(16, 16, 16))
    assert main(["predict", "--model", str(run3), str(vol), "-o", str(tmp_path / "p"), "-q"]) == 0
    written = nib.load(tmp_path / "p" / vol.name)
    np.testing.assert_allclose(written.affine, nib.load(vol).affine)
    assert written.shape == nib.load(vol).shape
