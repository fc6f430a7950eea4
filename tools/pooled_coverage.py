"""Simulate the coverage of the study's interval over training seeds and chips; print a Markdown section.

``python tools/pooled_coverage.py --studies 4000 > results/pooled-coverage.md`` gives the table that
docs/study.md quotes (tools/regions.py). Each simulated study is a seeds x chips table
``d[s, k] = mu + S_s + C_k + E_sk`` (the same K = 20 chips for every seed), and each interval's
coverage is how often it holds ``mu``. The test suite (tests/test_study_pooled.py) checks the
same property on fewer studies.
"""

from __future__ import annotations

import argparse

import numpy as np

from edgefault.campaign.stats import estimate
from edgefault.study.pooled import crossed_interval

MU, CHIPS = 0.02, 20
# (seeds, sd of the seed, chip and residual terms): seeds dominating (twice the chip spread, what issue 20
# measured), chips dominating, and no chip term.
SCENARIOS = ((2, 0.01, 0.005, 0.01), (3, 0.01, 0.005, 0.01), (5, 0.01, 0.005, 0.01), (10, 0.01, 0.005, 0.01),
             (3, 0.0, 0.01, 0.002), (5, 0.0, 0.01, 0.002), (5, 0.01, 0.0, 0.01))
INTERVALS = (("pooled (this method)", crossed_interval),
             ("one seed, t over chips", lambda t: estimate(t[0])),
             ("all N*K values as independent", lambda t: estimate(t.ravel())),
             ("t over the seeds' chip means", lambda t: estimate(t.mean(axis=1))))


def coverage_rows(studies: int, seed: int = 0) -> list[str]:
    """One Markdown row per scenario: seeds, the three spreads, then each interval's coverage."""
    rng = np.random.default_rng(seed)
    rows = []
    for seeds, seed_sd, chip_sd, rest_sd in SCENARIOS:
        tables = (MU + rng.normal(0, seed_sd, (studies, seeds, 1)) + rng.normal(0, chip_sd, (studies, 1, CHIPS))
                  + rng.normal(0, rest_sd, (studies, seeds, CHIPS)))
        covered = [np.mean([(e := interval(t)).low <= MU <= e.high for t in tables]) for _, interval in INTERVALS]
        spreads = " / ".join(f"{100 * sd:g}" for sd in (seed_sd, chip_sd, rest_sd))
        rows.append(f"| {seeds} | {spreads} | " + " | ".join(f"{c:.3f}" for c in covered) + " |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=4000, help="simulated studies per row")
    parser.add_argument("--seed", type=int, default=0, help="the simulation's random seed")
    args = parser.parse_args()
    print("## Coverage\n")
    print(f"`python tools/pooled_coverage.py --studies {args.studies} --seed {args.seed}`: {args.studies:,} simulated "
          f"studies per row, K = {CHIPS} chips, true effect {100 * MU:g} points.\n")
    print("| seeds | sd of seed / chip / rest (points) | " + " | ".join(name for name, _ in INTERVALS) + " |")
    print("|---|---|" + "---|" * len(INTERVALS))
    print("\n".join(coverage_rows(args.studies, args.seed)))


if __name__ == "__main__":
    main()
