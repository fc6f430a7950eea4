"""The activation memory of a model with ONNX Runtime's help: per-image shapes from a probe run, and the stored codes.

ONNX's shape inference does not know ONNX Runtime's contrib ops (QLinearAdd, QGemm, ...), so
a QOperator model's activation shapes may stay open; :func:`activation_memory` then runs the
model once on a zero image with those tensors exposed as outputs and reads their shapes.
:func:`read_activations` gives the integer codes a model stores in its activation buffers for
real images, one row per image, as the formats' encoders take them.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import helper

from edgefault.errors import EdgefaultError
from edgefault.faults.actdiscover import FoldedBatch, ShapesUnknown
from edgefault.faults.activations import ActivationMemory
from edgefault.faults.formats import DEFAULT_RUN_BITS
from edgefault.onnxio import load_proto
from edgefault.runtime.session import ORT_ERRORS, SessionSettings, create_session
from edgefault.errors import error_line
from edgefault.runtime.sparsity import probe_model


def activation_memory(model: onnx.ModelProto | str | os.PathLike, format: str = "dense",
                      run_bits: int = DEFAULT_RUN_BITS) -> ActivationMemory:
    """The activation memory of a model, shapes that inference leaves open filled in by a probe run.

    Example:
        >>> activation_memory("model.onnx").coverage_line()
        'activation memory: 1 tensor, 16 values, 128 stored bits per image (int8: 1 tensor)'
    """
    proto = load_proto(model)
    try:
        return ActivationMemory.from_model(proto, format, run_bits)
    except ShapesUnknown as unknown:
        return ActivationMemory.from_model(proto, format, run_bits, probe_shapes(proto, unknown.names))


def probe_shapes(model: onnx.ModelProto, names: list[str]) -> dict[str, tuple[tuple[int, ...], int]]:
    """(one image's shape, ONNX element type) of each named tensor, from one run on zero inputs.

    Inputs with a symbolic leading dimension get a batch of 1; any other symbolic dimension
    cannot be probed and is refused.

    Example:
        >>> probe_shapes(onnx.load("model.onnx"), ["input_q"])  # an int8 tensor (ONNX element type 3)
        {'input_q': ((1, 4, 4), 3)}
    """
    feed = {}
    constants = {t.name for t in model.graph.initializer}
    for graph_input in model.graph.input:
        if graph_input.name in constants:
            continue
        tensor_type = graph_input.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
        if any(d is None for d in dims[1:]):
            raise EdgefaultError(f"cannot probe activation shapes: input {graph_input.name!r} has open dimensions "
                                 f"{dims[1:]} beyond the batch")
        dtype = helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
        feed[graph_input.name] = np.zeros([dims[0] or 1, *dims[1:]] if dims else [], dtype=dtype)
    values = read_activations(model, names, feed)
    images = len(next(iter(feed.values())))
    for name in names:
        if values[name].ndim == 0 or values[name].shape[0] != images:
            raise FoldedBatch(name, values[name].shape[0] if values[name].ndim else 0, images)
    return {name: (tuple(values[name].shape[1:]), helper.np_dtype_to_tensor_dtype(values[name].dtype))
            for name in names}


def read_activations(model: onnx.ModelProto, names: list[str], feed: dict[str, np.ndarray],
                     settings: SessionSettings = SessionSettings()) -> dict[str, np.ndarray]:
    """The named tensors of ``model`` for the inputs in ``feed``, each of shape [batch, ...].

    Example:
        >>> images = np.ones((5, 1, 4, 4), np.float32)
        >>> read_activations(onnx.load("model.onnx"), ["relu_out"], {"input": images})["relu_out"].shape
        (5, 2, 2, 2)
    """
    probe = probe_model(model, [onnx.ValueInfoProto(name=name) for name in names])
    session = create_session(probe.SerializeToString(), settings.options(), "activation probe")
    try:
        values = session.run(list(names), feed)
    except ORT_ERRORS as exc:
        raise EdgefaultError(f"activation probe: ONNX Runtime cannot run the model ({error_line(exc)})") from None
    return dict(zip(names, values))
