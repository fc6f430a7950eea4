"""Precision-targeted chips (``campaign --target-ci W``): as many chips per cell as its interval needs.

A *group* is what one interval describes: a (mode, target, kind, rate, memory) of the grid or per-bit
modes across all models (their paired differences use the same chips, so the models move
together), or one model's (layer, kind, rate) in per-layer mode. Chips are added in order,
0, 1, 2, ... until the 95% interval of every model's mean accuracy, and of every paired
difference, reaches no further than ``W`` from its estimate, with at least ``MIN_CHIPS``
chips and at most the campaign's ``chips``. The intervals are the summary's own
(:func:`edgefault.campaign.stats.estimate`).

The decision looks only at chips 0..n-1, in order, once all of them are finished: it does not
depend on the order cells come back in, on the engine or on interruptions, and chip k is the
same chip whatever ``W`` is. A group needing n chips reports exactly the numbers a
``--chips n`` campaign reports. Cells already in flight when their group stops are recorded
but left out of the summary.
"""

from __future__ import annotations

import itertools
from typing import Any, Iterable

from edgefault.campaign.cells import Cell
from edgefault.campaign.sites import WEIGHTS
from edgefault.campaign.stats import estimate

MIN_CHIPS = 5  # the fewest chips whose spread is trusted to judge an interval


def group_key(cell: Cell) -> tuple:
    """The group a cell's chip count is decided in (see the module docstring).

    Example:
        >>> group_key(Cell(model=1, mode="grid", kind="flip", rate=0.01, chip=3, seed=5))
        ('grid', None, 'flip', 0.01, None)
        >>> group_key(Cell(model=1, mode="grid", kind="flip", rate=0.01, chip=3, seed=5, site="activations",
        ...                act_format="dense"))[-1]
        'activations/dense'
    """
    key = (cell.mode, cell.target, cell.kind, cell.rate, cell.model if cell.mode == "layer" else None)
    return key if cell.site == WEIGHTS else (*key, cell.memory)  # weight groups keep their keys of old


def within(values: Iterable[float], width: float) -> bool:
    """True when the 95% interval of the mean of ``values`` reaches no further than ``width`` from it.

    Example:
        >>> within([0.9, 0.9, 0.9], 0.01), within([0.5, 0.9, 0.1], 0.01)
        (True, False)
    """
    e = estimate(values)
    return e.low is not None and max(e.high - e.mean, e.mean - e.low) <= width


class ChipTargets:
    """Per group, how many chips a target-precision campaign needs, decided from results as they arrive.

    ``cells`` are the planned cells (up to the maximum chips), ``hashes`` the models' SHA-256
    (for the cell keys), ``width`` the target half-width ``W``.
    """

    def __init__(self, cells: list[Cell], hashes: tuple[str, ...], width: float, chips: int):
        self.width, self.chips, self.hashes = width, chips, hashes
        self._keys: dict[str, tuple[tuple, int, int]] = {}  # key -> (group, model, chip)
        self._models: dict[tuple, list[int]] = {}
        for cell in cells:
            if cell.mode != "clean":
                group = group_key(cell)
                self._keys[cell.key(hashes[cell.model])] = (group, cell.model, cell.chip)
                models = self._models.setdefault(group, [])
                if cell.model not in models:
                    models.append(cell.model)
        self._results: dict[tuple, dict[tuple[int, int], float | None]] = {g: {} for g in self._models}
        self._checked = {group: 0 for group in self._models}  # chips 0..n-1 judged insufficient so far
        self.needed: dict[tuple, int] = {}  # decided groups: the chips they need
        self.met: dict[tuple, bool] = {}  # whether the target was reached (False: stopped at the maximum)

    def add(self, record: dict[str, Any], final: bool = True) -> None:
        """Take a finished cell's record (a success, or with ``final`` an attempt that will not be retried).
        """
        where = self._keys.get(record.get("key"))
        if where is None or (record.get("error") is not None and not final):
            return
        group, model, chip = where
        self._results[group][model, chip] = record["accuracy"] if record.get("error") is None else None
        if group not in self.needed:
            self._decide(group)

    def wanted(self, cell: Cell) -> bool:
        """Whether the cell may still count: clean, its group undecided, or its chip among those needed.
        """
        if cell.mode == "clean":
            return True
        needed = self.needed.get(group_key(cell))
        return needed is None or cell.chip < needed

    def _decide(self, group: tuple) -> None:
        results, models = self._results[group], self._models[group]
        finished = next((k for k in itertools.count() if any((m, k) not in results for m in models)))
        finished = min(finished, self.chips)
        for n in range(max(self._checked[group] + 1, min(MIN_CHIPS, self.chips)), finished + 1):
            self._checked[group] = n
            if self._precise(results, models, n):
                self.needed[group], self.met[group] = n, True
                return
        if finished == self.chips:
            self.needed[group], self.met[group] = self.chips, False

    def _precise(self, results: dict, models: list[int], n: int) -> bool:
        accuracy = {(m, k): results[m, k] for m in models for k in range(n) if results[m, k] is not None}
        if not all(within((accuracy[m, k] for k in range(n) if (m, k) in accuracy), self.width) for m in models):
            return False
        return all(
            within((accuracy[a, k] - accuracy[b, k] for k in range(n) if (a, k) in accuracy and (b, k) in accuracy),
                   self.width)
            for a, b in itertools.combinations(models, 2)
        )
