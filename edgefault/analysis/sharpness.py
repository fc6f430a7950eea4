"""``analyze_sharpness``: SAM sharpness, top Hessian eigenvalue, Hessian trace and loss landscapes of a run.

The output folder gets metrics.json (the :class:`SharpnessReport`), landscape_1d.png and
landscape_2d.png, each written atomically, metrics.json last. A folder that holds anything
else is refused before any work starts, so nothing of another stage is ever overwritten.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgefault.analysis.curvature import hessian_trace, sam_sharpness, top_eigenvalue
from edgefault.analysis.landscape import filter_normalized_direction, grid, landscape_1d, landscape_2d
from edgefault.analysis.objective import ModelObjective
from edgefault.analysis.plots import plot_landscape_1d, plot_landscape_2d
from edgefault.analysis.report import REPORT_FORMAT, Landscape, SharpnessConfig, SharpnessReport
from edgefault.data import Dataset, load_dataset
from edgefault.errors import EdgefaultError
from edgefault.fileio import check_output_folder, output_folder, read_json, write_json_atomic
from edgefault.progress import Progress
from edgefault.train import LoadedRun, load_run
from edgefault.train.loop import resolve_device

METRICS_NAME = "metrics.json"
PLOT_NAMES = {"landscape_1d": "landscape_1d.png", "landscape_2d": "landscape_2d.png"}
OUTPUT_NAMES = frozenset({METRICS_NAME, *PLOT_NAMES.values()})
# Independent random streams: changing the probe count never changes the landscape's directions.
STREAMS = {"subset": 0, "power_iteration": 1, "hutchinson": 2, "landscape": 3}


def stream_generator(seed: int, stream: str) -> torch.Generator:
    """A CPU generator for one named random stream of the analysis, derived from ``seed``.

    Example:
        >>> a, b = stream_generator(0, "hutchinson"), stream_generator(0, "hutchinson")
        >>> torch.equal(torch.rand(3, generator=a), torch.rand(3, generator=b))
        True
    """
    state = np.random.SeedSequence([seed, STREAMS[stream]]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))


def check_output_dir(out_dir: str | Path) -> Path:
    """Accept a new or empty folder, or one holding only an earlier sharpness output; refuse anything else.

    Example:
        >>> check_output_dir("new-sharpness-folder")
        PosixPath('new-sharpness-folder')
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise EdgefaultError(f"{out_dir}: exists and is not a folder")
    if not out_dir.exists():
        return out_dir
    foreign = sorted(p.name for p in out_dir.iterdir() if p.name not in OUTPUT_NAMES and not p.name.startswith("."))
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise EdgefaultError(f"{out_dir}: holds other files ({shown}); give `out` a new or empty folder")
    metrics = out_dir / METRICS_NAME
    if metrics.exists():
        raw = read_json(metrics)
        if not isinstance(raw, dict) or raw.get("format") != REPORT_FORMAT:
            raise EdgefaultError(f"{metrics}: not a sharpness report (another stage's output?); "
                                 "give `out` a new or empty folder")
    return out_dir


def load_report(out_dir: str | Path) -> SharpnessReport:
    """Read the report an earlier analysis wrote into ``out_dir``.
    """
    path = Path(out_dir) / METRICS_NAME
    try:
        return SharpnessReport.from_dict(read_json(path))
    except EdgefaultError as exc:
        raise EdgefaultError(f"{path}: {exc}") from None


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 of the model's state dict (names, dtypes, shapes and bytes), to recognise a model again.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return "sha256:" + digest.hexdigest()


def _resolve_source(source) -> tuple[nn.Module, str, dict, str | None]:
    """(model, architecture name, source description, the run's dataset spec or None)."""
    if isinstance(source, (str, Path)):
        source = load_run(source)
    if isinstance(source, LoadedRun):
        recipe = dataclasses.asdict(source.config)
        return source.model, source.config.model, {"run_dir": str(source.path), "recipe": recipe}, source.config.data
    if isinstance(source, nn.Module):
        name = getattr(source, "spec", {}).get("name", type(source).__name__)
        return source, name, {"run_dir": None, "recipe": None}, None
    raise TypeError(f"source must be a run directory, a LoadedRun or a model, got {type(source).__name__}")


def _training_subset(model: nn.Module, data: Dataset, config: SharpnessConfig) -> tuple[torch.Tensor, torch.Tensor]:
    expected = getattr(model, "input_shape", None)
    if expected is not None and tuple(expected) != data.input_shape:
        raise EdgefaultError(f"{data.spec}: images of shape {data.input_shape} do not fit the model's input "
                             f"{tuple(expected)}")
    classes = getattr(model, "num_classes", None)
    if classes is not None and data.num_classes > classes:
        raise EdgefaultError(f"{data.spec}: {data.num_classes} classes, but the model has {classes} outputs")
    if len(data.train_labels) == 0:
        raise EdgefaultError(f"{data.spec}: the training split is empty")
    count = min(config.samples, len(data.train_labels))
    order = torch.randperm(len(data.train_labels), generator=stream_generator(config.seed, "subset"))
    index = np.sort(order[:count].numpy())  # sorted: the subset is a set, not a sequence
    images = torch.from_numpy(data.normalized(data.train_images[index]))
    return images, torch.from_numpy(np.asarray(data.train_labels[index], dtype=np.int64))


def _title(model_name: str, recipe: dict | None, config: SharpnessConfig, samples: int) -> str:
    recipe_text = ""
    if recipe:
        method = "conventional"
        if recipe["sharpness"] != "none":
            method = f"{recipe['sharpness'].upper()} rho {recipe['rho']:g}"
        activation = f"FATReLU T={recipe['fat_threshold']:g}" if recipe["fat_threshold"] > 0 else "ReLU"
        recipe_text = f" ({method} training, {activation})"
    return (f"{model_name}{recipe_text}\n{config.weight_space} weights, {samples} training images, "
            f"filter-normalized, seed {config.seed}")


def analyze_sharpness(source: str | Path | LoadedRun | nn.Module, data: Dataset | str | None = None,
                      config: SharpnessConfig = SharpnessConfig(), out_dir: str | Path | None = None, *,
                      progress: bool = True, reuse: bool = False) -> SharpnessReport:
    """Measure the sharpness of a trained model around its weights; write metrics.json and plots to ``out_dir``.

    ``source`` is a run directory, a :class:`LoadedRun` or an edgefault model; ``data`` a
    dataset or SPEC (default: the run's own dataset). The model is left exactly as it was:
    same weights (bit for bit), mode, device and ``requires_grad`` flags. With ``reuse`` an
    ``out_dir`` that already holds the report of the same model, data and config is read back
    instead of recomputed. Without ``out_dir`` nothing is written.

    Example:
        >>> config = SharpnessConfig(seed=0)
    """
    model, model_name, source_info, run_data = _resolve_source(source)
    if out_dir is not None:
        out_dir = check_output_folder(check_output_dir(out_dir), [source] if isinstance(source, (str, Path)) else [])
    device = resolve_device(config.device)  # a missing device is refused before any work
    if data is None and run_data is None:
        raise EdgefaultError("no dataset: pass data (a SPEC such as mnist5k) for a model without a run directory")
    dataset = data if isinstance(data, Dataset) else load_dataset(data if data is not None else run_data)
    fingerprint = model_fingerprint(model)
    if reuse and out_dir is not None and (out_dir / METRICS_NAME).exists():
        try:
            earlier = load_report(out_dir)
        except EdgefaultError:  # our own format, but damaged: measure again and replace it
            earlier = None
        wanted = (config, fingerprint, dataset.spec)
        if earlier is not None and (earlier.config, earlier.fingerprint, earlier.data) == wanted:
            return earlier
    images, labels = _training_subset(model, dataset, config)
    first_param = next(model.parameters(), None)
    home = first_param.device if first_param is not None else torch.device("cpu")
    model.to(device)
    try:
        values = _measure(model, images.to(device), labels.to(device), config, progress)
    finally:
        model.to(home)
    title = _title(model_name, source_info["recipe"], config, len(labels))
    files = {} if out_dir is None else dict(PLOT_NAMES, metrics=METRICS_NAME)
    report = SharpnessReport(model=model_name, source=source_info, data=dataset.spec, samples=len(labels),
                             fingerprint=fingerprint, config=config, files=files, **values)
    if out_dir is not None:
        with output_folder(out_dir):  # a failed write leaves nothing new behind
            land = values["landscape"]
            plot_landscape_1d(land.alphas_1d, land.loss_1d, out_dir / PLOT_NAMES["landscape_1d"],
                              f"1-D loss landscape: {title}")
            plot_landscape_2d(land.alphas_2d, land.alphas_2d, np.array(land.loss_2d),
                              out_dir / PLOT_NAMES["landscape_2d"], f"2-D loss landscape: {title}")
            write_json_atomic(out_dir / METRICS_NAME, report.to_dict())
    return report


def _measure(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, config: SharpnessConfig,
             progress: bool) -> dict:
    """Run every metric on one objective; returns the report fields they fill."""
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    total = 1 + config.power_iterations + config.hutchinson_probes + config.landscape_points + config.landscape_grid**2
    bar = Progress(total, "sharpness" if progress else None, unit="step")
    with bar, ModelObjective(model, images, labels, config.batch_size, config.weight_space) as objective:
        params = objective.params
        clock = time.perf_counter()
        bar.set_description("sharpness: SAM")
        accuracy = objective.accuracy()
        sam = sam_sharpness(objective, params, config.rho)
        bar.update()
        seconds["sam"] = time.perf_counter() - clock

        clock = time.perf_counter()
        bar.set_description("sharpness: top eigenvalue")
        power = top_eigenvalue(objective, params, stream_generator(config.seed, "power_iteration"),
                               config.power_iterations, config.power_tolerance, on_step=bar.update)
        bar.shorten(config.power_iterations - power.iterations)  # converged early: fewer steps to go
        seconds["power_iteration"] = time.perf_counter() - clock

        clock = time.perf_counter()
        bar.set_description("sharpness: Hessian trace")
        trace = hessian_trace(objective, params, stream_generator(config.seed, "hutchinson"),
                              config.hutchinson_probes, on_step=bar.update)
        seconds["hutchinson"] = time.perf_counter() - clock

        generator = stream_generator(config.seed, "landscape")
        directions = (filter_normalized_direction(objective.reference, generator),
                      filter_normalized_direction(objective.reference, generator))
        clock = time.perf_counter()
        bar.set_description("sharpness: 1-D landscape")
        alphas_1d = grid(config.landscape_extent, config.landscape_points)
        loss_1d = landscape_1d(objective, params, directions[0], alphas_1d, on_step=bar.update)
        seconds["landscape_1d"] = time.perf_counter() - clock

        clock = time.perf_counter()
        bar.set_description("sharpness: 2-D landscape")
        alphas_2d = grid(config.landscape_extent, config.landscape_grid)
        loss_2d = landscape_2d(objective, params, directions, alphas_2d, alphas_2d, on_step=bar.update)
        seconds["landscape_2d"] = time.perf_counter() - clock
        layers, parameters = objective.layer_names, objective.parameter_count
    seconds["total"] = time.perf_counter() - started
    landscape = Landscape(tuple(alphas_1d.tolist()), tuple(loss_1d.tolist()), tuple(alphas_2d.tolist()),
                          tuple(tuple(row) for row in loss_2d.tolist()), float(config.landscape_extent))
    return {
        "loss": sam.loss, "accuracy": accuracy, "sam_sharpness": sam.sharpness, "top_eigenvalue": power.eigenvalue,
        "hessian_trace": trace.trace, "hessian_trace_stderr": trace.standard_error, "sam": sam,
        "power_iteration": power, "trace": trace, "landscape": landscape, "layers": layers,
        "parameters": parameters, "seconds": {k: round(v, 3) for k, v in seconds.items()},
    }
