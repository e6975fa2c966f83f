import numpy as np
import pytest
from PIL import Image

from segloc import viz


def test_overlay_colours_only_labelled_pixels():
    image = np.full((20, 30), 100, np.uint8)
    labels = np.zeros((20, 30), np.int32)
    labels[5:15, 5:10] = 1
    labels[5:15, 20:25] = 2
    out = viz.overlay_mask(image, labels, alpha=0.5, contours=False)
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    # background untouched, grey stays grey
    assert (out[0, 0] == 100).all()
    colors = viz.label_colors(2)
    expected1 = np.rint(0.5 * 100 + 0.5 * colors[0].astype(float))
    np.testing.assert_array_equal(out[10, 7], expected1)
    # the two labels get different colours
    assert not np.array_equal(out[10, 7], out[10, 22])


def test_overlay_contours_are_opaque_edges():
    image = np.zeros((20, 20), np.uint8)
    labels = np.zeros((20, 20), np.int32)
    labels[5:15, 5:15] = 1
    out = viz.overlay_mask(image, labels, alpha=0.0, contours=True)
    color = viz.label_colors(1)[0]
    np.testing.assert_array_equal(out[5, 10], color)  # edge
    np.testing.assert_array_equal(out[10, 10], [0, 0, 0])  # interior with alpha 0
    np.testing.assert_array_equal(out[2, 2], [0, 0, 0])  # outside


def test_overlay_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="labels must have the image's shape"):
        viz.overlay_mask(np.zeros((4, 4)), np.zeros((5, 4), int))


def test_label_colors_distinct_beyond_palette():
    colors = viz.label_colors(40)
    assert colors.shape == (40, 3)
    assert len({tuple(c) for c in colors}) == 40


def test_draw_boxes_half_open_edges():
    image = np.zeros((30, 40), np.uint8)
    out = viz.draw_boxes(image, [[10, 5, 20, 15]], width=1)
    # box x0=10..x1=20 half-open: the drawn outline spans columns 10..19, rows 5..14
    assert out[5, 10].any() and out[14, 19].any()
    assert not out[15, 20].any() and not out[4, 9].any()
    assert not out[10, 15].any()  # inside stays empty


def test_draw_boxes_checks_lengths():
    with pytest.raises(ValueError, match="scores must have one entry per box"):
        viz.draw_boxes(np.zeros((10, 10)), [[0, 0, 5, 5]], scores=[0.1, 0.2])


def test_montage_tiles_slices():
    vol = np.random.default_rng(0).random((16, 12, 9))
    sheet = viz.montage(vol, n_slices=9)
    assert sheet.shape == (3 * 16, 3 * 12, 3)
    labels = np.zeros(vol.shape, np.int32)
    labels[4:8, 4:8, 3:6] = 1
    sheet = viz.montage(vol, labels=labels, n_slices=4)
    assert sheet.shape == (2 * 16, 2 * 12, 3)


def test_comparison_panel_and_curves_write_pngs(tmp_path):
    rng = np.random.default_rng(1)
    image = rng.random((32, 32))
    truth = np.zeros((32, 32), np.int32)
    truth[8:24, 8:24] = 1
    pred = np.roll(truth, 2, axis=1)
    path = viz.comparison_panel(image, truth, pred, tmp_path / "p.png", dice=0.875)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > im.size[1]
    vol = rng.random((20, 20, 10))
    t3 = np.zeros(vol.shape, np.int32)
    t3[5:15, 5:15, 2:8] = 1
    viz.comparison_panel(vol, t3, t3, tmp_path / "p3.png", dice=1.0)
    viz.plot_curves({"train_loss": [1, 0.5, 0.3], "val_dice": [0.2, 0.6, 0.8]}, tmp_path / "c.png")
    assert (tmp_path / "p3.png").stat().st_size > 0 and (tmp_path / "c.png").stat().st_size > 0
    assert not list(tmp_path.glob(".*tmp*"))  # no temp files left behind
