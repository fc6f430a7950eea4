"""PNG plots of the filter-normalized loss landscapes, written atomically.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot), so plotting neither needs a
display nor changes the global backend of a program that imports edgefault.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, LogLocator

from edgefault.fileio import write_png_atomic


def plot_landscape_1d(alphas: Sequence[float], losses: Sequence[float], path: str | Path, title: str) -> None:
    """Loss along one filter-normalized direction, the trained weights at 0.

    Example:
        >>> plot_landscape_1d([-1, 0, 1], [2.0, 0.1, 1.5], "landscape_1d.png", "lenet5")
    """
    figure = Figure(figsize=(6.4, 4.6), layout="constrained")
    axes = figure.add_subplot()
    axes.plot(alphas, losses, color="tab:blue", marker="o", markersize=3, linewidth=1.5)
    axes.axvline(0.0, color="grey", linewidth=0.8, linestyle=":")
    axes.set_yscale("log")  # a minimum's floor and its walls differ by orders of magnitude
    axes.set_xlabel("step a along the filter-normalized direction d  (weights w + a d)")
    axes.set_ylabel("training loss (cross-entropy, log scale)")
    axes.set_title(title, fontsize=10)
    axes.yaxis.set_major_formatter(FormatStrFormatter("%.3g"))
    axes.yaxis.set_minor_locator(LogLocator(subs=(2.0, 3.0, 5.0)))
    axes.yaxis.set_minor_formatter(FormatStrFormatter("%.2g"))
    axes.grid(True, which="both", alpha=0.3)
    write_png_atomic(path, figure)


def plot_landscape_2d(alphas: Sequence[float], betas: Sequence[float], losses: np.ndarray, path: str | Path,
                      title: str) -> None:
    """Filled contours of the loss on the plane w + a d1 + b d2 (``losses`` indexed [b, a]), log colour scale.

    Example:
        >>> a = np.linspace(-1, 1, 5)
        >>> plot_landscape_2d(a, a, 0.1 + a[None, :] ** 2 + a[:, None] ** 2, "landscape_2d.png", "lenet5")
    """
    losses = np.asarray(losses, dtype=float)
    low, high = float(losses.min()), float(losses.max())
    # Log-spaced levels show the basin around the minimum and the steep walls in one picture.
    low = max(low, 1e-6)
    high = max(high, low * 1.01)
    levels = np.geomspace(low, high, 25)
    figure = Figure(figsize=(6.8, 5.6), layout="constrained")
    axes = figure.add_subplot()
    filled = axes.contourf(alphas, betas, np.clip(losses, low, None), levels=levels, norm=LogNorm(low, high),
                           cmap="viridis")
    axes.contour(alphas, betas, np.clip(losses, low, None), levels=levels[::3], colors="white", linewidths=0.5,
                 alpha=0.6)
    axes.plot([0.0], [0.0], marker="*", color="red", markersize=10, label="trained weights")
    axes.set_xlabel("a: step along filter-normalized direction d1")
    axes.set_ylabel("b: step along filter-normalized direction d2")
    axes.set_aspect("equal")
    axes.legend(loc="upper right", fontsize=8)
    colorbar = figure.colorbar(filled, ax=axes, ticks=LogLocator(subs=(1.0, 2.0, 5.0)))
    colorbar.ax.yaxis.set_major_formatter(FormatStrFormatter("%.3g"))
    colorbar.ax.yaxis.set_minor_formatter(FormatStrFormatter(""))
    colorbar.set_label("training loss (cross-entropy, log scale)")
    axes.set_title(title, fontsize=10)
    write_png_atomic(path, figure)
