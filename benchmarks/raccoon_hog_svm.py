"""HOG + linear SVM sliding-window detector on the raccoon data set: AP50, windows/s, train time.

    python benchmarks/raccoon_hog_svm.py [--data ../shared/data] [--seed 0] [--max-side 320]
                                         [--C 0.01] [--window 64 64 | --window auto]

Data: ``raccoon/`` (160 photos, 173 VOC boxes; segloc.localize.annotations.read_voc_folder).
Split: ``segloc.engine.data.split_cases(sorted image stems, val_fraction=0.2, seed)``, the
split of benchmarks/raccoon_detectors.py (which compares this detector with the others).
Images are read grey and downscaled so that the longer side is at most ``--max-side`` pixels
(boxes scaled alike). The detector
(segloc.localize.hog.HogSvmDetector: 9 orientations, 8x8 cells, 2x2 blocks, L2-Hys,
LinearSVC, scale 1.25, one hard-negative round) is trained on the training part and scored on
the validation part with COCO AP (segloc.detection_metrics.evaluate_detections).
Timing is wall clock on whatever else the machine is doing.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from skimage.transform import resize

from segloc.coco import box_to_coco, coco_results
from segloc.detection_metrics import evaluate_detections
from segloc.engine.data import split_cases
from segloc.io import read_image
from segloc.localize.annotations import read_voc_folder
from segloc.localize.hog import HogSvmDetector

DEFAULT_DATA = os.environ.get(
    "SEGLOC_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data")
)


def load(rec: dict, max_side: int) -> tuple[np.ndarray, np.ndarray]:
    image, _ = read_image(rec["image_path"], as_gray=True)
    h, w = image.shape
    f = min(1.0, max_side / max(h, w))
    if f < 1:
        image = resize(image, (round(h * f), round(w * f)), anti_aliasing=True, preserve_range=True)
    fy, fx = image.shape[0] / h, image.shape[1] / w
    return image.astype(np.float32), rec["boxes"] * np.array([fx, fy, fx, fy])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-side", type=int, default=320)
    parser.add_argument("--C", type=float, default=0.01)
    parser.add_argument("--window", nargs="+", default=["64", "64"])
    parser.add_argument("--negatives", type=int, default=20)
    parser.add_argument("--hard-rounds", type=int, default=1)
    parser.add_argument("--nms", type=float, default=0.3, help="NMS IoU threshold")
    args = parser.parse_args(argv)
    window = None if args.window == ["auto"] else tuple(int(v) for v in args.window)

    records = read_voc_folder(Path(args.data) / "raccoon", classes=["raccoon"])
    by_stem = {r["image_path"].stem: r for r in records}
    train, val = split_cases(sorted(by_stem), val_fraction=0.2, seed=args.seed)
    train, val = [by_stem[s] for s in train], [by_stem[s] for s in val]
    t0 = time.perf_counter()
    train_data = [load(r, args.max_side) for r in train]
    val_data = [load(r, args.max_side) for r in val]
    print(
        f"split seed {args.seed}: {len(train)} train images ({sum(len(b) for _, b in train_data)}"
        f" boxes), {len(val)} validation ({sum(len(b) for _, b in val_data)} boxes); "
        f"loading {time.perf_counter() - t0:.1f} s"
    )

    det = HogSvmDetector(window, C=args.C)
    t0 = time.perf_counter()
    det.fit(
        [im for im, _ in train_data],
        [b for _, b in train_data],
        negatives_per_image=args.negatives,
        hard_negative_rounds=args.hard_rounds,
        seed=args.seed,
    )
    train_s = time.perf_counter() - t0
    stats = det.training_stats_
    print(
        f"trained {det!r}, window {det.window_}: {stats['positives']} positives (with mirrors),"
        f" negatives per round {stats['negatives_per_round']}, {train_s:.1f} s"
    )

    truth = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "raccoon"}]}
    results, windows, seconds = [], 0, 0.0
    for k, (image, boxes) in enumerate(val_data, start=1):
        truth["images"].append({"id": k, "height": image.shape[0], "width": image.shape[1]})
        for box in boxes:
            bb = box_to_coco(box)
            truth["annotations"].append(
                {
                    "id": len(truth["annotations"]) + 1,
                    "image_id": k,
                    "category_id": 1,
                    "bbox": bb,
                    "area": bb[2] * bb[3],
                    "iscrowd": 0,
                }
            )
        # no score floor: the 100 best boxes after NMS, as COCO evaluation expects (a longer
        # low-score tail can only add recall, never lower AP)
        found = det.detect(image, score_threshold=-1e9, iou_threshold=args.nms, max_detections=100)
        pred, scores = found.boxes, found.scores
        windows += det.scan_stats_.windows
        seconds += det.scan_stats_.seconds
        results += coco_results(k, pred, scores, np.ones(len(pred), np.int64))
    # the same windows scored one at a time (HOG of each window cut with its margin)
    cell, (wh, ww) = det.cell, det.window_
    image = np.pad(val_data[0][0], cell, mode="reflect")
    patches = np.stack(
        [
            image[y : y + wh + 2 * cell, x : x + ww + 2 * cell]
            for y in range(0, image.shape[0] - wh - 2 * cell + 1, cell)
            for x in range(0, image.shape[1] - ww - 2 * cell + 1, cell)
        ]
    )
    t0 = time.perf_counter()
    det.decision_function(patches)
    per_window = len(patches) / (time.perf_counter() - t0)
    ev = evaluate_detections(truth, results)
    print(f"validation AP50 {ev['AP50']:.3f}  AP {ev['AP']:.3f}  AR100 {ev['AR100']:.3f}")
    print(
        f"scan: {windows} windows in {seconds:.2f} s = {windows / seconds:,.0f} windows/s "
        f"({windows / len(val_data):,.0f} windows per image); HOG per window: "
        f"{per_window:,.0f} windows/s, {windows / seconds / per_window:.1f}x slower"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
