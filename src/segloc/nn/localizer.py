"""A small CNN for classification + localization of one object per image, and its loss.

The classification + localization formulation [1]_: one network looks at the whole image and
answers both "what is it" (class logits, index 0 = no object) and "where is it" (four numbers,
the box), trained jointly. The box head is regressed with L1 + generalized IoU [2]_, weighted
as DETR [3]_ (L1 5, GIoU 2, class cross-entropy 1). Training and detection with it are in
:mod:`segloc.localize.cnn`.

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

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from segloc._validation import check_int
from segloc.boxes import convert, generalized_box_iou
from segloc.nn.blocks import ConvBlock

__all__ = ["BoxLocalizer", "localization_loss"]


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
