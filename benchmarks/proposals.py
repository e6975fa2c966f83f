"""Selective search proposals on the raccoon images: recall at IoU >= 0.5 and time per image.

    python benchmarks/proposals.py [--data ../shared/data] [--limit 30] [--max-side 500]
                                   [--seed 0]

Data: ``raccoon/`` (VOC boxes; segloc.localize.annotations.read_voc_folder). The subset is the
first ``--limit`` annotation files in name order (deterministic). Each image is resized so that
its longer side is ``--max-side`` pixels (boxes scaled alike). Both methods run in "fast" mode on
the same RGB image in the same run:

- segloc: ``segloc.localize.proposals.selective_search(image, mode="fast", seed=seed)``
  (HSV and Lab, k = 50 and 100, similarities CTSF and TS);
- OpenCV-contrib: ``cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()``,
  ``setBaseImage`` (BGR), ``switchToSelectiveSearchFast()``, ``process()`` (xywh boxes, ranked),
  one thread (``cv2.setNumThreads(1)``) to match segloc's single thread.

Recall at N = fraction of all ground-truth boxes whose best IoU with the top N proposals is
>= 0.5. Timing is wall clock on whatever else the machine is doing (the load is printed).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import cv2
import numpy as np
from skimage.transform import resize

from segloc.boxes import box_iou
from segloc.io import read_image
from segloc.localize.annotations import read_voc_folder
from segloc.localize.proposals import selective_search

DEFAULT_DATA = os.environ.get(
    "SEGLOC_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data")
)
TOPS = (100, 500, 2000)


def recall_hits(truth: np.ndarray, boxes: np.ndarray, top: int) -> int:
    """Number of ``truth`` boxes matched at IoU >= 0.5 by one of the first ``top`` boxes."""
    if len(boxes) == 0:
        return 0
    iou = np.asarray(box_iou(truth, boxes[:top]))
    return int((iou.max(axis=1) >= 0.5).sum())


def opencv_search(rgb_uint8: np.ndarray) -> np.ndarray:
    ss = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    ss.setBaseImage(cv2.cvtColor(rgb_uint8, cv2.COLOR_RGB2BGR))
    ss.switchToSelectiveSearchFast()
    xywh = ss.process().astype(np.float64).reshape(-1, 4)
    return np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=30)
    parser.add_argument("--max-side", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)

    records = read_voc_folder(Path(args.data) / "raccoon")[: args.limit]
    names = ("segloc", "opencv")
    hits = {m: dict.fromkeys(TOPS, 0) for m in names}
    counts = {m: [] for m in names}
    times = {m: [] for m in names}
    n_truth = 0
    for rec in records:
        img, _ = read_image(rec["image_path"])
        if img.ndim == 2:
            img = np.dstack([img] * 3)
        img = img[..., :3]
        scale = args.max_side / max(img.shape[:2])
        shape = (round(img.shape[0] * scale), round(img.shape[1] * scale))
        small = (resize(img, shape, anti_aliasing=True, preserve_range=True) + 0.5).astype(np.uint8)
        truth = np.asarray(rec["boxes"], dtype=np.float64) * scale
        n_truth += len(truth)
        for name in names:
            t0 = time.perf_counter()
            if name == "segloc":
                boxes, _ = selective_search(small, mode="fast", seed=args.seed)
            else:
                boxes = opencv_search(small)
            times[name].append(time.perf_counter() - t0)
            counts[name].append(len(boxes))
            for top in TOPS:
                hits[name][top] += recall_hits(truth, boxes, top)

    print(
        f"raccoon: {len(records)} images, {n_truth} boxes, longer side {args.max_side} px, "
        f"load average at end {os.getloadavg()[0]:.2f} (1 min) on {os.cpu_count()} cores"
    )
    header = f"{'method':8s} " + " ".join(f"R@{t:<5d}" for t in TOPS)
    print(header + "  boxes/img  s/img (median)  s/img (mean)")
    for name in names:
        rec_s = " ".join(f"{hits[name][t] / n_truth:6.3f}" for t in TOPS)
        print(
            f"{name:8s} {rec_s}  {np.mean(counts[name]):9.0f}  {np.median(times[name]):14.3f}"
            f"  {np.mean(times[name]):12.3f}"
        )
    ratio = np.median(times["segloc"]) / np.median(times["opencv"])
    print(f"time ratio segloc/opencv (median): {ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
