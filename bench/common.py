"""What the benchmarks share: an edgefault model trained briefly and exported, for scripts given none.

Every benchmark runs from a clean checkout (``make bench``): a script that measures a model takes
one (``--model``) or makes one here, on the built-in data, in a temporary folder.
"""

from __future__ import annotations

import time
from pathlib import Path

from edgefault.export import ExportSettings, export_run
from edgefault.study.config import SPARSE_ACT_L1, SPARSE_FAT_THRESHOLD
from edgefault.train import TrainConfig, train


def exported_model(folder: Path, model: str = "lenet5", data: str = "mnist5k", epochs: int = 2,
                   sparse: bool = False) -> Path:
    """Train ``model`` for ``epochs`` (the study's activation-sparse recipe if ``sparse``), export it into ``folder``.

    Returns the ONNX path; the run directory is ``folder/run``.
    """
    recipe = TrainConfig(model=model, data=data, epochs=epochs, seed=0,
                         fat_threshold=SPARSE_FAT_THRESHOLD if sparse else 0.0,
                         act_l1=SPARSE_ACT_L1 if sparse else 0.0)
    run_dir = Path(folder) / "run"
    train(recipe, run_dir, progress=False)
    onnx_path = Path(folder) / "model.onnx"
    export_run(run_dir, onnx_path, ExportSettings(keep_on_parity_failure=True))
    return onnx_path


def time_cells(runs: dict, chips: int) -> dict[str, list[float]]:
    """Seconds of each run on chips 0..chips-1, interleaved chip by chip so background load hits them alike.

    ``runs`` maps a label to a function of the chip index that runs one cell and returns its record
    (a record with an ``error`` stops the benchmark) or None; chip -1 warms every run up (sessions,
    caches) and is not counted.
    """
    times: dict[str, list[float]] = {label: [] for label in runs}
    for chip in range(-1, chips):
        for label, run in runs.items():
            start = time.perf_counter()
            record = run(max(chip, 0))
            if record is not None and record["error"] is not None:
                raise SystemExit(f"{label}: cell failed: {record['error']}")
            if chip >= 0:
                times[label].append(time.perf_counter() - start)
    return times
