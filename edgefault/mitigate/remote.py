"""Training the mitigations: in this process, or as Ray tasks that send their run directory back.

A Ray task trains into a temporary folder on its node and returns the run's files as bytes,
which are written here atomically, so no shared file system is needed. A run whose recipe
matches the one on disk is reused either way.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from edgefault.campaign.engines import RayEngine
from edgefault.data import Dataset
from edgefault.fileio import write_bytes_atomic
from edgefault.train import TrainConfig, train
from edgefault.train.run_dir import CHECKPOINT_NAME, load_config

RUN_FILES = (CHECKPOINT_NAME, "config.json", "metrics.json")


def is_trained(run_dir: Path, recipe: TrainConfig) -> bool:
    """Whether ``run_dir`` already holds a finished run of exactly ``recipe``.

    Example:
        >>> is_trained(Path("/nonexistent"), TrainConfig())
        False
    """
    return all((run_dir / name).exists() for name in RUN_FILES) and load_config(run_dir) == recipe


def train_to_bytes(recipe: TrainConfig) -> dict[str, bytes]:
    """Train ``recipe`` into a temporary folder and return the run directory's files (a Ray task body).

    Example:
        >>> sorted(train_to_bytes(TrainConfig(epochs=1)))  # doctest: +SKIP
        ['config.json', 'metrics.json', 'model.pt']
    """
    with tempfile.TemporaryDirectory(prefix="edgefault-train-") as tmp:
        train(recipe, tmp, progress=False)
        return {name: (Path(tmp) / name).read_bytes() for name in RUN_FILES}


def train_runs(recipes: dict[str, TrainConfig], runs: dict[str, Path], data: Dataset, ray: str | None,
               progress: bool) -> None:
    """Train every recipe not yet on disk into its run directory, locally or on Ray.

    Example:
        >>> train_runs({"qat": TrainConfig(epochs=1)}, {"qat": Path("m/runs/qat")}, data, None, False)  # doctest: +SKIP
    """
    pending = [name for name in recipes if not is_trained(runs[name], recipes[name])]
    if not pending:
        return
    if ray is None:
        for name in pending:
            if progress:
                import click

                click.echo(f"[mitigate] training {name} ({recipes[name].epochs} epochs)", err=True)
            train(recipes[name], runs[name], data=data, progress=progress)
        return
    engine = RayEngine(ray)
    engine.connect()
    try:
        import ray as ray_module

        task = ray_module.remote(num_cpus=1)(train_to_bytes)
        refs = {name: task.remote(recipes[name]) for name in pending}
        for name, ref in refs.items():
            files = ray_module.get(ref)
            # config.json last: a run counts as trained only once every file is in place.
            for file_name in (CHECKPOINT_NAME, "metrics.json", "config.json"):
                write_bytes_atomic(runs[name] / file_name, files[file_name])
    finally:
        engine.close()
