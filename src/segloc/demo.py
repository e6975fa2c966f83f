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

from segloc import io, masks, metrics, viz
from segloc.classical import clustering, region_growing, threshold


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


def _grey(image: np.ndarray) -> np.ndarray:
    if image.ndim == 3 and image.shape[-1] == 3:
        from skimage.color import rgb2gray

        return rgb2gray(image)
    return image


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
    grey = _grey(case.image)
    fov = field_of_view(grey)
    t = threshold.threshold_multiotsu(grey[fov][None], classes=3)
    return _lesion_cleanup(grey < t[0], fov)


def lesion_kmeans(case: Case) -> np.ndarray:
    """Darker of two Lab k-means clusters (lesion vs skin) fitted inside the field of view."""
    fov = field_of_view(_grey(case.image))
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
    from segloc._validation import atomic_path

    with atomic_path(out / "results.csv") as tmp:
        tmp.write_text("\n".join(csv_lines) + "\n")
    print(f"\npictures and results.csv written to {out}/")
    return rows
