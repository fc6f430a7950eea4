"""The graph ONNX Runtime actually executes: op counts after its graph optimization.

ONNX Runtime fuses QDQ patterns (DequantizeLinear -> Conv -> QuantizeLinear and so on) into
integer kernels only while optimizing a session, so the saved optimized graph is the only
honest answer to "does this model run integer convolutions?".
"""

from __future__ import annotations

import collections
import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Iterator

import onnx

from edgefault.runtime.session import SessionSettings, create_session

# Convolution and linear kernels that multiply integers (int32 accumulation).
INTEGER_KERNELS = frozenset(
    {"QLinearConv", "QGemm", "QLinearMatMul", "ConvInteger", "MatMulInteger", "MatMulIntegerToFloat",
     "DynamicQuantizeMatMul"}
)
# Convolution and linear kernels that multiply floats. MatMulNBits dequantizes int weights
# block-wise but multiplies float activations, so it is a float kernel here.
FLOAT_KERNELS = frozenset(
    {"Conv", "ConvTranspose", "Gemm", "MatMul", "FusedConv", "FusedGemm", "FusedMatMul", "MatMulNBits"}
)


@dataclasses.dataclass(frozen=True)
class KernelCounts:
    """Counts of integer and float conv/linear kernels, and of every op, in an optimized graph.

    ``ops`` maps an op name to its count; ops outside the ONNX and com.microsoft domains are
    prefixed with their domain (e.g. ``com.microsoft.nchwc:Conv``, a float NCHWc convolution).
    """

    integer_kernels: int
    float_kernels: int
    ops: dict[str, int] = dataclasses.field(hash=False)

    @property
    def all_integer(self) -> bool:
        return self.integer_kernels > 0 and self.float_kernels == 0


def iter_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node of a graph, the nodes of its subgraphs (If/Loop/Scan bodies) included.
    """
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            if attribute.HasField("g"):
                yield from iter_nodes(attribute.g)
            for subgraph in attribute.graphs:
                yield from iter_nodes(subgraph)


def op_label(node: onnx.NodeProto) -> str:
    """``op_type``, prefixed with the domain unless it is ONNX's own or com.microsoft.

    Example:
        >>> op_label(onnx.helper.make_node("Conv", ["x", "w"], ["y"], domain="com.microsoft.nchwc"))
        'com.microsoft.nchwc:Conv'
    """
    if node.domain in ("", "ai.onnx", "com.microsoft"):
        return node.op_type
    return f"{node.domain}:{node.op_type}"


def count_kernels(model: onnx.ModelProto) -> KernelCounts:
    """Count integer vs float conv/linear kernels and all ops of a (usually optimized) model.
    """
    ops = collections.Counter(op_label(node) for node in iter_nodes(model.graph))
    integer = sum(count for label, count in ops.items() if label.rsplit(":", 1)[-1] in INTEGER_KERNELS)
    floating = sum(count for label, count in ops.items() if label.rsplit(":", 1)[-1] in FLOAT_KERNELS)
    return KernelCounts(integer, floating, dict(sorted(ops.items())))


def optimized_model(
    data: bytes, settings: SessionSettings = SessionSettings(), source: str = "model"
) -> onnx.ModelProto:
    """The graph ONNX Runtime runs for these model bytes, as saved by its optimizer.
    """
    with tempfile.TemporaryDirectory(prefix="edgefault-opt-") as folder:
        path = Path(folder) / "optimized.onnx"
        create_session(data, settings.options(os.fspath(path)), source)
        # Only the graph is needed; large initializers may have been written beside it.
        return onnx.load_model(os.fspath(path), load_external_data=False)


def optimized_kernel_counts(
    data: bytes, settings: SessionSettings = SessionSettings(), source: str = "model"
) -> KernelCounts:
    """Kernel counts of the graph ONNX Runtime runs for these model bytes.
    """
    return count_kernels(optimized_model(data, settings, source))
