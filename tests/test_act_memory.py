"""The activation memory: which tensors, one image's worth, in canonical order, the same in QDQ and QOperator form."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from act_models import float_only, residual_qdq
from edgefault.errors import EdgefaultError
from edgefault.faults import Chip, WeightMemory, records_from_entries, sample_faults
from edgefault.faults.actdiscover import FoldedBatch, ShapesUnknown
from edgefault.faults.activations import ActivationMemory, transient_faults
from edgefault.runtime.actprobe import activation_memory, read_activations
from input_models import uint8_input_cnn
from weight_forms import quantized_both_ways


def test_activation_inputs_of_compute_ops_and_the_output_each_stored_once():
    memory = ActivationMemory.from_model(residual_qdq())
    # c_q only feeds a MaxPool (not a compute op); h_q is read twice (residual Add) and stored once.
    assert memory.names == ("x_q", "f_q", "h_q", "s_q", "out_q")
    shapes = {t.name: (t.dtype, t.shape, t.zero_point, t.consumer) for t in memory.tensors}
    assert shapes["x_q"] == ("uint8", (2, 4, 4), 128, "Conv")
    assert shapes["f_q"] == ("uint8", (16,), 0, "MatMul")
    assert shapes["h_q"] == ("uint8", (6,), 10, "Add")
    assert shapes["out_q"] == ("int8", (3,), 0, "output")
    assert memory.nbits == 8 * (32 + 16 + 6 + 6 + 3)
    assert memory.coverage_line() == ("activation memory: 5 tensors, 63 values, 504 stored bits per image "
                                      "(uint8: 4 tensors, int8: 1 tensor)")
    assert list(memory.bit_starts) == [0, 256, 384, 432, 480]


def test_formats_lay_out_whole_words_of_the_worst_case():
    memory = ActivationMemory.from_model(residual_qdq())
    bitmap = memory.with_format("bitmap")
    assert [t.nbits for t in bitmap.tensors] == [8 * -(-n * 9 // 8) for n in (32, 16, 6, 6, 3)]
    rle = memory.with_format("rle", run_bits=3)
    assert rle.tensors[0].capacity_bits == 6 + 32 * 11 and rle.tensors[0].nbits == 8 * 45
    assert rle.coverage_line().startswith("activation memory: 5 tensors, 63 values, ")
    assert "as rle" in rle.coverage_line()


def test_qdq_and_qoperator_forms_have_the_same_activation_memory(tmp_path):
    paths = quantized_both_ways(tmp_path)
    qdq = ActivationMemory.from_model(paths["QDQ"])
    with pytest.raises(ShapesUnknown):  # ONNX's shape inference does not know QLinearAdd, QGemm, ...
        ActivationMemory.from_model(paths["QOperator"])
    qop = activation_memory(paths["QOperator"])  # a probe run fills the shapes in
    layout = [[(t.dtype, t.shape, t.zero_point, round(t.scale, 7), t.start) for t in m.tensors] for m in (qdq, qop)]
    assert layout[0] == layout[1] and len(layout[0]) == 6
    assert qop.names[0] == "input_quantized" and qop.names[-1] == "logits_quantized"
    chip = Chip("flip", rate=0.05, seed=3)
    first, second = sample_faults(qdq, chip), sample_faults(qop, chip)
    np.testing.assert_array_equal(first.address, second.address)


def test_a_uint8_model_input_is_the_first_buffer(tmp_path):
    memory = activation_memory(uint8_input_cnn(tmp_path))
    assert memory.names[0] == "x" and memory.tensors[0].shape == (1, 12, 12)


def test_the_stored_codes_match_the_memory_shapes():
    model = residual_qdq()
    memory = ActivationMemory.from_model(model)
    images = np.random.default_rng(0).standard_normal((5, 2, 4, 4)).astype(np.float32)
    values = read_activations(model, list(memory.names), {"input": images})
    for tensor in memory.tensors:
        assert values[tensor.name].shape == (5, *tensor.shape)
        assert values[tensor.name].dtype == np.dtype(tensor.dtype)


def test_sampling_layers_and_an_independent_stream_from_the_weights():
    memory = ActivationMemory.from_model(residual_qdq())
    records = sample_faults(memory, Chip("flip", rate=0.2, seed=1, layers="h_q|s_q"))
    assert set(records.tensor_names()) <= {"h_q", "s_q"} and len(records)
    with pytest.raises(EdgefaultError, match="matches no activation tensor"):
        sample_faults(memory, Chip("flip", rate=0.2, layers="nothing"))
    weights = WeightMemory.from_tensors([("w", "uint8", (63,), "t")])  # as many cells as the activations
    chip = Chip("flip", rate=0.1, seed=5)
    assert not np.array_equal(sample_faults(weights, chip).address, sample_faults(memory, chip).address)
    entries = [{"site": "activations", "tensor": "h_q", "index": 5, "bit": 7, "kind": "sa1"},
               {"tensor": "w", "index": 0, "bit": 0, "kind": "flip"}]  # a weight entry: not this memory's
    replayed = records_from_entries(entries, memory)
    assert replayed.address.tolist() == [384 + 47]


def test_a_float_model_has_no_activation_memory():
    with pytest.raises(EdgefaultError, match="no integer activations"):
        ActivationMemory.from_model(float_only())


def test_transient_faults_depend_on_the_seed_and_the_image_only():
    memory = ActivationMemory.from_model(residual_qdq())
    chip = Chip("flip", rate=0.05, seed=9)

    def per_image(records, images):
        image = records.address // memory.nbits
        return [records.address[image == i] - i * memory.nbits for i in range(images)]

    four = per_image(transient_faults(memory, chip, 4), 4)
    assert not np.array_equal(four[0], four[1])  # fresh faults for each image
    many = per_image(transient_faults(memory, chip, 50), 50)
    for image in range(4):  # image i's faults whatever the number of images drawn
        np.testing.assert_array_equal(many[image], four[image])
    higher = per_image(transient_faults(memory, Chip("flip", rate=0.06, seed=9), 4), 4)
    assert all(np.isin(four[i], higher[i]).all() for i in range(4))  # nested across rates, image by image
    permanent = sample_faults(memory, chip).address
    assert not all(np.array_equal(permanent, faults) for faults in four)  # its own stream, not the permanent chip's
    counts = np.array([faults.size for faults in many])  # each image a binomial draw over the memory's bits
    assert abs(counts.mean() - 0.05 * memory.nbits) < 6 * np.sqrt(0.05 * 0.95 * memory.nbits / 50)
    with pytest.raises(EdgefaultError, match="need a rate, not a count"):
        transient_faults(memory, Chip("flip", count=3, seed=9), 4)



def _token_model() -> onnx.ModelProto:
    """Q(input [N, 4, 6]) -> Reshape [-1, 6] (the batch folded with 4 tokens) -> DQ -> MatMul -> Q -> Reshape [N, 12]."""
    inits = [numpy_helper.from_array(value, name) for name, value in [
        ("x.s", np.float32(0.02)), ("x.z", np.uint8(128)), ("rows", np.array([-1, 6], np.int64)),
        ("w", np.arange(18, dtype=np.int8).reshape(6, 3)), ("w.s", np.float32(0.01)),
        ("o.s", np.float32(0.1)), ("o.z", np.uint8(0)), ("per_image", np.array([-1, 12], np.int64))]]
    nodes = [helper.make_node("QuantizeLinear", ["input", "x.s", "x.z"], ["x_q"]),
             helper.make_node("Reshape", ["x_q", "rows"], ["tokens_q"]),
             helper.make_node("DequantizeLinear", ["tokens_q", "x.s", "x.z"], ["tokens"]),
             helper.make_node("DequantizeLinear", ["w", "w.s"], ["w_f"]),
             helper.make_node("MatMul", ["tokens", "w_f"], ["o"]),
             helper.make_node("QuantizeLinear", ["o", "o.s", "o.z"], ["o_q"]),
             helper.make_node("Reshape", ["o_q", "per_image"], ["out_q"]),
             helper.make_node("DequantizeLinear", ["out_q", "o.s", "o.z"], ["logits"])]
    graph = helper.make_graph(nodes, "tokens", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 4, 6])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 12])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_a_batch_folded_into_the_first_axis_is_refused_naming_the_tensor():
    # A transformer's Reshape to [-1, C] puts 4 rows of one image on the first axis: per-image addresses would be
    # wrong (shape inference sees a leading dimension other than the batch), so the probe measures it and refuses.
    model = _token_model()
    assert read_activations(model, ["tokens_q"], {"input": np.zeros((3, 4, 6), np.float32)})["tokens_q"].shape == (12, 6)
    with pytest.raises(FoldedBatch, match="'tokens_q' holds 4 rows for 1 image") as refused:
        activation_memory(model)
    assert refused.value.name == "tokens_q" and "\n" not in str(refused.value)
