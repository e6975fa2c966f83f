"""Prediction at scale: images per second on 1 and 2 Dask workers, and on paper for more.

    python benchmarks/scale.py [--small] [--size 8192] [--chunks 2048] [--workers 1,2]
                               [--out benchmarks/results/scale.md]

Issue 18, part 3. Two cases, each predicted by the single-process library path (the baseline,
in this process) and by :mod:`segloc.engine.distributed` on a fresh
``LocalCluster(n_workers=N, threads_per_worker=1, processes=True)`` on 127.0.0.1 (dashboard
on a free loopback port; :func:`~segloc.engine.distributed.connect`) per N, started and
stopped here, which predicts both cases in turn:

- ``folder``: the 30 unlabelled ISBI 2012 slices of ``$SEGLOC_DATA/isbi2012/test/images``
  (512x512), one case per task (:func:`~segloc.engine.distributed.predict_folder_dask`);
  baseline :func:`~segloc.engine.infer.predict_to_folder`, what ``segloc predict`` runs;
- ``slide``: ISBI test slice 0 tiled to ``--size`` squared (8192^2 by default), written as
  Zarr (input chunks 1024^2) in a temporary folder, one output block of ``--chunks`` squared
  per task (:func:`~segloc.engine.distributed.predict_image_dask`, after its pass of
  z-score moments, which is part of the work); baseline
  :func:`~segloc.engine.blocks.predict_chunked`.

The model is a 2D U-Net of the ISBI training recipe (benchmarks/results/train_isbi.md:
``base_channels`` 16, depth 4, batch norm, 'same' padding, 256^2 windows, overlap 0.5,
z-score) with **random weights** (``torch.manual_seed(0)``): the masks mean nothing, the
work is that of a trained model of this size. The baseline runs at 1 thread and at torch's
default thread count (``segloc predict``'s); each Dask worker runs 1 thread.

Timed apart: ``cluster s`` (cluster start until every worker is up), ``load s`` (the
checkpoint loaded in every worker, torch imported there, and in this process, which plans
the slide; for the baseline the :class:`~segloc.engine.infer.Predictor` built), both once
per cluster and shown in both its rows, and ``work s`` (the prediction call alone, outputs
written). ``tasks`` are cases or output blocks (for the baseline too, which writes the
same blocks in one pass), so ``s / task`` is ``t_c`` or ``t_b`` below. ``overhead ms`` is
the scheduler's cost per task, from a burst of no-op tasks on the same cluster.
``windows`` counts network evaluations: the slide's blocks each compute the windows that
meet them, so more than one pass over the whole image does.

On paper, from the 1-worker rows: ``t_c`` = seconds per ISBI case, ``t_b`` = seconds per
output block of ``B`` = ``--chunks``^2 pixels (its halo windows and the moment pass
included), ``o`` = scheduler overhead per task (its largest measured value; the scheduler
is one process, so it is not divided by N). ``n`` tasks on N such workers take about
``T(N) = n * t / N + n * o``: 1,000,000 images of 512^2 (``n = 1e6``, ``t = t_c``) and a
100,000^2 slide (``n = ceil(1e5 / chunk)^2``, ``t = t_b``), for N = 1, 2, 8, 64. Linear
scaling is assumed; the measured 2-worker speed-up is printed beside it. Reading the
inputs from a shared file system at that rate is not modelled.

``--small`` shrinks everything (2 slices, a 512^2 slide in 256^2 blocks, a 4-channel
depth-2 U-Net with 128^2 windows) to check that the script runs (under a minute). Run it on
an otherwise idle machine; on a busy one the times mean little.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import format_markdown, run_header  # noqa: E402

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("SEGLOC_DATA", HERE.parents[0].parent / "shared" / "data"))
OPTIONS = {"device": "cpu"}  # the Predictor options of every run (the Dask functions' default)
PROJECT_WORKERS = (1, 2, 8, 64)
PROJECT_IMAGES = 1_000_000
PROJECT_SLIDE = 100_000
COLUMNS = (
    "case", "run", "workers", "threads", "cluster s", "load s", "work s", "tasks",
    "s / task", "windows", "images / s", "Mpixel / s", "overhead ms",
)  # fmt: skip


# --------------------------------------------------------------------------- inputs


def make_model(folder: Path, small: bool) -> Path:
    """A random-weights 2D U-Net checkpoint of the ISBI recipe (timing only)."""
    import torch

    from segloc.nn import create_model
    from segloc.nn.checkpoint import save_checkpoint

    torch.manual_seed(0)
    kw = {
        "in_channels": 1, "num_classes": 2, "dims": 2, "padding": "same", "norm": "batch",
        "base_channels": 4 if small else 16, "depth": 2 if small else 4,
    }  # fmt: skip
    extra = {
        "dims": 2, "in_channels": 1, "num_classes": 2, "normalize": "zscore",
        "patch_size": [128, 128] if small else [256, 256], "target_spacing": None,
        "ignore_index": None, "label_mapping": "auto",
    }  # fmt: skip
    return save_checkpoint(
        folder / "model.safetensors", "unet", kw, create_model("unet", **kw).eval(), extra=extra
    )


def isbi_cases(small: bool) -> list[Path]:
    """The ISBI 2012 test slices (read in place, never copied)."""
    from segloc.io import list_images

    folder = DATA / "isbi2012" / "test" / "images"
    if not folder.is_dir():
        raise SystemExit(f"{folder}: not found (set SEGLOC_DATA)")
    files = list_images(folder)
    return files[:2] if small else files


def make_slide(path: Path, first: Path, size: int) -> Path:
    """``first`` tiled to ``size`` x ``size``, as a Zarr store of 1024^2 (or smaller) chunks."""
    from segloc.io import read_image
    from segloc.io.chunked import ChunkedWriter

    img, _ = read_image(first)
    reps = [math.ceil(size / s) for s in img.shape[:2]]
    big = np.tile(img, reps)[:size, :size]
    writer = ChunkedWriter(path, big.shape, big.dtype, (min(1024, size // 2),) * 2)
    writer.array[:] = big
    return writer.commit()


# --------------------------------------------------------------------------- runs


def _row(case: str, run: str, work: float, tasks: int, pixels: int, **extra) -> dict:
    row = {
        "case": case, "run": run, "work s": work, "tasks": tasks, "s / task": work / tasks,
        "Mpixel / s": pixels / work / 1e6, **extra,
    }  # fmt: skip
    if case == "folder":
        row["images / s"] = tasks / work
    return row


def baseline(case: str, model: Path, inputs, out: Path, threads: int, chunks: int) -> dict:
    """One process, ``threads`` torch threads: ``segloc predict``'s library path."""
    import torch

    from segloc.engine.blocks import predict_chunked
    from segloc.engine.infer import load_predictor

    default = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        t0 = time.perf_counter()
        predictor = load_predictor(model, **OPTIONS)
        load = time.perf_counter() - t0
        t0 = time.perf_counter()
        if case == "folder":
            from segloc.engine.infer import predict_to_folder

            predict_to_folder(predictor, inputs, out, progress=False)
            windows = predictor.stats.computed
        else:
            result = predict_chunked(predictor, inputs, out, chunks=(chunks, chunks))
            windows = result.stats.computed
        work = time.perf_counter() - t0
    finally:
        torch.set_num_threads(default)
    return _row(case, "one process", work, *_size(case, inputs, chunks), threads=threads,
                windows=windows, **{"load s": load})  # fmt: skip


def _size(case: str, inputs, chunks: int) -> tuple[int, int]:
    """(tasks, pixels) of a case: cases and their pixels, or output blocks and the slide's."""
    from segloc.io import read_image
    from segloc.io.chunked import block_slices, open_chunked

    if case == "folder":
        return len(inputs), sum(read_image(p)[0].size for p in inputs)
    with open_chunked(inputs) as image:
        shape = image.shape
    return len(block_slices(shape, (chunks, chunks))), int(np.prod(shape))


def on_dask(model: Path, cases: dict, tmp: Path, workers: int, chunks: int) -> list[dict]:
    """Both cases on one fresh LocalCluster of ``workers`` one-thread processes."""
    from segloc.engine.distributed import (
        connect,
        predict_folder_dask,
        predict_image_dask,
        worker_predictor,
    )

    t0 = time.perf_counter()
    client = connect(f"local:{workers}")
    try:
        client.wait_for_workers(workers)
        cluster = time.perf_counter() - t0
        t0 = time.perf_counter()
        # the model loaded on every worker, under the key the prediction tasks use
        loads = [
            client.submit(lambda m, o: worker_predictor(m, o).num_classes, str(model), OPTIONS,
                          workers=[w], allow_other_workers=False, pure=False)
            for w in client.scheduler_info()["workers"]
        ]  # fmt: skip
        client.gather(loads)
        worker_predictor(str(model), OPTIONS)  # this process plans the slide's blocks
        load = time.perf_counter() - t0
        work, windows = {}, {}
        for case, inputs in cases.items():
            t0 = time.perf_counter()
            if case == "folder":
                predict_folder_dask(client, model, inputs, tmp / f"folder-dask-{workers}",
                                    options=OPTIONS)  # fmt: skip
                work[case] = time.perf_counter() - t0
                # network calls of the workers' predictors (block tasks count their own)
                windows[case] = sum(client.run(lambda dask_worker: sum(
                    p.stats.computed
                    for p in getattr(dask_worker, "_segloc_predictors", {}).values()
                )).values())  # fmt: skip
            else:
                _, counts = predict_image_dask(
                    client, model, inputs, tmp / f"slide-dask-{workers}.zarr",
                    chunks=(chunks, chunks), options=OPTIONS,
                )  # fmt: skip
                work[case], windows[case] = time.perf_counter() - t0, counts["computed"]
        overhead = scheduler_overhead(client, 500)
    finally:
        cluster_obj = getattr(client, "cluster", None)
        client.close()
        if cluster_obj is not None:
            cluster_obj.close()
    start = {"cluster s": cluster, "load s": load, "overhead ms": overhead * 1e3}
    return [
        _row(case, "Dask", work[case], *_size(case, inputs, chunks), workers=workers,
             threads=1, windows=windows[case], **start)
        for case, inputs in cases.items()
    ]  # fmt: skip


def scheduler_overhead(client, n: int) -> float:
    """Seconds per task of ``n`` no-op tasks submitted at once (after a warm-up burst)."""
    client.gather(client.map(abs, range(-20, 0), pure=False))
    t0 = time.perf_counter()
    client.gather(client.map(abs, range(-n, 0), pure=False))
    return (time.perf_counter() - t0) / n


# --------------------------------------------------------------------------- on paper


def projection(rows: list[dict], chunks: int) -> tuple[list[dict], dict]:
    """Hours for 1e6 ISBI-sized images and a 1e5^2 slide on N workers, from the 1-worker rows."""
    one = {r["case"]: r for r in rows if r["run"] == "Dask" and r.get("workers") == 1}
    two = {r["case"]: r for r in rows if r["run"] == "Dask" and r.get("workers") == 2}
    o = max(r["overhead ms"] for r in rows if r["run"] == "Dask") / 1e3
    t_c, t_b = one["folder"]["s / task"], one["slide"]["s / task"]
    n_slide = math.ceil(PROJECT_SLIDE / chunks) ** 2
    table = []
    for n in PROJECT_WORKERS:
        table.append({
            "N workers": n,
            "1e6 images of 512² (h)": (PROJECT_IMAGES * t_c / n + PROJECT_IMAGES * o) / 3600,
            "100k x 100k slide (h)": (n_slide * t_b / n + n_slide * o) / 3600,
        })  # fmt: skip
    speedup = {c: one[c]["work s"] / two[c]["work s"] for c in one if c in two}
    return table, {"t_c": t_c, "t_b": t_b, "o": o, "n_slide": n_slide, "speedup": speedup}


def report(rows: list[dict], chunks: int, command: str) -> str:
    table, k = projection(rows, chunks)
    measured = format_markdown(rows, COLUMNS)
    paper = format_markdown(table, list(table[0]))
    speedup = ", ".join(f"{c} {s:.2f}x" for c, s in k["speedup"].items()) or "not measured"
    return (
        f"{run_header(command)}\n\n"
        "Random-weights U-Net (timing only). Dask rows: one fresh LocalCluster per N for "
        "both cases (its start-up shown in both rows), 1 thread per worker.\n\n"
        f"{measured}\n\n"
        "### On paper\n\n"
        f"`T(N) = n * t / N + n * o` with t_c = {k['t_c']:.3g} s per 512² case, "
        f"t_b = {k['t_b']:.3g} s per {chunks}² block (1 worker), o = {k['o'] * 1e3:.3g} ms "
        f"per task; n = {PROJECT_IMAGES:,} cases or {k['n_slide']:,} blocks. Linear scaling "
        f"assumed; measured speed-up of 2 workers over 1: {speedup}.\n\n"
        f"{paper}\n"
    )


# --------------------------------------------------------------------------- main


def run(small: bool, size: int, chunks: int, workers: list[int], tmp: Path) -> list[dict]:
    import torch

    model = make_model(tmp, small)
    folder = isbi_cases(small)
    cases = {"folder": folder, "slide": make_slide(tmp / "slide.zarr", folder[0], size)}
    rows = []
    for t in sorted({1, torch.get_num_threads()}):
        for case, inputs in cases.items():
            out = tmp / (f"{case}-one-{t}" + (".zarr" if case == "slide" else ""))
            rows.append(baseline(case, model, inputs, out, t, chunks))
            print(rows[-1], flush=True)
    for n in workers:
        rows += on_dask(model, cases, tmp, n, chunks)
        print(*rows[-2:], sep="\n", flush=True)
    order = {"folder": 0, "slide": 1}
    return sorted(rows, key=lambda r: order[r["case"]])  # stable: baselines, then N


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--small", action="store_true", help="tiny sizes: checks the script runs")
    p.add_argument("--size", type=int, help="slide side in pixels (8192; --small: 512)")
    p.add_argument("--chunks", type=int, help="output block side = task (2048; --small: 256)")
    p.add_argument("--workers", default="1,2", help="comma-separated worker counts (need 1)")
    p.add_argument("--out", help="also write the tables to this markdown file")
    args = p.parse_args(argv)
    size = args.size or (512 if args.small else 8192)
    chunks = args.chunks or (256 if args.small else 2048)
    workers = [int(w) for w in args.workers.split(",")]
    if 1 not in workers:
        p.error("--workers must include 1: the projection is made from the 1-worker rows")
    command = "python benchmarks/scale.py" + (" " + " ".join(argv) if argv else "")
    with tempfile.TemporaryDirectory(prefix="segloc-scale-") as tmp:
        rows = run(args.small, size, chunks, workers, Path(tmp))
    text = report(rows, chunks, command)
    print(text)
    if args.out:
        from segloc._validation import atomic_path

        with atomic_path(args.out) as path:
            path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
