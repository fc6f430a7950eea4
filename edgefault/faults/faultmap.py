"""The fault map: every applied fault with the weight value before and after, a per-tensor summary, JSON I/O."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np

from edgefault.errors import EdgefaultError
from edgefault.faults.chip import Chip
from edgefault.faults.memory import WeightMemory
from edgefault.faults.records import KIND_NAMES, FaultRecords
from edgefault.fileio import read_json, write_bytes_atomic

FORMAT = "edgefault-faultmap"
VERSION = 1


@dataclasses.dataclass(frozen=True, eq=False)
class FaultMap:
    """Applied faults: the records, each faulted weight's value before and after, and the chip.

    ``before``/``after`` hold the whole element's value in the clean and in the faulty model
    (faults sharing an element show the same pair). ``chip`` is None for a map re-applied
    from a file without one; ``target_bits`` is how many cells the chip could hit.

    Example:
        >>> _, fault_map = Injector("quant.onnx").inject(Chip("flip", rate=1e-3))  # doctest: +SKIP
        >>> fault_map.summary()["changed_bits"]  # doctest: +SKIP
        8
    """

    records: FaultRecords
    before: np.ndarray
    after: np.ndarray
    memory: WeightMemory
    chip: Chip | None = None
    target_bits: int | None = None

    @property
    def changed(self) -> np.ndarray:
        """Whether each fault changed its bit (a stuck cell already at its value changes nothing)."""
        return ((np.asarray(self.before) ^ np.asarray(self.after)) >> self.records.bit) & 1 == 1

    @property
    def changed_bits(self) -> int:
        return int(self.changed.sum())

    def summary(self) -> dict[str, Any]:
        """Counts for the whole memory and per tensor (every tensor of the memory, faulted or not).

        Example:
            >>> fault_map.summary()["per_tensor"][0]["faults"]  # doctest: +SKIP
            3
        """
        records = self.records
        position = np.array([self.memory.names.index(name) for name in records.tensors], dtype=np.int64)[records.tensor]
        count = len(self.memory.tensors)
        faults = np.bincount(position, minlength=count)
        changed_bits = np.bincount(position, weights=self.changed, minlength=count).astype(np.int64)
        altered = np.asarray(self.before) != np.asarray(self.after)
        elements = np.unique(np.stack([position[altered], records.index[altered]]), axis=1)
        changed_weights = np.bincount(elements[0], minlength=count)
        per_tensor = [
            {
                "tensor": tensor.name,
                "dtype": tensor.dtype,
                "shape": list(tensor.shape),
                "bits": tensor.nbits,
                "faults": int(faults[i]),
                "changed_bits": int(changed_bits[i]),
                "changed_weights": int(changed_weights[i]),
            }
            for i, tensor in enumerate(self.memory.tensors)
        ]
        kinds = np.bincount(records.kind, minlength=len(KIND_NAMES))
        return {
            "faults": len(records),
            "changed_bits": self.changed_bits,
            "changed_weights": int(elements.shape[1]),
            "memory_bits": self.memory.nbits,
            "target_bits": self.target_bits,
            "tensors_hit": int(np.count_nonzero(faults)),
            "by_kind": {name: int(kinds[code]) for code, name in enumerate(KIND_NAMES) if kinds[code]},
            "per_tensor": per_tensor,
        }

    def to_dict(self) -> dict[str, Any]:
        """The JSON document: format tag, chip, summary and one entry per fault.

        Example:
            >>> fault_map.to_dict()["faults"][0]  # doctest: +SKIP
            {'tensor': 'fc.weight_quantized', 'index': 12, 'bit': 3, 'kind': 'flip', 'before': -5, 'after': 3, 'address': 4195}
        """
        faults = [
            {**row, "before": before, "after": after}
            for row, before, after in zip(self.records.rows(), self.before.tolist(), self.after.tolist())
        ]
        for fault in faults:  # keep the address last: it is derived, the rest is what re-applying reads
            fault["address"] = fault.pop("address")
        return {
            "format": FORMAT,
            "version": VERSION,
            "chip": None if self.chip is None else self.chip.to_dict(),
            "summary": self.summary(),
            "faults": faults,
        }

    def write(self, path: str | os.PathLike) -> None:
        """Write the map as JSON atomically, one fault per line so large maps stay readable.

        Example:
            >>> fault_map.write("map.json")  # doctest: +SKIP
        """
        document = self.to_dict()
        faults = document.pop("faults")
        head = json.dumps(document, indent=2)[:-2]  # drop the closing "\n}" to append the faults
        body = ",\n    ".join(json.dumps(fault) for fault in faults)
        text = head + (',\n  "faults": [\n    ' + body + "\n  ]\n}\n" if faults else ',\n  "faults": []\n}\n')
        write_bytes_atomic(path, text.encode())


def read_fault_map(source: str | os.PathLike | dict) -> tuple[list[dict[str, Any]], Chip | None]:
    """Read a fault map (a path or an already parsed dict): its fault entries and its chip, if any.

    Example:
        >>> faults, chip = read_fault_map("map.json")  # doctest: +SKIP
    """
    document = source if isinstance(source, dict) else read_json(source)
    where = "fault map" if isinstance(source, dict) else f"{source}"
    if not isinstance(document, dict) or document.get("format") != FORMAT or not isinstance(document.get("faults"), list):
        raise EdgefaultError(f"{where}: not an edgefault fault map (needs format {FORMAT!r} and a faults list)")
    chip = Chip.from_dict(document["chip"]) if document.get("chip") is not None else None
    return document["faults"], chip


def records_from_entries(entries: list[dict[str, Any]], memory: WeightMemory) -> FaultRecords:
    """Turn fault-map entries (tensor, index, bit, kind) into records on ``memory``, checking each one.

    Example:
        >>> memory = WeightMemory.from_tensors([("w", "int8", (4,), "t")])
        >>> records_from_entries([{"tensor": "w", "index": 1, "bit": 7, "kind": "flip"}], memory).address.tolist()
        [15]
    """
    positions = {name: i for i, name in enumerate(memory.names)}
    codes = {name: code for code, name in enumerate(KIND_NAMES)}
    columns: list[tuple[int, int, int, int]] = []
    for number, entry in enumerate(entries):
        try:
            position = positions[entry["tensor"]]
            index, bit, kind = entry["index"], entry["bit"], codes[entry["kind"]]
        except (KeyError, TypeError):
            raise EdgefaultError(
                f"fault {number}: needs tensor (a weight tensor of the model), index, bit and kind "
                f"({', '.join(KIND_NAMES)}); got {json.dumps(entry)[:120]}"
            ) from None
        tensor = memory.tensors[position]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (index, bit)) or not (
            0 <= index < tensor.size and 0 <= bit < tensor.width
        ):
            raise EdgefaultError(
                f"fault {number}: index {index!r} / bit {bit!r} outside tensor {tensor.name!r} "
                f"({tensor.size} elements of {tensor.width} bits)"
            )
        columns.append((position, index, bit, kind))
    position, index, bit, kind = np.array(columns, dtype=np.int64).reshape(-1, 4).T
    address = memory.addresses(position, index, bit)
    if np.unique(address).size != address.size:
        raise EdgefaultError("fault map lists the same bit twice")
    order = np.argsort(address)
    return FaultRecords(memory.names, position[order], index[order], bit[order], kind[order], address[order])
