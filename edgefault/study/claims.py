"""The paper's four claims, each judged from the paired campaign and the sharpness analysis.

A model's *fault-induced drop* on chip k is its clean accuracy minus its accuracy on chip k,
averaged over the swept kinds and rates. Chip k is the same fault pattern for every model, so
two models are compared through the per-chip differences of their drops: a paired t interval
with the chips as samples. A claim *held* when its 95% interval lies wholly on the claimed side
of zero, *did not hold* when it lies wholly on the other side, and is *inconclusive* otherwise.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from edgefault.campaign.stats import Estimate, estimate


@dataclasses.dataclass(frozen=True)
class Comparison:
    """``first - second`` of a per-chip quantity, with its paired 95% interval.

    Example:
        >>> c = Comparison("drop", "sparse", "standard", estimate([0.02, 0.03, 0.025]))
        >>> c.verdict(positive=True)
        'held'
    """

    quantity: str
    first: str
    second: str
    difference: Estimate

    def verdict(self, positive: bool) -> str:
        low, high = self.difference.low, self.difference.high
        if low is None:
            return "inconclusive"
        if (low > 0) if positive else (high < 0):
            return "held"
        if (high < 0) if positive else (low > 0):
            return "did not hold"
        return "inconclusive"

    def text(self) -> str:
        d = self.difference
        if d.mean is None:
            return f"{self.quantity}({self.first}) - {self.quantity}({self.second}): no data"
        interval = "" if d.low is None else f" [95% CI {100 * d.low:+.2f}, {100 * d.high:+.2f}]"
        return f"{self.quantity}({self.first}) - {self.quantity}({self.second}) = {100 * d.mean:+.2f} pts{interval}"


@dataclasses.dataclass(frozen=True)
class Claim:
    """One of the paper's claims, what was measured for it, and the verdict."""

    number: int
    statement: str
    evidence: tuple[str, ...]
    verdict: str


def per_chip_accuracy(records: list[dict[str, Any]]) -> tuple[dict[str, float], dict[str, dict[int, list[float]]]]:
    """Clean accuracy per model, and per model and chip the accuracies over the swept kinds and rates.

    Example:
        >>> clean, faulty = per_chip_accuracy([{"model": "a", "mode": "clean", "accuracy": 0.9},
        ...     {"model": "a", "mode": "grid", "chip": 0, "accuracy": 0.8}])
        >>> clean["a"], faulty["a"][0]
        (0.9, [0.8])
    """
    clean: dict[str, float] = {}
    faulty: dict[str, dict[int, list[float]]] = {}
    for record in records:
        if record.get("accuracy") is None:
            continue
        if record["mode"] == "clean":
            clean[record["model"]] = record["accuracy"]
        elif record["mode"] == "grid":
            faulty.setdefault(record["model"], {}).setdefault(record["chip"], []).append(record["accuracy"])
    return clean, faulty


def drops(clean: dict[str, float], faulty: dict[str, dict[int, list[float]]]) -> dict[str, dict[int, float]]:
    """Per model and chip: clean accuracy minus the mean faulty accuracy over kinds and rates.

    Example:
        >>> drops({"a": 0.9}, {"a": {0: [0.8, 0.6]}})["a"][0]
        0.2
    """
    return {m: {k: round(clean[m] - float(np.mean(v)), 12) for k, v in chips.items()} for m, chips in faulty.items()}


def mean_faulty(faulty: dict[str, dict[int, list[float]]]) -> dict[str, dict[int, float]]:
    """Per model and chip: the mean faulty accuracy over kinds and rates."""
    return {m: {k: float(np.mean(v)) for k, v in chips.items()} for m, chips in faulty.items()}


def compare(quantity: str, values: dict[str, dict[int, float]], first: str, second: str) -> Comparison:
    """Paired difference ``values[first] - values[second]`` over the chips both models met.

    Example:
        >>> compare("drop", {"a": {0: 0.3, 1: 0.4}, "b": {0: 0.1, 1: 0.1}}, "a", "b").difference.mean
        0.25
    """
    chips = sorted(set(values.get(first, {})) & set(values.get(second, {})))
    return Comparison(quantity, first, second, estimate(values[first][k] - values[second][k] for k in chips))


def trace_difference(sharpness: dict[str, Any], first: str, second: str) -> tuple[float, float, float]:
    """Hutchinson trace difference with a normal 95% interval from the two standard errors."""
    a, b = sharpness[first], sharpness[second]
    diff = a.hessian_trace - b.hessian_trace
    half = 1.96 * math.hypot(a.hessian_trace_stderr, b.hessian_trace_stderr)
    return diff, diff - half, diff + half


def judge_claims(records: list[dict[str, Any]], sharpness: dict[str, Any], names: list[str]) -> list[Claim]:
    """Evaluate the four claims from campaign records and sharpness reports (by variant name).

    Example:
        >>> claims = judge_claims(records, reports, ["standard", "sparse", "standard_saq", "sparse_saq"])  # doctest: +SKIP
        >>> [c.verdict for c in claims]  # doctest: +SKIP
        ['held', 'inconclusive', 'held', 'held']
    """
    from scipy import stats as scipy_stats

    clean, faulty = per_chip_accuracy(records)
    drop, accuracy = drops(clean, faulty), mean_faulty(faulty)
    c1 = compare("drop", drop, "sparse", "standard")
    c1b = compare("drop", drop, "sparse_saq", "standard_saq")
    c2a = compare("drop", drop, "standard", "standard_saq")
    c2b = compare("drop", drop, "sparse", "sparse_saq")
    c3 = compare("faulty accuracy", accuracy, "sparse_saq", "standard")
    c3b = compare("drop", drop, "standard", "sparse_saq")
    claim2 = [c2a.verdict(True), c2b.verdict(True)]
    claims = [
        Claim(1, "Activation-sparse models lose more accuracy under memory faults than standard ones.",
              (c1.text(), f"(with SAQ) {c1b.text()}"), c1.verdict(True)),
        Claim(2, "SAQ training improves the fault robustness of both standard and activation-sparse models.",
              (c2a.text(), c2b.text()),
              "held" if claim2 == ["held", "held"] else "did not hold" if "did not hold" in claim2 else "inconclusive"),
        Claim(3, "SAQ-trained activation-sparse models beat conventionally trained standard ones under faults.",
              (c3.text(), c3b.text()), c3.verdict(True)),
    ]
    diff, low, high = trace_difference(sharpness, "sparse", "standard")
    sharper = "held" if low > 0 else "did not hold" if high < 0 else "inconclusive"
    order = [n for n in names if n in sharpness and n in drop]
    traces = [sharpness[n].hessian_trace for n in order]
    mean_drops = [float(np.mean(list(drop[n].values()))) for n in order]
    varied = len(order) > 2 and len(set(traces)) > 1 and len(set(mean_drops)) > 1  # else rho is undefined
    rho, p_value = scipy_stats.spearmanr(traces, mean_drops) if varied else (float("nan"), float("nan"))
    eigen = {n: sharpness[n].top_eigenvalue for n in ("sparse", "standard")}
    sam = {n: sharpness[n].sam_sharpness for n in ("sparse", "standard")}
    tracks = "held" if rho > 0 and p_value < 0.05 else "did not hold" if rho < 0 and p_value < 0.05 else "inconclusive"
    verdict4 = sharper if sharper == tracks else ("did not hold" if "did not hold" in (sharper, tracks) else "inconclusive")
    claims.append(Claim(
        4, "Activation-sparse minima are sharper, and sharpness tracks the fault-induced drop.",
        (f"Hessian trace(sparse) - trace(standard) = {diff:+.1f} [95% CI {low:+.1f}, {high:+.1f}]: {sharper}",
         f"top eigenvalue: sparse {eigen['sparse']:.2f}, standard {eigen['standard']:.2f}; "
         f"SAM sharpness: sparse {sam['sparse']:.4f}, standard {sam['standard']:.4f}",
         f"Spearman rank correlation of Hessian trace and mean drop over {len(order)} models: "
         f"rho = {rho:+.2f} (p = {p_value:.2f}): {tracks}"),
        verdict4))
    return claims
