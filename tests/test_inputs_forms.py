"""Every input form, fed as stored: NHWC images, [N, F] vectors, [N, T, F] sequences, a sensor, a uint8 input.

Each model is ONNX Runtime's quantization of a small hand-built float model. Its labels are
its own predictions on the stored data, computed with ONNX Runtime directly, so a score of
100% in ``eval`` and in a 3-chip ``campaign`` shows edgefault fed exactly that data: no
transpose, no rescaling, no other normalization than the one asked for.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import onnxruntime as ort
import pytest

from cli_helpers import run
from input_models import attention, mlp, nhwc_cnn, quantize, uint8_input_cnn

# name -> (flags beyond --data, the input line eval prints)
FORMS = {
    "nhwc": (["--mean", "0", "--std", "1"], "x: 16x16x3 NHWC float, data fed as stored, normalized with mean 0, std 1 (flags)"),
    "mlp": ([], "x: 20 features float, data fed as stored, not normalized"),
    "attention": ([], "x: 10x16 sequence float, data fed as stored, not normalized"),
    "sensor": (["--no-normalize"], "x: 8x32x1 image (NCHW or NHWC) float, data fed as stored, not normalized"),
    "uint8": ([], "x: 1x12x12 NCHW uint8, data fed as stored"),
    "dynamic": ([], "x: 20 features float, data fed as stored, not normalized"),
}


def own_predictions(path, x) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0].argmax(axis=1)


@pytest.fixture(scope="module")
def forms(tmp_path_factory):
    """name -> (quantized model path, npz SPEC of 60 samples labelled with the model's own predictions)."""
    folder = tmp_path_factory.mktemp("forms")
    logging.getLogger().setLevel(logging.ERROR)  # quantize_static warns about pre-processing
    rng = np.random.default_rng(0)
    built = {
        "nhwc": (quantize(nhwc_cnn(), folder, "nhwc"), rng.standard_normal((60, 16, 16, 3))),
        "mlp": (quantize(mlp(), folder, "mlp"), rng.standard_normal((60, 20))),
        "attention": (quantize(attention(), folder, "attention"), rng.standard_normal((60, 10, 16))),
        "sensor": (quantize(mlp((8, 32, 1)), folder, "sensor", "qoperator"), rng.standard_normal((60, 8, 32, 1))),
        "uint8": (uint8_input_cnn(folder), rng.integers(0, 256, (60, 1, 12, 12), dtype=np.uint8)),
        "dynamic": (quantize(mlp(), folder, "dynamic", "dynamic"), rng.standard_normal((60, 20))),
    }
    result = {}
    for name, (path, x) in built.items():
        x = x if x.dtype == np.uint8 else x.astype(np.float32)
        y = own_predictions(path, x)
        assert len(np.unique(y)) > 1, name  # a constant model would score 100% whatever it was fed
        np.savez(folder / f"{name}.npz", x_train=x[:2], y_train=y[:2], x_test=x, y_test=y)
        result[name] = (path, f"npz:{folder / name}.npz")
    return result


@pytest.mark.parametrize("name", FORMS)
def test_eval_scores_every_form_perfectly_on_its_own_predictions(forms, name, capsys):
    path, data = forms[name]
    flags, feed = FORMS[name]
    code, out, err = run(["eval", str(path), "--data", data, "--no-timing", "--json", *flags], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["accuracy"] == 1.0 and report["images"] == 60, report["feed"]
    assert report["feed"] == feed and report["num_classes"] == 4
    assert report["kernels"]["integer_kernels"] >= 1


@pytest.mark.parametrize("name", FORMS)
def test_three_chip_campaign_scores_every_form_perfectly_when_clean(forms, name, tmp_path, capsys):
    path, data = forms[name]
    flags, feed = FORMS[name]
    out = tmp_path / "campaign"
    argv = ["campaign", str(path), "--data", data, "--out", str(out), "--kinds", "flip", "--rates", "2e-3",
            "--chips", "3", "--workers", "1", *flags]
    code, stdout, err = run(argv, capsys)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["clean"][0]["accuracy"] == 1.0 and summary["clean"][0]["images"] == 60
    [group] = summary["groups"]
    assert group["n"] == 3 and 0.0 <= group["ci_low"] <= group["mean"] <= group["ci_high"] <= 1.0
    assert f"input of {path.stem}: {feed}" in stdout


def test_dynamic_quantized_model_is_described_as_such(forms, capsys):
    code, out, err = run(["eval", str(forms["dynamic"][0]), "--data", forms["dynamic"][1], "--no-timing"], capsys)
    assert code == 0, err
    assert "dynamic quantization: 2 DynamicQuantizeLinear" in out and "a float model?" not in out
    assert "(all integer, dynamic quantization)" in out
