"""Classical segmentation of image files: read all, segment, clean, write all or nothing."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segloc import io, masks, viz
from segloc._validation import atomic_paths, check_not_inputs, naming
from segloc.classical import METHODS, segment
from segloc.color import to_grey

__all__ = ["segment_files"]


def _check_seeds(path: Path, image: np.ndarray, meta: io.ImageMeta, seeds: Sequence) -> None:
    grey_ndim = image.ndim - (1 if meta.is_colour else 0)
    for s in seeds:
        if len(s) != grey_ndim:
            raise ValueError(
                f"{path}: seed {tuple(s)} has {len(s)} coordinates for a {grey_ndim}D image"
            )


def _check_dims(header: io.Header) -> None:
    if header.ndim not in (2, 3):
        raise ValueError(
            f"{header.path}: must be a 2D image or a 3D volume, got shape {header.shape}"
        )


def segment_files(
    inputs: Sequence[str | os.PathLike],
    outputs: Sequence[str | os.PathLike],
    method: str,
    *,
    options: Mapping[str, Any] | None = None,
    channel: int | None = None,
    invert: bool = False,
    clean: Mapping[str, Any] | None = None,
    overlays: Sequence[str | os.PathLike] | None = None,
) -> list[tuple[Path, Path, np.ndarray]]:
    """Segment image files with a classical method and write one mask per input.

    Every input's header is checked (:func:`segloc.io.check_files`), then every input is
    read, before anything is computed, and the outputs appear
    together or not at all (:func:`segloc._validation.atomic_paths`), so a bad input or an
    unwritable output leaves nothing behind. Colour images
    become grey (:func:`segloc.color.to_grey`, or their ``channel``) unless the method takes
    colour. Masks are written in the input's format (:func:`segloc.io.write_mask`, NIfTI
    keeping its affine).

    Parameters
    ----------
    inputs, outputs : sequence of path-like
        One output per input (:func:`segloc.io.output_paths` makes them).
    method : str
        A key of :data:`segloc.classical.METHODS`.
    options : mapping, optional
        :func:`segloc.classical.segment`'s options (seeds as array indices).
    channel : int, optional
        Take this channel of colour images.
    invert : bool
        Binary methods: the objects are below the threshold.
    clean : mapping, optional
        :func:`segloc.masks.clean_mask` options for binary results.
    overlays : sequence of path-like, optional
        One overlay PNG per input (a montage for volumes).

    Returns
    -------
    list of (input, output, result)
    """
    paths, outs = [Path(p) for p in inputs], [Path(p) for p in outputs]
    if len(outs) != len(paths) or (overlays is not None and len(overlays) != len(paths)):
        raise ValueError("outputs and overlays must have one entry per input")
    check_not_inputs([*outs, *(overlays or [])], paths)
    for picture in overlays or []:
        viz.check_png_name(picture)
    options = dict(options or {})
    # every header before any file is read whole: a bad last file costs no reading
    io.check_files(paths, check=_check_dims, read_below=0)
    loaded = [io.read_image(p) for p in paths]
    for path, (image, meta) in zip(paths, loaded, strict=True):
        _check_seeds(path, image, meta, options.get("seeds") or ())
        if channel is not None and not meta.is_colour:
            raise ValueError(f"{path}: channel needs a colour image, got shape {image.shape}")
    results = []
    for path, (image, meta) in zip(paths, loaded, strict=True):
        colour = meta.is_colour
        if colour and (channel is not None or not METHODS[method].colour):
            try:
                image = to_grey(image, channel=channel)
            except ValueError as err:
                raise ValueError(f"{path}: {err}") from None
            colour = False
        with naming(path):
            result = segment(image, method, **options, channel_axis=-1 if colour else None)
        if invert:
            if result.dtype != np.bool_:
                raise ValueError(f"invert applies to binary methods only, not {method!r}")
            result = ~result
        if result.dtype == np.bool_ and clean:
            result = masks.clean_mask(result, **clean)
        results.append((image, meta, result))
    pictures = [Path(p) for p in overlays] if overlays is not None else []
    with atomic_paths([*outs, *pictures]) as temps:
        for k, (image, meta, result) in enumerate(results):
            io.write_mask(temps[k], result, meta=meta)
            if pictures:
                labels = result.astype(np.int32)
                picture = (
                    viz.montage(image, labels=labels)
                    if result.ndim == 3
                    else viz.overlay_mask(image, labels)
                )
                viz.save_png(temps[len(outs) + k], picture)
    return [(p, o, r) for p, o, (_, _, r) in zip(paths, outs, results, strict=True)]
