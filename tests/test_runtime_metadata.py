"""The model metadata: round trip through ONNX metadata_props, validation, absence."""

from __future__ import annotations

import dataclasses
import json

import onnx
import pytest

from edgefault.errors import EdgefaultError
from edgefault.runtime.metadata import ModelMetadata
from onnx_builders import float_cnn


def sample(**changes) -> ModelMetadata:
    values = dict(
        input_name="input", input_shape=(1, 28, 28), mean=(0.1307,), std=(0.3081,), num_classes=10, wbits=4,
        abits=8, recipe={"model": "lenet5", "sharpness": "saq", "rho": 0.05, "fat_threshold": 0.1},
        dataset="mnist5k", class_names=tuple(str(d) for d in range(10)), clean_accuracy=0.975,
    )
    values.update(changes)
    return ModelMetadata(**values)


def test_round_trip_through_a_saved_model(tmp_path):
    meta = sample()
    model = float_cnn()
    model.metadata_props.add(key="edgefault.chip", value='{"seed": 1}')  # another stage's entry survives
    meta.write_to(model)
    onnx.save(model, tmp_path / "m.onnx")
    loaded = onnx.load(tmp_path / "m.onnx")
    assert ModelMetadata.from_model(loaded) == meta
    props = {p.key: p.value for p in loaded.metadata_props}
    assert props["edgefault.chip"] == '{"seed": 1}'
    assert all(key.startswith("edgefault.") for key in meta.to_props())
    assert json.loads(props["edgefault.input_shape"]) == [1, 28, 28]
    assert json.loads(props["edgefault.layout"]) == "NCHW"


def test_write_to_replaces_older_entries():
    model = float_cnn()
    sample(clean_accuracy=0.5).write_to(model)
    sample(clean_accuracy=None).write_to(model)
    assert ModelMetadata.from_model(model).clean_accuracy is None
    assert len(model.metadata_props) == len(dataclasses.fields(ModelMetadata))


def test_model_without_metadata_gives_none():
    assert ModelMetadata.from_model(float_cnn()) is None
    assert ModelMetadata.from_props({"edgefault.chip": "{}"}) is None


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(input_shape=(28, 28)), "three positive ints"),
        (dict(mean=(0.1, 0.2)), "one value per channel"),
        (dict(std=(0.0,)), "metadata std must be positive"),
        (dict(wbits=9), "wbits"),
        (dict(class_names=("a", "b")), "2 class names for 10 classes"),
        (dict(clean_accuracy=1.5), "clean_accuracy"),
        (dict(layout="NHWC"), "layout"),
        (dict(recipe={"bad": object()}), "JSON"),
    ],
)
def test_validation(changes, message):
    with pytest.raises(EdgefaultError, match=message):
        sample(**changes)


def test_incomplete_or_malformed_props_are_errors():
    props = sample().to_props()
    del props["edgefault.num_classes"]
    with pytest.raises(EdgefaultError, match="missing edgefault.num_classes"):
        ModelMetadata.from_props(props)
    props = sample().to_props()
    props["edgefault.mean"] = "not json"
    with pytest.raises(EdgefaultError, match="not valid JSON"):
        ModelMetadata.from_props(props)
    props = sample().to_props()
    props["edgefault.input_shape"] = '"1x28x28"'
    with pytest.raises(EdgefaultError, match="input_shape"):
        ModelMetadata.from_props(props)
