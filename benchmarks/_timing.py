"""Timing, peak-memory and run-description helpers shared by the benchmark scripts.

Peak memory is the resident set's high-water mark (``VmHWM``), reset just before the measured
calls by writing ``5`` to ``/proc/self/clear_refs`` (Linux >= 4.0). Python's ``tracemalloc``
does not see torch's or ONNX Runtime's allocations; the RSS high-water mark sees everything. When
the reset is not available the fallback is ``ru_maxrss``, which never goes down, so a benchmark
should take each memory figure in a fresh process (:func:`run_worker`).
"""

from __future__ import annotations

import ctypes
import datetime
import gc
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_MIB = 1024.0 * 1024.0


def best_of(fn: Callable[[], object], *, repeats: int, warmup: int = 1) -> tuple[float, float]:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` times; return (best, median) in ms.

    The best of several runs estimates the cost without interference from other processes; the
    median shows how noisy the machine was.
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return min(times), statistics.median(times)


def current_rss_mib() -> float:
    """Resident set size of this process now, in MiB."""
    with open("/proc/self/statm") as f:
        resident_pages = int(f.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / _MIB


def release_free_memory() -> None:
    """Hand freed heap memory back to the system before a baseline is taken.

    Without this, memory freed by a preparation step (tracing, exporting, copying) stays resident
    in glibc's free lists, the measured calls reuse it, and their RSS increase reads too low.
    """
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def reset_peak_rss() -> bool:
    """Reset this process's RSS high-water mark to its current RSS; False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def start_peak() -> float | None:
    """Begin a peak-memory measurement: freed memory returned to the system, the RSS high-water
    mark reset; the baseline RSS in MiB, or None where the mark cannot be reset."""
    release_free_memory()
    baseline = current_rss_mib()
    return baseline if reset_peak_rss() else None


NO_PEAK = {"error": "cannot reset the RSS high-water mark (/proc/self/clear_refs)"}


def peak_rss_mib() -> float:
    """RSS high-water mark in MiB (``VmHWM``, else ``ru_maxrss``)."""
    try:
        with open("/proc/self/status") as f:
            match = re.search(r"^VmHWM:\s+(\d+)\s+kB", f.read(), re.MULTILINE)
        if match:
            return int(match.group(1)) / 1024.0
    except OSError:
        pass
    # Linux reports ru_maxrss in KiB (macOS in bytes, but there /proc is missing anyway).
    scale = 1.0 if sys.platform == "darwin" else 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / _MIB


def run_worker(argv: Sequence[str], *, timeout: float, env: dict[str, str] | None = None) -> dict:
    """Run ``python *argv`` in a fresh process; return the JSON object of its last stdout line.

    On failure or timeout the dict holds ``{"error": ...}`` instead, so one broken measurement
    does not end the whole run.
    """
    try:
        proc = subprocess.run(
            [sys.executable, *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO,
            env={**os.environ, **(env or {})},
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {proc.returncode}: {tail[:200]}"}
    return json.loads(lines[-1])


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, e.g. ``"0.12 0.30 0.41"``."""
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:  # pragma: no cover - not on Linux
        return "n/a"


def run_header(command: str) -> str:
    """One line naming the command, commit, date, machine and load, for result files."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        cwd=REPO,
    ).stdout.strip()
    return (
        f"`{command}`; commit {commit or 'unknown'}{' (+ uncommitted changes)' if dirty else ''}; "
        f"{datetime.datetime.now().isoformat(timespec='minutes')}; {platform.machine()}, "
        f"{os.cpu_count()} cores; load average {load_average()}"
    )


def publish(text: str, out: str | os.PathLike | None) -> None:
    """Print a result file's ``text``; with ``out``, also write it there atomically, so an
    interrupted run leaves the previous results intact."""
    print(text)
    if out:
        from segloc._validation import write_atomic

        Path(out).parent.mkdir(parents=True, exist_ok=True)
        write_atomic(Path(out), lambda tmp: tmp.write_text(text))


def format_markdown(rows: list[dict], columns: Sequence[str]) -> str:
    """A markdown table of ``rows`` (dicts) over ``columns``; floats get 3 significant digits."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = []
        for c in columns:
            v = row.get(c, "")
            cells.append(f"{v:.3g}" if isinstance(v, float) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def dumps(obj: dict) -> str:
    """One JSON line for a worker's result."""
    return json.dumps(obj, sort_keys=True)


def measure(func: Callable[[], object], repeats: int) -> tuple[float, float, object]:
    """(best ms, tracemalloc peak MiB, result of the last call) after one warm-up call.

    tracemalloc counts NumPy's allocations, not memory that compiled peers malloc directly.
    """
    import tracemalloc

    func()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - t0)
    tracemalloc.start()
    try:
        out = func()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return best * 1e3, peak / 2**20, out


def comparison_row(task: str, ours: tuple, peer: str, theirs: tuple, agree: str) -> dict:
    """One benchmark row; ratio = peer time / segloc time (above 1: segloc is faster)."""
    return {
        "task": task,
        "segloc_ms": round(ours[0], 2),
        "peer": peer,
        "peer_ms": round(theirs[0], 2),
        "ratio": round(theirs[0] / ours[0], 2),
        "segloc_peak_MiB": round(ours[1], 1),
        "peer_peak_MiB": round(theirs[1], 1),
        "agree": agree,
    }


def format_table(rows: list[dict]) -> str:
    """Plain aligned text table of dict rows (the keys of the first row are the columns)."""
    cols = list(rows[0])
    cells = [[str(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(wd) for c, wd in zip(cols, widths, strict=True))]
    lines += ["  ".join(v.ljust(wd) for v, wd in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)
