"""A learned single-object localizer: a small CNN with a class head and a box-regression head.

The classification + localization formulation [1]_: one network looks at the whole image and
answers both "what is it" (class logits, index 0 = no object) and "where is it" (four numbers,
the box), trained jointly. The box head is regressed with L1 + generalized IoU [2]_, weighted
as DETR [3]_ (L1 5, GIoU 2, class cross-entropy 1).

Training (:func:`train_localizer`) follows the engine's run-folder conventions: ``config.yaml``,
``metrics.csv`` (one row per epoch), ``curves.png``, ``best.safetensors`` (by validation mean
IoU) and ``last.safetensors``, and ``state.pt`` (model, optimiser, epoch, history, RNG) written
atomically after every epoch for ``resume=True``. Checkpoints are safetensors with the model's
keyword arguments in the metadata (the layout of :mod:`segloc.nn.checkpoint`, read back with
:func:`segloc.nn.checkpoint.load_checkpoint`), so loading never unpickles; ``state.pt`` is read
with ``torch.load(weights_only=True)``.

References
----------
.. [1] Sermanet, P. et al. "OverFeat: Integrated Recognition, Localization and Detection using
   Convolutional Networks", ICLR 2014, :arxiv:`1312.6229` (a regression head beside the
   classifier on shared convolutional features).
.. [2] Rezatofighi, H. et al. "Generalized Intersection over Union: A Metric and a Loss for
   Bounding Box Regression", CVPR 2019, :doi:`10.1109/CVPR.2019.00075`
.. [3] Carion, N. et al. "End-to-End Object Detection with Transformers", ECCV 2020,
   :doi:`10.1007/978-3-030-58452-8_13` (box loss ``5 L1 + 2 (1 - GIoU)`` on normalised boxes).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from segloc._validation import atomic_path, check_int, check_positive
from segloc.boxes import box_iou, convert, generalized_box_iou, scale_boxes

__all__ = [
    "BoxLocalizer",
    "evaluate_localizer",
    "load_localizer",
    "localization_loss",
    "localize_cnn",
    "save_localizer",
    "train_localizer",
]

MODEL_NAME = "box_localizer"


# --------------------------------------------------------------------------- model


class BoxLocalizer(nn.Module):
    """Small CNN for classification + localization of one object per image [1]_.

    ``depth`` stages of two 3x3 convolution-BatchNorm-ReLU layers
    (:class:`segloc.nn.blocks.ConvBlock`) each followed by 2x2 max pooling; channels
    ``base_channels * 2**i`` (capped at ``8 * base_channels``). Two heads share them:

    - class head: global average pooling -> linear -> ``num_classes + 1`` logits
      (index 0 = no object, as DETR's "no object" class [3]_);
    - box head: average pooling to a ``box_grid x box_grid`` map (global pooling would throw
      away *where* the features are, which is the answer) -> linear -> ReLU -> linear -> 4
      sigmoids read as ``(cx, cy, w, h)`` in [0, 1] and returned as ``(x0, y0, x1, y1)``
      normalised by the input width and height.

    Parameters
    ----------
    in_channels : int
    num_classes : int
        Object classes (1 for the single-class task).
    base_channels : int, optional
    depth : int, optional
        Number of conv + pool stages.
    box_grid : int, optional
        Side of the pooled map the box head sees (1 = global average pooling).
    hidden : int, optional
        Width of the box head's hidden layer.
    image_size : (int, int), optional
        Input size (rows, cols) images are resized to by :func:`localize_cnn`; the network
        itself takes any size of at least ``2**depth``.

    Returns (forward)
    -----------------
    logits : (B, num_classes + 1) Tensor
    boxes : (B, 4) Tensor
        Normalised ``(x0, y0, x1, y1)``, ``x1 >= x0`` and ``y1 >= y0`` (may leave [0, 1] by
        up to half a box; :func:`localize_cnn` clips).

    References
    ----------
    .. [1] Sermanet et al., ICLR 2014, :arxiv:`1312.6229`
    .. [2] Rezatofighi et al., CVPR 2019, :doi:`10.1109/CVPR.2019.00075`
    .. [3] Carion et al., ECCV 2020, :doi:`10.1007/978-3-030-58452-8_13`

    Examples
    --------
    >>> net = BoxLocalizer(3, 1, base_channels=4, depth=2, image_size=(16, 16))
    >>> logits, boxes = net(torch.zeros(2, 3, 16, 16))
    >>> tuple(logits.shape), tuple(boxes.shape)
    ((2, 2), (2, 4))
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1,
        *,
        base_channels: int = 16,
        depth: int = 5,
        box_grid: int = 4,
        hidden: int = 128,
        image_size: Sequence[int] = (160, 160),
    ) -> None:
        super().__init__()
        from segloc.nn.blocks import ConvBlock

        in_channels = check_int(in_channels, name="in_channels", minimum=1)
        num_classes = check_int(num_classes, name="num_classes", minimum=1)
        base_channels = check_int(base_channels, name="base_channels", minimum=1)
        depth = check_int(depth, name="depth", minimum=1)
        box_grid = check_int(box_grid, name="box_grid", minimum=1)
        hidden = check_int(hidden, name="hidden", minimum=1)
        size = [int(v) for v in np.atleast_1d(image_size)]
        if len(size) != 2 or min(size) < 2**depth:
            raise ValueError(
                f"image_size must be two ints >= 2**depth = {2**depth} (rows, cols), "
                f"got {image_size}"
            )
        self.config = {
            "in_channels": in_channels,
            "num_classes": num_classes,
            "base_channels": base_channels,
            "depth": depth,
            "box_grid": box_grid,
            "hidden": hidden,
            "image_size": size,
        }
        self.num_classes = num_classes
        self.image_size = (size[0], size[1])
        layers: list[nn.Module] = []
        ch = in_channels
        for i in range(depth):
            out = base_channels * 2 ** min(i, 3)
            layers += [ConvBlock(ch, out, padding="same", norm="batch"), nn.MaxPool2d(2)]
            ch = out
        self.features = nn.Sequential(*layers)
        self.class_head = nn.Linear(ch, num_classes + 1)
        self.box_pool = nn.AdaptiveAvgPool2d(box_grid)
        self.box_head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(ch * box_grid * box_grid, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, 4),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        logits = self.class_head(f.mean(dim=(2, 3)))
        cxcywh = torch.sigmoid(self.box_head(self.box_pool(f)))
        return logits, convert(cxcywh, "cxcywh", "xyxy")


# --------------------------------------------------------------------------- loss


def localization_loss(
    logits: torch.Tensor,
    pred_boxes: torch.Tensor,
    labels: torch.Tensor,
    true_boxes: torch.Tensor,
    *,
    class_weight: float = 1.0,
    l1_weight: float = 5.0,
    giou_weight: float = 2.0,
) -> dict[str, torch.Tensor]:
    """Classification + box loss: ``class_weight CE + l1_weight L1 + giou_weight (1 - GIoU)``.

    Cross-entropy over every image; the box terms only over images with an object
    (``labels > 0``), averaged per box: L1 is the sum over the four normalised coordinates
    (as DETR [2]_), GIoU from :func:`segloc.boxes.generalized_box_iou` [1]_.

    Parameters
    ----------
    logits : (B, K + 1) Tensor
    pred_boxes, true_boxes : (B, 4) Tensor
        Normalised ``(x0, y0, x1, y1)``.
    labels : (B,) int64 Tensor
        0 = no object.
    class_weight, l1_weight, giou_weight : float, optional
        DETR's 1, 5, 2 by default.

    Returns
    -------
    dict
        ``loss`` (the weighted total), ``ce``, ``l1``, ``giou`` (``1 - GIoU``, mean).

    References
    ----------
    .. [1] Rezatofighi et al., CVPR 2019, :doi:`10.1109/CVPR.2019.00075`
    .. [2] Carion et al., ECCV 2020, :doi:`10.1007/978-3-030-58452-8_13`
    """
    ce = F.cross_entropy(logits, labels)
    pos = labels > 0
    if bool(pos.any()):
        p, t = pred_boxes[pos], true_boxes[pos]
        l1 = (p - t).abs().sum(1).mean()
        giou = (1 - torch.diagonal(generalized_box_iou(p, t))).mean()
    else:  # nothing to localise: keep the graph so backward() still works
        l1 = giou = pred_boxes.sum() * 0
    loss = class_weight * ce + l1_weight * l1 + giou_weight * giou
    return {"loss": loss, "ce": ce, "l1": l1, "giou": giou}


# --------------------------------------------------------------------------- checkpoints


def save_localizer(
    path: str | os.PathLike, model: BoxLocalizer, *, extra: dict[str, Any] | None = None
) -> Path:
    """Write ``model`` to a safetensors file (weights + constructor kwargs), atomically.

    Same layout as :func:`segloc.nn.checkpoint.save_checkpoint` (metadata ``segloc_model`` =
    ``"box_localizer"``, ``segloc_kwargs``, ``segloc_extra``); ``extra`` must be
    JSON-serialisable.
    """
    from safetensors.torch import save_file

    if not isinstance(model, BoxLocalizer):
        raise TypeError(f"model must be a BoxLocalizer, got {type(model).__name__}")
    metadata = {
        "segloc_model": MODEL_NAME,
        "segloc_kwargs": json.dumps(model.config, sort_keys=True),
        "segloc_extra": json.dumps(extra or {}, sort_keys=True, allow_nan=False),
    }
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return Path(path)


def load_localizer(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> BoxLocalizer:
    """Rebuild a :class:`BoxLocalizer` from a checkpoint, in eval mode (nothing is unpickled).

    ``path`` may also be a run folder (its ``best.safetensors`` is loaded). The stored
    ``extra`` dict (epoch, metrics, class names) is kept as ``model.extra``.

    Raises
    ------
    FileNotFoundError
    segloc.nn.checkpoint.CheckpointError
        Not a box-localizer checkpoint, or weights that do not fit.
    """
    from segloc.nn.checkpoint import CheckpointError, load_checkpoint

    path = Path(path)
    if path.is_dir():
        path = path / "best.safetensors"
    name, kwargs, state, extra = load_checkpoint(path)
    if name != MODEL_NAME:
        raise CheckpointError(f"{path}: model must be {MODEL_NAME!r}, got {name!r}")
    try:
        model = BoxLocalizer(**kwargs)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: cannot rebuild {MODEL_NAME}: {err}") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise CheckpointError(f"{path}: weights do not fit {MODEL_NAME}: {first}") from None
    model.extra = extra
    return model.to(device).eval()


# --------------------------------------------------------------------------- inference


def localize_cnn(
    model: BoxLocalizer,
    image: Any,
    *,
    return_labels: bool = False,
) -> tuple[np.ndarray, ...]:
    """Box of the object in ``image`` as predicted by a :class:`BoxLocalizer`.

    The image is prepared as in training without augmentation
    (:func:`segloc.engine.data.box_input`: resized to ``model.image_size``, ImageNet
    normalisation) and the normalised box is scaled back to the image's pixels.

    Parameters
    ----------
    model : BoxLocalizer
    image : (rows, cols) or (rows, cols, 3|4) ndarray
        uint8 (or float in [0, 1]).
    return_labels : bool, optional
        Also return the predicted class (1..K).

    Returns
    -------
    boxes : (1, 4) float64 ndarray
        ``(x0, y0, x1, y1)`` in pixels, clipped to the image.
    scores : (1,) float64 ndarray
        Probability of the predicted class (softmax over "no object" and the classes).
    labels : (1,) int64 ndarray
        Only with ``return_labels``.

    Examples
    --------
    >>> net = BoxLocalizer(3, 1, base_channels=4, depth=2, image_size=(16, 16))
    >>> boxes, scores = localize_cnn(net, np.zeros((30, 40, 3), np.uint8))
    >>> boxes.shape, scores.shape, bool((boxes[:, 2:] <= [40, 30]).all())
    ((1, 4), (1,), True)
    """
    if not isinstance(model, BoxLocalizer):
        raise TypeError(f"model must be a BoxLocalizer, got {type(model).__name__}")
    image = np.asarray(image)
    if image.ndim not in (2, 3) or image.size == 0:
        raise ValueError(f"image must be (rows, cols) or (rows, cols, 3|4), got {image.shape}")
    boxes, scores, labels = _predict(model, [image])
    if return_labels:
        return boxes, scores, labels
    return boxes, scores


@torch.no_grad()
def _predict(
    model: BoxLocalizer, images: Sequence[np.ndarray], *, batch_size: int = 16
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel boxes (N, 4), scores (N,), labels (N,) for a list of images."""
    from segloc.engine.data import box_input

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out_b, out_s, out_l = [], [], []
    try:
        for i in range(0, len(images), batch_size):
            chunk = images[i : i + batch_size]
            x = torch.from_numpy(np.stack([box_input(im, model.image_size) for im in chunk]))
            logits, boxes = model(x.to(device))
            prob = logits.softmax(1)[:, 1:]  # the object classes; column 0 is "no object"
            score, label = prob.max(1)
            boxes = boxes.clamp(0, 1).double().cpu().numpy()
            for im, b in zip(chunk, boxes, strict=True):
                h, w = im.shape[:2]
                out_b.append(b * np.array([w, h, w, h], np.float64))
            out_s.append(score.double().cpu().numpy())
            out_l.append(label.cpu().numpy() + 1)
    finally:
        model.train(was_training)
    return np.asarray(out_b).reshape(-1, 4), np.concatenate(out_s), np.concatenate(out_l)


# --------------------------------------------------------------------------- data


def _load_images(
    records: Sequence[dict], max_side: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Images (RGB uint8) shrunk so the longer side is <= ``max_side``, boxes scaled alike."""
    import cv2

    from segloc.io import read_image

    images, boxes = [], []
    for rec in records:
        image, _ = read_image(rec["image_path"])
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        image = np.ascontiguousarray(image[..., :3])
        h, w = image.shape[:2]
        f = min(1.0, max_side / max(h, w))
        if f < 1:
            size = (max(1, round(w * f)), max(1, round(h * f)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        b = np.asarray(rec["boxes"], np.float64).reshape(-1, 4)
        images.append(image)
        boxes.append(scale_boxes(b, (image.shape[0] / h, image.shape[1] / w)) if len(b) else b)
    return images, boxes


def evaluate_localizer(
    model: BoxLocalizer,
    images: Sequence[np.ndarray],
    boxes: Sequence[np.ndarray],
    labels: Sequence[Sequence[int]] | None = None,
) -> dict[str, Any]:
    """Mean IoU with the largest true box, share with IoU >= 0.5, and COCO AP of the
    one-box-per-image predictions (:func:`segloc.detection_metrics.evaluate_detections`,
    every true box counted)."""
    from segloc.boxes import box_area
    from segloc.coco import box_to_coco
    from segloc.detection_metrics import evaluate_detections

    pred, scores, pred_labels = _predict(model, list(images))
    ious = []
    gt, res = [], []
    for i, b in enumerate(boxes):
        b = np.asarray(b, np.float64).reshape(-1, 4)
        cls = [1] * len(b) if labels is None else list(labels[i])
        if len(b):
            target = b[int(np.argmax(box_area(b)))]
            ious.append(float(box_iou(pred[i : i + 1], target[None])[0, 0]))
        for box, c in zip(b, cls, strict=True):
            gt.append(
                {
                    "id": len(gt) + 1,
                    "image_id": i + 1,
                    "category_id": int(c),
                    "bbox": box_to_coco(box),
                    "area": float(box_area(box[None])[0]),
                    "iscrowd": 0,
                }
            )
        res.append(
            {
                "image_id": i + 1,
                "category_id": int(pred_labels[i]),
                "bbox": box_to_coco(pred[i]),
                "score": float(scores[i]),
            }
        )
    cats = sorted({int(a["category_id"]) for a in gt} | {int(r["category_id"]) for r in res})
    truth = {
        "images": [
            {"id": i + 1, "height": im.shape[0], "width": im.shape[1]}
            for i, im in enumerate(images)
        ],
        "annotations": gt,
        "categories": [{"id": c, "name": str(c)} for c in cats],
    }
    ev = evaluate_detections(truth, res)
    ious_arr = np.asarray(ious)
    return {
        "mean_iou": float(ious_arr.mean()) if len(ious_arr) else float("nan"),
        "iou50": float((ious_arr >= 0.5).mean()) if len(ious_arr) else float("nan"),
        "AP50": float(ev["AP50"]),
        "AP": float(ev["AP"]),
        "ious": ious_arr,
        "boxes": pred,
        "scores": scores,
    }


# --------------------------------------------------------------------------- training


def _lr_at(epoch: int, lr: float, epochs: int | None) -> float:
    """Cosine decay to lr/100 over ``epochs`` (constant when only a time budget is set)."""
    from segloc.engine.train import lr_factor

    if epochs is None:
        return lr
    return lr * (0.01 + 0.99 * lr_factor("cosine", epoch / epochs))


def train_localizer(
    data_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    epochs: int | None = None,
    time_budget: float | str | None = None,
    resume: bool = False,
    image_size: Sequence[int] = (160, 160),
    batch_size: int = 16,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    device: str | torch.device = "cpu",
    val_fraction: float = 0.2,
    seed: int = 0,
    base_channels: int = 16,
    depth: int = 5,
    max_side: int | None = None,
    crop: float = 0.5,
    num_workers: int = 0,
    progress: bool = True,
) -> Path:
    """Train a :class:`BoxLocalizer` on a folder of images with box annotations.

    ``data_dir`` holds ``images/`` and ``annotations/*.xml`` (VOC) or ``labels.csv``
    (:func:`read_box_records`); classes are the sorted annotation class names (index 1..K).
    Validation cases: :func:`segloc.engine.data.split_cases` of the sorted image stems
    with ``val_fraction`` and ``seed``. Training items come from
    :class:`segloc.engine.data.BoxDataset` (box-keeping crop, flip, colour jitter; the
    largest box of each image is its target); AdamW with cosine decay to ``lr / 100``
    over ``epochs`` (constant ``lr`` under a time budget alone); loss
    :func:`localization_loss`. After each epoch: validation mean IoU and AP50, a row of
    ``metrics.csv``, ``curves.png``, ``last.safetensors``, ``best.safetensors`` (best
    validation mean IoU) and ``state.pt`` (atomic).

    Parameters
    ----------
    data_dir, out : path-like
        Dataset folder; run folder (must not already hold a run unless ``resume``).
    epochs : int, optional
        Total epochs (counting those before a resume).
    time_budget : float or str, optional
        Seconds or ``"20m"``/``"1h"``, for this call: no epoch is started that would
        (at the mean epoch time so far) end after it. At least one of ``epochs`` and
        ``time_budget`` is required.
    resume : bool, optional
        Continue from ``out/state.pt`` (model, optimiser, epoch, history, best score,
        RNG state); the per-epoch data order and augmentation are seeded by
        ``(seed, epoch)``, so a resumed run repeats the uninterrupted one. Without a
        state file the run starts afresh.
    image_size : (int, int), optional
        Network input (rows, cols).
    crop : float, optional
        Augmentation crop strength (:class:`segloc.engine.data.BoxDataset`): each margin
        around the box loses up to this share (0.5 scored a little better than 1.0 on a
        split of the raccoon *training* images).
    max_side : int, optional
        Images are decoded once and kept shrunk to this longer side (default
        ``2 * max(image_size)``).
    num_workers : int, optional
        DataLoader worker processes (0: load in this process).
    progress : bool, optional
        tqdm bar per epoch on stderr.

    Returns
    -------
    Path
        The run folder.

    References
    ----------
    .. [1] Sermanet et al., ICLR 2014, :arxiv:`1312.6229`
    .. [2] Rezatofighi et al., CVPR 2019, :doi:`10.1109/CVPR.2019.00075`
    .. [3] Carion et al., ECCV 2020, :doi:`10.1007/978-3-030-58452-8_13`
    """
    import yaml
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from segloc.engine import train as engine
    from segloc.engine.data import BoxDataset
    from segloc.io import write_csv
    from segloc.viz import plot_curves

    if epochs is None and time_budget is None:
        raise ValueError("epochs or time_budget must be given, got neither")
    if epochs is not None:
        epochs = check_int(epochs, name="epochs", minimum=1)
    budget = engine.parse_duration(time_budget) if time_budget is not None else None
    batch_size = check_int(batch_size, name="batch_size", minimum=1)
    num_workers = check_int(num_workers, name="num_workers", minimum=0)
    check_positive(lr, name="lr")
    check_positive(weight_decay, name="weight_decay", strict=False)
    size = [int(v) for v in np.atleast_1d(image_size)]
    if len(size) != 2:
        raise ValueError(f"image_size must be two ints (rows, cols), got {image_size}")
    max_side = (
        2 * max(size) if max_side is None else check_int(max_side, name="max_side", minimum=1)
    )
    out = Path(out)
    state_path = out / "state.pt"
    if not resume and (state_path.exists() or (out / "metrics.csv").exists()):
        raise ValueError(f"out must not hold a run already (pass resume=True), got {out}")
    dev = engine.resolve_device(device)

    from segloc.localize.annotations import read_box_dataset, split_records

    records = read_box_dataset(data_dir)
    classes = sorted({c for r in records for c in r["classes"]})
    if not classes:
        raise ValueError(f"data_dir must hold at least one box, got none in {data_dir}")
    train_recs, val_recs = split_records(records, val_fraction=val_fraction, seed=seed)
    if not train_recs or not val_recs:
        raise ValueError(
            f"val_fraction must leave cases for training and validation, got "
            f"{len(train_recs)} / {len(val_recs)} of {len(records)}"
        )

    def class_ids(recs: Sequence[dict]) -> list[list[int]]:
        return [[classes.index(c) + 1 for c in r["classes"]] for r in recs]

    train_images, train_boxes = _load_images(train_recs, max_side)
    val_images, val_boxes = _load_images(val_recs, max_side)
    dataset = BoxDataset(
        train_images,
        train_boxes,
        image_size=size,
        augment=True,
        seed=seed,
        crop=crop,
        labels_per_image=class_ids(train_recs),
        names=[Path(r["image_path"]).stem for r in train_recs],
    )
    config = {
        "task": "box_localizer",
        "data_dir": str(Path(data_dir).resolve()),
        "epochs": epochs,
        "time_budget": budget,
        "image_size": size,
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "optimizer": "AdamW",
        "schedule": "cosine" if epochs else "constant",
        "loss": {"ce": 1.0, "l1": 5.0, "giou": 2.0},
        "device": str(dev),
        "val_fraction": val_fraction,
        "seed": seed,
        "base_channels": base_channels,
        "depth": depth,
        "max_side": max_side,
        "crop": crop,
        "classes": classes,
        "train_cases": [Path(r["image_path"]).stem for r in train_recs],
        "val_cases": [Path(r["image_path"]).stem for r in val_recs],
    }

    torch.manual_seed(seed)
    model = BoxLocalizer(
        3, len(classes), base_channels=base_channels, depth=depth, image_size=size
    ).to(dev)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    history: list[dict[str, Any]] = []
    start, best = 0, -math.inf
    if resume and state_path.is_file():
        state = engine.load_training_state(state_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start, best, history = int(state["epoch"]), float(state["best"]), list(state["history"])
        engine.set_rng_state(state["rng"])
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "config.yaml") as tmp:
        tmp.write_text(yaml.safe_dump(config, sort_keys=False))

    began = time.monotonic()
    epoch = start
    while epochs is None or epoch < epochs:
        spent = time.monotonic() - began
        done = epoch - start
        if budget is not None and done and spent + spent / done > budget:
            break
        t0 = time.monotonic()
        rate = _lr_at(epoch, lr, epochs)
        for group in optimizer.param_groups:
            group["lr"] = rate
        dataset.set_epoch(epoch)
        loader = DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=True,
            num_workers=num_workers,
            generator=torch.Generator().manual_seed(seed * 100_003 + epoch),
            drop_last=len(dataset) > batch_size,  # a batch of 1 breaks BatchNorm
        )
        model.train()
        sums = {"loss": 0.0, "ce": 0.0, "l1": 0.0, "giou": 0.0}
        seen = 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}", disable=not progress, leave=False)
        for batch in bar:
            x = batch["image"].to(dev)
            logits, pred = model(x)
            parts = localization_loss(logits, pred, batch["label"].to(dev), batch["box"].to(dev))
            optimizer.zero_grad(set_to_none=True)
            parts["loss"].backward()
            optimizer.step()
            n = len(x)
            seen += n
            for k in sums:
                sums[k] += float(parts[k].detach()) * n
            bar.set_postfix(loss=f"{sums['loss'] / seen:.3f}")
        # on the shrunk images: IoU, and so AP50 and AP, do not change when both axes scale
        scores = evaluate_localizer(model, val_images, val_boxes, class_ids(val_recs))
        epoch += 1
        row = {
            "epoch": epoch,
            "train_loss": sums["loss"] / max(seen, 1),
            "train_ce": sums["ce"] / max(seen, 1),
            "train_l1": sums["l1"] / max(seen, 1),
            "train_giou": sums["giou"] / max(seen, 1),
            "val_mean_iou": scores["mean_iou"],
            "val_iou50": scores["iou50"],
            "val_ap50": scores["AP50"],
            "val_ap": scores["AP"],
            "lr": rate,
            "seconds": time.monotonic() - t0,
        }
        history.append(row)
        extra = {
            "epoch": epoch,
            "classes": classes,
            "metrics": {k: float(v) for k, v in row.items()},
        }
        save_localizer(out / "last.safetensors", model, extra=extra)
        if row["val_mean_iou"] > best:
            best = row["val_mean_iou"]
            save_localizer(out / "best.safetensors", model, extra=extra)
        write_csv(out / "metrics.csv", history)
        plot_curves(
            {
                "train loss": [r["train_loss"] for r in history],
                "val mean IoU": [r["val_mean_iou"] for r in history],
                "val AP50": [r["val_ap50"] for r in history],
            },
            out / "curves.png",
            title="box localizer",
        )
        engine.save_training_state(
            state_path,
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "epoch": epoch,
                "best": best,
                "history": history,
                "rng": engine.rng_state(),
            },
        )
        if progress:
            tqdm.write(
                f"epoch {epoch}: loss {row['train_loss']:.4f}, val mean IoU "
                f"{row['val_mean_iou']:.3f}, AP50 {row['val_ap50']:.3f}"
            )
    return out
