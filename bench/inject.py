"""Benchmark of fault injection on a ResNet-18-size QDQ model.

Builds a CIFAR-style ResNet-18 (11.2M int8 weights) in the QDQ layout edgefault's exporter
writes (per-channel int8 weights and int32 biases feeding DequantizeLinear, uint8 activations
as Q/DQ pairs), then measures, in the same run:

* a plain ``onnx.load`` + ``onnx.save`` of the file (the reference);
* ``inject_file`` at rate 1e-3 (read, inject, write), the ratio to the reference (goal <= 1.5);
* the in-memory :class:`Injector` per chip once built (what a campaign pays per chip);
* writing the fault map JSON, which ``--map`` adds;
* sampling alone at rates 1e-6 .. 1e-1, to show the cost follows the fault count, and the nested
  draw (one threshold per cell, rate bands; chips nested across rates) against the unnested one
  it replaced (one geometric-gap stream per rate), as a ratio.

* peak resident memory per million faults (flip at rate 0.1, with and without a map), each in a
  fresh process: ``inject_file`` (drawn, patched and written in pieces of whole words) against the
  whole-chip path it replaced for files (``Injector.inject`` + ``FaultMap.encode``: every record,
  value and JSON line of the chip at once), above a process that only parsed the model.

Run: ``.venv/bin/python bench/inject.py [--repeats N] [--memory-only]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
from onnx import TensorProto, helper, numpy_helper

from edgefault.faults import Chip, Injector, inject_file, sample_faults
from edgefault.faults.sampling import _draw_cells

ACTIVATION_SCALE = 0.05


class _Builder:
    """Accumulates the nodes and initializers of a QDQ graph."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.inits.append(numpy_helper.from_array(np.array(ACTIVATION_SCALE, np.float32), "act.scale"))
        self.inits.append(numpy_helper.from_array(np.array(0, np.uint8), "act.zero_point"))

    def node(self, op: str, inputs: list[str], output: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def requant(self, x: str) -> str:
        """Q to uint8 then DQ, as between two layers of an exported model."""
        q = self.node("QuantizeLinear", [x, "act.scale", "act.zero_point"], f"{x}.q")
        return self.node("DequantizeLinear", [q, "act.scale", "act.zero_point"], f"{x}.dq")

    def dq_param(self, name: str, values: np.ndarray, scale: np.ndarray) -> str:
        zero = np.zeros(scale.shape, values.dtype)
        self.inits += [numpy_helper.from_array(values, name), numpy_helper.from_array(scale, f"{name}.scale"),
                       numpy_helper.from_array(zero, f"{name}.zero_point")]
        return self.node("DequantizeLinear", [name, f"{name}.scale", f"{name}.zero_point"], f"{name}.dq", axis=0)

    def conv(self, x: str, name: str, cin: int, cout: int, kernel: int, stride: int, relu: bool) -> str:
        weight = self.rng.integers(-127, 128, (cout, cin, kernel, kernel), dtype=np.int8)
        w_scale = np.full(cout, np.sqrt(2.0 / (cin * kernel * kernel)) / 64, np.float32)
        bias = self.rng.integers(-1000, 1000, cout, dtype=np.int32)
        w = self.dq_param(f"{name}.weight", weight, w_scale)
        b = self.dq_param(f"{name}.bias", bias, (w_scale * ACTIVATION_SCALE).astype(np.float32))
        pad = kernel // 2
        y = self.node("Conv", [x, w, b], f"{name}.conv", strides=[stride, stride], pads=[pad] * 4)
        return self.requant(self.node("Relu", [y], f"{name}.relu") if relu else y)


def resnet18_qdq(num_classes: int = 10, seed: int = 0) -> onnx.ModelProto:
    """A CIFAR-style ResNet-18 (3x32x32 input) in exporter-style QDQ with random int8 weights.

    Example:
        >>> sum(numpy_helper.to_array(t).size for t in resnet18_qdq().graph.initializer
        ...     if t.data_type == TensorProto.INT8) > 11_000_000
        True
    """
    g = _Builder(seed)
    x = g.requant("input")
    x = g.conv(x, "conv1", 3, 64, 3, 1, relu=True)
    cin = 64
    for stage, cout in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            stride = 2 if stage > 1 and block == 0 else 1
            name = f"layer{stage}.{block}"
            shortcut = x
            if stride != 1 or cin != cout:
                shortcut = g.conv(x, f"{name}.downsample", cin, cout, 1, stride, relu=False)
            y = g.conv(x, f"{name}.conv1", cin, cout, 3, stride, relu=True)
            y = g.conv(y, f"{name}.conv2", cout, cout, 3, 1, relu=False)
            x = g.requant(g.node("Relu", [g.node("Add", [y, shortcut], f"{name}.add")], f"{name}.out"))
            cin = cout
    pooled = g.requant(g.node("GlobalAveragePool", [x], "pool"))
    flat = g.node("Flatten", [pooled], "flatten", axis=1)
    weight = g.rng.integers(-127, 128, (num_classes, 512), dtype=np.int8)
    w = g.dq_param("fc.weight", weight, np.full(num_classes, 1e-3, np.float32))
    g.node("Gemm", [flat, w], "logits", transB=1)
    graph = helper.make_graph(
        g.nodes, "resnet18_qdq",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", num_classes])],
        g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    model.metadata_props.add(key="edgefault.note", value="bench model")
    onnx.checker.check_model(model)
    return model


def unnested_cells(seed: int, cells: int, rate: float) -> np.ndarray:
    """The baseline: the faulty cells of the sampler before nesting, one geometric-gap stream at the rate asked.

    Example:
        >>> unnested_cells(0, 1000, 1.0).size
        1000
    """
    rng = np.random.default_rng(seed)
    scale = 1.0 / np.log1p(-rate) if rate < 1.0 else 0.0
    found, last = [], -1
    while last < cells - 1:
        expected = rate * (cells - 1 - last)
        gaps = np.minimum(np.log1p(-rng.random(int(expected + 6.0 * np.sqrt(expected)) + 16)) * scale, cells)
        cell = np.cumsum(gaps.astype(np.int64) + 1) + last
        inside = int(np.searchsorted(cell, cells))
        found.append(cell[:inside])
        if inside < cell.size:
            break
        last = int(cell[-1])
    return np.concatenate(found)


def _timed(function) -> tuple[float, float]:
    """(wall, CPU) seconds of one call; CPU time is what other jobs on a shared machine inflate least."""
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - wall, time.process_time() - cpu


def _interleaved(functions: dict, repeats: int) -> dict[str, tuple[float, float]]:
    """Median (wall, CPU) seconds of each function. Within every repeat each function runs twice in
    turn and the second (warm) call is timed, so load and allocator state hit all of them alike."""
    samples = {name: [] for name in functions}
    for i in range(repeats):
        for name, function in functions.items():
            function(i)
            samples[name].append(_timed(lambda: function(i)))
    return {name: tuple(statistics.median(column) for column in zip(*runs)) for name, runs in samples.items()}


def _table(times: dict[str, tuple[float, float]], reference: str) -> None:
    ref_wall, ref_cpu = times[reference]
    print("| step | wall (ms) | CPU (ms) | wall ratio | CPU ratio |")
    print("|---|---:|---:|---:|---:|")
    for label, (wall, cpu) in times.items():
        print(f"| {label} | {wall * 1e3:.1f} | {cpu * 1e3:.1f} | {wall / ref_wall:.2f} | {cpu / ref_cpu:.2f} |")


_MEMORY_STEPS = {
    "parse only (baseline)": "Injector(model)",
    "whole chip, no map": "Injector(model).inject(chip)",
    "whole chip + map": "faulty, fault_map = Injector(model).inject(chip); fault_map.encode()",
    "inject_file, no map": "inject_file(model, out, chip)",
    "inject_file + map": "inject_file(model, out, chip, map_out=fault_map)",
}


def _peak_rss_mb(model: Path, folder: Path, step: str, rate: float) -> float:
    """Peak resident memory (MB) of a fresh interpreter that runs one step of :data:`_MEMORY_STEPS`."""
    # VmHWM, not ru_maxrss: the latter keeps the forking parent's peak across exec.
    code = ("from pathlib import Path; from edgefault.faults import Chip, Injector, inject_file\n"
            f"model, out, fault_map = Path({str(model)!r}), Path({str(folder / 'rss.onnx')!r}), "
            f"Path({str(folder / 'rss.json')!r})\nchip = Chip('flip', rate={rate!r}, seed=3)\n{step}\n"
            "print(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(result.stdout.split()[-1]) / 1024


def memory_table(model: Path, folder: Path, rate: float = 0.1) -> None:
    """Print peak RSS per million faults of each path, above the parse-only baseline (one fresh process each)."""
    peaks = {label: _peak_rss_mb(model, folder, step, rate) for label, step in _MEMORY_STEPS.items()}
    faults = len(Injector(model).inject(Chip("flip", rate=rate, seed=3))[1].records)
    base = peaks.pop("parse only (baseline)")
    print(f"\npeak RSS, flip at rate {rate:g} ({faults:,} faults); parse-only process {base:.0f} MB\n")
    print("| path | peak RSS (MB) | above parse-only (MB) | MB per million faults | bytes per fault |")
    print("|---|---:|---:|---:|---:|")
    for label, peak in peaks.items():
        extra = max(peak - base, 0.0)
        print(f"| {label} | {peak:.0f} | {extra:.0f} | {extra * 1e6 / faults:.1f} | {extra * 2**20 / faults:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed runs per measurement (median reported)")
    parser.add_argument("--memory-only", action="store_true", help="only the peak-RSS table")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here (for bench/report.py)")
    args = parser.parse_args()
    numbers: dict = {"command": f"python bench/inject.py --repeats {args.repeats}", "tables": []}
    with tempfile.TemporaryDirectory() as folder:
        model_path = Path(folder) / "resnet18_qdq.onnx"
        onnx.save(resnet18_qdq(), model_path)
        if args.memory_only:
            memory_table(model_path, Path(folder))
            return
        onnxruntime.InferenceSession(str(model_path))  # the bench model is a real, loadable model
        plain_out, faulty_out, map_out = (Path(folder) / name for name in ("plain.onnx", "faulty.onnx", "map.json"))
        injector = Injector(model_path)
        memory = injector.memory()

        def chip(i: int) -> Chip:
            return Chip("flip", rate=1e-3, seed=i)

        reference = "onnx.load + onnx.save (reference)"
        headline = _interleaved(
            {
                reference: lambda i: onnx.save(onnx.load(model_path), plain_out),
                "inject_file: read + inject + write": lambda i: inject_file(model_path, faulty_out, chip(i)),
            },
            args.repeats,
        )
        parts = _interleaved(
            {
                reference: lambda i: onnx.save(onnx.load(model_path), plain_out),
                "Injector(path): read and parse once": lambda i: Injector(model_path),
                "Injector.inject: one chip, in memory": lambda i: injector.inject(chip(i)),
                "sample_faults alone": lambda i: sample_faults(memory, chip(i)),
            },
            args.repeats,
        )
        _, fault_map = injector.inject(chip(0))
        map_times = _interleaved({"FaultMap.write (the --map JSON)": lambda i: fault_map.write(map_out)}, 3)

        size_mb = model_path.stat().st_size / 1e6
        print(f"model: CIFAR ResNet-18 QDQ, {len(memory.tensors)} int8 weight tensors, "
              f"{memory.nbytes:,} weight bytes ({memory.nbits:,} bits), file {size_mb:.1f} MB")
        print(f"flip at rate 1e-3 ({len(fault_map.records):,} faults); medians of {args.repeats} interleaved runs\n")
        _table(headline, reference)
        print()
        _table({**parts, **map_times}, reference)
        numbers["setup"] = (f"ResNet-18-size QDQ model ({memory.nbytes:,} int8 weights, {size_mb:.1f} MB), flip at 1e-3 "
                            f"({len(fault_map.records):,} faults), medians of {args.repeats} interleaved runs")
        for times in (headline, {**parts, **map_times}):
            ref_wall, ref_cpu = times[reference]
            numbers["tables"].append({
                "columns": ["step", "wall (ms)", "CPU (ms)", "wall ratio", "CPU ratio"],
                "rows": [[label, round(wall * 1e3, 1), round(cpu * 1e3, 1), round(wall / ref_wall, 2),
                          round(cpu / ref_cpu, 2)] for label, (wall, cpu) in times.items()],
            })
        sampling = {"columns": ["rate", "faults", "sample_faults CPU (ms)", "CPU us per fault",
                                "unnested draw CPU (ms)", "nested draw CPU (ms)", "nested / unnested"], "rows": []}
        numbers["tables"].append(sampling)

        memory_table(model_path, Path(folder))

        print("\n| rate | faults | sample_faults CPU (ms) | CPU us per fault | unnested draw CPU (ms) "
              "| nested draw CPU (ms) | nested / unnested |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
        cells = memory.nbits
        for exponent in range(-6, 0):
            rate = 10.0**exponent
            faults = len(sample_faults(memory, Chip("flip", rate=rate, seed=1)))
            times = _interleaved({
                "sample": lambda i: sample_faults(memory, Chip("flip", rate=rate, seed=i)),
                "unnested": lambda i: unnested_cells(i, cells, rate),
                "nested": lambda i: _draw_cells(i, cells, rate, None),
            }, max(args.repeats, 5))
            cpu = {name: value[1] for name, value in times.items()}
            per_fault = cpu["sample"] * 1e6 / max(faults, 1)
            print(f"| 1e{exponent} | {faults:,} | {cpu['sample'] * 1e3:.2f} | {per_fault:.3f} "
                  f"| {cpu['unnested'] * 1e3:.2f} | {cpu['nested'] * 1e3:.2f} "
                  f"| {cpu['nested'] / cpu['unnested']:.2f} |")
            sampling["rows"].append([f"1e{exponent}", faults, round(cpu["sample"] * 1e3, 2), round(per_fault, 3),
                                     round(cpu["unnested"] * 1e3, 2), round(cpu["nested"] * 1e3, 2),
                                     round(cpu["nested"] / cpu["unnested"], 2)])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(numbers, indent=2) + "\n")


if __name__ == "__main__":
    main()
