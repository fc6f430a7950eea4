"""``analyze_sharpness`` on a trained lenet5: exact restoration, determinism, weight spaces, reuse."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from edgefault.analysis import (
    ModelObjective, SharpnessConfig, SharpnessReport, analyze_sharpness, hessian_vector_product, load_report,
)
from edgefault.analysis.curvature import random_normal_like
from edgefault.errors import EdgefaultError
from edgefault.train import load_run

TINY = SharpnessConfig(samples=96, batch_size=40, power_iterations=3, hutchinson_probes=2, landscape_points=5,
                       landscape_grid=3, device="cpu")


pytestmark = pytest.mark.usefixtures("one_thread")


def without_timing(report: SharpnessReport) -> dict:
    body = report.to_dict()
    body.pop("seconds")
    return body


@pytest.fixture(scope="module")
def tiny_report(lenet_run, mnist5k):
    return analyze_sharpness(lenet_run, mnist5k, TINY, progress=False)


def test_the_report_holds_every_metric(tiny_report):
    report = tiny_report
    assert report.samples == 96 and report.files == {}
    assert report.layers == ("conv1", "conv2", "fc1", "fc2", "fc3") and report.parameters == 61470
    assert 0 < report.loss < 3 and 0 <= report.accuracy <= 1
    assert report.sam_sharpness == report.sam.perturbed_loss - report.loss > 0
    assert report.top_eigenvalue == report.power_iteration.history[-1] > 0
    assert report.power_iteration.iterations == 3
    assert report.hessian_trace == pytest.approx(sum(report.trace.samples) / 2)
    land = report.landscape
    assert land.alphas_1d == (-1.0, -0.5, 0.0, 0.5, 1.0) and len(land.loss_2d) == 3
    # The middle of both landscapes is the trained model itself.
    assert land.loss_1d[2] == land.loss_2d[1][1] == report.loss


@pytest.mark.parametrize("space", ["quantized", "latent"])
def test_the_model_comes_back_exactly_as_it_was(lenet_run, mnist5k, space):
    run = load_run(lenet_run)
    model = run.model.train()
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    before = {name: value.clone() for name, value in model.state_dict().items()}
    analyze_sharpness(run, mnist5k, dataclasses.replace(TINY, weight_space=space), progress=False)
    assert model.training and flags == {name: p.requires_grad for name, p in model.named_parameters()}
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())
    assert all(getattr(m, "weight_perturbation", None) is None for m in model.modules())


def test_the_same_seed_gives_the_same_numbers(lenet_run, mnist5k, tiny_report):
    again = analyze_sharpness(lenet_run, mnist5k, TINY, progress=False)
    assert without_timing(again) == without_timing(tiny_report)
    other = analyze_sharpness(lenet_run, mnist5k, dataclasses.replace(TINY, seed=1), progress=False)
    assert other.loss != tiny_report.loss  # another seed draws another training subset


def test_without_batchnorm_the_latent_and_quantized_hessians_agree(lenet_run, mnist5k):
    """Through the straight-through quantizer dQ(w)/dw is the identity: one Hessian, two spaces."""
    model = load_run(lenet_run).model
    images = torch.from_numpy(mnist5k.normalized(mnist5k.train_images[:64]))
    labels = torch.from_numpy(mnist5k.train_labels[:64])
    products = {}
    for space in ("quantized", "latent"):
        with ModelObjective(model, images, labels, space=space) as objective:
            vector = random_normal_like(objective.params, torch.Generator().manual_seed(0))
            products[space] = hessian_vector_product(objective, objective.params, vector)
    for quantized, latent in zip(products["quantized"], products["latent"]):
        torch.testing.assert_close(quantized, latent, rtol=1e-4, atol=1e-6)


def test_outputs_are_written_and_reused(lenet_run, mnist5k, tmp_path):
    out = tmp_path / "sharpness"
    report = analyze_sharpness(lenet_run, mnist5k, TINY, out, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["landscape_1d.png", "landscape_2d.png", "metrics.json"]
    assert load_report(out) == report
    stamp = (out / "metrics.json").stat().st_mtime_ns
    assert analyze_sharpness(lenet_run, mnist5k, TINY, out, progress=False, reuse=True) == report
    assert (out / "metrics.json").stat().st_mtime_ns == stamp
    changed = analyze_sharpness(lenet_run, mnist5k, dataclasses.replace(TINY, rho=0.1), out, progress=False,
                                reuse=True)
    assert changed.config.rho == 0.1 and load_report(out).config.rho == 0.1


@pytest.mark.parametrize("settings, fragment", [
    ({"rho": 0.0}, "rho must be a finite number > 0"),
    ({"rho": float("nan")}, "rho must be a finite number > 0"),
    ({"landscape_grid": 4}, "landscape_grid must be odd"),
    ({"hutchinson_probes": 1}, "hutchinson_probes must be an integer >= 2"),
    ({"samples": 0}, "samples must be an integer >= 1"),
    ({"power_tolerance": 1.5}, "power_tolerance must be below 1"),
    ({"weight_space": "float"}, "weight_space must be one of quantized, latent"),
    ({"device": "tpu"}, "device must be auto, cpu or cuda"),
])
def test_bad_settings_are_refused_by_name(settings, fragment):
    with pytest.raises(EdgefaultError, match=fragment):
        SharpnessConfig(**settings)


def test_a_dataset_that_does_not_fit_the_model_is_refused(lenet_run, tmp_path):
    import numpy as np

    path = tmp_path / "colour.npz"
    np.savez(path, x=np.zeros((100, 32, 32, 3), np.uint8), y=np.arange(100) % 10)
    with pytest.raises(EdgefaultError, match=r"do not fit the model's input \(1, 28, 28\)"):
        analyze_sharpness(lenet_run, f"npz:{path}", TINY, progress=False)
