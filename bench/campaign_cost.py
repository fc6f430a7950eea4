"""Benchmark: ``campaign --cost`` against the same campaign without it (goal: at most 1.3x).

Two measurements on one model and dataset, in one run:

* whole campaigns (``run_campaign``, default workers, fresh folders), with and without
  ``--cost``, in interleaved rounds so that background load hits both alike; median round;
* single weight cells through :class:`~edgefault.campaign.CellRunner` (what a worker runs,
  results record included), one worker x 1 thread, with and without the cost, interleaved
  chip by chip; median over the chips. This is the per-cell overhead without the worker
  start-up, which a whole small campaign also pays.

Run: ``.venv/bin/python bench/campaign_cost.py [--model MODEL.onnx] [--data SPEC] [--json FILE]``
(default: an activation-sparse LeNet-5 trained here for 2 epochs, on mnist5k).
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

from edgefault.campaign import CampaignConfig, Cell, CellRunner, prepare_campaign, run_campaign
from edgefault.cost import load_accelerator

from common import exported_model, time_cells

GOAL = 1.3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None,
                        help="a quantized ONNX model (default: an activation-sparse LeNet-5 trained here for 2 epochs)")
    parser.add_argument("--data", default="mnist5k")
    parser.add_argument("--kinds", default="flip,sa1")
    parser.add_argument("--rates", default="0.001,0.01")
    parser.add_argument("--chips", type=int, default=5, help="chips per kind and rate in the whole campaigns")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the whole campaigns")
    parser.add_argument("--cells", type=int, default=15, help="chips of the single-cell measurement")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here (bench/report.py reads them)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        if args.model is None:
            args.model = exported_model(Path(folder), sparse=True)
        measure(args)


def measure(args: argparse.Namespace) -> None:
    """Time whole campaigns and single cells with and without the cost; print (and write) the ratios."""
    kinds, rates = tuple(args.kinds.split(",")), tuple(float(r) for r in args.rates.split(","))
    accelerator = load_accelerator().to_dict()

    def config(cost: bool) -> CampaignConfig:
        return CampaignConfig.create([args.model], data=args.data, kinds=kinds, rates=rates, chips=args.chips,
                                     accelerator=accelerator if cost else None)

    whole: dict[str, list[float]] = {"campaign": [], "campaign --cost": []}
    with tempfile.TemporaryDirectory() as scratch:
        for round_ in range(args.rounds):
            for name in whole:
                start = time.perf_counter()
                run_campaign(config(name.endswith("--cost")), Path(scratch) / f"{round_}{name[-4:]}")
                whole[name].append(time.perf_counter() - start)
    cells = config(False).cells_per_model + 1

    prepared = {cost: prepare_campaign(config(cost)) for cost in (False, True)}
    runners = {cost: CellRunner(prepared[cost].payload(threads=1)) for cost in (False, True)}
    single = time_cells({cost: lambda chip, runner=runner: runner.run(Cell(0, "grid", kinds[0], rates[-1], chip,
                                                                          1000 + chip))
                         for cost, runner in runners.items()}, args.cells)

    median = {name: statistics.median(values) for name, values in whole.items()}
    ratio = median["campaign --cost"] / median["campaign"]
    cell_plain, cell_cost = statistics.median(single[False]), statistics.median(single[True])
    images = prepared[False].images
    lines = [
        f"{args.model}: {images} test images; campaign {cells} cells ({', '.join(kinds)} x {args.rates} x "
        f"{args.chips} chips + clean), default workers; load average {os.getloadavg()[0]:.1f}",
        f"  campaign          {median['campaign']:6.2f} s (median of {args.rounds} rounds)",
        f"  campaign --cost   {median['campaign --cost']:6.2f} s   {ratio:.2f}x",
        f"  one cell          {cell_plain * 1000:6.1f} ms (median of {args.cells} chips, 1 worker x 1 thread)",
        f"  one cell --cost   {cell_cost * 1000:6.1f} ms   {cell_cost / cell_plain:.2f}x",
        f"goal campaign --cost <= {GOAL}x campaign: {ratio:.2f}x ({'met' if ratio <= GOAL else 'missed'})",
    ]
    print("\n".join(lines))
    if args.json:
        numbers = {
            "command": "python bench/campaign_cost.py " + " ".join(sys.argv[1:]),
            "setup": f"{Path(args.model).name}, {images} test images of {args.data}; whole campaigns of {cells} cells "
                     f"(kinds {args.kinds}, rates {args.rates}, {args.chips} chips, default workers), median of "
                     f"{args.rounds} interleaved rounds; single weight cells ({kinds[0]} at {rates[-1]:g}) median of "
                     f"{args.cells} chips, 1 worker x 1 thread; goal campaign --cost <= {GOAL}x",
            "tables": [{
                "columns": ["what", "without --cost", "with --cost", "ratio"],
                "rows": [["whole campaign (s)", round(median["campaign"], 2), round(median["campaign --cost"], 2),
                          round(ratio, 2)],
                         ["one weight cell (ms)", round(cell_plain * 1000, 1), round(cell_cost * 1000, 1),
                          round(cell_cost / cell_plain, 2)]],
            }],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(numbers, indent=2) + "\n")


if __name__ == "__main__":
    main()
