"""Layout and scaling decisions: read from the model, converted for image datasets, never silent."""

from __future__ import annotations

import json
import logging

import numpy as np
import onnx
import pytest

from cli_helpers import run
from edgefault.data import Samples, load_samples
from edgefault.errors import EdgefaultError
from edgefault.runtime import InputOptions, check_classes, model_io, prepare_inputs, resolve_input_spec
from edgefault.runtime.layout import graph_layout, shape_layout
from input_models import mlp, nhwc_cnn, quantize, uint8_input_cnn
from onnx_builders import float_cnn
from test_inputs_forms import own_predictions


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("feed")
    logging.getLogger().setLevel(logging.ERROR)
    paths = {"nhwc": quantize(nhwc_cnn(), folder, "nhwc"), "uint8": uint8_input_cnn(folder),
             "sensor": quantize(mlp((8, 32, 1)), folder, "sensor")}
    onnx.save(mlp((784,)), folder / "mnist_mlp.onnx")
    paths["mnist_mlp"] = folder / "mnist_mlp.onnx"
    odd = {"int64": float_cnn(), "rank5": float_cnn()}
    odd["int64"].graph.input[0].type.tensor_type.elem_type = onnx.TensorProto.INT64
    odd["rank5"].graph.input[0].type.tensor_type.shape.dim.add().dim_value = 2
    for name, model in odd.items():
        onnx.save(model, folder / f"{name}.onnx")
        paths[name] = folder / f"{name}.onnx"
    return paths


def _spec(model, **options):
    return resolve_input_spec(model_io(model), None, options=InputOptions(**options))


def test_layout_from_the_graph_and_from_the_shape():
    assert graph_layout(nhwc_cnn().graph, "x") == "NHWC" and graph_layout(float_cnn().graph, "input") == "NCHW"
    assert graph_layout(mlp((8, 32, 1)).graph, "x") is None
    assert [shape_layout(s) for s in [(3, 32, 32), (32, 32, 3), (8, 32, 1), (1, 8, 8), (16, 16, 16)]] == \
           ["NCHW", "NHWC", None, None, None]
    assert _spec(mlp((8, 32, 1)), mean="0", std="1").layout == "NCHW|NHWC"
    assert _spec(mlp((8, 32, 1)), layout="nchw", mean="0", std="1").channels == 8


def test_float_data_is_never_rescaled_and_uint8_images_are():
    spec = _spec(float_cnn(), mean="0.5", std="2")
    wide = np.linspace(-300, 300, 2 * 28 * 28, dtype=np.float32).reshape(2, 1, 28, 28)
    prepared = prepare_inputs(Samples("npz:f", wide, np.zeros(2, np.int64), 1, False), spec)
    np.testing.assert_allclose(prepared.images, (wide - 0.5) / 2)
    assert prepared.description == "input: 1x28x28 NCHW float, data fed as stored, normalized with mean 0.5, std 2 (flags)"
    pixels = np.arange(2 * 28 * 28).reshape(2, 1, 28, 28).astype(np.uint8)
    prepared = prepare_inputs(Samples("npz:u", pixels, np.zeros(2, np.int64), 1, False), spec)
    np.testing.assert_allclose(prepared.images, (pixels / 255 - 0.5) / 2, atol=1e-6)
    assert "uint8 images scaled by 1/255, normalized" in prepared.description
    as_stored = prepare_inputs(Samples("npz:u", pixels, np.zeros(2, np.int64), 1, False), spec, scale=1.0)
    np.testing.assert_allclose(as_stored.images, (pixels - 0.5) / 2)
    scaled = prepare_inputs(Samples("npz:f", wide, np.zeros(2, np.int64), 1, False), spec, scale=0.5)
    np.testing.assert_allclose(scaled.images, (wide * 0.5 - 0.5) / 2)
    assert "float32 data scaled by 1/2 (--scale)" in scaled.description


def test_an_nchw_npz_is_transposed_for_an_nhwc_model(models, tmp_path, capsys):
    x = np.random.default_rng(5).standard_normal((40, 16, 16, 3)).astype(np.float32)
    y = own_predictions(models["nhwc"], x)
    np.savez(tmp_path / "nchw.npz", x_train=x[:1].transpose(0, 3, 1, 2), y_train=y[:1],
             x_test=x.transpose(0, 3, 1, 2), y_test=y)
    argv = ["eval", str(models["nhwc"]), "--data", f"npz:{tmp_path / 'nchw.npz'}", "--mean", "0", "--std", "1",
            "--no-timing", "--json"]
    code, out, err = run(argv, capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["accuracy"] == 1.0 and report["feed"].startswith("x: 16x16x3 NHWC float, NCHW data transposed to NHWC")


def test_an_image_folder_is_converted_to_nhwc_and_fed_uint8_to_a_uint8_model(models, tmp_path, capsys):
    from PIL import Image

    rng = np.random.default_rng(6)
    for size, mode, name in (((16, 16, 3), "RGB", "rgb"), ((12, 12), "L", "gray")):
        for label in ("a", "b"):
            (tmp_path / name / label).mkdir(parents=True)
            for i in range(5):
                Image.fromarray(rng.integers(0, 256, size, dtype=np.uint8), mode).save(tmp_path / name / label / f"{i}.png")
    code, out, err = run(["eval", str(models["nhwc"]), "--data", f"folder:{tmp_path / 'rgb'}", "--mean", "0.5",
                          "--std", "0.25", "--no-timing", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["feed"] == ("x: 16x16x3 NHWC float, NCHW data transposed to NHWC, uint8 images scaled by "
                                       "1/255, normalized with mean 0.5, std 0.25 (flags)")
    code, out, err = run(["eval", str(models["uint8"]), "--data", f"folder:{tmp_path / 'gray'}", "--no-timing",
                          "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["feed"] == "x: 1x12x12 NCHW uint8, data fed as stored"


def test_single_channel_images_are_flattened_for_a_feature_vector_model(models, mnist5k, capsys):
    spec = _spec(onnx.load(models["mnist_mlp"]), mean="0.1307", std="0.3081")
    prepared = prepare_inputs(mnist5k, spec, limit=4)
    assert prepared.images.shape == (4, 784) and prepared.images.dtype == np.float32
    assert prepared.description.startswith("x: 784 features float, 1x28x28 images reshaped to 784, uint8 images")
    np.testing.assert_allclose(prepared.images, ((mnist5k.test_images[:4] - 0.1307) / 0.3081).reshape(4, 784),
                               atol=1e-5)


@pytest.mark.parametrize("model, flags, message", [
    ("nhwc", [], "model has no edgefault metadata; give --mean, --std (input 'x' takes images, 16x16x3"),
    ("nhwc", ["--mean", "0"], "give --std too"),
    ("nhwc", ["--mean", "0", "--no-normalize"], "--no-normalize feeds the data without mean/std"),
    ("sensor", ["--mean", "0,0,0,0,0,0,0,0", "--std", "1"], "channel count is not known; give one value (or, for an "
                                                            "image input, --layout nchw or --layout nhwc)"),
    ("sensor", ["--layout", "nhwc", "--mean", "0,0,0,0,0,0,0,0", "--std", "1"], "--mean needs 1 value, got 8"),
    ("uint8", ["--mean", "0", "--std", "1"], "model input 'x' takes uint8 values, fed as stored; --mean, --std"),
    ("uint8", ["--scale", "1/255"], "--scale apply to float inputs only"),
    ("mnist_mlp", ["--layout", "nchw"], "--layout applies to image inputs; model input 'x' takes feature vectors"),
    ("nhwc", ["--mean", "0", "--std", "1", "--scale", "0"], "--scale must be a positive number or fraction"),
    ("nhwc", ["--mean", "0", "--std", "1", "--data", "FEATURES"], "has samples of 20 but model input 'x' takes "
                                                                  "16x16x3 NHWC float"),
    ("nhwc", ["--mean", "0", "--std", "1", "--data", "GRAY"], "has 12x12x1 images but the model takes 16x16x3 "
                                                              "(input 'x', NHWC)"),
    ("uint8", ["--data", "FEATURES"], "dataset npz:"),
    ("int64", [], "model input 'input' is of type int64; edgefault feeds float, uint8 or int8 tensors"),
    ("rank5", [], "model input 'input' has rank 5 (? x 1 x 28 x 28 x 2); edgefault feeds [N, F] feature vectors"),
    ("sensor", ["--no-normalize", "--data", "CHANNELS_FIRST"], "has 1x8x32 images but the model takes 8x32x1 "
                                                               "(input 'x', NCHW or NHWC); --layout nchw or nhwc decides"),
    ("uint8", ["--data", "FLOAT_IMAGES"], "model input 'x' takes uint8 values but npz:"),
])
def test_eval_and_campaign_give_the_same_one_line_message(models, tmp_path, capsys, model, flags, message):
    rng = np.random.default_rng(7)
    data = {"FEATURES": _save(tmp_path / "f.npz", rng.standard_normal((20, 20)).astype(np.float32)),
            "GRAY": _save(tmp_path / "g.npz", rng.integers(0, 256, (20, 12, 12), dtype=np.uint8)),
            "FLOAT_IMAGES": _save(tmp_path / "fi.npz", rng.random((20, 1, 12, 12), dtype=np.float32)),
            "CHANNELS_FIRST": _save(tmp_path / "cf.npz", rng.random((20, 1, 8, 32), dtype=np.float32))}
    flags = [data.get(flag, flag) for flag in flags]
    if "--data" not in flags:
        flags += ["--data", data["GRAY"]]
    lines = []
    for argv in (["eval", str(models[model]), "--no-timing"], ["campaign", str(models[model]), "--out",
                                                                str(tmp_path / "c")]):
        code, out, err = run([*argv, *flags], capsys)
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
        lines.append(err.strip())
    assert lines[0] == lines[1] and message in lines[0]
    assert not (tmp_path / "c").exists()


def _save(path, x) -> str:
    np.savez(path, x_train=x[:1], y_train=np.zeros(1, int), x_test=x, y_test=np.arange(len(x)) % 2)
    return f"npz:{path}"


def test_labels_covering_fewer_classes_take_the_class_count_from_the_model(models, tmp_path, capsys):
    x = np.random.default_rng(8).standard_normal((30, 8, 32, 1)).astype(np.float32)
    np.savez(tmp_path / "two.npz", x_train=x[:1], y_train=np.zeros(1, int), x_test=x, y_test=np.arange(30) % 2)
    code, out, err = run(["eval", str(models["sensor"]), "--data", f"npz:{tmp_path / 'two.npz'}", "--no-normalize",
                          "--no-timing", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["num_classes"] == 4
    with pytest.raises(EdgefaultError, match="has 2 classes"):  # the data's own count is what the labels name
        check_classes(load_samples(f"npz:{tmp_path / 'two.npz'}"), 1)


def test_layout_settles_an_ambiguous_input_that_needs_transposing(models, tmp_path, capsys):
    x = np.random.default_rng(9).standard_normal((30, 8, 32, 1)).astype(np.float32)
    y = own_predictions(models["sensor"], x)
    np.savez(tmp_path / "cf.npz", x_train=x[:1].transpose(0, 3, 1, 2), y_train=y[:1], x_test=x.transpose(0, 3, 1, 2),
             y_test=y)
    argv = ["eval", str(models["sensor"]), "--data", f"npz:{tmp_path / 'cf.npz'}", "--no-normalize", "--layout", "nhwc",
            "--no-timing", "--json"]
    code, out, err = run(argv, capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["accuracy"] == 1.0 and report["feed"] == ("x: 8x32x1 NHWC float, NCHW data transposed to NHWC, "
                                                            "not normalized")
