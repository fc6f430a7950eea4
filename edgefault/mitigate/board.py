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

Over training seeds (every seed's models on the same chips): clean accuracy and training time are
means over seeds; accuracy and robust error per rate are pooled over seeds and chips
(:func:`edgefault.study.pooled.pool`, the chips' t interval with one seed), clipped to [0, 1]; a
tolerable rate is the mean over seeds of each seed's median over chips, with a t interval over
seeds (one seed: the median and its order-statistic interval), and ``per_seed`` lists the seeds' medians.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

from edgefault.campaign.results import CampaignRecord
from edgefault.campaign.stats import ACCURACY, estimate
from edgefault.campaign.worker import decode_mask
from edgefault.errors import EdgefaultError
from edgefault.study.pooled import pool

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
        >>> rate, censored = tolerable_rate([1e-3, 1e-2, 1e-1], [0.98, 0.97, 0.5], clean=0.98, tolerance=0.01)
        >>> round(rate, 6), censored
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


def _grid(records: list[CampaignRecord], model: str) -> tuple[CampaignRecord | None, dict]:
    clean, grid = None, {}
    for record in records:
        if record.model != model or not record.measured:
            continue
        if record.mode == "clean":
            clean = record
        elif record.mode == "grid":
            grid[record.kind, record.rate, record.chip] = record
    return clean, grid


def _seed_scores(records: list[CampaignRecord], model: str, kind: str, rates: tuple[float, ...], chips: int):
    """One seed's clean record, per-rate accuracies and robust errors by chip, and tolerable rates per tolerance."""
    clean, grid = _grid(records, model)
    if clean is None:
        raise EdgefaultError(f"the campaign holds no clean accuracy for {model!r}")
    masks = clean.wrong is not None  # campaigns from before per-image errors were recorded lack them
    clean_wrong = decode_mask(clean.wrong, clean.images) if masks else None
    accuracy, robust = {}, {}
    for rate in rates:
        cells = {k: grid[kind, rate, k] for k in range(chips) if (kind, rate, k) in grid}
        accuracy[rate] = {k: c.accuracy for k, c in cells.items()}
        robust[rate] = {k: float(np.mean(clean_wrong | decode_mask(c.wrong, clean.images))) for k, c in cells.items()
                        if masks and c.wrong is not None}
    curves = [[grid[kind, rate, k].accuracy for rate in rates] for k in range(chips)
              if all((kind, rate, k) in grid for rate in rates)]
    tolerable = {t: [tolerable_rate(list(rates), curve, clean.accuracy, t) for curve in curves] for t in TOLERANCES}
    return clean, accuracy, robust, tolerable


def pooled_tolerable(per_seed: list[list[tuple[float, bool]]]) -> dict[str, Any]:
    """Tolerable rates of one method and tolerance over seeds (each a list of (rate, censored) per chip).

    Example:
        >>> pooled_tolerable([[(0.01, False), (0.02, False), (0.03, True)]])["median"]
        0.02
        >>> round(pooled_tolerable([[(0.01, False)] * 3, [(0.03, False)] * 3])["median"], 3)
        0.02
    """
    censored = sum(c for found in per_seed for _, c in found)
    if len(per_seed) == 1:
        return {**median_interval(r for r, _ in per_seed[0]), "censored_chips": censored}
    medians = [median_interval(r for r, _ in found)["median"] for found in per_seed]
    e = estimate([m for m in medians if m is not None])
    return {"median": e.mean, "low": None if e.low is None else max(e.low, 0.0), "high": e.high,
            "censored_chips": censored, "per_seed": medians}


def method_scores(seed_records: dict[int, list[CampaignRecord]], model: str, kinds: tuple[str, ...],
                  rates: tuple[float, ...], chips: int) -> dict[str, Any]:
    """Clean accuracy, per-rate accuracy and robust error, and tolerable rates of one model, over training seeds.
    """
    result: dict[str, Any] = {"kinds": {}}
    for kind in kinds:
        scores = {s: _seed_scores(records, model, kind, rates, chips) for s, records in seed_records.items()}
        cleans = [clean for clean, *_ in scores.values()]
        result["clean_accuracy"] = float(np.mean([c.accuracy for c in cleans])) if len(cleans) > 1 \
            else cleans[0].accuracy
        result["images"] = cleans[0].images
        per_rate = []
        for rate in rates:
            acc = pool({s: accuracy[rate] for s, (_, accuracy, _, _) in scores.items()}, bounds=ACCURACY).pooled
            with_masks = {s: robust[rate] for s, (_, _, robust, _) in scores.items() if robust[rate]}
            err = pool(with_masks, bounds=ACCURACY).pooled if len(with_masks) == len(scores) else estimate([])
            per_rate.append({"rate": rate, "chips": min(len(a[rate]) for _, a, _, _ in scores.values()),
                             "seeds": len(scores), "accuracy": acc.mean, "accuracy_low": acc.low,
                             "accuracy_high": acc.high, "robust_error": err.mean, "robust_error_low": err.low,
                             "robust_error_high": err.high})
        tolerable = {f"{round(t * 100)}": pooled_tolerable([found[t] for *_, found in scores.values()])
                     for t in TOLERANCES}
        result["kinds"][kind] = {"rates": per_rate, "tolerable": tolerable}
    return result


def lowest_voltage(curve, rates: list[float], accuracies: list[float], clean: float,
                   target: float) -> dict[str, float | None]:
    """Lowest supply voltage (walking down from nominal) whose bit error rate keeps accuracy >= ``target``.
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
