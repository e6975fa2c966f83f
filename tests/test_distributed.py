"""Prediction and labelling on a Dask cluster (segloc.engine.distributed).

One ``LocalCluster(n_workers=2, threads_per_worker=1, processes=True)`` on 127.0.0.1 for the
module (made by ``segloc.engine.distributed.local_cluster``). Oracles: the single-process
streamed prediction (bit for bit), scipy.ndimage.label (labels), and the outputs of an
undisturbed run (resume, killed worker).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from segloc.engine.blocks import predict_chunked
from segloc.engine.infer import Predictor
from segloc.io import write_image
from segloc.io.chunked import ChunkedWriter, open_chunked

distributed = pytest.importorskip("distributed")
pytestmark = pytest.mark.slow

from segloc.engine.distributed import (  # noqa: E402
    WORKER_ENVIRON,
    label_image_dask,
    local_cluster,
    predict_folder_dask,
    predict_image_dask,
)
from test_infer import make_ckpt  # noqa: E402


@pytest.fixture(scope="module")
def client():
    cluster = local_cluster(2, memory_limit="1GiB")
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


def test_local_cluster_workers_get_the_mmap_threshold_and_keep_the_nannys_trim(client):
    """The workers start with glibc's mmap threshold raised (WORKER_ENVIRON) beside the
    nanny's own MALLOC_TRIM_THRESHOLD_, and making the cluster left the caller's Dask
    configuration as it was."""
    import dask

    seen = client.run(lambda: {k: os.environ.get(k) for k in
                               ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")})  # fmt: skip
    assert len(seen) == 2
    default = dask.config.get("distributed.nanny.pre-spawn-environ")
    for env in seen.values():
        assert env["MALLOC_MMAP_THRESHOLD_"] == WORKER_ENVIRON["MALLOC_MMAP_THRESHOLD_"]
        assert env["MALLOC_TRIM_THRESHOLD_"] == str(default["MALLOC_TRIM_THRESHOLD_"])
    assert "MALLOC_MMAP_THRESHOLD_" not in default


def write_zarr(path: Path, image: np.ndarray, chunks) -> Path:
    w = ChunkedWriter(path, image.shape, image.dtype, chunks)
    w.array[:] = image
    return w.commit()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    make_ckpt(d / "m2.safetensors", normalize="zscore", patch_size=[32, 32])
    make_ckpt(
        d / "m3.safetensors", model_kw={"dims": 3, "num_classes": 3}, dims=3, num_classes=3,
        patch_size=[16, 16, 16], label_mapping=None,
    )  # fmt: skip
    return d


@pytest.mark.parametrize(
    "dims,shape,chunkings",
    [
        (2, (150, 130), [(64, 64), (150, 20), (33, 130)]),
        (3, (40, 37, 30), [(16, 16, 16), (40, 10, 30), (13, 37, 7)]),
    ],
)
def test_dask_prediction_is_bit_identical_to_one_process(
    client, models, tmp_path, dims, shape, chunkings
):
    rng = np.random.default_rng(dims)
    image = (rng.random(shape) * 255).astype(np.uint8)
    image[: shape[0] // 3] = 0  # a background band: windows reused in both runs
    src = write_zarr(tmp_path / "in.zarr", image, (40,) * dims)
    model = models / f"m{dims}.safetensors"
    ref_run = predict_chunked(Predictor(model, device="cpu"), src, tmp_path / "ref.zarr")
    ref = open_chunked(ref_run.path)[:]
    for k, chunks in enumerate(chunkings):
        out, counts = predict_image_dask(client, model, src, tmp_path / f"o{k}.zarr", chunks=chunks)
        np.testing.assert_array_equal(open_chunked(out)[:], ref)
        assert counts["chunks_computed"] > 1 and counts["chunks_skipped"] == 0
    assert not list(tmp_path.glob(".*.partial"))


def test_workers_load_the_model_once_and_set_their_threads(client, models, tmp_path):
    folder = tmp_path / "cases"
    rng = np.random.default_rng(0)
    for i in range(6):
        write_image(folder / f"c{i}.png", (rng.random((40, 36)) * 255).astype(np.uint8))
    model = models / "m2.safetensors"
    outs = predict_folder_dask(client, model, [folder], tmp_path / "out")
    assert sorted(p.name for p in outs) == [f"c{i}.png" for i in range(6)]
    pred = Predictor(model, device="cpu")
    for i in range(6):
        from segloc.io import read_mask

        got, _ = read_mask(tmp_path / "out" / f"c{i}.png")
        ref = pred.predict_labels(_read(folder / f"c{i}.png"))
        np.testing.assert_array_equal(got > 0, ref)

    def state(dask_worker):
        import torch

        return getattr(dask_worker, "_segloc_loads", {}), torch.get_num_threads()

    for loads, threads in client.run(state).values():
        # one load per model and worker, never one per task
        assert all(n == 1 for n in loads.values()) and threads == 1
    # resume: every case is marked done, nothing runs again
    before = {p: p.stat().st_mtime_ns for p in outs}
    predict_folder_dask(client, model, [folder], tmp_path / "out")
    assert {p: p.stat().st_mtime_ns for p in outs} == before


def _read(path):
    from segloc.io import read_image

    return read_image(path)[0]


def test_resume_redoes_only_the_chunks_without_a_marker(client, models, tmp_path):
    image = (np.random.default_rng(3).random((120, 100)) * 255).astype(np.uint8)
    src = write_zarr(tmp_path / "in.zarr", image, (40, 50))
    model = models / "m2.safetensors"
    ref, _ = predict_image_dask(client, model, src, tmp_path / "ref.zarr", chunks=(40, 50))
    # a stopped run: the staged store holds two finished chunks with markers and one
    # corrupt chunk without (as a worker killed mid-write leaves it)
    w = ChunkedWriter(tmp_path / "out.zarr", image.shape, np.uint8, (40, 50))
    good = open_chunked(ref)[:]
    w.array[0:40, 0:50] = good[0:40, 0:50]
    w.array[0:40, 50:100] = 7  # corrupt, unmarked
    import json

    stamp = json.dumps(
        {"model": str(model.resolve()), "options": {"device": "cpu"}, "source": str(src.resolve())}
    )
    (w.stage / "done").mkdir()
    (w.stage / "done" / "0_0").write_text(stamp)
    out, counts = predict_image_dask(client, model, src, tmp_path / "out.zarr", chunks=(40, 50))
    assert counts["chunks_skipped"] == 1 and counts["chunks_computed"] == 5
    np.testing.assert_array_equal(open_chunked(out)[:], good)


def test_killing_a_worker_mid_run_gives_the_same_output(client, models, tmp_path):
    image = (np.random.default_rng(4).random((400, 320)) * 255).astype(np.uint8)
    src = write_zarr(tmp_path / "in.zarr", image, (64, 64))
    model = models / "m2.safetensors"
    ref = predict_chunked(Predictor(model, device="cpu"), src, tmp_path / "ref.zarr").path
    result = {}

    def run():
        result["out"] = predict_image_dask(
            client, model, src, tmp_path / "out.zarr", chunks=(32, 32)
        )

    thread = threading.Thread(target=run)
    thread.start()
    done = tmp_path / ".out.zarr.partial" / "done"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (done.exists() and len(os.listdir(done)) >= 3):
        time.sleep(0.05)
    pids = client.run(os.getpid)
    victim = sorted(pids.values())[0]
    os.kill(victim, signal.SIGKILL)  # the nanny restarts it; Dask retries its tasks
    thread.join(timeout=300)
    assert "out" in result, "the run did not finish after a worker was killed"
    out, counts = result["out"]
    np.testing.assert_array_equal(open_chunked(out)[:], open_chunked(ref)[:])
    client.wait_for_workers(2, timeout=60)


def test_dask_labels_equal_scipy_whatever_the_task_order(client, tmp_path):
    rng = np.random.default_rng(5)
    mask = (ndi.gaussian_filter(rng.random((90, 80, 30)), 2) > 0.52).astype(np.uint8)
    src = write_zarr(tmp_path / "m.zarr", mask, (30, 30, 30))
    ref, n = ndi.label(mask)
    for k, chunks in enumerate([(30, 30, 30), (17, 80, 9)]):
        stitched, out = label_image_dask(client, src, tmp_path / f"l{k}.zarr", chunks=chunks)
        assert stitched.count == n
        np.testing.assert_array_equal(open_chunked(out)[:], ref)


def test_cli_predict_dask_local_cluster(models, tmp_path):
    from segloc.cli import main

    image = (np.random.default_rng(6).random((70, 60)) * 255).astype(np.uint8)
    src = write_zarr(tmp_path / "big.zarr", image, (32, 32))
    write_image(tmp_path / "cases" / "a.png", image[:40, :40])
    model = models / "m2.safetensors"
    argv = ["predict", str(src), str(tmp_path / "cases"), "--model", str(model), "-o",
            str(tmp_path / "out"), "--dask", "local:1", "--chunks", "32", "32", "-q"]  # fmt: skip
    assert main(argv) == 0
    pred = Predictor(model, device="cpu")
    np.testing.assert_array_equal(
        open_chunked(tmp_path / "out" / "big.zarr")[:], pred.predict_labels(image)
    )
    assert (tmp_path / "out" / "a.png").exists()


def _peak_rss(dask_worker=None) -> int:
    """This process's resident high-water mark in bytes (VmHWM: since exec, unlike
    ru_maxrss, which keeps the forking parent's peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_worker_memory_stays_under_its_limit_on_an_input_ten_times_larger(tmp_path):
    """Two workers of 1 GiB each predict a 10.2 GiB float32 image (52,224² pixels; stored
    sparsely: Zarr chunks never written read as 0, so the disk holds a few MiB) and write its
    2.5 GiB label map: every worker's peak RSS stays under its limit, no worker restarts, and
    the labels equal a single-process prediction of a small image with the same content at
    the same window phase (the windows near an object and far from everything)."""
    limit = 1 << 30
    side, chunk, patch = 52224, 1024, 256
    assert side * side * 4 >= 10 * limit
    make_ckpt(tmp_path / "m.safetensors", normalize=None, patch_size=[patch, patch])
    model = tmp_path / "m.safetensors"
    rng = np.random.default_rng(7)
    blob = (rng.random((chunk, chunk)) * 4).astype(np.float32)
    w = ChunkedWriter(tmp_path / "big.zarr", (side, side), np.float32, (chunk, chunk))
    w.array[5 * chunk : 6 * chunk, 5 * chunk : 6 * chunk] = blob  # one object, chunk-aligned
    big = w.commit()
    # the same object in a 4096² image at the same phase of the window grid (a multiple of
    # the stride 128 from an image edge that no window is shifted against)
    small = np.zeros((4 * chunk, 4 * chunk), np.float32)
    small[2 * chunk : 3 * chunk, 2 * chunk : 3 * chunk] = blob
    src = write_zarr(tmp_path / "small.zarr", small, (chunk, chunk))
    ref = open_chunked(predict_chunked(Predictor(model, device="cpu"), src,
                                       tmp_path / "ref.zarr").path)[:]  # fmt: skip

    cluster = local_cluster(2, memory_limit=limit)
    try:
        with distributed.Client(cluster) as client:
            pids = client.run(os.getpid)
            out, counts = predict_image_dask(client, model, big, tmp_path / "out.zarr")
            peaks = client.run(_peak_rss)
            assert client.run(os.getpid) == pids, "a worker was restarted (memory limit?)"
    finally:
        cluster.close()
    print({"peak_rss_mib": {k: v >> 20 for k, v in peaks.items()}, **counts})
    assert counts["chunks_computed"] == (side // chunk) ** 2
    assert max(peaks.values()) < limit
    labels = open_chunked(out)
    # around the object: small[c:3840] is covered by interior windows only (3840 = 4096 - 256)
    n = 3840 - chunk
    np.testing.assert_array_equal(labels[4 * chunk : 4 * chunk + n, 4 * chunk : 4 * chunk + n],
                                  ref[chunk : chunk + n, chunk : chunk + n])  # fmt: skip
    # far from the object and the edges: the blend of all-zero windows (small[256:1280] meets
    # no window that reaches the object), the same in any chunk at the same phase
    far = ref[patch : patch + chunk, patch : patch + chunk]
    for r, c in [(20, 33), (49, 2)]:
        np.testing.assert_array_equal(
            labels[r * chunk + patch : (r + 1) * chunk + patch,
                   c * chunk + patch : (c + 1) * chunk + patch], far)  # fmt: skip
