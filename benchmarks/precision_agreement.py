"""A trained model's predictions in bfloat16 against float32: label agreement and Dice.

    python benchmarks/precision_agreement.py --model RUN --data DATASET [--split val]
                                             [--out benchmarks/results/precision_agreement.md]

For each case of the split (the run's ``split.json``), the model's label map with
``precision="fp32"`` and ``precision="bf16"`` (``segloc.engine.infer.Predictor``, sliding
windows as ``segloc predict`` runs them): the share of pixels whose label is the same, and
the mean Dice of each against the truth (``segloc.evaluate.evaluate_model``, the numbers
``segloc evaluate --model RUN --precision ...`` prints), with the wall time of each
prediction pass. bfloat16 is fast only on a CPU with native bfloat16 units.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _timing import publish, run_header


def measure(model: str, data: str, split: str) -> dict:
    import torch

    from segloc.engine.infer import Predictor
    from segloc.engine.probe import bf16_supported
    from segloc.evaluate import evaluate_model, select_cases
    from segloc.io import read_image

    cases = select_cases(data, run=model, split=split)
    # read once before timing: the first pass must not pay for a cold file cache
    images = [read_image(c.image)[0] for c in cases]
    labels: dict[str, list[np.ndarray]] = {}
    seconds: dict[str, float] = {}
    for precision in ("fp32", "bf16"):
        predictor = Predictor(model, device="cpu", precision=precision)
        with torch.no_grad():
            predictor.predict_labels(images[0])  # warm-up: kernel choices are not timed
            start = time.perf_counter()
            labels[precision] = [predictor.predict_labels(image) for image in images]
        seconds[precision] = time.perf_counter() - start
    same = sum(int(np.sum(a == b)) for a, b in zip(labels["fp32"], labels["bf16"], strict=True))
    total = sum(a.size for a in labels["fp32"])
    dice = {}
    for precision in ("fp32", "bf16"):
        with tempfile.TemporaryDirectory() as out:
            result, _ = evaluate_model(
                [model], data, Path(out) / "eval", split=split, surface=False, precision=precision
            )
            dice[precision] = result.summary()["mean"]["dice"]
    return {
        "cases": len(cases),
        "bf16_native": bf16_supported(),
        "agreement": same / total,
        "dice": dice,
        "seconds": seconds,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", required=True, help="run folder")
    p.add_argument("--data", required=True, help="dataset folder")
    p.add_argument("--split", default="val", choices=["all", "train", "val"])
    p.add_argument("--out")
    args = p.parse_args(argv)
    r = measure(args.model, args.data, args.split)
    command = (
        f"python benchmarks/precision_agreement.py --model {args.model} --data {args.data} "
        f"--split {args.split}"
    )
    text = (
        f"{run_header(command)}; native bf16: {r['bf16_native']}\n\n"
        "| precision | mean Dice | prediction s (warm) |\n|---|---|---|\n"
        + "".join(
            f"| {k} | {r['dice'][k]:.4f} | {r['seconds'][k]:.1f} |\n" for k in ("fp32", "bf16")
        )
        + f"\nbf16 labels equal fp32's on {100 * r['agreement']:.3f}% of the pixels of "
        f"{r['cases']} case(s).\n"
    )
    publish(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
