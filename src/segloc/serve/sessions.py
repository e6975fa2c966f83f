"""Sessions: one opened image with its mask, undo history and ground truth, held in memory.

The store bounds what it holds: a session unused for ``Limits.session_ttl`` seconds expires,
a session over ``Limits.max_session_bytes`` drops its oldest undo steps, and when all sessions
together pass ``Limits.max_total_bytes`` the least recently used are evicted first. Each
session owns a folder under the store's temporary root; removing the session removes it.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from segloc.engine.heap import release_memory
from segloc.io import ImageMeta
from segloc.serve.limits import Limits

__all__ = [
    "Edit",
    "Session",
    "SessionNotFound",
    "SessionStore",
    "SessionTooLarge",
]


class SessionNotFound(KeyError):
    """No session of that id: never created, expired, evicted or deleted."""

    def __str__(self) -> str:
        return "unknown or expired session; open the image again"


class SessionTooLarge(ValueError):
    """An image whose session would hold more memory than one session may."""


@dataclass
class Edit:
    """One undoable change of a mask: the box it touched, the values before and after."""

    where: tuple[slice, ...]
    before: np.ndarray
    after: np.ndarray

    @property
    def nbytes(self) -> int:
        return self.before.nbytes + self.after.nbytes


def changed_box(old: np.ndarray, new: np.ndarray) -> tuple[slice, ...] | None:
    """Smallest box holding every element where ``old`` and ``new`` differ; None if none do."""
    found = ndi.find_objects((old != new).view(np.uint8))
    return found[0] if found else None


class Session:
    """An image (or volume), the label map drawn on it, and what was done to that map.

    Parameters
    ----------
    sid : str
        The session's id (random, URL-safe).
    name : str
        Display name of the file; never used as a path.
    folder : Path
        The session's own temporary folder.
    image : ndarray
        As read: ``(rows, cols)``, ``(rows, cols, 3|4)`` or ``(rows, cols, slices)``.
    grey : ndarray
        What the methods segment: ``image`` or its luminance.
    meta : ImageMeta
    clock : callable
        Seconds, monotonic; injected for tests of expiry.
    """

    def __init__(
        self,
        sid: str,
        name: str,
        folder: Path,
        image: np.ndarray,
        grey: np.ndarray,
        meta: ImageMeta,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.id, self.name, self.folder = sid, name, folder
        self.image, self.grey, self.meta = image, grey, meta
        self.mask = np.zeros(grey.shape, np.uint8)  # label map, 0 = background
        self.version = 0
        self.undo: deque[Edit] = deque()
        self.redo: list[Edit] = []
        self.truth: np.ndarray | None = None
        self.stats: dict = {}  # range and display percentiles of the image
        self.cache: dict[str, object] = {}  # derived from (mask, version); dropped on change
        self.lock = threading.RLock()  # one change of the mask at a time
        self._clock = clock
        self.last_used = clock()

    @property
    def ndim(self) -> int:
        return self.grey.ndim

    @property
    def nbytes(self) -> int:
        """Memory held: pixels, mask, truth, history and cached derivatives."""
        with self.lock:  # the history may be changing on another thread
            arrays = [self.image, self.mask]
            if self.grey is not self.image:
                arrays.append(self.grey)
            if self.truth is not None:
                arrays.append(self.truth)
            cached = sum(v.nbytes for v in self.cache.values() if isinstance(v, np.ndarray))
            history = sum(e.nbytes for e in self.undo) + sum(e.nbytes for e in self.redo)
        return sum(a.nbytes for a in arrays) + cached + history

    def touch(self) -> None:
        self.last_used = self._clock()

    def set_mask(self, new: np.ndarray, *, where: tuple[slice, ...] | None = None) -> bool:
        """Replace the mask by ``new`` as one undoable step; False (and no step) if unchanged.

        ``where`` (a box known to hold every change, e.g. a brush stroke's slice) saves
        comparing the whole volume.
        """
        with self.lock:
            if new.shape != self.mask.shape:
                raise ValueError(f"mask must have shape {self.mask.shape}, got {new.shape}")
            if where is None:
                where = changed_box(self.mask, new)
            else:
                inner = changed_box(self.mask[where], new[where])
                where = None if inner is None else _compose(where, inner)
            if where is None:
                return False
            edit = Edit(where, self.mask[where].copy(), np.ascontiguousarray(new[where]))
            self.mask = new if new.dtype == np.uint8 else new.astype(np.uint8)
            self.undo.append(edit)
            self.redo.clear()
            self._changed()
            return True

    def step_back(self) -> bool:
        """Undo the last step; False when there is none."""
        with self.lock:
            if not self.undo:
                return False
            edit = self.undo.pop()
            self.mask = self.mask.copy()  # readers of the old array keep what they read
            self.mask[edit.where] = edit.before
            self.redo.append(edit)
            self._changed()
            return True

    def step_forward(self) -> bool:
        """Redo the last undone step; False when there is none."""
        with self.lock:
            if not self.redo:
                return False
            edit = self.redo.pop()
            self.mask = self.mask.copy()
            self.mask[edit.where] = edit.after
            self.undo.append(edit)
            self._changed()
            return True

    def trim_history(self, max_bytes: int, depth: int) -> None:
        """Drop the oldest undo steps until at most ``depth`` remain and the session fits."""
        with self.lock:
            while self.undo and (len(self.undo) > depth or self.nbytes > max_bytes):
                self.undo.popleft()
            while self.redo and self.nbytes > max_bytes:
                self.redo.pop(0)

    def _changed(self) -> None:
        self.version += 1
        self.cache.clear()


def _compose(outer: tuple[slice, ...], inner: tuple[slice, ...]) -> tuple[slice, ...]:
    """A box given inside ``outer`` (a box of slices with starts) as a box of the whole array."""
    return tuple(
        slice((o.start or 0) + i.start, (o.start or 0) + i.stop)
        for o, i in zip(outer, inner, strict=True)
    )


class SessionStore:
    """Sessions by id, least recently used first, within the memory and time limits.

    Parameters
    ----------
    limits : Limits
    clock : callable
        Seconds, monotonic; injected for tests of expiry.
    """

    def __init__(self, limits: Limits, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()
        self.root = Path(tempfile.mkdtemp(prefix="segloc-serve-"))

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, sid: object) -> bool:
        return sid in self._sessions

    @property
    def total_bytes(self) -> int:
        with self._lock:
            return sum(s.nbytes for s in self._sessions.values())

    def new_id(self) -> tuple[str, Path]:
        """A fresh session id and its folder (created), for a file being received."""
        sid = secrets.token_urlsafe(16)
        folder = self.root / sid
        folder.mkdir()
        return sid, folder

    def add(self, session: Session) -> Session:
        """Hold ``session``, evicting the least recently used others to make room.

        Raises
        ------
        SessionTooLarge
            If the session alone is over ``max_session_bytes`` or ``max_total_bytes``.
        """
        need = session.nbytes
        cap = min(self.limits.max_session_bytes, self.limits.max_total_bytes)
        if need > cap:
            shutil.rmtree(session.folder, ignore_errors=True)
            raise SessionTooLarge(
                f"image needs {need >> 20} MiB in memory, over the per-session limit of "
                f"{cap >> 20} MiB"
            )
        self.expire()
        with self._lock:
            self._sessions[session.id] = session
        self._evict(keep=session.id)
        return session

    def get(self, sid: str) -> Session:
        """The session ``sid``, marked as used now.

        Raises
        ------
        SessionNotFound
        """
        self.expire()
        with self._lock:
            session = self._sessions.get(sid)
            if session is None:
                raise SessionNotFound(sid)
            self._sessions.move_to_end(sid)
        session.touch()
        return session

    def account(self, session: Session) -> None:
        """After ``session`` grew: trim its history to its limit, then evict others if needed."""
        session.trim_history(self.limits.max_session_bytes, self.limits.undo_depth)
        self._evict(keep=session.id)

    def remove(self, sid: str) -> bool:
        """Forget a session and remove its folder; False if there was none."""
        with self._lock:
            session = self._sessions.pop(sid, None)
        if session is None:
            return False
        shutil.rmtree(session.folder, ignore_errors=True)
        del session
        release_memory()
        return True

    def expire(self) -> list[str]:
        """Remove the sessions unused for longer than the time limit; return their ids."""
        now = self._clock()
        with self._lock:
            old = [
                sid
                for sid, s in self._sessions.items()
                if now - s.last_used > self.limits.session_ttl
            ]
        for sid in old:
            self.remove(sid)
        return old

    def _evict(self, *, keep: str) -> list[str]:
        evicted = []
        while True:
            with self._lock:
                if sum(s.nbytes for s in self._sessions.values()) <= self.limits.max_total_bytes:
                    break
                victim = next((sid for sid in self._sessions if sid != keep), None)
            if victim is None:
                break
            self.remove(victim)
            evicted.append(victim)
        return evicted

    def close(self) -> None:
        """Remove every session and the temporary root."""
        for sid in list(self._sessions):
            self.remove(sid)
        shutil.rmtree(self.root, ignore_errors=True)
