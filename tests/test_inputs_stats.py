"""Campaign intervals stay inside what an accuracy (or a difference of two) can be, and cover at the nominal rate."""

from __future__ import annotations

import numpy as np
import pytest

from edgefault.campaign.stats import ACCURACY, CONFIDENCE, DIFFERENCE, estimate, summarize


def simulated_chips(rng, mean, spread, chips, repeats, images=500):
    """Accuracies of ``chips`` chips, ``repeats`` times: beta-distributed chip quality, a binomial test set each."""
    k = mean * (1 - mean) / spread**2 - 1
    quality = rng.beta(mean * k, (1 - mean) * k, (repeats, chips))
    return rng.binomial(images, quality) / images


@pytest.mark.parametrize("mean, spread, chips", [(0.8, 0.05, 3), (0.9, 0.05, 3), (0.5, 0.15, 3), (0.6, 0.2, 20)])
def test_clipped_interval_covers_at_the_nominal_rate(mean, spread, chips):
    rng = np.random.default_rng(int(mean * 100) + chips)
    samples = simulated_chips(rng, mean, spread, chips, repeats=1500)
    estimates = [estimate(row, bounds=ACCURACY) for row in samples]
    assert all(0.0 <= e.low <= e.mean <= e.high <= 1.0 for e in estimates)
    coverage = np.mean([e.low <= mean <= e.high for e in estimates])
    assert abs(coverage - CONFIDENCE) < 0.02, coverage  # 1500 repeats: standard error 0.006
    unclipped = [estimate(row) for row in samples]
    # Clipping removes only impossible values, so it never changes whether the true mean is covered.
    assert [e.low <= mean <= e.high for e in unclipped] == [e.low <= mean <= e.high for e in estimates]


def test_summary_intervals_never_leave_the_possible_range():
    models = [{"name": "a", "sha256": "a" * 64}, {"name": "b", "sha256": "b" * 64}]
    cells = [{"key": f"c{m}", "model": m, "mode": "clean"} for m in range(2)]
    results = {"c0": {"accuracy": 1.0}, "c1": {"accuracy": 0.0}}
    for m, accuracies in enumerate([(1.0, 1.0, 0.1), (0.0, 0.0, 0.9)]):
        for chip, accuracy in enumerate(accuracies):
            key = f"g{m}{chip}"
            cells.append({"key": key, "model": m, "mode": "grid", "target": None, "kind": "flip", "rate": 0.1,
                          "chip": chip})
            results[key] = {"accuracy": accuracy, "faulty_bits": 1}
    summary = summarize(models, cells, results, {})
    for group in summary["groups"]:  # unclipped t intervals would be [-0.6, 1.9] and [-0.99, 1.59]
        assert 0.0 <= group["ci_low"] <= group["mean"] <= group["ci_high"] <= 1.0
        assert group["ci_low"] == 0.0 and group["ci_high"] == 1.0
    [paired] = summary["paired"]
    assert DIFFERENCE[0] <= paired["ci_low"] <= paired["mean_diff"] <= paired["ci_high"] <= DIFFERENCE[1]
    assert paired["ci_high"] == 1.0 and "clipped" in summary["interval"]
