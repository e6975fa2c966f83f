"""The demo's box section: tumour boxes from masks, nuclei boxes, raccoon proposals."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage.measure import label, regionprops

from segloc.demo import _mask_box, nuclei_boxes, raccoon_proposals

DATA = Path(os.environ.get("SEGLOC_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def test_mask_box_is_the_largest_components_regionprops_box():
    mask = np.zeros((40, 50), bool)
    mask[5:10, 3:8] = True  # small
    mask[20:35, 10:45] = True  # large
    props = max(regionprops(label(mask, connectivity=1)), key=lambda p: p.area)
    r0, c0, r1, c1 = props.bbox
    np.testing.assert_array_equal(_mask_box(mask), [c0, r0, c1, r1])
    assert _mask_box(np.zeros((4, 4), bool)) is None


@pytest.mark.skipif(not (DATA / "dsb2018_nuclei").is_dir(), reason="no dsb2018_nuclei data")
def test_nuclei_boxes_score_and_picture(tmp_path):
    row = nuclei_boxes(DATA, tmp_path)
    assert row.images == 1 and "box AP50" in row.score
    ap50 = float(row.score.split("box AP50 ")[1].split(",")[0])
    assert 0.4 < ap50 <= 1  # Otsu + watershed finds most of the 125 nuclei
    assert np.asarray(Image.open(tmp_path / "boxes_dsb_nuclei.png")).shape[2] == 3


@pytest.mark.skipif(not (DATA / "raccoon").is_dir(), reason="no raccoon data")
def test_raccoon_proposals_picture(tmp_path):
    row = raccoon_proposals(DATA, tmp_path, images=1, top=5)
    assert row.images == 1 and row.score.endswith("1/1")
    assert (tmp_path / "boxes_raccoon_raccoon-1.png").is_file()
