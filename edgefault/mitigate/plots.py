"""Leaderboard plots: accuracy against rate per method (95% bands), and clean accuracy against tolerable rate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.ticker import NullFormatter

from edgefault.campaign.plots import COLORS, KIND_TITLES
from edgefault.fileio import write_png_atomic

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h")
TICKS = tuple(m * 10.0**e for e in range(-7, 0) for m in (1, 2, 5)) + (1.0,)


def write_board_plots(folder: Path, board: dict[str, Any]) -> list[Path]:
    """Write ``accuracy_vs_rate.png`` and ``pareto.png`` into ``folder``.
    """
    return [write_png_atomic(folder / name, figure)
            for name, figure in (("accuracy_vs_rate.png", accuracy_figure(board)), ("pareto.png", pareto_figure(board)))]


def accuracy_figure(board: dict[str, Any]):
    """Mean accuracy per method against rate (log axis) with its 95% band, one panel per fault kind."""
    from matplotlib.figure import Figure

    kinds = board["kinds"]
    figure = Figure(figsize=(4.8 * len(kinds), 4.4), layout="constrained")
    axes = figure.subplots(1, len(kinds), squeeze=False, sharey=True)[0]
    for axis, kind in zip(axes, kinds):
        for index, row in enumerate(board["methods"]):
            points = row["kinds"][kind]["rates"]
            rates = np.array([p["rate"] for p in points])
            mean = np.array([p["accuracy"] for p in points])
            low = np.array([p["accuracy"] if p["accuracy_low"] is None else p["accuracy_low"] for p in points])
            high = np.array([p["accuracy"] if p["accuracy_high"] is None else p["accuracy_high"] for p in points])
            color = COLORS[index % len(COLORS)] if index < len(COLORS) else "black"
            axis.fill_between(rates, np.clip(low, 0, 1), np.clip(high, 0, 1), color=color, alpha=0.15, linewidth=0)
            axis.plot(rates, mean, marker=MARKERS[index % len(MARKERS)], markersize=4, color=color,
                      label=row["method"])
        axis.set_xscale("log")
        axis.set_xlabel("fault rate p (probability per weight bit)")
        axis.set_title(KIND_TITLES.get(kind, kind))
        axis.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("top-1 accuracy (mean over chips, 95% CI band)")
    axes[0].legend(loc="lower left", fontsize=7)
    figure.suptitle(f"Mitigations on {board['model']} / {board['data']}: the same {board['chips']} chips per point "
                    "for every method")
    return figure


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both coordinates (higher is better), by x.

    Example:
        >>> pareto_front([(1, 3), (2, 2), (1.5, 1), (3, 1)])
        [0, 1, 3]
    """
    front = [i for i, (x, y) in enumerate(points)
             if not any((x2 >= x and y2 >= y) and (x2 > x or y2 > y) for x2, y2 in points)]
    return sorted(front, key=lambda i: points[i][0])


def pareto_figure(board: dict[str, Any]):
    """Clean accuracy against the bit error rate tolerated within 1 point (flip), with intervals and the front."""
    from matplotlib.figure import Figure

    kind = board["headline_kind"]
    figure = Figure(figsize=(6.4, 4.6), layout="constrained")
    axis = figure.subplots()
    points = []
    for index, row in enumerate(board["methods"]):
        tolerable = row["kinds"][kind]["tolerable"]["1"]
        x = max(tolerable["median"], 1e-7)
        low, high = max(tolerable["low"], 1e-7), max(tolerable["high"], 1e-7)
        points.append((x, row["clean_accuracy"]))
        color = COLORS[index % len(COLORS)] if index < len(COLORS) else "black"
        axis.errorbar([x], [row["clean_accuracy"]], xerr=[[x - low], [high - x]], fmt=MARKERS[index % len(MARKERS)],
                      color=color, capsize=3, label=row["method"])
    front = pareto_front(points)
    axis.plot([points[i][0] for i in front], [points[i][1] for i in front], color="black", linestyle=":",
              linewidth=1, label="Pareto front")
    axis.set_xscale("log")
    low, high = axis.get_xlim()
    ticks = [t for t in TICKS if low <= t <= high]
    axis.set_xticks(ticks, [f"{t:g}" for t in ticks])
    axis.xaxis.set_minor_formatter(NullFormatter())  # minor labels collide on a short log range
    axis.set_xlabel(f"{kind} bit error rate tolerated within 1 point of own clean accuracy\n(median over chips, 95% CI)")
    axis.set_ylabel("clean accuracy")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=7, loc="best")
    return figure
