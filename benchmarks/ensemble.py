"""Score the average of several trained models' probabilities on their shared validation split.

A diagnostic, not a recipe (N models cost N training budgets): if averaging the models of
independent 20-minute runs does not lift the validation Dice either, what holds the score is
the data (the labels' boundary placement), not the spread between runs.

    B=/tmp/segloc-bench  # train_real.py's --work
    python benchmarks/ensemble.py $B/segloc_isbi $B/segloc_isbi-ema ...

Every run must hold the same ``split.json`` validation cases. Each model predicts with Gaussian
sliding windows and no TTA, as ``train_real.py --rescore`` does; the ensemble averages the
soft-max probabilities, then takes the arg-max.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("SEGLOC_DATA", HERE.parent.parent / "shared" / "data"))


def main() -> None:
    from segloc.engine.data import load_case
    from segloc.engine.infer import Predictor
    from segloc.evaluate import select_cases
    from segloc.io import read_image
    from segloc.metrics import dice

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders of train_real.py")
    parser.add_argument("--data", type=Path, default=DATA / "isbi2012")
    args = parser.parse_args()
    splits = {tuple(sorted(json.loads((r / "split.json").read_text())["val"])) for r in args.runs}
    if len(splits) != 1:
        raise SystemExit(f"the runs hold different validation splits: {sorted(splits)}")
    predictors = [Predictor(r, device="cpu", tta=False, overlap=0.5) for r in args.runs]
    single: list[list[tuple[float, float]]] = [[] for _ in args.runs]
    mean: list[tuple[float, float]] = []
    for case in select_cases(args.data, run=args.runs[0], split="val"):
        image, _ = read_image(case.image)
        _, labels, _ = load_case(case)
        truth = labels > 0
        total = None
        for i, predictor in enumerate(predictors):
            prob = predictor.predict(image)
            pred = prob.argmax(0) > 0
            single[i].append((dice(pred, truth), float((pred == truth).mean())))
            total = prob if total is None else total + prob
        pred = total.argmax(0) > 0
        mean.append((dice(pred, truth), float((pred == truth).mean())))
        print(f"case {case.name}: ensemble Dice {mean[-1][0]:.4f}", flush=True)
    for run, scores in zip(args.runs, single, strict=True):
        d, a = np.mean(scores, axis=0)
        print(f"{run.name:28s} Dice {d:.4f}  accuracy {a:.4f}")
    d, a = np.mean(mean, axis=0)
    print(f"{'ensemble of ' + str(len(args.runs)):28s} Dice {d:.4f}  accuracy {a:.4f}")


if __name__ == "__main__":
    main()
