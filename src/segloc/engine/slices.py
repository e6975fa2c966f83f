"""2D or 3D: the plan of a 2D U-Net on the slices of anisotropic volumes.

nnU-Net trains a 2D and a 3D network and keeps the better on its validation folds [1]_; on
volumes whose slices are much thicker than their pixels the 2D one sometimes wins.
:func:`slice_axis` says whether (and across which axis) a dataset gets the 2D try, and
:func:`on_slices` turns the plan of its slices (:meth:`Fingerprint.slices`, planned by
:func:`segloc.engine.plan.make_plan` like any 2D dataset) into settings for the volumes.
:func:`segloc.engine.planning.train_both` trains the two and keeps the better.

References
----------
.. [1] Isensee, F. et al. "nnU-Net: a self-configuring method for deep learning-based
   biomedical image segmentation", Nature Methods 18, 2021,
   :doi:`10.1038/s41592-020-01008-z`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from segloc.engine.fingerprint import Fingerprint
from segloc.engine.plan import ANISOTROPY, Plan, _sig, _split, at_spacing

__all__ = ["MIN_VALIDATION", "on_slices", "slice_axis"]


MIN_VALIDATION = 3  # validation cases (or folders) it takes to choose between 2D and 3D


def slice_axis(fp: Fingerprint) -> tuple[int | None, str | None]:
    """The axis across which a 2D network is tried beside the 3D one (or None), and, for
    anisotropic volumes where it is not tried, why.

    nnU-Net trains a 2D and a 3D network and keeps the better on its validation folds;
    2D sometimes wins on volumes whose slices are much thicker than their pixels. Here the
    two are tried on anisotropic volumes only (the coarse axis more than ``ANISOTROPY``
    times the finest), and only when at least ``MIN_VALIDATION`` validation cases can
    decide between them.
    """
    if fp.dims != 3 or not fp.spacings or fp.problems:
        return None, None
    median = fp.median_spacing()
    if max(median) / min(median) <= ANISOTROPY:
        return None, None
    n_val = _split(fp, Plan())
    if n_val < MIN_VALIDATION:
        return None, (
            f"a 2D network on the slices is not tried beside the 3D one: {n_val} validation "
            f"case(s) cannot tell the two apart (it takes {MIN_VALIDATION})"
        )
    return int(np.argmax(median)), None


def on_slices(flat: Plan, full: Plan, fp: Fingerprint, axis: int) -> Plan:
    """``flat``, the plan of ``fp.slices(axis)``, as settings for the volumes themselves: a
    2D U-Net run on every slice across ``axis`` (``extra_model_kwargs: slice_axis``),
    patches one slice thick, the volumes resampled in-plane only. ``full`` is the 3D plan
    of ``fp`` (its mirroring along ``axis`` is kept)."""
    plan = dataclasses.replace(
        flat,
        settings=dict(flat.settings),
        reasons=dict(flat.reasons),
        notes=list(flat.notes),
        expected=dict(flat.expected),
    )
    plane = [a for a in range(3) if a != axis]

    def volume(values: Sequence[Any], along: Any) -> list[Any]:
        out = list(values)
        out.insert(axis, along)
        return out

    s = plan.settings
    plan.set(
        "patch",
        volume(s["patch"], 1),
        f"one slice across axis {axis}; in-plane: {plan.reasons['patch']}",
    )
    kwargs: dict[str, Any] = {"slice_axis": axis}
    if "pools" in s.get("extra_model_kwargs", {}):
        kwargs["pools"] = [volume(level, 1) for level in s["extra_model_kwargs"]["pools"]]
    median = fp.median_spacing()
    plan.set(
        "extra_model_kwargs",
        kwargs,
        f"a 2D U-Net on every slice across axis {axis}: slices {median[axis]:g} apart, "
        f"pixels {min(median[a] for a in plane):g} (nnU-Net's 2D configuration)",
    )
    in_plane = s.get("target_spacing") or [median[a] for a in plane]
    target = volume(in_plane, _sig(median[axis]))
    same = at_spacing(fp, target)
    plan.set(
        "target_spacing",
        None if same else target,
        f"in-plane as the slices' plan; across the slices the median {target[axis]:g}"
        + ("; every case is there already" if same else ""),
    )
    aug = dict(s["augment_kwargs"])
    flips = [plane[a] for a in aug["flip_axes"]]
    if axis in full.settings["augment_kwargs"]["flip_axes"]:
        flips.append(axis)
    aug["flip_axes"] = sorted(flips)
    aug["rot90_axes"] = plane
    turns = f"quarter turns in the plane of axes {plane}" if aug["p_rot90"] else "no quarter turns"
    plan.set(
        "augment_kwargs",
        aug,
        f"mirror axes {aug['flip_axes']} of the volume (in-plane as the slices' plan, across "
        f"them as the 3D plan); {turns}; intensity scaled and shifted per channel",
    )
    plan.notes.insert(0, f"2D on the slices across axis {axis}, tried beside the 3D network")
    return plan
