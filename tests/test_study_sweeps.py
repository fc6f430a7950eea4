"""The sweeps' logic on known numbers, the per-architecture profiles, and the CNNs on 1x28x28 images."""

import json

import pytest
import torch

from edgefault.errors import EdgefaultError
from edgefault.export.graph import build_onnx
from edgefault.models import create_model
from edgefault.runtime import optimized_kernel_counts
from edgefault.study.config import StudyConfig
from edgefault.study.claims import SeedMeasurements
from edgefault.study.sweeps import analyze_sweep, sweep_lines, sweep_variants


def _write_runs(folder, sparsity):
    runs = {}
    for name, value in sparsity.items():
        run = runs[name] = folder / "runs" / name
        run.mkdir(parents=True)
        (run / "metrics.json").write_text(json.dumps({"activation_sparsity": {"overall": value}}))
    return {0: runs}


def _one_seed(records):
    return [SeedMeasurements(0, records)]


def _records(clean, drop, chips=6):
    records = []
    for model, accuracy in clean.items():
        records.append({"model": model, "mode": "clean", "accuracy": accuracy})
        for chip in range(chips):
            jitter = 0.003 * ((chip * 5) % 3 - 1)  # the same chip is equally hard for every model
            records.append({"model": model, "mode": "grid", "kind": "flip", "rate": 1e-2, "chip": chip,
                            "accuracy": accuracy - drop[model] - jitter})
    return records


CONFIG = StudyConfig(quick=True, thresholds=(0.0, 0.5, 1.0, 2.0, 4.0), strong_thresholds=())


def test_the_sparsity_sweep_names_the_level_from_which_sparse_models_lose_more(tmp_path):
    variants = sweep_variants(CONFIG, "sparsity")
    names = [v.name for v in variants]
    assert names == ["T0", "T0.5", "T1", "T2", "T4"] and not variants[0].sparse and variants[4].sparse
    runs = _write_runs(tmp_path, dict(zip(names, (0.60, 0.78, 0.85, 0.91, 0.97))))
    clean = {"T0": 0.98, "T0.5": 0.98, "T1": 0.975, "T2": 0.97, "T4": 0.60}  # T4 collapsed
    drop = {"T0": 0.05, "T0.5": 0.04, "T1": 0.05, "T2": 0.08, "T4": 0.01}
    result = analyze_sweep("sparsity", variants, _one_seed(_records(clean, drop)), runs, tmp_path, {"train": 1.0})
    assert result.conclusion.startswith("Sparse models lose significantly more than plain ReLU from 91.0% exact zeros")
    assert "T = 4, L1 0.01 (97.0% zeros)" in result.conclusion  # left out as collapsed, and said so
    by_name = {p.variant.name: p for p in result.points}
    assert by_name["T2"].versus_baseline.difference.mean == pytest.approx(0.03)
    assert by_name["T4"].collapsed and not by_name["T2"].collapsed
    assert result.plot.stat().st_size > 0
    text = "\n".join(sweep_lines(result))
    assert "| T2 | 2 | 0.01 | 91.0% | 97.00% |" in text and "loses more" in text and "collapsed; " in text


def test_the_sparsity_sweep_with_speedups_plots_drop_against_modelled_speedup(tmp_path):
    variants = sweep_variants(CONFIG, "sparsity")
    names = [v.name for v in variants]
    runs = _write_runs(tmp_path, dict(zip(names, (0.60, 0.78, 0.85, 0.91, 0.97))))
    clean = dict.fromkeys(names, 0.98)
    drop = dict(zip(names, (0.05, 0.04, 0.05, 0.08, 0.09)))
    speedups = dict(zip(names, (1.10, 1.20, 1.30, 1.45, 1.60)))
    result = analyze_sweep("sparsity", variants, _one_seed(_records(clean, drop)), runs, tmp_path, {}, speedups)
    assert [p.speedup for p in result.points] == list(speedups.values())
    assert (tmp_path / "sweep_sparsity_speedup.png").stat().st_size > 10_000
    text = "\n".join(sweep_lines(result))
    assert "T2 1.450x" in text and "sweep_sparsity_speedup.png" in text


def test_a_sparsity_sweep_where_nothing_loses_more_says_so(tmp_path):
    config = StudyConfig(quick=True, thresholds=(0.0, 1.0, 3.0), strong_thresholds=(0.5,))
    variants = sweep_variants(config, "sparsity")
    assert [v.name for v in variants] == ["T0", "T1", "T3", "T0.5_L1_0.1"] and variants[3].act_l1 == 0.1
    runs = _write_runs(tmp_path, {"T0": 0.6, "T1": 0.8, "T3": 0.93, "T0.5_L1_0.1": 0.9})
    result = analyze_sweep("sparsity", variants,
                           _one_seed(_records({"T0": 0.98, "T1": 0.98, "T3": 0.97, "T0.5_L1_0.1": 0.975},
                                              {"T0": 0.06, "T1": 0.04, "T3": 0.03, "T0.5_L1_0.1": 0.05})),
                           runs, tmp_path, {})
    assert "| T0.5_L1_0.1 | 0.5 | 0.1 | 90.0% |" in "\n".join(sweep_lines(result))
    assert result.conclusion.startswith("No swept sparsity level lost significantly more than plain ReLU (up to 93.0%")


def test_the_rho_sweep_compares_each_radius_with_conventional_training_of_its_recipe(tmp_path):
    config = StudyConfig(quick=True, radii=(0.05, 0.5))
    variants = sweep_variants(config, "rho")
    names = [v.name for v in variants]
    assert names == ["standard", "standard_rho0.05", "standard_rho0.5", "sparse", "sparse_rho0.05", "sparse_rho0.5"]
    runs = _write_runs(tmp_path, dict.fromkeys(names, 0.7))
    clean = {"standard": 0.98, "standard_rho0.05": 0.98, "standard_rho0.5": 0.95,
             "sparse": 0.97, "sparse_rho0.05": 0.97, "sparse_rho0.5": 0.5}
    drop = {"standard": 0.06, "standard_rho0.05": 0.03, "standard_rho0.5": 0.06,
            "sparse": 0.07, "sparse_rho0.05": 0.04, "sparse_rho0.5": 0.0}
    result = analyze_sweep("rho", variants, _one_seed(_records(clean, drop)), runs, tmp_path, {})
    assert result.conclusion == ("standard: SAQ cut the drop significantly at rho = 0.05 of 2 radii, least drop at "
                                 "rho = 0.05; activation-sparse: SAQ cut the drop significantly at rho = 0.05 of 2 "
                                 "radii, least drop at rho = 0.05 (collapsed, clean accuracy > 10 points below "
                                 "conventional: rho = 0.5).")
    assert result.plot.stat().st_size > 0


def test_profiles_differ_per_architecture_and_bad_sweeps_are_refused():
    assert StudyConfig(quick=True, model="resnet20").epochs < StudyConfig(quick=True, model="vit_tiny").epochs
    assert StudyConfig(quick=True, model="lenet5").chips == 20
    with pytest.raises(EdgefaultError, match="unknown sweep 'depth'"):
        StudyConfig(sweeps=("depth",))
    with pytest.raises(EdgefaultError, match="must include 0"):
        StudyConfig(thresholds=(0.5, 1.0))
    with pytest.raises(EdgefaultError, match="radii must be > 0"):
        StudyConfig(radii=(0.0, 0.1))
    # The sweeps are checked in their own folders, so adding one reuses the main study.
    assert StudyConfig(quick=True, sweeps=("rho",)).to_dict() == StudyConfig(quick=True).to_dict()


@pytest.mark.parametrize("name", ["resnet20", "vgg_small"])
def test_the_cnns_take_mnist_sized_images_and_export_to_integer_kernels(name):
    model = create_model(name, in_channels=1, input_size=28)
    model.train()(torch.randn(8, 1, 28, 28))  # initializes the activation steps
    kernels = optimized_kernel_counts(build_onnx(model.eval()).SerializeToString())
    assert kernels.all_integer and kernels.ops.get("QLinearConv", 0) >= 6


def test_the_strong_l1_points_train_with_their_own_penalty():
    from edgefault.study.pipeline import train_config

    strong = [v for v in sweep_variants(StudyConfig(quick=True), "sparsity") if v.act_l1 is not None]
    assert strong and all(train_config(StudyConfig(quick=True), v).act_l1 == v.act_l1 > 0.01 for v in strong)
    plain = sweep_variants(StudyConfig(quick=True), "sparsity")[0]
    assert train_config(StudyConfig(quick=True), plain).act_l1 == 0.0
