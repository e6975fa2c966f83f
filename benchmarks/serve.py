"""How fast `segloc serve` answers, in a real browser and under load, on this machine.

    python benchmarks/serve.py [--out benchmarks/results/serve.md] [--clicks 30]
        [--requests 300] [--clients 8] [--predictions 4] [--screenshot docs/img/serve.png]

Starts `segloc serve` as a subprocess on a free loopback port, then measures:

- click-to-overlay: region growing on a 512x512 ISBI 2012 slice, from the click in Chromium to
  the redrawn overlay (the page's own timer: segment request + mask-slice request + drawing),
  p50/p95 over ``--clicks`` clicks (a click = a new seed; all seeds regrow each time);
- scrolling: every slice of a synthetic 256x256x200 float32 volume fetched and drawn in turn
  (image and mask slice per frame), frames per second;
- a 100-point brush stroke: one request, milliseconds to the server's answer and to the
  redrawn overlay;
- load: ``--requests`` region growings on 512x512 slices from ``--clients`` concurrent clients
  (each its own session and connection) while ``--predictions`` model predictions (a tiny
  untrained 2D U-Net, 128x128 windows over the 512x512 slice) run at once: throughput,
  p50/p95 latency, failures, and the server's resident memory before, at the end and after
  the sessions are closed.

Browser and load traffic go to 127.0.0.1 only; the page's requests to any other host are
aborted (and counted). The browser part needs Playwright and Debian's Chromium
(``apt-get install chromium``); without them it is left out with a note. Synthetic data is used
for timing only. Prints a markdown table (and writes it to ``--out``).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SEGLOC_DATA", REPO.parent / "shared" / "data"))
ISBI = "isbi2012/images/1.png"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


# --------------------------------------------------------------------------- set-up


def make_data(root: Path) -> Path:
    """A data folder: the real ISBI slice 1 (linked) and a synthetic 256x256x200 volume."""
    import nibabel as nib

    if not (DATA / ISBI).exists():
        raise SystemExit(f"{DATA / ISBI}: not found (set SEGLOC_DATA)")
    (root / "isbi2012" / "images").mkdir(parents=True)
    (root / ISBI).symlink_to(DATA / ISBI)
    vol = np.random.default_rng(0).normal(100, 20, (256, 256, 200)).astype(np.float32)
    (root / "synthetic").mkdir()
    nib.save(nib.Nifti1Image(vol, np.eye(4)), root / "synthetic" / "scroll200.nii")
    return root


def make_run(folder: Path) -> Path:
    """A tiny untrained 2D U-Net checkpoint (timing only: its masks mean nothing)."""
    import torch

    from segloc.nn import create_model
    from segloc.nn.checkpoint import save_checkpoint

    torch.manual_seed(0)
    kw = {"in_channels": 1, "num_classes": 2, "base_channels": 8, "depth": 3, "dims": 2}
    extra = {
        "dims": 2,
        "in_channels": 1,
        "num_classes": 2,
        "normalize": "zscore",
        "patch_size": [128, 128],
        "target_spacing": None,
        "ignore_index": None,
        "label_mapping": "auto",
    }
    model = create_model("unet", **kw)
    save_checkpoint(folder / "tiny" / "best.safetensors", "unet", kw, model, extra=extra)
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data: Path, runs: Path) -> tuple[subprocess.Popen, str]:
    """`segloc serve` in a subprocess on a free loopback port; returns it and its URL.

    The server's log goes to a temporary file (``proc.log``), read back if it fails to start.
    """
    port = free_port()
    paths = [str(REPO / "src"), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    log = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "segloc.cli", "serve", "--port", str(port), "--data", str(data),
         "--runs", str(runs)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    proc.log = log  # type: ignore[attr-defined]
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            text = log.read()
            log.close()
            raise RuntimeError(f"server exited: {text}")
        try:
            with urllib.request.urlopen(base + "/api/health", timeout=1) as r:
                if r.status == 200:
                    return proc, base
        except OSError:
            time.sleep(0.1)
    stop_server(proc)
    raise RuntimeError("server did not start within 60 s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    log = getattr(proc, "log", None)
    if log is not None:
        log.close()


def rss_mib(pid: int) -> float:
    """Resident memory of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def percentile(values, q: float) -> float:
    return float(np.percentile(np.asarray(values, float), q)) if len(values) else float("nan")


# --------------------------------------------------------------------------- HTTP


class Client:
    """One keep-alive connection to the server, as one browser tab would hold."""

    def __init__(self, base: str) -> None:
        url = urlparse(base)
        self.conn = http.client.HTTPConnection(url.hostname, url.port, timeout=120)

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict | bytes]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        self.conn.request(method, path, body=data, headers=headers)
        r = self.conn.getresponse()
        payload = r.read()
        if r.headers.get("Content-Type", "").startswith("application/json"):
            return r.status, json.loads(payload or b"null")
        return r.status, payload

    def close(self) -> None:
        self.conn.close()


def open_session(client: Client, name: str = ISBI) -> str:
    status, info = client.call("POST", "/api/sessions/open", {"name": name})
    if status != 201:
        raise RuntimeError(f"open {name}: {status} {info}")
    return info["id"]


def predict(client: Client, sid: str, model: str = "tiny") -> tuple[bool, float, str]:
    t0 = time.perf_counter()
    status, job = client.call("POST", f"/api/sessions/{sid}/predict", {"model": model})
    if status != 202:
        return False, time.perf_counter() - t0, f"{status} {job}"
    while job["state"] in ("queued", "running"):
        time.sleep(0.05)
        status, job = client.call("GET", f"/api/jobs/{job['id']}")
    return job["state"] == "done", time.perf_counter() - t0, job.get("error") or ""


def load_test(base: str, pid: int, *, requests: int, clients: int, predictions: int) -> dict:
    """Region growings from concurrent clients while predictions run; latencies and memory."""
    rng = np.random.default_rng(0)
    warm = Client(base)  # warm-up: kernels compiled, the model loaded, then the session closed
    sid = open_session(warm)
    grow = {"method": "region-grow", "seeds": [{"index": [100, 100]}], "tolerance": 40}
    warm.call("POST", f"/api/sessions/{sid}/segment", grow)
    ok, _, error = predict(warm, sid)
    if not ok:
        raise RuntimeError(f"warm-up prediction failed: {error}")
    warm.call("DELETE", f"/api/sessions/{sid}")
    warm.close()
    time.sleep(0.5)
    rss_before = rss_mib(pid)

    seeds = rng.integers(0, 512, size=(requests, 2)).tolist()
    next_job = iter(range(requests))
    lock = threading.Lock()
    latencies: list[float] = []
    failures: list[str] = []
    pred_times: list[float] = []
    sessions: list[str] = []

    def grower() -> None:
        client = Client(base)
        sid = open_session(client)
        with lock:
            sessions.append(sid)
        while True:
            with lock:
                k = next(next_job, None)
            if k is None:
                break
            body = {"method": "region-grow", "seeds": [{"index": seeds[k]}], "tolerance": 40}
            t0 = time.perf_counter()
            status, answer = client.call("POST", f"/api/sessions/{sid}/segment", body)
            ms = (time.perf_counter() - t0) * 1000
            with lock:
                latencies.append(ms)
                if status != 200:
                    failures.append(f"{status} {answer}")
        client.close()

    def predictor() -> None:
        client = Client(base)
        sid = open_session(client)
        with lock:
            sessions.append(sid)
        ok, seconds, error = predict(client, sid)
        with lock:
            pred_times.append(seconds)
            if not ok:
                failures.append(f"prediction: {error}")
        client.close()

    threads = [threading.Thread(target=grower) for _ in range(clients)]
    threads += [threading.Thread(target=predictor) for _ in range(predictions)]
    peak = rss_before
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        peak = max(peak, rss_mib(pid))
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    rss_end = rss_mib(pid)
    closer = Client(base)
    for sid in sessions:
        closer.call("DELETE", f"/api/sessions/{sid}")
    closer.close()
    time.sleep(1.0)
    return {
        "requests": len(latencies),
        "clients": clients,
        "predictions": len(pred_times),
        "failures": failures,
        "seconds": wall,
        "throughput": len(latencies) / wall,
        "p50": percentile(latencies, 50),
        "p95": percentile(latencies, 95),
        "prediction_s": max(pred_times) if pred_times else float("nan"),
        "rss_before": rss_before,
        "rss_peak": peak,
        "rss_end": rss_end,
        "rss_after": rss_mib(pid),
    }


# --------------------------------------------------------------------------- browser


def find_chromium() -> str | None:
    for candidate in (os.environ.get("SEGLOC_CHROMIUM"), "/usr/bin/chromium"):
        if candidate and Path(candidate).exists():
            return candidate
    return shutil.which("chromium") or shutil.which("chromium-browser")


def browser_measurements(base: str, chromium: str, *, clicks: int, screenshot: Path | None) -> dict:
    """Click-to-overlay, scrolling and brush timings in Chromium, offline."""
    from playwright.sync_api import sync_playwright

    blocked: list[str] = []

    def offline(route) -> None:
        url = urlparse(route.request.url)
        if url.scheme in ("data", "blob") or url.hostname == "127.0.0.1":
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    out: dict = {}
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile,
            executable_path=chromium,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        context.route("**/*", offline)
        page = context.pages[0] if context.pages else context.new_page()
        page.goto(base + "/")
        page.wait_for_function("window.segloc && window.segloc.ready")

        def open_data(name: str) -> None:
            page.select_option("#data-list", name)
            page.click("#data-open")
            page.wait_for_function(
                "([n]) => { const s = segloc.state; return s.session && s.session.name === n"
                " && s.image !== null && s.mask !== null; }",
                arg=[Path(name).name],
            )

        def point(row: float, col: float) -> tuple[float, float]:
            box = page.locator("#overlay").bounding_box()
            rows, cols = page.evaluate("[segloc.state.image.rows, segloc.state.image.cols]")
            return (box["x"] + (col + 0.5) * box["width"] / cols,
                    box["y"] + (row + 0.5) * box["height"] / rows)  # fmt: skip

        # click-to-overlay on the 512x512 slice: each click adds a seed and regrows all seeds
        open_data(ISBI)
        page.locator("#tolerance").evaluate(
            "(el) => { el.value = 40; el.dispatchEvent(new Event('input')); }"
        )
        rng = np.random.default_rng(1)
        for k, (r, c) in enumerate(rng.integers(8, 504, size=(clicks, 2)).tolist()):
            page.mouse.click(*point(r, c))
            page.wait_for_function(f"segloc.metrics.clicks.length >= {k + 1}")
        times = page.evaluate("segloc.metrics.clicks")
        out.update(
            click_p50=percentile(times, 50), click_p95=percentile(times, 95), clicks=len(times)
        )

        # a 100-point brush stroke
        page.check("input[name=tool][value=brush]")
        strokes: list[str] = []
        page.on("request", lambda req: "/strokes" in req.url and strokes.append(req.url))
        path = [(60 + 3.5 * k, 256 + 120 * np.sin(k / 9)) for k in range(100)]
        page.mouse.move(*point(*path[0]))
        page.mouse.down()
        for r, c in path[1:]:
            page.mouse.move(*point(r, c))
        page.mouse.up()
        page.wait_for_function("segloc.metrics.strokes.length === 1")
        stroke = page.evaluate("segloc.metrics.strokes[0]")
        out.update(
            stroke_points=stroke["points"],
            stroke_requests=len(strokes),
            stroke_request_ms=stroke["requestMs"],
            stroke_total_ms=stroke["totalMs"],
        )
        if screenshot is not None:
            page.check("input[name=tool][value=seed]")
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot))

        # scrolling through 200 slices, each fetched and drawn
        open_data("synthetic/scroll200.nii")
        seconds = page.evaluate(
            "async () => { const t0 = performance.now();"
            " for (let i = 0; i < 200; i++) await segloc.showSlice(i);"
            " return (performance.now() - t0) / 1000; }"
        )
        out["scroll_fps"] = 200 / seconds
        context.close()
    out["blocked"] = blocked
    return out


# --------------------------------------------------------------------------- report


def commit() -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def report(browser: dict | None, load: dict, args: argparse.Namespace) -> str:
    load1 = os.getloadavg()[0]
    lines = [
        f"# segloc serve: latency and load ({datetime.now():%Y-%m-%d %H:%M}, commit {commit()})",
        "",
        f"`python benchmarks/serve.py` on {platform.machine()}, {os.cpu_count()} cores, "
        f"load average {load1:.2f} at the end (an idle machine is near 0).",
        "",
        "| measurement | target | measured |",
        "|---|---|---|",
    ]
    if browser is None:
        lines.append("| browser measurements | | not run: no Playwright or Chromium |")
    else:
        lines += [
            f"| click-to-overlay, region growing on 512x512, p50 / p95 over {browser['clicks']} "
            f"clicks | p95 <= 300 ms | "
            f"{browser['click_p50']:.0f} / {browser['click_p95']:.0f} ms |",
            f"| scrolling a 256x256x200 volume, every slice fetched and drawn | >= 15 frames/s | "
            f"{browser['scroll_fps']:.1f} frames/s |",
            f"| {browser['stroke_points']}-point brush stroke: requests, to answer, to overlay | "
            f"1 request, <= 100 ms | {browser['stroke_requests']}, "
            f"{browser['stroke_request_ms']:.0f} ms, {browser['stroke_total_ms']:.0f} ms |",
            f"| page requests to other hosts (aborted) | 0 | {len(browser['blocked'])} |",
        ]
    lines += [
        f"| load: {load['requests']} region growings (512x512) from {load['clients']} clients "
        f"+ {load['predictions']} predictions | no failure | {len(load['failures'])} failed |",
        f"| load: throughput, p50 / p95 latency | | {load['throughput']:.1f} requests/s, "
        f"{load['p50']:.0f} / {load['p95']:.0f} ms |",
        f"| load: slowest of the {load['predictions']} concurrent predictions | | "
        f"{load['prediction_s']:.1f} s |",
        f"| load: server RSS before / peak / end / after closing sessions | back to baseline | "
        f"{load['rss_before']:.0f} / {load['rss_peak']:.0f} / {load['rss_end']:.0f} / "
        f"{load['rss_after']:.0f} MiB |",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the table here")
    parser.add_argument("--clicks", type=int, default=30)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--predictions", type=int, default=4)
    parser.add_argument("--screenshot", type=Path, help="save the page after the clicks here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="segloc-bench-") as tmp:
        data = make_data(Path(tmp) / "data")
        runs = make_run(Path(tmp) / "runs")
        proc, base = start_server(data, runs)
        try:
            chromium = find_chromium()
            browser = None
            try:
                import playwright  # noqa: F401

                if chromium is None:
                    print("browser measurements left out: no Chromium", file=sys.stderr)
                else:
                    browser = browser_measurements(
                        base, chromium, clicks=args.clicks, screenshot=args.screenshot
                    )
            except ImportError:
                print("browser measurements left out: no Playwright", file=sys.stderr)
            load = load_test(
                base, proc.pid, requests=args.requests, clients=args.clients,
                predictions=args.predictions,
            )  # fmt: skip
        finally:
            stop_server(proc)
    table = report(browser, load, args)
    print(table)
    if load["failures"]:
        print("failures:", *load["failures"][:10], sep="\n  ", file=sys.stderr)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
