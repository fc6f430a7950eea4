"""Activation cells of ``edgefault campaign``: exact evaluation, time scales, pairing, resume, bad input.

Real ONNX Runtime models (ONNX Runtime's quantizer, in QDQ and QOperator form, and a tiny
hand-built QDQ net whose hidden activation is read twice), real images cut from mnist5k,
real worker processes.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgefault.campaign import CampaignConfig, Cell, ExecutionSettings, ResultsLog, plan_cells, prepare_campaign, run_campaign
from edgefault.campaign.activations import ActivationCells, Buffer, _PermanentFaults
from edgefault.campaign.worker import WorkerModel
from edgefault.errors import EdgefaultError
from edgefault.faults import KINDS, sample_faults
from edgefault.faults.actinject import mask_input_model, mask_model
from edgefault.faults.formats import BufferFormat, apply_bit_faults
from edgefault.runtime import Evaluator, PreparedInputs, SessionSettings, optimized_kernel_counts
from edgefault.onnxio import parse_model
from act_models import residual_qdq
from cli_helpers import assert_one_error_line, run
from onnx_builders import ort_quantized_cnn
from test_campaign import FLAGS, digits_npz, measured

ONE = SessionSettings(intra_op_threads=1)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("act_models")
    logging.getLogger().setLevel(logging.ERROR)  # quantize_static warns about pre-processing
    return [ort_quantized_cnn(folder, "qdq_per_channel", seed=0), ort_quantized_cnn(folder, "qoperator", seed=1)]


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return digits_npz(tmp_path_factory.mktemp("data") / "digits.npz", 150)


def cells_for(path, digits, **options) -> tuple[ActivationCells, PreparedInputs]:
    config = CampaignConfig.create([path], data=digits, input_size="1x28x28", mean="0.1307", std="0.3081",
                                   sites=("activations",))
    prepared = prepare_campaign(config)
    inputs = prepared.inputs[prepared.models[0].inputs]
    return ActivationCells(prepared.models[0], inputs, ONE, 64 << 20, **options), inputs


def residual_cells(**options) -> ActivationCells:
    """The hand-built net (its hidden activation read twice, by an Add), on random inputs."""
    data = residual_qdq(seed=3).SerializeToString()
    images = np.random.default_rng(0).standard_normal((90, 2, 4, 4)).astype(np.float32)
    model = WorkerModel("residual", "0" * 64, data, "input", "logits", "x")
    return ActivationCells(model, PreparedInputs(images, np.zeros(90, np.int64)), ONE, 64 << 20, **options)


def act(kind, rate, chip=0, seed=11, act_format="dense", transient=False, **more) -> Cell:
    return Cell(0, "grid", kind, rate, chip, seed, site="activations", act_format=act_format, transient=transient,
                **more)


def _numpy_path(cells: ActivationCells, faults) -> tuple[np.ndarray, int]:
    """Logits and changed bits of a chip through the segments, every buffer faulted in numpy."""
    by_name, changed = {b.name: b for b in cells.buffers("dense")}, 0
    hits = faults.batch(0, len(cells.inputs.images))

    def hook(name, value):
        nonlocal changed
        if name not in hits:
            return value
        faulty, bits = by_name[name].fault(value, *hits[name])
        changed += bits
        return faulty

    return cells.staged.logits(cells.staged.feed(cells.inputs.images), hook), changed


def test_permanent_dense_paths_agree_exactly(models, digits):
    """Three exact paths of a permanent dense chip give the same logits and changed bits on every image, for
    every kind, on QDQ, QOperator and a net with a twice-read buffer: the campaign's one session with mask
    inputs, the segments with numpy between them, and ``inject --site activations``'s file with constant masks."""
    for number, cells in enumerate([cells_for(models[0], digits)[0], cells_for(models[1], digits)[0],
                                    residual_cells()]):
        images = cells.inputs.images
        proto = parse_model(cells.model.data)
        memory = cells.memory("dense")
        # The mask session only where ONNX Runtime keeps every integer kernel around the masks: on the hand-built
        # net, masks on its twice-read buffer cost a QLinearMatMul (the inject file's too), so it takes the segments.
        kernels = [optimized_kernel_counts(data, ONE) for data in
                   (cells.model.data, mask_input_model(proto, memory).SerializeToString())]
        keeps = (kernels[0].integer_kernels, kernels[0].float_kernels) == \
            (kernels[1].integer_kernels, kernels[1].float_kernels)
        assert cells._mask_ready(memory) == keeps == (number < 2)
        for kind in KINDS:
            cell = act(kind, 0.02, seed=5)
            logits, faults, changed = cells.run(cell)
            records = sample_faults(memory, cell.to_chip())
            assert records.tensor.min() == 0  # the chip faults the first buffer: no cache shortcut
            masked = Evaluator(mask_model(proto, memory, records).SerializeToString(), ONE).logits(images)
            numpy_logits, numpy_changed = _numpy_path(cells, _PermanentFaults(memory, cell.to_chip()))
            assert faults == len(records) > 0 and 0 < changed <= faults
            assert changed == numpy_changed / len(images)
            np.testing.assert_array_equal(logits, masked)
            np.testing.assert_array_equal(logits, numpy_logits)


def test_a_permanent_chip_hits_the_same_addresses_on_every_image(models, digits):
    cells, _ = cells_for(models[0], digits)
    memory = cells.memory("dense")
    chip = act("flip", 0.01).to_chip()
    hits = _PermanentFaults(memory, chip).batch(0, 1)
    records = sample_faults(memory, chip)
    seen = {}

    def hook(name, value):
        buffer = next(b for b in cells.buffers("dense") if b.name == name)
        faulty, _ = buffer.fault(value, *hits[name]) if name in hits else (value, 0)
        seen[name] = (value.reshape(len(value), -1) ^ faulty.reshape(len(value), -1)).view(np.uint8)
        return faulty

    cells.staged.logits(cells.staged.feed(cells.inputs.images), hook)
    for position, name in enumerate(memory.names):
        rows = records.tensor == position
        expected = np.zeros(memory.tensors[position].elements, np.uint8)
        np.bitwise_or.at(expected, records.index[rows], (1 << records.bit[rows]).astype(np.uint8))
        assert np.all(seen[name] == expected), name  # every image: exactly the chip's bits, flipped


def test_transient_faults_do_not_depend_on_batch_size_and_differ_per_image(models, digits):
    base, _ = cells_for(models[0], digits)
    for act_format in ("dense", "bitmap"):
        cell = act("flip", 0.003, act_format=act_format, transient=True)
        reference = base.run(cell)
        for batch in (7, 64, 150):
            other, _ = cells_for(models[0], digits, batch_size=batch)
            logits, faults, changed = other.run(cell)
            np.testing.assert_array_equal(logits, reference[0])
            assert (faults, changed) == reference[1:]
    permanent, transient = base.run(act("flip", 0.01)), base.run(act("flip", 0.01, transient=True))
    assert permanent[1] == int(permanent[1])  # the same faulty cells for every image
    assert transient[1] != int(transient[1])  # a fresh count per image: the mean is not a whole number
    # Nested across rates, image by image: a transient chip's faults at 0.003 lie among those at 0.01.
    smaller, larger = base.run(act("flip", 0.003, transient=True)), transient
    assert smaller[1] < larger[1]


def test_encoded_formats_without_faults_decode_exactly(models, digits):
    cells, _ = cells_for(models[1], digits)
    clean = cells.run(act("flip", 0.0))[0]
    for act_format in ("bitmap", "rle"):
        for transient in (False, True):
            np.testing.assert_array_equal(cells.run(act("flip", 0.0, act_format=act_format, transient=transient))[0],
                                          clean)
        for buffer in cells.buffers(act_format):  # the real activations of every buffer, through the format
            codes = cells._clean()[buffer.name].reshape(len(clean), -1).astype(np.int64)
            np.testing.assert_array_equal(buffer.format.decode(buffer.format.encode(codes), buffer.size), codes)


def test_bitmap_faults_shift_values_as_documented():
    """A flag flipped 0 -> 1 inserts the next stored value and shifts the rest back (the worked example)."""
    buffer = Buffer("t", 0, (5,), np.dtype(np.uint8), cells_format("bitmap", bits=4))
    faulty, changed = buffer.fault(np.array([[0, 5, 0, 0, 3], [0, 5, 0, 0, 3]], np.uint8), None,
                                   np.array([2]), np.array([0], np.uint8))
    assert faulty.tolist() == [[0, 5, 3, 0, 0]] * 2 and changed == 2
    transient, _ = buffer.fault(np.array([[0, 5, 0, 0, 3], [0, 5, 0, 0, 3]], np.uint8), np.array([1]),
                                np.array([2]), np.array([0], np.uint8))
    assert transient.tolist() == [[0, 5, 0, 0, 3], [0, 5, 3, 0, 0]]  # only image 1 met the fault


def cells_format(name, bits):
    return BufferFormat(name, bits=bits, zero_point=0)


@pytest.mark.parametrize("name", ["dense", "bitmap", "rle"])
@pytest.mark.parametrize("dtype,zero_point", [(np.uint8, 3), (np.int8, -2)])
def test_buffer_faults_equal_encode_fault_decode_on_the_cells(name, dtype, zero_point):
    """The campaign patches a buffer's fields (codes, flags, values, header, run/code slots) in place of its
    cells: on random codes and random faults of every kind, permanent and transient, the result and the
    changed bits are exactly those of encoding the cells, faulting them and decoding them."""
    rng = np.random.default_rng(7)
    fmt = BufferFormat(name, 8, zero_point, run_bits=3, signed=np.dtype(dtype).kind == "i")
    buffer = Buffer("t", 0, (3, 7), np.dtype(dtype), fmt)
    low, high = fmt.code_range
    codes = np.where(rng.random((6, 3, 7)) < 0.6, zero_point, rng.integers(low, high + 1, (6, 3, 7))).astype(dtype)
    cells_per_image = buffer.capacity
    for rate in (0.01, 0.1):
        for transient in (False, True):
            hit = np.flatnonzero(rng.random(6 * cells_per_image if transient else cells_per_image) < rate)
            kinds = rng.integers(0, 4, hit.size).astype(np.uint8)
            rows, cells = np.divmod(hit, cells_per_image) if transient else (None, hit)
            faulty, changed = buffer.fault(codes, rows, cells, kinds)
            bits = fmt.encode(codes.reshape(6, -1))
            if transient:
                after = apply_bit_faults(bits.reshape(-1), hit, kinds).reshape(bits.shape)
            else:
                after = apply_bit_faults(bits, cells, kinds)
            np.testing.assert_array_equal(faulty, fmt.decode(after, 21).reshape(codes.shape).astype(dtype))
            assert changed == np.count_nonzero(after != bits)


def test_activation_and_weight_cells_share_chip_seeds_and_resume(models, digits, tmp_path):
    config = CampaignConfig.create(models, data=digits, input_size="1x28x28", mean="0.1307", std="0.3081",
                                   kinds=("flip",), rates=(0.003, 0.03), chips=2, sites=("weights", "activations"),
                                   act_formats=("dense", "bitmap"))
    prepared = prepare_campaign(config)
    cells = plan_cells(config, prepared.tensors, prepared.bit_widths, prepared.act_tensors)
    seeds = {}
    for cell in cells[len(models):]:
        seeds.setdefault((cell.kind, cell.chip), set()).add(cell.seed)
    assert {cell.memory for cell in cells[len(models):]} == {"weights", "activations/dense", "activations/bitmap"}
    assert all(len(found) == 1 for found in seeds.values())  # one seed per chip, whatever the memory or model

    full = tmp_path / "full"
    first = run_campaign(config, full, ExecutionSettings(workers=2))
    assert first.summary["cells"] == {"planned": 26, "done": 26, "failed": 0}
    records = ResultsLog(full / "results.jsonl").read(repair=False)
    by_memory = {(r["site"], r["format"], r["transient"]) for r in records if r["mode"] == "grid"}
    assert by_memory == {("weights", None, False), ("activations", "dense", False), ("activations", "bitmap", False)}
    pairs = first.summary["memory_paired"]
    assert {(p["memory_a"], p["memory_b"]) for p in pairs} >= {("activations/dense", "activations/bitmap")}
    assert any(p["memory"] == "activations/bitmap" for p in first.summary["paired"])
    assert (full / "accuracy_vs_rate_activations_bitmap.png").is_file() and (full / "memory_paired.csv").is_file()

    # Interrupted after half its cells, a rerun on one worker finishes with the same numbers.
    part = tmp_path / "part"
    part.mkdir()
    (part / "campaign.json").write_bytes((full / "campaign.json").read_bytes())
    lines = (full / "results.jsonl").read_bytes().splitlines(keepends=True)
    (part / "results.jsonl").write_bytes(b"".join(lines[:13]))
    resumed = run_campaign(config, part, ExecutionSettings(workers=1, cache_mb=0))
    assert resumed.ran == 13 and resumed.resumed == 13
    assert measured(part) == measured(full)


def test_transient_campaign_does_not_depend_on_workers(models, digits, tmp_path):
    config = CampaignConfig.create(models[:1], data=digits, input_size="1x28x28", mean="0.1307", std="0.3081",
                                   kinds=("sa1",), rates=(0.01,), chips=3, sites=("activations",),
                                   act_formats=("rle",), transient=True)
    one = run_campaign(config, tmp_path / "one", ExecutionSettings(workers=1))
    two = run_campaign(config, tmp_path / "two", ExecutionSettings(workers=2, cache_mb=0))
    assert one.summary["cells"]["done"] == 4
    assert measured(tmp_path / "one") == measured(tmp_path / "two")


def test_old_campaign_settings_resume_and_other_memories_are_refused():
    old = {"models": ["a.onnx"], "model_hashes": ["0" * 64], "chip_seeding": "per-chip"}  # no memory fields: weights
    saved = CampaignConfig.from_dict(old)
    assert (saved.sites, saved.act_formats, saved.transient) == (("weights",), ("dense",), False)
    CampaignConfig(models=("a.onnx",), model_hashes=("0" * 64,)).check_same(saved, "runs/old")
    with pytest.raises(EdgefaultError, match="sites: .*weights.* there"):
        dataclasses.replace(saved, sites=("weights", "activations")).check_same(saved, "runs/old")
    weight_key = Cell(0, "grid", "flip", 1e-3, 0, 1).key("ab" * 32)
    assert weight_key == "abababababababab/grid//flip/0x1.0624dd2f1a9fcp-10/0"  # the key campaigns always had


@pytest.mark.parametrize("extra, fragment", [
    (["--transient"], "--transient applies to activation faults"),
    (["--sites", "activations", "--act-format", "sparse"], "unknown 'sparse'"),
    (["--sites", "memory"], "--sites: unknown 'memory'"),
    (["--act-format", "bitmap"], "--act-format applies to activation faults"),
])
def test_bad_memory_options_are_one_line_and_write_nothing(models, digits, tmp_path, capsys, extra, fragment):
    out = tmp_path / "c"
    code, stdout, err = run(["campaign", str(models[0]), "--data", digits, "--out", str(out), *FLAGS, *extra], capsys)
    assert_one_error_line(code, stdout, err, fragment)
    assert not out.exists()


def test_activation_campaign_of_a_float_model_is_refused(digits, tmp_path, capsys):
    weights = numpy_helper.from_array(np.ones((784, 10), np.float32), "w")
    graph = helper.make_graph([helper.make_node("Flatten", ["input"], ["flat"]),
                               helper.make_node("MatMul", ["flat", "w"], ["logits"])], "float",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 28, 28])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], [weights])
    model = tmp_path / "float.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), model)
    out = tmp_path / "c"
    code, stdout, err = run(["campaign", str(model), "--data", digits, "--out", str(out), "--sites", "activations",
                             *FLAGS], capsys)
    assert_one_error_line(code, stdout, err, "no integer activations")
    assert not out.exists()
