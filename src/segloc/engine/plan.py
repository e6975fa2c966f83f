"""Training plans: a dataset's fingerprint, the machine's step times and a budget -> settings.

:func:`make_plan` is pure: the same :class:`~segloc.engine.fingerprint.Fingerprint`,
:class:`~segloc.engine.probe.ProbeResult`, budget and device give the same :class:`Plan`, and
:func:`plan_yaml` the same bytes. Every choice carries a one-line reason; the rules (most of
them nnU-Net's [1]_, adapted to a wall-clock budget and a CPU) are listed in
``docs/planning.md``. Nothing here knows a dataset by its name: only the figures count.

:func:`candidates` lists the network sizes whose step the probe should time;
:func:`format_fingerprint` and :func:`format_plan` print both as short tables.

References
----------
.. [1] Isensee, F. et al. "nnU-Net: a self-configuring method for deep learning-based
   biomedical image segmentation", Nature Methods 18, 2021,
   :doi:`10.1038/s41592-020-01008-z` (target spacing and the anisotropy rule, patch size
   clipped to the median shape, pooling until the feature map is ~4 voxels, batch of at
   least 2 and at most 5% of the dataset's voxels, CT and per-case z-score normalisation).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from segloc.engine.fingerprint import Fingerprint
from segloc.engine.probe import Candidate, ProbeResult

__all__ = [
    "MIN_STEPS",
    "Plan",
    "candidates",
    "format_fingerprint",
    "format_plan",
    "make_plan",
    "modality",
    "plan_yaml",
]

WIDTHS = (8, 16, 32, 64)  # base channels the planner chooses from
PREFERRED_WIDTH = 16  # the recipes' width: go wider only with steps to spare
WIDER_STEPS = 4000  # a wider network must still get this many steps
NARROWER_STEPS = 500  # below this many steps at the preferred width, go narrower
MIN_STEPS = 50  # below this many steps for the narrowest network, propose a classical method
PATCH_2D = 256  # largest 2D patch side
PATCH_3D_VOXELS = 80**3  # largest 3D patch volume on a CPU
MAX_DEPTH = 5  # segloc's U-Net doubles channels at every level, with no cap: 32x the base
ANISOTROPY = 3.0  # nnU-Net: an axis whose spacing is 3x the smallest is anisotropic
FRAME_BODY = 0.75  # nnU-Net's 25% rule: normalise over the body when it is < 75% of the image
ORIENTED = 0.25  # classes keep to one side along an axis: do not mirror it
NEAR_COPIES = 0.85  # consecutive numbered frames correlating this much are near-copies
LARGE_OBJECT = 0.10  # objects this share of the image: downsample so the patch holds one
BUDGET_SHARE = 0.85  # share of the budget the steps get (validation, loading, decisions)
NORM = "instance"  # nnU-Net's: batches of 2-4 patches make batch statistics noisy
STEP_MEMORY_SHARE = 0.5  # of the device's memory for a step (the rest: data, cache, others)


@dataclass
class Plan:
    """A plan: :class:`~segloc.engine.config.TrainConfig` settings and why.

    Attributes
    ----------
    settings : dict
        TrainConfig keys -> values (``data`` included).
    reasons : dict
        Setting -> one line saying why.
    notes : list of str
        Warnings a person should read (few validation cases, too few steps...).
    expected : dict
        ``seconds_per_step``, ``steps``, ``network`` (the probe label chosen).
    classical : bool
        Too few steps fit in the budget for any network: a classical method is proposed.
    """

    settings: dict[str, Any] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    expected: dict[str, Any] = field(default_factory=dict)
    classical: bool = False

    def set(self, key: str, value: Any, reason: str) -> None:
        self.settings[key] = value
        self.reasons[key] = reason


def _sig(x: float, digits: int = 4) -> float:
    """``x`` rounded to ``digits`` significant digits (byte-stable figures in the plan)."""
    if x == 0 or not math.isfinite(x):
        return float(x)
    return float(f"{x:.{digits}g}")


# --------------------------------------------------------------------------- reading the data


def modality(fp: Fingerprint) -> tuple[str, str]:
    """A guess at the kind of images, and the figures it rests on."""
    first = fp.intensity[0]["image"] if fp.intensity else {}
    low = first.get("p00_5", 0.0)
    body = float(np.median(fp.body_fraction)) if fp.body_fraction else 1.0
    if fp.channels == 1 and low <= -500:
        return "CT", f"Hounsfield-like range: 0.5th percentile {low:g}"
    if fp.channels == 3 and fp.dims == 2 and fp.dtype == "uint8":
        if body < FRAME_BODY:
            return "multi-contrast slices", (
                f"3 uint8 channels, body {body:.0%} of the image inside a dark frame"
            )
        return "RGB photo", "3 uint8 channels, no dark frame"
    if fp.channels > 1:
        return "multi-channel", f"{fp.channels} channels"
    if fp.dims == 3:
        return "MR-like volume", f"one channel, no negative values below {low:g}"
    if body >= FRAME_BODY:
        return "grey micrograph", f"one channel, {body:.0%} of each image is content"
    return "grey image", f"one channel, body {body:.0%} of the image"


def _instance_ids(fp: Fingerprint) -> bool:
    """Label maps whose many values each mark one object: instances, not classes."""
    fg = [v for k, v in fp.classes.items() if int(k) > 0]
    return (
        not fp.binary_files
        and len(fg) >= 10
        and float(np.median([v["components"] for v in fg])) <= 1
        and fp.ignore_hint is None
    )


def _object_share(fp: Fingerprint) -> float:
    """Median size of a foreground object, as a share of the median image."""
    fg = [v for k, v in fp.classes.items() if int(k) > 0 and int(k) != fp.ignore_hint]
    if not fg or not fp.shapes:
        return 0.0
    w = np.array([v["voxels"] for v in fg])
    size = float(np.sum(np.array([v["size"] for v in fg]) * w) / w.sum())
    return size / float(np.prod(fp.median_shape()))


def _groups(fp: Fingerprint) -> tuple[str, int]:
    """How the cases group: ("folder", n folders), ("sequence", cases) or ("case", cases)."""
    if fp.groups.get("folders", 0) >= 2 and fp.groups.get("largest", 0) > 1:
        return "folder", int(fp.groups["folders"])
    seq = fp.sequence
    if seq.get("numbered", 0) >= 0.8 and seq.get("consecutive", 0) >= NEAR_COPIES:
        return "sequence", fp.n_cases
    return "case", fp.n_cases


# --------------------------------------------------------------------------- geometry


def at_spacing(fp: Fingerprint, target: Sequence[float]) -> bool:
    """Whether every case is at ``target`` spacing already (no resampling needed)."""
    return bool(np.allclose(np.array(fp.spacings), target, rtol=1e-3))


def _spacing(fp: Fingerprint, plan: Plan) -> list[float]:
    """Target spacing: the median (nnU-Net), the anisotropy rule, or coarser for big objects."""
    median = [_sig(s) for s in fp.median_spacing()]
    spacings = np.array(fp.spacings)
    if fp.dims == 3:
        target = list(median)
        ratio = max(median) / min(median)
        if ratio > ANISOTROPY:
            axis = int(np.argmax(median))
            target[axis] = _sig(float(np.percentile(spacings[:, axis], 10)))
            why = (
                f"median spacing {median}, anisotropic ({ratio:.1f}x > {ANISOTROPY:g}x): axis "
                f"{axis} at its 10th percentile {target[axis]:g} (nnU-Net)"
            )
        else:
            why = f"median spacing {median} (nnU-Net)"
        same = at_spacing(fp, target)
        plan.set(
            "target_spacing",
            None if same else target,
            why + ("; every case is there already" if same else ""),
        )
        if ratio > ANISOTROPY:
            plan.notes.append("anisotropic volumes: a 3D network whose coarse axis is pooled later")
        return target
    share = _object_share(fp)
    largest = max(fp.median_shape())
    if share >= LARGE_OBJECT and largest > PATCH_2D:
        factor = _sig(largest / PATCH_2D, 2)
        target = [_sig(s * factor) for s in median]
        plan.set(
            "target_spacing",
            target,
            f"objects are {share:.0%} of the image: shrink {factor:g}x so that a "
            f"{PATCH_2D} patch holds a whole object and its outline",
        )
        return target
    plan.set(
        "target_spacing", None, f"images at their own spacing (objects {share:.1%} of the image)"
    )
    return median


def _pools(patch: Sequence[float], spacing: Sequence[float]) -> list[list[int]]:
    """nnU-Net's poolings: at each level, halve the axes whose spacing is within 2x of the
    finest and whose side is at least 8 voxels (a map of ~4 after it); stop when no axis
    can be pooled, or after ``MAX_DEPTH`` levels. Coarsely sampled axes are pooled later."""
    size, sp = list(patch), list(spacing)
    levels: list[list[int]] = []
    while len(levels) < MAX_DEPTH:
        finest = min(sp)
        level = [2 if sp[a] <= 2 * finest and size[a] >= 8 else 1 for a in range(len(size))]
        if 2 not in level:
            break
        levels.append(level)
        size = [s / f for s, f in zip(size, level, strict=True)]
        sp = [s * f for s, f in zip(sp, level, strict=True)]
    return levels or [[2] * len(size)]


def _patch_and_depth(fp: Fingerprint, target: Sequence[float], plan: Plan) -> tuple[list, list]:
    """Patch clipped to the median shape and rounded to the pooling; poolings per axis."""
    scale = np.array(fp.median_spacing()) / np.array(target)
    shape = np.array(fp.median_shape()) * scale  # the median case after resampling
    if fp.dims == 2:
        patch = np.minimum(shape, PATCH_2D)
        limit = f"at most {PATCH_2D} per axis"
        shrunk = False
    else:
        patch = shape.copy()
        # nnU-Net shrinks the axis with the largest physical size first
        shrunk = np.prod(patch) > PATCH_3D_VOXELS
        while np.prod(patch) > PATCH_3D_VOXELS:
            axis = int(np.argmax(patch * np.array(target)))
            patch[axis] *= 0.9
        limit = f"at most {PATCH_3D_VOXELS ** (1 / 3):.0f}^3 voxels"
    pools = _pools(patch, target)
    multiples = [math.prod(level[a] for level in pools) for a in range(fp.dims)]
    # up to the next multiple: the median case fits one patch (a little padding, no window);
    # down when the voxel budget already cut it
    up = fp.dims == 2 or not shrunk
    rounded = [
        max(m, int(math.ceil(p / m - 1e-6) if up else p // m) * m)
        for p, m in zip(patch, multiples, strict=True)
    ]
    shown = "x".join(f"{s:.0f}" for s in shape)
    plan.set(
        "patch",
        rounded,
        f"median case {shown} after resampling, {limit}, rounded "
        f"{'up' if up else 'down'} to multiples of the pooling ({multiples})",
    )
    per_axis = [sum(level[a] == 2 for level in pools) for a in range(fp.dims)]
    plan.set(
        "depth",
        len(pools),
        f"poolings per axis {per_axis}: each axis until it is 4-8 voxels, coarsely "
        f"sampled axes later (nnU-Net), at most {MAX_DEPTH}",
    )
    if any(set(level) != {2} for level in pools):
        plan.set(
            "extra_model_kwargs",
            {"pools": pools},
            "the pooling of each level per axis: the coarse axis is pooled later",
        )
    return rounded, pools


def _batch(
    fp: Fingerprint,
    patch: Sequence[int],
    target: Sequence[float],
    plan: Plan,
    one: Candidate,
    device: str,
    memory_mib: float,
) -> int:
    """At least 2, at most 5% of the dataset's voxels per step and what ``memory_mib`` holds
    (the estimate of ``one``, the preferred width at batch 1, in float32); on CUDA as many as
    fit (nnU-Net's memory model), elsewhere the nominal 4 (2D) or 2 (3D), since a CPU's
    step time, not its memory, is the limit."""
    scale = np.prod(np.array(fp.median_spacing()) / np.array(target))
    voxels = float(np.sum([np.prod(s) for s in fp.shapes])) * scale
    cap = int(0.05 * voxels // np.prod(patch))
    nominal = 4 if fp.dims == 2 else 2
    patches = _count(max(cap, 0), "patches")
    why = f"at least 2, at most 5% of the dataset's voxels per step ({patches})"
    fit = None
    if memory_mib > 0:
        weights = dataclasses.replace(one, batch=0).memory_mib()
        per_patch = one.memory_mib() - weights
        fit = int((STEP_MEMORY_SHARE * memory_mib - weights) // per_patch)
        why += (
            f" and {_count(max(fit, 0), 'patches')} in {STEP_MEMORY_SHARE:.0%} of the "
            f"{memory_mib / 1024:.1f} GiB {'on the GPU' if device == 'cuda' else 'available'} "
            f"(~{per_patch:.0f} MiB a patch at base {one.base}, float32)"
        )
        if fit < 2:
            plan.notes.append(
                f"two patches of {'x'.join(map(str, patch))} need ~{2 * per_patch:.0f} MiB "
                f"at base {one.base}, more than {STEP_MEMORY_SHARE:.0%} of the "
                f"{memory_mib:.0f} MiB available: the step may run out of memory (pass a "
                "smaller --patch)"
            )
    if device == "cuda" and fit is not None:
        batch = max(2, min(cap, fit))
        why = "as many as fit on the GPU (nnU-Net), " + why
    else:
        batch = max(2, min(nominal, cap, fit if fit is not None else nominal))
        why = f"{nominal} ({fp.dims}D), " + why
    plan.set("batch", batch, why)
    return batch


# --------------------------------------------------------------------------- the rest


def _normalisation(fp: Fingerprint, kind: str, plan: Plan) -> None:
    body = float(np.median(fp.body_fraction)) if fp.body_fraction else 1.0
    if kind == "CT":
        stats = []
        for c in fp.intensity:
            f = c["foreground"] or c["image"]
            stats.append(
                {
                    "lo": _sig(f["p00_5"]),
                    "hi": _sig(f["p99_5"]),
                    "mean": _sig(f["mean"]),
                    "std": _sig(f["std"]),
                }
            )
        plan.set(
            "normalize",
            "ct",
            "CT: clip to the foreground's 0.5-99.5 percentiles, then the foreground's "
            "global z-score (nnU-Net)",
        )
        plan.set("intensity_stats", stats, "the foreground's figures over all cases")
        return
    if body < FRAME_BODY:
        plan.set(
            "normalize",
            "body",
            f"per case and channel, z-score over the body ({body:.0%} of the image: the "
            "dark frame is neither in the statistics nor left bright)",
        )
    else:
        plan.set(
            "normalize",
            "zscore",
            f"per case and channel, z-score over the image (no frame: body {body:.0%})",
        )


def _augmentation(fp: Fingerprint, plan: Plan) -> None:
    flips = [a for a, o in enumerate(fp.orientation) if o < ORIENTED]
    kept_out = [f"{a} ({o:.2f})" for a, o in enumerate(fp.orientation) if o >= ORIENTED]
    shape = fp.median_shape()
    spacing = fp.median_spacing()
    square = max(shape[0], shape[1]) <= 1.1 * min(shape[0], shape[1])
    isotropic = max(spacing[:2]) <= 1.1 * min(spacing[:2])
    turns = square and isotropic and {0, 1} <= set(flips)
    kwargs = {
        "flip_axes": flips,
        "p_rot90": 0.5 if turns else 0.0,
        "per_channel": True,
        "p_intensity": 0.5,
        "shift": [-0.3, 0.3],
    }
    why = f"mirror axes {flips}" if flips else "no mirroring"
    if kept_out:
        why += f" (classes keep to one side along axis {', '.join(kept_out)})"
    why += "; quarter turns" if turns else "; no quarter turns (non-square or oriented planes)"
    why += "; intensity scaled and shifted per channel (acquisitions differ channel by channel)"
    plan.set("augment", "default", "flips, turns, affine, elastic, intensity, noise")
    plan.set("augment_kwargs", kwargs, why)


def _split(fp: Fingerprint, plan: Plan) -> int:
    how, groups = _groups(fp)
    plan.set("val_fraction", 0.2, "a fifth of the cases (nnU-Net's five folds)")
    if how == "folder":
        plan.set(
            "group_by",
            "folder",
            f"cases sit in {groups} sub-folders (patients): whole folders are held out",
        )
        plan.set("val_split", "random", "folders drawn at random (seed 0)")
    elif how == "sequence":
        seq = fp.sequence
        plan.set("group_by", "case", "no sub-folders")
        plan.set(
            "val_split",
            "last",
            f"numbered frames, consecutive ones near-copies (correlation "
            f"{seq['consecutive']:.2f} against {seq['random']:.2f} at random): the last "
            "block is held out",
        )
    else:
        plan.set("group_by", "case", "no sub-folders")
        plan.set("val_split", "random", "independent cases: drawn at random (seed 0)")
    n_val = max(1, int(math.floor(0.2 * groups + 0.5))) if groups >= 2 else 0
    return n_val


def _labels(fp: Fingerprint, plan: Plan) -> None:
    if _instance_ids(fp):
        plan.set(
            "label_mapping",
            "binary",
            f"{fp.label_values - 1} label values, each one object: instance ids, "
            "segmented as foreground",
        )
    if fp.ignore_hint is not None:
        plan.set(
            "ignore_index",
            int(fp.ignore_hint),
            f"label {fp.ignore_hint} marks unlabelled pixels (scattered on the other "
            "classes' borders, or named so): left out of the loss and the scores",
        )


def _sampling(fp: Fingerprint, plan: Plan) -> None:
    reason = "a third of the patches centred on a foreground voxel (nnU-Net)"
    present = {
        int(k): int(v["cases"])
        for k, v in fp.classes.items()
        if int(k) > 0 and int(k) != fp.ignore_hint
    }
    if present and min(present.values()) < fp.n_cases:
        k = min(present, key=lambda c: (present[c], c))
        reason += (
            f"; class {k} is in {present[k]} of {fp.n_cases} cases, so a draw on a case "
            "without foreground moves to one with some"
        )
    plan.set("foreground_fraction", 0.33, reason)


def candidates(fp: Fingerprint, device: str = "cpu", memory_mib: float = 0.0) -> list[Candidate]:
    """The network sizes whose training step the probe should time for this dataset, with
    ``memory_mib`` of memory for a step on ``device`` (0: unknown, not limited)."""
    return _candidates(fp, Plan(), device, memory_mib)[0]


def _candidates(
    fp: Fingerprint, plan: Plan, device: str, memory_mib: float
) -> tuple[list[Candidate], list[int], int]:
    """The candidates, and the patch and batch ``plan`` receives with their reasons."""
    target = _spacing(fp, plan)
    patch, pools = _patch_and_depth(fp, target, plan)
    classes = 2 if _instance_ids(fp) else max(2, max((int(k) for k in fp.classes), default=1) + 1)
    aniso = None if all(set(level) == {2} for level in pools) else tuple(map(tuple, pools))
    one = Candidate(
        PREFERRED_WIDTH,
        len(pools),
        tuple(patch),
        1,
        max(fp.channels, 1),
        classes,
        pools=aniso,
        norm=NORM,
    )
    batch = _batch(fp, patch, target, plan, one, device, memory_mib)
    return [dataclasses.replace(one, base=w, batch=batch) for w in WIDTHS], patch, batch


def _chosen(probe: ProbeResult, cands: Sequence[Candidate]) -> tuple[str, dict[int, float]]:
    """The precision the probe found fastest (on its scout) and each width's seconds per
    step in it."""
    tried = probe.scout
    precision = (
        min(tried, key=lambda p: (tried[p], p))
        if tried
        else ("fp16" if probe.device == "cuda" else "fp32")
    )
    times = {}
    for c in cands:
        label = dataclasses.replace(c, precision=precision).label
        if label in probe.steps and math.isfinite(probe.steps[label]):
            times[c.base] = probe.steps[label]
    return precision, times


def _memory(
    cands: Sequence[Candidate],
    precision: str,
    memory_mib: float,
    times: dict[int, float],
    plan: Plan,
) -> None:
    """Leave out of ``times`` the widths whose step would not fit in the memory (never the
    narrowest)."""
    if memory_mib <= 0:
        return
    limit = STEP_MEMORY_SHARE * memory_mib
    too_large = [
        c.base
        for c in cands
        if c.base in times
        and c.base != min(times)
        and dataclasses.replace(c, precision=precision).memory_mib() > limit
    ]
    for w in too_large:
        del times[w]
    if too_large:
        plan.notes.append(
            f"base {', '.join(map(str, too_large))} left out: a step would need more than "
            f"{STEP_MEMORY_SHARE:.0%} of the {memory_mib:.0f} MiB available"
        )


def _precision(probe: ProbeResult, precision: str, plan: Plan) -> None:
    if precision == "fp16":
        why = "CUDA: float16 autocast with gradient scaling"
    elif precision == "bf16":
        ratio = probe.scout["fp32"] / probe.scout["bf16"]
        why = f"bfloat16 autocast: {ratio:.1f}x the float32 speed in the probe"
    elif probe.device == "cpu" and not probe.bf16:
        why = "float32: this CPU has no native bfloat16 (emulated, it is several times slower)"
    else:
        why = "float32: the fastest precision in the probe"
    plan.set("precision", precision, why)


def _threads(probe: ProbeResult, plan: Plan) -> None:
    """One torch thread when the probe found it faster than all the cores (busy cores)."""
    if "1" in probe.threads and len(probe.threads) > 1:
        many = max(probe.threads, key=int)
        one, all_cores = probe.threads["1"], probe.threads[many]
        if one < all_cores:
            plan.set(
                "threads",
                1,
                f"one thread: {_sig(one, 2)} s per probe step against {_sig(all_cores, 2)} "
                f"with {many} (the cores are busy with other work)",
            )
            return
        plan.set(
            "threads",
            None,
            f"all {many} threads: {_sig(all_cores, 2)} s per probe step "
            f"against {_sig(one, 2)} with one",
        )


def _width(
    times: Mapping[int, float], seconds: float | None, extra: float, plan: Plan
) -> int | None:
    """The widest network with steps to spare (see the module constants); None: too slow."""
    if seconds is None:
        plan.set("base_channels", PREFERRED_WIDTH, "no time budget: the recipes' width")
        return PREFERRED_WIDTH

    def steps(w: int) -> int:
        return int(BUDGET_SHARE * seconds / (times[w] + extra)) if w in times else 0

    widths = sorted(times)
    if not widths:
        return None
    base = PREFERRED_WIDTH if PREFERRED_WIDTH in times else widths[0]
    for w in widths:
        if w > base and steps(w) >= WIDER_STEPS:
            base = w
    narrower = steps(base) < NARROWER_STEPS
    if narrower:
        base = next((w for w in widths if steps(w) >= NARROWER_STEPS), widths[0])
    if steps(base) < MIN_STEPS:
        return None
    why = f"{steps(base)} steps fit in the budget"
    wider = [w for w in widths if w > base]
    if narrower and wider:
        why += f"; base {wider[0]} would get {steps(wider[0])} (< {NARROWER_STEPS})"
    elif wider:
        why += f"; base {wider[0]} would get {steps(wider[0])} (< {WIDER_STEPS})"
    plan.set("base_channels", base, why)
    return base


def _optimisation(plan: Plan, steps: int) -> None:
    plan.set("model", "unet", "U-Net, same padding")
    plan.set(
        "norm",
        NORM,
        "instance norm (nnU-Net): on 2-4 patches a step, batch statistics follow the batch; "
        "in a 4-fold patient cross-validation (docs/planning.md) 0.737 and 0.682 Dice "
        "(two seeds) against 0.647",
    )
    plan.set("loss", "dice_ce", "Dice + cross-entropy (nnU-Net)")
    plan.set("optimizer", "adamw", "AdamW")
    plan.set("lr", 2e-3, "2e-3, as the hand-made recipes")
    warm = _sig(min(0.05, max(0.01, 50 / max(steps, 1))), 2)
    plan.set("warmup", warm, f"linear warm-up over the first {warm:.0%} of the run")
    plan.set(
        "schedule",
        "poly",
        "poly (1 - t)^0.9 over the budget's clock: zero at its last step (nnU-Net)",
    )
    plan.set(
        "ema", 0.999, "validate and keep a moving average of the weights, not one noisy step's"
    )
    plan.set(
        "select",
        "last",
        "the end of training (the averaged weights at a zero learning rate), not the "
        "peak of a few validation cases",
    )


def _cadence(
    fp: Fingerprint,
    plan: Plan,
    steps: int,
    batch: int,
    step_s: float,
    patch: Sequence[int],
    n_val: int,
    seconds: float,
) -> None:
    """Epoch length and validation interval: an epoch (a checkpoint) every ~30 s, 2 to 40 in
    the run; validation within ~10% of the budget."""
    n_epochs = int(min(40, max(2, seconds // 30)))
    per_step = max(1, steps // n_epochs)
    per_epoch = per_step * batch
    plan.set(
        "samples_per_epoch",
        per_epoch,
        f"{per_step} steps per epoch: ~{n_epochs} checkpoints in the run, every "
        f"~{per_step * step_s:.0f} s",
    )
    val_voxels = float(np.median([np.prod(s) for s in fp.shapes])) * max(n_val, 1)
    val_s = val_voxels / float(np.prod(patch)) * step_s / (3 * batch) * 2
    epochs = max(1, steps * batch // per_epoch)
    every = max(1, math.ceil(epochs * val_s / (0.1 * seconds)))
    plan.set(
        "val_every",
        every,
        f"validate every {every} epoch(s): ~{val_s:.1f} s each, within 10% of the budget",
    )


def _count(n: int, unit: str) -> str:
    """``"1 case"``, ``"3 cases"``, ``"2 folders"``."""
    return f"{n} {unit}" if n != 1 else f"{n} {unit[:-1]}"


def _tiny(fp: Fingerprint, plan: Plan, n_val: int) -> None:
    how, groups = _groups(fp)
    unit = "folders" if how == "folder" else "cases"
    if n_val == 0:
        plan.notes.append(
            f"{_count(groups, unit)}: nothing is left to validate on. Add cases, or cut the "
            "image into parts and keep one part for validation"
        )
        plan.set("decide", [], "no validation case")
    elif n_val < 3:
        plan.notes.append(
            f"only {_count(groups, unit)}: validation on {n_val} of them. Its Dice is one or "
            "two cases' worth, not an estimate of the Dice on new data; the choices made on "
            "it (TTA, keep-largest) are left at their defaults"
        )
        plan.set("decide", [], f"{_count(n_val, unit)} to validate on: too few to decide on")
    else:
        plan.set(
            "decide",
            ["tta", "keep_largest"],
            f"flip TTA and keep-largest decided on the {n_val} validation {unit}",
        )
    if 3 <= n_val < 10:
        plan.notes.append(
            f"validation on {n_val} {unit}: its score moves by several points with the split"
        )


def make_plan(
    fp: Fingerprint,
    probe: ProbeResult,
    *,
    budget: float | None,
    data: str = "",
    budget_text: str | None = None,
) -> Plan:
    """The plan for ``fp`` on the machine ``probe`` measured, within ``budget`` seconds.

    Pure: the same fingerprint, probe figures and budget give the same plan. ``budget``
    None plans the recipes' width without expected steps (the run is bounded by epochs).
    A fingerprint without a readable case gives an empty plan.
    """
    plan = Plan()
    if not fp.n_cases or not fp.dims:
        return plan
    plan.set("data", data, "the dataset folder")
    kind, evidence = modality(fp)
    cands, patch, batch = _candidates(fp, plan, probe.device, probe.memory_mib)
    _normalisation(fp, kind, plan)
    _augmentation(fp, plan)
    n_val = _split(fp, plan)
    _labels(fp, plan)
    _sampling(fp, plan)
    precision, times = _chosen(probe, cands)
    _memory(cands, precision, probe.memory_mib, times, plan)
    _precision(probe, precision, plan)
    _threads(probe, plan)
    workers = 0 if probe.cores <= 2 else min(probe.cores // 2, 6)
    plan.set(
        "workers",
        workers,
        f"{probe.cores} cores: "
        + (
            "augment between steps, both cores for the model"
            if workers == 0
            else f"{workers} loader processes"
        ),
    )
    extra = probe.augment * batch if workers == 0 else 0.0
    if budget is not None:
        plan.set("time_budget", budget_text or f"{budget:g}s", "the budget given")
    width = _width(times, budget, extra, plan)
    if width is None:
        plan.classical = True
        smallest = min(times) if times else WIDTHS[0]
        fit = int(BUDGET_SHARE * budget / (times.get(smallest, math.inf) + extra))
        plan.notes.append(
            f"too few steps for any network: {fit} at base {smallest} (< {MIN_STEPS}); "
            "a classical method is proposed instead"
        )
        width = smallest
        plan.settings["base_channels"] = width
        plan.reasons["base_channels"] = f"the narrowest network, {fit} steps: too few"
    step_s = times.get(width, math.inf) + extra
    seconds = budget if budget is not None else 3600.0
    steps = int(BUDGET_SHARE * seconds / step_s) if math.isfinite(step_s) else 0
    _optimisation(plan, steps)
    _cadence(
        fp, plan, steps, batch, step_s if math.isfinite(step_s) else 1.0, patch, n_val, seconds
    )
    _tiny(fp, plan, n_val)
    plan.set("device", probe.device, "where the probe ran")
    label = dataclasses.replace(cands[0], base=width, precision=precision).label
    plan.expected = {
        "modality": f"{kind} ({evidence})",
        "seconds_per_step": _sig(step_s, 3),
        "steps": steps,
        "network": label.rsplit("-", 1)[0],
        "estimated": any(k.startswith(f"base{width}-") for k in probe.estimated),
    }
    return plan


# --------------------------------------------------------------------------- writing


_ORDER = (
    "data",
    "model",
    "base_channels",
    "depth",
    "norm",
    "extra_model_kwargs",
    "patch",
    "batch",
    "foreground_fraction",
    "time_budget",
    "samples_per_epoch",
    "optimizer",
    "lr",
    "schedule",
    "warmup",
    "ema",
    "select",
    "loss",
    "val_fraction",
    "group_by",
    "val_split",
    "val_every",
    "normalize",
    "intensity_stats",
    "target_spacing",
    "ignore_index",
    "label_mapping",
    "augment",
    "augment_kwargs",
    "workers",
    "device",
    "precision",
    "threads",
    "decide",
)


def _yaml_value(value: Any) -> str:
    """One YAML flow value, byte-stable (JSON is valid YAML)."""
    if isinstance(value, float):
        return repr(_sig(value, 6))
    return json.dumps(value, sort_keys=True)


def plan_yaml(plan: Plan, probe: ProbeResult | None = None) -> str:
    """The plan as a YAML mapping of TrainConfig keys, each preceded by its reason.

    ``segloc train --config`` reads it back; the same plan gives the same bytes.
    """
    lines = ["# segloc plan: TrainConfig settings, each with the reason for it"]
    for key, value in plan.expected.items():
        lines.append(f"# expected {key}: {value}")
    if probe is not None:
        lines.append(
            f"# probe on {probe.device}, {probe.cores} cores, bf16 native: {probe.bf16}, "
            f"memory for a step: {probe.memory_mib:.0f} MiB"
        )
        for p, seconds in sorted(probe.scout.items()):
            lines.append(f"#   scout (half the patch side) in {p}: {_sig(seconds, 3)} s/step")
        for n, seconds in sorted(probe.threads.items()):
            lines.append(f"#   scout on {n} thread(s): {_sig(seconds, 3)} s/step")
        for label, seconds in sorted(probe.steps.items()):
            mark = " (estimated)" if label in probe.estimated else ""
            lines.append(f"#   {label}: {_sig(seconds, 3)} s/step{mark}")
        lines.append(f"#   augmenting one patch: {_sig(probe.augment, 3)} s")
    for note in plan.notes:
        lines.append(f"# note: {note}")
    keys = [k for k in _ORDER if k in plan.settings]
    keys += sorted(k for k in plan.settings if k not in _ORDER)
    for key in keys:
        lines.append(f"# {plan.reasons.get(key, '')}".rstrip())
        lines.append(f"{key}: {_yaml_value(plan.settings[key])}")
    return "\n".join(lines) + "\n"


def _row(name: str, value: str, width: int = 24) -> str:
    return f"  {name:<{width}} {value}"


def format_fingerprint(fp: Fingerprint) -> str:
    """The fingerprint as a short table."""
    shapes = np.array(fp.shapes) if fp.shapes else np.zeros((0, max(fp.dims, 1)))

    def dims(v: Sequence[float]) -> str:
        return "x".join(f"{x:g}" for x in v)

    kind, evidence = modality(fp)
    spacing = fp.median_spacing()
    lines = ["fingerprint"]
    lines.append(_row("cases", f"{fp.n_cases}, {fp.dims}D, {fp.channels} channel(s), {fp.dtype}"))
    if len(shapes):
        lines.append(
            _row(
                "shape median/min/max",
                " / ".join(dims(f(shapes, axis=0)) for f in (np.median, np.min, np.max)),
            )
        )
        lines.append(
            _row(
                "spacing median", f"{dims(spacing)} (anisotropy {max(spacing) / min(spacing):.1f}x)"
            )
        )
    lines.append(_row("modality guess", f"{kind}: {evidence}"))
    for c, entry in enumerate(fp.intensity):
        for region in ("image", "foreground"):
            s = entry.get(region) or {}
            if s:
                lines.append(
                    _row(
                        f"channel {c} {region}",
                        f"mean {s['mean']:.4g}, std {s['std']:.4g}, 0.5/50/99.5% "
                        f"{s['p00_5']:.4g}/{s['p50']:.4g}/{s['p99_5']:.4g}",
                    )
                )
    if fp.body_fraction:
        lines.append(
            _row("body (no dark frame)", f"median {np.median(fp.body_fraction):.0%} of the image")
        )
    total = sum(v["voxels"] for v in fp.classes.values()) or 1.0
    shown = list(fp.classes.items())
    if _instance_ids(fp):
        fg = [v for k, v in shown if int(k) > 0]
        lines.append(
            _row(
                "labels",
                f"{len(fg)} values besides 0, each one object "
                f"(median {np.median([v['size'] for v in fg]):.0f} voxels)",
            )
        )
        shown = shown[:1]
    for k, v in shown:
        lines.append(
            _row(
                f"class {k}",
                f"{v['voxels'] / total:.2%} of voxels, in {v['cases']:.0f} cases, "
                f"{v['components']:g} objects/case of median {v['size']:g} voxels",
            )
        )
    if fp.ignore_hint is not None:
        lines.append(_row("ignore label", str(fp.ignore_hint)))
    lines.append(_row("orientation per axis", ", ".join(f"{o:.2f}" for o in fp.orientation)))
    how, groups = _groups(fp)
    seq = fp.sequence
    text = {
        "folder": f"{groups} sub-folders (largest {fp.groups.get('largest', 0)} cases)",
        "sequence": f"numbered frames, consecutive correlation {seq.get('consecutive')}",
        "case": "independent cases",
    }[how]
    lines.append(_row("grouping", text))
    for problem in fp.problems:
        lines.append(_row("PROBLEM", problem))
    return "\n".join(lines)


def format_plan(plan: Plan) -> str:
    """The plan as a short table: setting, value, reason."""
    lines = ["plan"]
    keys = [k for k in _ORDER if k in plan.settings and k != "data"]
    keys += sorted(k for k in plan.settings if k not in _ORDER)
    for key in keys:
        value = _yaml_value(plan.settings[key])
        lines.append(_row(key, f"{value:<18} {plan.reasons.get(key, '')}", width=17))
    e = plan.expected
    if e:
        est = " (extrapolated)" if e.get("estimated") else ""
        lines.append(
            _row(
                "expected",
                f"{e['steps']} steps of {e['seconds_per_step']} s ({e['network']}){est}",
                width=17,
            )
        )
    for note in plan.notes:
        lines.append(f"  note: {note}")
    return "\n".join(lines)
