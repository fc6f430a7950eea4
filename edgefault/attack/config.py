"""The attack's settings (one frozen dataclass, validated) and what it found."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import numpy as np

from edgefault.errors import EdgefaultError

MAX_FLIPS = 100_000
MAX_BATCH = 65_536


@dataclasses.dataclass(frozen=True)
class AttackSettings:
    """How the progressive bit search runs and stops.

    ``flips``: the most flips to commit. ``until``: stop once ONNX Runtime's test accuracy is at
    or below this (None: chance plus 1 point, :meth:`target`). ``batch``: attack-batch images, drawn with ``seed``
    from the training split. ``topk``: codes per layer ranked by gradient magnitude; ``tries``:
    candidate ranks per layer tried on the actual loss before the search gives up. ``chips``:
    random-flip chips per count for the contrast (0: none). ``limit``: test images for ONNX
    Runtime (None: all). ``threads``: ONNX Runtime threads (0: its choice).

    Example:
        >>> AttackSettings(flips=10).batch
        128
        >>> AttackSettings(flips=0)
        Traceback (most recent call last):
        ...
        edgefault.errors.EdgefaultError: `flips` must be a positive integer (at most 100,000), got 0
    """

    flips: int = 100
    until: float | None = None
    batch: int = 128
    seed: int = 0
    topk: int = 10
    tries: int = 3
    chips: int = 5
    limit: int | None = None
    threads: int = 0

    def __post_init__(self) -> None:
        for name, low, high in (("flips", 1, MAX_FLIPS), ("batch", 1, MAX_BATCH), ("topk", 1, 1_000_000),
                                ("tries", 1, 1000), ("chips", 0, 1000), ("threads", 0, 256),
                                ("seed", 0, 2**63 - 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                kind = "a positive integer" if low == 1 else "a non-negative integer"
                raise EdgefaultError(f"`{name}` must be {kind} (at most {high:,}), got {value!r}")
        if self.limit is not None and (isinstance(self.limit, bool) or not isinstance(self.limit, int)
                                       or self.limit < 1):
            raise EdgefaultError(f"`limit` must be a positive integer, got {self.limit!r}")
        if self.until is not None:
            if isinstance(self.until, bool) or not isinstance(self.until, (int, float)) \
                    or not math.isfinite(self.until) or not 0 <= self.until <= 1:
                raise EdgefaultError(f"`until` must be an accuracy in [0, 1], got {self.until!r}")
            object.__setattr__(self, "until", float(self.until))

    def target(self, labels: Sequence[int] | np.ndarray) -> float:
        """The accuracy that ends the attack: ``until``, or chance plus 1 point on the test images scored.

        Chance is the accuracy of always answering the most frequent class of ``labels`` (the
        labels of the test images ONNX Runtime scores): 1 / classes on a balanced test split
        (11% for 10 classes), more on an unbalanced one or a subset (``limit``), where a model
        the attack has collapsed onto a frequent class would otherwise never count as broken.

        Example:
            >>> round(AttackSettings().target(list(range(10))), 4)
            0.11
            >>> round(AttackSettings().target([0, 1, 1, 8]), 4)  # always answering 1 scores 50%
            0.51
            >>> AttackSettings(until=0.5).target([0, 1])
            0.5
        """
        if self.until is not None:
            return self.until
        _, counts = np.unique(np.asarray(labels).ravel(), return_counts=True)
        if counts.size == 0:
            raise EdgefaultError("no test images to measure the attack's accuracy on")
        return float(counts.max()) / float(counts.sum()) + 0.01


@dataclasses.dataclass(frozen=True)
class RandomContrast:
    """ONNX Runtime accuracy under random flips of one count: per chip, mean and 95% t interval of the mean.

    Example:
        >>> RandomContrast(3, (0.9, 0.8), 0.85, 0.2, 1.0).to_dict()["count"]
        3
    """

    count: int
    accuracies: tuple[float, ...]
    mean: float
    low: float | None
    high: float | None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class AttackResult:
    """What one attack did: its flips (fault-map entries with loss and ORT accuracy), the stop, the contrast.

    ``reached`` says whether ORT accuracy got to ``target``; ``stop`` is ``target``, ``flips``
    (the budget ran out) or ``stalled`` (no candidate raised the loss). ``batch_indices`` are the
    attack batch's positions in the training split. ``seconds_per_iteration`` times the search
    alone (gradients, candidates and trials), ``seconds`` everything.
    """

    model: str
    data: str
    settings: AttackSettings
    clean_accuracy: float
    clean_loss: float
    target: float
    flips: tuple[dict[str, Any], ...]
    reached: bool
    stop: str
    random: tuple[RandomContrast, ...]
    batch_indices: tuple[int, ...]
    weight_bits: int
    seconds_per_iteration: float
    seconds: float
    summary: str

    @property
    def final_accuracy(self) -> float:
        return self.flips[-1]["accuracy"] if self.flips else self.clean_accuracy

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields, with the final accuracy.
        """
        values = dataclasses.asdict(self)
        values["random"] = [r.to_dict() for r in self.random]
        values["final_accuracy"] = self.final_accuracy
        return values


@dataclasses.dataclass(frozen=True)
class FlipsToBreak:
    """Flips needed to bring ORT accuracy to ``target``, over several attack batches.

    ``counts`` holds one entry per batch (None: not reached within ``limit`` flips); ``median``
    counts those as more than ``limit`` (None when the median itself is not reached); ``low``
    and ``high`` are the range of the counts that reached it.

    Example:
        >>> f = FlipsToBreak.from_counts((5, 9, None), limit=100, target=0.11)
        >>> f.median, f.low, f.high, f.text()
        (9.0, 5, 9, '9 [5, >100]')
    """

    counts: tuple[int | None, ...]
    median: float | None
    low: int | None
    high: int | None
    limit: int
    target: float

    @classmethod
    def from_counts(cls, counts: tuple[int | None, ...], limit: int, target: float) -> FlipsToBreak:
        reached = [c for c in counts if c is not None]
        values = sorted(float(c) if c is not None else math.inf for c in counts)
        middle = len(values) // 2
        median = values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2
        return cls(tuple(counts), None if math.isinf(median) else median, min(reached, default=None),
                   max(reached, default=None), limit, target)

    def text(self) -> str:
        """The median and range in words, e.g. ``9 [5, 12]``, with ``>N`` for batches that did not reach it."""
        median = f">{self.limit}" if self.median is None else f"{self.median:g}"
        high = f">{self.limit}" if None in self.counts else f"{self.high}"
        low = f">{self.limit}" if self.low is None else f"{self.low}"
        return f"{median} [{low}, {high}]"

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "text": self.text()}
