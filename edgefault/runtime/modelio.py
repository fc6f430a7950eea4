"""Finding a model's data input and classifier output (loading is :mod:`edgefault.onnxio`).

A model without one feedable input or a ``[N, classes]`` output is a one-line :class:`EdgefaultError`.
"""

from __future__ import annotations

import dataclasses

import onnx
from onnx import TensorProto

from edgefault.errors import EdgefaultError, unsupported_input
from edgefault.runtime.layout import graph_layout

FLOAT_TYPES = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16)


# ONNX element types a model input may have, as the numpy dtype edgefault feeds.
INPUT_TYPES = {
    TensorProto.FLOAT: "float32", TensorProto.FLOAT16: "float16", TensorProto.DOUBLE: "float64",
    TensorProto.UINT8: "uint8", TensorProto.INT8: "int8",
}
INPUT_RANKS = (2, 3, 4)


@dataclasses.dataclass(frozen=True)
class ModelIO:
    """The data input and the classifier output of a model, as declared in its graph.

    ``input_dims`` and ``output_dims`` hold ints for static sizes and None otherwise;
    ``fixed_batch`` is the static batch size when the graph pins one (often 1).
    ``input_type`` is the numpy dtype the input takes; ``layout_hint`` is ``NCHW`` or
    ``NHWC`` when the graph shows it (see :func:`edgefault.runtime.layout.graph_layout`).
    """

    input_name: str
    input_dims: tuple[int | None, ...] | None
    output_name: str
    output_dims: tuple[int | None, ...] | None
    input_type: str = "float32"
    layout_hint: str | None = None

    @property
    def fixed_batch(self) -> int | None:
        return self.input_dims[0] if self.input_dims else None

    @property
    def num_classes(self) -> int | None:
        return self.output_dims[1] if self.output_dims and len(self.output_dims) == 2 else None


def model_io(model: onnx.ModelProto, input_name: str | None = None) -> ModelIO:
    """Find the one data input (float, uint8 or int8; rank 2, 3 or 4) and the ``[N, classes]`` float output.

    Example:
        >>> io = model_io(onnx.load("model.onnx"))
        >>> io.input_name, io.input_dims, io.output_name, io.num_classes, io.layout_hint
        ('input', (None, 1, 4, 4), 'logits', 3, 'NCHW')
    """
    graph = model.graph
    stored = {tensor.name for tensor in graph.initializer}
    inputs = [value for value in graph.input if value.name not in stored]
    if input_name is not None:
        inputs = [value for value in inputs if value.name == input_name]
        if not inputs:
            raise EdgefaultError(f"model has no input named {input_name!r}")
    if len(inputs) != 1:
        names = ", ".join(value.name for value in inputs) or "none"
        raise EdgefaultError(f"model needs exactly one data input, it has {len(inputs)} ({names})")
    data = inputs[0]
    elem_type = data.type.tensor_type.elem_type
    if elem_type not in INPUT_TYPES:
        raise unsupported_input(data.name, TensorProto.DataType.Name(elem_type).lower() if elem_type else "non-tensor")
    input_dims = _dims(data)
    if input_dims is not None and len(input_dims) not in INPUT_RANKS:
        raise EdgefaultError(
            f"model input {data.name!r} has rank {len(input_dims)} ({format_dims(input_dims)}); edgefault feeds "
            "[N, F] feature vectors, [N, T, F] sequences, or [N, C, H, W] / [N, H, W, C] images"
        )
    if not graph.output:
        raise EdgefaultError("model has no outputs")
    output = graph.output[0]
    output_dims = _dims(output)
    if output.type.tensor_type.elem_type not in FLOAT_TYPES or (
        output_dims is not None and (len(output_dims) != 2 or output_dims[1] == 1)
    ):
        shape = "?" if output_dims is None else "[" + ", ".join("?" if d is None else str(d) for d in output_dims) + "]"
        raise EdgefaultError(
            f"model output {output.name!r} ({shape}) is not a classifier output: eval needs float [N, classes] scores"
        )
    hint = graph_layout(graph, data.name) if input_dims is None or len(input_dims) == 4 else None
    return ModelIO(data.name, input_dims, output.name, output_dims, INPUT_TYPES[elem_type], hint)


def format_dims(dims: tuple[int | None, ...]) -> str:
    """Dims as ``N x 16 x 16 x 3``, with ``?`` for a size the graph leaves open.

    Example:
        >>> format_dims((None, 16, 16, 3))
        '? x 16 x 16 x 3'
    """
    return " x ".join("?" if d is None else str(d) for d in dims)


def _dims(value: onnx.ValueInfoProto) -> tuple[int | None, ...] | None:
    tensor_type = value.type.tensor_type
    if not tensor_type.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tensor_type.shape.dim)
