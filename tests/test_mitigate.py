"""``mitigate`` on a tiny profile (1 epoch, 2 methods + ECC), its reuse of finished stages, energy, and bad input."""

import csv
import json

import pytest

from edgefault.campaign import CampaignConfig, ExecutionSettings, run_campaign
from edgefault.mitigate.config import MitigateConfig
from edgefault.mitigate.pipeline import run_mitigate
from edgefault.mitigate.voltage import read_voltage_curve
from cli_helpers import assert_one_error_line, run

TINY = dict(methods=("qat", "clip", "ecc"), epochs=1, kinds=("flip",), rates=(1e-2, 1e-1), chips=3, cost_limit=100,
            attack_flips=8, attack_batches=1, attack_limit=100)
CURVE = "voltage,bit_error_rate,relative_energy\n1.0,0,1.0\n0.9,1e-4,0.81\n0.8,1e-3,0.64\n0.7,1e-2,0.49\n0.6,0.5,0.36\n"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mitigate")
    (folder / "curve.csv").write_text(CURVE)
    out = folder / "board"
    result = run_mitigate(MitigateConfig(**TINY), out, ExecutionSettings(workers=2),
                          read_voltage_curve(folder / "curve.csv"), progress=False)
    return out, result


def test_the_leaderboard_names_every_field_for_every_method(tiny):
    out, result = tiny
    board = json.loads((out / "leaderboard.json").read_text())
    assert [row["method"] for row in board["methods"]] == ["qat", "clip", "ecc"]
    for row in board["methods"]:
        assert 0.5 < row["clean_accuracy"] <= 1
        flip = row["kinds"]["flip"]
        assert [p["rate"] for p in flip["rates"]] == [1e-2, 1e-1]
        for point in flip["rates"]:
            assert point["chips"] == 3
            assert point["accuracy_low"] <= point["accuracy"] <= point["accuracy_high"]
            # an image wrong clean or faulty is a robust error: never below the plain error
            assert point["robust_error"] >= 1 - point["accuracy"] - 1e-12
        for tolerance in ("1", "5"):
            entry = flip["tolerable"][tolerance]
            assert 0 <= entry["low"] <= entry["median"] <= entry["high"] <= 1e-1
        assert row["energy"]["voltage"] is None or 0.6 <= row["energy"]["voltage"] <= 1.0
    qat, clip, ecc = board["methods"]
    assert qat["train_time_relative"] == 1.0 and ecc["train_time_relative"] == 1.0
    assert ecc["storage_overhead"] == 3 / 8 and qat["storage_overhead"] == 0
    assert ecc["clean_accuracy"] == qat["clean_accuracy"]
    # ECC on the sign bit meets the same chips with fewer faults: never worse on average at the top rate
    assert ecc["kinds"]["flip"]["rates"][1]["accuracy"] >= qat["kinds"]["flip"]["rates"][1]["accuracy"]
    assert board["winner"] in {"qat", "clip", "ecc"}
    rows = list(csv.DictReader((out / "leaderboard.csv").open()))
    assert len(rows) == 6 and {"tolerable_1pt", "robust_error", "energy_saved", "storage_overhead"} <= set(rows[0])
    text = (out / "leaderboard.md").read_text()
    assert "tolerable BER, 1 pt" in text and "energy saved" in text
    assert "speedup (skipping)" in text and "flips to break" in text and "The attack " in text
    # against QAT's own dense execution, QAT's speedup is the cost model's own total; skipping never costs cycles
    own = json.loads((out / "cost" / "qat.json").read_text())["result"]["speedup"]["skipping_imbalanced"]
    assert qat["speedup"]["mean"] == own >= 1.0 and clip["speedup"]["mean"] >= 1.0 and ecc["speedup"] == qat["speedup"]
    assert qat["energy_saving"]["mean"] > 0  # skipping zeros saves MAC energy on the conventional model too
    assert ecc["flips_to_break"] is None and qat["flips_to_break"]["text"]
    assert 1 <= qat["flips_to_break"]["median"] <= 9 and {"speedup", "flips_to_break"} <= set(rows[0])
    for name in ("accuracy_vs_rate.png", "pareto.png"):
        assert (out / name).stat().st_size > 10_000


def test_a_rerun_reuses_trainings_exports_and_cells(tiny):
    out, _ = tiny
    assert "One training seed per method" in (out / "leaderboard.md").read_text()
    stamps = {p: p.stat().st_mtime_ns for p in [out / "runs" / "qat" / "model.pt", out / "models" / "clip.onnx"]}
    lines = (out / "campaign" / "results.jsonl").read_text().count("\n")
    run_mitigate(MitigateConfig(**TINY), out, ExecutionSettings(workers=1), progress=False)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert (out / "campaign" / "results.jsonl").read_text().count("\n") == lines


def test_campaign_protecting_every_bit_sees_no_fault(tiny, tmp_path):
    out, _ = tiny
    config = CampaignConfig.create([str(out / "models" / "qat.onnx")], kinds=("flip",), rates=(0.2,), chips=2,
                                   protect_bits=tuple(range(8)))
    summary = run_campaign(config, tmp_path / "ecc", ExecutionSettings(workers=1)).summary
    grid = [g for g in summary["groups"] if g["mode"] == "grid"]
    assert grid and all(g["mean"] == summary["clean"][0]["accuracy"] for g in grid)


@pytest.mark.parametrize("args, fragment", [
    (["--methods", "qat,magic"], "unknown mitigation 'magic'"),
    (["--voltage-curve", "{dir}/missing.csv"], "missing.csv: no such file"),
    (["--voltage-curve", "{dir}/columns.csv"], "missing column(s) relative_energy"),
    (["--voltage-curve", "{dir}/order.csv"], "voltages out of order"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, args, fragment):
    (tmp_path / "columns.csv").write_text("voltage,bit_error_rate\n1.0,0\n")
    (tmp_path / "order.csv").write_text("voltage,bit_error_rate,relative_energy\n1.0,0,1\n0.8,1e-3,0.6\n0.9,1e-4,0.8\n")
    out = tmp_path / "out"
    code, stdout, err = run(["mitigate", "--out", str(out), *[a.format(dir=tmp_path) for a in args]], capsys)
    assert_one_error_line(code, stdout, err, fragment)
    assert not out.exists()


def test_a_folder_holding_another_study_is_refused_untouched(tiny, capsys):
    out, _ = tiny
    before = (out / "leaderboard.json").read_bytes()
    code, stdout, err = run(["mitigate", "--out", str(out), "--quick", "--methods", "qat,clip"], capsys)
    assert_one_error_line(code, stdout, err, "holds another mitigation study")
    assert (out / "leaderboard.json").read_bytes() == before


def test_more_seeds_reuse_the_first_and_pool_the_leaderboard(tmp_path):
    # qat and ECC only: a 1-epoch clip model of training seed 1 fails the export's 99.5% parity check
    settings = dict(TINY, methods=("qat", "ecc"))
    folder = tmp_path / "seeds"
    first = run_mitigate(MitigateConfig(**settings), folder, ExecutionSettings(workers=2), progress=False)
    stamp = (folder / "runs" / "qat" / "model.pt").stat().st_mtime_ns
    result = run_mitigate(MitigateConfig(**settings, seeds=2), folder, ExecutionSettings(workers=2), progress=False)
    assert (folder / "runs" / "qat" / "model.pt").stat().st_mtime_ns == stamp
    assert json.loads((folder / "seeds" / "1" / "runs" / "qat" / "config.json").read_text())["seed"] == 1
    assert (folder / "seeds" / "1" / "campaign_ecc" / "results.jsonl").exists()
    board = result.board
    assert board["training_seeds"] == [0, 1] and first.board["training_seeds"] == [0]
    qat = board["methods"][0]
    tolerable = qat["kinds"]["flip"]["tolerable"]["1"]
    one_seed = first.board["methods"][0]["kinds"]["flip"]["tolerable"]["1"]
    assert len(tolerable["per_seed"]) == 2 and tolerable["per_seed"][0] == one_seed["median"]
    assert tolerable["median"] == pytest.approx(sum(tolerable["per_seed"]) / 2)
    point = qat["kinds"]["flip"]["rates"][0]
    assert point["seeds"] == 2 and point["chips"] == 3
    assert len(qat["flips_to_break"]["per_seed"]) == 2 and len(board["methods"][1]["speedup"]["per_seed"]) == 2
    assert qat["flips_to_break"]["per_seed"][0] == first.board["methods"][0]["flips_to_break"]["per_seed"][0]
    assert point["accuracy_low"] <= point["accuracy"] <= point["accuracy_high"]
    assert "2 training seeds per method" in (folder / "leaderboard.md").read_text()
