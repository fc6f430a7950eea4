"""Bit-flip attack: seconds per search iteration on 2 cores, as a ratio to one gradient pass, and flips to chance.

Run: .venv/bin/python bench/attack.py [--models lenet5,resnet20] [--epochs 1] [--train-images 2000]
     .venv/bin/python bench/attack.py --run study/runs/standard --model study/models/standard.onnx

Each model is trained briefly on the built-in data (or the run given is used), exported, and
attacked with the default search (top 10 weights per layer, 128 training images) until ONNX
Runtime's test accuracy is at chance plus 1 point or the flip budget is spent. A search
iteration costs one gradient pass plus one forward pass per layer and tried rank; the ratio to
a gradient pass measured in the same run says how much of that is the trials.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import torch

from edgefault.attack import AttackSettings, CodeTwin, deploy
from edgefault.attack.run import attack_run, attack_batch
from edgefault.data import load_dataset
from edgefault.train import TrainConfig, train


def gradient_seconds(run_dir: Path, model_path: Path | None, settings: AttackSettings, repeats: int = 5) -> float:
    """Median seconds of one loss-and-gradient pass of the twin on the attack batch (the baseline)."""
    deployed = deploy(run_dir, None, model_path, settings)
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


def measure(name: str, run_dir: Path, model_path: Path | None, settings: AttackSettings, out: Path) -> None:
    baseline = gradient_seconds(run_dir, model_path, settings)
    result = attack_run(run_dir, None, out, settings, model_path=model_path)
    deployed_bits = result.weight_bits  # 8 per int8 weight
    layers = len({f["tensor"] for f in result.flips})
    onnx_bytes = (model_path or out / "clean.onnx").stat().st_size
    print(f"{name}: {deployed_bits:,} stored weight bits ({deployed_bits // 8:,} int8 weights), "
          f"ONNX file {onnx_bytes:,} bytes; clean ORT accuracy {result.clean_accuracy:.1%}")
    print(f"  search iteration {result.seconds_per_iteration:.3f} s = {result.seconds_per_iteration / baseline:.1f}x "
          f"one gradient pass ({baseline:.3f} s) on {torch.get_num_threads()} threads; flips hit {layers} tensors")
    print(f"  {result.summary}; {result.seconds:.0f} s in all")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="lenet5,resnet20")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--train-images", type=int, default=2000)
    parser.add_argument("--flips", type=int, default=100)
    parser.add_argument("--chips", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--run", type=Path, default=None, help="attack this run instead of training")
    parser.add_argument("--model", type=Path, default=None, help="the run's deployed model")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = AttackSettings(flips=args.flips, chips=args.chips, threads=args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-attack-") as folder:
        if args.run is not None:
            measure(str(args.run), args.run, args.model, settings, Path(folder) / "out")
            return
        full = load_dataset("mnist5k")
        data = dataclasses.replace(full, train_images=full.train_images[:args.train_images],
                                   train_labels=full.train_labels[:args.train_images])
        for name in args.models.split(","):
            run_dir = Path(folder) / name
            started = time.perf_counter()
            train(TrainConfig(model=name, epochs=args.epochs, device="cpu"), run_dir, data=data, progress=False)
            print(f"{name}: trained {args.epochs} epoch(s) on {len(data.train_labels)} images in "
                  f"{time.perf_counter() - started:.0f} s")
            measure(name, run_dir, None, settings, Path(folder) / f"{name}-attack")


if __name__ == "__main__":
    main()
