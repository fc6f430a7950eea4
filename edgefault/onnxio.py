"""ONNX I/O below every stage: loading a model safely, walking its tensors, its external data.

A missing, corrupt or non-ONNX file and external data that points outside the model's folder
all become one-line :class:`EdgefaultError`s. Nothing here runs a model (that is
:mod:`edgefault.runtime`); the fault, data and file-safety layers use it directly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import onnx
from google.protobuf.message import DecodeError
from onnx import TensorProto
from onnx.external_data_helper import load_external_data_for_model, uses_external_data

from edgefault.reading import check_input_file
from edgefault.errors import EdgefaultError, error_line


def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Read an ONNX file with its external data, refusing anything unsafe or malformed.

    Example:
        >>> load_model("model.onnx").graph.output[0].name
        'logits'
        >>> load_model("missing.onnx")
        Traceback (most recent call last):
        edgefault.errors.EdgefaultError: missing.onnx: no such file
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
    _check_shape(model, str(path))
    _load_external_data(model, file)
    return model


def parse_model(data: bytes, source: str = "model") -> onnx.ModelProto:
    """Parse serialized model bytes (no external data allowed), with the checks of :func:`load_model`.

    Example:
        >>> parse_model(Path("model.onnx").read_bytes()).graph.input[0].name
        'input'
        >>> parse_model(b"", "blob")
        Traceback (most recent call last):
        edgefault.errors.EdgefaultError: blob: not an ONNX model (no graph, opset or IR version)
    """
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except DecodeError as exc:
        raise EdgefaultError(f"{source}: not an ONNX model ({error_line(exc)})") from None
    _check_shape(model, source)
    if external_tensors(model.graph):
        raise EdgefaultError(f"{source}: model bytes refer to external data; load the model from its file")
    return model


def load_proto(model: onnx.ModelProto | str | os.PathLike) -> onnx.ModelProto:
    """A proto as given, or the model at a path loaded safely (external data inside its folder).

    Example:
        >>> load_proto(onnx.ModelProto()).graph.name
        ''
        >>> load_proto("model.onnx").graph.node[0].op_type
        'QuantizeLinear'
    """
    if isinstance(model, onnx.ModelProto):
        return model
    return load_model(Path(model))


def iter_tensors(graph: onnx.GraphProto) -> Iterator[TensorProto]:
    """Every tensor stored in a graph: initializers and attribute tensors, subgraphs included.

    Example:
        >>> sum(1 for _ in iter_tensors(load_model("model.onnx").graph)) > 0
        True
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


def external_tensors(graph: onnx.GraphProto) -> list[tuple[TensorProto, str]]:
    """The tensors of a graph whose data lies in external files, each with its (relative) location.

    Example:
        >>> external_tensors(load_model("model.onnx").graph)
        []
    """
    return [(tensor, _location(tensor)) for tensor in iter_tensors(graph) if uses_external_data(tensor)]


def _location(tensor: TensorProto) -> str:
    # Read by key rather than through ExternalDataInfo, which raises on a bad offset before
    # the safety checks below could name the tensor.
    return next((entry.value for entry in tensor.external_data if entry.key == "location"), "")


def external_data_files(path: str | os.PathLike) -> list[Path]:
    """The external data files an ONNX file refers to (resolved; nothing is read), [] if it is not ONNX.

    Example:
        >>> external_data_files("model.onnx")
        []
    """
    model = Path(path)
    try:
        proto = onnx.load(str(model), load_external_data=False)
    except Exception:  # not ONNX: the command that reads it reports that itself
        return []
    locations = {location for _, location in external_tensors(proto.graph) if location}
    return [(model.parent / location).resolve() for location in sorted(locations)]


def _check_shape(model: onnx.ModelProto, source: str) -> None:
    if model.ir_version < 1 or not model.opset_import or not model.graph.node:
        raise EdgefaultError(f"{source}: not an ONNX model (no graph, opset or IR version)")


def _load_external_data(model: onnx.ModelProto, file: Path) -> None:
    folder = file.resolve().parent
    external = external_tensors(model.graph)
    for tensor, location in external:
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
