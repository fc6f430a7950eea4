"""The weight memory at its stored width, one test family per storage form: INT4/UINT4 (odd lengths), INT16/UINT16,
MatMulNBits (4 and 8 bits), Constant nodes, a shared weight, and one net quantized as QDQ and as QOperator."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from edgefault.errors import EdgefaultError
from edgefault.faults import Chip, Injector, discover, sample_faults, weight_memory
from edgefault.faults.codes import decode_tensor
from edgefault.faults.discover import constant_tensors
from weight_forms import FORMS, INPUT_FEATURES, K, quantized_both_ways, unfaultable, wide_16bit

RATE = 0.1


def _raw(model: onnx.ModelProto) -> dict[str, bytes]:
    """The raw bytes of every constant tensor, typed fields packed as ONNX would store them raw."""
    raw = {}
    for name, (tensor, _) in constant_tensors(model.graph).items():
        raw[name] = tensor.raw_data if tensor.HasField("raw_data") else numpy_helper.from_array(
            numpy_helper.to_array(tensor)).raw_data
    return raw


def _bits(data: bytes) -> np.ndarray:
    return np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")


def _run(model_bytes: bytes, features: int) -> np.ndarray:
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    return session.run(None, {"input": np.ones((2, features), np.float32)})[0]


@pytest.fixture(scope="module", params=sorted(FORMS))
def form(request):
    model = FORMS[request.param]()
    return request.param, model, model.SerializeToString()


def test_memory_holds_every_stored_code_at_its_width(form):
    name, model, _ = form
    memory = discover(model).memory(include_bias=True)
    widths = {"int4": 4, "uint4": 4, "int16": 16, "uint16": 16, "matmulnbits4": 4, "matmulnbits8": 8,
              "constant_nodes": 8}
    assert {t.bits for t in memory.tensors if not t.is_bias} == {widths[name]}
    if name in ("int4", "uint4"):
        assert memory.tensors[0].size == K * 3 == 15 and memory.nbits == 60  # odd: the last byte holds one code
    if name == "matmulnbits4":
        assert memory.tensors[0].size == 4 * 32 and memory.tensors[0].packing == "packed"
    if name == "constant_nodes":  # two Constant weights (one behind an Identity), a Constant bias, a shared weight
        assert memory.names == ("c1.w", "c2.raw", "c2.b", "shared.w")
        assert [t.source for t in memory.tensors] == ["Constant", "Constant", "Constant", "initializer"]
        assert discover(model).memory().names == ("c1.w", "c2.raw", "shared.w")


def test_faults_change_only_stored_weight_bits_and_the_map_agrees(form):
    name, model, data = form
    injector = Injector(data)
    memory = injector.memory()
    faulty, fault_map = injector.inject(Chip("flip", rate=RATE, seed=3))
    n = memory.nbits
    assert abs(fault_map.changed_bits - n * RATE) <= 6 * np.sqrt(n * RATE * (1 - RATE))
    assert fault_map.changed_bits == len(fault_map.records) > 0
    clean_raw, faulty_raw = _raw(model), _raw(onnx.load_from_string(faulty))
    assert clean_raw.keys() == faulty_raw.keys()
    for tensor_name in clean_raw:
        if tensor_name not in memory.names:
            assert clean_raw[tensor_name] == faulty_raw[tensor_name], tensor_name
    records = fault_map.records
    for position, tensor in enumerate(memory.tensors):
        rows = records.tensor == position
        expected = _bits(clean_raw[tensor.name]).copy()
        expected[records.index[rows] * tensor.container_bits + records.bit[rows]] ^= 1  # ONNX's bit of each cell
        assert np.array_equal(expected, _bits(faulty_raw[tensor.name])), tensor.name
        before = decode_tensor(np.frombuffer(clean_raw[tensor.name], np.uint8), tensor).reshape(-1)
        after = decode_tensor(np.frombuffer(faulty_raw[tensor.name], np.uint8), tensor).reshape(-1)
        assert np.array_equal(fault_map.before[rows], before[records.index[rows]])
        assert np.array_equal(fault_map.after[rows], after[records.index[rows]])
    summary = fault_map.summary()
    assert summary["memory_bits"] == n and summary["coverage"]["bits"] == n
    _run(faulty, INPUT_FEATURES.get(name, K))  # the faulty model loads and runs


@pytest.mark.parametrize("kind", ["sa0", "sa1"])
def test_stuck_cells_move_bits_only_towards_their_value(form, kind):
    _, model, data = form
    injector = Injector(data)
    faulty, fault_map = injector.inject(Chip(kind, rate=0.3, seed=1))
    clean_raw, faulty_raw = _raw(model), _raw(onnx.load_from_string(faulty))
    moved = 0
    for name in injector.memory().names:
        old, new = _bits(clean_raw[name]), _bits(faulty_raw[name])
        assert not np.any(new > old) if kind == "sa0" else not np.any(new < old)
        moved += int(np.sum(old != new))
    assert moved == fault_map.changed_bits > 0


def test_flipping_twice_restores_every_byte(form):
    _, model, data = form
    chip = Chip("flip", rate=RATE, seed=5)
    once, _ = Injector(data).inject(chip)
    twice, _ = Injector(once).inject(chip)
    assert _raw(onnx.load_from_string(twice)) == _raw(model)


def test_a_4bit_sign_flip_is_twos_complement():
    injector = Injector(FORMS["int4"]().SerializeToString())
    codes = injector.arrays()["w"].reshape(-1)
    records = sample_faults(injector.memory(), Chip("flip", count=15, seed=0, bits=[3]))  # every sign bit
    _, fault_map = injector.apply(records)
    assert np.array_equal(fault_map.before, codes)
    assert np.array_equal(fault_map.after, np.where(codes < 0, codes + 8, codes - 8))
    assert fault_map.after.min() >= -8 and fault_map.after.max() <= 7


def test_qdq_and_qoperator_forms_have_the_same_memory_bit_for_bit(tmp_path):
    paths = quantized_both_ways(tmp_path)
    layouts, contents = [], []
    for form in ("QDQ", "QOperator"):
        injector = Injector(paths[form])
        memory = injector.memory(include_bias=True)
        layouts.append([(t.name, t.dtype, t.shape, t.start, t.bits) for t in memory.tensors])
        contents.append({name: array.tobytes() for name, array in injector.arrays(include_bias=True).items()})
    assert layouts[0] == layouts[1] and contents[0] == contents[1]
    dtypes = [entry[1] for entry in layouts[0]]
    assert dtypes.count("uint8") == 2  # the Add and Mul constants: QLinearAdd/QLinearMul parameters in QOperator
    chip = Chip("stuck", rate=0.05, seed=2, include_bias=True)
    maps = [Injector(paths[form]).inject(chip)[1] for form in ("QDQ", "QOperator")]
    assert np.array_equal(maps[0].records.address, maps[1].records.address)
    assert np.array_equal(maps[0].after, maps[1].after)


def test_stored_bits_declares_k_bit_codes_in_int8_and_refuses_codes_that_do_not_fit():
    model = FORMS["constant_nodes"]()
    with pytest.raises(EdgefaultError, match=r"'c1.w' \(INT8, DequantizeLinear\).*outside the 4-bit range"):
        discover(model, stored_bits=4).memory()
    small = onnx.load_from_string(model.SerializeToString())
    for node in small.graph.node:
        for attribute in node.attribute:
            if attribute.name == "value" and attribute.t.data_type == onnx.TensorProto.INT8:
                values = numpy_helper.to_array(attribute.t) % 8 - 4  # codes in -4..3
                attribute.t.CopyFrom(numpy_helper.from_array(values.astype(np.int8)))
    for tensor in small.graph.initializer:
        if tensor.name == "shared.w":
            codes = (numpy_helper.to_array(tensor) % 8 - 4).astype(np.int8)
            tensor.CopyFrom(numpy_helper.from_array(codes, "shared.w"))
    injector = Injector(small.SerializeToString(), stored_bits=3)
    memory = injector.memory()
    assert memory.nbits == 3 * (20 + 12 + 9) and {t.storage for t in memory.tensors} == {"int3 in int8"}
    _, fault_map = injector.inject(Chip("flip", rate=0.3, seed=1))
    assert fault_map.records.bit.max() <= 2 and fault_map.after.min() >= -4 and fault_map.after.max() <= 3
    small.metadata_props.add(key="edgefault.stored_bits", value=json.dumps({"c2.raw": 3}))  # a mixed-width model
    mixed = discover(small)
    assert [t.bits for t in mixed.memory().tensors] == [8, 3, 8] and mixed.stored_bits == "metadata edgefault.stored_bits"
    small.metadata_props[-1].value = json.dumps({"nope": 3})
    with pytest.raises(EdgefaultError, match="names tensor 'nope'"):
        discover(small)


def test_what_cannot_be_faulted_is_named():
    found = discover(unfaultable())
    assert [s.name for s in found.skipped] == ["f8.w", "q.w"]
    with pytest.raises(EdgefaultError, match=r"cannot fault tensor 'f8.w' \(FLOAT8E4M3FN, DequantizeLinear\)"):
        found.memory()
    assert any("QuantizeLinear" in line for line in found.warnings())
    mixed = wide_16bit()
    mixed.graph.initializer.extend(unfaultable().graph.initializer[:1])
    mixed.graph.node.insert(0, unfaultable().graph.node[0])
    mixed.graph.node[0].output[0] = "unused"
    partial = discover(mixed)
    line = partial.coverage_line(partial.memory())
    assert line.startswith("weight memory: 1 tensor, 240 stored bits (int16: 1 tensor, 240 bits)")
    assert "1 not faulted" in line and "f8.w" in partial.warnings()[0]


def test_a_model_of_only_biases_asks_for_include_bias():
    model = FORMS["constant_nodes"]()
    for tensor_name in ("c1.w", "c2.raw", "shared.w"):
        assert tensor_name in weight_memory(model).names
    found = discover(model)
    only_bias = type(found)(tuple(t for t in found.tensors if t.is_bias), found.protos)
    with pytest.raises(EdgefaultError, match="`include_bias`"):
        only_bias.memory()
    assert json.loads(json.dumps(found.coverage(found.memory())))["biases_left_out"] == 1
