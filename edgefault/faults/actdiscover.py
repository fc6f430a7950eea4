"""Finding the activation memory in a graph: which integer tensors, their quantization, and one image's shape.

The rules are in :mod:`edgefault.faults.activations`; :func:`find_activations` returns the
tensors as specs for :meth:`~edgefault.faults.activations.ActivationMemory.from_tensors`.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from edgefault.errors import EdgefaultError
from edgefault.faults.discover import constant_derived, constant_tensors

# Stored activation types and their widths.
ACT_TYPES = {"int8": 8, "uint8": 8, "int16": 16, "uint16": 16}
_TYPE_NAMES = {getattr(TensorProto, name.upper()): name for name in ACT_TYPES}
# QDQ: ops that ONNX Runtime runs as integer kernels when their inputs come from DequantizeLinear.
COMPUTE_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Mul"})
SHAPE_ONLY = frozenset({"Flatten", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Transpose"})
# QOperator: op -> (data input, scale input or None, zero-point input) of each activation input.
QOPERATOR_INPUTS: dict[str, tuple[tuple[int, int | None, int], ...]] = {
    "QLinearConv": ((0, 1, 2),),
    "QLinearMatMul": ((0, 1, 2), (3, 4, 5)),
    "QGemm": ((0, 1, 2), (3, 4, 5)),
    "QLinearAdd": ((0, 1, 2), (3, 4, 5)),
    "QLinearMul": ((0, 1, 2), (3, 4, 5)),
    "ConvInteger": ((0, None, 2),),
    "MatMulInteger": ((0, None, 2), (1, None, 3)),
    "MatMulIntegerToFloat": ((0, 2, 4), (1, 3, 5)),
}
OUTPUT_CONSUMER = "output"  # the consumer named for the quantized model output


def find_activations(model: onnx.ModelProto, shapes: Mapping[str, tuple[tuple[int, ...], int]] | None = None
                     ) -> list[tuple[str, str, tuple[int, ...], int, float | None, str]]:
    """The activation tensors of a model in canonical order, as specs for :meth:`ActivationMemory.from_tensors`.

    Example:
        >>> find_activations(onnx.load("model.onnx"))
        [('input_q', 'int8', (1, 4, 4), 0, 0.015625, 'Conv')]
    """
    graph = model.graph
    constants = constant_tensors(graph)
    fixed = set(constants) | set(constant_derived(graph, constants))
    consumers: dict[str, list[onnx.NodeProto]] = {}
    producer: dict[str, int] = {}
    for number, node in enumerate(graph.node):
        for name in node.input:
            consumers.setdefault(name, []).append(node)
        for name in node.output:
            producer[name] = number
    found: dict[str, tuple[str | None, str | None, str]] = {}  # name -> (scale, zero point, consumer)
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] not in fixed:
            reader = _compute_reader(node.output[0], consumers)
            if reader is not None:
                found.setdefault(node.input[0], (_input(node, 1), _input(node, 2), reader))
        for data, scale, zero in QOPERATOR_INPUTS.get(node.op_type, ()) if node.domain in ("", "com.microsoft") else ():
            name = _input(node, data)
            if name is not None and name not in fixed:
                found.setdefault(name, (_input(node, scale) if scale is not None else None, _input(node, zero),
                                        node.op_type))
    inputs = [i.name for i in graph.input]
    for output in graph.output:
        source = output.name
        node = graph.node[producer[source]] if source in producer else None
        if node is not None and node.op_type == "DequantizeLinear" and node.input[0] not in fixed:
            found.setdefault(node.input[0], (_input(node, 1), _input(node, 2), OUTPUT_CONSUMER))
        elif output.type.tensor_type.elem_type in _TYPE_NAMES and source not in fixed:
            found.setdefault(source, (None, None, OUTPUT_CONSUMER))
    if not found:
        raise EdgefaultError("model has no integer activations: no run-time integer tensor feeds DequantizeLinear "
                             "or a QOperator kernel (QLinearConv, QGemm, ...); a float model has no activation "
                             "memory to fault")
    order = {name: (-1, inputs.index(name)) if name in inputs else (producer.get(name, len(graph.node)), 0)
             for name in found}
    types = _inferred_types(model, found, shapes or {})
    specs = []
    for name in sorted(found, key=lambda n: order[n]):
        scale, zero, consumer = found[name]
        dtype, shape = types[name]
        specs.append((name, dtype, shape, _zero_point(constants, zero, name), _scale(constants, scale, name), consumer))
    return specs


def _input(node: onnx.NodeProto, position: int) -> str | None:
    return node.input[position] if position < len(node.input) and node.input[position] else None


def _compute_reader(name: str, consumers: dict[str, list[onnx.NodeProto]]) -> str | None:
    """The op type of the first compute op reading ``name``, directly or through shape-only ops."""
    frontier, seen = [name], set()
    while frontier:
        current = frontier.pop(0)
        for node in consumers.get(current, []):
            if node.op_type in COMPUTE_OPS:
                return node.op_type
            if node.op_type in SHAPE_ONLY and node.output[0] not in seen:
                seen.add(node.output[0])
                frontier.append(node.output[0])
    return None


def _constant_value(constants, name: str | None, what: str, tensor: str) -> np.ndarray | None:
    if name is None:
        return None
    if name not in constants:
        raise EdgefaultError(f"activation {tensor!r}: its {what} {name!r} is computed at run time; only constant "
                             f"per-tensor quantization is supported")
    value = numpy_helper.to_array(constants[name][0])
    if value.size != 1:
        raise EdgefaultError(f"activation {tensor!r}: per-channel {what} ({value.size} values); the activation "
                             f"memory needs one {what} per tensor")
    return value.reshape(())


def _zero_point(constants, name: str | None, tensor: str) -> int:
    value = _constant_value(constants, name, "zero point", tensor)
    return 0 if value is None else int(value)


def _scale(constants, name: str | None, tensor: str) -> float | None:
    value = _constant_value(constants, name, "scale", tensor)
    return None if value is None else float(value)


class FoldedBatch(EdgefaultError):
    """An activation holds several rows per image on its first axis (the batch folded into it); ``name`` names it."""

    def __init__(self, name: str, rows: int, images: int):
        self.name = name
        super().__init__(f"activation {name!r} holds {rows} rows for {images} image(s) on its first axis (the batch "
                         "folded into it, as a transformer's token Reshape does); the activation memory needs one "
                         "image per row of the first axis, so this model's activation buffers cannot be faulted")


class ShapesUnknown(EdgefaultError):
    """Shape inference left some activations' shapes open; ``names`` lists them (a probe run can fill them in)."""

    def __init__(self, names: list[str]):
        self.names = list(names)
        shown = ", ".join(repr(n) for n in self.names[:3]) + (", ..." if len(self.names) > 3 else "")
        super().__init__(f"cannot infer the per-image shape of activation {shown}; give it from a probe run")


def _inferred_types(model: onnx.ModelProto, names, shapes: Mapping[str, tuple[tuple[int, ...], int]]
                    ) -> dict[str, tuple[str, tuple[int, ...]]]:
    """(stored type, one image's shape) of each tensor: from ``shapes`` where given, else ONNX shape inference."""
    try:
        known = _value_types(onnx.shape_inference.infer_shapes(model, strict_mode=False))
    except (onnx.shape_inference.InferenceError, ValueError):
        known = _value_types(model)
    batch = _batch_dimension(model, known)
    known.update({name: (elem, [batch, *shape]) for name, (shape, elem) in shapes.items()})
    result, unknown = {}, []
    for name in names:
        elem, dims = known.get(name, (0, None))
        if elem and elem not in _TYPE_NAMES:
            raise EdgefaultError(f"activation {name!r} has type {TensorProto.DataType.Name(elem)}; stored "
                                 f"activations are {', '.join(ACT_TYPES)}")
        # A leading dimension other than the input's batch (a Reshape to [-1, C] folds a transformer's tokens into
        # it) leaves one image's share unknown: the probe run measures it, and refuses a folded batch.
        if (not elem or not dims or any(not isinstance(d, int) for d in dims[1:])
                or (batch is not None and dims[0] != batch)):
            unknown.append(name)
        else:
            result[name] = (_TYPE_NAMES[elem], tuple(int(d) for d in dims[1:]))  # the leading dimension is the batch
    if unknown:
        raise ShapesUnknown(unknown)
    return result


def _batch_dimension(model: onnx.ModelProto, known) -> int | str | None:
    """The leading dimension of the model's data input (a name such as ``'N'``, or a fixed size); None if unknown."""
    constants = {t.name for t in model.graph.initializer}
    for graph_input in model.graph.input:
        if graph_input.name not in constants:
            dims = known.get(graph_input.name, (0, None))[1]
            return dims[0] if dims else None
    return None


def _value_types(model: onnx.ModelProto) -> dict[str, tuple[int, list[int | str | None] | None]]:
    graph = model.graph
    types = {}
    for info in [*graph.input, *graph.value_info, *graph.output]:
        tensor_type = info.type.tensor_type
        dims = None
        if tensor_type.HasField("shape"):
            dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor_type.shape.dim]
        types[info.name] = (tensor_type.elem_type, dims)
    for tensor in graph.initializer:
        types.setdefault(tensor.name, (tensor.data_type, list(tensor.dims)))
    return types
