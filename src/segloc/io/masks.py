"""Masks as stored -> ``bool`` masks or ``int32`` label maps (0/255, palettes, labels)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from segloc._validation import check_choice
from segloc.io.errors import SeglocIOError
from segloc.io.formats import _LOSSY, ImageMeta, _fail
from segloc.io.limits import default_limits, default_untrusted
from segloc.io.read import _Options, _read


def _palette_lookup(palette: Any) -> tuple[np.ndarray, np.ndarray]:
    """Palette as (colours (K, 3) uint8, labels (K,) int32)."""
    if isinstance(palette, Mapping):
        colours = np.array([tuple(c)[:3] for c in palette], dtype=np.int64).reshape(-1, 3)
        labels = np.array(list(palette.values()), dtype=np.int64)
    else:
        colours = np.asarray(palette)
        if colours.ndim != 2 or colours.shape[1] not in (3, 4):
            raise ValueError(f"palette must be a dict or a (K, 3) array, got shape {colours.shape}")
        colours = colours[:, :3].astype(np.int64)
        labels = np.arange(len(colours))
    if colours.size and (colours.min() < 0 or colours.max() > 255):
        raise ValueError("palette colours must be in 0..255")
    keys = colours @ np.array([65536, 256, 1])
    if len(np.unique(keys)) != len(keys):
        raise ValueError("palette must not list a colour twice")
    return keys, labels


def _apply_palette(rgb: np.ndarray, palette: Any, path) -> np.ndarray:
    keys, labels = _palette_lookup(palette)
    pixel_keys = rgb[..., :3].astype(np.int64) @ np.array([65536, 256, 1])
    uniq, inverse = np.unique(pixel_keys, return_inverse=True)
    order = np.argsort(keys)
    pos = np.clip(np.searchsorted(keys[order], uniq), 0, max(len(keys) - 1, 0))
    known = (keys[order][pos] == uniq) if len(keys) else np.zeros(len(uniq), bool)
    if not known.all():
        k = int(uniq[np.argmax(~known)])
        where = np.argwhere(pixel_keys == k)[0]
        colour = (k >> 16, (k >> 8) & 255, k & 255)
        raise _fail(
            path, f"colour {colour} at {tuple(int(i) for i in where)} is not in the palette"
        )
    return labels[order][pos][inverse].reshape(pixel_keys.shape).astype(np.int32)


def _single_channel(arr: np.ndarray, kind: str, path) -> np.ndarray:
    if arr.dtype == np.bool_:
        return arr.astype(np.int32) if kind == "labels" else arr
    # NaN != 0 is True: checked before kind="binary", or a NaN mask becomes all foreground
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise _fail(path, "holds NaN or infinite values")
    if kind == "binary":
        return arr != 0
    if np.issubdtype(arr.dtype, np.floating):
        if not np.array_equal(arr, np.round(arr)):
            bad = arr[arr != np.round(arr)].flat[0]
            raise _fail(
                path,
                f"values must be whole numbers, got {bad} (read as binary, every nonzero "
                "pixel is foreground: --kind binary / kind='binary')",
            )
    elif not np.issubdtype(arr.dtype, np.integer):
        raise _fail(path, f"dtype must be numeric, got {arr.dtype}")
    values = np.unique(arr)
    if values.size and values[0] < 0:
        raise _fail(path, f"labels must be >= 0, got {values[0]}")
    if values.size and values[-1] > np.iinfo(np.int32).max:
        raise _fail(path, f"labels must fit int32, got {values[-1]}")
    if kind == "auto" and (set(values.tolist()) <= {0, 255} or set(values.tolist()) <= {0, 1}):
        return arr != 0
    return arr.astype(np.int32)


def interpret_mask(
    array: Any,
    *,
    kind: str = "auto",
    palette: Any = None,
    channel: int | None = None,
    lossy: bool = False,
    path: str | os.PathLike | None = None,
    is_color: bool | None = None,
) -> np.ndarray:
    """Turn stored mask pixels into a ``bool`` mask or an ``int32`` label map.

    Rules, in order:

    1. A colour mask (``(rows, cols, 3|4)``) needs ``palette`` (colour -> label) or
       ``channel`` (that channel, then the single-channel rules); one whose colour
       channels are identical is read as grey. Alpha is ignored.
    2. A lossy (JPEG) single-channel mask is thresholded, ``value >= 128``, with a
       ``UserWarning``; it cannot hold labels.
    3. A single-channel mask whose values are a subset of ``{0, 255}`` or of ``{0, 1}``
       is binary unless ``kind="labels"``; other values are labels (whole numbers
       >= 0). ``kind="binary"`` keeps every nonzero pixel.

    Parameters
    ----------
    array : array-like
        Mask pixels as stored.
    kind : {"auto", "binary", "labels"}
        Force the result type, or let the values decide.
    palette : dict or (K, 3) array, optional
        ``{(r, g, b): label}``, or rows of colours where row ``i`` is label ``i``
        (e.g. the CamVid or VOC palette).
    channel : int, optional
        Colour channel that holds the mask.
    lossy : bool
        The pixels come from a lossy format (JPEG).
    path : str or path-like, optional
        File the pixels came from; named in errors.
    is_color : bool, optional
        Whether the last axis is colour; default: ``array.ndim == 3`` and the last axis
        has 3 or 4 entries (pass False for a volume with 3 or 4 slices).

    Returns
    -------
    ndarray
        ``bool`` mask or ``int32`` label map with the spatial shape of ``array``.

    Raises
    ------
    ValueError
        (:class:`SeglocIOError` when ``path`` is given) for a colour mask without
        palette/channel, a colour missing from the palette, negative, fractional or
        NaN values (whatever ``kind``), or labels from a lossy file.

    References
    ----------
    .. [1] Everingham et al., "The PASCAL Visual Object Classes (VOC) Challenge", IJCV 88,
           2010, doi:10.1007/s11263-009-0275-4 (colour-coded class masks).
    .. [2] Jha et al., "Kvasir-SEG: A Segmented Polyp Dataset", MMM 2020,
           doi:10.1007/978-3-030-37734-2_37 (JPEG masks read by thresholding at 128).

    Examples
    --------
    >>> import numpy as np
    >>> interpret_mask(np.array([[0, 255]], np.uint8)).tolist()
    [[False, True]]
    >>> interpret_mask(np.array([[0, 2]], np.uint8)).tolist()
    [[0, 2]]
    """
    check_choice(kind, ("auto", "binary", "labels"), name="kind")
    if palette is not None and channel is not None:
        raise ValueError("give palette or channel, not both")
    arr = np.asarray(array)
    if is_color is None:
        is_color = arr.ndim == 3 and arr.shape[-1] in (3, 4)
    if is_color:
        if palette is not None:
            return _single_channel(_apply_palette(arr, palette, path), kind, path)
        if channel is not None:
            if not 0 <= channel < arr.shape[-1]:
                raise ValueError(f"channel must be in 0..{arr.shape[-1] - 1}, got {channel}")
            arr = arr[..., channel]
        elif all(np.array_equal(arr[..., 0], arr[..., c]) for c in (1, 2)):
            arr = arr[..., 0]  # a grey mask saved as RGB
        else:
            colour = tuple(int(v) for v in arr[..., :3].reshape(-1, 3)[0])
            raise _fail(
                path,
                f"is in colour (shape {arr.shape}, first colour {colour}); save it as a grey "
                "label map, or read it with a palette (colour -> label) or one channel "
                "(palette= / channel=)",
            )
    elif palette is not None or channel is not None:
        raise ValueError(f"palette and channel apply to colour masks, got shape {arr.shape}")
    if lossy and arr.dtype != np.bool_:
        if kind == "labels":
            raise _fail(path, "from a lossy (JPEG) file cannot hold labels; save it as PNG")
        warnings.warn(
            f"{path if path is not None else 'mask'}: lossy (JPEG) mask thresholded at 128",
            UserWarning,
            stacklevel=2,
        )
        return arr >= 128
    return _single_channel(arr, kind, path)


def read_mask(
    path: str | os.PathLike,
    *,
    kind: str = "auto",
    palette: Any = None,
    channel: int | None = None,
    classes: int | None = None,
    max_voxels: int | None = None,
    max_bytes: int | None = None,
    allow_truncated: bool = False,
    untrusted: bool | None = None,
) -> tuple[np.ndarray, ImageMeta]:
    """Read a mask or label map: :func:`read_image`, then :func:`interpret_mask`.

    A palette PNG (mode ``"P"``) gives its indices as labels unless ``palette`` is
    passed, in which case its colours are matched. JPEG masks are thresholded at 128
    with a ``UserWarning``. Float NIfTI label maps holding whole numbers come back as
    ``int32`` labels.

    Parameters
    ----------
    path : str or path-like
        Any file :func:`read_image` reads.
    kind, palette, channel
        See :func:`interpret_mask`.
    classes : int, optional
        Number of classes: every label must be in ``0..classes - 1``.
    max_voxels, max_bytes, allow_truncated, untrusted
        As for :func:`read_image`.

    Returns
    -------
    mask : ndarray
        ``bool`` mask or ``int32`` label map.
    meta : ImageMeta
        As from :func:`read_image`.

    Raises
    ------
    SeglocIOError
        Any error of :func:`read_image` (:class:`CorruptFile`,
        :class:`ResourceLimitExceeded` ...), or mask values :func:`interpret_mask`
        refuses, or labels outside ``0..classes - 1``; the message starts with the path.

    References
    ----------
    .. [1] Everingham et al., "The PASCAL Visual Object Classes (VOC) Challenge", IJCV 88,
           2010, doi:10.1007/s11263-009-0275-4 (indexed-colour class masks).
    """
    path = Path(path)
    check_choice(kind, ("auto", "binary", "labels"), name="kind")
    if classes is not None and (
        isinstance(classes, bool) or not isinstance(classes, int) or classes < 1
    ):
        raise ValueError(f"classes must be an integer >= 1, got {classes!r}")
    limits = default_limits(max_voxels, max_bytes)
    if default_untrusted(untrusted):
        from segloc.io.sandbox import read_untrusted

        arr, meta = read_untrusted(
            path,
            max_voxels=limits.max_voxels,
            max_bytes=limits.max_bytes,
            allow_truncated=allow_truncated,
            palette_indices=palette is None,
        )
    else:
        arr, meta = _read(path, _Options(limits, allow_truncated, palette_indices=palette is None))
    mask = interpret_mask(
        arr,
        kind=kind,
        palette=palette,
        channel=channel,
        lossy=meta.format in _LOSSY,
        path=path,
        is_color=meta.is_colour,
    )
    if classes is not None and mask.dtype != np.bool_ and mask.size and mask.max() >= classes:
        bad = np.unique(mask[mask >= classes])
        raise SeglocIOError(
            f"{path}: mask labels must be in 0..{classes - 1}, got "
            f"{', '.join(str(int(v)) for v in bad[:10])}{' ...' if bad.size > 10 else ''}",
            path=path,
        )
    return mask, meta
