"""``edgefault export``: a run directory in, a checked ONNX file out; bad input is one line and exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch

import edgefault.export.api as export_api
from edgefault.cli.main import main
from edgefault.data import Dataset, load_dataset
from edgefault.errors import EdgefaultError
from edgefault.export import ExportSettings, Parity, export_model
from edgefault.models import create_model
from edgefault.runtime import ModelMetadata
from edgefault.train import TrainConfig
from edgefault.train.run_dir import write_run


def run_cli(args: list[str], capsys) -> tuple[int, str, list[str]]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err.splitlines()


@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist5k")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, mnist) -> Path:
    """A lenet5 run trained for a few steps, written the way ``edgefault train`` writes it."""
    config = TrainConfig(model="lenet5", epochs=1, fat_threshold=0.2)
    torch.manual_seed(0)
    model = create_model("lenet5", **config.model_settings())
    images, labels = torch.from_numpy(mnist.normalized(mnist.train_images[:480])), torch.from_numpy(mnist.train_labels[:480])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for start in range(0, 480, 32):
        loss = torch.nn.functional.cross_entropy(model(images[start:start + 32]), labels[start:start + 32])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    path = tmp_path_factory.mktemp("runs") / "lenet5"
    write_run(path, model.eval(), config, {"test_accuracy": 0.5})
    return path


def test_export_command_writes_a_checked_model(run_dir, tmp_path, capsys):
    out = tmp_path / "lenet5.onnx"
    code, stdout, stderr = run_cli(["export", str(run_dir), "--out", str(out), "--json", "--limit", "300"], capsys)
    assert code == 0 and stderr == []
    report = json.loads(stdout)
    assert report["path"] == str(out) and report["images"] == 300 and report["agreement"] >= 0.995
    assert (report["integer_kernels"], report["float_kernels"]) == (5, 0)
    meta = ModelMetadata.from_model(onnx.load(out))
    assert meta.recipe["fat_threshold"] == 0.2 and meta.recipe["model"] == "lenet5" and meta.dataset == "mnist5k"
    assert meta.clean_accuracy == 0.5  # a partial parity pass keeps the run's own accuracy

    code, stdout, _ = run_cli(["export", str(run_dir), "--out", str(out), "--limit", "100"], capsys)
    assert code == 0 and "agreement" in stdout and "0 float" in stdout


@pytest.mark.parametrize("problem", ["no checkpoint", "missing run", "corrupt checkpoint", "out is a folder",
                                     "out under a file", "bad dataset"])
def test_bad_input_is_one_line_and_exit_2(problem, run_dir, tmp_path, capsys):
    run, out = run_dir, tmp_path / "model.onnx"
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
        (run / "config.json").write_text((run_dir / "config.json").read_text())
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


def test_failed_check_writes_nothing_unless_kept(run_dir, mnist, tmp_path, monkeypatch, capsys):
    poor = Parity(images=100, agreement=0.9, max_logit_gap=1.0, max_logit_gap_steps=14.0, onnx_accuracy=0.5,
                  torch_accuracy=0.6)
    monkeypatch.setattr(export_api, "check_parity", lambda *args, **kwargs: poor)
    out = tmp_path / "model.onnx"
    model = create_model("lenet5").eval()
    with pytest.raises(EdgefaultError, match=r"agree on 90\.00% of 100 test images.*14 steps"):
        export_model(model, out, mnist)
    assert not out.exists()
    report = export_model(model, out, mnist, settings=ExportSettings(keep_on_parity_failure=True))
    assert out.exists() and not report.passed and "90.00%" in report.problems[0]

    code, _, stderr = run_cli(["export", str(run_dir), "--out", str(tmp_path / "kept.onnx"),
                               "--keep-on-parity-failure"], capsys)
    assert code == 0 and len(stderr) == 1 and stderr[0].startswith("edgefault: warning: kept")
    code, _, stderr = run_cli(["export", str(run_dir), "--out", str(tmp_path / "refused.onnx")], capsys)
    assert code == 2 and len(stderr) == 1 and not (tmp_path / "refused.onnx").exists()


def test_a_dataset_that_does_not_fit_the_model_is_refused(mnist, tmp_path):
    small = Dataset("npz:small.npz", mnist.train_images[:20, :, :14, :14], mnist.train_labels[:20],
                    mnist.test_images[:20, :, :14, :14], mnist.test_labels[:20], mnist.class_names, mnist.mean, mnist.std)
    with pytest.raises(EdgefaultError, match=r"\(1, 14, 14\) with 10 classes do not fit the model \(\(1, 28, 28\)"):
        export_model(create_model("lenet5").eval(), tmp_path / "m.onnx", small)
    assert list(tmp_path.iterdir()) == []
