"""A measured supply-voltage curve: bit error rate and energy per access against voltage (the user's CSV).

The CSV has a header with the columns ``voltage``, ``bit_error_rate`` and ``relative_energy``
(energy per access relative to nominal), one row per measured voltage, in strictly ascending
or strictly descending voltage. No curve is shipped: it belongs to the user's memory.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from edgefault.errors import EdgefaultError
from edgefault.reading import parse_csv, read_text_bounded

COLUMNS = ("voltage", "bit_error_rate", "relative_energy")


@dataclasses.dataclass(frozen=True)
class VoltagePoint:
    """One row of the curve.

    Example:
        >>> VoltagePoint(0.8, 1e-4, 0.64).relative_energy
        0.64
    """

    voltage: float
    bit_error_rate: float
    relative_energy: float


@dataclasses.dataclass(frozen=True)
class VoltageCurve:
    """The rows, highest voltage (nominal) first.
    """

    source: str
    points: tuple[VoltagePoint, ...]

    def to_dict(self) -> dict:
        return {"source": self.source, "points": [dataclasses.asdict(p) for p in self.points]}


def parse_voltage_curve(text: str, source: str = "curve") -> VoltageCurve:
    """Parse and check the CSV text of a voltage curve.

    Example:
        >>> parse_voltage_curve("voltage,bit_error_rate,relative_energy\\n1.0,0,1\\n0.8,1e-3,0.64\\n").points[1]
        VoltagePoint(voltage=0.8, bit_error_rate=0.001, relative_energy=0.64)
        >>> parse_voltage_curve("voltage,energy\\n1.0,1\\n")
        Traceback (most recent call last):
        ...
        edgefault.errors.EdgefaultError: curve: missing column(s) bit_error_rate, relative_energy (need voltage, bit_error_rate, relative_energy)
    """
    fields, rows = parse_csv(text, source)
    header = [name.strip() for name in fields]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise EdgefaultError(f"{source}: missing column(s) {', '.join(missing)} (need {', '.join(COLUMNS)})")
    points = []
    for line, row in enumerate(rows, start=2):
        row = {(k or "").strip(): v for k, v in row.items()}
        try:
            values = [float(row[c]) for c in COLUMNS]
        except (TypeError, ValueError):
            raise EdgefaultError(f"{source}: line {line}: {', '.join(COLUMNS)} must be numbers") from None
        voltage, rate, energy = values
        if not all(math.isfinite(v) for v in values) or voltage <= 0 or energy <= 0:
            raise EdgefaultError(f"{source}: line {line}: voltage and relative_energy must be finite and > 0")
        if not 0 <= rate <= 1:
            raise EdgefaultError(f"{source}: line {line}: bit_error_rate must lie in [0, 1], got {rate}")
        points.append(VoltagePoint(voltage, rate, energy))
    if not points:
        raise EdgefaultError(f"{source}: no rows")
    voltages = [p.voltage for p in points]
    steps = [b - a for a, b in zip(voltages, voltages[1:])]
    if not (all(s > 0 for s in steps) or all(s < 0 for s in steps)):
        raise EdgefaultError(f"{source}: voltages out of order (rows must be in strictly ascending or descending "
                             f"voltage), got {', '.join(f'{v:g}' for v in voltages)}")
    return VoltageCurve(source, tuple(sorted(points, key=lambda p: -p.voltage)))


def read_voltage_curve(path: str | Path) -> VoltageCurve:
    """Read a voltage curve CSV; a missing or malformed file is a one-line error.
    """
    return parse_voltage_curve(read_text_bounded(path, "`voltage_curve`"), str(path))
