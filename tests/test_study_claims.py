"""The study's claim logic on known numbers: paired drops, verdicts, and the sharpness correlation."""

import dataclasses

import pytest

from edgefault.study.claims import SeedMeasurements, compare, drops, judge_claims, per_chip_accuracy
from edgefault.study.config import StudyConfig
from edgefault.errors import EdgefaultError


@dataclasses.dataclass
class _Sharpness:  # the fields of SharpnessReport that the claims read
    hessian_trace: float
    hessian_trace_stderr: float
    top_eigenvalue: float
    sam_sharpness: float


def _records(clean, per_chip_drop, chips=8, rates=(1e-3, 1e-2)):
    records = []
    for model, accuracy in clean.items():
        records.append({"model": model, "mode": "clean", "accuracy": accuracy})
        for chip in range(chips):
            jitter = 0.002 * ((chip * 7) % 5 - 2)  # the same chip is equally hard for every model: paired
            for rate in rates:
                records.append({"model": model, "mode": "grid", "kind": "flip", "rate": rate, "chip": chip,
                                "accuracy": accuracy - per_chip_drop[model] - jitter})
    return records


NAMES = ["standard", "sparse", "standard_saq", "sparse_saq"]


def test_paired_drops_and_verdicts_follow_the_numbers():
    clean = {"standard": 0.98, "sparse": 0.98, "standard_saq": 0.98, "sparse_saq": 0.98}
    drop = {"standard": 0.05, "sparse": 0.10, "standard_saq": 0.03, "sparse_saq": 0.04}
    sharp = {"standard": _Sharpness(100, 5, 10, 0.01), "sparse": _Sharpness(200, 5, 20, 0.02),
             "standard_saq": _Sharpness(60, 5, 6, 0.005), "sparse_saq": _Sharpness(80, 5, 8, 0.008)}
    claims = judge_claims([SeedMeasurements(0, _records(clean, drop), sharp)], NAMES)
    assert [c.verdict for c in claims] == ["held", "held", "held", "held"]
    assert "+5.00 pts" in claims[0].evidence[0]


def test_a_claim_that_goes_the_other_way_does_not_hold():
    clean = dict.fromkeys(NAMES, 0.98)
    drop = {"standard": 0.10, "sparse": 0.05, "standard_saq": 0.12, "sparse_saq": 0.04}
    sharp = {n: _Sharpness(100, 50, 10, 0.01) for n in NAMES}
    claims = judge_claims([SeedMeasurements(0, _records(clean, drop), sharp)], NAMES)
    assert claims[0].verdict == "did not hold"  # sparse lost less here
    assert claims[1].verdict == "did not hold"  # SAQ hurt the standard model
    assert claims[3].verdict == "inconclusive"  # equal sharpness within wide errors


def test_drops_average_over_kinds_and_rates_per_chip():
    clean, faulty = per_chip_accuracy(_records({"a": 0.9}, {"a": 0.1}, chips=2))
    assert clean == {"a": 0.9} and sorted(faulty["a"]) == [0, 1] and len(faulty["a"][0]) == 2
    per_chip = drops(clean, faulty)["a"]
    assert per_chip[0] == pytest.approx(0.1 - 0.004)
    comparison = compare("drop", {"a": {0: 0.2, 1: 0.3}, "b": {0: 0.1, 1: 0.1}}, "a", "b")
    assert comparison.difference.mean == pytest.approx(0.15) and comparison.difference.n == 2


def test_study_config_refuses_an_unknown_architecture_and_bad_sweeps():
    with pytest.raises(EdgefaultError, match="unknown architecture 'alexnet'"):
        StudyConfig(model="alexnet")
    with pytest.raises(EdgefaultError, match="rates"):
        StudyConfig(rates=(2.0,))
    assert StudyConfig(quick=True).epochs < StudyConfig().epochs
