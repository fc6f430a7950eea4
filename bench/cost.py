"""Benchmark: ``edgefault cost`` over the test split against a clean ``edgefault eval`` of the same model.

Both run in this process on the same model and dataset, as the commands do (load the model,
load and prepare the test images, run ONNX Runtime), in interleaved rounds so that background
load hits them alike; each reports its median round. Two baselines: ``eval`` as it runs by
default (accuracy, sparsity probe, latency and throughput runs, kernel counts) and ``eval
--no-timing``. Goal: cost <= 1.5x eval.

Run: ``.venv/bin/python bench/cost.py [MODEL.onnx ...] [--data SPEC] [--rounds N] [--json FILE]``
(e.g. the quick study's ``models/standard.onnx`` and ``models/sparse.onnx``; without models, a
standard and an activation-sparse LeNet-5 trained here for 2 epochs).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from edgefault.cost import model_cost
from edgefault.runtime import EvalOptions, TimingSettings, evaluate_model

from common import exported_model

GOAL = 1.5


def seconds(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", type=Path)
    parser.add_argument("--data", default="mnist5k")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here (for bench/report.py)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        if not args.models:
            args.models = [exported_model(Path(folder) / name, sparse=name == "sparse") for name in ("standard", "sparse")]
        measure(args)


def measure(args: argparse.Namespace) -> None:
    """Time cost, eval and eval --no-timing on each model in interleaved rounds; print (and write) the ratios."""
    rows = []
    print("| model | cost s | eval s | cost / eval | eval --no-timing s | cost / eval --no-timing |\n"
          "|---|---|---|---|---|---|")
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
        label = model.name if model.name != "model.onnx" else model.parent.name
        rows.append([label, round(median["cost"], 2), round(median["eval"], 2), round(ratio, 2),
                     round(median["eval --no-timing"], 2), round(median["cost"] / median["eval --no-timing"], 2)])
        print(f"| {label} | {median['cost']:.2f} | {median['eval']:.2f} | {ratio:.2f}x | "
              f"{median['eval --no-timing']:.2f} | {median['cost'] / median['eval --no-timing']:.2f}x |")
    worst = max(ratios)
    print(f"\ngoal cost <= {GOAL}x eval: worst {worst:.2f}x ({'met' if worst <= GOAL else 'missed'}); "
          f"medians of {args.rounds} interleaved rounds; load average {os.getloadavg()[0]:.1f}")
    if args.json:
        numbers = {"command": " ".join(["python bench/cost.py", *sys.argv[1:]]),
                   "setup": f"{args.data} test split, medians of {args.rounds} interleaved rounds, goal cost <= {GOAL}x eval",
                   "tables": [{"columns": ["model", "cost (s)", "eval (s)", "cost / eval", "eval --no-timing (s)",
                                           "cost / eval --no-timing"], "rows": rows}]}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(numbers, indent=2) + "\n")


if __name__ == "__main__":
    main()
