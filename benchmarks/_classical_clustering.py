"""k-means segmentation: segloc.classical.clustering against scikit-learn's KMeans.

Rows (``run()`` returns them, ``python benchmarks/_classical_clustering.py`` prints them):

- grey, k = 3, a 1024 x 1024 uint8 mosaic of four ISBI 2012 EM images: ``kmeans_intensity``
  (exact optimum on the histogram) against ``KMeans`` on the raw pixels with ``n_init=1``
  (scikit-learn's default for k-means++) and with ``n_init=10``;
- colour, k = 3, a PH2 dermoscopy image (574 x 765): ``kmeans_color`` in RGB and in Lab with its
  defaults (``n_init=3``, fit on a 100,000-pixel sample, then assign all pixels) and with the
  same work as the peer (``n_init=1``, all pixels), against ``KMeans(n_init=1)`` on the same
  features for all pixels.

Timings are the best of ``repeats`` calls after one warm-up call (numba compiles on first use).
The peer is handed its float64 feature matrix ready-made, outside the timing, while segloc's
time includes building its own (the Lab conversion, for colour): that favours the peer.
``ratio`` = peer_ms / segloc_ms (above 1: segloc is faster). Peak memory is tracemalloc's peak
during one call, which counts NumPy allocations (all of segloc's large arrays are NumPy's) but
not buffers that compiled code mallocs directly (scikit-learn's per-thread chunks).
``agree`` compares inertia (sum of squared distances to the centres, over all pixels).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from _timing import format_table, measure
from segloc.classical.clustering import kmeans_color, kmeans_intensity

DATA = Path(
    os.environ.get("SEGLOC_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data")
)
K = 3


def _grey_mosaic() -> np.ndarray:
    """(1024, 1024) uint8: ISBI images 1, 2 / 3, 4 tiled 2 x 2 (real EM texture, not noise)."""
    tiles = [
        np.asarray(Image.open(DATA / "isbi2012" / "images" / f"{i}.png")) for i in (1, 2, 3, 4)
    ]
    return np.block([[tiles[0], tiles[1]], [tiles[2], tiles[3]]])


def _ph2() -> np.ndarray:
    return np.asarray(Image.open(DATA / "ph2" / "images" / "IMD003.jpg"))


def _row(
    task: str, ours: tuple, peer_name: str, theirs: tuple, ours_inertia: float, peer_inertia: float
) -> dict:
    return {
        "task": task,
        "segloc_ms": round(ours[0], 2),
        "peer": peer_name,
        "peer_ms": round(theirs[0], 2),
        "ratio": round(theirs[0] / ours[0], 1),
        "segloc_peak_MiB": round(ours[1], 1),
        "peer_peak_MiB": round(theirs[1], 1),
        "agree": f"inertia {ours_inertia / peer_inertia:.4f}x of sklearn",
    }


def run(repeats: int = 3) -> list[dict]:
    """Time segloc's k-means and scikit-learn's on the same images; one dict per comparison."""
    from skimage.color import rgb2lab
    from sklearn.cluster import KMeans

    def sk(X: np.ndarray, n_init: int) -> Callable[[], Any]:
        return lambda: KMeans(n_clusters=K, n_init=n_init, random_state=0).fit(X)

    rows = []
    grey = _grey_mosaic()
    Xg = grey.reshape(-1, 1).astype(np.float64)
    ours = measure(lambda: kmeans_intensity(grey, K), repeats)
    for n_init in (1, 10):
        theirs = measure(sk(Xg, n_init), repeats)
        rows.append(
            _row(
                f"grey k={K} 1024x1024 uint8",
                ours,
                f"sklearn KMeans n_init={n_init}",
                theirs,
                ours[2].inertia,
                theirs[2].inertia_,
            )
        )

    image = _ph2()
    h, w = image.shape[:2]
    for space in ("rgb", "lab"):
        X = rgb2lab(image).reshape(-1, 3) if space == "lab" else image.reshape(-1, 3) / 255.0
        theirs = measure(sk(X, 1), repeats)
        for label, kwargs in (
            ("defaults", {}),
            ("n_init=1 sample=None", {"n_init": 1, "sample": None}),
        ):
            ours = measure(
                lambda s=space, kw=kwargs: kmeans_color(image, K, color_space=s, **kw), repeats
            )
            rows.append(
                _row(
                    f"colour {space} k={K} {h}x{w} ({label})",
                    ours,
                    "sklearn KMeans n_init=1",
                    theirs,
                    ours[2].inertia,
                    theirs[2].inertia_,
                )
            )
    return rows


if __name__ == "__main__":
    print(format_table(run()))
