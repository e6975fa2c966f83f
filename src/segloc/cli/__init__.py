"""The ``segloc`` command line: one module per command group, handlers that parse, call one
library function and print.

Points are given as ``x,y[,z]`` = column, row[, slice], as image viewers show them; the Python
API takes array indices ``(row, col[, slice])``.

Exit status, each failure one line on stderr:

- 0: success;
- 2: bad input or usage -- a file segloc refuses (:class:`segloc.io.SeglocIOError`), any
  other ``ValueError``, a wrong argument (argparse);
- 1: the system refused (an ``OSError`` with an ``errno``: permission denied, disk full, no
  such folder, not a directory ...), the line naming the path; a data-loading worker that
  died (``ChildProcessError``, the run resumable); an unexpected internal error (a
  traceback);
- 130: interrupted (Ctrl-C or SIGTERM; staged outputs are removed).
"""

from __future__ import annotations

import argparse
import signal
import sys
import warnings
from collections.abc import Sequence

from segloc import __version__
from segloc.cli import classical, demo, detection, segmentation, serve
from segloc.cli.arguments import (
    COORDS_HELP,
    UsageError,
    allow_negative_numbers,
    parse_point,
    read_options,
)
from segloc.io.errors import is_os_error

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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _os_message(exc: OSError) -> str:
    """``path: what the system said``: "a.png: Permission denied", not "[Errno 13] ..."."""
    if exc.errno is None or not exc.strerror:
        msg = _first_line(exc)
        return f"{exc.filename}: {msg}" if exc.filename and str(exc.filename) not in msg else msg
    if exc.filename is None:
        return exc.strerror
    target = f" -> {exc.filename2}" if exc.filename2 is not None else ""
    return f"{exc.filename}{target}: {exc.strerror}"


def _error(args: argparse.Namespace, message: str) -> None:
    print(f"segloc {args.command}: error: {message}", file=sys.stderr)


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
        with read_options(args):
            return int(args.func(args) or 0)
    except ChildProcessError as exc:  # a dead data worker (engine.run): resumable, not bad input
        _error(args, _first_line(exc))
        return 1
    except OSError as exc:
        _error(args, _os_message(exc))
        # the system refused (an errno): 1; segloc's own "no such file" for an input: 2
        return 1 if is_os_error(exc) else 2
    except ValueError as exc:  # bad input: the message names the file
        _error(args, _first_line(exc))
        return 2
    except KeyboardInterrupt:
        print(f"segloc {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = previous
        signal.signal(signal.SIGTERM, old_term)


if __name__ == "__main__":
    sys.exit(main())
