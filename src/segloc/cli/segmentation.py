"""Segmentation commands: ``plan``, ``train``, ``predict``, ``evaluate``, ``compare``,
``export``, ``dataset check``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from segloc.cli.arguments import (
    UsageError,
    add_inference_options,
    add_layout_options,
    add_read_options,
    finite_float,
    layout_options,
    predictor_options,
)


def register(sub: argparse._SubParsersAction) -> None:
    add_evaluate(sub)
    add_predict(sub)
    add_compare(sub)
    add_export(sub)
    add_dataset(sub)
    add_plan(sub)
    add_train(sub)


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


def _print_notes(notes: Sequence) -> None:
    """Say on stderr when scored cases trained the model: their scores measure the fit."""
    for n in notes:
        print(
            f"note: {len(n.cases)} of the {n.total} cases (e.g. {n.cases[0]}) trained the model "
            f"({n.run / 'split.json'}): their scores measure the fit; --split val scores the "
            "held-out cases only",
            file=sys.stderr,
        )


# --------------------------------------------------------------------------- evaluate


def add_evaluate(sub: argparse._SubParsersAction) -> None:
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
    add_layout_options(g)
    add_inference_options(g, backend=False)
    add_read_options(p)
    p.set_defaults(func=cmd_evaluate)


def _report_classes(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(c) for c in text.split(",")]
    except ValueError:
        raise UsageError(f"--report must be comma-separated class numbers, got {text!r}") from None


def cmd_evaluate(args: argparse.Namespace) -> int:
    from segloc._validation import atomic_paths, check_not_inputs
    from segloc.evaluate import evaluate_paths

    if args.model is not None or args.data is not None:
        return _evaluate_model(args)
    if args.pred is None or args.truth is None:
        raise UsageError("give PRED and TRUTH, or --model RUN --data DIR")
    outputs = [p for p in (args.csv, args.json) if p]
    check_not_inputs(outputs, [args.pred, args.truth])
    result = evaluate_paths(
        args.pred,
        args.truth,
        num_classes=args.classes,
        classes=_report_classes(args.report),
        ignore_index=args.ignore_index,
        truth_suffix=args.truth_suffix,
        empty=args.empty,
        surface=not args.no_surface,
    )
    summary = result.summary()
    _print_table(
        result.rows + [{"case": s, **summary[s]} for s in ("mean", "std", "median")], "case"
    )
    for name, items in (("prediction", result.unmatched_pred), ("truth", result.unmatched_truth)):
        if items:
            print(
                f"warning: {len(items)} {name} file(s) without a match, e.g. {items[0]}",
                file=sys.stderr,
            )
    with atomic_paths(outputs) as temps:  # both files or neither
        if args.csv:
            result.to_csv(temps[0])
        if args.json:
            result.to_json(temps[-1])
    return 0


def _evaluate_model(args: argparse.Namespace) -> int:
    from segloc.evaluate import evaluate_model

    if args.model is None or args.data is None:
        raise UsageError("--model and --data go together")
    if args.pred is not None or args.truth is not None:
        raise UsageError("give PRED and TRUTH, or --model RUN --data DIR, not both")
    if args.output is None:
        raise UsageError("-o/--output (a folder) is required with --model")
    result, notes = evaluate_model(
        args.model,
        args.data,
        args.output,
        split="val" if args.val_only else args.split,
        empty=args.empty,
        surface=not args.no_surface,
        progress=not args.quiet,
        layout=layout_options(args),
        **predictor_options(args),
    )
    _print_notes(notes)
    _print_table(result.rows + [{"case": "mean", **result.summary()["mean"]}], "case")
    print(
        f"{len(result.rows)} case(s) -> {args.output}/per_case.csv, per_case.json, best.png, "
        "worst.png"
    )
    return 0


# --------------------------------------------------------------------------- predict


def add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="segment images or volumes with a trained model",
        description="Sliding-window inference with a trained model. Masks are written in the "
        "input's format (PNG for 2D pictures, 0/255 when binary; TIFF for TIFF; NIfTI/NRRD "
        "volumes keep the input affine). Nothing is written unless every input succeeds.",
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
    add_inference_options(p, backend=True)
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
    p.add_argument(
        "--dask",
        metavar="CLUSTER",
        help="run on a Dask cluster: local:N (N worker processes here) or tcp://HOST:8786; "
        "folders one case per task, .zarr images by blocks (docs/scale.md)",
    )
    p.add_argument(
        "--chunks",
        type=int,
        nargs="+",
        help="with --dask: output chunk (= task) shape of block-wise images",
    )
    add_read_options(p)
    p.set_defaults(func=cmd_predict)


def cmd_predict(args: argparse.Namespace) -> int:
    from segloc.engine.infer import load_predictor, predict_to_folder

    if args.dask:
        from segloc.engine.distributed import predict_dask

        if args.probabilities or args.overlay or args.boxes:
            raise UsageError("--dask writes masks only (no --probabilities, --overlay, --boxes)")
        if args.untrusted or args.max_voxels or args.max_mib:
            # the workers are other processes: this process's read settings do not reach them
            raise UsageError("--dask workers do not take --untrusted, --max-voxels, --max-mib")
        written = predict_dask(
            args.dask, args.model, args.inputs, args.output,
            options=predictor_options(args), chunks=args.chunks,
        )  # fmt: skip
        print(f"{len(written)} output(s) in {args.output} (Dask {args.dask})")
        return 0
    predictor = load_predictor(args.model, **predictor_options(args))
    written = predict_to_folder(
        predictor,
        args.inputs,
        args.output,
        probabilities=args.probabilities,
        overlay=args.overlay,
        boxes=args.boxes,
        progress=not args.quiet,
    )
    models = ", ".join(map(str, predictor.paths))
    print(f"{len(written)} file(s) written to {args.output} ({models})")
    return 0


# --------------------------------------------------------------------------- compare


def add_compare(sub: argparse._SubParsersAction) -> None:
    from segloc.classical import METHODS

    unattended = [name for name, method in METHODS.items() if method.unattended]
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
        help=f"comma-separated: {', '.join(unattended)}, NAME:RUN (a trained model)",
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
    add_layout_options(p)
    add_inference_options(p, backend=True)
    add_read_options(p)
    p.set_defaults(func=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    from segloc.evaluate import compare

    specs = [m.strip() for m in args.methods.split(",") if m.strip()]
    rows, cases, notes = compare(
        args.data,
        specs,
        args.output,
        split=args.split,
        num_classes=args.classes,
        ignore_index=args.ignore_index,
        surface=not args.no_surface,
        progress=not args.quiet,
        layout=layout_options(args),
        **predictor_options(args),
    )
    _print_notes(notes)
    _print_table(rows, "method")
    print(f"{cases} case(s), {len(rows)} method(s) -> {args.output}/compare.csv, compare_cases.csv")
    return 0


# --------------------------------------------------------------------------- export


def add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a model checkpoint (or a run folder's) to ONNX")
    p.add_argument("checkpoint")
    p.add_argument("--onnx", required=True, help="output .onnx file")
    p.add_argument("--size", help="example input size, e.g. 256x256 (default: the model's minimum)")
    p.set_defaults(func=cmd_export)


def _size(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        size = tuple(int(s) for s in text.lower().split("x"))
    except ValueError:
        raise UsageError(f"--size must look like 256x256, got {text!r}") from None
    if any(s < 1 for s in size):
        raise UsageError(f"--size must be positive, got {text!r}")
    return size


def cmd_export(args: argparse.Namespace) -> int:
    from segloc.nn.export import export_checkpoint

    out = export_checkpoint(args.checkpoint, args.onnx, example_size=_size(args.size))
    print(f"{args.checkpoint} -> {out}")
    return 0


# --------------------------------------------------------------------------- dataset


def add_dataset(sub: argparse._SubParsersAction) -> None:
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
    add_read_options(q)
    q.set_defaults(func=cmd_dataset_check)


def cmd_dataset_check(args: argparse.Namespace) -> int:
    from segloc.engine.data import check_dataset

    report = check_dataset(
        args.dir, image_dir=args.images, label_dir=args.labels, label_suffix=args.label_suffix
    )
    print(report.format(limit=args.limit))
    # a dataset with problems is bad input: say so with the exit status too
    return 0 if report.ok else 2


# --------------------------------------------------------------------------- plan


def add_plan(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan",
        help="fingerprint a dataset, time this machine and print a training plan",
        description="Print the dataset's fingerprint and the plan segloc train would follow "
        "(each choice with its reason), from a few seconds' timing probe on this machine. "
        "Exit status 2 when the data cannot be trained on (the files are named).",
    )
    p.add_argument("--data", required=True, help="dataset folder (images/ + labels/ or masks/)")
    p.add_argument("--time-budget", default="20m", help="the run's wall time (default 20m)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("-o", "--output", help="write the plan here (YAML for segloc train --config)")
    p.add_argument("--images", help="image folder inside DIR (default: images)")
    p.add_argument("--labels", help="label folder inside DIR (default: labels or masks)")
    p.add_argument("--label-suffix", help="suffix of label names, e.g. _mask (default: detected)")
    p.add_argument("--no-cache", action="store_true", help="recompute the fingerprint")
    p.set_defaults(func=cmd_plan)


def cmd_plan(args: argparse.Namespace) -> int:
    from segloc.engine.planning import write_plan

    planned = write_plan(
        args.data,
        args.output,
        time_budget=args.time_budget,
        device=args.device,
        image_dir=args.images,
        label_dir=args.labels,
        label_suffix=args.label_suffix,
        cache=not args.no_cache,
    )
    print(planned.report())
    for problem in planned.fingerprint.problems:
        print(f"segloc plan: error: {problem}", file=sys.stderr)
    return 2 if planned.fingerprint.problems else 0


# --------------------------------------------------------------------------- train

# flag -> TrainConfig field; None defaults so that only the flags given override the YAML file
_TRAIN_FLAGS = (
    ("--data", "data", str, "dataset folder (images/ + labels/ or masks/)"),
    ("--out", "out", str, "run folder (default runs/run)"),
    ("--model", "model", str, "unet, unetpp, vnet or unet3d (default unet)"),
    ("--classes", "classes", int, "classes including background (default: from the labels)"),
    ("--base-channels", "base_channels", int, "channels of the first level"),
    ("--depth", "depth", int, "number of poolings"),
    ("--norm", "norm", str, "batch (default), instance or none"),
    ("--patch", "patch", int, "training patch size, one value per axis or one for all"),
    ("--batch", "batch", int, "patches per step (default 4)"),
    ("--epochs", "epochs", int, "stop after this many epochs"),
    ("--time-budget", "time_budget", str, "stop after this wall time, e.g. 20m or 1h30m"),
    ("--samples-per-epoch", "samples_per_epoch", int, "patches per epoch (default 200)"),
    ("--optimizer", "optimizer", str, "adamw (default) or sgd (momentum 0.99, as U-Net)"),
    ("--lr", "lr", finite_float, "learning rate (default 1e-3 AdamW, 1e-2 SGD)"),
    ("--weight-decay", "weight_decay", finite_float, "default 1e-4"),
    ("--momentum", "momentum", finite_float, "SGD momentum (default 0.99)"),
    ("--schedule", "schedule", str, "poly (default), cosine or constant"),
    ("--warmup", "warmup", finite_float, "fraction of the run with linear warm-up (default 0)"),
    (
        "--ema",
        "ema",
        finite_float,
        "keep and checkpoint a moving average of the weights, e.g. 0.999",
    ),
    ("--loss", "loss", str, "dice_ce (default), ce or dice"),
    (
        "--border-weight",
        "border_weight",
        finite_float,
        "U-Net border weight w0 on the CE term, e.g. 10",
    ),
    ("--border-sigma", "border_sigma", finite_float, "its border width in pixels (default 5)"),
    ("--val", "val", str, "separate validation dataset folder"),
    ("--val-fraction", "val_fraction", finite_float, "share of cases kept for validation (0.2)"),
    ("--group-by", "group_by", str, "case (default) or folder: split whole folders (patients)"),
    ("--val-split", "val_split", str, "random (default) or last: hold out the last cases by name"),
    ("--val-every", "val_every", int, "validate every N epochs (default 1)"),
    ("--patience", "patience", int, "early stopping after N validations without progress"),
    ("--normalize", "normalize", str, "zscore (default), percentile or minmax"),
    ("--target-spacing", "target_spacing", finite_float, "resample 3D cases to this spacing"),
    ("--ignore-index", "ignore_index", int, "label left out of loss and scores"),
    ("--images", "image_dir", str, "image folder inside --data (default: images)"),
    ("--labels", "label_dir", str, "label folder inside --data (default: labels or masks)"),
    ("--label-suffix", "label_suffix", str, "ending of label names, e.g. _mask"),
    ("--augment", "augment", str, "default, light (flips, 90 degree turns) or none"),
    ("--foreground-fraction", "foreground_fraction", finite_float, "share of foreground patches"),
    ("--workers", "workers", int, "data loading processes (default 0)"),
    ("--cache-mib", "cache_mib", int, "memory for loaded cases per process (default 4096)"),
    ("--device", "device", str, "auto (default), cpu or cuda"),
    ("--seed", "seed", int, "random seed (default 0)"),
    ("--panels", "panels", int, "validation cases drawn as sample panels (default 2)"),
    ("--threads", "threads", int, "torch threads (default: torch's choice)"),
    ("--precision", "precision", str, "auto (fp16 on CUDA, fp32 on CPU), fp32, bf16 or fp16"),
)
_TRAIN_LISTS = ("patch", "target_spacing")


def add_train(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument(
        "--deep-supervision", action="store_true", default=None, help="U-Net++: train all heads"
    )
    p.add_argument("--resume", action="store_true", default=None, help="continue the run in --out")
    p.add_argument(
        "--plan",
        action="store_true",
        default=None,
        help="plan the run (as segloc plan) and train the plan: the default without --config; "
        "flags override the plan, and with --config the file too",
    )
    p.add_argument(
        "--no-plan", dest="plan", action="store_false", help="no plan: the settings' defaults"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or epoch lines")
    add_read_options(p)
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    import time

    started = time.perf_counter()  # the budget counts from here: imports, planning, loading
    from segloc.engine.planning import plan_and_train

    names = [name for _, name, _, _ in _TRAIN_FLAGS] + ["resume", "deep_supervision"]
    result = plan_and_train(
        {n: getattr(args, n) for n in names},
        config=args.config,
        plan=args.plan if args.plan is not None else args.config is None,
        progress=not args.quiet,
        started=started,
    )
    choice = result.out / "network.json"
    if choice.is_file():  # anisotropic volumes: 2D on the slices and 3D were both trained
        import json

        found = json.loads(choice.read_text())
        print(f"{result.out}: kept {found['chosen'].upper()} ({found['reason']})")
    if result.best_epoch == 0:
        print(
            f"{result.out}: {result.epochs} epoch(s), no finite validation Dice (validation "
            f"cases without foreground?) -> {result.out / 'model.safetensors'}"
        )
        return 0
    print(
        f"{result.out}: {result.epochs} epoch(s), best validation Dice {result.best_dice:.4f} "
        f"at epoch {result.best_epoch} -> {result.out / 'model.safetensors'}"
    )
    return 0
