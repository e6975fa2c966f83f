"""Score predicted masks against ground truth, one case or whole folders.

One row per case with Dice, IoU and HD95 per class (and their mean over classes), then
mean / std / median over cases. Files are matched by name (:func:`segloc.io.match_files`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segloc import io, metrics
from segloc._validation import atomic_path, check_choice, check_output_folder, naming
from segloc.classical import METHODS, check_unattended, segment_unattended
from segloc.color import to_grey
from segloc.engine.data import check_cases, check_label_values, find_cases, load_case
from segloc.viz import comparison_panel

#: per-class scores computed for every case
SCORES = ("dice", "iou", "hd95")


def as_labels(mask: np.ndarray) -> np.ndarray:
    """bool masks become 0/1 int32 label maps; label maps pass through as int32."""
    mask = np.asarray(mask)
    return mask.astype(np.int32, copy=False)


def evaluate_case(
    pred: np.ndarray,
    truth: np.ndarray,
    *,
    num_classes: int | None = None,
    classes: Sequence[int] | None = None,
    ignore_index: int | None = None,
    spacing: Sequence[float] | None = None,
    empty: str = "nan",
    surface: bool = True,
) -> dict[str, float]:
    """Return ``{"dice_<c>", "iou_<c>", "hd95_<c>", "dice" (mean over classes), ...}`` for a case.

    Parameters
    ----------
    pred, truth : ndarray
        bool masks or int label maps of the same shape.
    num_classes : int, optional
        Label count including background; inferred from both maps when None.
    classes : sequence of int, optional
        Classes to report (default: every foreground class ``1..num_classes-1``).
    ignore_index : int, optional
        Truth value excluded from scoring (CamVid's void = 11).
    spacing : sequence of float, optional
        Voxel spacing for HD95 (physical units).
    """
    pred, truth = as_labels(pred), as_labels(truth)
    if pred.shape != truth.shape:
        raise ValueError(
            f"prediction and truth must have the same shape, got {pred.shape} and {truth.shape}"
        )
    wanted = None if classes is None else [int(c) for c in classes]
    if wanted is not None and (not wanted or min(wanted) < 0):
        raise ValueError(f"classes to report must be labels >= 0, got {wanted}")
    if num_classes is None:
        valid = truth[truth != ignore_index] if ignore_index is not None else truth
        num_classes = int(max(valid.max(initial=0), pred.max(initial=0), 1)) + 1
        # a reported class absent from both maps is an empty class, scored by ``empty``
        num_classes = max(num_classes, max(wanted or [0]) + 1)
    elif wanted is not None and max(wanted) >= num_classes:
        raise ValueError(f"classes to report must be below num_classes={num_classes}, got {wanted}")
    overlap = metrics.overlap_scores(
        pred,
        truth,
        num_classes=num_classes,
        ignore_index=ignore_index,
        empty=empty,
        include_background=True,
    )
    wanted = wanted if wanted is not None else list(range(1, num_classes))
    row: dict[str, float] = {}
    for c in wanted:
        row[f"dice_{c}"] = float(overlap["dice"][c])
        row[f"iou_{c}"] = float(overlap["iou"][c])
        if surface:
            p, t = pred == c, truth == c
            if ignore_index is not None:
                keep = truth != ignore_index
                p, t = p & keep, t & keep
            row[f"hd95_{c}"] = _finite_or_nan(metrics.hd95(p, t, spacing=spacing))
    for name in SCORES if surface else SCORES[:2]:
        vals = [row[f"{name}_{c}"] for c in wanted]
        row[name] = float(np.nanmean(vals)) if np.isfinite(vals).any() else math.nan
    return row


def _finite_or_nan(value: float) -> float:
    """Surface distances to an empty mask are infinite or nan: report nan, counted apart."""
    value = float(value)
    return value if math.isfinite(value) else math.nan


@dataclass
class Evaluation:
    """Per-case rows and their summary over cases."""

    rows: list[dict] = field(default_factory=list)
    unmatched_pred: list[str] = field(default_factory=list)
    unmatched_truth: list[str] = field(default_factory=list)

    @property
    def columns(self) -> list[str]:
        cols: list[str] = []
        for row in self.rows:
            cols += [k for k in row if k not in cols and k != "case"]
        return cols

    def summary(self) -> dict[str, dict[str, float]]:
        """Mean, std, median and count (``n``) of every column over cases, nan ignored."""
        out: dict[str, dict[str, float]] = {"mean": {}, "std": {}, "median": {}, "n": {}}
        for col in self.columns:
            vals = np.array([r.get(col, math.nan) for r in self.rows], dtype=float)
            ok = vals[np.isfinite(vals)]
            out["n"][col] = int(ok.size)
            out["mean"][col] = float(ok.mean()) if ok.size else math.nan
            out["std"][col] = float(ok.std()) if ok.size else math.nan
            out["median"][col] = float(np.median(ok)) if ok.size else math.nan
        return out

    def to_csv(self, path: str | os.PathLike) -> Path:
        """Write per-case rows then mean/std/median rows, atomically."""
        summary = [{"case": s, **v} for s, v in self.summary().items() if s != "n"]
        return io.write_csv(path, [*self.rows, *summary], missing=math.nan)

    def to_json(self, path: str | os.PathLike) -> Path:
        """Write ``{"cases": rows, "summary": ..., "unmatched": ...}`` (nan as null), atomically."""
        doc = {
            "cases": [{k: _json_value(v) for k, v in r.items()} for r in self.rows],
            "summary": {
                s: {k: _json_value(v) for k, v in d.items()} for s, d in self.summary().items()
            },
            "unmatched": {"prediction": self.unmatched_pred, "truth": self.unmatched_truth},
        }
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(doc, indent=2))
        return Path(path)


def _json_value(v):
    return None if isinstance(v, float) and not math.isfinite(v) else v


def evaluate_paths(
    pred: str | os.PathLike,
    truth: str | os.PathLike,
    *,
    num_classes: int | None = None,
    classes: Sequence[int] | None = None,
    ignore_index: int | None = None,
    truth_suffix: str = "",
    empty: str = "nan",
    surface: bool = True,
    kind: str = "auto",
) -> Evaluation:
    """Evaluate one prediction file against one truth file, or two folders matched by name.

    Raises
    ------
    ValueError
        If nothing matches, or a pair differs in shape (the message names both files).
    """
    pred, truth = Path(pred), Path(truth)
    if pred.is_dir() != truth.is_dir():
        raise ValueError(f"{pred} and {truth}: give two files or two folders, not one of each")
    if pred.is_dir():
        pairs, un_p, un_t = io.match_files(pred, truth, truth_suffix=truth_suffix)
        if not pairs:
            raise ValueError(f"{pred}: no prediction file matches a truth file in {truth}")
    else:
        pairs, un_p, un_t = [(pred, truth)], [], []
    result = Evaluation(
        unmatched_pred=[str(p) for p in un_p], unmatched_truth=[str(t) for t in un_t]
    )
    for p_path, t_path in pairs:
        p, _ = io.read_mask(p_path, kind=kind)
        t, t_meta = io.read_mask(t_path, kind=kind)
        if p.shape != t.shape:
            raise ValueError(
                f"{p_path}: shape {p.shape} does not match the truth {t_path} with shape {t.shape}"
            )
        spacing = t_meta.spacing if len(t_meta.spacing) == t.ndim else None
        try:
            row = evaluate_case(
                p,
                t,
                num_classes=num_classes,
                classes=classes,
                ignore_index=ignore_index,
                spacing=spacing,
                empty=empty,
                surface=surface,
            )
        except ValueError as err:
            raise ValueError(f"{p_path} against {t_path}: {err}") from None
        result.rows.append({"case": io.case_stem(t_path), **row})
    return result


# --------------------------------------------------------------------------- models on datasets
# Scoring a model (or a classical method) on a dataset folder: predict each case, score it
# against its label file, keep the best and worst case for a picture.

#: classical methods :func:`compare_methods` accepts: those of :data:`segloc.classical.METHODS`
#: that run with no user input (:func:`classical_segmenter`)
CLASSICAL = tuple(name for name, method in METHODS.items() if method.unattended)


def load_split(run: str | os.PathLike) -> dict[str, list[str]]:
    """Read ``run/split.json`` (``{"train": [case names], "val": [case names]}``).

    Raises
    ------
    FileNotFoundError
        If the run folder has no ``split.json``.
    ValueError
        If it is not such a dict.
    """
    path = Path(run) / "split.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no split.json in the run folder (needed for --split)")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not JSON ({err})") from None
    if not isinstance(doc, dict) or not all(isinstance(doc.get(k), list) for k in ("train", "val")):
        raise ValueError(f"{path}: must hold {{'train': [...], 'val': [...]}} lists of case names")
    return {k: [str(n) for n in doc[k]] for k in ("train", "val")}


def select_cases(
    data: str | os.PathLike,
    *,
    run: str | os.PathLike | None = None,
    split: str = "all",
    **layout: Any,
) -> list:
    """The cases of dataset folder ``data`` (:func:`segloc.engine.data.find_cases`, which
    takes ``layout``: ``image_dir``, ``label_dir``, ``label_suffix``), all or those of one
    part (``"train"``/``"val"``) of ``run``'s ``split.json``.

    Raises
    ------
    ValueError
        ``split`` given without ``run``, or no case of the split is in ``data``.
    """

    check_choice(split, ("all", "train", "val"), name="split")
    cases = find_cases(data, **layout)
    if split == "all":
        return cases
    if run is None:
        raise ValueError(f"split must be 'all' without a run folder, got {split!r}")
    names = set(load_split(run)[split])
    chosen = [c for c in cases if c.name in names]
    if not chosen:
        raise ValueError(
            f"{data}: none of the {len(names)} {split} cases of {Path(run) / 'split.json'} "
            f"is in the dataset (e.g. {sorted(names)[:1]})"
        )
    return chosen


def trained_on(cases: Sequence, run: str | os.PathLike | None) -> list[str]:
    """Names of ``cases`` listed in the training part of ``run``'s ``split.json``.

    Scores of such cases measure the fit, not generalisation; ``[]`` when ``run`` is
    None or holds no ``split.json``.
    """
    if run is None or not (Path(run) / "split.json").is_file():
        return []
    train = set(load_split(run)["train"])
    return [c.name for c in cases if c.name in train]


def _as_read(image_cf: np.ndarray, meta: io.ImageMeta) -> np.ndarray:
    """Undo :func:`segloc.engine.data.load_case`'s channels-first layout."""
    return np.moveaxis(image_cf, 0, -1) if meta.is_colour else image_cf[0]


@dataclass
class CaseRecord:
    """One scored case kept for a picture."""

    case: str
    dice: float
    image: np.ndarray
    truth: np.ndarray
    pred: np.ndarray


def score_cases(
    segmenter,
    cases: Sequence,
    *,
    num_classes: int | None = None,
    label_mapping: str | None = "auto",
    ignore_index: int | None = None,
    empty: str = "nan",
    surface: bool = True,
    progress: bool = False,
) -> tuple[Evaluation, dict[str, CaseRecord]]:
    """Segment and score every case; return the rows and the ``"best"``/``"worst"`` cases.

    Parameters
    ----------
    segmenter : callable
        ``(image as read, ImageMeta) -> label map`` of class indices (bool = classes 0/1).
    cases : sequence of CaseFiles
    num_classes, ignore_index, empty, surface :
        As in :func:`evaluate_case` (HD95 uses the image's spacing).
    label_mapping : {"auto", None}
        How label files become classes (:func:`segloc.engine.data.load_case`).

    Returns
    -------
    Evaluation
        One row per case (``case`` = the case name).
    dict
        ``{"best": CaseRecord, "worst": CaseRecord}`` by the case's mean Dice (cases with a
        nan Dice are skipped; empty when all are).
    """

    result = Evaluation()
    kept: dict[str, CaseRecord] = {}
    items = cases
    if progress:
        from tqdm import tqdm

        items = tqdm(cases, desc="evaluate", unit="case")
    for case in items:
        image_cf, truth, meta = load_case(case, label_mapping=label_mapping)
        if num_classes is not None:
            check_label_values(case.label, truth, num_classes, ignore_index)
        image = _as_read(image_cf, meta)
        with naming(case.image):
            pred = np.asarray(segmenter(image, meta))
        if pred.shape != truth.shape:
            raise ValueError(
                f"{case.image}: prediction shape {pred.shape} differs from the truth {truth.shape}"
            )
        spacing = meta.spacing if len(meta.spacing) == truth.ndim else None
        with naming(f"{case.image} against {case.label}"):
            row = evaluate_case(
                pred,
                truth,
                num_classes=num_classes,
                ignore_index=ignore_index,
                spacing=spacing,
                empty=empty,
                surface=surface,
            )
        result.rows.append({"case": case.name, **row})
        dice = row["dice"]
        if math.isfinite(dice):
            record = None
            if "best" not in kept or dice > kept["best"].dice:
                record = CaseRecord(case.name, dice, image, truth, pred)
                kept["best"] = record
            if "worst" not in kept or dice < kept["worst"].dice:
                kept["worst"] = record or CaseRecord(case.name, dice, image, truth, pred)
    return result, kept


def model_segmenter(predictor):
    """``(image, meta) -> class indices`` for a :class:`segloc.engine.infer.Predictor`."""

    def run(image: np.ndarray, meta: io.ImageMeta) -> np.ndarray:
        spacing = meta.spacing if len(meta.spacing) == predictor.dims else None
        return np.argmax(predictor.predict(image, spacing=spacing), axis=0).astype(np.int32)

    return run


def classical_segmenter(method: str, *, num_classes: int = 2):
    """``(image, meta) -> class indices`` running a classical method with no user input
    (:func:`segloc.classical.segment_unattended`); colour images are made grey first
    (:func:`segloc.color.to_grey`)."""

    check_unattended(method, num_classes)

    def run(image: np.ndarray, meta: io.ImageMeta) -> np.ndarray:
        grey = to_grey(image) if meta.is_colour else np.asarray(image)
        return segment_unattended(grey, method, num_classes=num_classes)

    return run


def compare_methods(
    methods: Sequence[tuple[str, object]],
    cases: Sequence,
    *,
    num_classes: int,
    label_mapping: str | None = "auto",
    ignore_index: int | None = None,
    surface: bool = True,
    progress: bool = False,
) -> dict[str, Evaluation]:
    """Score several segmenters (:func:`classical_segmenter`, :func:`model_segmenter`) on the
    same cases; ``{name: Evaluation}`` in the given order. See :func:`comparison_table`."""
    return {
        name: score_cases(
            seg,
            cases,
            num_classes=num_classes,
            label_mapping=label_mapping,
            ignore_index=ignore_index,
            surface=surface,
            progress=progress,
        )[0]
        for name, seg in methods
    }


def comparison_table(results: dict[str, Evaluation]) -> list[dict]:
    """One row per method: ``method``, ``cases``, then the mean over cases of every score
    column (``dice``, ``iou``, ``hd95`` and their per-class columns), nan ignored."""
    rows = []
    for name, ev in results.items():
        mean = ev.summary()["mean"]
        rows.append({"method": name, "cases": len(ev.rows), **mean})
    return rows


# --------------------------------------------------------------------------- jobs


def run_folder(model: str | os.PathLike) -> Path:
    """The run folder of a model argument: the folder itself, or a checkpoint's folder."""
    path = Path(model)
    return path if path.is_dir() else path.parent


@dataclass
class TrainedOn:
    """Scored cases that trained a model: their scores measure the fit, not generalisation."""

    run: Path
    cases: list[str]
    total: int


def _trained_notes(cases: Sequence, runs: Sequence[Path | None]) -> list[TrainedOn]:
    notes = []
    for run in runs:
        seen = trained_on(cases, run)
        if seen and run is not None:
            notes.append(TrainedOn(run, seen, len(cases)))
    return notes


def evaluate_model(
    models: Sequence[str | os.PathLike],
    data: str | os.PathLike,
    out: str | os.PathLike,
    *,
    split: str = "all",
    empty: str = "nan",
    surface: bool = True,
    progress: bool = False,
    layout: Mapping[str, Any] | None = None,
    **predictor_options: Any,
) -> tuple[Evaluation, list[TrainedOn]]:
    """Predict every case of a dataset with a model (the mean of several: an ensemble),
    score it, and write ``per_case.csv``, ``per_case.json`` and ``best.png`` / ``worst.png``
    panels (image | truth | prediction, Dice in the title) into ``out``.

    Before the first prediction, ``out`` is checked
    (:func:`segloc._validation.check_output_folder`) and so is every case
    (:func:`segloc.engine.data.check_cases`: image and label headers, the model's dimensions
    and channels, and, when the dataset is small, the values and classes of every label).

    Parameters
    ----------
    models : sequence of path-like
        Run folders or checkpoints (:func:`segloc.engine.infer.load_predictor`).
    data : path-like
        Dataset folder.
    split : {"all", "train", "val"}
        The cases of one part of the first run's ``split.json``.
    empty, surface, progress :
        As in :func:`score_cases`.
    layout : mapping, optional
        ``image_dir``, ``label_dir``, ``label_suffix`` of the dataset folder
        (:func:`segloc.engine.data.find_cases`).
    **predictor_options
        ``device``, ``overlap``, ``batch_size``, ``tta``... of the predictors.

    Returns
    -------
    Evaluation
    list of TrainedOn
        Per run, the scored cases that trained it (empty when none did).
    """
    # torch: only when a model is scored (scoring files needs none)
    from segloc.engine.infer import load_predictor

    out = check_output_folder(out)  # before any work, not after all of it
    runs = [run_folder(m) for m in models]
    # several models: the first one's split.json picks the cases; each notes its own
    cases = select_cases(data, run=runs[0], split=split, **(layout or {}))
    notes = _trained_notes(cases, runs)
    predictor = load_predictor(list(models), **predictor_options)
    check_cases(
        cases,
        label_mapping=predictor.label_mapping,
        num_classes=predictor.num_classes,
        ignore_index=predictor.meta.ignore_index,
        check=predictor.check_header,
    )
    result, kept = score_cases(
        model_segmenter(predictor),
        cases,
        num_classes=predictor.num_classes,
        label_mapping=predictor.label_mapping,
        ignore_index=predictor.meta.ignore_index,
        empty=empty,
        surface=surface,
        progress=progress,
    )
    result.to_csv(out / "per_case.csv")
    result.to_json(out / "per_case.json")
    for which, rec in kept.items():
        comparison_panel(
            rec.image,
            rec.truth,
            rec.pred,
            out / f"{which}.png",
            dice=rec.dice,
            title=f"{which}: {rec.case}",
        )
    return result, notes


def compare(
    data: str | os.PathLike,
    methods: Sequence[str],
    out: str | os.PathLike,
    *,
    split: str = "all",
    num_classes: int = 2,
    ignore_index: int | None = None,
    surface: bool = True,
    progress: bool = False,
    layout: Mapping[str, Any] | None = None,
    **predictor_options: Any,
) -> tuple[list[dict], int, list[TrainedOn]]:
    """Score classical methods and trained models on the same cases; write
    ``compare.csv`` (one row per method) and ``compare_cases.csv`` (per case) into ``out``.

    ``out`` and every case are checked before any work, as in :func:`evaluate_model`.

    Parameters
    ----------
    methods : sequence of str
        Classical names (:data:`CLASSICAL`) and ``NAME:RUN`` for a trained model.
    split : {"all", "train", "val"}
        A part of the first model's ``split.json`` (needs a model).
    num_classes, ignore_index :
        Without a model; with models they come from the models, which must agree.
    layout : mapping, optional
        As in :func:`evaluate_model`.

    Returns
    -------
    rows : list of dict
        :func:`comparison_table`.
    cases : int
    list of TrainedOn
    """
    # torch: only when a model is scored (scoring files needs none)
    from segloc.engine.infer import load_predictor

    if not methods:
        raise ValueError("methods must name at least one method")
    out = check_output_folder(out)  # before any work, not after all of it
    deep: dict[str, Any] = {}
    for spec in methods:
        if ":" in spec:
            name, run = spec.split(":", 1)
            if not name or not run or name in deep:
                raise ValueError(f"deep methods are NAME:RUN with unique names, got {spec!r}")
            deep[name] = (run, load_predictor(run, **predictor_options))
        elif spec not in CLASSICAL:
            raise ValueError(f"{spec!r} is neither NAME:RUN nor one of {', '.join(CLASSICAL)}")
    predictors = [p for _, p in deep.values()]
    run = None
    if predictors:
        if len({p.num_classes for p in predictors}) > 1:
            counts = sorted({p.num_classes for p in predictors})
            raise ValueError(f"the models disagree on the class count {counts}")
        num_classes, ignore_index = predictors[0].num_classes, predictors[0].meta.ignore_index
        run = run_folder(next(iter(deep.values()))[0])
    elif split != "all":
        raise ValueError("split needs a NAME:RUN method (its run folder holds split.json)")
    label_mapping = predictors[0].label_mapping if predictors else "auto"
    cases = select_cases(data, run=run, split=split, **(layout or {}))

    def suits_every_model(header) -> None:
        for predictor in predictors:
            predictor.check_header(header)

    check_cases(
        cases,
        label_mapping=label_mapping,
        num_classes=num_classes,
        ignore_index=ignore_index,
        check=suits_every_model,
    )
    segmenters = [
        (s.split(":", 1)[0], model_segmenter(deep[s.split(":", 1)[0]][1]))
        if ":" in s
        else (s, classical_segmenter(s, num_classes=num_classes))
        for s in methods
    ]
    results = compare_methods(
        segmenters,
        cases,
        num_classes=num_classes,
        label_mapping=label_mapping,
        ignore_index=ignore_index,
        surface=surface,
        progress=progress,
    )
    rows = comparison_table(results)
    io.write_csv(out / "compare.csv", rows, missing=math.nan)
    per_case = [{"method": m, **r} for m, ev in results.items() for r in ev.rows]
    io.write_csv(out / "compare_cases.csv", per_case, missing=math.nan)
    return rows, len(cases), _trained_notes(cases, [run])
