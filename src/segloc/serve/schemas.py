"""The shapes of ``segloc serve``'s requests: pydantic bodies, slice parameters, raw bodies.

FastAPI validates every request against these before a route runs (422 with the field's
name otherwise) and documents them at ``/openapi.json``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Query
from pydantic import BaseModel, Field

__all__ = [
    "RAW_RESPONSE",
    "UPLOAD_BODY",
    "Axis",
    "FillRequest",
    "Index",
    "NameRequest",
    "PredictRequest",
    "SegmentRequest",
    "Seed",
    "StrokeRequest",
]

Axis = Annotated[int, Query(ge=0, le=2, description="0, 1 or 2 (2D images: 2)")]
Index = Annotated[int, Query(ge=0, description="slice index along axis (2D images: 0)")]

# uploads are read as a stream (never parsed as a form): the body is documented by hand
UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}

RAW_RESPONSE = {
    200: {
        "content": {"application/octet-stream": {}},
        "description": "raw little-endian pixels; X-Shape rows,cols[,3], X-Dtype",
    }
}


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
