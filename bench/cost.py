"""Benchmark: ``edgefault cost`` over the test split against a clean ``edgefault eval`` of the same model.

Both run in this process on the same model and dataset, as the commands do (load the model,
load and prepare the test images, run ONNX Runtime), in interleaved rounds so that background
load hits them alike; each reports its median round. Two baselines: ``eval`` as it runs by
default (accuracy, sparsity probe, latency and throughput runs, kernel counts) and ``eval
--no-timing``. Goal: cost <= 1.5x eval.

Run: ``.venv/bin/python bench/cost.py MODEL.onnx [MODEL.onnx ...] [--data SPEC] [--rounds N]``
(e.g. the quick study's ``models/standard.onnx`` and ``models/sparse.onnx``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from edgefault.cost import model_cost
from edgefault.runtime import EvalOptions, TimingSettings, evaluate_model

GOAL = 1.5


def seconds(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--data", default="mnist5k")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"| model | cost s | eval s | cost / eval | eval --no-timing s | cost / eval --no-timing |\n"
          f"|---|---|---|---|---|---|")
    ratios = []
    for model in args.models:
        runs = {
            "cost": lambda: model_cost(model, args.data),
            "eval": lambda: evaluate_model(model, args.data, options=EvalOptions(timing=TimingSettings())),
            "eval --no-timing": lambda: evaluate_model(model, args.data, options=EvalOptions(timing=None)),
        }
        times: dict[str, list[float]] = {name: [] for name in runs}
        runs["cost"]()  # warm-up: imports, the dataset's first load
        for _ in range(args.rounds):
            for name, call in runs.items():
                times[name].append(seconds(call))
        median = {name: statistics.median(values) for name, values in times.items()}
        ratio = median["cost"] / median["eval"]
        ratios.append(ratio)
        print(f"| {model.name} | {median['cost']:.2f} | {median['eval']:.2f} | {ratio:.2f}x | "
              f"{median['eval --no-timing']:.2f} | {median['cost'] / median['eval --no-timing']:.2f}x |")
    worst = max(ratios)
    print(f"\ngoal cost <= {GOAL}x eval: worst {worst:.2f}x ({'met' if worst <= GOAL else 'missed'}); "
          f"medians of {args.rounds} interleaved rounds; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
