"""The leaderboard's numbers, from campaign records: accuracy and robust error per rate, tolerable rates.

* Accuracy per (kind, rate): mean over chips with a Student-t 95% interval (chips are the samples),
  clipped to [0, 1] as campaign summaries are.
* Robust error per chip: the share of test images wrong clean *or* wrong on that chip (Stutz et
  al.'s robust error), from the per-image error masks the campaign records.
* Tolerable rate within d points: on each chip's curve (accuracy against rate, chip ``k`` at every
  rate), the first rate where accuracy falls below ``clean - d``, interpolated linearly in
  log(rate) from the last rate that held (linearly in rate from 0 when even the lowest fails);
  a chip that holds at every rate is censored at the highest. Across chips: the median with a
  distribution-free 95% interval from order statistics, so censored and zero values are fine (below
  6 chips the sample range, with its exact, lower coverage).
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

from edgefault.campaign.stats import ACCURACY, estimate
from edgefault.campaign.worker import decode_mask
from edgefault.errors import EdgefaultError

TOLERANCES = (0.01, 0.05)  # 1 and 5 accuracy points


def median_interval(values: Iterable[float], confidence: float = 0.95) -> dict[str, float | None]:
    """Median and the exact order-statistic interval ``[x_(j), x_(n+1-j)]`` covering it with >= ``confidence``.

    ``confidence`` in the result is the interval's exact coverage, ``1 - 2 P(Bin(n, 1/2) <= j - 1)``.
    Below 6 values no such interval reaches 95%: the widest one, the sample range, is returned
    with its lower coverage (2 values: 50%, 5 values: 93.75%); one value has no interval.

    Example:
        >>> median_interval(range(1, 21))
        {'median': 10.5, 'low': 6.0, 'high': 15.0, 'confidence': 0.9586}
        >>> median_interval([1.0, 3.0])
        {'median': 2.0, 'low': 1.0, 'high': 3.0, 'confidence': 0.5}
    """
    sample = np.sort(np.asarray(list(values), dtype=np.float64))
    n = sample.size
    if n == 0:
        return {"median": None, "low": None, "high": None, "confidence": None}
    if n == 1:
        return {"median": float(sample[0]), "low": None, "high": None, "confidence": None}
    from scipy import stats as scipy_stats

    # Largest j with P(Bin(n, 1/2) <= j - 1) <= (1 - confidence) / 2; below 6 values none exists: j = 1 (the range).
    j = int(scipy_stats.binom.ppf((1 - confidence) / 2, n, 0.5))
    while j > 0 and scipy_stats.binom.cdf(j - 1, n, 0.5) > (1 - confidence) / 2:
        j -= 1
    j = max(j, 1)
    coverage = 1 - 2 * float(scipy_stats.binom.cdf(j - 1, n, 0.5))
    return {"median": float(np.median(sample)), "low": float(sample[j - 1]), "high": float(sample[n - j]),
            "confidence": round(coverage, 4)}


def tolerable_rate(rates: list[float], accuracies: list[float], clean: float, tolerance: float) -> tuple[float, bool]:
    """The highest rate one chip's curve stays within ``tolerance`` of ``clean``; (rate, censored).

    Example:
        >>> tolerable_rate([1e-3, 1e-2, 1e-1], [0.98, 0.97, 0.5], clean=0.98, tolerance=0.01)
        (0.01, False)
        >>> tolerable_rate([1e-3, 1e-2], [0.98, 0.98], clean=0.98, tolerance=0.01)
        (0.01, True)
    """
    floor = clean - tolerance
    previous_rate, previous_accuracy = 0.0, clean
    for rate, accuracy in zip(rates, accuracies):
        if accuracy < floor:
            share = (previous_accuracy - floor) / (previous_accuracy - accuracy)
            if previous_rate == 0:
                return rate * share, False
            log_rate = math.log(previous_rate) + share * (math.log(rate) - math.log(previous_rate))
            return float(math.exp(log_rate)), False
        previous_rate, previous_accuracy = rate, accuracy
    return float(rates[-1]), True


def accuracy_at(rate: float, rates: list[float], accuracies: list[float], clean: float) -> float | None:
    """A mean accuracy curve read at ``rate`` (log-linear between sweep rates; None beyond the sweep).

    Example:
        >>> accuracy_at(3e-3, [1e-3, 1e-2], [0.9, 0.8], clean=0.95) > 0.8
        True
    """
    if rate <= 0:
        return clean
    if rate > rates[-1] * (1 + 1e-9):
        return None
    if rate <= rates[0]:
        return clean + (accuracies[0] - clean) * rate / rates[0]
    for (r0, a0), (r1, a1) in zip(zip(rates, accuracies), zip(rates[1:], accuracies[1:])):
        if rate <= r1:
            share = (math.log(rate) - math.log(r0)) / (math.log(r1) - math.log(r0))
            return a0 + share * (a1 - a0)
    return accuracies[-1]


def _grid(records: list[dict[str, Any]], model: str) -> tuple[dict | None, dict]:
    clean, grid = None, {}
    for record in records:
        if record.get("model") != model or record.get("error") is not None:
            continue
        if record["mode"] == "clean":
            clean = record
        elif record["mode"] == "grid":
            grid[record["kind"], record["rate"], record["chip"]] = record
    return clean, grid


def method_scores(records: list[dict[str, Any]], model: str, kinds: tuple[str, ...], rates: tuple[float, ...],
                  chips: int) -> dict[str, Any]:
    """Clean accuracy, per-rate accuracy and robust error, and tolerable rates of one campaign model.

    Example:
        >>> scores = method_scores(records, "qat", ("flip",), (1e-2,), 10)  # doctest: +SKIP
        >>> scores["kinds"]["flip"]["tolerable"]["1"]["median"]  # doctest: +SKIP
        0.0123
    """
    clean, grid = _grid(records, model)
    if clean is None:
        raise EdgefaultError(f"the campaign holds no clean accuracy for {model!r}")
    images = clean["images"]
    masks = clean.get("wrong") is not None  # campaigns from before per-image errors were recorded lack them
    clean_wrong = decode_mask(clean["wrong"], images) if masks else None
    result: dict[str, Any] = {"clean_accuracy": clean["accuracy"], "images": images, "kinds": {}}
    for kind in kinds:
        per_rate, curves = [], []
        for rate in rates:
            cells = [grid[kind, rate, k] for k in range(chips) if (kind, rate, k) in grid]
            robust = [float(np.mean(clean_wrong | decode_mask(c["wrong"], images))) for c in cells
                      if masks and c.get("wrong") is not None]
            acc, err = estimate([c["accuracy"] for c in cells], bounds=ACCURACY), estimate(robust, bounds=ACCURACY)
            per_rate.append({"rate": rate, "chips": acc.n, "accuracy": acc.mean, "accuracy_low": acc.low,
                             "accuracy_high": acc.high, "robust_error": err.mean, "robust_error_low": err.low,
                             "robust_error_high": err.high})
        for k in range(chips):
            if all((kind, rate, k) in grid for rate in rates):
                curves.append([grid[kind, rate, k]["accuracy"] for rate in rates])
        tolerable = {}
        for tolerance in TOLERANCES:
            found = [tolerable_rate(list(rates), curve, clean["accuracy"], tolerance) for curve in curves]
            tolerable[f"{round(tolerance * 100)}"] = {
                **median_interval(r for r, _ in found), "censored_chips": sum(c for _, c in found)}
        result["kinds"][kind] = {"rates": per_rate, "tolerable": tolerable}
    return result


def lowest_voltage(curve, rates: list[float], accuracies: list[float], clean: float,
                   target: float) -> dict[str, float | None]:
    """Lowest supply voltage (walking down from nominal) whose bit error rate keeps accuracy >= ``target``.

    Example:
        >>> lowest_voltage(curve, [1e-3, 1e-2], [0.97, 0.9], 0.98, 0.97)  # doctest: +SKIP
        {'voltage': 0.8, 'bit_error_rate': 0.001, 'relative_energy': 0.7, 'energy_saved': 0.3}
    """
    best = None
    for point in curve.points:  # nominal first
        accuracy = accuracy_at(point.bit_error_rate, rates, accuracies, clean)
        if accuracy is None or accuracy < target:
            break
        best = point
    if best is None:
        return {"voltage": None, "bit_error_rate": None, "relative_energy": None, "energy_saved": None}
    return {"voltage": best.voltage, "bit_error_rate": best.bit_error_rate, "relative_energy": best.relative_energy,
            "energy_saved": 1 - best.relative_energy}
