"""``edgefault mitigate``: train each mitigation over training seeds, export, one paired campaign, the leaderboard.

The stages are :mod:`edgefault.stages`': a run whose recipe matches is not retrained, an exported
model with its stamp is not re-exported, and the campaign resumes its results. The first training
seed's models live in DIR itself, each further seed's in ``DIR/seeds/<training seed>/``, and
every seed's campaign draws the same chips. ECC is the conventional model under the same chips
with the protected bits' faults dropped: chip seeds depend only on (campaign seed, kind, rate,
chip), so its campaign (a second folder, since the model file is the same) meets exactly the
faults the main campaign's models meet.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from edgefault.campaign.run import ExecutionSettings
from edgefault.data import load_dataset
from edgefault.fileio import check_output_folder
from edgefault.mitigate.config import BASELINE, ECC_BITS, MitigateConfig
from edgefault.mitigate.plots import write_board_plots
from edgefault.mitigate.report import SeedCampaigns, build_board, write_board
from edgefault.mitigate.voltage import VoltageCurve
from edgefault.stages import FaultGrid, Stages, TrainJob
from edgefault.study.folders import SettingsFolder

STUDY_FILE = "mitigate.json"
MITIGATE_FOLDER = SettingsFolder(STUDY_FILE, "edgefault-mitigate-1", "mitigation study")


@dataclasses.dataclass(frozen=True)
class MitigateResult:
    """The leaderboard and where it was written, and the seconds each stage took.
    """

    board: dict
    files: tuple[Path, ...]
    seconds: dict[str, float]


def check_mitigate_folder(folder: Path, config: MitigateConfig) -> None:
    """Refuse a folder holding anything but this same mitigation study (nothing is overwritten).

    Example:
        >>> check_mitigate_folder(Path("new-mitigate"), MitigateConfig(quick=True))
    """
    MITIGATE_FOLDER.check(folder, config.to_dict())


def seed_folder(folder: Path, config: MitigateConfig, seed: int) -> Path:
    """Where one training seed's models live: the folder itself for the first seed, else ``seeds/<seed>/``.

    Example:
        >>> seed_folder(Path("m"), MitigateConfig(), 0)
        PosixPath('m')
    """
    return folder if seed == config.seed else folder / "seeds" / str(seed)


def run_mitigate(config: MitigateConfig, out: str | Path, execution: ExecutionSettings = ExecutionSettings(),
                 curve: VoltageCurve | None = None, progress: bool = True) -> MitigateResult:
    """Train, export, campaign and rank every method of ``config`` into ``out``, reusing finished stages.

    ``execution.ray`` runs the trainings and the campaign cells as Ray tasks.
    """
    folder = check_output_folder(out, [])  # a read-only place is refused before any work
    check_mitigate_folder(folder, config)
    data = load_dataset(config.data)
    MITIGATE_FOLDER.claim(folder, config.to_dict())
    stages = Stages("mitigate", execution, progress)
    places = {seed: seed_folder(folder, config, seed) for seed in config.training_seeds}
    jobs = [TrainJob(m if seed == config.seed else f"{m} (seed {seed})", config.recipe(m, seed),
                     places[seed] / "runs" / m, solo=seed == config.seed)
            for seed in config.training_seeds for m in config.trained]
    stages.train(jobs, data)
    grid = FaultGrid(config.data, config.kinds, config.rates, config.chips, config.seed)
    seeds = []
    for seed, place in places.items():
        runs = {m: place / "runs" / m for m in config.trained}
        models = [place / "models" / f"{m}.onnx" for m in config.trained]
        for method, model in zip(config.trained, models):
            stages.export(runs[method], model)  # reused when already exported
        records = stages.campaign(models, grid, place / "campaign").records
        ecc = []
        if "ecc" in config.methods:
            ecc = stages.campaign([place / "models" / f"{BASELINE}.onnx"], grid, place / "campaign_ecc",
                                  protect_bits=ECC_BITS).records
        cost = {m: stages.cost(model, config.data, place / "cost" / f"{m}.json", config.cost_limit or None)
                for m, model in zip(config.trained, models)}
        attack = {m: stages.attack(runs[m], model, config.data, place / "attack" / f"{m}.json",
                                   config.attack_settings(), config.attack_batches)
                  for m, model in zip(config.trained, models)}
        seeds.append(SeedCampaigns(seed, runs, records, ecc, cost, attack))
    board = build_board(config, seeds, curve, stages.seconds)
    files = write_board(folder, board) + write_board_plots(folder, board)
    return MitigateResult(board, tuple(files), stages.seconds)
