"""``reproduce`` end to end on a tiny profile, its reuse of earlier results, and its bad-input errors."""

import json

import pytest

from edgefault.study import StudyConfig, run_study
from cli_helpers import run_subprocess

TINY = dict(quick=True, seeds=1, epochs=1, chips=3, rates=(2e-2, 5e-2), sharpness_samples=100, sharpness_probes=4,
            landscape_grid=5, act_rates=(1e-3,), act_chips=3, cost_limit=100, attack_flips=8, attack_batches=1,
            attack_limit=100)


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "tiny"
    result = run_study(StudyConfig(**TINY), out, progress=False)
    return out, result


def test_the_study_writes_a_report_with_all_four_claims_and_intervals(tiny_study):
    out, result = tiny_study
    text = result.report.read_text()
    for number in (1, 2, 3, 4):
        assert f"**Claim {number}.**" in text
    assert text.count("95% CI") >= 4
    assert set(result.verdicts.values()) <= {"held", "did not hold", "inconclusive"}
    assert (out / "campaign" / "accuracy_vs_rate.png").stat().st_size > 0
    assert (out / "drop_vs_sharpness.png").stat().st_size > 0
    for name in ("standard", "sparse", "standard_saq", "sparse_saq"):
        assert (out / "models" / f"{name}.onnx").exists() and (out / "sharpness" / name / "metrics.json").exists()


def test_the_report_has_the_activation_tradeoff_and_worst_case_sections_with_numbers(tiny_study):
    out, result = tiny_study
    text = result.report.read_text()
    act = text.split("## Faults in the activation memory")[1].split("\n## ")[0]
    assert "| standard |" in act and "bitmap − dense" in act and "[" in act.split("| sparse_saq |")[1]
    assert "dense, sparse against standard: " in act and "**Bitmap against dense at the same bit error rate:**" in act
    trade = text.split("## What sparsity buys: speed against robustness")[1].split("\n## ")[0]
    rows = {line.split("|")[1].strip(): line.split("|") for line in trade.splitlines() if line.startswith("| s")}
    # the standard model's speedup against its own dense execution is the cost model's own total
    standard = json.loads((out / "cost" / "standard.json").read_text())["result"]
    assert rows["standard"][5].strip() == f"{standard['speedup']['skipping_imbalanced']:.3f}x"
    for name in ("sparse", "standard_saq", "sparse_saq"):
        assert float(rows[name][5].strip().rstrip("x")) >= 1.0  # skipping zeros never costs cycles
    claim = trade.split("keep its speedup at a drop no worse")[1].splitlines()[0]
    assert any(v in claim for v in ("**held**", "**did not hold**", "**inconclusive**")) and "95% CI" in trade
    worst = text.split("## The worst case: flips to break")[1].split("\n## ")[0]
    assert "| sparse_saq |" in worst and "most robust first, by least weight-fault drop" in worst
    for name in ("standard", "sparse"):
        saved = json.loads((out / "attack" / f"{name}.json").read_text())["result"]
        assert len(saved["counts"]) == 1 and (saved["counts"][0] is None or 1 <= saved["counts"][0] <= 8)
    cells = [json.loads(line) for line in (out / "act_campaign" / "results.jsonl").read_text().splitlines()]
    assert {c["format"] for c in cells if c["mode"] == "grid"} == {"dense", "bitmap"}
    for name in ("dense", "bitmap"):  # the plots the section shows
        assert f"act_campaign/accuracy_vs_rate_activations_{name}.png" in act
        assert (out / "act_campaign" / f"accuracy_vs_rate_activations_{name}.png").stat().st_size > 10_000


def test_one_seed_says_its_verdicts_are_about_the_trained_models(tiny_study):
    _, result = tiny_study
    text = result.report.read_text()
    assert "the verdicts are about these trained models, not about the recipes" in text
    assert "--seeds 5` trains 4 more seeds" in text and result.seeds == (0,)


def test_more_seeds_train_only_the_new_seeds_on_the_same_chips_and_pool_the_claims(tiny_study, tmp_path):
    import re
    import shutil

    out, first = tiny_study
    folder = tmp_path / "more"
    shutil.copytree(out, folder)
    kept = [folder / "runs" / "standard" / "model.pt", folder / "models" / "sparse.onnx",
            folder / "sharpness" / "standard" / "metrics.json"]
    stamps = [p.stat().st_mtime_ns for p in kept]
    results = (folder / "campaign" / "results.jsonl").read_bytes()
    result = run_study(StudyConfig(**{**TINY, "seeds": 2}), folder, progress=False)
    assert [p.stat().st_mtime_ns for p in kept] == stamps  # seed 0 reused, not retrained
    assert (folder / "campaign" / "results.jsonl").read_bytes() == results
    second = folder / "seeds" / "1"
    assert json.loads((second / "runs" / "sparse" / "config.json").read_text())["seed"] == 1
    chips = {json.loads(line)["chip"] for line in (second / "campaign" / "results.jsonl").read_text().splitlines()}
    assert chips == {None, 0, 1, 2} and result.seeds == (0, 1)
    text = result.report.read_text()
    assert "2 training seeds per recipe (0, 1)" in text and "of 2 seeds agree in sign; per seed: seed 0" in text
    # seed 0's own value is exactly the one-seed study's estimate
    one_seed = re.search(r"= ([+-]\d+\.\d+) pts", first.claims[0].evidence[0]).group(1)
    assert f"per seed: seed 0 {one_seed}, seed 1 " in result.claims[0].evidence[0]
    assert "(model, seed) points (4 models x 2 seeds" in text  # 1-epoch models may collapse: left out


def test_the_sparsity_sweep_reuses_the_study_models_and_their_cells(tiny_study, tmp_path):
    import shutil

    out, _ = tiny_study
    folder = tmp_path / "sweep"
    shutil.copytree(out, folder)
    config = StudyConfig(**TINY, sweeps=("sparsity",), thresholds=(0.0, 0.5, 1.0), strong_thresholds=())
    result = run_study(config, folder, progress=False)
    sweep = folder / "sweeps" / "sparsity"
    assert sorted(p.name for p in (sweep / "runs").iterdir()) == ["T1"]  # T0 and T0.5 are the study's models
    campaign = json.loads((sweep / "campaign" / "campaign.json").read_text())
    assert [m.rsplit("/", 1)[-1] for m in campaign["config"]["models"]] == ["T1.onnx"]
    points = {p.variant.name: p for p in result.sweeps[0].points}
    standard = json.loads((folder / "runs" / "standard" / "metrics.json").read_text())
    assert points["T0"].sparsity == standard["activation_sparsity"]["overall"]
    assert points["T0.5"].versus_baseline.difference.n == 3 and points["T1"].drop.n == 3
    # speedups: T0 and T0.5 costed once, as the study's standard and sparse models; T1 in the sweep's folder
    assert sorted(p.name for p in (sweep / "cost").iterdir()) == ["T1.json"]
    standard_cost = json.loads((folder / "cost" / "standard.json").read_text())["result"]
    assert points["T0"].speedup == standard_cost["speedup"]["skipping_imbalanced"]
    assert (sweep / "sweep_sparsity_speedup.png").stat().st_size > 10_000


def test_a_rerun_reuses_every_stage(tiny_study):
    out, _ = tiny_study
    checkpoint = out / "runs" / "standard" / "model.pt"
    stamp = checkpoint.stat().st_mtime_ns
    lines = (out / "campaign" / "results.jsonl").read_text().count("\n")
    model_stamp = (out / "models" / "standard.onnx").stat().st_mtime_ns
    sharpness_stamp = (out / "sharpness" / "standard" / "metrics.json").stat().st_mtime_ns
    run_study(StudyConfig(**TINY), out, progress=False)
    assert checkpoint.stat().st_mtime_ns == stamp
    assert (out / "models" / "standard.onnx").stat().st_mtime_ns == model_stamp
    assert (out / "sharpness" / "standard" / "metrics.json").stat().st_mtime_ns == sharpness_stamp
    assert (out / "campaign" / "results.jsonl").read_text().count("\n") == lines


def test_unknown_architecture_is_one_line_and_exit_2(tmp_path):
    result = run_subprocess("reproduce", "--out", str(tmp_path / "s"), "--model", "alexnet", "--quick")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "unknown architecture 'alexnet'" in result.stderr and not (tmp_path / "s").exists()


def test_a_folder_holding_another_study_is_refused_and_untouched(tiny_study):
    out, _ = tiny_study
    before = (out / "study.json").read_bytes()
    result = run_subprocess("reproduce", "--out", str(out), "--quick")  # the quick profile differs from the tiny one
    assert result.returncode == 2 and "holds another study" in result.stderr and "Traceback" not in result.stderr
    assert (out / "study.json").read_bytes() == before


def test_a_folder_with_other_files_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    result = run_subprocess("reproduce", "--out", str(tmp_path), "--quick")
    assert result.returncode == 2 and "holds other files" in result.stderr
    assert json.dumps(sorted(p.name for p in tmp_path.iterdir())) == '["notes.txt"]'


def test_models_reuses_a_single_architecture_study_and_reports_the_claims_across(tiny_study, tmp_path):
    import shutil

    from edgefault.study import run_studies

    out, _ = tiny_study
    shutil.copytree(out, tmp_path / "multi" / "lenet5")  # a study run before with --model lenet5
    stamp = (tmp_path / "multi" / "lenet5" / "runs" / "standard" / "model.pt").stat().st_mtime_ns
    result = run_studies([StudyConfig(**TINY)], tmp_path / "multi", progress=False)
    text = result.report.read_text()
    assert "| claim | lenet5 |" in text and text.count("95% CI") >= 4
    for number in (1, 2, 3, 4):
        assert f"| {number}. " in text and f"**Claim {number}: " in text
    assert (tmp_path / "multi" / "lenet5" / "runs" / "standard" / "model.pt").stat().st_mtime_ns == stamp


def test_models_refuses_an_unknown_architecture_and_a_folder_of_other_files(tmp_path):
    result = run_subprocess("reproduce", "--out", str(tmp_path / "m"), "--models", "lenet5,alexnet", "--quick")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "unknown architecture 'alexnet'" in result.stderr
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    result = run_subprocess("reproduce", "--out", str(tmp_path / "other"), "--models", "lenet5,vit_tiny", "--quick")
    assert result.returncode == 2 and "holds other files (notes.txt)" in result.stderr
