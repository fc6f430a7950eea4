"""Tiny hand-built ONNX graphs, one per way of storing quantized weights, for the weight-memory tests.

Each builder returns a checked ModelProto with one float input ``input`` [N, K] and one
float output ``logits`` [N, classes]; ``FORMS`` names them all.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

K = 5  # input features: odd, so 4-bit tensors of K x 3 codes end on a half byte


def _model(nodes, inits, k: int = K, classes: int = 3, opset: int = 21, microsoft: bool = False) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "form", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", k])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])], inits)
    opsets = [helper.make_opsetid("", opset)] + ([helper.make_opsetid("com.microsoft", 1)] if microsoft else [])
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 10
    onnx.checker.check_model(model)
    return model


def _codes(rng, dtype: str, shape) -> np.ndarray:
    low, high = {"int4": (-8, 8), "uint4": (0, 16), "int8": (-128, 128), "int16": (-32768, 32768),
                 "uint16": (0, 65536)}[dtype]
    return rng.integers(low, high, shape)


def packed_4bit(dtype: str = "int4", seed: int = 0) -> onnx.ModelProto:
    """MatMul(input, DequantizeLinear(W)) with W an INT4 or UINT4 initializer of K x 3 (odd count) codes."""
    rng = np.random.default_rng(seed)
    onnx_type = {"int4": TensorProto.INT4, "uint4": TensorProto.UINT4}[dtype]
    values = _codes(rng, dtype, (K, 3))
    inits = [helper.make_tensor("w", onnx_type, (K, 3), values.ravel().tolist()),
             numpy_helper.from_array(np.array(0.05, np.float32), "w.scale"),
             helper.make_tensor("w.zero", onnx_type, (), [8 if dtype == "uint4" else 0])]
    nodes = [helper.make_node("DequantizeLinear", ["w", "w.scale", "w.zero"], ["wf"]),
             helper.make_node("MatMul", ["input", "wf"], ["logits"])]
    return _model(nodes, inits)


def wide_16bit(dtype: str = "int16", seed: int = 0) -> onnx.ModelProto:
    """A W16 model: MatMul(input, DequantizeLinear(W)) with W an INT16/UINT16 initializer."""
    rng = np.random.default_rng(seed)
    values = _codes(rng, dtype, (K, 3)).astype(dtype)
    zero = np.array(0 if dtype == "int16" else 32768, dtype)
    inits = [numpy_helper.from_array(values, "w"), numpy_helper.from_array(np.array(1e-4, np.float32), "w.scale"),
             numpy_helper.from_array(zero, "w.zero")]
    nodes = [helper.make_node("DequantizeLinear", ["w", "w.scale", "w.zero"], ["wf"]),
             helper.make_node("MatMul", ["input", "wf"], ["logits"])]
    return _model(nodes, inits)


def matmul_nbits(bits: int = 4, seed: int = 0) -> onnx.ModelProto:
    """com.microsoft MatMulNBits: 4 outputs over K = 32 inputs in blocks of 16, with block scales and zero points."""
    rng = np.random.default_rng(seed)
    n, k, block = 4, 32, 16
    blocks = k // block
    codes = rng.integers(0, 1 << bits, (n, blocks, block)).astype(np.uint8)
    if bits == 4:
        packed = (codes[..., 0::2] | (codes[..., 1::2] << 4)).astype(np.uint8)
    else:
        packed = codes
    zero = np.full((n, (blocks + 1) // 2) if bits == 4 else (n, blocks), 0x88 if bits == 4 else 128, np.uint8)
    inits = [numpy_helper.from_array(packed, "B"),
             numpy_helper.from_array(rng.uniform(0.01, 0.02, n * blocks).astype(np.float32), "B.scales"),
             numpy_helper.from_array(zero.reshape(-1), "B.zero_points")]
    nodes = [helper.make_node("MatMulNBits", ["input", "B", "B.scales", "B.zero_points"], ["logits"],
                              domain="com.microsoft", K=k, N=n, bits=bits, block_size=block)]
    return _model(nodes, inits, k=k, classes=n, microsoft=True)


def constant_nodes(seed: int = 0) -> onnx.ModelProto:
    """Two int8 weights held in Constant nodes (one reached through an Identity), one initializer weight shared by
    two DequantizeLinear nodes, and an int32 bias in a Constant node."""
    rng = np.random.default_rng(seed)
    scale = numpy_helper.from_array(np.array(0.02, np.float32), "s")
    zero = numpy_helper.from_array(np.array(0, np.int8), "z")
    shared = numpy_helper.from_array(rng.integers(-128, 128, (3, 3)).astype(np.int8), "shared.w")
    nodes = [
        helper.make_node("Constant", [], ["c1.w"], value=numpy_helper.from_array(
            rng.integers(-128, 128, (K, 4)).astype(np.int8))),
        helper.make_node("Constant", [], ["c2.raw"], value=numpy_helper.from_array(
            rng.integers(-128, 128, (4, 3)).astype(np.int8))),
        helper.make_node("Identity", ["c2.raw"], ["c2.w"]),
        helper.make_node("Constant", [], ["c2.b"], value=numpy_helper.from_array(
            rng.integers(-500, 500, (3,)).astype(np.int32))),
        helper.make_node("DequantizeLinear", ["c1.w", "s", "z"], ["w1"]),
        helper.make_node("MatMul", ["input", "w1"], ["h1"]),
        helper.make_node("DequantizeLinear", ["c2.w", "s", "z"], ["w2"]),
        helper.make_node("DequantizeLinear", ["c2.b", "s.bias"], ["b2"]),
        helper.make_node("MatMul", ["h1", "w2"], ["h2"]),
        helper.make_node("Add", ["h2", "b2"], ["h3"]),
        helper.make_node("DequantizeLinear", ["shared.w", "s", "z"], ["w3a"]),
        helper.make_node("MatMul", ["h3", "w3a"], ["h4"]),
        helper.make_node("DequantizeLinear", ["shared.w", "s", "z"], ["w3b"]),
        helper.make_node("MatMul", ["h4", "w3b"], ["logits"]),
    ]
    inits = [scale, zero, shared, numpy_helper.from_array(np.array(4e-4, np.float32), "s.bias")]
    return _model(nodes, inits)


def unfaultable(seed: int = 0) -> onnx.ModelProto:
    """A FLOAT8 weight and a weight quantized at run time (QuantizeLinear of a float initializer): nothing storable."""
    rng = np.random.default_rng(seed)
    inits = [helper.make_tensor("f8.w", TensorProto.FLOAT8E4M3FN, (K, 3), rng.standard_normal(K * 3).tolist()),
             numpy_helper.from_array(np.array(0.1, np.float32), "s"),
             numpy_helper.from_array(rng.standard_normal((3, 3)).astype(np.float32), "float.w"),
             numpy_helper.from_array(np.array(0, np.int8), "z")]
    nodes = [helper.make_node("DequantizeLinear", ["f8.w", "s"], ["w1"]),
             helper.make_node("MatMul", ["input", "w1"], ["h"]),
             helper.make_node("QuantizeLinear", ["float.w", "s", "z"], ["q.w"]),
             helper.make_node("DequantizeLinear", ["q.w", "s", "z"], ["w2"]),
             helper.make_node("MatMul", ["h", "w2"], ["logits"])]
    return _model(nodes, inits)


FORMS = {
    "int4": lambda: packed_4bit("int4"),
    "uint4": lambda: packed_4bit("uint4"),
    "int16": lambda: wide_16bit("int16"),
    "uint16": lambda: wide_16bit("uint16"),
    "matmulnbits4": lambda: matmul_nbits(4),
    "matmulnbits8": lambda: matmul_nbits(8),
    "constant_nodes": constant_nodes,
}
INPUT_FEATURES = {"matmulnbits4": 32, "matmulnbits8": 32}


def float_net(seed: int = 0) -> onnx.ModelProto:
    """Conv, MatMul, Add and Mul by constants, Gemm: every op that ONNX Runtime's quantizer turns into a QOperator."""
    rng = np.random.default_rng(seed)

    def weight(name, shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)

    inits = [weight("conv.w", (4, 1, 3, 3)), weight("conv.b", (4,)), weight("mm.w", (64, 10)),
             weight("add.c", (10,)), weight("mul.c", (10,)), weight("fc.w", (10, 10)), weight("fc.b", (10,))]
    nodes = [
        helper.make_node("Conv", ["input", "conv.w", "conv.b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"], axis=1),
        helper.make_node("MatMul", ["f", "mm.w"], ["m"]),
        helper.make_node("Add", ["m", "add.c"], ["a"]),
        helper.make_node("Mul", ["a", "mul.c"], ["u"]),
        helper.make_node("Gemm", ["u", "fc.w", "fc.b"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(nodes, "net", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


class _Images(CalibrationDataReader):
    def __init__(self):
        rng = np.random.default_rng(1)
        self._batches = iter([{"input": rng.standard_normal((4, 1, 8, 8)).astype(np.float32)} for _ in range(2)])

    def get_next(self):
        return next(self._batches, None)


def quantized_both_ways(folder: Path) -> dict[str, Path]:
    """:func:`float_net` quantized by ``quantize_static`` in QDQ and in QOperator form (per-tensor s8 weights)."""
    logging.getLogger().setLevel(logging.ERROR)  # the quantizer warns about pre-processing
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / "float.onnx"
    onnx.save(float_net(), source)
    paths = {}
    for form in ("QDQ", "QOperator"):
        paths[form] = folder / f"{form}.onnx"
        quantize_static(str(source), str(paths[form]), _Images(), quant_format=getattr(QuantFormat, form),
                        per_channel=False, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return paths
