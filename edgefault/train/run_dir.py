"""Run directories: the checkpoint, config.json and metrics.json that ``train`` writes and later stages read."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import torch
from torch import nn

from edgefault import __version__
from edgefault.errors import EdgefaultError
from edgefault.fileio import check_output_folder, json_bytes, output_folder, read_json, write_files_atomic
from edgefault.models import create_model
from edgefault.train.config import TrainConfig
from edgefault.text import printable

CHECKPOINT_NAME = "model.pt"
CHECKPOINT_FORMAT = "edgefault-checkpoint-1"
RUN_FILES = (CHECKPOINT_NAME, "config.json", "metrics.json")


@dataclasses.dataclass(frozen=True, eq=False)
class LoadedRun:
    """A trained run read back from disk: the eval-mode model, its recipe and its metrics.
    """

    path: Path
    model: nn.Module
    config: TrainConfig
    metrics: dict


def checkpoint_bytes(model: nn.Module) -> bytes:
    """The checkpoint of a model: its spec and state dict, loadable with ``torch.load(..., weights_only=True)``.

    Saved through a buffer, so the archive's root name is fixed and the same model gives the same bytes.
    """
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, "model_spec": dict(model.spec), "state_dict": state}, buffer)
    return buffer.getvalue()


def load_model(checkpoint: str | Path) -> nn.Module:
    """Rebuild a model from a checkpoint file (eval mode, on CPU), without unpickling code.
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
    bad = [f"{printable(name)} ({int((~torch.isfinite(value)).sum()):,} of {value.numel():,})"
           for name, value in model.state_dict().items() if value.is_floating_point() and not value.isfinite().all()]
    if bad:  # a diverged training: no command may go on with it
        raise EdgefaultError(f"{checkpoint}: non-finite weights (NaN or inf) in {', '.join(bad[:4])}"
                             f"{', ...' if len(bad) > 4 else ''}; the training diverged, retrain with a smaller `lr`")
    return model.eval()


def write_run(run_dir: Path, model: nn.Module, config: TrainConfig, metrics: dict) -> None:
    """Write checkpoint, config.json (recipe, seed, version) and metrics.json into ``run_dir``, all or none.

    The three files are renamed into place together; a failure removes what it created.
    """
    contents = (checkpoint_bytes(model), json_bytes({"edgefault_version": __version__, **dataclasses.asdict(config)}),
                json_bytes(metrics))
    with output_folder(run_dir) as folder:
        write_files_atomic({folder / name: content for name, content in zip(RUN_FILES, contents)})


def check_run_dir(run_dir: str | Path, config: TrainConfig, overwrite: bool = False) -> dict | None:
    """Before training into ``run_dir``: None to go on, or the metrics of the same run already there.

    A new or empty folder is fine; a run with other settings is refused unless ``overwrite``;
    anything else in the folder (another stage's output) is always refused.

    Example:
        >>> check_run_dir("a-new-run", TrainConfig()) is None
        True
    """
    run_dir = check_output_folder(run_dir, [])
    if not run_dir.exists() or not any(run_dir.iterdir()):
        return None
    names = {p.name for p in run_dir.iterdir() if not p.name.startswith(".")}
    if not names <= set(RUN_FILES) or not (run_dir / "config.json").is_file():
        shown = ", ".join(sorted(names - set(RUN_FILES))[:3]) or "no config.json"
        raise EdgefaultError(f"`out` {run_dir} is not empty and holds no run ({shown}); give a new or empty folder")
    if overwrite:
        return None
    theirs, ours = dataclasses.asdict(load_config(run_dir)), dataclasses.asdict(config)
    differ = [k for k in ours if ours[k] != theirs[k]]
    if differ:
        shown = ", ".join(f"{k} {theirs[k]!r} there, {ours[k]!r} here" for k in differ[:4])
        raise EdgefaultError(f"`out` {run_dir} holds a run with other settings ({shown}); `overwrite` replaces it")
    metrics = read_json(run_dir / "metrics.json") if (run_dir / "metrics.json").is_file() else None
    return metrics if isinstance(metrics, dict) and (run_dir / CHECKPOINT_NAME).is_file() else None


def load_config(run_dir: str | Path) -> TrainConfig:
    """Read a run's recipe back into a :class:`TrainConfig`.
    """
    raw = read_json(Path(run_dir) / "config.json")
    if not isinstance(raw, dict):
        raise EdgefaultError(f"{Path(run_dir) / 'config.json'}: not the config.json of a run")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in raw.items() if k in known})


def load_run(run_dir: str | Path) -> LoadedRun:
    """Load a run directory written by ``edgefault train``.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise EdgefaultError(f"{run_dir}: not a run directory")
    model = load_model(run_dir / CHECKPOINT_NAME)
    return LoadedRun(run_dir, model, load_config(run_dir), read_json(run_dir / "metrics.json"))
