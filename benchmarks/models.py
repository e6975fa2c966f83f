"""Deep models: segloc's U-Net, U-Net++ and V-Net against MONAI's, one run, as ratios.

    python benchmarks/models.py [--quick] [--repeats N] [--rounds R] [--only unet|unetpp|vnet]
                                [--mode forward|train] [--compile] [--monai-norm batch|instance]
                                [--out benchmarks/results/models.md]

Pairs (batch 1, one input channel, two classes, the same random input for both models):

======  ===================================================  ==============================
pair    segloc                                               MONAI 1.6
======  ===================================================  ==============================
unet    ``UNet(1, 2, base_channels=32, depth=4,              ``BasicUNet(2, 1, 2, features=
        padding="same", norm="batch", up="transpose")``      (32, 64, 128, 256, 512, 32))``
unetpp  ``UNetPlusPlus(1, 2, base_channels=32, dims=2)``     ``BasicUNetPlusPlus`` (same
        (batch norm, no deep supervision)                    features)
vnet    ``VNet(1, 2)`` (the paper's Fig. 1 widths, 65.2M)    ``VNet(3, 1, 2)`` (45.6M)
======  ===================================================  ==============================

Inputs: 1x1x256x256 for the 2D pairs, 1x1x64x64x64 for V-Net (``--quick``: 128x128 and
32x32x32, one repeat). MONAI's ``BasicUNet``/``BasicUNetPlusPlus`` default to instance
normalisation; to compare like with like they are built with ``norm="batch"`` here, as segloc's
models (``--monai-norm instance`` gives MONAI's default, the configuration of the issue's
reference figures). MONAI keeps its default LeakyReLU(0.1) where segloc uses ReLU. The V-Nets
differ in size (see ``segloc.nn.vnet``), so their ratio compares two networks, not two
implementations.

Every measurement runs in a fresh process (``torch.set_num_threads(--threads)``, default 2):

- forward: eval mode under ``torch.inference_mode()`` (one row under ``torch.no_grad()``),
  best of N timed calls after a warm-up call;
- train step: train mode, forward + ``segloc.nn.losses.DiceCELoss("multiclass")`` (the same loss
  for both models) + backward + ``torch.optim.AdamW`` step, also under bf16 autocast (the
  trainer's ``--precision bf16``) and in channels-last layout (what ``segloc train`` runs:
  ``bf16+channels_last``); MONAI's model also under bf16;
- peak memory: the process's RSS high-water mark during warm-up and timed calls minus its RSS
  after the model, optimiser or inference session was built (``_timing.py``).

``ratio`` is MONAI's best eager time / this row's best time (above 1: segloc is faster).
segloc's inference is also timed with the speed-ups under consideration, one row each:
``torch.no_grad`` instead of ``inference_mode``, channels-last memory format (weights and
input), batch normalisation folded into the preceding convolution, both together,
``segloc.nn.fast.optimize_for_inference`` (folding + channels-last weights, input left as it
is: what a user gets), ONNX Runtime on a ``segloc.nn.export.export_onnx`` file (session limited
to ``--threads`` intra-op threads) and, with ``--compile``, ``torch.compile`` (inductor with
freezing; compile time in the note; no time is given if compiling takes over a minute).
One MONAI row applies ``optimize_for_inference`` to MONAI's model, to show how much of a gap
is the network and how much the trick. ``--mode train`` times only the training steps.
``max_abs_diff`` compares each variant's logits with
the plain eval-mode model's (batch-norm running statistics are randomised first, so a wrong
folding shows).

Run it on an otherwise idle machine; the header of the result records the load average.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _timing  # noqa: E402

PAIRS = ("unet", "unetpp", "vnet")
FEATURES = (32, 64, 128, 256, 512, 32)
SIZES = {"unet": (256, 256), "unetpp": (256, 256), "vnet": (64, 64, 64)}
QUICK_SIZES = {"unet": (128, 128), "unetpp": (128, 128), "vnet": (32, 32, 32)}
COMPILE_LIMIT_S = 60.0

FORWARD_VARIANTS = (
    "eager",
    "no_grad",
    "channels_last",
    "fused_bn",
    "fused_bn+channels_last",
    "optimize_for_inference",
    "onnxruntime",
)
TRAIN_VARIANTS = ("eager", "channels_last", "bf16", "bf16+channels_last")

COLUMNS = (
    "pair",
    "mode",
    "model",
    "variant",
    "params_M",
    "input",
    "best_ms",
    "median_ms",
    "peak_MiB",
    "ratio",
    "max_abs_diff",
    "note",
)


# --------------------------------------------------------------------------------------------
# worker side: one measurement per process
# --------------------------------------------------------------------------------------------


def build_model(pair: str, impl: str, monai_norm: str):
    """The model of one side of a pair (see the module docstring)."""
    if impl == "segloc":
        if pair == "unet":
            from segloc.nn.unet import UNet

            return UNet(
                1, 2, base_channels=32, depth=4, padding="same", norm="batch", up="transpose"
            )
        if pair == "unetpp":
            from segloc.nn.unetpp import UNetPlusPlus

            return UNetPlusPlus(1, 2, base_channels=32, dims=2, deep_supervision=False)
        from segloc.nn.vnet import VNet

        return VNet(1, 2)
    from monai.networks import nets

    # MONAI's default is ("instance", {"affine": True}); the bare name would drop the affine part.
    norm = ("instance", {"affine": True}) if monai_norm == "instance" else monai_norm
    if pair == "unet":
        return nets.BasicUNet(2, 1, 2, features=FEATURES, norm=norm)
    if pair == "unetpp":
        return nets.BasicUNetPlusPlus(2, 1, 2, features=FEATURES, norm=norm)
    return nets.VNet(3, 1, 2)


def _logits(out):
    # MONAI's BasicUNetPlusPlus returns a list of head outputs even without deep supervision.
    return out[-1] if isinstance(out, (list, tuple)) else out


def worker(spec: dict) -> dict:
    """Build, prepare, warm up and time one (pair, model, mode, variant); return the figures."""
    import numpy as np
    import torch

    from segloc.nn.fast import fuse_batchnorm, optimize_for_inference

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    pair, impl, mode, variant = spec["pair"], spec["model"], spec["mode"], spec["variant"]
    size = tuple(spec["size"])
    model = build_model(pair, impl, spec["monai_norm"])
    params = sum(p.numel() for p in model.parameters())
    if mode == "forward":
        # Random running statistics, so that a wrong BatchNorm folding cannot pass unnoticed.
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.running_mean.uniform_(-0.5, 0.5)
                    m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(1, 1, *size, generator=torch.Generator().manual_seed(1))
    result = {"params": params, "note": ""}
    cl = torch.channels_last if len(size) == 2 else torch.channels_last_3d

    t0 = time.perf_counter()
    if mode == "train":
        from segloc.nn.losses import DiceCELoss

        model.train()
        if variant.endswith("channels_last"):
            model = model.to(memory_format=cl)
            x = x.contiguous(memory_format=cl)
        # bf16: the trainer's --precision bf16 (autocast; the loss in float32)
        bf16 = variant.startswith("bf16")
        target = torch.randint(0, 2, (1, *size), generator=torch.Generator().manual_seed(2))
        criterion = DiceCELoss("multiclass")
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        losses = []

        def call():
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = _logits(model(x))
            loss = criterion(logits.float(), target)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))

    else:
        model.eval()
        reference = copy.deepcopy(model) if variant != "eager" else model
        run = model
        if variant.startswith("fused_bn"):
            run = fuse_batchnorm(model)
        elif variant == "optimize_for_inference":
            # what a user gets: the helper, fed an ordinary (contiguous) tensor
            run = optimize_for_inference(model)
        if variant.endswith("channels_last"):
            run = run.to(memory_format=cl)
            x_run = x.contiguous(memory_format=cl)
        else:
            x_run = x
        if variant == "onnxruntime":
            import onnxruntime as ort

            from segloc.nn.export import export_onnx

            options = ort.SessionOptions()
            # As many threads as torch gets; ONNX Runtime's default is one per physical core.
            options.intra_op_num_threads = spec["threads"]
            options.inter_op_num_threads = 1
            with tempfile.TemporaryDirectory(prefix="segloc-bench-") as tmp:
                path = export_onnx(model, Path(tmp) / "model.onnx", example_shape=tuple(x.shape))
                # the session reads the whole file, which can then go
                session = ort.InferenceSession(
                    str(path), options, providers=["CPUExecutionProvider"]
                )
            name = session.get_inputs()[0].name
            x_np = x.numpy()
            del model  # the session holds its own copy of the weights
            run = None

            def forward():
                return torch.from_numpy(session.run(None, {name: x_np})[0])

        elif variant == "torch.compile":
            import torch._inductor.config

            # Freezing folds batch norms and pre-packs weights; without it inductor's CPU code was
            # twice as slow again as with it (and both slower than eager) in our runs.
            torch._inductor.config.freezing = True
            run = torch.compile(run)
            with torch.inference_mode():
                run(x_run)  # compiles
            compile_s = time.perf_counter() - t0
            result["note"] = f"compile {compile_s:.0f} s"
            if compile_s > COMPILE_LIMIT_S:
                return {**result, "error": f"over the {COMPILE_LIMIT_S:.0f} s limit"}

        if variant != "onnxruntime":
            grad_mode = torch.no_grad if variant == "no_grad" else torch.inference_mode

            def forward():
                with grad_mode():
                    return _logits(run(x_run))

        call = forward
    result["prep_s"] = time.perf_counter() - t0

    _timing.release_free_memory()
    baseline = _timing.current_rss_mib()
    exact_peak = _timing.reset_peak_rss()
    best, median = _timing.best_of(call, repeats=spec["repeats"], warmup=spec["warmup"])
    result.update(
        best_ms=best,
        median_ms=median,
        peak_MiB=_timing.peak_rss_mib() - baseline,
    )
    if not exact_peak:
        result["note"] += " peak from ru_maxrss"
    if mode == "train":
        if not np.isfinite(losses).all():
            result["error"] = f"non-finite loss {losses}"
    else:
        with torch.inference_mode():
            ref = _logits(reference(x))
            got = forward()
        result["max_abs_diff"] = float((got.float() - ref).abs().max())
    return result


# --------------------------------------------------------------------------------------------
# driver side
# --------------------------------------------------------------------------------------------


def jobs_for(
    pair: str, *, compile_: bool, modes: list[str] | None = None
) -> list[tuple[str, str, str]]:
    """(mode, model, variant) triples of one pair, MONAI's first so ratios can be computed."""
    forward = list(FORWARD_VARIANTS)
    if pair == "vnet":
        # segloc's V-Net has no normalisation (as the paper): nothing to fold.
        forward = [v for v in forward if not v.startswith("fused_bn")]
    if compile_:
        forward.append("torch.compile")
    jobs = [("forward", "monai", "eager")] + [("forward", "segloc", v) for v in forward]
    # The same helper on MONAI's model: shows how much of a gap is the model, how much the trick.
    jobs.append(("forward", "monai", "optimize_for_inference"))
    jobs += [("train", "monai", "eager")] + [("train", "segloc", v) for v in TRAIN_VARIANTS]
    jobs.append(("train", "monai", "bf16"))
    return [job for job in jobs if modes is None or job[0] in modes]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: small inputs, 1 repeat")
    parser.add_argument("--repeats", type=int, help="timed calls per measurement (default 5)")
    parser.add_argument(
        "--rounds", type=int, default=1, help="run every measurement R times, keep the best"
    )
    parser.add_argument("--only", choices=PAIRS, action="append")
    parser.add_argument("--mode", choices=("forward", "train"), action="append")
    parser.add_argument("--compile", action="store_true", help="also try torch.compile")
    parser.add_argument("--monai-norm", choices=("batch", "instance"), default="batch")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per measurement")
    parser.add_argument("--out", help="also write the markdown table to this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        spec = json.loads(args.worker)
        try:
            out = worker(spec)
        except Exception as err:  # report, so the driver can carry on with the other rows
            out = {"error": f"{type(err).__name__}: {err}"[:300]}
        print(_timing.dumps(out), flush=True)
        return 0

    if args.repeats is not None and args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 5)
    sizes = QUICK_SIZES if args.quick else SIZES
    command = "python benchmarks/models.py " + " ".join(sys.argv[1:] if argv is None else argv)
    env = {k: str(args.threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    header = _timing.run_header(command.strip())
    print(header, flush=True)
    print(
        f"MONAI BasicUNet/BasicUNetPlusPlus norm={args.monai_norm!r} (segloc: batch); "
        f"{args.threads} threads; best of {repeats} after 1 warm-up, {args.rounds} round(s)",
        flush=True,
    )

    rows: list[dict] = []
    for pair in PAIRS:
        if args.only and pair not in args.only:
            continue
        size = sizes[pair]
        jobs = jobs_for(pair, compile_=args.compile, modes=args.mode)
        best: dict[tuple[str, str, str], dict] = {}
        for _ in range(args.rounds):
            for mode, impl, variant in jobs:
                spec = {
                    "pair": pair,
                    "model": impl,
                    "mode": mode,
                    "variant": variant,
                    "size": size,
                    "repeats": repeats,
                    "warmup": 1,
                    "threads": args.threads,
                    "monai_norm": args.monai_norm,
                }
                argv_w = [str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
                res = _timing.run_worker(argv_w, timeout=args.timeout, env=env)
                key = (mode, impl, variant)
                old = best.get(key)
                if old is None or ("best_ms" in res and res["best_ms"] < old.get("best_ms", 1e300)):
                    # keep the fastest round; peak memory comes from the same process
                    best[key] = res
                print(f"  {pair} {mode} {impl} {variant}: {_short(res)}", flush=True)
        for mode, impl, variant in jobs:
            res = best[(mode, impl, variant)]
            peer = best.get((mode, "monai", "eager"), {})
            row = {
                "pair": pair,
                "mode": mode,
                "model": impl,
                "variant": variant,
                "input": "x".join(map(str, (1, 1, *size))),
                "note": res.get("note", "").strip(),
            }
            if "params" in res:
                row["params_M"] = res["params"] / 1e6
            if "error" in res:
                row["note"] = (row["note"] + " " + res["error"]).strip()
            if "best_ms" in res and "error" not in res:
                row.update(
                    best_ms=res["best_ms"], median_ms=res["median_ms"], peak_MiB=res["peak_MiB"]
                )
                if "best_ms" in peer and "error" not in peer:
                    row["ratio"] = peer["best_ms"] / res["best_ms"]
                if "max_abs_diff" in res and variant != "eager":
                    row["max_abs_diff"] = f"{res['max_abs_diff']:.1e}"
            rows.append(row)

    table = _timing.format_markdown(rows, COLUMNS)
    summary = summarise(rows)
    config = (
        f"MONAI BasicUNet/BasicUNetPlusPlus built with norm={args.monai_norm!r} (segloc's models: "
        f"batch norm); {args.threads} threads; best of {repeats} timed calls after 1 warm-up, "
        f"best of {args.rounds} round(s); ratio = MONAI eager time / row time (> 1: segloc "
        f"faster); peak_MiB = RSS high-water mark over the RSS after construction; load "
        f"average at the end {_timing.load_average()}."
    )
    print("\n" + header + "\n" + config + "\n\n" + table + "\n\n" + summary)
    if args.out:
        text = f"{header}\n\n{config}\n\n{table}\n\n{summary}\n"
        _timing_write(Path(args.out), text)
    return 0


def _timing_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Atomic, so an interrupted run leaves the previous results intact.
    from segloc._validation import write_atomic

    write_atomic(path, lambda tmp: tmp.write_text(text))


def _short(res: dict) -> str:
    if "error" in res:
        return "ERROR " + res["error"]
    return f"{res['best_ms']:.0f} ms (median {res['median_ms']:.0f}), +{res['peak_MiB']:.0f} MiB"


def summarise(rows: list[dict]) -> str:
    """The issue's goals, one line per pair: training >= 1.0x MONAI, inference >= 1.3x."""
    lines = []
    for pair in PAIRS:
        mine = [r for r in rows if r["pair"] == pair and r["model"] == "segloc" and "ratio" in r]
        if not mine:
            continue
        train = [r for r in mine if r["mode"] == "train"]
        fwd = [r for r in mine if r["mode"] == "forward"]
        parts = [f"- {pair}:"]
        if fwd:
            eager = next((r for r in fwd if r["variant"] == "eager"), None)
            top = max(fwd, key=lambda r: r["ratio"])
            if eager:
                parts.append(f"inference eager {eager['ratio']:.2f}x,")
            parts.append(f"best {top['ratio']:.2f}x ({top['variant']});")
        if train:
            top = max(train, key=lambda r: r["ratio"])
            parts.append(f"training step best {top['ratio']:.2f}x ({top['variant']})")
        if pair != "vnet":
            parts.append("(goals: inference >= 1.3x, training >= 1.0x)")
        else:
            parts.append("(different networks: ratio reported, no goal)")
        lines.append(" ".join(parts))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
