"""Argument types and option groups that several commands share."""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager

from segloc import io

#: what argparse takes for a negative number rather than an option: "-5", "-5,10" (a point),
#: "-5m" (a duration), "-1e-3"; its own rule knows only "-5" and "-.5"
NEGATIVE_NUMBER = re.compile(r"^-\.?\d[\w.,:+-]*$")

#: the largest coordinate a point may have: beyond it no image has an index (int32)
MAX_COORDINATE = 2**31

COORDS_HELP = (
    "Coordinates: points are x,y[,z] = column,row[,slice] (what image viewers show); "
    "the Python API takes array indices (row, col[, slice])."
)


class UsageError(ValueError):
    """A command-line argument that parses but makes no sense."""


def parse_point(text: str) -> tuple[int, ...]:
    """``"x,y[,z]"`` (column, row[, slice]) -> array index ``(row, col[, slice])``.

    Examples
    --------
    >>> parse_point("10,20"), parse_point("1,2,3")
    ((20, 10), (2, 1, 3))
    """
    try:
        values = [int(round(float(v))) for v in text.split(",")]
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(
            f"point must be x,y or x,y,z numbers, got {text!r}"
        ) from None
    if len(values) not in (2, 3):
        raise argparse.ArgumentTypeError(f"point must be x,y or x,y,z, got {text!r}")
    if any(abs(v) > MAX_COORDINATE for v in values):
        # no image has an index this large (int32 indices); a 300-digit number helps nobody
        raise argparse.ArgumentTypeError(
            f"point coordinates must be within +-2**31, got {text[:40]!r}"
        )
    x, y, *z = values
    return (y, x, *z)


def add_inference_options(p: argparse.ArgumentParser, *, backend: bool) -> None:
    """Sliding-window options of the commands that run a trained model."""
    p.add_argument("--overlap", type=finite_float, default=0.5, help="window overlap in [0, 1)")
    p.add_argument(
        "--batch",
        type=int,
        help="windows per forward pass (default: 1 for a 3D network on the CPU, else 4)",
    )
    p.add_argument(
        "--tta",
        action="store_true",
        default=None,
        help="average over the mirrored axes (default: as decided on the run's validation split)",
    )
    p.add_argument("--no-tta", dest="tta", action="store_false", help="never average mirrors")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16", "fp16"],
        help="autocast of the network: auto = fp16 on CUDA, fp32 on the CPU; bf16 ran 1.8x "
        "faster on a CPU with native bfloat16, its labels a hair different from fp32's",
    )
    if backend:
        p.add_argument("--backend", default="torch", choices=["torch", "onnx"])
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def predictor_options(args: argparse.Namespace) -> dict:
    """:class:`segloc.engine.infer.Predictor` keyword arguments from those options."""
    return {
        "device": args.device,
        "backend": getattr(args, "backend", "torch"),
        "precision": args.precision,
        "overlap": args.overlap,
        "batch_size": args.batch,
        "tta": args.tta,
    }


def add_layout_options(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Where the images and labels of a dataset folder are (default: found)."""
    p.add_argument("--images", help="image folder inside the dataset (default: images)")
    p.add_argument("--labels", help="label folder inside the dataset (default: labels or masks)")
    p.add_argument("--label-suffix", help="ending of label names, e.g. _mask (default: found)")


def layout_options(args: argparse.Namespace) -> dict:
    """:func:`segloc.engine.data.find_cases` keyword arguments from those options."""
    return {"image_dir": args.images, "label_dir": args.labels, "label_suffix": args.label_suffix}


def finite_float(text: str) -> float:
    """A float flag: a finite number (``nan`` and ``inf`` parse as floats but mean nothing)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def allow_negative_numbers(parser: argparse.ArgumentParser) -> None:
    """Let ``parser`` and its sub-commands take ``--seeds -5,10`` or ``--offset -2``."""
    parser._negative_number_matcher = NEGATIVE_NUMBER  # argparse's hook for this rule
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                allow_negative_numbers(sub)


def positive_int(text: str) -> int:
    """An integer flag that must be >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text!r}")
    return value


def add_read_options(p: argparse.ArgumentParser) -> None:
    """``--max-voxels``, ``--max-mib``, ``--untrusted``: how every image a command reads is
    read (:func:`read_options` applies them)."""
    g = p.add_argument_group(
        "reading files", "limits and isolation for every image or volume read (docs/hardening.md)"
    )
    g.add_argument(
        "--max-voxels",
        type=positive_int,
        metavar="N",
        help="refuse a file whose header declares more than N voxels (rows x cols x slices), "
        "before decoding it (default 2**31 - 1)",
    )
    g.add_argument(
        "--max-mib",
        type=positive_int,
        metavar="MIB",
        help="refuse a file whose array would take more than MIB mebibytes "
        "(default: a quarter of the memory available)",
    )
    g.add_argument(
        "--untrusted",
        action="store_true",
        help="decode every file in a child process with a time and memory limit, so that a "
        "decoder crashing on a hostile file cannot take segloc down (about 0.5 s per file)",
    )


@contextmanager
def read_options(args: argparse.Namespace) -> Iterator[None]:
    """The process-wide read defaults (:func:`segloc.io.set_default_limits`,
    :func:`segloc.io.set_default_untrusted`) set from :func:`add_read_options`' flags for
    the length of a command, then put back."""
    voxels, mib = getattr(args, "max_voxels", None), getattr(args, "max_mib", None)
    old_limits = io.set_default_limits()  # the settings before, flags not given keep them
    io.set_default_limits(
        max_voxels=old_limits[0] if voxels is None else voxels,
        max_bytes=old_limits[1] if mib is None else mib * 2**20,
    )
    old_untrusted = io.set_default_untrusted(False)
    io.set_default_untrusted(old_untrusted or bool(getattr(args, "untrusted", False)))
    try:
        yield
    finally:
        io.set_default_limits(max_voxels=old_limits[0], max_bytes=old_limits[1])
        io.set_default_untrusted(old_untrusted)
