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
import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from edgefault.errors import EdgefaultError
from edgefault.faults.chip import Chip
from edgefault.faults.faultmap import FaultMap, MapSummary, read_fault_map, records_from_entries
from edgefault.faults.codes import code_values, decode_tensor, patch_bytes, patch_values
from edgefault.faults.discover import Discovery, constant_tensors, discover
from edgefault.faults.memory import WeightMemory
from edgefault.faults.records import FaultRecords
from edgefault.faults.sampling import sample_fault_windows, sample_faults, target_bits
from edgefault.faults.wire import metadata_entry, raw_data_spans
from edgefault.fileio import atomic_paths, check_outputs
from edgefault.onnxio import external_tensors, load_model, parse_model

METADATA_KEY = "edgefault.fault_chip"
SAMPLING = "nested-bands"  # how chips draw their cells: rate bands with one threshold per cell


class Injector:
    """A model parsed once, ready to receive many chips without touching the disk.

    ``model`` is a path (external data allowed, inside the model's folder), serialized
    bytes, or a ModelProto (left unmodified). Models with external data come out with every
    tensor embedded. ``stored_bits`` declares k-bit codes in int8/uint8 weights (see
    :func:`~edgefault.faults.discover.discover`); :attr:`discovery` says what was covered.
    Not thread-safe: building an output patches the cached copy in place for a moment
    (campaigns use one injector per process).
    """

    def __init__(self, model: str | os.PathLike | bytes | onnx.ModelProto, stored_bits: int | None = None):
        base: np.ndarray | None = None
        if isinstance(model, (bytes, bytearray, memoryview)):
            base = np.frombuffer(model, dtype=np.uint8).copy()  # the caller's bytes stay untouched
            proto = parse_model(base.data, "model bytes")
        elif isinstance(model, onnx.ModelProto):
            proto = model
            if external_tensors(proto.graph):
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
        self.discovery: Discovery = discover(proto, stored_bits)
        self._memories: dict[bool, WeightMemory] = {}
        self._coverage: dict[bool, dict] = {}
        full = self.memory(include_bias=True)
        spans = _weight_spans(base, full) if base is not None else None
        if spans is None:
            base = np.frombuffer(_serialize_with_raw_weights(proto, full.names), dtype=np.uint8).copy()
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
        """
        if include_bias not in self._memories:
            self._memories[include_bias] = self.discovery.memory(include_bias)
        return self._memories[include_bias]

    def coverage_line(self, include_bias: bool = False) -> str:
        """The one-line coverage report of :meth:`memory`.
        """
        return self.discovery.coverage_line(self.memory(include_bias))

    def arrays(self, include_bias: bool = False) -> dict[str, np.ndarray]:
        """Read-only clean codes by tensor name: views of the cached copy, or decoded copies for 4-bit and packed codes.
        """
        views = {}
        for tensor in self.memory(include_bias).tensors:
            start = self._offsets[tensor.name]
            view = decode_tensor(self._buffer[start : start + tensor.nbytes], tensor)
            view.setflags(write=False)
            views[tensor.name] = view
        return views

    def inject(self, chip: Chip) -> tuple[bytes, FaultMap]:
        """Sample the chip on this model and return the faulty serialized model and its fault map.
        """
        with self.patched(*self._chip_records(chip)) as (parts, fault_map):
            return b"".join(parts), fault_map

    def inject_map(self, source: str | os.PathLike | dict) -> tuple[bytes, FaultMap]:
        """Re-apply a recorded fault map (a path or a parsed dict) to this model.
        """
        with self.patched(*self._map_records(source)) as (parts, fault_map):
            return b"".join(parts), fault_map

    def apply(self, records: FaultRecords, chip: Chip | None = None) -> tuple[bytes, FaultMap]:
        """Apply ready-made records (drawn on :meth:`memory`) to the model; ``chip`` goes in the metadata entry.
        """
        with self.patched(records, chip, None) as (parts, fault_map):
            return b"".join(parts), fault_map

    @contextlib.contextmanager
    def patched(self, records: FaultRecords, chip: Chip | None = None, target: int | None = None):
        """Within the block, the faulty model as buffers to concatenate (or write in turn), and its map.

        The buffers are valid only inside the block: the cached copy is restored on exit.
        """
        patch, fault_map = self._apply(records, chip, target)
        try:
            note = self._note(chip, len(records), patch.changed, fault_map.memory.nbits)
            yield (self._buffer.data, note), fault_map
        finally:
            self._buffer[patch.where] = patch.old

    def _apply(self, records: FaultRecords, chip: Chip | None, target: int | None):
        """Patch the records into the cached copy; return the patch (to undo it) and their fault map."""
        memory = next((m for m in self._memories.values() if m.names == records.tensors), None)
        if memory is None:
            raise EdgefaultError("the fault records were not drawn on this model's weight memory")
        offsets = np.array([self._offsets[name] for name in memory.names], dtype=np.int64)
        patch = patch_bytes(self._buffer, records, memory, offsets)
        wide = [i for i, t in enumerate(memory.tensors) if t.container_bits > 8]  # int16/int32 codes span bytes
        if wide and np.isin(records.tensor, wide).any():
            before = code_values(self._buffer, records, memory, offsets)
            self._buffer[patch.where] = patch.new
            values = before, code_values(self._buffer, records, memory, offsets)
        else:  # the usual case: each code in one byte, its values computed only if asked for
            self._buffer[patch.where] = patch.new
            values = functools.partial(patch_values, patch, records, memory)
        if memory.include_bias not in self._coverage:
            self._coverage[memory.include_bias] = self.discovery.coverage(memory)
        return patch, FaultMap(records, memory, values, chip, target, patch.changed,
                               self._coverage[memory.include_bias])

    def _note(self, chip: Chip | None, faults: int, changed_bits: int, memory_bits: int) -> bytes:
        """The metadata entry recording the chip and its counts, appended to the faulty model."""
        note = {"chip": None if chip is None else chip.to_dict(), "faults": faults, "changed_bits": changed_bits,
                "memory_bits": memory_bits, "sampling": SAMPLING}
        return metadata_entry(self.metadata_key, json.dumps(note, sort_keys=True))

    def _chip_records(self, chip: Chip) -> tuple[FaultRecords, Chip, int]:
        memory = self.memory(chip.include_bias)
        return sample_faults(memory, chip), chip, target_bits(memory, chip)

    def _map_records(self, source: str | os.PathLike | dict) -> tuple[FaultRecords, Chip | None, None]:
        entries, chip = read_fault_map(source)
        memory = self.memory(True if chip is None else chip.include_bias)
        return records_from_entries(entries, memory), chip, None


def inject_model_bytes(model: bytes | onnx.ModelProto, chip: Chip) -> tuple[bytes, FaultMap]:
    """One-shot in-memory injection; build an :class:`Injector` instead to inject many chips.
    """
    return Injector(model).inject(chip)


def inject_file(
    model_path: str | os.PathLike,
    out_path: str | os.PathLike,
    chip: Chip | None = None,
    map_in: str | os.PathLike | None = None,
    map_out: str | os.PathLike | None = None,
    stored_bits: int | None = None,
) -> MapSummary:
    """Write a faulty copy of a model (and optionally its fault map); give a chip or a map to re-apply.

    ``stored_bits`` declares k-bit codes in the int8/uint8 weights of a model whose metadata does
    not record them (see :class:`Injector`).

    Both outputs are written to temporary files and renamed into place together; the map records
    the faulty model's SHA-256 (``model_sha256``). No output may land on an input or its external
    data. A chip is drawn and patched in pieces of whole words (:func:`sample_fault_windows`), and
    a map's fault lines are spooled to an unnamed temporary file, so memory stays a few bytes per
    fault at most whatever the rate; the result is the :class:`MapSummary` of the whole map.

    Example:
        >>> inject_file("model.onnx", "faulty.onnx", Chip("flip", count=3, seed=0), map_out="map.json").faults
        3
    """
    if (chip is None) == (map_in is None):
        raise EdgefaultError("give exactly one of a chip and a fault map to re-apply")
    source = Path(model_path)
    check_outputs({"`out`": out_path, "`map_out`": map_out}, [source, *([map_in] if map_in else [])])
    injector = Injector(source, stored_bits)
    if chip is not None:  # drawn and patched in pieces of whole words: memory follows a piece, not the chip
        memory = injector.memory(chip.include_bias)
        pieces, target = sample_fault_windows(memory, chip), target_bits(memory, chip)
    else:
        records, chip, target = injector._map_records(map_in)
        memory, pieces = next(m for m in injector._memories.values() if m.names == records.tensors), [records]
    targets = [out_path, *([map_out] if map_out is not None else [])]
    with atomic_paths(*targets) as temporaries, \
            (tempfile.TemporaryFile(dir=temporaries[1].parent) if map_out is not None else contextlib.nullcontext()) \
            as spool:
        total = MapSummary(memory, chip, target, injector.discovery.coverage(memory), spool)
        for records in pieces:  # the cached copy is only this command's: the patches stay
            total.add(injector._apply(records, chip, target)[1])
        digest = hashlib.sha256()
        with open(temporaries[0], "wb") as handle:
            for part in (injector._buffer.data, injector._note(chip, total.faults, total.changed_bits, memory.nbits)):
                handle.write(part)
                digest.update(part)
        if map_out is not None:  # renamed together with the model: the pair is both new or both old
            with open(temporaries[1], "wb") as handle:
                total.encode_to(handle, model_sha256=digest.hexdigest())
    return total


def _candidate_keys():
    yield METADATA_KEY
    number = 2
    while True:
        yield f"{METADATA_KEY}.{number}"
        number += 1


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


def _serialize_with_raw_weights(proto: onnx.ModelProto, names) -> bytes:
    """Serialize the model, storing any weight held in typed fields (e.g. int32_data) as raw bytes instead."""
    typed = [n for n, (t, _) in constant_tensors(proto.graph).items() if n in names and not t.HasField("raw_data")]
    if typed:
        copy = onnx.ModelProto()
        copy.CopyFrom(proto)  # never modify the caller's proto
        constants = constant_tensors(copy.graph)
        for name in typed:
            tensor = constants[name][0]
            stored = numpy_helper.from_array(numpy_helper.to_array(tensor), tensor.name)
            stored.data_type = tensor.data_type
            tensor.CopyFrom(stored)
        proto = copy
    try:
        return proto.SerializeToString()
    except ValueError as exc:  # protobuf refuses messages over 2 GB
        raise EdgefaultError(f"cannot serialize the model in one piece ({exc})") from None
