"""Learned single-object localizer: model, loss, box dataset, training run folder, loading."""

from __future__ import annotations

import csv
import pickle

import numpy as np
import pytest
import torch
from safetensors import safe_open

from segloc.boxes import box_iou, generalized_box_iou
from segloc.engine.data import split_cases
from segloc.io import write_image
from segloc.localize.annotations import read_box_dataset
from segloc.localize.cnn import CnnDetector, load_localizer, localize_cnn, train_localizer
from segloc.localize.data import BoxDataset
from segloc.localize.detect import Detector
from segloc.nn.checkpoint import CheckpointError, LocalizerMeta, load_checkpoint
from segloc.nn.localizer import BoxLocalizer, localization_loss


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: on a shared 2-core machine two threads are many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _scene(rows: int, cols: int, box: tuple[int, int, int, int], *, seed: int = 0) -> np.ndarray:
    """A dark noisy RGB image with a bright rectangle covering ``box`` (x0, y0, x1, y1)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 40, size=(rows, cols, 3)).astype(np.uint8)
    x0, y0, x1, y1 = box
    image[y0:y1, x0:x1] = (230, 200, 60)
    return image


# --------------------------------------------------------------------------- model


@pytest.mark.parametrize(
    ("num_classes", "depth", "box_grid", "size"),
    [(1, 2, 1, (16, 16)), (3, 3, 2, (24, 40)), (2, 4, 4, (64, 48))],
)
def test_output_shapes_and_box_order(num_classes, depth, box_grid, size):
    torch.manual_seed(0)
    net = BoxLocalizer(
        3, num_classes, base_channels=4, depth=depth, box_grid=box_grid, image_size=size
    )
    logits, boxes = net(torch.randn(5, 3, *size))
    assert logits.shape == (5, num_classes + 1)
    assert boxes.shape == (5, 4)
    assert (boxes[:, 2:] >= boxes[:, :2]).all()
    # centre and size are sigmoids in [0, 1]
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    assert ((centre >= 0) & (centre <= 1)).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"depth": 0}, "depth"),
        ({"num_classes": 0}, "num_classes"),
        ({"image_size": (8, 8), "depth": 4}, "image_size"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BoxLocalizer(**kwargs)


# --------------------------------------------------------------------------- loss


def test_loss_equals_hand_computation():
    logits = torch.tensor([[0.5, 2.0], [1.0, -1.0], [0.0, 0.3]], dtype=torch.float64)
    labels = torch.tensor([1, 0, 1])
    pred = torch.tensor(
        [[0.0, 0.0, 0.5, 0.5], [0.1, 0.1, 0.2, 0.2], [0.2, 0.3, 0.6, 0.9]], dtype=torch.float64
    )
    true = torch.tensor(
        [[0.25, 0.25, 0.75, 0.75], [0.0, 0.0, 0.0, 0.0], [0.2, 0.3, 0.6, 0.9]],
        dtype=torch.float64,
    )
    out = localization_loss(logits, pred, labels, true)

    lg = logits.numpy()
    log_softmax = lg - np.log(np.exp(lg).sum(1, keepdims=True))
    ce = -np.mean(log_softmax[[0, 1, 2], [1, 0, 1]])
    # only the two images with an object carry box terms; image 3 is predicted exactly
    l1 = (0.25 * 4 + 0.0) / 2
    # box 1: inter 1/16, union 7/16, enclosing 9/16 -> GIoU = 1/7 - (2/16) / (9/16)
    giou_1 = 1 / 7 - 2 / 9
    np.testing.assert_allclose(
        generalized_box_iou(pred.numpy()[:1], true.numpy()[:1])[0, 0], giou_1
    )
    giou_loss = ((1 - giou_1) + (1 - 1.0)) / 2
    assert out["ce"].item() == pytest.approx(ce, abs=1e-12)
    assert out["l1"].item() == pytest.approx(l1, abs=1e-12)
    assert out["giou"].item() == pytest.approx(giou_loss, abs=1e-12)
    assert out["loss"].item() == pytest.approx(ce + 5 * l1 + 2 * giou_loss, abs=1e-12)


def test_loss_without_objects_has_only_cross_entropy_and_backpropagates():
    logits = torch.zeros(2, 3, requires_grad=True)
    pred = torch.full((2, 4), 0.5, requires_grad=True)
    out = localization_loss(logits, pred, torch.tensor([0, 0]), torch.zeros(2, 4))
    assert out["loss"].item() == pytest.approx(np.log(3))
    out["loss"].backward()
    assert pred.grad is not None and (pred.grad == 0).all()


# --------------------------------------------------------------------------- dataset


def _visible_box(item: dict) -> np.ndarray:
    """Bounding box (x0, y0, x1, y1) of the bright rectangle in a dataset item's image."""
    red = item["image"][0].numpy()
    mask = red > (red.max() + red.min()) / 2
    rows, cols = np.nonzero(mask)
    return np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], float)


def test_box_dataset_without_augmentation_scales_the_box_exactly():
    image = _scene(60, 90, (30, 12, 75, 42))
    ds = BoxDataset([image], [[[30, 12, 75, 42]]], image_size=(20, 30), augment=False)
    item = ds[0]
    # 90 -> 30 columns (1/3), 60 -> 20 rows (1/3): (10, 4, 25, 14) / (30, 20)
    np.testing.assert_allclose(item["box"].numpy(), [10 / 30, 4 / 20, 25 / 30, 14 / 20], 1e-6)
    np.testing.assert_allclose(_visible_box(item), [10, 4, 25, 14])
    assert item["image"].dtype == torch.float32 and item["image"].shape == (3, 20, 30)


@pytest.mark.parametrize("crop", [1.0, 0.5])
@pytest.mark.parametrize("seed", range(4))
def test_box_dataset_augmented_box_stays_on_the_object(seed, crop):
    truth = (40, 30, 100, 70)
    image = _scene(100, 140, truth, seed=seed)
    ds = BoxDataset([image], [[truth]], image_size=(64, 64), augment=True, seed=seed, crop=crop)
    flipped = []
    for epoch in range(4):
        ds.set_epoch(epoch)
        item = ds[0]
        box = item["box"].numpy() * 64
        # the object's visible pixels are where the box says (area resampling: 1 px slack)
        np.testing.assert_allclose(_visible_box(item), box, atol=1.01)
        flipped.append(item)
    # the same epoch and index give the same item (resume and workers repeat it)
    ds.set_epoch(3)
    assert torch.equal(ds[0]["image"], flipped[-1]["image"])


def test_box_dataset_flip_mirrors_the_box():
    truth = (5, 10, 20, 30)  # off centre, so a flip moves it
    image = _scene(40, 40, truth)
    ds = BoxDataset([image], [[truth]], image_size=(40, 40), augment=True, seed=0)
    lefts = set()
    for epoch in range(12):
        ds.set_epoch(epoch)
        item = ds[0]
        np.testing.assert_allclose(_visible_box(item), item["box"].numpy() * 40, atol=1.01)
        lefts.add(bool(item["box"][0] < 0.5))
    assert lefts == {True, False}  # both orientations were drawn


def test_box_dataset_without_crop_only_flips_the_box():
    truth = (28, 10, 70, 50)
    ds = BoxDataset([_scene(60, 80, truth)], [[truth]], image_size=(30, 40), crop=0.0, seed=3)
    seen = set()
    for epoch in range(8):
        ds.set_epoch(epoch)
        seen.add(tuple(np.round(ds[0]["box"].numpy().astype(float), 4)))
    # (28, 10, 70, 50) / (80, 60) or its mirror (10, 10, 52, 50) / (80, 60)
    want = {tuple(np.round(np.array(b) / [80, 60, 80, 60], 4)) for b in (truth, (10, 10, 52, 50))}
    assert seen == want


def test_box_dataset_targets_the_largest_box_and_empty_images():
    boxes = [[[0, 0, 4, 4], [10, 10, 30, 20], [0, 0, 2, 2]], np.zeros((0, 4))]
    ds = BoxDataset(
        [np.zeros((40, 40, 3), np.uint8)] * 2,
        boxes,
        image_size=(40, 40),
        augment=False,
        labels_per_image=[[2, 3, 1], []],
        names=["a", "b"],
    )
    np.testing.assert_allclose(ds[0]["box"].numpy(), [0.25, 0.25, 0.75, 0.5])
    assert int(ds[0]["label"]) == 3 and ds[0]["case"] == "a"
    assert int(ds[1]["label"]) == 0 and ds[1]["box"].tolist() == [0, 0, 0, 0]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"boxes_per_image": [[[0, 0, 1, 1]]] * 2}, "boxes_per_image must have one entry"),
        ({"boxes_per_image": [[[5, 0, 1, 1]]]}, r"boxes_per_image\[0\]"),
        ({"labels_per_image": [[0]]}, r"labels_per_image\[0\] must be >= 1"),
        ({"image_size": (0, 8)}, "image_size"),
        ({"crop": 1.5}, "crop"),
    ],
)
def test_box_dataset_rejects_bad_input(kwargs, match):
    args = {"boxes_per_image": [[[0, 0, 1, 1]]], "image_size": (8, 8)} | kwargs
    with pytest.raises(ValueError, match=match):
        BoxDataset([np.zeros((8, 8), np.uint8)], **args)


# --------------------------------------------------------------------------- learning


def test_tiny_model_overfits_four_images():
    truths = [(2, 3, 14, 12), (16, 18, 30, 30), (4, 16, 20, 28), (18, 2, 28, 20)]
    images = [_scene(32, 32, b, seed=i) for i, b in enumerate(truths)]
    ds = BoxDataset(images, [[b] for b in truths], image_size=(32, 32), augment=False)
    x = torch.stack([ds[i]["image"] for i in range(4)])
    y = torch.stack([ds[i]["box"] for i in range(4)])
    labels = torch.ones(4, dtype=torch.int64)
    torch.manual_seed(0)
    net = BoxLocalizer(3, 1, base_channels=8, depth=3, box_grid=4, hidden=64, image_size=(32, 32))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    net.train()
    for _ in range(150):
        logits, pred = net(x)
        loss = localization_loss(logits, pred, labels, y)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    ious = [
        box_iou(localize_cnn(net, im)[0], np.array([b], float))[0, 0]
        for im, b in zip(images, truths, strict=True)
    ]
    assert min(ious) > 0.7, ious


# --------------------------------------------------------------------------- run folder


@pytest.fixture(scope="module")
def box_folder(tmp_path_factory):
    """10 synthetic images with labels.csv (VOC 1-based inclusive coordinates)."""
    root = tmp_path_factory.mktemp("boxes")
    rng = np.random.default_rng(1)
    rows = []
    for i in range(10):
        x0, y0 = (int(v) for v in rng.integers(0, 16, 2))
        w, h = (int(v) for v in rng.integers(8, 16, 2))
        write_image(root / "images" / f"im{i}.png", _scene(32, 32, (x0, y0, x0 + w, y0 + h)))
        rows.append([f"im{i}.png", 32, 32, "thing", x0 + 1, y0 + 1, x0 + w, y0 + h])
    with open(root / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax"])
        writer.writerows(rows)
    return root


TINY = {"image_size": (32, 32), "batch_size": 4, "base_channels": 4, "depth": 2, "progress": False}


def _weights(path):
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def test_train_writes_run_folder_and_uses_the_shared_split(box_folder, tmp_path):
    run = train_localizer(box_folder, tmp_path / "run", epochs=2, **TINY)
    for name in (
        "config.yaml",
        "metrics.csv",
        "curves.png",
        "best.safetensors",
        "last.safetensors",
        "state.pt",
    ):
        assert (run / name).is_file(), name
    with open(run / "metrics.csv") as f:
        table = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in table] == [1, 2]
    assert {"train_loss", "val_mean_iou", "val_ap50"} <= set(table[0])
    import json

    split = json.loads((run / "split.json").read_text())
    stems = sorted(f"im{i}" for i in range(10))
    assert split["val"] == split_cases(stems, val_fraction=0.2, seed=0)[1]
    meta = LocalizerMeta.from_extra(load_checkpoint(run)[3])
    assert meta.classes == ("thing",) and meta.epoch >= 1 and "val_mean_iou" in meta.metrics
    model = load_localizer(run)
    boxes, scores = localize_cnn(model, np.zeros((50, 70, 3), np.uint8))
    assert boxes.shape == (1, 4) and 0 <= scores[0] <= 1
    assert (boxes[0, 2:] <= [70, 50]).all()
    detector = CnnDetector.load(run)
    assert isinstance(detector, Detector) and detector.classes == ("thing",)
    found = detector.detect(np.zeros((50, 70, 3), np.uint8))
    np.testing.assert_array_equal(found.boxes, boxes)
    assert found.class_names == ("thing",) and found.classes.tolist() == [0]
    with pytest.raises(ValueError, match="already holds a training state"):
        train_localizer(box_folder, run, epochs=3, **TINY)


def test_resume_continues_from_the_saved_epoch(box_folder, tmp_path, monkeypatch):
    import segloc.engine.run as engine

    straight = train_localizer(box_folder, tmp_path / "a", epochs=3, **TINY)

    save_state = engine.save_training_state

    def crash_after_epoch_2(path, state):
        save_state(path, state)
        if state["epoch"] == 2:
            raise KeyboardInterrupt  # the process dies once epoch 2 is on disk

    monkeypatch.setattr(engine, "save_training_state", crash_after_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train_localizer(box_folder, tmp_path / "b", epochs=3, **TINY)
    monkeypatch.setattr(engine, "save_training_state", save_state)
    part = tmp_path / "b"
    assert torch.load(part / "state.pt", weights_only=True)["epoch"] == 2
    train_localizer(box_folder, part, epochs=3, resume=True, **TINY)
    with open(part / "metrics.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2, 3]
    a, b = _weights(straight / "last.safetensors"), _weights(part / "last.safetensors")
    assert a.keys() == b.keys()
    for k in a:  # the resumed run repeats the uninterrupted one
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)


def test_time_budget_stops_after_the_first_epoch(box_folder, tmp_path):
    run = train_localizer(box_folder, tmp_path / "t", time_budget=1e-3, **TINY)
    with open(run / "metrics.csv") as f:
        assert len(list(csv.DictReader(f))) == 1


@pytest.mark.parametrize("budget", ["soon", "-5m", 0])
def test_train_rejects_bad_time_budget(box_folder, tmp_path, budget):
    with pytest.raises(ValueError, match="duration"):
        train_localizer(box_folder, tmp_path / "x", time_budget=budget, **TINY)


def test_train_needs_epochs_or_budget(box_folder, tmp_path):
    with pytest.raises(ValueError, match="epochs or time_budget"):
        train_localizer(box_folder, tmp_path / "x", **TINY)


def test_read_box_dataset_from_csv_is_sorted(box_folder):
    names = [r["image_path"].name for r in read_box_dataset(box_folder)]
    assert names == sorted(names) and len(names) == 10


# --------------------------------------------------------------------------- loading


class _Boom:
    def __reduce__(self):
        return (exec, ("raise SystemExit('unpickled!')",))


def test_save_load_round_trip_without_unpickling(tmp_path, monkeypatch):
    torch.manual_seed(0)
    net = BoxLocalizer(3, 2, base_channels=4, depth=2, image_size=(16, 16)).eval()
    CnnDetector(net, ["a", "b"]).save(tmp_path / "m.safetensors")

    def no_unpickling(*args, **kwargs):
        raise AssertionError("loading must not unpickle")

    monkeypatch.setattr(pickle, "load", no_unpickling)
    monkeypatch.setattr(pickle, "loads", no_unpickling)
    monkeypatch.setattr(torch, "load", no_unpickling)
    loaded = load_localizer(tmp_path / "m.safetensors")
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        for a, b in zip(net(x), loaded(x), strict=True):
            torch.testing.assert_close(a, b)
    assert not loaded.training
    assert CnnDetector.load(tmp_path / "m.safetensors").classes == ("a", "b")


@pytest.mark.parametrize("name", ["evil.safetensors", "evil.pt"])
def test_pickled_files_are_refused(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(pickle.dumps({"model": _Boom()}))
    with pytest.raises(CheckpointError, match=str(path.name)):
        load_localizer(path)


def test_other_models_checkpoints_are_refused(tmp_path):
    from segloc.nn import create_model
    from segloc.nn.checkpoint import save_checkpoint

    kwargs = {"in_channels": 1, "num_classes": 2, "base_channels": 4, "depth": 2}
    path = save_checkpoint(
        tmp_path / "u.safetensors", "unet", kwargs, create_model("unet", **kwargs)
    )
    with pytest.raises(CheckpointError, match="box_localizer"):
        load_localizer(path)
