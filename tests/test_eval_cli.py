"""``edgefault eval`` end to end on models ONNX Runtime's quantizer wrote, and its bad-input errors."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgefault.runtime.metadata import ModelMetadata
from onnx_builders import digits_npz, float_cnn, ort_quantized_cnn
from cli_helpers import assert_one_error_line, run

FLAGS = ["--input-size", "1x28x28", "--mean", "0.1307", "--std", "0.3081"]
STYLES = ("qdq_per_channel", "qdq_s8s8", "qoperator")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ort_models")
    logging.getLogger().setLevel(logging.ERROR)  # quantize_static warns about pre-processing
    return {style: ort_quantized_cnn(folder, style) for style in STYLES}


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """A small 1x28x28 npz dataset: loads in milliseconds, where the built-in mnist5k takes seconds."""
    return digits_npz(tmp_path_factory.mktemp("data") / "digits.npz", 400)




@pytest.mark.parametrize("style", STYLES)
def test_eval_json_on_onnxruntime_quantized_models(models, digits, style, capsys):
    argv = ["eval", str(models[style]), "--data", digits, "--limit", "64", "--json", "--no-timing", *FLAGS]
    code, out, err = run(argv, capsys)
    assert code == 0, err
    report = json.loads(out)  # stdout is exactly one JSON object
    assert isinstance(report, dict) and report["images"] == 64 and report["num_classes"] == 10
    assert 0.0 <= report["accuracy"] <= 1.0 and report["correct"] == round(report["accuracy"] * 64)
    assert report["input"]["source"] == "flags" and report["metadata"] is None
    assert report["kernels"]["integer_kernels"] == 3 and report["kernels"]["float_kernels"] == 0
    sparsity = report["sparsity"]
    assert len(sparsity["layers"]) == 3 and 0.0 < sparsity["mac_skip_share"] < 1.0
    relu_outputs = [a for a in sparsity["activations"] if a["producer"] in ("QuantizeLinear", "QLinearConv")][1:3]
    assert all(a["zero_share"] > 0.2 for a in relu_outputs)  # ReLU zeros show up at the zero point
    assert report["timing"] is None


def test_eval_text_report_on_mnist5k_with_timing_and_graph(models, capsys):
    argv = ["eval", str(models["qdq_per_channel"]), "--limit", "100", "--threads", "1", "--show-graph", *FLAGS]
    code, out, err = run(argv, capsys)
    assert code == 0, err
    for fragment in ("accuracy", "activation sparsity", "MAC skip", "latency, batch 1", "throughput, batch 256",
                     "3 integer, 0 float conv/linear (all integer)", "QLinearConv"):
        assert fragment in out


def test_eval_uses_edgefault_metadata_without_flags(models, digits, tmp_path, capsys):
    model = onnx.load(models["qdq_per_channel"])
    ModelMetadata(input_name="input", input_shape=(1, 28, 28), mean=(0.1307,), std=(0.3081,), num_classes=10,
                  wbits=8, abits=8, dataset="mnist5k", clean_accuracy=0.5).write_to(model)
    onnx.save(model, tmp_path / "with_meta.onnx")
    argv = ["eval", str(tmp_path / "with_meta.onnx"), "--data", digits, "--limit", "32", "--json", "--no-timing"]
    code, out, err = run(argv, capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["input"]["source"] == "metadata" and report["metadata"]["clean_accuracy"] == 0.5


def test_corrupt_and_non_onnx_files(tmp_path, models, capsys):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(models["qdq_per_channel"].read_bytes()[:700])
    assert_one_error_line(*run(["eval", str(corrupt), *FLAGS], capsys), "not an ONNX model")
    text = tmp_path / "notes.onnx"
    text.write_text("this is not a model\n")
    assert_one_error_line(*run(["eval", str(text), *FLAGS], capsys), "not an ONNX model")
    assert_one_error_line(*run(["eval", str(tmp_path / "missing.onnx"), *FLAGS], capsys), "no such file")


def test_dataset_shape_mismatch(tmp_path, models, capsys):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "rgb.npz", x=rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8), y=np.arange(40) % 10)
    argv = ["eval", str(models["qoperator"]), "--data", f"npz:{tmp_path / 'rgb.npz'}", *FLAGS]
    assert_one_error_line(*run(argv, capsys), "has 3x32x32 images but the model takes 1x28x28")


def test_model_without_classifier_output(tmp_path, capsys):
    model = float_cnn()
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("c1", TensorProto.FLOAT, ["batch", 8, 28, 28]))
    onnx.save(model, tmp_path / "features.onnx")
    assert_one_error_line(*run(["eval", str(tmp_path / "features.onnx"), *FLAGS], capsys), "not a classifier output")


def test_model_without_metadata_or_flags(models, capsys):
    assert_one_error_line(*run(["eval", str(models["qoperator"])], capsys), "no edgefault metadata")


def test_bad_flag_values(models, capsys):
    argv = ["eval", str(models["qoperator"]), "--input-size", "28x28", "--mean", "0.1", "--std", "0.3"]
    assert_one_error_line(*run(argv, capsys), "--input-size must be CxHxW")
    argv = ["eval", str(models["qoperator"]), *FLAGS[:4], "--std", "-1"]
    assert_one_error_line(*run(argv, capsys), "--std values must be positive")


def test_no_traceback_from_a_real_process(tmp_path):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x00\x01\x02 definitely not protobuf \xff" * 10)
    result = subprocess.run([sys.executable, "-m", "edgefault.cli.main", "eval", str(corrupt), *FLAGS],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("edgefault: error:") and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
