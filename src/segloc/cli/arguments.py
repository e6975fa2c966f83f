"""Argument types and option groups that several commands share."""

from __future__ import annotations

import argparse
import math
import re

#: what argparse takes for a negative number rather than an option: "-5", "-5,10" (a point),
#: "-5m" (a duration), "-1e-3"; its own rule knows only "-5" and "-.5"
NEGATIVE_NUMBER = re.compile(r"^-\.?\d[\w.,:+-]*$")

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
    x, y, *z = values
    return (y, x, *z)


def add_inference_options(p: argparse.ArgumentParser, *, backend: bool) -> None:
    """Sliding-window options of the commands that run a trained model."""
    p.add_argument("--overlap", type=finite_float, default=0.5, help="window overlap in [0, 1)")
    p.add_argument("--batch", type=int, default=4, help="windows per forward pass")
    p.add_argument("--tta", action="store_true", help="average over the mirrored axes")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    if backend:
        p.add_argument("--backend", default="torch", choices=["torch", "onnx"])
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def predictor_options(args: argparse.Namespace) -> dict:
    """:class:`segloc.engine.infer.Predictor` keyword arguments from those options."""
    return {
        "device": args.device,
        "backend": getattr(args, "backend", "torch"),
        "overlap": args.overlap,
        "batch_size": args.batch,
        "tta": args.tta,
    }


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
