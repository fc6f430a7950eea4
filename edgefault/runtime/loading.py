"""Loading an ONNX file safely and finding its data input and classifier output.

A missing, corrupt or non-ONNX file, external data that points outside the model's folder,
and a model without a ``[N, classes]`` output all become one-line :class:`EdgefaultError`s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from pathlib import Path
from typing import Iterator

import onnx
from google.protobuf.message import DecodeError
from onnx import TensorProto
from onnx.external_data_helper import load_external_data_for_model

from edgefault.errors import EdgefaultError
from edgefault.reading import check_input_file

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

    Example:
        >>> io = model_io(onnx.load("model.onnx"))  # doctest: +SKIP
        >>> io.input_name, io.num_classes, io.input_type  # doctest: +SKIP
        ('input', 10, 'float32')
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


def unsupported_input(name: str, what: str) -> EdgefaultError:
    """The one message for an input type edgefault cannot feed, shared by every command.

    Example:
        >>> str(unsupported_input("x", "string"))
        "model input 'x' is of type string; edgefault feeds float, uint8 or int8 tensors"
    """
    return EdgefaultError(f"model input {name!r} is of type {what}; edgefault feeds float, uint8 or int8 tensors")


def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Read an ONNX file with its external data, refusing anything unsafe or malformed.

    Example:
        >>> model = load_model("model.onnx")  # doctest: +SKIP
    """
    file = check_input_file(path)  # missing, a folder, a device or a FIFO: one line
    try:
        model = onnx.load_model(str(file), load_external_data=False)
    except (DecodeError, RuntimeWarning, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise EdgefaultError(f"{path}: not an ONNX model ({error_line(exc)})") from None
    except OSError as exc:
        raise EdgefaultError(f"{path}: cannot read ({exc.strerror or exc})") from None
    # Protobuf parses many byte strings (an empty file, some text) into a near-empty message,
    # so a parse that succeeds still has to look like a model.
    if model.ir_version < 1 or not model.opset_import or not model.graph.node:
        raise EdgefaultError(f"{path}: not an ONNX model (no graph, opset or IR version)")
    _load_external_data(model, file)
    return model


def parse_model(data: bytes, source: str = "model") -> onnx.ModelProto:
    """Parse serialized model bytes (no external data allowed), with the checks of :func:`load_model`.

    Example:
        >>> model = parse_model(Path("model.onnx").read_bytes())  # doctest: +SKIP
    """
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except DecodeError as exc:
        raise EdgefaultError(f"{source}: not an ONNX model ({error_line(exc)})") from None
    if model.ir_version < 1 or not model.opset_import or not model.graph.node:
        raise EdgefaultError(f"{source}: not an ONNX model (no graph, opset or IR version)")
    if any(_is_external(tensor) for tensor in iter_tensors(model.graph)):
        raise EdgefaultError(f"{source}: model bytes refer to external data; load the model from its file")
    return model


def iter_tensors(graph: onnx.GraphProto) -> Iterator[TensorProto]:
    """Every tensor stored in a graph: initializers and attribute tensors, subgraphs included.

    Example:
        >>> sum(1 for _ in iter_tensors(model.graph))  # doctest: +SKIP
        6
    """
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("g"):
                yield from iter_tensors(attribute.g)
            for subgraph in attribute.graphs:
                yield from iter_tensors(subgraph)


def _is_external(tensor: TensorProto) -> bool:
    return tensor.HasField("data_location") and tensor.data_location == TensorProto.EXTERNAL


def _load_external_data(model: onnx.ModelProto, file: Path) -> None:
    folder = file.resolve().parent
    external = [tensor for tensor in iter_tensors(model.graph) if _is_external(tensor)]
    for tensor in external:
        location = next((entry.value for entry in tensor.external_data if entry.key == "location"), "")
        target = (folder / location).resolve()
        # A crafted model could otherwise read any file on the machine into its weights.
        if not location or Path(location).is_absolute() or not target.is_relative_to(folder):
            raise EdgefaultError(f"{file}: external data {location!r} of {tensor.name!r} leaves the model's folder")
        if not target.is_file():
            raise EdgefaultError(f"{file}: external data file {location!r} of {tensor.name!r} is missing")
    if external:
        try:
            load_external_data_for_model(model, str(folder))
        except (OSError, ValueError) as exc:
            raise EdgefaultError(f"{file}: cannot read external data ({error_line(exc)})") from None


def model_io(model: onnx.ModelProto, input_name: str | None = None) -> ModelIO:
    """Find the one data input (float, uint8 or int8; rank 2, 3 or 4) and the ``[N, classes]`` float output.

    Example:
        >>> model_io(load_model("model.onnx")).output_name  # doctest: +SKIP
        'logits'
    """
    from edgefault.runtime.layout import graph_layout

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


def error_line(exc: BaseException) -> str:
    """The first line of an exception's message, for one-line user errors.

    Example:
        >>> error_line(ValueError("bad\\nmore"))
        'bad'
    """
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextlib.contextmanager
def about_model(path: str | os.PathLike) -> Iterator[None]:
    """Prefix the user errors raised inside with the model's path (once), as every command reports them.

    Example:
        >>> with about_model("m.onnx"):  # doctest: +SKIP
        ...     raise EdgefaultError("model input 'x' has rank 5")
        Traceback (most recent call last):
        edgefault.errors.EdgefaultError: m.onnx: model input 'x' has rank 5
    """
    try:
        yield
    except EdgefaultError as exc:
        message = str(exc)
        raise EdgefaultError(message if message.startswith(str(path)) else f"{path}: {message}") from None
