"""The CNN box localizer as a detector: training on the shared loop, detection, scoring.

The network and its loss are :class:`segloc.nn.localizer.BoxLocalizer` and
:func:`segloc.nn.localizer.localization_loss` (a class head and a box head, CE + L1 + GIoU).
:func:`train_localizer` trains it on a folder of images with box annotations with the loop
every segloc trainer shares (:func:`segloc.engine.run.fit`): the same run folder
(``config.yaml``, ``split.json``, ``metrics.csv``, ``curves.png``, ``state.pt``,
``best.safetensors`` by validation mean IoU, ``last.safetensors``), the same budget rule
(the clock checked before every step, validation included), the same resume guard.
Checkpoints are :func:`segloc.nn.checkpoint.save_checkpoint` files whose ``extra`` is a
:class:`~segloc.nn.checkpoint.LocalizerMeta` (class names), so loading never unpickles.
:class:`CnnDetector` is the trained network as a
:class:`~segloc.localize.detect.Detector`.

References
----------
.. [1] Sermanet, P. et al. "OverFeat: Integrated Recognition, Localization and Detection using
   Convolutional Networks", ICLR 2014, :arxiv:`1312.6229`
.. [2] Rezatofighi, H. et al. "Generalized Intersection over Union", CVPR 2019,
   :doi:`10.1109/CVPR.2019.00075`
.. [3] Carion, N. et al. "End-to-End Object Detection with Transformers", ECCV 2020,
   :doi:`10.1007/978-3-030-58452-8_13`
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segloc._validation import check_int, check_positive
from segloc.boxes import box_area, box_iou
from segloc.coco import box_to_coco, coco_dataset, coco_results
from segloc.detection_metrics import evaluate_detections
from segloc.engine.run import Budget, RunFolder, fit, lr_factor, resolve_device
from segloc.localize.annotations import read_box_dataset, split_records
from segloc.localize.data import BoxDataset, box_input, load_images
from segloc.localize.detect import Detections
from segloc.nn.checkpoint import (
    CheckpointError,
    LocalizerMeta,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from segloc.nn.localizer import BoxLocalizer, localization_loss

__all__ = [
    "CnnDetector",
    "evaluate_localizer",
    "load_localizer",
    "localize_cnn",
    "train_localizer",
]

MODEL_NAME = "box_localizer"

# --------------------------------------------------------------------------- checkpoints


def load_localizer(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> BoxLocalizer:
    """Rebuild a :class:`BoxLocalizer` from a checkpoint or a run folder, in eval mode.

    Raises
    ------
    FileNotFoundError
    segloc.nn.checkpoint.CheckpointError
        Not a box-localizer checkpoint, or weights that do not fit.
    """
    name = load_checkpoint(path)[0]
    if name != MODEL_NAME:
        raise CheckpointError(f"{path}: model must be {MODEL_NAME!r}, got {name!r}")
    return load_model(path, device=device)


# --------------------------------------------------------------------------- inference


def localize_cnn(
    model: BoxLocalizer,
    image: Any,
    *,
    return_labels: bool = False,
) -> tuple[np.ndarray, ...]:
    """Box of the object in ``image`` as predicted by a :class:`BoxLocalizer`.

    The image is prepared as in training without augmentation
    (:func:`segloc.localize.data.box_input`: resized to ``model.image_size``, ImageNet
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


class CnnDetector:
    """A trained :class:`BoxLocalizer` as a :class:`~segloc.localize.detect.Detector`: one box
    per image, its class and the class probability as the score.

    Parameters
    ----------
    model : BoxLocalizer
    classes : sequence of str
        Names of the model's classes 1..K.
    """

    def __init__(self, model: BoxLocalizer, classes: Sequence[str] = ("object",)) -> None:
        if not isinstance(model, BoxLocalizer):
            raise TypeError(f"model must be a BoxLocalizer, got {type(model).__name__}")
        self.model = model
        self.classes = tuple(str(c) for c in classes)
        if len(self.classes) != model.num_classes:
            raise ValueError(
                f"classes must name the model's {model.num_classes} classes, got {self.classes}"
            )

    def detect(
        self, image: Any, *, score_threshold: float | None = None, max_detections: int = 100
    ) -> Detections:
        """The box of the object in ``image`` (none if its score is under the threshold)."""
        boxes, scores, labels = localize_cnn(self.model, image, return_labels=True)
        found = Detections(boxes, scores, labels - 1, self.classes)
        return found.filter(score_threshold=score_threshold, max_detections=max_detections)

    def save(self, path: str | os.PathLike, *, meta: LocalizerMeta | None = None) -> Path:
        """A segloc checkpoint (safetensors) with the class names."""
        meta = meta or LocalizerMeta(self.classes)
        return save_checkpoint(
            path, MODEL_NAME, self.model.config, self.model, extra=meta.to_extra()
        )

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str | torch.device = "cpu") -> CnnDetector:
        """From a checkpoint or a run folder (its ``best.safetensors``)."""
        model = load_localizer(path, device=device)
        meta = LocalizerMeta.from_extra(load_checkpoint(path)[3], path=path)
        classes = meta.classes if len(meta.classes) == model.num_classes else ("object",)
        return cls(model, classes)


def evaluate_localizer(
    model: BoxLocalizer,
    images: Sequence[np.ndarray],
    boxes: Sequence[np.ndarray],
    labels: Sequence[Sequence[int]] | None = None,
) -> dict[str, Any]:
    """Mean IoU with the largest true box, share with IoU >= 0.5, and COCO AP of the
    one-box-per-image predictions (:func:`segloc.detection_metrics.evaluate_detections`,
    every true box counted)."""

    pred, scores, pred_labels = _predict(model, list(images))
    ious, truth, results = [], [], []
    for i, b in enumerate(boxes):
        b = np.asarray(b, np.float64).reshape(-1, 4)
        cls = [1] * len(b) if labels is None else list(labels[i])
        if len(b):
            target = b[int(np.argmax(box_area(b)))]
            ious.append(float(box_iou(pred[i : i + 1], target[None])[0, 0]))
        truth += [
            {"image_id": i + 1, "category_id": int(c), "bbox": box_to_coco(box)}
            for box, c in zip(b, cls, strict=True)
        ]
        results += coco_results(i + 1, pred[i : i + 1], scores[i : i + 1], pred_labels[i : i + 1])
    cats = sorted({a["category_id"] for a in truth} | {int(r["category_id"]) for r in results})
    dataset = coco_dataset(
        [{"id": i + 1, "height": im.shape[0], "width": im.shape[1]} for i, im in enumerate(images)],
        truth,
        [{"id": c, "name": str(c)} for c in cats],
    )
    ev = evaluate_detections(dataset, results)
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


class _LocalizerTask:
    """The box localizer for :func:`segloc.engine.run.fit`: one step, one validation."""

    score = "val_mean_iou"

    def __init__(
        self,
        dataset: BoxDataset,
        val: tuple[list[np.ndarray], list[np.ndarray], list[list[int]]],
        classes: list[str],
        *,
        model: BoxLocalizer,
        device: torch.device,
        lr: float,
        weight_decay: float,
        epochs: int | None,
        batch_size: int,
        num_workers: int,
        seed: int,
    ) -> None:
        self.dataset, self.val, self.classes = dataset, val, classes
        self.model, self.device = model.to(device), device
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        self.lr, self.epochs = lr, epochs
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        drop = len(dataset) > batch_size  # a batch of 1 breaks BatchNorm
        self.steps_per_epoch = max(len(dataset) // batch_size if drop else 1, 1)

    def batches(self, epoch: int) -> Iterable[Any]:
        from torch.utils.data import DataLoader

        # cosine decay to lr / 100 over the epochs, set per epoch (constant under a time
        # budget alone); each epoch's order and augmentation are seeded by (seed, epoch)
        index = epoch - 1
        factor = (
            1.0 if self.epochs is None else 0.01 + 0.99 * lr_factor("cosine", index / self.epochs)
        )
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr * factor
        self.dataset.set_epoch(index)
        self.model.train()
        return DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            shuffle=True,
            num_workers=self.num_workers,
            generator=torch.Generator().manual_seed(self.seed * 100_003 + index),
            drop_last=len(self.dataset) > self.batch_size,
        )

    def train_step(self, batch: Mapping[str, torch.Tensor], progress: float) -> dict[str, float]:
        logits, pred = self.model(batch["image"].to(self.device))
        parts = localization_loss(
            logits, pred, batch["label"].to(self.device), batch["box"].to(self.device)
        )
        self.optimizer.zero_grad(set_to_none=True)
        if not bool(torch.isfinite(parts["loss"].detach())):
            return {"loss": float("nan")}
        parts["loss"].backward()
        self.optimizer.step()
        return {k: float(v.detach()) for k, v in parts.items()}

    def current_lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def end_epoch(self, dist: Any) -> None:
        pass

    def validate(self, epoch: int) -> dict[str, float]:
        # on the shrunk images: IoU, and so AP50 and AP, do not change when both axes scale
        scores = evaluate_localizer(self.model, *self.val)
        return {
            "val_mean_iou": scores["mean_iou"],
            "val_iou50": scores["iou50"],
            "val_ap50": scores["AP50"],
            "val_ap": scores["AP"],
        }

    def validated(self, epoch: int, best: bool) -> None:
        pass

    def save(self, path: Path, row: Mapping[str, Any]) -> None:
        metrics = {k: float(v) for k, v in row.items() if isinstance(v, (int, float))}
        meta = LocalizerMeta(tuple(self.classes), int(row["epoch"]), metrics)
        CnnDetector(self.model, self.classes).save(path, meta=meta)

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])

    def curves(self, history: Sequence[Mapping[str, Any]]) -> dict[str, list]:
        return {
            "train loss": [r["train_loss"] for r in history],
            "val mean IoU": [r.get("val_mean_iou", float("nan")) for r in history],
            "val AP50": [r.get("val_ap50", float("nan")) for r in history],
        }


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
    device: str | torch.device = "auto",
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
    (:func:`segloc.localize.annotations.read_box_dataset`); classes are the sorted annotation
    class names (index 1..K). Validation cases: :func:`segloc.localize.annotations.split_records`
    (the split every detector of segloc uses). Training items come from
    :class:`segloc.localize.data.BoxDataset` (box-keeping crop, flip, colour jitter; the
    largest box of each image is its target); AdamW with cosine decay to ``lr / 100`` over
    ``epochs`` (constant under a time budget alone); loss
    :func:`segloc.nn.localizer.localization_loss`; the run folder and loop of
    :mod:`segloc.engine.run`.

    Parameters
    ----------
    data_dir, out : path-like
        Dataset folder; run folder (must not already hold a run unless ``resume``).
    epochs : int, optional
        Total epochs (counting those before a resume).
    time_budget : float or str, optional
        Seconds or ``"20m"``/``"1h"`` for the whole run, resumes included: the clock is
        checked before every step and validation counts. At least one of ``epochs`` and
        ``time_budget`` is required.
    resume : bool, optional
        Continue from ``out/state.pt`` (needs one); each epoch's data order and augmentation
        are seeded by ``(seed, epoch)``, so a resumed run repeats the uninterrupted one.
    image_size : (int, int), optional
        Network input (rows, cols).
    device : {"auto", "cpu", "cuda"}, optional
        As every segloc trainer: CUDA when available.
    crop : float, optional
        Augmentation crop strength (:class:`segloc.localize.data.BoxDataset`).
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
    """

    budget = Budget.of(epochs, time_budget)
    if epochs is not None:
        epochs = check_int(epochs, name="epochs", minimum=1)
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
    run = RunFolder(out)
    state = run.begin(resume=resume)
    dev = resolve_device(device)
    records = read_box_dataset(data_dir)
    classes = sorted({c for r in records for c in r["classes"]})
    if not classes:
        raise ValueError(f"{data_dir}: must hold at least one box, got none")
    train_recs, val_recs = split_records(records, val_fraction=val_fraction, seed=seed)
    if not train_recs or not val_recs:
        raise ValueError(
            f"val_fraction must leave cases for training and validation, got "
            f"{len(train_recs)} / {len(val_recs)} of {len(records)}"
        )

    def class_ids(recs: Sequence[dict]) -> list[list[int]]:
        return [[classes.index(c) + 1 for c in r["classes"]] for r in recs]

    train_images, train_boxes = load_images(train_recs, max_side)
    val_images, val_boxes = load_images(val_recs, max_side)
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
    torch.manual_seed(seed)
    model = BoxLocalizer(3, len(classes), base_channels=base_channels, depth=depth, image_size=size)
    task = _LocalizerTask(
        dataset,
        (val_images, val_boxes, class_ids(val_recs)),
        classes,
        model=model,
        device=dev,
        lr=lr,
        weight_decay=weight_decay,
        epochs=epochs,
        batch_size=batch_size,
        num_workers=num_workers,
        seed=seed,
    )
    config = {
        "task": MODEL_NAME,
        "data_dir": str(Path(data_dir).resolve()),
        "epochs": epochs,
        "time_budget": budget.seconds,
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
    }
    split = {
        "train": [Path(r["image_path"]).stem for r in train_recs],
        "val": [Path(r["image_path"]).stem for r in val_recs],
    }
    fit(
        task,
        run,
        budget,
        config=config,
        split=split,
        state=state,
        progress=progress,
        title="box localizer",
    )
    return run.path
