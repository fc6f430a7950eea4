"""Campaign statistics: per-cell means with t-based 95% intervals, drops from clean, paired differences.

Chips are the independent samples: the accuracy of one (model, kind, rate) over its chips
gives a mean, a standard deviation and a Student-t confidence interval. Two models met the
same chips, so their comparison uses the per-chip differences (a paired t interval), which
is far tighter than comparing two independent intervals.

Intervals are clipped to the values the quantity can take: [0, 1] for an accuracy, [-1, 1]
for a difference of two accuracies. The mean over chips always lies in that range, so
clipping removes only impossible values and never changes whether an interval covers it:
the coverage is the t interval's. ``tests/test_inputs_stats.py`` measures that coverage on
simulated chips (binomial test sets over beta-distributed chip accuracies, 3 to 20 chips).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterable

import numpy as np

CONFIDENCE = 0.95
ACCURACY = (0.0, 1.0)  # the values an accuracy can take
DIFFERENCE = (-1.0, 1.0)  # ... and a difference of two accuracies


@dataclasses.dataclass(frozen=True)
class Estimate:
    """Mean, sample standard deviation and two-sided t confidence interval of a sample.

    ``std`` and the interval are None below two values (no spread can be estimated).
    The interval lies within the ``bounds`` it was computed with.

    Example:
        >>> e = estimate([0.9, 0.8, 0.7])
        >>> e.n, round(e.mean, 4), round(e.std, 4), round(e.high - e.mean, 4)
        (3, 0.8, 0.1, 0.2484)
    """

    n: int
    mean: float | None
    std: float | None
    low: float | None
    high: float | None


def estimate(values: Iterable[float], confidence: float = CONFIDENCE,
             bounds: tuple[float, float] | None = None) -> Estimate:
    """Mean, std (ddof 1) and the t interval ``mean ± t(1 - a/2, n - 1) * std / sqrt(n)``, clipped to ``bounds``.

    Example:
        >>> estimate([]).mean is None, estimate([0.5]).std is None
        (True, True)
        >>> e = estimate([1.0, 1.0, 0.2], bounds=ACCURACY)
        >>> round(e.low, 4), e.high
        (0.0, 1.0)
    """
    sample = np.asarray(list(values), dtype=np.float64)
    n = int(sample.size)
    if n == 0:
        return Estimate(0, None, None, None, None)
    mean = float(sample.mean())
    if n == 1:
        return Estimate(1, mean, None, None, None)
    std = float(sample.std(ddof=1))
    from scipy import stats as scipy_stats  # here, not at the top: workers import this package and never need it

    half = float(scipy_stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return Estimate(n, mean, std, low, high)


def summarize(models: list[dict[str, Any]], cells: list[dict[str, Any]], results: dict[str, dict[str, Any]],
              failures: dict[str, str]) -> dict[str, Any]:
    """The summary document from planned cells and their successful records.

    ``models`` holds ``name`` and ``sha256`` per model in campaign order; ``cells`` the planned
    cells as ``{"key", "model", "mode", "target", "kind", "rate", "chip"}`` with the
    ``memory`` they fault (``weights`` when absent); ``results`` the successful record per
    key; ``failures`` the last error of each cell that failed for good. Groups and paired
    differences are per memory; ``memory_paired`` compares the memories of one model on the
    same chips (present when a campaign faults more than one memory).

    Example:
        >>> models = [{"name": "a", "sha256": "0" * 64}]
        >>> cells = [{"key": "c", "model": 0, "mode": "clean"},
        ...          {"key": "g0", "model": 0, "mode": "grid", "target": None, "kind": "flip", "rate": 0.1, "chip": 0}]
        >>> results = {"c": {"accuracy": 0.9}, "g0": {"accuracy": 0.7, "faulty_bits": 3}}
        >>> s = summarize(models, cells, results, {})
        >>> s["groups"][0]["mean"], round(s["groups"][0]["drop"], 2)
        (0.7, 0.2)
    """
    clean = {m: results[c["key"]]["accuracy"] for m, c in _clean_cells(cells) if c["key"] in results}
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for cell in cells:
        if cell["mode"] != "clean":
            groups.setdefault(_group_key(cell), []).append(cell)
    rows = []
    for (model, memory, mode, target, kind, rate), members in groups.items():
        done = [results[c["key"]] for c in members if c["key"] in results]
        e = estimate((r["accuracy"] for r in done), bounds=ACCURACY)
        base = clean.get(model)
        bits = [r["faulty_bits"] for r in done if r.get("faulty_bits") is not None]
        rows.append({
            "model": models[model]["name"], "memory": memory, "mode": mode, "target": target, "kind": kind,
            "rate": rate,
            "chips": len(members), "n": e.n, "mean": e.mean, "std": e.std, "ci_low": e.low, "ci_high": e.high,
            "clean": base, "drop": None if base is None or e.mean is None else base - e.mean,
            "failed": sum(c["key"] in failures for c in members),
            "mean_faulty_bits": float(np.mean(bits)) if bits else None,
        })
    summary = {
        "confidence": CONFIDENCE,
        "interval": "Student-t over chips, clipped to [0, 1] for accuracies and [-1, 1] for paired differences",
        "clean": [
            {"model": models[m]["name"], "model_hash": models[m]["sha256"], "accuracy": clean.get(m),
             "images": results.get(c["key"], {}).get("images")}
            for m, c in _clean_cells(cells)
        ],
        "groups": rows,
        "paired": _paired(models, groups, results, clean),
        "cells": {"planned": len(cells), "done": sum(c["key"] in results for c in cells), "failed": len(failures)},
        "failures": [{"key": key, "error": error} for key, error in sorted(failures.items())],
    }
    if len({memory for (_, memory, *_) in groups}) > 1:
        summary["memory_paired"] = _memory_paired(models, groups, results, clean)
    return summary


def _clean_cells(cells):
    return [(c["model"], c) for c in cells if c["mode"] == "clean"]


def _group_key(cell: dict[str, Any]) -> tuple:
    return cell["model"], cell.get("memory", "weights"), cell["mode"], cell["target"], cell["kind"], cell["rate"]


def _chip_accuracies(members, results) -> dict[int, float]:
    return {cell["chip"]: results[cell["key"]]["accuracy"] for cell in members if cell["key"] in results}


def _difference_row(first: dict[int, float], second: dict[int, float], gap: float | None) -> dict[str, Any]:
    """The paired t interval of ``first - second`` over the chips both have; ``gap`` is the difference of the
    clean accuracies (None: no drop difference), so the drop difference is ``gap - accuracy difference``."""
    chips = sorted(set(first) & set(second))
    e = estimate((first[k] - second[k] for k in chips), bounds=DIFFERENCE)
    shifted = (lambda v: None if v is None or gap is None else gap - v)
    return {"n": e.n, "mean_diff": e.mean, "std": e.std, "ci_low": e.low, "ci_high": e.high,
            "significant": None if e.low is None else bool(e.low > 0 or e.high < 0),
            "drop_diff": shifted(e.mean), "drop_ci_low": shifted(e.high), "drop_ci_high": shifted(e.low)}


def _memory_paired(models, groups, results, clean) -> list[dict[str, Any]]:
    """Per model and grid (kind, rate), the per-chip accuracy difference between two memories (first minus
    second, in campaign order): the same chip seeds, the same images, the same clean model, so a positive
    difference means the second memory loses more at this fault rate. The drop difference equals minus the
    accuracy difference (one clean accuracy)."""
    rows = []
    order = list(dict.fromkeys(memory for (_, memory, *_) in groups))
    for model, memory, mode, target, kind, rate in groups:
        if mode != "grid" or memory != order[0]:
            continue  # visit each (model, kind, rate) once, from the first memory's group
        accuracy = {m: _chip_accuracies(groups.get((model, m, mode, target, kind, rate), []), results)
                    for m in order}
        for a, first in enumerate(order):
            for second in order[a + 1:]:
                rows.append({"model": models[model]["name"], "memory_a": first, "memory_b": second, "mode": mode,
                             "kind": kind, "rate": rate,
                             **_difference_row(accuracy[first], accuracy[second], 0.0 if model in clean else None)})
    return rows


def _paired(models, groups, results, clean) -> list[dict[str, Any]]:
    """Per pair of models, the per-chip accuracy difference (first minus second) in grid and per-bit cells.

    ``drop_diff`` is the difference of the drops from clean (first minus second: positive when
    the first model loses more); the clean accuracies are constants on the same test images,
    so its interval is the accuracy difference's interval shifted. Per-layer cells are not
    paired: different architectures have different layers.
    """
    rows = []
    count = len(models)
    for model, memory, mode, target, kind, rate in groups:
        if mode not in ("grid", "bit") or model != 0:
            continue  # visit each (memory, mode, target, kind, rate) once, from the first model's group
        accuracy = [_chip_accuracies(groups.get((m, memory, mode, target, kind, rate), []), results)
                    for m in range(count)]
        for a in range(count):
            for b in range(a + 1, count):
                gap = clean[a] - clean[b] if a in clean and b in clean else None
                rows.append({"model_a": models[a]["name"], "model_b": models[b]["name"], "memory": memory,
                             "mode": mode, "target": target, "kind": kind, "rate": rate,
                             **_difference_row(accuracy[a], accuracy[b], gap)})
    return rows
