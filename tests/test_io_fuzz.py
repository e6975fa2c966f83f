"""Every reader of a user's file against a mutation corpus, the saved crashers, and a
coverage-guided fuzzer for a fixed budget (issue 19).

Each input is read in a worker process (``_fuzzing.ReadPool``) under a time limit and an
RSS cap enforced from outside; it must give a valid array (or record) or one of segloc's
typed errors whose one-line message starts with the path. The corpus (``_fuzzing.cases``):
valid seeds of every format (PNG grey/RGB/palette/16-bit, JPEG, BMP, multi-page TIFF,
LZW TIFF, NIfTI-1 .nii and .nii.gz, NIfTI-2, NRRD raw/gzip/detached, DICOM file and
series, PNG and NIfTI masks, COCO JSON truth, prediction JSON, VOC XML, CSV), each cut at
0, header - 1, header, 50 % and length - 1 bytes, with header bytes flipped, and with
fields edited (dimensions 2**31 - 1, 0, negative; spacing NaN, 0, inf; unknown data
types; data offsets past the end; a .gz name on bytes that are not gzip; gzip bombs ...).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

import pytest

import _fuzzing as F

HERE = Path(__file__).resolve().parent


def _report(failures: list[dict]) -> str:
    return "\n".join(
        f"{o['case']}: {o.get('error', '')} {o.get('message', '')[:300]}" for o in failures
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[list[F.Case], list[dict], float]:
    root = tmp_path_factory.mktemp("corpus")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns on the invalid values it is asked to write
        cases = list(F.cases())
    tasks = [(c.name, c.seed.kind, str(c.write(root))) for c in cases]
    t0 = time.perf_counter()
    with F.ReadPool(workers=2) as pool:
        outcomes = pool.run(tasks)
    return cases, outcomes, time.perf_counter() - t0


def test_corpus_covers_every_format_and_mutation(corpus):
    cases, _, _ = corpus
    seeds = {c.seed.name for c in cases}
    for fmt in ("png", "jpeg", "bmp", "tiff", "nii", "nrrd", "dicom", "mask", "coco", "voc", "csv"):
        assert any(s.startswith(fmt) for s in seeds), fmt
    assert {"nii_gz", "nhdr", "dicom_series", "predictions", "tiff_multi"} <= seeds
    for seed in seeds:
        names = {c.name.split("--")[1] for c in cases if c.seed.name == seed}
        cuts = {"cut_0", "cut_header-1", "cut_header", "cut_50%", "cut_length-1"}
        assert cuts <= names and any(n.startswith("flip_") for n in names), seed
    labels = {c.name.split("--")[1] for c in cases}
    for edit in ("2e31-1", "_0", "negative", "nan", "datatype_unknown", "past_end", "gz_named"):
        assert any(edit in label for label in labels), edit
    assert len(cases) > 500


def test_mutation_corpus_gives_an_array_or_a_typed_error(corpus):
    cases, outcomes, seconds = corpus
    failures = [o for o in outcomes if o["status"] == "failure"]
    if failures:  # keep them: a failure found once is replayed on every run
        by_name = {c.name: c for c in cases}
        for o in failures:
            F.save_crasher(by_name[o["case"]], F.CRASHERS)
    assert not failures, f"{len(failures)} failures (saved in {F.CRASHERS}):\n{_report(failures)}"
    assert max(o["seconds"] for o in outcomes) < F.TIME_LIMIT
    assert max(o["rss_growth_mb"] for o in outcomes) < F.RSS_CAP_MB
    assert seconds < 60, f"the corpus took {seconds:.0f} s"


def test_valid_seeds_read_and_impossible_headers_do_not(corpus):
    _, outcomes, _ = corpus
    by_case = {o["case"]: o for o in outcomes}
    for name, o in by_case.items():
        label = name.split("--")[1]
        if label == "valid":
            assert o["status"] == "array", (name, o.get("message"))
        # an image cut inside its header cannot be read (a detached .nhdr is all header:
        # without its last newline it is whole; a CSV's header line alone is an empty table)
        binary = o["kind"] in ("image", "mask") and not name.startswith("nhdr")
        cut = label == "cut_0" or label == "cut_header-1" and binary
        if (
            cut
            or o["kind"] in ("image", "mask")
            and any(
                k in label for k in ("2e31-1", "100000x100000", "all_dims_32767", "huge_product")
            )
        ):
            assert o["status"] == "typed", (name, o.get("message"))
    kinds = Counter(o.get("error") for o in outcomes if o["status"] == "typed")
    assert set(kinds) <= {
        "CorruptFile",
        "UnsupportedFormat",
        "ResourceLimitExceeded",
        "SeglocIOError",
    }
    assert kinds["ResourceLimitExceeded"] >= 20 and kinds["CorruptFile"] >= 200


def test_crashers_replay(tmp_path):
    tasks = F.crasher_tasks(F.CRASHERS, tmp_path)
    assert len(tasks) >= 59  # the failures found on the readers before the hardening
    with F.ReadPool(workers=2) as pool:
        outcomes = pool.run(tasks)
    failures = [o for o in outcomes if o["status"] == "failure"]
    assert not failures, _report(failures)


@pytest.mark.fuzz
def test_coverage_guided_fuzzing_for_a_fixed_budget(tmp_path):
    """``tests/fuzz_readers.py`` for ``FUZZ_SECONDS`` (default 45): no failure, none saved."""
    seconds = float(os.environ.get("FUZZ_SECONDS", "45"))
    crashers = tmp_path / "crashers"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE.parent / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [
            sys.executable,
            str(HERE / "fuzz_readers.py"),
            "--seconds",
            str(seconds),
            "--crashers",
            str(crashers),
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 180,
        env=env,
        check=False,
    )
    found = [p for p in crashers.rglob("*") if p.is_file()] if crashers.exists() else []
    for p in found:  # keep them for the replay test and for a commit
        dest = F.CRASHERS / p.relative_to(crashers)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, dest)
    tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
    assert proc.returncode == 0 and not found, f"saved {found} in {F.CRASHERS}\n{tail}"
    assert "Done" in proc.stderr or "no failure" in proc.stdout, tail
