"""Fault records (which bit of which tensor, and how it fails) and applying them to weight arrays.

Records are columns of numpy arrays rather than one object per fault: a chip at rate 1e-3
on a ResNet-18 holds about 90,000 faults, and a campaign draws thousands of chips.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np

from edgefault.errors import EdgefaultError

FLIP, SA0, SA1, MBU = 0, 1, 2, 3
KIND_NAMES = ("flip", "sa0", "sa1", "mbu")  # indexed by the codes above; ``stuck`` resolves to sa0/sa1


@dataclasses.dataclass(frozen=True, eq=False)
class FaultRecords:
    """Faulty bits, one per row: tensor, flat element index, bit within the element, kind code, address.

    ``tensor`` indexes ``tensors`` (names); ``kind`` holds :data:`FLIP`, :data:`SA0`,
    :data:`SA1` or :data:`MBU` (a bit of a multi-bit upset, flipped); ``address`` is the bit
    address in the weight memory the records were drawn on. Rows are in strictly increasing
    address order, so each bit appears once and the faults of one word are adjacent.

    Example:
        >>> records = FaultRecords(("w",), [0, 0], [3, 5], [7, 0], [FLIP, SA1], [31, 40])
        >>> len(records), records.kind_names()
        (2, ['flip', 'sa1'])
    """

    tensors: tuple[str, ...]
    tensor: np.ndarray
    index: np.ndarray
    bit: np.ndarray
    kind: np.ndarray
    address: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "tensors", tuple(self.tensors))
        columns = {"tensor": np.int32, "index": np.int64, "bit": np.int64, "kind": np.uint8, "address": np.int64}
        for name, dtype in columns.items():
            # A read-only view (a copy only where the dtype differs): records are shared, not edited.
            array = np.asarray(getattr(self, name), dtype=dtype).reshape(-1).view()
            array.setflags(write=False)
            object.__setattr__(self, name, array)
        if len({getattr(self, name).size for name in columns}) != 1:
            raise EdgefaultError("fault record columns must have equal lengths")
        if self.tensor.size and (self.tensor.min() < 0 or self.tensor.max() >= len(self.tensors)):
            raise EdgefaultError("fault record refers to a tensor position outside its tensor list")
        if self.kind.size and self.kind.max() > MBU:
            raise EdgefaultError("fault record has an unknown kind code")
        # Strictly increasing addresses: one record per bit, and the faults of one word adjacent.
        if np.any(self.address[1:] <= self.address[:-1]):
            raise EdgefaultError("fault records must be in increasing address order, one per bit")

    def __len__(self) -> int:
        return int(self.index.size)

    def kind_names(self) -> list[str]:
        """The kind of each record as a string.

        Example:
            >>> FaultRecords(("w",), [0], [0], [1], [SA0], [1]).kind_names()
            ['sa0']
        """
        return [KIND_NAMES[code] for code in self.kind.tolist()]

    def tensor_names(self) -> list[str]:
        """The tensor name of each record.

        Example:
            >>> FaultRecords(("a", "b"), [0, 1], [0, 0], [1, 1], [SA0, SA0], [1, 9]).tensor_names()
            ['a', 'b']
        """
        return [self.tensors[position] for position in self.tensor.tolist()]

    def take(self, keep: np.ndarray) -> FaultRecords:
        """The records selected by a boolean mask or an index array.

        Example:
            >>> len(FaultRecords(("w",), [0, 0], [0, 1], [0, 0], [0, 0], [0, 8]).take(np.array([True, False])))
            1
        """
        return FaultRecords(
            self.tensors, self.tensor[keep], self.index[keep], self.bit[keep], self.kind[keep], self.address[keep]
        )


def apply_faults(arrays: Mapping[str, np.ndarray], records: FaultRecords,
                 widths: Mapping[str, tuple[int, bool]] | None = None) -> dict[str, np.ndarray]:
    """Return new code arrays with the faults applied; the inputs are never modified.

    ``arrays`` hold one code per element (as :meth:`Injector.arrays` gives them: 4-bit codes
    unpacked). Faulted tensors are copied before patching; untouched tensors are passed
    through as the same (unmodified) objects. Values are patched in their little-endian bytes,
    so bit ``k`` of an element is bit ``k`` of its two's-complement value. ``widths`` maps a
    tensor whose codes are narrower than its elements to (stored bits, signed): its faulty
    codes are then sign- (or zero-) extended from that width, as a k-bit device gives them back.

    Example:
        >>> w = {"w": np.array([0, 1, -128], dtype=np.int8)}
        >>> apply_faults(w, FaultRecords(("w",), [0, 0], [0, 2], [7, 7], [FLIP, SA0], [7, 23]))["w"].tolist()
        [-128, 1, 0]
        >>> apply_faults({"w": np.array([5], np.int8)}, FaultRecords(("w",), [0], [0], [3], [FLIP], [3]),
        ...              {"w": (4, True)})["w"].tolist()
        [-3]
    """
    result = dict(arrays)
    for position in np.unique(records.tensor).tolist():
        name = records.tensors[position]
        if name not in arrays:
            raise EdgefaultError(f"fault record names tensor {name!r}, which is not among the weight arrays")
        original = np.asarray(arrays[name])
        if original.dtype.kind not in "iu":
            raise EdgefaultError(f"tensor {name!r} is {original.dtype}, not an integer weight tensor")
        # A little-endian copy puts bit k of an element in byte k // 8, as ONNX stores it.
        patched = np.array(original, dtype=original.dtype.newbyteorder("<"), order="C", copy=True)
        rows = records.tensor == position
        index, bit = records.index[rows], records.bit[rows]
        width = 8 * patched.dtype.itemsize
        if index.size and (index.min() < 0 or index.max() >= patched.size or bit.min() < 0 or bit.max() >= width):
            raise EdgefaultError(f"fault record outside tensor {name!r} ({patched.size} elements of {width} bits)")
        flat = patched.reshape(-1).view(np.uint8)
        positions = index * patched.dtype.itemsize + bit // 8
        starts, clear, stuck_one, toggle = word_masks(positions, bit % 8, records.kind[rows])
        flat[positions[starts]] = patch_words(flat[positions[starts]], clear, stuck_one, toggle)
        if widths is not None and name in widths and widths[name][0] < width:
            bits, signed = widths[name]
            codes = patched.astype(np.int64) & ((1 << bits) - 1)
            if signed:
                codes = np.where(codes >= 1 << (bits - 1), codes - (1 << bits), codes)
            patched = codes.astype(patched.dtype)
        result[name] = patched
    return result


def word_masks(words: np.ndarray, bits: np.ndarray, kinds: np.ndarray, dtype=np.uint8):
    """Combine the faults that share a word into one clear, one set and one toggle mask per word.

    ``words`` identifies each fault's word (a byte position, say) and must keep equal words
    adjacent, which records in address order do. Returns (index of each word's first fault,
    clear, set, toggle), the masks of ``dtype`` with bit ``bits[i]`` for fault i.

    Example:
        >>> word_masks(np.array([4, 4, 9]), np.array([0, 3, 1]), np.array([FLIP, SA1, SA0]))[0].tolist()
        [0, 2]
    """
    words = np.asarray(words)
    masks = np.left_shift(np.ones(1, dtype=dtype), np.asarray(bits, dtype=dtype))
    if not words.size:
        empty = np.zeros(0, dtype=dtype)
        return np.zeros(0, dtype=np.int64), empty, empty, empty
    starts = np.flatnonzero(np.concatenate([[True], words[1:] != words[:-1]]))
    kinds = np.asarray(kinds)
    single = int(kinds[0]) if kinds.min() == kinds.max() else None  # one kind: nothing to mask out
    combined = []
    for codes in ((SA0,), (SA1,), (FLIP, MBU)):
        if single is not None:
            combined.append(np.bitwise_or.reduceat(masks, starts) if single in codes else np.zeros(starts.size, dtype))
        else:
            chosen = np.isin(kinds, codes)
            combined.append(np.bitwise_or.reduceat(np.where(chosen, masks, np.zeros(1, dtype)), starts))
    return (starts, *combined)


def patch_words(values: np.ndarray, clear: np.ndarray, stuck_one: np.ndarray, toggle: np.ndarray) -> np.ndarray:
    """Faulty words: stuck-at-0 bits cleared, stuck-at-1 bits set, flipped bits toggled.

    Example:
        >>> patch_words(np.array([0b1010], np.uint8), np.array([2], np.uint8), np.array([1], np.uint8),
        ...             np.array([8], np.uint8)).tolist()
        [1]
    """
    return ((values & ~clear) | stuck_one) ^ toggle
