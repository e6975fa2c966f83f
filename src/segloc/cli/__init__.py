"""The ``segloc`` command line: one module per command group, handlers that parse, call one
library function and print.

Points are given as ``x,y[,z]`` = column, row[, slice], as image viewers show them; the Python
API takes array indices ``(row, col[, slice])``. Exit status: 0 on success, 2 on bad input or
usage (one line on stderr naming the file), 1 on an unexpected internal error, 130 when
interrupted.
"""

from __future__ import annotations

import argparse
import signal
import sys
import warnings
from collections.abc import Sequence

from segloc import __version__
from segloc.cli import classical, demo, detection, segmentation, serve
from segloc.cli.arguments import COORDS_HELP, UsageError, allow_negative_numbers, parse_point

__all__ = ["UsageError", "build_parser", "main", "parse_point"]

#: command groups, in the order ``segloc --help`` lists them
GROUPS = (classical, segmentation, detection, serve, demo)


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command (each group adds its own)."""
    parser = argparse.ArgumentParser(
        prog="segloc",
        description="Localization (boxes) and segmentation (masks) in 2D images and 3D volumes.",
        epilog=COORDS_HELP,
    )
    parser.add_argument("--version", action="version", version=f"segloc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.register(sub)
    allow_negative_numbers(parser)
    return parser


def _one_line_warnings(message, category, filename, lineno, file=None, line=None) -> None:
    # a library warning is for the person at the terminal: one line, no source quote
    print(f"warning: {message}", file=file or sys.stderr)


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    previous = warnings.showwarning
    warnings.showwarning = _one_line_warnings
    # SIGTERM (a job scheduler, kill) unwinds like Ctrl-C, so staged outputs are removed
    old_term = signal.signal(signal.SIGTERM, _terminate)
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
    finally:
        warnings.showwarning = previous
        signal.signal(signal.SIGTERM, old_term)


if __name__ == "__main__":
    sys.exit(main())
