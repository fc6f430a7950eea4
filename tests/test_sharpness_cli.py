"""``edgefault sharpness`` end to end on a 2-epoch lenet5 run, and its bad-input errors."""

from __future__ import annotations

import json

import pytest
from cli_helpers import assert_one_error_line, run


FAST = ["--samples", "64", "--batch-size", "32", "--power-iterations", "2", "--probes", "2", "--points", "5",
        "--grid", "3", "--device", "cpu"]

pytestmark = pytest.mark.usefixtures("one_thread")


def test_sharpness_writes_metrics_and_both_plots(lenet_run, tmp_path, capsys):
    out = tmp_path / "sharpness"
    code, stdout, err = run(["sharpness", str(lenet_run), "--data", "mnist5k", "--out", str(out), *FAST], capsys)
    assert code == 0, err
    assert "top Hessian eigenvalue" in stdout and "SAM sharpness (rho 0.05)" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["landscape_1d.png", "landscape_2d.png", "metrics.json"]
    for name in ("landscape_1d.png", "landscape_2d.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["format"] == "edgefault-sharpness-1" and metrics["seed"] == 0 and metrics["edgefault_version"]
    assert metrics["config"]["samples"] == 64 and metrics["source"]["recipe"]["model"] == "lenet5"

    # A rerun into its own earlier output is allowed; --json prints only the report.
    code, stdout, err = run(["sharpness", str(lenet_run), "--out", str(out), "--json", "--rho", "0.1", *FAST], capsys)
    assert code == 0, err
    report = json.loads(stdout)
    assert report["sam"]["rho"] == 0.1 and report["data"] == "mnist5k"  # --data defaults to the run's dataset
    assert json.loads((out / "metrics.json").read_text())["config"]["rho"] == 0.1


def test_a_run_dir_without_checkpoint_is_one_error_line(tmp_path, capsys):
    (tmp_path / "empty-run").mkdir()
    out = tmp_path / "out"
    code, stdout, err = run(["sharpness", str(tmp_path / "empty-run"), "--out", str(out), *FAST], capsys)
    assert_one_error_line(code, stdout, err, "no checkpoint")
    assert not out.exists()


@pytest.mark.parametrize("rho, fragment", [("0", "rho must be a finite number > 0"), ("-1", "rho must be"),
                                           ("inf", "rho must be"), ("abc", "'abc' is not a valid float")])
def test_a_bad_rho_is_one_error_line(lenet_run, tmp_path, capsys, rho, fragment):
    out = tmp_path / "out"
    code, stdout, err = run(["sharpness", str(lenet_run), "--out", str(out), "--rho", rho, *FAST], capsys)
    assert_one_error_line(code, stdout, err, fragment)
    assert not out.exists()


def test_an_output_folder_of_another_stage_is_refused_untouched(lenet_run, tmp_path, capsys):
    foreign = tmp_path / "campaign"
    foreign.mkdir()
    (foreign / "metrics.json").write_text('{"test_accuracy": 0.98}\n')
    code, stdout, err = run(["sharpness", str(lenet_run), "--out", str(foreign), *FAST], capsys)
    assert_one_error_line(code, stdout, err, "not a sharpness report")
    assert (foreign / "metrics.json").read_text() == '{"test_accuracy": 0.98}\n'
    assert sorted(p.name for p in foreign.iterdir()) == ["metrics.json"]

    # The run directory itself holds a checkpoint and the training metrics: refused too.
    before = {p.name: p.read_bytes() for p in lenet_run.iterdir()}
    code, stdout, err = run(["sharpness", str(lenet_run), "--out", str(lenet_run), *FAST], capsys)
    assert_one_error_line(code, stdout, err, "holds other files")
    assert {p.name: p.read_bytes() for p in lenet_run.iterdir()} == before


def test_an_output_path_that_is_a_file_is_refused(lenet_run, tmp_path, capsys):
    target = tmp_path / "report.txt"
    target.write_text("keep me")
    code, stdout, err = run(["sharpness", str(lenet_run), "--out", str(target), *FAST], capsys)
    assert code == 2 and "edgefault: error:" in err and target.read_text() == "keep me"
