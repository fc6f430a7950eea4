"""``edgefault campaign``: settings, paired chips, statistics, streaming, resume after a real kill, bad input.

Everything runs for real: ONNX Runtime's quantizer writes the models, the fault layer injects
in memory, worker processes score with ONNX Runtime. Datasets are small npz files cut from
mnist5k (a stratified test split; ``--limit`` on mnist5k would keep only its first classes).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgefault.campaign import (CampaignConfig, Cell, ExecutionSettings, LocalEngine, ResultsLog, chip_seed, estimate,
                                finished_keys, model_names, parse_rates, plan_cells, prepare_campaign, run_campaign,
                                summarize)
from edgefault.campaign.run import execute_cells
from edgefault.errors import EdgefaultError
from edgefault.faults import Injector
from cli_helpers import run
from onnx_builders import ort_quantized_cnn

FLAGS = ["--input-size", "1x28x28", "--mean", "0.1307", "--std", "0.3081"]
REPO = Path(__file__).resolve().parents[1]
MEASURED = ("accuracy", "correct", "images", "faults", "faulty_bits", "predictions")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("campaign_models")
    logging.getLogger().setLevel(logging.ERROR)  # quantize_static warns about pre-processing
    return [ort_quantized_cnn(folder, "qdq_per_channel", seed=0), ort_quantized_cnn(folder, "qdq_s8s8", seed=1)]


def digits_npz(path: Path, count: int) -> str:
    """An npz of ``count`` mnist5k test images in shuffled order (every class present), as a dataset SPEC."""
    from edgefault.data import load_dataset

    data = load_dataset("mnist5k")
    order = np.random.default_rng(0).permutation(len(data.test_labels))[:count]
    images = np.round(data.test_images[order, 0] * 255).astype(np.uint8)
    labels = data.test_labels[order]
    np.savez(path, x_train=images[:20], y_train=labels[:20], x_test=images, y_test=labels)
    return f"npz:{path}"


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return digits_npz(tmp_path_factory.mktemp("data") / "digits.npz", 200)


@pytest.fixture(scope="module")
def digits_large(tmp_path_factory):
    return digits_npz(tmp_path_factory.mktemp("data") / "digits_large.npz", 600)


def measured(folder: Path) -> dict[str, tuple]:
    """key -> the measured fields of each successful cell; asserts no cell was recorded twice."""
    records = [r for r in ResultsLog(folder / "results.jsonl").read(repair=False) if r["error"] is None]
    keys = [r["key"] for r in records]
    assert len(keys) == len(set(keys)), "a cell was recorded twice"
    return {r["key"]: tuple(r[f] for f in MEASURED) for r in records}


# -- settings ------------------------------------------------------------------------------------


def test_config_validation_and_round_trip(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    config = CampaignConfig.create([model], kinds=("flip",), rates=(1e-3, 0.0), chips=2, seed=3)
    assert CampaignConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert parse_rates(" 1e-4, 0.01 ") == (1e-4, 0.01)
    for settings, fragment in [
        (dict(rates=()), "rate list is empty"),
        (dict(rates=(1.5,)), "rate must lie in [0, 1], got 1.5"),
        (dict(rates=(float("nan"),)), "rate must lie in [0, 1]"),
        (dict(rates=(0.1, 0.1)), "listed twice"),
        (dict(kinds=("bitrot",)), "unknown fault kind 'bitrot'"),
        (dict(chips=0), "chips must be a positive integer"),
        (dict(seed=-1), "seed must be a non-negative integer"),
        (dict(limit=0), "limit must be a positive integer"),
    ]:
        with pytest.raises(EdgefaultError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
            CampaignConfig.create([model], **settings)
    with pytest.raises(EdgefaultError, match="no models"):
        CampaignConfig.create([])
    with pytest.raises(EdgefaultError, match="same model"):
        CampaignConfig.create([model, model])
    with pytest.raises(EdgefaultError, match=r"chips: 2 there, 5 here"):
        CampaignConfig.create([model], chips=5).check_same(CampaignConfig.create([model], chips=2), "DIR")
    assert model_names(("a/m.onnx", "b/m.onnx", "c.onnx")) == ["a/m", "b/m", "c"]


def test_plan_and_chip_seeds_do_not_depend_on_the_model():
    config = CampaignConfig(models=("a", "b"), model_hashes=("a" * 64, "b" * 64), kinds=("flip", "sa0"),
                            rates=(1e-3, 1e-2), chips=3, per_layer=True, per_bit=True)
    cells = plan_cells(config, [("w1", "w2"), ("v1",)])
    grid = [c for c in cells if c.mode == "grid"]
    assert len(grid) == 2 * 2 * 2 * 3 and sum(c.mode == "clean" for c in cells) == 2
    assert sum(c.mode == "layer" for c in cells) == (2 + 1) * 12 and sum(c.mode == "bit" for c in cells) == 2 * 8 * 12
    seeds = {(c.model, c.kind, c.rate, c.chip): c.seed for c in grid}
    for (model, kind, rate, chip), seed in seeds.items():
        # one seed per (kind, chip) for every rate: chips are nested across rates
        assert seed == seeds[1 - model, kind, rate, chip] == chip_seed(0, kind, chip) == seeds[model, kind, 1e-3, chip]
    assert len(set(seeds.values())) == 6  # distinct across kinds and chips
    keys = [c.key(config.model_hashes[c.model]) for c in cells]
    assert len(keys) == len(set(keys))


def test_paired_design_same_fault_addresses_across_models(models, digits, tmp_path):
    """Two models and the same campaign chips: the fault maps hit the same addresses, with the same bits."""
    config = CampaignConfig.create(models, data=digits, kinds=("flip", "sa1"), rates=(1e-2,), chips=3,
                                   input_size="1x28x28", mean="0.1307", std="0.3081")
    prepared = prepare_campaign(config)
    injectors = [Injector(m.data) for m in prepared.models]
    assert injectors[0].memory().nbits == injectors[1].memory().nbits
    for cell in (c for c in plan_cells(config, prepared.tensors) if c.mode == "grid" and c.model == 0):
        maps = [injector.inject(cell.to_chip())[1] for injector in injectors]
        first, second = (m.to_dict()["faults"] for m in maps)
        assert len(first) > 100
        assert [(f["tensor"], f["index"], f["bit"], f["kind"], f["address"]) for f in first] == \
               [(f["tensor"], f["index"], f["bit"], f["kind"], f["address"]) for f in second]
    # The campaign's own records agree: both models got the same chip seeds and fault counts.
    result = run_campaign(config, tmp_path / "c", ExecutionSettings(workers=1))
    records = ResultsLog(tmp_path / "c" / "results.jsonl").read()
    by_model = [{(r["kind"], r["rate"], r["chip"]): (r["seed"], r["faults"]) for r in records
                 if r["mode"] == "grid" and r["model_hash"] == h} for h in config.model_hashes]
    assert by_model[0] == by_model[1] and len(by_model[0]) == 6
    assert result.summary["paired"][0]["n"] == 3


# -- statistics ----------------------------------------------------------------------------------


def test_statistics_on_known_numbers():
    e = estimate([0.9, 0.8, 0.7])
    # t(0.975, 2) = 4.302653; half-width = 4.302653 * 0.1 / sqrt(3)
    assert e.n == 3 and e.mean == pytest.approx(0.8) and e.std == pytest.approx(0.1)
    assert e.high - e.mean == pytest.approx(0.248413, abs=1e-6) and e.mean - e.low == pytest.approx(0.248413, abs=1e-6)
    assert estimate([0.5]).std is None and estimate([]).n == 0
    models = [{"name": "a", "sha256": "a" * 64}, {"name": "b", "sha256": "b" * 64}]
    cells = [{"key": f"{m}c", "model": i, "mode": "clean"} for i, m in enumerate("ab")]
    results = {"ac": {"accuracy": 0.95}, "bc": {"accuracy": 0.90}}
    for i, m in enumerate("ab"):
        for k, value in enumerate([(0.9, 0.8, 0.7), (0.8, 0.8, 0.6)][i]):
            key = f"{m}{k}"
            cells.append({"key": key, "model": i, "mode": "grid", "target": None, "kind": "flip", "rate": 0.01, "chip": k})
            results[key] = {"accuracy": value, "faulty_bits": 10 + k}
    summary = summarize(models, cells, results, {})
    a, b = summary["groups"]
    assert a["mean"] == pytest.approx(0.8) and a["drop"] == pytest.approx(0.15) and a["mean_faulty_bits"] == 11
    assert b["mean"] == pytest.approx(2.2 / 3) and b["ci_low"] < b["mean"] < b["ci_high"]
    (paired,) = summary["paired"]
    # per-chip differences 0.1, 0.0, 0.1: mean 1/15, std 0.057735, half-width 4.302653 * 0.057735 / sqrt(3)
    assert paired["n"] == 3 and paired["mean_diff"] == pytest.approx(1 / 15)
    assert paired["std"] == pytest.approx(0.0577350, abs=1e-6)
    assert paired["ci_high"] - paired["mean_diff"] == pytest.approx(0.143422, abs=1e-5)
    assert paired["significant"] is False  # the interval includes 0
    # drops 0.15 (a) and 0.1667 (b): a loses 1/60 less; same interval width, shifted by the clean gap 0.05
    assert paired["drop_diff"] == pytest.approx(0.05 - 1 / 15)
    assert paired["drop_ci_high"] - paired["drop_diff"] == pytest.approx(0.143422, abs=1e-5)


# -- streaming ------------------------------------------------------------------------------------


def test_results_log_drops_a_torn_last_line_and_refuses_damage(tmp_path):
    log = ResultsLog(tmp_path / "results.jsonl")
    log.append({"key": "a", "error": None, "accuracy": 0.5})
    log.append({"key": "b", "error": "Boom: x"})
    log.close()
    with open(log.path, "ab") as handle:
        handle.write(b'{"key": "c", "acc')  # a write cut short by a kill
    assert [r["key"] for r in log.read()] == ["a", "b"]
    assert log.path.read_bytes().endswith(b'"Boom: x"}\n')  # the torn tail is cut off
    done, tries = finished_keys(log.read())
    assert done == {"a"} and tries == {"b": 1}
    log.path.write_bytes(b'{"key": "a", "error": null}\nnot json\n{"key": "b", "error": null}\n')
    with pytest.raises(EdgefaultError, match="line 2 is not a result record"):
        log.read()


def test_failing_cell_is_recorded_retried_once_and_others_go_on(models, digits, tmp_path):
    config = CampaignConfig.create(models[:1], data=digits, kinds=("flip",), rates=(1e-2,), chips=2,
                                   input_size="1x28x28", mean="0.1307", std="0.3081")
    prepared = prepare_campaign(config)
    good = [c for c in plan_cells(config, prepared.tensors)]
    bad = Cell(model=0, mode="layer", kind="flip", rate=1e-2, chip=0, seed=1, target="no.such.tensor")
    log = ResultsLog(tmp_path / "results.jsonl")
    records = execute_cells(LocalEngine(2, 1), prepared, [(bad, 1)] + [(c, 1) for c in good], log)
    log.close()
    errors = [r for r in records if r["error"] is not None]
    assert [r["attempt"] for r in errors] == [1, 2] and "matches no weight tensor" in errors[0]["error"]
    assert sum(r["error"] is None for r in records) == len(good) == 3
    assert bad.key(config.model_hashes[0]) in finished_keys(log.read())[0]  # given up after two attempts


def test_a_killed_worker_becomes_an_error_record_and_is_replaced(models, digits):
    config = CampaignConfig.create(models[:1], data=digits, kinds=("flip",), rates=(1e-2,), chips=1,
                                   input_size="1x28x28", mean="0.1307", std="0.3081")
    prepared = prepare_campaign(config)
    engine = LocalEngine(1, 1)
    engine.open(prepared.payload(1), cells=2)
    try:
        os.kill(engine._procs[0].pid, signal.SIGKILL)
        engine.submit(0, Cell(model=0, mode="clean"), 1)
        [(task, outcome)] = engine.collect()
        assert task == 0 and isinstance(outcome, str) and "exited with code -9" in outcome
        engine.submit(1, Cell(model=0, mode="clean"), 2)  # the replacement worker runs cells
        [(task, outcome)] = engine.collect()
        assert task == 1 and outcome["error"] is None and outcome["images"] == 200
    finally:
        engine.close()


# -- the command ----------------------------------------------------------------------------------


def test_campaign_cli_end_to_end_modes_files_and_rerun(models, digits, tmp_path, capsys):
    out = tmp_path / "campaign"
    argv = ["campaign", *map(str, models), "--data", digits, "--out", str(out), "--kinds", "flip",
            "--rates", "1e-3,1e-2", "--chips", "3", "--per-layer", "--per-bit", "--workers", "2", *FLAGS]
    code, stdout, err = run(argv, capsys)
    assert code == 0, err
    assert "paired differences" in stdout and "quant_qdq_per_channel - quant_qdq_s8s8" in stdout
    names = {"campaign.json", "results.jsonl", "summary.json", "summary.csv", "paired.csv", "summary.md",
             "accuracy_vs_rate.png", "heatmap_layers.png", "heatmap_bits.png"}  # no .lock once finished
    assert {p.name for p in out.iterdir()} == names
    summary = json.loads((out / "summary.json").read_text())
    planned = 2 + 2 * 2 * 3 * (1 + 3 + 8)  # clean + grid, per-layer (3 tensors), per-bit (8 bits)
    assert summary["cells"] == {"planned": planned, "done": planned, "failed": 0}
    grid = [g for g in summary["groups"] if g["mode"] == "grid"]
    assert len(grid) == 4 and all(g["n"] == 3 and g["ci_low"] <= g["mean"] <= g["ci_high"] for g in grid)
    assert {g["target"] for g in summary["groups"] if g["mode"] == "bit"} == set(range(8))
    assert len(summary["paired"]) == 2 + 2 * 8  # grid and per-bit pairs; layers are not paired
    assert (out / "summary.csv").read_text().splitlines()[0].startswith("model,mode,target,kind,rate")
    assert "## Per-bit vulnerability" in (out / "summary.md").read_text()
    saved = json.loads((out / "campaign.json").read_text())
    assert saved["config"]["seed"] == 0 and saved["config"]["version"] and len(saved["config"]["model_hashes"][0]) == 64
    for png in ("accuracy_vs_rate.png", "heatmap_layers.png", "heatmap_bits.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    before = (out / "results.jsonl").read_bytes()

    code, stdout, err = run([*argv, "--json"], capsys)  # the same command again: nothing left to run
    assert code == 0, err
    report = json.loads(stdout)
    assert report["ran"] == 0 and report["resumed"] == planned
    assert (out / "results.jsonl").read_bytes() == before

    code, stdout, err = run([a if a != "3" else "4" for a in argv], capsys)  # other settings: refused
    assert code == 2 and stdout == "" and "chips: 3 there, 4 here" in err and len(err.strip().splitlines()) == 1
    assert (out / "results.jsonl").read_bytes() == before


def test_resume_after_sigkill_equals_an_uninterrupted_run(models, digits_large, tmp_path):
    args = [str(models[0]), "--data", digits_large, "--kinds", "flip,sa0", "--rates", "1e-3,1e-2", "--chips", "10",
            "--workers", "2", "--seed", "5", *FLAGS]
    out = tmp_path / "killed"
    # The campaign command itself, without the CLI group (whose other subcommands load torch): same code, quicker start.
    launcher = "from edgefault.cli.campaign_cmd import command; command()"
    command = [sys.executable, "-c", launcher, *args, "--out", str(out), "--json"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    results = out / "results.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not results.exists() or results.read_bytes().count(b"\n") < 8):
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    lines = results.read_bytes().count(b"\n")
    assert 8 <= lines < 41, "the kill must land mid-campaign"
    assert not (out / "summary.json").exists()
    with open(results, "ab") as handle:
        handle.write(b'{"key": "torn')  # as if the kill had landed inside a write
    finished = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    assert json.loads(finished.stdout)["resumed"] == lines

    reference = tmp_path / "uninterrupted"
    config = CampaignConfig.create(models[:1], data=digits_large, kinds=("flip", "sa0"), rates=(1e-3, 1e-2),
                                   chips=10, seed=5, input_size="1x28x28", mean="0.1307", std="0.3081")
    run_campaign(config, reference, ExecutionSettings(workers=1))
    resumed, uninterrupted = measured(out), measured(reference)
    assert len(uninterrupted) == 41 and resumed == uninterrupted
    assert json.loads((out / "summary.json").read_text())["groups"] == \
           json.loads((reference / "summary.json").read_text())["groups"]


def test_model_with_edgefault_metadata_needs_no_flags(models, digits, tmp_path):
    """An exported edgefault LeNet-5 carries its preprocessing; it pairs with a quantizer's model."""
    torch = pytest.importorskip("torch")
    from edgefault.data import load_dataset
    from edgefault.export import ExportSettings, export_model
    from edgefault.models import create_model

    torch.manual_seed(0)
    lenet = tmp_path / "lenet.onnx"
    export_model(create_model("lenet5"), lenet, load_dataset(digits),
                 settings=ExportSettings(keep_on_parity_failure=True, limit=32))
    config = CampaignConfig.create([lenet], data=digits, kinds=("sa1",), rates=(1e-3,), chips=2)
    result = run_campaign(config, tmp_path / "c", ExecutionSettings(workers=1))
    assert result.summary["cells"]["done"] == 3
    saved = json.loads((tmp_path / "c" / "campaign.json").read_text())
    assert saved["models"][0]["input"]["source"] == "metadata"
    # Paired across architectures: below the smaller memory, both models take the same fault addresses.
    chip = plan_cells(config, [()])[1].to_chip()
    small, large = (Injector(p).inject(chip)[1] for p in (models[0], lenet))
    limit = small.memory.nbits
    assert small.records.address.tolist() == [a for a in large.records.address.tolist() if a < limit]


# -- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize("extra, fragment", [
    ([], "no models"),
    (["M", "--rates", ""], "rate list is empty"),
    (["M", "--rates", "1e-3,2"], "rate must lie in [0, 1], got 2.0"),
    (["M", "--kinds", "flip,zap"], "unknown fault kind 'zap'"),
    (["M", "--input-size", "1x32x32"], "does not fit"),
    (["M", "--data", "WIDE"], "has 3x32x32 images but the model takes 1x28x28"),
    (["M", "--ray", "127.0.0.1:1"], "cannot reach the Ray cluster at 127.0.0.1:1"),
    (["M", "--workers", "0"], "--workers must be a positive integer"),
    (["missing.onnx"], "missing.onnx: no such file"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(models, digits, tmp_path, capsys, extra, fragment):
    wide = tmp_path / "wide.npz"
    np.savez(wide, x=np.zeros((50, 32, 32, 3), np.uint8), y=np.arange(50) % 10)
    extra = [str(models[0]) if a == "M" else f"npz:{wide}" if a == "WIDE" else a for a in extra]
    out = tmp_path / "out"
    # Options given after FLAGS win (click keeps the last value), so a case can override them.
    code, stdout, err = run(["campaign", "--data", digits, "--out", str(out), *FLAGS, *extra], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and stdout == "" and len(lines) == 1 and lines[0].startswith("edgefault: error:"), err
    assert fragment in lines[0]
    assert not out.exists()


def test_out_must_be_a_campaign_folder(models, digits, tmp_path, capsys):
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine")
    code, _, err = run(["campaign", str(models[0]), "--data", digits, "--out", str(occupied), *FLAGS], capsys)
    assert code == 2 and "not empty and holds no campaign.json" in err
    assert sorted(p.name for p in occupied.iterdir()) == ["notes.txt"]


def test_unreachable_ray_address_from_a_real_process_prints_no_traceback(models, tmp_path):
    out = tmp_path / "out"
    finished = subprocess.run(
        [sys.executable, "-m", "edgefault.cli.main", "campaign", str(models[0]), "--ray", "127.0.0.1:1",
         "--out", str(out), *FLAGS], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert finished.returncode == 2 and finished.stdout == ""
    assert finished.stderr.strip().splitlines() == [
        "edgefault: error: cannot reach the Ray cluster at 127.0.0.1:1 (connection refused); is Ray running there?"]
    assert not out.exists()
