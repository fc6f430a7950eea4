"""The study's two sweeps: the fault-induced drop against the sparsity level, and SAQ against its radius rho.

``sparsity``: one conventionally trained model per FATReLU threshold T (T = 0 is plain ReLU, the
standard model; T > 0 adds the sparse recipe's L1 penalty, and a few moderate thresholds are also
trained with the stronger ``STRONG_ACT_L1``, which is what reaches >= 90% zeros without collapsing
the model), all in one paired campaign. Each
model's drop is compared with the plain-ReLU model's over the same chips; the sweep names the
lowest measured sparsity from which on the sparse models lose significantly more (claim 1).

``rho``: SAQ at each radius, for the standard and the activation-sparse recipe, against the
conventionally trained model of the same recipe (paired), with clean accuracy beside the drop.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from edgefault.campaign.stats import Estimate
from edgefault.fileio import read_json, write_png_atomic
from edgefault.study.claims import COLLAPSE, Comparison, SeedMeasurements, compare_seeds, seed_tables
from edgefault.study.pooled import pool
from edgefault.study.config import SPARSE_ACT_L1, STRONG_ACT_L1, StudyConfig, Variant



@dataclasses.dataclass(frozen=True)
class SweepPoint:
    """One swept model: its setting, measured sparsity, clean int8 accuracy, drop and paired comparison."""

    variant: Variant
    value: float
    sparsity: float
    clean_accuracy: float | None
    drop: Estimate
    versus_baseline: Comparison | None
    collapsed: bool = False
    speedup: float | None = None  # modelled zero-skipping speedup (lane imbalance) against dense, mean over seeds


@dataclasses.dataclass(frozen=True)
class SweepResult:
    """A finished sweep: its points, the one-sentence conclusion, the plot, and the seconds it took.
    """

    name: str
    points: tuple[SweepPoint, ...]
    conclusion: str
    plot: Path
    seconds: dict[str, float]


def sweep_settings(config: StudyConfig, sweep: str) -> dict[str, Any]:
    """What determines a sweep's folder (compared on every rerun, like study.json).

    Example:
        >>> sweep_settings(StudyConfig(quick=True), "rho")["values"]
        [0.01, 0.05, 0.2, 0.5]
    """
    # "reuses": models with the study's recipes are the study's own (sweep folders from before kept copies)
    if sweep == "sparsity":
        return {"sweep": sweep, "values": list(config.thresholds), "strong_l1": STRONG_ACT_L1,
                "strong_values": list(config.strong_thresholds), "study": config.to_dict(), "reuses": "study models"}
    return {"sweep": sweep, "values": list(config.radii), "study": config.to_dict(), "reuses": "study models"}


def sweep_variants(config: StudyConfig, sweep: str) -> tuple[Variant, ...]:
    """The models a sweep trains.

    Example:
        >>> [v.name for v in sweep_variants(StudyConfig(quick=True), "sparsity")]
        ['T0', 'T0.5', 'T1', 'T1.25', 'T1.5', 'T1.75', 'T2', 'T0.5_L1_0.1', 'T0.75_L1_0.1']
    """
    if sweep == "sparsity":
        return (tuple(Variant(f"T{t:g}", sparse=t > 0, sharpness="none", fat_threshold=t) for t in config.thresholds)
                + tuple(Variant(f"T{t:g}_L1_{STRONG_ACT_L1:g}", sparse=True, sharpness="none", fat_threshold=t,
                                act_l1=STRONG_ACT_L1) for t in config.strong_thresholds))
    return tuple(
        variant
        for recipe, sparse in (("standard", False), ("sparse", True))
        for variant in (Variant(recipe, sparse, "none"),
                        *(Variant(f"{recipe}_rho{r:g}", sparse, "saq", rho=r) for r in config.radii))
    )


def _baseline(sweep: str, variant: Variant) -> str:
    return "T0" if sweep == "sparsity" else ("sparse" if variant.sparse else "standard")


def analyze_sweep(sweep: str, variants: tuple[Variant, ...], measurements: list[SeedMeasurements],
                  runs: dict[int, dict[str, Path]], folder: Path, seconds: dict[str, float],
                  speedups: dict[str, float] | None = None) -> SweepResult:
    """Paired drops of the swept models against their baseline, the conclusion, and ``folder/sweep_<name>.png``.

    ``speedups`` (model -> modelled speedup) adds the drop-against-speedup plot ``sweep_<name>_speedup.png``.

    ``measurements`` holds each training seed's campaign records, ``runs`` each seed's run directory per
    model; sparsity and clean accuracy are means over seeds, drops and differences pooled over seeds and chips.
    """
    drop, _, clean = seed_tables(measurements)
    points = []
    for variant in variants:
        name = variant.name
        sparsity = [read_json(runs[s][name] / "metrics.json")["activation_sparsity"]["overall"] for s in runs]
        baseline = _baseline(sweep, variant)
        versus = None if name == baseline else compare_seeds("drop", drop, name, baseline)
        value = variant.fat_threshold if sweep == "sparsity" else (variant.rho or 0.0)
        accuracy, base_accuracy = _mean([c.get(name) for c in clean.values()]), _mean([c.get(baseline) for c in clean.values()])
        collapsed = accuracy is None or (base_accuracy is not None and accuracy < base_accuracy - COLLAPSE)
        pooled = pool({s: d[name] for s, d in drop.items() if name in d}).pooled
        points.append(SweepPoint(variant, float(value), float(sum(sparsity) / len(sparsity)), accuracy, pooled,
                                 versus, collapsed, (speedups or {}).get(name)))
    conclusion = _sparsity_conclusion(points) if sweep == "sparsity" else _rho_conclusion(points)
    plot = folder / f"sweep_{sweep}.png"
    if sweep == "sparsity":
        _plot_sparsity(plot, points)
        if speedups:
            _plot_speedup(folder / f"sweep_{sweep}_speedup.png", points)
    else:
        _plot_rho(plot, points)
    return SweepResult(sweep, tuple(points), conclusion, plot, dict(seconds))


def _mean(values: list[float | None]) -> float | None:
    """The mean of values every seed has (None when one lacks it)."""
    return None if not values or any(v is None for v in values) else float(sum(values) / len(values))


def _sparsity_conclusion(points: list[SweepPoint]) -> str:
    ordered = sorted((p for p in points if p.versus_baseline is not None and not p.collapsed),
                     key=lambda p: p.sparsity)
    held = [p.versus_baseline.verdict(positive=True) == "held" for p in ordered]
    top = max(p.sparsity for p in points if not p.collapsed)
    collapsed = [p for p in points if p.collapsed]
    note = "" if not collapsed else (" Left out, collapsed (clean accuracy > 10 points below plain ReLU): "
                                     + ", ".join(f"{_recipe(p)} ({100 * p.sparsity:.1f}% zeros)" for p in collapsed)
                                     + ".")
    onset = next((i for i in range(len(ordered)) if all(held[i:])), None)
    if onset is None:
        worse = [p for p, h in zip(ordered, held) if h]
        if worse:
            levels = ", ".join(f"{100 * p.sparsity:.1f}%" for p in worse)
            return (f"Sparse models lost significantly more than plain ReLU only at {levels} exact zeros, not at every "
                    f"level above; no onset from which claim 1 holds (up to {100 * top:.1f}%).{note}")
        return (f"No swept sparsity level lost significantly more than plain ReLU (up to {100 * top:.1f}% exact "
                f"zeros).{note}")
    first = ordered[onset]
    return (f"Sparse models lose significantly more than plain ReLU from {100 * first.sparsity:.1f}% exact zeros on "
            f"({_recipe(first)}; the sweep reaches {100 * top:.1f}%): claim 1 holds there.{note}")


def _l1(point: SweepPoint) -> float:
    """The L1 penalty a swept model trained with."""
    if not point.variant.sparse:
        return 0.0
    return SPARSE_ACT_L1 if point.variant.act_l1 is None else point.variant.act_l1


def _recipe(point: SweepPoint) -> str:
    return f"T = {point.value:g}, L1 {_l1(point):g}"


def _rho_conclusion(points: list[SweepPoint]) -> str:
    parts = []
    for sparse in (False, True):
        mine = [p for p in points if p.variant.sparse == sparse and p.versus_baseline is not None]
        swept = [p for p in mine if not p.collapsed]
        helped = [p for p in swept if p.versus_baseline.verdict(positive=False) == "held"]  # drop(SAQ) < drop(conv.)
        recipe = "activation-sparse" if sparse else "standard"
        text = (f"{recipe}: SAQ cut the drop significantly at rho = "
                f"{', '.join(f'{p.value:g}' for p in helped) or 'none'} of {len(mine)} radii")
        if swept:
            best = min(swept, key=lambda p: p.drop.mean if p.drop.mean is not None else float("inf"))
            text += f", least drop at rho = {best.value:g}"
        if len(swept) < len(mine):
            text += (" (collapsed, clean accuracy > 10 points below conventional: rho = "
                     + ", ".join(f"{p.value:g}" for p in mine if p.collapsed) + ")")
        parts.append(text)
    return "; ".join(parts) + "."


def sweep_lines(result: SweepResult) -> list[str]:
    """The report section of a sweep: a table with paired differences, the plot, and the conclusion.
    """
    title = "sparsity level" if result.name == "sparsity" else "SAQ radius rho"
    setting = "FATReLU T" if result.name == "sparsity" else "rho"
    lines = [f"## Sweep: {title}", ""]
    if result.name == "sparsity":
        lines.append(f"One conventionally trained model per FATReLU threshold T (T > 0 with the L1 penalty "
                     f"{SPARSE_ACT_L1}, and a few thresholds also with {STRONG_ACT_L1}); each drop is compared with "
                     "the plain-ReLU model's on the same chips.")
    else:
        lines.append("SAQ at each radius for both recipes, each compared with the conventionally trained model of "
                     "its recipe on the same chips (a negative difference: SAQ lost less).")
    compared = next((p.versus_baseline.seeds for p in result.points if p.versus_baseline is not None), None)
    several = compared is not None and len(compared.seeds) > 1
    if several:
        lines.append(f"Means over {len(compared.seeds)} training seeds per setting; intervals over seeds and chips, "
                     "the verdict with how many seeds' own differences share the pooled sign.")
    l1_column = result.name == "sparsity"
    lines += ["", f"| model | {setting} |{' L1 |' if l1_column else ''} activation sparsity | int8 clean acc. "
                  "| mean drop [95% CI] | drop − baseline [95% CI] | verdict |",
              "|---|---|---|---|---|---|---|" + ("---|" if l1_column else "")]
    for p in result.points:
        d = p.drop
        interval = "" if d.low is None else f" [{100 * d.low:.2f}, {100 * d.high:.2f}]"
        versus, verdict = "baseline", ""
        if p.versus_baseline is not None:
            v = p.versus_baseline.difference
            versus = "n/a" if v.mean is None else f"{100 * v.mean:+.2f}" + (
                "" if v.low is None else f" [{100 * v.low:+.2f}, {100 * v.high:+.2f}]")
            verdict = ("loses more" if p.versus_baseline.verdict(True) == "held" else
                       "loses less" if p.versus_baseline.verdict(False) == "held" else "no significant difference")
            verdict = f"collapsed; {verdict}" if p.collapsed else verdict
            pooled = p.versus_baseline.seeds
            if several and pooled is not None:
                verdict += f" ({pooled.agreeing()} of {len(pooled.seeds)} seeds agree)"
        clean = "n/a" if p.clean_accuracy is None else f"{100 * p.clean_accuracy:.2f}%"
        mean = "n/a" if d.mean is None else f"{100 * d.mean:.2f}{interval}"
        l1 = f" {_l1(p):g} |" if l1_column else ""
        lines.append(f"| {p.variant.name} | {p.value:g} |{l1} {100 * p.sparsity:.1f}% | {clean} | {mean} | {versus} | "
                     f"{verdict} |")
    seconds = ", ".join(f"{k} {v:.0f}" for k, v in result.seconds.items())
    lines += ["", f"**{result.conclusion}**", "", f"![{title}](sweeps/{result.name}/{result.plot.name})", ""]
    if any(p.speedup is not None for p in result.points):
        lines += ["Modelled zero-skipping speedup (lane imbalance, `edgefault cost`) against dense: "
                  + ", ".join(f"{p.variant.name} {p.speedup:.3f}x" for p in result.points if p.speedup is not None)
                  + ". The front of fast and robust models is the lower right of the plot.", "",
                  f"![drop against speedup](sweeps/{result.name}/sweep_{result.name}_speedup.png)", ""]
    lines += [
              f"Seconds: {seconds}.", ""]
    return lines


def _errorbar(axis, xs, estimates, **style) -> None:
    ys = [100 * e.mean for e in estimates]
    yerr = [[100 * (e.mean - e.low) if e.low is not None else 0 for e in estimates],
            [100 * (e.high - e.mean) if e.high is not None else 0 for e in estimates]]
    axis.errorbar(xs, ys, yerr=yerr, capsize=4, marker="o", **style)


def _plot_sparsity(path: Path, points: list[SweepPoint]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axis = plt.subplots(figsize=(6.4, 4.4))
    ordered = sorted((p for p in points if p.drop.mean is not None), key=lambda p: p.sparsity)
    kept = [p for p in ordered if not p.collapsed]
    _errorbar(axis, [100 * p.sparsity for p in kept], [p.drop for p in kept], color="C0", label="trained models")
    collapsed = [p for p in ordered if p.collapsed]
    if collapsed:
        axis.plot([100 * p.sparsity for p in collapsed], [100 * p.drop.mean for p in collapsed], "x", color="C3",
                  markersize=9, label="collapsed (clean accuracy > 10 pts below plain ReLU)")
    base = next((p for p in points if p.versus_baseline is None and p.drop.mean is not None), None)
    if base is not None and base.drop.low is not None:
        axis.axhspan(100 * base.drop.low, 100 * base.drop.high, color="C0", alpha=0.12, label="plain ReLU, 95% CI")
    axis.legend(fontsize=8)
    for p in ordered:
        axis.annotate(f"T={p.value:g}" + ("" if p.variant.act_l1 is None else f", L1={p.variant.act_l1:g}"), (100 * p.sparsity, 100 * p.drop.mean), textcoords="offset points",
                      xytext=(5, 5), fontsize=8)
    axis.set_xlabel("measured activation sparsity (% exact zeros)")
    axis.set_ylabel("mean fault-induced drop (points, 95% CI)")
    axis.set_title("Fault-induced drop against activation sparsity")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    write_png_atomic(path, figure)


def _plot_speedup(path: Path, points: list[SweepPoint]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axis = plt.subplots(figsize=(6.4, 4.4))
    shown = [p for p in points if p.speedup is not None and p.drop.mean is not None]
    for collapsed, style in ((False, {"color": "C0", "label": "trained models"}),
                             (True, {"color": "C3", "label": "collapsed"})):
        mine = [p for p in shown if p.collapsed == collapsed]
        if mine:
            _errorbar(axis, [p.speedup for p in mine], [p.drop for p in mine], linestyle="none", **style)
    for p in shown:
        axis.annotate(f"T={p.value:g}" + ("" if p.variant.act_l1 is None else f", L1={p.variant.act_l1:g}"),
                      (p.speedup, 100 * p.drop.mean), textcoords="offset points", xytext=(5, 5), fontsize=8)
    axis.set_xlabel("modelled speedup, zero-skipping with lane imbalance (x dense)")
    axis.set_ylabel("mean fault-induced drop (points, 95% CI)")
    axis.set_title("Drop against modelled speedup")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    write_png_atomic(path, figure)


def _plot_rho(path: Path, points: list[SweepPoint]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, (drop_axis, clean_axis) = plt.subplots(1, 2, figsize=(10, 4.2))
    for color, sparse, recipe in (("C0", False, "standard"), ("C1", True, "activation-sparse")):
        mine = [p for p in points if p.variant.sparse == sparse]
        base = next(p for p in mine if p.versus_baseline is None)
        swept = sorted((p for p in mine if p.versus_baseline is not None and p.drop.mean is not None),
                       key=lambda p: p.value)
        kept = [p for p in swept if not p.collapsed]
        _errorbar(drop_axis, [p.value for p in kept], [p.drop for p in kept], color=color, label=f"{recipe}, SAQ")
        collapsed = [p for p in swept if p.collapsed]
        if collapsed:
            drop_axis.plot([p.value for p in collapsed], [100 * p.drop.mean for p in collapsed], "x", color=color,
                           markersize=9, label=f"{recipe}, SAQ, collapsed")
        if base.drop.mean is not None:
            drop_axis.axhline(100 * base.drop.mean, color=color, linestyle="--", label=f"{recipe}, conventional")
        clean_axis.plot([p.value for p in swept], [100 * (p.clean_accuracy or 0) for p in swept], marker="o",
                        color=color, label=f"{recipe}, SAQ")
        if base.clean_accuracy is not None:
            clean_axis.axhline(100 * base.clean_accuracy, color=color, linestyle="--", label=f"{recipe}, conventional")
    for axis, label in ((drop_axis, "mean fault-induced drop (points, 95% CI)"), (clean_axis, "int8 clean accuracy (%)")):
        axis.set_xscale("log")
        axis.set_xlabel("SAQ radius rho")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    drop_axis.set_title("Drop against rho")
    clean_axis.set_title("Clean accuracy against rho")
    figure.tight_layout()
    write_png_atomic(path, figure)
