"""``edgefault inject`` end to end, and its bad-input errors: one line, exit 2, no output file."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from edgefault.cli.main import main
from edgefault.faults import METADATA_KEY
from onnx_builders import float_cnn, ort_quantized_cnn


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    logging.getLogger().setLevel(logging.ERROR)  # quantize_static warns about pre-processing
    return ort_quantized_cnn(tmp_path_factory.mktemp("ort_models"), "qdq_per_channel")


def run(argv, capsys):
    """Run the CLI in-process; return (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    captured = capsys.readouterr()
    return exited.value.code, captured.out, captured.err


def test_inject_json_writes_the_model_and_the_map(model, tmp_path, capsys):
    out, fault_map = tmp_path / "faulty.onnx", tmp_path / "map.json"
    argv = ["inject", str(model), "--kind", "flip", "--rate", "0.01", "--seed", "3", "--out", str(out),
            "--map", str(fault_map), "--json"]
    code, stdout, stderr = run(argv, capsys)
    assert code == 0, stderr
    report = json.loads(stdout)  # stdout is exactly one JSON object
    assert report["faults"] == report["changed_bits"] > 0 and report["chip"]["seed"] == 3
    document = json.loads(fault_map.read_text())
    assert len(document["faults"]) == report["faults"]
    assert sum(t["faults"] for t in document["summary"]["per_tensor"]) == report["faults"]
    faulty = onnx.load(str(out))
    assert faulty.metadata_props[-1].key == METADATA_KEY
    assert json.loads(faulty.metadata_props[-1].value)["chip"] == report["chip"]
    ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])


def test_inject_prints_a_short_summary_and_re_applies_a_map(model, tmp_path, capsys):
    first, second, fault_map = tmp_path / "a.onnx", tmp_path / "b.onnx", tmp_path / "map.json"
    code, stdout, _ = run(["inject", str(model), "--kind", "stuck", "--count", "40", "--bits", "6-7",
                           "--out", str(first), "--map", str(fault_map)], capsys)
    assert code == 0 and "40 stuck faults" in stdout and f"wrote {first}" in stdout
    code, stdout, _ = run(["inject", str(model), "--map-in", str(fault_map), "--out", str(second)], capsys)
    assert code == 0 and f"re-applied 40 faults from {fault_map}" in stdout
    arrays = [{t.name: numpy_helper.to_array(t) for t in onnx.load(str(p)).graph.initializer} for p in (first, second)]
    assert all(np.array_equal(arrays[0][name], arrays[1][name]) for name in arrays[0])


@pytest.mark.parametrize("extra, fragment", [
    (["--kind", "flip", "--rate", "1.5"], "rate must lie in [0, 1], got 1.5"),
    (["--kind", "flip", "--rate", "-0.1"], "rate must lie in [0, 1]"),
    (["--kind", "flip", "--count", "999999999"], "exceeds the 72512 target bits"),
    (["--kind", "flip", "--rate", "0.1", "--layers", "^nothing$"], "matches no weight tensor"),
    (["--kind", "zap", "--rate", "0.1"], "'zap' is not one of"),
    (["--kind", "flip"], "exactly one of --rate and --count"),
    (["--kind", "flip", "--rate", "0.1", "--count", "3"], "exactly one of --rate and --count"),
    (["--rate", "0.1"], "--kind is required"),
    (["--kind", "flip", "--rate", "0.1", "--bits", "seven"], "--bits must be bit positions"),
    (["--kind", "flip", "--rate", "0.1", "--burst", "3"], "--burst applies to --kind mbu only"),
    (["--kind", "mbu", "--rate", "0.1", "--burst", "12"], "burst must be an integer in [1, 8]"),
])
def test_bad_options_give_one_line_and_no_output(model, tmp_path, capsys, extra, fragment):
    out = tmp_path / "faulty.onnx"
    code, stdout, stderr = run(["inject", str(model), "--out", str(out), "--map", str(tmp_path / "m.json"), *extra],
                               capsys)
    assert code == 2 and stdout == ""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgefault: error:") and fragment in lines[0], stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("case, fragment", [
    ("missing", "does not exist"),
    ("text", "not an ONNX model"),
    ("float", "no integer weight initializers"),
    ("overwrite", "would overwrite an input file"),
])
def test_bad_files_give_one_line_and_no_output(model, tmp_path, capsys, case, fragment):
    source = {"missing": tmp_path / "nope.onnx", "text": tmp_path / "notes.onnx", "float": tmp_path / "float.onnx",
              "overwrite": model}[case]
    if case == "text":
        source.write_text("this is not a model\n")
    if case == "float":
        onnx.save(float_cnn(), source)
    out = source if case == "overwrite" else tmp_path / "faulty.onnx"
    before = sorted(tmp_path.iterdir())
    code, stdout, stderr = run(["inject", str(source), "--kind", "flip", "--rate", "0.1", "--out", str(out)], capsys)
    assert code == 2 and stdout == ""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], stderr
    assert sorted(tmp_path.iterdir()) == before


def test_map_in_takes_no_chip_options(model, tmp_path, capsys):
    fault_map = tmp_path / "map.json"
    fault_map.write_text(json.dumps({"format": "edgefault-faultmap", "version": 1, "chip": None, "faults": []}))
    code, _, stderr = run(["inject", str(model), "--map-in", str(fault_map), "--seed", "4", "--out",
                           str(tmp_path / "x.onnx")], capsys)
    assert code == 2 and "takes no chip options (got --seed)" in stderr
    fault_map.write_text("{}")
    code, _, stderr = run(["inject", str(model), "--map-in", str(fault_map), "--out", str(tmp_path / "x.onnx")], capsys)
    assert code == 2 and "not an edgefault fault map" in stderr
    assert not (tmp_path / "x.onnx").exists()


def test_the_console_script_reports_without_a_traceback(model, tmp_path):
    script = [sys.executable, "-c", "from edgefault.cli.main import main; main()"]
    result = subprocess.run([*script, "inject", str(model), "--kind", "sa0", "--rate", "7", "--out",
                             str(tmp_path / "x.onnx")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == "edgefault: error: rate must lie in [0, 1], got 7.0"
    assert not (tmp_path / "x.onnx").exists()
