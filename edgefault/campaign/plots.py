"""Campaign plots (PNG, matplotlib's Agg renderer, no pyplot state): accuracy against rate, vulnerability heatmaps."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from typing import TYPE_CHECKING

import numpy as np
from matplotlib.ticker import NullFormatter

from edgefault.campaign.sites import WEIGHTS
from edgefault.fileio import write_png_atomic
from edgefault.text import printable

if TYPE_CHECKING:
    from matplotlib.figure import Figure

KIND_TITLES = {"flip": "bit flips", "sa0": "stuck-at-0 cells", "sa1": "stuck-at-1 cells",
               "stuck": "stuck-at-0/1 cells", "mbu": "multi-bit upsets"}
COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray")


def write_plots(folder: str | os.PathLike, summary: dict[str, Any], kinds: tuple[str, ...]) -> list[Path]:
    """Write ``accuracy_vs_rate.png`` and, when those modes ran, ``heatmap_layers.png`` / ``heatmap_bits.png``.

    Each memory gets its own files: the weight memory's keep these names, an activation
    memory's add its label (``accuracy_vs_rate_activations_bitmap.png``, and a
    ``heatmap_layers_...`` with one row per activation buffer).

    Example:
        >>> from edgefault.campaign.stats import summarize
        >>> grid = [{"key": i, "model": 0, "mode": "grid", "target": None, "kind": "flip", "rate": rate, "chip": 0}
        ...         for i, rate in enumerate((0.01, 0.1))]
        >>> results = {"c": {"accuracy": 0.9}, 0: {"accuracy": 0.8}, 1: {"accuracy": 0.5}}
        >>> summary = summarize([{"name": "m", "sha256": "0" * 64}], [{"key": "c", "model": 0, "mode": "clean"}, *grid],
        ...                     results, {})
        >>> [p.name for p in write_plots("camp", summary, ("flip",))]
        ['accuracy_vs_rate.png']
    """
    folder = Path(folder)
    written = []
    figures = []
    for memory in list(dict.fromkeys(g.get("memory", WEIGHTS) for g in summary["groups"])) or [WEIGHTS]:
        only = {**summary, "groups": [g for g in summary["groups"] if g.get("memory", WEIGHTS) == memory]}
        suffix = "" if memory == WEIGHTS else "_" + memory.replace("/", "_")
        figures.append((f"accuracy_vs_rate{suffix}.png", accuracy_figure(only, kinds, memory)))
        for mode, name in (("layer", "heatmap_layers"), ("bit", "heatmap_bits")):
            if any(g["mode"] == mode for g in only["groups"]):
                figures.append((f"{name}{suffix}.png", heatmap_figure(only, kinds, mode, memory)))
    for name, figure in figures:
        written.append(write_png_atomic(folder / name, figure))
    return written


def _models(summary) -> list[str]:
    return [c["model"] for c in summary["clean"]]


def _in_words(memory: str) -> tuple[str, str]:
    """(what is faulty, what a stored bit is) for titles and labels: the weight memory or an activation memory."""
    if memory == WEIGHTS:
        return "weight-memory", "weight bit"
    _, act_format, *transient = memory.split("/")
    timing = "transient" if transient else "permanent"
    return f"activation-memory ({act_format}, {timing})", "stored activation bit"


def accuracy_figure(summary: dict[str, Any], kinds: tuple[str, ...], memory: str = WEIGHTS) -> Figure:
    """Mean accuracy against fault rate (log axis) with the 95% CI band, one line per model, one panel per kind.

    Rate 0 cannot sit on a log axis; the dashed line at each model's clean accuracy stands for it.
    """
    from matplotlib.figure import Figure  # imported on use: worker processes load this package but never plot

    models = _models(summary)
    clean = {c["model"]: c["accuracy"] for c in summary["clean"]}
    figure = Figure(figsize=(4.6 * len(kinds), 4.2), layout="constrained")
    axes = figure.subplots(1, len(kinds), squeeze=False, sharey=True)[0]
    shown = [v for g in summary["groups"] if g["mode"] == "grid" for v in (g["ci_low"], g["mean"]) if v is not None]
    shown += [v for v in clean.values() if v is not None]
    for axis, kind in zip(axes, kinds):
        for index, model in enumerate(models):
            color = COLORS[index % len(COLORS)]
            rows = sorted((g for g in summary["groups"] if g["mode"] == "grid" and g["kind"] == kind
                           and g["model"] == model and g["rate"] > 0 and g["mean"] is not None),
                          key=lambda g: g["rate"])
            if rows:
                rates = np.array([g["rate"] for g in rows])
                means = np.array([g["mean"] for g in rows])
                low = np.array([g["mean"] if g["ci_low"] is None else g["ci_low"] for g in rows])
                high = np.array([g["mean"] if g["ci_high"] is None else g["ci_high"] for g in rows])
                axis.fill_between(rates, np.clip(low, 0, 1), np.clip(high, 0, 1), color=color, alpha=0.2, linewidth=0)
                axis.plot(rates, means, marker="o", color=color, label=f"{_label(model)} (mean, 95% CI)")
            if clean.get(model) is not None:
                axis.axhline(clean[model], color=color, linestyle="--", linewidth=1, label=f"{_label(model)} clean")
        axis.set_xscale("log")
        swept = sorted({g["rate"] for g in summary["groups"] if g["mode"] == "grid" and g["rate"] > 0})
        if swept:  # label the swept rates only: log-axis minor labels collide on a short range
            axis.set_xticks(swept, [f"{rate:g}" for rate in swept])
            axis.xaxis.set_minor_formatter(NullFormatter())
        axis.set_xlabel(f"fault rate p (probability per {_in_words(memory)[1]})")
        axis.set_ylabel("top-1 accuracy")
        axis.set_title(KIND_TITLES.get(kind, kind))
        axis.grid(True, which="both", alpha=0.3)
    if shown:  # zoom on the data (shared by the panels), so small drops stay visible
        low, high = max(0.0, min(shown)), min(1.0, max(shown))
        pad = max(0.02, 0.08 * (high - low))
        axes[0].set_ylim(max(0.0, low - pad), min(1.02, high + pad))
    axes[0].legend(loc="lower left", fontsize=8)
    chips = max((g["chips"] for g in summary["groups"] if g["mode"] == "grid"), default=0)
    gap = " " if memory == WEIGHTS else "\n"  # activation titles are longer: two lines fit one panel
    figure.suptitle(f"Accuracy under {_in_words(memory)[0]} faults{gap}({chips} chips per point, same chips for "
                    "every model)")
    return figure


def heatmap_figure(summary: dict[str, Any], kinds: tuple[str, ...], mode: str, memory: str = WEIGHTS) -> Figure:
    """Accuracy drop from clean per target (layer or bit) and rate: one heatmap per model (rows) and kind (columns).

    The colour scale runs from no drop to the largest drop in the figure, so the vulnerable
    layers or bits stand out even when every drop is small.
    """
    from matplotlib.figure import Figure  # imported on use, as above

    models = _models(summary)
    rows = [g for g in summary["groups"] if g["mode"] == mode]
    rates = sorted({g["rate"] for g in rows})
    targets_of = {m: list(dict.fromkeys(g["target"] for g in rows if g["model"] == m)) for m in models}
    if mode == "bit":
        targets_of = {m: sorted(t, reverse=True) for m, t in targets_of.items()}  # the sign bit on top
    drops = [g["drop"] for g in rows if g["drop"] is not None]
    top = max(0.01, max(drops, default=0.0))
    tallest = max((len(t) for t in targets_of.values()), default=1)
    figure = Figure(figsize=(1.2 + (2.4 + 0.75 * len(rates)) * len(kinds), 1.3 + (1.0 + 0.3 * tallest) * len(models)),
                    layout="constrained")
    axes = figure.subplots(len(models), len(kinds), squeeze=False)
    image = None
    for r, model in enumerate(models):
        targets = targets_of[model]
        clean = next((c["accuracy"] for c in summary["clean"] if c["model"] == model), None)
        for c, kind in enumerate(kinds):
            axis = axes[r][c]
            values = np.full((len(targets), len(rates)), np.nan)
            for g in rows:
                if g["model"] == model and g["kind"] == kind and g["drop"] is not None:
                    values[targets.index(g["target"]), rates.index(g["rate"])] = g["drop"]
            image = axis.imshow(values, cmap="Reds", vmin=0.0, vmax=top, aspect="auto")
            for (i, j), value in np.ndenumerate(values):
                if not np.isnan(value):
                    color = "white" if value > 0.6 * top else "black"
                    text = f"{value:.3f}".replace("-0.000", "0.000")  # a tiny gain is no drop worth a sign
                    axis.text(j, i, text, ha="center", va="center", fontsize=7, color=color)
            axis.set_xticks(range(len(rates)), [f"{rate:g}" for rate in rates])
            labels = ([f"bit {t}" + (" (sign)" if t == 7 else "") for t in targets] if mode == "bit"
                      else [_label(t) for t in targets])
            axis.set_yticks(range(len(targets)), labels, fontsize=7 if mode == "layer" else 8)
            axis.set_xlabel("fault rate p")
            axis.set_ylabel("bit position" if mode == "bit" else
                            "weight tensor" if memory == WEIGHTS else "activation buffer")
            suffix = "" if clean is None else f" (clean {clean:.3f})"
            axis.set_title(f"{_label(model)}: {KIND_TITLES.get(kind, kind)}{suffix}", fontsize=9)
    if image is not None:
        figure.colorbar(image, ax=axes, label="accuracy drop (clean minus mean over chips)", shrink=0.8)
    what = "one bit position at a time" if mode == "bit" else \
        "one weight tensor at a time" if memory == WEIGHTS else f"one {_in_words(memory)[0]} buffer at a time"
    figure.suptitle(f"{'Per-layer' if mode == 'layer' else 'Per-bit'} vulnerability: faults in {what}")
    return figure


def _label(name: str) -> str:
    """A model or tensor name as plot text: control characters shown (no "Glyph missing" warning), ``$`` literal."""
    return printable(name).replace("$", r"\$")
