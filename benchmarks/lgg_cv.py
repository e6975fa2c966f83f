"""Patient-level cross-validation on LGG: which part of the pipeline generalises to new patients?

Usage::

    python benchmarks/lgg_cv.py --configs recipe,monai --out benchmarks/results/lgg_cv.jsonl
    python benchmarks/lgg_cv.py --summary benchmarks/results/lgg_cv.jsonl

The 8 LGG patients of ``../shared/data/lgg_mri`` are split into 4 folds of 2 (a fixed
permutation, seed 0). For each configuration and fold, a model is trained on the other 6
patients for a fixed number of steps (``--steps``: machine load does not change what is
compared) and scored on the 2 held-out patients with the issue's metric: the mean Dice over
each patient's tumour slices (no TTA). Every held-out patient is also scored on a *stressed*
copy of its slices whose pre-contrast channel (channel 0) has a bright, text-marked
background -- the acquisition that made one kept-back patient fail.

Slices are halved (``target_spacing: [2, 2]``, 128x128) to keep each run to minutes on a
2-core CPU; predictions are resampled back and scored at full resolution.

Results are appended as one JSON line per (configuration, fold) to ``--out``; finished pairs
are skipped, so the command can be re-run to resume. ``--summary`` prints the table: per
configuration the mean over the 8 held-out patients, the per-fold means and their spread.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("SEGLOC_DATA", HERE.parent.parent / "shared" / "data")) / "lgg_mri"

# fixed settings of every run (the LGG recipe of benchmarks/train_real.py at half resolution,
# float32: this CPU has no native bfloat16)
BASE = dict(
    model="unet",
    base_channels=16,
    depth=4,
    patch=[128],
    batch=4,
    target_spacing=[2.0, 2.0],
    samples_per_epoch=100,
    optimizer="adamw",
    lr=2e-3,
    schedule="poly",
    precision="fp32",
    foreground_fraction=0.5,
    device="cpu",
    panels=0,
    # one thread: on this shared 2-core machine two OpenMP threads waiting for each other
    # ran the same steps up to 60x slower (the planner's probe found it; see docs/planning.md)
    threads=1,
)

# the plan's choices for lgg_mri that differ from BASE
PLAN = {
    "depth": 5,
    "normalize": "body",
    "ema": 0.999,
    "warmup": 0.044,
    "foreground_fraction": 1 / 3,
    "augment_kwargs": {"per_channel": True, "p_intensity": 0.5, "shift": [-0.3, 0.3]},
}
# what the planner picks since commit 2538614
PLAN_INSTANCE = {**PLAN, "extra_model_kwargs": {"norm": "instance"}}
# the plain MONAI recipe in segloc's pipeline: instance norm (BasicUNet's), left-right flips
# only, AdamW 1e-3 constant, all patients, last weights
MONAI_LIKE = {
    "extra_model_kwargs": {"norm": "instance"},
    "augment": "light",
    "augment_kwargs": {"flip_axes": [1], "p_rot90": 0.0},
    "lr": 1e-3,
    "schedule": "constant",
}

# name -> (settings over BASE, how the 6 training patients are used)
#   "split": 4 train + 2 validation patients, the best validation checkpoint (the recipe)
#   "all": all 6 train, the last weights (validation only at the end, never chosen on)
CONFIGS: dict[str, tuple[dict, str]] = {
    # segloc's LGG recipe: full augmentation, z-score per slice and channel, best of 2 patients
    "recipe": ({}, "split"),
    # the recipe trained on all 6 patients, last weights: the split and the checkpoint choice
    "recipe-all-last": ({}, "all"),
    "monai-like": (MONAI_LIKE, "all"),
    # one thing at a time from recipe-all-last
    "all-last-instance": ({"extra_model_kwargs": {"norm": "instance"}}, "all"),
    "all-last-lrflip": (
        {"augment": "light", "augment_kwargs": {"flip_axes": [1], "p_rot90": 0.0}},
        "all",
    ),
    "all-last-body": ({"normalize": "body"}, "all"),
    "all-last-body-shift": (
        {
            "normalize": "body",
            "augment_kwargs": {"per_channel": True, "p_intensity": 0.5, "shift": [-0.3, 0.3]},
        },
        "all",
    ),
    "all-ema-body-shift": (
        {
            "normalize": "body",
            "ema": 0.999,
            "augment_kwargs": {"per_channel": True, "p_intensity": 0.5, "shift": [-0.3, 0.3]},
        },
        "all",
    ),
    "all-ema-body": ({"normalize": "body", "ema": 0.999}, "all"),
    # what `segloc plan` chooses for lgg_mri (depth 5: poolings until the map is 4-8 pixels,
    # warm-up, EMA, last weights), at this benchmark's half resolution and fixed steps
    "plan": (PLAN, "all"),
    # one thing at a time from the plan
    "plan-instance": (PLAN_INSTANCE, "all"),
    "plan-depth4": ({**PLAN, "depth": 4}, "all"),
    # the plan as chosen since instance norm (commit 2538614), with the recipe's checkpoint
    # rule: 4 of the 6 patients train, the best epoch on the other 2 is kept
    "plan-instance-split": (PLAN_INSTANCE, "split"),
    # the same plan with another seed (weights, draws, augmentation): the noise of one run
    "plan-instance-seed1": ({**PLAN_INSTANCE, "seed": 1}, "all"),
    "plan-instance-seed2": ({**PLAN_INSTANCE, "seed": 2}, "all"),
    # the recipe with another seed (which also draws which 2 of the 6 patients validate)
    "recipe-seed1": ({"seed": 1}, "split"),
    "plan-instance-depth4": ({**PLAN_INSTANCE, "depth": 4}, "all"),
    # foreground draws kept on the drawn slice (segloc before `foreground_cases`): with whole
    # slices as patches, oversampling then changed no patch, and a third of the draws held
    # tumour whatever `foreground_fraction` said
    "plan-case-order": ({**PLAN, "foreground_cases": False}, "all"),
    "recipe-case-order": ({"foreground_cases": False}, "split"),
    "monai-like-case-order": ({**MONAI_LIKE, "foreground_cases": False}, "all"),
    "split-ema-body-shift": (
        {
            "normalize": "body",
            "ema": 0.999,
            "augment_kwargs": {"per_channel": True, "p_intensity": 0.5, "shift": [-0.3, 0.3]},
        },
        "split",
    ),
}


def patients() -> list[str]:
    return sorted(p.name for p in (DATA / "images").iterdir() if p.is_dir())


def folds(seed: int = 0) -> list[list[str]]:
    names = patients()
    order = np.random.default_rng(seed).permutation(len(names))
    return [sorted(names[i] for i in order[k : k + 2]) for k in range(0, len(names), 2)]


def _link_patients(folder: Path, names: list[str]) -> Path:
    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        for name in names:
            link = folder / sub / name
            if not link.exists():
                link.symlink_to((DATA / sub / name).resolve())
    return folder


def _stressed(image: np.ndarray) -> np.ndarray:
    """The slice with channel 0's dark frame made bright and marked with text."""
    from PIL import Image, ImageDraw

    from segloc.engine.preprocess import body_mask

    out = image.copy()
    frame = ~body_mask(np.moveaxis(image, -1, 0))
    bright = np.full(image.shape[:2], 170, np.uint8)
    canvas = Image.fromarray(bright)
    draw = ImageDraw.Draw(canvas)
    for row in range(4, image.shape[0], 40):
        draw.text((4, row), "L  R  PRE 3.0T  SE 5", fill=255)
    channel = out[..., 0]
    channel[frame] = np.asarray(canvas)[frame]
    return out


def _score(run: Path, test: list[str]) -> dict:
    """Dice on tumour slices per held-out patient, plain and stressed (no TTA)."""
    from segloc.engine.data import find_cases, load_case
    from segloc.engine.infer import Predictor
    from segloc.io import read_image
    from segloc.metrics import dice

    predictor = Predictor(run, device="cpu", tta=False)
    per: dict[str, dict[str, list[float]]] = {}
    for case in find_cases(DATA):
        patient = case.name.split("/")[0]
        if patient not in test:
            continue
        _, labels, _ = load_case(case)
        if not labels.any():
            continue
        image, meta = read_image(case.image)
        for kind, x in (("plain", image), ("stressed", _stressed(image))):
            pred = predictor.predict(x, spacing=meta.spacing).argmax(0) > 0
            per.setdefault(patient, {}).setdefault(kind, []).append(float(dice(pred, labels > 0)))
    return {
        p: {k: round(float(np.mean(v)), 4) for k, v in kinds.items()} for p, kinds in per.items()
    }


def run_one(name: str, fold: int, steps: int, work: Path) -> dict:
    from segloc.engine.train import train

    settings, use = CONFIGS[name]
    test = folds()[fold]
    train_names = [p for p in patients() if p not in test]
    base = work / f"fold{fold}"
    data = _link_patients(base / "train", train_names)
    out = work / f"{name}_fold{fold}"
    if out.exists():
        shutil.rmtree(out)
    per_epoch = BASE["samples_per_epoch"] // BASE["batch"]
    cfg = {**BASE, **settings, "data": str(data), "out": str(out)}
    cfg["epochs"] = max(1, steps // per_epoch)
    if use == "split":
        cfg.update(group_by="folder", val_fraction=1 / 3, val_every=1, select="best")
    else:
        cfg.update(val=str(_link_patients(base / "test", test)), val_every=10_000, select="last")
    t0 = time.perf_counter()
    result = train(cfg, progress=False)
    seconds = time.perf_counter() - t0
    scores = _score(out, test)
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=HERE, capture_output=True, text=True
    ).stdout.strip()
    return {
        "config": name,
        "commit": commit,
        "fold": fold,
        "test": test,
        "steps": result.history[-1]["step"],
        "best_epoch": result.best_epoch,
        "epochs": result.epochs,
        "train_seconds": round(seconds, 1),
        "scores": scores,
    }


def summary(path: Path) -> str:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["config"], []).append(r)
    lines = [
        "| config | folds | mean Dice, 8 patients (plain) | per fold | spread (max-min) "
        "| stressed | per patient (plain) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in [c for c in CONFIGS if c in by] + sorted(set(by) - set(CONFIGS)):
        rs = sorted(by[name], key=lambda r: r["fold"])
        plain = [s["plain"] for r in rs for s in r["scores"].values()]
        stressed = [s["stressed"] for r in rs for s in r["scores"].values()]
        fold_means = [np.mean([s["plain"] for s in r["scores"].values()]) for r in rs]
        patients_text = ", ".join(
            f"{p[-8:]} {s['plain']:.2f}" for r in rs for p, s in sorted(r["scores"].items())
        )
        lines.append(
            f"| {name} | {len(rs)} | {np.mean(plain):.3f} | "
            f"{' / '.join(f'{m:.2f}' for m in fold_means)} | "
            f"{max(fold_means) - min(fold_means):.2f} | {np.mean(stressed):.3f} | "
            f"{patients_text} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--folds", default="0,1,2,3")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/lgg_cv.jsonl"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/segloc-lgg-cv"))
    parser.add_argument("--summary", type=Path, help="print the table of this results file")
    args = parser.parse_args(argv)
    if args.summary:
        print(summary(args.summary))
        return 0
    done = set()
    if args.out.is_file():
        for line in args.out.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                done.add((r["config"], r["fold"]))
    # fold by fold: every configuration is compared on the same patients early on
    for fold in (int(f) for f in args.folds.split(",")):
        for name in args.configs.split(","):
            if (name, fold) in done:
                continue
            result = run_one(name, fold, args.steps, args.work)
            result["command_steps"] = args.steps
            with args.out.open("a") as f:
                f.write(json.dumps(result) + "\n")
            print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent / "src"))
    sys.exit(main())
