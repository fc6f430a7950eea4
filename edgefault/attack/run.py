"""``attack_run`` and ``flips_to_break``: the bit search on a run's deployed model, measured in ONNX Runtime.

The deployed model is the run's ONNX export: the file given, or one exported from the run
(with export's parity check) and written beside the results as ``clean.onnx``. Every committed
flip is patched into the ONNX bytes by the fault injector (the same addresses as
``inject``), and ONNX Runtime measures the test accuracy after it. The outputs are written
together at the end, all or none: ``flips.json`` (a fault map that ``inject --map-in``
replays on the clean model, faults in the order they were committed), ``attacked.onnx``,
``accuracy_vs_flips.png`` and ``attack.json`` (settings, seed, version, result).
"""

from __future__ import annotations

import dataclasses
import hashlib
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from edgefault import __version__
from edgefault.attack.config import AttackResult, AttackSettings, FlipsToBreak, RandomContrast
from edgefault.attack.plots import accuracy_plot
from edgefault.attack.search import progressive_bit_search
from edgefault.attack.twin import CodeTwin
from edgefault.data import Dataset, load_dataset
from edgefault.errors import EdgefaultError
from edgefault.export import ExportSettings, export_run
from edgefault.faults import Chip, Injector, records_from_entries, sample_faults
from edgefault.faults.faultmap import FORMAT as MAP_FORMAT, VERSION as MAP_VERSION
from edgefault.fileio import check_output_folder, json_bytes, output_folder, write_files_atomic
from edgefault.progress import Progress
from edgefault.runtime import Evaluator, PreparedInputs, SessionSettings, prepare_inputs
from edgefault.onnxio import parse_model
from edgefault.runtime import resolve_model_input
from edgefault.train import LoadedRun, load_run

FORMAT = "edgefault-attack"
CONTRAST_POINTS = 12  # flip counts at which random chips are measured
MAX_MODEL_BYTES = 2**31


@dataclasses.dataclass(frozen=True, eq=False)
class Deployed:
    """A run's deployed model ready to attack: its clean bytes, injector, test inputs and training data.
    """

    run: LoadedRun
    data: Dataset
    clean: bytes
    injector: Injector
    prepared: PreparedInputs
    source: str
    exported: bool


def deploy(run_dir: str | Path, data_spec: str | None = None, model_path: str | Path | None = None,
           settings: AttackSettings = AttackSettings(), progress: bool = False) -> Deployed:
    """Load a run and its deployed model (``model_path``, or a fresh export), and check that their codes agree.

    A foreign model (an ONNX file with no run) is refused: it has no PyTorch twin to take
    gradients from (docs/attack.md says why no converter gives one).
    """
    run_dir = Path(run_dir)
    if run_dir.is_file():
        raise EdgefaultError(
            f"{run_dir}: attack needs a run directory (edgefault train), not a model file: a foreign quantized "
            "model has no PyTorch twin whose codes are its codes, and no converter builds one from a QDQ graph; "
            "give the run it was exported from (and the model with `model`)")
    run = load_run(run_dir)
    data = load_dataset(data_spec or run.config.data)
    if data.input_shape != tuple(run.model.input_shape) or data.num_classes != run.model.num_classes:
        raise EdgefaultError(f"{data.spec}: images {data.input_shape} with {data.num_classes} classes do not fit the "
                             f"model ({tuple(run.model.input_shape)}, {run.model.num_classes} classes)")
    if len(data.train_labels) == 0:
        raise EdgefaultError(f"{data.spec}: the training split is empty; the attack batch comes from it")
    if model_path is not None:
        path = Path(model_path)
        if not path.is_file() or path.stat().st_size > MAX_MODEL_BYTES:
            raise EdgefaultError(f"{path}: not a model file (or over 2 GB)")
        clean, source = path.read_bytes(), str(path)
    else:
        with tempfile.TemporaryDirectory(prefix="edgefault-attack-") as folder:
            target = Path(folder) / "clean.onnx"
            export_run(run_dir, target, ExportSettings(progress=progress), data_spec=data.spec)
            clean, source = target.read_bytes(), "clean.onnx"
    proto = parse_model(clean, source)
    _, _, spec = resolve_model_input(proto)
    injector = Injector(clean)
    memory = injector.memory()
    CodeTwin(run.model, memory, injector.arrays(), source).close()  # refuses disagreeing codes
    prepared = prepare_inputs(data, spec, settings.limit)
    return Deployed(run, data, clean, injector, prepared, source, model_path is None)


def attack_batch(data: Dataset, size: int, seed: int) -> np.ndarray:
    """Sorted positions in the training split of a seeded attack batch (never test images).
    """
    generator = np.random.default_rng(np.random.SeedSequence([seed, 19]))
    count = min(size, len(data.train_labels))
    return np.sort(generator.choice(len(data.train_labels), count, replace=False))


def accuracy(deployed: Deployed, model: bytes, settings: AttackSettings) -> float:
    """ONNX Runtime's top-1 accuracy of serialized ``model`` on the deployed model's test inputs.
    """
    evaluator = Evaluator(model, SessionSettings(intra_op_threads=settings.threads))
    return evaluator.score(deployed.prepared).accuracy


def search(deployed: Deployed, settings: AttackSettings, progress: bool = False) -> dict:
    """Run the bit search on the deployed model: its flips with ORT accuracy after each, the stop, the timing.
    """
    indices = attack_batch(deployed.data, settings.batch, settings.seed)
    images = torch.from_numpy(deployed.data.normalized(deployed.data.train_images[indices]))
    labels = torch.from_numpy(np.asarray(deployed.data.train_labels[indices], dtype=np.int64))
    injector, memory = deployed.injector, deployed.injector.memory(include_bias=True)  # what --map-in replays on
    clean_accuracy = accuracy(deployed, deployed.clean, settings)
    target = settings.target(deployed.prepared.labels)
    twin = CodeTwin(deployed.run.model, deployed.injector.memory(), injector.arrays(), deployed.source)
    entries: list[dict] = []
    stop, searching = ("target" if clean_accuracy <= target else "flips"), 0.0
    try:
        clean_loss = twin.loss(images, labels)
        flips = progressive_bit_search(twin, images, labels, settings.topk, settings.tries)
        with Progress(settings.flips, "attack" if progress else None, unit="flip") as bar:
            while stop == "flips" and len(entries) < settings.flips:
                started = time.perf_counter()
                flip = next(flips, None)
                searching += time.perf_counter() - started
                if flip is None:
                    stop = "stalled"
                    break
                entries.append({"step": len(entries) + 1, **flip.to_entry()})
                faulty, _ = injector.apply(records_from_entries(entries, memory))
                entries[-1]["accuracy"] = accuracy(deployed, faulty, settings)
                bar.update()
                bar.set_postfix_str(f"accuracy {entries[-1]['accuracy']:.1%}")
                if entries[-1]["accuracy"] <= target:
                    stop = "target"
    finally:
        twin.close()
    return {"entries": entries, "stop": stop, "clean_accuracy": clean_accuracy, "clean_loss": clean_loss,
            "target": target, "indices": indices, "seconds_per_iteration": searching / max(len(entries), 1)}


def contrast_counts(flips: int) -> list[int]:
    """The flip counts at which random chips are measured: every count up to 12, else 12 spread on a log scale.

    Example:
        >>> contrast_counts(5), contrast_counts(100)
        ([1, 2, 3, 4, 5], [1, 2, 4, 5, 8, 12, 19, 28, 43, 66, 100])
    """
    if flips <= CONTRAST_POINTS:
        return list(range(1, flips + 1))
    return sorted({int(round(c)) for c in np.geomspace(1, flips, CONTRAST_POINTS)} | {flips})


def random_contrast(deployed: Deployed, counts: list[int], settings: AttackSettings) -> tuple[RandomContrast, ...]:
    """ORT accuracy under random flips of each count on the same stored bits: ``settings.chips`` chips each.

    Chip ``i`` has seed ``settings.seed + i``; chips are nested across counts (one device getting worse).
    """
    from scipy import stats as scipy_stats

    if settings.chips == 0:
        return ()
    memory, rows = deployed.injector.memory(), []
    for count in counts:
        values = []
        for chip in range(settings.chips):
            faulty, _ = deployed.injector.apply(sample_faults(memory, Chip("flip", count=count,
                                                                           seed=settings.seed + chip)))
            values.append(accuracy(deployed, faulty, settings))
        mean, low, high = float(np.mean(values)), None, None
        if len(values) > 1:
            spread = float(np.std(values, ddof=1)) / np.sqrt(len(values))
            half = float(scipy_stats.t.ppf(0.975, len(values) - 1)) * spread
            low, high = max(mean - half, 0.0), min(mean + half, 1.0)
        rows.append(RandomContrast(count, tuple(values), mean, low, high))
    return tuple(rows)


def summary_line(result: AttackResult) -> str:
    """"N flips to reach X% (random flips of the same count: Y% [a, b])", or why the target was not reached.
    """
    count, final = len(result.flips), result.final_accuracy
    if result.reached:
        head = f"{count} flips to reach {final:.1%}"
    else:
        why = "no flip raised the attack-batch loss" if result.stop == "stalled" else "the flip budget ran out"
        head = f"{count} flips brought ORT accuracy to {final:.1%}, not to {result.target:.1%} ({why})"
    same = next((r for r in result.random if r.count == count), None)
    if same is None:
        return head
    band = "" if same.low is None else f" [{100 * same.low:.1f}, {100 * same.high:.1f}]"
    return f"{head} (random flips of the same count: {same.mean:.1%}{band})"


def check_attack_folder(out_dir: str | Path, inputs: list) -> Path:
    """Accept a new or empty folder (a rerun into an earlier attack's folder could leave a stale clean.onnx).

    Example:
        >>> check_attack_folder("a-new-attack-folder", [])
        PosixPath('a-new-attack-folder')
    """
    out_dir = check_output_folder(out_dir, inputs)
    if out_dir.is_dir():
        present = sorted(p.name for p in out_dir.iterdir() if not p.name.startswith("."))
        if present:
            raise EdgefaultError(f"`out` {out_dir}: holds files ({', '.join(present[:3])}); give a new or empty folder")
    return out_dir


def attack_run(run_dir: str | Path, data_spec: str | None = None, out_dir: str | Path | None = None,
               settings: AttackSettings = AttackSettings(), *, model_path: str | Path | None = None,
               progress: bool = False) -> AttackResult:
    """Attack a run's deployed model; write the outputs to ``out_dir`` when given (all or none).
    """
    started = time.perf_counter()
    inputs = [run_dir, *([model_path] if model_path is not None else [])]
    out_dir = check_attack_folder(out_dir, inputs) if out_dir is not None else None
    deployed = deploy(run_dir, data_spec, model_path, settings, progress)
    found = search(deployed, settings, progress)
    counts = contrast_counts(len(found["entries"])) if found["entries"] else []
    with Progress(len(counts) * settings.chips, "random flips" if progress else None, unit="chip"):
        contrast = random_contrast(deployed, counts, settings)
    memory = deployed.injector.memory(include_bias=True)
    records = records_from_entries(found["entries"], memory)
    attacked, fault_map = deployed.injector.apply(records)
    address = {(t, i, b): a for t, i, b, a in zip(records.tensor_names(), records.index.tolist(),
                                                  records.bit.tolist(), records.address.tolist())}
    entries = tuple({**e, "address": address[(e["tensor"], e["index"], e["bit"])]} for e in found["entries"])
    result = AttackResult(
        model=deployed.run.config.model, data=deployed.data.spec, settings=settings,
        clean_accuracy=found["clean_accuracy"], clean_loss=found["clean_loss"], target=found["target"],
        flips=entries, reached=found["stop"] == "target", stop=found["stop"], random=contrast,
        batch_indices=tuple(found["indices"].tolist()), weight_bits=deployed.injector.memory().nbits,
        seconds_per_iteration=round(found["seconds_per_iteration"], 4), seconds=0.0, summary="")
    result = dataclasses.replace(result, summary=summary_line(result),
                                 seconds=round(time.perf_counter() - started, 3))
    if out_dir is not None:
        document = {"format": MAP_FORMAT, "version": MAP_VERSION, "chip": None, "summary": fault_map.summary(),
                    "model_sha256": hashlib.sha256(attacked).hexdigest(), "attack": {
                        "run_dir": str(run_dir), "model": deployed.source, "summary": result.summary},
                    "faults": list(entries)}
        contents = {"flips.json": json_bytes(document), "attacked.onnx": attacked,
                    "accuracy_vs_flips.png": accuracy_plot(result, f"{result.model} ({run_dir}): {result.summary}"),
                    "attack.json": json_bytes({"format": FORMAT, "edgefault_version": __version__,
                                               "run_dir": str(run_dir), "model": deployed.source,
                                               **result.to_dict()})}
        if deployed.exported:
            contents["clean.onnx"] = deployed.clean
        with output_folder(out_dir) as folder:
            write_files_atomic({folder / name: content for name, content in contents.items()})
    return result


def flips_to_break(run_dir: str | Path, dataset: str | None = None, settings: AttackSettings = AttackSettings(),
                   batches: int = 3, *, model_path: str | Path | None = None, progress: bool = False) -> FlipsToBreak:
    """Flips the search needs to bring ORT accuracy to the target, over ``batches`` attack batches (seeds
    ``settings.seed``, ``+1``, ...): each count, their median and range. Nothing is written.

    A batch whose search does not reach the target within ``settings.flips`` counts as more
    than that (``None``); the median is None when more than half did not reach it.
    """
    if isinstance(batches, bool) or not isinstance(batches, int) or not 1 <= batches <= 100:
        raise EdgefaultError(f"batches must be an integer in 1..100, got {batches!r}")
    deployed = deploy(run_dir, dataset, model_path, settings, progress)
    counts = []
    for number in range(batches):
        found = search(deployed, dataclasses.replace(settings, seed=settings.seed + number), progress)
        counts.append(len(found["entries"]) if found["stop"] == "target" else None)
    return FlipsToBreak.from_counts(tuple(counts), settings.flips, settings.target(deployed.prepared.labels))
