"""Dataset fingerprints: segloc's against MONAI Auto3DSeg's ``DataAnalyzer``, same folders, one run.

    python benchmarks/fingerprint.py [--repeat 5] [--out benchmarks/results/fingerprint.md]

Issue 16 asks that fingerprinting a 1,000-case dataset take seconds and never hold all its
images at once. Two folders of real data:

- ``hippocampus``: the 200 MR volumes and labels of ``$SEGLOC_DATA/hippocampus``;
- ``lgg x R``: the LGG MRI slices and masks (236 RGB PNG pairs, 8 patients), each linked ``R``
  times (``--repeat``, default 5: 1,180 cases) under new names into a temporary folder:
  the same pixels, so a folder of the asked size without copies.

Each measurement is a fresh process (interpreter start not counted): wall time of the call,
its peak RSS (``VmHWM`` reset before it) and the cases it read. segloc:
``segloc.engine.fingerprint.fingerprint(root, cache=False)`` (what ``segloc plan`` computes
before it plans; every case read once, one at a time). MONAI:
``DataAnalyzer(datalist, device="cpu", worker=0, do_ccp=True).get_all_case_stats()``, the
statistics Auto3DSeg plans from (intensity, shapes, spacings, labels with connected
components), on the same image/label pairs. The two do not compute identical figures; the
columns ``median shape`` and ``median spacing`` show that both read the same data.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _timing import format_markdown, peak_rss_mib, reset_peak_rss, run_header, run_worker  # noqa: E402

DATA = Path(os.environ.get("SEGLOC_DATA", HERE.parent.parent / "shared" / "data"))


def _pairs(root: Path) -> list[tuple[Path, Path]]:
    """(image, label) pairs of a dataset folder, as segloc pairs them."""
    from segloc.engine.data import find_cases

    return [(Path(c.image), Path(c.label)) for c in find_cases(root)]


def linked_lgg(dest: Path, repeat: int) -> Path:
    """The LGG slices linked ``repeat`` times under new patient and file names."""
    src = DATA / "lgg_mri"
    for image, label in _pairs(src):
        patient = image.parent.name
        for r in range(repeat):
            new = f"{patient}_r{r}"
            for path, kind in ((image, "images"), (label, "masks")):
                name = path.name.replace(patient, new, 1)
                link = dest / kind / new / name
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(path)
    return dest


def _worker_segloc(root: Path) -> dict:
    import numpy as np

    from segloc.engine.fingerprint import fingerprint

    reset_peak_rss()
    t0 = time.perf_counter()
    fp = fingerprint(root, cache=False)
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "peak_mib": peak_rss_mib(),
        "cases": fp.n_cases,
        "median shape": "x".join(str(int(v)) for v in np.median(fp.shapes, axis=0)),
        "median spacing": "x".join(f"{v:g}" for v in np.median(fp.spacings, axis=0)),
    }


def _worker_monai(root: Path) -> dict:
    from monai.apps.auto3dseg import DataAnalyzer

    pairs = _pairs(root)
    datalist = {
        "training": [
            {"image": str(i.relative_to(root)), "label": str(lab.relative_to(root))}
            for i, lab in pairs
        ]
    }
    with tempfile.TemporaryDirectory() as tmp:
        analyzer = DataAnalyzer(
            datalist, str(root), output_path=str(Path(tmp) / "stats.yaml"), device="cpu",
            worker=0, do_ccp=True,
        )  # fmt: skip
        reset_peak_rss()
        t0 = time.perf_counter()
        stats = analyzer.get_all_case_stats()
        seconds = time.perf_counter() - t0
    summary = stats["stats_summary"]["image_stats"]
    shape = summary.get("shape", {}).get("percentile_50_0") or summary.get("shape", {}).get(
        "median"
    )
    spacing = summary.get("spacing", {}).get("median")
    return {
        "seconds": seconds,
        "peak_mib": peak_rss_mib(),
        "cases": len(stats["stats_by_cases"]),
        "median shape": "x".join(f"{v:g}" for v in _flat(shape)) if shape else "",
        "median spacing": "x".join(f"{v:g}" for v in _flat(spacing)) if spacing else "",
    }


def _flat(value) -> list[float]:
    out = []
    for v in value if isinstance(value, list) else [value]:
        out.extend(_flat(v) if isinstance(v, list) else [float(v)])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=5, help="times each LGG case is linked")
    p.add_argument("--out", type=Path, help="also write the table to this markdown file")
    p.add_argument("--worker", nargs=2, metavar=("TOOL", "ROOT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        tool, root = args.worker
        fn = _worker_segloc if tool == "segloc" else _worker_monai
        print(json.dumps(fn(Path(root))))
        return 0
    header = run_header(f"python benchmarks/fingerprint.py {' '.join(argv or sys.argv[1:])}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folders = {
            "hippocampus": DATA / "hippocampus",
            f"lgg x {args.repeat}": linked_lgg(Path(tmp) / "lgg", args.repeat),
        }
        for name, root in folders.items():
            for tool in ("segloc", "monai"):
                r = run_worker([__file__, "--worker", tool, str(root)], timeout=3600)
                rows.append({"folder": name, "tool": tool, **r})
                print(rows[-1], flush=True)
    for name in {r["folder"] for r in rows}:
        ours = next(r for r in rows if r["folder"] == name and r["tool"] == "segloc")
        theirs = next(r for r in rows if r["folder"] == name and r["tool"] == "monai")
        if "seconds" in ours and "seconds" in theirs:
            ours["MONAI time / segloc"] = theirs["seconds"] / ours["seconds"]
            ours["segloc RSS / MONAI"] = ours["peak_mib"] / theirs["peak_mib"]
    columns = ["folder", "tool", "cases", "seconds", "peak_mib", "median shape",
               "median spacing", "MONAI time / segloc", "segloc RSS / MONAI", "error"]  # fmt: skip
    table = header + "\n\n" + format_markdown(rows, columns) + "\n"
    print(table)
    if args.out:
        args.out.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
