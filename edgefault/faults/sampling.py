"""Drawing a chip's faults: a seeded key per memory cell, generated lazily at a cost that follows the fault count.

The model. Every target cell (a bit position the chip may hit, in address order) carries an
independent uniform key in [0, 1) drawn from the chip's seed. At rate ``p`` the faulty cells
are those with key < p; with ``count=K`` they are the K cells with the smallest keys. So a
cell is faulty with probability exactly ``p``, independently of the others, and a count
chip is a uniformly random K-subset.

Keys are never stored. The key range is cut into layers ([0, 2^-40), then four layers per
octave up to 1); in layer j each cell not claimed by an earlier layer is claimed with the
conditional probability ``w_j / (1 - lo_j)``, which makes the first claiming layer of a cell
fall in each layer with exactly its width. A layer is a Bernoulli process along the cells,
drawn as geometric gaps, three uniforms per claimed cell (gap, key within the layer, stuck
polarity): the first claim of every layer from one shared stream, the rest from the layer's
own stream (``SeedSequence(seed, spawn_key=(j + 1,))``, what ``SeedSequence(seed).spawn``
would give). Drawing stops at the layer that holds ``p`` (or the K-th key), so the work
follows the number of faults (at most ~19% more claims than faults, plus a fixed ~0.1 ms
for the layer heads), never the number of bits.

What that buys (the chip's pairing guarantees):
* the same chip on two memories with the same number of target cells hits the same cells;
* every layer's stream ignores the memory size, so on a smaller memory a rate chip's faults
  are exactly the prefix of a larger memory's, and a count chip's faults include every fault
  the larger memory has in the common prefix;
* chips of one seed are nested: rate p faults are a subset of rate q > p faults, and the
  kinds share cells (``flip`` and ``sa0`` of one seed fault the same cells).
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from edgefault.errors import EdgefaultError
from edgefault.faults.chip import MAX_BIT, Chip
from edgefault.faults.memory import WeightMemory
from edgefault.faults.records import FLIP, MBU, SA0, SA1, FaultRecords

_LOWEST_OCTAVE = -40  # a memory of 2^40 bits expects one cell in the bottom layer
_LAYERS_PER_OCTAVE = 4
# Layer j covers keys in [_BOUNDS[j], _BOUNDS[j + 1]); the last boundary is exactly 1.
_BOUNDS = np.concatenate(
    [[0.0], 2.0 ** (np.arange(-_LOWEST_OCTAVE * _LAYERS_PER_OCTAVE + 1) / _LAYERS_PER_OCTAVE + _LOWEST_OCTAVE)]
)
_LAYERS = len(_BOUNDS) - 1
# Probability that layer j claims a cell no earlier layer claimed; the top layer claims the rest.
_CLAIM = np.diff(_BOUNDS) / (1.0 - _BOUNDS[:-1])
# 1 / log(1 - claim), 0 for the top layer, whose gaps are all 1.
_INV_LOG_MISS = np.concatenate([1.0 / np.log1p(-_CLAIM[:-1]), [0.0]])
# Packed claims: cell index << 9 | layer << 1 | polarity (161 layers fit in 8 bits).
_CELL_SHIFT = 9
_CELL_SHIFT_LIMIT = 63 - _CELL_SHIFT


@dataclasses.dataclass(frozen=True)
class _TargetCells:
    """The cells a chip may hit: per targeted tensor, ``per_element`` allowed bits of each element."""

    positions: np.ndarray  # positions of the targeted tensors in the memory
    per_element: np.ndarray  # target cells per element of each targeted tensor
    ends: np.ndarray  # cumulative cell counts: tensor i owns cells [ends[i] - cells_i, ends[i])
    bit_table: np.ndarray  # bit_table[i, k]: the k-th allowed bit of targeted tensor i

    @property
    def size(self) -> int:
        return int(self.ends[-1])

    def locate(self, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(memory tensor position, element index, bit) of each cell index."""
        target = np.searchsorted(self.ends, cells, side="right")
        per_element = self.per_element[target]
        local = cells - (self.ends[target] - self._sizes()[target])
        return self.positions[target], local // per_element, self.bit_table[target, local % per_element]

    def _sizes(self) -> np.ndarray:
        return np.diff(self.ends, prepend=0)


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
            f"chip has include_bias={chip.include_bias} but the memory was built with include_bias={memory.include_bias}"
        )
    cells = _target_cells(memory, chip)
    if chip.count is not None and chip.count > cells.size:
        raise EdgefaultError(f"count {chip.count} exceeds the {cells.size} target bits of the weight memory")
    chosen, stuck_at_one = _draw_cells(chip.seed, cells.size, chip.rate, chip.count)
    position, index, bit = cells.locate(chosen)
    if chip.kind == "mbu":
        position, index, bit = _bursts(memory, position, index, bit, chip.burst)
        kind = np.full(bit.size, MBU, dtype=np.uint8)
    elif chip.kind == "stuck":
        kind = np.where(stuck_at_one, SA1, SA0).astype(np.uint8)
    else:
        kind = np.full(bit.size, {"flip": FLIP, "sa0": SA0, "sa1": SA1}[chip.kind], dtype=np.uint8)
    forbidden = np.zeros(MAX_BIT + 1, dtype=bool)
    forbidden[list(chip.protect_bits)] = True
    if chip.bits is not None:  # only bursts can reach beyond the target cells
        forbidden[np.setdiff1d(np.arange(MAX_BIT + 1), chip.bits)] = True
    keep = ~forbidden[bit]
    address = memory.addresses(position[keep], index[keep], bit[keep])
    records = FaultRecords(memory.names, position[keep], index[keep], bit[keep], kind[keep], address)
    if chip.kind == "mbu":  # overlapping bursts of one word: each bit flips once, in address order
        _, first = np.unique(address, return_index=True)
        records = records.take(first)
    return records


def _target_cells(memory: WeightMemory, chip: Chip) -> _TargetCells:
    pattern = re.compile(chip.layers) if chip.layers is not None else None
    targeted = [i for i, t in enumerate(memory.tensors) if pattern is None or pattern.search(t.name)]
    if not targeted:
        shown = ", ".join(memory.names[:5]) + (", ..." if len(memory.names) > 5 else "")
        raise EdgefaultError(f"--layers {chip.layers!r} matches no weight tensor (tensors: {shown})")
    allowed = chip.bits if chip.bits is not None else tuple(range(MAX_BIT + 1))
    bit_table = np.zeros((len(targeted), MAX_BIT + 1), dtype=np.int64)
    per_element = np.zeros(len(targeted), dtype=np.int64)
    sizes = np.zeros(len(targeted), dtype=np.int64)
    for row, position in enumerate(targeted):
        tensor = memory.tensors[position]
        bits = [b for b in allowed if b < tensor.width]
        bit_table[row, : len(bits)] = bits
        per_element[row] = len(bits)
        sizes[row] = tensor.size * len(bits)
    if not sizes.sum():
        raise EdgefaultError(f"bits {list(allowed)} select no bit of the targeted tensors (int8 and uint8 have bits 0-7)")
    return _TargetCells(np.array(targeted, dtype=np.int64), per_element, np.cumsum(sizes), bit_table)


def _draw_cells(seed: int, cells: int, rate: float | None, count: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Faulty cell indices in increasing order, and each one's stuck polarity (True: stuck at 1)."""
    if cells >= 2**_CELL_SHIFT_LIMIT:
        raise EdgefaultError(f"a weight memory of {cells} bits is too large to sample")
    parts: list[np.ndarray] = []
    if count != 0 and rate != 0.0:
        # Every layer's first claim comes from one shared draw, so the many layers that hold no
        # cell of this memory cost no generator of their own.
        heads = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,))).random((_LAYERS, 3))
        occupied = _gaps(heads[:, 0], np.arange(_LAYERS)) <= cells
        claimed = 0
        for layer in np.flatnonzero(occupied).tolist():
            if rate is not None and _BOUNDS[layer] >= rate:
                break
            index, keys, coins = _layer_cells(seed, layer, cells, heads[layer])
            if rate is not None:
                keep = keys < rate  # only the layer holding the rate has keys above it
                index, keys, coins = index[keep], keys[keep], coins[keep]
            claimed += index.size
            if count is not None and claimed >= count:
                # The K smallest keys: every earlier layer's cells, then the lowest keys of this
                # layer among the cells no earlier layer claimed.
                earlier = _merge(parts) >> _CELL_SHIFT
                slot = np.minimum(np.searchsorted(earlier, index), max(earlier.size - 1, 0))
                fresh = np.flatnonzero(earlier[slot] != index) if earlier.size else np.arange(index.size)
                need = count - earlier.size
                if fresh.size >= need:
                    fresh = np.sort(fresh[np.argpartition(keys[fresh], need - 1)[:need]]) if need < fresh.size else fresh
                    parts.append(_pack(index[fresh], layer, coins[fresh]))
                    break
                claimed = earlier.size + fresh.size
            parts.append(_pack(index, layer, coins))
    packed = _merge(parts)
    return packed >> _CELL_SHIFT, (packed & 1).astype(bool)


def _gaps(uniforms: np.ndarray, layers) -> np.ndarray:
    """Geometric gaps (>= 1) by inversion: P(gap > k) = (1 - claim)^k.

    No cap is needed against overflow: a gap is at most ~37 / claim (uniforms stop 2^-53
    short of 1) and a layer draws about claim * cells of them, so sums stay near 37 * cells.
    """
    return (np.log1p(-uniforms) * _INV_LOG_MISS[layers]).astype(np.int64) + 1


def _layer_cells(seed: int, layer: int, cells: int, head: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The cells of [0, cells) that one key layer claims, with their keys and polarity coins.

    The first claim comes from ``head``; the rest from the layer's own generator, three
    uniforms per claim. That stream is the same however it is chunked, so the chunk size
    (which depends on the memory size) changes speed only, never the cells.
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(layer + 1,)))
    chunk, last, found = head[None, :], -1, []
    while last < cells - 1:
        expected = _CLAIM[layer] * (cells - 1 - last)
        chunk = np.concatenate([chunk, rng.random((int(expected + 4.0 * np.sqrt(expected)) + 16, 3))])
        index = last + np.cumsum(_gaps(chunk[:, 0], layer))
        inside = int(np.searchsorted(index, cells))  # claims are increasing: the first ``inside`` fit
        found.append((index[:inside], chunk[:inside, 1], chunk[:inside, 2]))
        if inside < index.size:
            break
        last, chunk = int(index[-1]), chunk[:0]
    index, keys, coins = (np.concatenate(parts) for parts in zip(*found))
    low, high = _BOUNDS[layer], _BOUNDS[layer + 1]
    return index, low + keys * (high - low), coins


def _pack(index: np.ndarray, layer: int, coins: np.ndarray) -> np.ndarray:
    """Cell index, layer and polarity in one int64, so a plain sort orders by cell, then layer."""
    return (index << _CELL_SHIFT) | (layer << 1) | (coins < 0.5)


def _merge(parts: list[np.ndarray]) -> np.ndarray:
    """Packed claims of several layers, sorted by cell, keeping each cell's first (lowest-key) claim."""
    if not parts:
        return np.zeros(0, dtype=np.int64)
    packed = np.sort(np.concatenate(parts), kind="stable")  # stable sort runs fast on sorted runs
    cell = packed >> _CELL_SHIFT
    first = np.ones(packed.size, dtype=bool)
    first[1:] = cell[1:] != cell[:-1]
    return packed[first]


def _bursts(memory, position, index, bit, burst):
    """Expand each upset cell into ``burst`` adjacent bits of its word, kept inside the word."""
    widths = np.array([t.width for t in memory.tensors], dtype=np.int64)[position]
    start = np.minimum(bit, widths - burst)
    bits = (start[:, None] + np.arange(burst)).reshape(-1)
    return np.repeat(position, burst), np.repeat(index, burst), bits
