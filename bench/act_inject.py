"""Check and time ``inject --site activations`` on a real model; the numbers docs/activation-memory.md links to.

    python bench/act_inject.py MODEL.onnx [--data mnist5k] [--limit 1000] [--rate 0.01] [--seed 1] [--qoperator]
        [--json bench/results/act_inject.json]

``--qoperator`` measures the model's QOperator form too (ONNX Runtime's extended-level
optimized graph); ``--json`` writes the tables ``bench/report.py`` puts in docs/benchmarks.md.

For one chip (flip, --rate, --seed) on the model's activation memory it prints: the memory,
the fault count against 0.01 x bits (in sigmas of the binomial), whether the same seed gives
the same file and the faults at the rate are a subset of those at 1.1 x the rate, the integer
and float conv/linear kernels ONNX Runtime runs for the clean and the faulty model, whether
recomputing layer by layer from the clean graph (each suffix from one buffer to the next, the
map's faults applied to every buffer in numpy) gives the faulty file's logits exactly, clean
and faulty accuracy, each storage format's mean encoded bits per image, and the time to inject
activation faults against weight faults at the same rate (ratio in the same run).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgefault.data import load_samples
from edgefault.faults import ACT_FORMATS, Chip, records_from_entries, sample_faults
from edgefault.faults.actinject import activation_masks, inject_sites_file
from edgefault.faults.activations import format_sizes
from edgefault.faults.coverage import plural
from edgefault.runtime.actprobe import activation_memory, read_activations
from edgefault.runtime.cuts import find_cuts, suffix_model
from edgefault.runtime.feed import prepare_inputs
from edgefault.runtime.graph import optimized_kernel_counts
from edgefault.runtime.inputs import resolve_model_input
from edgefault.onnxio import load_model
from edgefault.runtime.session import SessionSettings, create_session
from edgefault.runtime.sparsity import probe_model

from common import exported_model


def _apply(masks: dict[str, np.ndarray], codes: np.ndarray) -> np.ndarray:
    out = codes.copy()
    if "and" in masks:
        out &= masks["and"]
    if "or" in masks:
        out |= masks["or"]
    if "xor" in masks:
        out ^= masks["xor"]
    return out


def _recompute(model, memory, masks, images, input_name, output_name) -> np.ndarray:
    """The faulty logits, layer by layer: each suffix from one buffer, fed the previous buffer with its faults."""
    clean = read_activations(model, [memory.names[0]], {input_name: images})[memory.names[0]]
    current = _apply(masks.get(memory.names[0], {}), clean)
    cuts = {cut.name: cut for cut in find_cuts(model, output_name)}
    for position, tensor in enumerate(memory.tensors):
        cut = cuts.get(tensor.name)
        if cut is None:
            raise SystemExit(f"{tensor.name} is not a cut of this model: the layer-by-layer check needs a chain")
        suffix = suffix_model(model, cut, output_name, current.dtype, ("batch", *tensor.shape))
        if position + 1 == len(memory.tensors):
            return read_activations(suffix, [output_name], {tensor.name: current})[output_name]
        following = memory.names[position + 1]
        value = read_activations(probe_model(suffix, []), [following], {tensor.name: current})[following]
        current = _apply(masks.get(following, {}), value)
    raise SystemExit("empty memory")


def measure(path: Path, args) -> dict:
    """Every number of one model: the checks of ``inject --site activations`` and each format's encoded sizes."""
    model = load_model(path)
    memory = activation_memory(model)
    print(f"{path}: {memory.coverage_line()}")
    chip = Chip("flip", rate=args.rate, seed=args.seed)
    with tempfile.TemporaryDirectory() as folder:
        out, again, map_path = Path(folder) / "f.onnx", Path(folder) / "g.onnx", Path(folder) / "f.json"
        start = time.perf_counter()
        inject_sites_file(path, out, "activations", chip, map_out=map_path, memory_of=activation_memory)
        act_seconds = time.perf_counter() - start
        start = time.perf_counter()
        inject_sites_file(path, again, "weights", chip)
        weight_seconds = time.perf_counter() - start
        inject_sites_file(path, again, "activations", chip, memory_of=activation_memory)
        same = again.read_bytes() == out.read_bytes()
        faulty_model = load_model(out)
        records = records_from_entries(json.loads(map_path.read_text())["faults"], memory)
        kernels = [optimized_kernel_counts(p.read_bytes()) for p in (path, out)]
    mean = args.rate * memory.nbits
    sigma = np.sqrt(mean * (1 - args.rate))
    higher = sample_faults(memory, Chip("flip", rate=1.1 * args.rate, seed=args.seed))
    metadata, io, spec = resolve_model_input(model)
    prepared = prepare_inputs(load_samples(args.data), spec, args.limit)
    output = model.graph.output[0].name
    feed = {io.input_name: prepared.images}
    faulty_logits = read_activations(faulty_model, [output], feed)[output]
    clean_logits = read_activations(model, [output], feed)[output]
    recomputed = _recompute(model, memory, activation_masks(memory, records), prepared.images, io.input_name, output)
    accuracy = [float(np.mean(logits.argmax(1) == prepared.labels)) for logits in (clean_logits, faulty_logits)]
    codes = read_activations(model, list(memory.names), feed)
    per_tensor = format_sizes(memory, codes)
    sizes = [[t.name, float(np.mean(codes[t.name] == t.zero_point)), *(per_tensor[t.name][f] for f in ACT_FORMATS)]
             for t in memory.tensors]
    kernel_text = [f"{c.integer_kernels} integer, {c.float_kernels} float" for c in kernels]
    bitwise = sum(v for k, v in kernels[1].ops.items() if k.startswith("Bitwise"))
    return {
        "images": len(prepared),
        "sizes": sizes,
        "checks": {
            "activation memory": f"{plural(len(memory.tensors), 'tensor')}, {sum(t.elements for t in memory.tensors):,} "
                                 f"values, {memory.nbits:,} bits/image",
            f"faults at {args.rate:g}": f"{len(records)} (expected {mean:.1f} ± {sigma:.1f}: "
                                        f"{(len(records) - mean) / sigma:+.2f} σ)",
            "fault addresses (first 5)": ", ".join(str(a) for a in records.address[:5].tolist()),
            "same seed, same file": "yes" if same else "NO",
            f"faults at {args.rate:g} ⊂ faults at {1.1 * args.rate:g}":
                f"{'yes' if np.isin(records.address, higher.address).all() else 'NO'} ({len(records)} of {len(higher)})",
            "conv/linear kernels after ORT optimization (clean → faulty)": f"{kernel_text[0]} → {kernel_text[1]} "
                                                                          f"(+{bitwise} Bitwise ops)",
            "layer-by-layer recomputation equals f.onnx's logits": "exactly" if np.array_equal(recomputed, faulty_logits)
                                                                  else "NO",
            "accuracy clean → faulty": f"{accuracy[0]:.1%} → {accuracy[1]:.1%}",
            "inject time, activations / weights": f"{act_seconds:.2f} s / {weight_seconds:.2f} s "
                                                  f"({act_seconds / weight_seconds:.2f}x; includes the probe and the map)",
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, nargs="?", default=None,
                        help="a quantized ONNX model (default: a LeNet-5 trained for 2 epochs here)")
    parser.add_argument("--data", default="mnist5k")
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--qoperator", action="store_true",
                        help="also the model's QOperator form (ONNX Runtime's extended-level optimized graph)")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here (for bench/report.py)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        if args.model is None:
            args.model = exported_model(Path(folder))
        report(args)


def report(args: argparse.Namespace) -> None:
    """Measure the model (and its QOperator form), print the checks and sizes, write the JSON."""
    results = {"QDQ (as given)": measure(args.model, args)}
    if args.qoperator:
        with tempfile.TemporaryDirectory() as folder:
            optimized = Path(folder) / "qoperator.onnx"
            create_session(args.model.read_bytes(), SessionSettings(optimization="extended").options(str(optimized)))
            results["QOperator (ORT-optimized)"] = measure(optimized, args)
    for label, result in results.items():
        print(f"\n{label}")
        for name, value in result["checks"].items():
            print(f"  {name}: {value}")
    first = next(iter(results.values()))
    columns = ["tensor", "zeros", *ACT_FORMATS]
    totals = np.sum([row[2:] for row in first["sizes"]], axis=0)
    size_rows = [[name, f"{zeros:.1%}", *(round(v) for v in sizes)] for name, zeros, *sizes in first["sizes"]]
    size_rows.append(["all", "", *(f"{round(v):,} ({v / totals[0]:.2f}x)" for v in totals)])
    print("\nmean encoded bits per image (first model):\n  " + " | ".join(columns))
    for row in size_rows:
        print("  " + " | ".join(str(v) for v in row))
    if args.json:
        shown = [a for i, a in enumerate(sys.argv[1:]) if a != "--json" and sys.argv[i:i + 1] != ["--json"]]
        check_names = list(first["checks"])
        numbers = {
            "command": " ".join(["python bench/act_inject.py", *shown]),
            "setup": f"flip at {args.rate:g}, seed {args.seed}, the first {first['images']:,} {args.data} test images; "
                     "sizes are mean bits per image over those images, exact from the real codes",
            "tables": [
                {"columns": ["check", *results], "rows": [[name, *(r["checks"][name] for r in results.values())]
                                                          for name in check_names]},
                {"columns": columns, "rows": size_rows},
            ],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(numbers, indent=2, ensure_ascii=False) + "\n")

if __name__ == "__main__":
    main()
