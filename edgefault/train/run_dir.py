"""Run directories: the checkpoint, config.json and metrics.json that ``train`` writes and later stages read."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from edgefault import __version__
from edgefault.errors import EdgefaultError
from edgefault.fileio import atomic_path, read_json, write_json_atomic
from edgefault.models import create_model
from edgefault.train.config import TrainConfig

CHECKPOINT_NAME = "model.pt"
CHECKPOINT_FORMAT = "edgefault-checkpoint-1"


@dataclasses.dataclass(frozen=True, eq=False)
class LoadedRun:
    """A trained run read back from disk: the eval-mode model, its recipe and its metrics.

    Example:
        >>> run = load_run("runs/std")  # doctest: +SKIP
        >>> run.config.model, run.metrics["test_accuracy"]  # doctest: +SKIP
        ('lenet5', 0.985)
    """

    path: Path
    model: nn.Module
    config: TrainConfig
    metrics: dict


def save_checkpoint(model: nn.Module, path: Path) -> None:
    """Write the model's spec and state dict, loadable with ``torch.load(..., weights_only=True)``."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"format": CHECKPOINT_FORMAT, "model_spec": dict(model.spec), "state_dict": state}, tmp)


def load_model(checkpoint: str | Path) -> nn.Module:
    """Rebuild a model from a checkpoint file (eval mode, on CPU), without unpickling code.

    Example:
        >>> model = load_model("runs/std/model.pt")  # doctest: +SKIP
    """
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise EdgefaultError(f"{checkpoint}: no checkpoint (train a model first)")
    try:
        payload = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt or foreign file
        raise EdgefaultError(f"{checkpoint}: not a readable checkpoint ({type(exc).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise EdgefaultError(f"{checkpoint}: not an edgefault checkpoint")
    spec = dict(payload["model_spec"])
    model = create_model(spec.pop("name"), **spec)
    model.load_state_dict(payload["state_dict"])
    return model.eval()


def write_run(run_dir: Path, model: nn.Module, config: TrainConfig, metrics: dict) -> None:
    """Write checkpoint, config.json (recipe, seed, version) and metrics.json into ``run_dir``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, run_dir / CHECKPOINT_NAME)
    write_json_atomic(run_dir / "config.json", {"edgefault_version": __version__, **dataclasses.asdict(config)})
    write_json_atomic(run_dir / "metrics.json", metrics)


def load_config(run_dir: str | Path) -> TrainConfig:
    """Read a run's recipe back into a :class:`TrainConfig`.

    Example:
        >>> load_config("runs/std").seed  # doctest: +SKIP
        0
    """
    raw = read_json(Path(run_dir) / "config.json")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in raw.items() if k in known})


def load_run(run_dir: str | Path) -> LoadedRun:
    """Load a run directory written by ``edgefault train``.

    Example:
        >>> load_run("runs/std").model.num_classes  # doctest: +SKIP
        10
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise EdgefaultError(f"{run_dir}: not a run directory")
    model = load_model(run_dir / CHECKPOINT_NAME)
    return LoadedRun(run_dir, model, load_config(run_dir), read_json(run_dir / "metrics.json"))
