"""Tests of the planner: fingerprint, probe, rules, plan files, ``segloc plan``.

The rules are checked on synthetic fingerprints, one rule per test (anisotropic 3D, RGB
photos, CT range, patient folders, frame sequences, an ignore label, frames, tiny sets, the
width and precision choices); the fingerprint on synthetic dataset folders written here.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from segloc import io
from segloc.cli import main
from segloc.engine.config import TrainConfig
from segloc.engine.fingerprint import Fingerprint, fingerprint, load_fingerprint, save_fingerprint
from segloc.engine.plan import (
    MIN_STEPS,
    candidates,
    format_fingerprint,
    format_plan,
    make_plan,
    plan_yaml,
)
from segloc.engine.probe import Candidate, ProbeResult, probe
from segloc.engine.slices import on_slices, slice_axis


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGLOC_CACHE", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _stats(mean=100.0, std=20.0, lo=40.0, mid=100.0, hi=180.0) -> dict:
    return {"mean": mean, "std": std, "p00_5": lo, "p50": mid, "p99_5": hi}


def _fp(**changes) -> Fingerprint:
    """A plain 2D grey dataset of 100 independent 256x256 cases, one small object class."""
    n = changes.pop("n", 100)
    shape = changes.pop("shape", [256, 256])
    spacing = changes.pop("spacing", [1.0] * len(shape))
    values = dict(
        key="k",
        names=[f"c{i:03d}" for i in range(n)],
        dims=len(shape),
        channels=1,
        dtype="uint8",
        shapes=[list(shape)] * n,
        spacings=[list(spacing)] * n,
        intensity=[{"image": _stats(), "foreground": _stats(), "body": _stats()}],
        body_fraction=[1.0] * n,
        classes={
            "0": {"voxels": 9e5 * n, "cases": n, "components": 1, "size": 6e4, "boundary": 0.01},
            "1": {"voxels": 5e3 * n, "cases": n, "components": 2, "size": 900, "boundary": 0.2},
        },
        label_values=2,
        binary_files=True,
        orientation=[0.01] * len(shape),
        groups={"folders": 0, "largest": 0},
        sequence={"numbered": 1.0, "consecutive": 0.3, "random": 0.1},
    )
    values.update(changes)
    return Fingerprint(**values)


def _probe(fp: Fingerprint, seconds: dict[int, float] | None = None, **kw) -> ProbeResult:
    """Probe figures for ``fp``'s candidates: base -> seconds per step (fp32)."""
    seconds = seconds or {8: 0.1, 16: 0.2, 32: 0.6, 64: 2.0}
    result = ProbeResult(device=kw.pop("device", "cpu"), cores=kw.pop("cores", 2), **kw)
    precision = "fp16" if result.device == "cuda" else "fp32"
    result.scout[precision] = seconds[8] / 4
    for c in candidates(fp, result.device, result.memory_mib):
        result.steps[dataclasses.replace(c, precision=precision).label] = seconds[c.base]
    return result


def _plan(fp: Fingerprint, budget: float = 600.0, **kw):
    return make_plan(fp, _probe(fp, **kw), budget=budget, data="DATA")


# --------------------------------------------------------------------------- rules


def test_plain_2d_plan_is_a_valid_train_config():
    plan = _plan(_fp())
    cfg = TrainConfig.from_dict(plan.settings).validate()
    assert cfg.patch == [256, 256] and cfg.depth == 5 and cfg.batch == 4
    assert cfg.normalize == "zscore" and cfg.val_split == "random" and cfg.group_by == "case"
    assert cfg.target_spacing is None and cfg.ignore_index is None
    assert cfg.augment_kwargs["flip_axes"] == [0, 1] and cfg.augment_kwargs["p_rot90"] == 0.5
    assert set(plan.reasons) >= set(plan.settings)
    assert all(plan.reasons[k] for k in plan.settings)


def test_plan_trains_instance_norm_and_the_probe_times_it():
    plan = _plan(_fp())
    assert plan.settings["norm"] == "instance" and plan.settings["model"] == "unet"
    assert TrainConfig.from_dict(plan.settings).validate().norm == "instance"
    # the probe's candidates carry the norm, so the step it times is the step that trains
    assert {c.norm for c in candidates(_fp())} == {"instance"}
    assert "-instance-batch" in candidates(_fp())[0].label
    assert Candidate(8, 2, (32, 32), 2, 1, 2).label == "base8-depth2-32x32-batch2-fp32"


def test_probe_times_the_norm_it_is_given(monkeypatch):
    import segloc.engine.probe as probe_module

    built = []

    def create_model(name, **kwargs):
        built.append(kwargs["norm"])
        return real(name, **kwargs)

    real = probe_module.create_model
    monkeypatch.setattr(probe_module, "create_model", create_model)
    cands = [Candidate(4, 2, (32, 32), 2, 1, 2, norm="instance")]
    result = probe(cands, seconds=30.0, precisions=["fp32"])
    assert result.estimated == [] and set(built) == {"instance"} and len(built) >= 2


def test_anisotropic_volumes():
    fp = _fp(n=40, shape=[256, 256, 30])
    fp.spacings = [[0.8, 0.8, 5.0]] * 30 + [[0.8, 0.8, 3.0]] * 10
    plan = _plan(fp)
    # nnU-Net: the coarse axis at its 10th percentile spacing, the others at the median
    assert plan.settings["target_spacing"] == [0.8, 0.8, 3.0]
    assert "anisotropic" in plan.reasons["target_spacing"]
    # no quarter turns out of plane; in-plane the axes are square and isotropic
    assert plan.settings["augment_kwargs"]["p_rot90"] == 0.5
    patch = plan.settings["patch"]
    assert len(patch) == 3 and np.prod(patch) <= 81**3
    assert any("anisotropic" in n for n in plan.notes)
    # the coarse axis (3.0 mm against 0.8) is pooled only once the others have caught up
    pools = plan.settings["extra_model_kwargs"]["pools"]
    assert pools[0] == [2, 2, 1] and pools[-1] == [2, 2, 2]
    assert len(pools) == plan.settings["depth"]
    multiples = [int(np.prod([level[a] for level in pools])) for a in range(3)]
    assert all(p % m == 0 for p, m in zip(patch, multiples, strict=True))
    # the network it describes builds and takes the patch
    from segloc.nn import create_model

    net = create_model(
        "unet",
        in_channels=1,
        num_classes=2,
        base_channels=2,
        padding="same",
        dims=3,
        depth=len(pools),
        pools=pools,
    )
    assert net.multiples == tuple(multiples)


@pytest.mark.parametrize("axis", [0, 2])
def test_anisotropic_volumes_also_plan_2d_on_their_slices(axis):
    """nnU-Net's 2D configuration: the same volumes, a 2D U-Net on every slice across the
    coarse axis, patches one slice thick, mirrored and turned in the slices' plane."""
    shape, spacing = [256, 256, 256], [0.8, 0.8, 0.8]
    shape[axis], spacing[axis] = 30, 5.0
    fp = _fp(n=40, shape=shape, spacing=spacing)
    assert slice_axis(fp) == (axis, None)
    flat = fp.slices(axis)
    assert flat.dims == 2 and flat.shapes[0] == [256, 256] and flat.spacings[0] == [0.8, 0.8]
    assert len(flat.orientation) == 2 and flat.names == fp.names
    full = _plan(fp)
    plan = on_slices(_plan(flat), full, fp, axis)
    s = plan.settings
    plane = [a for a in range(3) if a != axis]
    assert s["patch"][axis] == 1 and [s["patch"][a] for a in plane] == [256, 256]
    assert s["extra_model_kwargs"] == {"slice_axis": axis}
    assert s["target_spacing"] is None  # every case is at its spacing
    assert s["augment_kwargs"]["rot90_axes"] == plane and s["augment_kwargs"]["p_rot90"] == 0.5
    assert s["augment_kwargs"]["flip_axes"] == [0, 1, 2]  # the 3D plan mirrors the axis too
    # the same split: the two networks are compared on the same validation cases
    keys = ("val_fraction", "group_by", "val_split", "normalize", "decide")
    assert {k: s[k] for k in keys} == {k: full.settings[k] for k in keys}
    assert all(plan.reasons[k] for k in s)
    cfg = TrainConfig.from_dict(s).validate()
    from segloc.nn import create_model

    net = create_model(
        "unet", in_channels=1, num_classes=2, base_channels=2, padding="same", dims=3,
        depth=cfg.depth, **cfg.extra_model_kwargs,
    )  # fmt: skip
    assert net.output_size(cfg.patch) == tuple(cfg.patch)
    # and the 3D plan itself is unchanged by it
    assert full.settings["patch"][axis] > 1 and "slice_axis" not in full.settings.get(
        "extra_model_kwargs", {}
    )


@pytest.mark.parametrize(
    "changes",
    [
        {"n": 40, "shape": [64, 64, 64]},  # isotropic
        {"n": 40, "shape": [64, 64, 20], "spacing": [1.0, 1.0, 2.5]},  # within 3x
        {"n": 5, "shape": [64, 64, 20], "spacing": [1.0, 1.0, 5.0]},  # 1 validation case
        {"n": 40, "shape": [64, 64]},  # 2D already
    ],
)
def test_2d_on_slices_is_tried_only_where_it_can_win_and_be_judged(changes):
    axis, untried = slice_axis(_fp(**changes))
    assert axis is None
    # anisotropic but too few to judge by: the plan says why 2D is not tried
    assert (untried is not None) == (changes["n"] == 5)
    if untried:
        assert "1 validation case(s) cannot tell the two apart" in untried


def test_rgb_photos_with_large_objects_are_shrunk_and_not_turned():
    fp = _fp(shape=[576, 768], channels=3)
    fp.intensity = fp.intensity * 3
    fp.classes["1"] = {
        "voxels": 1e5 * 100,
        "cases": 100,
        "components": 1,
        "size": 1e5,
        "boundary": 0.01,
    }
    plan = _plan(fp)
    assert plan.settings["target_spacing"] == [3.0, 3.0]
    assert plan.settings["patch"] == [192, 256]
    assert plan.settings["normalize"] == "zscore"
    assert plan.settings["augment_kwargs"]["p_rot90"] == 0.0  # 576x768 is not square
    assert "RGB photo" in plan.expected["modality"]


def test_ct_range_gets_global_clipping_and_z_score():
    ct = {
        "image": _stats(-700, 500, -1024, -800, 1500),
        "foreground": _stats(60, 30, -20, 55, 180),
        "body": _stats(),
    }
    fp = _fp(shape=[128, 128, 96], dtype="int16", intensity=[ct])
    plan = _plan(fp)
    assert plan.settings["normalize"] == "ct"
    assert plan.settings["intensity_stats"] == [
        {"lo": -20.0, "hi": 180.0, "mean": 60.0, "std": 30.0}
    ]
    assert plan.expected["modality"].startswith("CT")
    TrainConfig.from_dict(plan.settings).validate()


def test_patient_folders_are_held_out_whole():
    fp = _fp(
        names=[f"p{i // 25}/s{i % 25}" for i in range(100)], groups={"folders": 4, "largest": 25}
    )
    plan = _plan(fp)
    assert plan.settings["group_by"] == "folder" and "4 sub-folders" in plan.reasons["group_by"]


def test_frame_sequences_hold_out_the_last_block():
    fp = _fp(sequence={"numbered": 1.0, "consecutive": 0.94, "random": 0.6})
    plan = _plan(fp)
    assert plan.settings["val_split"] == "last"
    # neighbouring slices of a stack that are no near-copies stay random
    fp = _fp(sequence={"numbered": 1.0, "consecutive": 0.6, "random": 0.1})
    assert _plan(fp).settings["val_split"] == "random"


def test_ignore_label_and_instance_ids():
    fp = _fp(ignore_hint=11)
    plan = _plan(fp)
    assert plan.settings["ignore_index"] == 11 and "unlabelled" in plan.reasons["ignore_index"]
    many = {
        str(k): {"voxels": 300, "cases": 1, "components": 1, "size": 300, "boundary": 0.2}
        for k in range(1, 40)
    }
    fp = _fp(binary_files=False, classes={"0": _fp().classes["0"], **many}, label_values=40)
    plan = _plan(fp)
    assert plan.settings["label_mapping"] == "binary"
    assert all(c.classes == 2 for c in candidates(fp))


def test_foreground_draws_say_when_few_cases_hold_the_object():
    plain = _plan(_fp())
    assert plain.settings["foreground_fraction"] == 0.33
    assert "moves" not in plain.reasons["foreground_fraction"]  # every case holds class 1
    classes = dict(_fp().classes)
    classes["1"] = {**classes["1"], "cases": 35}
    classes["2"] = {**classes["1"], "cases": 60}
    classes["3"] = {**classes["1"], "cases": 10}  # the ignore label: not an object class
    sparse = _plan(_fp(classes=classes, label_values=4, binary_files=False, ignore_hint=3))
    assert "class 1 is in 35 of 100 cases" in sparse.reasons["foreground_fraction"]
    assert TrainConfig.from_dict(sparse.settings).validate().foreground_cases is True


def test_dark_frame_normalises_over_the_body():
    plan = _plan(_fp(body_fraction=[0.4] * 100))
    assert plan.settings["normalize"] == "body"


def test_oriented_axis_is_not_mirrored_nor_turned():
    plan = _plan(_fp(orientation=[0.45, 0.05]))
    kwargs = plan.settings["augment_kwargs"]
    assert kwargs["flip_axes"] == [1] and kwargs["p_rot90"] == 0.0
    assert "one side" in plan.reasons["augment_kwargs"]


def test_width_follows_the_steps_the_budget_allows():
    fp = _fp()
    # a CPU at 10 minutes: the recipes' width
    assert _plan(fp, 600).settings["base_channels"] == 16
    # hours, or a fast device: wider (base 32 still gets >= 4000 steps)
    assert _plan(fp, 2 * 3600).settings["base_channels"] == 32
    fast = {8: 0.01, 16: 0.02, 32: 0.04, 64: 0.08}
    gpu = _plan(fp, 1200, seconds=fast, device="cuda")
    assert gpu.settings["base_channels"] == 64 and gpu.settings["precision"] == "fp16"
    # a slow machine: narrower
    slow = {8: 2.0, 16: 4.0, 32: 12.0, 64: 40.0}
    assert _plan(fp, 600, seconds=slow).settings["base_channels"] == 8
    # too few steps for any network: a classical method is proposed
    plan = _plan(fp, 600, seconds={8: 20.0, 16: 40.0, 32: 90.0, 64: 300.0})
    assert plan.classical and any(f"< {MIN_STEPS}" in n for n in plan.notes)


def test_batch_and_width_follow_the_memory():
    fp = _fp()
    one = dataclasses.replace(candidates(fp)[1], batch=1)  # base 16
    weights = dataclasses.replace(one, batch=0).memory_mib()
    per_patch = one.memory_mib() - weights
    # a CPU with memory to spare: the nominal batch, the memory said in the reason
    plenty = _plan(fp, memory_mib=24_000)
    assert plenty.settings["batch"] == 4 and "23.4 GiB available" in plenty.reasons["batch"]
    # little memory: fewer patches (at least 2), and wider networks left out
    small = weights + 3.5 * per_patch
    plan = _plan(fp, 2 * 3600, memory_mib=2 * small)  # the step may take half of it
    assert plan.settings["batch"] == 3 and plan.settings["base_channels"] == 16
    assert any("base 32, 64 left out" in n for n in plan.notes)
    # too little for 2: still 2, and the plan says the step may run out of memory
    plan = _plan(fp, memory_mib=2 * (weights + per_patch))
    assert plan.settings["batch"] == 2 and any("run out of memory" in n for n in plan.notes)
    # a GPU: as many as fit in half its memory, at most 5% of the dataset's voxels
    fast = {8: 0.01, 16: 0.02, 32: 0.04, 64: 0.08}
    big = _fp(n=2000)  # 5% of its voxels: 100 patches
    gpu = _plan(big, 1200, seconds=fast, device="cuda", memory_mib=16 * 1024)
    batch = gpu.settings["batch"]
    assert weights + batch * per_patch <= 8 * 1024 < weights + (batch + 1) * per_patch
    assert 4 < batch < 100 and "as many as fit on the GPU" in gpu.reasons["batch"]
    few = _plan(_fp(n=2), 1200, seconds=fast, device="cuda", memory_mib=16 * 1024)
    assert few.settings["batch"] == 2  # 5% of 2 images is less than a patch


def test_memory_estimate_counts_what_a_step_keeps():
    c = Candidate(16, 2, (64, 64), 2, 1, 2, norm="instance")
    # hand count in float32 elements: input 1, logits, softmax and log-softmax 3 x 2; per
    # level (c, voxels): encoder 2 convs x (conv, norm) 4c; decoder up c, concat 2c,
    # 2 convs 4c; pooled map and int64 indices 3c
    v = 64 * 64
    hand = v + 6 * v
    hand += 4 * 16 * v + 7 * 16 * v + 3 * 16 * v / 4
    hand += 4 * 32 * v / 4 + 7 * 32 * v / 4 + 3 * 32 * v / 16
    hand += 4 * 64 * v / 16
    assert c.activation_bytes() == pytest.approx(4 * hand)
    # without a norm the ReLU runs in place over the convolution: one map per convolution
    assert dataclasses.replace(c, norm=None).activation_bytes() < c.activation_bytes()
    # bf16: 2-byte convolution outputs, float32 norms: 3/4 of the maps with a norm, 1/2 without
    low = dataclasses.replace(c, precision="bf16")
    assert 0.6 < low.activation_bytes() / c.activation_bytes() < 0.8
    bare = dataclasses.replace(c, norm=None)
    bare_low = dataclasses.replace(bare, precision="bf16")
    assert bare_low.activation_bytes() / bare.activation_bytes() < 0.6
    # parameters as the network has them
    from segloc.nn import create_model

    net = create_model(
        "unet",
        in_channels=1,
        num_classes=2,
        base_channels=16,
        depth=2,
        padding="same",
        norm="instance",
    )
    assert c.parameters() == sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize(
    "values",
    [
        [16, 5, [256, 256], 4, 1, 2, "fp32", "instance"],
        [8, 4, [256, 256], 8, 3, 2, "fp32", None],
        [16, 4, [48, 64, 48], 2, 1, 3, "bf16", "instance"],
    ],
)
def test_memory_estimate_is_near_a_measured_step(values):
    """The probe's step in a fresh process (benchmarks/step_memory.py): its peak RSS above
    the baseline is within the range the benchmark fitted (0.78-1.23), with some slack."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, str(repo / "benchmarks" / "step_memory.py"), "--one", json.dumps(values)],
        capture_output=True, text=True, cwd=repo, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if "error" in result:
        pytest.skip(result["error"])  # no /proc/self/clear_refs on this system
    base, depth, patch, batch, channels, classes, precision, norm = values
    c = Candidate(base, depth, tuple(patch), batch, channels, classes, precision, norm=norm)
    assert 0.65 < result["measured"] / c.memory_mib() < 1.4, (result, c.memory_mib())


def test_precision_is_the_probes_fastest():
    fp = _fp()
    figures = _probe(fp, bf16=True)
    figures.scout["bf16"] = figures.scout["fp32"] / 2  # 2x fp32
    for c in candidates(fp):
        figures.steps[dataclasses.replace(c, precision="bf16").label] = 0.1 * c.base / 16
    plan = make_plan(fp, figures, budget=600, data="D")
    assert plan.settings["precision"] == "bf16" and "2.0x" in plan.reasons["precision"]
    assert _plan(fp).settings["precision"] == "fp32"
    assert "no native bfloat16" in _plan(fp).reasons["precision"]


def test_tiny_sets_say_what_their_validation_means():
    plan = _plan(_fp(n=5))
    assert plan.settings["decide"] == []
    assert any("validation on 1 of them" in n for n in plan.notes)
    plan = _plan(_fp(n=30))
    assert plan.settings["decide"] == ["tta", "keep_largest"]
    assert any("moves by several points" in n for n in plan.notes)


def test_one_thread_when_the_probe_finds_it_faster():
    busy = _probe(_fp(), threads={"2": 1.2, "1": 0.3})
    plan = make_plan(_fp(), busy, budget=600, data="D")
    assert plan.settings["threads"] == 1 and "busy" in plan.reasons["threads"]
    idle = _probe(_fp(), threads={"2": 0.2, "1": 0.35})
    assert make_plan(_fp(), idle, budget=600, data="D").settings["threads"] is None


def test_workers_follow_the_cores():
    assert _plan(_fp(), cores=2).settings["workers"] == 0
    assert _plan(_fp(), cores=16).settings["workers"] == 6


def test_plan_is_byte_identical_for_the_same_inputs(tmp_path):
    fp = _fp()
    figures = _probe(fp)
    first = plan_yaml(make_plan(fp, figures, budget=600, data="D"), figures)
    # through files: the fingerprint and the probe's figures as written and read back
    save_fingerprint(fp, tmp_path / "fp.json")
    again = ProbeResult.from_dict(json.loads(json.dumps(figures.to_dict())))
    second = plan_yaml(
        make_plan(load_fingerprint(tmp_path / "fp.json"), again, budget=600, data="D"), again
    )
    assert first == second
    # and the YAML is the TrainConfig it says
    cfg = TrainConfig.from_yaml(_write(tmp_path / "plan.yaml", first))
    assert cfg.base_channels == 16 and cfg.time_budget == "600s"
    assert "expected steps" in first and "\n# " in first


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_formats_are_short_tables():
    fp = _fp()
    plan = _plan(fp)
    table = format_plan(plan)
    assert "base_channels" in table and "expected" in table
    assert len(table.splitlines()) < 40
    assert "cases" in format_fingerprint(fp)


# --------------------------------------------------------------------------- override order


def test_flag_over_file_over_plan(tmp_path):
    plan = {"data": "D", "lr": 2e-3, "batch": 4, "base_channels": 8, "time_budget": "1m"}
    path = _write(tmp_path / "c.yaml", "batch: 6\nlr: 0.005\n")
    cfg = TrainConfig.from_sources(path, {"lr": 0.01, "batch": None}, plan=plan)
    assert (cfg.lr, cfg.batch, cfg.base_channels, cfg.time_budget) == (0.01, 6, 8, "1m")
    # without a file, the flags over the plan; without a plan, the defaults below
    cfg = TrainConfig.from_sources(None, {"batch": 2}, plan=plan)
    assert (cfg.batch, cfg.lr) == (2, 2e-3)
    assert TrainConfig.from_sources(path, {}).base_channels is None


# --------------------------------------------------------------------------- probe


def test_probe_is_bounded_and_extrapolates_what_does_not_fit():
    cands = [Candidate(w, 2, (32, 32), 2, 1, 2) for w in (4, 8, 16)]
    # no time at all: only the scout (the cheapest on half the patch side) is measured,
    # every candidate extrapolated from it by the ratio of their operations
    result = probe(cands, seconds=0.0, precisions=["fp32"])
    assert list(result.scout) == ["fp32"] and result.scout["fp32"] > 0
    assert result.estimated == [c.label for c in cands]
    scout = Candidate(4, 2, (16, 16), 2, 1, 2)
    ratio = cands[2].operations() / scout.operations()
    faster = min(result.threads.values())  # the scout on the faster thread count
    assert result.steps[cands[2].label] == pytest.approx(faster * ratio, rel=1e-3)
    # with time to spare every candidate is measured
    result = probe(cands, seconds=60.0, precisions=["fp32"], augment={})
    assert result.estimated == [] and result.augment > 0


# --------------------------------------------------------------------------- fingerprint


def _patients(root: Path, prefix: str = "pat", stem: str = "slice", n: int = 3) -> Path:
    """``n`` patients in sub-folders, 4 numbered 32x32 3-channel slices each, a dark frame."""
    rng = np.random.default_rng(0)
    for p in range(n):
        for s in range(4):
            image = np.zeros((32, 32, 3), np.uint8)
            image[6:26, 6:26] = rng.integers(60, 200, (20, 20, 3))
            mask = np.zeros((32, 32), bool)
            mask[10 + s : 16 + s, 12:18] = True
            image[mask] = 230
            io.write_image(root / "images" / f"{prefix}{p}" / f"{prefix}{p}_{stem}{s}.png", image)
            io.write_mask(root / "masks" / f"{prefix}{p}" / f"{prefix}{p}_{stem}{s}_mask.png", mask)
    return root


def test_fingerprint_of_patient_folders(tmp_path):
    fp = fingerprint(_patients(tmp_path / "d"))
    assert fp.n_cases == 12 and fp.dims == 2 and fp.channels == 3
    assert fp.groups == {"folders": 3, "largest": 4}
    assert set(fp.classes) == {"0", "1"} and fp.binary_files and not fp.problems
    assert np.median(fp.body_fraction) < 0.75  # the dark frame
    assert fp.intensity[0]["foreground"]["p50"] == pytest.approx(230)
    # cached: the second call reads the user cache (same key), not the files
    cached = fingerprint(tmp_path / "d")
    assert cached.to_dict() == fp.to_dict()
    assert list((tmp_path / "cache" / "fingerprints").glob("*.json"))


def test_renamed_dataset_gives_the_same_plan(tmp_path):
    first = _patients(tmp_path / "first")
    other = _patients(tmp_path / "renamed_set", prefix="case", stem="img")
    fp_a, fp_b = fingerprint(first), fingerprint(other)
    assert fp_a.key != fp_b.key
    figures = _probe(fp_a)
    yaml_a = plan_yaml(make_plan(fp_a, figures, budget=600, data="X"), figures)
    yaml_b = plan_yaml(make_plan(fp_b, figures, budget=600, data="X"), figures)
    assert yaml_a == yaml_b


def test_fingerprint_names_bad_files(tmp_path):
    root = _patients(tmp_path / "d", n=2)
    bad = root / "masks" / "pat1" / "pat1_slice2_mask.png"
    io.write_mask(bad, np.zeros((16, 16), bool))  # shape differs from its image
    fp = fingerprint(root, cache=False)
    assert any("pat1_slice2" in p for p in fp.problems) and fp.n_cases == 7


@pytest.mark.parametrize("kind", ["no labels", "mismatched", "one class", "single case"])
def test_segloc_plan_exits_2_naming_the_files(tmp_path, capsys, kind):
    root = tmp_path / "d"
    if kind == "no labels":
        io.write_image(root / "images" / "a.png", np.zeros((16, 16), np.uint8))
        named = str(root)
    else:
        n = 1 if kind == "single case" else 3
        for i in range(n):
            mask = np.zeros((16, 16), bool)
            if kind != "one class":
                mask[4:8, 4:8] = True
            io.write_image(root / "images" / f"a{i}.png", np.full((16, 16), 9 * i, np.uint8))
            io.write_mask(root / "labels" / f"a{i}.png", mask)
        named = str(root)
        if kind == "mismatched":
            io.write_mask(root / "labels" / "a1.png", np.zeros((8, 8), bool))
            named = "a1.png"
        if kind == "single case":
            named = "a0"
    out = tmp_path / "p" / "plan.yaml"
    code = main(["plan", "--data", str(root), "--time-budget", "10s", "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and named in err, err
    assert not out.parent.exists() or not any(out.parent.iterdir())  # no plan, no fingerprint


def test_segloc_plan_writes_plan_and_fingerprint(tmp_path, capsys):
    root = _patients(tmp_path / "d", n=6)
    out = tmp_path / "p" / "plan.yaml"
    assert main(["plan", "--data", str(root), "--time-budget", "10s", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "fingerprint" in text and "plan" in text and "group_by" in text
    cfg = TrainConfig.from_yaml(out).validate()
    assert cfg.group_by == "folder" and cfg.normalize == "body" and cfg.data == str(root)
    assert (out.parent / "fingerprint.json").is_file()
    shutil.rmtree(root / "masks")  # a renamed or missing label folder: exit 2 naming it
    assert main(["plan", "--data", str(root)]) == 2


def test_fingerprint_finds_a_void_label(tmp_path):
    """A top label scattered in small pieces on the other classes' borders: unlabelled."""
    rng = np.random.default_rng(0)
    for i in range(4):
        labels = np.zeros((48, 48), np.int32)
        labels[:, 16:32], labels[:, 32:] = 1, 2
        labels[24:, :16] = 3
        edges = np.zeros_like(labels, bool)
        edges[:, [15, 16, 31, 32]] = True
        edges[[23, 24], :] = True
        labels[edges & (rng.random(labels.shape) < 0.5)] = 4  # void: pieces on the borders
        image = (labels * 40 + rng.integers(0, 20, labels.shape)).astype(np.uint8)
        io.write_image(tmp_path / "d" / "images" / f"f{i}.png", image)
        io.write_mask(tmp_path / "d" / "labels" / f"f{i}.png", labels)
    fp = fingerprint(tmp_path / "d", cache=False)
    assert fp.ignore_hint == 4
    # named in an nnU-Net dataset.json, it wins
    (tmp_path / "d" / "dataset.json").write_text(json.dumps({"labels": {"ignore": 3}}))
    assert fingerprint(tmp_path / "d", cache=False).ignore_hint == 3


@pytest.mark.parametrize("keep", [False, True])
def test_fingerprint_holds_one_case_at_a_time(tmp_path, monkeypatch, keep):
    """A fingerprint never holds all the dataset's images: the case reader is wrapped to
    count its image and label arrays still alive, at most one case's (two arrays) when each
    case is read; ``keep=True`` holds every array in the wrapper to prove the count sees it."""
    import weakref

    from segloc.engine import fingerprint as fingerprint_module

    n = 30
    rng = np.random.default_rng(0)
    for i in range(n):
        mask = np.zeros((48, 40), bool)
        mask[8:20, i % 20 : i % 20 + 10] = True
        io.write_image(tmp_path / "d" / "images" / f"c{i:03d}.png",
                       rng.integers(0, 255, (48, 40), dtype=np.uint8))  # fmt: skip
        io.write_mask(tmp_path / "d" / "labels" / f"c{i:03d}.png", mask)
    alive, peak, held = [0], [0], []
    real = fingerprint_module.load_case

    def _freed():
        alive[0] -= 1

    def counted(case):
        image, labels, meta = real(case)
        for array in (image, labels):
            alive[0] += 1
            weakref.finalize(array, _freed)
        peak[0] = max(peak[0], alive[0])
        if keep:
            held.append((image, labels))
        return image, labels, meta

    monkeypatch.setattr(fingerprint_module, "load_case", counted)
    fp = fingerprint(tmp_path / "d", cache=False)
    assert fp.n_cases == n and not fp.problems
    assert peak[0] == (2 * n if keep else 2)
