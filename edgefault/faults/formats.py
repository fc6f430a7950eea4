"""How an activation buffer stores a tensor: the one encoder and decoder of each storage format.

A tensor of ``N`` integer codes of ``b`` bits whose zero is the zero point ``z`` becomes a
buffer of stored bits (a uint8 array of 0/1, one element per cell, bit 0 of every field the
least significant). Faults hit the buffer's cells, metadata and values alike; :meth:`decode`
reads a faulty buffer back as a device would. The buffer of every format has a fixed
*capacity* (the worst case), so every cell has an address whatever the image; what an image
really uses is :meth:`BufferFormat.encoded_bits`.

* ``dense``: ``N * b`` bits; code ``i`` at bits ``[i * b, (i + 1) * b)``.
* ``bitmap``: ``N`` flag bits (flag ``i`` is 1 where code ``i`` differs from ``z``), then a
  value region sized for the worst case, ``N * b`` bits, holding the non-``z`` codes in order
  from its start; the rest of the region holds ``z`` codes (the buffer is cleared to ``z``
  before each image). The decoder walks the flags: the k-th flag set takes the k-th code of
  the value region, a clear flag gives ``z``. A flag flipped 0->1 inserts a value and shifts
  every later one back; 1->0 drops one and shifts the rest forward. Used: ``N + b * nonzeros``.
* ``rle``: a header of ``h = bit_length(N)`` bits holding the pair count ``P``, then ``N``
  pair slots of ``run_bits + b`` bits each, a pair being (zero-run length ``r``, code ``c``),
  run first. The encoder emits, for each non-``z`` code, the run of ``z`` codes before it and
  the code; a run longer than ``2^run_bits - 1`` is split, each piece of
  ``2^run_bits - 1`` zeros closed by an explicit ``z`` code. Trailing ``z`` codes are implicit.
  Unused slots hold (0, ``z``). The decoder reads ``min(P, N)`` pairs from position 0: each
  skips ``r`` positions and writes ``c`` at the next one; it never writes past position
  ``N``, and positions it does not reach are ``z``. A flipped run bit moves every later
  value; a flipped header bit drops trailing pairs or reads cleared slots (which write ``z``).
  Used: ``h + (run_bits + b) * P``. Capacity ``h + N * (run_bits + b)``: every code its own
  pair, the worst case.

Worked example (``b = 4``, ``z = 0``, codes ``[0, 5, 0, 0, 3]``; bits listed from address 0):

* bitmap: flags ``0 1 0 0 1``, values ``5 3 0 0 0`` (each 4 bits, LSB first): 5 + 8 bits used of
  25. Flip flag 2 (0 -> 1): flags ``0 1 1 0 1`` take values 5, 3, 0 in turn: ``[0, 5, 3, 0, 0]``.
* rle (``run_bits = 2``): header ``P = 2`` in 3 bits, pairs ``(1, 5) (2, 3)``: 3 + 2 * 6 = 15 bits used
  of 33. Flip bit 0 of the first run (1 -> 0): ``(0, 5)`` writes position 0, ``(2, 3)`` skips 1, 2 and
  writes 3: ``[5, 0, 0, 3, 0]``.

Every function takes a leading batch axis too: ``codes`` of shape ``[..., N]`` give buffers of
shape ``[..., capacity]``, one image per row, vectorized (no loop over images).

Example:
    >>> fmt = BufferFormat("bitmap", bits=4, zero_point=0)
    >>> buffer = fmt.encode(np.array([0, 5, 0, 0, 3]))
    >>> buffer[2] ^= 1  # flag 2 flips from 0 to 1
    >>> fmt.decode(buffer, 5).tolist()
    [0, 5, 3, 0, 0]
"""

from __future__ import annotations

import dataclasses

import numpy as np

from edgefault.errors import EdgefaultError

ACT_FORMATS = ("dense", "bitmap", "rle")
# Eyeriss (Chen et al., JSSC 2017) run-length codes its activations with 5-bit zero runs:
# post-ReLU zero runs are short, so wider runs waste bits on every pair and narrower ones
# split runs too often.
DEFAULT_RUN_BITS = 5
MAX_CODE_BITS = 16


@dataclasses.dataclass(frozen=True)
class BufferFormat:
    """One storage format for tensors of ``bits``-bit codes whose zero is ``zero_point``.

    ``signed`` says whether the codes are two's complement (int8-like) or unsigned
    (uint8-like); ``run_bits`` is the rle run width (ignored by the other formats).

    Example:
        >>> BufferFormat("rle", bits=8, zero_point=0).capacity_bits(100)
        1307
        >>> BufferFormat("sparse", bits=8, zero_point=0)
        Traceback (most recent call last):
        ...
        edgefault.errors.EdgefaultError: unknown activation format 'sparse'; choose one of dense, bitmap, rle
    """

    name: str
    bits: int
    zero_point: int
    run_bits: int = DEFAULT_RUN_BITS
    signed: bool = False

    def __post_init__(self) -> None:
        if self.name not in ACT_FORMATS:
            raise EdgefaultError(f"unknown activation format {self.name!r}; choose one of {', '.join(ACT_FORMATS)}")
        if not 1 <= int(self.bits) <= MAX_CODE_BITS:
            raise EdgefaultError(f"activation codes must have 1..{MAX_CODE_BITS} bits, got {self.bits}")
        if not 1 <= int(self.run_bits) <= MAX_CODE_BITS:
            raise EdgefaultError(f"rle run width must be 1..{MAX_CODE_BITS} bits, got {self.run_bits}")
        low, high = self.code_range
        if not low <= int(self.zero_point) <= high:
            raise EdgefaultError(f"zero point {self.zero_point} lies outside the {self.bits}-bit "
                                 f"{'signed' if self.signed else 'unsigned'} codes [{low}, {high}]")
        for field in ("bits", "zero_point", "run_bits"):
            object.__setattr__(self, field, int(getattr(self, field)))

    @property
    def code_range(self) -> tuple[int, int]:
        """The least and greatest code.

        Example:
            >>> BufferFormat("dense", bits=4, zero_point=0, signed=True).code_range
            (-8, 7)
        """
        if self.signed:
            return -(1 << (self.bits - 1)), (1 << (self.bits - 1)) - 1
        return 0, (1 << self.bits) - 1

    def header_bits(self, n: int) -> int:
        """Bits of the rle pair-count header for ``n`` codes (0 for the other formats).

        Example:
            >>> BufferFormat("rle", bits=8, zero_point=0).header_bits(784)
            10
        """
        return int(n).bit_length() if self.name == "rle" else 0

    def capacity_bits(self, n: int) -> int:
        """Cells of the buffer that holds ``n`` codes: its worst-case size, the same for every image.

        Example:
            >>> [BufferFormat(f, bits=8, zero_point=0).capacity_bits(10) for f in ACT_FORMATS]
            [80, 90, 134]
        """
        n = int(n)
        if self.name == "dense":
            return n * self.bits
        if self.name == "bitmap":
            return n + n * self.bits
        return self.header_bits(n) + n * (self.run_bits + self.bits)

    def encoded_bits(self, codes: np.ndarray) -> np.ndarray:
        """The bits each row of ``codes`` (shape ``[..., n]``) really uses, as int64 of shape ``[...]``.

        Example:
            >>> codes = np.array([[0, 5, 0, 0, 3], [0, 0, 0, 0, 0]])
            >>> [BufferFormat(f, bits=4, zero_point=0, run_bits=2).encoded_bits(codes).tolist() for f in ACT_FORMATS]
            [[20, 20], [13, 5], [15, 3]]
        """
        codes = np.asarray(codes)
        n = codes.shape[-1]
        if self.name == "dense":
            return np.full(codes.shape[:-1], n * self.bits, dtype=np.int64)
        nonzero = codes != self.zero_point
        if self.name == "bitmap":
            return n + self.bits * np.count_nonzero(nonzero, axis=-1).astype(np.int64)
        pairs = np.where(nonzero, 1 + _zeros_before(nonzero) // (1 << self.run_bits), 0).sum(axis=-1)
        return self.header_bits(n) + (self.run_bits + self.bits) * pairs.astype(np.int64)

    def encode(self, codes: np.ndarray) -> np.ndarray:
        """The buffer holding ``codes`` (shape ``[..., n]``): uint8 0/1 cells of shape ``[..., capacity_bits(n)]``.

        Example:
            >>> BufferFormat("dense", bits=4, zero_point=0).encode(np.array([5, 3])).tolist()
            [1, 0, 1, 0, 1, 1, 0, 0]
        """
        codes = self._checked(codes)
        if self.name == "dense":
            return _to_bits(codes, self.bits)
        nonzero = codes != self.zero_point
        if self.name == "bitmap":
            # A stable sort by "is z" puts the non-z codes first, in order; the z codes follow.
            packed = np.take_along_axis(codes, np.argsort(~nonzero, axis=-1, kind="stable"), axis=-1)
            return np.concatenate([nonzero.astype(np.uint8), _to_bits(packed, self.bits)], axis=-1)
        return self._encode_rle(codes, nonzero)

    def decode(self, buffer: np.ndarray, n: int) -> np.ndarray:
        """The ``n`` codes a device reads from ``buffer`` (shape ``[..., capacity_bits(n)]``), faulty or not, as int64.

        Example:
            >>> fmt = BufferFormat("rle", bits=4, zero_point=0, run_bits=2)
            >>> buffer = fmt.encode(np.array([0, 5, 0, 0, 3]))
            >>> buffer[3] ^= 1  # bit 0 of the first run: 1 becomes 0
            >>> fmt.decode(buffer, 5).tolist()
            [5, 0, 0, 3, 0]
        """
        buffer = np.asarray(buffer)
        n = int(n)
        if buffer.shape[-1] != self.capacity_bits(n):
            raise EdgefaultError(f"a {self.name} buffer of {n} codes has {self.capacity_bits(n)} cells, "
                                 f"got {buffer.shape[-1]}")
        if self.name == "dense":
            return self._signed(_from_bits(buffer, self.bits))
        if self.name == "bitmap":
            flags = buffer[..., :n].astype(bool)
            values = self._signed(_from_bits(buffer[..., n:], self.bits))
            rank = np.maximum(np.cumsum(flags, axis=-1) - 1, 0)  # the k-th set flag takes value k
            return np.where(flags, np.take_along_axis(values, rank, axis=-1), self.zero_point)
        return self._decode_rle(buffer, n)

    def _checked(self, codes) -> np.ndarray:
        codes = np.asarray(codes)
        if codes.ndim < 1 or not np.issubdtype(codes.dtype, np.integer):
            raise EdgefaultError(f"activation codes must be an integer array with a last axis, got {codes.dtype} "
                                 f"of shape {codes.shape}")
        low, high = self.code_range
        if codes.size and (codes.min() < low or codes.max() > high):
            raise EdgefaultError(f"activation codes outside the {self.bits}-bit range [{low}, {high}]")
        return codes.astype(np.int64)

    def _signed(self, raw: np.ndarray) -> np.ndarray:
        if not self.signed:
            return raw
        return np.where(raw >> (self.bits - 1) == 1, raw - (1 << self.bits), raw)

    def _encode_rle(self, codes: np.ndarray, nonzero: np.ndarray) -> np.ndarray:
        n = codes.shape[-1]
        rows = codes.reshape(-1, n)
        flat_nonzero = nonzero.reshape(-1, n)
        longest = (1 << self.run_bits) - 1
        gaps = _zeros_before(flat_nonzero)[flat_nonzero]  # z codes before each non-z code, row by row
        row, _ = np.nonzero(flat_nonzero)
        splits = gaps // (longest + 1)  # explicit (longest, z) pairs before the code's own pair
        per_code = splits + 1
        owner = np.repeat(np.arange(gaps.size), per_code)  # each pair's non-z code
        step = np.arange(owner.size) - np.repeat(np.cumsum(per_code) - per_code, per_code)
        last = step == splits[owner]
        runs = np.where(last, gaps[owner] - splits[owner] * (longest + 1), longest)
        values = np.where(last, rows[flat_nonzero][owner], self.zero_point)
        pair_rows = row[owner]
        counts = np.bincount(row, weights=per_code, minlength=rows.shape[0]).astype(np.int64)
        slot = np.arange(owner.size) - np.repeat(np.cumsum(counts) - counts, counts)
        run_table = np.zeros(rows.shape, dtype=np.int64)
        code_table = np.full(rows.shape, self.zero_point, dtype=np.int64)
        run_table[pair_rows, slot] = runs
        code_table[pair_rows, slot] = values
        slots = np.concatenate([_to_bits(run_table[..., None], self.run_bits),
                                _to_bits(code_table[..., None], self.bits)], axis=-1)  # [rows, slot, cells]
        header = _to_bits(counts[:, None], self.header_bits(n))
        return np.concatenate([header, slots.reshape(rows.shape[0], -1)], axis=-1).reshape(*codes.shape[:-1], -1)

    def _decode_rle(self, buffer: np.ndarray, n: int) -> np.ndarray:
        head = self.header_bits(n)
        rows = buffer.reshape(-1, buffer.shape[-1])
        count = np.minimum(_from_bits(rows[:, :head], head)[:, 0] if head else np.zeros(len(rows), np.int64), n)
        slots = rows[:, head:].reshape(len(rows), n, self.run_bits + self.bits)
        runs = _from_bits(slots[..., : self.run_bits], self.run_bits)[..., 0]
        values = self._signed(_from_bits(slots[..., self.run_bits:], self.bits)[..., 0])
        where = np.cumsum(runs + 1, axis=-1) - 1  # the position each pair writes, strictly increasing
        keep = (np.arange(n) < count[:, None]) & (where < n)
        out = np.full((len(rows), n), self.zero_point, dtype=np.int64)
        row, slot = np.nonzero(keep)
        out[row, where[row, slot]] = values[row, slot]
        return out.reshape(*buffer.shape[:-1], n)


def apply_bit_faults(buffer: np.ndarray, cells, kinds) -> np.ndarray:
    """A faulty copy of a buffer: ``cells`` (positions on its last axis) flipped or stuck as ``kinds`` say.

    Kinds are the record codes of :mod:`edgefault.faults.records`: FLIP (0) and MBU (3) invert
    the cell, SA0 (1) and SA1 (2) force it to 0 or 1. The same cells are hit on every row
    (one permanent chip for every image of a batch).

    Example:
        >>> apply_bit_faults(np.array([[0, 1, 1], [1, 1, 0]], np.uint8), [0, 2], [0, 2]).tolist()
        [[1, 1, 1], [0, 1, 1]]
    """
    out = np.array(buffer, dtype=np.uint8, copy=True)
    cells = np.asarray(cells, dtype=np.int64)
    kinds = np.asarray(kinds, dtype=np.uint8)
    flip = (kinds == 0) | (kinds == 3)
    out[..., cells[flip]] ^= 1
    out[..., cells[kinds == 1]] = 0
    out[..., cells[kinds == 2]] = 1
    return out


def _zeros_before(nonzero: np.ndarray) -> np.ndarray:
    """At each position, the z codes since the previous non-z one (along the last axis)."""
    zeros = np.cumsum(~nonzero, axis=-1)
    at_nonzero = np.where(nonzero, zeros, 0)
    previous = np.maximum.accumulate(at_nonzero, axis=-1)  # zeros counted up to the latest non-z code
    previous = np.concatenate([np.zeros_like(previous[..., :1]), previous[..., :-1]], axis=-1)
    return zeros - previous


def _to_bits(values: np.ndarray, width: int) -> np.ndarray:
    """Each value as ``width`` cells, least significant first, laid end to end on the last axis."""
    bits = (values[..., None].astype(np.int64) >> np.arange(width)) & 1
    return bits.astype(np.uint8).reshape(*values.shape[:-1], -1)


def _from_bits(cells: np.ndarray, width: int) -> np.ndarray:
    """Groups of ``width`` cells (least significant first) back to values, as int64."""
    grouped = cells.reshape(*cells.shape[:-1], -1, width).astype(np.int64)
    return (grouped << np.arange(width)).sum(axis=-1)
