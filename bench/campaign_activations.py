"""Benchmark of activation cells against a weight cell: same model, same test images, same chips, one worker.

Measured in one run, interleaved chip by chip (so background load hits every method alike), each
the median over the chips, through :class:`~edgefault.campaign.CellRunner` (what a campaign worker
runs, results record included):

* a weight cell (the baseline: sample the chip, patch the int8 bytes, open a session, score);
* activation cells, permanent dense (the goal: at most 1.3x the weight cell), transient dense,
  permanent and transient bitmap and rle;
* the in-graph alternative for permanent dense: the chip as bitwise masks in one ONNX file
  (``inject --site activations``), a session opened on it and the test split scored.

Run: ``.venv/bin/python bench/campaign_activations.py [--model MODEL.onnx] [--data SPEC] [--rate P] [--chips K]
[--json bench/results/campaign_activations.json]`` (default: the quick study's standard LeNet,
a LeNet-5 trained here for 2 epochs on mnist5k); ``bench/report.py`` puts the JSON in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import tempfile
import json
import statistics
import sys
from pathlib import Path

from edgefault.campaign import CampaignConfig, Cell, CellRunner, prepare_campaign
from edgefault.faults import sample_faults
from edgefault.faults.actinject import mask_model
from edgefault.runtime import Evaluator
from edgefault.onnxio import parse_model

from common import exported_model, time_cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None,
                        help="a quantized ONNX model (default: a LeNet-5 trained for 2 epochs here)")
    parser.add_argument("--data", default="mnist5k")
    parser.add_argument("--rate", type=float, default=1e-3)
    parser.add_argument("--chips", type=int, default=15)
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here (for bench/report.py)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        measure(args, args.model or exported_model(Path(folder)))


def measure(args: argparse.Namespace, model_path: Path) -> None:
    """Time each cell kind on ``model_path``, interleaved chip by chip; print (and write) the ratios."""
    config = CampaignConfig.create([model_path], data=args.data, kinds=("flip",), rates=(args.rate,), chips=args.chips,
                                   sites=("weights", "activations"))
    prepared = prepare_campaign(config)
    runner = CellRunner(prepared.payload(threads=1))
    model = prepared.models[0]
    proto = parse_model(model.data)
    inputs = prepared.inputs[model.inputs]
    methods = {
        "weight cell": dict(),
        "activations, permanent dense": dict(site="activations", act_format="dense"),
        "activations, transient dense": dict(site="activations", act_format="dense", transient=True),
        "activations, permanent bitmap": dict(site="activations", act_format="bitmap"),
        "activations, transient bitmap": dict(site="activations", act_format="bitmap", transient=True),
        "activations, permanent rle": dict(site="activations", act_format="rle"),
        "activations, transient rle": dict(site="activations", act_format="rle", transient=True),
    }

    def in_graph(cell: Cell) -> None:
        memory = runner._activations(0, model).memory("dense")
        data = mask_model(proto, memory, sample_faults(memory, cell.to_chip())).SerializeToString()
        Evaluator(data, runner.settings, input_name=model.input_name, output_name=model.output_name).score(inputs, 64)

    runs = {name: lambda chip, memory=memory: runner.run(Cell(0, "grid", "flip", args.rate, chip, 1000 + chip,
                                                                  **memory))
            for name, memory in methods.items()}
    runs["in-graph masks, permanent dense"] = lambda chip: in_graph(Cell(0, "grid", "flip", args.rate, chip, 1000 + chip,
                                                                          site="activations", act_format="dense"))
    times = time_cells(runs, args.chips)
    base = statistics.median(times["weight cell"])
    label = model_path.name if args.model else "a LeNet-5 trained here for 2 epochs"
    setup = (f"{label}, {prepared.images:,} {args.data} test images, flip at {args.rate:g}, "
             f"{args.chips} chips, one worker with one thread, every method interleaved chip by chip, medians")
    print(setup)
    rows = []
    for name, values in times.items():
        median = statistics.median(values)
        label = f"{name} (baseline)" if name == "weight cell" else name
        rows.append([label, round(median * 1000, 1), round(median / base, 2)])
        print(f"  {label:58s} {median * 1000:8.1f} ms   {median / base:5.2f}x the weight cell")
    goal = statistics.median(times["activations, permanent dense"]) / base
    verdict = f"permanent dense activation cell <= 1.3x a weight cell: {goal:.2f}x ({'met' if goal <= 1.3 else 'NOT met'})"
    print(f"goal: {verdict}")
    if args.json:
        shown = [a for i, a in enumerate(sys.argv[1:]) if a != "--json" and sys.argv[i:i + 1] != ["--json"]]
        numbers = {"command": " ".join(["python bench/campaign_activations.py", *shown]), "setup": f"{setup}; goal: {verdict}",
                   "tables": [{"columns": ["cell", "ms", "x weight cell"], "rows": rows}]}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(numbers, indent=2) + "\n")


if __name__ == "__main__":
    main()
