"""Every command-line example of the README and of docs/cli.md parses, and runs.

The examples run verbatim from a working folder beside a ``shared/data`` made of small
subsets of the real datasets (symbolic links). Training examples get flags appended that
make them a one-epoch run of a tiny network, so the suite stays quick: the example's own
flags still go through the parser and the trainer.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from pathlib import Path

import pytest

from segloc.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SEGLOC_DATA", ROOT.parent / "shared" / "data"))
TRAIN_FAST = [
    "--epochs",
    "1",
    "--samples-per-epoch",
    "2",
    "--batch",
    "2",
    "--base-channels",
    "4",
    "--depth",
    "2",
    "--threads",
    "1",
    "-q",
]


def examples(path: Path) -> list[list[str]]:
    """The ``segloc ...`` commands in the bash blocks of a Markdown file, as argv lists."""
    text = path.read_text()
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            line = line.strip()
            if line.startswith("segloc ") and "<command>" not in line:
                out.append(shlex.split(line, comments=True)[1:])
    return out


def test_the_readme_examples_are_all_in_docs_cli():
    readme = examples(ROOT / "README.md")
    cli = examples(ROOT / "docs" / "cli.md")
    assert readme, "the README shows no command"
    assert [a for a in readme if a not in cli] == []


@pytest.mark.parametrize(
    "argv",
    examples(ROOT / "docs" / "cli.md") + examples(ROOT / "README.md"),
    ids=lambda a: " ".join(a[:2]),
)
def test_every_example_parses(argv):
    args = build_parser().parse_args(argv)
    assert callable(args.func)


def _subset(src: Path, dst: Path, keep) -> None:
    """``dst`` mirrors ``src`` with symbolic links to the files ``keep(relative path)`` takes."""
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if path.is_file() and keep(rel):
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            (dst / rel).symlink_to(path)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    if not DATA.is_dir():
        pytest.skip(f"{DATA} not found")
    root = tmp_path_factory.mktemp("readme")
    data = root / "shared" / "data"
    few_isbi = {"1", "2", "3", "4", "5", "6"}
    _subset(
        DATA / "isbi2012",
        data / "isbi2012",
        lambda r: (
            r.parts[0] != "test"
            and Path(r).stem in few_isbi
            or r.parts[0] == "test"
            and Path(r).stem in {"0", "1"}
        ),
    )
    _subset(DATA / "hippocampus", data / "hippocampus", lambda r: "00" in r.name)
    _subset(DATA / "ph2", data / "ph2", lambda r: "IMD003" in r.name)
    _subset(DATA / "dsb2018_nuclei", data / "dsb2018_nuclei", lambda r: True)
    patients = sorted(p.name for p in (DATA / "lgg_mri" / "images").iterdir())[:3]
    _subset(
        DATA / "lgg_mri",
        data / "lgg_mri",
        lambda r: (
            len(r.parts) > 2
            and r.parts[1] in patients
            and int(re.search(r"_(\d+)(_mask)?$", r.stem).group(1)) in range(10, 16)
        ),
    )
    frames = sorted(p.stem for p in (DATA / "camvid" / "images").iterdir())[:6]
    _subset(DATA / "camvid", data / "camvid", lambda r: Path(r).stem in frames)
    racoons = {f"raccoon-{i}" for i in range(1, 13)}
    _subset(DATA / "raccoon", data / "raccoon", lambda r: Path(r).stem in racoons)
    work = root / "work"
    work.mkdir()
    (work / "recipe.yaml").write_text(
        "data: ../shared/data/lgg_mri\ntime_budget: 10m\ngroup_by: folder\n"
    )
    return work


@pytest.mark.slow
def test_every_example_runs(workspace, monkeypatch, capsys):
    monkeypatch.chdir(workspace)
    for argv in examples(ROOT / "docs" / "cli.md"):
        if argv[0] in ("demo", "serve"):
            continue  # make demo runs the demo in full; serve runs until stopped
        if argv[0] == "train":
            argv = argv + TRAIN_FAST
        if argv[:2] == ["train-detector", "--data"] and "cnn" in argv:
            argv = argv + ["--epochs", "1", "-q"]
        if "runs/isbi-b" in argv and not Path("runs/isbi-b").exists():
            shutil.copytree("runs/isbi", "runs/isbi-b")
        if argv[0] == "train" and "--resume" not in argv:
            # two examples train into runs/lgg: each starts afresh, as it would on its own
            out = argv[argv.index("--out") + 1]
            shutil.rmtree(out, ignore_errors=True)
        # the shell would expand the globs
        argv = [
            a
            for part in argv
            for a in (sorted(map(str, Path().glob(part))) if "*" in part else [part])
        ]
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 0, f"segloc {' '.join(argv)} -> exit {code}: {err}"
    for out in (
        "out/1.png",
        "out/kmeans",
        "out/hippo.nii.gz",
        "out/ph2.png",
        "out/scores.csv",
        "out/nuclei_boxes.json",
        "runs/isbi/best.safetensors",
        "runs/lgg/split.json",
        "runs/camvid/split.json",
        "out/pred",
        "out/eval/per_case.csv",
        "out/ens/per_case.csv",
        "out/cmp/compare.csv",
        "out/isbi.onnx",
        "models/raccoon_rcnn.npz",
        "runs/raccoon_cnn/best.safetensors",
        "out/boxes.json",
        "out/nuclei.json",
    ):
        assert Path(out).exists(), out
