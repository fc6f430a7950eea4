"""Drawing a chip's faults at a cost that follows the number of faults, not the number of bits.

The target cells of a chip are the bit cells it may hit (tensors matching ``layers``, bit
positions allowed by ``bits``), numbered in address order. The chip's generator is
``numpy.random.default_rng(seed)``; nothing else is random.

* Rate ``p``: each target cell is faulty independently with probability ``p``. The faulty
  cells are drawn in address order as geometric gaps, one uniform per fault, so the work is
  proportional to the number of faults. The stream of gaps does not depend on the memory
  size (chunks of it give the same numbers however they are cut), hence the pairing: the
  same chip on two memories with the same number of target cells hits the same cells, and
  on a smaller memory it hits exactly the prefix of a larger memory's faults.
* Count ``K``: exactly K distinct target cells, uniformly at random
  (``Generator.choice(cells, K, replace=False)``: Floyd's algorithm, O(K) for K up to 2% of
  the cells). Memories with the same number of target cells get the same cells; memories
  of other sizes get independent draws.
* ``stuck`` polarities come from a second stream, ``SeedSequence(seed, spawn_key=(1,))``,
  one uniform per fault in address order (so they pair too).

Every kind of one seed and rate (or count) faults the same cells: ``flip`` and ``sa0`` chips
differ only in what the faulty cells do.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from edgefault.errors import EdgefaultError
from edgefault.faults.chip import MAX_BIT, Chip
from edgefault.faults.memory import WeightMemory
from edgefault.faults.records import FLIP, MBU, SA0, SA1, FaultRecords

_CHUNK_ROWS = 1 << 22  # uniforms drawn at once stay under 64 MB, whatever the rate


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

    def place(self, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(memory tensor position, element index, bit, address) of each cell number."""
        target = np.searchsorted(self.starts, cells, side="right") - 1
        local = cells - self.starts[target]
        if np.array_equal(self.per_element, self.widths):  # every bit allowed: cells run along the addresses
            # Widths are 8 or 32: shifts and masks instead of a division.
            shifts = np.log2(self.widths).astype(np.int64)
            if shifts.min() == shifts.max():
                index, bit = local >> int(shifts[0]), local & int(self.widths[0] - 1)
            else:
                index, bit = local >> shifts[target], local & (self.widths - 1)[target]
            return self.positions[target], index, bit, cells + (self.bit_starts - self.starts[:-1])[target]
        index, k = np.divmod(local, self.per_element[target])
        bit = self.bit_table[target, k]
        return self.positions[target], index, bit, self.bit_starts[target] + index * self.widths[target] + bit


def target_bits(memory: WeightMemory, chip: Chip) -> int:
    """How many cells the chip may hit: bits of the tensors matching ``layers`` allowed by ``bits``.

    Example:
        >>> memory = WeightMemory.from_tensors([("a", "int8", (10,), "t"), ("b", "int8", (5,), "t")])
        >>> target_bits(memory, Chip("flip", rate=0.1, bits=[7], layers="a"))
        10
    """
    return _target_cells(memory, chip).size


def sample_faults(memory: WeightMemory, chip: Chip) -> FaultRecords:
    """Draw the chip's faults on a weight memory, in address order.

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
    if memory.include_bias != chip.include_bias:
        raise EdgefaultError(
            f"chip has include_bias={chip.include_bias} but the memory has include_bias={memory.include_bias}"
        )
    cells = _target_cells(memory, chip)
    if chip.count is not None and chip.count > cells.size:
        raise EdgefaultError(f"count {chip.count} exceeds the {cells.size} target bits of the weight memory")
    position, index, bit, address = cells.place(_draw_cells(chip.seed, cells.size, chip.rate, chip.count))
    if chip.kind == "mbu":
        address = _bursts(memory, address, bit, position, chip.burst)
        position, index, bit = memory.locate(address)
        kind = np.full(address.size, MBU, dtype=np.uint8)
    elif chip.kind == "stuck":
        kind = np.where(_stuck_at_one(chip.seed, address.size), SA1, SA0).astype(np.uint8)
    else:
        kind = np.full(address.size, {"flip": FLIP, "sa0": SA0, "sa1": SA1}[chip.kind], dtype=np.uint8)
    records = FaultRecords(memory.names, position, index, bit, kind, address)
    forbidden = np.zeros(MAX_BIT + 1, dtype=bool)
    forbidden[list(chip.protect_bits)] = True
    if chip.bits is not None:  # only bursts can reach beyond the target cells
        forbidden[np.setdiff1d(np.arange(MAX_BIT + 1), chip.bits)] = True
    return records.take(~forbidden[records.bit]) if forbidden.any() else records


def _target_cells(memory: WeightMemory, chip: Chip) -> _TargetCells:
    pattern = re.compile(chip.layers) if chip.layers is not None else None
    targeted = [i for i, name in enumerate(memory.names) if pattern is None or pattern.search(name)]
    if not targeted:
        shown = ", ".join(memory.names[:5]) + (", ..." if len(memory.names) > 5 else "")
        raise EdgefaultError(f"--layers {chip.layers!r} matches no weight tensor (tensors: {shown})")
    allowed = np.array(chip.bits if chip.bits is not None else range(MAX_BIT + 1), dtype=np.int64)
    widths = memory.widths[targeted]
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


def _draw_cells(seed: int, cells: int, rate: float | None, count: int | None) -> np.ndarray:
    """Faulty cell numbers in increasing order."""
    rng = np.random.default_rng(seed)
    if count is not None:
        chosen = rng.choice(cells, size=count, replace=False) if count else np.zeros(0, dtype=np.int64)
        return np.sort(chosen).astype(np.int64)
    if rate == 0.0:
        return np.zeros(0, dtype=np.int64)
    # Gap = 1 + floor(log(1 - u) / log(1 - p)) has P(gap > k) = (1 - p)^k; at p = 1 every gap is 1.
    scale = 1.0 / np.log1p(-rate) if rate < 1.0 else 0.0
    found, last = [], -1
    while last < cells - 1:
        expected = rate * (cells - 1 - last)
        gaps = rng.random(min(int(expected + 6.0 * np.sqrt(expected)) + 16, _CHUNK_ROWS))
        # In place, to spare allocations; gaps are capped past the memory's end so that tiny
        # rates cannot overflow the sum.
        np.negative(gaps, out=gaps)
        np.log1p(gaps, out=gaps)
        gaps *= scale
        np.minimum(gaps, cells, out=gaps)
        cell = gaps.astype(np.int64)
        cell += 1
        np.cumsum(cell, out=cell)
        cell += last
        inside = int(np.searchsorted(cell, cells))  # cells increase: the first ``inside`` fit
        found.append(cell[:inside])
        if inside < cell.size:
            break
        last = int(cell[-1])
    return found[0] if len(found) == 1 else np.concatenate(found)


def _stuck_at_one(seed: int, faults: int) -> np.ndarray:
    """The polarity of each ``stuck`` fault, in order, from the seed's second stream: the first
    stream alone fixes the cells, so every kind of one seed faults the same cells."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1,))).random(faults) < 0.5


def _bursts(memory: WeightMemory, address, bit, position, burst: int) -> np.ndarray:
    """Each upset cell's burst of ``burst`` adjacent bits, kept inside its word; merged and sorted."""
    first = address - bit + np.minimum(bit, memory.widths[position] - burst)
    return np.unique((first[:, None] + np.arange(burst)).reshape(-1))
