"""Prediction on a Dask cluster: many cases one per task, one huge image by blocks.

- :func:`connect` turns ``local:N`` into a ``distributed.LocalCluster`` of N single-threaded
  worker processes, and ``tcp://HOST:PORT`` into a client of an existing scheduler.
- :func:`predict_folder_dask` spreads the files of a folder one case per task.
- :func:`predict_image_dask` spreads one image (Zarr, OME-Zarr, tiled TIFF, NIfTI) by output
  chunks: each task computes its chunk with :func:`segloc.engine.blocks.predict_block` (the
  windows that meet it, read with their halo) and writes exactly that chunk of a staged Zarr
  store; the same values as the single-process :func:`segloc.engine.blocks.predict_chunked`.
- :func:`label_image_dask` labels the connected components of a mask by blocks and stitches
  them (:mod:`segloc.classical.blocks`): the labelling equals :func:`scipy.ndimage.label`,
  whatever order the tasks finish in.

Workers load a model once each, not once per task: the :class:`~segloc.engine.infer.
Predictor` is kept on the worker (``distributed.get_worker()``) under its checkpoint path and
options, and torch's threads are set to the worker's own thread count, so N workers on N
cores do not each start N threads.

Every task's result is an idempotent write followed by a *done marker* (an empty file
written atomically after the data): a rerun skips the blocks or cases that have one and
redoes the others, and a task that Dask retries after its worker died rewrites its chunk
whole, so the output has no missing and no half-written chunk.

References
----------
.. [1] M. Rocklin, "Dask: Parallel Computation with Blocked algorithms and Task Scheduling",
   Proceedings of the 14th Python in Science Conference, 2015,
   :doi:`10.25080/Majora-7b98e3ed-013`.
.. [2] Dask.distributed documentation, "Worker", "LocalCluster", "Resilience",
   https://distributed.dask.org/
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segloc._validation import atomic_path
from segloc.classical.blocks import label_block, stitch
from segloc.engine.blocks import (
    block_moments,
    merge_moments,
    plan_prediction,
    predict_block,
)
from segloc.engine.infer import Predictor, expand_inputs
from segloc.io.chunked import ChunkedWriter, block_slices, open_chunked

__all__ = [
    "WORKER_ENVIRON",
    "connect",
    "label_image_dask",
    "local_cluster",
    "predict_folder_dask",
    "predict_dask",
    "predict_image_dask",
    "worker_predictor",
]


# Dask's nanny starts its workers with MALLOC_TRIM_THRESHOLD_=65536 so that freed memory goes
# back to the OS. Setting it also pins glibc's mmap threshold at 128 KiB, so every activation
# tensor of inference is mapped and faulted anew: 30 ISBI slices took 35.1 s in such a process
# against 27.0 s in a plain one (benchmarks/malloc_trim.py). Raising the mmap threshold to
# glibc's own dynamic ceiling (32 MiB on 64-bit) keeps the trimming and restores the speed.
WORKER_ENVIRON = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20)}


def local_cluster(n_workers: int, *, memory_limit: str | int = "auto", threads_per_worker: int = 1):
    """A ``distributed.LocalCluster`` of ``n_workers`` processes on 127.0.0.1, set up for
    inference: :data:`WORKER_ENVIRON` added to the nanny's pre-spawn environment, no dashboard
    on a public port. The caller closes it."""
    import dask
    from distributed import LocalCluster

    environ = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}), **WORKER_ENVIRON}
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
        return LocalCluster(
            n_workers=n_workers, threads_per_worker=threads_per_worker, processes=True,
            host="127.0.0.1", memory_limit=memory_limit, dashboard_address="127.0.0.1:0",
        )  # fmt: skip


def connect(spec: str, *, memory_limit: str | int = "auto"):
    """A ``distributed.Client`` for ``"local:N"`` (a new :func:`local_cluster` of N worker
    processes, one thread each) or ``"tcp://HOST:PORT"`` (an existing scheduler: its workers'
    environment is theirs to set, see :data:`WORKER_ENVIRON`).

    The caller closes it (``client.close()``; for a local cluster also ``client.cluster``).
    """
    from distributed import Client

    if spec.startswith("local:"):
        try:
            n = int(spec.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"--dask must be local:N or tcp://HOST:PORT, got {spec!r}") from None
        if n < 1:
            raise ValueError(f"--dask local:N needs N >= 1, got {n}")
        return Client(local_cluster(n, memory_limit=memory_limit))
    if spec.startswith("tcp://"):
        return Client(spec)
    raise ValueError(f"--dask must be local:N or tcp://HOST:PORT, got {spec!r}")


# --------------------------------------------------------------------------- worker state


def worker_predictor(model: str, options: dict[str, Any]) -> Predictor:
    """The worker's :class:`Predictor` for ``model`` and ``options``, loaded on first use.

    Outside a Dask worker (a plain process) a module-level cache stands in for the worker's.
    """
    import torch

    try:
        from distributed import get_worker

        worker = get_worker()
        nthreads = worker.state.nthreads
    except (ImportError, ValueError):
        worker, nthreads = None, None
    holder = worker if worker is not None else _LOCAL
    cache = getattr(holder, "_segloc_predictors", None)
    if cache is None:
        cache = {}
        holder._segloc_predictors = cache
        holder._segloc_loads = {}  # model key -> times loaded (1, unless the worker restarted)
        if nthreads:
            # the worker's share of the machine, not torch's default of every core
            torch.set_num_threads(int(nthreads))
    key = json.dumps([str(model), options], sort_keys=True, default=str)
    if key not in cache:
        cache[key] = Predictor(model, **options)
        holder._segloc_loads[key] = holder._segloc_loads.get(key, 0) + 1
    return cache[key]


class _Local:
    pass


_LOCAL = _Local()


def _marker(folder: Path, name: str, content: str) -> None:
    with atomic_path(folder / name) as tmp:
        tmp.write_text(content)


def _is_done(folder: Path, name: str, content: str) -> bool:
    path = folder / name
    return path.exists() and path.read_text() == content


# --------------------------------------------------------------------------- cases


def _predict_case(model: str, options: dict, path: str, out: str, done: str, stamp: str) -> str:
    from segloc.io import write_mask

    predictor = worker_predictor(model, options)
    labels, _, meta = predictor.predict_file(path, probabilities=False)
    write_mask(out, labels, meta=meta)  # atomic: a killed task leaves no half file
    _marker(Path(done), Path(out).name + ".done", stamp)
    return out


def predict_folder_dask(
    client: Any,
    model: str | os.PathLike,
    inputs: Sequence[str | os.PathLike],
    outdir: str | os.PathLike,
    *,
    options: dict[str, Any] | None = None,
    retries: int = 2,
) -> list[Path]:
    """Predict every input file (folders are searched) on a Dask cluster, one case per task.

    Masks are written as :func:`segloc.engine.infer.predict_to_folder` names them
    (``<stem>.png``, ``.nii.gz``, ...), each atomically, with a done marker in
    ``outdir/.segloc-done``; a rerun with the same model and options skips the cases
    marked done. Unlike ``predict_to_folder`` the outputs appear one by one (a folder of a
    million images is not staged whole).

    Parameters
    ----------
    client : distributed.Client
    model : path-like
        Run folder or checkpoint, readable by every worker.
    options : dict, optional
        :class:`Predictor` keyword arguments (``device`` defaults to ``"cpu"``).
    retries : int
        Extra attempts of a task whose worker failed.

    Returns
    -------
    list of Path
        Every mask of the folder, done now or before.
    """
    from segloc.io import mask_suffix

    options = {"device": "cpu", **(options or {})}
    outdir = Path(outdir)
    done = outdir / ".segloc-done"
    done.mkdir(parents=True, exist_ok=True)
    stamp = json.dumps({"model": str(Path(model).resolve()), "options": options}, default=str)
    todo, outs = [], []
    for path, stem in expand_inputs(inputs):
        out = outdir / stem.with_name(stem.name + mask_suffix(path))
        outs.append(out)
        if not (out.exists() and _is_done(done, out.name + ".done", stamp)):
            todo.append((str(path), str(out)))
    futures = [
        client.submit(_predict_case, str(model), options, p, o, str(done), stamp,
                      key=f"segloc-case-{i}-{Path(o).name}", retries=retries, pure=False)
        for i, (p, o) in enumerate(todo)
    ]  # fmt: skip
    client.gather(futures)
    return outs


# --------------------------------------------------------------------------- one image


def _moments_task(model: str, options: dict, source: str, sl: tuple) -> tuple:
    predictor = worker_predictor(model, options)
    with open_chunked(source) as image:
        return block_moments(predictor, image[sl])


def _block_task(model, options, source, stage, plan, idx, sl, stamp) -> tuple:
    import zarr

    from segloc.engine.windows import WindowStats

    predictor = worker_predictor(model, options)
    stats = WindowStats()
    with open_chunked(source) as image:
        lo, hi = [s.start for s in sl], [s.stop for s in sl]
        labels = predict_block(predictor, image, plan, lo, hi, stats=stats)
    out = zarr.open_array(str(Path(stage) / "data"), mode="r+")
    out[tuple(sl)] = labels  # exactly one chunk: no two tasks write the same chunk
    _marker(Path(stage) / "done", "_".join(map(str, idx)), stamp)
    return stats.windows, stats.computed, stats.reused


def predict_image_dask(
    client: Any,
    model: str | os.PathLike,
    source: str | os.PathLike,
    output: str | os.PathLike,
    *,
    chunks: Sequence[int] | None = None,
    options: dict[str, Any] | None = None,
    retries: int = 3,
) -> tuple[Path, dict[str, int]]:
    """Predict one large image on a Dask cluster, one output chunk per task.

    Parameters
    ----------
    client : distributed.Client
    model : path-like
    source : path-like
        Zarr, OME-Zarr, TIFF or NIfTI (:func:`segloc.io.chunked.open_chunked`), readable by
        every worker.
    output : path-like
        ``.zarr``, ``.ome.zarr`` or ``.tif``: the label map, staged beside it
        (``.<name>.partial``, with a done marker per chunk) and renamed when complete; a
        rerun after a stop resumes from the markers.
    chunks : sequence of int, optional
        Output chunk = task (default 1024 per axis in 2D, 128 in 3D).

    Returns
    -------
    (path, counts)
        ``counts``: windows blended, computed and reused (background) over all tasks, and
        the number of chunks computed now and skipped as already done.
    """
    from segloc.engine.blocks import default_chunks

    options = {"device": "cpu", **(options or {})}
    model, source = str(model), str(source)
    predictor = worker_predictor(model, options)  # metadata and checks, in this process
    with open_chunked(source) as image:
        src_shape, src_chunks = image.shape, image.chunks
        plan = plan_prediction(predictor, image, norm=None)
    if predictor.normalize is not None:
        if predictor.normalize not in ("zscore", "minmax"):
            plan_prediction(predictor, np.zeros((1,) * len(src_shape), np.float32))  # raises
        blocks = block_slices(src_shape, src_chunks)
        futures = [
            client.submit(_moments_task, model, options, source, sl, retries=retries, pure=False)
            for _, sl in blocks
        ]
        # merged in block order: the same rounding as the single-process reduction
        plan.norm = merge_moments(predictor.normalize, client.gather(futures))
    chunks = tuple(chunks) if chunks is not None else default_chunks(plan.shape)
    writer = ChunkedWriter(output, plan.shape, plan.labels_dtype, chunks, resume=True)
    if writer.kind == "nifti":
        raise ValueError(f"{output}: a Dask run writes .zarr, .ome.zarr or .tif")
    stamp = json.dumps({"model": str(Path(model).resolve()), "options": options,
                        "source": str(Path(source).resolve())}, default=str)  # fmt: skip
    (writer.stage / "done").mkdir(exist_ok=True)
    todo = [
        (idx, sl) for idx, sl in block_slices(plan.shape, writer.chunks)
        if not _is_done(writer.stage / "done", "_".join(map(str, idx)), stamp)
    ]  # fmt: skip
    stage = str(writer.stage)
    futures = [
        client.submit(_block_task, model, options, source, stage, plan, idx, sl, stamp,
                      key=f"segloc-block-{'_'.join(map(str, idx))}-{os.getpid()}",
                      retries=retries, pure=False)
        for idx, sl in todo
    ]  # fmt: skip
    results = client.gather(futures)
    counts = {
        "windows": sum(r[0] for r in results),
        "computed": sum(r[1] for r in results),
        "reused": sum(r[2] for r in results),
        "chunks_computed": len(todo),
        "chunks_skipped": len(block_slices(plan.shape, writer.chunks)) - len(todo),
    }
    shutil_done(writer)
    return writer.commit(), counts


def shutil_done(writer: ChunkedWriter) -> None:
    """Drop the done markers before the staged store is renamed into place."""
    import shutil

    shutil.rmtree(writer.stage / "done", ignore_errors=True)


# --------------------------------------------------------------------------- components


def _label_task(source, stage, idx, sl, shape, connectivity):
    import zarr
    from scipy import ndimage as ndi

    structure = ndi.generate_binary_structure(len(shape), connectivity)
    with open_chunked(source) as image:
        mask = image[sl] != 0
    local, objects = label_block(mask, [s.start for s in sl], shape, structure, idx)
    zarr.open_array(str(Path(stage) / "data"), mode="r+")[tuple(sl)] = local
    return objects


def _relabel_task(stage, idx, sl, lut):
    import zarr

    arr = zarr.open_array(str(Path(stage) / "data"), mode="r+")
    arr[tuple(sl)] = lut[np.asarray(arr[tuple(sl)])]
    return idx


def label_image_dask(
    client: Any,
    source: str | os.PathLike,
    output: str | os.PathLike,
    *,
    connectivity: int = 1,
    chunks: Sequence[int] | None = None,
):
    """Connected components of a mask file (non-zero = foreground) on a Dask cluster.

    One task per block labels it; the faces are joined in this process
    (:func:`segloc.classical.blocks.stitch`, reading two voxel layers per face); one task
    per block rewrites it with its final labels. Returns ``(StitchedLabels, path)``; the
    labels equal :func:`scipy.ndimage.label`'s, whatever order the tasks finished in.
    """
    from scipy import ndimage as ndi

    from segloc._validation import check_connectivity

    source = str(source)
    with open_chunked(source) as image:
        shape = image.shape
        chunks = tuple(chunks) if chunks is not None else image.chunks
    rank = check_connectivity(connectivity, len(shape))
    writer = ChunkedWriter(output, shape, np.int32, chunks)
    stage = str(writer.stage)
    blocks = block_slices(shape, writer.chunks)
    objects = client.gather(
        [client.submit(_label_task, source, stage, idx, sl, shape, rank, pure=False)
         for idx, sl in blocks]
    )  # fmt: skip
    structure = ndi.generate_binary_structure(len(shape), rank)
    stitched = stitch(
        objects, lambda s: np.asarray(writer.array[s]), shape, writer.chunks, structure
    )
    client.gather(
        [client.submit(_relabel_task, stage, idx, sl, stitched.luts[idx], pure=False)
         for idx, sl in blocks]
    )  # fmt: skip
    return stitched, writer.commit()


# --------------------------------------------------------------------------- command line


def predict_dask(
    cluster: str | Any,
    models: Sequence[str | os.PathLike],
    inputs: Sequence[str | os.PathLike],
    outdir: str | os.PathLike,
    *,
    options: dict[str, Any] | None = None,
    chunks: Sequence[int] | None = None,
) -> list[Path]:
    """What ``segloc predict --dask`` runs: Zarr stores (``.zarr``, ``.ome.zarr``) are
    predicted by blocks into ``outdir/<name>.zarr``, every other input one case per task.

    ``cluster`` is a ``distributed.Client`` or a :func:`connect` spec; a cluster started here
    is closed here.
    """
    from segloc.io.chunked import is_chunked_path

    if len(models) != 1:
        raise ValueError("--dask runs one model, not an ensemble")
    model = models[0]
    own = isinstance(cluster, str)
    client = connect(cluster) if own else cluster
    try:
        big = [Path(p) for p in inputs if is_chunked_path(p)]
        rest = [p for p in inputs if not is_chunked_path(p)]
        written: list[Path] = []
        for path in big:
            stem = path.name.split(".")[0]
            out, _ = predict_image_dask(
                client, model, path, Path(outdir) / f"{stem}.zarr", chunks=chunks, options=options
            )
            written.append(out)
        if rest:
            written += predict_folder_dask(client, model, rest, outdir, options=options)
        return written
    finally:
        if own:
            cluster_obj = getattr(client, "cluster", None)
            client.close()
            if cluster_obj is not None:
                cluster_obj.close()
