"""The whole engine on real data, as a user runs it: train -> predict -> evaluate -> compare.

A tiny U-Net on 128x128 crops of six ISBI 2012 slices (written to a temporary dataset
folder), two short epochs: this checks that the pieces fit together on real files, not
accuracy (the benchmarks in benchmarks/train_real.py measure that).
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from segloc import io
from segloc.cli import main

DATA = Path(os.environ.get("SEGLOC_DATA", Path(__file__).resolve().parents[2] / "shared/data"))
ISBI = DATA / "isbi2012"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not ISBI.is_dir(), reason="needs ../shared/data/isbi2012"),
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("isbi_small")
    for name in ("1", "10", "12", "13", "15", "16"):
        image, _ = io.read_image(ISBI / "images" / f"{name}.png")
        labels, _ = io.read_mask(ISBI / "labels" / f"{name}.png", kind="binary")
        io.write_image(root / "images" / f"{name}.png", image[:128, :128])
        io.write_mask(root / "labels" / f"{name}.png", labels[:128, :128])
    return root


SUMMARY_ROWS = ("mean", "median", "std")


def _rows(path: Path) -> list[dict]:
    return list(csv.DictReader(path.read_text().splitlines()))


def test_train_predict_evaluate_compare(dataset, tmp_path, capsys):
    run = tmp_path / "run"
    status = main(
        ["train", "--data", str(dataset), "--out", str(run), "--base-channels", "4",
         "--depth", "2", "--patch", "64", "--batch", "2", "--samples-per-epoch", "6",
         "--epochs", "2", "--device", "cpu", "--threads", "2", "--quiet"]
    )  # fmt: skip
    assert status == 0
    assert "best validation Dice" in capsys.readouterr().out
    assert len(_rows(run / "metrics.csv")) == 2
    split = json.loads((run / "split.json").read_text())
    assert len(split["val"]) == 1 and len(split["train"]) == 5

    pred_dir = tmp_path / "pred"
    val_image = dataset / "images" / f"{split['val'][0]}.png"
    status = main(
        ["predict", "--model", str(run), str(val_image), "-o", str(pred_dir), "--overlay",
         "--boxes", "--tta"]
    )  # fmt: skip
    assert status == 0
    masks = [p for p in pred_dir.rglob("*.png") if "overlay" not in p.name]
    assert len(masks) == 1
    mask, _ = io.read_mask(masks[0], kind="binary")
    assert mask.shape == (128, 128)

    eval_dir = tmp_path / "eval"
    status = main(
        ["evaluate", "--model", str(run), "--data", str(dataset), "--split", "val",
         "-o", str(eval_dir)]
    )  # fmt: skip
    assert status == 0
    rows = [r for r in _rows(eval_dir / "per_case.csv") if r["case"] not in SUMMARY_ROWS]
    assert {r["case"] for r in rows} == set(split["val"])
    dice = [float(v) for r in rows for k, v in r.items() if k.startswith("dice")]
    assert dice and all(0.0 <= d <= 1.0 for d in dice)
    assert (eval_dir / "best.png").is_file() and (eval_dir / "worst.png").is_file()

    cmp_dir = tmp_path / "compare"
    status = main(
        ["compare", "--data", str(dataset), "--methods", f"otsu,unet:{run}", "--split", "val",
         "--no-surface", "-o", str(cmp_dir)]
    )  # fmt: skip
    assert status == 0
    table = _rows(cmp_dir / "compare.csv")
    assert [r["method"] for r in table] == ["otsu", "unet"]
    # the Otsu row is reproducible from scikit-image: membranes are dark, interior bright
    from skimage.filters import threshold_otsu

    image, _ = io.read_image(val_image)
    truth, _ = io.read_mask(dataset / "labels" / val_image.name, kind="binary")
    otsu = image > threshold_otsu(image)
    expected = 2 * np.sum(otsu & truth) / (otsu.sum() + truth.sum())
    dice_key = next(k for k in table[0] if k.startswith("dice"))
    assert float(table[0][dice_key]) == pytest.approx(expected, abs=1e-3)
