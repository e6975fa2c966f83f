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
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from segloc.classical import segment as classical_segment
from segloc.serve import api_edit, api_results, api_sessions
from segloc.serve.body_limit import BodyLimit
from segloc.serve.context import ServeContext
from segloc.serve.errors import add_error_handlers
from segloc.serve.jobs import JobBoard, WorkPool
from segloc.serve.limits import Limits
from segloc.serve.models import ModelStore
from segloc.serve.sessions import SessionStore

__all__ = ["create_app", "run"]

STATIC = Path(__file__).parent / "static"

# --------------------------------------------------------------------------- the page

page = APIRouter(include_in_schema=False)


@page.get("/")
async def index() -> FileResponse:
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


@page.get("/api/reference")
async def reference() -> FileResponse:
    return FileResponse(STATIC / "reference.html", headers={"Cache-Control": "no-cache"})


# --------------------------------------------------------------------------- the app


async def _reap(ctx: ServeContext) -> None:
    """Expire idle sessions every half TTL (at most every 30 s), until cancelled."""
    while True:
        await asyncio.sleep(min(30.0, ctx.limits.session_ttl / 2))
        ctx.store.expire()


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Warm the workers and reap sessions while serving; free everything at shutdown."""
    ctx: ServeContext = app.state.context
    # compile the region-growing kernels now, not on the first click
    warm = ctx.pool.submit(
        classical_segment, np.zeros((4, 4), np.uint8), "region-grow", seeds=[(0, 0)],
        tolerance=1.0,
    )  # fmt: skip
    reaper = asyncio.create_task(_reap(ctx))
    try:
        yield
    finally:
        reaper.cancel()
        warm.cancel()
        ctx.pool.shutdown()
        ctx.store.close()


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
        With ``app.state.context`` (a :class:`~segloc.serve.context.ServeContext`, what
        the routes share) and, for callers, its parts ``app.state.store`` (sessions),
        ``app.state.pool`` (workers), ``app.state.models``, ``app.state.jobs`` and
        ``app.state.limits``.
    """
    limits = limits or Limits()
    ctx = ServeContext(
        limits=limits,
        store=SessionStore(limits, clock=clock),
        pool=WorkPool(limits.workers, limits.max_queue),
        jobs=JobBoard(),
        models=ModelStore(None if runs is None else Path(runs)),
        data_root=None if data is None else Path(data).resolve(),
        clock=clock,
    )
    app = FastAPI(
        title="segloc serve",
        version="1",
        summary="Segment, correct, localize and score images and volumes in the browser.",
        description=__doc__,
        lifespan=_lifespan,
    )
    app.state.context = ctx
    app.state.store, app.state.pool, app.state.models = ctx.store, ctx.pool, ctx.models
    app.state.jobs, app.state.limits = ctx.jobs, ctx.limits
    app.add_middleware(BodyLimit, limits=limits)
    add_error_handlers(app)
    app.include_router(page)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    # in this order: the routes are matched, and documented, as they are included
    for group in (api_sessions, api_edit, api_results):
        app.include_router(group.router)
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
