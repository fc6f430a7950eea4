"""Permanent activation faults in a faulty ONNX file: exactly the map's stored bits, every image, integer kernels."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from act_models import float_only, residual_qdq
from cli_helpers import assert_one_error_line, run
from edgefault.errors import EdgefaultError
from edgefault.faults import Chip, sample_faults
from edgefault.faults.actinject import inject_sites_file
from edgefault.faults.activations import ActivationMemory
from edgefault.runtime.actprobe import activation_memory, read_activations
from edgefault.runtime.graph import optimized_kernel_counts
from weight_forms import quantized_both_ways


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("act_inject")
    onnx.save(residual_qdq(), folder / "qdq.onnx")
    return {"qdq": folder / "qdq.onnx", "qoperator": quantized_both_ways(folder / "forms")["QOperator"]}


def _bits(values: np.ndarray, width: int) -> np.ndarray:
    """[images, elements] codes -> [images, elements * width] bits, least significant first."""
    raw = values.reshape(values.shape[0], -1).astype(np.int64) & ((1 << width) - 1)
    return ((raw[..., None] >> np.arange(width)) & 1).reshape(values.shape[0], -1)


def _read_and_clean(path, memory, images):
    """What the consumers read (the faulty buffer) and what the producers wrote, per tensor."""
    model = onnx.load(path)
    produced = {o for node in model.graph.node for o in node.output}
    names = [n for t in memory.tensors for n in (t.name, f"{t.name}/edgefault_clean") if n in produced or
             n == t.name]
    values = read_activations(model, names, {model.graph.input[0].name: images})
    return {t.name: (values[t.name], values.get(f"{t.name}/edgefault_clean", values[t.name])) for t in memory.tensors}


def _images(path, count=6):
    model = onnx.load(path)
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:]]
    return np.random.default_rng(0).standard_normal((count, *shape)).astype(np.float32)


@pytest.mark.parametrize("form", ["qdq", "qoperator"])
@pytest.mark.parametrize("kind", ["flip", "sa0", "sa1"])
def test_only_the_maps_stored_bits_change_on_every_image(models, tmp_path, form, kind):
    path = models[form]
    out, map_path = tmp_path / "f.onnx", tmp_path / "f.json"
    done = inject_sites_file(path, out, "activations", Chip(kind, rate=0.08, seed=2), map_out=map_path,
                             memory_of=activation_memory)
    memory = done.memory
    entries = [e for e in json.loads(map_path.read_text())["faults"] if e["site"] == "activations"]
    assert len(entries) == len(done.records) > 0
    read = _read_and_clean(out, memory, _images(path))
    for position, tensor in enumerate(memory.tensors):
        faulty, clean = (_bits(v, tensor.bits) for v in read[tensor.name])
        mine = [e for e in entries if e["tensor"] == tensor.name]
        cells = np.array([e["index"] * tensor.bits + e["bit"] for e in mine], dtype=np.int64)
        changed = np.flatnonzero((faulty != clean).any(axis=0))
        assert set(changed.tolist()) <= set(cells.tolist())  # nothing outside the map's addresses
        if kind == "flip":  # every image meets exactly the map's cells, inverted
            expected = np.zeros(tensor.nbits, dtype=bool)
            expected[cells] = True
            np.testing.assert_array_equal(faulty != clean, np.broadcast_to(expected, faulty.shape))
        else:  # stuck cells read back their value on every image
            assert np.all(faulty[:, cells] == (1 if kind == "sa1" else 0))
            moved = faulty != clean
            assert np.all(faulty[moved] == (1 if kind == "sa1" else 0))
        addresses = memory.bit_starts[position] + cells
        assert addresses.tolist() == [e["address"] for e in mine]


@pytest.mark.parametrize("form", ["qdq", "qoperator"])
def test_the_faulty_model_keeps_its_integer_kernels(models, tmp_path, form):
    out = tmp_path / "f.onnx"
    inject_sites_file(models[form], out, "activations", Chip("flip", rate=0.05, seed=1), memory_of=activation_memory)
    clean, faulty = (optimized_kernel_counts(p.read_bytes()) for p in (models[form], out))
    assert faulty.float_kernels == 0 and faulty.integer_kernels == clean.integer_kernels > 0
    assert faulty.ops.get("BitwiseXor", 0) > 0


def test_fault_counts_nesting_and_the_same_seed_gives_the_same_file(models, tmp_path):
    memory = ActivationMemory.from_tensors([("a", "uint8", (6, 14, 14), 0, 0.1, "Conv"),
                                            ("b", "int8", (400,), 0, 0.1, "Gemm")])
    for seed in range(3):  # fault counts within 6 sigma of the binomial
        count = len(sample_faults(memory, Chip("flip", rate=0.01, seed=seed)))
        mean = 0.01 * memory.nbits
        assert abs(count - mean) < 6 * np.sqrt(mean * 0.99)
    low = sample_faults(memory, Chip("flip", rate=0.01, seed=7)).address
    high = sample_faults(memory, Chip("flip", rate=0.011, seed=7)).address
    assert np.isin(low, high).all() and high.size > low.size
    outputs = []
    for name in ("one", "two"):
        out = tmp_path / f"{name}.onnx"
        inject_sites_file(models["qdq"], out, "activations", Chip("stuck", rate=0.05, seed=4))
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]


def test_map_in_replays_the_faults_and_all_faults_both_memories(models, tmp_path):
    first, map_path = tmp_path / "f.onnx", tmp_path / "f.json"
    done = inject_sites_file(models["qdq"], first, "all", Chip("flip", rate=0.03, seed=5), map_out=map_path)
    document = json.loads(map_path.read_text())
    sites = {e.get("site", "weights") for e in document["faults"]}
    assert sites == {"weights", "activations"} and document["sites"] == ["weights", "activations"]
    assert len(done.weights.records) > 0 and len(done.records) > 0
    again = tmp_path / "again.onnx"
    inject_sites_file(models["qdq"], again, "all", map_in=map_path)
    assert again.read_bytes() == first.read_bytes()
    only = tmp_path / "only.onnx"
    replayed = inject_sites_file(models["qdq"], only, "activations", map_in=map_path)
    np.testing.assert_array_equal(replayed.records.address, done.records.address)


@pytest.mark.parametrize("extra,fragment", [
    (["--transient"], "a model file can hold only permanent faults"),
    (["--act-format", "sparse"], "'sparse' is not one of"),
    (["--act-format", "bitmap"], "dense activation faults only"),
])
def test_bad_activation_options_give_one_line_and_no_output(models, tmp_path, capsys, extra, fragment):
    out = tmp_path / "f.onnx"
    argv = ["inject", str(models["qdq"]), "--site", "activations", "--kind", "flip", "--rate", "0.01", "--out",
            str(out), "--map", str(tmp_path / "f.json"), *extra]
    assert_one_error_line(*run(argv, capsys), fragment)
    assert list(tmp_path.iterdir()) == []


def test_a_float_model_has_no_activations_to_fault(tmp_path, capsys):
    source = tmp_path / "float.onnx"
    onnx.save(float_only(), source)
    argv = ["inject", str(source), "--site", "activations", "--kind", "flip", "--rate", "0.01", "--out",
            str(tmp_path / "f.onnx")]
    assert_one_error_line(*run(argv, capsys), "no integer activations")
    assert [p.name for p in tmp_path.iterdir()] == ["float.onnx"]


def test_the_cli_prints_the_coverage_and_the_faults(models, tmp_path, capsys):
    argv = ["inject", str(models["qdq"]), "--site", "activations", "--kind", "flip", "--rate", "0.05", "--seed", "1",
            "--out", str(tmp_path / "f.onnx")]
    code, out, err = run(argv, capsys)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == ("activation memory: 5 tensors, 63 values, 504 stored bits per image "
                        "(uint8: 4 tensors, int8: 1 tensor)")
    assert "flip faults in" in lines[1] and lines[-1] == f"wrote {tmp_path / 'f.onnx'}"


def test_an_opset_whose_ops_change_meaning_at_18_is_refused(tmp_path):
    model = residual_qdq()
    reduce = onnx.helper.make_node("ReduceMean", ["logits"], ["mean"], axes=[1])  # axes became an input at 18
    model.graph.node.append(reduce)
    model.graph.output.append(onnx.helper.make_tensor_value_info("mean", onnx.TensorProto.FLOAT, ["N", 1]))
    source = tmp_path / "m.onnx"
    onnx.save(model, source)
    with pytest.raises(EdgefaultError, match="ReduceMean change meaning"):
        inject_sites_file(source, tmp_path / "f.onnx", "activations", Chip("flip", rate=0.1, seed=1))
    assert not (tmp_path / "f.onnx").exists()


def test_the_cli_faults_both_sites_and_replays_one(models, tmp_path, capsys):
    map_path = tmp_path / "a.json"
    argv = ["inject", str(models["qdq"]), "--site", "all", "--kind", "flip", "--rate", "0.03", "--seed", "5",
            "--out", str(tmp_path / "a.onnx"), "--map", str(map_path), "--json"]
    code, out, _ = run(argv, capsys)
    report = json.loads(out)
    assert code == 0 and report["faults"] > 0 and report["activations"]["faults"] > 0
    argv = ["inject", str(models["qdq"]), "--site", "activations", "--map-in", str(map_path), "--out",
            str(tmp_path / "r.onnx"), "--json"]
    code, out, _ = run(argv, capsys)
    assert code == 0 and json.loads(out)["activations"]["faults"] == report["activations"]["faults"]
