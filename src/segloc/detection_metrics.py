"""Detection and instance-segmentation metrics: COCO AP/AR, matched F1, panoptic quality.

:func:`evaluate_detections` implements the COCO evaluation protocol [COCO]_ as the reference
COCO API (``pycocotools.cocoeval.COCOeval``) runs it, so that its numbers can be quoted next
to published ones:

- IoU thresholds ``0.50:0.05:0.95``, 101 recall points ``0:0.01:1``, area ranges all
  ``[0, 1e10]``, small ``[0, 32**2]``, medium ``[32**2, 96**2]``, large ``[96**2, 1e10]`` (inclusive
  bounds, as COCO), maximum detections per image and category ``(1, 10, 100)``.
- Per image and category, detections are taken by decreasing score (stable: equal scores keep
  the results' order), at most ``max_dets[-1]`` of them. Each is matched greedily to the
  still-unmatched ground truth with the highest IoU ``>= t`` (the last one on a tie),
  preferring ground truth that is not ignored. Crowd regions (``iscrowd=1``) are always
  ignored, may absorb any number of detections, and their IoU is ``intersection / area(det)``.
  Ground truth outside the area range is ignored; unmatched detections outside it too.
- Precision is made monotone (running maximum from the right) and read at the first
  detection reaching each recall point (0 past the largest recall reached). AP is the mean
  over IoU thresholds, recall points and categories; AR is the recall at the last detection,
  averaged over thresholds and categories. Values of -1 mean "undefined" (no ground truth
  for that category and area range) and are left out of means, as COCO does.
- Areas: a ground truth's is its annotation ``"area"``. A detection's is, as in
  ``COCO.loadRes``, ``w * h`` of its ``bbox`` when the results carry boxes (the first result
  decides), else the pixel count of its ``segmentation``; this holds for ``iou_type="segm"``
  too.

Masks are COCO RLE dicts (:func:`segloc.coco.rle_encode`); mask IoU counts pixels of the
decoded masks through sparse products, so only overlapping pixels cost time.

References
----------
.. [COCO] Lin, T.-Y. et al. "Microsoft COCO: Common Objects in Context", ECCV 2014,
   :doi:`10.1007/978-3-319-10602-1_48`. Detection evaluation:
   https://cocodataset.org/#detection-eval
.. [PQ] Kirillov, A., He, K., Girshick, R., Rother, C. and Dollar, P. "Panoptic
   Segmentation", CVPR 2019, :doi:`10.1109/CVPR.2019.00963`
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import sparse
from scipy.optimize import linear_sum_assignment

from segloc._validation import check_choice, check_image, check_same_shape
from segloc.boxes import box_iou, check_boxes
from segloc.coco import check_coco_dataset, check_coco_results, rle_area, rle_decode

__all__ = [
    "IOU_THRESHOLDS",
    "RECALL_POINTS",
    "AREA_RANGES",
    "check_detection_truth",
    "evaluate_detections",
    "average_precision_at",
    "matched_f1",
    "panoptic_quality",
]

# the exact values COCOeval builds (linspace, not arange: 0.75 must compare equal)
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)
AREA_RANGES = {
    "all": (0.0, 1e5**2),
    "small": (0.0, 32.0**2),
    "medium": (32.0**2, 96.0**2),
    "large": (96.0**2, 1e5**2),
}
_EPS = np.spacing(1)  # COCOeval's guard in tp / (tp + fp + eps)


# --------------------------------------------------------------------------- IoU


def _bbox_iou_coco(dt: np.ndarray, gt: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """IoU (D, G) of COCO ``[x, y, w, h]`` boxes, with the COCO API's arithmetic order.

    Computed from x, y, w, h directly (not via corners) so that values equal the reference
    bit for bit and threshold ties are decided the same way.
    """
    dx, dy, dw, dh = (dt[:, k, None] for k in range(4))  # (D, 1)
    gx, gy, gw, gh = (gt[None, :, k] for k in range(4))  # (1, G)
    w = np.minimum(dx + dw, gx + gw) - np.maximum(dx, gx)
    h = np.minimum(dy + dh, gy + gh) - np.maximum(dy, gy)
    inter = np.where((w > 0) & (h > 0), w * h, 0.0)
    da, ga = dw * dh, gw * gh
    union = np.where(crowd[None, :], da, da + ga - inter)
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _sparse_masks(rles: Sequence[Mapping]) -> sparse.csr_matrix:
    """(K, H*W) 0/1 matrix of decoded masks."""
    rows = [np.flatnonzero(rle_decode(r)) for r in rles]
    size = int(np.prod(rles[0]["size"]))
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])])
    indices = np.concatenate(rows) if rows else np.empty(0, np.int64)
    data = np.ones(len(indices), np.float64)
    return sparse.csr_matrix((data, indices, indptr), shape=(len(rles), size))


def _mask_iou_coco(dt: Sequence[Mapping], gt: Sequence[Mapping], crowd: np.ndarray) -> np.ndarray:
    """IoU (D, G) of RLE masks; crowd columns use the detection's area as the union."""
    if list(dt[0]["size"]) != list(gt[0]["size"]):
        raise ValueError(
            f"results segmentation size must be the image's {list(gt[0]['size'])}, "
            f"got {list(dt[0]['size'])}"
        )
    d, g = _sparse_masks(dt), _sparse_masks(gt)
    if d.shape[1] != g.shape[1]:
        raise ValueError("results segmentation sizes must match the ground truth's")
    inter = (d @ g.T).toarray()  # (D, G) pixel counts, exact in float64
    da = np.asarray(d.sum(1)).reshape(-1, 1)
    ga = np.asarray(g.sum(1)).reshape(1, -1)
    union = np.where(crowd[None, :], da, da + ga - inter)
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


# --------------------------------------------------------------------------- matching


def _evaluate_image(
    ious: np.ndarray,
    gt_area: np.ndarray,
    gt_crowd: np.ndarray,
    dt_area: np.ndarray,
    dt_scores: np.ndarray,
    area_range: tuple[float, float],
    thresholds: np.ndarray,
) -> dict:
    """Greedy COCO matching for one image, category and area range.

    ``ious`` is (D, G) with detections already sorted by decreasing score and truncated.
    Returns per-detection matches and ignore flags (T, D) and per-truth ignore flags (G,).
    """
    lo, hi = area_range
    gt_ignore = gt_crowd | (gt_area < lo) | (gt_area > hi)
    order = np.argsort(gt_ignore, kind="stable")  # regular truth first, ignored last
    gt_ignore, crowd = gt_ignore[order], gt_crowd[order]
    ious = ious[:, order]
    n_t, n_d, n_g = len(thresholds), len(dt_scores), len(order)
    matched = np.zeros((n_t, n_d), bool)
    dt_ignore = np.zeros((n_t, n_d), bool)
    if n_d and n_g:
        last = np.arange(n_g)
        for ti, t in enumerate(thresholds):
            taken = np.zeros(n_g, bool)
            floor = min(t, 1 - 1e-10)
            for di in range(n_d):
                ok = (~taken | crowd) & (ious[di] >= floor)
                # regular truth wins over ignored truth whatever the IoU
                for group in (ok & ~gt_ignore, ok & gt_ignore):
                    if group.any():
                        cand = np.where(group, ious[di], -1.0)
                        # the best IoU, the last of equal ones (COCO's ">=" update)
                        m = int(last[cand == cand.max()][-1])
                        matched[ti, di] = True
                        dt_ignore[ti, di] = gt_ignore[m]
                        taken[m] = True
                        break
    outside = (dt_area < lo) | (dt_area > hi)
    dt_ignore |= ~matched & outside[None, :]
    return {"scores": dt_scores, "matched": matched, "ignore": dt_ignore, "gt_ignore": gt_ignore}


def _precision_recall(
    records: Sequence[dict], max_det: int, n_t: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """Interpolated precision (T, R) and recall (T,) over images; None if no regular truth."""
    n_gt = sum(int((~r["gt_ignore"]).sum()) for r in records)
    if n_gt == 0:
        return None
    scores = np.concatenate([r["scores"][:max_det] for r in records])
    order = np.argsort(-scores, kind="stable")
    matched = np.concatenate([r["matched"][:, :max_det] for r in records], 1)[:, order]
    ignore = np.concatenate([r["ignore"][:, :max_det] for r in records], 1)[:, order]
    tp = np.cumsum(matched & ~ignore, 1).astype(np.float64)  # (T, D)
    fp = np.cumsum(~matched & ~ignore, 1).astype(np.float64)
    n_d = tp.shape[1]
    precision = np.zeros((n_t, len(RECALL_POINTS)))
    recall = np.zeros(n_t)
    if n_d == 0:
        return precision, recall
    rc = tp / n_gt
    pr = tp / (fp + tp + _EPS)
    pr = np.maximum.accumulate(pr[:, ::-1], 1)[:, ::-1]  # monotone envelope
    recall = rc[:, -1]
    for ti in range(n_t):
        idx = np.searchsorted(rc[ti], RECALL_POINTS, side="left")
        ok = idx < n_d
        precision[ti, ok] = pr[ti, idx[ok]]
    return precision, recall


# --------------------------------------------------------------------------- COCO evaluation


def _check_max_dets(max_dets: Any) -> tuple[int, ...]:
    md = tuple(max_dets)
    if not md or any(
        isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1 for m in md
    ):
        raise ValueError(f"max_dets must be positive integers, got {md}")
    if list(md) != sorted(set(md)):
        raise ValueError(f"max_dets must be strictly increasing, got {md}")
    return tuple(int(m) for m in md)


def _result_bbox(rle: Mapping) -> list[float]:
    """COCO bbox of an RLE mask (``maskUtils.toBbox``): half-open pixel edges."""
    mask = rle_decode(rle)
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if rows.size == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [
        float(cols[0]),
        float(rows[0]),
        float(cols[-1] + 1 - cols[0]),
        float(rows[-1] + 1 - rows[0]),
    ]


def _summary(precision: np.ndarray, recall: np.ndarray, max_dets: tuple[int, ...]) -> dict:
    """COCO's 12 numbers from precision (T, R, K, A, M) and recall (T, K, A, M)."""

    def mean(values: np.ndarray) -> float:
        v = values[values > -1]
        return float(np.mean(v)) if v.size else -1.0

    areas = list(AREA_RANGES)
    last = len(max_dets) - 1
    t50 = int(np.flatnonzero(IOU_THRESHOLDS == 0.5)[0])
    t75 = int(np.flatnonzero(IOU_THRESHOLDS == 0.75)[0])
    out = {
        "AP": mean(precision[:, :, :, 0, last]),
        "AP50": mean(precision[t50, :, :, 0, last]),
        "AP75": mean(precision[t75, :, :, 0, last]),
        "APs": mean(precision[:, :, :, areas.index("small"), last]),
        "APm": mean(precision[:, :, :, areas.index("medium"), last]),
        "APl": mean(precision[:, :, :, areas.index("large"), last]),
    }
    for mi, m in enumerate(max_dets):
        out[f"AR{m}"] = mean(recall[:, :, 0, mi])
    out["ARs"] = mean(recall[:, :, areas.index("small"), last])
    out["ARm"] = mean(recall[:, :, areas.index("medium"), last])
    out["ARl"] = mean(recall[:, :, areas.index("large"), last])
    return out


def check_detection_truth(
    truth: Mapping, *, iou_type: str = "bbox", name: str | None = "truth"
) -> Mapping:
    """Refuse a truth :func:`evaluate_detections` cannot score: not a COCO dataset
    (:func:`segloc.coco.check_coco_dataset`), or annotations without ``image_id``,
    ``category_id``, ``area`` and their ``bbox`` / ``segmentation``.

    ``name`` starts the messages (a file name; None: no prefix). Returns ``truth``.
    """
    check_choice(iou_type, ("bbox", "segm"), name="iou_type")
    prefix = f"{name} " if name else ""
    if not isinstance(truth, Mapping):
        raise ValueError(f"{prefix}must be a COCO dataset (a dict), got {type(truth).__name__}")
    for key in ("images", "annotations", "categories"):
        if key not in truth:
            raise ValueError(
                f"{prefix}must have keys images, annotations, categories, got no {key}"
            )
    geom = "bbox" if iou_type == "bbox" else "segmentation"
    check_coco_dataset(truth, name=name, geometry=None)
    for k, ann in enumerate(truth["annotations"]):
        for key in ("image_id", "category_id", "area", geom):
            if key not in ann:
                raise ValueError(f"{prefix}annotations[{k}] must have {key!r}, got none")
    check_coco_dataset(truth, name=name, geometry=iou_type)
    return truth


def evaluate_detections(
    truth: Mapping,
    results: Sequence[Mapping],
    *,
    iou_type: str = "bbox",
    max_dets: Sequence[int] = (1, 10, 100),
) -> dict:
    """COCO average precision and recall of detections or instance masks.

    Parameters
    ----------
    truth : dict
        COCO dataset (``images``, ``annotations``, ``categories``), e.g. from
        :func:`segloc.coco.coco_dataset`. Annotations need ``id`` (>= 1), ``image_id``,
        ``category_id``, ``area``, ``bbox`` (``"bbox"``) or an RLE ``segmentation``
        (``"segm"``); ``iscrowd`` defaults to 0.
    results : list of dict
        COCO results (e.g. :func:`segloc.coco.coco_results`): ``image_id``, ``category_id``,
        ``score`` and ``bbox`` or an RLE ``segmentation``. Results for categories not in
        ``truth`` are skipped, as COCO does.
    iou_type : {"bbox", "segm"}, optional
    max_dets : sequence of int, optional
        Increasing maximum numbers of detections per image and category; AP and the
        area-range AR use the last.

    Returns
    -------
    dict
        ``"AP"`` (IoU 0.50:0.95), ``"AP50"``, ``"AP75"``, ``"APs"``, ``"APm"``, ``"APl"``,
        ``"AR<m>"`` for each ``m`` in ``max_dets`` (``"AR1"``, ``"AR10"``, ``"AR100"``),
        ``"ARs"``, ``"ARm"``, ``"ARl"``: the 12 values of ``COCOeval.stats`` in that order,
        -1 where undefined. ``"per_class"``: ``{category_id: dict of the same keys}``.

    Raises
    ------
    ValueError
        A result for an image not in ``truth``, missing keys, bad ``iou_type``/``max_dets``;
        entries that are not dicts; boxes that are not four finite numbers with width and
        height >= 0; NaN or infinite scores or areas; truth annotations of images or
        categories the truth lacks, or repeated ids (:func:`segloc.coco.check_coco_dataset`,
        :func:`segloc.coco.check_coco_results`). COCOeval would score these.

    References
    ----------
    .. [1] Lin, T.-Y. et al. "Microsoft COCO: Common Objects in Context", ECCV 2014,
       :doi:`10.1007/978-3-319-10602-1_48`; https://cocodataset.org/#detection-eval

    Examples
    --------
    >>> truth = {"images": [{"id": 1, "height": 10, "width": 10}],
    ...          "categories": [{"id": 1, "name": "a"}],
    ...          "annotations": [{"id": 1, "image_id": 1, "category_id": 1,
    ...                           "bbox": [0, 0, 4, 4], "area": 16, "iscrowd": 0}]}
    >>> res = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 4, 4], "score": 0.9}]
    >>> round(evaluate_detections(truth, res)["AP"], 6)  # COCO divides by tp + fp + eps
    1.0
    """
    check_choice(iou_type, ("bbox", "segm"), name="iou_type")
    max_dets = _check_max_dets(max_dets)
    check_detection_truth(truth, iou_type=iou_type)
    results = check_coco_results(results, truth, name=None, geometry=iou_type)
    img_ids = sorted(int(im["id"]) for im in truth["images"])
    cat_ids = sorted(int(c["id"]) for c in truth["categories"])
    img_set, cat_set = set(img_ids), set(cat_ids)

    gts: dict[tuple[int, int], list] = defaultdict(list)
    for ann in truth["annotations"]:
        gts[ann["image_id"], ann["category_id"]].append(ann)

    # COCO.loadRes: the first result decides whether areas come from boxes or masks
    results = list(results)
    box_areas = bool(results) and bool(results[0].get("bbox"))
    dts: dict[tuple[int, int], list] = defaultdict(list)
    for k, res in enumerate(results):
        for key in ("image_id", "category_id", "score"):
            if key not in res:
                raise ValueError(f"results[{k}] must have {key!r}, got none")
        if res["image_id"] not in img_set:
            raise ValueError(
                f"results[{k}] image_id must be one of the truth's images, got {res['image_id']!r}"
            )
        if box_areas and "bbox" not in res or not box_areas and "segmentation" not in res:
            need = "bbox" if box_areas else "segmentation"
            raise ValueError(f"results[{k}] must have {need!r} like results[0], got none")
        if iou_type == "segm" and "segmentation" not in res:
            raise ValueError(f"results[{k}] must have 'segmentation' for iou_type='segm'")
        if res["category_id"] not in cat_set:
            continue
        if box_areas:
            bbox = [float(v) for v in res["bbox"]]
            area = bbox[2] * bbox[3]
        else:
            area = float(rle_area(res["segmentation"]))
            bbox = res.get("bbox") or _result_bbox(res["segmentation"])
        dts[res["image_id"], res["category_id"]].append(
            {"score": float(res["score"]), "area": area, "bbox": bbox, "res": res}
        )

    n_t, n_k, n_a, n_m = len(IOU_THRESHOLDS), len(cat_ids), len(AREA_RANGES), len(max_dets)
    precision = -np.ones((n_t, len(RECALL_POINTS), n_k, n_a, n_m))
    recall = -np.ones((n_t, n_k, n_a, n_m))
    for ki, cat in enumerate(cat_ids):
        per_area: list[list[dict]] = [[] for _ in AREA_RANGES]
        for img in img_ids:
            gt, dt = gts.get((img, cat), []), dts.get((img, cat), [])
            if not gt and not dt:
                continue
            dt = [dt[i] for i in np.argsort([-d["score"] for d in dt], kind="stable")]
            dt = dt[: max_dets[-1]]
            crowd = np.array([bool(g.get("iscrowd", 0)) for g in gt], bool)
            if not gt or not dt:
                ious = np.zeros((len(dt), len(gt)))
            elif iou_type == "bbox":
                ious = _bbox_iou_coco(
                    np.array([d["bbox"] for d in dt], np.float64).reshape(-1, 4),
                    np.array([g["bbox"] for g in gt], np.float64).reshape(-1, 4),
                    crowd,
                )
            else:
                ious = _mask_iou_coco(
                    [d["res"]["segmentation"] for d in dt], [g["segmentation"] for g in gt], crowd
                )
            gt_area = np.array([float(g["area"]) for g in gt], np.float64)
            dt_area = np.array([d["area"] for d in dt], np.float64)
            scores = np.array([d["score"] for d in dt], np.float64)
            for ai, rng in enumerate(AREA_RANGES.values()):
                per_area[ai].append(
                    _evaluate_image(ious, gt_area, crowd, dt_area, scores, rng, IOU_THRESHOLDS)
                )
        for ai in range(n_a):
            if not per_area[ai]:
                continue
            for mi, m in enumerate(max_dets):
                pr = _precision_recall(per_area[ai], m, n_t)
                if pr is not None:
                    precision[:, :, ki, ai, mi], recall[:, ki, ai, mi] = pr

    out = _summary(precision, recall, max_dets)
    out["per_class"] = {
        cat: _summary(precision[:, :, ki : ki + 1], recall[:, ki : ki + 1], max_dets)
        for ki, cat in enumerate(cat_ids)
    }
    return out


def average_precision_at(
    truth_boxes: Any, pred_boxes: Any, scores: Any, iou_threshold: float = 0.5
) -> float:
    """COCO-style AP of one class in one image at one IoU threshold.

    Same protocol as :func:`evaluate_detections` (greedy matching by score, 101-point
    interpolated precision) without area ranges or a detection limit; works for 2D and 3D
    segloc boxes.

    Parameters
    ----------
    truth_boxes : array_like, shape (G, 4) or (G, 6)
        segloc boxes ``xyxy`` / ``xyzxyz``.
    pred_boxes : array_like, shape (D, 4) or (D, 6)
    scores : array_like, shape (D,)
    iou_threshold : float, optional
        A detection matches a truth box when their IoU is ``>= iou_threshold``.

    Returns
    -------
    float
        In [0, 1]; NaN when there is no truth box (AP is undefined; COCO reports -1).

    References
    ----------
    .. [1] Lin, T.-Y. et al. "Microsoft COCO: Common Objects in Context", ECCV 2014,
       :doi:`10.1007/978-3-319-10602-1_48`

    Examples
    --------
    >>> average_precision_at([[0, 0, 4, 4]], [[9, 9, 10, 10], [0, 0, 4, 4]], [0.9, 0.8])
    0.5
    """
    gt = check_boxes(truth_boxes, name="truth_boxes")
    dt = check_boxes(pred_boxes, name="pred_boxes")
    s = np.asarray(scores, np.float64).reshape(-1)
    if s.shape[0] != dt.shape[0]:
        raise ValueError(f"scores must have one value per box ({dt.shape[0]}), got {s.shape[0]}")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite, got NaN or infinite values")
    if isinstance(iou_threshold, bool) or not 0 <= iou_threshold <= 1:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold!r}")
    if len(gt) and len(dt) and gt.shape[1] != dt.shape[1]:
        raise ValueError(
            f"truth_boxes and pred_boxes must both be 2D or 3D, got {gt.shape} and {dt.shape}"
        )
    if len(gt) == 0:
        return float("nan")
    order = np.argsort(-s, kind="stable")
    dt, s = dt[order], s[order]
    ious = box_iou(dt, gt) if len(dt) else np.zeros((0, len(gt)))
    rec = _evaluate_image(
        ious,
        np.zeros(len(gt)),
        np.zeros(len(gt), bool),
        np.zeros(len(dt)),
        s,
        AREA_RANGES["all"],
        np.array([float(iou_threshold)]),
    )
    precision, _ = _precision_recall([rec], max(len(dt), 1), 1)
    return float(precision.mean())


# --------------------------------------------------------------------------- instance maps


def _instances(x: Any, name: str) -> np.ndarray:
    arr = check_image(x, name=name, ndim=range(1, 33), allow_empty=True)
    if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
        raise TypeError(f"{name} must be an integer instance map, got dtype {arr.dtype}")
    if arr.size and arr.min() < 0:
        raise ValueError(f"{name} must be >= 0, got minimum {arr.min()}")
    return arr


def _instance_iou(pred: Any, truth: Any) -> np.ndarray:
    """IoU (P, T) between the non-zero instances of two instance maps."""
    p = _instances(pred, "pred_instances")
    t = _instances(truth, "truth_instances")
    check_same_shape(p, t, names=("pred_instances", "truth_instances"))
    p_ids, p_inv = np.unique(p.ravel(), return_inverse=True)
    t_ids, t_inv = np.unique(t.ravel(), return_inverse=True)
    n_p, n_t = len(p_ids), len(t_ids)
    joint = np.bincount(p_inv.ravel() * n_t + t_inv.ravel(), minlength=n_p * n_t)
    joint = joint.reshape(n_p, n_t).astype(np.float64)  # pixel counts per (pred, truth) id pair
    p_area, t_area = joint.sum(1), joint.sum(0)
    keep_p, keep_t = p_ids != 0, t_ids != 0  # background is not an instance
    inter = joint[keep_p][:, keep_t]
    union = p_area[keep_p, None] + t_area[None, keep_t] - inter
    return inter / union if inter.size else inter


def _match_instances(iou: np.ndarray, iou_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one pairs with IoU > threshold: as many as possible, then the largest total IoU.

    Above 0.5 every instance has at most one candidate, so this is the unique matching.
    """
    valid = iou > iou_threshold
    if not valid.any():
        return np.empty(0, np.int64), np.empty(0, np.int64)
    # a match is worth more than any total IoU gain: weight = big + IoU for valid pairs
    big = min(iou.shape) + 1.0
    rows, cols = linear_sum_assignment(np.where(valid, big + iou, 0.0), maximize=True)
    ok = valid[rows, cols]
    return rows[ok], cols[ok]


def _ratio(num: float, den: float) -> float:
    return num / den if den else float("nan")


def matched_f1(pred_instances: Any, truth_instances: Any, *, iou_threshold: float = 0.5) -> dict:
    """Instance detection counts and F1 from one-to-one matching of two instance maps.

    Parameters
    ----------
    pred_instances, truth_instances : array_like of int, same shape
        Instance maps, 0 = background, ids need not be contiguous.
    iou_threshold : float, optional
        Pairs match when IoU ``> iou_threshold``. At 0.5 or more the matching is unique;
        below, the matching with the most pairs (then the largest total IoU) is used.

    Returns
    -------
    dict
        ``tp``, ``fp``, ``fn`` (int), ``precision``, ``recall``, ``f1`` (float; NaN for 0/0,
        e.g. precision without predicted instances), ``mean_matched_iou``.

    References
    ----------
    .. [1] Caicedo, J. C. et al. "Nucleus segmentation across imaging experiments: the 2018
       Data Science Bowl", Nature Methods 16, 1247-1253, 2019.
       :doi:`10.1038/s41592-019-0612-7`

    Examples
    --------
    >>> matched_f1(np.array([[1, 1, 0, 2]]), np.array([[3, 3, 3, 0]]))["f1"]
    0.6666666666666666
    """
    if isinstance(iou_threshold, bool) or not 0 <= iou_threshold <= 1:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold!r}")
    iou = _instance_iou(pred_instances, truth_instances)
    rows, cols = _match_instances(iou, float(iou_threshold))
    tp = len(rows)
    fp, fn = iou.shape[0] - tp, iou.shape[1] - tp
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "mean_matched_iou": float(iou[rows, cols].mean()) if tp else float("nan"),
    }


def panoptic_quality(pred_instances: Any, truth_instances: Any) -> dict:
    """Panoptic quality of a single-class instance map: ``PQ = SQ * RQ``.

    Instances match when IoU > 0.5 (unique). ``SQ`` is the mean IoU of matched pairs,
    ``RQ = TP / (TP + FP / 2 + FN / 2)`` and ``PQ = sum(IoU of matches) / (TP + FP / 2 +
    FN / 2)``.

    Parameters
    ----------
    pred_instances, truth_instances : array_like of int, same shape
        Instance maps, 0 = background.

    Returns
    -------
    dict
        ``pq``, ``sq``, ``rq`` (float) and ``tp``, ``fp``, ``fn`` (int). With no instance
        in either map all three scores are NaN; with no match ``sq`` is 0 (as the reference
        ``panopticapi``).

    References
    ----------
    .. [1] Kirillov, A., He, K., Girshick, R., Rother, C. and Dollar, P. "Panoptic
       Segmentation", CVPR 2019, :doi:`10.1109/CVPR.2019.00963`

    Examples
    --------
    >>> panoptic_quality(np.array([[1, 1, 0, 2]]), np.array([[3, 3, 3, 0]]))["pq"]
    0.4444444444444444
    """
    iou = _instance_iou(pred_instances, truth_instances)
    rows, cols = _match_instances(iou, 0.5)
    tp = len(rows)
    fp, fn = iou.shape[0] - tp, iou.shape[1] - tp
    total_iou = float(iou[rows, cols].sum())
    den = tp + 0.5 * fp + 0.5 * fn
    return {
        "pq": _ratio(total_iou, den),
        "sq": (total_iou / tp if tp else 0.0) if den else float("nan"),
        "rq": _ratio(tp, den),
        "tp": tp,
        "fp": fp,
        "fn": fn,
    }
