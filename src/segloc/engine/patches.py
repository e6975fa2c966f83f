"""Training patches: sampling with foreground oversampling, the torch dataset, collation.

Padding (patches larger than the image, :func:`pad_collate`): images are padded with 0
(after normalisation: the mean intensity for z-score) and label maps with
``ignore_index`` when one is given, else with 0 (background).

References
----------
.. [1] Isensee, F. et al. "nnU-Net: a self-configuring method for deep learning-based
   biomedical image segmentation", Nature Methods 18, 2021,
   :doi:`10.1038/s41592-020-01008-z` (patches with one third foreground oversampling).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from segloc._validation import check_choice, check_positive
from segloc.engine.data import CaseFiles, load_case
from segloc.engine.preprocess import NORMALIZATIONS, normalize_case, resample

__all__ = [
    "PadCollate",
    "PatchSampler",
    "SegmentationDataset",
    "pad_collate",
    "worker_init_fn",
]


def _check_patch_size(patch_size: Any) -> tuple[int, ...]:
    size = tuple(patch_size) if not np.isscalar(patch_size) else None
    if (
        size is None
        or len(size) not in (2, 3)
        or any(not isinstance(s, (int, np.integer)) or isinstance(s, bool) or s < 1 for s in size)
    ):
        raise ValueError(f"patch_size must be 2 or 3 positive ints, got {patch_size!r}")
    return tuple(int(s) for s in size)


def _pad_to(
    image: np.ndarray, labels: np.ndarray, size: Sequence[int], label_value: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pad (C, *spatial) and (*spatial) evenly on both sides up to ``size``."""
    widths = []
    for n, p in zip(labels.shape, size, strict=True):
        extra = max(p - n, 0)
        widths.append((extra // 2, extra - extra // 2))
    if not any(a or b for a, b in widths):
        return image, labels
    image = np.pad(image, [(0, 0), *widths], constant_values=0)
    labels = np.pad(labels, widths, constant_values=label_value)
    return image, labels


def _foreground_classes(labels: np.ndarray, ignore_index: int | None = None) -> np.ndarray:
    """The foreground classes present in ``labels``: values > 0, ``ignore_index`` apart."""
    classes = np.unique(labels)
    classes = classes[classes > 0]
    return classes if ignore_index is None else classes[classes != ignore_index]


class PatchSampler:
    """Random patches with foreground oversampling (nnU-Net: one third).

    Each draw is a foreground patch with probability ``foreground_fraction``: a class
    is picked uniformly among the foreground classes present (label > 0, not
    ``ignore_index``), then a voxel of that class uniformly, and the patch is centred on
    it (shifted to stay inside the image). Otherwise, or when the case has no
    foreground, the patch origin is uniform over all positions. An image smaller than
    the patch is first padded evenly: image with 0, labels with ``ignore_index`` (0
    when it is None).

    Parameters
    ----------
    patch_size : sequence of int
        Spatial patch shape (2 or 3 values).
    foreground_fraction : float
        Probability of a foreground-centred patch, in [0, 1].
    ignore_index : int, optional
        Label that is neither foreground nor a class (e.g. CamVid void = 11).
    seed : int, optional
        Seeds the sampler's own generator, used when no ``rng`` is passed.

    References
    ----------
    .. [1] Isensee et al., nnU-Net, Nature Methods 2021, :doi:`10.1038/s41592-020-01008-z`.

    Examples
    --------
    >>> import numpy as np
    >>> sampler = PatchSampler((4, 4), seed=0)
    >>> im, lab = sampler.sample(np.zeros((1, 10, 10)), np.zeros((10, 10), int))
    >>> im.shape, lab.shape
    ((1, 4, 4), (4, 4))
    """

    def __init__(
        self,
        patch_size: Sequence[int],
        *,
        foreground_fraction: float = 1 / 3,
        ignore_index: int | None = None,
        seed: int | None = None,
    ) -> None:
        self.patch_size = _check_patch_size(patch_size)
        check_positive(foreground_fraction, name="foreground_fraction", strict=False)
        if foreground_fraction > 1:
            raise ValueError(f"foreground_fraction must be in [0, 1], got {foreground_fraction}")
        self.foreground_fraction = float(foreground_fraction)
        self.ignore_index = ignore_index
        self.rng = np.random.default_rng(seed)

    def __repr__(self) -> str:
        return (
            f"PatchSampler({self.patch_size}, foreground_fraction={self.foreground_fraction:.3g}, "
            f"ignore_index={self.ignore_index})"
        )

    def origin(
        self,
        labels: np.ndarray,
        *,
        rng: np.random.Generator | None = None,
        foreground: bool | None = None,
    ) -> tuple[int, ...]:
        """Start index of a patch inside ``labels`` (at least the patch size on every axis).

        ``foreground`` forces (True) or forbids (False) a foreground-centred patch;
        None draws it with probability ``foreground_fraction``.
        """
        rng = self.rng if rng is None else rng
        labels = np.asarray(labels)
        if labels.ndim != len(self.patch_size):
            raise ValueError(
                f"labels must be {len(self.patch_size)}D for patch_size {self.patch_size}, "
                f"got shape {labels.shape}"
            )
        room = np.array(labels.shape) - np.array(self.patch_size)
        if (room < 0).any():
            raise ValueError(
                f"labels shape {labels.shape} is smaller than patch_size {self.patch_size}; "
                "use sample(), which pads"
            )
        if foreground is None:
            foreground = bool(rng.random() < self.foreground_fraction)
        if foreground:
            classes = _foreground_classes(labels, self.ignore_index)
            if classes.size:
                c = classes[rng.integers(classes.size)]
                where = np.flatnonzero(labels == c)
                centre = np.unravel_index(where[rng.integers(where.size)], labels.shape)
                start = np.array(centre) - np.array(self.patch_size) // 2
                return tuple(int(v) for v in np.clip(start, 0, room))
        return tuple(int(rng.integers(0, r + 1)) for r in room)

    def sample(
        self,
        image: np.ndarray,
        labels: np.ndarray,
        *,
        rng: np.random.Generator | None = None,
        foreground: bool | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Cut one patch: ``image`` (C, *spatial) -> (C, *patch), ``labels`` -> (*patch)."""
        image, labels = np.asarray(image), np.asarray(labels)
        if image.shape[1:] != labels.shape:
            raise ValueError(
                f"image (C, *spatial) and labels must share spatial shape, got {image.shape} "
                f"and {labels.shape}"
            )
        pad = self.ignore_index if self.ignore_index is not None else 0
        image, labels = _pad_to(image, labels, self.patch_size, pad)
        start = self.origin(labels, rng=rng, foreground=foreground)
        box = tuple(slice(s, s + p) for s, p in zip(start, self.patch_size, strict=True))
        return np.ascontiguousarray(image[(slice(None), *box)]), np.ascontiguousarray(labels[box])


class SegmentationDataset(Dataset):
    """A torch Dataset over :class:`CaseFiles`, reading lazily.

    Each item is ``dict(image=FloatTensor (C, *spatial), label=LongTensor (*spatial),
    case=name)``, plus ``weight=FloatTensor (*spatial)`` with ``pixel_weight``. Per case:
    read (:func:`load_case`), optionally resample to ``target_spacing`` (image linear, labels
    nearest), normalise per channel (:func:`normalize`); then per item: cut a patch
    (:class:`PatchSampler`) when ``patch_size`` is set, augment, and weigh.

    Randomness comes from the dataset's generator: seeded by ``seed`` in the main
    process and re-seeded in each DataLoader worker by :func:`worker_init_fn` from torch's
    per-worker seed, so workers differ and a run under ``torch.manual_seed`` repeats.

    Parameters
    ----------
    cases : sequence of CaseFiles
    patch_size : sequence of int, optional
        Patch mode: items are patches, ``samples_per_epoch`` of them (case
        ``index % len(cases)``). None: items are whole cases (batch them with
        :func:`pad_collate`).
    augment : callable, optional
        ``augment(image, labels, rng=generator) -> (image, labels)``, e.g.
        :class:`segloc.engine.augment.Augmenter`.
    normalize : {"zscore", "body", "ct", "percentile", "minmax"} or None
        Per-channel normalisation of each case (:func:`segloc.engine.preprocess.normalize_case`);
        None only casts to float32.
    intensity_stats : sequence of dict, optional
        Per channel ``lo``, ``hi``, ``mean``, ``std``: the dataset-wide figures of ``"ct"``.
    cache : bool or int
        Keep loaded (resampled, normalised) cases in memory: True for all, an int for at
        most that many MiB (least recently used dropped first), False for none. Each
        worker process holds its own cache.
    samples_per_epoch : int, optional
        Length in patch mode (default: the number of cases).
    foreground_fraction : float
        Of the patch sampler.
    foreground_cases : sequence of int, optional
        Indices of the cases that hold foreground. A foreground draw (``foreground_fraction``)
        on a case without any moves to one of these, drawn uniformly, as nnU-Net's 2D loader
        picks a slice that holds the class [1]_: otherwise, where patches cover whole slices
        and few slices hold the object (tumours in brain MRI), oversampling would change no
        patch. None: found on the first such draw by loading every case once; empty: keep the
        drawn case (a random patch of it).
    label_mapping : "auto", None or dict
        See :func:`load_case`.
    ignore_index : int, optional
        Label that pads patches and is no foreground class.
    target_spacing : sequence of float, optional
        Resample every case to this spacing first.
    pixel_weight : callable, optional
        ``pixel_weight(labels) -> float array of the labels' shape``, computed on each item's
        final (cut and augmented) labels, e.g. ``functools.partial(label_weight_map, w0=10)``
        for the U-Net paper's border weights (:mod:`segloc.nn.weight_map`). A deformed label map
        gets the weights of its own borders, as the paper's pre-computed maps would after the
        same deformation; near a patch's edge the objects beyond it are unseen.
    seed : int
        Seed of the generator used outside workers.

    References
    ----------
    .. [1] Isensee et al., nnU-Net, Nature Methods 2021, :doi:`10.1038/s41592-020-01008-z`
       (``nnUNetDataLoader2D``: forced-foreground samples pick a slice holding the class).
    """

    def __init__(
        self,
        cases: Sequence[CaseFiles],
        *,
        patch_size: Sequence[int] | None = None,
        augment: Callable[..., tuple[np.ndarray, np.ndarray]] | None = None,
        normalize: str | None = "zscore",
        cache: bool | int = False,
        samples_per_epoch: int | None = None,
        foreground_fraction: float = 1 / 3,
        label_mapping: str | Mapping[int, int] | None = "auto",
        ignore_index: int | None = None,
        target_spacing: Sequence[float] | None = None,
        pixel_weight: Callable[[np.ndarray], np.ndarray] | None = None,
        seed: int = 0,
        intensity_stats: Sequence[Mapping[str, float]] | None = None,
        foreground_cases: Sequence[int] | None = None,
    ) -> None:
        self.cases = list(cases)
        if not self.cases:
            raise ValueError("cases must not be empty")
        if foreground_cases is not None:
            foreground_cases = [int(i) for i in foreground_cases]
            bad = [i for i in foreground_cases if not 0 <= i < len(self.cases)]
            if bad:
                raise ValueError(
                    f"foreground_cases must index the {len(self.cases)} cases, got {bad[:5]}"
                )
        self.foreground_cases = foreground_cases
        if normalize is not None:
            check_choice(normalize, NORMALIZATIONS, name="normalize")
        self.intensity_stats = None if intensity_stats is None else list(intensity_stats)
        if augment is not None and not callable(augment):
            raise TypeError(f"augment must be callable, got {type(augment).__name__}")
        if pixel_weight is not None and not callable(pixel_weight):
            raise TypeError(f"pixel_weight must be callable, got {type(pixel_weight).__name__}")
        self.pixel_weight = pixel_weight
        if isinstance(cache, bool):
            self._cache_limit: float = float("inf") if cache else 0.0
        elif isinstance(cache, (int, np.integer)) and cache >= 0:
            self._cache_limit = float(cache) * 2**20
        else:
            raise ValueError(f"cache must be a bool or a number of MiB >= 0, got {cache!r}")
        if label_mapping is not None and not isinstance(label_mapping, Mapping):
            check_choice(label_mapping, ("auto",), name="label_mapping")
        self.augment = augment
        self.normalize = normalize
        self.label_mapping = label_mapping
        self.ignore_index = ignore_index
        self.target_spacing = (
            None if target_spacing is None else tuple(float(s) for s in target_spacing)
        )
        self.sampler = (
            None
            if patch_size is None
            else PatchSampler(
                patch_size, foreground_fraction=foreground_fraction, ignore_index=ignore_index
            )
        )
        if samples_per_epoch is None:
            samples_per_epoch = len(self.cases)
        if not isinstance(samples_per_epoch, (int, np.integer)) or samples_per_epoch < 1:
            raise ValueError(f"samples_per_epoch must be an int >= 1, got {samples_per_epoch!r}")
        self.samples_per_epoch = int(samples_per_epoch)
        self._cache: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._cache_bytes = 0
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        """Restart the random generator (called per worker by :func:`worker_init_fn`)."""
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.samples_per_epoch if self.sampler is not None else len(self.cases)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Case ``i`` resampled and normalised: (C, *spatial) float32, (*spatial) int64."""
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        image, labels, meta = load_case(self.cases[i], label_mapping=self.label_mapping)
        if self.target_spacing is not None:
            image, _ = resample(image, meta.spacing, self.target_spacing, order=1, channel_axis=0)
            labels, _ = resample(labels, meta.spacing, self.target_spacing, order=0)
        image = normalize_case(image, self.normalize, stats=self.intensity_stats)
        size = image.nbytes + labels.nbytes
        if size <= self._cache_limit:
            while self._cache and self._cache_bytes + size > self._cache_limit:
                _, (old_image, old_labels) = self._cache.popitem(last=False)
                self._cache_bytes -= old_image.nbytes + old_labels.nbytes
            self._cache[i] = (image, labels)
            self._cache_bytes += size
        return image, labels

    def _holds_foreground(self, labels: np.ndarray) -> bool:
        return bool(_foreground_classes(labels, self.ignore_index).size)

    def _foreground_cases(self) -> list[int]:
        if self.foreground_cases is None:
            self.foreground_cases = [
                i for i in range(len(self.cases)) if self._holds_foreground(self.load(i)[1])
            ]
        return self.foreground_cases

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index must be in 0..{len(self) - 1}, got {index}")
        i = index % len(self.cases)
        image, labels = self.load(i)
        if self.sampler is not None:
            # drawn here, in the sampler's order, so cases that all hold foreground see the
            # same random stream as a sampler drawing it itself
            foreground = bool(self.rng.random() < self.sampler.foreground_fraction)
            if foreground and not self._holds_foreground(labels):
                others = self._foreground_cases()
                if others:
                    i = others[int(self.rng.integers(len(others)))]
                    image, labels = self.load(i)
            image, labels = self.sampler.sample(image, labels, rng=self.rng, foreground=foreground)
        if self.augment is not None:
            image, labels = self.augment(image, labels, rng=self.rng)
        item = {
            "image": torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)),
            "label": torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64)),
            "case": self.cases[i].name,
        }
        if self.pixel_weight is not None:
            weight = np.asarray(self.pixel_weight(labels), dtype=np.float32)
            if weight.shape != labels.shape:
                raise ValueError(
                    f"pixel_weight returned shape {weight.shape} for labels of shape "
                    f"{labels.shape} (case {self.cases[i].name})"
                )
            item["weight"] = torch.from_numpy(np.ascontiguousarray(weight))
        return item


def worker_init_fn(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed each worker from torch's per-worker seed.

    torch gives worker ``k`` the seed ``base + k`` with ``base`` drawn from the main
    process' generator, so the workers' augmentations differ and repeat under
    ``torch.manual_seed``. Re-seeds the dataset (unwrapping ``Subset``-like wrappers
    through ``.dataset``).
    """
    info = torch.utils.data.get_worker_info()
    if info is None:
        return
    dataset = info.dataset
    while not hasattr(dataset, "reseed") and hasattr(dataset, "dataset"):
        dataset = dataset.dataset
    if hasattr(dataset, "reseed"):
        dataset.reseed(info.seed)


class PadCollate:
    """Collate whole images of different sizes by padding them to a common size.

    See :func:`pad_collate`.
    """

    def __init__(self, multiple: int = 16, *, label_value: int = 0) -> None:
        if (
            isinstance(multiple, bool)
            or not isinstance(multiple, (int, np.integer))
            or multiple < 1
        ):
            raise ValueError(f"multiple must be an int >= 1, got {multiple!r}")
        self.multiple = int(multiple)
        self.label_value = int(label_value)

    def __repr__(self) -> str:
        return f"PadCollate(multiple={self.multiple}, label_value={self.label_value})"

    def __call__(self, batch: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        if not batch:
            raise ValueError("batch must not be empty")
        shapes = [tuple(item["label"].shape) for item in batch]
        channels = {item["image"].shape[0] for item in batch}
        if len({len(s) for s in shapes}) != 1 or len(channels) != 1:
            raise ValueError(f"batch items must share dimensionality and channels, got {shapes}")
        m = self.multiple
        size = [-(-max(dim) // m) * m for dim in zip(*shapes, strict=True)]
        images = batch[0]["image"].new_zeros((len(batch), batch[0]["image"].shape[0], *size))
        labels = torch.full((len(batch), *size), self.label_value, dtype=torch.int64)
        # padding is no image: it carries no loss weight
        weights = torch.zeros((len(batch), *size)) if "weight" in batch[0] else None
        for k, item in enumerate(batch):
            box = tuple(slice(0, n) for n in item["label"].shape)
            images[(k, slice(None), *box)] = item["image"]
            labels[(k, *box)] = item["label"]
            if weights is not None:
                weights[(k, *box)] = item["weight"]
        out = {
            "image": images,
            "label": labels,
            "case": [item["case"] for item in batch],
            "shape": torch.tensor(shapes, dtype=torch.int64),
        }
        if weights is not None:
            out["weight"] = weights
        return out


def pad_collate(multiple: int = 16, *, label_value: int = 0) -> PadCollate:
    """Collate function that pads whole images to one size divisible by ``multiple``.

    Images are padded with 0 and label maps with ``label_value`` (pass the loss's
    ignore index to keep padding out of the loss) at the end of each spatial axis, so
    ``output[..., :rows, :cols]`` is the original extent. The batch dict holds
    ``image`` (B, C, *padded), ``label`` (B, *padded), ``case`` (names) and ``shape``
    (B, ndim) the original spatial shapes, plus ``weight`` (B, *padded) when the items have
    one (padding weighs 0).

    Examples
    --------
    >>> import torch
    >>> def item(n):
    ...     return {"image": torch.ones(1, n, 5), "label": torch.ones(n, 5).long(), "case": str(n)}
    >>> out = pad_collate(8)([item(3), item(9)])
    >>> tuple(out["image"].shape), out["shape"].tolist()
    ((2, 1, 16, 8), [[3, 5], [9, 5]])
    """
    return PadCollate(multiple, label_value=label_value)
