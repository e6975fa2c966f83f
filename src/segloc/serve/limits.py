"""What the server accepts and how much it holds: one frozen record, set from the command line."""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1 << 20


@dataclass(frozen=True)
class Limits:
    """Bounds on uploads, memory, sessions and work.

    Attributes
    ----------
    max_upload_bytes : int
        Largest request body for an upload (image, volume, zipped DICOM series, truth mask).
    max_json_bytes : int
        Largest body of any other request.
    max_voxels : int
        Largest image or volume, in pixels/voxels, told from the file header before decoding.
    max_unpacked_bytes : int
        Largest total size of the files inside a zipped DICOM series, and of a compressed
        NRRD payload once decompressed.
    max_zip_members : int
        Most files in a zipped DICOM series.
    max_session_bytes : int
        Memory one session may hold: image, mask, ground truth, undo history, caches.
        Undo steps are dropped oldest first to stay under it.
    max_total_bytes : int
        Memory all sessions may hold together; the least recently used sessions are evicted
        first to stay under it.
    session_ttl : float
        Seconds a session may stay unused before it expires and its files are removed.
    undo_depth : int
        Most undo steps kept per session.
    workers : int
        Threads doing heavy work (segmentation, prediction, scoring, decoding).
    max_queue : int
        Heavy requests waiting for a worker beyond which the server answers 503.
    max_data_files : int
        Most files listed from ``--data``.
    """

    max_upload_bytes: int = 512 * MiB
    max_json_bytes: int = 4 * MiB
    max_voxels: int = 1 << 27
    max_unpacked_bytes: int = 2048 * MiB
    max_zip_members: int = 4096
    max_session_bytes: int = 2048 * MiB
    max_total_bytes: int = 6144 * MiB
    session_ttl: float = 3600.0
    undo_depth: int = 20
    workers: int = 2
    max_queue: int = 64
    max_data_files: int = 10000

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"Limits.{name} must be a positive number, got {value!r}")
