"""The exporter's self-checks: top-1 parity with PyTorch, and the step size of the exported logits."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from edgefault.export.graph import OUTPUT_NAME
from edgefault.runtime import Evaluator, SessionSettings
from edgefault.runtime.session import DEFAULT_BATCH, progress_bar


@dataclasses.dataclass(frozen=True)
class Parity:
    """How closely the ONNX Runtime model follows the PyTorch model on the same images.

    ``max_logit_gap_steps`` is the largest |logit difference| in units of the output quantizer's
    step (None when the logits are not quantized); 0 or 1 step is float rounding at a tie.

    Example:
        >>> Parity(images=1000, agreement=0.999, max_logit_gap=0.12, max_logit_gap_steps=1.0,
        ...        onnx_accuracy=0.981, torch_accuracy=0.982).agreement
        0.999
    """

    images: int
    agreement: float
    max_logit_gap: float
    max_logit_gap_steps: float | None
    onnx_accuracy: float
    torch_accuracy: float


def output_step(model: onnx.ModelProto) -> float | None:
    """The scale of the DequantizeLinear that produces the logits, or None if they are not quantized.
    """
    producers = {out: node for node in model.graph.node for out in node.output}
    node = producers.get(OUTPUT_NAME)
    if node is None or node.op_type != "DequantizeLinear":
        return None
    scales = {t.name: t for t in model.graph.initializer}
    if node.input[1] not in scales:
        return None
    scale = numpy_helper.to_array(scales[node.input[1]])
    return float(scale) if scale.size == 1 else None


@torch.no_grad()
def torch_logits(model: nn.Module, images: np.ndarray, batch_size: int, progress: str | None = None) -> np.ndarray:
    """Eval-mode PyTorch logits of normalized NCHW images, in batches.
    """
    chunks = []
    with progress_bar(len(images), progress) as bar:
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size]))
            chunks.append(model(batch).float().numpy())
            bar.update(len(batch))
    return np.concatenate(chunks)


def check_parity(model: nn.Module, onnx_model: onnx.ModelProto, images: np.ndarray, labels: np.ndarray,
                 batch_size: int = DEFAULT_BATCH, progress: bool = False) -> Parity:
    """Run the PyTorch model and the ONNX model (ONNX Runtime, CPU) on the same normalized images.
    """
    evaluator = Evaluator(onnx_model.SerializeToString(), SessionSettings())
    onnx_out = evaluator.logits(images, batch_size, "parity: onnx" if progress else None)
    torch_out = torch_logits(model, images, batch_size, "parity: pytorch" if progress else None)
    if onnx_out.shape != torch_out.shape:
        raise ValueError(f"ONNX logits {onnx_out.shape} and PyTorch logits {torch_out.shape} differ in shape")
    gap = float(np.max(np.abs(onnx_out.astype(np.float64) - torch_out))) if len(images) else 0.0
    step = output_step(onnx_model)
    onnx_top, torch_top = onnx_out.argmax(1), torch_out.argmax(1)
    count = max(len(images), 1)
    return Parity(
        images=len(images),
        agreement=float(np.sum(onnx_top == torch_top)) / count,
        max_logit_gap=gap,
        # Both sides hold whole steps of the same grid; rounding drops float noise from the division.
        max_logit_gap_steps=None if step is None else round(gap / step, 3),
        onnx_accuracy=float(np.sum(onnx_top == labels)) / count,
        torch_accuracy=float(np.sum(torch_top == labels)) / count,
    )


def activation_products(exported: onnx.ModelProto, optimized: onnx.ModelProto) -> dict[str, str]:
    """The MatMuls of two activations (attention's q @ k^T and weights @ v) and the kernel ORT runs each as.

    A product is an activation product when no input is a DequantizeLinear of an initializer
    (a weight). ONNX Runtime keeps the node's name when it fuses it, so the optimized graph says
    which kernel it became: QLinearMatMul or MatMulIntegerToFloat (integer), MatMul (float).
    """
    constants = {t.name for t in exported.graph.initializer}
    producers = {out: node for node in exported.graph.node for out in node.output}

    def is_weight(name: str) -> bool:
        node = producers.get(name)
        return name in constants or (node is not None and node.op_type == "DequantizeLinear"
                                     and node.input[0] in constants)

    kinds = {node.name: node.op_type for node in optimized.graph.node}
    return {node.name: kinds.get(node.name, "fused away")
            for node in exported.graph.node
            if node.op_type == "MatMul" and not any(is_weight(name) for name in node.input)}
