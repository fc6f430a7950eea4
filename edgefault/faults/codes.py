"""Where a stored cell lies in a tensor's raw bytes, patching those bytes, and reading codes back.

A record (tensor, code index ``i``, bit ``b``) of a tensor whose codes are
``container_bits`` apart lies at bit ``i * container_bits + b`` of the tensor's raw bytes
(ONNX's little-endian, low-nibble-first layout). For k-bit codes kept in int8 containers the
faulty code is then sign-extended over the container's upper bits.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from edgefault.faults.memory import WeightMemory
from edgefault.faults.records import FaultRecords, patch_words, word_masks


def raw_positions(records: FaultRecords, memory: WeightMemory, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(byte position in the buffer, bit within that byte) of each record; ``offsets`` are the tensors' raw starts.

    Example:
        >>> memory = WeightMemory.from_tensors([("w", "int4", (3,), "t")])
        >>> [x.tolist() for x in raw_positions(FaultRecords(("w",), [0], [1], [3], [0], [7]), memory, np.array([100]))]
        [[100], [7]]
    """
    stride = np.array([t.container_bits for t in memory.tensors], dtype=np.int64)[records.tensor]
    position = records.index * stride + records.bit
    return offsets[records.tensor] + (position >> 3), position & 7


@dataclasses.dataclass(frozen=True)
class Patch:
    """The faulty bytes of a set of records: buffer positions, old and new values, and each record's byte.

    ``group[i]`` indexes the byte (in ``where``/``old``/``new``) holding record ``i``'s cell;
    ``changed`` counts the stored bits that changed (not the sign-extension copies).
    """

    where: np.ndarray
    old: np.ndarray
    new: np.ndarray
    group: np.ndarray
    changed: int


def patch_bytes(buffer: np.ndarray, records: FaultRecords, memory: WeightMemory, offsets: np.ndarray) -> Patch:
    """The faulty bytes of ``records`` on ``buffer`` (left untouched); ``offsets`` are the tensors' raw starts.

    Example:
        >>> memory = WeightMemory.from_tensors([("w", "int8", (2,), "t", 4, "container")])
        >>> buffer = np.array([7, 0], dtype=np.uint8)  # codes 7 and 0 of a 4-bit tensor
        >>> patch = patch_bytes(buffer, FaultRecords(("w",), [0], [0], [3], [0], [3]), memory, np.array([0]))
        >>> patch.new.view(np.int8).tolist(), patch.changed  # bit 3 is the 4-bit sign: 7 becomes -1
        ([-1], 1)
    """
    byte, bit = raw_positions(records, memory, offsets)
    starts, clear, stuck_one, toggle = word_masks(byte, bit, records.kind)
    where = byte[starts]
    old = buffer[where]
    new = patch_words(old, clear, stuck_one, toggle)
    group = np.zeros(len(records), dtype=np.int64)
    group[starts[1:]] = 1
    np.cumsum(group, out=group)
    tensors = memory.tensors
    if not any(t.packing == "container" for t in tensors):  # every bit of a faulty byte is a stored cell
        return Patch(where, old, new, group, int(np.bitwise_count(old ^ new).sum()))
    owner = records.tensor[starts]
    cells = np.array([(1 << t.bits) - 1 if t.packing == "container" else 0xFF for t in tensors], np.uint8)[owner]
    extend = np.array([t.packing == "container" and t.signed for t in tensors], dtype=bool)[owner]
    top = np.array([t.bits - 1 for t in tensors], dtype=np.uint8)[owner]
    negative = extend & (((new >> top) & 1) == 1)
    new = np.where(extend, new & cells, new) | np.where(negative, ~cells, 0).astype(np.uint8)
    return Patch(where, old, new, group, int(np.bitwise_count((old ^ new) & cells).sum()))


def patch_values(patch: Patch, records: FaultRecords, memory: WeightMemory) -> tuple[np.ndarray, np.ndarray]:
    """Each record's code before and after, for codes that lie within one byte (all but 16- and 32-bit ones).

    Example:
        >>> memory = WeightMemory.from_tensors([("w", "int4", (2,), "t")])
        >>> records = FaultRecords(("w",), [0], [1], [3], [0], [7])
        >>> [v.tolist() for v in patch_values(patch_bytes(np.array([0x10], np.uint8), records, memory,
        ...                                               np.array([0])), records, memory)]
        [[1], [-7]]
    """
    tensors = memory.tensors
    stride = np.array([t.container_bits for t in tensors], dtype=np.int64)[records.tensor]
    bits = np.array([t.bits for t in tensors], dtype=np.int64)[records.tensor]
    signed = np.array([t.signed for t in tensors], dtype=bool)[records.tensor]
    shift = (records.index * stride) & 7
    return tuple(_decode(byte[patch.group].astype(np.int64) >> shift, bits, signed) for byte in (patch.old, patch.new))


def _decode(raw: np.ndarray, bits: np.ndarray, signed: np.ndarray) -> np.ndarray:
    values = raw & ((1 << bits) - 1)
    return np.where(signed & (values >> (bits - 1) == 1), values - (1 << bits), values)


def code_values(buffer: np.ndarray, records: FaultRecords, memory: WeightMemory, offsets: np.ndarray) -> np.ndarray:
    """The value of each record's code, read from ``buffer`` (signed codes as two's complement), as int64.

    Example:
        >>> memory = WeightMemory.from_tensors([("w", "int4", (2,), "t")])
        >>> code_values(np.array([0x9F], np.uint8), FaultRecords(("w",), [0, 0], [0, 1], [0, 0], [0, 0], [0, 4]),
        ...             memory, np.array([0])).tolist()
        [-1, -7]
    """
    tensors = memory.tensors
    stride = np.array([t.container_bits for t in tensors], dtype=np.int64)[records.tensor]
    bits = np.array([t.bits for t in tensors], dtype=np.int64)[records.tensor]
    signed = np.array([t.signed for t in tensors], dtype=bool)[records.tensor]
    start = records.index * stride
    first = offsets[records.tensor] + (start >> 3)
    values = np.zeros(len(records), dtype=np.int64)
    per_tensor = np.array([max(t.container_bits // 8, 1) for t in tensors], dtype=np.int64)  # bytes per code
    for width in sorted(set(per_tensor.tolist())):
        rows = np.flatnonzero(per_tensor[records.tensor] == width)
        raw = buffer[first[rows, None] + np.arange(width)].astype(np.int64)
        values[rows] = (raw << (8 * np.arange(width))).sum(axis=1)
    return _decode(values >> (start & 7), bits, signed)


def decode_tensor(raw: np.ndarray, tensor) -> np.ndarray:
    """All codes of one tensor from its raw bytes, in the tensor's shape (packed codes: flat).

    Example:
        >>> from edgefault.faults.memory import WeightTensor
        >>> decode_tensor(np.array([0x9F, 0x02], np.uint8), WeightTensor("w", "int4", (3,), "t")).tolist()
        [-1, -7, 2]
    """
    if tensor.container_bits >= 8:
        dtype = np.dtype(tensor.dtype).newbyteorder("<")
        return raw[: tensor.nbytes].view(dtype).reshape(tensor.shape)
    per_byte = 8 // tensor.container_bits
    shifts = np.arange(per_byte, dtype=np.uint8) * tensor.container_bits
    codes = ((raw[: tensor.nbytes, None] >> shifts) & ((1 << tensor.bits) - 1)).reshape(-1)[: tensor.size]
    codes = codes.astype(np.int8 if tensor.signed else np.uint8)
    if tensor.signed:
        codes = np.where(codes >= 1 << (tensor.bits - 1), codes - (1 << tensor.bits), codes).astype(np.int8)
    return codes.reshape(tensor.shape) if tensor.packing == "native" else codes
