"""``edgefault export``: a run directory in, a checked ONNX file out; bad input is one line and exit 2."""

from __future__ import annotations

import dataclasses
import json

import onnx
import pytest

import edgefault.export.api as export_api
from edgefault.data import Dataset
from edgefault.errors import EdgefaultError
from edgefault.export import ExportSettings, Parity, export_model
from edgefault.models import create_model
from edgefault.runtime import ModelMetadata
from edgefault.train.run_dir import load_config
from cli_helpers import run


def run_cli(args: list[str], capsys) -> tuple[int, str, list[str]]:
    code, out, err = run(args, capsys)
    return code, out, err.splitlines()


def test_export_command_writes_a_checked_model(lenet_run, tmp_path, capsys):
    out = tmp_path / "lenet5.onnx"
    code, stdout, stderr = run_cli(["export", str(lenet_run), "--out", str(out), "--json", "--limit", "300"], capsys)
    assert code == 0 and stderr == []
    report = json.loads(stdout)
    assert report["path"] == str(out) and report["images"] == 300 and report["agreement"] >= 0.995
    assert (report["integer_kernels"], report["float_kernels"]) == (5, 0)
    meta = ModelMetadata.from_model(onnx.load(out))
    assert meta.recipe == dataclasses.asdict(load_config(lenet_run))
    assert meta.dataset == "mnist5k" and meta.wbits == 8
    # A partial parity pass keeps the run's own (PyTorch) accuracy as the clean accuracy.
    assert meta.clean_accuracy == json.loads((lenet_run / "metrics.json").read_text())["test_accuracy"]

    code, stdout, _ = run_cli(["export", str(lenet_run), "--out", str(out), "--limit", "100"], capsys)
    assert code == 0 and "agreement" in stdout and "0 float" in stdout


@pytest.mark.parametrize("problem", ["no checkpoint", "missing run", "corrupt checkpoint", "out is a folder",
                                     "out under a file", "bad dataset"])
def test_bad_input_is_one_line_and_exit_2(problem, lenet_run, tmp_path, capsys):
    run, out = lenet_run, tmp_path / "model.onnx"
    extra = []
    if problem == "no checkpoint":
        run = tmp_path / "empty_run"
        run.mkdir()
    elif problem == "missing run":
        run = tmp_path / "nowhere"
    elif problem == "corrupt checkpoint":
        run = tmp_path / "corrupt"
        run.mkdir()
        (run / "model.pt").write_bytes(b"not a checkpoint")
        (run / "config.json").write_text((lenet_run / "config.json").read_text())
    elif problem == "out is a folder":
        out = tmp_path
    elif problem == "out under a file":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "model.onnx"
    else:
        extra = ["--data", "npz:" + str(tmp_path / "missing.npz")]
    before = set(tmp_path.rglob("*"))
    code, stdout, stderr = run_cli(["export", str(run), "--out", str(out), *extra], capsys)
    assert code == 2 and stdout == ""
    assert len(stderr) == 1 and stderr[0].startswith("edgefault: error: ") and "Traceback" not in stderr[0]
    assert set(tmp_path.rglob("*")) == before  # no output file, no temporary file


def test_failed_check_writes_nothing_unless_kept(lenet_run, mnist5k, tmp_path, monkeypatch, capsys):
    poor = Parity(images=100, agreement=0.9, max_logit_gap=1.0, max_logit_gap_steps=14.0, onnx_accuracy=0.5,
                  torch_accuracy=0.6)
    monkeypatch.setattr(export_api, "check_parity", lambda *args, **kwargs: poor)
    out = tmp_path / "model.onnx"
    model = create_model("lenet5").eval()
    with pytest.raises(EdgefaultError, match=r"agree on 90\.00% of 100 test images.*14 steps"):
        export_model(model, out, mnist5k)
    assert not out.exists()
    report = export_model(model, out, mnist5k, settings=ExportSettings(keep_on_parity_failure=True))
    assert out.exists() and not report.passed and "90.00%" in report.problems[0]

    code, _, stderr = run_cli(["export", str(lenet_run), "--out", str(tmp_path / "kept.onnx"),
                               "--keep-on-parity-failure"], capsys)
    assert code == 0 and len(stderr) == 1 and stderr[0].startswith("edgefault: warning: kept")
    code, _, stderr = run_cli(["export", str(lenet_run), "--out", str(tmp_path / "refused.onnx")], capsys)
    assert code == 2 and len(stderr) == 1 and not (tmp_path / "refused.onnx").exists()


def test_a_dataset_that_does_not_fit_the_model_is_refused(mnist5k, tmp_path):
    small = Dataset("npz:small.npz", mnist5k.train_images[:20, :, :14, :14], mnist5k.train_labels[:20],
                    mnist5k.test_images[:20, :, :14, :14], mnist5k.test_labels[:20], mnist5k.class_names, mnist5k.mean, mnist5k.std)
    with pytest.raises(EdgefaultError, match=r"\(1, 14, 14\) with 10 classes do not fit the model \(\(1, 28, 28\)"):
        export_model(create_model("lenet5").eval(), tmp_path / "m.onnx", small)
    assert list(tmp_path.iterdir()) == []
