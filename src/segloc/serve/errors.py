"""How ``segloc serve`` answers a request that fails: one line in ``{"detail": ...}``.

A 4xx status when the client can fix the request (segloc's functions raise ``ValueError``
and ``TypeError`` naming the parameter and the problem), 503 with ``Retry-After`` when the
workers are busy, 507 when memory runs out, and 500 for anything else; the server's log gets
the traceback, the client one line, and the server goes on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from segloc.serve.jobs import Busy
from segloc.serve.models import UnknownModel
from segloc.serve.sessions import SessionNotFound, SessionTooLarge
from segloc.serve.uploads import UploadError

__all__ = ["add_error_handlers", "one_line"]

Handler = Callable[[Request, Any], Awaitable[JSONResponse]]


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type's name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _error(status: int, exc: BaseException | str) -> JSONResponse:
    text = exc if isinstance(exc, str) else one_line(exc)
    return JSONResponse({"detail": text}, status_code=status)


def _status(status: int) -> Handler:
    """A handler answering ``status`` with the exception's first line."""

    async def handler(request: Request, exc: Exception) -> JSONResponse:
        return _error(status, exc)

    return handler


async def _upload(request: Request, exc: UploadError) -> JSONResponse:
    return _error(exc.status, exc)


async def _busy(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": one_line(exc)}, status_code=503, headers={"Retry-After": "1"})


async def _memory(request: Request, exc: Exception) -> JSONResponse:
    return _error(507, "not enough memory for this request")


async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    err = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
    return _error(422, f"{where}: {err.get('msg')}" if where else str(err.get("msg")))


async def _crash(request: Request, exc: Exception) -> JSONResponse:
    # the server's log gets the traceback (uvicorn prints it); the client one line
    return _error(500, f"internal error ({type(exc).__name__}: {one_line(exc)})")


# Starlette picks the handler of the nearest class in the exception's MRO, so the order of
# this table does not matter: SessionTooLarge (a ValueError) still gets 413, not 400.
_HANDLERS: dict[type[Exception], Handler] = {
    SessionNotFound: _status(404),
    UnknownModel: _status(404),
    UploadError: _upload,
    SessionTooLarge: _status(413),
    Busy: _busy,
    ValueError: _status(400),
    TypeError: _status(400),
    MemoryError: _memory,
    RequestValidationError: _invalid,
    Exception: _crash,
}


def add_error_handlers(app: FastAPI) -> None:
    """Install the handlers above on ``app``."""
    for exc_type, handler in _HANDLERS.items():
        app.add_exception_handler(exc_type, handler)
