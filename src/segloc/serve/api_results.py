"""Routes that read results off the mask: objects, scores against a ground truth, downloads.

The measurements are library calls: :func:`segloc.instances.region_table` for the objects,
:func:`segloc.metrics.overlap_scores` and :func:`segloc.metrics.surface_scores` for the
scores, :func:`segloc.viz.comparison_panel` for the panel, :func:`segloc.io.write_mask`,
:func:`segloc.instances.mask_to_boxes` and :func:`segloc.coco.coco_dataset` for the files.
"""

from __future__ import annotations

import json
import time
from typing import Literal

import numpy as np
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response

from segloc.coco import box_to_coco, coco_dataset
from segloc.instances import mask_to_boxes, region_table
from segloc.io import write_mask
from segloc.metrics import overlap_scores, surface_scores
from segloc.serve import views
from segloc.serve.context import DATA_SUFFIXES, Context, ServeContext
from segloc.serve.schemas import RAW_RESPONSE, UPLOAD_BODY, Axis, Index, NameRequest
from segloc.serve.sessions import Session
from segloc.serve.uploads import load_mask, receive
from segloc.viz import comparison_panel

__all__ = ["router"]

router = APIRouter()

MAX_REGION_ROWS = 2000  # rows sent to the page (the largest objects); "total" counts them all
_MASK_FORMATS = {"png": ".png", "tif": ".tif", "nii.gz": ".nii.gz", "nrrd": ".nrrd"}


def _stem(name: str) -> str:
    """The session's name without its image suffix, to name downloads after it."""
    for suffix in (".nii.gz", *DATA_SUFFIXES):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)] or "image"
    return name or "image"


# --------------------------------------------------------------------------- objects


def _region_rows(table: dict[str, np.ndarray], max_rows: int) -> list[dict]:
    """JSON rows of a :func:`segloc.instances.region_table`, largest objects first."""
    order = np.argsort(-table["area"], kind="stable")[:max_rows]
    return [
        {
            "id": int(table["instance"][k]),
            "class": int(table["class"][k]),
            "pixels": int(table["area"][k]),
            "size": float(table["size"][k]),
            "box": [float(v) for v in table["box"][k]],
            "mean": float(table["mean"][k]),
            "centre": [round(float(v), 2) for v in table["centre"][k]],
        }
        for k in order
    ]


def _regions(session: Session) -> tuple[np.ndarray, dict]:
    """The region table of the current mask, cached until the mask changes."""
    with session.lock:
        version, mask = session.version, session.mask
        cached = session.cache.get("regions")
        if cached is not None and session.cache.get("regions_version") == version:
            return session.cache["instances"], cached  # type: ignore[return-value]
    instances, columns = region_table(mask, session.grey, spacing=views.spacing(session))
    instances = instances.astype(np.uint16) if instances.max(initial=0) < 65536 else instances
    unit = views.unit(session)
    table = {
        "version": version,
        "size_unit": f"{unit}{'²' if session.ndim == 2 else '³'}",
        "total": len(columns["instance"]),
        "regions": _region_rows(columns, MAX_REGION_ROWS),
    }
    with session.lock:
        if session.version == version:
            session.cache.update(instances=instances, regions=table, regions_version=version)
    return instances, table


@router.get(
    "/api/sessions/{sid}/regions",
    summary="Connected objects of the mask: size, box, mean intensity",
    description="Rows largest first (at most 2000); boxes are segloc's half-open "
    "[x0, y0, x1, y1] / [x0, y0, z0, x1, y1, z1], x = column, y = row, z = slice.",
    tags=["objects"],
)
async def regions(ctx: Context, sid: str) -> dict:
    session = ctx.store.get(sid)
    _, table = await ctx.pool.run(_regions, session)
    ctx.store.account(session)
    return table


@router.get(
    "/api/sessions/{sid}/regions/{rid}/slice",
    summary="One object on one slice (uint8 0/1), raw",
    responses=RAW_RESPONSE,
    response_class=Response,
    tags=["objects"],
)
async def region_slice(
    ctx: Context, sid: str, rid: int, axis: Axis = 2, index: Index = 0
) -> Response:
    session = ctx.store.get(sid)
    instances, table = await ctx.pool.run(_regions, session)
    if rid < 1 or rid > table["total"]:
        raise HTTPException(404, f"no object {rid} (the mask has {table['total']})")
    plane = views.slice_of(instances, session, axis, index)
    return views.raw((plane == rid).view(np.uint8), mask_version=str(table["version"]))


# --------------------------------------------------------------------------- scores


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
    surface = surface_scores(pred, truth, num_classes=classes, spacing=views.spacing(session))
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
        "unit": views.unit(session),
        "classes": rows,
        "mean_dice": float(np.mean(dice)) if dice else None,
    }


async def _set_truth(ctx: ServeContext, session: Session, truth: np.ndarray) -> dict:
    if truth.shape != session.mask.shape:
        raise HTTPException(
            400,
            f"truth has shape {list(truth.shape)}, the image {list(session.mask.shape)}",
        )
    if truth.dtype != np.bool_ and truth.max(initial=0) > 255:
        raise HTTPException(400, f"truth labels must be <= 255, got {int(truth.max())}")
    session.truth = truth.astype(np.uint8)
    ctx.store.account(session)
    return await ctx.pool.run(_scores, session)


@router.post(
    "/api/sessions/{sid}/truth",
    summary="Upload a ground-truth mask (raw bytes) and score the mask against it",
    openapi_extra=UPLOAD_BODY,
    tags=["score"],
)
async def upload_truth(ctx: Context, sid: str, request: Request) -> dict:
    session = ctx.store.get(sid)
    path = session.folder / "truth-upload"
    try:
        await receive(request.stream(), path, ctx.limits.max_upload_bytes)
        truth = await ctx.pool.run(load_mask, path, session.folder, ctx.limits, name="truth")
    finally:
        path.unlink(missing_ok=True)
    return await _set_truth(ctx, session, truth)


@router.post(
    "/api/sessions/{sid}/truth/open",
    summary="Use a file of --data as the ground truth and score the mask against it",
    tags=["score"],
)
async def open_truth(ctx: Context, sid: str, body: NameRequest) -> dict:
    session = ctx.store.get(sid)
    source = await ctx.data_file(body.name)
    truth = await ctx.pool.run(
        load_mask, source, session.folder, ctx.limits, name="truth", move=False
    )
    return await _set_truth(ctx, session, truth)


@router.get(
    "/api/sessions/{sid}/scores",
    summary="Dice, IoU and HD95 per class of the current mask against the truth",
    tags=["score"],
)
async def scores(ctx: Context, sid: str) -> dict:
    session = ctx.store.get(sid)
    if session.truth is None:
        raise HTTPException(409, "no ground truth yet; upload one first")
    return await ctx.pool.run(_scores, session)


def _panel_png(session: Session, axis: int) -> bytes:
    """The image | truth | prediction panel, titled with the mean Dice, as PNG bytes."""
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


@router.get(
    "/api/sessions/{sid}/panel",
    summary="PNG panel image | truth | prediction titled with the Dice",
    responses={200: {"content": {"image/png": {}}}},
    response_class=Response,
    tags=["score"],
)
async def panel(ctx: Context, sid: str, axis: Axis = 2) -> Response:
    session = ctx.store.get(sid)
    if session.truth is None:
        raise HTTPException(409, "no ground truth yet; upload one first")
    body = await ctx.pool.run(_panel_png, session, axis)
    return views.download(body, "image/png", f"{_stem(session.name)}_panel.png")


# --------------------------------------------------------------------------- downloads


def _mask_file(session: Session, suffix: str) -> bytes:
    """The mask written as a ``suffix`` file (0/1 labels as a binary mask), as bytes."""
    mask = session.mask
    out = mask.astype(bool) if mask.max(initial=0) <= 1 else mask
    path = session.folder / f"mask-{time.monotonic_ns()}{suffix}"
    try:
        write_mask(path, out, meta=session.meta)  # atomic; keeps the affine
        return path.read_bytes()
    finally:
        path.unlink(missing_ok=True)


@router.get(
    "/api/sessions/{sid}/download/mask",
    summary="The mask as a file (NIfTI/NRRD keep the input's affine)",
    description="A mask whose labels are 0/1 is written as a binary mask (0/255 in PNG and "
    "TIFF, 0/1 in NIfTI and NRRD); more labels as a label map.",
    responses={200: {"content": {"application/octet-stream": {}}}},
    response_class=Response,
    tags=["download"],
)
async def download_mask(
    ctx: Context, sid: str, format: Literal["png", "tif", "nii.gz", "nrrd"] | None = None
) -> Response:
    session = ctx.store.get(sid)
    if format is None:
        format = {"nrrd": "nrrd", "tiff": "tif"}.get(
            session.meta.format, "nii.gz" if session.ndim == 3 else "png"
        )
    if format == "png" and session.ndim == 3:
        raise HTTPException(400, "PNG holds 2D masks; choose nii.gz, nrrd or tif for a volume")
    suffix = _MASK_FORMATS[format]
    body = await ctx.pool.run(_mask_file, session, suffix)
    return views.download(body, "application/octet-stream", f"{_stem(session.name)}_mask{suffix}")


def _boxes_document(session: Session) -> dict:
    """Boxes of the mask's objects: a COCO dataset (2D) or segloc's box document (3D)."""
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


@router.get(
    "/api/sessions/{sid}/download/boxes",
    summary="Boxes of the mask's connected objects (COCO JSON for 2D images)",
    description="2D: a COCO dataset dict (one image, one category per label, bbox "
    "[x, y, w, h], area = pixel count). 3D: segloc's box document, boxes "
    "[x0, y0, z0, x1, y1, z1] half-open, as ``segloc boxes`` writes.",
    tags=["download"],
)
async def download_boxes(ctx: Context, sid: str) -> Response:
    session = ctx.store.get(sid)
    doc = await ctx.pool.run(_boxes_document, session)
    return views.download(
        json.dumps(doc).encode(), "application/json", f"{_stem(session.name)}_boxes.json"
    )
