"""``reproduce``: train, export, campaign, sharpness and report, each step reusing what DIR already holds."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from edgefault.analysis.report import SharpnessConfig
from edgefault.analysis.sharpness import analyze_sharpness
from edgefault.campaign.config import CampaignConfig
from edgefault.campaign.results import ResultsLog
from edgefault.campaign.run import ExecutionSettings, run_campaign
from edgefault.data import Dataset, load_dataset
from edgefault.export.api import ExportSettings, export_run
from edgefault.fileio import check_output_folder, read_json, write_json_atomic
from edgefault.study.claims import Claim, judge_claims
from edgefault.study.folders import SettingsFolder
from edgefault.study.config import SPARSE_ACT_L1, SPARSE_FAT_THRESHOLD, StudyConfig, Variant
from edgefault.study.report import write_report
from edgefault.study.sweeps import SweepResult, analyze_sweep, sweep_settings, sweep_variants
from edgefault.train import TrainConfig, train
from edgefault.train.run_dir import load_config

STUDY_FILE = "study.json"
STUDY_FOLDER = SettingsFolder(STUDY_FILE, "edgefault-study-1", "study")


@dataclasses.dataclass(frozen=True)
class StudyResult:
    """Where the report is, the claims' verdicts and the seconds each stage took.

    Example:
        >>> result = run_study(StudyConfig(quick=True), "study/quick")  # doctest: +SKIP
        >>> result.report  # doctest: +SKIP
        PosixPath('study/quick/report.md')
    """

    report: Path
    verdicts: dict[int, str]
    seconds: dict[str, float]
    claims: list[Claim] = dataclasses.field(default_factory=list)
    sweeps: list[SweepResult] = dataclasses.field(default_factory=list)


def check_study_folder(folder: Path, config: StudyConfig | dict, kind: str = "study") -> None:
    """Refuse a folder that holds anything but this same study (nothing is overwritten).

    ``config`` is the study's settings (or the saved dict of a sweep); ``kind`` names it in errors.

    Example:
        >>> check_study_folder(Path("/tmp/new-study"), StudyConfig(quick=True))
    """
    STUDY_FOLDER.check(folder, config.to_dict() if isinstance(config, StudyConfig) else config, kind)


def claim_study_folder(folder: Path, settings: dict) -> None:
    """Create ``folder`` and record ``settings`` in its study.json (after :func:`check_study_folder`)."""
    STUDY_FOLDER.claim(folder, settings)


def train_config(config: StudyConfig, variant: Variant) -> TrainConfig:
    """The training recipe of one study variant.

    Example:
        >>> train_config(StudyConfig(quick=True), Variant("sparse", True, "none")).fat_threshold
        0.5
    """
    threshold = variant.fat_threshold if variant.fat_threshold is not None else SPARSE_FAT_THRESHOLD
    rho = variant.rho if variant.rho is not None else config.rho
    return TrainConfig(
        model=config.model, data=config.data, epochs=config.epochs, seed=config.seed,
        fat_threshold=threshold if variant.sparse else 0.0,
        act_l1=(SPARSE_ACT_L1 if variant.act_l1 is None else variant.act_l1) if variant.sparse else 0.0,
        sharpness=variant.sharpness, rho=None if variant.sharpness == "none" else rho,
    )


def _train(config: StudyConfig, variant: Variant, run_dir: Path, data: Dataset, progress: bool) -> None:
    recipe = train_config(config, variant)
    if (run_dir / "metrics.json").exists() and (run_dir / "model.pt").exists() and load_config(run_dir) == recipe:
        return  # trained by an earlier run of this study
    _say(progress, f"training {variant.name} ({variant.label}, {recipe.epochs} epochs)")
    train(recipe, run_dir, data=data, progress=progress)


def export_with_stamp(run_dir: Path, model_path: Path, progress: bool) -> dict:
    """Export a run once: the export report is stamped beside the model, and a rerun returns it unchanged.

    Example:
        >>> export_with_stamp(Path("study/runs/standard"), Path("study/models/standard.onnx"), False)  # doctest: +SKIP
        {'path': 'study/models/standard.onnx', ...}
    """
    stamp = model_path.with_suffix(".export.json")
    if model_path.exists() and stamp.exists():
        return read_json(stamp)
    _say(progress, f"exporting {model_path.name}")
    report = export_run(run_dir, model_path, ExportSettings(progress=progress)).to_dict()
    summary = {k: report[k] for k in ("agreement", "max_logit_gap_steps", "onnx_accuracy", "torch_accuracy",
                                      "integer_kernels", "float_kernels", "weight_bytes")}
    write_json_atomic(stamp, summary)
    return summary


def _say(progress: bool, message: str) -> None:
    if progress:
        import click

        click.echo(f"[reproduce] {message}", err=True)


@dataclasses.dataclass(frozen=True)
class TrainedModels:
    """Trained, exported and campaign-evaluated models of one folder: export summaries and campaign records."""

    exports: dict[str, dict]
    summary: dict
    records: list[dict]


def train_export_campaign(config: StudyConfig, variants: tuple[Variant, ...], folder: Path, data: Dataset,
                          seconds: dict[str, float], progress: bool = True) -> TrainedModels:
    """Train (or reuse) each variant into ``folder/runs``, export it to ``folder/models``, run one paired campaign.

    Adds the seconds of each stage to ``seconds``.

    Example:
        >>> trained = train_export_campaign(config, config.variants, Path("study/quick"), data, {})  # doctest: +SKIP
        >>> trained.exports["standard"]["agreement"]  # doctest: +SKIP
        0.999
    """
    names = [v.name for v in variants]
    started = time.perf_counter()
    for variant in variants:
        _train(config, variant, folder / "runs" / variant.name, data, progress)
    seconds["train"] = seconds.get("train", 0.0) + time.perf_counter() - started

    started = time.perf_counter()
    exports = {v.name: export_with_stamp(folder / "runs" / v.name, folder / "models" / f"{v.name}.onnx", progress)
               for v in variants}
    seconds["export"] = seconds.get("export", 0.0) + time.perf_counter() - started

    started = time.perf_counter()
    _say(progress, f"campaign: {len(names)} models x {len(config.kinds)} kinds x {len(config.rates)} rates "
                   f"x {config.chips} chips")
    campaign = CampaignConfig.create([str(folder / "models" / f"{n}.onnx") for n in names], data=config.data,
                                     kinds=config.kinds, rates=config.rates, chips=config.chips, seed=config.seed)
    result = run_campaign(campaign, folder / "campaign", ExecutionSettings(progress=progress))
    records = ResultsLog(folder / "campaign" / "results.jsonl").read(repair=False)
    seconds["campaign"] = seconds.get("campaign", 0.0) + time.perf_counter() - started
    return TrainedModels(exports, result.summary, records)


def run_study(config: StudyConfig, out: str | Path, progress: bool = True) -> StudyResult:
    """Run the whole study into ``out`` (resuming whatever an earlier run finished) and write the report.

    The sweeps the config names run into ``out/sweeps/<name>`` and join the report.

    Example:
        >>> run_study(StudyConfig(quick=True), "study/quick").verdicts  # doctest: +SKIP
        {1: 'held', 2: 'inconclusive', 3: 'held', 4: 'inconclusive'}
    """
    folder = check_output_folder(out, [])  # a read-only place is refused before any work
    check_study_folder(folder, config)
    for sweep in config.sweeps:
        check_study_folder(folder / "sweeps" / sweep, sweep_settings(config, sweep), "sweep")
    data = load_dataset(config.data)
    claim_study_folder(folder, config.to_dict())
    seconds: dict[str, float] = {}
    names = [v.name for v in config.variants]
    trained = train_export_campaign(config, config.variants, folder, data, seconds, progress)

    started = time.perf_counter()
    sharpness_config = SharpnessConfig(rho=config.rho, seed=config.seed, samples=config.sharpness_samples,
                                       hutchinson_probes=config.sharpness_probes, landscape_grid=config.landscape_grid)
    reports = {}
    for name in names:
        _say(progress, f"sharpness of {name}")
        reports[name] = analyze_sharpness(folder / "runs" / name, data, sharpness_config, folder / "sharpness" / name,
                                          progress=progress, reuse=True)
    seconds["sharpness"] = time.perf_counter() - started

    sweeps = []
    for sweep in config.sweeps:
        sweep_seconds: dict[str, float] = {}
        sweep_folder = folder / "sweeps" / sweep
        claim_study_folder(sweep_folder, sweep_settings(config, sweep))
        _say(progress, f"sweep of {sweep}")
        variants = sweep_variants(config, sweep)
        swept = train_export_campaign(config, variants, sweep_folder, data, sweep_seconds, progress)
        sweeps.append(analyze_sweep(sweep, variants, swept.records, sweep_folder, sweep_seconds))
        seconds[f"sweep {sweep}"] = sum(sweep_seconds.values())

    claims = judge_claims(trained.records, reports, names)
    report = write_report(folder, config, trained.exports, trained.summary, reports, claims, trained.records,
                          seconds, sweeps)
    return StudyResult(report, {c.number: c.verdict for c in claims}, seconds, claims, sweeps)
