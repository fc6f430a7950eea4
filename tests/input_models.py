"""Small float models for every input form edgefault feeds, and ONNX Runtime's quantizations of them.

Each builder returns a float ``onnx.ModelProto`` whose only input is ``x``; ``quantize``
writes ONNX Runtime's static (QDQ or QOperator) or dynamic quantization of it. The forms:
an NHWC image CNN (a Transpose to NCHW before its Conv, as converters write), a feature-vector
MLP ``[N, F]``, a one-head self-attention block over ``[N, T, F]``, a sensor MLP over
``[N, 8, 32, 1]`` (a layout no shape can tell), and a QOperator CNN whose graph input is uint8.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static

from onnx_builders import classifier

CLASSES = 4


def _model(nodes, inputs_shape, initializers, input_type=TensorProto.FLOAT) -> onnx.ModelProto:
    return classifier(nodes, initializers, inputs_shape, CLASSES, name="form", input_name="x", input_type=input_type)


def _weights(rng, **shapes):
    return [numpy_helper.from_array((rng.standard_normal(shape) / np.sqrt(np.prod(shape[:-1]))).astype(np.float32),
                                    name) for name, shape in shapes.items()]


def nhwc_cnn(seed: int = 0) -> onnx.ModelProto:
    """[N, 16, 16, 3] -> Transpose -> Conv(8, 3x3, stride 4) -> Relu -> Flatten -> MatMul."""
    rng = np.random.default_rng(seed)
    initializers = [
        numpy_helper.from_array((rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32), "conv.w"),
        numpy_helper.from_array((rng.standard_normal(8) * 0.1).astype(np.float32), "conv.b"),
        *_weights(rng, **{"fc.w": (8 * 4 * 4, CLASSES)}),
    ]
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["t", "conv.w", "conv.b"], ["c"], pads=[1, 1, 1, 1], strides=[4, 4]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"]),
        helper.make_node("MatMul", ["f", "fc.w"], ["logits"]),
    ]
    return _model(nodes, (16, 16, 3), initializers)


def mlp(input_shape=(20,), seed: int = 1) -> onnx.ModelProto:
    """Flatten -> MatMul(32) -> Relu -> MatMul(classes): feature vectors, or any shape flattened (sensor windows)."""
    rng = np.random.default_rng(seed)
    features = int(np.prod(input_shape))
    initializers = _weights(rng, **{"fc1.w": (features, 32), "fc2.w": (32, CLASSES)})
    nodes = [
        helper.make_node("Flatten", ["x"], ["f"]),
        helper.make_node("MatMul", ["f", "fc1.w"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("MatMul", ["r", "fc2.w"], ["logits"]),
    ]
    return _model(nodes, input_shape, initializers)


def attention(steps: int = 10, features: int = 16, seed: int = 2) -> onnx.ModelProto:
    """[N, T, F]: one self-attention head (softmax(Q K^T / sqrt(F)) V), mean over T, linear classifier."""
    rng = np.random.default_rng(seed)
    initializers = [
        *_weights(rng, **{"q.w": (features, features), "k.w": (features, features), "v.w": (features, features),
                          "fc.w": (features, CLASSES)}),
        numpy_helper.from_array(np.float32(1 / np.sqrt(features)), "scale"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "q.w"], ["q"]),
        helper.make_node("MatMul", ["x", "k.w"], ["k"]),
        helper.make_node("MatMul", ["x", "v.w"], ["v"]),
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["s"]),
        helper.make_node("Mul", ["s", "scale"], ["ss"]),
        helper.make_node("Softmax", ["ss"], ["a"], axis=-1),
        helper.make_node("MatMul", ["a", "v"], ["o"]),
        helper.make_node("ReduceMean", ["o"], ["m"], axes=[1], keepdims=0),
        helper.make_node("MatMul", ["m", "fc.w"], ["logits"]),
    ]
    return _model(nodes, (steps, features), initializers)


class _Calibration(CalibrationDataReader):
    def __init__(self, shape, seed: int):
        rng = np.random.default_rng(seed)
        self._batches = iter([{"x": rng.standard_normal((8, *shape)).astype(np.float32)} for _ in range(3)])

    def get_next(self):
        return next(self._batches, None)


def quantize(model: onnx.ModelProto, folder: Path, name: str, style: str = "qdq") -> Path:
    """Write ``model`` and ONNX Runtime's quantization of it (``qdq``, ``qoperator`` or ``dynamic``); return its path."""
    folder = Path(folder)
    float_path, quant_path = folder / f"{name}_float.onnx", folder / f"{name}.onnx"
    onnx.save(model, float_path)
    if style == "dynamic":
        quantize_dynamic(str(float_path), str(quant_path), weight_type=QuantType.QInt8)
        return quant_path
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:]]
    quant_format = QuantFormat.QDQ if style == "qdq" else QuantFormat.QOperator
    quantize_static(str(float_path), str(quant_path), _Calibration(shape, 0), quant_format=quant_format,
                    per_channel=False, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return quant_path


def uint8_input_cnn(folder: Path) -> Path:
    """ONNX Runtime's QOperator CNN for 1x12x12 images with its input QuantizeLinear removed: the graph takes uint8."""
    rng = np.random.default_rng(3)
    initializers = [
        numpy_helper.from_array((rng.standard_normal((8, 1, 3, 3)) * 0.5).astype(np.float32), "conv.w"),
        numpy_helper.from_array(np.zeros(8, np.float32), "conv.b"),
        numpy_helper.from_array((rng.standard_normal((CLASSES, 8 * 6 * 6)) * 0.1).astype(np.float32), "fc.w"),
        numpy_helper.from_array(np.zeros(CLASSES, np.float32), "fc.b"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "conv.w", "conv.b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["logits"], transB=1),
    ]
    path = quantize(_model(nodes, (1, 12, 12), initializers), folder, "uint8_input", "qoperator")
    model = onnx.load(path)
    graph = model.graph
    quantizer = next(n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "x")
    graph.node.remove(quantizer)
    for node in graph.node:  # its consumers now read the uint8 graph input directly
        node.input[:] = ["x" if name == quantizer.output[0] else name for name in node.input]
    graph.input[0].type.tensor_type.elem_type = TensorProto.UINT8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path
