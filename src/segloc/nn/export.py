"""Export models to ONNX and run them with ONNX Runtime (no torch needed at inference).

Uses PyTorch's ``torch.export``-based ONNX exporter (the TorchScript one is deprecated since
PyTorch 2.9) with dynamic batch and spatial sizes, and ONNX Runtime's CPU execution provider.

References
----------
.. [1] ONNX: Open Neural Network Exchange, https://onnx.ai/ ; ONNX Runtime,
       https://onnxruntime.ai/docs/
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from segloc._validation import atomic_path
from segloc.nn.unet import UNet

__all__ = ["OnnxPredictor", "export_checkpoint", "export_onnx"]


def _dynamic_shapes(model: nn.Module, ndim: int) -> dict[int, object]:
    """torch.export shape spec: any batch, spatial sizes of the forms the model accepts."""
    from torch.export import Dim

    spatial: list = []
    if isinstance(model, UNet):
        # A U-Net takes sizes grid * t + offset only; telling the exporter so avoids it
        # specialising to the example size when it meets the pooling's divisibility guards.
        # Same padding: the grid of each axis is its own pooling (1 across a slice axis).
        firsts, grids = model.valid_input_size(1), model.input_steps
        for i in range(ndim - 2):
            spatial.append(grids[i] * Dim(f"t{i}", min=1) + (firsts[i] - grids[i]))
    else:
        spatial = [Dim.AUTO] * (ndim - 2)
    return {0: Dim("batch", min=1), **dict(enumerate(spatial, start=2))}


class _NoTorchvisionNotice(logging.Filter):
    """Drops the exporter's "torchvision is not installed. Skipping torchvision::nms" (one
    line per torchvision op, four per export): segloc's models use no torchvision op."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("torchvision is not installed")


@contextmanager
def _without_torchvision_notices() -> Iterator[None]:
    logger = logging.getLogger("torch.onnx._internal.exporter._registration")
    quiet = _NoTorchvisionNotice()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    example_shape: Sequence[int],
    opset: int = 18,
    dynamic_spatial: bool = True,
) -> Path:
    """Write ``model`` to an ONNX file (atomically), input ``"image"``, output ``"logits"``.

    Parameters
    ----------
    model : nn.Module
        Exported in eval mode (its mode is restored afterwards), on its own device.
    path : path-like
        Output ``.onnx`` file; weights are stored inside it (models up to 2 GB).
    example_shape : sequence of int
        Shape ``(N, C, *spatial)`` of an input the model accepts.
    opset : int, default 18
        ONNX opset; 18 is the lowest the ``torch.export``-based exporter emits natively.
    dynamic_spatial : bool, default True
        If True the batch and spatial sizes stay free (a :class:`~segloc.nn.unet.UNet` keeps its
        valid-size constraint); if False only the batch size does.

    Returns
    -------
    Path
        ``path``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    shape = tuple(int(s) for s in example_shape)
    if len(shape) not in (4, 5) or any(s < 1 for s in shape):
        raise ValueError(
            f"example_shape must be (N, C, H, W) or (N, C, D, H, W) of positive ints, "
            f"got {tuple(example_shape)}"
        )
    if isinstance(model, UNet):
        model.output_size(shape[2:])  # a clear ValueError naming a valid size, before tracing
        if dynamic_spatial:
            # torch.export specialises a size whose free factor is 1 (its 0/1 rule), so the
            # smallest valid size is traced one pooling grid step larger, and a batch of 1
            # as 2 (a slice-wise U-Net folds the slices into the batch).
            firsts, grids = model.valid_input_size(1), model.input_steps
            shape = (max(shape[0], 2), shape[1]) + tuple(
                s + grids[a] if s == firsts[a] and grids[a] > 1 else s
                for a, s in enumerate(shape[2:])
            )
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    example = torch.zeros(shape, device=device)
    dynamic = _dynamic_shapes(model, len(shape))
    if not dynamic_spatial:
        dynamic = {0: dynamic[0]}
    was_training = model.training
    model.eval()
    try:
        with (
            atomic_path(path, suffix=".onnx") as tmp,
            warnings.catch_warnings(),
            _without_torchvision_notices(),
        ):
            # torch's exporter trips over its own pytree deprecation; nothing a caller can fix.
            warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
            torch.onnx.export(
                model,
                (example,),
                str(tmp),
                dynamo=True,
                external_data=False,
                input_names=["image"],
                output_names=["logits"],
                dynamic_shapes=(dynamic,),  # one spec per positional input
                opset_version=opset,
                verbose=False,
            )
    finally:
        model.train(was_training)
    return Path(path)


class OnnxPredictor:
    """Run an exported segmentation model with ONNX Runtime on the CPU.

    Parameters
    ----------
    path : path-like
        An ONNX file written by :func:`export_onnx`.
    memory_arena : bool
        ONNX Runtime's CPU arena keeps the memory of the largest call for the next; off, each
        call returns its activations to the allocator. A trade: on MNI152's 48 windows of 96³
        the process peaked at 979 MiB instead of 1,555 but took 55.8 s instead of 49.2
        (``benchmarks/results/sliding_window_heap.md``). With the arena off, call
        :func:`~segloc.engine.windows.sliding_window_inference` with
        ``reuse_freed_memory=False``: a heap kept for reuse nearly doubled that peak.
    threads : int, optional
        Intra-op threads (default: ONNX Runtime's, one per core).

    Examples
    --------
    >>> predictor = OnnxPredictor("unet.onnx")  # doctest: +SKIP
    >>> logits = predictor(image[None, None].astype(np.float32))  # doctest: +SKIP
    """

    def __init__(
        self, path: str | os.PathLike, *, memory_arena: bool = True, threads: int | None = None
    ) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such ONNX file")
        if threads is not None and (
            isinstance(threads, bool) or int(threads) != threads or threads < 1
        ):
            raise ValueError(f"threads must be an int >= 1 or None, got {threads!r}")
        options = ort.SessionOptions()
        options.enable_cpu_mem_arena = bool(memory_arena)
        if threads is not None:
            options.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(
                str(self.path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as err:  # onnxruntime raises its own exception types
            raise ValueError(f"{self.path}: not a loadable ONNX model ({err})") from None
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_ndim = len(inp.shape)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Logits for ``image`` of shape ``(N, C, *spatial)``, computed in float32."""
        x = np.ascontiguousarray(image, dtype=np.float32)
        if x.ndim != self.input_ndim:
            raise ValueError(
                f"image must have {self.input_ndim} axes (N, C, *spatial), got shape {x.shape}"
            )
        return self.session.run(None, {self.input_name: x})[0]


def export_checkpoint(
    checkpoint_path: str | os.PathLike,
    onnx_path: str | os.PathLike,
    *,
    example_size: int | Sequence[int] | None = None,
) -> Path:
    """Rebuild the model of a segloc checkpoint and export it to ONNX.

    Parameters
    ----------
    checkpoint_path : path-like
        A checkpoint written by :func:`segloc.nn.checkpoint.save_checkpoint`.
    onnx_path : path-like
        Output ``.onnx`` file.
    example_size : int or sequence of int, optional
        Spatial size of the example input traced by the exporter. Default: the smallest valid size
        for a :class:`~segloc.nn.unet.UNet`, 32 per axis for other models.

    Returns
    -------
    Path
        ``onnx_path``.
    """
    from segloc._validation import check_not_inputs
    from segloc.nn.checkpoint import load_model, resolve_checkpoint

    check_not_inputs([onnx_path], [resolve_checkpoint(checkpoint_path)])
    model = load_model(checkpoint_path)
    conv = next((m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))), None)
    if conv is None:
        raise ValueError(f"{checkpoint_path}: model has no convolution to infer its input from")
    # a slice-wise U-Net has 2D layers and takes volumes: its own dims says which
    dims = getattr(model, "dims", None) or (2 if isinstance(conv, nn.Conv2d) else 3)
    in_channels = conv.in_channels
    if example_size is None:
        size = model.valid_input_size(1) if isinstance(model, UNet) else (32,) * dims
    elif isinstance(example_size, (int, np.integer)):
        size = (int(example_size),) * dims
    else:
        size = tuple(int(s) for s in example_size)
    if len(size) != dims:
        raise ValueError(f"example_size must have {dims} values, got {example_size!r}")
    # the example is only traced: a big one costs memory and proves nothing more
    if int(np.prod(size)) > 2**24 or min(size) < 1:
        shown = "x".join(map(str, size))
        raise ValueError(f"example_size must be positive with at most 2**24 voxels, got {shown}")
    return export_onnx(model, onnx_path, example_shape=(1, in_channels, *size))
