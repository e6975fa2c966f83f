"""Peak memory of one training step against the planner's estimate (``Candidate.memory_mib``).

    python benchmarks/step_memory.py [--out benchmarks/results/step_memory.md]

Each candidate (2D and 3D U-Nets of the sizes ``segloc plan`` chooses from, batch and instance
norm, float32 and bfloat16) runs in a fresh process: torch and segloc imported, freed memory
returned to the system, the RSS high-water mark reset; then the probe's own training step
(``segloc.engine.probe``: build, forward, Dice + CE, backward, AdamW; two warm-up steps and two
more) and the peak RSS above that baseline. The planner sizes batches with the estimate, so
the ratio measured / estimate is what this checks: near 1, and above all not far above it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from _timing import (
    NO_PEAK,
    dumps,
    format_markdown,
    peak_rss_mib,
    publish,
    run_header,
    run_worker,
    start_peak,
)

# (base, depth, patch, batch, channels, classes, precision, norm)
CANDIDATES = (
    (16, 5, (256, 256), 4, 1, 2, "fp32", "instance"),
    (16, 5, (256, 256), 4, 1, 2, "fp32", "batch"),
    (16, 5, (256, 256), 4, 1, 2, "bf16", "instance"),
    (32, 5, (256, 256), 4, 3, 12, "fp32", "instance"),
    (8, 4, (256, 256), 8, 3, 2, "fp32", None),
    (16, 4, (48, 64, 48), 2, 1, 3, "fp32", "instance"),
    (16, 4, (80, 80, 80), 2, 1, 2, "fp32", "instance"),
    (16, 4, (80, 80, 80), 2, 1, 2, "bf16", "instance"),
    (32, 3, (64, 64, 64), 2, 1, 2, "fp32", "batch"),
)


def _candidate(values):
    from segloc.engine.probe import Candidate

    base, depth, patch, batch, channels, classes, precision, norm = values
    return Candidate(base, depth, tuple(patch), batch, channels, classes, precision, norm=norm)


def one(values) -> dict:
    import torch

    from segloc.engine.probe import _time_steps

    torch.set_num_threads(2)
    c = _candidate(values)
    baseline = start_peak()
    if baseline is None:
        return NO_PEAK
    _time_steps(c, torch.device("cpu"), 2, math.inf)
    return {"measured": peak_rss_mib() - baseline}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="write the markdown table here too")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(dumps(one(json.loads(args.one))))
        return 0
    rows = []
    for values in CANDIDATES:
        c = _candidate(values)
        result = run_worker([__file__, "--one", json.dumps(values)], timeout=900)
        row = {"candidate": f"{c.label}-{c.norm}", "estimate MiB": c.memory_mib()}
        if "error" in result:
            row["measured MiB"] = result["error"]
        else:
            row["measured MiB"] = result["measured"]
            row["measured / estimate"] = result["measured"] / row["estimate MiB"]
        rows.append(row)
        print(row, file=sys.stderr)
    ratios = [r["measured / estimate"] for r in rows if "measured / estimate" in r]
    text = "\n".join(
        [
            "# Peak memory of a training step against the planner's estimate",
            "",
            run_header("python benchmarks/step_memory.py"),
            "",
            format_markdown(
                rows, ["candidate", "estimate MiB", "measured MiB", "measured / estimate"]
            ),
            "",
            f"measured / estimate: {min(ratios):.2f} to {max(ratios):.2f}" if ratios else "",
        ]
    )
    publish(text + "\n", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
