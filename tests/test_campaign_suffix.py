"""Suffix evaluation: cells started from cached clean activations at a cut give the whole model's predictions.

A small ResNet-20 (edgefault's export, QDQ) trained for one epoch on a few hundred digits,
and a foreign CNN quantized by ONNX Runtime in QOperator format. For every cut, a chip in
weights after it runs from the cut and from the input, and the predictions must be equal.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest

from edgefault.campaign import CampaignConfig, Cell, CellRunner, ExecutionSettings, prepare_campaign, run_campaign
from edgefault.campaign.results import ResultsLog
from edgefault.campaign.suffix import SuffixCache, remap
from edgefault.campaign.worker import CAMPAIGN_BATCH
from edgefault.errors import EdgefaultError
from edgefault.export import export_run
from edgefault.faults import Chip, Injector, sample_faults
from edgefault.onnxio import parse_model
from edgefault.runtime import Evaluator, SessionSettings
from edgefault.runtime.cuts import find_cuts
from edgefault.train import TrainConfig, train
from onnx_builders import ort_quantized_cnn
from test_campaign import digits_npz

SETTINGS = SessionSettings(intra_op_threads=1)
FLAGS = dict(input_size="1x28x28", mean="0.1307", std="0.3081")


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return digits_npz(tmp_path_factory.mktemp("suffix_data") / "digits.npz", 160)


@pytest.fixture(scope="module")
def resnet(tmp_path_factory, one_thread):
    """A ResNet-20 trained for one short epoch (its predictions vary, so faults show) and exported."""
    folder = tmp_path_factory.mktemp("suffix_resnet")
    spec = digits_npz(folder / "train.npz", 400)
    train(TrainConfig(model="resnet20", data=spec, epochs=1, augment=False, seed=0), folder / "run", progress=False)
    export_run(folder / "run", folder / "resnet20.onnx")
    return folder / "resnet20.onnx"


@pytest.fixture(scope="module")
def qoperator(tmp_path_factory):
    logging.getLogger().setLevel(logging.ERROR)  # quantize_static warns about pre-processing
    return ort_quantized_cnn(tmp_path_factory.mktemp("suffix_qop"), "qoperator", seed=2)


def prepared_model(path, digits, **flags):
    prepared = prepare_campaign(CampaignConfig.create([path], data=digits, kinds=("flip",), rates=(0.02,), chips=1,
                                                      **flags))
    return prepared, prepared.models[0], next(iter(prepared.inputs.values()))


def every_cut_matches_the_whole_model(path, digits, **flags):
    """For each cached cut: faults in the last weight tensor, run from the cut and from the input."""
    prepared, model, inputs = prepared_model(path, digits, **flags)
    injector = Injector(model.data)
    cache = SuffixCache(model, inputs, SETTINGS, 256 << 20, CAMPAIGN_BATCH)
    last = injector.memory().names[-1]
    records = sample_faults(injector.memory(), Chip("flip", rate=0.05, seed=3, layers=f"^{last}$"))
    assert cache.choose(records) is not None
    cached = cache._cached
    assert len(cached) >= 3 and all(c.inputs.images.dtype.kind in "iu" for c in cached)  # integer cuts only
    whole, _ = injector.apply(records)
    expected = Evaluator(whole, SETTINGS, input_name=model.input_name).predict(inputs.images)
    clean = Evaluator(model.data, SETTINGS, input_name=model.input_name).predict(inputs.images)
    assert not np.array_equal(expected, clean)  # the faults change predictions, so equality below means something
    for entry in cached:
        data, fault_map = entry.injector.apply(remap(records, entry.injector.memory()))
        assert len(fault_map.records) == len(records)
        got = entry.evaluator(data, SETTINGS, model.output_name).predict(entry.inputs.images, CAMPAIGN_BATCH)
        assert np.array_equal(got, expected), entry.cut.name
    return [entry.cut.name for entry in cached]


def test_every_cut_of_a_resnet_gives_the_whole_models_predictions(resnet, digits):
    # A 7-bit activation is QuantizeLinear then Clip: both outputs are the same cut, keep the Clip's.
    names = [n for n in every_cut_matches_the_whole_model(resnet, digits) if not n.endswith(".q")]
    # Block boundaries: the stem's output and every block's output are cuts; nothing inside a block is.
    assert names[:2] == ["stem_act", "blocks_0_act_out"]
    assert [f"blocks_{i}_act_out" for i in range(9)] == [n for n in names if n.startswith("blocks_")]


def test_every_cut_of_a_foreign_qoperator_model_gives_the_whole_models_predictions(qoperator, digits):
    names = every_cut_matches_the_whole_model(qoperator, digits, **FLAGS)
    assert "p1_quantized" in names and "f_quantized" in names  # uint8 MaxPool and Flatten outputs


def test_a_branch_inside_a_block_is_not_a_cut(resnet):
    cuts = {cut.name: cut for cut in find_cuts(parse_model(resnet.read_bytes()), "logits")}
    assert "blocks_0_act1" not in cuts  # the shortcut still needs the block's input
    assert cuts["blocks_1_act_out"].allows({"blocks.2.conv1.weight"})
    assert not cuts["blocks_1_act_out"].allows({"blocks.1.conv2.weight"})


def per_layer_records(runner, prepared, model_index=0):
    cells = [Cell(model_index, "layer", "flip", 0.02, 0, 11, name) for name in prepared.tensors[model_index]]
    return {cell.target: runner.run(cell) for cell in cells}


def test_per_layer_cells_from_cuts_equal_whole_model_cells_and_the_cache_is_built_once(resnet, digits, caplog):
    prepared, _, _ = prepared_model(resnet, digits)
    caplog.set_level(logging.INFO, logger="edgefault.campaign.suffix")
    fast = per_layer_records(CellRunner(prepared.payload(1)), prepared)
    slow = per_layer_records(CellRunner(dataclasses.replace(prepared.payload(1), cache_bytes=0)), prepared)
    measured = ("predictions", "accuracy", "correct", "faults", "faulty_bits")
    for target in fast:
        assert fast[target]["error"] is None and slow[target]["cut"] is None
        assert [fast[target][f] for f in measured] == [slow[target][f] for f in measured], target
    assert fast["stem.weight"]["cut"] is None  # faults in the stem: only the input's quantization precedes them
    assert fast["blocks.1.conv1.weight"]["cut"] == "blocks_0_act_out"
    assert fast["fc.weight"]["cut"] == "flatten"
    assert len({r["predictions"] for r in fast.values()}) > 1
    built = [r.getMessage() for r in caplog.records if "cached clean activations" in r.getMessage()]
    assert len(built) == 1 and "of a 256.0 MB budget" in built[0]


def test_cuts_over_the_budget_fall_back_to_the_whole_model(resnet, digits, caplog):
    prepared, model, inputs = prepared_model(resnet, digits)
    last_stage = 64 * 7 * 7 * len(inputs)  # one cut of the last stage (uint8 activations)
    caplog.set_level(logging.INFO, logger="edgefault.campaign.suffix")
    runner = CellRunner(dataclasses.replace(prepared.payload(1), cache_bytes=int(last_stage * 2.5)))
    records = per_layer_records(runner, prepared)
    assert records["blocks.1.conv1.weight"]["cut"] is None  # its cut did not fit
    assert records["fc.weight"]["cut"] is not None
    assert any("over budget" in r.getMessage() for r in caplog.records)
    whole = per_layer_records(CellRunner(dataclasses.replace(prepared.payload(1), cache_bytes=0)), prepared)
    assert all(records[t]["predictions"] == whole[t]["predictions"] for t in records)


def test_campaign_with_and_without_the_cache_writes_the_same_results(resnet, digits, tmp_path):
    config = CampaignConfig.create([resnet], data=digits, kinds=("sa1",), rates=(0.01,), chips=1, per_layer=True)
    runs = {}
    for cache_mb in (0, 64):
        folder = tmp_path / f"cache{cache_mb}"
        result = run_campaign(config, folder, ExecutionSettings(workers=1, cache_mb=cache_mb))
        runs[cache_mb] = {r["key"]: r for r in ResultsLog(folder / "results.jsonl").read()}
        assert result.summary["from_cut"] == sum(r["cut"] is not None for r in runs[cache_mb].values())
    assert runs[0].keys() == runs[64].keys()
    assert all(runs[0][k]["predictions"] == runs[64][k]["predictions"] for k in runs[0])
    assert sum(r["cut"] is not None for r in runs[64].values()) == 21  # every layer but the stem


def test_cache_budget_must_be_a_non_negative_number():
    with pytest.raises(EdgefaultError, match="cache_mb"):
        ExecutionSettings(cache_mb=-1)
