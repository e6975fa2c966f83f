"""An image whose arrays do not fit the process's memory is predicted and thresholded anyway.

An 8192 x 16384 image (128 MiB as uint8 on disk; the in-memory path would hold 0.5 GiB of
float32 input, 1 GiB of class probabilities and 0.5 GiB of weights) is processed by a child
process whose address space is limited with ``resource.setrlimit(RLIMIT_AS)``.

Why the limit is "baseline + 1 GiB" and not 1 GiB: an idle ``import torch`` (with zarr and
segloc) already maps about 0.9 GiB of virtual address space (shared libraries, torch's
kernels, thread stacks; measured in the child as ``VmPeak`` after its imports, 917 MiB on
the development machine), most of it never resident. The child measures its own baseline
after importing everything and sets the limit 1 GiB above it, so the budget for the work
itself is 1 GiB: less than the float32 input alone. ``MALLOC_ARENA_MAX=2`` keeps glibc from
reserving 64 MiB of address space per thread. A control allocation of the in-memory path's
arrays must fail under the same limit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from segloc.io.chunked import ChunkedWriter, block_slices
from test_infer import make_ckpt

pytestmark = pytest.mark.slow

SHAPE = (8192, 16384)
BUDGET = 1 << 30

CHILD = textwrap.dedent(
    """
    import json, resource, sys
    import numpy as np, torch, zarr
    from segloc.engine.infer import Predictor
    from segloc.engine.blocks import predict_chunked
    from segloc.classical.blocks import segment_blocks
    from segloc.io.chunked import open_chunked

    model, src, out, mask, budget = sys.argv[1:6]
    torch.set_num_threads(1)
    pred = Predictor(model, device="cpu", overlap=0.0, batch_size=2)
    peak = int(open("/proc/self/status").read().split("VmPeak:")[1].split()[0]) * 1024
    limit = peak + int(budget)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:  # control: the in-memory path's float arrays cannot even be allocated
        x = np.ones((3, 8192, 16384), np.float32)  # probabilities + input
        control = "allocated"
    except MemoryError:
        control = "MemoryError"
    run = predict_chunked(pred, src, out, chunks=(2048, 2048))
    t, _ = segment_blocks(open_chunked(src), mask, "otsu", chunks=(2048, 2048))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"baseline": peak, "limit": limit, "maxrss": rss, "control": control,
                      "windows": run.stats.windows, "threshold": t}))
    """
)


def test_predict_and_threshold_an_image_larger_than_the_memory_limit(tmp_path):
    make_ckpt(tmp_path / "m.safetensors", normalize="zscore", patch_size=[512, 512])
    w = ChunkedWriter(tmp_path / "in.zarr", SHAPE, np.uint8, (2048, 2048))
    rows = np.arange(2048)[:, None]
    for _, sl in block_slices(SHAPE, (2048, 2048)):
        r0, c0 = sl[0].start, sl[1].start
        w.array[sl] = (
            (np.sin((rows + r0) / 300.0) + np.cos((rows.T + c0) / 200.0)) * 60 + 128
        ).astype(np.uint8)
    src = w.commit()
    env = {**os.environ, "MALLOC_ARENA_MAX": "2", "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path / "m.safetensors"), str(src),
         str(tmp_path / "out.zarr"), str(tmp_path / "mask.zarr"), str(BUDGET)],
        capture_output=True, text=True, env=env, timeout=1500,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["control"] == "MemoryError"
    assert report["maxrss"] < report["limit"]
    assert report["windows"] == 16 * 32
    assert Path(tmp_path / "out.zarr").exists() and Path(tmp_path / "mask.zarr").exists()
    # the threshold is the whole image's: its histogram is exact (uint8), so check on a copy
    from segloc.classical.threshold import threshold_otsu
    from segloc.io.chunked import open_chunked

    assert report["threshold"] == threshold_otsu(open_chunked(src)[:])
    print(report)
