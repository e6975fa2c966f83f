"""``segloc serve``: the browser app (needs the ``serve`` extra)."""

from __future__ import annotations

import argparse
import sys

from segloc.cli.arguments import finite_float


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="open the browser app: segment, correct, localize and score (needs segloc[serve])",
        description="Serve the segloc page and its HTTP API (offline; API reference at "
        "/api/reference). Binds to loopback unless --allow-remote.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--data", help="folder whose images and volumes the page lists")
    p.add_argument("--runs", help="folder of trained runs the page can predict with")
    p.add_argument("--allow-remote", action="store_true", help="allow a --host other than loopback")
    p.add_argument("--max-upload-mib", type=int, default=512, help="largest upload")
    p.add_argument("--max-voxels", type=int, default=None, help="largest image (default 2**27)")
    p.add_argument("--max-session-mib", type=int, default=None, help="memory per session")
    p.add_argument("--max-memory-mib", type=int, default=None, help="memory of all sessions")
    p.add_argument(
        "--session-ttl", type=finite_float, default=None, help="idle seconds before expiry"
    )
    p.add_argument("--workers", type=int, default=None, help="threads for heavy work")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from segloc.serve import Limits, run
    except ImportError as exc:  # fastapi/uvicorn are the optional `serve` extra
        print(f"segloc serve: error: {exc}; pip install segloc[serve]", file=sys.stderr)
        return 2
    mib = 1 << 20
    values = {
        "max_upload_bytes": args.max_upload_mib and args.max_upload_mib * mib,
        "max_voxels": args.max_voxels,
        "max_session_bytes": args.max_session_mib and args.max_session_mib * mib,
        "max_total_bytes": args.max_memory_mib and args.max_memory_mib * mib,
        "session_ttl": args.session_ttl,
        "workers": args.workers,
    }
    limits = Limits(**{k: v for k, v in values.items() if v is not None})
    run(args.host, args.port, args.data, args.runs, args.allow_remote, limits)
    return 0
