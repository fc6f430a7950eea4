"""``reproduce``: train, export, campaign, sharpness and report over training seeds, each stage reusing DIR.

The stages are :mod:`edgefault.stages`'. The first training seed's models live in DIR itself
(``runs/``, ``models/``, ``campaign/``, ``sharpness/``, as a one-seed study leaves them), each
further seed's in ``DIR/seeds/<training seed>/`` with the same layout, and every seed's
campaign draws the same chips. A sweep model whose recipe is one of the study's (the sparsity
sweep's T = 0 and T = 0.5, the rho sweep's conventional models and rho = 0.05) reuses that
model, its export and its campaign cells instead of being trained again.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

from edgefault.analysis.report import SharpnessConfig
from edgefault.analysis.sharpness import analyze_sharpness
from edgefault.campaign.results import CampaignRecord
from edgefault.campaign.run import ExecutionSettings
from edgefault.data import Dataset, load_dataset
from edgefault.fileio import check_output_folder
from edgefault.stages import CampaignStage, FaultGrid, Stages, TrainJob
from edgefault.study.claims import Claim, SeedMeasurements, judge_claims
from edgefault.study.folders import SettingsFolder
from edgefault.study.extras import measure_extras
from edgefault.study.config import SPARSE_ACT_L1, SPARSE_FAT_THRESHOLD, StudyConfig, Variant
from edgefault.study.report import write_report
from edgefault.study.sweeps import SweepResult, analyze_sweep, sweep_settings, sweep_variants
from edgefault.train import TrainConfig

STUDY_FILE = "study.json"
STUDY_FOLDER = SettingsFolder(STUDY_FILE, "edgefault-study-1", "study")


@dataclasses.dataclass(frozen=True)
class StudyResult:
    """Where the report is, the claims' verdicts, the training seeds and the seconds each stage took.
    """

    report: Path
    verdicts: dict[int, str]
    seconds: dict[str, float]
    claims: list[Claim] = dataclasses.field(default_factory=list)
    sweeps: list[SweepResult] = dataclasses.field(default_factory=list)
    seeds: tuple[int, ...] = (0,)


def check_study_folder(folder: Path, config: StudyConfig | dict, kind: str = "study") -> None:
    """Refuse a folder that holds anything but this same study (nothing is overwritten).

    ``config`` is the study's settings (or the saved dict of a sweep); ``kind`` names it in errors.

    Example:
        >>> check_study_folder(Path("new-study"), StudyConfig(quick=True))
    """
    STUDY_FOLDER.check(folder, config.to_dict() if isinstance(config, StudyConfig) else config, kind)


def claim_study_folder(folder: Path, settings: dict) -> None:
    """Create ``folder`` and record ``settings`` in its study.json (after :func:`check_study_folder`)."""
    STUDY_FOLDER.claim(folder, settings)


def train_config(config: StudyConfig, variant: Variant, seed: int | None = None) -> TrainConfig:
    """The training recipe of one study variant (with training seed ``seed``, default the study's ``seed``).

    Example:
        >>> train_config(StudyConfig(quick=True), Variant("sparse", True, "none")).fat_threshold
        0.5
    """
    threshold = variant.fat_threshold if variant.fat_threshold is not None else SPARSE_FAT_THRESHOLD
    rho = variant.rho if variant.rho is not None else config.rho
    return TrainConfig(
        model=config.model, data=config.data, epochs=config.epochs, seed=config.seed if seed is None else seed,
        fat_threshold=threshold if variant.sparse else 0.0,
        act_l1=(SPARSE_ACT_L1 if variant.act_l1 is None else variant.act_l1) if variant.sparse else 0.0,
        sharpness=variant.sharpness, rho=None if variant.sharpness == "none" else rho,
    )


def seed_folder(folder: Path, config: StudyConfig, seed: int) -> Path:
    """Where one training seed's models live: the folder itself for the first seed, else ``seeds/<seed>/``.

    Example:
        >>> seed_folder(Path("study"), StudyConfig(quick=True), 2)
        PosixPath('study/seeds/2')
    """
    return folder if seed == config.seed else folder / "seeds" / str(seed)


@dataclasses.dataclass(frozen=True)
class TrainedModels:
    """One training seed's trained, exported and campaign-evaluated models: where their runs are, export
    summaries, the campaign summary (of the models trained here) and every model's records."""

    seed: int
    runs: dict[str, Path]
    exports: dict[str, dict]
    summary: dict
    records: list[CampaignRecord]


def train_export_campaign(config: StudyConfig, variants: Sequence[Variant], folder: Path, data: Dataset,
                          stages: Stages, shared: dict[str, tuple[str, dict[int, TrainedModels]]] | None = None
                          ) -> dict[int, TrainedModels]:
    """Per training seed: train (or reuse) each variant, export it, and run one paired campaign.

    ``shared`` maps a variant to a model of another folder with the same recipe (its name there and
    that folder's models per seed): it is neither trained nor evaluated again, its records are taken
    over under the variant's name.
    """
    shared = shared or {}
    own = [v for v in variants if v.name not in shared]
    places = {seed: seed_folder(folder, config, seed) for seed in config.training_seeds}
    jobs = [TrainJob(v.name if seed == config.seed else f"{v.name} (seed {seed})",
                     train_config(config, v, seed), places[seed] / "runs" / v.name, v.label, solo=seed == config.seed)
            for seed in config.training_seeds for v in own]
    stages.train(jobs, data)
    grid = FaultGrid(config.data, config.kinds, config.rates, config.chips, config.seed)
    trained = {}
    for seed, place in places.items():
        runs = {v.name: place / "runs" / v.name for v in own}
        exports = {v.name: stages.export(runs[v.name], place / "models" / f"{v.name}.onnx") for v in own}
        campaign = (stages.campaign([place / "models" / f"{v.name}.onnx" for v in own], grid, place / "campaign")
                    if own else CampaignStage({}, []))
        records = list(campaign.records)
        for name, (theirs, models) in shared.items():
            source = models[seed]
            runs[name], exports[name] = source.runs[theirs], source.exports[theirs]
            records += [dataclasses.replace(r, model=name) for r in source.records if r.model == theirs]
        trained[seed] = TrainedModels(seed, {v.name: runs[v.name] for v in variants},
                                      {v.name: exports[v.name] for v in variants}, campaign.summary, records)
    return trained


def shared_variants(config: StudyConfig, variants: Sequence[Variant], main: dict[int, TrainedModels]
                    ) -> dict[str, tuple[str, dict[int, TrainedModels]]]:
    """The variants whose recipe is one of the main study's: reused from it (its name for each).

    Example:
        >>> sorted(shared_variants(StudyConfig(quick=True), sweep_variants(StudyConfig(quick=True), "sparsity"), {}))
        ['T0', 'T0.5']
    """
    recipes = {train_config(config, v): v.name for v in config.variants}
    found = {v.name: recipes.get(train_config(config, v)) for v in variants}
    return {name: (theirs, main) for name, theirs in found.items() if theirs is not None}


def sweep_speedups(config: StudyConfig, variants: Sequence[Variant], shared: dict, places: dict[int, Path],
                   folder: Path, stages: Stages) -> dict[str, float]:
    """Each swept model's modelled zero-skipping speedup (lane imbalance) against dense, mean over training seeds;
    a model shared with the main study is costed there (its stamp reused).
    """
    found: dict[str, float] = {}
    for v in variants:
        values = []
        for seed, place in places.items():
            theirs = shared.get(v.name, (None,))[0]
            home = place if theirs else seed_folder(folder, config, seed)
            name = theirs or v.name
            total = stages.cost(home / "models" / f"{name}.onnx", config.data, home / "cost" / f"{name}.json",
                                config.cost_limit or None)
            values.append(total["speedup"]["skipping_imbalanced"])
        found[v.name] = sum(values) / len(values)
    return found


def run_study(config: StudyConfig, out: str | Path, progress: bool = True) -> StudyResult:
    """Run the whole study into ``out`` (resuming whatever an earlier run finished) and write the report.

    The sweeps the config names run into ``out/sweeps/<name>`` and join the report.
    """
    folder = check_output_folder(out, [])  # a read-only place is refused before any work
    check_study_folder(folder, config)
    for sweep in config.sweeps:
        check_study_folder(folder / "sweeps" / sweep, sweep_settings(config, sweep), "sweep")
    data = load_dataset(config.data)
    claim_study_folder(folder, config.to_dict())
    stages = Stages("reproduce", ExecutionSettings(progress=progress), progress)
    names = [v.name for v in config.variants]
    trained = train_export_campaign(config, config.variants, folder, data, stages)

    sharpness_config = SharpnessConfig(rho=config.rho, seed=config.seed, samples=config.sharpness_samples,
                                       hutchinson_probes=config.sharpness_probes, landscape_grid=config.landscape_grid)
    reports: dict[int, dict] = {}
    with stages.timed("sharpness"):
        for seed in config.training_seeds:
            place = seed_folder(folder, config, seed)
            reports[seed] = {}
            for name in names:
                stages.say(f"sharpness of {name}" + ("" if seed == config.seed else f" (seed {seed})"))
                reports[seed][name] = analyze_sharpness(place / "runs" / name, data, sharpness_config,
                                                        place / "sharpness" / name, progress=progress, reuse=True)

    places = {seed: seed_folder(folder, config, seed) for seed in config.training_seeds}
    extras = measure_extras(config, names, places, {s: trained[s].runs for s in places}, stages)

    sweeps = []
    for sweep in config.sweeps:
        sweep_stages = Stages("reproduce", stages.execution, progress)
        sweep_folder = folder / "sweeps" / sweep
        claim_study_folder(sweep_folder, sweep_settings(config, sweep))
        stages.say(f"sweep of {sweep}")
        variants = sweep_variants(config, sweep)
        swept = train_export_campaign(config, variants, sweep_folder, data, sweep_stages,
                                      shared_variants(config, variants, trained))
        speedups = sweep_speedups(config, variants, shared_variants(config, variants, trained), places,
                                  sweep_folder, sweep_stages) if sweep == "sparsity" else None
        sweeps.append(analyze_sweep(sweep, variants, [SeedMeasurements(s, t.records) for s, t in swept.items()],
                                    {s: t.runs for s, t in swept.items()}, sweep_folder, sweep_stages.seconds,
                                    speedups))
        stages.seconds[f"sweep {sweep}"] = sum(sweep_stages.seconds.values())

    measurements = [SeedMeasurements(s, trained[s].records, reports[s]) for s in config.training_seeds]
    claims = judge_claims(measurements, names)
    report = write_report(folder, config, trained, measurements, claims, stages.seconds, sweeps, extras)
    return StudyResult(report, {c.number: c.verdict for c in claims}, stages.seconds, claims, sweeps,
                       config.training_seeds)
