"""Coverage-guided fuzzing of every reader of a user's file, for a fixed time budget.

    python tests/fuzz_readers.py --seconds 60            # what CI runs (test_io_fuzz.py)
    make fuzz FUZZ_SECONDS=3600                          # as long as asked

One fuzzing process covers every format: the first byte of an input chooses the target
(:data:`TARGETS`, append-only so that saved inputs keep their meaning), the rest is the
file. The corpus starts from the valid seeds of ``_fuzzing.seeds()`` and their mutations.
Each input is written to a file of the target's suffix and read with the limits of
``_fuzzing.READ_LIMITS``; a valid array or one of segloc's typed errors is a pass,
anything else a failure, whose input is saved in ``--crashers`` as
``<kind>/fuzz-<sha1>.<suffix>`` (replayed by ``test_io_fuzz.py`` on every run).

Engine: atheris (libFuzzer, coverage of the instrumented Python code; a hang beyond
``--timeout`` seconds or RSS beyond ``--rss-mb`` is saved by libFuzzer as
``fuzz/timeout-*``/``fuzz/oom-*``, selector byte first). Without atheris, hypothesis
mutates the seeds for the same budget (not coverage-guided; each read under SIGALRM).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

# (name, reader kind of _fuzzing.READERS, file name): APPEND ONLY, the index is the selector
TARGETS: list[tuple[str, str, str]] = [
    ("png", "image", "x.png"),
    ("jpeg", "image", "x.jpg"),
    ("bmp", "image", "x.bmp"),
    ("tiff", "image", "x.tif"),
    ("nii", "image", "x.nii"),
    ("nii_gz", "image", "x.nii.gz"),
    ("nrrd", "image", "x.nrrd"),
    ("dicom", "image", "x.dcm"),
    ("mask_png", "mask", "m.png"),
    ("mask_nii", "mask", "m.nii.gz"),
    ("coco_truth", "box_truth", "t.json"),
    ("predictions", "predictions", "p.json"),
    ("voc_xml", "voc", "a.xml"),
    ("csv", "csv", "b.csv"),
]
_SEED_TARGET = {  # _fuzzing seed name -> target name
    "png_grey": "png",
    "png_rgb": "png",
    "png_palette": "png",
    "png_grey16": "png",
    "jpeg_rgb": "jpeg",
    "jpeg_grey": "jpeg",
    "bmp_rgb": "bmp",
    "bmp_grey": "bmp",
    "tiff_multi": "tiff",
    "tiff_rgb": "tiff",
    "tiff_lzw": "tiff",
    "nii": "nii",
    "nii2": "nii",
    "nii_gz": "nii_gz",
    "nrrd_raw": "nrrd",
    "nrrd_gzip": "nrrd",
    "dicom_file": "dicom",
    "mask_png": "mask_png",
    "mask_nii": "mask_nii",
    "coco_truth": "coco_truth",
    "predictions": "predictions",
    "voc_xml": "voc_xml",
    "csv": "csv",
}
# libraries whose Python code atheris instruments: "core" keeps the start-up of a short
# CI run small (tifffile and nibabel take ~14 s to instrument); "all" for long runs
INSTRUMENT = {
    "core": ["segloc", "nrrd", "PIL", "pydicom"],
    "all": ["segloc", "nrrd", "PIL", "pydicom", "tifffile", "nibabel"],
}


def seed_inputs() -> list[bytes]:
    """Selector byte + file bytes of every single-file seed and its mutations."""
    import _fuzzing

    index = {name: k for k, (name, _, _) in enumerate(TARGETS)}
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns on the invalid values it writes
        all_seeds = _fuzzing.seeds()
    for seed in all_seeds:
        target = _SEED_TARGET.get(seed.name)
        if target is None or len(seed.files) != 1:
            continue  # DICOM series and detached NRRD are several files: the corpus test has them
        data = seed.files[seed.mutable]
        variants = [data, *seed.edits.values()]
        variants += list(_fuzzing.header_flips(data, seed.header, count=4).values())
        out += [bytes([index[target]]) + v for v in variants]
    return out


class Harness:
    """Reads one input; raises on anything but an array or a typed error (saving it first)."""

    def __init__(self, crashers: Path) -> None:
        import _fuzzing

        self.fz = _fuzzing
        self.crashers = crashers
        self.dir = Path(tempfile.mkdtemp(prefix="segloc-fuzz-"))
        self.count = 0

    def path_for(self, target: int) -> Path:
        return self.dir / TARGETS[target][2]

    def __call__(self, data: bytes) -> None:
        if not data:
            return
        self.count += 1
        target = data[0] % len(TARGETS)
        name, kind, file_name = TARGETS[target]
        path = self.path_for(target)
        path.write_bytes(data[1:])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            outcome = self.fz.run_one(kind, str(path))
        if outcome["status"] == "failure":
            saved = self.save(kind, file_name, data[1:])
            raise RuntimeError(
                f"{name}: {outcome.get('error', '')}: {outcome.get('message', '')} "
                f"(saved as {saved})\n{outcome.get('traceback', '')}"
            )

    def save(self, kind: str, file_name: str, content: bytes) -> Path:
        digest = hashlib.sha1(content).hexdigest()[:16]
        stem, _, suffix = file_name.partition(".")
        out = self.crashers / kind / f"fuzz-{digest}.{suffix}"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(content)
        return out


def run_atheris(args: argparse.Namespace) -> int:
    import atheris

    # plain tables and numeric libraries: imported first, so they are not instrumented
    import numpy  # noqa: F401
    import scipy.ndimage  # noqa: F401

    for table in ("_dicom_dict", "_private_dict", "_uid_dict"):
        __import__(f"pydicom.{table}")
    with atheris.instrument_imports(include=INSTRUMENT[args.instrument]):
        import _fuzzing  # noqa: F401
        import segloc.io  # noqa: F401
        from segloc.localize import annotations  # noqa: F401

        _fuzzing.run_one("image", "/nonexistent")  # import the decoders inside too
        import nibabel  # noqa: F401
        import nrrd  # noqa: F401
        import pydicom  # noqa: F401
        import tifffile  # noqa: F401
        from PIL import BmpImagePlugin, JpegImagePlugin, PngImagePlugin, TiffImagePlugin  # noqa: F401

    corpus = Path(tempfile.mkdtemp(prefix="segloc-fuzz-corpus-"))
    for k, data in enumerate(seed_inputs()):
        (corpus / f"seed-{k:04d}").write_bytes(data)
    harness = Harness(args.crashers)
    artifacts = args.crashers / "fuzz"
    artifacts.mkdir(parents=True, exist_ok=True)
    libfuzzer = [
        sys.argv[0],
        f"-max_total_time={int(args.seconds)}",
        f"-timeout={int(args.timeout)}",
        f"-rss_limit_mb={int(args.rss_mb)}",
        f"-artifact_prefix={artifacts}/",
        "-max_len=65536",
        "-print_final_stats=1",
        str(corpus),
    ]
    atheris.Setup(libfuzzer, harness)
    atheris.Fuzz()  # exits the process: 0 when the budget ends without a failure
    return 0


def run_hypothesis(args: argparse.Namespace) -> int:
    import signal

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    seeds = seed_inputs()
    harness = Harness(args.crashers)
    deadline = time.monotonic() + args.seconds

    def alarm(signum, frame):
        raise TimeoutError(f"a read took longer than {args.timeout} s")

    signal.signal(signal.SIGALRM, alarm)
    edit = st.tuples(
        st.sampled_from(["flip", "set", "insert", "delete", "cut"]),
        st.integers(0, 2**16),
        st.integers(0, 255),
    )

    @settings(
        max_examples=200,  # one batch; batches run until the budget is spent
        deadline=None,
        database=None,
        derandomize=False,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.sampled_from(seeds), st.lists(edit, max_size=8))
    def fuzz(seed: bytes, edits: list) -> None:
        if time.monotonic() > deadline:
            return
        data = bytearray(seed)
        for op, pos, value in edits:
            i = 1 + pos % max(1, len(data) - 1)
            if op == "flip" and i < len(data):
                data[i] ^= 1 << (value % 8)
            elif op == "set" and i < len(data):
                data[i] = value
            elif op == "insert":
                data[i:i] = bytes([value]) * (1 + value % 16)
            elif op == "delete":
                del data[i : i + 1 + value % 16]
            elif op == "cut":
                del data[i:]
        signal.setitimer(signal.ITIMER_REAL, args.timeout)
        try:
            harness(bytes(data))
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)

    while time.monotonic() < deadline:
        fuzz()
    print(f"hypothesis: {harness.count} inputs in {args.seconds:g} s, no failure")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("FUZZ_SECONDS", 60)))
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per input")
    parser.add_argument("--rss-mb", type=int, default=2048, help="libFuzzer's RSS limit")
    parser.add_argument("--crashers", type=Path, default=HERE / "data" / "crashers")
    parser.add_argument("--engine", choices=["auto", "atheris", "hypothesis"], default="auto")
    parser.add_argument("--instrument", choices=sorted(INSTRUMENT), default="core")
    args, _ = parser.parse_known_args(argv)
    engine = args.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401

            engine = "atheris"
        except ImportError:
            engine = "hypothesis"
    print(f"fuzzing {len(TARGETS)} readers with {engine} for {args.seconds:g} s", flush=True)
    return run_atheris(args) if engine == "atheris" else run_hypothesis(args)


if __name__ == "__main__":
    sys.exit(main())
