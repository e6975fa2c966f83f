"""The no-flag run against the hand-made recipe and today's defaults, one dataset at a time.

Usage (one dataset per command, on an otherwise idle machine)::

    python benchmarks/plan_table.py isbi --out benchmarks/results          # 3 x 20 min
    python benchmarks/plan_table.py hippocampus --out benchmarks/results   # 3 x 30 min
    python benchmarks/plan_table.py lgg|ph2|camvid --out benchmarks/results  # 3 x 10 min
    python benchmarks/plan_table.py --table benchmarks/results             # the one table

For dataset NAME (the recipes of ``benchmarks/train_real.py``) three runs train one after the
other, each in a fresh process, for the recipe's minutes:

- ``no-flag``: ``segloc train --data ../shared/data/FOLDER --time-budget T`` and nothing
  else (the planner decides everything); scored as ``segloc predict`` uses the run folder
  (its ``model.safetensors`` with the TTA and keep-largest decisions recorded there);
- ``recipe``: the hand-made recipe (``train_real.py NAME --part segloc``), scored as
  ``train_real.py`` does (best checkpoint, flip TTA);
- ``recipe-last`` (only when asked): the recipe's run scored with its last weights and flip
  TTA, the no-flag run's checkpoint rule (with ``--reuse``, a finished recipe run in
  ``--work`` is scored, not trained again);
- ``recipe-fp32`` (only when asked): the same recipe in float32, for a CPU without native
  bfloat16 (the recipes ask for it; emulated, it is 10-30x slower);
- ``defaults``: ``segloc train --no-plan`` with only the flags that fix the split (the
  recipe's ``group_by`` / ``val_split``), i.e. the defaults a person got before planning
  (base-64 U-Net, float32, lr 1e-3, no warm-up), scored as ``segloc predict`` uses it.

All three hold out the same validation cases (checked: their ``split.json`` must agree) and
are scored with the dataset's metric (``train_real.py``'s ``_score``). The no-flag run's wall
time is measured around its process (interpreter start and imports included) and reported
against its budget. Writes ``<out>/plan_table_NAME.md`` and the run folders under ``--work``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _timing import run_header  # noqa: E402
from train_real import DATA, RECIPES, _score  # noqa: E402

DATASETS = ("isbi", "hippocampus", "lgg", "ph2", "camvid")
METRIC = {
    "dice_class_1+accuracy": "dice cell interior (255)",
    "dice_mean_classes": "mean Dice",
    "dice_positive_slices": "dice tumour-positive slices",
    "dice_class_1": "dice lesion",
    "miou": "mIoU (void ignored)",
}


def _split_flags(name: str) -> list[str]:
    """The recipe's flags that decide which cases are held out (and nothing else)."""
    train = RECIPES[name]["train"]
    flags = []
    if "group_by" in train:
        flags += ["--group-by", train["group_by"]]
    if "val_split" in train:
        flags += ["--val-split", train["val_split"]]
    if "seed" in train:
        flags += ["--seed", str(train["seed"])]
    return flags


def _cli(args: list[str]) -> tuple[float, int]:
    """Run ``segloc ARGS`` in a fresh process; its wall time and exit status."""
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "segloc.cli", *args], check=False)
    return time.perf_counter() - t0, done.returncode


def _last(run: Path, column: str) -> float:
    """The last row's ``column`` of a run's ``metrics.csv``."""
    rows = (run / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    return float(rows[-1].split(",")[header.index(column)])


def _recipe(name: str, minutes: float, work: Path, method: str) -> dict:
    """Train ``train_real.py NAME --part segloc`` (a recipe or one of its variants)."""
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, str(HERE / "train_real.py"), name, "--part", "segloc",
         "--minutes", str(minutes), "--work", str(work)],
        check=True,
    )  # fmt: skip
    return {
        "method": method,
        "run": work / f"segloc_{name}",
        "wall": time.perf_counter() - t0,
        "tta": True,
        "checkpoint": "best",
    }


def run_dataset(name: str, work: Path, only: list[str], reuse: bool = False) -> list[dict]:
    recipe = RECIPES[name]
    data = DATA / recipe["folder"]
    minutes = recipe["minutes"]
    results = []
    if "no-flag" in only:
        run = work / f"noflag_{name}"
        wall = None  # a reused run: its process wall time was not kept
        if not (reuse and (run / "model.safetensors").is_file()):
            wall, code = _cli(
                ["train", "--data", str(data), "--time-budget", f"{minutes:g}m",
                 "--out", str(run), "-q"]
            )  # fmt: skip
            if code:
                raise SystemExit(f"no-flag run of {name} failed (exit {code})")
        results.append(
            {
                "method": "no-flag (segloc train --data --time-budget)",
                "run": run,
                "wall": wall,
                "tta": None,
            }
        )
    if "recipe" in only:
        results.append(_recipe(name, minutes, work, "hand-made recipe (train_real.py)"))
    if "recipe-last" in only:
        # the recipe's own run scored with its last weights: the no-flag run's checkpoint
        # rule, so the two differ in training alone (the recipe keeps the best epoch on the
        # validation cases it is then scored on)
        wall, run = None, work / f"segloc_{name}"
        if "recipe" not in only and not (reuse and (run / "last.safetensors").is_file()):
            wall = _recipe(name, minutes, work, "")["wall"]
        results.append(
            {
                "method": "hand-made recipe, its last weights (the no-flag run's rule)",
                "run": run,
                "wall": wall,
                "tta": True,
                "checkpoint": "last",
            }
        )
    if "recipe-fp32" in only:
        # the recipes ask for bfloat16, which a CPU without it emulates at a fraction of the
        # speed (the planner's probe sees that; a recipe cannot)
        results.append(
            _recipe(f"{name}-fp32", minutes, work,
                    "hand-made recipe in float32 (train_real.py NAME-fp32)")
        )  # fmt: skip
    if "defaults" in only:
        run = work / f"defaults_{name}"
        wall, code = _cli(
            [
                "train",
                "--data",
                str(data),
                "--time-budget",
                f"{minutes:g}m",
                "--no-plan",
                *_split_flags(name),
                "--out",
                str(run),
                "-q",
            ]
        )
        if code:
            raise SystemExit(f"defaults run of {name} failed (exit {code})")
        results.append(
            {"method": "today's defaults (--no-plan)", "run": run, "wall": wall, "tta": None}
        )
    return results


def _score_all(name: str, results: list[dict]) -> list[dict]:
    recipe = RECIPES[name]
    data = DATA / recipe["folder"]
    splits = {}
    for r in results:
        run = Path(r["run"])
        splits[r["method"]] = json.loads((run / "split.json").read_text())["val"]
        r["scores"] = _score(run, data, recipe, r["tta"], checkpoint=r.get("checkpoint"))
        r["steps"] = int(_last(run, "step"))
    same = len({tuple(v) for v in splits.values()}) <= 1
    for r in results:
        r["same_split"] = same
    return results


def _report(name: str, results: list[dict], header: str) -> str:
    recipe = RECIPES[name]
    key = METRIC[recipe["metric"]]
    minutes = recipe["minutes"]
    lines = [
        f"# {name}: {', '.join(r['method'].split(' (')[0] for r in results)}, {minutes:g} min each",
        "",
        header,
        "",
        f"| method | {key} | steps | wall time (budget {minutes:g} min) |",
        "|---|---|---|---|",
    ]
    for r in results:
        if r["wall"] is None:
            wall = f"reused run: last step at {_last(Path(r['run']), 'seconds') / 60:.2f} min"
        else:
            wall = f"{r['wall'] / 60:.2f} min ({r['wall'] / (60 * minutes):.1%})"
        lines.append(f"| {r['method']} | {r['scores'][key]:.4f} | {r['steps']} | {wall} |")
    lines.append("")
    lines.append(f"Same validation cases in every run: {results[0]['same_split']}.")
    lines.append("Scores in full (JSON):")
    lines.append("")
    for r in results:
        lines.append(f"- {r['method']}: `{json.dumps(r['scores'])}`")
    return "\n".join(lines) + "\n"


COLUMNS = {  # the table's columns, by the start of each file's method cell
    "no-flag": "no-flag",
    "hand-made recipe in float32": "recipe in float32",
    "hand-made recipe, its last weights": "recipe, last weights",
    "hand-made recipe": "recipe as written",
    "today's defaults": "defaults",
}


def _measured_at(text: str) -> str:
    """The run's start, ``YYYY-MM-DDTHH:MM``, from a result file's header ("" if absent)."""
    match = re.search(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}", text)
    return match.group(0) if match else ""


def combined(folder: Path) -> str:
    """One table from the ``plan_table_NAME*.md`` files under ``folder``; a method measured in
    several files: the latest run (by the date in each file's header)."""
    lines = ["| dataset | metric | " + " | ".join(COLUMNS.values()) + " |",
             "|---|---|" + "---|" * len(COLUMNS)]  # fmt: skip
    for name in DATASETS:
        paths = sorted(folder.glob(f"plan_table_{name}.md")) + sorted(
            folder.glob(f"plan_table_{name}-*.md")
        )
        cells: dict[str, tuple[str, str]] = {}
        for path in paths:
            text = path.read_text()
            when = _measured_at(text)
            rows = [line for line in text.splitlines() if line.startswith("| ")][1:]
            for row in rows:
                method, score, steps = (c.strip() for c in row.split("|")[1:4])
                column = next(v for k, v in COLUMNS.items() if method.startswith(k))
                if column not in cells or when > cells[column][0]:
                    cells[column] = (when, f"{score} ({int(steps):,} steps, {when[:10]})")
        if cells:
            row = " | ".join(cells[c][1] if c in cells else "not run" for c in COLUMNS.values())
            lines.append(f"| {name} | {METRIC[RECIPES[name]['metric']]} | {row} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", nargs="?", choices=DATASETS)
    parser.add_argument("--out", type=Path, help="write <out>/plan_table_<name>.md")
    parser.add_argument("--work", type=Path, default=Path("/tmp/segloc-plan-table"))
    parser.add_argument(
        "--only",
        default="no-flag,recipe,defaults",
        help="comma-separated subset of no-flag, recipe, recipe-last (the recipe's run, "
        "scored with its last weights), recipe-fp32, defaults (a subset "
        "other than the default three writes plan_table_NAME-SUBSET.md)",
    )
    parser.add_argument("--minutes", type=float, help="override every run's budget (checks)")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="score a finished no-flag run (or, for recipe-last, recipe run) folder in "
        "--work again instead of retraining",
    )
    parser.add_argument("--table", type=Path, help="print the table of this results folder")
    args = parser.parse_args(argv)
    if args.table:
        print(combined(args.table))
        return 0
    if args.name is None:
        parser.error("name a dataset, or --table")
    if args.minutes is not None:
        RECIPES[args.name]["minutes"] = args.minutes
    args.work.mkdir(parents=True, exist_ok=True)
    command = f"python benchmarks/plan_table.py {' '.join(argv or sys.argv[1:])}"
    header = run_header(command)
    results = run_dataset(args.name, args.work, args.only.split(","), args.reuse)
    report = _report(args.name, _score_all(args.name, results), header)
    report += f"\nload average after the runs: {os.getloadavg()[0]:.2f}\n"
    print(report)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        only = args.only.split(",")
        tag = "" if set(only) == {"no-flag", "recipe", "defaults"} else "-" + "+".join(only)
        (args.out / f"plan_table_{args.name}{tag}.md").write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
