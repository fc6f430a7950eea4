"""The paper's four claims, each judged from the paired campaigns and the sharpness analysis.

A model's *fault-induced drop* on chip k is its clean accuracy minus its accuracy on chip k,
averaged over the swept kinds and rates. Chip k is the same fault pattern for every model (and
every training seed), so two recipes are compared through the per-chip differences of their
models' drops. With one training seed that is a paired t interval over the chips, about the two
trained models; with N seeds it is the pooled interval over seeds and chips of
:mod:`edgefault.study.pooled`, about the recipes. A claim *held* when its 95% interval lies
wholly on the claimed side of zero, *did not hold* when it lies wholly on the other side, and is
*inconclusive* otherwise.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from edgefault.campaign.results import CampaignRecord, measured_records
from edgefault.campaign.stats import Estimate, estimate
from edgefault.study.pooled import Pooled, pool, pool_values

PerChip = dict[str, dict[int, float]]  # model -> chip -> value
COLLAPSE = 0.10  # clean accuracy this far below the standard model's (same seed): the model collapsed


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
    seeds: Pooled | None = None
    left_out: tuple[int, ...] = ()  # training seeds whose model of either recipe collapsed

    @property
    def one_seed_left(self) -> bool:
        """Whether collapsed models left a single training seed: no verdict about the recipes then."""
        return bool(self.left_out) and (self.seeds is None or len(self.seeds.seeds) < 2)

    def verdict(self, positive: bool) -> str:
        low, high = self.difference.low, self.difference.high
        if low is None or self.one_seed_left:
            return "inconclusive"
        if (low > 0) if positive else (high < 0):
            return "held"
        if (high < 0) if positive else (low > 0):
            return "did not hold"
        return "inconclusive"

    def text(self) -> str:
        d = self.difference
        if d.mean is None:
            left = "" if not self.left_out else " (every seed left out: a model collapsed)"
            return f"{self.quantity}({self.first}) - {self.quantity}({self.second}): no data{left}"
        interval = "" if d.low is None else f" [95% CI {100 * d.low:+.2f}, {100 * d.high:+.2f}]"
        over = "" if self.seeds is None or len(self.seeds.seeds) < 2 else f" ({self.seeds.seed_text()})"
        left = "" if not self.left_out else (f" (left out, collapsed: seed {', '.join(map(str, self.left_out))}"
                                             + ("; one seed left: no verdict about the recipes)" if self.one_seed_left
                                                else ")"))
        return (f"{self.quantity}({self.first}) - {self.quantity}({self.second}) = {100 * d.mean:+.2f} pts"
                f"{interval}{over}{left}")


@dataclasses.dataclass(frozen=True)
class Claim:
    """One of the paper's claims, what was measured for it, and the verdict."""

    number: int
    statement: str
    evidence: tuple[str, ...]
    verdict: str


@dataclasses.dataclass(frozen=True)
class SeedMeasurements:
    """What one training seed's models gave: their campaign records and sharpness reports (by variant name).

    Example:
        >>> SeedMeasurements(0, [{"model": "a", "mode": "clean", "accuracy": 0.9}]).records[0].accuracy
        0.9
    """

    seed: int
    records: list[CampaignRecord]
    sharpness: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "records", measured_records(self.records))


def per_chip_accuracy(records: Iterable[CampaignRecord | dict[str, Any]]
                      ) -> tuple[dict[str, float], dict[str, dict[int, list[float]]]]:
    """Clean accuracy per model, and per model and chip the accuracies over the swept kinds and rates.

    Example:
        >>> clean, faulty = per_chip_accuracy([{"model": "a", "mode": "clean", "accuracy": 0.9},
        ...     {"model": "a", "mode": "grid", "chip": 0, "accuracy": 0.8}])
        >>> clean["a"], faulty["a"][0]
        (0.9, [0.8])
    """
    clean: dict[str, float] = {}
    faulty: dict[str, dict[int, list[float]]] = {}
    for record in measured_records(records):
        if record.mode == "clean":
            clean[record.model] = record.accuracy
        elif record.mode == "grid":
            faulty.setdefault(record.model, {}).setdefault(record.chip, []).append(record.accuracy)
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


def compare(quantity: str, values: PerChip, first: str, second: str) -> Comparison:
    """Paired difference ``values[first] - values[second]`` over the chips both models met (one seed).

    Example:
        >>> compare("drop", {"a": {0: 0.3, 1: 0.4}, "b": {0: 0.1, 1: 0.1}}, "a", "b").difference.mean
        0.25
    """
    chips = sorted(set(values.get(first, {})) & set(values.get(second, {})))
    return Comparison(quantity, first, second, estimate(values[first][k] - values[second][k] for k in chips))


def compare_seeds(quantity: str, by_seed: Mapping[int, PerChip], first: str, second: str,
                  collapsed: frozenset[tuple[int, str]] = frozenset()) -> Comparison:
    """Paired difference of two recipes over training seeds and chips, pooled (one seed: :func:`compare`).

    A seed whose model of either recipe is in ``collapsed`` (seed, name) is left out, and said so.

    Example:
        >>> c = compare_seeds("drop", {0: {"a": {0: 0.3, 1: 0.4}, "b": {0: 0.1, 1: 0.1}},
        ...                            1: {"a": {0: 0.2, 1: 0.2}, "b": {0: 0.1, 1: 0.2}}}, "a", "b")
        >>> round(c.difference.mean, 3), c.seeds.agreeing()
        (0.15, 2)
    """
    left_out = tuple(s for s in by_seed if (s, first) in collapsed or (s, second) in collapsed)
    kept = {s: values for s, values in by_seed.items() if s not in left_out}
    if not kept:
        return Comparison(quantity, first, second, estimate([]), None, left_out)
    if len(kept) == 1:
        only = next(iter(kept.values()))
        single = compare(quantity, only, first, second)
        return dataclasses.replace(single, seeds=pool({next(iter(kept)): _differences(only, first, second)}),
                                   left_out=left_out)
    pooled = pool({s: _differences(values, first, second) for s, values in kept.items()})
    return Comparison(quantity, first, second, pooled.pooled, pooled, left_out)


def collapsed_models(clean: Mapping[int, Mapping[str, float]], reference: str = "standard") -> frozenset[tuple[int, str]]:
    """(seed, model) pairs whose clean accuracy lies more than :data:`COLLAPSE` below ``reference``'s (same seed).

    Example:
        >>> sorted(collapsed_models({0: {"standard": 0.98, "sparse_saq": 0.97}, 1: {"standard": 0.98, "sparse_saq": 0.1}}))
        [(1, 'sparse_saq')]
    """
    return frozenset((s, name) for s, models in clean.items() if reference in models
                     for name, accuracy in models.items() if accuracy < models[reference] - COLLAPSE)


def _differences(values: PerChip, first: str, second: str) -> dict[int, float]:
    chips = sorted(set(values.get(first, {})) & set(values.get(second, {})))
    return {k: values[first][k] - values[second][k] for k in chips}


def seed_tables(measurements: Sequence[SeedMeasurements]) -> tuple[dict[int, PerChip], dict[int, PerChip],
                                                                     dict[int, dict[str, float]]]:
    """Per training seed: the models' per-chip drops, per-chip mean faulty accuracies, and clean accuracies.

    Example:
        >>> drop, faulty, clean = seed_tables([SeedMeasurements(0, [{"model": "a", "mode": "clean", "accuracy": 0.9},
        ...     {"model": "a", "mode": "grid", "chip": 0, "accuracy": 0.8}])])
        >>> round(drop[0]["a"][0], 3), clean[0]["a"]
        (0.1, 0.9)
    """
    drop, faulty_mean, clean_by_seed = {}, {}, {}
    for m in measurements:
        clean, faulty = per_chip_accuracy(m.records)
        drop[m.seed], faulty_mean[m.seed], clean_by_seed[m.seed] = drops(clean, faulty), mean_faulty(faulty), clean
    return drop, faulty_mean, clean_by_seed


def trace_difference(measurements: Sequence[SeedMeasurements], first: str, second: str) -> Pooled:
    """Hutchinson trace difference ``first - second``: one seed, a normal 95% interval from the two standard
    errors; several, a t interval over the seeds' differences (their spread holds the estimates' noise too)."""
    diffs, errors = [], []
    for m in measurements:
        a, b = m.sharpness[first], m.sharpness[second]
        diffs.append(a.hessian_trace - b.hessian_trace)
        errors.append(math.hypot(a.hessian_trace_stderr, b.hessian_trace_stderr))
    one = [estimate([d]) for d in diffs]
    return Pooled(pool_values(diffs, normal_stderr=errors[0] if len(diffs) == 1 else None),
                  tuple(m.seed for m in measurements), tuple(one))


def judge_claims(measurements: Sequence[SeedMeasurements], names: list[str]) -> list[Claim]:
    """Evaluate the four claims from each training seed's campaign records and sharpness reports.
    """
    from scipy import stats as scipy_stats

    drop, accuracy, clean = seed_tables(measurements)
    collapsed = collapsed_models(clean)
    c1 = compare_seeds("drop", drop, "sparse", "standard", collapsed)
    c1b = compare_seeds("drop", drop, "sparse_saq", "standard_saq", collapsed)
    c2a = compare_seeds("drop", drop, "standard", "standard_saq", collapsed)
    c2b = compare_seeds("drop", drop, "sparse", "sparse_saq", collapsed)
    c3 = compare_seeds("faulty accuracy", accuracy, "sparse_saq", "standard", collapsed)
    c3b = compare_seeds("drop", drop, "standard", "sparse_saq", collapsed)
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
    kept = [m for m in measurements if (m.seed, "sparse") not in collapsed] or list(measurements)
    trace = trace_difference(kept, "sparse", "standard")
    diff, low, high = trace.pooled.mean, trace.pooled.low, trace.pooled.high
    sharper = "inconclusive" if low is None else "held" if low > 0 else "did not hold" if high < 0 else "inconclusive"
    points = [(n, m) for m in measurements for n in names
              if n in m.sharpness and n in drop[m.seed] and (m.seed, n) not in collapsed]
    traces = [m.sharpness[n].hessian_trace for n, m in points]
    mean_drops = [float(np.mean(list(drop[m.seed][n].values()))) for n, m in points]
    varied = len(points) > 2 and len(set(traces)) > 1 and len(set(mean_drops)) > 1  # else rho is undefined
    rho, p_value = scipy_stats.spearmanr(traces, mean_drops) if varied else (float("nan"), float("nan"))
    eigen = {n: np.mean([m.sharpness[n].top_eigenvalue for m in measurements]) for n in ("sparse", "standard")}
    sam = {n: np.mean([m.sharpness[n].sam_sharpness for m in measurements]) for n in ("sparse", "standard")}
    tracks = "held" if rho > 0 and p_value < 0.05 else "did not hold" if rho < 0 and p_value < 0.05 else "inconclusive"
    verdict4 = sharper if sharper == tracks else ("did not hold" if "did not hold" in (sharper, tracks) else "inconclusive")
    several = len(measurements) > 1
    interval = "" if diff is None or low is None else f" [95% CI {low:+.1f}, {high:+.1f}]"
    per_seed = "" if not several else " (" + trace.seed_text(scale=1.0, digits=1) + ")"
    over = (f"{len(points)} (model, seed) points ({len(names)} models x {len(measurements)} seeds"
            + (f", {len(collapsed)} collapsed left out)" if collapsed else ")") if several else f"{len(points)} models")
    claims.append(Claim(
        4, "Activation-sparse minima are sharper, and sharpness tracks the fault-induced drop.",
        (f"Hessian trace(sparse) - trace(standard) = {diff:+.1f}{interval}{per_seed}: {sharper}",
         f"top eigenvalue: sparse {eigen['sparse']:.2f}, standard {eigen['standard']:.2f}; "
         f"SAM sharpness: sparse {sam['sparse']:.4f}, standard {sam['standard']:.4f}"
         + (" (means over seeds)" if several else ""),
         f"Spearman rank correlation of Hessian trace and mean drop over {over}: "
         f"rho = {rho:+.2f} (p = {p_value:.2f}): {tracks}"),
        verdict4))
    if collapsed:
        note = ("Collapsed models (clean accuracy more than 10 points below the same seed's standard model), left "
                "out of every comparison with them: " + ", ".join(
                    f"{n} seed {s} ({100 * clean[s][n]:.1f}% clean)" for s, n in sorted(collapsed)) + ".")
        claims = [dataclasses.replace(c, evidence=c.evidence + (note,)) if "left out" in " ".join(c.evidence) else c
                  for c in claims]
    return claims
