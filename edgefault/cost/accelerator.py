"""The accelerator ``cost`` models: one frozen dataclass, read from a small TOML file and validated in one place.

The default (``default_accelerator.toml`` in this package) is a 256-MAC edge accelerator
with 16 lanes per group and 45 nm energies from Horowitz (ISSCC 2014), each with its source
in the file. Users bring their own file with the same entries.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from edgefault.errors import EdgefaultError
from edgefault.faults.formats import ACT_FORMATS

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 needs the tomli backport (same API)
    import tomli as tomllib

DEFAULT_ACCELERATOR = "default_accelerator.toml"
# Energy entries, all under [energy_pj] in the file.
ENERGIES = ("multiply", "accumulate", "index_add", "activation_sram", "weight_sram", "dram")


@dataclasses.dataclass(frozen=True)
class Accelerator:
    """A zero-skipping accelerator: compute array, bit widths, buffers, format and energies (pJ).

    ``macs`` MAC units in groups of ``lanes``; buffers in KiB; energies per operation
    (``multiply``, ``accumulate``, ``index_add``) or per ``access_bits``-wide access
    (``activation_sram``, ``weight_sram``, ``dram``). Every value is checked here, once.

    Example:
        >>> accelerator = load_accelerator()
        >>> accelerator.macs, accelerator.lanes, accelerator.groups, accelerator.energy_pj["multiply"]
        (256, 16, 16, 0.2)
        >>> dataclasses.replace(accelerator, lanes=-1, source="acc.toml")
        Traceback (most recent call last):
        ...
        edgefault.errors.EdgefaultError: acc.toml: lanes must be a positive integer, got -1
    """

    name: str
    macs: int
    lanes: int
    activation_bits: int
    weight_bits: int
    accumulator_bits: int
    access_bits: int
    activation_buffer_kib: float
    weight_buffer_kib: float
    format: str
    rle_run_bits: int
    energy_pj: dict[str, float]
    source: str = "accelerator"

    def __post_init__(self) -> None:
        where = self.source
        if not isinstance(self.name, str) or not self.name:
            raise EdgefaultError(f"{where}: name must be a non-empty string, got {self.name!r}")
        for entry in ("macs", "lanes", "activation_bits", "weight_bits", "accumulator_bits", "access_bits",
                      "rle_run_bits"):
            value = getattr(self, entry)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise EdgefaultError(f"{where}: {entry} must be a positive integer, got {value!r}")
        if self.macs % self.lanes:
            raise EdgefaultError(f"{where}: macs ({self.macs}) must be a multiple of lanes ({self.lanes})")
        for entry in ("activation_buffer_kib", "weight_buffer_kib"):
            _check_number(where, entry, getattr(self, entry))
        if self.format not in ACT_FORMATS:
            raise EdgefaultError(f"{where}: format must be one of {', '.join(ACT_FORMATS)}, got {self.format!r}")
        if not isinstance(self.energy_pj, dict):
            raise EdgefaultError(f"{where}: energy_pj must be a table of energies")
        for entry in ENERGIES:
            if entry not in self.energy_pj:
                raise EdgefaultError(f"{where}: missing entry energy_pj.{entry}")
            _check_number(where, f"energy_pj.{entry}", self.energy_pj[entry])
        unknown = sorted(set(self.energy_pj) - set(ENERGIES))
        if unknown:
            raise EdgefaultError(f"{where}: unknown entry energy_pj.{unknown[0]} (known: {', '.join(ENERGIES)})")

    @property
    def groups(self) -> int:
        """Lane groups: how many output channels (or features) are computed at once.

        Example:
            >>> load_accelerator().groups
            16
        """
        return self.macs // self.lanes

    def to_dict(self) -> dict[str, Any]:
        """The accelerator as the JSON-ready dict ``cost --json`` reports.

        Example:
            >>> load_accelerator().to_dict()["format"]
            'bitmap'
        """
        return dataclasses.asdict(self)


def _check_number(where: str, entry: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise EdgefaultError(f"{where}: {entry} must be a finite number >= 0, got {value!r}")


def accelerator_from_dict(entries: dict[str, Any], source: str = "accelerator") -> Accelerator:
    """An :class:`Accelerator` from the entries of a TOML file; missing or unknown entries refused by name.

    Example:
        >>> accelerator_from_dict({"name": "x"}, "acc.toml")
        Traceback (most recent call last):
        ...
        edgefault.errors.EdgefaultError: acc.toml: missing entry macs
    """
    fields = [f.name for f in dataclasses.fields(Accelerator) if f.name != "source"]
    for entry in fields:
        if entry not in entries:
            raise EdgefaultError(f"{source}: missing entry {entry}")
    unknown = sorted(set(entries) - set(fields))
    if unknown:
        raise EdgefaultError(f"{source}: unknown entry {unknown[0]}")
    energies = entries["energy_pj"]
    return Accelerator(**{**entries, "energy_pj": dict(energies) if isinstance(energies, dict) else energies},
                       source=source)


def load_accelerator(path: str | os.PathLike | None = None) -> Accelerator:
    """Read and validate an accelerator file; ``None`` gives the default one shipped with edgefault.

    Example:
        >>> load_accelerator().name
        'edge-45nm'
    """
    if path is None:
        text = resources.files("edgefault.cost").joinpath(DEFAULT_ACCELERATOR).read_text()
        source = f"default accelerator ({DEFAULT_ACCELERATOR})"
    else:
        source = str(path)
        try:
            text = Path(path).read_text()
        except UnicodeDecodeError:
            raise EdgefaultError(f"{source}: not a text (TOML) file") from None
    try:
        entries = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise EdgefaultError(f"{source}: not a valid TOML file ({exc})") from None
    return accelerator_from_dict(entries, source)
