"""The HTTP API of ``segloc serve`` and the page that uses it.

The page (``static/``) talks to the server only through the routes below, all under
``/api``; FastAPI documents them at ``/openapi.json`` (and ``/api/reference``, a page that
needs no network). Points are array indices ``(row, col[, slice])``, as in segloc's Python
API; slices are 2D cuts of a volume ``(rows, cols, slices)`` along ``axis`` 0, 1 or 2, and
travel as raw little-endian bytes with their shape and dtype in the ``X-Shape`` and
``X-Dtype`` headers. Every computation is a call of a segloc library function on a worker
thread (:mod:`segloc.serve.jobs`); a request that fails gets one line in ``{"detail": ...}``
and a 4xx status when the client can fix it, and never stops the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import re
import shutil
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from segloc.classical import segment as classical_segment
from segloc.classical.threshold import threshold_multiotsu, threshold_otsu
from segloc.coco import box_to_coco, coco_dataset
from segloc.instances import mask_to_boxes
from segloc.io import write_mask
from segloc.metrics import overlap_scores, surface_scores
from segloc.serve.edits import hole_at, stroke_pixels
from segloc.serve.jobs import Busy, JobBoard, WorkPool
from segloc.serve.limits import Limits
from segloc.serve.models import ModelStore, UnknownModel, predict_labels
from segloc.serve.regions import region_table
from segloc.serve.sessions import (
    Session,
    SessionNotFound,
    SessionStore,
    SessionTooLarge,
    release_memory,
)
from segloc.serve.transport import SliceError, encode, take_slice
from segloc.serve.uploads import UploadError, load_image, load_mask, receive
from segloc.viz import comparison_panel

__all__ = ["create_app", "run"]

STATIC = Path(__file__).parent / "static"
_LOG = logging.getLogger("segloc.serve")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".nii", ".nii.gz", ".nrrd")
_DATA_SUFFIXES = (*_IMAGE_SUFFIXES, ".dcm", ".zip")
_UPLOAD_ROUTES = re.compile(r"^/api/sessions(/[^/]+/truth)?$")
_MASK_FORMATS = {"png": ".png", "tif": ".tif", "nii.gz": ".nii.gz", "nrrd": ".nrrd"}
_PHYSICAL = ("nifti", "nrrd", "dicom")  # formats whose spacing is in millimetres


# --------------------------------------------------------------------------- request bodies

Axis = Annotated[int, Query(ge=0, le=2, description="0, 1 or 2 (2D images: 2)")]
Index = Annotated[int, Query(ge=0, description="slice index along axis (2D images: 0)")]


class Seed(BaseModel):
    """A region-growing seed: array index and the label its region gets."""

    index: list[int] = Field(min_length=2, max_length=3, description="(row, col[, slice])")
    label: int = Field(1, ge=1, le=255, description="label of the grown region")


class SegmentRequest(BaseModel):
    """A classical method run on the whole image or volume; its result replaces the mask."""

    method: Literal["threshold", "otsu", "multiotsu", "kmeans", "region-grow"]
    value: float | None = Field(None, description="threshold: pixels above it are foreground")
    classes: int = Field(3, ge=2, le=5, description="multiotsu: number of classes")
    k: int = Field(2, ge=2, le=16, description="kmeans: number of clusters")
    seeds: list[Seed] = Field(default_factory=list, max_length=256)
    tolerance: float = Field(10.0, ge=0, description="region-grow: largest |value - seed value|")
    connectivity: int = Field(1, ge=1, le=26, description="1 = faces only, or 4/8, 6/18/26")


class StrokeRequest(BaseModel):
    """One brush or eraser stroke on one slice, all its points in one request."""

    axis: int = Field(2, ge=0, le=2)
    index: int = Field(0, ge=0)
    points: list[tuple[float, float]] = Field(min_length=1, max_length=10000)
    radius: float = Field(4.0, gt=0, le=500, description="half the brush size, in pixels")
    label: int = Field(1, ge=0, le=255, description="0 erases")


class FillRequest(BaseModel):
    """Fill the hole under a point of one slice."""

    axis: int = Field(2, ge=0, le=2)
    index: int = Field(0, ge=0)
    point: tuple[int, int] = Field(description="(row, col) in the slice")


class NameRequest(BaseModel):
    """A file of ``--data`` by its name in ``GET /api/data``."""

    name: str = Field(min_length=1, max_length=1000)


class PredictRequest(BaseModel):
    """A run of ``--runs`` by its name in ``GET /api/models``."""

    model: str = Field(min_length=1, max_length=1000)


# --------------------------------------------------------------------------- helpers


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _clean_name(name: str) -> str:
    """A display name: the last path part, unusual characters replaced. Never a path."""
    base = re.split(r"[\\/]", name)[-1]
    return re.sub(r"[^\w.\- ]", "_", base)[:120] or "upload"


def _stem(name: str) -> str:
    for suffix in (".nii.gz", *_DATA_SUFFIXES):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)] or "image"
    return name or "image"


def _spacing(session: Session) -> tuple[float, ...]:
    spacing = tuple(float(s) for s in session.meta.spacing[: session.ndim])
    return spacing + (1.0,) * (session.ndim - len(spacing))


def _unit(session: Session) -> str:
    return "mm" if session.meta.format in _PHYSICAL else "px"


def _mask_info(session: Session) -> dict:
    counts = np.bincount(session.mask.ravel(), minlength=1)
    return {
        "version": session.version,
        "labels": {str(i): int(n) for i, n in enumerate(counts) if i and n},
        "undo": len(session.undo),
        "redo": len(session.redo),
    }


def _stats(grey: np.ndarray) -> dict:
    """Range and display percentiles of the image (on at most ~1M voxels for speed)."""
    flat = grey.ravel()
    step = max(1, flat.size // 1_000_000)
    sample = flat[::step].astype(np.float64)
    finite = sample[np.isfinite(sample)]
    if finite.size == 0:
        raise ValueError("image holds no finite values")
    low, high = np.percentile(finite, [0.5, 99.5])
    return {
        "min": float(np.nanmin(grey)),
        "max": float(np.nanmax(grey)),
        "low": float(low),
        "high": float(high),
    }


def _info(session: Session) -> dict:
    colour = session.image.ndim == session.grey.ndim + 1
    return {
        "id": session.id,
        "name": session.name,
        "format": session.meta.format,
        "ndim": session.ndim,
        "shape": list(session.grey.shape),
        "colour": colour,
        "dtype": str(session.image.dtype),
        "spacing": list(_spacing(session)),
        "unit": _unit(session),
        **session.stats,
        "truth": session.truth is not None,
        "mask": _mask_info(session),
    }


def _raw(plane: np.ndarray, **headers: str) -> Response:
    body, dtype, shape = encode(plane)
    head = {"X-Dtype": dtype, "X-Shape": ",".join(map(str, shape)), "Cache-Control": "no-store"}
    head.update({f"X-{k.replace('_', '-').title()}": v for k, v in headers.items()})
    return Response(body, media_type="application/octet-stream", headers=head)


def _finite(value: float) -> float | str | None:
    """JSON for a score: NaN (class absent from both) -> null, inf (absent from one) -> "inf"."""
    if np.isnan(value):
        return None
    if np.isinf(value):
        return "inf"
    return float(value)


def _scores(session: Session) -> dict:
    """Dice, IoU and HD95 per class of the mask against the ground truth (segloc.metrics)."""
    pred, truth = session.mask, session.truth
    assert truth is not None
    classes = max(int(pred.max()), int(truth.max())) + 1
    classes = max(classes, 2)
    overlap = overlap_scores(pred, truth, num_classes=classes)
    surface = surface_scores(pred, truth, num_classes=classes, spacing=_spacing(session))
    present = set(np.unique(pred).tolist()) | set(np.unique(truth).tolist())
    rows = [
        {
            "class": c,
            "dice": _finite(overlap["dice"][c - 1]),
            "iou": _finite(overlap["iou"][c - 1]),
            "hd95": _finite(surface["hd95"][c - 1]),
        }
        for c in range(1, classes)
        if c in present
    ]
    dice = [r["dice"] for r in rows if isinstance(r["dice"], float)]
    return {
        "version": session.version,
        "unit": _unit(session),
        "classes": rows,
        "mean_dice": float(np.mean(dice)) if dice else None,
    }


def _regions(session: Session) -> tuple[np.ndarray, dict]:
    """The region table of the current mask, cached until the mask changes."""
    with session.lock:
        version, mask = session.version, session.mask
        cached = session.cache.get("regions")
        if cached is not None and session.cache.get("regions_version") == version:
            return session.cache["instances"], cached  # type: ignore[return-value]
    instances, rows, total = region_table(mask, session.grey, _spacing(session))
    instances = instances.astype(np.uint16) if instances.max(initial=0) < 65536 else instances
    unit = _unit(session)
    table = {
        "version": version,
        "size_unit": f"{unit}{'²' if session.ndim == 2 else '³'}",
        "total": total,
        "regions": rows,
    }
    with session.lock:
        if session.version == version:
            session.cache.update(instances=instances, regions=table, regions_version=version)
    return instances, table


def _data_listing(root: Path | None, limit: int) -> dict[str, Path]:
    """Files under ``--data`` a session can open, by relative name (hidden folders skipped)."""
    if root is None or not root.is_dir():
        return {}
    found: dict[str, Path] = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            if f.startswith(".") or not f.lower().endswith(_DATA_SUFFIXES):
                continue
            path = Path(folder) / f
            found[path.relative_to(root).as_posix()] = path
            if len(found) >= limit:
                return found
    return found


# --------------------------------------------------------------------------- body limit


class _BodyLimit:
    """Refuse request bodies over the limit (413) before they are read whole.

    Uploads may reach ``Limits.max_upload_bytes``, other requests ``Limits.max_json_bytes``.
    A stated Content-Length over the limit is refused at once; a body sent in chunks is
    counted as it arrives.
    """

    def __init__(self, app: Any, limits: Limits) -> None:
        self.app, self.limits = app, limits

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        upload = scope["method"] == "POST" and _UPLOAD_ROUTES.match(scope["path"])
        limit = self.limits.max_upload_bytes if upload else self.limits.max_json_bytes
        message = f"request body is over the limit of {limit / (1 << 20):g} MiB"
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            response = JSONResponse({"detail": message}, status_code=413)
            await response(scope, receive, send)
            return
        seen = 0

        async def limited() -> dict:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    raise HTTPException(413, message)
            return msg

        await self.app(scope, limited, send)


# --------------------------------------------------------------------------- the app


def create_app(
    *,
    data: str | os.PathLike | None = None,
    runs: str | os.PathLike | None = None,
    limits: Limits | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> FastAPI:
    """Build the ``segloc serve`` application.

    Parameters
    ----------
    data : path-like, optional
        Folder whose images and volumes the page lists and opens (``GET /api/data``).
    runs : path-like, optional
        Folder of trained runs the page can predict with (``GET /api/models``).
    limits : Limits, optional
        Upload, memory, session and work bounds; default :class:`Limits()`.
    clock : callable
        Monotonic seconds, for session expiry (tests pass a fake clock).

    Returns
    -------
    FastAPI
        With ``app.state.store`` (sessions), ``app.state.pool`` (workers),
        ``app.state.models`` and ``app.state.jobs``.
    """
    limits = limits or Limits()
    data_root = None if data is None else Path(data).resolve()
    store = SessionStore(limits, clock=clock)
    pool = WorkPool(limits.workers, limits.max_queue)
    models = ModelStore(None if runs is None else Path(runs))
    jobs = JobBoard()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # compile the region-growing kernels now, not on the first click
        warm = pool.submit(
            classical_segment, np.zeros((4, 4), np.uint8), "region-grow", seeds=[(0, 0)],
            tolerance=1.0,
        )  # fmt: skip
        reaper = asyncio.create_task(_reap())
        try:
            yield
        finally:
            reaper.cancel()
            warm.cancel()
            pool.shutdown()
            store.close()

    async def _reap() -> None:
        while True:
            await asyncio.sleep(min(30.0, limits.session_ttl / 2))
            store.expire()

    app = FastAPI(
        title="segloc serve",
        version="1",
        summary="Segment, correct, localize and score images and volumes in the browser.",
        description=__doc__,
        lifespan=lifespan,
    )
    app.state.store, app.state.pool, app.state.models, app.state.jobs = store, pool, models, jobs
    app.state.limits = limits
    app.add_middleware(_BodyLimit, limits=limits)

    # ---- errors: one line each, 4xx for what the client can fix

    def _error(status: int, exc: BaseException | str) -> JSONResponse:
        text = exc if isinstance(exc, str) else _one_line(exc)
        return JSONResponse({"detail": text}, status_code=status)

    @app.exception_handler(SessionNotFound)
    async def _not_found(request: Request, exc: SessionNotFound) -> JSONResponse:
        return _error(404, exc)

    @app.exception_handler(UnknownModel)
    async def _no_model(request: Request, exc: UnknownModel) -> JSONResponse:
        return _error(404, exc)

    @app.exception_handler(UploadError)
    async def _upload(request: Request, exc: UploadError) -> JSONResponse:
        return _error(exc.status, exc)

    @app.exception_handler(SessionTooLarge)
    async def _too_large(request: Request, exc: SessionTooLarge) -> JSONResponse:
        return _error(413, exc)

    @app.exception_handler(Busy)
    async def _busy(request: Request, exc: Busy) -> JSONResponse:
        return JSONResponse(
            {"detail": _one_line(exc)}, status_code=503, headers={"Retry-After": "1"}
        )

    @app.exception_handler(ValueError)
    async def _bad_value(request: Request, exc: ValueError) -> JSONResponse:
        return _error(400, exc)  # segloc's functions name the parameter and the problem

    @app.exception_handler(TypeError)
    async def _bad_type(request: Request, exc: TypeError) -> JSONResponse:
        return _error(400, exc)

    @app.exception_handler(MemoryError)
    async def _memory(request: Request, exc: MemoryError) -> JSONResponse:
        return _error(507, "not enough memory for this request")

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        err = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        return _error(422, f"{where}: {err.get('msg')}" if where else str(err.get("msg")))

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        # the server's log gets the traceback (uvicorn prints it); the client one line
        return _error(500, f"internal error ({type(exc).__name__}: {_one_line(exc)})")

    # ---- the page

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/api/reference", include_in_schema=False)
    async def reference() -> FileResponse:
        return FileResponse(STATIC / "reference.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # ---- server

    @app.get("/api/health", summary="Liveness, sessions held and work in line", tags=["server"])
    async def health() -> dict:
        return {
            "status": "ok",
            "sessions": len(store),
            "session_bytes": store.total_bytes,
            "pending": pool.pending,
        }

    @app.get("/api/data", summary="Images and volumes of --data", tags=["server"])
    async def data_files() -> dict:
        listing = await asyncio.to_thread(_data_listing, data_root, limits.max_data_files)
        files = [{"name": n, "bytes": p.stat().st_size} for n, p in listing.items()]
        return {"files": files, "truncated": len(files) >= limits.max_data_files}

    @app.get("/api/models", summary="Trained runs of --runs", tags=["server"])
    async def model_list() -> dict:
        return {"models": await pool.run(models.list)}

    # ---- sessions

    async def _open(folder: Path, sid: str, source: Path, name: str, move: bool) -> dict:
        try:
            image, grey, meta = await pool.run(
                load_image, source, folder, limits, name=name, move=move
            )
            session = Session(sid, name, folder, image, grey, meta, clock=clock)
            session.stats = await pool.run(_stats, grey)
            store.add(session)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return _info(session)

    upload_body = {
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    }

    @app.post(
        "/api/sessions",
        status_code=201,
        summary="Open an uploaded image or volume (raw bytes in the body)",
        description="PNG, JPEG, BMP, TIFF, NIfTI (.nii/.nii.gz), NRRD, DICOM or a zipped DICOM "
        "series; the format is told from the bytes, ``name`` is only shown.",
        openapi_extra=upload_body,
        tags=["sessions"],
    )
    async def upload(
        request: Request, name: Annotated[str, Query(max_length=300)] = "upload"
    ) -> dict:
        sid, folder = store.new_id()
        try:
            await receive(request.stream(), folder / "upload", limits.max_upload_bytes)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return await _open(folder, sid, folder / "upload", _clean_name(name), move=True)

    @app.post(
        "/api/sessions/open",
        status_code=201,
        summary="Open a file of --data by its listed name",
        tags=["sessions"],
    )
    async def open_data(body: NameRequest) -> dict:
        listing = await asyncio.to_thread(_data_listing, data_root, limits.max_data_files)
        if body.name not in listing:  # looked up, never joined to a path
            raise HTTPException(404, f"no file {body.name!r} in the data folder")
        sid, folder = store.new_id()
        return await _open(folder, sid, listing[body.name], _clean_name(body.name), move=False)

    @app.get("/api/sessions/{sid}", summary="What a session holds", tags=["sessions"])
    async def session_info(sid: str) -> dict:
        return _info(store.get(sid))

    @app.delete(
        "/api/sessions/{sid}", status_code=204, summary="Close a session", tags=["sessions"]
    )
    async def close_session(sid: str) -> Response:
        if not store.remove(sid):
            raise SessionNotFound(sid)
        return Response(status_code=204)

    # ---- slices

    raw_response = {
        200: {
            "content": {"application/octet-stream": {}},
            "description": "raw little-endian pixels; X-Shape rows,cols[,3], X-Dtype",
        }
    }

    def _slice(array: np.ndarray, session: Session, axis: int, index: int) -> np.ndarray:
        try:
            return take_slice(array, axis, index, ndim=session.ndim)
        except SliceError as exc:
            raise HTTPException(400, _one_line(exc)) from None

    @app.get(
        "/api/sessions/{sid}/slice",
        summary="One slice of the image, raw",
        responses=raw_response,
        response_class=Response,
        tags=["slices"],
    )
    async def image_slice(sid: str, axis: Axis = 2, index: Index = 0) -> Response:
        session = store.get(sid)
        return _raw(_slice(session.image, session, axis, index))

    @app.get(
        "/api/sessions/{sid}/mask/slice",
        summary="One slice of the mask (uint8 labels), raw",
        responses=raw_response,
        response_class=Response,
        tags=["slices"],
    )
    async def mask_slice(sid: str, axis: Axis = 2, index: Index = 0) -> Response:
        session = store.get(sid)
        mask, version = session.mask, session.version  # one consistent pair
        return _raw(_slice(mask, session, axis, index), mask_version=str(version))

    @app.get(
        "/api/sessions/{sid}/thresholds",
        summary="Otsu's and multi-Otsu's thresholds of the whole image",
        tags=["segment"],
    )
    async def thresholds(sid: str, classes: Annotated[int, Query(ge=2, le=5)] = 3) -> dict:
        session = store.get(sid)
        otsu = await pool.run(threshold_otsu, session.grey)
        multi = await pool.run(threshold_multiotsu, session.grey, classes=classes)
        return {"otsu": float(otsu), "multiotsu": [float(t) for t in multi]}

    # ---- segmentation and corrections

    def _run_segment(session: Session, body: SegmentRequest) -> dict:
        kwargs: dict[str, Any] = {}
        method = {"threshold": "fixed"}.get(body.method, body.method)
        if body.method == "threshold":
            if body.value is None:
                raise ValueError("method 'threshold' needs a value")
            kwargs["value"] = body.value
        elif body.method == "multiotsu":
            kwargs["classes"] = body.classes
        elif body.method == "kmeans":
            kwargs["k"] = body.k
        elif body.method == "region-grow":
            if not body.seeds:
                raise ValueError("method 'region-grow' needs at least one seed")
            for i, s in enumerate(body.seeds):
                if len(s.index) != session.ndim:
                    raise ValueError(
                        f"seeds[{i}].index must have {session.ndim} values "
                        f"(row, col{', slice' if session.ndim == 3 else ''}), got {s.index}"
                    )
            kwargs.update(
                seeds=[tuple(s.index) for s in body.seeds],
                tolerance=body.tolerance,
                connectivity=body.connectivity,
            )
        result = classical_segment(session.grey, method, **kwargs)
        if body.method == "region-grow":
            # region i + 1 is seed i's: give it the label the seed asked for
            lut = np.array([0] + [s.label for s in body.seeds], np.uint8)
            labels = lut[result]
        else:
            if result.max(initial=0) > 255:
                raise ValueError(f"at most 255 labels are shown, got {int(result.max())}")
            labels = result.astype(np.uint8)
        with session.lock:
            session.set_mask(labels)
        store.account(session)
        return _mask_info(session)

    @app.post(
        "/api/sessions/{sid}/segment",
        summary="Segment the whole image with a classical method (replaces the mask)",
        description="threshold (``value``), otsu, multiotsu (``classes``), kmeans (``k``; "
        "cluster 0, the darkest, is background) or region-grow (``seeds``, ``tolerance``; "
        "a 3D seed grows in 3D). Undoable.",
        tags=["segment"],
    )
    async def segment(sid: str, body: SegmentRequest) -> dict:
        session = store.get(sid)
        return await pool.run(_run_segment, session, body)

    def _plane(session: Session, axis: int, index: int) -> tuple:
        """Index of a slice as a view (np.take would copy), checked against the shape."""
        _slice(session.mask, session, axis, index)
        where: list = [slice(None)] * session.ndim
        if session.ndim == 3:
            where[axis] = index
        return tuple(where)

    def _run_stroke(session: Session, body: StrokeRequest) -> dict:
        with session.lock:
            where = _plane(session, body.axis, body.index)
            new = session.mask.copy()
            plane = new[where]  # a view: painting it paints ``new``
            plane[stroke_pixels(plane.shape, body.points, body.radius)] = body.label
            box = tuple(slice(w, w + 1) if isinstance(w, int) else w for w in where)
            session.set_mask(new, where=box)
        store.account(session)
        return _mask_info(session)

    @app.post(
        "/api/sessions/{sid}/strokes",
        summary="Paint (label >= 1) or erase (label 0) a brush stroke on one slice",
        tags=["correct"],
    )
    async def stroke(sid: str, body: StrokeRequest) -> dict:
        session = store.get(sid)
        return await pool.run(_run_stroke, session, body)

    def _run_fill(session: Session, body: FillRequest) -> dict:
        with session.lock:
            where = _plane(session, body.axis, body.index)
            new = session.mask.copy()
            plane = new[where]
            r, c = body.point
            if not (0 <= r < plane.shape[0] and 0 <= c < plane.shape[1]):
                raise ValueError(f"point ({r}, {c}) is outside the slice of shape {plane.shape}")
            hole, label = hole_at(plane, (r, c))
            plane[hole] = label
            box = tuple(slice(w, w + 1) if isinstance(w, int) else w for w in where)
            session.set_mask(new, where=box)
        store.account(session)
        return _mask_info(session)

    @app.post(
        "/api/sessions/{sid}/fill",
        summary="Fill the hole under a point with the label that encloses it",
        tags=["correct"],
    )
    async def fill(sid: str, body: FillRequest) -> dict:
        session = store.get(sid)
        return await pool.run(_run_fill, session, body)

    @app.post(
        "/api/sessions/{sid}/undo", summary="Undo the last change of the mask", tags=["correct"]
    )
    async def undo(sid: str) -> dict:
        session = store.get(sid)
        if not await pool.run(session.step_back):
            raise HTTPException(409, "nothing to undo")
        return _mask_info(session)

    @app.post("/api/sessions/{sid}/redo", summary="Redo the last undone change", tags=["correct"])
    async def redo(sid: str) -> dict:
        session = store.get(sid)
        if not await pool.run(session.step_forward):
            raise HTTPException(409, "nothing to redo")
        return _mask_info(session)

    @app.post("/api/sessions/{sid}/clear", summary="Clear the mask (undoable)", tags=["correct"])
    async def clear(sid: str) -> dict:
        session = store.get(sid)

        def work() -> dict:
            with session.lock:
                session.set_mask(np.zeros_like(session.mask))
            store.account(session)
            return _mask_info(session)

        return await pool.run(work)

    # ---- model prediction

    @app.post(
        "/api/sessions/{sid}/predict",
        status_code=202,
        summary="Start a prediction with a trained run (replaces the mask when done)",
        description="Sliding-window inference on the server; poll ``GET /api/jobs/{job}``.",
        tags=["segment"],
    )
    async def predict(sid: str, body: PredictRequest) -> dict:
        session = store.get(sid)
        desc = await pool.run(models.describe, body.model)
        if desc.get("dims") not in (None, session.ndim):
            raise HTTPException(
                400, f"model {body.model!r} is {desc['dims']}D, the image is {session.ndim}D"
            )
        job = jobs.new(session.id)

        def work() -> None:
            job.state = "running"
            try:
                predictor = models.predictor(body.model)
                labels = predict_labels(
                    predictor,
                    session.image,
                    _spacing(session),
                    progress=lambda f: setattr(job, "progress", f),
                )
                with session.lock:
                    session.set_mask(labels)
                store.account(session)
                job.result = _mask_info(session)
                job.progress, job.state = 1.0, "done"
            except Exception as exc:  # reported through the job, not raised into the pool
                _LOG.info("prediction %s failed: %s", job.id, exc)
                job.error, job.state = _one_line(exc), "error"
            finally:
                job.finished = time.monotonic()
                release_memory()  # a prediction's buffers are large; hand them back

        try:
            pool.submit(work)
        except Busy:
            job.state, job.error, job.finished = "error", "server busy", time.monotonic()
            raise
        return _job_info(job)

    def _job_info(job: Any) -> dict:
        return {
            "id": job.id,
            "session": job.session,
            "state": job.state,
            "progress": round(job.progress, 4),
            "error": job.error,
            "mask": job.result,
        }

    @app.get("/api/jobs/{jid}", summary="State and progress of a prediction", tags=["segment"])
    async def job_state(jid: str) -> dict:
        job = jobs.get(jid)
        if job is None:
            raise HTTPException(404, "unknown or finished-and-forgotten job")
        return _job_info(job)

    # ---- objects

    @app.get(
        "/api/sessions/{sid}/regions",
        summary="Connected objects of the mask: size, box, mean intensity",
        description="Rows largest first (at most 2000); boxes are segloc's half-open "
        "[x0, y0, x1, y1] / [x0, y0, z0, x1, y1, z1], x = column, y = row, z = slice.",
        tags=["objects"],
    )
    async def regions(sid: str) -> dict:
        session = store.get(sid)
        _, table = await pool.run(_regions, session)
        store.account(session)
        return table

    @app.get(
        "/api/sessions/{sid}/regions/{rid}/slice",
        summary="One object on one slice (uint8 0/1), raw",
        responses=raw_response,
        response_class=Response,
        tags=["objects"],
    )
    async def region_slice(sid: str, rid: int, axis: Axis = 2, index: Index = 0) -> Response:
        session = store.get(sid)
        instances, table = await pool.run(_regions, session)
        if rid < 1 or rid > table["total"]:
            raise HTTPException(404, f"no object {rid} (the mask has {table['total']})")
        plane = _slice(instances, session, axis, index)
        return _raw((plane == rid).view(np.uint8), mask_version=str(table["version"]))

    # ---- scores

    async def _set_truth(session: Session, truth: np.ndarray) -> dict:
        if truth.shape != session.mask.shape:
            raise HTTPException(
                400,
                f"truth has shape {list(truth.shape)}, the image {list(session.mask.shape)}",
            )
        if truth.dtype != np.bool_ and truth.max(initial=0) > 255:
            raise HTTPException(400, f"truth labels must be <= 255, got {int(truth.max())}")
        session.truth = truth.astype(np.uint8)
        store.account(session)
        return await pool.run(_scores, session)

    @app.post(
        "/api/sessions/{sid}/truth",
        summary="Upload a ground-truth mask (raw bytes) and score the mask against it",
        openapi_extra=upload_body,
        tags=["score"],
    )
    async def upload_truth(sid: str, request: Request) -> dict:
        session = store.get(sid)
        path = session.folder / "truth-upload"
        try:
            await receive(request.stream(), path, limits.max_upload_bytes)
            truth = await pool.run(load_mask, path, session.folder, limits, name="truth")
        finally:
            path.unlink(missing_ok=True)
        return await _set_truth(session, truth)

    @app.post(
        "/api/sessions/{sid}/truth/open",
        summary="Use a file of --data as the ground truth and score the mask against it",
        tags=["score"],
    )
    async def open_truth(sid: str, body: NameRequest) -> dict:
        session = store.get(sid)
        listing = await asyncio.to_thread(_data_listing, data_root, limits.max_data_files)
        if body.name not in listing:
            raise HTTPException(404, f"no file {body.name!r} in the data folder")
        truth = await pool.run(
            load_mask, listing[body.name], session.folder, limits, name="truth", move=False
        )
        return await _set_truth(session, truth)

    @app.get(
        "/api/sessions/{sid}/scores",
        summary="Dice, IoU and HD95 per class of the current mask against the truth",
        tags=["score"],
    )
    async def scores(sid: str) -> dict:
        session = store.get(sid)
        if session.truth is None:
            raise HTTPException(409, "no ground truth yet; upload one first")
        return await pool.run(_scores, session)

    @app.get(
        "/api/sessions/{sid}/panel",
        summary="PNG panel image | truth | prediction titled with the Dice",
        responses={200: {"content": {"image/png": {}}}},
        response_class=Response,
        tags=["score"],
    )
    async def panel(sid: str, axis: Axis = 2) -> Response:
        session = store.get(sid)
        if session.truth is None:
            raise HTTPException(409, "no ground truth yet; upload one first")

        def work() -> bytes:
            summary = _scores(session)
            path = session.folder / f"panel-{time.monotonic_ns()}.png"
            try:
                comparison_panel(
                    session.image,
                    session.truth,
                    session.mask,
                    path,
                    dice=summary["mean_dice"],
                    title=session.name,
                    axis=axis,
                )
                return path.read_bytes()
            finally:
                path.unlink(missing_ok=True)

        body = await pool.run(work)
        return _download(body, "image/png", f"{_stem(session.name)}_panel.png")

    # ---- downloads

    def _download(body: bytes, media: str, filename: str) -> Response:
        safe = re.sub(r"[^\w.\-]", "_", filename)
        return Response(
            body,
            media_type=media,
            headers={"Content-Disposition": f'attachment; filename="{safe}"'},
        )

    @app.get(
        "/api/sessions/{sid}/download/mask",
        summary="The mask as a file (NIfTI/NRRD keep the input's affine)",
        description="A mask whose labels are 0/1 is written as a binary mask (0/255 in PNG and "
        "TIFF, 0/1 in NIfTI and NRRD); more labels as a label map.",
        responses={200: {"content": {"application/octet-stream": {}}}},
        response_class=Response,
        tags=["download"],
    )
    async def download_mask(
        sid: str, format: Literal["png", "tif", "nii.gz", "nrrd"] | None = None
    ) -> Response:
        session = store.get(sid)
        if format is None:
            format = {"nrrd": "nrrd", "tiff": "tif"}.get(
                session.meta.format, "nii.gz" if session.ndim == 3 else "png"
            )
        if format == "png" and session.ndim == 3:
            raise HTTPException(400, "PNG holds 2D masks; choose nii.gz, nrrd or tif for a volume")
        suffix = _MASK_FORMATS[format]

        def work() -> bytes:
            mask = session.mask
            out = mask.astype(bool) if mask.max(initial=0) <= 1 else mask
            path = session.folder / f"mask-{time.monotonic_ns()}{suffix}"
            try:
                write_mask(path, out, meta=session.meta)  # atomic; keeps the affine
                return path.read_bytes()
            finally:
                path.unlink(missing_ok=True)

        body = await pool.run(work)
        return _download(body, "application/octet-stream", f"{_stem(session.name)}_mask{suffix}")

    @app.get(
        "/api/sessions/{sid}/download/boxes",
        summary="Boxes of the mask's connected objects (COCO JSON for 2D images)",
        description="2D: a COCO dataset dict (one image, one category per label, bbox "
        "[x, y, w, h], area = pixel count). 3D: segloc's box document, boxes "
        "[x0, y0, z0, x1, y1, z1] half-open, as ``segloc boxes`` writes.",
        tags=["download"],
    )
    async def download_boxes(sid: str) -> Response:
        session = store.get(sid)

        def work() -> dict:
            objects = mask_to_boxes(session.mask)
            if session.ndim == 3:
                return {
                    "image": session.name,
                    "shape": list(session.mask.shape),
                    "box_format": "xyzxyz",
                    "convention": "half-open pixel edges; x = column, y = row, z = slice",
                    "objects": objects,
                }
            rows, cols = session.mask.shape
            classes = sorted({o["class"] for o in objects})
            return coco_dataset(
                images=[{"id": 1, "height": rows, "width": cols, "file_name": session.name}],
                annotations=[
                    {
                        "image_id": 1,
                        "category_id": o["class"],
                        "bbox": box_to_coco(o["box"]),
                        "area": float(o["area"]),
                    }
                    for o in objects
                ],
                categories=[{"id": c, "name": f"label {c}"} for c in classes],
            )

        doc = await pool.run(work)
        return _download(
            json.dumps(doc).encode(), "application/json", f"{_stem(session.name)}_boxes.json"
        )

    return app


# --------------------------------------------------------------------------- running


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (127.0.0.0/8, ::1, localhost).

    >>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("0.0.0.0")
    (True, True, False)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(
    host: str = "127.0.0.1",
    port: int = 8000,
    data: str | os.PathLike | None = None,
    runs: str | os.PathLike | None = None,
    allow_remote: bool = False,
    limits: Limits | None = None,
    *,
    log_level: str = "warning",
) -> None:
    """Serve the app with uvicorn until interrupted.

    Raises
    ------
    ValueError
        A host other than loopback without ``allow_remote``, or a missing folder.
    """
    import uvicorn

    if not is_loopback(host):
        if not allow_remote:
            raise ValueError(
                f"--host {host} would serve other machines; add --allow-remote to do so"
            )
        print(
            f"segloc serve: warning: listening on {host}: anyone who can reach this port can "
            "open and read files of --data and run models; there is no authentication",
            file=sys.stderr,
        )
    for flag, folder in (("--data", data), ("--runs", runs)):
        if folder is not None and not Path(folder).is_dir():
            raise ValueError(f"{flag} {folder}: no such folder")
    app = create_app(data=data, runs=runs, limits=limits)
    print(f"segloc serve: http://{host}:{port}/  (Ctrl+C stops)", file=sys.stderr)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
