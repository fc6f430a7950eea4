"""The study's three further stages on its four models: activation-memory faults, the cost model, the attack.

Each runs through :mod:`edgefault.stages` per training seed, in that seed's folder, reusing what an
earlier run finished: ``act_campaign/`` (a paired campaign of permanent flips in the activation
memory, dense and bitmap, on the same chips for every model and format), ``cost/<model>.json``
(the zero-skipping accelerator model's totals) and ``attack/<model>.json`` (flips to chance + 1
point over a few attack batches). :mod:`edgefault.study.extras_report` turns them into the
report's sections.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np

from edgefault.attack import AttackSettings
from edgefault.campaign.results import CampaignRecord
from edgefault.campaign.stats import Estimate, estimate
from edgefault.faults.actdiscover import FoldedBatch
from edgefault.stages import FaultGrid, Stages
from edgefault.study.claims import SeedMeasurements
from edgefault.study.config import ACT_FORMATS, StudyConfig

ACT_KIND = "flip"
REFERENCE = "standard"  # speedup and energy saving are against this model's dense execution


@dataclasses.dataclass(frozen=True)
class SeedExtras:
    """One training seed's activation-campaign records, cost totals and flips to break (by model name).

    ``act_refused`` says why a model's activation memory could not be faulted (then there are no records).
    """

    seed: int
    act_records: list[CampaignRecord]
    cost: dict[str, dict]
    attack: dict[str, dict]
    act_refused: str | None = None

    def act_measurements(self, act_format: str) -> SeedMeasurements:
        """The activation cells of one storage format (with the clean cells) as a seed's measurements.

        Example:
            >>> SeedExtras(0, [], {}, {}).act_measurements("dense").records
            []
        """
        return SeedMeasurements(self.seed, [r for r in self.act_records
                                            if r.mode == "clean" or (r.mode == "grid" and r.format == act_format)])

    def speedup(self, name: str, mode: str = "skipping_imbalanced") -> float:
        """Modelled speedup of ``name`` against the standard model's dense execution (same seed).

        Example:
            >>> SeedExtras(0, [], {"standard": {"cycles": {"dense": 10.0}},
            ...                    "sparse": {"cycles": {"skipping_imbalanced": 8.0}}}, {}).speedup("sparse")
            1.25
        """
        return speedup(self.cost[REFERENCE], self.cost[name], mode)

    def energy_saving(self, name: str) -> float:
        """Modelled energy saving of ``name`` (zero-skipping) against the standard model's dense execution.

        Example:
            >>> SeedExtras(0, [], {"standard": {"energy_pj": {"dense": 10.0}},
            ...                    "sparse": {"energy_pj": {"skipping": 6.0}}}, {}).energy_saving("sparse")
            0.4
        """
        return energy_saving(self.cost[REFERENCE], self.cost[name])

    def zero_share(self, name: str) -> float:
        """The share of the model's MACs whose activation input is zero (padding taps included)."""
        total = self.cost[name]
        return total["zero_input_macs"] / max(total["macs"], 1)


def speedup(reference: dict, total: dict, mode: str = "skipping_imbalanced") -> float:
    """Modelled speedup of a model (its ``cost`` totals) in ``mode`` against the dense execution of ``reference``.

    Example:
        >>> speedup({"cycles": {"dense": 10.0}}, {"cycles": {"skipping_imbalanced": 8.0}})
        1.25
    """
    return reference["cycles"]["dense"] / total["cycles"][mode]


def energy_saving(reference: dict, total: dict) -> float:
    """Modelled energy saving of a model with zero-skipping against the dense execution of ``reference``.

    Example:
        >>> energy_saving({"energy_pj": {"dense": 10.0}}, {"energy_pj": {"skipping": 6.0}})
        0.4
    """
    return 1.0 - total["energy_pj"]["skipping"] / reference["energy_pj"]["dense"]


def act_grid(config: StudyConfig) -> FaultGrid:
    """The activation-memory campaign's grid: permanent flips, dense and bitmap, the study's campaign seed.

    Example:
        >>> act_grid(StudyConfig(quick=True)).describe(4)
        '4 models x 1 kinds x 2 rates x 6 chips, activation memory (dense, bitmap)'
    """
    return FaultGrid(config.data, (ACT_KIND,), config.act_rates, config.act_chips, config.seed, ("activations",),
                     ACT_FORMATS)


def attack_settings(config: StudyConfig) -> AttackSettings:
    """The attack's settings in the study: the profile's flips and test images, no random contrast.

    Example:
        >>> attack_settings(StudyConfig(quick=True)).flips
        60
    """
    return AttackSettings(flips=config.attack_flips, seed=config.seed, chips=0, limit=config.attack_limit or None)


def measure_extras(config: StudyConfig, names: Sequence[str], places: dict[int, Path], runs: dict[int, dict[str, Path]],
                   stages: Stages) -> list[SeedExtras]:
    """Run (or reuse) the three stages for every training seed's models in ``places[seed]``.
    """
    found = []
    for seed, place in places.items():
        models = {n: place / "models" / f"{n}.onnx" for n in names}
        try:
            records, refused = stages.campaign(list(models.values()), act_grid(config), place / "act_campaign",
                                               stage="activation campaign").records, None
        except FoldedBatch as folded:  # the other measurements still stand; the report says why this one is missing
            records, refused = [], str(folded)
        cost = {n: stages.cost(m, config.data, place / "cost" / f"{n}.json", config.cost_limit or None)
                for n, m in models.items()}
        attack = {n: stages.attack(runs[seed][n], m, config.data, place / "attack" / f"{n}.json",
                                   attack_settings(config), config.attack_batches) for n, m in models.items()}
        found.append(SeedExtras(seed, records, cost, attack, refused))
    return found


def over_seeds(values: Sequence[float]) -> Estimate:
    """A per-seed quantity over training seeds: the mean with a t interval (one seed: the value, no interval).

    Example:
        >>> over_seeds([1.2]).low is None, round(over_seeds([1.0, 1.2, 1.4]).mean, 2)
        (True, 1.2)
    """
    if len(values) == 1:
        return Estimate(1, float(values[0]), None, None, None)
    return estimate(values)


def flips_median(entry: dict) -> float:
    """A model's median flips to break, with a median beyond the attack's budget counted as budget + 1.

    Example:
        >>> flips_median({"median": None, "limit": 60}), flips_median({"median": 25.0, "limit": 60})
        (61.0, 25.0)
    """
    return float(entry["limit"] + 1) if entry["median"] is None else float(entry["median"])


def flips_text(entries: Sequence[dict]) -> str:
    """Flips to break over seeds: one seed, ``median [low, high]``; several, the mean of the seeds' medians with
    a t interval over seeds.

    Example:
        >>> flips_text([{"median": 25.0, "low": 24, "high": 47, "limit": 60, "counts": [47, 24, 25], "text": "25 [24, 47]"}])
        '25 [24, 47]'
        >>> print(flips_text([{"median": 20.0, "limit": 60}, {"median": 30.0, "limit": 60}]))
        25.0 [0.0, 61.0] (mean of 2 seeds' medians)
    """
    if len(entries) == 1:
        return entries[0]["text"]
    # a count of flips lies in [0, budget + 1] (beyond the budget counts as budget + 1), and so does its interval
    e = estimate([flips_median(x) for x in entries], bounds=(0, max(x["limit"] for x in entries) + 1))
    return f"{e.mean:.1f} [{e.low:.1f}, {e.high:.1f}] (mean of {len(entries)} seeds' medians)"


def median_flips(extras: Sequence[SeedExtras], name: str) -> float:
    """The mean over seeds of a model's median flips to break (a median beyond the budget: budget + 1)."""
    return float(np.mean([flips_median(x.attack[name]) for x in extras]))


def discordant(random_score: dict[str, float], attack_score: dict[str, float]) -> list[tuple[str, str]]:
    """Pairs (a, b) that random faults rank a above b (a strictly more robust) and the attack b above a (strictly
    more flips to break): where the two rankings differ. Higher scores are more robust in both.

    Example:
        >>> discordant({"a": 0.9, "b": 0.5, "c": 0.1}, {"a": 10, "b": 20, "c": 20})
        [('a', 'b'), ('a', 'c')]
    """
    names = list(random_score)
    return [(a, b) for a in names for b in names
            if random_score[a] > random_score[b] and attack_score[a] < attack_score[b]]


def ranking_text(random_score: dict[str, float], attack_score: dict[str, float], random_name: str) -> str:
    """Whether the attack ranks models (or methods) as random faults do, naming the pairs it swaps.

    Example:
        >>> ranking_text({"a": 2, "b": 1, "c": 0}, {"a": 5, "b": 5, "c": 3}, "least drop")
        'The attack orders them as random faults do where it separates them (most robust first, by least drop: a, b, c; by flips to break: a, b, c).'
    """
    by_random = sorted(random_score, key=lambda n: -random_score[n])
    by_attack = sorted(attack_score, key=lambda n: -attack_score[n])
    orders = f"most robust first, by {random_name}: {', '.join(by_random)}; by flips to break: {', '.join(by_attack)}"
    pairs = discordant(random_score, attack_score)
    if len(set(attack_score.values())) == 1:
        return f"The attack does not separate them (the same flips to break for all; {orders})."
    if not pairs:
        return f"The attack orders them as random faults do where it separates them ({orders})."
    return (f"The attack ranks them differently from random faults ({orders}): "
            + "; ".join(f"{a} is more robust than {b} to random faults but breaks with fewer flips" for a, b in pairs)
            + ".")
