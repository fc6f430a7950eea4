"""Benchmark of a campaign cell against a PyTorch fake-quant simulation and a clean int8 evaluation.

Trains an edgefault model briefly (or takes a run directory), exports it, and measures in the
same run, on the same model, test images and chips:

* edgefault's cell: sample the chip, patch the int8 bytes in memory, open an ONNX Runtime
  session from them, score the test split (:class:`~edgefault.campaign.CellRunner`);
* the method of PyTorch-level injectors: apply the same chip's faults to the int8 weights,
  dequantize them (code x per-channel scale), load them into the PyTorch model the ONNX file
  came from (ONNX initializer ``<layer>.weight`` is module ``<layer>``) and evaluate it with
  its fake-quantized activations;
* a clean ONNX Runtime int8 evaluation: scoring with a session already open, and opening a
  session plus scoring (what a cell does, without the faults);
* whole campaigns of the same cells on 1 worker (all cores as threads) and 2 workers;
* scoring batch sizes 16..256 (a fresh session each, as in a cell), predictions compared;
* every per-layer cell run from its cached cut and on the whole model, interleaved;
* a ``--per-layer`` campaign on 1 worker (per-layer cell seconds / grid cell seconds in one
  run, and the same campaign without the cache for identical predictions);
* a ``--target-ci`` campaign against the fixed chip count whose widest interval is as narrow.

The per-cell methods run interleaved, chip by chip, so background load hits them alike; each
reports the median. Goals: cell <= 1/5 of PyTorch, cell <= 1.05x clean int8 scoring, 2 workers
>= 1.7x one, per-layer cell <= 0.5x whole-model cell.

Run: ``.venv/bin/python bench/campaign.py [--model lenet5|resnet20] [--epochs N] [--run DIR] [--chips K]
[--data SPEC] [--parts pytorch,workers,batch,layers,campaign,target]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from edgefault.campaign import (CampaignConfig, CellRunner, ExecutionSettings, LocalEngine, ResultsLog,
                                available_cores, estimate, plan_cells, prepare_campaign, run_campaign)
from edgefault.export import ExportSettings, export_run
from edgefault.faults import Injector, apply_faults, sample_faults
from edgefault.runtime import Evaluator, SessionSettings
from edgefault.campaign.suffix import DEFAULT_CACHE_MB
from edgefault.campaign.worker import CAMPAIGN_BATCH
from edgefault.train import TrainConfig, load_run, train


def torch_simulation(model: torch.nn.Module, injector: Injector, images: torch.Tensor, labels: np.ndarray):
    """A function chip -> (accuracy, predictions) that simulates the chip in PyTorch.

    The layers re-quantize their float weights on every forward, so the faulty weights go in as
    the difference to the clean quantized weights, added after the quantizer
    (``weight_perturbation``): the layer then computes exactly with ``faulty_code * scale``.
    """
    clean = injector.arrays()
    layers = {name: model.get_submodule(name.removesuffix(".weight")) for name in clean}
    scales = {}
    for name, layer in layers.items():
        codes, scale = layer.integer_weight()
        if not np.array_equal(codes.numpy(), clean[name]):
            raise SystemExit(f"{name}: the PyTorch layer's int8 codes differ from the ONNX initializer")
        scales[name] = scale.view((-1,) + (1,) * (codes.dim() - 1))

    def simulate(chip):
        faulty = apply_faults(clean, sample_faults(injector.memory(), chip))
        for name, layer in layers.items():
            if faulty[name] is not clean[name]:  # untouched tensors come back as the same object
                delta = torch.from_numpy(faulty[name].astype(np.float32) - clean[name].astype(np.float32))
                layer.weight_perturbation = delta * scales[name]
        try:
            with torch.inference_mode():
                logits = torch.cat([model(images[i:i + 256]) for i in range(0, len(images), 256)])
        finally:
            for layer in layers.values():
                layer.weight_perturbation = None
        predictions = logits.argmax(1).numpy()
        return float(np.mean(predictions == labels)), predictions

    return simulate


def campaign_speed(prepared, cells, workers: int, threads: int) -> dict:
    """Run ``cells`` on ``workers`` local processes with ``threads`` ORT threads each; time start-up and cells."""
    engine = LocalEngine(workers, threads)
    start = time.perf_counter()
    engine.open(prepared.payload(engine.threads), len(cells))
    for worker in range(workers):  # one warm-up cell per worker: its answer means that worker is up
        engine.submit(-1 - worker, cells[worker], 1)
    warmed = 0
    while warmed < workers:
        warmed += len(engine.collect())
    ready = time.perf_counter()
    pending, in_flight, done = list(enumerate(cells)), 0, 0
    while done < len(cells):
        while pending and in_flight < engine.capacity:
            task, cell = pending.pop(0)
            engine.submit(task, cell, 1)
            in_flight += 1
        finished = engine.collect()
        in_flight -= len(finished)
        done += len(finished)
    end = time.perf_counter()
    engine.close()
    return {"workers": workers, "threads": engine.threads, "startup_s": ready - start, "cells_s": end - ready,
            "cells_per_s": len(cells) / (end - ready)}


PARTS = ("pytorch", "workers", "batch", "layers", "campaign", "target")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lenet5", help="edgefault model to train (lenet5, resnet20)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--run", type=Path, default=None, help="use this trained run directory instead")
    parser.add_argument("--data", default="mnist5k")
    parser.add_argument("--chips", type=int, default=20)
    parser.add_argument("--kind", default="flip")
    parser.add_argument("--rate", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1, help="threads for the per-cell comparison")
    parser.add_argument("--campaign-cells", type=int, default=60, help="cells per 1-vs-2-worker campaign")
    parser.add_argument("--rounds", type=int, default=3, help="1-vs-2-worker rounds (best one counts)")
    parser.add_argument("--layer-chips", type=int, default=2, help="chips per target in the per-layer parts")
    parser.add_argument("--target-ci", type=float, default=0.01)
    parser.add_argument("--target-chips", type=int, default=20, help="the maximum chips of the --target-ci comparison")
    parser.add_argument("--target-rates", default="1e-4,1e-3,5e-3", help="rates of the --target-ci comparison")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"which parts to run, of {','.join(PARTS)}")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-campaign-") as work:
        measure(args, Path(work))


def measure(args: argparse.Namespace, work: Path) -> None:
    """Train (unless given a run), export, then time the chosen parts; prints Markdown tables."""
    run_dir = args.run
    if run_dir is None:
        run_dir = work / "run"
        train(TrainConfig(model=args.model, data=args.data, epochs=args.epochs, seed=0), run_dir, progress=False)
    onnx_path = work / "model.onnx"
    export_run(run_dir, onnx_path, ExportSettings(keep_on_parity_failure=True))
    config = CampaignConfig.create([onnx_path], data=args.data, kinds=(args.kind,), rates=(args.rate,), chips=args.chips)
    prepared = prepare_campaign(config)
    inputs = next(iter(prepared.inputs.values()))
    parts = set(args.parts.split(","))
    print(f"\nmodel {args.model} ({onnx_path.stat().st_size / 1024:.0f} KiB ONNX, {len(prepared.tensors[0])} weight "
          f"tensors), {len(inputs)} test images, {args.kind} at rate {args.rate:g}, {args.threads} thread(s) per "
          f"cell, {available_cores()} cores, load average {os.getloadavg()[0]:.1f}")
    numbers = {}
    if "pytorch" in parts:
        numbers["per_cell"] = pytorch_part(args, prepared, load_run(run_dir).model.eval())
    if "workers" in parts:
        numbers["workers"] = workers_part(args, prepared, onnx_path)
    if "batch" in parts:
        numbers["batch"] = batch_part(prepared.models[0].data, inputs, args.threads)
    if "layers" in parts:
        numbers["layers"] = layers_part(args, prepared, onnx_path)
    if "campaign" in parts:
        numbers["campaign"] = campaign_part(args, onnx_path, work)
    if "target" in parts:
        numbers["target"] = target_part(args, onnx_path, work)
    print(f"\n(load average at the end {os.getloadavg()[0]:.1f})")
    if args.json:
        args.json.write_text(json.dumps(numbers, indent=2))


def pytorch_part(args, prepared, model) -> dict:
    """edgefault's grid cell against the PyTorch simulation and clean int8 evaluations, chip by chip."""
    config = CampaignConfig.create([prepared.info["models"][0]["path"]], data=args.data, kinds=(args.kind,),
                                   rates=(args.rate,), chips=args.chips)
    cells = [c for c in plan_cells(config, prepared.tensors) if c.mode == "grid"]
    inputs = next(iter(prepared.inputs.values()))
    model_bytes = prepared.models[0].data
    settings = SessionSettings(intra_op_threads=args.threads)
    torch.set_num_threads(args.threads)
    runner = CellRunner(prepared.payload(args.threads))
    simulate = torch_simulation(model, Injector(model_bytes), torch.from_numpy(np.array(inputs.images)), inputs.labels)
    open_session = Evaluator(model_bytes, settings)
    times = {"edgefault cell": [], "PyTorch fake-quant simulation": [], "clean int8: session + score": [],
             "clean int8: score only (eval's batch)": []}
    agreement, gaps = [], []
    runner.run(cells[0]), simulate(cells[0].to_chip()), open_session.score(inputs)  # warm-up
    for cell in cells:
        t0 = time.perf_counter()
        record = runner.run(cell)
        t1 = time.perf_counter()
        accuracy, _ = simulate(cell.to_chip())
        t2 = time.perf_counter()
        Evaluator(model_bytes, settings).score(inputs)
        t3 = time.perf_counter()
        open_session.score(inputs)
        t4 = time.perf_counter()
        for name, seconds in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            times[name].append(seconds)
        gaps.append(abs(record["accuracy"] - accuracy))
        agreement.append(record["correct"] == int(round(accuracy * len(inputs))))
    median = {name: statistics.median(values) for name, values in times.items()}
    cell = median["edgefault cell"]
    print(f"\n| method ({args.chips} chips) | median ms per cell | edgefault cell / method |\n|---|---|---|")
    for name, value in median.items():
        print(f"| {name} | {value * 1000:.1f} | {cell / value:.2f}x |")
    clean = median["clean int8: score only (eval's batch)"]
    print(f"\nPyTorch vs ONNX Runtime accuracy per chip: mean |difference| {statistics.mean(gaps):.4f}, "
          f"same correct count on {sum(agreement)}/{len(agreement)} chips")
    print(f"goals: cell <= 1/5 PyTorch: {cell / median['PyTorch fake-quant simulation']:.3f}; "
          f"whole-model cell / clean evaluation (goal <= 1.05): {cell / clean:.3f} "
          f"({'met' if cell <= 1.05 * clean else 'missed'})")
    return {"median_s": median, "accuracy_gap": statistics.mean(gaps)}


def workers_part(args, prepared, onnx_path) -> dict:
    """Whole campaigns of the same cells on 1 worker (all cores), 1 worker (1 thread) and 2 workers."""
    campaign_cells = [c for c in plan_cells(
        CampaignConfig.create([onnx_path], data=args.data, kinds=(args.kind,), rates=(args.rate, 10 * args.rate),
                              chips=max(1, args.campaign_cells // 2)), prepared.tensors) if c.mode == "grid"]
    # Configurations take turns and each keeps its best round: other processes on the machine
    # slow some rounds down, and the best round is the one they disturbed least.
    cores = available_cores()
    setups = [(1, cores), (1, 1), (2, max(1, cores // 2))]
    rounds = [[campaign_speed(prepared, campaign_cells, w, t) for w, t in setups] for _ in range(args.rounds)]
    speeds = [max((r[i] for r in rounds), key=lambda s: s["cells_per_s"]) for i in range(len(setups))]
    print(f"\n| campaign of {len(campaign_cells)} cells (best of {args.rounds}) | threads each | start-up s | cells s | "
          "cells/s |\n|---|---|---|---|---|")
    for s in speeds:
        print(f"| {s['workers']} worker(s) | {s['threads']} | {s['startup_s']:.2f} | {s['cells_s']:.2f} | "
              f"{s['cells_per_s']:.1f} |")
    speedup = speeds[2]["cells_per_s"] / speeds[0]["cells_per_s"]
    per_process = speeds[2]["cells_per_s"] / speeds[1]["cells_per_s"]
    print(f"\n2 workers / 1 worker ({cores} threads): {speedup:.2f}x; 2 workers / 1 worker (1 thread): "
          f"{per_process:.2f}x (goal >= 1.7)")
    return {"speeds": speeds, "speedup": speedup, "speedup_vs_one_thread": per_process}


def batch_part(model_bytes: bytes, inputs, threads: int, rounds: int = 5) -> dict:
    """Scoring with a fresh session at batch sizes 16..256, interleaved; predictions must not change."""
    settings = SessionSettings(intra_op_threads=threads)
    sizes = (16, 32, 64, 128, 256)
    times, predictions = {b: [] for b in sizes}, {}
    for _ in range(rounds):
        for size in sizes:
            start = time.perf_counter()
            score = Evaluator(model_bytes, settings).score(inputs, size)
            times[size].append(time.perf_counter() - start)
            predictions.setdefault(size, score.predictions)
    median = {size: statistics.median(values) for size, values in times.items()}
    same = all(np.array_equal(predictions[size], predictions[256]) for size in sizes)
    print(f"\n| batch (session + score, median of {rounds}) | ms | vs 256 |\n|---|---|---|")
    for size in sizes:
        print(f"| {size}{' (campaign)' if size == CAMPAIGN_BATCH else ''} | {median[size] * 1000:.1f} | "
              f"{median[size] / median[256]:.2f}x |")
    print(f"\npredictions identical at every batch size: {same}")
    return {"median_s": median, "identical": same}


def layers_part(args, prepared, onnx_path) -> dict:
    """Every per-layer cell from its cached cut and on the whole model, interleaved chip by chip."""
    config = CampaignConfig.create([onnx_path], data=args.data, kinds=(args.kind,), rates=(args.rate,),
                                   chips=args.layer_chips, per_layer=True)
    cells = [c for c in plan_cells(config, prepared.tensors) if c.mode == "layer"]
    payload = prepared.payload(args.threads)
    fast, whole = CellRunner(payload), CellRunner(dataclasses.replace(payload, cache_bytes=0))
    start = time.perf_counter()
    fast.run(cells[-1])  # builds the cache (a pass of the clean model with every cut as an output)
    build = time.perf_counter() - start
    times: dict[str, list[list[float]]] = {}
    cuts, identical = {}, 0
    for cell in cells:
        t0 = time.perf_counter()
        a = fast.run(cell)
        t1 = time.perf_counter()
        b = whole.run(cell)
        t2 = time.perf_counter()
        times.setdefault(cell.target, []).append([t1 - t0, t2 - t1])
        cuts[cell.target] = a["cut"]
        identical += a["predictions"] == b["predictions"] and a["error"] is None
    print(f"\n| target ({args.layer_chips} chips each) | starts from | whole-model cell ms | per-layer cell ms | ratio |"
          "\n|---|---|---|---|---|")
    for target, pairs in times.items():
        f, w = (statistics.mean(p[i] for p in pairs) for i in (0, 1))
        print(f"| {target} | {cuts[target] or 'input'} | {w * 1000:.1f} | {f * 1000:.1f} | {f / w:.2f} |")
    suffix, full = (sum(p[i] for pairs in times.values() for p in pairs) for i in (0, 1))
    ratio = suffix / full
    print(f"\nper-layer cell / whole-model cell (goal <= 0.5): {ratio:.3f} ({'met' if ratio <= 0.5 else 'missed'}); "
          f"with the cache build ({build:.2f} s, first cell included) spread over these {len(cells)} cells: "
          f"{(suffix + build) / full:.3f}; predictions identical on {identical}/{len(cells)} cells")
    return {"ratio": ratio, "build_s": build, "identical": identical, "cells": len(cells)}


def campaign_part(args, onnx_path, work: Path, rounds: int = 2) -> dict:
    """A --per-layer campaign on 1 worker with and without the cache, alternating, ``rounds`` times each.

    Grid chips that miss the early layers run from a cut too (and may build the cache), so the
    whole-model baseline is the same campaign without the cache: its grid and per-layer cells.
    """
    config = CampaignConfig.create([onnx_path], data=args.data, kinds=(args.kind,), rates=(args.rate,),
                                   chips=args.layer_chips, per_layer=True)
    seconds = {(c, m): [] for c in (DEFAULT_CACHE_MB, 0) for m in ("grid", "layer")}
    wall, digests = {DEFAULT_CACHE_MB: [], 0: []}, {}
    for number in range(rounds):
        for cache_mb in (0, DEFAULT_CACHE_MB):
            result = run_campaign(config, work / f"layers-{cache_mb}-{number}",
                                  ExecutionSettings(workers=1, cache_mb=cache_mb))
            for r in ResultsLog(result.folder / "results.jsonl").read():
                if r["mode"] != "clean":
                    seconds[cache_mb, r["mode"]].append(r["seconds"])
                digests.setdefault(r["key"], set()).add(r["predictions"])
            wall[cache_mb].append(result.seconds)
    mean = {key: statistics.mean(values) for key, values in seconds.items()}
    layer, whole_layer, whole_grid = mean[DEFAULT_CACHE_MB, "layer"], mean[0, "layer"], mean[0, "grid"]
    same = all(len(d) == 1 for d in digests.values())
    print(f"\n--per-layer campaign, 1 worker, {len(digests)} cells, {rounds} rounds each way: per-layer cell from its "
          f"cut {layer * 1000:.1f} ms (cache build included), the same cells on the whole model "
          f"{whole_layer * 1000:.1f} ms, whole-model grid cell {whole_grid * 1000:.1f} ms; per-layer / whole-model "
          f"cell {layer / whole_layer:.3f} (goal <= 0.6: {'met' if layer <= 0.6 * whole_layer else 'missed'}), "
          f"per-layer / grid cell {layer / whole_grid:.3f}; campaign wall {statistics.mean(wall[DEFAULT_CACHE_MB]):.1f} s "
          f"vs {statistics.mean(wall[0]):.1f} s without the cache; predictions identical on every cell: {same}")
    return {"layer_s": layer, "layer_without_cache_s": whole_layer, "grid_without_cache_s": whole_grid,
            "wall_s": wall, "identical": same}


def widest(records, rates, chips: int) -> float:
    """The widest 95% half-width over the rates, using chips 0..chips-1 (the summary's own intervals)."""
    halves = []
    for rate in rates:
        e = estimate(r["accuracy"] for r in records.values() if r["rate"] == rate and r["chip"] < chips)
        halves.append(max(e.high - e.mean, e.mean - e.low))
    return max(halves)


def target_part(args, onnx_path, work: Path) -> dict:
    """--target-ci W against the fixed chip count whose widest interval is no wider, on the same chips."""
    rates = tuple(float(r) for r in args.target_rates.split(","))
    common = dict(data=args.data, kinds=(args.kind,), rates=rates, chips=args.target_chips)
    runs = {}
    for name, extra in (("target", {"target_ci": args.target_ci}), ("full", {})):
        result = run_campaign(CampaignConfig.create([onnx_path], **common, **extra), work / name,
                              ExecutionSettings(workers=1))
        runs[name] = (result, {r["key"]: r for r in ResultsLog(result.folder / "results.jsonl").read()
                               if r["mode"] == "grid" and r["error"] is None})
    target, target_records = runs["target"]
    full_records = runs["full"][1]
    same = all(full_records[k]["accuracy"] == r["accuracy"] for k, r in target_records.items())
    rows = target.summary["groups"]
    goal = max(max(g["ci_high"] - g["mean"], g["mean"] - g["ci_low"]) for g in rows)
    most = args.target_chips
    chips = next((n for n in range(2, most + 1) if widest(full_records, rates, n) <= goal), most)
    fixed = run_campaign(CampaignConfig.create([onnx_path], **{**common, "chips": chips}), work / "fixed",
                         ExecutionSettings(workers=1))
    print(f"\n| --target-ci {args.target_ci:g} (max {args.target_chips} chips), rate | chips needed | mean | 95% CI |"
          "\n|---|---|---|---|")
    for g in rows:
        print(f"| {g['rate']:g} | {g['chips']}{'' if g['target_met'] else '*'} | {g['mean']:.4f} | "
              f"[{g['ci_low']:.4f}, {g['ci_high']:.4f}] |")
    print(f"\n--target-ci {args.target_ci:g}: {target.ran} cells, {target.seconds:.1f} s, widest half-width "
          f"{goal:.4f}; fixed --chips {chips} (the fewest chips as narrow): {fixed.ran} cells, {fixed.seconds:.1f} s, "
          f"widest {widest(full_records, rates, chips):.4f}; time ratio {target.seconds / fixed.seconds:.3f}; "
          f"accuracies equal to a fixed {args.target_chips}-chip run on the {len(target_records)} shared cells: {same}")
    return {"target_s": target.seconds, "fixed_s": fixed.seconds, "fixed_chips": chips, "widest": goal,
            "ratio": target.seconds / fixed.seconds, "same": same}


if __name__ == "__main__":
    main()
