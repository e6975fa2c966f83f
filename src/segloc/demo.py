"""The end-to-end demo behind ``make demo``: classical methods on real data, scored and drawn.

Every method runs on every case of its dataset (no tuning per case); seeds for region growing
are the point a user would click: the most interior voxel of the ground-truth structure (the
maximum of its distance transform). Dice, IoU and HD95 are per-case scores averaged over cases.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from segloc import coco, instances, io, masks, metrics, viz
from segloc._validation import atomic_path
from segloc.boxes import box_iou
from segloc.classical import clustering, region_growing, threshold
from segloc.color import to_grey
from segloc.detection_metrics import evaluate_detections, matched_f1
from segloc.instances import instances_from_probability, score_instances
from segloc.localize.annotations import read_voc_folder
from segloc.localize.proposals import selective_search


@dataclass
class Case:
    name: str
    image: np.ndarray  # what the method sees
    display: np.ndarray  # what the pictures show
    truth: np.ndarray  # bool
    spacing: tuple[float, ...]


@dataclass
class Row:
    method: str
    dataset: str
    cases: int
    dice: float
    iou: float
    hd95: float
    seconds: float


def interior_seed(truth: np.ndarray) -> tuple[int, ...]:
    """The truth voxel farthest from the structure's border (what a user would click)."""
    dist = ndi.distance_transform_edt(truth)
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(dist)), truth.shape))


# --------------------------------------------------------------------------- datasets


def isbi_cases(root: Path) -> Iterator[Case]:
    for label_path in sorted(
        (root / "isbi2012" / "labels").glob("*.png"), key=lambda p: int(p.stem)
    ):
        image, _ = io.read_image(root / "isbi2012" / "images" / label_path.name)
        truth, _ = io.read_mask(label_path)  # 255 = cell interior -> True
        yield Case(f"isbi_{label_path.stem}", image, image, truth, (1.0, 1.0))


def hippocampus_cases(root: Path, limit: int) -> Iterator[Case]:
    for label_path in sorted((root / "hippocampus" / "labels").glob("*.nii.gz"))[:limit]:
        image, meta = io.read_image(root / "hippocampus" / "images" / label_path.name)
        labels, _ = io.read_mask(label_path, kind="labels")
        yield Case(io.case_stem(label_path), image, image, labels > 0, tuple(meta.spacing))


def lgg_cases(root: Path) -> Iterator[Case]:
    for mask_path in sorted((root / "lgg_mri" / "masks").rglob("*_mask.png")):
        truth, _ = io.read_mask(mask_path)
        if not truth.any():
            continue  # region growing needs a structure to click on
        image_path = (
            mask_path.parent.parent.parent
            / "images"
            / mask_path.parent.name
            / (mask_path.name.replace("_mask.png", ".png"))
        )
        rgb, _ = io.read_image(image_path)
        yield Case(io.case_stem(image_path), rgb[..., 1], rgb, truth, (1.0, 1.0))


def ph2_cases(root: Path, limit: int) -> Iterator[Case]:
    for mask_path in sorted((root / "ph2" / "masks").glob("*.png"))[:limit]:
        truth, _ = io.read_mask(mask_path)
        rgb, _ = io.read_image(root / "ph2" / "images" / (mask_path.stem + ".jpg"))
        yield Case(mask_path.stem, rgb, rgb, truth, (1.0, 1.0))


# --------------------------------------------------------------------------- methods


def field_of_view(grey: np.ndarray) -> np.ndarray:
    """Pixels inside a dermoscope's circular field of view.

    The dark vignette outside the lens is darker than most lesions; it is the dark region
    (below Otsu) connected to an image corner.
    """
    dark = grey < threshold.threshold_otsu(grey)
    lab, _ = ndi.label(dark)
    h, w = grey.shape
    corners = {lab[0, 0], lab[0, w - 1], lab[h - 1, 0], lab[h - 1, w - 1]} - {0}
    return ~np.isin(lab, list(corners))


def _lesion_cleanup(mask: np.ndarray, fov: np.ndarray) -> np.ndarray:
    # a lesion is one filled blob inside the field of view
    return masks.fill_holes(masks.keep_largest(masks.opening(mask & fov, radius=2)))


def lesion_multiotsu(case: Case) -> np.ndarray:
    """Darkest of three multi-Otsu classes, thresholds computed inside the field of view."""
    grey = to_grey(case.image)
    fov = field_of_view(grey)
    t = threshold.threshold_multiotsu(grey[fov][None], classes=3)
    return _lesion_cleanup(grey < t[0], fov)


def lesion_kmeans(case: Case) -> np.ndarray:
    """Darker of two Lab k-means clusters (lesion vs skin) fitted inside the field of view."""
    fov = field_of_view(to_grey(case.image))
    fit = clustering.kmeans_color(case.image[fov][None], 2, color_space="lab", seed=0)
    labels = np.full(fov.shape, -1, np.int32)
    labels[fov] = fit.labels[0]
    return _lesion_cleanup(labels == 0, fov)


METHODS: dict[str, Callable[[Case], np.ndarray]] = {
    "otsu": lambda c: c.image > threshold.threshold_otsu(c.image),
    "kmeans": lambda c: clustering.kmeans_intensity(c.image, 2).labels == 1,
    "confidence": lambda c: masks.fill_holes(
        region_growing.confidence_connected(
            c.image, [interior_seed(c.truth)], multiplier=2.5, iterations=2, initial_radius=1
        )
    ),
    "multiotsu": lesion_multiotsu,
    "kmeans-lab": lesion_kmeans,
}


def run_task(
    method: str, dataset: str, cases: Iterator[Case], out: Path, *, panels: int = 3
) -> Row:
    """Run one method over a dataset's cases; write panels for the first few; return the scores."""
    func = METHODS[method]
    dices, ious, hds = [], [], []
    seconds = 0.0
    for i, case in enumerate(cases):
        t0 = time.perf_counter()
        pred = np.asarray(func(case), dtype=bool)
        seconds += time.perf_counter() - t0
        d = metrics.dice(pred, case.truth)
        dices.append(d)
        ious.append(metrics.iou(pred, case.truth))
        hd = metrics.hd95(pred, case.truth, spacing=case.spacing)
        hds.append(hd if math.isfinite(hd) else math.nan)
        if i < panels:
            stem = f"{dataset}_{method}_{case.name}"
            viz.comparison_panel(
                case.display,
                case.truth.astype(np.int32),
                pred.astype(np.int32),
                out / f"{stem}_panel.png",
                dice=d,
                title=f"{method} on {case.name}",
            )
            if pred.ndim == 2:
                viz.save_png(
                    out / f"{stem}_overlay.png",
                    viz.overlay_mask(case.display, pred.astype(np.int32)),
                )
            else:
                viz.save_png(
                    out / f"{stem}_montage.png",
                    viz.montage(case.display, labels=pred.astype(np.int32)),
                )
    if not dices:
        raise ValueError(f"{dataset}: no cases found")
    return Row(
        method,
        dataset,
        len(dices),
        float(np.mean(dices)),
        float(np.mean(ious)),
        float(np.nanmean(hds)) if np.isfinite(hds).any() else math.nan,
        seconds,
    )


def format_table(rows: list[Row]) -> str:
    head = (
        f"{'method':<12} {'dataset':<28} {'cases':>5} {'Dice':>7} {'IoU':>7} "
        f"{'HD95':>8} {'seconds':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.method:<12} {r.dataset:<28} {r.cases:>5} {r.dice:>7.3f} {r.iou:>7.3f} "
            f"{r.hd95:>8.2f} {r.seconds:>8.2f}"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- boxes


@dataclass
class BoxRow:
    task: str
    images: int
    score: str
    seconds: float


def _mask_box(mask: np.ndarray) -> np.ndarray | None:
    """Box ``(x0, y0, x1, y1)`` of a mask's largest component, None when empty."""
    if not mask.any():
        return None
    _, boxes = instances.instance_boxes(masks.keep_largest(mask).astype(np.int32))
    return boxes[0]


def lgg_boxes(root: Path, out: Path, *, panels: int = 3) -> BoxRow:
    """Tumour box from the classical mask (confidence connected) against the truth's box."""

    ious, seconds = [], 0.0
    for i, case in enumerate(lgg_cases(root)):
        t0 = time.perf_counter()
        pred = _mask_box(np.asarray(METHODS["confidence"](case), bool))
        seconds += time.perf_counter() - t0
        truth = _mask_box(case.truth)
        iou = 0.0 if pred is None else float(box_iou(pred[None], truth[None])[0, 0])
        ious.append(iou)
        if i < panels:
            shown = [truth] + ([pred] if pred is not None else [])
            viz.save_png(
                out / f"boxes_lgg_{case.name}.png",
                viz.draw_boxes(
                    case.display,
                    shown,
                    labels=["truth", "confidence"][: len(shown)],
                    classes=[0, 1][: len(shown)],
                ),
            )
    if not ious:
        raise ValueError(f"{root / 'lgg_mri'}: no cases found")
    ious = np.array(ious)
    return BoxRow(
        "lgg tumour box (confidence mask)",
        len(ious),
        f"box IoU mean {ious.mean():.3f}, IoU>=0.5 {np.mean(ious >= 0.5):.2f}",
        seconds,
    )


def nuclei_boxes(root: Path, out: Path) -> BoxRow:
    """DSB nuclei: Otsu + watershed split -> scored boxes; COCO AP50 and matched F1."""

    folder = root / "dsb2018_nuclei"
    image, _ = io.read_image(folder / "images" / "img2d.tif")
    truth, _ = io.read_mask(folder / "masks" / "img2d.tif", kind="labels")
    t0 = time.perf_counter()
    smooth = ndi.gaussian_filter(image.astype(np.float64), 1.0)
    lo, hi = float(smooth.min()), float(smooth.max())
    prob = (smooth - lo) / (hi - lo) if hi > lo else np.zeros_like(smooth)
    fg = masks.fill_holes(prob > threshold.threshold_otsu(prob))
    inst = instances_from_probability(fg, split=True, min_distance=6, min_size=20)
    # scored by mean normalised intensity: brighter, surer nuclei rank first
    dets = score_instances(inst, prob)
    seconds = time.perf_counter() - t0
    boxes = np.array([d["box"] for d in dets], np.float64).reshape(-1, 4)
    scores = np.array([d["score"] for d in dets])
    coco_truth = coco.coco_dataset(
        [{"id": 1, "height": truth.shape[0], "width": truth.shape[1]}],
        [
            {"image_id": 1, "category_id": 1, "bbox": coco.box_to_coco(b)}
            for b in instances.instance_boxes(truth)[1]
        ],
        [{"id": 1, "name": "nucleus"}],
    )
    results = coco.coco_results(1, boxes, scores, np.ones(len(boxes), np.int64))
    ap50 = evaluate_detections(coco_truth, results)["AP50"]
    f1 = matched_f1(inst, truth, iou_threshold=0.5)["f1"]
    viz.save_png(out / "boxes_dsb_nuclei.png", viz.draw_boxes(image, boxes, width=1))
    return BoxRow(
        "dsb nuclei boxes (otsu + watershed)",
        1,
        f"{len(boxes)} boxes vs {len(coco_truth['annotations'])} nuclei, box AP50 {ap50:.3f}, "
        f"instance F1 {f1:.3f}",
        seconds,
    )


def raccoon_proposals(root: Path, out: Path, *, images: int = 3, top: int = 10) -> BoxRow:
    """Selective search on raccoon photos: the best ``top`` proposals drawn with the truth."""
    from skimage.transform import resize

    records = read_voc_folder(root / "raccoon", classes=["raccoon"])[:images]
    hits, total, seconds = 0, 0, 0.0
    for rec in records:
        rgb, _ = io.read_image(rec["image_path"])
        rgb = rgb[..., :3]
        f = min(1.0, 320 / max(rgb.shape[:2]))
        t0 = time.perf_counter()
        small = resize(rgb, (round(rgb.shape[0] * f), round(rgb.shape[1] * f)), anti_aliasing=True)
        boxes, _ = selective_search(small, mode="fast")
        seconds += time.perf_counter() - t0
        fy, fx = small.shape[0] / rgb.shape[0], small.shape[1] / rgb.shape[1]
        boxes = boxes / np.array([fx, fy, fx, fy])
        best = box_iou(rec["boxes"], boxes[:100]).max(axis=1)
        hits += int(np.sum(best >= 0.5))
        total += len(best)
        shown = np.concatenate([rec["boxes"], boxes[:top]])
        viz.save_png(
            out / f"boxes_raccoon_{rec['image_path'].stem}.png",
            viz.draw_boxes(
                rgb,
                shown,
                labels=["truth"] * len(rec["boxes"]) + [""] * len(boxes[:top]),
                classes=[0] * len(rec["boxes"]) + [1] * len(boxes[:top]),
            ),
        )
    return BoxRow(
        f"raccoon selective search (top {top} drawn)",
        len(records),
        f"recall@100 (IoU>=0.5) {hits}/{total}",
        seconds,
    )


def run_boxes(data: Path, out: Path) -> list[BoxRow]:
    """Boxes on real images: tumour boxes, nuclei boxes, raccoon proposals; drawn to ``out``."""
    rows = [lgg_boxes(data, out), nuclei_boxes(data, out), raccoon_proposals(data, out)]
    for r in rows:
        print(f"{r.task:<40} {r.images:>5}  {r.score}  ({r.seconds:.2f} s)", flush=True)
    return rows


def run_demo(
    data: Path, out: Path, *, hippocampus_limit: int = 20, ph2_limit: int = 150
) -> list[Row]:
    """Run every demo task, print the table, write pictures and ``results.csv`` to ``out``."""
    data = Path(data)
    if not (data / "isbi2012").is_dir():
        raise ValueError(
            f"{data}: not the shared data folder (no isbi2012/ inside); set SEGLOC_DATA"
        )
    out.mkdir(parents=True, exist_ok=True)
    tasks = [
        ("otsu", "isbi2012 (cell interior)", lambda: isbi_cases(data)),
        ("kmeans", "isbi2012 (cell interior)", lambda: isbi_cases(data)),
        (
            "confidence",
            "hippocampus (labels 1+2)",
            lambda: hippocampus_cases(data, hippocampus_limit),
        ),
        ("confidence", "lgg_mri FLAIR (tumour)", lambda: lgg_cases(data)),
        ("multiotsu", "ph2 (lesion)", lambda: ph2_cases(data, ph2_limit)),
        ("kmeans-lab", "ph2 (lesion)", lambda: ph2_cases(data, ph2_limit)),
    ]
    rows = []
    for method, dataset, cases in tasks:
        short = dataset.split()[0]
        rows.append(run_task(method, short, cases(), out))
        rows[-1].dataset = dataset
        print(format_table(rows[-1:]).splitlines()[-1], flush=True)
    table = format_table(rows)
    print()
    print(table)
    csv_lines = ["method,dataset,cases,dice,iou,hd95,seconds"] + [
        f"{r.method},{r.dataset},{r.cases},{r.dice:.4f},{r.iou:.4f},{r.hd95:.3f},{r.seconds:.3f}"
        for r in rows
    ]

    with atomic_path(out / "results.csv") as tmp:
        tmp.write_text("\n".join(csv_lines) + "\n")
    print()
    box_rows = run_boxes(data, out)
    with atomic_path(out / "boxes.csv") as tmp:
        tmp.write_text(
            "task,images,score,seconds\n"
            + "".join(f'{r.task},{r.images},"{r.score}",{r.seconds:.3f}\n' for r in box_rows)
        )
    print(f"\npictures, results.csv and boxes.csv written to {out}/")
    return rows
