"""``results.jsonl``: one JSON line per finished cell attempt, appended and synced as it arrives.

The file is the campaign's memory. Each line is written with one ``write`` call, flushed and
fsynced before the next cell is counted, so a kill loses at most the cells still in flight.
A kill during a write can leave a torn last line; reading drops it and truncates the file
back to the last complete line, so the cell simply runs again. A damaged line anywhere else
is not a kill's doing, and is refused rather than silently dropped.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Iterable

from edgefault.errors import EdgefaultError
from edgefault.reading import MAX_JSON_BYTES, parse_json, read_bytes_bounded

MAX_ATTEMPTS = 2  # a cell that raises is retried once, then recorded as failed


class ResultsLog:
    """The append-only results file of one campaign folder.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._handle = None

    def read(self, repair: bool = True) -> list[dict[str, Any]]:
        """All complete records; a torn last line is dropped (and, with ``repair``, cut from the file).

        Example:
            >>> ResultsLog("/nonexistent/results.jsonl").read()
            []
        """
        if not os.path.lexists(self.path):
            return []
        data = read_bytes_bounded(self.path, MAX_JSON_BYTES)  # a regular file of bounded size, or one line
        lines = data.split(b"\n")
        tail = lines.pop()  # empty when the file ends with a newline, else a torn write
        records, good_end = [], 0
        for number, line in enumerate(lines, start=1):
            record = _parse(line)
            if record is None:
                if number == len(lines) and not tail:
                    break  # a last line cut short by a dying disk write is dropped the same way
                raise EdgefaultError(f"{self.path}: line {number} is not a result record; the file is damaged")
            records.append(record)
            good_end += len(line) + 1
        if repair and good_end < len(data):
            with self.path.open("r+b") as handle:
                handle.truncate(good_end)
                os.fsync(handle.fileno())
        return records

    def append(self, record: dict[str, Any]) -> None:
        """Append one record as a line and make it durable before returning.
        """
        if self._handle is None:
            self._handle = self.path.open("ab")
        self._handle.write((json.dumps(record, separators=(",", ":")) + "\n").encode())
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        """Close the file handle (appending again reopens it).

        Example:
            >>> ResultsLog("/tmp/never-written.jsonl").close()
        """
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def finished_keys(records: list[dict[str, Any]]) -> tuple[set[str], dict[str, int]]:
    """Cells that need no more runs (a success, or every attempt failed), and failed attempts so far per key.

    Example:
        >>> done, tries = finished_keys([{"key": "a", "error": "x"}, {"key": "b", "error": None}])
        >>> sorted(done), tries
        (['b'], {'a': 1})
    """
    done: set[str] = set()
    failures: dict[str, int] = {}
    for record in records:
        key = record["key"]
        if record.get("error") is None:
            done.add(key)
        else:
            failures[key] = failures.get(key, 0) + 1
            if failures[key] >= MAX_ATTEMPTS:
                done.add(key)
    return done, {k: v for k, v in failures.items() if k not in done}


def successes(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The successful record of each cell, by key (the first one, should a file hold two).

    Example:
        >>> list(successes([{"key": "a", "error": None, "accuracy": 0.5}]))
        ['a']
    """
    found: dict[str, dict[str, Any]] = {}
    for record in records:
        if record.get("error") is None:
            found.setdefault(record["key"], record)
    return found


@dataclasses.dataclass(frozen=True)
class CampaignRecord:
    """One results line, typed: what the study, the leaderboard and other readers of a campaign use.

    ``site`` and the other optional fields stay None where a campaign does not record them.

    Example:
        >>> r = CampaignRecord.from_dict({"model": "a", "mode": "grid", "kind": "flip", "rate": 0.01, "chip": 3,
        ...                               "accuracy": 0.9, "error": None})
        >>> r.measured, r.chip, r.site
        (True, 3, None)
    """

    model: str
    mode: str
    accuracy: float | None
    key: str = ""
    kind: str | None = None
    rate: float | None = None
    chip: int | None = None
    target: str | None = None
    images: int | None = None
    wrong: str | None = None
    error: str | None = None
    site: str | None = None
    format: str | None = None  # the activation storage format of an activation cell
    cost: dict[str, Any] | None = None  # campaign --cost: density, cycles and energy (edgefault.campaign.costcells)

    @property
    def measured(self) -> bool:
        """Whether the cell succeeded (an accuracy and no error)."""
        return self.accuracy is not None and self.error is None

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "CampaignRecord":
        """The record of one parsed line (fields it lacks are None; fields this type lacks are ignored)."""
        return cls(**{f.name: raw[f.name] for f in dataclasses.fields(cls) if f.name in raw})


def measured_records(raw: Iterable[dict[str, Any] | CampaignRecord]) -> list[CampaignRecord]:
    """The successful cells of a campaign as typed records (raw lines or records in, failures left out).

    Example:
        >>> [r.model for r in measured_records([{"model": "a", "mode": "clean", "accuracy": 0.9},
        ...                                     {"model": "b", "mode": "clean", "accuracy": None, "error": "x"}])]
        ['a']
    """
    records = (r if isinstance(r, CampaignRecord) else CampaignRecord.from_dict(r) for r in raw)
    return [r for r in records if r.measured]


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        record = parse_json(line, "result record")  # depth-bounded; a huge integer is a bad line too
    except EdgefaultError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("key"), str):
        return None
    return record
