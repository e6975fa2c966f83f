import json
import math

import numpy as np
import pytest

from segloc import io
from segloc.evaluate import evaluate_case, evaluate_paths, trained_on


def test_evaluate_case_hand_computed():
    truth = np.zeros((10, 10), np.int32)
    truth[2:6, 2:6] = 1  # 16 px
    truth[7:9, 7:9] = 2  # 4 px
    pred = np.zeros_like(truth)
    pred[2:6, 2:5] = 1  # 12 px, all inside
    pred[0, 0] = 2  # 1 px false positive, class 2 fully missed
    row = evaluate_case(pred, truth, num_classes=3)
    assert row["dice_1"] == pytest.approx(2 * 12 / (12 + 16))
    assert row["iou_1"] == pytest.approx(12 / 16)
    assert row["dice_2"] == 0.0
    assert row["dice"] == pytest.approx((24 / 28 + 0) / 2)
    assert row["hd95_1"] == pytest.approx(1.0)  # the missed column is one pixel away


def test_evaluate_case_ignore_index_and_empty_policy():
    truth = np.array([[1, 1, 11], [0, 0, 11]])
    pred = np.array([[1, 1, 1], [0, 0, 2]])
    row = evaluate_case(pred, truth, num_classes=3, ignore_index=11, surface=False)
    assert row["dice_1"] == 1.0  # the wrong pixels lie on void
    assert math.isnan(row["dice_2"])  # absent from both where scored
    row = evaluate_case(pred, truth, num_classes=3, ignore_index=11, surface=False, empty="one")
    assert row["dice_2"] == 1.0


def test_evaluate_spacing_from_files(tmp_path):
    truth = np.zeros((20, 20, 10), np.uint8)
    truth[5:15, 5:15, 2:8] = 1
    pred = np.roll(truth, 2, axis=2)
    affine = np.diag([1.0, 1.0, 3.0, 1.0])
    meta = io.ImageMeta(
        path=None, format="nifti", spacing=(1.0, 1.0, 3.0), affine=affine, header={}
    )
    (tmp_path / "p").mkdir()
    (tmp_path / "t").mkdir()
    io.write_mask(tmp_path / "p" / "case.nii.gz", pred, meta=meta)
    io.write_mask(tmp_path / "t" / "case.nii.gz", truth, meta=meta)
    result = evaluate_paths(tmp_path / "p", tmp_path / "t")
    # a 2-slice shift along z with 3 mm slices: HD95 = 6 mm
    assert result.rows[0]["hd95_1"] == pytest.approx(6.0)
    result.to_json(tmp_path / "r.json")
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["summary"]["mean"]["dice_1"] == pytest.approx(result.rows[0]["dice_1"])


def test_summary_statistics(tmp_path):
    from PIL import Image

    (tmp_path / "p").mkdir()
    (tmp_path / "t").mkdir()
    truth = np.zeros((8, 8), np.uint8)
    truth[2:6, 2:6] = 255
    for name, shift in (("a", 0), ("b", 1), ("c", 2)):
        Image.fromarray(truth).save(tmp_path / "t" / f"{name}_mask.png")
        Image.fromarray(np.roll(truth, shift, axis=1)).save(tmp_path / "p" / f"{name}.png")
    result = evaluate_paths(tmp_path / "p", tmp_path / "t", truth_suffix="_mask")
    dices = [r["dice_1"] for r in result.rows]
    np.testing.assert_allclose(dices, [1.0, 0.75, 0.5])
    s = result.summary()
    assert s["mean"]["dice_1"] == pytest.approx(0.75)
    assert s["median"]["dice_1"] == pytest.approx(0.75)
    assert s["std"]["dice_1"] == pytest.approx(np.std([1.0, 0.75, 0.5]))
    result.to_csv(tmp_path / "r.csv")
    lines = (tmp_path / "r.csv").read_text().splitlines()
    assert lines[0].startswith("case,dice_1") and lines[-3].startswith("mean")


def test_trained_on_reads_the_runs_split(tmp_path):
    from types import SimpleNamespace

    cases = [SimpleNamespace(name=n) for n in ("a", "b", "c")]
    assert trained_on(cases, None) == []
    assert trained_on(cases, tmp_path) == []  # no split.json: nothing known
    (tmp_path / "split.json").write_text(json.dumps({"train": ["c", "a", "z"], "val": ["b"]}))
    assert trained_on(cases, tmp_path) == ["a", "c"]
    (tmp_path / "split.json").write_text(json.dumps({"train": "a"}))
    with pytest.raises(ValueError, match="split.json: must hold"):
        trained_on(cases, tmp_path)
