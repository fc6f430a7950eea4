"""Loading models safely, the Evaluator (from a path and from bytes), kernel counts and timing."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgefault.errors import EdgefaultError
from edgefault.runtime.graph import count_kernels, optimized_kernel_counts
from edgefault.runtime.inputs import InputSpec, PreparedInputs, parse_float_list, parse_input_size, resolve_input_spec
from edgefault.onnxio import load_model, parse_model
from edgefault.runtime.modelio import model_io
from edgefault.runtime.metadata import ModelMetadata
from edgefault.runtime.session import Evaluator, SessionSettings
from edgefault.runtime.timing import TimingSettings, measure_timing
from onnx_builders import float_cnn


def images(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, 1, 28, 28)).astype(np.float32)


def test_evaluator_from_path_bytes_and_proto_agree(tmp_path):
    model = float_cnn()
    onnx.save(model, tmp_path / "m.onnx")
    x = images(5)
    from_path = Evaluator(tmp_path / "m.onnx").logits(x)
    from_bytes = Evaluator(model.SerializeToString(), SessionSettings(intra_op_threads=1)).logits(x, batch_size=2)
    from_proto = Evaluator(model).logits(x)
    assert from_path.shape == (5, 10)
    np.testing.assert_allclose(from_path, from_bytes, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(from_path, from_proto, rtol=1e-5, atol=1e-5)


def test_score_counts_correct_predictions():
    evaluator = Evaluator(float_cnn())
    x = images(6)
    predictions = evaluator.predict(x)
    labels = predictions.copy()
    labels[:2] = (labels[:2] + 1) % 10
    score = evaluator.score(PreparedInputs(x, labels))
    assert (score.correct, score.total) == (4, 6) and score.accuracy == pytest.approx(4 / 6)


def test_fixed_batch_graph_is_fed_one_image_at_a_time():
    model = float_cnn()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    x = images(3)
    np.testing.assert_allclose(Evaluator(model).logits(x), Evaluator(float_cnn()).logits(x), rtol=1e-5, atol=1e-5)


def test_corrupt_bytes_and_files_are_user_errors(tmp_path):
    with pytest.raises(EdgefaultError, match="not an ONNX model"):
        parse_model(b"\xff\xfe garbage")
    with pytest.raises(EdgefaultError, match="ONNX Runtime cannot load"):
        Evaluator(b"\x08\x07")  # parses as a model with only an IR version
    (tmp_path / "text.onnx").write_text("hello, not a model\n")
    with pytest.raises(EdgefaultError, match="not an ONNX model"):
        load_model(tmp_path / "text.onnx")
    with pytest.raises(EdgefaultError, match="no such file"):
        load_model(tmp_path / "missing.onnx")


def external_model(location: str) -> onnx.ModelProto:
    model = float_cnn()
    tensor = model.graph.initializer[0]
    tensor.ClearField("float_data")
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value=location)
    return model


@pytest.mark.parametrize("location", ["../secret.bin", "/etc/passwd", "sub/../../secret.bin"])
def test_external_data_may_not_leave_the_model_folder(tmp_path, location):
    folder = tmp_path / "models"
    folder.mkdir()
    (tmp_path / "secret.bin").write_bytes(b"\x00" * 288)
    onnx.save(external_model(location), folder / "m.onnx")
    with pytest.raises(EdgefaultError, match="leaves the model's folder"):
        load_model(folder / "m.onnx")


def test_external_data_inside_the_folder_loads(tmp_path):
    model = float_cnn()
    onnx.save(model, tmp_path / "m.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)
    loaded = load_model(tmp_path / "m.onnx")
    assert numpy_helper.to_array(loaded.graph.initializer[0]).shape == (8, 1, 3, 3)
    assert Evaluator(tmp_path / "m.onnx").logits(images(1)).shape == (1, 10)


def test_model_without_classifier_output_is_refused():
    model = float_cnn()
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("c1", TensorProto.FLOAT, ["batch", 8, 28, 28]))
    with pytest.raises(EdgefaultError, match="not a classifier output"):
        model_io(model)
    # Without a declared shape the check happens on the first run.
    model.graph.output[0].CopyFrom(onnx.ValueInfoProto(name="c1"))
    model.graph.output[0].type.tensor_type.elem_type = TensorProto.FLOAT
    with pytest.raises(EdgefaultError, match="needs \\[N, classes\\]"):
        Evaluator(model).logits(images(2))


def test_input_spec_from_flags_metadata_and_graph():
    io = model_io(float_cnn())
    with pytest.raises(EdgefaultError, match="no edgefault metadata; give `mean`, `std`"):
        resolve_input_spec(io, None)
    spec = resolve_input_spec(io, None, None, "0.5", "0.25")  # input size read from the graph's 1x28x28
    assert spec == InputSpec("input", (1, 28, 28), (0.5,), (0.25,), "flags")
    meta = ModelMetadata(input_name="input", input_shape=(1, 28, 28), mean=(0.1,), std=(0.3,), num_classes=10,
                         wbits=8, abits=8, dataset="mnist5k")
    assert resolve_input_spec(io, meta).source == "metadata"
    assert resolve_input_spec(io, meta, std="0.2").std == (0.2,)
    with pytest.raises(EdgefaultError, match="C is 1, not 3"):
        resolve_input_spec(io, None, "3x28x28", "0.5", "0.5")
    assert parse_input_size("3x32x32") == (3, 32, 32)
    assert parse_float_list("0.5", "mean", 3) == (0.5, 0.5, 0.5)
    with pytest.raises(EdgefaultError, match="`std` needs 1 or 3 values"):
        parse_float_list("1,2", "std", 3)


def test_count_kernels_on_a_hand_built_graph():
    body = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["y"])], "body", [],
                             [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    nodes = [
        helper.make_node("QLinearConv", list("abcdefgh"), ["q1"]),
        helper.make_node("MatMulInteger", ["x", "w"], ["q2"]),
        helper.make_node("QGemm", ["x"], ["q3"], domain="com.microsoft"),
        helper.make_node("Conv", ["x", "w"], ["f1"], domain="com.microsoft.nchwc"),
        helper.make_node("Gemm", ["x", "w"], ["f2"]),
        helper.make_node("Relu", ["f2"], ["r"]),
        helper.make_node("If", ["cond"], ["y"], then_branch=body, else_branch=body),
    ]
    graph = helper.make_graph(nodes, "g", [], [])
    counts = count_kernels(helper.make_model(graph))
    assert (counts.integer_kernels, counts.float_kernels) == (3, 4)  # 2 MatMuls inside the If
    assert counts.ops["com.microsoft.nchwc:Conv"] == 1 and counts.ops["Relu"] == 1
    assert not counts.all_integer


def test_float_model_runs_float_kernels():
    counts = optimized_kernel_counts(float_cnn().SerializeToString())
    assert counts.integer_kernels == 0 and counts.float_kernels == 3


def test_timing_is_bounded_and_positive():
    evaluator = Evaluator(float_cnn(), SessionSettings(intra_op_threads=1))
    timing = measure_timing(evaluator, images(3), TimingSettings(warmup=1, min_runs=3, max_runs=5, min_seconds=0.0,
                                                                 throughput_batch=8))
    assert 3 <= timing.latency_runs <= 5 and timing.latency_p50_ms > 0
    assert timing.throughput_batch == 8 and timing.throughput_images_per_s > 0 and timing.threads == 1
