"""Why a one-thread Dask worker is slower than a plain process: glibc's trim threshold.

    python benchmarks/malloc_trim.py

Dask's nanny sets ``MALLOC_TRIM_THRESHOLD_=65536`` in its workers' environment
(``distributed.nanny.pre-spawn-environ``). Setting it fixes glibc's mmap threshold, so every
large tensor is a fresh mapping whose pages fault in again. This times the 30 ISBI test
slices (``$SEGLOC_DATA/isbi2012/test/images``, the random-weights U-Net of
``benchmarks/scale.py``), one thread, one warm-up slice untimed, each in a fresh process:
as is, with the nanny's setting, and with it plus ``MALLOC_MMAP_THRESHOLD_`` at glibc's
largest (32 MiB). Then a 1-worker cluster as Dask makes it (``LocalCluster``) and as segloc
makes it (:func:`segloc.engine.distributed.local_cluster`, which adds that mmap threshold),
printing what each worker's environment holds. Idle machine only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from scale import make_model  # noqa: E402

DATA = Path(os.environ.get("SEGLOC_DATA", HERE.parent.parent / "shared" / "data"))
IMAGES = DATA / "isbi2012" / "test" / "images"
CHILD = r"""
import sys, time, torch
torch.set_num_threads(1)
from segloc.engine.infer import Predictor, predict_to_folder
p = Predictor(sys.argv[1], device="cpu")
predict_to_folder(p, [sys.argv[2] + "/0.png"], sys.argv[3] + "-warm")
t = time.perf_counter()
predict_to_folder(p, [sys.argv[2]], sys.argv[3])
print(time.perf_counter() - t)
"""
ENVS = {
    "plain": {},
    "plain + trim": {"MALLOC_TRIM_THRESHOLD_": "65536"},
    "plain + trim + mmap": {"MALLOC_TRIM_THRESHOLD_": "65536",
                            "MALLOC_MMAP_THRESHOLD_": str(32 << 20)},
}  # fmt: skip


def main() -> int:
    from distributed import Client, LocalCluster

    from segloc.engine.distributed import local_cluster, predict_folder_dask

    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = make_model(work, small=False)
        for label, env in ENVS.items():
            e = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
            out = subprocess.run(
                [sys.executable, "-c", CHILD, str(model), str(IMAGES), str(work / label)],
                env={**e, **env}, capture_output=True, text=True, check=True,
            )  # fmt: skip
            res[label] = float(out.stdout.split()[-1])
            print(label, f"{res[label]:.1f} s", flush=True)
        makers = {
            "dask LocalCluster": lambda: LocalCluster(
                n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                dashboard_address="127.0.0.1:0",
            ),
            "segloc local_cluster": lambda: local_cluster(1),
        }  # fmt: skip
        for label, make in makers.items():
            cluster = make()
            with Client(cluster) as c:
                seen = c.run(lambda: {k: v for k, v in os.environ.items() if "MALLOC_" in k})
                predict_folder_dask(c, model, [IMAGES / "0.png"], work / f"{label}-warm")
                t = time.perf_counter()
                predict_folder_dask(c, model, [IMAGES], work / label)
                res[label] = time.perf_counter() - t
            cluster.close()
            print(label, f"{res[label]:.1f} s; worker's environment:", list(seen.values()),
                  flush=True)  # fmt: skip
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
