"""Detection commands: ``localize``, ``train-detector``, ``evaluate-boxes``."""

from __future__ import annotations

import argparse
import json

from segloc.cli.arguments import UsageError, add_read_options, finite_float
from segloc.localize import TRAINABLE

#: ``localize --method`` choices; "sliding-window" is the HOG detector's former name
LOCALIZE_METHODS = ("hog-svm", "proposals", "from-mask", "cnn")
_OLD_NAMES = {"sliding-window": "hog-svm"}


def register(sub: argparse._SubParsersAction) -> None:
    add_localize(sub)
    add_train_detector(sub)
    add_evaluate_boxes(sub)


def _localize_method(text: str) -> str:
    name = _OLD_NAMES.get(text, text)
    if name not in LOCALIZE_METHODS:
        raise argparse.ArgumentTypeError(
            f"invalid choice: {text!r} (choose from {', '.join(LOCALIZE_METHODS)})"
        )
    return name


# --------------------------------------------------------------------------- localize


def add_localize(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "localize",
        help="boxes of objects in 2D images (HOG sliding window, proposals, from a mask, CNN)",
        description="Writes one JSON for all images: 'images' (id = 1-based position, "
        "file_name, path, height, width), 'categories' and 'annotations' (COCO results: "
        "image_id, category_id, bbox [x, y, w, h] with half-open pixel edges, score).",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument(
        "--method",
        required=True,
        type=_localize_method,
        metavar="{" + ",".join(LOCALIZE_METHODS) + "}",
    )
    p.add_argument(
        "--model",
        help="detector from segloc train-detector (hog-svm, cnn; "
        "proposals: without it the raw ranked selective-search boxes)",
    )
    p.add_argument("-o", "--output", required=True, help="boxes JSON file")
    p.add_argument("--overlay", help="PNG with the boxes drawn (one image) or a folder")
    p.add_argument(
        "--score-threshold",
        type=finite_float,
        help="drop boxes scoring below (default: the detector's, 0 for the SVMs' boundary)",
    )
    p.add_argument("--max-detections", type=int, default=100, help="boxes kept per image")
    p.add_argument("--top", type=int, default=100, help="raw proposals kept (no --model)")
    p.add_argument(
        "--max-side",
        type=int,
        default=500,
        help="raw proposals: image shrunk to this longer side first",
    )
    p.add_argument(
        "--mask",
        nargs="+",
        help="from-mask: one mask file per image (default: Otsu threshold of the image)",
    )
    p.add_argument("--dark", action="store_true", help="from-mask Otsu: objects are dark")
    p.add_argument(
        "--no-split", action="store_true", help="from-mask: no watershed split of touching objects"
    )
    p.add_argument("--min-size", type=int, default=10, help="from-mask: smallest object (pixels)")
    p.add_argument(
        "--min-distance",
        type=int,
        default=5,
        help="from-mask: least distance between object centres (watershed)",
    )
    add_read_options(p)
    p.set_defaults(func=cmd_localize)


def _detector(args: argparse.Namespace):
    """The detector ``--method`` and ``--model`` name."""
    from segloc.localize.detect import detector_class, load_detector

    method = args.method
    if method == "from-mask":
        if args.model is not None:
            raise UsageError("--method from-mask takes no --model (it reads --mask or thresholds)")
        return detector_class("from-mask")(
            dark=args.dark,
            split=not args.no_split,
            min_size=args.min_size,
            min_distance=args.min_distance,
        )
    if args.model is None:
        if method != "proposals":
            raise UsageError(f"--method {method} needs --model (from segloc train-detector)")
        return detector_class("selective-search")(top=args.top, max_side=args.max_side)
    return load_detector(method, args.model)


def cmd_localize(args: argparse.Namespace) -> int:
    from segloc.io import output_paths
    from segloc.localize.detect import localize_to_file

    if args.mask is not None and args.method != "from-mask":
        raise UsageError("--mask goes with --method from-mask")
    if args.mask is not None and len(args.mask) != len(args.images):
        raise UsageError(
            f"--mask must give one mask per image ({len(args.images)}), got {len(args.mask)}"
        )
    overlays = (
        output_paths(args.images, args.overlay, lambda p: "_boxes.png") if args.overlay else None
    )
    doc = localize_to_file(
        _detector(args),
        args.images,
        args.output,
        method=args.method,
        masks=args.mask,
        overlays=overlays,
        score_threshold=args.score_threshold,
        max_detections=args.max_detections,
        progress=lambda path, found: print(f"{path}: {len(found)} boxes", flush=True),
    )
    print(f"{len(doc['annotations'])} boxes in {len(args.images)} image(s) -> {args.output}")
    return 0


# --------------------------------------------------------------------------- train-detector


def add_train_detector(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-detector",
        help="train a box detector on DIR (images/ + annotations/*.xml or labels.csv)",
    )
    p.add_argument("--data", required=True, metavar="DIR")
    p.add_argument("--method", required=True, choices=TRAINABLE)
    p.add_argument("-o", "--output", required=True, help="model file (.npz; cnn: run folder)")
    p.add_argument(
        "--val-fraction",
        type=finite_float,
        default=0.2,
        help="share of images held out (split_cases of the sorted stems)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--max-side",
        type=int,
        help="images shrunk to this longer side (hog-svm 320, proposals 256)",
    )
    p.add_argument("--hard-rounds", type=int, default=1, help="hard-negative mining rounds")
    p.add_argument("--epochs", type=int, help="cnn: epochs")
    p.add_argument("--time-budget", help="cnn: wall time, e.g. 300 or 5m")
    p.add_argument("--resume", action="store_true", help="cnn: continue the run in -o")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="cnn")
    p.add_argument("-q", "--quiet", action="store_true", help="cnn: no progress bar")
    add_read_options(p)
    p.set_defaults(func=cmd_train_detector)


def cmd_train_detector(args: argparse.Namespace) -> int:
    from segloc.localize.train import train_detector

    done = train_detector(
        args.method,
        args.data,
        args.output,
        val_fraction=args.val_fraction,
        seed=args.seed,
        max_side=args.max_side,
        hard_rounds=args.hard_rounds,
        epochs=args.epochs,
        time_budget=args.time_budget,
        resume=args.resume,
        device=args.device,
        progress=not args.quiet,
    )
    print(
        f"{done['method']} detector on {done['train']} images ({done['held_out']} held out) "
        f"in {done['seconds']:.0f} s -> {done['path']}"
    )
    return 0


# --------------------------------------------------------------------------- evaluate-boxes


def add_evaluate_boxes(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate-boxes",
        help="COCO AP, AP50, AP75, AR of predicted boxes against truth",
    )
    p.add_argument(
        "pred", metavar="PRED.json", help="segloc localize output or a COCO results list"
    )
    p.add_argument(
        "truth",
        metavar="TRUTH",
        help="COCO JSON, a folder of VOC XML files, or a box CSV; a localize "
        "file's images are matched by file name, a results list by image id "
        "(VOC/CSV truth: 1-based in file-name order)",
    )
    p.add_argument("--json", help="also write the scores here")
    add_read_options(p)
    p.set_defaults(func=cmd_evaluate_boxes)


def cmd_evaluate_boxes(args: argparse.Namespace) -> int:
    from segloc._validation import check_not_inputs, write_atomic
    from segloc.localize.detect import evaluate_boxes

    if args.json:
        check_not_inputs([args.json], [args.pred, args.truth])
    scores = evaluate_boxes(args.pred, args.truth)
    keys = ("AP", "AP50", "AP75", "AR100")
    print(f"{'class':<16}" + "".join(f"{k:>8}" for k in keys))
    print(f"{'all':<16}" + "".join(f"{scores[k]:>8.4f}" for k in keys))
    if len(scores["per_class"]) > 1:
        for name, per in scores["per_class"].items():
            print(f"{name:<16}" + "".join(f"{per[k]:>8.4f}" for k in keys))
    if args.json:
        text = json.dumps(scores, indent=2)
        write_atomic(args.json, lambda tmp: tmp.write_text(text))
    return 0
