"""Learned CNN localizer on the raccoon data set: validation box IoU, AP50 and AP, train time.

    python benchmarks/raccoon_cnn.py [--data ../shared/data] [--epochs 60] [--image-size 160]
                                     [--seed 0] [--out runs/raccoon_cnn] [--threads 2]

Data: ``raccoon/`` (160 photos, 173 VOC boxes). Split: ``segloc.engine.data.split_cases`` of the
sorted image stems, ``val_fraction=0.2, seed=0`` (32 validation images; the split every raccoon
detector uses). Training: ``segloc.localize.cnn.train_localizer`` with its defaults (a 5-stage
BoxLocalizer with 16 base channels, 160x160 input, AdamW 1e-3 with cosine decay, batch 16, CE +
5 L1 + 2 (1 - GIoU), box-keeping crops removing up to half of each margin, flips and colour
jitter) for a fixed number of epochs (60: what fits in about 8 minutes here), no early stopping.
The one recipe choice made on data (crop 0.5 rather than 1.0) was made on a split of the 128
*training* images (102 / 26), never on the validation images. Reported model: the **last** epoch
(``last.safetensors``) -- the run folder's ``best.safetensors`` is chosen on the validation
images, so scoring it there would flatter it. Scores, on the full-resolution validation images:
mean IoU of the predicted box with the image's largest true box, the share with IoU >= 0.5, and
COCO AP50 / AP (``segloc.detection_metrics.evaluate_detections``; one box per image, every true
box counted). Baseline for scale: the mean normalised training box placed in every validation
image.
Timing is wall clock on whatever else the machine is doing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from segloc.boxes import box_area, box_iou
from segloc.coco import box_to_coco
from segloc.detection_metrics import evaluate_detections
from segloc.localize.annotations import read_box_dataset, split_records
from segloc.localize.cnn import (
    evaluate_localizer,
    load_localizer,
    train_localizer,
)
from segloc.localize.data import load_images

DEFAULT_DATA = os.environ.get(
    "SEGLOC_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data")
)
RESULTS = Path(__file__).resolve().parent / "results" / "raccoon_cnn.md"


def mean_box_baseline(train: list[dict], val: list[dict]) -> dict:
    """Every validation image gets the mean normalised largest training box."""

    def largest(rec: dict) -> np.ndarray:
        b = rec["boxes"]
        return b[int(np.argmax(box_area(b)))]

    norm = np.mean(
        [largest(r) / [r["width"], r["height"], r["width"], r["height"]] for r in train], axis=0
    )
    ious, gt, res = [], [], []
    for i, r in enumerate(val):
        pred = norm * [r["width"], r["height"], r["width"], r["height"]]
        ious.append(box_iou(pred[None], largest(r)[None])[0, 0])
        for b in r["boxes"]:
            gt.append(
                {"id": len(gt) + 1, "image_id": i + 1, "category_id": 1,
                 "bbox": box_to_coco(b), "area": float(box_area(b[None])[0]), "iscrowd": 0}
            )  # fmt: skip
        res.append({"image_id": i + 1, "category_id": 1, "bbox": box_to_coco(pred), "score": 1.0})
    truth = {
        "images": [{"id": i + 1, "height": r["height"], "width": r["width"]}
                   for i, r in enumerate(val)],
        "annotations": gt,
        "categories": [{"id": 1, "name": "raccoon"}],
    }  # fmt: skip
    ev = evaluate_detections(truth, res)
    ious = np.asarray(ious)
    return {"mean_iou": ious.mean(), "iou50": (ious >= 0.5).mean(), "AP50": ev["AP50"],
            "AP": ev["AP"]}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="run folder (default: a temporary one)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--no-write", action="store_true", help="do not write the results file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    # the code that runs is the code checked out now, not whatever HEAD is at the end
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
        cwd=Path(__file__).parent,
    ).stdout.strip()  # fmt: skip
    data = Path(args.data) / "raccoon"

    records = read_box_dataset(data)
    train, val = split_records(records, val_fraction=0.2, seed=args.seed)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="raccoon_cnn_")) / "run"
    t0 = time.perf_counter()
    train_localizer(
        data, out, epochs=args.epochs, image_size=(args.image_size, args.image_size),
        seed=args.seed, progress=sys.stderr.isatty(),
    )  # fmt: skip
    train_s = time.perf_counter() - t0

    model = load_localizer(out / "last.safetensors")
    images, boxes = load_images(val, max_side=10**9)  # full resolution
    t0 = time.perf_counter()
    scores = evaluate_localizer(model, images, boxes)
    infer_ms = (time.perf_counter() - t0) / len(images) * 1000
    base = mean_box_baseline(train, val)

    cmd = "python benchmarks/raccoon_cnn.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        "# Raccoon: learned CNN localizer (classification + localization)",
        "",
        f"Command: `{cmd.strip()}` at commit `{commit}`, torch threads {args.threads}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        f"Split: split_cases(sorted stems, val_fraction=0.2, seed={args.seed}): "
        f"{len(train)} train / {len(val)} validation images. Model: last epoch of "
        f"{args.epochs} ({args.image_size}x{args.image_size} input, "
        f"{sum(p.numel() for p in model.parameters()):,} parameters), no early stopping.",
        "",
        "| method | val mean IoU | IoU >= 0.5 | AP50 | AP@[.5:.95] |",
        "|---|---|---|---|---|",
        f"| BoxLocalizer (CE + 5 L1 + 2 GIoU) | {scores['mean_iou']:.3f} | "
        f"{scores['iou50']:.3f} | {scores['AP50']:.3f} | {scores['AP']:.3f} |",
        f"| baseline: mean training box | {base['mean_iou']:.3f} | {base['iou50']:.3f} | "
        f"{base['AP50']:.3f} | {base['AP']:.3f} |",
        "",
        f"Train wall time {train_s / 60:.1f} min ({train_s / args.epochs:.1f} s/epoch incl. "
        f"validation), inference {infer_ms:.0f} ms/image (full-resolution read excluded), "
        "on a shared 2-core CPU that was not idle.",
        "",
        "Reading: the mean training box is a strong baseline (raccoons are large and "
        "roughly centred). Trained from scratch on so few photos the CNN's margin over it is "
        "small and noisy: on the split of the training images used to choose the crop "
        "(102 / 26, 60 epochs) it scored mean IoU 0.563 (crop 0.5) and 0.544 (crop 1.0) "
        "against 0.570 for the mean box. Its class score is near 1 on every image (each "
        "holds a raccoon), so it barely ranks detections and AP50 follows the share of "
        "IoU >= 0.5.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
