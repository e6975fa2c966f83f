"""Classical segmentation: segloc against scikit-image, OpenCV, scikit-learn and SimpleITK, one run.

    python benchmarks/classical.py [--repeats N] [--out benchmarks/results/classical.md]

Each section times segloc and its peer on the same input in the same process (best of N after a
warm-up call, so numba's one-off compilation is excluded) and prints the ratio peer / segloc
(above 1: segloc is faster), the peak memory of each call and whether the answers agree.
Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _classical_clustering  # noqa: E402
import _classical_region_growing  # noqa: E402
import _classical_threshold  # noqa: E402
from _timing import format_markdown, run_header  # noqa: E402

SECTIONS = {
    "threshold": _classical_threshold,
    "region growing": _classical_region_growing,
    "k-means": _classical_clustering,
}

COLUMNS = (
    "task",
    "segloc_ms",
    "peer",
    "peer_ms",
    "ratio",
    "segloc_peak_MiB",
    "peer_peak_MiB",
    "agree",
)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", choices=list(SECTIONS), action="append")
    parser.add_argument("--out", help="also write the table (markdown) to this file")
    args = parser.parse_args()
    rows: list[dict] = []
    for name, module in SECTIONS.items():
        if args.only and name not in args.only:
            continue
        print(f"== {name}", flush=True)
        section = module.run(repeats=args.repeats)
        print(format_markdown(section, COLUMNS), flush=True)
        rows += section
    header = run_header(f"python benchmarks/classical.py --repeats {args.repeats}")
    table = format_markdown(rows, COLUMNS)
    print("\n" + header + "\n" + table)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(header + "\n\n" + table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
