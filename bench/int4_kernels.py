"""Does ONNX Runtime run INT4 weight initializers with integer kernels on this CPU?

Builds one MatMul (8 x 512 by 512 x 512) and one Conv (64 -> 64 channels, 3x3, 32x32) in
edgefault's deployed QDQ layout (uint8 activations as Q/DQ pairs, per-channel symmetric
weights feeding DequantizeLinear, opset 21) with INT8 and with INT4 weights, and for the
MatMul also weight-only (float activations, the layout ONNX Runtime fuses into MatMulNBits).
For each, it prints the op counts of the graph ONNX Runtime runs after optimization and the
latency at one intra-op thread, as a ratio to the INT8 model of the same layer.

Run: ``.venv/bin/python bench/int4_kernels.py [--repeats N] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

SHAPES = {"MatMul": ((512, 512), 1, [8, 512]), "Conv": ((64, 64, 3, 3), 0, [8, 64, 32, 32])}


def layer_model(op: str, weight_type: int, quantized_activations: bool = True) -> onnx.ModelProto:
    """One quantized MatMul or Conv with INT8 or INT4 per-channel weights.

    Example:
        >>> layer_model("MatMul", TensorProto.INT4).graph.initializer[2].data_type == TensorProto.INT4
        True
    """
    shape, axis, input_shape = SHAPES[op]
    rng = np.random.default_rng(0)
    low, high = (-8, 8) if weight_type == TensorProto.INT4 else (-128, 128)
    channels = shape[axis]
    inits = [numpy_helper.from_array(np.array(0.05, np.float32), "act.scale"),
             numpy_helper.from_array(np.array(128, np.uint8), "act.zero"),
             helper.make_tensor("w", weight_type, shape, rng.integers(low, high, shape).ravel().tolist()),
             numpy_helper.from_array(np.full(channels, 0.01, np.float32), "w.scale"),
             helper.make_tensor("w.zero", weight_type, (channels,), [0] * channels)]
    nodes = [helper.make_node("DequantizeLinear", ["w", "w.scale", "w.zero"], ["wf"], axis=axis)]
    x, y = "input", "logits"
    if quantized_activations:
        nodes += [helper.make_node("QuantizeLinear", ["input", "act.scale", "act.zero"], ["xq"]),
                  helper.make_node("DequantizeLinear", ["xq", "act.scale", "act.zero"], ["x"])]
        x, y = "x", "y"
    attributes = {"pads": [1, 1, 1, 1]} if op == "Conv" else {}
    nodes.append(helper.make_node(op, [x, "wf"], [y], **attributes))
    if quantized_activations:
        nodes += [helper.make_node("QuantizeLinear", ["y", "act.scale", "act.zero"], ["yq"]),
                  helper.make_node("DequantizeLinear", ["yq", "act.scale", "act.zero"], ["logits"])]
    graph = helper.make_graph(nodes, f"{op.lower()}_layer",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", *input_shape[1:]])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N"])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    return model


def measure(model: onnx.ModelProto, input_shape: list[int], folder: Path, repeats: int) -> tuple[dict, float]:
    """(op counts after ONNX Runtime's optimization, median seconds per run at one thread)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    options.optimized_model_filepath = str(folder / "optimized.onnx")
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    ops = collections.Counter(node.op_type for node in onnx.load(options.optimized_model_filepath).graph.node)
    feed = {"input": np.random.default_rng(1).standard_normal(input_shape).astype(np.float32)}
    session.run(None, feed)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
    return dict(ops), statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50, help="timed runs per model (median reported)")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here (for bench/report.py)")
    args = parser.parse_args()
    print(f"onnxruntime {ort.__version__}\n")
    print("| layer | activations | weights | ops after optimization | latency (ms) | ratio to int8 |")
    print("|---|---|---|---|---:|---:|")
    cases = [("MatMul", True), ("Conv", True), ("MatMul", False)]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for op, quantized in cases:
            reference = None
            for name, weight_type in (("int8", TensorProto.INT8), ("int4", TensorProto.INT4)):
                ops, seconds = measure(layer_model(op, weight_type, quantized), SHAPES[op][2], Path(folder),
                                       args.repeats)
                reference = reference or seconds
                counts = ", ".join(f"{k} {v}" for k, v in sorted(ops.items()))
                activations = "uint8 Q/DQ" if quantized else "float"
                rows.append([op, activations, name, counts, round(seconds * 1e3, 3), round(seconds / reference, 2)])
                print(f"| {op} | {activations} | {name} | {counts} | {seconds * 1e3:.3f} | {seconds / reference:.2f} |")
    if args.json:
        numbers = {"command": " ".join(["python bench/int4_kernels.py", *sys.argv[1:]]),
                   "setup": f"onnxruntime {ort.__version__}, one intra-op thread, median of {args.repeats} runs per "
                            f"model; MatMul 8x512 by 512x512, Conv 64->64 channels 3x3 on 8x64x32x32",
                   "tables": [{"columns": ["layer", "activations", "weights", "ops after optimization",
                                           "latency (ms)", "ratio to int8"], "rows": rows}]}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(numbers, indent=2) + "\n")

if __name__ == "__main__":
    main()
