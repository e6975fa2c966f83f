"""Region growing: segloc.classical.region_growing against SimpleITK and scikit-image.

Rows (``run()`` returns them, ``python benchmarks/_classical_region_growing.py`` prints them):

- confidence connected, 3D: a 192^3 float32 volume of N(100, 10) noise with a centred 96^3
  cube raised by 60, one seed at the centre, multiplier 2.5, 2 iterations, initial radius 1,
  against SimpleITK's ``ConfidenceConnected`` (the issue's acceptance case: within 2x);
- confidence connected, 2D: the same recipe at 2048^2 with a centred 1024^2 square;
- tolerance growing, 2D: ``region_grow`` from the centre of that 2048^2 image with tolerance
  30, against ``skimage.segmentation.flood`` (the same definition for one seed);
- seeded region growing, 512^2: ``seeded_region_growing`` on ISBI 2012 image 1 (real EM)
  from a 4 x 4 grid of seeds. There is no exact peer (SimpleITK has no Adams & Bischof
  filter); scikit-image's ``watershed`` of the Sobel gradient from the same markers is timed
  as a reference point only, and ``agree`` is the fraction of pixels given the same label.

Timings are the best of ``repeats`` calls after one warm-up call; numba's compile (or cache
load) time is measured once by :func:`first_call_ms` and printed apart. SimpleITK gets its
``sitk.Image`` ready-made (the numpy conversion is outside its timing, which favours it).
``ratio`` = peer_ms / segloc_ms (above 1: segloc is faster). Peak memory is tracemalloc's peak
during one call: it counts NumPy allocations (all of segloc's buffers, scikit-image's) but not
memory that C++ code mallocs (all of SimpleITK's), so the SimpleITK column reads near zero.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from _timing import comparison_row, format_table, measure
from segloc.classical.region_growing import (
    confidence_connected,
    region_grow,
    seeded_region_growing,
)

DATA = Path(
    os.environ.get("SEGLOC_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data")
)
MULTIPLIER, ITERATIONS, RADIUS = 2.5, 2, 1
TOLERANCE = 30.0


def _raised_centre(size: int, ndim: int, seed: int = 0) -> np.ndarray:
    """float32 N(100, 10) noise with the centred half-size cube (square) raised by 60."""
    rng = np.random.default_rng(seed)
    image = rng.normal(100.0, 10.0, (size,) * ndim).astype(np.float32)
    q = size // 4
    image[(slice(q, size - q),) * ndim] += 60
    return image


def _isbi() -> np.ndarray:
    return np.asarray(Image.open(DATA / "isbi2012" / "images" / "1.png"))


def first_call_ms() -> dict[str, float]:
    """Time of the first call of each function on a tiny image: numba compile or cache load.

    Meaningful once per process; later calls of this function measure nothing new.
    """
    tiny = np.arange(64, dtype=np.float32).reshape(8, 8)
    calls = {
        "confidence_connected": lambda: confidence_connected(tiny, [(4, 4)]),
        "region_grow": lambda: region_grow(tiny, [(4, 4)], tolerance=3.0),
        "seeded_region_growing": lambda: seeded_region_growing(tiny, [(1, 1), (6, 6)]),
    }
    out = {}
    for name, call in calls.items():
        t0 = time.perf_counter()
        call()
        out[name] = round((time.perf_counter() - t0) * 1e3, 1)
    return out


def _sitk_confidence(image: np.ndarray, seed: tuple[int, ...]) -> Callable[[], np.ndarray]:
    import SimpleITK as sitk

    itk_image = sitk.GetImageFromArray(image)
    itk_seed = [tuple(int(v) for v in reversed(seed))]

    def call() -> Any:
        return sitk.ConfidenceConnected(
            itk_image,
            seedList=itk_seed,
            numberOfIterations=ITERATIONS,
            multiplier=MULTIPLIER,
            initialNeighborhoodRadius=RADIUS,
            replaceValue=1,
        )

    return call


def run(repeats: int = 3) -> list[dict]:
    """Time segloc's region growing and its peers on the same inputs; one dict per row."""
    import SimpleITK as sitk
    from skimage.filters import sobel
    from skimage.segmentation import flood, watershed

    rows = []
    for size, ndim in ((192, 3), (2048, 2)):
        image = _raised_centre(size, ndim)
        seed = (size // 2,) * ndim
        ours = measure(
            lambda im=image, s=seed: confidence_connected(
                im, [s], multiplier=MULTIPLIER, iterations=ITERATIONS, initial_radius=RADIUS
            ),
            repeats,
        )
        theirs = measure(_sitk_confidence(image, seed), repeats)
        same = np.array_equal(ours[2], sitk.GetArrayFromImage(theirs[2]).astype(bool))
        rows.append(
            comparison_row(
                f"confidence connected {'x'.join([str(size)] * ndim)} float32",
                ours,
                "SimpleITK ConfidenceConnected",
                theirs,
                f"identical mask: {same} ({int(ours[2].sum())} px)",
            )
        )

    image = _raised_centre(2048, 2)
    seed = (1024, 1024)
    ours = measure(lambda: region_grow(image, [seed], tolerance=TOLERANCE), repeats)
    theirs = measure(lambda: flood(image, seed, tolerance=TOLERANCE, connectivity=1), repeats)
    same = np.array_equal(ours[2] > 0, theirs[2])
    rows.append(
        comparison_row(
            "tolerance growing 2048x2048 float32, 1 seed",
            ours,
            "skimage flood",
            theirs,
            f"identical mask: {same} ({int(theirs[2].sum())} px)",
        )
    )

    grey = _isbi()
    axis = np.linspace(32, grey.shape[0] - 32, 4).astype(int)
    seeds = [(int(r), int(c)) for r in axis for c in axis]
    markers = np.zeros(grey.shape, dtype=np.int32)
    for i, s in enumerate(seeds, start=1):
        markers[s] = i
    gradient = sobel(grey)
    ours = measure(lambda: seeded_region_growing(grey, seeds), repeats)
    theirs = measure(lambda: watershed(gradient, markers), repeats)
    share = float(np.mean(ours[2] == theirs[2]))
    rows.append(
        comparison_row(
            f"seeded region growing {grey.shape[0]}x{grey.shape[1]} uint8 (ISBI), 16 seeds",
            ours,
            "skimage watershed of sobel (reference point, not the same method)",
            theirs,
            f"same label on {share:.1%} of pixels",
        )
    )
    return rows


if __name__ == "__main__":
    first = first_call_ms()
    print(
        "first call (numba compile or cache load), ms: "
        + ", ".join(f"{k} {v}" for k, v in first.items())
    )
    print(format_table(run()))
