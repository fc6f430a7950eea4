"""Chips nested across rates for every kind, one seed per campaign chip for all rates, and k-bit models end to end."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from cli_helpers import run
from edgefault.campaign import CampaignConfig, chip_seed, plan_cells
from edgefault.errors import EdgefaultError
from edgefault.faults import KINDS, SA1, Chip, WeightMemory, sample_faults
from onnx_builders import ort_quantized_cnn

RATES = (1e-4, 1e-3, 2e-3, 0.011, 0.1, 0.3, 0.5, 0.7, 1.0)
MEMORIES = {
    "int8": WeightMemory.from_tensors([("w", "int8", (60_000,), "t")]),
    "mixed": WeightMemory.from_tensors([("a", "int4", (7_001,), "t"), ("b", "int8", (5_000,), "t", 3, "container"),
                                        ("c", "int16", (3_000,), "t"), ("d", "uint8", (4_000,), "t", 4, "packed"),
                                        ("e", "int32", (500,), "t")], include_bias=True),
}


def _faults(memory: WeightMemory, kind: str, seed: int, **settings) -> dict[int, int]:
    chip = Chip(kind, seed=seed, include_bias=memory.include_bias, **settings)
    records = sample_faults(memory, chip)
    return dict(zip(records.address.tolist(), records.kind.tolist()))


@pytest.mark.parametrize("memory_name", sorted(MEMORIES))
@pytest.mark.parametrize("kind", KINDS)
def test_faulty_cells_at_a_rate_are_a_subset_of_those_at_any_higher_rate(memory_name, kind):
    memory = MEMORIES[memory_name]
    for seed in (0, 7):
        chains = [_faults(memory, kind, seed, rate=rate) for rate in RATES]
        for low, high in zip(chains, chains[1:]):
            assert low.keys() <= high.keys()
            assert all(high[address] == code for address, code in low.items())  # a stuck cell keeps its polarity
        assert len(chains[0]) < len(chains[-2]) < len(chains[-1])
    counts = [_faults(memory, kind, 3, count=count) for count in (0, 5, 50, 500)]
    assert all(a.keys() <= b.keys() for a, b in zip(counts, counts[1:]))


def test_counts_are_the_first_cells_to_fail_as_the_rate_rises():
    memory = MEMORIES["int8"]
    at_rate = sample_faults(memory, Chip("flip", rate=0.01, seed=4)).address
    counted = sample_faults(memory, Chip("flip", count=at_rate.size, seed=4)).address
    assert np.array_equal(at_rate, counted)


@pytest.mark.parametrize("rate", [0.24, 0.25, 0.26, 0.5, 0.9, 3e-3])
def test_nested_thresholds_stay_uniform_at_band_edges(rate):
    memory = WeightMemory.from_tensors([("w", "int8", (25_000,), "t")])
    n = memory.nbits
    for seed in range(3):
        faults = len(sample_faults(memory, Chip("flip", rate=rate, seed=seed)))
        assert abs(faults - n * rate) <= 6 * np.sqrt(n * rate * (1 - rate))
    polarity = sample_faults(memory, Chip("stuck", rate=0.2, seed=1)).kind
    assert abs(np.mean(polarity == SA1) - 0.5) < 6 * 0.5 / np.sqrt(polarity.size)


def test_nesting_keeps_the_prefix_and_pairing_properties():
    large = WeightMemory.from_tensors([("w", "int8", (40_000,), "t")])
    small = WeightMemory.from_tensors([("v", "int4", (30_000,), "t")])  # 120,000 cells: a prefix of 320,000
    for rate in (1e-3, 0.05):
        big = sample_faults(large, Chip("flip", rate=rate, seed=9)).address
        assert np.array_equal(sample_faults(small, Chip("flip", rate=rate, seed=9)).address, big[big < small.nbits])


def test_campaign_chips_have_one_seed_for_every_rate_and_old_folders_are_refused():
    config = CampaignConfig(models=("a",), model_hashes=("a" * 64,), kinds=("flip", "stuck"), rates=(1e-3, 2e-3),
                            chips=2)
    cells = [c for c in plan_cells(config, [("w",)]) if c.mode == "grid"]
    for cell in cells:
        assert cell.seed == chip_seed(0, cell.kind, cell.chip)
    memory = MEMORIES["int8"]
    for kind in ("flip", "stuck"):
        by_rate = {c.rate: _faults(memory, kind, c.seed, rate=c.rate) for c in cells if c.kind == kind and c.chip == 1}
        assert by_rate[1e-3].keys() <= by_rate[2e-3].keys()
    old = {key: value for key, value in config.to_dict().items() if key != "chip_seeding"}  # a pre-nesting file
    with pytest.raises(EdgefaultError, match="old chip seeding .* use another `out`"):
        config.check_same(CampaignConfig.from_dict(old), "runs/old")
    config.check_same(CampaignConfig.from_dict(config.to_dict()), "runs/new")


def test_inject_maps_at_two_rates_are_nested_and_report_coverage(tmp_path, capsys):
    model = ort_quantized_cnn(tmp_path / "m", "qoperator")
    maps = {}
    for rate in ("0.01", "0.011"):
        maps[rate] = tmp_path / f"{rate}.json"
        code, out, err = run(["inject", str(model), "--kind", "stuck", "--rate", rate, "--seed", "5",
                              "--out", str(tmp_path / f"{rate}.onnx"), "--map", str(maps[rate])], capsys)
        assert code == 0, err
        assert out.startswith("weight memory: 3 tensors, ")
        assert "(int8: 3 tensors, " in out and "3 int32 biases left out" in out
    faults = {rate: {(f["tensor"], f["index"], f["bit"], f["kind"]) for f in json.loads(path.read_text())["faults"]}
              for rate, path in maps.items()}
    assert faults["0.01"] < faults["0.011"]


def test_a_4bit_model_gets_faults_on_its_4_stored_bits_only(tmp_path, capsys):
    run_dir, model, faulty = tmp_path / "run", tmp_path / "w4.onnx", tmp_path / "faulty.onnx"
    code, _, err = run(["train", "--model", "lenet5", "--epochs", "1", "--wbits", "4", "--out", str(run_dir)], capsys)
    assert code == 0, err
    code, _, err = run(["export", str(run_dir), "--out", str(model), "--limit", "200"], capsys)
    assert code == 0, err
    code, out, err = run(["inject", str(model), "--kind", "flip", "--rate", "0.05", "--seed", "1", "--out",
                          str(faulty), "--map", str(tmp_path / "map.json"), "--json"], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["coverage"]["stored_bits_from"] == "metadata edgefault.wbits"
    assert set(report["coverage"]["storage"]) == {"int4 in int8"}
    clean = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(model)).graph.initializer}
    after = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(faulty)).graph.initializer}
    weights = [t["tensor"] for t in json.loads((tmp_path / "map.json").read_text())["summary"]["per_tensor"]]
    cells = sum(clean[name].size * 4 for name in weights)
    assert report["memory_bits"] == cells
    changed = 0
    for name in weights:
        assert after[name].min() >= -8 and after[name].max() <= 7
        changed += int(np.unpackbits((clean[name].view(np.uint8) ^ after[name].view(np.uint8)) & 0x0F).sum())
    assert abs(changed - 0.05 * cells) <= 6 * np.sqrt(cells * 0.05 * 0.95)
    assert changed == report["changed_bits"]
    code, out, err = run(["inject", str(model), "--kind", "flip", "--rate", "0.05", "--bits", "7",
                          "--out", str(tmp_path / "x.onnx")], capsys)
    assert code == 2 and "beyond" in err and "4-bit" in err
    code, out, err = run(["eval", str(faulty), "--no-timing", "--limit", "50", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["weight_memory"]["bits"] == cells
    code, out, err = run(["campaign", str(model), "--kinds", "stuck", "--rates", "0.05", "--chips", "1",
                          "--limit", "50", "--workers", "1", "--per-bit", "--out", str(tmp_path / "campaign")], capsys)
    assert code == 0, err
    assert "w4: weight memory: 5 tensors, " in out and "(int4 in int8: 5 tensors" in out
    records = [json.loads(line) for line in (tmp_path / "campaign" / "results.jsonl").read_text().splitlines()]
    assert sorted(r["target"] for r in records if r["mode"] == "bit") == [0, 1, 2, 3]  # a 4-bit device has 4 cells
    assert all(r["error"] is None for r in records)
