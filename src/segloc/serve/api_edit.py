"""Routes that change the mask: classical segmentation, hand corrections, model predictions.

Each change is one undoable step of the session (:meth:`Session.set_mask`) computed on a
worker thread; the answer is the mask's new state (:func:`segloc.serve.views.mask_info`).
A prediction is a job: the request returns at once and the page polls ``/api/jobs/{job}``.
"""

from __future__ import annotations

import logging
import time
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, HTTPException, Query

from segloc.classical import segment as classical_segment
from segloc.classical.threshold import threshold_multiotsu, threshold_otsu
from segloc.engine.heap import release_memory
from segloc.serve import views
from segloc.serve.context import Context, ServeContext
from segloc.serve.edits import hole_at, stroke_pixels
from segloc.serve.errors import one_line
from segloc.serve.jobs import Busy, Job
from segloc.serve.models import predict_labels
from segloc.serve.schemas import FillRequest, PredictRequest, SegmentRequest, StrokeRequest
from segloc.serve.sessions import Session

__all__ = ["router"]

router = APIRouter()
_LOG = logging.getLogger("segloc.serve")


# --------------------------------------------------------------------------- segmentation


@router.get(
    "/api/sessions/{sid}/thresholds",
    summary="Otsu's and multi-Otsu's thresholds of the whole image",
    tags=["segment"],
)
async def thresholds(
    ctx: Context, sid: str, classes: Annotated[int, Query(ge=2, le=5)] = 3
) -> dict:
    session = ctx.store.get(sid)
    otsu = await ctx.pool.run(threshold_otsu, session.grey)
    multi = await ctx.pool.run(threshold_multiotsu, session.grey, classes=classes)
    return {"otsu": float(otsu), "multiotsu": [float(t) for t in multi]}


def _segment_options(session: Session, body: SegmentRequest) -> dict[str, Any]:
    """The keyword arguments of :func:`segloc.classical.segment` for ``body``'s method."""
    kwargs: dict[str, Any] = {}
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
    return kwargs


def _run_segment(ctx: ServeContext, session: Session, body: SegmentRequest) -> dict:
    method = {"threshold": "fixed"}.get(body.method, body.method)
    result = classical_segment(session.grey, method, **_segment_options(session, body))
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
    ctx.store.account(session)
    return views.mask_info(session)


@router.post(
    "/api/sessions/{sid}/segment",
    summary="Segment the whole image with a classical method (replaces the mask)",
    description="threshold (``value``), otsu, multiotsu (``classes``), kmeans (``k``; "
    "cluster 0, the darkest, is background) or region-grow (``seeds``, ``tolerance``; "
    "a 3D seed grows in 3D). Undoable.",
    tags=["segment"],
)
async def segment(ctx: Context, sid: str, body: SegmentRequest) -> dict:
    session = ctx.store.get(sid)
    return await ctx.pool.run(_run_segment, ctx, session, body)


# --------------------------------------------------------------------------- corrections


def _plane(session: Session, axis: int, index: int) -> tuple:
    """Index of a slice as a view (np.take would copy), checked against the shape."""
    views.slice_of(session.mask, session, axis, index)
    where: list = [slice(None)] * session.ndim
    if session.ndim == 3:
        where[axis] = index
    return tuple(where)


def _box(where: tuple) -> tuple[slice, ...]:
    """The slice index ``where`` as a box of the volume (an int axis becomes a width of 1)."""
    return tuple(slice(w, w + 1) if isinstance(w, int) else w for w in where)


def _run_stroke(ctx: ServeContext, session: Session, body: StrokeRequest) -> dict:
    with session.lock:
        where = _plane(session, body.axis, body.index)
        new = session.mask.copy()
        plane = new[where]  # a view: painting it paints ``new``
        plane[stroke_pixels(plane.shape, body.points, body.radius)] = body.label
        session.set_mask(new, where=_box(where))
    ctx.store.account(session)
    return views.mask_info(session)


@router.post(
    "/api/sessions/{sid}/strokes",
    summary="Paint (label >= 1) or erase (label 0) a brush stroke on one slice",
    tags=["correct"],
)
async def stroke(ctx: Context, sid: str, body: StrokeRequest) -> dict:
    session = ctx.store.get(sid)
    return await ctx.pool.run(_run_stroke, ctx, session, body)


def _run_fill(ctx: ServeContext, session: Session, body: FillRequest) -> dict:
    with session.lock:
        where = _plane(session, body.axis, body.index)
        new = session.mask.copy()
        plane = new[where]
        r, c = body.point
        if not (0 <= r < plane.shape[0] and 0 <= c < plane.shape[1]):
            raise ValueError(f"point ({r}, {c}) is outside the slice of shape {plane.shape}")
        hole, label = hole_at(plane, (r, c))
        plane[hole] = label
        session.set_mask(new, where=_box(where))
    ctx.store.account(session)
    return views.mask_info(session)


@router.post(
    "/api/sessions/{sid}/fill",
    summary="Fill the hole under a point with the label that encloses it",
    tags=["correct"],
)
async def fill(ctx: Context, sid: str, body: FillRequest) -> dict:
    session = ctx.store.get(sid)
    return await ctx.pool.run(_run_fill, ctx, session, body)


@router.post(
    "/api/sessions/{sid}/undo", summary="Undo the last change of the mask", tags=["correct"]
)
async def undo(ctx: Context, sid: str) -> dict:
    session = ctx.store.get(sid)
    if not await ctx.pool.run(session.step_back):
        raise HTTPException(409, "nothing to undo")
    return views.mask_info(session)


@router.post("/api/sessions/{sid}/redo", summary="Redo the last undone change", tags=["correct"])
async def redo(ctx: Context, sid: str) -> dict:
    session = ctx.store.get(sid)
    if not await ctx.pool.run(session.step_forward):
        raise HTTPException(409, "nothing to redo")
    return views.mask_info(session)


def _run_clear(ctx: ServeContext, session: Session) -> dict:
    with session.lock:
        session.set_mask(np.zeros_like(session.mask))
    ctx.store.account(session)
    return views.mask_info(session)


@router.post("/api/sessions/{sid}/clear", summary="Clear the mask (undoable)", tags=["correct"])
async def clear(ctx: Context, sid: str) -> dict:
    session = ctx.store.get(sid)
    return await ctx.pool.run(_run_clear, ctx, session)


# --------------------------------------------------------------------------- predictions


def _run_prediction(ctx: ServeContext, job: Job, session: Session, model: str) -> None:
    """A prediction job's work: its outcome goes into ``job``, never raised into the pool."""
    job.state = "running"
    try:
        predictor = ctx.models.predictor(model)
        labels = predict_labels(
            predictor,
            session.image,
            views.spacing(session),
            progress=lambda f: setattr(job, "progress", f),
        )
        with session.lock:
            session.set_mask(labels)
        ctx.store.account(session)
        job.result = views.mask_info(session)
        job.progress, job.state = 1.0, "done"
    except Exception as exc:  # reported through the job, not raised into the pool
        _LOG.info("prediction %s failed: %s", job.id, exc)
        job.error, job.state = one_line(exc), "error"
    finally:
        job.finished = time.monotonic()
        release_memory()  # a prediction's buffers are large; hand them back


def _job_info(job: Job) -> dict:
    return {
        "id": job.id,
        "session": job.session,
        "state": job.state,
        "progress": round(job.progress, 4),
        "error": job.error,
        "mask": job.result,
    }


@router.post(
    "/api/sessions/{sid}/predict",
    status_code=202,
    summary="Start a prediction with a trained run (replaces the mask when done)",
    description="Sliding-window inference on the server; poll ``GET /api/jobs/{job}``.",
    tags=["segment"],
)
async def predict(ctx: Context, sid: str, body: PredictRequest) -> dict:
    session = ctx.store.get(sid)
    desc = await ctx.pool.run(ctx.models.describe, body.model)
    if desc.get("dims") not in (None, session.ndim):
        raise HTTPException(
            400, f"model {body.model!r} is {desc['dims']}D, the image is {session.ndim}D"
        )
    job = ctx.jobs.new(session.id)
    try:
        ctx.pool.submit(_run_prediction, ctx, job, session, body.model)
    except Busy:
        job.state, job.error, job.finished = "error", "server busy", time.monotonic()
        raise
    return _job_info(job)


@router.get("/api/jobs/{jid}", summary="State and progress of a prediction", tags=["segment"])
async def job_state(ctx: Context, jid: str) -> dict:
    job = ctx.jobs.get(jid)
    if job is None:
        raise HTTPException(404, "unknown or finished-and-forgotten job")
    return _job_info(job)
