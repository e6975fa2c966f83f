"""The request body limit of ``segloc serve``: 413 before an oversized body is read whole."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from fastapi import HTTPException
from fastapi.responses import JSONResponse

from segloc.serve.limits import Limits

__all__ = ["BodyLimit"]

# the routes whose body is a file: POST /api/sessions and POST /api/sessions/{sid}/truth
_UPLOAD_ROUTES = re.compile(r"^/api/sessions(/[^/]+/truth)?$")


class BodyLimit:
    """Refuse request bodies over the limit (413) before they are read whole.

    Uploads may reach ``Limits.max_upload_bytes``, other requests ``Limits.max_json_bytes``.
    A stated Content-Length over the limit is refused at once; a body sent in chunks is
    counted as it arrives.

    Parameters
    ----------
    app : ASGI application
        The application it wraps.
    limits : Limits
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
