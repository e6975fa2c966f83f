"""Classical commands: ``segment``, ``boxes``, ``info``."""

from __future__ import annotations

import argparse
import json

import numpy as np

from segloc.classical import METHODS
from segloc.cli.arguments import COORDS_HELP, add_read_options, finite_float, parse_point


def register(sub: argparse._SubParsersAction) -> None:
    add_segment(sub)
    add_boxes(sub)
    add_info(sub)


# --------------------------------------------------------------------------- segment


def add_segment(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "segment",
        help="classical segmentation of images or volumes",
        description="Segment images with a classical method and write masks in the input's "
        "format (PNG for 2D pictures, TIFF for TIFF, NIfTI/NRRD for volumes). " + COORDS_HELP,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "images", nargs="+", help="image files (PNG, JPEG, BMP, TIFF, NIfTI, NRRD) or DICOM folders"
    )
    p.add_argument("--method", required=True, choices=list(METHODS))
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
    g.add_argument("--value", type=finite_float, help="threshold for --method fixed")
    g.add_argument(
        "--classes", type=int, default=3, help="classes for multiotsu (background included)"
    )
    g.add_argument("--block", type=int, default=35, help="odd block size for --method local")
    g.add_argument("--local-method", default="gaussian", choices=["gaussian", "mean"])
    g.add_argument(
        "--offset", type=finite_float, default=0.0, help="subtracted from the local threshold"
    )
    g.add_argument("--low", type=finite_float, help="low threshold for hysteresis")
    g.add_argument("--high", type=finite_float, help="high threshold for hysteresis")
    g = p.add_argument_group("region growing options")
    g.add_argument(
        "--seeds",
        nargs="+",
        type=parse_point,
        metavar="X,Y[,Z]",
        help="seed points as column,row[,slice]",
    )
    g.add_argument(
        "--tolerance", type=finite_float, help="max difference to the seed value (region-grow)"
    )
    g.add_argument(
        "--connectivity",
        type=int,
        default=1,
        help="1 or 4/8 (2D), 1..3 or 6/18/26 (3D); 1 = faces only",
    )
    g.add_argument(
        "--multiplier", type=finite_float, default=2.5, help="confidence: mean +/- multiplier*std"
    )
    g.add_argument("--iterations", type=int, default=2, help="confidence: re-estimations")
    g.add_argument("--radius", type=int, default=1, help="confidence: initial neighbourhood radius")
    g = p.add_argument_group("k-means options")
    g.add_argument("--k", type=int, default=3, help="number of clusters")
    g.add_argument("--color-space", default="lab", choices=["rgb", "lab"])
    g.add_argument("--spatial-weight", type=finite_float, default=0.0)
    g.add_argument("--seed", type=int, default=0, help="random seed (k-means++ initialisation)")
    g = p.add_argument_group("post-processing (binary results)")
    g.add_argument("--open", type=int, default=0, metavar="R", help="opening with radius R")
    g.add_argument("--close", type=int, default=0, metavar="R", help="closing with radius R")
    g.add_argument("--fill-holes", action="store_true")
    g.add_argument(
        "--min-size", type=int, default=0, help="remove objects smaller than this (pixels)"
    )
    g.add_argument("--keep-largest", action="store_true")
    add_read_options(p)
    p.set_defaults(func=cmd_segment)


def cmd_segment(args: argparse.Namespace) -> int:
    from segloc.classical.files import segment_files
    from segloc.io import mask_suffix, output_paths

    outs = output_paths(args.images, args.output, mask_suffix)
    overlays = (
        output_paths(args.images, args.overlay, lambda p: "_overlay.png") if args.overlay else None
    )
    options = {
        "seeds": args.seeds or None,
        "value": args.value,
        "classes": args.classes,
        "block_size": args.block,
        "local_method": args.local_method,
        "offset": args.offset,
        "low": args.low,
        "high": args.high,
        "tolerance": args.tolerance,
        "connectivity": args.connectivity,
        "multiplier": args.multiplier,
        "iterations": args.iterations,
        "initial_radius": args.radius,
        "k": args.k,
        "color_space": args.color_space,
        "spatial_weight": args.spatial_weight,
        "seed": args.seed,
    }
    clean = {
        "open_radius": args.open,
        "close_radius": args.close,
        "fill": args.fill_holes,
        "min_size": args.min_size,
        "largest": args.keep_largest,
        "connectivity": args.connectivity,
    }
    written = segment_files(
        args.images,
        outs,
        args.method,
        options=options,
        channel=args.channel,
        invert=args.invert,
        clean=clean,
        overlays=overlays,
    )
    for path, out, result in written:
        values = np.unique(result)
        print(f"{path} -> {out}  ({result.dtype}, values {values[:10].tolist()})")
    return 0


# --------------------------------------------------------------------------- boxes


def add_boxes(sub: argparse._SubParsersAction) -> None:
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
    add_read_options(p)
    p.set_defaults(func=cmd_boxes)


def cmd_boxes(args: argparse.Namespace) -> int:
    from segloc import io
    from segloc._validation import check_not_inputs, write_atomic
    from segloc.coco import objects_document

    labels, _ = io.read_mask(args.mask, kind=args.kind)
    doc = objects_document(labels, connectivity=args.connectivity, source=str(args.mask))
    text = json.dumps(doc, indent=2)
    if args.output:
        check_not_inputs([args.output], [args.mask])
        write_atomic(args.output, lambda tmp: tmp.write_text(text))
        print(f"{len(doc['objects'])} objects -> {args.output}")
    else:
        print(text)
    return 0


# --------------------------------------------------------------------------- info


def add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="shape, dtype, spacing, value range and labels of a file")
    p.add_argument("file")
    add_read_options(p)
    p.set_defaults(func=cmd_info)


def cmd_info(args: argparse.Namespace) -> int:
    from segloc.io import describe

    d = describe(args.file)
    print(f"file:     {d['file']}")
    print(f"format:   {d['format']}")
    print(f"shape:    {d['shape']}")
    print(f"dtype:    {d['dtype']}")
    if d["channels"]:
        print(f"channels: {d['channels']}")
    print(f"spacing:  {d['spacing']}")
    if d["affine"] is not None:
        text = np.array2string(d["affine"], precision=4).replace("\n", "\n          ")
        print(f"affine:   {text}")
    lo, hi = d["range"] if d["range"] is not None else ("n/a", "n/a")
    print(f"range:    {lo} .. {hi}")
    if isinstance(d["values"], dict):
        print("labels:   " + ", ".join(f"{v}: {c}" for v, c in d["values"].items()))
    elif d["values"] is not None:
        print(f"values:   {d['values']} distinct")
    return 0
