"""Segmentation losses: Dice (V-Net form included), cross-entropy with pixel weights, focal,
Dice + CE, and deep supervision.

Every loss takes raw logits (models return logits; the activation lives here) and one of three
target conventions, named as in segmentation_models.pytorch:

============  ==========================  ==========================================  =========
mode          logits                      target                                      activation
============  ==========================  ==========================================  =========
binary        ``(B, 1, *spatial)``        ``(B, 1, *spatial)`` or ``(B, *spatial)``,  sigmoid
                                          0/1 (float or int)
multiclass    ``(B, C, *spatial)``, C>=2  ``(B, *spatial)`` or ``(B, 1, *spatial)``,  softmax
                                          integer labels in ``[0, C)``
multilabel    ``(B, C, *spatial)``        ``(B, C, *spatial)``, 0/1 per channel       sigmoid
============  ==========================  ==========================================  =========

``ignore_index`` is a *target* value whose pixels are left out of the loss (CamVid's void):
their predictions and targets are zeroed before the Dice sums (as smp's ``DiceLoss``), and they
are dropped from cross-entropy and focal means (as ``torch.nn.functional.cross_entropy``).

Correspondence with MONAI 1.6 (checked in ``tests/test_losses.py``):

- ``DiceLoss(smooth=s)`` is ``monai.losses.DiceLoss(smooth_nr=s, smooth_dr=s)`` with
  ``sigmoid=True`` (binary, multilabel) or ``softmax=True, to_onehot_y=True`` (multiclass);
  ``squared=True`` is MONAI's ``squared_pred=True``; ``batch=True`` is MONAI's ``batch=True``.
  ``jaccard=True`` computes ``1 - (I + s) / (U + s)`` (the smoothed IoU, as smp), which is
  MONAI's ``jaccard=True`` with ``smooth_nr = smooth_dr = 2 s`` (MONAI writes it as
  ``(2 I + s) / (2 U + s)``).
- ``DiceCELoss`` is ``monai.losses.DiceCELoss`` in binary and multiclass modes; in multilabel
  mode segloc uses binary cross-entropy per channel (MONAI applies soft-max cross-entropy to
  any target with more than one channel).
- ``FocalLoss(reduction="none")`` is MONAI's per-element ``FocalLoss`` (summed over channels in
  multiclass mode); segloc's ``"mean"`` averages over pixels (multiclass) or elements
  (binary, multilabel), where MONAI's soft-max variant also divides by the channel count.

References
----------
.. [1] F. Milletari, N. Navab, S.-A. Ahmadi, "V-Net: Fully Convolutional Neural Networks for
       Volumetric Medical Image Segmentation", 3DV 2016, pp. 565-571.
       :doi:`10.1109/3DV.2016.79`
.. [2] T.-Y. Lin, P. Goyal, R. Girshick, K. He, P. Dollár, "Focal Loss for Dense Object
       Detection", ICCV 2017, pp. 2980-2988. :doi:`10.1109/ICCV.2017.324`
.. [3] O. Ronneberger, P. Fischer, T. Brox, "U-Net: Convolutional Networks for Biomedical Image
       Segmentation", MICCAI 2015. :doi:`10.1007/978-3-319-24574-4_28`
.. [4] Z. Zhou, M. M. R. Siddiquee, N. Tajbakhsh, J. Liang, "UNet++: A Nested U-Net
       Architecture for Medical Image Segmentation", DLMIA 2018.
       :doi:`10.1007/978-3-030-00889-5_1`
.. [5] F. Isensee, P. F. Jaeger, S. A. A. Kohl, J. Petersen, K. H. Maier-Hein, "nnU-Net: a
       self-configuring method for deep learning-based biomedical image segmentation",
       Nature Methods 18, 203-211 (2021). :doi:`10.1038/s41592-020-01008-z`
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from segloc._validation import check_choice, check_positive

__all__ = [
    "CrossEntropyLoss",
    "DeepSupervisionLoss",
    "DiceCELoss",
    "DiceLoss",
    "FocalLoss",
    "cross_entropy",
    "dice_loss",
    "focal_loss",
]

MODES = ("binary", "multiclass", "multilabel")
REDUCTIONS = ("mean", "sum", "none")


# ------------------------------------------------------------------------------------------
# target preparation shared by every loss
# ------------------------------------------------------------------------------------------


def _check_logits(logits: torch.Tensor, mode: str) -> None:
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"logits must be a torch.Tensor, got {type(logits).__name__}")
    if logits.ndim < 3:
        raise ValueError(
            f"logits must be (B, C, *spatial) with 1 to 3 spatial axes, got shape "
            f"{tuple(logits.shape)}"
        )
    if mode == "binary" and logits.shape[1] != 1:
        raise ValueError(
            f"logits must have 1 channel in binary mode, got shape {tuple(logits.shape)}"
        )
    if mode == "multiclass" and logits.shape[1] < 2:
        raise ValueError(
            f"logits must have at least 2 channels in multiclass mode, got shape "
            f"{tuple(logits.shape)}"
        )


def _targets(
    logits: torch.Tensor, target: torch.Tensor, mode: str, ignore_index: int | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Return the target as a float tensor shaped like ``logits`` (one-hot in multiclass mode)
    and the float mask of scored elements (broadcastable to ``logits``), or None."""
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    shape = tuple(logits.shape)
    if mode in ("binary", "multiclass") and target.ndim == logits.ndim - 1:
        target = target.unsqueeze(1)  # (B, *spatial) -> (B, 1, *spatial)
    want = shape if mode != "multiclass" else (shape[0], 1, *shape[2:])
    if tuple(target.shape) != want:
        hint = {
            "binary": "(B, 1, *spatial) or (B, *spatial)",
            "multiclass": "(B, *spatial) or (B, 1, *spatial)",
            "multilabel": "(B, C, *spatial)",
        }[mode]
        raise ValueError(
            f"target must have shape {hint} for logits of shape {shape} in {mode} mode, "
            f"got {tuple(target.shape)}"
        )
    mask = None if ignore_index is None else (target != ignore_index)
    if mode == "multiclass":
        if target.is_floating_point():
            raise TypeError(
                f"target must hold integer labels in multiclass mode, got {target.dtype}"
            )
        labels = target.long() if mask is None else torch.where(mask, target.long(), 0)
        num_classes = shape[1]
        if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(
                f"target labels must be in [0, {num_classes}) or ignore_index, got values in "
                f"[{int(labels.min())}, {int(labels.max())}]"
            )
        # (B, 1, *spatial) -> (B, *spatial, C) -> (B, C, *spatial)
        onehot = F.one_hot(labels[:, 0], num_classes).movedim(-1, 1).to(logits.dtype)
        # ignored pixels were given label 0 above; they must not count as class 0
        target = onehot if mask is None else onehot * mask
    else:
        target = target.to(logits.dtype)
        if mask is not None:
            target = torch.where(mask, target, 0)
        # a 0/255 mask passed as is would give a meaningless loss, silently
        if target.numel() and (target.min() < 0 or target.max() > 1):
            raise ValueError(
                f"target values must be in [0, 1] in {mode} mode, got values in "
                f"[{float(target.min()):g}, {float(target.max()):g}]"
            )
    return target, None if mask is None else mask.to(logits.dtype)


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _check_options(mode: str, reduction: str) -> None:
    check_choice(mode, MODES, name="mode")
    check_choice(reduction, REDUCTIONS, name="reduction")


# ------------------------------------------------------------------------------------------
# Dice
# ------------------------------------------------------------------------------------------


def dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    mode: str = "binary",
    smooth: float = 1e-5,
    squared: bool = False,
    jaccard: bool = False,
    ignore_index: int | None = None,
    from_logits: bool = True,
    include_background: bool = True,
    batch: bool = False,
    reduction: str = "mean",
) -> torch.Tensor:
    """Soft Dice (or Jaccard) loss, one minus the soft overlap of prediction and target.

    For each sample and channel, with ``p`` the predicted probabilities and ``g`` the target::

        Dice:            1 - (2 sum(p g) + smooth) / (sum(p) + sum(g) + smooth)
        V-Net (squared): 1 - (2 sum(p g) + smooth) / (sum(p^2) + sum(g^2) + smooth)
        Jaccard:         1 - (sum(p g) + smooth) / (sum(p) + sum(g) - sum(p g) + smooth)

    The squared denominator is the V-Net paper's Dice, ``D = 2 sum p_i g_i / (sum p_i^2 +
    sum g_i^2)`` [1]_. The Jaccard form uses the squared sums too when ``squared=True``.

    Parameters
    ----------
    logits : Tensor, shape (B, C, *spatial)
        Raw scores, or probabilities when ``from_logits=False``.
    target : Tensor
        See the module docstring for the shape in each mode.
    mode : {"binary", "multiclass", "multilabel"}
    smooth : float
        Added to numerator and denominator; keeps an empty target with an empty prediction at
        loss 0 and the gradient finite.
    squared : bool
        Use the V-Net denominator ``sum(p^2) + sum(g^2)``.
    jaccard : bool
        Soft Jaccard (IoU) loss instead of Dice.
    ignore_index : int, optional
        Target value whose pixels are left out (prediction and target zeroed there, as smp).
    from_logits : bool
        Apply sigmoid (binary, multilabel) or soft-max (multiclass) to ``logits`` first.
    include_background : bool
        Keep channel 0 (multiclass, multilabel). No effect in binary mode, where the one
        channel is the foreground.
    batch : bool
        Sum over the batch before the ratio (one score per channel, as nnU-Net's "batch
        Dice" and MONAI's ``batch=True``) instead of one score per sample and channel.
    reduction : {"mean", "sum", "none"}
        ``"none"`` returns the losses, shape ``(B, C)`` (``(C,)`` with ``batch=True``).

    Returns
    -------
    Tensor
        Scalar, or ``(B, C)`` / ``(C,)`` for ``reduction="none"``.

    References
    ----------
    .. [1] Milletari, Navab, Ahmadi, 3DV 2016, eq. 1. :doi:`10.1109/3DV.2016.79`

    Examples
    --------
    >>> logits = torch.tensor([[[[1.0, -1.0], [-1.0, 1.0]]]])
    >>> target = torch.tensor([[[[1.0, 0.0], [1.0, 1.0]]]])
    >>> round(float(dice_loss(logits, target, smooth=1e-6)), 4)
    0.3076
    """
    _check_options(mode, reduction)
    check_positive(smooth, name="smooth", strict=False)
    _check_logits(logits, mode)
    onehot, mask = _targets(logits, target, mode, ignore_index)
    if from_logits:
        probs = logits.softmax(1) if mode == "multiclass" else logits.sigmoid()
    else:
        probs = logits
    if mask is not None:
        probs = probs * mask
    if not include_background and mode != "binary":
        probs, onehot = probs[:, 1:], onehot[:, 1:]
    probs = probs.flatten(2)  # (B, C, N)
    onehot = onehot.flatten(2)
    dims = (0, 2) if batch else (2,)
    inter = (probs * onehot).sum(dims)
    if squared:
        pred, true = (probs * probs).sum(dims), (onehot * onehot).sum(dims)
    else:
        pred, true = probs.sum(dims), onehot.sum(dims)
    if jaccard:
        score = (inter + smooth) / (pred + true - inter + smooth)
    else:
        score = (2 * inter + smooth) / (pred + true + smooth)
    return _reduce(1 - score, reduction)


class DiceLoss(nn.Module):
    """Soft Dice loss as a module; see :func:`dice_loss` for the parameters.

    References
    ----------
    .. [1] Milletari, Navab, Ahmadi, 3DV 2016. :doi:`10.1109/3DV.2016.79`
    """

    def __init__(
        self,
        mode: str = "binary",
        *,
        smooth: float = 1e-5,
        squared: bool = False,
        jaccard: bool = False,
        ignore_index: int | None = None,
        from_logits: bool = True,
        include_background: bool = True,
        batch: bool = False,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        _check_options(mode, reduction)
        check_positive(smooth, name="smooth", strict=False)
        self.mode, self.smooth, self.squared, self.jaccard = mode, smooth, squared, jaccard
        self.ignore_index, self.from_logits = ignore_index, from_logits
        self.include_background, self.batch, self.reduction = include_background, batch, reduction

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return dice_loss(
            logits,
            target,
            mode=self.mode,
            smooth=self.smooth,
            squared=self.squared,
            jaccard=self.jaccard,
            ignore_index=self.ignore_index,
            from_logits=self.from_logits,
            include_background=self.include_background,
            batch=self.batch,
            reduction=self.reduction,
        )


# ------------------------------------------------------------------------------------------
# cross-entropy
# ------------------------------------------------------------------------------------------


def cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    mode: str = "multiclass",
    weight: torch.Tensor | Sequence[float] | None = None,
    pixel_weight: torch.Tensor | None = None,
    ignore_index: int | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Pixel-wise cross-entropy with class weights and a per-pixel weight map.

    Each scored pixel contributes ``pixel_weight(x) * weight[y(x)] * -log p_{y(x)}(x)``; the
    ``"mean"`` divides the sum by ``sum weight[y(x)]`` over scored pixels, exactly as
    ``torch.nn.functional.cross_entropy`` does, so the pixel map multiplies the usual mean.
    That is the U-Net paper's weighted energy ``sum w(x) log p_{l(x)}(x)`` [1]_ up to a constant
    factor, with ``pixel_weight`` its ``w(x)`` (e.g. from :mod:`segloc.nn.weight_map`).
    A batch where every pixel is ignored gives 0 (PyTorch gives NaN), so one void crop does not
    spoil a training run.

    Parameters
    ----------
    logits : Tensor, shape (B, C, *spatial)
    target : Tensor
        Multiclass: integer labels ``(B, *spatial)`` or ``(B, 1, *spatial)``. Binary /
        multilabel: 0/1 shaped as in the module docstring (binary cross-entropy on the sigmoid).
    mode : {"multiclass", "binary", "multilabel"}
    weight : Tensor or sequence of float, optional
        Class weights: shape ``(C,)`` in multiclass mode; ``(w_negative, w_positive)`` in
        binary and multilabel modes (the binary loss equals the two-class soft-max loss on
        logits ``(0, z)``, so this is the same notion).
    pixel_weight : Tensor, optional
        Per-pixel weights, ``(B, *spatial)`` (or ``(B, 1, *spatial)``; ``(B, C, *spatial)`` in
        multilabel mode).
    ignore_index : int, optional
        Target value left out of the loss and of the mean's denominator.
    reduction : {"mean", "sum", "none"}
        ``"none"`` returns the weighted per-pixel losses, ``(B, *spatial)`` (multiclass) or
        shaped like ``logits`` (binary, multilabel), with 0 at ignored pixels.

    Returns
    -------
    Tensor

    References
    ----------
    .. [1] Ronneberger, Fischer, Brox, MICCAI 2015, eq. 1. :doi:`10.1007/978-3-319-24574-4_28`

    Examples
    --------
    >>> logits = torch.zeros(1, 2, 1, 2)  # p = 1/2 everywhere
    >>> target = torch.tensor([[[0, 1]]])
    >>> round(float(cross_entropy(logits, target)), 4)  # log 2
    0.6931
    """
    _check_options(mode, reduction)
    _check_logits(logits, mode)
    if weight is not None:
        weight = torch.as_tensor(weight, dtype=logits.dtype, device=logits.device)
        n = logits.shape[1] if mode == "multiclass" else 2
        if weight.shape != (n,):
            raise ValueError(
                f"weight must have shape ({n},) in {mode} mode, got {tuple(weight.shape)}"
            )
    if mode == "multiclass":
        if target.ndim == logits.ndim:
            if target.shape[1] != 1:
                raise ValueError(
                    f"target must have shape (B, *spatial) or (B, 1, *spatial) for logits of "
                    f"shape {tuple(logits.shape)} in multiclass mode, got {tuple(target.shape)}"
                )
            target = target[:, 0]  # (B, 1, *spatial) -> (B, *spatial)
        _targets(logits, target, mode, ignore_index)  # shape and label checks
        valid = (
            torch.ones_like(target, dtype=torch.bool)
            if ignore_index is None
            else (target != ignore_index)
        )
        labels = torch.where(valid, target.long(), 0)
        # -log p_y per pixel, (B, *spatial)
        loss = -logits.log_softmax(1).gather(1, labels.unsqueeze(1)).squeeze(1)
        w = valid.to(logits.dtype)
        if weight is not None:
            w = w * weight[labels]
    else:
        onehot, mask = _targets(logits, target, mode, ignore_index)
        loss = F.binary_cross_entropy_with_logits(logits, onehot, reduction="none")
        w = torch.ones_like(loss) if mask is None else mask.expand_as(loss)
        if weight is not None:
            # soft targets interpolate between the two class weights
            w = w * (weight[0] * (1 - onehot) + weight[1] * onehot)
    loss = loss * w
    if pixel_weight is not None:
        loss = loss * _pixel_weight(pixel_weight, logits, mode)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / w.sum().clamp_min(torch.finfo(w.dtype).tiny)


def _pixel_weight(pixel_weight: torch.Tensor, logits: torch.Tensor, mode: str) -> torch.Tensor:
    """``pixel_weight`` shaped like the per-pixel loss: ``(B, *spatial)`` in multiclass mode,
    ``logits``' shape otherwise."""
    pw = torch.as_tensor(pixel_weight, dtype=logits.dtype, device=logits.device)
    if pw.ndim == logits.ndim - 1:
        pw = pw.unsqueeze(1)  # (B, *spatial) -> (B, 1, *spatial)
    channels = (1,) if mode != "multilabel" else (1, logits.shape[1])
    if (
        pw.ndim != logits.ndim
        or pw.shape[0] != logits.shape[0]
        or pw.shape[2:] != logits.shape[2:]
        or pw.shape[1] not in channels
    ):
        raise ValueError(
            f"pixel_weight must have shape (B, *spatial) or (B, 1, *spatial) matching logits of "
            f"shape {tuple(logits.shape)}, got {tuple(pw.shape)}"
        )
    return pw[:, 0] if mode == "multiclass" else pw.expand_as(logits)


class CrossEntropyLoss(nn.Module):
    """Cross-entropy as a module; see :func:`cross_entropy` for the parameters.

    ``forward(logits, target, pixel_weight=None)`` takes the weight map per call, because it
    changes with every image (the U-Net weight map [1]_).

    References
    ----------
    .. [1] Ronneberger, Fischer, Brox, MICCAI 2015. :doi:`10.1007/978-3-319-24574-4_28`
    """

    def __init__(
        self,
        mode: str = "multiclass",
        *,
        weight: torch.Tensor | Sequence[float] | None = None,
        ignore_index: int | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        _check_options(mode, reduction)
        self.mode, self.ignore_index, self.reduction = mode, ignore_index, reduction
        # a buffer so that .to(device) moves it and state_dict() keeps it
        w = None if weight is None else torch.as_tensor(weight, dtype=torch.float32)
        self.register_buffer("weight", w)

    def forward(
        self,
        logits: torch.Tensor,
        target: torch.Tensor,
        pixel_weight: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return cross_entropy(
            logits,
            target,
            mode=self.mode,
            weight=self.weight,
            pixel_weight=pixel_weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
        )


class DiceCELoss(nn.Module):
    """``lambda_dice * Dice + lambda_ce * cross-entropy``, the nnU-Net default loss [2]_ and
    U-Net++'s per-head loss (binary cross-entropy + Dice) [1]_.

    Parameters
    ----------
    mode : {"binary", "multiclass", "multilabel"}
        Cross-entropy is soft-max CE in multiclass mode and binary CE otherwise.
    lambda_dice, lambda_ce : float
        Non-negative weights of the two terms.
    weight : sequence of float, optional
        Class weights of the cross-entropy term (see :func:`cross_entropy`).
    ignore_index : int, optional
        Left out of both terms.
    smooth, squared, jaccard, include_background, batch
        Options of the Dice term (see :func:`dice_loss`).

    References
    ----------
    .. [1] Zhou et al., DLMIA 2018. :doi:`10.1007/978-3-030-00889-5_1`
    .. [2] Isensee et al., Nature Methods 2021. :doi:`10.1038/s41592-020-01008-z`
    """

    def __init__(
        self,
        mode: str = "binary",
        *,
        lambda_dice: float = 1.0,
        lambda_ce: float = 1.0,
        weight: torch.Tensor | Sequence[float] | None = None,
        ignore_index: int | None = None,
        smooth: float = 1e-5,
        squared: bool = False,
        jaccard: bool = False,
        include_background: bool = True,
        batch: bool = False,
    ) -> None:
        super().__init__()
        check_positive(lambda_dice, name="lambda_dice", strict=False)
        check_positive(lambda_ce, name="lambda_ce", strict=False)
        self.lambda_dice, self.lambda_ce = lambda_dice, lambda_ce
        self.dice = DiceLoss(
            mode,
            smooth=smooth,
            squared=squared,
            jaccard=jaccard,
            ignore_index=ignore_index,
            include_background=include_background,
            batch=batch,
        )
        self.ce = CrossEntropyLoss(mode, weight=weight, ignore_index=ignore_index)

    def forward(
        self,
        logits: torch.Tensor,
        target: torch.Tensor,
        pixel_weight: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``pixel_weight`` (e.g. the U-Net weight map) weights the cross-entropy term only:
        the Dice term is a ratio of sums over the whole image and already balances classes."""
        return self.lambda_dice * self.dice(logits, target) + self.lambda_ce * self.ce(
            logits, target, pixel_weight
        )


# ------------------------------------------------------------------------------------------
# focal
# ------------------------------------------------------------------------------------------


def focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    mode: str = "binary",
    gamma: float = 2.0,
    alpha: float | Sequence[float] | None = None,
    ignore_index: int | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Focal loss ``FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t)`` [1]_.

    ``p_t`` is the probability given to the true label: the sigmoid of the logit (or one minus
    it for a negative) in binary and multilabel modes, the soft-max of the true class in
    multiclass mode. ``gamma = 0`` and no ``alpha`` give the cross-entropy.

    Parameters
    ----------
    logits, target
        As in the module docstring.
    mode : {"binary", "multiclass", "multilabel"}
    gamma : float
        Focusing parameter, >= 0 (the paper's default is 2).
    alpha : float or sequence of float, optional
        Binary / multilabel: a float in [0, 1], ``alpha_t = alpha`` for positives and
        ``1 - alpha`` for negatives (the paper's alpha-balanced form, alpha = 0.25 there).
        Multiclass: a sequence of ``C`` class weights, or a float meaning
        ``(1 - alpha, alpha, ..., alpha)`` (background first, as MONAI).
    ignore_index : int, optional
        Target value left out of the loss and of the mean.
    reduction : {"mean", "sum", "none"}
        ``"none"`` returns per-pixel losses ``(B, *spatial)`` in multiclass mode and
        per-element losses shaped like ``logits`` otherwise (0 where ignored). ``"mean"``
        averages over the scored pixels (multiclass) or elements.

    References
    ----------
    .. [1] Lin, Goyal, Girshick, He, Dollár, ICCV 2017, eq. 5. :doi:`10.1109/ICCV.2017.324`

    Examples
    --------
    >>> logits = torch.zeros(1, 1, 1, 2)  # p = 1/2: FL = 0.25 log 2
    >>> round(float(focal_loss(logits, torch.tensor([[[[0.0, 1.0]]]]))), 4)
    0.1733
    """
    _check_options(mode, reduction)
    check_positive(gamma, name="gamma", strict=False)
    _check_logits(logits, mode)
    onehot, mask = _targets(logits, target, mode, ignore_index)
    if mode == "multiclass":
        logp = (logits.log_softmax(1) * onehot).sum(1)  # log p_t, (B, *spatial)
        if isinstance(alpha, (int, float)):
            alpha = [1 - alpha] + [alpha] * (logits.shape[1] - 1)
        alpha_t = None
        if alpha is not None:
            a = torch.as_tensor(alpha, dtype=logits.dtype, device=logits.device)
            if a.shape != (logits.shape[1],):
                raise ValueError(
                    f"alpha must be a float or have {logits.shape[1]} values, got shape "
                    f"{tuple(a.shape)}"
                )
            alpha_t = (onehot * a.view(-1, *[1] * (logits.ndim - 2))).sum(1)
        if mask is not None:
            mask = mask[:, 0]  # (B, 1, *spatial) -> (B, *spatial)
    else:
        # log p_t = log sigmoid(z) for positives, log sigmoid(-z) for negatives; soft targets
        # interpolate, which is minus the binary cross-entropy
        logp = -F.binary_cross_entropy_with_logits(logits, onehot, reduction="none")
        alpha_t = None
        if alpha is not None:
            if not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
                raise ValueError(f"alpha must be a float in [0, 1] in {mode} mode, got {alpha!r}")
            alpha_t = alpha * onehot + (1 - alpha) * (1 - onehot)
    loss = -((1 - logp.exp()) ** gamma) * logp
    if alpha_t is not None:
        loss = alpha_t * loss
    if mask is not None:
        loss = loss * mask
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if mask is None:
        return loss.mean()
    return loss.sum() / mask.expand_as(loss).sum().clamp_min(torch.finfo(loss.dtype).tiny)


class FocalLoss(nn.Module):
    """Focal loss as a module; see :func:`focal_loss` for the parameters.

    References
    ----------
    .. [1] Lin, Goyal, Girshick, He, Dollár, ICCV 2017. :doi:`10.1109/ICCV.2017.324`
    """

    def __init__(
        self,
        mode: str = "binary",
        *,
        gamma: float = 2.0,
        alpha: float | Sequence[float] | None = None,
        ignore_index: int | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        _check_options(mode, reduction)
        check_positive(gamma, name="gamma", strict=False)
        self.mode, self.gamma, self.alpha = mode, gamma, alpha
        self.ignore_index, self.reduction = ignore_index, reduction

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return focal_loss(
            logits,
            target,
            mode=self.mode,
            gamma=self.gamma,
            alpha=self.alpha,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
        )


# ------------------------------------------------------------------------------------------
# deep supervision
# ------------------------------------------------------------------------------------------


class DeepSupervisionLoss(nn.Module):
    """Weighted mean of one loss over several outputs (deep supervision).

    U-Net++ averages the losses of its four full-resolution heads [1]_; nnU-Net supervises
    lower-resolution outputs with weights halving at each scale [2]_. A target whose spatial
    size differs from an output's is resized to it by nearest-neighbour interpolation
    (``torch.nn.functional.interpolate(mode="nearest")``), which keeps labels integer.

    Parameters
    ----------
    loss : nn.Module or callable
        ``loss(output, target) -> scalar``.
    weights : sequence of float, optional
        One non-negative weight per output, normalised to sum 1; default equal weights.

    Notes
    -----
    ``forward(outputs, target, pixel_weight=None)`` accepts a list/tuple of outputs or a single
    tensor (then it is just ``loss(outputs, target)``, so one training loop serves models in
    eval-like modes). A ``pixel_weight`` map is passed on to ``loss`` (resized like the target)
    only when given, so losses without that argument keep working.

    References
    ----------
    .. [1] Zhou et al., DLMIA 2018. :doi:`10.1007/978-3-030-00889-5_1`
    .. [2] Isensee et al., Nature Methods 2021. :doi:`10.1038/s41592-020-01008-z`
    """

    def __init__(self, loss: nn.Module, weights: Sequence[float] | None = None) -> None:
        super().__init__()
        if not callable(loss):
            raise TypeError(f"loss must be callable, got {type(loss).__name__}")
        if weights is not None:
            weights = [float(w) for w in weights]
            if not weights or any(w < 0 for w in weights) or sum(weights) <= 0:
                raise ValueError(f"weights must be non-negative with a positive sum, got {weights}")
        self.loss, self.weights = loss, weights

    def forward(
        self,
        outputs: torch.Tensor | Sequence[torch.Tensor],
        target: torch.Tensor,
        pixel_weight: torch.Tensor | None = None,
    ) -> torch.Tensor:
        def one(out: torch.Tensor) -> torch.Tensor:
            if pixel_weight is None:
                return self.loss(out, _resize_nearest(target, out))
            weight = _resize_nearest(pixel_weight, out)
            return self.loss(out, _resize_nearest(target, out), weight)

        if isinstance(outputs, torch.Tensor):
            return one(outputs)
        outputs = list(outputs)
        if not outputs:
            raise ValueError("outputs must hold at least one tensor, got an empty sequence")
        weights = self.weights or [1.0] * len(outputs)
        if len(weights) != len(outputs):
            raise ValueError(
                f"weights must have one value per output ({len(outputs)}), got {len(weights)}"
            )
        total = sum(weights)
        result = outputs[0].new_zeros(())
        for w, out in zip(weights, outputs, strict=True):
            if w:
                result = result + (w / total) * one(out)
        return result


def _resize_nearest(target: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """``target`` resized to ``output``'s spatial size by nearest neighbour (no-op if equal)."""
    size = tuple(output.shape[2:])
    if tuple(target.shape[-len(size) :]) == size:
        return target
    squeeze = target.ndim == output.ndim - 1
    t = target.unsqueeze(1) if squeeze else target  # (B, *spatial) -> (B, 1, *spatial)
    # interpolate works on floats; labels up to 2**24 survive float32 exactly
    t = F.interpolate(t.float(), size=size, mode="nearest").to(target.dtype)
    return t[:, 0] if squeeze else t
