"""The timing probe: how long one training step of each candidate network takes here.

:func:`probe` builds each candidate (:class:`Candidate`: width, depth, patch, batch,
precision), runs a warm-up and a few timed forward + backward + optimiser steps on random
data, and returns the median step time. It is bounded in wall time: candidates are measured
from the cheapest up, and one whose predicted step (the last measured step scaled by the
ratio of their operation counts) would not fit in what is left of ``seconds`` is estimated
instead of run, and marked so. The data pipeline's share (augmenting one patch) is timed
beside it. What the figures decide is in :mod:`segloc.engine.plan`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from segloc.engine.augment import Augmenter
from segloc.engine.heap import reusing_freed_memory
from segloc.engine.run import autocast_dtype
from segloc.io.limits import available_memory
from segloc.nn import create_model
from segloc.nn.fast import to_channels_last
from segloc.nn.losses import DiceCELoss

_WARM_UP = 2  # untimed steps: on this project's CPU the first two take 10-25x a later one
# peak memory of a step over its saved feature maps (the gradients alive during the backward
# pass, the allocator's slack) and a fixed part (the runtime's workspaces and caches): fitted
# to benchmarks/step_memory.py's measurements. 1.5 gave measured / estimate 0.77 to 1.06 until
# freed memory stayed in the heap during the steps (engine.heap), 0.87 to 1.35 after (80³ in
# float32 the most); 2.0 puts that one back at 1.04
STEP_MEMORY_FACTOR = 2.0
STEP_MEMORY_OVERHEAD_MIB = 128

__all__ = [
    "Candidate",
    "ProbeResult",
    "bf16_supported",
    "cpu_cores",
    "device_memory",
    "precisions_to_try",
    "probe",
]


def cpu_cores() -> int:
    """Cores this process may run on (its affinity), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def bf16_supported() -> bool:
    """Whether oneDNN computes bfloat16 natively on this CPU (AVX-512 BF16 or AMX).

    Without it bfloat16 autocast is emulated and several times slower than float32.
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - builds without oneDNN
        return False


@dataclass(frozen=True)
class Candidate:
    """One network size to time: a 2D/3D U-Net of ``base`` channels and ``depth`` poolings,
    trained on ``batch`` patches of ``patch`` with ``channels`` inputs and ``classes``
    outputs, in ``precision`` (``fp32``, ``bf16`` or ``fp16``), with ``norm`` after each
    convolution."""

    base: int
    depth: int
    patch: tuple[int, ...]
    batch: int
    channels: int
    classes: int
    precision: str = "fp32"
    pools: tuple[tuple[int, ...], ...] | None = None
    norm: str | None = "batch"

    @property
    def label(self) -> str:
        size = "x".join(map(str, self.patch))
        label = f"base{self.base}-depth{self.depth}-{size}-batch{self.batch}-{self.precision}"
        if self.pools is not None:
            label = label.replace("-batch", "-pooled-batch")
        # the norm only when it is not the default, so that earlier probes' labels still read
        return (
            label
            if self.norm == "batch"
            else label.replace("-batch", f"-{self.norm or 'none'}-batch")
        )

    def levels(self) -> list[tuple[int, ...]]:
        """The pooling factors of each level (2 on every axis unless ``pools`` says)."""
        if self.pools is not None:
            return [tuple(level) for level in self.pools]
        return [(2,) * len(self.patch)] * self.depth

    @property
    def low_precision(self) -> bool:
        """Whether the step runs under a 16-bit autocast (bf16, fp16)."""
        return self.precision in ("bf16", "fp16")

    def activation_bytes(self) -> float:
        """Bytes of feature maps one sample keeps for the backward pass of a step.

        Per 3x3 convolution its output and the norm's, which the ReLU overwrites in place (one
        map without a norm); per pooling the pooled map and its int64 indices; per decoder
        level the up-sampled map and the concatenation; and the input, the logits and the
        loss's softmax and log-softmax. Under autocast (bf16, fp16) convolutions give 2-byte
        maps, but norms, concatenations with them, pooling of them and the loss's softmax stay
        float32 (PyTorch's autocast op lists).
        """
        voxels = float(math.prod(self.patch))
        conv = 2 if self.low_precision else 4
        kept = conv if self.norm is None else 4  # what a block hands on: conv's or norm's
        per_conv = conv if self.norm is None else conv + 4
        levels = self.levels()
        total = (4 * self.channels + (conv + 8) * self.classes) * voxels
        for level in range(self.depth + 1):
            c = self.base * 2**level
            total += 2 * per_conv * c * voxels  # the encoder's (bottleneck's) two convolutions
            if level < self.depth:
                # decoder: up-sampled map, the concatenation (2c) at the wider dtype, 2 convs
                total += (conv + 2 * max(conv, kept) + 2 * per_conv) * c * voxels
                voxels /= math.prod(levels[level])
                total += (kept + 8) * c * voxels  # the pooled map and its indices
        return total

    def parameters(self) -> int:
        """Weights of the network (counted on the meta device: nothing is allocated)."""
        with torch.device("meta"):
            return sum(p.numel() for p in _network(self).parameters())

    def memory_mib(self) -> float:
        """Estimated peak memory of one training step, MiB: the saved feature maps of the
        batch (:meth:`activation_bytes`), times :data:`STEP_MEMORY_FACTOR` for the gradients
        alive during the backward pass, plus weights, gradients and AdamW's two moments
        (float32), their low-precision copies under autocast, and
        :data:`STEP_MEMORY_OVERHEAD_MIB`."""
        maps = self.batch * self.activation_bytes() * STEP_MEMORY_FACTOR
        weights = self.parameters() * (4 * 4 + (2 if self.low_precision else 0))
        return (maps + weights) / 2**20 + STEP_MEMORY_OVERHEAD_MIB

    def operations(self) -> float:
        """A relative count of the step's multiply-adds (3x3 convolutions, each level)."""
        voxels = float(self.batch * math.prod(self.patch))
        k = 3 ** len(self.patch)
        total = 0.0
        levels = self.levels()
        for level in range(self.depth + 1):
            c = self.base * 2**level
            # two convolutions per level down and up (one at the bottleneck), c -> c
            total += (4 if level < self.depth else 2) * k * c * c * voxels
            if level < self.depth:
                voxels /= math.prod(levels[level])
        return total


@dataclass
class ProbeResult:
    """What :func:`probe` measured.

    Attributes
    ----------
    device : str
    cores : int
    bf16 : bool
        The CPU computes bfloat16 natively.
    steps : dict
        Candidate label -> seconds per step (model only).
    scout : dict
        Precision -> seconds per step of the scout (the cheapest network on half the patch
        side): what the precision is chosen on.
    threads : dict
        torch threads (as a string) -> seconds per step of the scout in the fastest
        precision, for all the cores and for one (CPU only): on cores busy with other work
        one thread can be several times faster than two that wait for each other.
    estimated : list of str
        Labels whose time was extrapolated rather than measured (no time left for them).
    augment : float
        Seconds to augment one patch (the main process does it when there are no workers).
    seconds : float
        Wall time the probe took.
    memory_mib : float
        Memory a step may use on the device (:func:`device_memory`), MiB; 0: unknown.
    """

    device: str = "cpu"
    cores: int = 1
    bf16: bool = False
    steps: dict[str, float] = field(default_factory=dict)
    scout: dict[str, float] = field(default_factory=dict)
    threads: dict[str, float] = field(default_factory=dict)
    estimated: list[str] = field(default_factory=list)
    augment: float = 0.0
    seconds: float = 0.0
    memory_mib: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ProbeResult:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in values.items() if k in known})


def _network(c: Candidate) -> torch.nn.Module:
    """The U-Net ``c`` describes, as the trainer builds it."""
    extra = {} if c.pools is None else {"pools": [list(level) for level in c.pools]}
    return create_model(
        "unet",
        in_channels=c.channels,
        num_classes=c.classes,
        base_channels=c.base,
        depth=c.depth,
        padding="same",
        dims=len(c.patch),
        norm=c.norm,
        **extra,
    )


def device_memory(device: str | torch.device) -> int:
    """Bytes a training step may use on ``device``: a CUDA device's total memory, or the
    memory the system has available now (:func:`segloc.io.limits.available_memory`)."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    return available_memory()


def _time_steps(c: Candidate, device: torch.device, steps: int, deadline: float) -> float:
    """Median seconds of ``steps`` timed steps after the warm-up; past ``deadline`` fewer,
    but always one."""
    model = _network(c)
    to_channels_last(model.to(device))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = DiceCELoss("multiclass", include_background=False, batch=True)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn((c.batch, c.channels, *c.patch), generator=generator).to(device)
    y = torch.randint(0, c.classes, (c.batch, *c.patch), generator=generator).to(device)
    dtype = autocast_dtype(c.precision, device)
    scaler = torch.amp.GradScaler("cuda", enabled=c.precision == "fp16")
    times = []
    with reusing_freed_memory():  # as training runs its steps (engine.run.fit)
        for i in range(steps + _WARM_UP):
            t0 = time.perf_counter()
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                logits = model(x)
            loss = loss_fn(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= _WARM_UP:  # the first steps warm up allocators and kernels: not timed
                times.append(time.perf_counter() - t0)
                if time.perf_counter() + times[-1] > deadline:
                    break
    return float(np.median(times)) if times else float("nan")


def _augment_seconds(patch: Sequence[int], channels: int, augment: dict[str, Any]) -> float:
    """Seconds to augment one patch with the planned settings (median of a few)."""
    rng = np.random.default_rng(0)
    aug = Augmenter(len(patch), **augment)
    image = rng.standard_normal((channels, *patch)).astype(np.float32)
    labels = (rng.random(tuple(patch)) > 0.5).astype(np.int64)
    times = []
    for _ in range(4):
        t0 = time.perf_counter()
        aug(image, labels, rng=rng)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _scout(c: Candidate) -> Candidate:
    """``c`` on a patch of half the side (rounded down to the pooling, at least one step of
    it): its step time, scaled by the voxels, bounds a large patch's in a fraction of the
    time."""
    multiples = [math.prod(level[a] for level in c.levels()) for a in range(len(c.patch))]
    patch = tuple(max(m, (p // 2) // m * m) for p, m in zip(c.patch, multiples, strict=True))
    return dataclasses.replace(c, patch=patch)


def _threads(
    result: ProbeResult,
    scout: Candidate,
    seconds: float,
    device: torch.device,
    steps: int,
    deadline: float,
) -> int:
    """Time the scout on one thread too (CPU, several threads); the faster thread count."""
    n = torch.get_num_threads()
    result.threads[str(n)] = round(seconds, 5)
    if device.type != "cpu" or n == 1:
        return n
    torch.set_num_threads(1)
    try:
        one = _time_steps(scout, device, steps, max(deadline, time.perf_counter() + 1e-3))
    finally:
        torch.set_num_threads(n)
    result.threads["1"] = round(one, 5)
    return 1 if one < seconds else n


def precisions_to_try(device: str | torch.device) -> tuple[str, ...]:
    """``fp16`` (with gradient scaling) and ``fp32`` on CUDA; ``fp32``, and ``bf16`` where
    the CPU computes it natively, on the CPU."""
    if torch.device(device).type == "cuda":
        return ("fp16", "fp32")
    return ("fp32", "bf16") if bf16_supported() else ("fp32",)


def probe(
    candidates: Sequence[Candidate],
    *,
    device: str | torch.device = "cpu",
    seconds: float = 20.0,
    steps: int = 3,
    precisions: Sequence[str] | None = None,
    augment: dict[str, Any] | None = None,
) -> ProbeResult:
    """Time one training step of each candidate on ``device`` within about ``seconds``.

    A scout -- the cheapest candidate on a patch of half the side -- is timed first, in each
    of ``precisions``, then (CPU) on one thread in the fastest; then the candidates, with
    the faster thread count, cheapest first, in the fastest precision, each
    only if its predicted step (the last measured one scaled by the ratio of
    :meth:`Candidate.operations`) fits four times in what is left of ``seconds``; the others
    are extrapolated so and listed in ``estimated``. The wall time is therefore about
    ``seconds`` plus the scout's few steps.

    Parameters
    ----------
    candidates : sequence of Candidate
        Sizes to time (their ``precision`` is ignored: see ``precisions``).
    device : str or torch.device
    seconds : float
        Wall-time bound (see above); the scout is always measured: two warm-up steps and
        at least one timed step.
    steps : int
        Timed steps per candidate after its warm-up.
    precisions : sequence of str, optional
        Default :func:`precisions_to_try`.
    augment : dict, optional
        :class:`~segloc.engine.augment.Augmenter` settings whose per-patch time is measured
        on the scout's patch and scaled by the voxels (None: not measured).

    Returns
    -------
    ProbeResult
    """
    device = torch.device(device)
    start = time.perf_counter()
    deadline = start + seconds
    result = ProbeResult(device=device.type, cores=cpu_cores(), bf16=bf16_supported())
    sizes = sorted(
        {dataclasses.replace(c, precision="fp32") for c in candidates},
        key=lambda c: (c.operations(), c.label),
    )
    if not sizes:
        return result
    # the scout: the cheapest network on a patch of half the side, always measured
    scout = _scout(sizes[0])
    ratio = math.prod(sizes[0].patch) / math.prod(scout.patch)
    if augment is not None:
        result.augment = round(_augment_seconds(scout.patch, scout.channels, augment) * ratio, 5)
    tried = {}
    for p in precisions or precisions_to_try(device):
        c = dataclasses.replace(scout, precision=p)
        tried[p] = _time_steps(c, device, steps, max(deadline, time.perf_counter() + 1e-3))
        result.scout[p] = round(tried[p], 5)
    best = min(tried, key=lambda p: (tried[p], p))
    before = torch.get_num_threads()
    n = _threads(
        result, dataclasses.replace(scout, precision=best), tried[best], device, steps, deadline
    )
    torch.set_num_threads(n)
    last = (dataclasses.replace(scout, precision=best), result.threads.get(str(n), tried[best]))
    for size in sizes:
        c = dataclasses.replace(size, precision=best)
        predicted = last[1] * c.operations() / last[0].operations()
        # two warm-up steps (each up to several times a later one) and a timed one
        if time.perf_counter() + 4 * predicted > deadline:
            result.steps[c.label] = round(predicted, 5)
            result.estimated.append(c.label)
            continue
        last = (c, _time_steps(c, device, steps, deadline))
        result.steps[c.label] = round(last[1], 5)
    torch.set_num_threads(before)
    result.seconds = round(time.perf_counter() - start, 3)
    return result
