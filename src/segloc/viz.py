"""Pictures people look at: overlays of masks and boxes, slice montages, comparison panels.

Every function returns an RGB ``uint8`` array; the ``save_*`` functions write PNGs atomically.
Matplotlib is used only for the titled panel figures and the training curves, with the
non-interactive Agg backend, so nothing here needs a display.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage as ndi

from segloc._validation import atomic_path, check_choice, check_image

# Distinct colours for labels 1..N (label 0 = background stays transparent). The first ten are
# matplotlib's "tab10", which stay tellable apart for most colour-vision deficiencies.
_PALETTE = np.array(
    [
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (127, 127, 127),
        (188, 189, 34),
        (23, 190, 207),
    ],
    dtype=np.uint8,
)


def label_colors(n: int) -> np.ndarray:
    """Return ``(n, 3)`` uint8 colours for labels 1..n: tab10 first, then evenly spaced hues."""
    if n <= len(_PALETTE):
        return _PALETTE[:n].copy()
    from matplotlib.colors import hsv_to_rgb

    # golden-ratio hue steps keep neighbouring ids apart in colour
    hues = (np.arange(n - len(_PALETTE)) * 0.618033988749895) % 1.0
    extra = hsv_to_rgb(np.stack([hues, np.full_like(hues, 0.75), np.full_like(hues, 0.95)], 1))
    return np.concatenate([_PALETTE, (extra * 255).astype(np.uint8)])


def to_rgb(image: np.ndarray, *, percentiles: tuple[float, float] = (0.5, 99.5)) -> np.ndarray:
    """Return a display version of ``image`` as ``(H, W, 3)`` uint8.

    Grey images are stretched between the given percentiles (robust to a few hot pixels);
    uint8 images, grey or colour, are shown as they are.
    """
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] in (3, 4):
        rgb = image[..., :3]
        if rgb.dtype == np.uint8:
            return np.ascontiguousarray(rgb)
        return _stretch(rgb.astype(np.float64), percentiles)
    check_image(image, ndim=(2,))
    if image.dtype == np.uint8:
        grey = image
    elif image.dtype == np.bool_:
        grey = image.astype(np.uint8) * 255
    else:
        grey = _stretch(image.astype(np.float64), percentiles)
    return np.repeat(grey[..., None], 3, axis=-1)


def _stretch(values: np.ndarray, percentiles: tuple[float, float]) -> np.ndarray:
    lo, hi = np.percentile(values, percentiles)
    if hi <= lo:
        hi = lo + 1.0
    return (np.clip((values - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)


def overlay_mask(
    image: np.ndarray,
    labels: np.ndarray,
    *,
    alpha: float = 0.4,
    contours: bool = True,
    colors: np.ndarray | None = None,
) -> np.ndarray:
    """Blend a label map (or bool mask) onto a 2D image; return ``(H, W, 3)`` uint8.

    Each label > 0 gets its own colour; ``contours`` draws each region's outline fully opaque
    so that thin or overlapping structures stay visible under a low ``alpha``.
    """
    rgb = to_rgb(image)
    labels = np.asarray(labels)
    if labels.shape != rgb.shape[:2]:
        raise ValueError(f"labels must have the image's shape {rgb.shape[:2]}, got {labels.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    labels = labels.astype(np.int64)
    n = int(labels.max()) if labels.size else 0
    if n == 0:
        return rgb
    if colors is None:
        colors = label_colors(n)
    lut = np.zeros((n + 1, 3), dtype=np.float64)
    lut[1:] = colors[:n]
    fg = labels > 0
    out = rgb.astype(np.float64)
    out[fg] = (1 - alpha) * out[fg] + alpha * lut[labels[fg]]
    if contours:
        edge = fg & (ndi.grey_erosion(labels, size=3) != ndi.grey_dilation(labels, size=3))
        out[edge] = lut[labels[edge]]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def draw_boxes(
    image: np.ndarray,
    boxes: Sequence[Sequence[float]] | np.ndarray,
    *,
    labels: Sequence[str] | None = None,
    scores: Sequence[float] | None = None,
    classes: Sequence[int] | None = None,
    width: int = 2,
) -> np.ndarray:
    """Draw ``xyxy`` boxes (half-open pixel edges) with optional text on a 2D image.

    Returns ``(H, W, 3)`` uint8. The text is ``label score`` when given; colours follow
    ``classes`` (same colour per class) or the box index.
    """
    rgb = to_rgb(image)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    n = len(boxes)
    for name, seq in (("labels", labels), ("scores", scores), ("classes", classes)):
        if seq is not None and len(seq) != n:
            raise ValueError(f"{name} must have one entry per box ({n}), got {len(seq)}")
    pil = Image.fromarray(rgb)
    draw = ImageDraw.Draw(pil)
    font = ImageFont.load_default()
    keys = list(classes) if classes is not None else list(range(n))
    palette = label_colors(max(keys, default=0) + 1)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        color = tuple(int(c) for c in palette[keys[i] % len(palette)])
        # half-open edges: the last pixel inside the box is x1 - 1
        draw.rectangle([x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], outline=color, width=width)
        text = " ".join(
            t
            for t in (
                labels[i] if labels is not None else "",
                f"{scores[i]:.2f}" if scores is not None else "",
            )
            if t
        )
        if text:
            tx, ty = x0, max(0.0, y0 - 12)
            bbox = draw.textbbox((tx, ty), text, font=font)
            draw.rectangle(bbox, fill=color)
            draw.text((tx, ty), text, fill=(255, 255, 255), font=font)
    return np.asarray(pil)


def montage(
    volume: np.ndarray,
    *,
    axis: int = 2,
    n_slices: int = 9,
    labels: np.ndarray | None = None,
    columns: int | None = None,
    alpha: float = 0.4,
) -> np.ndarray:
    """Tile evenly spaced slices of a 3D volume (with an optional label overlay) into one image.

    Slices are taken along ``axis`` (2 = the slice axis in segloc's ``(row, col, slice)`` order).
    When ``labels`` is given, the slices are spread over the range where labels are present.
    """
    volume = check_image(volume, name="volume", ndim=(3,))
    check_choice(axis, (0, 1, 2), name="axis")
    if labels is not None and np.shape(labels) != volume.shape:
        raise ValueError(
            f"labels must have the volume's shape {volume.shape}, got {np.shape(labels)}"
        )
    depth = volume.shape[axis]
    lo, hi = 0, depth - 1
    if labels is not None and np.any(labels):
        present = np.flatnonzero(np.any(np.moveaxis(np.asarray(labels) > 0, axis, 0), axis=(1, 2)))
        lo, hi = int(present[0]), int(present[-1])
    idx = np.unique(np.linspace(lo, hi, min(n_slices, hi - lo + 1)).round().astype(int))
    # stretch with the whole volume's percentiles so slices are comparable
    lo_v, hi_v = np.percentile(volume, (0.5, 99.5))
    scale = max(hi_v - lo_v, 1e-12)
    tiles = []
    for i in idx:
        sl = np.take(volume, i, axis=axis).astype(np.float64)
        grey = (np.clip((sl - lo_v) / scale, 0, 1) * 255).astype(np.uint8)
        if labels is not None:
            tiles.append(overlay_mask(grey, np.take(labels, i, axis=axis), alpha=alpha))
        else:
            tiles.append(to_rgb(grey))
    columns = columns or int(np.ceil(np.sqrt(len(tiles))))
    rows = int(np.ceil(len(tiles) / columns))
    h, w = tiles[0].shape[:2]
    sheet = np.zeros((rows * h, columns * w, 3), dtype=np.uint8)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, columns)
        sheet[r * h : (r + 1) * h, c * w : (c + 1) * w] = tile
    return sheet


def _middle_slice(image: np.ndarray, truth: np.ndarray, axis: int = 2) -> int:
    """Index of the slice with the most ground-truth voxels (middle slice when there are none)."""
    counts = np.moveaxis(np.asarray(truth) > 0, axis, 0).reshape(truth.shape[axis], -1).sum(1)
    return int(np.argmax(counts)) if counts.any() else image.shape[axis] // 2


def check_png_name(path: str | os.PathLike) -> Path:
    """``path`` if it ends in ``.png``: pictures are PNG, and a ``.jpg`` or ``.nii.gz`` name on
    PNG bytes would mislead whoever opens it."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"{path}: pictures are written as PNG; give the file a .png name")
    return path


def save_png(path: str | os.PathLike, rgb: np.ndarray) -> Path:
    """Write an RGB/grey uint8 array as a PNG, atomically."""
    check_png_name(path)
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(np.asarray(rgb)).save(tmp, format="PNG")
    return Path(path)


def comparison_panel(
    image: np.ndarray,
    truth: np.ndarray,
    pred: np.ndarray,
    path: str | os.PathLike,
    *,
    dice: float | None = None,
    title: str | None = None,
    axis: int = 2,
) -> Path:
    """Save the panel image | ground truth | prediction, titled with the Dice, as a PNG.

    3D inputs show the slice with the most ground truth along ``axis``.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    image, truth, pred = np.asarray(image), np.asarray(truth), np.asarray(pred)
    if truth.shape != pred.shape:
        raise ValueError(
            f"truth and pred must have the same shape, got {truth.shape} and {pred.shape}"
        )
    is_colour = image.ndim == 3 and image.shape[-1] in (3, 4) and truth.ndim == 2
    if truth.ndim == 3:
        k = _middle_slice(image, truth, axis)
        image, truth, pred = (np.take(a, k, axis=axis) for a in (image, truth, pred))
    elif not is_colour and image.shape != truth.shape:
        raise ValueError(
            f"image and truth must have the same shape, got {image.shape} and {truth.shape}"
        )
    n = int(max(np.max(truth), np.max(pred), 1))
    colors = label_colors(n)
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.4))
    panels = (
        ("image", to_rgb(image)),
        ("ground truth", overlay_mask(image, truth.astype(np.int64), colors=colors)),
        ("prediction", overlay_mask(image, pred.astype(np.int64), colors=colors)),
    )
    for ax, (name, rgb) in zip(axes, panels, strict=True):
        ax.imshow(rgb, interpolation="nearest")
        ax.set_title(name)
        ax.axis("off")
    heading = title or ""
    if dice is not None:
        heading = f"{heading}  Dice = {dice:.3f}".strip()
    if heading:
        fig.suptitle(heading)
    fig.tight_layout()
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png", dpi=100)
    finally:
        plt.close(fig)
    return Path(path)


def plot_curves(
    history: dict[str, Sequence[float]],
    path: str | os.PathLike,
    *,
    x_label: str = "epoch",
    title: str | None = None,
) -> Path:
    """Save training curves (one line per named series, losses and scores on twin axes) as PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if not history:
        raise ValueError("history must hold at least one series")
    fig, ax = plt.subplots(figsize=(7, 4))
    ax2 = None
    for name, values in history.items():
        values = np.asarray(values, dtype=float)
        x = np.arange(1, len(values) + 1)
        if "loss" in name:
            ax.plot(x, values, label=name)
        else:
            ax2 = ax2 or ax.twinx()
            ax2.plot(x, values, "--", label=name)
    ax.set_xlabel(x_label)
    ax.set_ylabel("loss")
    handles, names = ax.get_legend_handles_labels()
    if ax2 is not None:
        ax2.set_ylabel("score")
        h2, n2 = ax2.get_legend_handles_labels()
        handles, names = handles + h2, names + n2
    ax.legend(handles, names, loc="best")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png", dpi=100)
    finally:
        plt.close(fig)
    return Path(path)
