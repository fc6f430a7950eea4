"""The cell function, and what a worker holds to run it.

A worker receives a :class:`WorkerPayload` once: every model's serialized bytes, the test
images already normalized for each input spec, and its ONNX Runtime thread count. It builds
one :class:`~edgefault.faults.Injector` per model on first use and keeps it, so a cell costs
only its chip: sample and patch the weight bytes in memory, open a session from those bytes,
score the test split. A chip whose faults all lie after a cut of the graph runs only the
suffix from that cut, on clean activations the worker cached (:mod:`edgefault.campaign.suffix`).
Activation cells run the model segment by segment with their buffers faulted in between
(:mod:`edgefault.campaign.activations`); the worker keeps one such runner per model.
Local processes and Ray actors run this same :class:`CellRunner`, which is why both engines
give the same numbers.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import time
from typing import Any

import numpy as np

from edgefault.campaign.activations import ActivationCells
from edgefault.campaign.cells import Cell
from edgefault.campaign.costcells import CellCost
from edgefault.campaign.sites import WEIGHTS
from edgefault.campaign.suffix import DEFAULT_CACHE_MB, MIB, SuffixCache, remap
from edgefault.cost.accelerator import Accelerator
from edgefault.faults import Injector, sample_faults
from edgefault.runtime import Evaluator, PreparedInputs, SessionSettings

CAMPAIGN_BATCH = 64  # images per ONNX Runtime run in a cell (bench/campaign.py measures 16..256; eval keeps 256)


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
    stored_bits: int | None = None  # --stored-bits of the campaign (k-bit codes in int8/uint8 weights)


@dataclasses.dataclass(frozen=True)
class WorkerPayload:
    """Everything a worker needs, sent once when it starts.

    ``cache_bytes`` bounds the clean activations the worker caches for suffix evaluation
    (split evenly among the models; 0 runs every cell on the whole model). ``accelerator``
    is ``--cost``'s (None: cells record no cost).
    """

    models: tuple[WorkerModel, ...]
    inputs: dict[str, PreparedInputs]
    threads: int
    cache_bytes: int = int(DEFAULT_CACHE_MB * MIB)
    accelerator: Accelerator | None = None


class CellRunner:
    """Runs cells for one worker; never raises for a failing cell, it returns the error in the record.
    """

    def __init__(self, payload: WorkerPayload):
        self.payload = payload
        self.settings = SessionSettings(intra_op_threads=payload.threads)
        self._injectors: dict[int, Injector] = {}
        self._suffixes: dict[int, SuffixCache] = {}
        self._activation_cells: dict[int, ActivationCells] = {}
        self._costs: dict[int, CellCost] = {}

    def run(self, cell: Cell, attempt: int = 1) -> dict[str, Any]:
        """Measure one cell and return its results line (see ``notes/readme_campaign.md`` for the fields).
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
        cost = self._cost(cell.model, model)
        if cell.site != WEIGHTS:
            cells = self._activations(cell.model, model)
            measured = cells.measure(cell) if cost is None else cost.activation_run(cells, cell)
            return self._scored(model, measured.pop("predictions"), {**measured, "cut": None})
        inputs, cut = self.payload.inputs[model.inputs], None
        whole = model.data if cost is None else cost.data  # with --cost, the kernel inputs are outputs too
        faulty: set[str] = set()  # the weight tensors the chip hit
        if cell.mode == "clean":
            data, faults, faulty_bits = whole, 0, 0
        else:
            injector = self._injectors.get(cell.model)
            if injector is None:
                injector = self._injectors[cell.model] = Injector(whole, model.stored_bits)
            chip = cell.to_chip()
            records = sample_faults(injector.memory(chip.include_bias), chip)
            cached = self._suffix(cell.model, model, inputs).choose(records)
            if cached is not None:  # the faults lie after a cut: run the suffix on the cached activations
                injector = cached.injector
                records = remap(records, injector.memory(chip.include_bias))
                inputs, cut = cached.inputs, cached.cut.name
            if cost is not None:  # only the cost needs to know which kernel inputs the chip can change
                faulty = {records.tensors[i] for i in np.unique(records.tensor).tolist()}
            data, fault_map = injector.apply(records, chip)
            faults, faulty_bits = len(fault_map.records), fault_map.changed_bits
        evaluator = Evaluator(data, self.settings, input_name=cut or model.input_name, output_name=model.output_name)
        measured = {"faults": faults, "faulty_bits": faulty_bits, "cut": cut}
        if cost is None:
            predictions = evaluator.score(inputs, CAMPAIGN_BATCH).predictions
        else:
            predictions, measured["cost"] = cost.run(evaluator, inputs, CAMPAIGN_BATCH, faulty)
        return self._scored(model, predictions, measured)

    def _cost(self, index: int, model: WorkerModel) -> CellCost | None:
        if self.payload.accelerator is None:
            return None
        cost = self._costs.get(index)
        if cost is None:
            cost = self._costs[index] = CellCost(model, self.payload.inputs[model.inputs], self.payload.accelerator,
                                                 self.settings)
        return cost

    def _scored(self, model: WorkerModel, predictions: np.ndarray, measured: dict[str, Any]) -> dict[str, Any]:
        """The record's measurements: accuracy, and the predictions as a digest and a mask of errors."""
        labels = self.payload.inputs[model.inputs].labels
        wrong = np.asarray(predictions) != labels
        correct = int(len(labels) - np.count_nonzero(wrong))
        # A digest of every prediction lets two runs (or two engines) be compared beyond the accuracy.
        digest = hashlib.sha256(np.asarray(predictions, dtype=np.int64).tobytes()).hexdigest()[:16]
        return {"faults": measured["faults"], "faulty_bits": measured["faulty_bits"],
                "accuracy": correct / len(labels) if len(labels) else 0.0, "correct": correct, "images": len(labels),
                "predictions": digest, "wrong": encode_mask(wrong), "cut": measured["cut"],
                **({"cost": measured["cost"]} if "cost" in measured else {})}

    def _activations(self, index: int, model: WorkerModel) -> ActivationCells:
        cells = self._activation_cells.get(index)
        if cells is None:
            budget = self.payload.cache_bytes // len(self.payload.models)
            cells = self._activation_cells[index] = ActivationCells(model, self.payload.inputs[model.inputs],
                                                                    self.settings, budget)
        return cells

    def _suffix(self, index: int, model: WorkerModel, inputs: PreparedInputs) -> SuffixCache:
        cache = self._suffixes.get(index)
        if cache is None:
            budget = self.payload.cache_bytes // len(self.payload.models)
            cost = self._cost(index, model)
            cache = self._suffixes[index] = SuffixCache(model, inputs, self.settings, budget, CAMPAIGN_BATCH,
                                                        () if cost is None else tuple(cost.kernels.names))
        return cache


def encode_mask(mask: np.ndarray) -> str:
    """A boolean vector as base64 of its packed bits (the per-image errors of a cell, for robust error).

    Example:
        >>> encode_mask(np.array([True, False, True]))
        'oA=='
    """
    return base64.b64encode(np.packbits(np.asarray(mask, dtype=bool)).tobytes()).decode("ascii")


def decode_mask(text: str, size: int) -> np.ndarray:
    """The boolean vector of :func:`encode_mask`, ``size`` entries long.

    Example:
        >>> decode_mask("oA==", 3).tolist()
        [True, False, True]
    """
    packed = np.frombuffer(base64.b64decode(text), dtype=np.uint8)
    return np.unpackbits(packed, count=size).astype(bool)


def cell_fields(cell: Cell, model_hash: str, model_name: str, attempt: int) -> dict[str, Any]:
    """The identifying fields of a results line.

    Example:
        >>> cell_fields(Cell(model=0, mode="clean"), "0" * 64, "lenet", 1)["key"]
        '0000000000000000/clean'
    """
    return {
        "key": cell.key(model_hash), "model": model_name, "model_hash": model_hash, "site": cell.site,
        "format": cell.act_format, "transient": cell.transient, "mode": cell.mode, "target": cell.target,
        "kind": cell.kind, "rate": cell.rate, "chip": cell.chip, "seed": cell.seed, "attempt": attempt,
    }


def failed_record(cell: Cell, model_hash: str, model_name: str, attempt: int, error: str,
                  seconds: float | None = None) -> dict[str, Any]:
    """A results line for an attempt that raised (or whose worker died): measurements empty, error set.

    Example:
        >>> failed_record(Cell(model=0, mode="clean"), "0" * 64, "lenet", 2, "WorkerDied: exit -9")["accuracy"] is None
        True
    """
    return {**cell_fields(cell, model_hash, model_name, attempt), "faults": None, "faulty_bits": None,
            "accuracy": None, "correct": None, "images": None, "predictions": None, "wrong": None, "cut": None,
            "error": error, "seconds": seconds}
