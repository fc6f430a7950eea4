"""The cell function, and what a worker holds to run it.

A worker receives a :class:`WorkerPayload` once: every model's serialized bytes, the test
images already normalized for each input spec, and its ONNX Runtime thread count. It builds
one :class:`~edgefault.faults.Injector` per model on first use and keeps it, so a cell costs
only its chip: sample and patch the weight bytes in memory, open a session from those bytes,
score the test split. Local processes and Ray actors run this same :class:`CellRunner`,
which is why both engines give the same numbers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from typing import Any

import numpy as np

from edgefault.campaign.cells import Cell
from edgefault.faults import Injector
from edgefault.runtime import Evaluator, PreparedInputs, SessionSettings


@dataclasses.dataclass(frozen=True)
class WorkerModel:
    """One campaign model as a worker sees it.

    ``inputs`` names the entry of :attr:`WorkerPayload.inputs` holding the test images
    normalized for this model (models with the same preprocessing share one).

    Example:
        >>> WorkerModel("lenet", "0" * 64, b"...", "input", "logits", "1x28x28/0.1307/0.3081").name
        'lenet'
    """

    name: str
    sha256: str
    data: bytes
    input_name: str
    output_name: str
    inputs: str


@dataclasses.dataclass(frozen=True)
class WorkerPayload:
    """Everything a worker needs, sent once when it starts.

    Example:
        >>> payload = WorkerPayload(models=(model,), inputs={model.inputs: prepared}, threads=1)  # doctest: +SKIP
    """

    models: tuple[WorkerModel, ...]
    inputs: dict[str, PreparedInputs]
    threads: int


class CellRunner:
    """Runs cells for one worker; never raises for a failing cell, it returns the error in the record.

    Example:
        >>> runner = CellRunner(payload)  # doctest: +SKIP
        >>> runner.run(Cell(model=0, mode="grid", kind="flip", rate=1e-3, chip=0, seed=1), attempt=1)["accuracy"]  # doctest: +SKIP
        0.941
    """

    def __init__(self, payload: WorkerPayload):
        self.payload = payload
        self.settings = SessionSettings(intra_op_threads=payload.threads)
        self._injectors: dict[int, Injector] = {}

    def run(self, cell: Cell, attempt: int = 1) -> dict[str, Any]:
        """Measure one cell and return its results line (see ``notes/readme_campaign.md`` for the fields).

        Example:
            >>> runner.run(Cell(model=0, mode="clean"))["faults"]  # doctest: +SKIP
            0
        """
        model = self.payload.models[cell.model]
        start = time.perf_counter()
        try:
            record = {**cell_fields(cell, model.sha256, model.name, attempt), **self._measure(cell, model), "error": None}
        except Exception as exc:  # one bad cell must not stop the campaign: record the reason instead
            message = " ".join(str(exc).split()) or "no message"
            record = failed_record(cell, model.sha256, model.name, attempt, f"{type(exc).__name__}: {message}")
        record["seconds"] = round(time.perf_counter() - start, 6)
        return record

    def _measure(self, cell: Cell, model: WorkerModel) -> dict[str, Any]:
        if cell.mode == "clean":
            data, faults, faulty_bits = model.data, 0, 0
        else:
            injector = self._injectors.get(cell.model)
            if injector is None:
                injector = self._injectors[cell.model] = Injector(model.data)
            data, fault_map = injector.inject(cell.to_chip())
            faults, faulty_bits = len(fault_map.records), fault_map.changed_bits
        evaluator = Evaluator(data, self.settings, input_name=model.input_name, output_name=model.output_name)
        score = evaluator.score(self.payload.inputs[model.inputs])
        # A digest of every prediction lets two runs (or two engines) be compared beyond the accuracy.
        digest = hashlib.sha256(np.asarray(score.predictions, dtype=np.int64).tobytes()).hexdigest()[:16]
        return {"faults": faults, "faulty_bits": faulty_bits, "accuracy": score.accuracy,
                "correct": score.correct, "images": score.total, "predictions": digest}


def cell_fields(cell: Cell, model_hash: str, model_name: str, attempt: int) -> dict[str, Any]:
    """The identifying fields of a results line.

    Example:
        >>> cell_fields(Cell(model=0, mode="clean"), "0" * 64, "lenet", 1)["key"]
        '0000000000000000/clean'
    """
    return {
        "key": cell.key(model_hash), "model": model_name, "model_hash": model_hash, "mode": cell.mode,
        "target": cell.target, "kind": cell.kind, "rate": cell.rate, "chip": cell.chip, "seed": cell.seed,
        "attempt": attempt,
    }


def failed_record(cell: Cell, model_hash: str, model_name: str, attempt: int, error: str,
                  seconds: float | None = None) -> dict[str, Any]:
    """A results line for an attempt that raised (or whose worker died): measurements empty, error set.

    Example:
        >>> failed_record(Cell(model=0, mode="clean"), "0" * 64, "lenet", 2, "WorkerDied: exit -9")["accuracy"] is None
        True
    """
    return {**cell_fields(cell, model_hash, model_name, attempt), "faults": None, "faulty_bits": None,
            "accuracy": None, "correct": None, "images": None, "predictions": None, "error": error, "seconds": seconds}
