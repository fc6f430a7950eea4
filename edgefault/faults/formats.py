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

Fields. Each buffer is regions of fixed-width fields (:meth:`BufferFormat.fields`: the codes;
the flags and the values; the header and the pair slots), and its cells are the fields laid
end to end, least significant bit first. :meth:`BufferFormat.encode_fields` and
:meth:`BufferFormat.decode_fields` work on the field values, so a caller can fault a field's
bits without building the cells (the campaign does); :meth:`BufferFormat.encode` and
:meth:`BufferFormat.decode` are them plus the bits.

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

    def fields(self, n: int) -> tuple[tuple[int, int], ...]:
        """The buffer of ``n`` codes as regions of fields, in address order: (cells per field, fields) of each.

        Example:
            >>> [BufferFormat(f, bits=8, zero_point=0).fields(10) for f in ACT_FORMATS]
            [((8, 10),), ((1, 10), (8, 10)), ((4, 1), (13, 10))]
        """
        n = int(n)
        if self.name == "dense":
            return ((self.bits, n),)
        if self.name == "bitmap":
            return ((1, n), (self.bits, n))
        return ((self.header_bits(n), 1), (self.run_bits + self.bits, n))

    def encode(self, codes: np.ndarray) -> np.ndarray:
        """The buffer holding ``codes`` (shape ``[..., n]``): uint8 0/1 cells of shape ``[..., capacity_bits(n)]``.

        Example:
            >>> BufferFormat("dense", bits=4, zero_point=0).encode(np.array([5, 3])).tolist()
            [1, 0, 1, 0, 1, 1, 0, 0]
        """
        codes = self._checked(codes)
        regions = zip(self.encode_fields(codes), self.fields(codes.shape[-1]))
        return np.concatenate([_to_bits(values, width) for values, (width, _) in regions], axis=-1)

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
        fields, start = [], 0
        for width, count in self.fields(n):
            fields.append(_from_bits(buffer[..., start:start + width * count], width) if width
                          else np.zeros((*buffer.shape[:-1], count), np.int64))
            start += width * count
        return self.decode_fields(fields, n)

    def encode_fields(self, codes: np.ndarray) -> list[np.ndarray]:
        """The buffer holding ``codes`` as field values (int64, each its field's bits, unsigned), one array per region.

        Region ``k`` has shape ``[..., count]`` for ``fields(n)[k] = (width, count)``; laid end to
        end, least significant bit first, the fields are :meth:`encode`'s cells.

        Example:
            >>> [f.tolist() for f in BufferFormat("rle", bits=4, zero_point=0, run_bits=2).encode_fields(
            ...     np.array([0, 5, 0, 0, 3]))]
            [[2], [21, 14, 0, 0, 0]]
        """
        codes = self._checked(codes)
        raw = (1 << self.bits) - 1
        if self.name == "dense":
            return [codes & raw]
        nonzero = codes != self.zero_point
        if self.name == "bitmap":
            # Row by row, the non-z codes in order fill the first slots of the value region: boolean
            # indexing walks both in row-major order, so one assignment packs every row.
            packed = np.full(codes.shape, self.zero_point & raw, dtype=np.int64)
            packed[_first_slots(np.count_nonzero(nonzero, axis=-1), codes.shape[-1])] = codes[nonzero] & raw
            return [nonzero.astype(np.int64), packed]
        return self._encode_rle(codes, nonzero)

    def decode_fields(self, fields: list[np.ndarray], n: int) -> np.ndarray:
        """The ``n`` codes a device reads from a buffer given as field values (as :meth:`encode_fields` gives them).

        Example:
            >>> BufferFormat("bitmap", bits=4, zero_point=0).decode_fields(
            ...     [np.array([0, 1, 1, 0, 1]), np.array([5, 3, 0, 0, 0])], 5).tolist()
            [0, 5, 3, 0, 0]
        """
        if self.name == "dense":
            return self._signed(fields[0])
        if self.name == "bitmap":
            flags, values = fields[0] != 0, self._signed(fields[1])
            out = np.full(flags.shape, self.zero_point, dtype=np.int64)
            # The k-th set flag of a row takes the row's k-th value: both walked in row-major order.
            out[flags] = values[_first_slots(np.count_nonzero(flags, axis=-1), n)]
            return out
        return self._decode_rle(fields[0][..., 0], fields[1], n)

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

    def _encode_rle(self, codes: np.ndarray, nonzero: np.ndarray) -> list[np.ndarray]:
        n = codes.shape[-1]
        rows = codes.reshape(-1, n)
        flat = np.flatnonzero(nonzero.reshape(-1, n))  # the non-z codes, row by row, in order
        row, column = np.divmod(flat, n)
        previous = np.concatenate([[-1], column[:-1]])
        previous[np.concatenate([[True], row[1:] != row[:-1]])[: flat.size]] = -1  # a row starts afresh
        gaps = column - previous - 1  # z codes before each non-z code
        splits = gaps >> self.run_bits  # explicit (longest, z) pairs before the code's own pair
        pairs = np.bincount(row, weights=splits + 1, minlength=len(rows)).astype(np.int64)
        clear = self.zero_point & ((1 << self.bits) - 1)
        # Each slot as one field: its run in the low run_bits, its code (two's complement) above.
        own = (gaps & ((1 << self.run_bits) - 1)) | (rows.reshape(-1)[flat] & ((1 << self.bits) - 1)) << self.run_bits
        if splits.any():  # rare: runs of 2^run_bits zeros or more
            last = np.cumsum(splits + 1) - 1  # each code's own pair, after its split pairs
            fields = np.full(last[-1] + 1, (1 << self.run_bits) - 1 | clear << self.run_bits, dtype=np.int64)
            fields[last] = own
            pair_rows = np.repeat(row, splits + 1)
        else:
            fields, pair_rows = own, row
        slots = np.full(rows.shape, clear << self.run_bits, dtype=np.int64)
        slot = np.arange(fields.size) - (np.cumsum(pairs) - pairs)[pair_rows]  # the pair's place in its row
        slots.reshape(-1)[pair_rows * n + slot] = fields
        return [pairs.reshape(*codes.shape[:-1], 1), slots.reshape(codes.shape)]

    def _decode_rle(self, count: np.ndarray, slots: np.ndarray, n: int) -> np.ndarray:
        shape = slots.shape
        count, slots = count.reshape(-1), slots.reshape(-1, n)
        where = np.cumsum((slots & ((1 << self.run_bits) - 1)) + 1, axis=-1) - 1  # each pair's position, increasing
        # A row reads its first min(count, N) pairs, and stops at the first that lands past position N.
        keep = _first_slots(np.minimum(count, np.count_nonzero(where < n, axis=-1)), n)
        out = np.full(slots.shape, self.zero_point, dtype=np.int64)
        out.reshape(-1)[(where + (np.arange(len(slots)) * n)[:, None])[keep]] = self._signed(slots[keep] >> self.run_bits)
        return out.reshape(shape)


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


def _first_slots(counts: np.ndarray, n: int) -> np.ndarray:
    """A mask of shape ``[..., n]``: the first ``counts[...]`` positions of each row."""
    return np.arange(n) < np.asarray(counts)[..., None]


def _word_type(width: int) -> np.dtype:
    """The little-endian unsigned type holding ``width`` bits (1..32)."""
    return np.dtype(np.uint8) if width <= 8 else np.dtype("<u2") if width <= 16 else np.dtype("<u4")


def _to_bits(values: np.ndarray, width: int) -> np.ndarray:
    """Each value as ``width`` cells (its low bits, least significant first), laid end to end on the last axis.

    ``width`` is 0..32; negative values give their two's complement bits.
    """
    values = np.asarray(values)
    if width <= 1:  # no cells, or one cell per value: the value's low bit
        return (values & 1).astype(np.uint8)[..., :values.shape[-1] * width]
    word = _word_type(width)
    raw = np.ascontiguousarray(values.astype(word.newbyteorder("<")))  # integer casts keep the low bits
    bits = np.unpackbits(raw.view(np.uint8), axis=-1, bitorder="little")
    if width != 8 * word.itemsize:
        bits = bits.reshape(*values.shape, 8 * word.itemsize)[..., :width]
    return bits.reshape(*values.shape[:-1], -1)


def _from_bits(cells: np.ndarray, width: int) -> np.ndarray:
    """Groups of ``width`` cells (least significant first; 1..32 cells) back to values, as int64."""
    cells = np.asarray(cells)
    if width == 1:
        return cells.astype(np.int64)
    packed = np.packbits(cells if cells.dtype in (np.uint8, bool) else cells.astype(np.uint8), axis=-1,
                         bitorder="little")  # the cells as bytes, field boundaries anywhere
    if width % 8 == 0:
        return np.ascontiguousarray(packed).view(_word_type(width)).astype(np.int64)
    # Field i starts at cell i * width: gather the bytes that cover it, then shift and mask.
    start = np.arange(cells.shape[-1] // width, dtype=np.int64) * width
    first, shift = start >> 3, start & 7
    span = (width + 14) // 8  # bytes covering ``width`` bits at any shift
    word = np.dtype(np.uint32 if span <= 4 else np.uint64)
    padded = np.concatenate([packed, np.zeros((*packed.shape[:-1], span), np.uint8)], axis=-1)
    value = padded[..., first].astype(word)
    for j in range(1, span):
        value |= padded[..., first + j].astype(word) << word.type(8 * j)
    value >>= shift.astype(word)
    value &= word.type((1 << width) - 1)
    return value.astype(np.int64)
