"""``edgefault mitigate``: train each mitigation, export, one paired campaign, the leaderboard.

Each stage reuses what DIR already holds, as ``reproduce`` does: a run whose recipe matches is
not retrained, an exported model with its stamp is not re-exported, and the campaign resumes
its results. ECC is the conventional model under the same chips with the protected bits' faults
dropped: chip seeds depend only on (campaign seed, kind, rate, chip), so its campaign (a second
folder, since the model file is the same) meets exactly the faults the main campaign's models meet.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from edgefault.campaign.config import CampaignConfig
from edgefault.campaign.results import ResultsLog
from edgefault.campaign.run import ExecutionSettings, run_campaign
from edgefault.data import load_dataset
from edgefault.fileio import check_output_folder
from edgefault.mitigate.config import BASELINE, ECC_BITS, MitigateConfig
from edgefault.mitigate.plots import write_board_plots
from edgefault.mitigate.remote import train_runs
from edgefault.mitigate.report import build_board, write_board
from edgefault.mitigate.voltage import VoltageCurve
from edgefault.study.folders import SettingsFolder
from edgefault.study.pipeline import export_with_stamp

STUDY_FILE = "mitigate.json"
MITIGATE_FOLDER = SettingsFolder(STUDY_FILE, "edgefault-mitigate-1", "mitigation study")


@dataclasses.dataclass(frozen=True)
class MitigateResult:
    """The leaderboard and where it was written, and the seconds each stage took.

    Example:
        >>> result = run_mitigate(MitigateConfig(quick=True), "mitigate/quick")  # doctest: +SKIP
        >>> result.board["winner"]  # doctest: +SKIP
        'randbet_clip'
    """

    board: dict
    files: tuple[Path, ...]
    seconds: dict[str, float]


def check_mitigate_folder(folder: Path, config: MitigateConfig) -> None:
    """Refuse a folder holding anything but this same mitigation study (nothing is overwritten).

    Example:
        >>> check_mitigate_folder(Path("/tmp/new-mitigate"), MitigateConfig(quick=True))
    """
    MITIGATE_FOLDER.check(folder, config.to_dict())


def _say(progress: bool, message: str) -> None:
    if progress:
        import click

        click.echo(f"[mitigate] {message}", err=True)


def run_mitigate(config: MitigateConfig, out: str | Path, execution: ExecutionSettings = ExecutionSettings(),
                 curve: VoltageCurve | None = None, progress: bool = True) -> MitigateResult:
    """Train, export, campaign and rank every method of ``config`` into ``out``, reusing finished stages.

    ``execution.ray`` runs the trainings and the campaign cells as Ray tasks.

    Example:
        >>> run_mitigate(MitigateConfig(quick=True), "mitigate/quick").board["methods"][0]["method"]  # doctest: +SKIP
        'qat'
    """
    folder = check_output_folder(out, [])  # a read-only place is refused before any work
    check_mitigate_folder(folder, config)
    data = load_dataset(config.data)
    MITIGATE_FOLDER.claim(folder, config.to_dict())
    seconds: dict[str, float] = {}

    started = time.perf_counter()
    runs = {m: folder / "runs" / m for m in config.trained}
    train_runs({m: config.recipe(m) for m in config.trained}, runs, data, execution.ray, progress)
    seconds["train"] = time.perf_counter() - started

    started = time.perf_counter()
    models = {m: folder / "models" / f"{m}.onnx" for m in config.trained}
    for method in config.trained:
        if not models[method].exists():
            _say(progress, f"exporting {method}")
        export_with_stamp(runs[method], models[method], progress=False)  # reused when already exported
    seconds["export"] = time.perf_counter() - started

    started = time.perf_counter()
    grid = {"data": config.data, "kinds": config.kinds, "rates": config.rates, "chips": config.chips,
            "seed": config.seed}
    _say(progress, f"campaign: {len(models)} models x {len(config.kinds)} kinds x {len(config.rates)} rates "
                   f"x {config.chips} chips")
    campaign = CampaignConfig.create([str(models[m]) for m in config.trained], **grid)
    run_campaign(campaign, folder / "campaign", execution)
    records = ResultsLog(folder / "campaign" / "results.jsonl").read(repair=False)
    ecc_records = []
    if "ecc" in config.methods:
        _say(progress, f"campaign with ECC on bit(s) {', '.join(map(str, ECC_BITS))} of {BASELINE}, same chips")
        ecc = CampaignConfig.create([str(models[BASELINE])], protect_bits=ECC_BITS, **grid)
        run_campaign(ecc, folder / "campaign_ecc", execution)
        ecc_records = ResultsLog(folder / "campaign_ecc" / "results.jsonl").read(repair=False)
    seconds["campaign"] = time.perf_counter() - started

    board = build_board(config, runs, records, ecc_records, curve, seconds)
    files = write_board(folder, board) + write_board_plots(folder, board)
    return MitigateResult(board, tuple(files), seconds)
