"""Injecting a chip into a model: in memory for campaigns (parse once, patch bytes per chip), or file to file.

The injector keeps one serialized copy of the model and the byte offset of every weight
tensor inside it. A chip then costs its sampling, a write per faulty byte into that copy,
one copy out (or one file write) with a metadata entry appended, and the restore of the
faulty bytes: the model is never parsed or serialized again, and everything except the
faulted weight bytes and that entry stays byte-for-byte as it was.
"""

from __future__ import annotations

import contextlib
import functools
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
from edgefault.fileio import atomic_path
from edgefault.runtime.loading import iter_tensors, load_model, parse_model

METADATA_KEY = "edgefault.fault_chip"


class Injector:
    """A model parsed once, ready to receive many chips without touching the disk.

    ``model`` is a path (external data allowed, inside the model's folder), serialized
    bytes, or a ModelProto (left unmodified). Models with external data come out with every
    tensor embedded. Not thread-safe: building an output patches the cached copy in place
    for a moment (campaigns use one injector per process).

    Example:
        >>> injector = Injector("quant.onnx")  # doctest: +SKIP
        >>> for seed in range(100):  # doctest: +SKIP
        ...     faulty_bytes, fault_map = injector.inject(Chip("flip", rate=1e-3, seed=seed))
        ...     session = onnxruntime.InferenceSession(faulty_bytes)
    """

    def __init__(self, model: str | os.PathLike | bytes | onnx.ModelProto):
        base: np.ndarray | None = None
        if isinstance(model, (bytes, bytearray, memoryview)):
            base = np.frombuffer(model, dtype=np.uint8).copy()  # the caller's bytes stay untouched
            proto = parse_model(base.data, "model bytes")
        elif isinstance(model, onnx.ModelProto):
            proto = model
            if any(_is_external(t) for t in iter_tensors(proto.graph)):
                raise EdgefaultError("model proto refers to external data that is not loaded; pass the model's path")
        else:
            file = Path(model)
            try:
                # Reading the file into a writable array lets a self-contained model serve as the
                # cached copy without another 11 MB copy for a ResNet-18.
                base = _read_writable(file) if file.is_file() else None
                proto = parse_model(base.data, str(file)) if base is not None else load_model(file)
            except EdgefaultError:
                # External data (checked to stay in the model's folder), or the same error again.
                base, proto = None, load_model(file)
        found = find_weight_tensors(proto, include_bias=True)
        self._memories = {
            flag: WeightMemory.from_found([f for f in found if flag or f[1] != "int32"], include_bias=flag)
            for flag in (False, True)
        }
        full = self._memories[True]
        spans = _weight_spans(base, full) if base is not None else None
        if spans is None:
            base = np.frombuffer(_serialize_with_raw_weights(proto), dtype=np.uint8).copy()
            spans = _weight_spans(base, full)
            if spans is None:
                raise EdgefaultError("cannot locate the weight bytes in the serialized model")
        # A private, writable copy: each chip is patched into it, copied out, then undone.
        self._buffer = base
        self._offsets = spans
        keys = {entry.key for entry in proto.metadata_props}
        # Re-injecting a faulty model adds a second entry rather than overwriting the first.
        self.metadata_key = next(k for k in _candidate_keys() if k not in keys)

    def memory(self, include_bias: bool = False) -> WeightMemory:
        """The model's weight memory, with or without int32 biases.

        Example:
            >>> Injector("quant.onnx").memory().nbits  # doctest: +SKIP
            72512
        """
        return self._memories[include_bias]

    def arrays(self, include_bias: bool = False) -> dict[str, np.ndarray]:
        """Read-only views of the clean weight arrays (of the cached copy), by tensor name.

        Example:
            >>> Injector("quant.onnx").arrays()["conv1.weight_quantized"].shape  # doctest: +SKIP
            (8, 1, 3, 3)
        """
        views = {}
        for tensor in self.memory(include_bias).tensors:
            start = self._offsets[tensor.name]
            view = self._buffer[start : start + tensor.nbytes].view(np.dtype(tensor.dtype).newbyteorder("<"))
            view.setflags(write=False)
            views[tensor.name] = view.reshape(tensor.shape)
        return views

    def inject(self, chip: Chip) -> tuple[bytes, FaultMap]:
        """Sample the chip on this model and return the faulty serialized model and its fault map.

        Example:
            >>> faulty_bytes, fault_map = Injector("quant.onnx").inject(Chip("sa1", count=10))  # doctest: +SKIP
        """
        with self.patched(*self._chip_records(chip)) as (parts, fault_map):
            return b"".join(parts), fault_map

    def inject_map(self, source: str | os.PathLike | dict) -> tuple[bytes, FaultMap]:
        """Re-apply a recorded fault map (a path or a parsed dict) to this model.

        Example:
            >>> faulty_bytes, fault_map = Injector("other.onnx").inject_map("map.json")  # doctest: +SKIP
        """
        with self.patched(*self._map_records(source)) as (parts, fault_map):
            return b"".join(parts), fault_map

    def apply(self, records: FaultRecords, chip: Chip | None = None) -> tuple[bytes, FaultMap]:
        """Apply ready-made records (drawn on :meth:`memory`) to the model; ``chip`` goes in the metadata entry.

        Example:
            >>> injector = Injector("quant.onnx")  # doctest: +SKIP
            >>> records = sample_faults(injector.memory(), Chip("flip", count=3))  # doctest: +SKIP
            >>> faulty_bytes, fault_map = injector.apply(records)  # doctest: +SKIP
        """
        with self.patched(records, chip, None) as (parts, fault_map):
            return b"".join(parts), fault_map

    @contextlib.contextmanager
    def patched(self, records: FaultRecords, chip: Chip | None = None, target: int | None = None):
        """Within the block, the faulty model as buffers to concatenate (or write in turn), and its map.

        The buffers are valid only inside the block: the cached copy is restored on exit.

        Example:
            >>> with injector.patched(records) as (parts, fault_map):  # doctest: +SKIP
            ...     size = sum(len(part) for part in parts)
        """
        memory = next((m for m in self._memories.values() if m.names == records.tensors), None)
        if memory is None:
            raise EdgefaultError("the fault records were not drawn on this model's weight memory")
        offsets = np.array([self._offsets[name] for name in memory.names], dtype=np.int64)
        # Each tensor's bytes lie contiguously in both the memory and the buffer, so a fault's
        # byte moves by the same amount as its tensor's start.
        shift = offsets - np.array([t.offset for t in memory.tensors], dtype=np.int64)
        position = (records.address >> 3) + shift[records.tensor]
        starts, clear, stuck_one, toggle = word_masks(position, records.address & 7, records.kind)
        where = position[starts]
        old = self._buffer[where]
        new = patch_words(old, clear, stuck_one, toggle)
        dtypes = {t.dtype for t in memory.tensors}
        try:
            if len(dtypes) == 1 and memory.tensors[0].itemsize == 1:  # the usual case: an element is its byte
                stored = np.dtype(dtypes.pop())
                values = functools.partial(_byte_values, old.view(stored), new.view(stored), starts, len(records))
                self._buffer[where] = new
            else:  # int32 biases too: read whole elements before and after patching
                elements = _element_positions(records, memory, offsets)
                before = _read_elements(self._buffer, elements, len(records))
                self._buffer[where] = new
                values = before, _read_elements(self._buffer, elements, len(records))
            changed = int(np.bitwise_count(old ^ new).sum())  # each changed bit is one record's
            fault_map = FaultMap(records, memory, values, chip, target, changed)
            note = {
                "chip": None if chip is None else chip.to_dict(),
                "faults": len(records),
                "changed_bits": changed,
                "memory_bits": memory.nbits,
            }
            yield (self._buffer.data, metadata_entry(self.metadata_key, json.dumps(note, sort_keys=True))), fault_map
        finally:
            self._buffer[where] = old

    def _chip_records(self, chip: Chip) -> tuple[FaultRecords, Chip, int]:
        memory = self.memory(chip.include_bias)
        return sample_faults(memory, chip), chip, target_bits(memory, chip)

    def _map_records(self, source: str | os.PathLike | dict) -> tuple[FaultRecords, Chip | None, None]:
        entries, chip = read_fault_map(source)
        memory = self.memory(True if chip is None else chip.include_bias)
        return records_from_entries(entries, memory), chip, None


def inject_model_bytes(model: bytes | onnx.ModelProto, chip: Chip) -> tuple[bytes, FaultMap]:
    """One-shot in-memory injection; build an :class:`Injector` instead to inject many chips.

    Example:
        >>> data = Path("quant.onnx").read_bytes()  # doctest: +SKIP
        >>> faulty, fault_map = inject_model_bytes(data, Chip("flip", rate=1e-3))  # doctest: +SKIP
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
    records = injector._chip_records(chip) if chip is not None else injector._map_records(map_in)
    with injector.patched(*records) as (parts, fault_map):
        if map_out is not None:
            fault_map.write(map_out)
        with atomic_path(out_path) as tmp, open(tmp, "wb") as handle:
            for part in parts:
                handle.write(part)
    return fault_map


def _candidate_keys():
    yield METADATA_KEY
    number = 2
    while True:
        yield f"{METADATA_KEY}.{number}"
        number += 1


def _is_external(tensor: onnx.TensorProto) -> bool:
    return tensor.HasField("data_location") and tensor.data_location == onnx.TensorProto.EXTERNAL


def _read_writable(file: Path) -> np.ndarray:
    """The file's bytes in a writable uint8 array (no zero-filling first: it is 11 MB for a ResNet-18)."""
    with open(file, "rb") as handle:
        data = np.empty(os.fstat(handle.fileno()).st_size, dtype=np.uint8)
        return data[: handle.readinto(memoryview(data))]


def _weight_spans(base: np.ndarray, memory: WeightMemory) -> dict[str, int] | None:
    """Offsets of each weight tensor's raw bytes, or None unless every one is found once with the right length."""
    try:
        spans = raw_data_spans(base.data)
    except ValueError:
        return None
    offsets = {}
    for tensor in memory.tensors:
        found = spans.get(tensor.name, [])
        if len(found) != 1 or found[0][1] != tensor.nbytes:
            return None
        offsets[tensor.name] = found[0][0]
    return offsets


def _serialize_with_raw_weights(proto: onnx.ModelProto) -> bytes:
    """Serialize the model, storing any weight held in typed fields (e.g. int32_data) as raw bytes instead."""
    typed = [t.name for t, _, _ in find_weight_tensors(proto, include_bias=True) if not t.HasField("raw_data")]
    if typed:
        copy = onnx.ModelProto()
        copy.CopyFrom(proto)  # never modify the caller's proto
        for tensor in copy.graph.initializer:
            if tensor.name in typed:
                values = numpy_helper.to_array(tensor)
                for field in ("int32_data", "int64_data", "uint64_data"):
                    tensor.ClearField(field)
                tensor.raw_data = values.astype(values.dtype.newbyteorder("<")).tobytes()
        proto = copy
    try:
        return proto.SerializeToString()
    except ValueError as exc:  # protobuf refuses messages over 2 GB
        raise EdgefaultError(f"cannot serialize the model in one piece ({exc})") from None


def _byte_values(old: np.ndarray, new: np.ndarray, starts: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Per record, its byte's value before and after, from the values of the distinct faulty bytes."""
    group = np.zeros(count, dtype=np.int64)
    group[starts[1:]] = 1
    group = np.cumsum(group)
    return old[group], new[group]


def _element_positions(records: FaultRecords, memory: WeightMemory, offsets: np.ndarray):
    """Per element dtype: (record rows, buffer position of each record's element, dtype)."""
    dtypes = sorted({t.dtype for t in memory.tensors})
    codes = np.array([dtypes.index(t.dtype) for t in memory.tensors])[records.tensor]
    itemsize = np.array([t.itemsize for t in memory.tensors], dtype=np.int64)
    groups = []
    for code, dtype in enumerate(dtypes):
        rows = np.flatnonzero(codes == code)
        tensor = records.tensor[rows]
        groups.append((rows, offsets[tensor] + records.index[rows] * itemsize[tensor], dtype))
    return groups


def _read_elements(buffer: np.ndarray, groups, count: int) -> np.ndarray:
    """The int64 value of each record's element, read from the buffer (little-endian, as ONNX stores it)."""
    values = np.zeros(count, dtype=np.int64)
    for rows, positions, dtype in groups:
        stored = np.dtype(dtype).newbyteorder("<")
        values[rows] = buffer[positions[:, None] + np.arange(stored.itemsize)].view(stored).reshape(-1)
    return values
