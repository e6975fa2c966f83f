"""Raccoon detectors on one fixed validation split: HOG+SVM, proposals + SVM (R-CNN), CNN.

    python benchmarks/raccoon_detectors.py [--data ../shared/data] [--seed 0]
        [--only hog-svm proposals cnn] [--cnn-budget 180] [--color-bins 8] [--out results.md]

Data: ``raccoon/`` (160 photos, 173 VOC boxes; segloc.localize.annotations.read_voc_folder).
Split: ``segloc.engine.data.split_cases(sorted image stems, val_fraction=0.2, seed=0)``, the
same split for every detector (and the one the CNN localizer's ``train_localizer`` makes with
``val_fraction=0.2, seed=0``). Nothing is tuned on the validation images: the settings below
are fixed in advance.

- ``hog-svm``: segloc.localize.hog.HogSvmDetector with its own pre-processing (grey by
  segloc.color.to_grey, downscaled to a longer side of 320 px); window from the training
  boxes' median aspect ratio (``window=None``), 8x8 cells, pyramid ratio 1.2, C = 0.01, 30
  random negatives and two hard-negative rounds of 30 per image, mirrored positives.
- ``proposals``: segloc.localize.proposal_detector.ProposalDetector (selective search fast
  mode on the image downscaled to 256 px, proposals warped to 64x64 with 8 px context, HOG,
  linear SVM, one hard-negative round, ridge box regression); ``--color-bins 8`` adds a run
  with an HSV colour histogram appended to HOG.
- ``cnn``: segloc.localize.cnn.train_localizer(..., time_budget=--cnn-budget) then
  localize_cnn on each validation image (skipped when the module is missing).

Every detector returns its 100 best boxes after NMS (no score floor, as COCO evaluation
expects); AP, AP50, AP75 and AR100 by segloc.detection_metrics.evaluate_detections (equal to
pycocotools' COCOeval) on the validation images at their original size.
Timing is wall clock on whatever else the machine is doing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from segloc.coco import coco_results, records_to_coco
from segloc.detection_metrics import evaluate_detections
from segloc.io import read_image
from segloc.localize.annotations import read_voc_folder, split_records
from segloc.localize.hog import HogSvmDetector
from segloc.localize.proposal_detector import ProposalDetector

DEFAULT_DATA = os.environ.get(
    "SEGLOC_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data")
)
METHODS = ("hog-svm", "proposals", "cnn")


def truth_dataset(val: list[dict]) -> dict:
    return records_to_coco(val)


def score(detect, images: list[np.ndarray], truth: dict) -> tuple[dict, float]:
    results, t0 = [], time.perf_counter()
    for k, image in enumerate(images, start=1):
        found = detect(image)
        results += coco_results(k, found.boxes, found.scores, np.ones(len(found), np.int64))
    seconds = (time.perf_counter() - t0) / len(images)
    return evaluate_detections(truth, results), seconds


def run_hog_svm(train_imgs, train_recs, val_imgs, truth, seed):
    # the detector's own pre-processing: grey (segloc.color.to_grey), [0, 1], 320 px
    det = HogSvmDetector(None, C=0.01, scale=1.2, max_side=320)
    t0 = time.perf_counter()
    det.fit(
        train_imgs,
        [r["boxes"] for r in train_recs],
        negatives_per_image=30,
        hard_negative_rounds=2,
        hard_negatives_per_image=30,
        seed=seed,
    )
    fit_s = time.perf_counter() - t0

    def detect(image):
        return det.detect(image, score_threshold=-1e9, iou_threshold=0.3, max_detections=100)

    ev, per_image = score(detect, val_imgs, truth)
    return f"HOG+SVM sliding window (window {det.window_})", ev, fit_s, per_image


def run_proposals(train_imgs, train_recs, val_imgs, truth, seed, color_bins):
    det = ProposalDetector(color_bins=color_bins)
    t0 = time.perf_counter()
    det.fit(train_imgs, [r["boxes"] for r in train_recs], seed=seed)
    fit_s = time.perf_counter() - t0
    ev, per_image = score(
        lambda im: det.detect(im, score_threshold=-1e9, max_detections=100, seed=seed),
        val_imgs,
        truth,
    )
    name = "proposals + SVM (R-CNN, HOG" + (f" + HSV {color_bins}" if color_bins else "") + ")"
    return name, ev, fit_s, per_image


def run_cnn(data_dir, val_imgs, truth, seed, budget):
    try:
        from segloc.localize import cnn
    except ImportError as exc:
        print(f"cnn: skipped ({exc})")
        return None
    out = Path(tempfile.mkdtemp(prefix="raccoon_cnn_")) / "run"
    t0 = time.perf_counter()
    path = cnn.train_localizer(
        data_dir,
        out,
        time_budget=budget,
        val_fraction=0.2,
        seed=seed,
        device="cpu",
        progress=False,
    )
    fit_s = time.perf_counter() - t0
    model = cnn.load_localizer(path)
    detector = cnn.CnnDetector(model)
    ev, per_image = score(detector.detect, val_imgs, truth)
    return f"CNN localizer ({budget:.0f} s budget)", ev, fit_s, per_image


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--cnn-budget", type=float, default=180.0, help="CNN training seconds")
    parser.add_argument(
        "--color-bins", type=int, nargs="*", default=[], help="extra proposal runs with HSV bins"
    )
    parser.add_argument("--out", help="write the table as markdown here")
    args = parser.parse_args(argv)

    data_dir = Path(args.data) / "raccoon"
    records = read_voc_folder(data_dir, classes=["raccoon"])
    train, val = split_records(records, val_fraction=0.2, seed=args.seed)
    t0 = time.perf_counter()
    train_imgs = [read_image(r["image_path"])[0] for r in train]
    val_imgs = [read_image(r["image_path"])[0] for r in val]
    truth = truth_dataset(val)
    head = (
        f"split seed {args.seed}: {len(train)} train images "
        f"({sum(len(r['boxes']) for r in train)} boxes), {len(val)} validation "
        f"({sum(len(r['boxes']) for r in val)} boxes); loading {time.perf_counter() - t0:.1f} s"
    )
    print(head, flush=True)
    rows = []

    def report(row):
        if row is None:
            return
        name, ev, fit_s, per_image = row
        rows.append(row)
        print(
            f"{name}: AP50 {ev['AP50']:.3f}  AP {ev['AP']:.3f}  AP75 {ev['AP75']:.3f}  "
            f"AR100 {ev['AR100']:.3f}  fit {fit_s:.0f} s  {per_image:.2f} s/image",
            flush=True,
        )

    if "hog-svm" in args.only:
        report(run_hog_svm(train_imgs, train, val_imgs, truth, args.seed))
    if "proposals" in args.only:
        for bins in [0, *args.color_bins]:
            report(run_proposals(train_imgs, train, val_imgs, truth, args.seed, bins))
    if "cnn" in args.only:
        report(run_cnn(data_dir, val_imgs, truth, args.seed, args.cnn_budget))

    table = [
        "| detector | AP50 | AP | AP75 | AR100 | fit s | s/image |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ] + [
        f"| {n} | {e['AP50']:.3f} | {e['AP']:.3f} | {e['AP75']:.3f} | {e['AR100']:.3f} "
        f"| {f:.0f} | {s:.2f} |"
        for n, e, f, s in rows
    ]
    print("\n".join(table))
    if args.out:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
        load = os.getloadavg()
        text = "\n".join(
            [
                "# Raccoon detectors (validation AP)",
                "",
                f"Command: `python benchmarks/raccoon_detectors.py "
                f"--only {' '.join(args.only)} --seed {args.seed}"
                + (f" --cnn-budget {args.cnn_budget:g}" if "cnn" in args.only else "")
                + (
                    f" --color-bins {' '.join(map(str, args.color_bins))}"
                    if args.color_bins
                    else ""
                )
                + "`",
                f"Commit: {commit}; load average at the end {load[0]:.2f} (2 cores, shared).",
                "",
                head,
                "",
                *table,
                "",
            ]
        )
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
