"""`segloc serve` under load, on loopback: a real server process, concurrent clients.

300 region growings on a 512x512 slice from 8 concurrent clients while 4 model predictions run:
no request may fail, and once the sessions are closed the server's resident memory must be
back near where it was before the load. Throughput and latency are printed (``-s``), never
asserted; ``benchmarks/serve.py`` reports them. The harness is that script's.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SEGLOC_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("serve_bench", REPO / "benchmarks" / "serve.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["serve_bench"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc for memory")
def test_load_no_failures_and_memory_back_to_baseline(bench, tmp_path):
    if not (DATA / "isbi2012" / "images" / "1.png").exists():
        pytest.skip(f"real data not found under {DATA} (set SEGLOC_DATA)")
    data = bench.make_data(tmp_path / "data")
    runs = bench.make_run(tmp_path / "runs")
    proc, base = bench.start_server(data, runs)
    try:
        result = bench.load_test(base, proc.pid, requests=300, clients=8, predictions=4)
        assert proc.poll() is None  # still serving
    finally:
        bench.stop_server(proc)
    print(
        f"\n{result['requests']} region growings from {result['clients']} clients + "
        f"{result['predictions']} predictions in {result['seconds']:.1f} s: "
        f"{result['throughput']:.1f} requests/s, p50 {result['p50']:.0f} ms, "
        f"p95 {result['p95']:.0f} ms; RSS MiB before {result['rss_before']:.0f}, peak "
        f"{result['rss_peak']:.0f}, after {result['rss_after']:.0f}"
    )
    assert result["failures"] == []
    assert result["requests"] == 300 and result["predictions"] == 4
    # back near the baseline: sessions, masks and prediction buffers were all given back
    assert result["rss_after"] <= result["rss_before"] + 64
