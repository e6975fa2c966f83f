"""U-Net++ pruning: accuracy and speed of the sub-networks L1..L4 of one deep-supervised model.

    python benchmarks/unetpp_pruning.py [--minutes 4] [--base 16]
        [--out benchmarks/results/unetpp_pruning.md]

Trains one U-Net++ (Zhou et al. 2018) with deep supervision on ISBI 2012 (random 128x128 crops
with flips, Dice + CE on every head, Adam 1e-3) for a fixed time, then scores each pruned level
``model.pruned(L)`` on held-out whole 512x512 slices: Dice of the cell interior (label 255) and
forward time per slice. The split is by sorted file name: the last 4 labelled slices are held out.
This is the paper's Fig. 4-style trade-off on a small CPU budget, not a tuned result.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import format_markdown, run_header  # noqa: E402
from segloc import io, metrics  # noqa: E402
from segloc.nn.losses import DeepSupervisionLoss, DiceCELoss  # noqa: E402
from segloc.nn.unetpp import UNetPlusPlus  # noqa: E402

DATA = Path(os.environ.get("SEGLOC_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def load_isbi() -> tuple[list, list]:
    labels = sorted((DATA / "isbi2012" / "labels").glob("*.png"), key=lambda p: int(p.stem))
    cases = []
    for lp in labels:
        image, _ = io.read_image(DATA / "isbi2012" / "images" / lp.name)
        truth, _ = io.read_mask(lp)
        image = image.astype(np.float32)
        cases.append(((image - image.mean()) / image.std(), truth.astype(np.int64)))
    return cases[:-4], cases[-4:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--base", type=int, default=16)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    train, val = load_isbi()
    model = UNetPlusPlus(1, 2, base_channels=args.base, deep_supervision=True)
    loss_fn = DeepSupervisionLoss(DiceCELoss("multiclass"))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    t_end = time.perf_counter() + args.minutes * 60
    steps = 0
    while time.perf_counter() < t_end:
        xs, ys = [], []
        for _ in range(args.batch):
            image, truth = train[rng.integers(len(train))]
            r, c = rng.integers(0, 512 - args.crop, size=2)
            x = image[r : r + args.crop, c : c + args.crop]
            y = truth[r : r + args.crop, c : c + args.crop]
            if rng.random() < 0.5:
                x, y = x[:, ::-1], y[:, ::-1]
            if rng.random() < 0.5:
                x, y = x[::-1], y[::-1]
            xs.append(x.copy())
            ys.append(y.copy())
        x = torch.from_numpy(np.stack(xs))[:, None]  # (B, 1, H, W)
        y = torch.from_numpy(np.stack(ys))  # (B, H, W)
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        steps += 1
    model.eval()
    rows = []
    for level in (1, 2, 3, 4):
        sub = model.pruned(level).eval()
        dices, times = [], []
        with torch.inference_mode():
            for image, truth in val:
                x = torch.from_numpy(image)[None, None]
                t0 = time.perf_counter()
                logits = sub(x)
                times.append(time.perf_counter() - t0)
                pred = logits.argmax(1)[0].numpy() == 1
                dices.append(metrics.dice(pred, truth == 1))
        rows.append(
            {
                "level": f"L{level}",
                "params_M": round(sum(p.numel() for p in sub.parameters()) / 1e6, 3),
                "val_dice_cell_interior": round(float(np.mean(dices)), 4),
                "forward_ms_512": round(1e3 * float(np.median(times)), 1),
            }
        )
    header = run_header(
        f"python benchmarks/unetpp_pruning.py --minutes {args.minutes} --base {args.base}"
    )
    note = (
        f"{steps} training steps of batch {args.batch} ({args.crop}² crops), "
        f"{len(train)} train / {len(val)} held-out slices"
    )
    table = format_markdown(rows, list(rows[0]))
    print(header + "\n" + note + "\n\n" + table)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(header + "\n\n" + note + "\n\n" + table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
