"""Routes of the server, its sessions and their slices: what is there, open, look, close."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from segloc.serve import views
from segloc.serve.context import Context, ServeContext
from segloc.serve.schemas import RAW_RESPONSE, UPLOAD_BODY, Axis, Index, NameRequest
from segloc.serve.sessions import Session, SessionNotFound
from segloc.serve.uploads import load_image, receive

__all__ = ["router"]

router = APIRouter()


def _clean_name(name: str) -> str:
    """A display name: the last path part, unusual characters replaced. Never a path."""
    base = re.split(r"[\\/]", name)[-1]
    return re.sub(r"[^\w.\- ]", "_", base)[:120] or "upload"


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


async def _open(
    ctx: ServeContext, folder: Path, sid: str, source: Path, name: str, move: bool
) -> dict:
    """Decode ``source`` into a new session in ``folder``; the folder goes if anything fails."""
    try:
        image, grey, meta = await ctx.pool.run(
            load_image, source, folder, ctx.limits, name=name, move=move
        )
        session = Session(sid, name, folder, image, grey, meta, clock=ctx.clock)
        session.stats = await ctx.pool.run(_stats, grey)
        ctx.store.add(session)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return views.session_info(session)


# --------------------------------------------------------------------------- server


@router.get("/api/health", summary="Liveness, sessions held and work in line", tags=["server"])
async def health(ctx: Context) -> dict:
    return {
        "status": "ok",
        "sessions": len(ctx.store),
        "session_bytes": ctx.store.total_bytes,
        "pending": ctx.pool.pending,
    }


@router.get("/api/data", summary="Images and volumes of --data", tags=["server"])
async def data_files(ctx: Context) -> dict:
    listing = await ctx.listing()
    files = [{"name": n, "bytes": p.stat().st_size} for n, p in listing.items()]
    return {"files": files, "truncated": len(files) >= ctx.limits.max_data_files}


@router.get("/api/models", summary="Trained runs of --runs", tags=["server"])
async def model_list(ctx: Context) -> dict:
    return {"models": await ctx.pool.run(ctx.models.list)}


# --------------------------------------------------------------------------- sessions


@router.post(
    "/api/sessions",
    status_code=201,
    summary="Open an uploaded image or volume (raw bytes in the body)",
    description="PNG, JPEG, BMP, TIFF, NIfTI (.nii/.nii.gz), NRRD, DICOM or a zipped DICOM "
    "series; the format is told from the bytes, ``name`` is only shown.",
    openapi_extra=UPLOAD_BODY,
    tags=["sessions"],
)
async def upload(
    ctx: Context, request: Request, name: Annotated[str, Query(max_length=300)] = "upload"
) -> dict:
    sid, folder = ctx.store.new_id()
    try:
        await receive(request.stream(), folder / "upload", ctx.limits.max_upload_bytes)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return await _open(ctx, folder, sid, folder / "upload", _clean_name(name), move=True)


@router.post(
    "/api/sessions/open",
    status_code=201,
    summary="Open a file of --data by its listed name",
    tags=["sessions"],
)
async def open_data(ctx: Context, body: NameRequest) -> dict:
    source = await ctx.data_file(body.name)
    sid, folder = ctx.store.new_id()
    return await _open(ctx, folder, sid, source, _clean_name(body.name), move=False)


@router.get("/api/sessions/{sid}", summary="What a session holds", tags=["sessions"])
async def session_info(ctx: Context, sid: str) -> dict:
    return views.session_info(ctx.store.get(sid))


@router.delete("/api/sessions/{sid}", status_code=204, summary="Close a session", tags=["sessions"])
async def close_session(ctx: Context, sid: str) -> Response:
    if not ctx.store.remove(sid):
        raise SessionNotFound(sid)
    return Response(status_code=204)


# --------------------------------------------------------------------------- slices


@router.get(
    "/api/sessions/{sid}/slice",
    summary="One slice of the image, raw",
    responses=RAW_RESPONSE,
    response_class=Response,
    tags=["slices"],
)
async def image_slice(ctx: Context, sid: str, axis: Axis = 2, index: Index = 0) -> Response:
    session = ctx.store.get(sid)
    return views.raw(views.slice_of(session.image, session, axis, index))


@router.get(
    "/api/sessions/{sid}/mask/slice",
    summary="One slice of the mask (uint8 labels), raw",
    responses=RAW_RESPONSE,
    response_class=Response,
    tags=["slices"],
)
async def mask_slice(ctx: Context, sid: str, axis: Axis = 2, index: Index = 0) -> Response:
    session = ctx.store.get(sid)
    mask, version = session.mask, session.version  # one consistent pair
    return views.raw(views.slice_of(mask, session, axis, index), mask_version=str(version))
