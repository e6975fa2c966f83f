"""The ``segloc`` command line.

Points are given as ``x,y[,z]`` = column, row[, slice], as image viewers show them; the Python
API takes array indices ``(row, col[, slice])``. Exit status: 0 on success, 2 on bad input or
usage (one line on stderr naming the file), 1 on an unexpected internal error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from segloc import __version__

COORDS_HELP = (
    "Coordinates: points are x,y[,z] = column,row[,slice] (what image viewers show); "
    "the Python API takes array indices (row, col[, slice])."
)


class UsageError(ValueError):
    """A command-line argument that parses but makes no sense."""


# --------------------------------------------------------------------------- helpers


def parse_point(text: str) -> tuple[int, ...]:
    """``"x,y[,z]"`` (column, row[, slice]) -> array index ``(row, col[, slice])``."""
    try:
        values = [int(round(float(v))) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"point must be x,y or x,y,z numbers, got {text!r}"
        ) from None
    if len(values) not in (2, 3):
        raise argparse.ArgumentTypeError(f"point must be x,y or x,y,z, got {text!r}")
    x, y, *z = values
    return (y, x, *z)


def _output_paths(inputs: Sequence[Path], out: Path | None, default_suffix) -> list[Path]:
    """One output per input: ``out`` for a single input with a suffix, else out/<stem><suffix>."""
    from segloc.io import case_stem

    if out is None:
        raise UsageError("-o/--output is required")
    single_file = len(inputs) == 1 and out.suffix and not out.is_dir()
    if single_file:
        return [out]
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: with several inputs -o must be a folder")
    stems = [case_stem(p) for p in inputs]
    if len(set(stems)) != len(stems):
        dup = next(s for s in stems if stems.count(s) > 1)
        raise UsageError(f"two inputs share the name {dup!r}; outputs would overwrite each other")
    return [out / f"{s}{default_suffix(p)}" for s, p in zip(stems, inputs, strict=True)]


def _mask_suffix(path: Path) -> str:
    """Masks are written in the input's family: NIfTI/NRRD stay volumes, 2D images become PNG."""
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")) or path.is_dir():
        return ".nii.gz"
    if name.endswith(".nrrd"):
        return ".nrrd"
    if name.endswith((".tif", ".tiff")):
        return ".tif"
    return ".png"


def _to_grey(image: np.ndarray, channel: int | None, path: Path) -> np.ndarray:
    if channel is not None:
        if image.ndim != 3 or image.shape[-1] > 4:
            raise UsageError(f"{path}: --channel needs a colour image, got shape {image.shape}")
        if not 0 <= channel < image.shape[-1]:
            raise UsageError(
                f"{path}: --channel must be in 0..{image.shape[-1] - 1}, got {channel}"
            )
        return image[..., channel]
    return image


def _is_colour(image: np.ndarray, path: Path) -> bool:
    # (H, W, 3|4) arrays from 2D image files are colour; volumes have many more slices
    return (
        image.ndim == 3
        and image.shape[-1] in (3, 4)
        and not str(path).lower().endswith((".nii", ".nii.gz", ".nrrd"))
        and not path.is_dir()
    )


# --------------------------------------------------------------------------- commands


def cmd_segment(args: argparse.Namespace) -> int:
    from segloc import io, masks, viz
    from segloc.classical import segment

    inputs = [Path(p) for p in args.images]
    outs = _output_paths(inputs, Path(args.output) if args.output else None, _mask_suffix)
    overlays = (
        _output_paths(inputs, Path(args.overlay), lambda p: "_overlay.png")
        if args.overlay
        else None
    )
    seeds = args.seeds or None
    # read and check everything first, so a bad input leaves no partial outputs behind
    loaded = [io.read_image(p) for p in inputs]
    for path, (image, _) in zip(inputs, loaded, strict=True):
        if seeds:
            for s in seeds:
                grey_ndim = image.ndim - (1 if _is_colour(image, path) else 0)
                if len(s) != grey_ndim:
                    raise UsageError(
                        f"{path}: seed {s} has {len(s)} coordinates for a {grey_ndim}D image"
                    )
    results = []
    for path, (image, meta) in zip(inputs, loaded, strict=True):
        image = _to_grey(image, args.channel, path)
        colour = _is_colour(image, path)
        if colour and args.method not in ("region-grow", "kmeans"):
            from skimage.color import rgb2gray

            image = rgb2gray(image[..., :3])
            colour = False
        result = segment(
            image,
            args.method,
            seeds=seeds,
            value=args.value,
            classes=args.classes,
            block_size=args.block,
            local_method=args.local_method,
            offset=args.offset,
            low=args.low,
            high=args.high,
            tolerance=args.tolerance,
            connectivity=args.connectivity,
            multiplier=args.multiplier,
            iterations=args.iterations,
            initial_radius=args.radius,
            k=args.k,
            color_space=args.color_space,
            spatial_weight=args.spatial_weight,
            seed=args.seed,
            channel_axis=-1 if colour else None,
        )
        if args.invert:
            if result.dtype != np.bool_:
                raise UsageError("--invert applies to binary methods only")
            result = ~result
        if result.dtype == np.bool_:
            if args.open:
                result = masks.opening(result, radius=args.open)
            if args.close:
                result = masks.closing(result, radius=args.close)
            if args.fill_holes:
                result = masks.fill_holes(result)
            if args.min_size:
                result = masks.remove_small_objects(result, args.min_size)
            if args.keep_largest:
                result = masks.keep_largest(result)
        results.append((image, meta, result))
    for i, (image, meta, result) in enumerate(results):
        io.write_mask(outs[i], result, meta=meta)
        if overlays:
            picture = (
                viz.montage(image, labels=result.astype(np.int32))
                if result.ndim == 3
                else viz.overlay_mask(image, result.astype(np.int32))
            )
            viz.save_png(overlays[i], picture)
        values = np.unique(result)
        print(f"{inputs[i]} -> {outs[i]}  ({result.dtype}, values {values[:10].tolist()})")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from segloc.evaluate import evaluate_paths

    if args.model is not None or args.data is not None:
        return _evaluate_model(args)
    if args.pred is None or args.truth is None:
        raise UsageError("give PRED and TRUTH, or --model RUN --data DIR")
    classes = [int(c) for c in args.report.split(",")] if args.report else None
    result = evaluate_paths(
        args.pred,
        args.truth,
        num_classes=args.classes,
        classes=classes,
        ignore_index=args.ignore_index,
        truth_suffix=args.truth_suffix,
        empty=args.empty,
        surface=not args.no_surface,
    )
    cols = result.columns
    width = max(8, *(len(r["case"]) for r in result.rows))
    print(f"{'case':<{width}}  " + "  ".join(f"{c:>9}" for c in cols))
    for row in result.rows:
        print(
            f"{row['case']:<{width}}  "
            + "  ".join(f"{row.get(c, float('nan')):9.4f}" for c in cols)
        )
    summary = result.summary()
    for stat in ("mean", "std", "median"):
        print(f"{stat:<{width}}  " + "  ".join(f"{summary[stat][c]:9.4f}" for c in cols))
    for name, items in (("prediction", result.unmatched_pred), ("truth", result.unmatched_truth)):
        if items:
            print(
                f"warning: {len(items)} {name} file(s) without a match, e.g. {items[0]}",
                file=sys.stderr,
            )
    if args.csv:
        result.to_csv(args.csv)
    if args.json:
        result.to_json(args.json)
    return 0


# -- predict, evaluate --model, compare (deep models on files and datasets) ------------------


def _predictor(args: argparse.Namespace, models: str | Sequence[str]):
    """A Predictor for one model, the Ensemble of several (``--model`` given more than once)."""
    from segloc.engine.infer import Ensemble, Predictor

    members = [
        Predictor(
            model,
            device=args.device,
            backend=getattr(args, "backend", "torch"),
            overlap=args.overlap,
            batch_size=args.batch,
            tta=args.tta,
        )
        for model in ([models] if isinstance(models, str) else models)
    ]
    return members[0] if len(members) == 1 else Ensemble(members)


def cmd_predict(args: argparse.Namespace) -> int:
    from segloc.engine.infer import predict_to_folder

    predictor = _predictor(args, args.model)
    written = predict_to_folder(
        predictor,
        args.inputs,
        args.output,
        probabilities=args.probabilities,
        overlay=args.overlay,
        boxes=args.boxes,
        progress=not args.quiet,
    )
    print(
        f"{len(written)} file(s) written to {args.output} ({', '.join(map(str, predictor.paths))})"
    )
    return 0


def _print_table(rows: Sequence[dict], key: str) -> None:
    cols = [c for c in rows[0] if c != key] if rows else []
    width = max(8, *(len(str(r[key])) for r in rows)) if rows else 8
    print(f"{key:<{width}}  " + "  ".join(f"{c:>9}" for c in cols))
    for row in rows:
        cells = [
            f"{v:9.4f}" if isinstance(v, float) else f"{v!s:>9}"
            for v in (row.get(c, float("nan")) for c in cols)
        ]
        print(f"{row[key]!s:<{width}}  " + "  ".join(cells))


def _run_folder(model: str) -> Path:
    """The run folder of a ``--model`` argument: the folder itself, or a checkpoint's folder."""
    path = Path(model)
    return path if path.is_dir() else path.parent


def _note_trained_on(cases: list, run: Path | None) -> None:
    """Warn on stderr when scored cases trained the model: their scores measure the fit."""
    from segloc.evaluate import trained_on

    seen = trained_on(cases, run)
    if seen:
        print(
            f"note: {len(seen)} of the {len(cases)} cases (e.g. {seen[0]}) trained the model "
            f"({run / 'split.json'}): their scores measure the fit; --split val scores the "
            "held-out cases only",
            file=sys.stderr,
        )


def _evaluate_model(args: argparse.Namespace) -> int:
    from segloc.evaluate import model_segmenter, score_cases, select_cases
    from segloc.viz import comparison_panel

    if args.model is None or args.data is None:
        raise UsageError("--model and --data go together")
    if args.pred is not None or args.truth is not None:
        raise UsageError("give PRED and TRUTH, or --model RUN --data DIR, not both")
    if args.output is None:
        raise UsageError("-o/--output (a folder) is required with --model")
    split = "val" if args.val_only else args.split
    runs = [_run_folder(m) for m in args.model]
    # several models: the first one's split.json picks the cases; each notes its own
    cases = select_cases(args.data, run=runs[0], split=split)
    for run in runs:
        _note_trained_on(cases, run)
    predictor = _predictor(args, args.model)
    result, kept = score_cases(
        model_segmenter(predictor),
        cases,
        num_classes=predictor.num_classes,
        label_mapping=predictor.label_mapping,
        ignore_index=predictor.extra.get("ignore_index"),
        empty=args.empty,
        surface=not args.no_surface,
        progress=not args.quiet,
    )
    out = Path(args.output)
    summary = result.summary()
    _print_table(result.rows + [{"case": "mean", **summary["mean"]}], "case")
    result.to_csv(out / "per_case.csv")
    result.to_json(out / "per_case.json")
    for which, rec in kept.items():
        comparison_panel(
            rec.image,
            rec.truth,
            rec.pred,
            out / f"{which}.png",
            dice=rec.dice,
            title=f"{which}: {rec.case}",
        )
    print(f"{len(result.rows)} case(s) -> {out}/per_case.csv, per_case.json, best.png, worst.png")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from segloc.evaluate import (
        CLASSICAL,
        classical_segmenter,
        compare_methods,
        comparison_table,
        model_segmenter,
        select_cases,
        write_table,
    )

    specs = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not specs:
        raise UsageError("--methods must name at least one method")
    deep = {}
    for spec in specs:
        if ":" in spec:
            name, run = spec.split(":", 1)
            if not name or not run or name in deep:
                raise UsageError(
                    f"--methods: deep methods are NAME:RUN with unique names, got {spec!r}"
                )
            deep[name] = _predictor(args, run)
        elif spec not in CLASSICAL:
            raise UsageError(
                f"--methods: {spec!r} is neither NAME:RUN nor one of {', '.join(CLASSICAL)}"
            )
    predictors = list(deep.values())
    if predictors:
        classes = {p.num_classes for p in predictors}
        if len(classes) > 1:
            raise UsageError(f"--methods: the models disagree on the class count {sorted(classes)}")
        num_classes = predictors[0].num_classes
        label_mapping = predictors[0].label_mapping
        ignore_index = predictors[0].extra.get("ignore_index")
    else:
        num_classes, label_mapping, ignore_index = args.classes, "auto", args.ignore_index
    if args.split != "all" and not predictors:
        raise UsageError("--split needs a NAME:RUN method (its run folder holds split.json)")
    run = None
    if predictors:
        run = _run_folder(next(s.split(":", 1)[1] for s in specs if ":" in s))
    cases = select_cases(args.data, run=run, split=args.split)
    _note_trained_on(cases, run)
    methods = [
        (s.split(":", 1)[0], model_segmenter(deep[s.split(":", 1)[0]]))
        if ":" in s
        else (s, classical_segmenter(s, num_classes=num_classes))
        for s in specs
    ]
    results = compare_methods(
        methods,
        cases,
        num_classes=num_classes,
        label_mapping=label_mapping,
        ignore_index=ignore_index,
        surface=not args.no_surface,
        progress=not args.quiet,
    )
    rows = comparison_table(results)
    _print_table(rows, "method")
    out = Path(args.output)
    write_table(rows, out / "compare.csv")
    long = [{"method": m, **r} for m, ev in results.items() for r in ev.rows]
    write_table(long, out / "compare_cases.csv")
    print(f"{len(cases)} case(s), {len(rows)} method(s) -> {out}/compare.csv, compare_cases.csv")
    return 0


def cmd_boxes(args: argparse.Namespace) -> int:
    from segloc import io, masks
    from segloc._validation import atomic_path

    path = Path(args.mask)
    labels, meta = io.read_mask(path, kind=args.kind)
    objects = masks.mask_to_boxes(labels.astype(np.int32), connectivity=args.connectivity)
    doc = {
        "image": str(path),
        "shape": list(labels.shape),
        "box_format": "xyxy" if labels.ndim == 2 else "xyzxyz",
        "convention": "half-open pixel edges; x = column, y = row, z = slice",
        "objects": [
            {**o, "bbox": masks.box_to_coco(o["box"]) if labels.ndim == 2 else None}
            for o in objects
        ],
    }
    text = json.dumps(doc, indent=2)
    if args.output:
        with atomic_path(args.output) as tmp:
            tmp.write_text(text)
        print(f"{len(objects)} objects -> {args.output}")
    else:
        print(text)
    return 0


# ------------------------------------------------------ localization: localize, train, evaluate

LOCALIZE_METHODS = ("sliding-window", "proposals", "from-mask", "cnn")
DETECTOR_METHODS = ("hog-svm", "proposals", "cnn")


def _read_box_dataset(folder: Path) -> list[dict]:
    """Box records of DIR: ``annotations/*.xml`` (VOC) or ``labels.csv``, beside ``images/``."""
    from segloc.localize.annotations import read_box_csv, read_voc_folder

    if (folder / "annotations").is_dir():
        return read_voc_folder(folder)
    if (folder / "labels.csv").is_file():
        return read_box_csv(folder / "labels.csv", image_folder=folder / "images")
    raise UsageError(f"{folder}: must hold annotations/*.xml or labels.csv beside images/")


def _shrink(image: np.ndarray, max_side: int | None) -> tuple[np.ndarray, float]:
    """Image resized so its longer side is at most ``max_side``; the factor used."""
    from skimage.transform import resize

    h, w = image.shape[:2]
    if max_side is None or max(h, w) <= max_side:
        return image, 1.0
    f = max_side / max(h, w)
    small = resize(image, (round(h * f), round(w * f)), anti_aliasing=True, preserve_range=True)
    return small.astype(np.float32), f


def _localize_one(args: argparse.Namespace, model, image: np.ndarray, mask_path: Path | None):
    """(boxes, scores, class indices 0..K-1) of one image by ``args.method``."""
    method = args.method
    if method == "sliding-window":
        max_side = model.metadata_.get("max_side")
        grey = image.mean(axis=2) if image.ndim == 3 else image
        grey = grey / 255.0 if image.dtype == np.uint8 else grey
        small, f = _shrink(np.asarray(grey, np.float32), max_side)
        boxes, scores = model.detect(
            small,
            score_threshold=args.score_threshold,
            max_detections=args.max_detections,
        )
        return boxes / f, scores, np.zeros(len(boxes), np.int64)
    if method == "proposals" and model is not None:
        return model.detect(
            image,
            score_threshold=args.score_threshold,
            max_detections=args.max_detections,
            return_classes=True,
        )
    if method == "proposals":
        from segloc.localize.proposals import selective_search

        small, f = _shrink(image, args.max_side)
        if small.dtype != np.uint8 and not np.issubdtype(small.dtype, np.floating):
            small = small.astype(np.float32) / float(np.iinfo(small.dtype).max)
        elif np.issubdtype(small.dtype, np.floating) and image.dtype == np.uint8:
            small = np.clip(small / 255.0, 0, 1)
        boxes, _ = selective_search(small, mode="fast", max_proposals=args.top)
        # raw proposals carry their rank only: score 1 / (1 + rank), best first
        scores = 1.0 / (1.0 + np.arange(len(boxes)))
        return boxes / f, scores, np.zeros(len(boxes), np.int64)
    if method == "from-mask":
        from segloc import io
        from segloc.localize.detect import instances_from_probability, score_instances

        if mask_path is not None:
            fg, _ = io.read_mask(mask_path)
            fg = fg > 0
            if fg.shape != image.shape[:2]:
                raise ValueError(
                    f"{mask_path}: mask shape {fg.shape} must match its image {image.shape[:2]}"
                )
            prob = fg.astype(np.float64)
        else:
            from skimage.filters import threshold_otsu

            grey = image.mean(axis=2) if image.ndim == 3 else image.astype(np.float64)
            t = threshold_otsu(grey)
            fg = grey < t if args.dark else grey > t
            # scores: mean intensity scaled to [0, 1] (inverted for dark objects), so that
            # the clearer objects rank first
            lo, hi = float(grey.min()), float(grey.max())
            prob = (grey - lo) / (hi - lo) if hi > lo else np.ones_like(grey)
            prob = 1.0 - prob if args.dark else prob
        inst = instances_from_probability(
            fg.astype(np.float64),
            split=not args.no_split,
            min_size=args.min_size,
            min_distance=args.min_distance,
        )
        dets = score_instances(inst, prob)
        boxes = np.array([d["box"] for d in dets], np.float64).reshape(-1, 4)
        scores = np.array([d["score"] for d in dets], np.float64)
        order = np.argsort(-scores, kind="stable")[: args.max_detections]
        return boxes[order], scores[order], np.zeros(len(order), np.int64)
    # cnn
    from segloc.localize.cnn import localize_cnn

    boxes, scores, labels = localize_cnn(model, image, return_labels=True)
    keep = scores >= args.score_threshold
    return boxes[keep], scores[keep], labels[keep].astype(np.int64) - 1


def _load_localize_model(args: argparse.Namespace) -> tuple[object, list[str]]:
    """The model named by --model for the method, and its class names."""
    method = args.method
    if args.model is None:
        if method in ("sliding-window", "cnn"):
            raise UsageError(f"--method {method} needs --model (from segloc train-detector)")
        return None, ["object"]
    if method == "from-mask":
        raise UsageError("--method from-mask takes no --model (it reads --mask or thresholds)")
    if method == "sliding-window":
        from segloc.localize.sliding_window import HogSvmDetector

        model = HogSvmDetector.load(args.model)
        return model, list(model.metadata_.get("classes", ["object"]))
    if method == "proposals":
        from segloc.localize.rcnn import ProposalDetector

        model = ProposalDetector.load(args.model)
        return model, list(model.classes_)
    from segloc.localize.cnn import load_localizer

    if not Path(args.model).exists():
        raise UsageError(f"{args.model}: no such model file or run folder")
    model = load_localizer(args.model)
    return model, list(getattr(model, "extra", {}).get("classes") or ["object"])


def cmd_localize(args: argparse.Namespace) -> int:
    from segloc import io, viz
    from segloc._validation import atomic_path
    from segloc.masks import coco_results

    images = [Path(p) for p in args.images]
    if args.mask is not None:
        if args.method != "from-mask":
            raise UsageError("--mask goes with --method from-mask")
        if len(args.mask) != len(images):
            raise UsageError(
                f"--mask must give one mask per image ({len(images)}), got {len(args.mask)}"
            )
    if args.score_threshold is None:
        # SVM margins: 0 is the decision boundary; the other methods' scores are in [0, 1]
        args.score_threshold = 0.0
    model, classes = _load_localize_model(args)
    overlays = None
    if args.overlay:
        overlays = _output_paths(images, Path(args.overlay), lambda p: "_boxes.png")
    doc = {
        "method": args.method,
        "convention": "COCO bbox [x, y, width, height], half-open pixel edges; "
        "image_id = position in 'images' (1-based)",
        "images": [],
        "categories": [{"id": k + 1, "name": c} for k, c in enumerate(classes)],
        "annotations": [],
    }
    drawn = []
    for k, path in enumerate(images, start=1):
        image, _ = io.read_image(path)
        if image.ndim != 2 and not (image.ndim == 3 and image.shape[2] in (3, 4)):
            raise ValueError(f"{path}: must be a 2D grey or colour image, got shape {image.shape}")
        if image.ndim == 3:
            image = image[..., :3]
        mask = Path(args.mask[k - 1]) if args.mask else None
        boxes, scores, cls = _localize_one(args, model, image, mask)
        doc["images"].append(
            {
                "id": k,
                "file_name": path.name,
                "path": str(path),
                "height": int(image.shape[0]),
                "width": int(image.shape[1]),
            }
        )
        for r in coco_results(k, boxes, scores, np.asarray(cls, np.int64) + 1):
            r["id"] = len(doc["annotations"]) + 1
            r["area"] = r["bbox"][2] * r["bbox"][3]
            doc["annotations"].append(r)
        if overlays is not None:
            labels = [classes[int(c)] if 0 <= int(c) < len(classes) else str(c) for c in cls]
            drawn.append(viz.draw_boxes(image, boxes, labels=labels, scores=list(scores)))
        print(f"{path}: {len(boxes)} boxes", flush=True)
    # nothing is written before every image worked
    with atomic_path(args.output) as tmp:
        tmp.write_text(json.dumps(doc))
    if overlays is not None:
        for out, rgb in zip(overlays, drawn, strict=True):
            out.parent.mkdir(parents=True, exist_ok=True)
            viz.save_png(out, rgb)
    print(f"{len(doc['annotations'])} boxes in {len(images)} image(s) -> {args.output}")
    return 0


def cmd_train_detector(args: argparse.Namespace) -> int:
    from segloc.engine.data import split_cases

    data = Path(args.data)
    if not data.is_dir():
        raise UsageError(f"{data}: --data must be a dataset folder")
    if args.method == "cnn":
        from segloc.localize.cnn import train_localizer

        if args.epochs is None and args.time_budget is None:
            raise UsageError("--method cnn needs --epochs and/or --time-budget")
        path = train_localizer(
            data,
            args.output,
            epochs=args.epochs,
            time_budget=args.time_budget,
            resume=args.resume,
            val_fraction=args.val_fraction,
            seed=args.seed,
            device=args.device,
        )
        print(f"CNN localizer -> {path}")
        return 0
    from segloc import io

    records = _read_box_dataset(data)
    by_stem = {r["image_path"].stem: r for r in records}
    train, val = split_cases(sorted(by_stem), val_fraction=args.val_fraction, seed=args.seed)
    train = [by_stem[s] for s in train]
    images = [io.read_image(r["image_path"])[0] for r in train]
    images = [im[..., :3] if im.ndim == 3 else im for im in images]
    classes = sorted({c for r in train for c in r["classes"]})
    meta = {
        "data": str(data),
        "held_out": sorted(val),
        "val_fraction": args.val_fraction,
        "seed": args.seed,
    }
    if args.method == "hog-svm":
        from segloc.localize.sliding_window import HogSvmDetector

        if len(classes) > 1:
            raise UsageError(
                f"{data}: --method hog-svm trains one class, got {len(classes)}: {classes}"
            )
        max_side = args.max_side or 320
        greys, boxes = [], []
        for im, r in zip(images, train, strict=True):
            grey = im.mean(axis=2) if im.ndim == 3 else im
            grey = grey / 255.0 if im.dtype == np.uint8 else grey
            small, f = _shrink(np.asarray(grey, np.float32), max_side)
            greys.append(small)
            boxes.append(r["boxes"] * f)
        det = HogSvmDetector(None, scale=1.2).fit(
            greys,
            boxes,
            negatives_per_image=30,
            hard_negative_rounds=args.hard_rounds,
            seed=args.seed,
        )
        det.save(args.output, metadata={**meta, "classes": classes, "max_side": max_side})
    else:
        from segloc.localize.rcnn import ProposalDetector

        det = ProposalDetector(max_side=args.max_side or 256).fit(
            images,
            [r["boxes"] for r in train],
            [r["classes"] for r in train],
            hard_negative_rounds=args.hard_rounds,
            seed=args.seed,
        )
        det.save(args.output, metadata=meta)
    print(
        f"{args.method} detector on {len(train)} images ({len(val)} held out) "
        f"in {det.training_stats_['seconds']:.0f} s -> {args.output}"
    )
    return 0


def _truth_dataset(path: Path) -> dict:
    """COCO dataset of a truth file: COCO JSON, a folder of VOC XML files, or a box CSV."""
    from segloc.localize.annotations import read_box_csv, read_voc_xml

    if path.is_dir():
        folder = path / "annotations" if (path / "annotations").is_dir() else path
        files = sorted(folder.glob("*.xml"))
        if not files:
            raise ValueError(f"{path}: must hold VOC .xml files, got none")
        records = [read_voc_xml(f) for f in files]
    elif path.suffix.lower() == ".csv":
        records = read_box_csv(path)
    elif path.suffix.lower() == ".json":
        try:
            truth = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(truth, dict) or not all(
            k in truth for k in ("images", "annotations", "categories")
        ):
            raise ValueError(f"{path}: must be a COCO dataset with images, annotations, categories")
        return truth
    else:
        raise ValueError(f"{path}: truth must be a COCO .json, a VOC XML folder or a .csv")
    records = sorted(records, key=lambda r: r["image_path"].name)
    classes = sorted({c for r in records for c in r["classes"]})
    truth = {
        "images": [],
        "annotations": [],
        "categories": [{"id": k + 1, "name": c} for k, c in enumerate(classes)],
    }
    for k, r in enumerate(records, start=1):
        truth["images"].append(
            {"id": k, "file_name": r["image_path"].name, "height": r["height"], "width": r["width"]}
        )
        for box, c, diff in zip(r["boxes"], r["classes"], r["difficult"], strict=True):
            x0, y0, x1, y1 = (float(v) for v in box)
            truth["annotations"].append(
                {
                    "id": len(truth["annotations"]) + 1,
                    "image_id": k,
                    "category_id": classes.index(c) + 1,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": int(bool(diff)),
                }
            )
    return truth


def _predictions(path: Path, truth: dict) -> list[dict]:
    """COCO results of PRED, with image and category ids mapped onto the truth's."""
    try:
        pred = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if isinstance(pred, list):
        return pred  # plain COCO results: ids already those of the truth
    if not isinstance(pred, dict) or "annotations" not in pred or "images" not in pred:
        raise ValueError(f"{path}: must be a COCO results list or a segloc localize file")
    # a segloc localize file: images by file name, categories by name
    truth_ids = {im.get("file_name"): im["id"] for im in truth["images"]}
    image_map = {}
    for im in pred["images"]:
        if im.get("file_name") not in truth_ids:
            raise ValueError(f"{path}: image {im.get('file_name')!r} is not in the truth")
        image_map[im["id"]] = truth_ids[im["file_name"]]
    truth_cats = {c["name"]: c["id"] for c in truth["categories"]}
    cat_map = {}
    for c in pred.get("categories", []):
        if c["name"] in truth_cats:
            cat_map[c["id"]] = truth_cats[c["name"]]
        elif len(truth_cats) == 1:
            # one class each side: a detector's generic "object" is the truth's class
            cat_map[c["id"]] = next(iter(truth_cats.values()))
        else:
            raise ValueError(f"{path}: category {c['name']!r} is not in the truth")
    out = []
    for r in pred["annotations"]:
        try:
            out.append(
                {
                    **r,
                    "image_id": image_map[r["image_id"]],
                    "category_id": cat_map.get(r["category_id"], r["category_id"]),
                }
            )
        except (KeyError, TypeError):
            raise ValueError(f"{path}: result names an image id not in its images") from None
    return out


def cmd_evaluate_boxes(args: argparse.Namespace) -> int:
    from segloc.detection_metrics import evaluate_detections

    pred_path, truth_path = Path(args.pred), Path(args.truth)
    if not pred_path.is_file():
        raise UsageError(f"{pred_path}: no such file")
    if not truth_path.exists():
        raise UsageError(f"{truth_path}: no such file or folder")
    truth = _truth_dataset(truth_path)
    results = _predictions(pred_path, truth)
    try:
        ev = evaluate_detections(truth, results)
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{pred_path}: {exc}") from None
    names = {c["id"]: c["name"] for c in truth["categories"]}
    keys = ("AP", "AP50", "AP75", "AR100")
    print(f"{'class':<16}" + "".join(f"{k:>8}" for k in keys))
    print(f"{'all':<16}" + "".join(f"{ev[k]:>8.4f}" for k in keys))
    if len(names) > 1:
        for cid, per in sorted(ev["per_class"].items()):
            print(f"{names.get(cid, str(cid)):<16}" + "".join(f"{per[k]:>8.4f}" for k in keys))
    if args.json:
        from segloc._validation import atomic_path

        with atomic_path(args.json) as tmp:
            tmp.write_text(
                json.dumps(
                    {k: v for k, v in ev.items() if k != "per_class"}
                    | {"per_class": {names.get(c, str(c)): v for c, v in ev["per_class"].items()}},
                    indent=2,
                )
            )
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from segloc import io

    image, meta = io.read_image(args.file)
    print(f"file:     {args.file}")
    print(f"format:   {meta.format}")
    print(f"shape:    {image.shape}")
    print(f"dtype:    {image.dtype}")
    print(f"spacing:  {tuple(round(float(s), 6) for s in meta.spacing)}")
    if meta.affine is not None:
        print(
            "affine:   "
            + np.array2string(np.asarray(meta.affine), precision=4).replace("\n", "\n          ")
        )
    finite = image[np.isfinite(image)] if np.issubdtype(image.dtype, np.floating) else image
    print(
        f"range:    {finite.min() if finite.size else 'n/a'} .. "
        f"{finite.max() if finite.size else 'n/a'}"
    )
    values = np.unique(image) if image.size <= 50_000_000 else None
    if values is not None and values.size <= 32:
        counts = [int(np.count_nonzero(image == v)) for v in values]
        print(
            "labels:   "
            + ", ".join(f"{v}: {c}" for v, c in zip(values.tolist(), counts, strict=True))
        )
    elif values is not None:
        print(f"values:   {values.size} distinct")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from segloc.nn.export import export_checkpoint

    size = tuple(int(s) for s in args.size.split("x")) if args.size else None
    out = export_checkpoint(args.checkpoint, args.onnx, example_size=size)
    print(f"{args.checkpoint} -> {out}")
    return 0


def cmd_dataset_check(args: argparse.Namespace) -> int:
    from segloc.engine.data import check_dataset

    report = check_dataset(
        args.dir, image_dir=args.images, label_dir=args.labels, label_suffix=args.label_suffix
    )
    print(report.format(limit=args.limit))
    # a dataset with problems is bad input: say so with the exit status too
    return 0 if report.ok else 2


def cmd_demo(args: argparse.Namespace) -> int:
    from segloc.demo import run_demo

    run_demo(Path(args.data), Path(args.out))
    return 0


# flag -> TrainConfig field for `segloc train`; None defaults so that only given flags
# override the YAML file
_TRAIN_FLAGS = (
    ("--data", "data", str, "dataset folder (images/ + labels/ or masks/)"),
    ("--out", "out", str, "run folder (default runs/run)"),
    ("--model", "model", str, "unet, unetpp, vnet or unet3d (default unet)"),
    ("--classes", "classes", int, "classes including background (default: from the labels)"),
    ("--base-channels", "base_channels", int, "channels of the first level"),
    ("--depth", "depth", int, "number of poolings"),
    ("--patch", "patch", int, "training patch size, one value per axis or one for all"),
    ("--batch", "batch", int, "patches per step (default 4)"),
    ("--epochs", "epochs", int, "stop after this many epochs"),
    ("--time-budget", "time_budget", str, "stop after this wall time, e.g. 20m or 1h30m"),
    ("--samples-per-epoch", "samples_per_epoch", int, "patches per epoch (default 200)"),
    ("--optimizer", "optimizer", str, "adamw (default) or sgd (momentum 0.99, as U-Net)"),
    ("--lr", "lr", float, "learning rate (default 1e-3 AdamW, 1e-2 SGD)"),
    ("--weight-decay", "weight_decay", float, "default 1e-4"),
    ("--momentum", "momentum", float, "SGD momentum (default 0.99)"),
    ("--schedule", "schedule", str, "poly (default), cosine or constant"),
    ("--warmup", "warmup", float, "fraction of the run with linear warm-up (default 0)"),
    ("--ema", "ema", float, "keep and checkpoint a moving average of the weights, e.g. 0.999"),
    ("--loss", "loss", str, "dice_ce (default), ce or dice"),
    ("--border-weight", "border_weight", float, "U-Net border weight w0 on the CE term, e.g. 10"),
    ("--border-sigma", "border_sigma", float, "its border width in pixels (default 5)"),
    ("--val", "val", str, "separate validation dataset folder"),
    ("--val-fraction", "val_fraction", float, "share of cases kept for validation (0.2)"),
    ("--group-by", "group_by", str, "case (default) or folder: split whole folders (patients)"),
    ("--val-split", "val_split", str, "random (default) or last: hold out the last cases by name"),
    ("--val-every", "val_every", int, "validate every N epochs (default 1)"),
    ("--patience", "patience", int, "early stopping after N validations without progress"),
    ("--normalize", "normalize", str, "zscore (default), percentile or minmax"),
    ("--target-spacing", "target_spacing", float, "resample 3D cases to this spacing"),
    ("--ignore-index", "ignore_index", int, "label left out of loss and scores"),
    ("--label-suffix", "label_suffix", str, "ending of label names, e.g. _mask"),
    ("--augment", "augment", str, "default, light (flips, 90 degree turns) or none"),
    ("--foreground-fraction", "foreground_fraction", float, "share of foreground patches"),
    ("--workers", "workers", int, "data loading processes (default 0)"),
    ("--cache-mib", "cache_mib", int, "memory for loaded cases per process (default 4096)"),
    ("--device", "device", str, "auto (default), cpu or cuda"),
    ("--seed", "seed", int, "random seed (default 0)"),
    ("--panels", "panels", int, "validation cases drawn as sample panels (default 2)"),
    ("--threads", "threads", int, "torch threads (default: torch's choice)"),
    ("--precision", "precision", str, "auto (fp16 on CUDA, fp32 on CPU), fp32, bf16 or fp16"),
)
_TRAIN_LISTS = ("patch", "target_spacing")


def cmd_train(args: argparse.Namespace) -> int:
    from segloc.engine.train import TrainConfig, train

    values = TrainConfig.from_yaml(args.config).to_dict() if args.config else {}
    for _, name, _, _ in _TRAIN_FLAGS:
        value = getattr(args, name)
        if value is not None:
            values[name] = value
    for flag, name in (("resume", "resume"), ("deep_supervision", "deep_supervision")):
        if getattr(args, flag):
            values[name] = True
    cfg = TrainConfig.from_dict(values, source=args.config or "command line")
    result = train(cfg, progress=not args.quiet)
    print(
        f"{result.out}: {result.epochs} epoch(s), best validation Dice {result.best_dice:.4f} "
        f"at epoch {result.best_epoch} -> {result.out / 'best.safetensors'}"
    )
    return 0


# --------------------------------------------------------------------------- serve


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from segloc.serve import Limits, run
    except ImportError as exc:  # fastapi/uvicorn are the optional `serve` extra
        print(f"segloc serve: error: {exc}; pip install segloc[serve]", file=sys.stderr)
        return 2
    mib = 1 << 20
    values = {
        "max_upload_bytes": args.max_upload_mib and args.max_upload_mib * mib,
        "max_voxels": args.max_voxels,
        "max_session_bytes": args.max_session_mib and args.max_session_mib * mib,
        "max_total_bytes": args.max_memory_mib and args.max_memory_mib * mib,
        "session_ttl": args.session_ttl,
        "workers": args.workers,
    }
    limits = Limits(**{k: v for k, v in values.items() if v is not None})
    run(args.host, args.port, args.data, args.runs, args.allow_remote, limits)
    return 0


# --------------------------------------------------------------------------- parser


def _add_inference_options(p, *, backend: bool) -> None:
    p.add_argument("--overlap", type=float, default=0.5, help="window overlap in [0, 1)")
    p.add_argument("--batch", type=int, default=4, help="windows per forward pass")
    p.add_argument("--tta", action="store_true", help="average over all axis flips")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    if backend:
        p.add_argument("--backend", default="torch", choices=["torch", "onnx"])
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="segloc",
        description="Localization (boxes) and segmentation (masks) in 2D images and 3D volumes.",
        epilog=COORDS_HELP,
    )
    parser.add_argument("--version", action="version", version=f"segloc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "segment",
        help="classical segmentation of images or volumes",
        description="Segment images with a classical method and write masks in the input's format "
        "(PNG for 2D images, NIfTI/NRRD for volumes). " + COORDS_HELP,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "images", nargs="+", help="image files (PNG, JPEG, BMP, TIFF, NIfTI, NRRD) or DICOM folders"
    )
    p.add_argument(
        "--method",
        required=True,
        choices=[
            "fixed",
            "otsu",
            "li",
            "yen",
            "triangle",
            "multiotsu",
            "local",
            "hysteresis",
            "region-grow",
            "srg",
            "confidence",
            "kmeans",
        ],
    )
    p.add_argument(
        "-o",
        "--output",
        required=True,
        help="output file (one input) or folder (several inputs; names keep the input stems)",
    )
    p.add_argument("--overlay", help="overlay PNG (one input) or folder of overlays")
    p.add_argument(
        "--channel", type=int, help="use this channel of a colour image (e.g. 1 = FLAIR in LGG)"
    )
    p.add_argument("--invert", action="store_true", help="objects are darker than the threshold")
    g = p.add_argument_group("threshold options")
    g.add_argument("--value", type=float, help="threshold for --method fixed")
    g.add_argument(
        "--classes", type=int, default=3, help="classes for multiotsu (background included)"
    )
    g.add_argument("--block", type=int, default=35, help="odd block size for --method local")
    g.add_argument("--local-method", default="gaussian", choices=["gaussian", "mean"])
    g.add_argument("--offset", type=float, default=0.0, help="subtracted from the local threshold")
    g.add_argument("--low", type=float, help="low threshold for hysteresis")
    g.add_argument("--high", type=float, help="high threshold for hysteresis")
    g = p.add_argument_group("region growing options")
    g.add_argument(
        "--seeds",
        nargs="+",
        type=parse_point,
        metavar="X,Y[,Z]",
        help="seed points as column,row[,slice]",
    )
    g.add_argument("--tolerance", type=float, help="max difference to the seed value (region-grow)")
    g.add_argument(
        "--connectivity",
        type=int,
        default=1,
        help="1 or 4/8 (2D), 1..3 or 6/18/26 (3D); 1 = faces only",
    )
    g.add_argument(
        "--multiplier", type=float, default=2.5, help="confidence: mean +/- multiplier*std"
    )
    g.add_argument("--iterations", type=int, default=2, help="confidence: re-estimations")
    g.add_argument("--radius", type=int, default=1, help="confidence: initial neighbourhood radius")
    g = p.add_argument_group("k-means options")
    g.add_argument("--k", type=int, default=3, help="number of clusters")
    g.add_argument("--color-space", default="lab", choices=["rgb", "lab"])
    g.add_argument("--spatial-weight", type=float, default=0.0)
    g.add_argument("--seed", type=int, default=0, help="random seed (k-means++ initialisation)")
    g = p.add_argument_group("post-processing (binary results)")
    g.add_argument("--open", type=int, default=0, metavar="R", help="opening with radius R")
    g.add_argument("--close", type=int, default=0, metavar="R", help="closing with radius R")
    g.add_argument("--fill-holes", action="store_true")
    g.add_argument(
        "--min-size", type=int, default=0, help="remove objects smaller than this (pixels)"
    )
    g.add_argument("--keep-largest", action="store_true")
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser(
        "evaluate",
        help="score predicted masks against ground truth (files or folders)",
        description="Dice, IoU and HD95 per class and case; "
        "folders are matched by file stem, recursively.",
    )
    p.add_argument("pred", nargs="?", help="prediction file or folder")
    p.add_argument("truth", nargs="?", help="ground-truth file or folder")
    p.add_argument(
        "--classes", type=int, help="number of labels including background (default: inferred)"
    )
    p.add_argument("--report", help="comma-separated classes to report (default: all foreground)")
    p.add_argument("--ignore-index", type=int, help="truth label to ignore (CamVid void = 11)")
    p.add_argument("--truth-suffix", default="", help="suffix of truth stems, e.g. _mask")
    p.add_argument(
        "--empty",
        default="nan",
        choices=["nan", "one", "zero"],
        help="score of a class absent from both prediction and truth",
    )
    p.add_argument("--no-surface", action="store_true", help="skip HD95 (faster)")
    p.add_argument("--csv", help="write per-case rows and summary to this CSV")
    p.add_argument("--json", help="write per-case rows and summary to this JSON")
    g = p.add_argument_group(
        "model on a dataset (instead of PRED TRUTH)",
        "predict every case of DIR with a trained model and score it; writes per_case.csv, "
        "per_case.json and best.png / worst.png panels to -o",
    )
    g.add_argument(
        "--model",
        action="append",
        help="run folder (best.safetensors) or checkpoint file; repeat it to score the "
        "ensemble (mean probabilities) of several",
    )
    g.add_argument("--data", help="dataset folder (images/ + labels/ or masks/)")
    g.add_argument(
        "--split",
        default="all",
        choices=["all", "train", "val"],
        help="cases of the run folder's split.json",
    )
    g.add_argument("--val-only", action="store_true", help="same as --split val")
    g.add_argument("-o", "--output", help="output folder")
    _add_inference_options(g, backend=False)
    p.set_defaults(func=cmd_evaluate)

    # -- predict and compare
    p = sub.add_parser(
        "predict",
        help="segment images or volumes with a trained model",
        description="Sliding-window inference with a trained model. Masks are written in the "
        "input's format (PNG for 2D images, 0/255 when binary; NIfTI/NRRD volumes keep the input "
        "affine). Nothing is written unless every input succeeds.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    p.add_argument(
        "--model",
        required=True,
        action="append",
        help="run folder or checkpoint file; repeat it to average the class probabilities of "
        "several models (an ensemble, as nnU-Net's folds)",
    )
    p.add_argument("-o", "--output", required=True, help="output folder")
    _add_inference_options(p, backend=True)
    p.add_argument(
        "--probabilities",
        action="store_true",
        help="also write class probabilities (<stem>_prob.npy, or .nii.gz for NIfTI inputs)",
    )
    p.add_argument("--overlay", action="store_true", help="also write <stem>_overlay.png")
    p.add_argument(
        "--boxes",
        action="store_true",
        help="also write boxes.json: connected components of the masks, COCO results style",
    )
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "compare",
        help="classical methods and trained models scored on the same cases",
        description="One table of mean Dice, IoU and HD95 per method (printed, compare.csv; "
        "per-case rows in compare_cases.csv). Classical methods see no label and no click: "
        "classes follow intensity order, srg/confidence get automatic seeds.",
    )
    p.add_argument("--data", required=True, help="dataset folder (images/ + labels/ or masks/)")
    p.add_argument(
        "--methods",
        required=True,
        help="comma-separated: otsu, li, yen, triangle, multiotsu, kmeans, srg, confidence, "
        "NAME:RUN (a trained model)",
    )
    p.add_argument(
        "--split",
        default="all",
        choices=["all", "train", "val"],
        help="cases of the first model's split.json",
    )
    p.add_argument(
        "--classes", type=int, default=2, help="classes incl. background without a model"
    )
    p.add_argument("--ignore-index", type=int, help="truth label to ignore (without a model)")
    p.add_argument("--no-surface", action="store_true", help="skip HD95 (faster)")
    p.add_argument("-o", "--output", required=True, help="output folder")
    _add_inference_options(p, backend=True)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser(
        "boxes",
        help="boxes of the objects in a mask (COCO-style JSON)",
        description="One entry per connected object of each class: class, box, area. "
        "Boxes are xyxy with half-open pixel edges (x = column).",
    )
    p.add_argument("mask")
    p.add_argument("-o", "--output", help="JSON file (default: print)")
    p.add_argument("--connectivity", type=int, default=1)
    p.add_argument("--kind", default="auto", choices=["auto", "binary", "labels"])
    p.set_defaults(func=cmd_boxes)

    p = sub.add_parser(
        "localize",
        help="boxes of objects in 2D images (sliding window, proposals, from a mask, CNN)",
        description="Writes one JSON for all images: 'images' (id = 1-based position, "
        "file_name, path, height, width), 'categories' and 'annotations' (COCO results: "
        "image_id, category_id, bbox [x, y, w, h] with half-open pixel edges, score).",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--method", required=True, choices=LOCALIZE_METHODS)
    p.add_argument(
        "--model",
        help="detector from segloc train-detector (sliding-window, cnn; "
        "proposals: without it the raw ranked selective-search boxes)",
    )
    p.add_argument("-o", "--output", required=True, help="boxes JSON file")
    p.add_argument("--overlay", help="PNG with the boxes drawn (one image) or a folder")
    p.add_argument(
        "--score-threshold",
        type=float,
        help="drop boxes scoring below (default 0: the SVM boundary)",
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
    p.set_defaults(func=cmd_localize)

    p = sub.add_parser(
        "train-detector",
        help="train a box detector on DIR (images/ + annotations/*.xml or labels.csv)",
    )
    p.add_argument("--data", required=True, metavar="DIR")
    p.add_argument("--method", required=True, choices=DETECTOR_METHODS)
    p.add_argument("-o", "--output", required=True, help="model file (.npz; cnn: run folder)")
    p.add_argument(
        "--val-fraction",
        type=float,
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
    p.add_argument("--device", default="cpu", help="cnn: cpu or cuda")
    p.set_defaults(func=cmd_train_detector)

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
    p.set_defaults(func=cmd_evaluate_boxes)

    p = sub.add_parser("info", help="shape, dtype, spacing, value range and labels of a file")
    p.add_argument("file")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("export", help="export a model checkpoint to ONNX")
    p.add_argument("checkpoint")
    p.add_argument("--onnx", required=True, help="output .onnx file")
    p.add_argument("--size", help="example input size, e.g. 256x256 (default: the model's minimum)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("dataset", help="inspect a dataset folder (images/ + labels/ or masks/)")
    dsub = p.add_subparsers(dest="dataset_command", required=True, metavar="ACTION")
    q = dsub.add_parser(
        "check", help="unmatched files, shapes, spacings, label values, class balance"
    )
    q.add_argument("dir")
    q.add_argument("--images", help="image folder inside DIR (default: images)")
    q.add_argument("--labels", help="label folder inside DIR (default: labels or masks)")
    q.add_argument("--label-suffix", help="suffix of label names, e.g. _mask (default: detected)")
    q.add_argument("--limit", type=int, default=10, help="list at most this many items per section")
    q.set_defaults(func=cmd_dataset_check)

    p = sub.add_parser(
        "train",
        help="train a segmentation model on a dataset folder",
        description="Train a segmentation model; settings from --config YAML (same keys as "
        "the flags, e.g. time_budget: 20m) overridden by the flags given.",
    )
    p.add_argument("--config", help="YAML file with the settings")
    for flag, name, kind, text in _TRAIN_FLAGS:
        nargs = "+" if name in _TRAIN_LISTS else None
        p.add_argument(flag, dest=name, type=kind, nargs=nargs, default=None, help=text)
    p.add_argument("--deep-supervision", action="store_true", help="U-Net++: train all heads")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or epoch lines")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "serve",
        help="open the browser app: segment, correct, localize and score (needs segloc[serve])",
        description="Serve the segloc page and its HTTP API (offline; API reference at "
        "/api/reference). Binds to loopback unless --allow-remote.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--data", help="folder whose images and volumes the page lists")
    p.add_argument("--runs", help="folder of trained runs the page can predict with")
    p.add_argument("--allow-remote", action="store_true", help="allow a --host other than loopback")
    p.add_argument("--max-upload-mib", type=int, default=512, help="largest upload")
    p.add_argument("--max-voxels", type=int, default=None, help="largest image (default 2**27)")
    p.add_argument("--max-session-mib", type=int, default=None, help="memory per session")
    p.add_argument("--max-memory-mib", type=int, default=None, help="memory of all sessions")
    p.add_argument("--session-ttl", type=float, default=None, help="idle seconds before expiry")
    p.add_argument("--workers", type=int, default=None, help="threads for heavy work")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("demo", help="run the end-to-end demo on the shared datasets")
    p.add_argument("--data", default=os.environ.get("SEGLOC_DATA", "../shared/data"))
    p.add_argument("--out", default="demo-out")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError) as exc:
        # user errors: one line, no traceback (the message names the file)
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in msg:
            msg = f"{exc.filename}: {msg}"
        print(f"segloc {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"segloc {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
