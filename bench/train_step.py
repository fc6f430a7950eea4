"""SAQ, SAM and RandBET step time as a ratio to a plain QAT step, measured in the same run on the same batch.

Run: .venv/bin/python bench/train_step.py [--model resnet20] [--steps 15] [--json FILE]
The goal for SAQ is <= 2.1x: two forward/backward passes cost about 2x, and the perturbation
bookkeeping must stay small. The goal for RandBET (bit error rate 1%, injecting from the first
step) is <= 2.2x: two passes, plus drawing a fresh bit-flip mask over every stored weight bit.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from edgefault.models import create_model
from edgefault.train.randbet import RandBET
from edgefault.train.steps import plain_step, saq_step, sam_step


def _time_steps(step, model, optimizer, images, labels, steps: int) -> list[float]:
    def closure():
        logits = model(images)
        return F.cross_entropy(logits, labels), logits

    times = []
    for _ in range(steps):
        started = time.perf_counter()
        step(model, closure, optimizer)
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here (for bench/report.py)")
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = create_model(args.model).train()
    images = torch.randn(args.batch_size, *model.input_shape, generator=generator)
    labels = torch.randint(0, model.num_classes, (args.batch_size,), generator=generator)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    randbet = RandBET(model, rate=0.01, generator=torch.Generator().manual_seed(0), loss_threshold=0.0)
    methods = {
        "plain QAT": lambda m, c, o: plain_step(c, o),
        "SAM": lambda m, c, o: sam_step(m, c, o, rho=0.05),
        "SAQ": lambda m, c, o: saq_step(m, c, o, rho=0.05),
        "RandBET": lambda m, c, o: plain_step(c, randbet.wrap(o, c)),
    }
    for step in methods.values():  # warm-up: allocator, LSQ initialization, thread pools
        _time_steps(step, model, optimizer, images, labels, 2)
    # Interleave rounds so drift in machine load touches every method alike.
    samples = {name: [] for name in methods}
    for _ in range(3):
        for name, step in methods.items():
            samples[name] += _time_steps(step, model, optimizer, images, labels, args.steps // 3 or 1)
    baseline = statistics.median(samples["plain QAT"])
    setup = f"{args.model}, batch {args.batch_size}, {torch.get_num_threads()} threads, median of {len(samples['SAQ'])} steps"
    print(setup)
    print(f"{'method':<10} {'ms/step':>9} {'x plain':>8}")
    rows = []
    for name, times in samples.items():
        median = statistics.median(times)
        rows.append([name, round(median * 1e3, 1), round(median / baseline, 2)])
        print(f"{name:<10} {median * 1e3:>9.1f} {median / baseline:>8.2f}")
    if args.json:
        numbers = {"command": " ".join(["python bench/train_step.py", *sys.argv[1:]]),
                   "setup": f"{setup}, interleaved rounds; goals SAQ <= 2.1x, RandBET (rate 0.01) <= 2.2x plain QAT",
                   "tables": [{"columns": ["method", "ms/step", "x plain"], "rows": rows}]}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(numbers, indent=2) + "\n")

if __name__ == "__main__":
    main()
