"""Boxes of the objects of a mask: a given mask, or Otsu's threshold of the image itself.

The detector of segmentation-first pipelines: foreground (from a mask file or an Otsu
threshold), split into instances (connected components, optionally a watershed that takes
touching round objects apart, :func:`segloc.instances.instances_from_probability`), one box
per instance scored by its mean intensity scaled to [0, 1] (inverted for dark objects) so
that the clearest objects rank first; with a given mask every object scores 1.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from segloc import io
from segloc._validation import check_int
from segloc.classical.threshold import threshold_otsu
from segloc.color import to_grey
from segloc.instances import instances_from_probability, score_instances
from segloc.localize.detect import Detections, read_detector_file, write_detector_file

__all__ = ["MaskDetector"]


class MaskDetector:
    """Boxes of a mask's objects (:class:`~segloc.localize.detect.Detector`).

    Parameters
    ----------
    dark : bool, optional
        Without a mask: the objects are darker than the background.
    split : bool, optional
        Split touching objects by a watershed on the distance transform.
    min_size : int, optional
        Smallest object kept, in pixels.
    min_distance : int, optional
        Least distance between object centres for the watershed.

    Examples
    --------
    >>> image = np.zeros((8, 10), np.uint8); image[1:4, 1:4] = 200; image[5:7, 6:9] = 90
    >>> MaskDetector(split=False, min_size=1).detect(image).boxes.tolist()
    [[1.0, 1.0, 4.0, 4.0], [6.0, 5.0, 9.0, 7.0]]
    """

    classes = ("object",)

    def __init__(
        self, *, dark: bool = False, split: bool = True, min_size: int = 10, min_distance: int = 5
    ) -> None:
        self.dark, self.split = bool(dark), bool(split)
        self.min_size = check_int(min_size, name="min_size", minimum=1)
        self.min_distance = check_int(min_distance, name="min_distance", minimum=1)

    def _params(self) -> dict[str, Any]:
        return {
            "dark": self.dark,
            "split": self.split,
            "min_size": self.min_size,
            "min_distance": self.min_distance,
        }

    def detect(
        self,
        image: Any,
        *,
        score_threshold: float | None = None,
        max_detections: int = 100,
        mask: str | os.PathLike | np.ndarray | None = None,
    ) -> Detections:
        """The objects of ``mask`` (a file or an array; default: Otsu's threshold of
        ``image``), best first.

        Raises
        ------
        ValueError
            A mask whose shape differs from the image's (the mask file is named).
        """

        image = np.asarray(image)
        if mask is not None:
            where = mask if not isinstance(mask, np.ndarray) else "mask"
            fg = (io.read_mask(mask)[0] if not isinstance(mask, np.ndarray) else mask) > 0
            if fg.shape != image.shape[:2]:
                raise ValueError(
                    f"{where}: mask shape {fg.shape} must match its image {image.shape[:2]}"
                )
            prob = fg.astype(np.float64)
        else:
            # integer images keep their dtype: Otsu bins their levels exactly
            grey = to_grey(image)
            t = threshold_otsu(grey)
            fg = grey < t if self.dark else grey > t
            grey = grey.astype(np.float64)
            lo, hi = float(grey.min()), float(grey.max())
            prob = (grey - lo) / (hi - lo) if hi > lo else np.ones_like(grey)
            prob = 1.0 - prob if self.dark else prob
        inst = instances_from_probability(
            fg.astype(np.float64),
            split=self.split,
            min_size=self.min_size,
            min_distance=self.min_distance,
        )
        found = score_instances(inst, prob)
        boxes = np.array([d["box"] for d in found], np.float64).reshape(-1, 4)
        scores = np.array([d["score"] for d in found], np.float64)
        return Detections(boxes, scores).filter(
            score_threshold=score_threshold, max_detections=max_detections
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Its settings, in a detector file."""
        return write_detector_file(path, "MaskDetector", self._params())

    @classmethod
    def load(cls, path: str | os.PathLike) -> MaskDetector:
        meta, _ = read_detector_file(path, "MaskDetector")
        try:
            return cls(**meta)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: not a saved MaskDetector ({exc})") from None
