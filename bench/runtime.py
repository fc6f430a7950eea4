"""Benchmark: edgefault's int8 export vs the same network in fp32 vs ONNX Runtime's own quantization.

One run builds three ONNX models of one network and times them on the same ONNX Runtime
session settings, at batch 1 (p50 latency) and batch 256:

* ``edgefault int8``: ``edgefault.export`` (QDQ, int8 weight initializers, integer kernels);
* ``fp32``: the same architecture with dequantized weights and no Q/DQ (``build_onnx(float_reference=True)``);
* ``ORT quantize_static``: ONNX Runtime's QDQ quantization of that fp32 model (after
  ``quant_pre_process``; u8 activations, per-channel s8 weights, calibrated on training images);
* ``edgefault int8, FATReLU``: the int8 model with a FATReLU threshold, i.e. what the uint8
  Greater/Where pair per activation costs.

Goals: int8 latency <= 0.55x fp32 and <= 1.0x ONNX Runtime's quantization. The models are
timed in interleaved rounds and the median round is reported, so a busy machine slows all
three alike. The network is a trained run (``--run``) or, by default, a freshly built one
calibrated on a few training batches (latency does not depend on the weight values).

    .venv/bin/python bench/runtime.py --model resnet20 --threads 1 [--json FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from edgefault.data import Dataset, load_dataset
from edgefault.export import ExportSettings, build_onnx, export_model
from edgefault.models import create_model
from edgefault.runtime import Evaluator, SessionSettings, TimingSettings, measure_timing, optimized_kernel_counts

BATCH = 256


@dataclasses.dataclass(frozen=True)
class Row:
    name: str
    accuracy: float
    integer_kernels: int
    float_kernels: int
    batch1_ms: float
    batch256_ms: float


class _Images(CalibrationDataReader):
    def __init__(self, images: np.ndarray, batch: int = 64):
        self._batches = iter([{"input": images[i:i + batch]} for i in range(0, len(images), batch)])

    def get_next(self):
        return next(self._batches, None)


def calibrated_model(name: str, data: Dataset, seed: int) -> torch.nn.Module:
    """A fresh model whose activation steps and BatchNorm statistics come from one training batch."""
    torch.manual_seed(seed)
    model = create_model(name, in_channels=data.input_shape[0], input_size=data.input_shape[1],
                         num_classes=data.num_classes)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for norm in norms:
        norm.momentum = 1.0  # the running statistics become this batch's statistics
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(data.normalized(data.train_images[:256])))
    return model.eval()


def with_threshold(model: torch.nn.Module, threshold: float) -> torch.nn.Module:
    """The same weights and activation steps with a FATReLU threshold on every post-ReLU quantizer."""
    spec = dict(model.spec, fat_threshold=threshold)
    copy = create_model(spec.pop("name"), **spec)
    copy.load_state_dict(model.state_dict())
    return copy.eval()


def build_models(model: torch.nn.Module, data: Dataset, folder: Path, threshold: float) -> dict[str, Path]:
    fp32, pre, ortq = (folder / f"{n}.onnx" for n in ("fp32", "fp32_pre", "ort_qdq"))
    paths = {"edgefault int8": folder / "int8.onnx"}
    variants = {"edgefault int8": model}
    if threshold > 0 and model.spec.get("fat_threshold", 0) == 0:
        paths[f"edgefault int8, FATReLU T={threshold:g}"] = folder / "int8_fat.onnx"
        variants[f"edgefault int8, FATReLU T={threshold:g}"] = with_threshold(model, threshold)
    for name, variant in variants.items():
        # A calibrated (untrained) net has near-tied logits, so parity is reported, not enforced, here.
        report = export_model(variant, paths[name], data, settings=ExportSettings(keep_on_parity_failure=True,
                                                                                 limit=500))
        print(f"{name}: top-1 agreement with PyTorch {report.agreement:.2%} on {report.images} images, "
              f"max logit gap {report.max_logit_gap_steps} steps", file=sys.stderr)
    onnx.save(build_onnx(model, float_reference=True), fp32)
    quant_pre_process(str(fp32), str(pre))
    calibration = data.normalized(data.train_images[:256])
    quantize_static(str(pre), str(ortq), _Images(calibration), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return {**paths, "fp32": fp32, "ORT quantize_static (QDQ)": ortq}


def measure(paths: dict[str, Path], data: Dataset, threads: int, rounds: int, seconds: float) -> list[Row]:
    settings = SessionSettings(intra_op_threads=threads)
    evaluators = {name: Evaluator(path, settings) for name, path in paths.items()}
    images = data.normalized(data.test_images)
    timing = TimingSettings(min_seconds=seconds, throughput_batch=BATCH)
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in paths}
    for _ in range(rounds):
        for name, evaluator in evaluators.items():
            result = measure_timing(evaluator, images, timing)
            samples[name].append((result.latency_p50_ms, BATCH / result.throughput_images_per_s * 1e3))
    rows = []
    for name, evaluator in evaluators.items():
        kernels = optimized_kernel_counts(paths[name].read_bytes(), settings)
        accuracy = float(np.mean(evaluator.predict(images) == data.test_labels))
        rows.append(Row(name, accuracy, kernels.integer_kernels, kernels.float_kernels,
                        statistics.median(s[0] for s in samples[name]),
                        statistics.median(s[1] for s in samples[name])))
    return rows


def tables(rows: list[Row]) -> list[dict]:
    """The comparison table and the goals table, as bench/report.py reads them (``columns``, ``rows``)."""
    by_name = {row.name: row for row in rows}
    int8, fp32, ortq = by_name["edgefault int8"], by_name["fp32"], by_name["ORT quantize_static (QDQ)"]
    models = [[row.name, round(row.accuracy, 3), f"{row.integer_kernels} / {row.float_kernels}",
               round(row.batch1_ms, 3), round(row.batch256_ms, 1),
               f"{row.batch1_ms / fp32.batch1_ms:.2f}x / {row.batch256_ms / fp32.batch256_ms:.2f}x",
               f"{row.batch1_ms / ortq.batch1_ms:.2f}x / {row.batch256_ms / ortq.batch256_ms:.2f}x"] for row in rows]
    goals = []
    for label, b1, b256, limit in [
            ("int8 <= 0.55x fp32", int8.batch1_ms / fp32.batch1_ms, int8.batch256_ms / fp32.batch256_ms, 0.55),
            ("int8 <= 1.0x ORT quantize_static", int8.batch1_ms / ortq.batch1_ms,
             int8.batch256_ms / ortq.batch256_ms, 1.0)]:
        goals.append([label, f"{b1:.3f}x", f"{b256:.3f}x", "met" if max(b1, b256) <= limit else "not met"])
    return [{"columns": ["model", "top-1", "int/float kernels", "batch 1 p50 (ms)", f"batch {BATCH} (ms)",
                         f"vs fp32 (b1 / b{BATCH})", f"vs ORT quant (b1 / b{BATCH})"], "rows": models},
            {"columns": ["goal", "batch 1", f"batch {BATCH}", "verdict"], "rows": goals}]


def markdown(table: dict) -> str:
    """One table as the Markdown this script prints."""
    lines = ["| " + " | ".join(table["columns"]) + " |", "|" + "|".join("---" for _ in table["columns"]) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in table["rows"]])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnet20", help="architecture for a calibrated model (default resnet20)")
    parser.add_argument("--run", default=None, help="a train run directory to benchmark instead")
    parser.add_argument("--data", default=None, help="dataset SPEC (default: the run's, else mnist5k)")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0 = its default)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (median reported)")
    parser.add_argument("--seconds", type=float, default=1.0, help="least seconds per measurement")
    parser.add_argument("--fat-threshold", type=float, default=0.3,
                        help="also time the int8 model with this FATReLU threshold (0: skip)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here (for bench/report.py)")
    args = parser.parse_args(argv)
    if args.run:
        from edgefault.train import load_run

        run = load_run(args.run)
        model, data = run.model, load_dataset(args.data or run.config.data)
        label = f"run {args.run} ({run.config.model})"
    else:
        data = load_dataset(args.data or "mnist5k")
        model, label = calibrated_model(args.model, data, args.seed), f"{args.model} (calibrated, untrained)"
    with tempfile.TemporaryDirectory(prefix="edgefault-bench-") as folder:
        paths = build_models(model, data, Path(folder), args.fat_threshold)
        rows = measure(paths, data, args.threads, args.rounds, args.seconds)
    setup = f"{label} on {data.spec}, {data.input_shape}, ONNX Runtime threads {args.threads or 'default'}"
    print(setup + "\n")
    results = tables(rows)
    print("\n\n".join(markdown(table) for table in results))
    if args.json:
        numbers = {"command": " ".join(["python bench/runtime.py", *(sys.argv[1:] if argv is None else argv)]),
                   "setup": f"{setup}; medians of {args.rounds} interleaved rounds of at least {args.seconds:g} s",
                   "tables": results}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(numbers, indent=2) + "\n")


if __name__ == "__main__":
    main()
