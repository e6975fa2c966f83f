"""2D or 3D on thick-slice volumes: hippocampus MRI made 4x anisotropic, then a no-flag run.

The hippocampus volumes of ``../shared/data/hippocampus`` are 1 mm isotropic. This script
writes a copy with slices 4 mm thick along the last axis (each image slice the mean of 4
consecutive ones, as a thick acquisition integrates them; each label slice the label at the
block's centre), so that the planner's anisotropy rule (> 3x) applies and it tries a 2D
network on the slices beside the 3D one. Then it runs ``segloc train --data COPY
--time-budget T`` with no other flag and prints what the run decided (``network.json``).

    python benchmarks/thick_slices.py --budget 10m --out benchmarks/results/thick_slices.md

The copy lives in a temporary folder (never in the repository).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "hippocampus"
THICK = 4


def make_thick(source: Path, dest: Path, *, thick: int = THICK) -> Path:
    """Write ``source`` (``images/``, ``labels/`` NIfTI) with slices ``thick`` voxels thick
    along the last axis into ``dest``; returns ``dest``."""
    for sub in ("images", "labels"):
        (dest / sub).mkdir(parents=True, exist_ok=True)
    for path in sorted((source / "images").glob("*.nii.gz")):
        image = nib.load(path)
        labels = nib.load(source / "labels" / path.name)
        x = np.asarray(image.dataobj, dtype=np.float32)
        y = np.asarray(labels.dataobj).astype(np.uint8)
        n = x.shape[2] // thick * thick
        x = x[:, :, :n].reshape(*x.shape[:2], -1, thick).mean(axis=3)
        y = y[:, :, thick // 2 : n : thick]
        affine = image.affine.copy()
        affine[:3, 2] *= thick
        for sub, arr in (("images", x.astype(np.float32)), ("labels", y)):
            out = nib.Nifti1Image(arr, affine)
            out.header.set_zooms(
                (*image.header.get_zooms()[:2], image.header.get_zooms()[2] * thick)
            )
            nib.save(out, dest / sub / path.name)
    return dest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--budget", default="10m")
    ap.add_argument("--copy", default=None, help="folder for the thick copy (default: a temp dir)")
    ap.add_argument("--plan-only", action="store_true", help="print the plan, do not train")
    ap.add_argument(
        "--alone",
        action="store_true",
        help="then train each network's plan alone on the whole budget (what trying both costs)",
    )
    ap.add_argument("--out", default=None, help="write the result as Markdown here")
    args = ap.parse_args(argv)
    tmp = tempfile.TemporaryDirectory(prefix="segloc-thick-")
    copy = Path(args.copy or tmp.name) / "hippocampus_thick"
    if not (copy / "images").is_dir():
        make_thick(Path(args.data), copy)
    segloc = [sys.executable, "-m", "segloc.cli"]
    if args.plan_only:
        return subprocess.call([*segloc, "plan", "--data", str(copy), "--time-budget", args.budget])
    run = Path(tmp.name) / "run"
    t0 = time.perf_counter()
    subprocess.run(
        [*segloc, "train", "--data", str(copy), "--time-budget", args.budget, "--out", str(run)],
        check=True,
    )
    seconds = time.perf_counter() - t0
    choice = json.loads((run / "network.json").read_text())
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    lines = [
        f"# 2D or 3D on thick-slice hippocampus ({THICK} mm slices), no-flag run of {args.budget}",
        "",
        f"commit {commit}, {platform.processor() or platform.machine()}, "
        f"{time.strftime('%Y-%m-%d')}, wall time {seconds:.0f} s",
        f"command: `python benchmarks/thick_slices.py --budget {args.budget}"
        + (" --alone" if args.alone else "")
        + "`",
        "",
        "| network | validation mean Dice | steps |",
        "|---|---|---|",
    ]
    for name, row in choice["networks"].items():
        lines.append(f"| {name} | {row['score']:.4f} | {row.get('steps', '')} |")
    lines += ["", f"kept: **{choice['chosen']}** ({choice['reason']})"]
    if args.alone:
        lines += [
            "",
            f"Each plan alone on the whole {args.budget} (`segloc train --config "
            f"RUN/K/plan.yaml --time-budget {args.budget}`: the width and cadence chosen "
            "for half the budget, the schedule on the whole):",
            "",
            "| network alone | validation mean Dice | steps |",
            "|---|---|---|",
        ]
        for name in choice["networks"]:
            alone = Path(tmp.name) / f"alone-{name}"
            subprocess.run(
                [*segloc, "train", "--config", str(run / name / "plan.yaml"), "--time-budget",
                 args.budget, "--out", str(alone), "-q"],
                check=True,
            )  # fmt: skip
            score = json.loads((alone / "decisions.json").read_text())["score"]
            with open(alone / "metrics.csv") as f:
                steps = f.read().strip().splitlines()[-1].split(",")[1]
            lines.append(f"| {name} | {score:.4f} | {steps} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
