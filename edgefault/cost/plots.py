"""The ``cost`` plot (PNG, matplotlib's Agg renderer, no pyplot state): per-layer speedup and energy."""

from __future__ import annotations

import io
import os

import numpy as np
from matplotlib.figure import Figure

from edgefault.cost.report import CostReport, ENERGY_MODES, SPARSE_MODES

LABELS = {"gating": "zero-gating", "skipping_ideal": "skipping, ideal",
          "skipping_imbalanced": "skipping, lane imbalance", "dense": "dense", "skipping": "skipping"}


def cost_figure(report: CostReport) -> Figure:
    """Two panels: speedup against dense per layer and in total; energy per image per layer and mode.
    """
    names = [layer.name for layer in report.layers] + ["all layers"]
    x = np.arange(len(names))
    figure = Figure(figsize=(max(7.0, 1.4 * len(names) + 3), 7.5))
    top, bottom = figure.subplots(2, 1)
    width = 0.8 / len(SPARSE_MODES)
    for number, mode in enumerate(SPARSE_MODES):
        values = [layer.speedup[mode] for layer in report.layers] + [report.total["speedup"][mode]]
        top.bar(x + (number - 1) * width, values, width, label=LABELS[mode])
    top.axhline(1.0, color="black", linewidth=0.8)
    top.set_ylabel("speedup against dense")
    top.set_title(f"{os.path.basename(report.model)} on {report.accelerator.name} "
                  f"({report.accelerator.groups} x {report.accelerator.lanes} lanes), {report.images} images")
    top.legend(fontsize=8)
    width = 0.8 / len(ENERGY_MODES)
    for number, mode in enumerate(ENERGY_MODES):
        values = [layer.energy_pj[mode] / 1000 for layer in report.layers] + [report.total["energy_pj"][mode] / 1000]
        bottom.bar(x + (number - 1) * width, values, width, label=LABELS[mode])
    bottom.set_ylabel("energy per image (nJ)")
    bottom.set_yscale("log")
    bottom.legend(fontsize=8)
    for axes in (top, bottom):
        axes.set_xticks(x, names, rotation=20, ha="right", fontsize=8)
    figure.tight_layout()
    return figure


def plot_bytes(report: CostReport) -> bytes:
    """The plot as PNG bytes (written by the caller with the output-safety helpers).
    """
    buffer = io.BytesIO()
    cost_figure(report).savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()
