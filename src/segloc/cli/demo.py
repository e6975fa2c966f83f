"""``segloc demo``: the end-to-end demo on the shared datasets."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the end-to-end demo on the shared datasets")
    p.add_argument("--data", default=os.environ.get("SEGLOC_DATA", "../shared/data"))
    p.add_argument("--out", default="demo-out")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from segloc.demo import run_demo

    run_demo(Path(args.data), Path(args.out))
    return 0
