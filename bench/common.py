"""What the benchmarks share: an edgefault model trained briefly and exported, for scripts given none.

Every benchmark runs from a clean checkout (``make bench``): a script that measures a model takes
one (``--model``) or makes one here, on the built-in data, in a temporary folder.
"""

from __future__ import annotations

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
