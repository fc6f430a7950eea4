"""A chip: one fault pattern over weight-memory addresses, fixed by (seed, kind, rate or count, filters).

The settings are a frozen dataclass validated on construction, so a bad rate or kind fails
where it is written, with a message that names the value.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
from typing import Any

from edgefault.errors import EdgefaultError

KINDS = ("flip", "sa0", "sa1", "stuck", "mbu")
MAX_BIT = 31  # int32 biases are the widest words in the memory
MAX_BURST = 8  # a burst stays inside one word, and int8 words have 8 bits


@dataclasses.dataclass(frozen=True)
class Chip:
    """The fault settings of one simulated faulty device.

    * ``kind``: ``flip`` (bit flips), ``sa0``/``sa1`` (cells stuck at 0/1), ``stuck`` (each
      faulty cell stuck at 0 or 1 with probability 1/2), ``mbu`` (multi-bit upsets: each
      faulty cell starts a burst of ``burst`` adjacent bits of its word, all flipped).
    * ``rate`` (probability that a target cell is faulty) or ``count`` (exactly that many
      faulty target cells); exactly one of them.
    * ``bits``: the bit positions within a word that can be faulty (None: all);
      ``protect_bits``: positions whose faults are dropped afterwards, as ECC would correct them.
    * ``layers``: a regular expression; only weight tensors whose name it matches are targets.
    * ``include_bias``: int32 biases join the memory.

    Example:
        >>> Chip("flip", rate=1e-3, seed=7, bits=[7]).bits
        (7,)
        >>> Chip("flip", rate=2.0)
        Traceback (most recent call last):
        ...
        edgefault.errors.EdgefaultError: rate must lie in [0, 1], got 2.0
    """

    kind: str
    rate: float | None = None
    count: int | None = None
    seed: int = 0
    bits: tuple[int, ...] | None = None
    protect_bits: tuple[int, ...] = ()
    layers: str | None = None
    burst: int = 2
    include_bias: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise EdgefaultError(f"unknown fault kind {self.kind!r}; choose one of {', '.join(KINDS)}")
        if (self.rate is None) == (self.count is None):
            raise EdgefaultError("give exactly one of rate and count")
        if self.rate is not None:
            if isinstance(self.rate, bool) or not isinstance(self.rate, (int, float)):
                raise EdgefaultError(f"rate must be a number, got {self.rate!r}")
            if not (math.isfinite(self.rate) and 0.0 <= self.rate <= 1.0):
                raise EdgefaultError(f"rate must lie in [0, 1], got {self.rate}")
            object.__setattr__(self, "rate", float(self.rate))
        if self.count is not None:
            if not _is_int(self.count) or self.count < 0:
                raise EdgefaultError(f"count must be a non-negative integer, got {self.count!r}")
            object.__setattr__(self, "count", int(self.count))
        if not _is_int(self.seed) or self.seed < 0:
            raise EdgefaultError(f"seed must be a non-negative integer, got {self.seed!r}")
        object.__setattr__(self, "seed", int(self.seed))
        if self.bits is not None:
            object.__setattr__(self, "bits", _bit_tuple("bits", self.bits))
            if not self.bits:
                raise EdgefaultError("bits must name at least one bit position")
        object.__setattr__(self, "protect_bits", _bit_tuple("protect_bits", self.protect_bits))
        if self.layers is not None:
            if not isinstance(self.layers, str):
                raise EdgefaultError(f"layers must be a regular expression string, got {self.layers!r}")
            try:
                re.compile(self.layers)
            except re.error as exc:
                raise EdgefaultError(f"layers: bad regular expression {self.layers!r} ({exc})") from None
        if not _is_int(self.burst) or not 1 <= self.burst <= MAX_BURST:
            raise EdgefaultError(f"burst must be an integer in [1, {MAX_BURST}], got {self.burst!r}")
        object.__setattr__(self, "burst", int(self.burst))
        if not isinstance(self.include_bias, bool):
            raise EdgefaultError(f"include_bias must be true or false, got {self.include_bias!r}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; :meth:`from_dict` reads it back.

        Example:
            >>> Chip.from_dict(Chip("sa0", count=10).to_dict()) == Chip("sa0", count=10)
            True
        """
        values = dataclasses.asdict(self)
        values["bits"] = None if self.bits is None else list(self.bits)
        values["protect_bits"] = list(self.protect_bits)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Chip:
        """Rebuild a chip from :meth:`to_dict` output, rejecting unknown keys.

        Example:
            >>> Chip.from_dict({"kind": "flip", "rate": 0.01}).seed
            0
        """
        if not isinstance(values, dict):
            raise EdgefaultError(f"a chip must be a JSON object, got {type(values).__name__}")
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise EdgefaultError(f"unknown chip field(s): {', '.join(unknown)}")
        if "kind" not in values:
            raise EdgefaultError("a chip needs a kind")
        return cls(**values)


def parse_bits(text: str) -> tuple[int, ...]:
    """Parse a bit list such as ``7``, ``0,1,7`` or ``0-3,7`` into sorted positions.

    Example:
        >>> parse_bits("0-2,7")
        (0, 1, 2, 7)
        >>> parse_bits("7-3")
        Traceback (most recent call last):
        edgefault.errors.EdgefaultError: bits: empty range '7-3' in '7-3'
    """
    positions: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        low, dash, high = part.partition("-")
        try:
            first = int(low)
            last = int(high) if dash else first
        except ValueError:
            raise EdgefaultError(f"bits must be bit positions like 7, 0,1,7 or 0-3, got {text!r}") from None
        if first > last:
            raise EdgefaultError(f"bits: empty range {part!r} in {text!r}")
        positions.update(range(first, last + 1))
    return _bit_tuple("bits", positions)


def _bit_tuple(name: str, values: Any) -> tuple[int, ...]:
    try:
        items = set(values)
    except TypeError:
        raise EdgefaultError(f"{name} must be a list of bit positions, got {values!r}") from None
    if not all(_is_int(v) and 0 <= v <= MAX_BIT for v in items):
        raise EdgefaultError(f"{name} must hold bit positions in [0, {MAX_BIT}], got {sorted(items, key=str)}")
    return tuple(sorted(int(v) for v in items))


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
