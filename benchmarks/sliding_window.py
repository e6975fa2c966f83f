"""Sliding-window inference: segloc against MONAI, each run in its own process, one table.

    python benchmarks/sliding_window.py [--small] [--cases 3d,2d] [--runs monai,segloc,...]
                                        [--out benchmarks/results/sliding_window.md]

Cases (issue 18): (a) the MNI152 volume of ../shared/data (197x233x189, z-scored), roi 96^3;
(b) a 4096x4096 image (the ISBI 2012 slice 0 tiled 8x8), roi 256^2. Both: overlap 0.5,
Gaussian weights (sigma 1/8), MONAI's BasicUNet(features=(16, 32, 64, 128, 256, 16)), 2
classes, the same weights in every process (torch.manual_seed(0)), soft-max probabilities.
``--small`` shrinks both (100^3 crop, roi 48^3; 1024^2, roi 128^2) to check the script runs.

Runs (each a fresh process; wall time of the sliding window alone, the network built and
warmed up before; peak RSS = the process's ``VmHWM`` at the end, its own since ``exec``:
``ru_maxrss``, used before commit 2e43aa2, keeps the parent's peak, which set a floor under every
run, about 600 MiB in 2D):

- ``monai``: ``monai.inferers.sliding_window_inference``, 4 windows per call;
- ``segloc``: ``segloc.engine.windows.sliding_window_inference``, the same network as is,
  4 windows per call, probabilities (a full-size float buffer per class, as MONAI);
- ``segloc-labels``: the same with ``output="labels"`` (arg-max per finished slab, stored
  as uint8 as segloc's ``Predictor`` stores up to 255 classes);
- ``segloc-b1``: labels, one window per network call (a quarter of the activations);
- ``segloc-onnx``: labels, one window per call through ONNX Runtime, the network exported
  in the same process;
- ``segloc-onnx-file``: the same network, exported the same way (torch's TorchScript-based
  exporter, not ``segloc export``'s) to an ONNX file by another process first, so the process
  holds neither MONAI nor a torch copy of the network nor the export's trace, and ONNX
  Runtime's memory arena is off (each window's activations are returned to the allocator,
  not kept for the largest call) and glibc's heap as it is (``reuse_freed_memory=False``);
- ``segloc-onnx-file-reuse``: the same with ``reuse_freed_memory=True``, the default (freed
  memory kept in the heap while the windows run, :mod:`segloc.engine.heap`);
- ``segloc-onnx-file-arena``: the same with ONNX Runtime's arena on;
- ``segloc-bf16``: labels, one window per call, the torch network under bfloat16 autocast
  (``precision="bf16"``; fast only where the CPU has native bfloat16 units). The network is
  traced to a TorchScript file by another process first, as a deployed model is loaded:
  importing MONAI to build it would add about 200 MiB that a segloc user never pays.

Each case's input is prepared once (read, tiled, z-scored) by the parent process and loaded
from an ``.npy`` file by each run, so a run's peak RSS is its inference's, not the
preparation's (before 2026-12-06 each run prepared the input itself, and the z-scoring's
float64 temporaries set the floor: about 650 MiB in 2D whatever the inference held).

The table gives wall time, peak RSS, the ratios to MONAI, the windows computed / reused
(constant background), and the agreement: the largest probability difference to MONAI, or
for label runs the share of voxels whose label equals MONAI's arg-max. Run it on an
otherwise idle machine; on a busy one the times mean little.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _timing import peak_rss_mib, publish, run_header

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("SEGLOC_DATA", HERE.parents[0].parent / "shared" / "data"))
RUNS = (
    "monai",
    "segloc",
    "segloc-labels",
    "segloc-b1",
    "segloc-onnx",
    "segloc-onnx-file",
    "segloc-onnx-file-arena",
    "segloc-onnx-file-reuse",
    "segloc-bf16",
)
ONNX_FILE_RUNS = ("segloc-onnx-file", "segloc-onnx-file-arena", "segloc-onnx-file-reuse")
# run -> the suffix of the file another process exports the network to first
EXPORTED = {**dict.fromkeys(ONNX_FILE_RUNS, ".onnx"), "segloc-bf16": ".pt"}
FEATURES = (16, 32, 64, 128, 256, 16)


def _roi(case: str, small: bool) -> tuple[int, ...]:
    if case == "3d":
        return (48,) * 3 if small else (96,) * 3
    return (128,) * 2 if small else (256,) * 2


def _input(case: str, small: bool) -> np.ndarray:
    from segloc.engine.preprocess import normalize
    from segloc.io import read_image

    if case == "3d":
        path = next((DATA / "mni152" / "images").iterdir())
        vol, _ = read_image(path)
        if small:
            vol = vol[50:150, 60:160, 40:140]
        return normalize(vol, "zscore")
    img, _ = read_image(sorted((DATA / "isbi2012" / "images").iterdir())[0])
    reps = 2 if small else 8
    return normalize(np.tile(img, (reps, reps)), "zscore")


def _network(dims: int):
    """MONAI's BasicUNet with the weights every process shares (seed 0)."""
    import torch
    from monai.networks.nets import BasicUNet

    torch.manual_seed(0)
    return BasicUNet(spatial_dims=dims, in_channels=1, out_channels=2, features=FEATURES).eval()


def _export(net, roi, f) -> None:
    """``net`` to ONNX in ``f`` (a path or a file object), the batch axis dynamic."""
    import torch

    torch.onnx.export(net, torch.zeros(1, 1, *roi), f, dynamo=False, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})  # fmt: skip


def export(case: str, small: bool, path: str) -> None:
    """Write the shared network as an ONNX (``.onnx``) or TorchScript (``.pt``) file, in its
    own process."""
    import torch

    roi = _roi(case, small)
    net = _network(len(roi))
    if path.endswith(".pt"):
        with torch.no_grad():
            torch.jit.save(torch.jit.trace(net, torch.zeros(1, 1, *roi)), path)
    else:
        _export(net, roi, path)


def _onnx_file(path: str, threads: int, arena: bool):
    import torch

    from segloc.nn.export import OnnxPredictor

    predictor = OnnxPredictor(path, memory_arena=arena, threads=threads)
    return lambda w: torch.from_numpy(predictor(w.numpy()))


def child(case: str, run: str, small: bool, out: str) -> None:
    import torch

    threads = int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1))
    torch.set_num_threads(threads)
    x = np.load(Path(out).with_name(f"{case}-input.npy"))
    roi = _roi(case, small)
    if run in ONNX_FILE_RUNS:
        net = _onnx_file(out + ".onnx", threads, arena=run.endswith("-arena"))
    elif run in EXPORTED:
        net = torch.jit.load(out + EXPORTED[run]).eval()
    else:
        net = _network(len(roi))
    t = torch.from_numpy(np.ascontiguousarray(x))[None, None]
    stats = None
    with torch.no_grad():
        # warm-up in the run's precision, twice (a TorchScript module optimises its graph on
        # the second call): first-call allocations and kernel choices are not timed
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=run == "segloc-bf16"):
            for _ in range(2):
                net(torch.zeros(1, 1, *roi))
        start = time.perf_counter()
        if run == "monai":
            from monai.inferers import sliding_window_inference

            y = sliding_window_inference(
                t, roi, 4, lambda w: torch.softmax(net(w), 1), overlap=0.5, mode="gaussian",
                sigma_scale=0.125,
            )[0].numpy()  # fmt: skip
        else:
            from segloc.engine.windows import WindowStats, sliding_window_inference

            stats = WindowStats()
            model = net
            if run == "segloc-onnx":
                model = _onnx(net, roi)
            batch = 1 if run in ("segloc-b1", "segloc-onnx", "segloc-bf16", *ONNX_FILE_RUNS) else 4
            output = "probabilities" if run == "segloc" else "labels"
            y = sliding_window_inference(
                model,
                t,
                roi,
                overlap=0.5,
                mode="gaussian",
                batch_size=batch,
                output=output,
                stats=stats,
                precision="bf16" if run == "segloc-bf16" else "fp32",
                # as segloc's Predictor stores up to 255 classes (int32 before 2026-12-06)
                labels_dtype=torch.uint8,
                # ONNX Runtime without its arena frees in other sizes each call: glibc's
                # defaults return that memory, a heap that keeps it grows
                reuse_freed_memory=run != "segloc-onnx-file",
            )[0].numpy()
        wall = time.perf_counter() - start
    np.save(out, y)
    rss = peak_rss_mib()
    counts = {"computed": stats.computed, "reused": stats.reused} if stats else {}
    print(json.dumps({"wall_s": wall, "peak_MiB": rss, **counts}))


def _onnx(net, roi):
    import io

    import onnxruntime as ort
    import torch

    buf = io.BytesIO()
    _export(net, roi, buf)
    session = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    return lambda w: torch.from_numpy(session.run(None, {"x": w.numpy()})[0])


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--small", action="store_true")
    p.add_argument("--cases", default="3d,2d")
    p.add_argument("--runs", default=",".join(RUNS))
    p.add_argument("--out")
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    p.add_argument("--export", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.small, args.child[2])
        return 0
    if args.export:
        export(args.export[0], args.small, args.export[1])
        return 0
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="segloc-bench-"))
    for case in args.cases.split(","):
        ref = None
        np.save(tmp / f"{case}-input.npy", _input(case, args.small))
        for run in args.runs.split(","):
            out = tmp / f"{case}-{run}.npy"
            small = ["--small"] if args.small else []
            if run in EXPORTED:
                cmd = [sys.executable, __file__, "--export", case, f"{out}{EXPORTED[run]}", *small]
                subprocess.run(cmd, check=True, capture_output=True)
            cmd = [sys.executable, __file__, "--child", case, run, str(out), *small]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                print(proc.stderr[-2000:], file=sys.stderr)
                return 1
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            y = np.load(out)
            if run == "monai":
                ref, agree = y, "reference"
            elif y.ndim == ref.ndim:
                agree = f"max |dp| {np.abs(y - ref).max():.1e}"
            else:
                agree = f"labels = MONAI argmax on {100 * np.mean(y == ref.argmax(0)):.4f}%"
            mon = next((q for q in rows if q["case"] == case and q["run"] == "monai"), None)
            rows.append({
                "case": case, "run": run, **r, "agree": agree,
                "speed_x": (mon["wall_s"] / r["wall_s"]) if mon else 1.0,
                "memory_x": (r["peak_MiB"] / mon["peak_MiB"]) if mon else 1.0,
            })  # fmt: skip
            print(rows[-1], flush=True)
    head = (
        "| case | run | wall s | peak RSS MiB | MONAI time / this | this RSS / MONAI "
        "| computed | reused | agreement |"
    )
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['run']} | {r['wall_s']:.1f} | {r['peak_MiB']:.0f} "
            f"| {r['speed_x']:.2f} | {r['memory_x']:.2f} | {r.get('computed', '')} "
            f"| {r.get('reused', '')} | {r['agree']} |"
        )
    command = f"python benchmarks/sliding_window.py{' --small' if args.small else ''}"
    publish(run_header(command) + "\n\n" + "\n".join(lines) + "\n", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
