"""Small ONNX models built by hand, and quantized by ONNX Runtime's own quantizer.

Shared by the tests that must show edgefault works on models it did not write: a float
LeNet-like CNN for 1x28x28 inputs, then ``quantize_static`` in QDQ (per-channel int8
weights, or per-tensor s8s8) and in QOperator format.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static


def classifier(nodes, initializers, input_shape, classes: int, *, name: str = "tiny", input_name: str = "input",
               batch: str = "N", input_type: int = TensorProto.FLOAT, opset: int = 17) -> onnx.ModelProto:
    """A checked model of ``nodes``: one input ``input_name`` of ``[batch, *input_shape]``, float ``logits`` out."""
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info(input_name, input_type, [batch, *input_shape])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, classes])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def float_cnn(seed: int = 0, num_classes: int = 10) -> onnx.ModelProto:
    """A float Conv-Relu-MaxPool-Conv-Relu-MaxPool-Flatten-Gemm model for 1x28x28 inputs."""
    rng = np.random.default_rng(seed)

    def weight(name, shape):
        fan_in = int(np.prod(shape[1:]))
        return numpy_helper.from_array((rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32), name)

    initializers = [
        weight("conv1.weight", (8, 1, 3, 3)),
        numpy_helper.from_array(np.zeros(8, np.float32), "conv1.bias"),
        weight("conv2.weight", (16, 8, 3, 3)),
        numpy_helper.from_array(np.zeros(16, np.float32), "conv2.bias"),
        weight("fc.weight", (num_classes, 16 * 7 * 7)),
        numpy_helper.from_array(np.zeros(num_classes, np.float32), "fc.bias"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "conv1.weight", "conv1.bias"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "conv2.weight", "conv2.bias"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("MaxPool", ["r2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p2"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["logits"], transB=1),
    ]
    return classifier(nodes, initializers, (1, 28, 28), num_classes, name="float_cnn", batch="batch")


class _RandomImages(CalibrationDataReader):
    def __init__(self, seed: int, batches: int = 4):
        rng = np.random.default_rng(seed)
        self._batches = iter([{"input": rng.standard_normal((8, 1, 28, 28)).astype(np.float32)} for _ in range(batches)])

    def get_next(self):
        return next(self._batches, None)


def ort_quantized_cnn(folder: Path, style: str, seed: int = 0) -> Path:
    """Write a float CNN and ONNX Runtime's quantization of it; return the quantized path.

    ``style`` is ``qdq_per_channel`` (QDQ, u8 activations, per-channel s8 weights),
    ``qdq_s8s8`` (QDQ, per-tensor s8 activations and weights) or ``qoperator``.
    """
    logging.getLogger().setLevel(logging.ERROR)  # quantize_static warns about pre-processing
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    float_path = folder / f"float_{style}.onnx"
    onnx.save(float_cnn(seed), float_path)
    settings = {
        "qdq_per_channel": dict(quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8),
        "qdq_s8s8": dict(quant_format=QuantFormat.QDQ, per_channel=False, activation_type=QuantType.QInt8),
        "qoperator": dict(quant_format=QuantFormat.QOperator, per_channel=False, activation_type=QuantType.QUInt8),
    }[style]
    quant_path = folder / f"quant_{style}.onnx"
    quantize_static(str(float_path), str(quant_path), _RandomImages(seed), weight_type=QuantType.QInt8, **settings)
    return quant_path


def digits_npz(path: Path, count: int, seed: int = 0) -> str:
    """A data spec of ``count`` random 28x28 uint8 digits in an npz at ``path`` (loads in milliseconds)."""
    rng = np.random.default_rng(seed)
    np.savez(path, x=rng.integers(0, 256, (count, 28, 28), dtype=np.uint8), y=np.arange(count) % 10)
    return f"npz:{path}"
