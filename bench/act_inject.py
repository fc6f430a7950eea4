"""Check and time ``inject --site activations`` on a real model; print the numbers docs/activation-memory.md quotes.

    python bench/act_inject.py MODEL.onnx [--data mnist5k] [--limit 1000] [--rate 0.01] [--seed 1]

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
import tempfile
import time
from pathlib import Path

import numpy as np

from edgefault.data import load_samples
from edgefault.faults import ACT_FORMATS, Chip, records_from_entries, sample_faults
from edgefault.faults.actinject import activation_masks, inject_sites_file
from edgefault.faults.activations import format_sizes
from edgefault.runtime.actprobe import activation_memory, read_activations
from edgefault.runtime.cuts import find_cuts, suffix_model
from edgefault.runtime.feed import prepare_inputs
from edgefault.runtime.graph import optimized_kernel_counts
from edgefault.runtime.inputs import resolve_model_input
from edgefault.onnxio import load_model
from edgefault.runtime.sparsity import probe_model


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--data", default="mnist5k")
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    model = load_model(args.model)
    memory = activation_memory(model)
    print(memory.coverage_line())
    chip = Chip("flip", rate=args.rate, seed=args.seed)
    with tempfile.TemporaryDirectory() as folder:
        out, again, map_path = Path(folder) / "f.onnx", Path(folder) / "g.onnx", Path(folder) / "f.json"
        start = time.perf_counter()
        done = inject_sites_file(args.model, out, "activations", chip, map_out=map_path, memory_of=activation_memory)
        act_seconds = time.perf_counter() - start
        start = time.perf_counter()
        inject_sites_file(args.model, again, "weights", chip)
        weight_seconds = time.perf_counter() - start
        inject_sites_file(args.model, again, "activations", chip, memory_of=activation_memory)
        same = again.read_bytes() == out.read_bytes()
        faulty_model = load_model(out)
        records = records_from_entries(json.loads(map_path.read_text())["faults"], memory)
        kernels = [optimized_kernel_counts(p.read_bytes()) for p in (args.model, out)]
    mean = args.rate * memory.nbits
    sigma = np.sqrt(mean * (1 - args.rate))
    print(f"faults: {len(records)} (expected {mean:.1f} +- {sigma:.1f}: {(len(records) - mean) / sigma:+.2f} sigma); "
          f"same seed, same file: {same}")
    higher = sample_faults(memory, Chip("flip", rate=1.1 * args.rate, seed=args.seed))
    nested = np.isin(records.address, higher.address).all()
    print(f"faults at {args.rate} within those at {1.1 * args.rate:g}: {nested} ({len(records)} of {len(higher)})")
    for label, count in zip(("clean", "faulty"), kernels):
        print(f"{label} model after ONNX Runtime's optimization: {count.integer_kernels} integer, "
              f"{count.float_kernels} float conv/linear kernels; Bitwise ops: "
              f"{sum(v for k, v in count.ops.items() if k.startswith('Bitwise'))}")
    metadata, io, spec = resolve_model_input(model)
    prepared = prepare_inputs(load_samples(args.data), spec, args.limit)
    output = model.graph.output[0].name
    feed = {io.input_name: prepared.images}
    faulty_logits = read_activations(faulty_model, [output], feed)[output]
    clean_logits = read_activations(model, [output], feed)[output]
    recomputed = _recompute(model, memory, activation_masks(memory, records), prepared.images, io.input_name, output)
    print(f"layer-by-layer recomputation equals the faulty file's logits: {np.array_equal(recomputed, faulty_logits)}")
    for label, logits in (("clean", clean_logits), ("faulty", faulty_logits)):
        print(f"{label} accuracy on {len(prepared)} images: {np.mean(logits.argmax(1) == prepared.labels):.4f}")
    codes = read_activations(model, list(memory.names), feed)
    print("mean encoded bits per image (" + ", ".join(ACT_FORMATS) + ") and zero share per tensor:")
    totals = np.zeros(len(ACT_FORMATS))
    per_tensor = format_sizes(memory, codes)
    for tensor in memory.tensors:
        sizes = [per_tensor[tensor.name][f] for f in ACT_FORMATS]
        totals += sizes
        zeros = np.mean(codes[tensor.name] == tensor.zero_point)
        print(f"  {tensor.name}: " + ", ".join(f"{s:,.0f}" for s in sizes) + f"; zeros {zeros:.1%}")
    print("  all: " + ", ".join(f"{s:,.0f}" for s in totals) + " (" +
          ", ".join(f"{s / totals[0]:.2f}x" for s in totals) + " of dense)")
    print(f"inject time: activations {act_seconds:.2f} s, weights {weight_seconds:.2f} s "
          f"(ratio {act_seconds / weight_seconds:.2f}; includes the probe and the map)")


if __name__ == "__main__":
    main()
