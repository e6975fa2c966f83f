"""What ``segloc serve`` sends back about a session: its description, its mask's state,
raw slices and file downloads, shared by every group of routes."""

from __future__ import annotations

import re

import numpy as np
from fastapi import HTTPException
from fastapi.responses import Response

from segloc.serve.errors import one_line
from segloc.serve.sessions import Session
from segloc.serve.transport import SliceError, encode, take_slice

__all__ = ["download", "mask_info", "raw", "session_info", "slice_of", "spacing", "unit"]

_PHYSICAL = ("nifti", "nrrd", "dicom")  # formats whose spacing is in millimetres


def spacing(session: Session) -> tuple[float, ...]:
    """Pixel spacing along each axis of the image, 1.0 where the file gave none."""
    values = tuple(float(s) for s in session.meta.spacing[: session.ndim])
    return values + (1.0,) * (session.ndim - len(values))


def unit(session: Session) -> str:
    """The unit of :func:`spacing`: ``"mm"`` for medical formats, ``"px"`` otherwise."""
    return "mm" if session.meta.format in _PHYSICAL else "px"


def mask_info(session: Session) -> dict:
    """The mask's version, pixel count per label and undo/redo depths."""
    counts = np.bincount(session.mask.ravel(), minlength=1)
    return {
        "version": session.version,
        "labels": {str(i): int(n) for i, n in enumerate(counts) if i and n},
        "undo": len(session.undo),
        "redo": len(session.redo),
    }


def session_info(session: Session) -> dict:
    """What a session holds: name, format, shape, spacing, display range, truth, mask."""
    colour = session.image.ndim == session.grey.ndim + 1
    return {
        "id": session.id,
        "name": session.name,
        "format": session.meta.format,
        "ndim": session.ndim,
        "shape": list(session.grey.shape),
        "colour": colour,
        "dtype": str(session.image.dtype),
        "spacing": list(spacing(session)),
        "unit": unit(session),
        **session.stats,
        "truth": session.truth is not None,
        "mask": mask_info(session),
    }


def slice_of(array: np.ndarray, session: Session, axis: int, index: int) -> np.ndarray:
    """One slice of ``array`` (image, mask or instances of ``session``); 400 if out of range."""
    try:
        return take_slice(array, axis, index, ndim=session.ndim)
    except SliceError as exc:
        raise HTTPException(400, one_line(exc)) from None


def raw(plane: np.ndarray, **headers: str) -> Response:
    """A slice as raw little-endian bytes, its shape and dtype in ``X-Shape``/``X-Dtype``.

    Each keyword becomes one more header: ``mask_version="3"`` -> ``X-Mask-Version: 3``.
    """
    body, dtype, shape = encode(plane)
    head = {"X-Dtype": dtype, "X-Shape": ",".join(map(str, shape)), "Cache-Control": "no-store"}
    head.update({f"X-{k.replace('_', '-').title()}": v for k, v in headers.items()})
    return Response(body, media_type="application/octet-stream", headers=head)


def download(body: bytes, media: str, filename: str) -> Response:
    """A file to save: ``filename`` (unusual characters replaced) as an attachment."""
    safe = re.sub(r"[^\w.\-]", "_", filename)
    return Response(
        body,
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="{safe}"'},
    )
