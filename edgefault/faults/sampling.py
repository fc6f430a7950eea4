"""Drawing a chip's faults, nested across rates, at a cost that follows the number of faults, not of bits.

The target cells of a chip are the stored cells it may hit (tensors matching ``layers``,
bit positions allowed by ``bits``), numbered in address order. Nothing but the seed is random.

Nesting. Every cell ``c`` of a chip has a fault threshold ``u_c``, uniform in [0, 1) and
independent across cells; at rate ``p`` the faulty cells are those with ``u_c < p``. So the
faulty cells at ``p`` are a subset of those at any ``p' > p``: one device getting worse. The
thresholds are never drawn cell by cell. The rates are cut into bands ``(a_j, b_j] =
(2^-(j+1), 2^-j]`` for j = 0..29 and ``(0, 2^-30]``; band j has its own stream of *marks*:
cells chosen independently with probability ``rho_j = (b_j - a_j) / (1 - a_j)`` (geometric
gaps from a PCG64 generator seeded by word 2j of ``SeedSequence(seed, spawn_key=stream).generate_state``,
the stream being the memory's ``seed_stream``: empty for weights, (1,) for activations), the
m-th with a value uniform in the band (the m-th uniform of a second generator, word 2j + 1).
``u_c`` is the least value of the marks on ``c`` (1 without one), and it is exactly uniform:
P(u_c >= p) = prod over bands of P(no mark below p) = 1 - p. At rate ``p`` only the bands
with ``a_j < p`` are drawn: the bands below ``p`` whole (their values are never needed), the
band holding ``p`` thinned by its values; at most about ``2 * p`` marks per cell in all, so
the work is proportional to the number of faults.

Pairing and prefixes. The mark streams do not depend on the memory size (chunks give the
same numbers however they are cut), so the same chip on two memories with the same number of
target cells hits the same cells, and on a smaller memory it hits exactly the prefix of a
larger memory's faults.

Tapes. :func:`sample_tape_faults` draws a chip on ``n`` copies of a memory laid end to end
(copy ``k``'s target cells numbered after copy ``k - 1``'s), on a seed stream of its own; by
the prefix property, copy ``k``'s faults depend on the seed, the stream and ``k`` alone, and
drawing ``n`` copies costs what their faults cost. The activation memory's transient faults
are such a tape, one copy per image (:func:`edgefault.faults.activations.transient_faults`).

Counts. ``count=K`` takes the K target cells of least threshold (drawn at a rate that holds
at least K cells, doubled until it does): nested in K too, and the first K cells to fail as
the rate rises.

Kinds. Every kind of one seed faults the same cells at a rate; ``stuck`` gives each cell a
fixed polarity (a hash of the seed and the cell number), so a cell stuck at 1 stays stuck at
1 at every rate, and pairs across models too.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Iterator

import numpy as np

from edgefault.errors import EdgefaultError
from edgefault.faults.chip import MAX_BIT, Chip
from edgefault.faults.memory import AddressedMemory, WeightMemory
from edgefault.faults.records import FLIP, MBU, SA0, SA1, FaultRecords

_CHUNK_ROWS = 1 << 22  # uniforms drawn at once stay under 64 MB, whatever the rate
WINDOW_CELLS = 1 << 20  # target cells per piece of a file-to-file injection (~100 MB of work at rate 1)


@dataclasses.dataclass(frozen=True)
class _TargetCells:
    """The cells a chip may hit, numbered in address order: per targeted tensor, its allowed bits of each element."""

    positions: np.ndarray  # memory positions of the targeted tensors
    starts: np.ndarray  # first cell number of each targeted tensor, then the total
    bit_starts: np.ndarray  # address of each targeted tensor's first bit
    widths: np.ndarray  # bits per element of each targeted tensor
    per_element: np.ndarray  # allowed bits per element of each targeted tensor
    bit_table: np.ndarray  # bit_table[i, k]: the k-th allowed bit of targeted tensor i

    @property
    def size(self) -> int:
        return int(self.starts[-1])

    def word_cuts(self, step: int) -> np.ndarray:
        """Cell numbers about ``step`` apart, each the first cell of a stored word, from 0 to :attr:`size`."""
        wanted = np.arange(0, self.size, max(int(step), 1), dtype=np.int64)
        target = np.searchsorted(self.starts, wanted, side="right") - 1
        local = wanted - self.starts[target]
        cuts = self.starts[target] + local - local % self.per_element[target]
        return np.unique(np.append(cuts, self.size))

    def place(self, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(memory tensor position, code index, bit, address) of each cell number."""
        target = np.searchsorted(self.starts, cells, side="right") - 1
        local = cells - self.starts[target]
        if np.array_equal(self.per_element, self.widths):  # every bit allowed: cells run along the addresses
            width = int(self.widths[0])
            if np.all(self.widths == width) and (width & (width - 1)) == 0:  # one power-of-two width: shifts
                index, bit = local >> (width.bit_length() - 1), local & (width - 1)
            else:
                index, bit = np.divmod(local, self.widths[target])
            return self.positions[target], index, bit, cells + (self.bit_starts - self.starts[:-1])[target]
        index, k = np.divmod(local, self.per_element[target])
        bit = self.bit_table[target, k]
        return self.positions[target], index, bit, self.bit_starts[target] + index * self.widths[target] + bit


def target_bits(memory: AddressedMemory, chip: Chip) -> int:
    """How many cells the chip may hit: bits of the tensors matching ``layers`` allowed by ``bits``.

    Example:
        >>> memory = WeightMemory.from_tensors([("a", "int8", (10,), "t"), ("b", "int8", (5,), "t")])
        >>> target_bits(memory, Chip("flip", rate=0.1, bits=[7], layers="a"))
        10
    """
    return _target_cells(memory, chip).size


def sample_faults(memory: AddressedMemory, chip: Chip) -> FaultRecords:
    """Draw the chip's faults on a memory (weights or activations), in address order.

    Each memory draws from its own streams of the seed (``memory.seed_stream``), so one chip
    seed faults the weight and the activation memory independently.

    ``stuck`` cells become ``sa0`` or ``sa1`` records; an ``mbu`` cell becomes a burst of
    ``chip.burst`` adjacent bits of its word (shifted down at the word's top bit, merged
    where bursts overlap). Bits outside ``chip.bits`` or in ``chip.protect_bits`` are never
    in the result: protected faults are drawn and then dropped, as ECC would correct them.

    Example:
        >>> memory = WeightMemory.from_tensors([("w", "int8", (1000,), "test")])
        >>> records = sample_faults(memory, Chip("flip", count=5, seed=1))
        >>> len(records), records.tensors
        (5, ('w',))
    """
    return next(sample_fault_windows(memory, chip, window=None))


def sample_fault_windows(memory: AddressedMemory, chip: Chip, window: int | None = WINDOW_CELLS) -> Iterator[FaultRecords]:
    """The chip's faults as :func:`sample_faults` draws them, in pieces of about ``window`` target cells.

    The pieces, in address order, together are exactly :func:`sample_faults`'s records; each
    holds whole stored words, so a word's faults are never split. A rate chip at rate 1.0 on a
    400 M-bit memory thus never holds more than one piece's records (``count`` chips and
    ``window=None``: one piece).

    Example:
        >>> memory = WeightMemory.from_tensors([("w", "int8", (1000,), "test")])
        >>> pieces = list(sample_fault_windows(memory, Chip("flip", rate=0.5, seed=1), window=1000))
        >>> len(pieces), sum(map(len, pieces)) == len(sample_faults(memory, Chip("flip", rate=0.5, seed=1)))
        (8, True)
    """
    cells = _checked_cells(memory, chip)
    if chip.count is not None and chip.count > cells.size:
        raise EdgefaultError(f"count {chip.count} exceeds the {cells.size} target bits of the {memory.label} memory")
    keys = _keys(chip.seed, memory.seed_stream)
    if chip.count is not None or window is None:
        yield _records(memory, chip, cells, _draw_cells(chip.seed, cells.size, chip.rate, chip.count, keys), keys)
        return
    for drawn in _cell_windows(keys, cells.size, chip.rate, cells.word_cuts(window)):
        yield _records(memory, chip, cells, drawn, keys)


def sample_tape_faults(memory: AddressedMemory, chip: Chip, copies: int, stream: tuple[int, ...]) -> FaultRecords:
    """A rate chip's faults on a tape: ``copies`` copies of a memory end to end, drawn from seed stream ``stream``.

    Copy ``k`` holds the tape addresses ``[k * memory.nbits, (k + 1) * memory.nbits)``; each
    record names the tensor, index and bit within its copy and its tape address (so
    ``address // memory.nbits`` is its copy). Copy ``k``'s faults depend on the seed, the
    stream and ``k`` alone, not on ``copies`` (see the module docstring), and stay nested
    across rates. ``count`` chips are refused: a count spread over the tape would tie each
    copy's faults to the number of copies.

    Example:
        >>> memory = WeightMemory.from_tensors([("w", "int8", (100,), "test")])
        >>> chip = Chip("flip", rate=0.05, seed=1)
        >>> three, ten = (sample_tape_faults(memory, chip, n, (2,)).address for n in (3, 10))
        >>> bool(np.array_equal(three, ten[ten < 3 * memory.nbits])), int(ten.max() // memory.nbits)
        (True, 9)
    """
    if chip.count is not None:
        raise EdgefaultError("faults drawn afresh for every copy (transient faults) need a rate, not a count")
    if int(copies) < 0:
        raise EdgefaultError(f"a tape needs a non-negative number of copies, got {copies}")
    cells = _checked_cells(memory, chip)
    keys = _keys(chip.seed, tuple(stream))
    return _records(memory, chip, cells, _draw_cells(chip.seed, cells.size * int(copies), chip.rate, None, keys), keys)


def _checked_cells(memory: AddressedMemory, chip: Chip) -> _TargetCells:
    if memory.include_bias != chip.include_bias:
        raise EdgefaultError(
            f"chip has include_bias={chip.include_bias} but the memory has include_bias={memory.include_bias}"
        )
    return _target_cells(memory, chip)


def _records(memory: AddressedMemory, chip: Chip, cells: _TargetCells, drawn: np.ndarray,
             keys: np.ndarray) -> FaultRecords:
    """The records of the drawn cell numbers: kinds, mbu bursts, and the protected or disallowed bits dropped.

    Cell numbers past the memory's target cells lie on later copies of it (a tape): their
    addresses are tape addresses, their tensor, index and bit those within their copy.
    """
    if drawn.size and drawn[-1] >= cells.size:
        copy, local = np.divmod(drawn, cells.size)
        position, index, bit, address = cells.place(local)
        address = address + copy * memory.nbits
    else:
        position, index, bit, address = cells.place(drawn)
    if chip.kind == "mbu":
        address = _bursts(memory, address, bit, position, chip.burst)  # bursts stay within a word, so in one copy
        position, index, bit = memory.locate(address % memory.nbits)
        kind = np.full(address.size, MBU, dtype=np.uint8)
    elif chip.kind == "stuck":
        kind = np.where(_stuck_at_one(keys, drawn), SA1, SA0).astype(np.uint8)
    else:
        kind = np.full(address.size, {"flip": FLIP, "sa0": SA0, "sa1": SA1}[chip.kind], dtype=np.uint8)
    records = FaultRecords(memory.names, position, index, bit, kind, address)
    forbidden = np.zeros(MAX_BIT + 1, dtype=bool)
    forbidden[list(chip.protect_bits)] = True
    if chip.bits is not None:  # only bursts can reach beyond the target cells
        forbidden[np.setdiff1d(np.arange(MAX_BIT + 1), chip.bits)] = True
    return records.take(~forbidden[records.bit]) if forbidden.any() else records


def _target_cells(memory: AddressedMemory, chip: Chip) -> _TargetCells:
    pattern = re.compile(chip.layers) if chip.layers is not None else None
    targeted = [i for i, name in enumerate(memory.names) if pattern is None or pattern.search(name)]
    if not targeted:
        shown = ", ".join(memory.names[:5]) + (", ..." if len(memory.names) > 5 else "")
        raise EdgefaultError(f"`layers` {chip.layers!r} matches no {memory.label} tensor (tensors: {shown})")
    allowed = np.array(chip.bits if chip.bits is not None else range(MAX_BIT + 1), dtype=np.int64)
    widths = memory.widths[targeted]
    beyond = allowed[allowed >= widths.max()].tolist()
    if chip.bits is not None and beyond:  # like a lone --bits 9: refused, never silently dropped
        raise EdgefaultError(f"bits {beyond} lie beyond the targeted {widths.max()}-bit words "
                             f"(bits 0-{widths.max() - 1})")
    bit_table = np.zeros((len(targeted), MAX_BIT + 1), dtype=np.int64)
    per_element = np.zeros(len(targeted), dtype=np.int64)
    for width in np.unique(widths).tolist():
        bits = allowed[allowed < width]
        bit_table[widths == width, : bits.size] = bits
        per_element[widths == width] = bits.size
    sizes = np.array([memory.tensors[i].size for i in targeted], dtype=np.int64) * per_element
    if not sizes.sum():
        raise EdgefaultError(f"bits {allowed.tolist()} select no bit of the targeted tensors (int8 has bits 0-7)")
    starts = np.concatenate([[0], np.cumsum(sizes)])
    return _TargetCells(np.array(targeted), starts, memory.bit_starts[targeted], widths, per_element, bit_table)


# Band j covers thresholds (BAND_LOW[j], BAND_HIGH[j]]; the last reaches down to 0.
BANDS = 31
BAND_HIGH = 2.0 ** -np.arange(BANDS)
BAND_LOW = np.append(BAND_HIGH[1:], 0.0)


def _draw_cells(seed: int, cells: int, rate: float | None, count: int | None,
                keys: np.ndarray | None = None) -> np.ndarray:
    """Faulty cell numbers in increasing order; ``keys`` (default: the seed's own) pick the memory's streams."""
    keys = _keys(seed) if keys is None else keys
    if count is not None:
        return _least_thresholds(keys, cells, count)
    parts = []
    for band in _bands_below(rate):
        marked = _band_cells(keys[2 * band], band, cells)
        if BAND_HIGH[band] > rate:  # the band holding the rate: only its marks of lesser value
            marked = marked[_band_values(keys[2 * band + 1], band, marked.size) < rate]
        parts.append(marked)
    return _union(parts)


def _bands_below(rate: float) -> list[int]:
    """The bands that reach below ``rate``, least values first."""
    return [band for band in reversed(range(BANDS)) if BAND_LOW[band] < rate]


def _keys(seed: int, stream: tuple[int, ...] = ()) -> np.ndarray:
    """Two 64-bit keys per band (its cells' and its values' streams) and one for stuck polarities."""
    return np.random.SeedSequence(seed, spawn_key=stream).generate_state(2 * BANDS + 1, np.uint64)


def _mix(counter: np.ndarray, key: np.uint64) -> np.ndarray:
    """SplitMix64: the ``counter``-th output of the generator seeded ``key``."""
    z = counter * np.uint64(0x9E3779B97F4A7C15) + key
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _union(parts: list[np.ndarray]) -> np.ndarray:
    """The sorted union of increasing cell arrays (a stable sort merges sorted runs in O(n log runs))."""
    parts = [part for part in parts if part.size]
    if len(parts) <= 1:
        return parts[0] if parts else np.zeros(0, dtype=np.int64)
    return _distinct(np.sort(np.concatenate(parts), kind="stable"))


def _distinct(ordered: np.ndarray) -> np.ndarray:
    """A sorted array without its repeats (cheaper than np.unique, which hashes)."""
    keep = np.ones(ordered.size, dtype=bool)
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]


def _least_thresholds(keys: np.ndarray, cells: int, count: int) -> np.ndarray:
    """The ``count`` cells of least threshold, increasing."""
    if not count:
        return np.zeros(0, dtype=np.int64)
    rate = min(1.0, (count + 6.0 * np.sqrt(count) + 16.0) / cells)
    while True:
        marked, values = [], []
        for band in _bands_below(rate):  # least values first, so a cell's first mark holds its threshold
            cell = _band_cells(keys[2 * band], band, cells)
            value = _band_values(keys[2 * band + 1], band, cell.size)
            marked.append(cell[value < rate])
            values.append(value[value < rate])
        every = np.concatenate(marked)
        order = np.argsort(every, kind="stable")
        first = order[np.concatenate([[True], every[order][1:] != every[order][:-1]])] if every.size else order
        if first.size >= count:
            cell, value = every[first], np.concatenate(values)[first]
            return np.sort(cell[np.argpartition(value, count - 1)[:count]]) if cell.size > count else cell
        rate = min(1.0, 2.0 * rate)


def _band_cells(key: np.uint64, band: int, cells: int) -> np.ndarray:
    """Band ``band``'s marked cells among 0..cells-1, increasing."""
    found = list(_band_cell_chunks(key, band, cells))
    return np.zeros(0, dtype=np.int64) if not found else found[0] if len(found) == 1 else np.concatenate(found)


def _band_cell_chunks(key: np.uint64, band: int, cells: int, rows: int = _CHUNK_ROWS) -> Iterator[np.ndarray]:
    """Band ``band``'s marked cells among 0..cells-1, increasing, in chunks of at most ``rows``.

    Drawn as geometric gaps from the band's own stream; a chunk of any length gives the same
    uniforms, so the marks below any cell do not depend on ``cells``.
    """
    rng = np.random.Generator(np.random.PCG64(int(key)))
    low, high = float(BAND_LOW[band]), float(BAND_HIGH[band])
    rho = (high - low) / (1.0 - low)
    # Gap = 1 + floor(log(1 - u) / log(1 - rho)) has P(gap > k) = (1 - rho)^k; at rho = 1 every gap is 1.
    scale = 1.0 / np.log1p(-rho) if rho < 1.0 else 0.0
    last = -1
    while last < cells - 1:
        expected = rho * (cells - 1 - last)
        gaps = rng.random(min(int(expected + 6.0 * np.sqrt(expected)) + 16, rows))
        # In place, to spare allocations; gaps are capped past the memory's end so that tiny
        # rates cannot overflow the sum.
        np.negative(gaps, out=gaps)
        np.log1p(gaps, out=gaps)
        gaps *= scale
        np.minimum(gaps, cells, out=gaps)
        cell = gaps.astype(np.int64)
        del gaps
        cell += 1
        np.cumsum(cell, out=cell)
        cell += last
        inside = int(np.searchsorted(cell, cells))  # cells increase: the first ``inside`` fit
        yield cell[:inside]
        if inside < cell.size:
            return
        last = int(cell[-1])


def _cell_windows(keys: np.ndarray, cells: int, rate: float, cuts: np.ndarray) -> Iterator[np.ndarray]:
    """The faulty cell numbers of :func:`_draw_cells` at ``rate``, one increasing array per window between cuts.

    Every band's stream is read once, in order, and only as far as the window needs: memory
    follows the window, not the whole memory. ``keys`` are the memory's streams (:func:`_keys`).
    """
    bands = _bands_below(rate)
    rows = max(int(np.diff(cuts).max(initial=1)), 1 << 16)  # draws as large as a window, no larger
    chunks = [_band_cell_chunks(keys[2 * band], band, cells, rows) for band in bands]
    # The band holding the rate keeps only marks of lesser value: its values stream is read alongside.
    values = [np.random.Generator(np.random.PCG64(int(keys[2 * band + 1]))) if BAND_HIGH[band] > rate else None
              for band in bands]
    pending = [np.zeros(0, dtype=np.int64) for _ in bands]
    for end in cuts[1:].tolist():
        parts = []
        for i, band in enumerate(bands):
            while not pending[i].size or pending[i][-1] < end:
                chunk = next(chunks[i], None)
                if chunk is None:
                    break
                if values[i] is not None:
                    drawn = values[i].random(chunk.size)
                    drawn *= BAND_HIGH[band] - BAND_LOW[band]
                    drawn += BAND_LOW[band]
                    chunk = chunk[drawn < rate]
                pending[i] = np.concatenate([pending[i], chunk]) if pending[i].size else chunk
            inside = int(np.searchsorted(pending[i], end))
            parts.append(pending[i][:inside])
            pending[i] = pending[i][inside:]
        yield _union(parts)


def _band_values(key: np.uint64, band: int, marks: int) -> np.ndarray:
    """The values of band ``band``'s first ``marks`` marks, uniform in the band, from the band's second stream."""
    values = np.random.Generator(np.random.PCG64(int(key))).random(marks)
    values *= BAND_HIGH[band] - BAND_LOW[band]
    values += BAND_LOW[band]
    return values


def _stuck_at_one(keys: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """The polarity of each ``stuck`` cell: a fixed hash of the seed's keys and the cell number."""
    return (_mix(np.asarray(cells, dtype=np.uint64), keys[2 * BANDS]) >> np.uint64(63)).astype(bool)


def _bursts(memory: AddressedMemory, address, bit, position, burst: int) -> np.ndarray:
    """Each upset cell's burst of ``burst`` adjacent bits (at most its word's width), kept inside its word;
    merged and sorted."""
    width = memory.widths[position]
    span = np.minimum(burst, width)
    first = address - bit + np.minimum(bit, width - span)
    offsets = np.arange(burst)
    cells = first[:, None] + offsets
    return _distinct(np.sort(cells[offsets < span[:, None]]))
