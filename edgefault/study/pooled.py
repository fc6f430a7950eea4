"""A recipe effect over training seeds and fault chips: the pooled estimate and its 95% interval.

A study trains N models per recipe (training seeds s) and meets every model with the same K
chips (k), so a paired quantity (one model's drop minus another's, say) is a table ``d[s, k]``.
Its sources of variation are crossed: ``d[s, k] = mu + S_s + C_k + E_sk``, the seed effect S
(which trained models came out), the chip effect C (which fault patterns were drawn; shared by
every seed) and the rest E. The recipe effect ``mu`` is estimated by the grand mean, whose
variance is ``var(S)/N + var(C)/K + var(E)/(NK)``. Its standard error is estimated as

    se^2 = var_s(row means) / N + var_k(column means) / K

(each term also carries ``var(E)/(NK)``, so the estimate errs on the wide side by that much),
and the interval is ``mean +- t(0.975, df) * se`` with the conservative Welch degrees of freedom
``df = min(N - 1, K - 1)`` (Welch-Satterthwaite's estimated df undercovers with 2 or 3 seeds:
88% and 93% in the simulation, since the df estimate is itself noisy). With one seed
the seed term cannot be estimated: the interval is the chips' t interval (exactly the one-seed
study's), and it speaks about the trained models, not the recipes. With many seeds the seed
term dominates and the interval is close to a t interval over seeds of the per-seed chip means;
that t interval alone would miss the chip effect every seed shares (33% coverage with 3 seeds when
the chips dominate). ``tests/test_study_pooled.py`` checks the coverage by simulation: 95-99% with
between-seed variance (3 and 5 seeds), where a chip-only interval falls far short.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Sequence

import numpy as np

from edgefault.campaign.stats import CONFIDENCE, Estimate, estimate

METHOD = ("95% interval over training seeds and chips (crossed: the same chips for every seed): mean over "
          "seeds and chips +- t(min(N, K) - 1) * se, se^2 = variance of the N per-seed means / N + variance of "
          "the K per-chip means / K; with one seed, the t interval over chips")


def crossed_interval(table: np.ndarray, confidence: float = CONFIDENCE,
                     bounds: tuple[float, float] | None = None) -> Estimate:
    """The pooled estimate of a seeds x chips table (rows: seeds, columns: chips) and its interval.

    One row gives exactly :func:`~edgefault.campaign.stats.estimate` over the chips.

    Example:
        >>> e = crossed_interval(np.array([[0.10, 0.12, 0.11], [0.20, 0.22, 0.21]]))
        >>> round(e.mean, 3), e.n, e.low < 0.1 < 0.2 < e.high
        (0.16, 6, True)
        >>> crossed_interval(np.array([[0.9, 0.8, 0.7]])) == estimate([0.9, 0.8, 0.7])
        True
    """
    table = np.asarray(table, dtype=np.float64)
    seeds, chips = table.shape if table.ndim == 2 else (0, 0)
    if seeds <= 1 or chips == 0:
        return estimate(table.ravel(), confidence, bounds)
    mean = float(table.mean())
    a = float(table.mean(axis=1).var(ddof=1)) / seeds
    b = float(table.mean(axis=0).var(ddof=1)) / chips if chips > 1 else 0.0
    variance = a + b
    if variance == 0:
        return Estimate(table.size, mean, 0.0, mean, mean)
    df = min(seeds, chips) - 1 if chips > 1 else seeds - 1
    from scipy import stats as scipy_stats

    half = float(scipy_stats.t.ppf(0.5 + confidence / 2, df)) * math.sqrt(variance)
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return Estimate(table.size, mean, float(table.std(ddof=1)), low, high)


@dataclasses.dataclass(frozen=True)
class Pooled:
    """A quantity over training seeds: the pooled estimate and each seed's own (chip) estimate.

    Example:
        >>> p = pool({0: {0: 0.1, 1: 0.2}, 1: {0: 0.3, 1: 0.2}})
        >>> round(p.pooled.mean, 2), p.seeds, p.agreeing(), len(p.per_seed)
        (0.2, (0, 1), 2, 2)
    """

    pooled: Estimate
    seeds: tuple[int, ...]
    per_seed: tuple[Estimate, ...]

    def agreeing(self) -> int:
        """How many seeds' own means have the pooled mean's sign (zero agrees with nothing)."""
        if self.pooled.mean is None:
            return 0
        sign = np.sign(self.pooled.mean)
        return sum(1 for e in self.per_seed if e.mean is not None and np.sign(e.mean) == sign != 0)

    def seed_text(self, scale: float = 100.0, digits: int = 2) -> str:
        """``k of N seeds agree; per seed: s0 +x, s1 +y`` (empty with one seed).

        Example:
            >>> pool({0: {0: 0.01, 1: 0.02}, 3: {0: -0.01, 1: 0.0}}).seed_text()
            '1 of 2 seeds agree in sign; per seed: seed 0 +1.50, seed 3 -0.50'
        """
        if len(self.seeds) < 2:
            return ""
        values = ", ".join(f"seed {s} " + ("n/a" if e.mean is None else f"{scale * e.mean:+.{digits}f}")
                           for s, e in zip(self.seeds, self.per_seed))
        return f"{self.agreeing()} of {len(self.seeds)} seeds agree in sign; per seed: {values}"


def pool(per_seed: Mapping[int, Mapping[int, float]], bounds: tuple[float, float] | None = None) -> Pooled:
    """Pool ``per_seed[seed][chip]`` values over the chips every seed has (one seed: its chips' t interval).

    Example:
        >>> pool({0: {0: 0.5, 1: 0.7}}).pooled == estimate([0.5, 0.7])
        True
    """
    seeds = tuple(sorted(per_seed))
    shared = sorted(set.intersection(*(set(per_seed[s]) for s in seeds))) if seeds else []
    table = np.array([[per_seed[s][k] for k in shared] for s in seeds], dtype=np.float64).reshape(len(seeds), -1)
    return Pooled(crossed_interval(table, bounds=bounds), seeds,
                  tuple(estimate(per_seed[s].values(), bounds=bounds) for s in seeds))


def pool_values(values: Sequence[float], normal_stderr: float | None = None) -> Estimate:
    """One value per seed (a Hessian trace difference, say): a t interval over seeds; with one seed, a normal
    interval from ``normal_stderr`` (the value's own standard error) when given.

    Example:
        >>> round(pool_values([-20.0], normal_stderr=5.0).low, 1)
        -29.8
        >>> pool_values([1.0, 2.0, 3.0]).n
        3
    """
    if len(values) == 1 and normal_stderr is not None:
        half = 1.96 * normal_stderr
        return Estimate(1, float(values[0]), None, values[0] - half, values[0] + half)
    return estimate(values)
