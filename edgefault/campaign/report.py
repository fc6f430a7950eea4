"""The summary files (JSON, CSV, Markdown) and the table printed at the end of a campaign."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from edgefault.campaign.costsummary import cost_markdown, cost_rows
from edgefault.fileio import json_bytes, write_files_atomic
from edgefault.text import csv_bytes, md_cell, md_table, printable

GROUP_COLUMNS = ("model", "mode", "target", "kind", "rate", "chips", "n", "mean", "std", "ci_low", "ci_high",
                 "clean", "drop", "failed", "mean_faulty_bits", "memory")
PAIRED_COLUMNS = ("model_a", "model_b", "mode", "target", "kind", "rate", "n", "mean_diff", "std", "ci_low",
                  "ci_high", "significant", "drop_diff", "drop_ci_low", "drop_ci_high", "memory")
MEMORY_COLUMNS = ("model", "memory_a", "memory_b", "mode", "kind", "rate", "n", "mean_diff", "std", "ci_low", "ci_high",
                  "significant", "drop_diff", "drop_ci_low", "drop_ci_high")


def write_summary(folder: str | os.PathLike, summary: dict[str, Any], settings: dict[str, Any]) -> list[Path]:
    """Write ``summary.json``, ``summary.csv``, ``paired.csv`` and ``summary.md`` (and ``memory_paired.csv`` when
    the campaign faults more than one memory), all or none; return their paths.

    Example:
        >>> from edgefault.campaign.config import CampaignConfig
        >>> from edgefault.campaign.stats import summarize
        >>> cells = [{"key": "c", "model": 0, "mode": "clean"},
        ...          {"key": "g", "model": 0, "mode": "grid", "target": None, "kind": "flip", "rate": 0.1, "chip": 0}]
        >>> results = {"c": {"accuracy": 0.9}, "g": {"accuracy": 0.7}}
        >>> summary = summarize([{"name": "m", "sha256": "0" * 64}], cells, results, {})
        >>> [p.name for p in write_summary("camp", summary, CampaignConfig.create(["model.onnx"], chips=2).to_dict())]
        ['summary.json', 'summary.csv', 'paired.csv', 'summary.md']
    """
    folder = Path(folder)
    paths = [folder / name for name in ("summary.json", "summary.csv", "paired.csv", "summary.md")]
    contents = (json_bytes(summary), csv_bytes(GROUP_COLUMNS, summary["groups"]),
                csv_bytes(PAIRED_COLUMNS, summary["paired"]),
                markdown(summary, settings).encode())
    if "memory_paired" in summary:
        paths.append(folder / "memory_paired.csv")
        contents += (csv_bytes(MEMORY_COLUMNS, summary["memory_paired"]),)
    write_files_atomic(dict(zip(paths, contents)))  # never a new summary.json beside an old summary.md
    return paths


def _acc(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def _signed(value) -> str:
    return "-" if value is None else f"{value:+.4f}"


def _interval(low, high, signed: bool = False) -> str:
    if low is None:
        return "-"
    form = _signed if signed else _acc
    return f"[{form(low)}, {form(high)}]"


def _rate(rate) -> str:
    return f"{rate:g}"


def _from_cut(summary) -> str:
    count = summary.get("from_cut")
    return f", {count} of them run from cached activations at a cut" if count else ""


def _memories(settings) -> str:
    sites = settings.get("sites", ["weights"])
    if list(sites) == ["weights"]:
        return ""
    formats = ", ".join(settings.get("act_formats", ["dense"]))
    timing = "transient (fresh faults for every image)" if settings.get("transient") else "permanent"
    return f", memories {' and '.join(sites)} (activation formats {formats}; {timing} activation faults)"


def _chips(summary, settings) -> str:
    if summary.get("target_ci") is None:
        return f"{settings['chips']} chips per cell"
    return (f"chips added per cell until every 95% interval (and paired difference) is within "
            f"±{summary['target_ci']:g}, at most {settings['chips']} (`*`: the maximum came first)")


def clean_rows(summary) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the clean-accuracy table.

    Example:
        >>> clean_rows({"clean": [{"model": "a", "accuracy": 0.9, "images": 100, "model_hash": "ab" * 32}]})[1]
        [['a', '0.9000', '100', 'abababababab']]
    """
    rows = [[c["model"], _acc(c["accuracy"]), str(c["images"] or "-"), c["model_hash"][:12]] for c in summary["clean"]]
    return ["model", "clean accuracy", "images", "sha256"], rows


def group_rows(summary, mode: str = "grid") -> tuple[list[str], list[list[str]]]:
    """Header and rows of one mode's per-(model, target, kind, rate) table.

    Example:
        >>> group_rows({"groups": []})[0][:3]
        ['model', 'kind', 'rate']
    """
    target = {"layer": ["layer"], "bit": ["bit"]}.get(mode, [])
    memory = ["memory"] if _several_memories(summary) else []
    header = ["model", *memory, *target, "kind", "rate", "chips", "mean", "95% CI", "std", "drop", "faulty bits"]
    rows = []
    for g in summary["groups"]:
        if g["mode"] != mode:
            continue
        bits = "-" if g["mean_faulty_bits"] is None else f"{g['mean_faulty_bits']:.1f}"
        chips = f"{g['n']}/{g['chips']}" + ("*" if g.get("target_met") is False else "")
        rows.append([g["model"], *([g.get("memory", "weights")] if memory else []),
                     *([str(g["target"])] if mode != "grid" else []), g["kind"], _rate(g["rate"]), chips,
                     _acc(g["mean"]), _interval(g["ci_low"], g["ci_high"]), _acc(g["std"]), _signed(g["drop"]),
                     bits])
    return header, rows


def paired_rows(summary, mode: str = "grid") -> tuple[list[str], list[list[str]]]:
    """Header and rows of the paired-difference table (accuracy of the first model minus the second).

    Example:
        >>> paired_rows({"paired": []})[0][0]
        'models (a - b)'
    """
    memory = ["memory"] if _several_memories(summary) else []
    header = ["models (a - b)", *memory, *(["bit"] if mode != "grid" else []), "kind", "rate", "chips",
              "accuracy diff", "95% CI", "significant", "drop diff", "95% CI"]
    rows = []
    for p in summary["paired"]:
        if p["mode"] != mode:
            continue
        rows.append([f"{p['model_a']} - {p['model_b']}", *([p.get("memory", "weights")] if memory else []),
                     *([str(p["target"])] if mode != "grid" else []), p["kind"], _rate(p["rate"]), *_difference(p)])
    return header, rows


def memory_rows(summary) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the paired differences between the memories of one model (empty with one memory).

    Example:
        >>> memory_rows({"memory_paired": [{"model": "a", "memory_a": "weights", "memory_b": "activations/dense",
        ...     "kind": "flip", "rate": 0.01, "n": 2, "mean_diff": 0.1, "ci_low": 0.05, "ci_high": 0.15,
        ...     "significant": True, "drop_diff": -0.1, "drop_ci_low": -0.15, "drop_ci_high": -0.05}]})[1][0][:3]
        ['a', 'weights - activations/dense', 'flip']
    """
    header = ["model", "memories (a - b)", "kind", "rate", "chips", "accuracy diff", "95% CI", "significant",
              "drop diff", "95% CI"]
    rows = [[p["model"], f"{p['memory_a']} - {p['memory_b']}", p["kind"], _rate(p["rate"]), *_difference(p)]
            for p in summary.get("memory_paired", [])]
    return header, rows


def _difference(p) -> list[str]:
    significant = "-" if p["significant"] is None else ("yes" if p["significant"] else "no")
    return [str(p["n"]), _signed(p["mean_diff"]), _interval(p["ci_low"], p["ci_high"], signed=True), significant,
            _signed(p["drop_diff"]), _interval(p["drop_ci_low"], p["drop_ci_high"], signed=True)]


def _several_memories(summary) -> bool:
    return any(g.get("memory", "weights") != "weights" for g in summary.get("groups", []))


def text_table(header: list[str], rows: list[list[str]]) -> str:
    """Columns padded to their widest cell, for a terminal.

    Example:
        >>> print(text_table(["a", "bb"], [["1", "2"]]))
        a  bb
        1  2
    """
    cells = [[printable(x) for x in line] for line in [header, *rows]]  # names from files: control characters shown
    widths = [max(len(x) for x in column) for column in zip(*cells)]
    lines = ["  ".join(x.ljust(w) for x, w in zip(line, widths)).rstrip() for line in cells]
    return "\n".join(lines)


def markdown(summary: dict[str, Any], settings: dict[str, Any]) -> str:
    """The ``summary.md`` document: settings, clean accuracy, then one table per mode and the paired differences.
    """
    cells = summary["cells"]
    parts = [
        "# Fault campaign",
        "",
        f"Data `{printable(settings['data'])}`{_memories(settings)}, kinds {', '.join(settings['kinds'])}, rates "
        f"{', '.join(_rate(r) for r in settings['rates'])}, {_chips(summary, settings)}, seed {settings['seed']}. "
        f"Cells done {cells['done']} of {cells['planned']}, failed {cells['failed']}"
        f"{_from_cut(summary)}. Intervals: "
        f"{summary['confidence']:.0%} Student-t over chips; drop = clean minus mean.",
        "",
        "## Clean accuracy",
        "",
        md_table(*clean_rows(summary)),
    ]
    titles = {"grid": "Accuracy under faults", "layer": "Per-layer vulnerability (faults in one tensor)",
              "bit": "Per-bit vulnerability (faults on one bit position)"}
    for mode, title in titles.items():
        header, rows = group_rows(summary, mode)
        if rows:
            parts += ["", f"## {title}", "", md_table(header, rows)]
        header, rows = paired_rows(summary, mode)
        if rows:
            parts += ["", f"### Paired differences ({mode}, same chips)", "", md_table(header, rows)]
    header, rows = memory_rows(summary)
    if rows:
        parts += ["", "## Paired differences between memories (same model, same chips)", "",
                  "Accuracy of the first memory minus the second at the same bit error rate: positive when the "
                  "second loses more.", "", md_table(header, rows)]
    if "cost" in summary:
        parts += cost_markdown(summary["cost"]["groups"], summary["cost"]["accelerator"])
    if summary["failures"]:
        parts += ["", "## Failed cells", ""]
        parts += [f"- `{md_cell(f['key'])}`: {md_cell(f['error'])}" for f in summary["failures"]]
    return "\n".join(parts) + "\n"


def final_text(summary: dict[str, Any]) -> str:
    """What the CLI prints at the end: clean accuracy, the grid table and the paired differences.
    """
    parts = [text_table(*clean_rows(summary)), "", text_table(*group_rows(summary, "grid"))]
    header, rows = paired_rows(summary, "grid")
    if rows:
        parts += ["", "paired differences (same chips):", text_table(header, rows)]
    header, rows = memory_rows(summary)
    if rows:
        parts += ["", "paired differences between memories (same model, same chips):", text_table(header, rows)]
    if "cost" in summary:
        parts += ["", f"change from clean on a zero-skipping accelerator ({summary['cost']['accelerator']}):",
                  text_table(*cost_rows(summary["cost"]["groups"]))]
    if summary["failures"]:
        parts += ["", f"{len(summary['failures'])} cell(s) failed twice; see summary.md"]
    return "\n".join(parts)
