"""Bit-flip attack: seconds per search iteration on 2 cores, as a ratio to one gradient pass, and flips to chance.

Run: .venv/bin/python bench/attack.py [--models lenet5,resnet20] [--epochs 1] [--train-images 2000]
     .venv/bin/python bench/attack.py --run study/runs/standard --model study/models/standard.onnx
     ... [--json bench/results/attack.json]   (the numbers for docs/benchmarks.md, via bench/report.py)

Each model is trained briefly on the built-in data (or the run given is used), exported, and
attacked with the default search (top 10 weights per layer, 128 training images) until ONNX
Runtime's test accuracy is at chance plus 1 point or the flip budget is spent. A search
iteration costs one gradient pass plus one forward pass per layer and tried rank; the ratio to
a gradient pass measured in the same run says how much of that is the trials.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import shlex
import sys
import time
from pathlib import Path

import torch

from edgefault.attack import AttackSettings, CodeTwin, deploy
from edgefault.attack.run import Deployed, attack_batch, attack_run
from edgefault.data import load_dataset
from edgefault.train import TrainConfig, train


def gradient_seconds(deployed: Deployed, settings: AttackSettings, repeats: int = 5) -> float:
    """Median seconds of one loss-and-gradient pass of the twin on the attack batch (the baseline)."""
    indices = attack_batch(deployed.data, settings.batch, settings.seed)
    images = torch.from_numpy(deployed.data.normalized(deployed.data.train_images[indices]))
    labels = torch.from_numpy(deployed.data.train_labels[indices].astype("int64"))
    twin = CodeTwin(deployed.run.model, deployed.injector.memory(), deployed.injector.arrays())
    try:
        twin.gradients(images, labels)  # warm-up
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            twin.gradients(images, labels)
            times.append(time.perf_counter() - started)
    finally:
        twin.close()
    return statistics.median(times)


COLUMNS = ["model", "threads", "weights", "parameters", "stored weight bits", "ONNX file (bytes)", "clean (ORT)",
           "gradient pass (s)", "search iteration (s)", "ratio to a gradient pass", "flips", "final (ORT)",
           "random flips, same count (ORT)", "flips to chance + 1 point"]


def measure(name: str | None, run_dir: Path, model_path: Path | None, settings: AttackSettings, out: Path) -> list:
    """Attack one run; print its numbers and return them as a row of :data:`COLUMNS` (``name`` None: the run's
    architecture and recipe)."""
    deployed = deploy(run_dir, None, model_path, settings)
    config = deployed.run.config
    name = name or f"{config.model}, {config.epochs} epoch(s) on {config.data} (seed {config.seed})"
    baseline = gradient_seconds(deployed, settings)
    result = attack_run(run_dir, None, out, settings, model_path=model_path)
    weights = sum(t.size for t in deployed.injector.memory().tensors)
    parameters = sum(p.numel() for p in deployed.run.model.parameters())
    layers = len({f["tensor"] for f in result.flips})
    onnx_bytes = (model_path or out / "clean.onnx").stat().st_size
    same = next((r for r in result.random if r.count == len(result.flips)), None)
    random_text = "-" if same is None else (f"{same.mean:.1%}" + ("" if same.low is None else
                                                                  f" [{100 * same.low:.1f}, {100 * same.high:.1f}]"))
    print(f"{name}: {weights:,} weights ({result.weight_bits:,} stored bits), {parameters:,} parameters, "
          f"ONNX file {onnx_bytes:,} bytes; clean ORT accuracy {result.clean_accuracy:.1%}")
    print(f"  search iteration {result.seconds_per_iteration:.3f} s = {result.seconds_per_iteration / baseline:.1f}x "
          f"one gradient pass ({baseline:.3f} s) on {torch.get_num_threads()} threads; flips hit {layers} tensors")
    print(f"  {result.summary}; {result.seconds:.0f} s in all")
    return [name, settings.threads, weights, parameters, result.weight_bits, onnx_bytes, f"{result.clean_accuracy:.1%}",
            round(baseline, 3), round(result.seconds_per_iteration, 3),
            round(result.seconds_per_iteration / baseline, 1), len(result.flips), f"{result.final_accuracy:.1%}",
            random_text, len(result.flips) if result.reached else f">{len(result.flips)} ({result.stop})"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="lenet5,resnet20")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--train-images", type=int, default=2000)
    parser.add_argument("--flips", type=int, default=100)
    parser.add_argument("--chips", type=int, default=3)
    parser.add_argument("--threads", default="2", help="torch and ONNX Runtime threads; a list (1,2) measures each")
    parser.add_argument("--run", type=Path, default=None, help="attack this run instead of training")
    parser.add_argument("--model", type=Path, default=None, help="the run's deployed model")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here (bench/report.py)")
    args = parser.parse_args()
    counts = [int(t) for t in args.threads.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-attack-") as folder:
        if args.run is not None:
            for threads in counts:
                torch.set_num_threads(threads)
                settings = AttackSettings(flips=args.flips, chips=args.chips, threads=threads)
                rows.append(measure(None, args.run, args.model, settings, Path(folder) / f"out-{threads}"))
            setup = f"the run given ({args.run})"
        else:
            full = load_dataset("mnist5k")
            data = dataclasses.replace(full, train_images=full.train_images[:args.train_images],
                                       train_labels=full.train_labels[:args.train_images])
            for name in args.models.split(","):
                run_dir = Path(folder) / name
                started = time.perf_counter()
                train(TrainConfig(model=name, epochs=args.epochs, device="cpu"), run_dir, data=data, progress=False)
                print(f"{name}: trained {args.epochs} epoch(s) on {len(data.train_labels)} images in "
                      f"{time.perf_counter() - started:.0f} s")
                for threads in counts:
                    torch.set_num_threads(threads)
                    settings = AttackSettings(flips=args.flips, chips=args.chips, threads=threads)
                    rows.append(measure(name, run_dir, None, settings, Path(folder) / f"{name}-attack-{threads}"))
            setup = f"each model trained {args.epochs} epoch(s) on the first {args.train_images:,} mnist5k training images"
    if args.json:
        argv = sys.argv[1:]
        kept = [a for i, a in enumerate(argv) if a != "--json" and (i == 0 or argv[i - 1] != "--json")
                and not a.startswith("--json=")]
        numbers = {"command": " ".join(["python bench/attack.py", *map(shlex.quote, kept)]),
                   "setup": (f"{setup}; threads: torch's and ONNX Runtime's, up to {args.flips} flips, "
                             f"{args.chips} random chips per count, ONNX Runtime on every test image of the run's data; "
                             "weights: stored int8 codes (stored bits: their cells); search iteration: mean over the "
                             "committed flips; the gradient pass is the baseline, measured in the same run"),
                   "tables": [{"columns": COLUMNS, "rows": rows}]}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(numbers, indent=2) + "\n")


if __name__ == "__main__":
    main()
