"""The coverage report of a weight memory: what it holds, by storage and source, and what was not faulted.

Every command that builds a memory prints :func:`coverage_line` (and :func:`warning_lines` on
stderr); the report itself is a JSON-ready dict made by
:meth:`edgefault.faults.discover.Discovery.coverage`.
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class Skipped:
    """A parameter input that cannot be faulted: its tensor, ONNX type, consumer and why.

    Example:
        >>> Skipped("w", "FLOAT8E4M3FN", "DequantizeLinear", "type FLOAT8E4M3FN has no integer cells").line()
        "'w' (FLOAT8E4M3FN, DequantizeLinear): type FLOAT8E4M3FN has no integer cells"
    """

    name: str
    type: str
    consumer: str
    reason: str

    def line(self) -> str:
        return f"{self.name!r} ({self.type}, {self.consumer}): {self.reason}"


def coverage_line(report: dict[str, Any]) -> str:
    """The coverage report of :meth:`Discovery.coverage` in one line.

    Example:
        >>> report = {"tensors": 2, "bits": 44, "storage": {"int8": {"tensors": 2, "bits": 44}},
        ...           "source": {"Constant": {"tensors": 2, "bits": 44}}, "stored_bits_from": "native widths",
        ...           "biases_left_out": 0, "skipped": []}
        >>> coverage_line(report)
        'weight memory: 2 tensors, 44 stored bits (int8: 2 tensors, 44 bits), from 2 Constant nodes'
    """
    storage = "; ".join(f"{k}: {plural(v['tensors'], 'tensor')}, {v['bits']:,} bits"
                        for k, v in report["storage"].items())
    sources = " and ".join(plural(v["tensors"], "initializer" if k == "initializer" else "Constant node")
                           for k, v in report["source"].items())
    line = (f"weight memory: {plural(report['tensors'], 'tensor')}, {report['bits']:,} stored bits ({storage}), "
            f"from {sources}")
    if report["stored_bits_from"] != "native widths":
        line += f"; k-bit widths from {report['stored_bits_from']}"
    left = report["biases_left_out"]
    if left:
        them = "them" if left > 1 else "it"
        line += f"; {plural(left, 'int32 bias', 'int32 biases')} left out (--include-bias adds {them})"
    if report["skipped"]:
        line += f"; {len(report['skipped'])} not faulted (see the warnings)"
    return line


def warning_lines(report: dict[str, Any]) -> list[str]:
    """The warnings of a coverage report: one line per tensor that looked like a parameter but is not faulted.

    Example:
        >>> warning_lines({"skipped": [{"name": "w", "type": "FLOAT8E4M3FN", "consumer": "DequantizeLinear",
        ...                              "reason": "not an integer type"}]})
        ["warning: not faulted: 'w' (FLOAT8E4M3FN, DequantizeLinear): not an integer type"]
    """
    return [f"warning: not faulted: {Skipped(**entry).line()}" for entry in report["skipped"]]


def plural(count: int, word: str, many: str | None = None) -> str:
    """``count`` and the word, in the plural unless count is 1.

    Example:
        >>> plural(1, "tensor"), plural(2, "bias", "biases")
        ('1 tensor', '2 biases')
    """
    return f"{count:,} {word if count == 1 else many or word + 's'}"
