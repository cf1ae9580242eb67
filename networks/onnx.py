"""ONNX export of a network (or a whole ensemble with its test-time augmentation) with dynamic batch and spatial axes.

``torch.onnx.export`` fixes every axis to the example's size unless told otherwise; the bundles' cases differ in
size (retinal slice batches end with a short one, angioma and carotid images are resized to a size the config
chooses), so the batch axis and every spatial axis of the input and of the output are named dynamic. The
TorchScript-based exporter (``dynamo=False``) is used: it needs neither ``onnxscript`` nor ``torch.export`` to
handle the networks' Python control flow, and every network and ensemble of the bundles traces with it.
"""

from __future__ import annotations

from pathlib import Path

import importlib

import torch
from torch import nn

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "dynamic_axes", "export_onnx"]

INPUT_NAME = "image"
OUTPUT_NAME = "output"
#: the ONNX operator set: 17 is read by every ONNX Runtime and OpenVINO release of the last years.
OPSET = 17


def dynamic_axes(input_ndim: int, output_ndim: int) -> dict[str, dict[int, str]]:
    """Dynamic axes of a network taking ``(B, C, *spatial)`` and returning ``(B, C', *spatial')``: every axis but
    the channel one, for input and output."""
    return {
        INPUT_NAME: {0: "batch", **{a: f"in_{a - 2}" for a in range(2, input_ndim)}},
        OUTPUT_NAME: {0: "batch", **{a: f"out_{a - 2}" for a in range(2, output_ndim)}},
    }


def export_onnx(model: nn.Module, example: torch.Tensor, path: str | Path, opset: int = OPSET) -> Path:
    """Write ``model`` (in eval mode, fp32, on the CPU) as ONNX to ``path``; return the path.

    ``example`` is any input of the right rank and channels (a plain tensor); the graph is traced with it and
    accepts any batch and spatial size afterwards (within what the network itself accepts, e.g. multiples of
    its total stride). The model must return one tensor.

    Raises:
        ImportError: the package ``onnx`` (which ``torch.onnx.export`` writes with) is missing.
        TypeError: the model does not return one tensor.
    """
    try:
        importlib.import_module("onnx")
    except ImportError as error:
        raise ImportError("ONNX export needs the package 'onnx', which is not installed: pip install onnx") from error
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    example = torch.as_tensor(example).float().cpu()
    with torch.no_grad():
        output = model(example)
    if not isinstance(output, torch.Tensor):
        raise TypeError(f"ONNX export needs a network returning one tensor, got {type(output).__name__}")
    torch.onnx.export(
        model,
        (example,),
        str(path),
        dynamo=False,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_axes=dynamic_axes(example.ndim, output.ndim),
        opset_version=opset,
    )
    return path
