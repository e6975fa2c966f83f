"""glibc's heap kept during the steps (``segloc.engine.heap``) against glibc's defaults.

    python benchmarks/heap.py [--out benchmarks/results/heap.md]

Each row runs in a fresh process, once with glibc's defaults and once inside
``reusing_freed_memory()``: segloc's U-Net (base 16, depth 4, or 3 for patches under 64,
same padding, 2 torch threads), either forward passes of one window (inference) or training
steps of batch 2 (cross-entropy, backward, AdamW). Two untimed warm-up calls, then the median
of five. Peak RSS is the process's high-water mark (``VmHWM``) above its baseline after
import; system seconds are the kernel's share (page faults and zeroing of freshly mapped
memory).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time

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

# (what, patch, precision, norm)
CASES = (
    ("forward", (96, 96, 96), "fp32", None),
    ("train", (64, 64, 64), "fp32", None),
    ("train", (96, 96, 96), "fp32", None),
    ("train", (256, 256), "fp32", None),
    ("train", (512, 512), "fp32", None),
    # the hippocampus plan's step (base 16, depth 3 there)
    ("train", (40, 56, 40), "bf16", "instance"),
)


def one(what: str, patch: list[int], precision: str, norm: str | None, kept: bool) -> dict:
    from contextlib import nullcontext

    import torch

    from segloc.engine.heap import reusing_freed_memory
    from segloc.nn.unet import UNet

    torch.set_num_threads(2)
    torch.manual_seed(0)
    depth = 3 if min(patch) < 64 else 4
    net = UNet(1, 2, base_channels=16, depth=depth, dims=len(patch), padding="same", norm=norm)
    batch = 1 if what == "forward" else 2
    x = torch.randn(batch, 1, *patch)
    y = torch.randint(0, 2, (batch, *patch))
    opt = torch.optim.AdamW(net.parameters(), 1e-3)
    dtype = torch.bfloat16 if precision == "bf16" else None

    def step() -> None:
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            if what == "forward":
                with torch.inference_mode():
                    net.eval()(x)
                return
            logits = net(x)
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(logits.float(), y).backward()
        opt.step()

    baseline = start_peak()
    if baseline is None:
        return NO_PEAK
    sys0 = resource.getrusage(resource.RUSAGE_SELF).ru_stime
    times = []
    with reusing_freed_memory() if kept else nullcontext():
        for i in range(7):
            t0 = time.perf_counter()
            step()
            if i >= 2:
                times.append(time.perf_counter() - t0)
    return {
        "seconds": statistics.median(times),
        "system s": resource.getrusage(resource.RUSAGE_SELF).ru_stime - sys0,
        "peak MiB": peak_rss_mib() - baseline,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="write the markdown table here too")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(dumps(one(*json.loads(args.one))))
        return 0
    rows = []
    for what, patch, precision, norm in CASES:
        got = {
            kept: run_worker(
                [__file__, "--one", json.dumps([what, patch, precision, norm, kept])], timeout=900
            )
            for kept in (False, True)
        }
        row = {
            "case": f"{what} {'x'.join(map(str, patch))}, batch {1 if what == 'forward' else 2}, "
            f"{precision}{', ' + norm + ' norm' if norm else ''}"
        }
        for kept, name in ((False, "defaults"), (True, "kept")):
            r = got[kept]
            if "error" in r:
                row[f"{name} s"] = r["error"]
                continue
            row[f"{name} s"] = r["seconds"]
            row[f"{name} system s"] = r["system s"]
            row[f"{name} peak MiB"] = r["peak MiB"]
        if "error" not in got[False] and "error" not in got[True]:
            row["speed-up"] = got[False]["seconds"] / got[True]["seconds"]
            row["peak kept / defaults"] = got[True]["peak MiB"] / got[False]["peak MiB"]
        rows.append(row)
    columns = [
        "case", "defaults s", "kept s", "speed-up", "defaults system s", "kept system s",
        "defaults peak MiB", "kept peak MiB", "peak kept / defaults",
    ]  # fmt: skip
    text = "\n".join(
        [
            "# glibc's heap kept during the steps, against its defaults",
            "",
            run_header("python benchmarks/heap.py"),
            "",
            format_markdown(rows, columns),
        ]
    )
    publish(text + "\n", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
