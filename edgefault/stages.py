"""One stage pipeline for ``reproduce``, its sweeps and ``mitigate``: train-or-reuse, export-or-reuse, campaign.

Each stage reuses what its folder already holds: a run directory whose recipe matches is not
retrained, an exported model with its stamp is not re-exported, and a campaign resumes its
results. Every stage is timed by one context (:meth:`Stages.timed`) and speaks through one
progress path (:meth:`Stages.say`, lines such as ``[reproduce] training sparse``).

Trainings: a job marked ``solo`` trains in this process with torch's default threads, exactly
as ``edgefault train`` would (so the first training seed's models are bit-identical to a
one-seed run's). The other pending jobs train side by side in ``cores // TRAIN_THREADS``
processes of ``TRAIN_THREADS`` threads each where the machine has the cores for two or more,
else one after another in this process (on 2 cores, LeNet-5 trains 1.5x faster with 2 threads
in one process than 2 single-threaded processes do side by side: 100 s against 150 s for the
quick study's 4 models); with ``ray``, every pending job is a Ray task. A model's bits depend on
its thread count. A trained run is written into place with its config.json last.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import multiprocessing
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Iterator, Sequence

from edgefault.attack import AttackSettings, flips_to_break
from edgefault.campaign.config import CampaignConfig, file_hash
from edgefault.campaign.engines import RayEngine, available_cores
from edgefault.campaign.results import CampaignRecord, ResultsLog, measured_records
from edgefault.campaign.run import ExecutionSettings, run_campaign
from edgefault.cost import CostOptions, model_cost
from edgefault.data import Dataset
from edgefault.errors import EdgefaultError
from edgefault.export.api import ExportSettings, export_run
from edgefault.fileio import read_json, to_json, write_bytes_atomic, write_json_atomic
from edgefault.numbers import MAX_STEPS, check_whole
from edgefault.progress import say
from edgefault.train import TrainConfig, train
from edgefault.train.run_dir import CHECKPOINT_NAME, RUN_FILES, load_config

TRAIN_THREADS = 2  # torch threads of each training run side by side
MAX_SEEDS = 100  # training seeds per recipe a study or leaderboard may ask for
EXPORT_FIELDS = ("agreement", "max_logit_gap_steps", "onnx_accuracy", "torch_accuracy", "integer_kernels",
                 "float_kernels", "weight_bytes")


@dataclasses.dataclass(frozen=True)
class SweepSettings:
    """What the settings of ``reproduce`` and ``mitigate`` share: training epochs, the weight-fault sweep, and the
    sizes of the cost model (test images, 0: all) and of the attack (flips, batches, test images).

    None takes the quick or the full profile's value; the subclass fills it in, then calls :meth:`check_sweep`.

    Example:
        >>> SweepSettings(epochs=1, rates=(0.01,), chips=1, cost_limit=0, attack_flips=5, attack_batches=1,
        ...               attack_limit=0).check_sweep()
        Traceback (most recent call last):
        ...
        edgefault.errors.EdgefaultError: chips must be a whole number in [2, 100000], got 1
    """

    epochs: int | None = None
    kinds: tuple[str, ...] = ("flip", "sa0", "sa1")
    rates: tuple[float, ...] | None = None
    chips: int | None = None
    cost_limit: int | None = None
    attack_flips: int | None = None
    attack_batches: int | None = None
    attack_limit: int | None = None

    def check_sweep(self) -> None:
        """Check the shared whole-number settings (the rates' range is the subclass's) and make ``kinds`` a tuple."""
        object.__setattr__(self, "kinds", tuple(self.kinds))
        for name, low, high in (("chips", 2, MAX_STEPS), ("epochs", 1, MAX_STEPS), ("cost_limit", 0, 10**9),
                                ("attack_flips", 1, 100_000), ("attack_batches", 1, 100), ("attack_limit", 0, 10**9)):
            check_whole(getattr(self, name), name, low, high)


@dataclasses.dataclass(frozen=True)
class TrainJob:
    """One model to train (or reuse): its recipe, its run directory, a label for progress lines.

    Example:
        >>> TrainJob("qat", TrainConfig(epochs=1), Path("m/runs/qat")).solo
        True
    """

    name: str
    recipe: TrainConfig
    run_dir: Path
    label: str = ""
    solo: bool = True


@dataclasses.dataclass(frozen=True)
class FaultGrid:
    """The fault sweep a campaign stage runs: kinds x rates x chips, chip patterns from ``seed``, in the weight
    memory or (``sites``) the activation memory in the storage formats ``act_formats`` (permanent faults).

    Example:
        >>> FaultGrid("mnist5k", ("flip",), (0.01,), 5, 0).describe(4)
        '4 models x 1 kinds x 1 rates x 5 chips'
        >>> FaultGrid("mnist5k", ("flip",), (0.01,), 5, 0, ("activations",), ("dense", "bitmap")).describe(4)
        '4 models x 1 kinds x 1 rates x 5 chips, activation memory (dense, bitmap)'
    """

    data: str
    kinds: tuple[str, ...]
    rates: tuple[float, ...]
    chips: int
    seed: int
    sites: tuple[str, ...] = ("weights",)
    act_formats: tuple[str, ...] = ("dense",)

    def describe(self, models: int) -> str:
        names = {"weights": "weight memory", "activations": f"activation memory ({', '.join(self.act_formats)})"}
        memory = "" if self.sites == ("weights",) else ", " + " and ".join(names[s] for s in self.sites)
        return f"{models} models x {len(self.kinds)} kinds x {len(self.rates)} rates x {self.chips} chips{memory}"


@dataclasses.dataclass(frozen=True)
class CampaignStage:
    """A finished campaign stage: its summary and its successful cells as typed records."""

    summary: dict
    records: list[CampaignRecord]


def is_trained(run_dir: Path, recipe: TrainConfig) -> bool:
    """Whether ``run_dir`` already holds a finished run of exactly ``recipe``.

    Example:
        >>> is_trained(Path("/nonexistent"), TrainConfig())
        False
    """
    return all((run_dir / name).exists() for name in RUN_FILES) and load_config(run_dir) == recipe


def train_to_bytes(recipe: TrainConfig) -> dict[str, bytes]:
    """Train ``recipe`` into a temporary folder and return the run directory's files (a worker's task).
    """
    with tempfile.TemporaryDirectory(prefix="edgefault-train-") as tmp:
        train(recipe, tmp, progress=False)
        return {name: (Path(tmp) / name).read_bytes() for name in RUN_FILES}


def _train_threads() -> None:
    import torch

    torch.set_num_threads(TRAIN_THREADS)


def _write_run(run_dir: Path, files: dict[str, bytes]) -> None:
    # config.json last: a run counts as trained only once every file is in place.
    for name in (CHECKPOINT_NAME, "metrics.json", "config.json"):
        write_bytes_atomic(run_dir / name, files[name])


@dataclasses.dataclass
class Stages:
    """The stages of one command's run: its progress prefix, execution settings and stage timings.

    Example:
        >>> stages = Stages("reproduce", progress=False)
        >>> with stages.timed("train"):
        ...     pass
        >>> list(stages.seconds)
        ['train']
    """

    command: str
    execution: ExecutionSettings = ExecutionSettings()
    progress: bool = True
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)

    def say(self, message: str) -> None:
        """One progress line on stderr, prefixed with the command's name (nothing when progress is off)."""
        if self.progress:
            say(f"[{self.command}] {message}")

    @contextlib.contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Add the seconds spent inside the block to ``seconds[stage]``."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - started

    def train(self, jobs: Sequence[TrainJob], data: Dataset) -> list[str]:
        """Train every job whose run directory lacks its recipe; return the names trained now.
        """
        pending = [job for job in jobs if not is_trained(job.run_dir, job.recipe)]
        with self.timed("train"):
            if self.execution.ray is not None:
                self._train_on_ray(pending)
                return [job.name for job in pending]
            side_by_side = available_cores() // TRAIN_THREADS >= 2
            for job in (j for j in pending if j.solo or not side_by_side):
                self.say(f"training {job.name} ({job.label + ', ' if job.label else ''}{job.recipe.epochs} epochs)")
                train(job.recipe, job.run_dir, data=data, progress=self.progress)
            if side_by_side:
                self._train_in_processes([j for j in pending if not j.solo])
        return [job.name for job in pending]

    def _train_in_processes(self, jobs: list[TrainJob]) -> None:
        if not jobs:
            return
        workers = min(available_cores() // TRAIN_THREADS, len(jobs))
        self.say(f"training {len(jobs)} models in {workers} processes of {TRAIN_THREADS} threads: "
                 + ", ".join(job.name for job in jobs))
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_train_threads) as pool:
            futures = {job.name: (job, pool.submit(train_to_bytes, job.recipe)) for job in jobs}
            for name, (job, future) in futures.items():
                _write_run(job.run_dir, future.result())
                self.say(f"trained {name}")

    def _train_on_ray(self, jobs: list[TrainJob]) -> None:
        if not jobs:
            return
        engine = RayEngine(self.execution.ray)
        engine.connect()
        try:
            import ray as ray_module

            task = ray_module.remote(num_cpus=1)(train_to_bytes)
            refs = {job.name: (job, task.remote(job.recipe)) for job in jobs}
            self.say(f"training {len(jobs)} models as Ray tasks")
            for job, ref in refs.values():
                _write_run(job.run_dir, ray_module.get(ref))
        finally:
            engine.close()

    def export(self, run_dir: Path, model_path: Path) -> dict:
        """Export a run once: the export summary is stamped beside the model, and a rerun returns it unchanged.
        """
        stamp = model_path.with_suffix(".export.json")
        with self.timed("export"):
            if model_path.exists() and stamp.exists():
                return read_json(stamp)
            self.say(f"exporting {model_path.name}")
            report = export_run(run_dir, model_path, ExportSettings(progress=self.progress)).to_dict()
            summary = {k: report[k] for k in EXPORT_FIELDS}
            write_json_atomic(stamp, summary)
            return summary

    def campaign(self, models: Sequence[Path], grid: FaultGrid, folder: Path,
                 protect_bits: tuple[int, ...] = (), stage: str = "campaign") -> CampaignStage:
        """Run (or resume) one paired campaign of ``models`` over ``grid`` into ``folder`` (timed as ``stage``).
        """
        extra = {"protect_bits": protect_bits} if protect_bits else {}
        if grid.sites != ("weights",):
            extra.update(sites=grid.sites, act_formats=grid.act_formats)
        with self.timed(stage):
            if protect_bits:
                self.say(f"campaign with ECC on bit(s) {', '.join(map(str, protect_bits))}, same chips")
            else:
                self.say(f"campaign: {grid.describe(len(models))}")
            config = CampaignConfig.create([str(m) for m in models], data=grid.data, kinds=grid.kinds,
                                           rates=grid.rates, chips=grid.chips, seed=grid.seed, **extra)
            result = run_campaign(config, folder, self.execution)
            records = measured_records(ResultsLog(folder / "results.jsonl").read(repair=False))
        return CampaignStage(result.summary, records)

    def _stamped(self, stage: str, stamp: Path, settings: dict, compute) -> dict:
        """A stage whose result is one JSON value: reused from ``stamp`` when it holds the same settings."""
        with self.timed(stage):
            if stamp.exists():
                saved = read_json(stamp)
                if isinstance(saved, dict) and saved.get("settings") == json.loads(to_json(settings)):
                    return saved["result"]
            result = json.loads(to_json(compute()))  # as a rerun reads it back (tuples become lists)
            write_json_atomic(stamp, {"settings": settings, "result": result})
            return result

    def cost(self, model_path: Path, data: str, stamp: Path, limit: int | None = None) -> dict:
        """Model a model's zero-skipping cost (:func:`edgefault.cost.model_cost`, default accelerator) once: its
        totals are stamped in ``stamp`` and a rerun with the same settings returns them.
        """
        settings = {"model_sha256": file_hash(str(model_path)), "data": data, "limit": limit, "accelerator": "default"}

        def compute() -> dict:
            self.say(f"cost of {model_path.stem}" + ("" if limit is None else f" ({limit} images)"))
            return model_cost(model_path, data, options=CostOptions(limit=limit)).total

        return self._stamped("cost", stamp, settings, compute)

    def attack(self, run_dir: Path, model_path: Path, data: str, stamp: Path, settings: AttackSettings,
               batches: int) -> dict:
        """Flips to break a deployed model (:func:`edgefault.attack.flips_to_break`) once, stamped in ``stamp``;
        a model the attack refuses gives ``{"error": message}`` instead.
        """
        # "chance": how the default target is defined (a stamp from before it was the most frequent class is stale)
        saved = {"model_sha256": file_hash(str(model_path)), "data": data, "batches": batches,
                 **dataclasses.asdict(settings), "chance": "most frequent class"}

        def compute() -> dict:
            self.say(f"attack on {model_path.stem} ({batches} attack batches, up to {settings.flips} flips)")
            try:
                return flips_to_break(run_dir, data, settings, batches, model_path=model_path).to_dict()
            except EdgefaultError as error:  # a model the attack does not support: said, not fatal to the study
                return {"error": str(error)}

        return self._stamped("attack", stamp, saved, compute)
