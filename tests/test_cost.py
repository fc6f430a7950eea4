"""``edgefault cost``: MAC counts, lane-imbalance cycles and storage sizes against hand counts; the accelerator file."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest

from cli_helpers import assert_one_error_line, run
from edgefault.cli.main import main
from edgefault.cost import load_accelerator
from edgefault.cost.accelerator import DEFAULT_ACCELERATOR
from edgefault.cost.tally import LayerTally, conv_lane_counts
from edgefault.runtime.activations import MacLayer, QuantizedTensor, layer_macs
from onnx_builders import digits_npz, ort_quantized_cnn

FLAGS = ["--input-size", "1x28x28", "--mean", "0.1307", "--std", "0.3081"]
DEFAULT_TEXT = (Path(__file__).parents[1] / "edgefault" / "cost" / DEFAULT_ACCELERATOR).read_text()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return ort_quantized_cnn(tmp_path_factory.mktemp("cost_models"), "qdq_per_channel")


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return digits_npz(tmp_path_factory.mktemp("cost_data") / "digits.npz", 200, seed=1)


@pytest.fixture(scope="module")
def cost_json(model, digits, tmp_path_factory):
    """One ``cost --json --out`` run on the ORT-quantized CNN (in-process), shared by the tests that read it."""
    out = tmp_path_factory.mktemp("cost_out") / "cost"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout), pytest.raises(SystemExit) as exited:
        main(["cost", str(model), "--data", digits, "--limit", "40", "--json", "--out", str(out), *FLAGS])
    assert exited.value.code == 0
    return json.loads(stdout.getvalue()), out


def test_mac_counts_match_hand_computed_shapes():
    # Conv 6 -> 4 channels, 2 groups, 3x3, stride 2, pad 1 on 7x7: 4x4 outputs.
    conv = MacLayer("c", "Conv", "x", "conv", out_channels=4, group=2, kernel=(3, 3), strides=(2, 2),
                    dilations=(1, 1), pads=(1, 1, 1, 1))
    dense, zeros = layer_macs(conv, np.zeros((1, 6, 7, 7), bool), 1)
    assert dense == 4 * (6 // 2) * 3 * 3 * 4 * 4  # Cout x Cin/groups x kh x kw x Hout x Wout = 1728
    # Per axis the 4 outputs x 3 taps read positions -1..7: 2 of 12 fall on padding (-1 and 7), so
    # 144 - 10 * 10 = 44 of the 144 (position, tap) pairs are padding: 44 x Cout/groups x Cin MACs.
    assert zeros.tolist() == [44 * 2 * 6]
    dense, zeros = layer_macs(conv, np.ones((2, 6, 7, 7), bool), 2)
    assert zeros.tolist() == [dense, dense]  # all-zero inputs: every MAC skippable
    gemm = MacLayer("fc", "Gemm", "x", "linear", out_features=3, in_features=8)
    mask = np.zeros((2, 8), bool)
    mask[1, :5] = True
    dense, zeros = layer_macs(gemm, mask, 2)
    assert dense == 24 and zeros.tolist() == [0, 15]


def test_lane_imbalance_cycles_on_a_known_zero_pattern():
    # Conv 3 -> 3 channels, 1x2 kernel, on a 1x3 input: 2 output positions, K = 2 taps x 3 channels = 6.
    # Reduction order: (tap 0: c0 c1 c2, tap 1: c0 c1 c2) = k 0..5, lane k mod 4.
    layer = MacLayer("c", "Conv", "x", "conv", out_channels=3, group=1, kernel=(1, 2), strides=(1, 1),
                     dilations=(1, 1), pads=(0, 0, 0, 0))
    codes = np.zeros((1, 3, 1, 3), np.uint8)
    codes[0, 0, 0] = [5, 0, 5]  # channel 0 non-zero at w = 0 and 2
    codes[0, 1, 0] = [5, 5, 0]  # channel 1 non-zero at w = 0 and 1
    # Position 0 reads w = 0 (tap 0: k0=1 k1=1 k2=0) and w = 1 (tap 1: k3=0 k4=1 k5=0):
    #   lanes (k0+k4, k1+k5, k2, k3) = (2, 1, 0, 0): 3 non-zeros, ideal ceil(3/4) = 1, busiest lane 2.
    # Position 1 reads w = 1 (k0=0 k1=1 k2=0) and w = 2 (k3=1 k4=0 k5=0):
    #   lanes (0, 1, 0, 1): 2 non-zeros, ideal 1, busiest 1.  Dense: ceil(6/4) = 2 per position.
    counts = conv_lane_counts(codes != 0, layer, 4)
    assert counts[0, 0].T.tolist() == [[2, 1, 0, 0], [0, 1, 0, 1]]  # per position, the lanes' non-zeros
    # 2 lane groups for 3 output channels: 2 rounds per position.
    tally = LayerTally(layer, QuantizedTensor("x", "QuantizeLinear", (0,)), lanes=4, groups=2, activation_bits=8,
                       run_bits=5, buffer_bits=1e9)
    tally.add(codes, 1)
    assert (tally.dense_cycles, tally.ideal_cycles, tally.imbalanced_cycles) == (8, 4, 6)
    assert tally.dense_macs == 3 * 3 * 2 * 2 and tally.zero_macs == 3 * (12 - 5)
    assert tally.encoded["bitmap"] == 9 + 8 * 4 and tally.encoded["dense"] == 9 * 8
    assert tally.skipped_weights == 1 * 3 * 2  # channel 2 is all zero: its 3 x 1x2 weights are not fetched


def test_cost_json_matches_eval_and_the_formats(model, digits, cost_json, capsys):
    report, out = cost_json
    assert {"model", "accelerator", "layers", "total"} <= set(report) and report["images"] == 40
    code, text, err = run(["eval", str(model), "--data", digits, "--limit", "40", "--json", "--no-timing", *FLAGS],
                          capsys)
    assert code == 0, err
    eval_layers = json.loads(text)["sparsity"]["layers"]
    assert [layer["name"] for layer in report["layers"]] == [layer["node"] for layer in eval_layers]
    for layer, probe in zip(report["layers"], eval_layers):
        assert set(layer["cycles"]) == {"dense", "gating", "skipping_ideal", "skipping_imbalanced"}
        assert set(layer["energy_pj"]) == {"dense", "gating", "skipping"}
        # One definition of skippable MACs: eval's share times eval's MACs is cost's zero-input MACs.
        assert layer["macs"] == probe["macs_per_image"]
        assert layer["zero_input_macs"] == pytest.approx(probe["skip_share"] * probe["macs_per_image"])
        bits = layer["activation_bits"]
        values = bits["dense"] / 8  # N codes of 8 bits
        assert bits["bitmap"] == pytest.approx(values + bits["values"])  # N flags + 8 bits per non-zero, exactly
        assert bits["values"] <= bits["dense"] and bits["rle"] > 0
        # Lane imbalance: never better than ideal skipping, never worse than dense.
        speedup = layer["speedup"]
        assert 1.0 <= speedup["skipping_imbalanced"] <= speedup["skipping_ideal"] + 1e-12
        assert speedup["gating"] == 1.0 and layer["energy_pj"]["gating"] <= layer["energy_pj"]["dense"]
    total = report["total"]
    assert total["macs"] == sum(layer["macs"] for layer in report["layers"])
    assert total["speedup"]["skipping_imbalanced"] == pytest.approx(
        total["cycles"]["dense"] / total["cycles"]["skipping_imbalanced"])
    assert 0.0 < total["energy_saving"]["skipping_imbalanced"] < 1.0
    assert sorted(p.name for p in out.iterdir()) == ["cost.json", "cost.png", "cost.txt"]
    assert json.loads((out / "cost.json").read_text())["total"] == total


def test_small_buffers_send_traffic_off_chip(model, digits, tmp_path, capsys):
    text = DEFAULT_TEXT.replace("activation_buffer_kib = 32", "activation_buffer_kib = 0.01").replace(
        "weight_buffer_kib = 1024", "weight_buffer_kib = 0.01")
    path = tmp_path / "tiny.toml"
    path.write_text(text)
    code, out, err = run(["cost", str(model), "--data", digits, "--limit", "8", "--json", "--accelerator",
                          str(path), *FLAGS], capsys)
    assert code == 0, err
    for layer in json.loads(out)["layers"]:
        assert layer["offchip"] == {"weights": 1.0, "activations": 1.0}
        parts = layer["energy_parts_pj"]["dense"]
        assert parts["dram"] > 0 and parts["activation_sram"] == 0 and parts["weight_sram"] == 0


@pytest.mark.parametrize("edit, fragment", [
    (("lanes = 16\n", ""), "missing entry lanes"),
    (("dram = 1300.0", "dram = -1.0"), "energy_pj.dram must be a finite number >= 0, got -1.0"),
    (("multiply = 0.2", "multiply = nan"), "energy_pj.multiply must be a finite number >= 0, got nan"),
    (("macs = 256", "macs = -256"), "macs must be a positive integer, got -256"),
    (("index_add = 0.03", "index_sub = 0.03"), "missing entry energy_pj.index_add"),
    (('format = "bitmap"', 'format = "csr"'), "format must be one of dense, bitmap, rle"),
])
def test_bad_accelerator_files_are_refused_in_one_line(model, tmp_path, capsys, edit, fragment):
    path = tmp_path / "acc.toml"
    assert edit[0] in DEFAULT_TEXT
    path.write_text(DEFAULT_TEXT.replace(*edit))
    out_dir = tmp_path / "out"
    code, out, err = run(["cost", str(model), "--accelerator", str(path), "--out", str(out_dir), *FLAGS], capsys)
    assert_one_error_line(code, out, err, fragment)
    assert str(path) in err and not out_dir.exists()


def test_the_default_accelerator_states_a_source_for_every_energy():
    accelerator = load_accelerator()
    lines = {line.split("=")[0].strip(): line for line in DEFAULT_TEXT.splitlines() if "=" in line}
    for entry in accelerator.energy_pj:
        assert "Horowitz ISSCC 2014" in lines[entry]
    assert accelerator.energy_pj["multiply"] == 0.2 and accelerator.energy_pj["index_add"] == 0.03
    assert accelerator.energy_pj["accumulate"] == 0.1 and math.isfinite(accelerator.energy_pj["dram"])
