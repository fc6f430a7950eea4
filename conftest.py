"""The setting of every docstring example (``--doctest-modules`` on the package): a fresh folder.

Each example runs in its own empty temporary folder holding ``model.onnx``, a tiny int8 QDQ
classifier (QuantizeLinear -> Conv -> Relu -> Flatten -> Gemm, weights ``conv.weight_quantized``
and ``fc.weight_quantized``, input ``input`` of 1x4x4 images, output ``logits`` over 3
classes), so no example depends on another's files.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


def tiny_qdq_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    conv = rng.integers(-127, 128, (2, 1, 3, 3), dtype=np.int8)
    fc = rng.integers(-127, 128, (3, 8), dtype=np.int8)
    inits = [
        numpy_helper.from_array(np.array(1 / 64, np.float32), "x_scale"),
        numpy_helper.from_array(np.array(0, np.int8), "x_zero"),
        numpy_helper.from_array(conv, "conv.weight_quantized"),
        numpy_helper.from_array(np.full(2, 0.01, np.float32), "conv.weight_scale"),
        numpy_helper.from_array(np.zeros(2, np.int8), "conv.weight_zero"),
        numpy_helper.from_array(fc, "fc.weight_quantized"),
        numpy_helper.from_array(np.full(3, 0.01, np.float32), "fc.weight_scale"),
        numpy_helper.from_array(np.zeros(3, np.int8), "fc.weight_zero"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["input", "x_scale", "x_zero"], ["input_q"]),
        helper.make_node("DequantizeLinear", ["input_q", "x_scale", "x_zero"], ["input_dq"]),
        helper.make_node("DequantizeLinear", ["conv.weight_quantized", "conv.weight_scale", "conv.weight_zero"],
                         ["conv.weight"], axis=0),
        helper.make_node("Conv", ["input_dq", "conv.weight"], ["conv_out"], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["conv_out"], ["relu_out"]),
        helper.make_node("Flatten", ["relu_out"], ["features"]),
        helper.make_node("DequantizeLinear", ["fc.weight_quantized", "fc.weight_scale", "fc.weight_zero"],
                         ["fc.weight"], axis=0),
        helper.make_node("Gemm", ["features", "fc.weight"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 4, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


@pytest.fixture(autouse=True)
def _example_folder(request):
    if type(request.node).__name__ == "DoctestItem":
        folder = request.getfixturevalue("tmp_path")
        request.getfixturevalue("monkeypatch").chdir(folder)
        onnx.save(tiny_qdq_model(), folder / "model.onnx")
