"""Ray runs the same cells as the local engine and gets the same numbers (skipped only without ray)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from edgefault.campaign import CampaignConfig, ExecutionSettings, ResultsLog, run_campaign
from onnx_builders import ort_quantized_cnn

ray = pytest.importorskip("ray")

MEASURED = ("accuracy", "correct", "images", "faults", "faulty_bits", "predictions", "seed")


def measured(folder):
    records = [r for r in ResultsLog(folder / "results.jsonl").read(repair=False) if r["error"] is None]
    assert len({r["key"] for r in records}) == len(records)
    return {r["key"]: tuple(r[f] for f in MEASURED) for r in records}


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray instance with 2 CPUs for this module, stopped afterwards."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    yield
    ray.shutdown()


def test_ray_gives_the_local_engines_results(local_ray, tmp_path):
    logging.getLogger().setLevel(logging.ERROR)
    models = [ort_quantized_cnn(tmp_path / "m", "qdq_per_channel", seed=0), ort_quantized_cnn(tmp_path / "m", "qoperator", seed=2)]
    rng = np.random.default_rng(0)
    data = tmp_path / "digits.npz"
    np.savez(data, x=rng.integers(0, 256, (500, 28, 28), dtype=np.uint8), y=np.arange(500) % 10)  # 100 test images
    config = CampaignConfig.create(models, data=f"npz:{data}", kinds=("flip", "sa1"), rates=(1e-3, 1e-2), chips=2,
                                   per_bit=True, input_size="1x28x28", mean="0.1307", std="0.3081")
    on_ray = run_campaign(config, tmp_path / "ray", ExecutionSettings(ray="auto"))
    local = run_campaign(config, tmp_path / "local", ExecutionSettings(workers=2))
    assert "Ray actors" in on_ray.engine and "local worker" in local.engine
    planned = 2 + 2 * 2 * 2 * 2 * (1 + 8)
    assert on_ray.summary["cells"] == local.summary["cells"] == {"planned": planned, "done": planned, "failed": 0}
    assert measured(tmp_path / "ray") == measured(tmp_path / "local")
    assert on_ray.summary["groups"] == local.summary["groups"] and on_ray.summary["paired"] == local.summary["paired"]
    assert ray.is_initialized()  # a cluster the campaign did not start is left running
