"""benchmarks/scale.py --small runs end to end: the rows it promises, positive rates.

The script starts and stops its own LocalClusters (1 and 2 worker processes on 127.0.0.1).
Its timings are not asserted (this machine may be busy); only that every row is there and
every rate is a positive number, and that ``--out`` holds what was printed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("distributed")
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SEGLOC_DATA", REPO.parent / "shared" / "data"))


def _tables(text: str) -> list[list[dict]]:
    """Every markdown table of ``text`` as a list of {column: cell} rows."""
    tables, lines = [], text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|") and (i == 0 or not lines[i - 1].startswith("|")):
            head = [c.strip() for c in line.strip("|").split("|")]
            rows = []
            for body in lines[i + 2 :]:
                if not body.startswith("|"):
                    break
                cells = [c.strip() for c in body.strip("|").split("|")]
                rows.append(dict(zip(head, cells, strict=True)))
            tables.append(rows)
    return tables


def test_scale_small_prints_every_row_with_positive_rates(tmp_path):
    if not (DATA / "isbi2012" / "test" / "images").is_dir():
        pytest.skip(f"real data not found under {DATA} (set SEGLOC_DATA)")
    out = tmp_path / "scale.md"
    paths = [str(REPO / "src"), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "scale.py"), "--small", "--out", str(out)],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    assert text.strip() in proc.stdout
    measured, paper = _tables(text)

    runs = {(r["case"], r["run"], r["workers"], r["threads"]) for r in measured}
    for case in ("folder", "slide"):
        assert (case, "one process", "", "1") in runs
        assert (case, "Dask", "1", "1") in runs and (case, "Dask", "2", "1") in runs
    assert len(measured) == len(runs)  # no row twice
    for r in measured:
        for col in ("load s", "work s", "s / task", "windows", "Mpixel / s"):
            assert float(r[col]) > 0, (r, col)
        assert int(r["tasks"]) == (2 if r["case"] == "folder" else 4)  # 2 slices; 2x2 blocks
        if r["case"] == "folder":
            assert float(r["images / s"]) > 0
        if r["run"] == "Dask":
            assert float(r["cluster s"]) > 0 and float(r["overhead ms"]) > 0

    # the same network calls whatever runs them; blocks add their halo windows
    folder = {r["windows"] for r in measured if r["case"] == "folder"}
    assert len(folder) == 1
    one = min(int(r["windows"]) for r in measured if r["case"] == "slide")
    assert all(
        int(r["windows"]) == one
        for r in measured
        if r["case"] == "slide" and r["run"] == "one process"
    )
    assert all(int(r["windows"]) >= one for r in measured if r["case"] == "slide")

    assert [r["N workers"] for r in paper] == ["1", "2", "8", "64"]
    for r in paper:
        assert all(float(v) > 0 for k, v in r.items() if k != "N workers")
    assert "T(N) = n * t / N + n * o" in text
