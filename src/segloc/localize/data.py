"""Box-localizer data: images with one target box, prepared as the CNN sees them.

:class:`BoxDataset` serves training (box-keeping crops, flips, colour jitter);
:func:`box_input` prepares an image for inference exactly as the dataset does without
augmentation; :func:`load_images` decodes a dataset's images once, shrunk.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from segloc.boxes import scale_boxes
from segloc.io import read_image

__all__ = ["BOX_MEAN", "BOX_STD", "BoxDataset", "box_input", "load_images"]


# ImageNet channel statistics: a fixed, documented normalisation (no statistics are fitted on
# the training images, so a checkpoint needs nothing but the image size to be used).
BOX_MEAN = (0.485, 0.456, 0.406)


BOX_STD = (0.229, 0.224, 0.225)


def _rgb_float(image: np.ndarray) -> np.ndarray:
    """(H, W[, C]) uint8/integer/float image -> (H, W, 3) float32 in [0, 1]."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(f"image must be (rows, cols) or (rows, cols, 1|3|4), got {image.shape}")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    image = image[..., :3]
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255
    if np.issubdtype(image.dtype, np.integer):
        return image.astype(np.float32) / np.float32(np.iinfo(image.dtype).max)
    if image.dtype == np.bool_:
        return image.astype(np.float32)
    return np.clip(image.astype(np.float32), 0, 1)  # float images are taken as [0, 1]


def _resize_rgb(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize (H, W, 3) float32 to ``size`` = (rows, cols); area averaging when shrinking."""
    import cv2

    rows, cols = size
    shrink = rows < image.shape[0] or cols < image.shape[1]
    interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(image), (cols, rows), interpolation=interp)


def box_input(image: Any, image_size: Sequence[int]) -> np.ndarray:
    """An image as :class:`BoxDataset` (without augmentation) hands it to a model.

    Resized (not letterboxed) to ``image_size`` = (rows, cols), scaled to [0, 1] (uint8 / 255)
    and normalised with the ImageNet channel mean and standard deviation.

    Returns
    -------
    (3, rows, cols) float32 ndarray
    """
    rows, cols = (int(v) for v in image_size)
    rgb = _resize_rgb(_rgb_float(image), (rows, cols))
    rgb = (rgb - np.asarray(BOX_MEAN, np.float32)) / np.asarray(BOX_STD, np.float32)
    return np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32)


class BoxDataset(Dataset):
    """Images with one target box each, for single-object classification + localization.

    Each item is the image resized to ``image_size`` (plain resize, not letterbox: the
    aspect ratio changes, but the box is scaled with the image through
    :func:`segloc.boxes.scale_boxes`, and IoU is unchanged by scaling the two axes) and
    its target box in normalised coordinates.

    With ``augment=True``, before resizing: a random crop that keeps the whole target box
    (each side of the crop cuts away a uniform random share in [0, ``crop``] of the margin
    between the image edge and the box edge, so crops never cut the object), then after
    resizing a horizontal flip with probability 0.5 and a mild colour jitter (brightness,
    contrast and saturation factors in [0.8, 1.2]). Randomness comes from
    ``numpy.random.default_rng([seed, epoch, index])``, so an item depends only on the seed,
    :meth:`set_epoch` and its index (the same in any DataLoader worker, and after resuming).

    Parameters
    ----------
    images : sequence
        ``(rows, cols)`` or ``(rows, cols, 3|4)`` arrays (uint8 -> /255; floats taken as
        [0, 1]) or paths read with :func:`segloc.io.read_image`.
    boxes_per_image : sequence of array_like
        Per image an ``(N, 4)`` array of segloc boxes ``(x0, y0, x1, y1)`` in pixels. The
        target is the **largest** box (by area; the first of equal ones); an image with
        no box gives label 0 (background) and box ``(0, 0, 0, 0)``.
    image_size : (int, int), optional
        Model input size (rows, cols).
    augment : bool, optional
    seed : int, optional
    crop : float, optional
        Largest share of each margin a crop removes (0: no cropping; 1: up to the box).
    labels_per_image : sequence of sequence of int, optional
        Class index (>= 1) of each box; default 1 for every box. Label 0 is "no object".
    names : sequence of str, optional
        Case names returned as ``case`` (default ``"0"``, ``"1"``, ...).

    Items are dicts: ``image`` (3, rows, cols) float32 tensor (ImageNet mean/std
    normalised), ``box`` (4,) float32 tensor ``(x0, y0, x1, y1)`` divided by (cols, rows)
    of the resized image, so in [0, 1], ``label`` int64 tensor, ``case`` str.

    Examples
    --------
    >>> import numpy as np
    >>> ds = BoxDataset([np.zeros((40, 80, 3), np.uint8)], [[[20, 10, 60, 30]]],
    ...                 image_size=(32, 32), augment=False)
    >>> item = ds[0]
    >>> tuple(item["image"].shape), item["box"].tolist(), int(item["label"])
    ((3, 32, 32), [0.25, 0.25, 0.75, 0.75], 1)
    """

    def __init__(
        self,
        images: Sequence[Any],
        boxes_per_image: Sequence[Any],
        *,
        image_size: Sequence[int] = (224, 224),
        augment: bool = True,
        seed: int = 0,
        crop: float = 1.0,
        labels_per_image: Sequence[Sequence[int]] | None = None,
        names: Sequence[str] | None = None,
    ) -> None:
        from segloc.boxes import box_area, check_boxes

        if len(images) != len(boxes_per_image):
            raise ValueError(
                f"boxes_per_image must have one entry per image ({len(images)}), "
                f"got {len(boxes_per_image)}"
            )
        size = tuple(int(v) for v in np.atleast_1d(image_size))
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"image_size must be two positive ints (rows, cols), got {image_size}")
        if names is not None and len(names) != len(images):
            raise ValueError(
                f"names must have one entry per image ({len(images)}), got {len(names)}"
            )
        self.images = list(images)
        self.image_size: tuple[int, int] = size  # type: ignore[assignment]
        self.augment = bool(augment)
        if not 0 <= crop <= 1:
            raise ValueError(f"crop must be in [0, 1], got {crop}")
        self.crop = float(crop)
        self.seed = int(seed)
        self.epoch = 0
        self.names = (
            [str(n) for n in names] if names is not None else [str(i) for i in range(len(images))]
        )
        self.boxes: list[np.ndarray] = []
        self.labels: list[int] = []
        for i, b in enumerate(boxes_per_image):
            b = np.asarray(
                check_boxes(np.asarray(b, np.float64).reshape(-1, 4), name=f"boxes_per_image[{i}]")
            )
            cls = (
                np.ones(len(b), np.int64)
                if labels_per_image is None
                else np.asarray(labels_per_image[i], np.int64).reshape(-1)
            )
            if len(cls) != len(b):
                raise ValueError(
                    f"labels_per_image[{i}] must have one label per box ({len(b)}), got {len(cls)}"
                )
            if len(b) and cls.min() < 1:
                raise ValueError(f"labels_per_image[{i}] must be >= 1, got {cls.tolist()}")
            if len(b) == 0:
                self.boxes.append(np.zeros(4))
                self.labels.append(0)
            else:
                k = int(np.argmax(box_area(b)))  # the largest box is the single target
                self.boxes.append(b[k])
                self.labels.append(int(cls[k]))

    def __len__(self) -> int:
        return len(self.images)

    def set_epoch(self, epoch: int) -> None:
        """Choose the augmentation draws of ``epoch`` (each epoch sees new ones)."""
        self.epoch = int(epoch)

    def _image(self, index: int) -> np.ndarray:
        image = self.images[index]
        if isinstance(image, (str, os.PathLike)):
            image, _ = read_image(image)
        return _rgb_float(image)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from segloc.boxes import scale_boxes

        rgb = self._image(index)
        box = self.boxes[index].copy()
        label = self.labels[index]
        rows, cols = self.image_size
        rng = np.random.default_rng([self.seed, self.epoch, index])
        if self.augment:
            h, w = rgb.shape[:2]
            if label > 0:  # the crop keeps the box: each edge between image edge and box edge
                cut = rng.uniform(0, self.crop, size=4)
                x0 = int(np.floor(cut[0] * box[0]))
                y0 = int(np.floor(cut[1] * box[1]))
                x1 = int(np.ceil(w - cut[2] * (w - box[2])))
                y1 = int(np.ceil(h - cut[3] * (h - box[3])))
            else:
                x0, y0, x1, y1 = 0, 0, w, h
            rgb = rgb[y0:y1, x0:x1]
            box = box - np.array([x0, y0, x0, y0], np.float64)
        h, w = rgb.shape[:2]
        rgb = _resize_rgb(rgb, (rows, cols))
        box = scale_boxes(box[None], (rows / h, cols / w))[0]
        if self.augment:
            if rng.random() < 0.5:
                rgb = rgb[:, ::-1]
                box = np.array([cols - box[2], box[1], cols - box[0], box[3]])
            brightness, contrast, saturation = rng.uniform(0.8, 1.2, size=3)
            grey = rgb.mean(axis=2, keepdims=True)
            rgb = grey + saturation * (rgb - grey)
            rgb = (rgb - rgb.mean()) * contrast + rgb.mean() * brightness
            rgb = np.clip(rgb, 0, 1)
        if label == 0:
            box = np.zeros(4)
        rgb = (rgb - np.asarray(BOX_MEAN, np.float32)) / np.asarray(BOX_STD, np.float32)
        image = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32))
        norm = box / np.array([cols, rows, cols, rows], np.float64)
        return {
            "image": image,
            "box": torch.as_tensor(np.clip(norm, 0, 1), dtype=torch.float32),
            "label": torch.tensor(label, dtype=torch.int64),
            "case": self.names[index],
        }


def load_images(
    records: Sequence[dict], max_side: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Images (RGB uint8) shrunk so the longer side is <= ``max_side``, boxes scaled alike."""
    import cv2

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
