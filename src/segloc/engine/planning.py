"""Planning a run end to end: fingerprint, probe, rules, and training the plan.

:func:`plan_dataset` reads (or finds cached) the dataset's fingerprint
(:mod:`segloc.engine.fingerprint`), times the candidate networks on this machine
(:mod:`segloc.engine.probe`, a few seconds) and applies the rules
(:mod:`segloc.engine.plan`). When no network gets enough steps in the budget it scores the
unattended classical methods on the plan's validation split and proposes the best.
:func:`plan_and_train` is ``segloc train``: the plan is the lowest layer of the settings
(flag > config file > plan), and the run folder keeps ``fingerprint.json`` and ``plan.yaml``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segloc.engine.config import TrainConfig
from segloc.engine.data import find_cases, load_case, split_cases
from segloc.engine.fingerprint import Fingerprint, fingerprint
from segloc.engine.plan import (
    Plan,
    candidates,
    format_fingerprint,
    format_plan,
    make_plan,
    plan_yaml,
)
from segloc.engine.probe import ProbeResult, device_memory, probe
from segloc.engine.run import parse_duration, resolve_device
from segloc.engine.slices import on_slices, slice_axis

__all__ = [
    "Planned",
    "plan_and_train",
    "plan_dataset",
    "probe_seconds",
    "score_classical",
    "write_plan",
]


#: the plan of the 2D network on the slices of anisotropic volumes, beside ``plan.yaml``
SLICES_PLAN = "plan-2d.yaml"


def probe_seconds(budget: float | None) -> float:
    """Seconds the probe may take: 3% of the budget, between 1 and 20 (5 without one)."""
    return 5.0 if budget is None else float(min(20.0, max(1.0, 0.03 * budget)))


@dataclass
class Planned:
    """A dataset's fingerprint, the probe's figures, the plan, and the classical proposal;
    for anisotropic volumes also the plan of a 2D network on their slices (``slices``, with
    its own probe), each plan then given half the budget."""

    fingerprint: Fingerprint
    probe: ProbeResult
    plan: Plan
    classical: list[tuple[str, float]] = field(default_factory=list)
    slices: Plan | None = None
    slices_probe: ProbeResult | None = None

    def yaml(self) -> str:
        return plan_yaml(self.plan, self.probe)

    def files(self) -> dict[str, str]:
        """What a run folder keeps of the plan: ``plan.yaml`` and ``fingerprint.json``, and
        ``plan-2d.yaml`` when a 2D network on the slices is tried."""
        fp = json.dumps(self.fingerprint.to_dict(), indent=1, sort_keys=True)
        files = {"plan.yaml": self.yaml(), "fingerprint.json": fp}
        if self.slices is not None:
            files[SLICES_PLAN] = plan_yaml(self.slices, self.slices_probe)
        return files

    def report(self) -> str:
        """Fingerprint and plan as tables, and the classical proposal if there is one."""
        text = [format_fingerprint(self.fingerprint), "", format_plan(self.plan)]
        if self.slices is not None:
            table = format_plan(self.slices).split("\n", 1)[1]  # under its own title
            text += ["", f"plan of the 2D network on the slices ({SLICES_PLAN})", table]
        if self.classical:
            text.append("")
            text.append("classical methods on the validation split (mean Dice):")
            for name, dice in self.classical:
                text.append(f"  {name:<24} {dice:.4f}")
            text.append(f"  proposed: {self.classical[0][0]}")
        return "\n".join(text)


def plan_dataset(
    data: str | os.PathLike,
    *,
    time_budget: str | float | None = "20m",
    device: str = "auto",
    image_dir: str | None = None,
    label_dir: str | None = None,
    label_suffix: str | None = None,
    cache: bool = True,
    save_fingerprint: str | os.PathLike | None = None,
    probe_limit: float | None = None,
    slices: bool = True,
) -> Planned:
    """Fingerprint ``data``, probe this machine and plan a run of ``time_budget``.

    Parameters
    ----------
    data : path-like
        Dataset folder.
    time_budget : str or float, optional
        ``"20m"``, ``"1h30m"``, seconds; None plans without a budget (the recipes' width).
    device : {"auto", "cpu", "cuda"}
    image_dir, label_dir, label_suffix
        As for :func:`segloc.engine.data.find_cases`.
    cache : bool
        Use the user cache of fingerprints.
    save_fingerprint : path-like, optional
        Also keep the fingerprint there.
    probe_limit : float, optional
        Seconds the probe may take (default :func:`probe_seconds`).
    slices : bool
        Plan a 2D network on the slices beside the 3D one where
        :func:`segloc.engine.plan.slice_axis` finds an axis; each plan then gets half the
        budget (and the probe half its seconds). False: the 3D plan alone, whole budget.

    Returns
    -------
    Planned
        Data problems are in ``fingerprint.problems`` (not raised).
    """
    budget = parse_duration(time_budget) if time_budget is not None else None
    fp = fingerprint(
        data,
        image_dir=image_dir,
        label_dir=label_dir,
        label_suffix=label_suffix,
        cache=cache,
        save_to=save_fingerprint,
    )
    dev = resolve_device(device)
    # measured once: the candidates the probe times and the plan must agree on the batch
    memory = round(device_memory(dev) / 2**20)
    axis, untried = slice_axis(fp) if slices else (None, None)
    share = 1.0 if axis is None else 0.5
    seconds = share * (probe_limit or probe_seconds(budget))
    part = None if budget is None else share * budget
    text = None if time_budget is None or isinstance(time_budget, (int, float)) else time_budget
    text = text if axis is None else None  # half the budget: written in seconds

    def planned_for(f: Fingerprint) -> tuple[ProbeResult, Plan]:
        figures = ProbeResult(device=dev.type, memory_mib=memory)
        if f.n_cases and f.dims:
            scratch = make_plan(f, figures, budget=budget or 1.0, data=str(data))
            figures = probe(
                candidates(f, dev.type, memory),
                device=dev,
                seconds=seconds,
                augment=dict(scratch.settings["augment_kwargs"]),
            )
            figures.memory_mib = memory
        return figures, make_plan(f, figures, budget=part, data=str(data), budget_text=text)

    figures, plan = planned_for(fp)
    planned = Planned(fp, figures, plan)
    if untried:
        plan.notes.append(untried)
    if axis is not None:
        planned.slices_probe, flat = planned_for(fp.slices(axis))
        planned.slices = on_slices(flat, plan, fp, axis)
        for half, other in ((plan, "the 2D network on the slices"), (planned.slices, "3D")):
            if "time_budget" in half.settings:
                half.reasons["time_budget"] = (
                    f"half the budget given ({time_budget}); the other half trains {other}"
                )
        plan.notes.append(
            f"a 2D network on the slices across axis {axis} ({SLICES_PLAN}) is trained "
            "beside this one, each on half the budget; the better on the validation split "
            "is kept"
        )
    if plan.classical and not fp.problems:
        planned.classical = score_classical(data, plan, fp)
    return planned


def write_plan(
    data: str | os.PathLike, output: str | os.PathLike | None = None, **options: Any
) -> Planned:
    """:func:`plan_dataset`, with ``output`` (when given) receiving the plan's YAML and a
    ``fingerprint.json`` beside it (and ``NAME-2d.yaml``, the 2D network's plan, where one
    is tried); ``segloc plan``. None is written when the fingerprint reports problems (the
    caller exits non-zero)."""
    if output is not None:
        options.setdefault("save_fingerprint", Path(output).parent / "fingerprint.json")
    planned = plan_dataset(data, **options)
    if output is not None and planned.plan.settings and not planned.fingerprint.problems:
        from segloc._validation import write_atomic

        texts = {Path(output): planned.yaml()}
        if planned.slices is not None:
            flat = Path(output).with_name(f"{Path(output).stem}-2d{Path(output).suffix}")
            texts[flat] = planned.files()[SLICES_PLAN]
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        for path, text in texts.items():
            write_atomic(path, lambda tmp, t=text: tmp.write_text(t))
    return planned


# --------------------------------------------------------------------------- classical


def _val_cases(data: str | os.PathLike, settings: Mapping[str, Any]) -> list:
    cases = find_cases(data)
    group = (lambda c: c.image.parent.as_posix()) if settings.get("group_by") == "folder" else None
    _, val = split_cases(
        cases,
        val_fraction=settings.get("val_fraction", 0.2),
        seed=0,
        group_by=group,
        order=settings.get("val_split", "random"),
    )
    return val or cases


def score_classical(
    data: str | os.PathLike, plan: Plan, fp: Fingerprint
) -> list[tuple[str, float]]:
    """Mean Dice of each unattended classical method on the plan's validation split, best
    first. Two-class methods are scored in both polarities (foreground brighter or darker
    than the background), the better one kept: a choice made on the validation split."""
    from segloc.classical import METHODS, segment_unattended
    from segloc.color import to_grey
    from segloc.metrics import overlap_scores

    classes = (
        2
        if plan.settings.get("label_mapping") == "binary"
        else max(2, max((int(k) for k in fp.classes), default=1) + 1)
    )
    ignore = plan.settings.get("ignore_index")
    names = [n for n, m in METHODS.items() if m.unattended and n not in ("srg", "confidence")]
    if classes > 2:
        names = [n for n in names if n in ("multiotsu", "kmeans")]
    totals: dict[str, list[float]] = {}
    for case in _val_cases(data, plan.settings):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            image, labels, _ = load_case(case, label_mapping="auto")
        if plan.settings.get("label_mapping") == "binary":
            labels = (labels > 0).astype(np.int64)
        grey = to_grey(np.moveaxis(image, 0, -1)) if image.shape[0] == 3 else image[0]
        for name in names:
            pred = segment_unattended(grey, name, num_classes=classes)
            variants = {name: pred}
            if classes == 2:
                variants[f"{name} (inverted)"] = 1 - pred
            for label, p in variants.items():
                dice = overlap_scores(
                    p, labels, num_classes=classes, ignore_index=ignore, empty="nan"
                )["dice"]
                totals.setdefault(label, []).append(float(np.nanmean(dice)))
    scores = [(k, float(np.nanmean(v))) for k, v in totals.items()]
    return sorted(scores, key=lambda kv: (-kv[1], kv[0]))


# --------------------------------------------------------------------------- training


def plan_and_train(
    overrides: Mapping[str, Any],
    *,
    config: str | os.PathLike | None = None,
    plan: bool = True,
    progress: bool = True,
    started: float | None = None,
) -> Any:
    """``segloc train``: plan (unless ``plan`` is False), then train; flag > file > plan.

    Parameters
    ----------
    overrides : mapping
        The flags given (None values are not given).
    config : path-like, optional
        A YAML settings file (a ``plan.yaml`` reruns its plan).
    plan : bool
        Plan the run first; the plan is the lowest layer of the settings. A resumed run
        reuses the ``plan.yaml`` in its folder instead of planning again.
    progress : bool
    started : float, optional
        ``time.perf_counter()`` at the start of the command: the budget counts from there.

    Raises
    ------
    ValueError
        Bad data (the plan's problems, naming the files).

    Warns
    -----
    UserWarning
        A budget in which no network gets enough steps (``segloc plan`` proposes a
        classical method then); the narrowest network is trained all the same.
    """
    from segloc.engine.train import train

    started = time.perf_counter() if started is None else started
    given = {k: v for k, v in overrides.items() if v is not None}
    layer, files = None, None
    if plan:
        first = TrainConfig.from_sources(config, given)
        saved = Path(first.out) / "plan.yaml"
        if first.resume and saved.is_file():
            layer = TrainConfig.from_yaml(saved).to_dict()
        else:
            if not first.data:
                raise ValueError("data must name a dataset folder")
            planned = plan_dataset(
                first.data,
                time_budget=first.time_budget,
                device=first.device,
                image_dir=first.image_dir,
                label_dir=first.label_dir,
                label_suffix=first.label_suffix,
                slices=not _fixes_network(config, given),
            )
            problems = planned.fingerprint.problems
            if problems:
                raise ValueError(f"{problems[0]} ({len(problems)} problem(s); see segloc plan)")
            if planned.plan.classical:
                # asked to train: train the narrowest network, and say what the plan says
                note = next(n for n in planned.plan.notes if n.startswith("too few steps"))
                warnings.warn(
                    f"{first.data}: {note} (segloc plan scores them); "
                    "training the narrowest network anyway",
                    UserWarning,
                    stacklevel=2,
                )
            if planned.slices is not None:
                return train_both(planned, config, given, started=started, progress=progress)
            layer, files = planned.plan.settings, planned.files()
    cfg = TrainConfig.from_sources(config, given, plan=layer)
    return train(cfg, progress=progress, started=started, files=files)


# --------------------------------------------------------------------------- 2D or 3D

#: settings that fix the network: given (flag or file), the 2D network is not tried
NETWORK_SETTINGS = ("model", "patch", "extra_model_kwargs", "base_channels", "depth")
#: what the kept network's run leaves in the run folder (its states stay in its sub-folder)
KEPT_FILES = (
    "model.safetensors",
    "config.yaml",
    "split.json",
    "decisions.json",
    "metrics.csv",
    "curves.png",
)
NETWORK_CHOICE = "network.json"


def _fixes_network(config: str | os.PathLike | None, given: Mapping[str, Any]) -> bool:
    from segloc.engine.config import yaml_mapping

    named = set(given) | (set(yaml_mapping(config)) if config else set())
    return bool(named & set(NETWORK_SETTINGS))


def _score(result: Any) -> tuple[float, str]:
    """The validation mean Dice of a finished run's model, with the choices it made, and
    where the figure comes from."""
    decisions = Path(result.out) / "decisions.json"
    if decisions.is_file():
        found = json.loads(decisions.read_text()).get("score")
        if found is not None:
            return float(found), "decisions.json"
    last = result.history[-1].get("val_dice") if result.history else None
    return (float("nan") if last is None else float(last)), "the last validation"


def train_both(
    planned: Planned,
    config: str | os.PathLike | None,
    given: Mapping[str, Any],
    *,
    started: float,
    progress: bool = True,
) -> Any:
    """Train the 3D plan and the 2D plan on the slices, each on half the budget, and keep
    the one that scores better on the (shared) validation split.

    Each network trains in its own sub-folder (``3d/``, ``2d/``) with its plan; the kept
    one's model, settings and scores are copied to the run folder, whose
    ``network.json`` records both scores and the choice (a tie keeps 3D). ``segloc
    predict`` needs nothing but the run folder, as for one network.

    Returns
    -------
    TrainResult
        The kept network's, with ``out`` the run folder.
    """
    import dataclasses

    from segloc._validation import write_atomic
    from segloc.engine.run import Dist
    from segloc.engine.train import train

    assert planned.slices is not None
    first = TrainConfig.from_sources(config, given, plan=planned.plan.settings)
    if first.resume:
        raise ValueError(
            f"{first.out}: a run that tries 2D and 3D resumes one network at a time: "
            f"segloc train --config {Path(first.out) / '3d' / 'config.yaml'} --resume "
            "(or 2d/)"
        )
    total = None if first.time_budget is None else parse_duration(first.time_budget)
    out = Path(first.out)
    plans = {"3d": (planned.plan, planned.probe), "2d": (planned.slices, planned.slices_probe)}
    results, rows = {}, {}
    for i, (name, (plan, figures)) in enumerate(plans.items()):
        now = time.perf_counter()
        budget = None
        if total is not None:
            # the 3D network until half the budget; the 2D one what is left of it
            budget = total / 2 if i == 0 else max(1.0, total - (now - started))
        cfg = TrainConfig.from_sources(config, given, plan=plan.settings)
        cfg = dataclasses.replace(cfg, out=str(out / name), time_budget=budget)
        result = train(
            cfg,
            progress=progress,
            started=started if i == 0 else now,
            files={"plan.yaml": plan_yaml(plan, figures)},
        )
        score, source = _score(result)
        results[name] = result
        rows[name] = {
            "score": score,
            "source": source,
            "folder": name,
            "network": plan.expected.get("network", ""),
            "steps": int(result.history[-1].get("step", 0)) if result.history else 0,
            "epochs": result.epochs,
        }
    a, b = rows["3d"]["score"], rows["2d"]["score"]
    chosen = "2d" if np.isfinite(b) and (not np.isfinite(a) or b > a) else "3d"
    cases = len(json.loads((out / "3d" / "split.json").read_text())["val"])
    reason = f"validation mean Dice on the same {cases} cases: 3D {a:.4f}, 2D {b:.4f}" + (
        "; a tie keeps 3D" if chosen == "3d" and a == b else ""
    )
    if Dist.from_env().main:
        for name, text in planned.files().items():
            write_atomic(out / name, lambda tmp, t=text: tmp.write_text(t))
        for name in KEPT_FILES:
            source = out / chosen / name
            if source.is_file():
                write_atomic(out / name, lambda tmp, s=source: shutil.copyfile(s, tmp))
        if (out / chosen / "samples").is_dir():  # image | truth | prediction pictures
            shutil.copytree(out / chosen / "samples", out / "samples", dirs_exist_ok=True)
        doc = {"networks": rows, "chosen": chosen, "reason": reason}
        text = json.dumps(doc, indent=1, sort_keys=True, allow_nan=True)
        write_atomic(out / NETWORK_CHOICE, lambda tmp: tmp.write_text(text))
    return dataclasses.replace(results[chosen], out=out)
