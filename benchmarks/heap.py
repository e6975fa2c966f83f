"""glibc's heap kept during the steps (``segloc.engine.heap``) against glibc's defaults.

    python benchmarks/heap.py [--out benchmarks/results/heap.md]

Each row runs in a fresh process, once with glibc's defaults and once inside
``reusing_freed_memory()``: segloc's U-Net (base 16, depth 4, same padding, float32, 2 torch
threads), either forward passes of one window (inference) or training steps of batch 2
(cross-entropy, backward, AdamW). Two untimed warm-up calls, then the median of five. Peak RSS
is the process's high-water mark (``VmHWM``) above its baseline after import; system seconds
are the kernel's share (page faults and zeroing of freshly mapped memory).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time

from _timing import (
    current_rss_mib,
    dumps,
    format_markdown,
    peak_rss_mib,
    publish,
    release_free_memory,
    reset_peak_rss,
    run_header,
    run_worker,
)

# (what, dims, patch side)
CASES = (
    ("forward", 3, 96),
    ("train", 3, 64),
    ("train", 3, 96),
    ("train", 2, 256),
    ("train", 2, 512),
)


def one(what: str, dims: int, side: int, kept: bool) -> dict:
    from contextlib import nullcontext

    import torch

    from segloc.engine.heap import reusing_freed_memory
    from segloc.nn.unet import UNet

    torch.set_num_threads(2)
    torch.manual_seed(0)
    net = UNet(1, 2, base_channels=16, depth=4, dims=dims, padding="same")
    batch = 1 if what == "forward" else 2
    x = torch.randn(batch, 1, *[side] * dims)
    y = torch.randint(0, 2, (batch, *[side] * dims))
    opt = torch.optim.AdamW(net.parameters(), 1e-3)

    def step() -> None:
        if what == "forward":
            with torch.inference_mode():
                net.eval()(x)
            return
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()

    release_free_memory()
    baseline = current_rss_mib()
    if not reset_peak_rss():
        return {"error": "cannot reset the RSS high-water mark (/proc/self/clear_refs)"}
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
    for what, dims, side in CASES:
        got = {
            kept: run_worker([__file__, "--one", json.dumps([what, dims, side, kept])], timeout=900)
            for kept in (False, True)
        }
        row = {"case": f"{what} {dims}D {side}^{dims}, batch {1 if what == 'forward' else 2}"}
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
