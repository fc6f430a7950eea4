"""Injecting a chip into a model: in memory for campaigns (parse once, patch bytes per chip), or file to file.

The injector keeps one serialized copy of the model and the byte offset of every weight
tensor inside it. A chip then costs its sampling, one copy of the bytes, a write per faulty
byte and one appended metadata entry: the model is never parsed or serialized again, and
everything except the faulted weight bytes and that entry stays byte-for-byte as it was.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from edgefault.errors import EdgefaultError
from edgefault.faults.chip import Chip
from edgefault.faults.faultmap import FaultMap, read_fault_map, records_from_entries
from edgefault.faults.memory import WeightMemory, find_weight_tensors
from edgefault.faults.records import FaultRecords, patch_words, word_masks
from edgefault.faults.sampling import sample_faults, target_bits
from edgefault.faults.wire import metadata_entry, raw_data_spans
from edgefault.fileio import write_bytes_atomic
from edgefault.runtime.loading import iter_tensors, load_model, parse_model

METADATA_KEY = "edgefault.fault_chip"


class Injector:
    """A model parsed once, ready to receive many chips without touching the disk.

    ``model`` is a path (external data allowed, inside the model's folder), serialized
    bytes, or a ModelProto (left unmodified). Models with external data come out with every
    tensor embedded.

    Example:
        >>> injector = Injector("quant.onnx")  # doctest: +SKIP
        >>> for seed in range(100):  # doctest: +SKIP
        ...     faulty_bytes, fault_map = injector.inject(Chip("flip", rate=1e-3, seed=seed))
        ...     session = onnxruntime.InferenceSession(faulty_bytes)
    """

    def __init__(self, model: str | os.PathLike | bytes | onnx.ModelProto):
        base: bytes | None = None
        if isinstance(model, (bytes, bytearray, memoryview)):
            base = bytes(model)
            proto = parse_model(base, "model bytes")
        elif isinstance(model, onnx.ModelProto):
            proto = model
            if any(_is_external(t) for t in iter_tensors(proto.graph)):
                raise EdgefaultError("model proto refers to external data that is not loaded; pass the model's path")
        else:
            file = Path(model)
            try:
                # Reading the bytes ourselves lets a self-contained file serve as the cached copy as is.
                base = file.read_bytes() if file.is_file() else None
                proto = parse_model(base, str(file)) if base is not None else load_model(file)
            except EdgefaultError:
                # External data (checked to stay in the model's folder), or the same error again.
                base, proto = None, load_model(file)
        self._memories = {flag: WeightMemory.from_model(proto, include_bias=flag) for flag in (False, True)}
        full = self._memories[True]
        spans = _weight_spans(base, full) if base is not None else None
        if spans is None:
            base = _serialize_with_raw_weights(proto, full)
            spans = _weight_spans(base, full)
            if spans is None:
                raise EdgefaultError("cannot locate the weight bytes in the serialized model")
        self._base = base
        self._offsets = spans
        keys = {entry.key for entry in proto.metadata_props}
        # Re-injecting a faulty model adds a second entry rather than overwriting the first.
        self.metadata_key = next(k for k in _candidate_keys() if k not in keys)

    def memory(self, include_bias: bool = False) -> WeightMemory:
        """The model's weight memory, with or without int32 biases.

        Example:
            >>> Injector("quant.onnx").memory().nbits  # doctest: +SKIP
            64768
        """
        return self._memories[include_bias]

    def arrays(self, include_bias: bool = False) -> dict[str, np.ndarray]:
        """Read-only views of the clean weight arrays, by tensor name.

        Example:
            >>> Injector("quant.onnx").arrays()["conv1.weight_quantized"].shape  # doctest: +SKIP
            (8, 1, 3, 3)
        """
        return {
            t.name: np.frombuffer(self._base, dtype=np.dtype(t.dtype).newbyteorder("<"), count=t.size,
                                  offset=self._offsets[t.name]).reshape(t.shape)
            for t in self.memory(include_bias).tensors
        }

    def inject(self, chip: Chip) -> tuple[bytes, FaultMap]:
        """Sample the chip on this model and return the faulty serialized model and its fault map.

        Example:
            >>> faulty_bytes, fault_map = Injector("quant.onnx").inject(Chip("sa1", count=10))  # doctest: +SKIP
        """
        buffer, fault_map = self._build(*self._chip_records(chip))
        return buffer.tobytes(), fault_map

    def inject_map(self, source: str | os.PathLike | dict) -> tuple[bytes, FaultMap]:
        """Re-apply a recorded fault map (a path or a parsed dict) to this model.

        Example:
            >>> faulty_bytes, fault_map = Injector("other.onnx").inject_map("map.json")  # doctest: +SKIP
        """
        buffer, fault_map = self._build(*self._map_records(source))
        return buffer.tobytes(), fault_map

    def apply(self, records: FaultRecords, chip: Chip | None = None) -> tuple[bytes, FaultMap]:
        """Apply ready-made records (drawn on :meth:`memory`) to the model; ``chip`` goes in the metadata entry.

        Example:
            >>> injector = Injector("quant.onnx")  # doctest: +SKIP
            >>> records = sample_faults(injector.memory(), Chip("flip", count=3))  # doctest: +SKIP
            >>> faulty_bytes, fault_map = injector.apply(records)  # doctest: +SKIP
        """
        buffer, fault_map = self._build(records, chip, None)
        return buffer.tobytes(), fault_map

    def _chip_records(self, chip: Chip) -> tuple[FaultRecords, Chip, int]:
        memory = self.memory(chip.include_bias)
        return sample_faults(memory, chip), chip, target_bits(memory, chip)

    def _map_records(self, source: str | os.PathLike | dict) -> tuple[FaultRecords, Chip | None, None]:
        entries, chip = read_fault_map(source)
        memory = self.memory(True if chip is None else chip.include_bias)
        return records_from_entries(entries, memory), chip, None

    def _build(self, records: FaultRecords, chip: Chip | None, target: int | None) -> tuple[np.ndarray, FaultMap]:
        """The faulty model as a uint8 array (a file write needs no bytes copy), and its fault map."""
        memory = next((m for m in self._memories.values() if m.names == records.tensors), None)
        if memory is None:
            raise EdgefaultError("the fault records were not drawn on this model's weight memory")
        specs = memory.tensors
        itemsize = np.array([t.itemsize for t in specs], dtype=np.int64)
        start = np.array([self._offsets[t.name] for t in specs], dtype=np.int64)
        element = start[records.tensor] + records.index * itemsize[records.tensor]
        clean = np.frombuffer(self._base, dtype=np.uint8)
        before = np.zeros(len(records), dtype=np.int64)
        after = np.zeros(len(records), dtype=np.int64)
        writes = []
        for dtype in sorted({t.dtype for t in specs}):
            rows = np.flatnonzero(np.array([t.dtype == dtype for t in specs])[records.tensor])
            if rows.size:
                elements = element[rows]
                words, old, new = _patch_elements(clean, elements, records.bit[rows], records.kind[rows], dtype)
                group = np.cumsum(np.concatenate([[False], elements[1:] != elements[:-1]]))
                signed = np.dtype(dtype).newbyteorder("<")
                before[rows] = old.view(signed)[group]
                after[rows] = new.view(signed)[group]
                writes.append((words, new.view(np.uint8)))
        fault_map = FaultMap(records, before, after, memory, chip, target)
        note = {
            "chip": None if chip is None else chip.to_dict(),
            "faults": len(records),
            "changed_bits": fault_map.changed_bits,
            "memory_bits": memory.nbits,
        }
        entry = metadata_entry(self.metadata_key, json.dumps(note, sort_keys=True))
        out = np.empty(clean.size + len(entry), dtype=np.uint8)
        out[: clean.size] = clean
        out[clean.size :] = np.frombuffer(entry, dtype=np.uint8)
        for words, new_bytes in writes:
            width = new_bytes.size // max(words.size, 1)
            out[(words[:, None] + np.arange(width)).reshape(-1)] = new_bytes
        return out, fault_map


def inject_model_bytes(model: bytes | onnx.ModelProto, chip: Chip) -> tuple[bytes, FaultMap]:
    """One-shot in-memory injection; build an :class:`Injector` instead to inject many chips.

    Example:
        >>> faulty, fault_map = inject_model_bytes(Path("quant.onnx").read_bytes(), Chip("flip", rate=1e-3))  # doctest: +SKIP
    """
    return Injector(model).inject(chip)


def inject_file(
    model_path: str | os.PathLike,
    out_path: str | os.PathLike,
    chip: Chip | None = None,
    map_in: str | os.PathLike | None = None,
    map_out: str | os.PathLike | None = None,
) -> FaultMap:
    """Write a faulty copy of a model (and optionally its fault map); give a chip or a map to re-apply.

    Both outputs are built in memory first and written atomically; the input is only read.

    Example:
        >>> inject_file("model.onnx", "faulty.onnx", Chip("flip", rate=1e-3), map_out="map.json")  # doctest: +SKIP
    """
    if (chip is None) == (map_in is None):
        raise EdgefaultError("give exactly one of a chip and a fault map to re-apply")
    source = Path(model_path)
    protected = {source.resolve(), *(Path(p).resolve() for p in ([map_in] if map_in else []))}
    for label, path in (("--out", out_path), ("--map", map_out)):
        if path is not None and Path(path).resolve() in protected:
            raise EdgefaultError(f"{label} {path} would overwrite an input file")
    if map_out is not None and Path(map_out).resolve() == Path(out_path).resolve():
        raise EdgefaultError("--map and --out must be different files")
    injector = Injector(source)
    faulty, fault_map = injector._build(*(injector._chip_records(chip) if chip else injector._map_records(map_in)))
    if map_out is not None:
        fault_map.write(map_out)
    write_bytes_atomic(out_path, faulty)
    return fault_map


def _candidate_keys():
    yield METADATA_KEY
    number = 2
    while True:
        yield f"{METADATA_KEY}.{number}"
        number += 1


def _is_external(tensor: onnx.TensorProto) -> bool:
    return tensor.HasField("data_location") and tensor.data_location == onnx.TensorProto.EXTERNAL


def _weight_spans(base: bytes, memory: WeightMemory) -> dict[str, int] | None:
    """Offsets of each weight tensor's raw bytes, or None unless every one is found once with the right length."""
    try:
        spans = raw_data_spans(base)
    except ValueError:
        return None
    offsets = {}
    for tensor in memory.tensors:
        found = spans.get(tensor.name, [])
        if len(found) != 1 or found[0][1] != tensor.nbytes:
            return None
        offsets[tensor.name] = found[0][0]
    return offsets


def _serialize_with_raw_weights(proto: onnx.ModelProto, memory: WeightMemory) -> bytes:
    """Serialize the model, storing any weight held in typed fields (e.g. int32_data) as raw bytes instead."""
    typed = [t for t, _, _ in find_weight_tensors(proto, include_bias=True) if not t.HasField("raw_data")]
    if typed:
        copy = onnx.ModelProto()
        copy.CopyFrom(proto)  # never modify the caller's proto
        stored = {t.name: t for t in copy.graph.initializer}
        for tensor in typed:
            stored[tensor.name].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor), tensor.name))
        proto = copy
    try:
        return proto.SerializeToString()
    except ValueError as exc:  # protobuf refuses messages over 2 GB
        raise EdgefaultError(f"cannot serialize the model in one piece ({exc})") from None


def _patch_elements(clean, element, bits, kinds, dtype):
    """Distinct faulty element positions, their stored values before and after (unsigned, little-endian)."""
    word = np.dtype(f"<u{np.dtype(dtype).itemsize}")
    starts, clear, stuck_one, toggle = word_masks(element, bits, kinds, dtype=word)
    words = element[starts]
    old = clean[words[:, None] + np.arange(word.itemsize)].view(word).reshape(-1)
    return words, old, patch_words(old, clear, stuck_one, toggle)
