"""The fault map: every applied fault with the weight value before and after, a per-tensor summary, JSON I/O."""

from __future__ import annotations

import functools
import json
import os
import shutil
from typing import Any, Callable

import numpy as np

from edgefault.errors import EdgefaultError
from edgefault.faults.chip import Chip
from edgefault.faults.memory import AddressedMemory, WeightMemory
from edgefault.faults.records import KIND_NAMES, FaultRecords
from edgefault.fileio import read_json, write_bytes_atomic

LINES_AT_ONCE = 1 << 16  # fault lines formatted at once when a map is written piece by piece
FORMAT = "edgefault-faultmap"
VERSION = 1


class FaultMap:
    """Applied faults: the records, each faulted weight's value before and after, and the chip.

    ``before``/``after`` hold the whole element's value in the clean and in the faulty model
    (faults sharing an element show the same pair); ``values`` gives them as a pair, or as a
    function computing the pair, called on first use (a campaign that only needs the faulty
    bytes never pays for them). ``chip`` is None for a map re-applied from a file without
    one; ``target_bits`` is how many cells the chip could hit; ``changed_bits``, if given, is
    the number of faults that changed their bit; ``coverage``, if given, is what the memory
    covered (:meth:`~edgefault.faults.discover.Discovery.coverage`). Indices, bits and values
    are those of stored codes: a 4-bit code has bits 0-3 and values -8..7 (or 0..15).
    """

    def __init__(
        self,
        records: FaultRecords,
        memory: WeightMemory,
        values: tuple[np.ndarray, np.ndarray] | Callable[[], tuple[np.ndarray, np.ndarray]],
        chip: Chip | None = None,
        target_bits: int | None = None,
        changed_bits: int | None = None,
        coverage: dict[str, Any] | None = None,
    ):
        if records.tensors != memory.names:
            raise EdgefaultError("fault records and memory disagree on the tensors")
        self.records, self.memory, self.chip, self.target_bits = records, memory, chip, target_bits
        self.coverage = coverage
        self._values = values
        if changed_bits is not None:  # known already (the injector counts it per byte): skip the values
            self.__dict__["changed_bits"] = changed_bits

    @functools.cached_property
    def _pair(self) -> tuple[np.ndarray, np.ndarray]:
        before, after = self._values() if callable(self._values) else self._values
        return np.asarray(before, dtype=np.int64), np.asarray(after, dtype=np.int64)

    @property
    def before(self) -> np.ndarray:
        return self._pair[0]

    @property
    def after(self) -> np.ndarray:
        return self._pair[1]

    @property
    def changed(self) -> np.ndarray:
        """Whether each fault changed its bit (a stuck cell already at its value changes nothing)."""
        return ((self.before ^ self.after) >> self.records.bit) & 1 == 1

    @functools.cached_property
    def changed_bits(self) -> int:
        return int(self.changed.sum())

    def summary(self) -> dict[str, Any]:
        """Counts for the whole memory and per tensor (every tensor of the memory, faulted or not).
        """
        kinds = np.bincount(self.records.kind, minlength=len(KIND_NAMES))
        return summary_dict(self.memory, self.counts(), kinds, self.changed_bits, self.target_bits, self.coverage)

    def counts(self) -> np.ndarray:
        """Per tensor of the memory: faults, changed bits and changed weights (three rows of int64).

        Example:
            >>> from edgefault.faults import Injector
            >>> _, fault_map = Injector("model.onnx").inject(Chip("flip", count=5, seed=0))
            >>> int(fault_map.counts()[0].sum()) == len(fault_map.records) == 5
            True
        """
        records = self.records
        count = len(self.memory.tensors)
        faults = np.bincount(records.tensor, minlength=count)
        changed_bits = np.bincount(records.tensor, weights=self.changed, minlength=count).astype(np.int64)
        # Records are in address order, so the faults of one weight are adjacent: count each weight once.
        first = np.ones(len(records), dtype=bool)
        first[1:] = (records.tensor[1:] != records.tensor[:-1]) | (records.index[1:] != records.index[:-1])
        changed_weights = np.bincount(records.tensor[first & (self.before != self.after)], minlength=count)
        return np.stack([faults, changed_bits, changed_weights]).astype(np.int64)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document: format tag, chip, summary and one entry per fault.
        """
        return {**self._head(), "faults": [json.loads(line) for line in self._fault_lines()]}

    def write(self, path: str | os.PathLike) -> None:
        """Write :meth:`to_dict` as JSON atomically, one fault per line so that large maps stay readable.
        """
        write_bytes_atomic(path, self.encode())

    def encode(self, model_sha256: str | None = None) -> bytes:
        """The JSON text :meth:`write` writes; ``model_sha256`` records the digest of the faulty model it describes.
        """
        head = self._head()
        if model_sha256 is not None:
            head["model_sha256"] = model_sha256
        text = json.dumps(head, indent=2)[:-2]  # drop the closing "\n}" to append the faults
        lines = self._fault_lines()
        body = ',\n  "faults": [\n    ' + ",\n    ".join(lines) + "\n  ]\n}\n" if lines else ',\n  "faults": []\n}\n'
        return (text + body).encode()

    def _head(self) -> dict[str, Any]:
        chip = None if self.chip is None else self.chip.to_dict()
        return {"format": FORMAT, "version": VERSION, "chip": chip, "summary": self.summary()}

    def _fault_lines(self, start: int = 0, stop: int | None = None) -> list[str]:
        # Formatting strings directly is ~10x faster than json.dumps per fault, which matters at
        # 90,000 faults; names and kinds are JSON-encoded once.
        records, rows = self.records, slice(start, stop)
        names = [json.dumps(name) for name in records.tensors]
        kinds = [json.dumps(kind) for kind in KIND_NAMES]
        return [
            f'{{"tensor": {names[t]}, "index": {i}, "bit": {b}, "kind": {kinds[k]}, "before": {x}, "after": {y}, '
            f'"address": {a}}}'
            for t, i, b, k, x, y, a in zip(
                records.tensor[rows].tolist(), records.index[rows].tolist(), records.bit[rows].tolist(),
                records.kind[rows].tolist(), self.before[rows].tolist(), self.after[rows].tolist(),
                records.address[rows].tolist(),
            )
        ]


def summary_dict(memory: WeightMemory, counts: np.ndarray, kinds: np.ndarray, changed_bits: int,
                 target_bits: int | None, coverage: dict[str, Any] | None) -> dict[str, Any]:
    """The summary of :meth:`FaultMap.summary` from per-tensor counts (:meth:`FaultMap.counts`) and kind counts.

    Example:
        >>> memory = WeightMemory.from_tensors([("w", "int8", (4,), "t")])
        >>> summary_dict(memory, np.array([[2], [1], [1]]), np.array([2, 0, 0, 0]), 1, 32, None)["by_kind"]
        {'flip': 2}
    """
    faults, changed, weights = counts
    per_tensor = [
        {
            "tensor": tensor.name,
            "dtype": tensor.dtype,
            "storage": tensor.storage,
            "source": tensor.source,
            "shape": list(tensor.shape),
            "consumer": tensor.consumer,
            "bits": tensor.nbits,
            "faults": int(faults[i]),
            "changed_bits": int(changed[i]),
            "changed_weights": int(weights[i]),
        }
        for i, tensor in enumerate(memory.tensors)
    ]
    return {
        "faults": int(faults.sum()),
        "changed_bits": int(changed_bits),
        "changed_weights": int(weights.sum()),
        "memory_bits": memory.nbits,
        "target_bits": target_bits,
        "tensors_hit": int(np.count_nonzero(faults)),
        "by_kind": {name: int(kinds[code]) for code, name in enumerate(KIND_NAMES) if kinds[code]},
        **({} if coverage is None else {"coverage": coverage}),
        "per_tensor": per_tensor,
    }


class MapSummary:
    """The summary of a fault map built piece by piece (file-to-file injection), without keeping its records.

    Each piece (a :class:`FaultMap` of some words) is counted by :meth:`add` and, when a map is
    written, its fault lines go to ``spool``; :meth:`encode_to` then writes the whole map document.

    Example:
        >>> from edgefault.faults import Injector
        >>> _, piece = Injector("model.onnx").inject(Chip("flip", count=4, seed=0))
        >>> total = MapSummary(piece.memory, piece.chip, target_bits=piece.target_bits, coverage=None)
        >>> total.add(piece)
        >>> total.summary()["faults"], total.faults
        (4, 4)
    """

    def __init__(self, memory: WeightMemory, chip: Chip | None, target_bits: int | None,
                 coverage: dict[str, Any] | None, spool=None):
        self.memory, self.chip, self.target_bits, self.coverage = memory, chip, target_bits, coverage
        self._counts = np.zeros((3, len(memory.tensors)), dtype=np.int64)
        self._kinds = np.zeros(len(KIND_NAMES), dtype=np.int64)
        self.changed_bits = 0
        self._spool, self._lines = spool, 0

    def add(self, piece: FaultMap) -> None:
        """Count one piece (and spool its fault lines when a map is written)."""
        self._counts += piece.counts()
        self._kinds += np.bincount(piece.records.kind, minlength=len(KIND_NAMES))
        self.changed_bits += piece.changed_bits
        for start in range(0, len(piece.records) if self._spool is not None else 0, LINES_AT_ONCE):
            text = ",\n    ".join(piece._fault_lines(start, start + LINES_AT_ONCE))
            self._spool.write((",\n    " if self._lines else "").encode() + text.encode())
            self._lines += 1

    @property
    def faults(self) -> int:
        """How many faults the pieces counted so far hold."""
        return int(self._counts[0].sum())

    def summary(self) -> dict[str, Any]:
        """The same dict as :meth:`FaultMap.summary` of the whole map."""
        return summary_dict(self.memory, self._counts, self._kinds, self.changed_bits, self.target_bits,
                            self.coverage)

    def encode_to(self, handle, model_sha256: str | None = None) -> None:
        """Write the map document (as :meth:`FaultMap.encode` makes it) to a binary file, faults from the spool.

        Example:
            >>> import io
            >>> from edgefault.faults import Injector
            >>> _, piece = Injector("model.onnx").inject(Chip("flip", count=2, seed=0))
            >>> total = MapSummary(piece.memory, piece.chip, piece.target_bits, None, spool=io.BytesIO())
            >>> total.add(piece)
            >>> handle = io.BytesIO()
            >>> total.encode_to(handle)
            >>> len(json.loads(handle.getvalue())["faults"])
            2
        """
        head = {"format": FORMAT, "version": VERSION, "chip": None if self.chip is None else self.chip.to_dict(),
                "summary": self.summary(), **({} if model_sha256 is None else {"model_sha256": model_sha256})}
        if not self._lines:
            handle.write((json.dumps(head, indent=2)[:-2] + ',\n  "faults": []\n}\n').encode())
            return
        handle.write((json.dumps(head, indent=2)[:-2] + ',\n  "faults": [\n    ').encode())
        self._spool.seek(0)
        shutil.copyfileobj(self._spool, handle, 1 << 20)
        handle.write(b"\n  ]\n}\n")


def read_fault_map(source: str | os.PathLike | dict) -> tuple[list[dict[str, Any]], Chip | None]:
    """Read a fault map (a path or an already parsed dict): its fault entries and its chip, if any.
    """
    document = source if isinstance(source, dict) else read_json(source)
    where = "fault map" if isinstance(source, dict) else f"{source}"
    valid = isinstance(document, dict) and document.get("format") == FORMAT
    if not valid or not isinstance(document.get("faults"), list):
        raise EdgefaultError(f"{where}: not an edgefault fault map (needs format {FORMAT!r} and a faults list)")
    chip = Chip.from_dict(document["chip"]) if document.get("chip") is not None else None
    return document["faults"], chip


def records_from_entries(entries: list[dict[str, Any]], memory: AddressedMemory) -> FaultRecords:
    """Turn fault-map entries (tensor, index, bit, kind) into records on ``memory``, checking each one.

    Only the entries of the memory's site are taken: an entry's ``site`` (``weights`` when
    absent, ``activations``) must be ``memory.site``.

    Example:
        >>> memory = WeightMemory.from_tensors([("w", "int8", (4,), "t")])
        >>> records_from_entries([{"tensor": "w", "index": 1, "bit": 7, "kind": "flip"}], memory).address.tolist()
        [15]
    """
    positions = {name: i for i, name in enumerate(memory.names)}
    codes = {name: code for code, name in enumerate(KIND_NAMES)}
    columns: list[tuple[int, int, int, int]] = []
    for number, entry in enumerate(entries):
        if isinstance(entry, dict) and entry.get("site", "weights") != memory.site:
            continue
        try:
            position = positions[entry["tensor"]]
            index, bit, kind = entry["index"], entry["bit"], codes[entry["kind"]]
        except (KeyError, TypeError):
            raise EdgefaultError(
                f"fault {number}: needs tensor (a {memory.label} tensor of the model), index, bit and kind "
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
