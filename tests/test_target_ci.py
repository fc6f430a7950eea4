"""``campaign --target-ci W``: chips added per group until every 95% interval is within +/- W.

The decision is checked on known numbers (order-independent, stops at the first sufficient
chip count, caps at the maximum), then end to end on two ONNX Runtime-quantized CNNs against
a fixed-chip campaign on the same chips, and resumed.
"""

from __future__ import annotations

import json
import logging
import random

import pytest

from edgefault.campaign import CampaignConfig, Cell, ExecutionSettings, ResultsLog, plan_cells, run_campaign
from edgefault.campaign.precision import MIN_CHIPS, ChipTargets, within
from edgefault.errors import EdgefaultError
from cli_helpers import assert_one_error_line, run
from onnx_builders import ort_quantized_cnn
from test_campaign import digits_npz

HASHES = ("a" * 64, "b" * 64)
FLAGS = dict(input_size="1x28x28", mean="0.1307", std="0.3081")
FLAG_ARGS = ["--input-size", "1x28x28", "--mean", "0.1307", "--std", "0.3081"]


def config(**settings) -> CampaignConfig:
    return CampaignConfig(models=("a.onnx", "b.onnx"), model_hashes=HASHES, kinds=("flip",), **settings)


def record(cell: Cell, accuracy: float | None) -> dict:
    return {"key": cell.key(HASHES[cell.model]), "error": None if accuracy is not None else "boom",
            "accuracy": accuracy}


def test_decision_is_the_first_sufficient_chip_count_whatever_the_arrival_order():
    settings = config(rates=(1e-3, 1e-1), chips=12, target_ci=0.01)
    cells = plan_cells(settings, [(), ()])
    tight = {0: [0.90] * 12, 1: [0.80] * 12}  # no spread: the fewest chips suffice
    wide = {0: [0.9, 0.5] * 6, 1: [0.8, 0.8, 0.7] * 4}  # never within +/- 0.01
    outcomes = [(c, (tight if c.rate == 1e-3 else wide)[c.model][c.chip]) for c in cells if c.mode == "grid"]
    decisions = []
    for seed in range(3):
        order = outcomes[:]
        random.Random(seed).shuffle(order)
        targets = ChipTargets(cells, HASHES, settings.target_ci, settings.chips)
        for cell, accuracy in order:
            targets.add(record(cell, accuracy))
        decisions.append((dict(targets.needed), dict(targets.met)))
    assert decisions[0] == decisions[1] == decisions[2]
    needed, met = decisions[0]
    assert needed[("grid", None, "flip", 1e-3, None)] == MIN_CHIPS and met[("grid", None, "flip", 1e-3, None)]
    assert needed[("grid", None, "flip", 0.1, None)] == 12 and not met[("grid", None, "flip", 0.1, None)]


def test_a_group_waits_for_its_earlier_chips_and_one_wide_model_holds_the_whole_group():
    settings = config(rates=(1e-3,), chips=10, target_ci=0.02)
    cells = [c for c in plan_cells(settings, [(), ()]) if c.mode == "grid"]
    targets = ChipTargets(cells, HASHES, settings.target_ci, settings.chips)
    a = [0.900, 0.905, 0.895, 0.900, 0.902, 0.898, 0.900, 0.901, 0.899, 0.900]
    b = [0.800, 0.905, 0.795, 0.900, 0.802, 0.898, 0.800, 0.901, 0.799, 0.900]  # itself wide: holds the group
    for cell in cells:
        if cell.chip != 0:
            targets.add(record(cell, (a if cell.model == 0 else b)[cell.chip]))
    assert targets.needed == {}  # chip 0 is missing: nothing is judged on chips 1..9
    assert targets.wanted(cells[0]) and targets.wanted(cells[-1])
    for cell in cells:
        if cell.chip == 0:
            targets.add(record(cell, (a if cell.model == 0 else b)[0]))
    assert within(a[:MIN_CHIPS], 0.02) and not within(b, 0.02)
    assert targets.needed == {("grid", None, "flip", 1e-3, None): 10} and targets.met == {
        ("grid", None, "flip", 1e-3, None): False}


def test_target_ci_must_lie_in_the_open_unit_interval():
    for bad in (0, 1.5, -0.1, True):
        with pytest.raises(EdgefaultError, match="target CI"):
            config(rates=(1e-3,), target_ci=bad)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("target_ci")
    logging.getLogger().setLevel(logging.ERROR)
    models = [ort_quantized_cnn(folder, "qdq_per_channel", seed=0), ort_quantized_cnn(folder, "qdq_s8s8", seed=1)]
    return models, digits_npz(folder / "digits.npz", 200)


def keyed(folder):
    return {r["key"]: r for r in ResultsLog(folder / "results.jsonl").read() if r["error"] is None}


def test_target_ci_matches_a_fixed_chip_campaign_on_shared_chips_stops_early_and_resumes(setup, tmp_path):
    models, data = setup
    common = dict(data=data, kinds=("flip",), rates=(1e-4, 5e-2), chips=9, **FLAGS)
    adaptive = CampaignConfig.create(models, target_ci=0.01, **common)
    first = run_campaign(adaptive, tmp_path / "adaptive", ExecutionSettings(workers=1))
    fixed = run_campaign(CampaignConfig.create(models, **common), tmp_path / "fixed", ExecutionSettings(workers=1))
    got, full = keyed(tmp_path / "adaptive"), keyed(tmp_path / "fixed")
    fields = ("accuracy", "predictions", "faulty_bits")
    assert got and all([got[k][f] for f in fields] == [full[k][f] for f in fields] for k in got)
    rows = {(g["model"], g["rate"]): g for g in first.summary["groups"]}
    assert rows[("quant_qdq_per_channel", 1e-4)]["chips"] < 9  # tight: stopped early
    assert rows[("quant_qdq_per_channel", 5e-2)]["chips"] == 9 and rows[("quant_qdq_per_channel", 5e-2)][
        "target_met"] is False
    assert first.ran < fixed.ran
    for row in first.summary["groups"]:  # the same numbers as the first n chips of the fixed run
        chips = [r["accuracy"] for r in full.values()
                 if r["model"] == row["model"] and r["rate"] == row["rate"] and r["chip"] < row["chips"]]
        assert row["n"] == row["chips"] == len(chips) and row["mean"] == pytest.approx(sum(chips) / len(chips))
        if row["target_met"]:
            assert max(row["ci_high"] - row["mean"], row["mean"] - row["ci_low"]) <= 0.01
    again = run_campaign(adaptive, tmp_path / "adaptive", ExecutionSettings(workers=1))
    assert again.ran == 0 and json.dumps(again.summary["groups"]) == json.dumps(first.summary["groups"])
    assert "within ±0.01" in (tmp_path / "adaptive" / "summary.md").read_text()


@pytest.mark.parametrize("extra, fragment", [(["--target-ci", "0"], "target CI"), (["--cache-mb", "-5"], "--cache-mb")])
def test_bad_target_or_cache_is_one_line_exit_2_and_writes_nothing(setup, tmp_path, capsys, extra, fragment):
    models, data = setup
    out = tmp_path / "never"
    code, stdout, err = run(["campaign", str(models[0]), "--data", data, "--out", str(out), *FLAG_ARGS, *extra], capsys)
    assert_one_error_line(code, stdout, err, fragment)
    assert not out.exists()
