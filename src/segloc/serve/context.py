"""What every route of ``segloc serve`` shares: one context object on ``app.state``.

:func:`segloc.serve.app.create_app` builds one :class:`ServeContext` per application and
stores it as ``app.state.context``; a route asks for it with the :data:`Context` dependency
rather than reading module globals, so two applications in one process (the tests build many)
never share sessions, workers or limits.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from segloc.serve.jobs import JobBoard, WorkPool
from segloc.serve.limits import Limits
from segloc.serve.models import ModelStore
from segloc.serve.sessions import SessionStore

__all__ = ["DATA_SUFFIXES", "Context", "ServeContext", "data_listing", "get_context"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".nii", ".nii.gz", ".nrrd")
DATA_SUFFIXES = (*IMAGE_SUFFIXES, ".dcm", ".zip")


def data_listing(root: Path | None, limit: int) -> dict[str, Path]:
    """Files under ``--data`` a session can open, by relative name (hidden folders skipped).

    Parameters
    ----------
    root : Path or None
        The ``--data`` folder; None (or a missing folder) lists nothing.
    limit : int
        Most files listed.

    Returns
    -------
    dict
        ``{relative posix name: path}`` in sorted walk order.
    """
    if root is None or not root.is_dir():
        return {}
    found: dict[str, Path] = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            if f.startswith(".") or not f.lower().endswith(DATA_SUFFIXES):
                continue
            path = Path(folder) / f
            found[path.relative_to(root).as_posix()] = path
            if len(found) >= limit:
                return found
    return found


@dataclass(frozen=True)
class ServeContext:
    """The state of one application: sessions, workers, jobs, models, limits and ``--data``.

    Attributes
    ----------
    limits : Limits
    store : SessionStore
    pool : WorkPool
    jobs : JobBoard
    models : ModelStore
    data_root : Path or None
        The resolved ``--data`` folder.
    clock : callable
        Monotonic seconds, for session expiry (tests pass a fake clock).
    """

    limits: Limits
    store: SessionStore
    pool: WorkPool
    jobs: JobBoard
    models: ModelStore
    data_root: Path | None
    clock: Callable[[], float]

    async def listing(self) -> dict[str, Path]:
        """The files of ``--data``, walked on a thread (the folder may be large or slow)."""
        return await asyncio.to_thread(data_listing, self.data_root, self.limits.max_data_files)

    async def data_file(self, name: str) -> Path:
        """The path of a listed file of ``--data``; 404 for any other name.

        The name is looked up in the listing, never joined to a path.
        """
        listing = await self.listing()
        if name not in listing:
            raise HTTPException(404, f"no file {name!r} in the data folder")
        return listing[name]


async def get_context(request: Request) -> ServeContext:
    """The application's :class:`ServeContext` (async, so FastAPI calls it on the loop)."""
    return request.app.state.context


Context = Annotated[ServeContext, Depends(get_context)]
