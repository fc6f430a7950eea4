"""Faults in real quantized ONNX models: ONNX Runtime's quantizer, an exporter-style QDQ model, external data."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgefault.errors import EdgefaultError
from edgefault.faults import (
    METADATA_KEY,
    Chip,
    Injector,
    WeightMemory,
    inject_file,
    inject_model_bytes,
    sample_faults,
    weight_memory,
)
from onnx_builders import classifier, float_cnn, ort_quantized_cnn

STYLES = ("qdq_per_channel", "qdq_s8s8", "qoperator")


def exporter_style_qdq() -> onnx.ModelProto:
    """A model laid out like edgefault's exporter writes: per-channel int8 weights and int32 biases
    feeding DequantizeLinear, uint8 activations as Q/DQ, and a uint8 scalar threshold (FATReLU on
    the codes) that is not a weight. One weight is stored in int32_data instead of raw bytes."""
    rng = np.random.default_rng(0)
    conv_w = rng.integers(-127, 128, (4, 1, 3, 3)).astype(np.int8)
    fc_w = rng.integers(-127, 128, (10, 4 * 8 * 8)).astype(np.int8)
    inits = [
        numpy_helper.from_array(np.array(0.02, np.float32), "act.scale"),
        numpy_helper.from_array(np.array(0, np.uint8), "act.zero_point"),
        helper.make_tensor("conv.weight", TensorProto.INT8, conv_w.shape, conv_w.ravel().tolist()),  # int32_data
        numpy_helper.from_array(np.full(4, 0.01, np.float32), "conv.weight.scale"),
        numpy_helper.from_array(np.zeros(4, np.int8), "conv.weight.zero_point"),
        numpy_helper.from_array(rng.integers(-500, 500, 4).astype(np.int32), "conv.bias"),
        numpy_helper.from_array(np.full(4, 2e-4, np.float32), "conv.bias.scale"),
        numpy_helper.from_array(np.zeros(4, np.int32), "conv.bias.zero_point"),
        numpy_helper.from_array(np.array(3, np.uint8), "fat.threshold"),
        numpy_helper.from_array(fc_w, "fc.weight"),
        numpy_helper.from_array(np.full(10, 0.01, np.float32), "fc.weight.scale"),
        numpy_helper.from_array(np.zeros(10, np.int8), "fc.weight.zero_point"),
    ]
    act = ["act.scale", "act.zero_point"]
    nodes = [
        helper.make_node("QuantizeLinear", ["input", *act], ["x.q"]),
        helper.make_node("DequantizeLinear", ["x.q", *act], ["x"]),
        helper.make_node("DequantizeLinear", ["conv.weight", "conv.weight.scale", "conv.weight.zero_point"], ["cw"],
                         axis=0),
        helper.make_node("DequantizeLinear", ["conv.bias", "conv.bias.scale", "conv.bias.zero_point"], ["cb"], axis=0),
        helper.make_node("Conv", ["x", "cw", "cb"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("QuantizeLinear", ["c", *act], ["c.q"]),
        helper.make_node("Greater", ["c.q", "fat.threshold"], ["keep"]),
        helper.make_node("Where", ["keep", "c.q", "act.zero_point"], ["r.q"]),
        helper.make_node("DequantizeLinear", ["r.q", *act], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"], axis=1),
        helper.make_node("DequantizeLinear", ["fc.weight", "fc.weight.scale", "fc.weight.zero_point"], ["fw"], axis=0),
        helper.make_node("Gemm", ["f", "fw"], ["logits"], transB=1),
    ]
    model = classifier(nodes, inits, (1, 8, 8), 10, name="exporter_style", batch="batch")
    model.metadata_props.add(key="edgefault.num_classes", value="10")
    return model


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    paths = {style: ort_quantized_cnn(folder / style, style) for style in STYLES}
    paths["exporter_style"] = folder / "exporter_style.onnx"
    onnx.save(exporter_style_qdq(), paths["exporter_style"])
    external = folder / "external"
    external.mkdir()
    paths["external_data"] = external / "model.onnx"
    onnx.save(onnx.load(paths["qdq_per_channel"]), paths["external_data"], save_as_external_data=True,
              all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    return paths


def _load(model: Path | bytes) -> onnx.ModelProto:
    return onnx.load_from_string(model) if isinstance(model, bytes) else onnx.load(str(model))


def _stored(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _changed_bits(clean: np.ndarray, faulty: np.ndarray) -> np.ndarray:
    return np.unpackbits((np.ascontiguousarray(clean).view(np.uint8) ^ np.ascontiguousarray(faulty).view(np.uint8)))


def _assert_only_weights_changed(clean: onnx.ModelProto, faulty: onnx.ModelProto, memory: WeightMemory) -> None:
    for field in ("node", "input", "output", "value_info", "name"):
        assert getattr(clean.graph, field) == getattr(faulty.graph, field), field
    assert clean.opset_import == faulty.opset_import and clean.ir_version == faulty.ir_version
    before, after = _stored(clean), _stored(faulty)
    assert before.keys() == after.keys()
    for name in before:
        assert before[name].dtype == after[name].dtype and before[name].shape == after[name].shape
        if name not in memory.names:
            assert np.array_equal(before[name], after[name]), name
    added = list(faulty.metadata_props)[len(clean.metadata_props):]
    assert list(faulty.metadata_props)[: len(clean.metadata_props)] == list(clean.metadata_props)
    assert len(added) == 1 and added[0].key.startswith(METADATA_KEY)
    assert "chip" in json.loads(added[0].value)


@pytest.mark.parametrize("style", STYLES)
def test_weight_memory_holds_exactly_the_integer_weights(models, style):
    model = _load(models[style])
    types = {t.name: t.data_type for t in model.graph.initializer}
    positions = {"DequantizeLinear": (0,), "QLinearConv": (3,), "QGemm": (0, 3), "QLinearMatMul": (0, 3)}
    expected = []
    for node in model.graph.node:
        for i in positions.get(node.op_type, ()):
            name = node.input[i]
            if types.get(name) in (TensorProto.INT8, TensorProto.UINT8) and name not in expected:
                expected.append(name)
    memory = weight_memory(models[style])
    assert list(memory.names) == expected and len(expected) == 3
    assert not any("scale" in name or "zero_point" in name for name in memory.names)
    with_bias = weight_memory(models[style], include_bias=True)
    biases = [t for t in with_bias.tensors if t.is_bias]
    assert len(biases) >= 2 and all(types[t.name] == TensorProto.INT32 for t in biases)


def test_exporter_style_thresholds_are_not_weights(models):
    memory = weight_memory(models["exporter_style"])
    assert memory.names == ("conv.weight", "fc.weight")
    assert weight_memory(models["exporter_style"], include_bias=True).names == (
        "conv.weight", "conv.bias", "fc.weight")


@pytest.mark.parametrize("name", [*STYLES, "exporter_style", "external_data"])
def test_only_weight_bytes_change_and_the_model_still_runs(models, name):
    clean = _load(models[name])
    faulty_bytes, fault_map = Injector(models[name]).inject(Chip("flip", rate=0.02, seed=1))
    faulty = _load(faulty_bytes)
    _assert_only_weights_changed(clean, faulty, fault_map.memory)
    before, after = _stored(clean), _stored(faulty)
    flipped = sum(int(_changed_bits(before[n], after[n]).sum()) for n in fault_map.memory.names)
    assert flipped == fault_map.changed_bits == len(fault_map.records) > 0
    session = ort.InferenceSession(faulty_bytes, providers=["CPUExecutionProvider"])
    shape = [1, 1, 8, 8] if name == "exporter_style" else [1, 1, 28, 28]
    logits = session.run(None, {"input": np.random.default_rng(0).standard_normal(shape).astype(np.float32)})[0]
    assert logits.shape == (1, 10)


def test_fault_map_values_match_the_weights(models):
    injector = Injector(models["qoperator"])
    faulty_bytes, fault_map = injector.inject(Chip("stuck", rate=0.01, seed=2, include_bias=True))
    before, after = _stored(_load(models["qoperator"])), _stored(_load(faulty_bytes))
    for row in fault_map.to_dict()["faults"]:
        assert before[row["tensor"]].reshape(-1)[row["index"]] == row["before"]
        assert after[row["tensor"]].reshape(-1)[row["index"]] == row["after"]
    summary = fault_map.summary()
    assert sum(t["faults"] for t in summary["per_tensor"]) == summary["faults"] == len(fault_map.records)
    assert set(summary["by_kind"]) == {"sa0", "sa1"}
    assert any(t["dtype"] == "int32" and t["faults"] for t in summary["per_tensor"])


def test_changed_bits_at_a_rate_are_within_binomial_spread(models):
    injector = Injector(models["qdq_per_channel"])
    bits, rate = injector.memory().nbits, 0.01
    for seed in range(4):
        _, fault_map = injector.inject(Chip("flip", rate=rate, seed=seed))
        assert abs(fault_map.changed_bits - bits * rate) <= 5 * np.sqrt(bits * rate * (1 - rate))


def test_stuck_at_faults_on_a_model(models):
    injector = Injector(models["qdq_s8s8"])
    clean = {n: a.view(np.uint8) for n, a in injector.arrays().items()}
    for kind in ("sa0", "sa1"):
        faulty = _stored(_load(injector.inject(Chip(kind, rate=0.05, seed=3))[0]))
        for name, old in clean.items():
            new = faulty[name].view(np.uint8)
            if kind == "sa0":
                assert not np.any(new & ~old) and np.any(old & ~new)
            else:
                assert not np.any(old & ~new) and np.any(new & ~old)


def test_flipping_twice_with_the_same_chip_restores_every_weight(models):
    chip = Chip("flip", rate=0.05, seed=4)
    once, _ = Injector(models["qoperator"]).inject(chip)
    twice, _ = Injector(once).inject(chip)
    clean, restored = _stored(_load(models["qoperator"])), _stored(_load(twice))
    assert all(np.array_equal(clean[name], restored[name]) for name in clean)
    assert [p.key for p in _load(twice).metadata_props][-2:] == [METADATA_KEY, METADATA_KEY + ".2"]


def test_same_seed_same_bytes_other_seed_other_bytes(models):
    data = models["qdq_per_channel"].read_bytes()
    injector = Injector(models["qdq_per_channel"])
    first, _ = injector.inject(Chip("flip", rate=1e-3, seed=7))
    assert injector.inject(Chip("flip", rate=1e-3, seed=7))[0] == first  # the cached copy was restored
    assert inject_model_bytes(data, Chip("flip", rate=1e-3, seed=7))[0] == first
    assert injector.inject(Chip("flip", rate=1e-3, seed=8))[0] != first
    assert models["qdq_per_channel"].read_bytes() == data


def test_paired_styles_share_fault_addresses(models):
    chip = Chip("flip", rate=0.01, seed=5)
    addresses = [Injector(models[style]).inject(chip)[1].records.address for style in STYLES]
    assert all(np.array_equal(addresses[0], a) for a in addresses[1:])  # same memory size, same chip


def test_bit_filter_and_protection_on_a_model(models):
    injector = Injector(models["qdq_per_channel"])
    clean = {n: a.view(np.uint8) for n, a in injector.arrays().items()}
    sign_only = _stored(_load(injector.inject(Chip("flip", rate=0.05, seed=1, bits=[7]))[0]))
    protected = _stored(_load(injector.inject(Chip("flip", rate=0.05, seed=1, protect_bits=[0, 7]))[0]))
    for name, old in clean.items():
        assert np.all((old ^ sign_only[name].view(np.uint8)) & 0x7F == 0)
        assert np.any(old != sign_only[name].view(np.uint8))
        assert np.all((old ^ protected[name].view(np.uint8)) & 0x81 == 0)


def test_external_data_is_read_and_the_output_is_self_contained(models, tmp_path):
    embedded = weight_memory(models["qdq_per_channel"])
    assert weight_memory(models["external_data"]) == embedded
    out = tmp_path / "elsewhere" / "faulty.onnx"
    inject_file(models["external_data"], out, Chip("sa1", count=100, seed=1))
    faulty = onnx.load(str(out), load_external_data=False)
    assert not any(t.data_location == TensorProto.EXTERNAL for t in faulty.graph.initializer)
    _assert_only_weights_changed(_load(models["external_data"]), faulty, embedded)


@pytest.mark.parametrize("location", ["../outside.bin", "/etc/passwd"])
def test_external_data_leaving_the_model_folder_is_refused(tmp_path, location):
    folder = tmp_path / "model"
    folder.mkdir()
    (tmp_path / "outside.bin").write_bytes(bytes(10_000))
    model = onnx.load(str(ort_quantized_cnn(tmp_path / "q", "qdq_per_channel")))
    tensor = next(t for t in model.graph.initializer if t.data_type == TensorProto.INT8)
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value=location)
    path = folder / "model.onnx"
    onnx.save(model, str(path))
    for load in (Injector, weight_memory):
        with pytest.raises(EdgefaultError, match="leaves the model's folder"):
            load(path)
    with pytest.raises(EdgefaultError, match="external data"):
        Injector(path.read_bytes())


def test_models_without_integer_weights_are_refused(tmp_path):
    path = tmp_path / "float.onnx"
    onnx.save(float_cnn(), path)
    with pytest.raises(EdgefaultError, match="no integer weight"):
        Injector(path)


def test_map_re_applies_to_the_same_bytes(models, tmp_path):
    source = models["exporter_style"]
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    first = inject_file(source, tmp_path / "a.onnx", Chip("stuck", rate=0.03, seed=6), map_out=tmp_path / "map.json")
    second = inject_file(source, tmp_path / "b.onnx", map_in=tmp_path / "map.json")
    assert hashlib.sha256(source.read_bytes()).hexdigest() == digest  # the input is never touched
    a, b = _stored(_load(tmp_path / "a.onnx")), _stored(_load(tmp_path / "b.onnx"))
    assert a.keys() == b.keys() and all(np.array_equal(a[name], b[name]) for name in a)
    document = json.loads((tmp_path / "map.json").read_text())
    assert document["chip"] == Chip("stuck", rate=0.03, seed=6).to_dict()
    assert len(document["faults"]) == first.summary()["faults"] == second.summary()["faults"]
    assert set(document["faults"][0]) == {"tensor", "index", "bit", "kind", "before", "after", "address"}


def test_records_from_another_memory_are_refused(models):
    other = WeightMemory.from_tensors([("w", "int8", (100,), "t")])
    with pytest.raises(EdgefaultError, match="not drawn on this model"):
        Injector(models["qoperator"]).apply(sample_faults(other, Chip("flip", count=3)))
