"""The study report: report.md beside a drop-vs-sharpness plot, setting measurements beside the paper's claims.

The report is a sequence of sections (:data:`SECTIONS`), each a function of :class:`ReportInputs`
returning its Markdown lines: a new concern adds one function to the sequence.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Sequence

from edgefault.campaign.stats import ACCURACY
from edgefault.fileio import read_json, write_bytes_atomic, write_png_atomic
from edgefault.study.claims import Claim, SeedMeasurements, collapsed_models, seed_tables
from edgefault.study.config import SPARSE_ACT_L1, SPARSE_FAT_THRESHOLD, StudyConfig
from edgefault.study.extras_report import activation_section, tradeoff_section, worst_case_section
from edgefault.study.pooled import METHOD, pool
from edgefault.study.sweeps import SweepResult, sweep_lines
from edgefault.text import printable

PAPER = ("Malhotra and Gupta, \"Memory Faults in Activation-sparse Quantized Deep Neural Networks: Analysis and "
         "Mitigation using Sharpness-aware Training\", arXiv:2406.10528 (2024)")


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


@dataclasses.dataclass(frozen=True)
class ReportInputs:
    """Everything the report's sections read: the study, each training seed's models and measurements."""

    folder: Path
    config: StudyConfig
    trained: dict[int, Any]  # seed -> the pipeline's TrainedModels (runs and export summaries per model)
    measurements: list[SeedMeasurements]
    claims: list[Claim]
    seconds: dict[str, float]
    sweeps: Sequence[SweepResult] = ()
    extras: Sequence[Any] = ()  # per training seed: the study's SeedExtras (activation campaign, cost, attack)

    @property
    def names(self) -> list[str]:
        return [v.name for v in self.config.variants]

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(m.seed for m in self.measurements)


def command_line(config: StudyConfig, folder: Path, seeds: int | None = None) -> str:
    """The ``edgefault reproduce`` command of a study (with ``seeds`` training seeds, default its own).

    Example:
        >>> command_line(StudyConfig(quick=True), Path("study/quick"), seeds=5)
        'edgefault reproduce --data mnist5k --out study/quick --quick --seeds 5'
    """
    parts = ["edgefault reproduce", f"--data {printable(config.data)}", f"--out {printable(folder)}"]
    parts += ["--quick"] if config.quick else []
    parts += [] if config.model == "lenet5" else [f"--model {config.model}"]
    parts += [] if config.seed == 0 else [f"--seed {config.seed}"]
    parts += [f"--seeds {config.seeds if seeds is None else seeds}"]
    return " ".join(parts)


def scope_text(config: StudyConfig, folder: Path) -> str:
    """What the verdicts are about: the trained models (one seed) or the recipes (several).

    Example:
        >>> scope_text(StudyConfig(quick=True, seeds=1), Path("s")).startswith("One training seed")
        True
    """
    if config.seeds == 1:
        return (f"One training seed ({config.seed}): the verdicts are about these trained models, not about "
                "the recipes (another training seed can move a drop by more than its chip interval). "
                f"`{command_line(config, folder, seeds=5)}` trains 4 more seeds (reusing this one) and makes them "
                "verdicts about the recipes.")
    return (f"{config.seeds} training seeds per recipe ({', '.join(map(str, config.training_seeds))}), every model on "
            f"the same chips: the verdicts are about the recipes. Intervals: {METHOD}. Each claim also says how "
            "many seeds' own estimates share the pooled sign, and gives the per-seed values.")


def _header(inputs: ReportInputs) -> list[str]:
    config = inputs.config
    seeds = "seed" if config.seeds == 1 else "training seeds"
    return [
        "# edgefault study: memory faults in activation-sparse quantized networks",
        "",
        f"Reproduces the experiment of {PAPER} with `{command_line(config, inputs.folder)}` ({config.model}, "
        f"{config.epochs} epochs, {seeds} {', '.join(map(str, config.training_seeds))}).",
        f"Activation-sparse recipe: FATReLU threshold {SPARSE_FAT_THRESHOLD}, L1 activation penalty {SPARSE_ACT_L1}. "
        f"SAQ radius rho = {config.rho}. Faults: {', '.join(config.kinds)} at bit error rates "
        f"{', '.join(f'{r:g}' for r in config.rates)}, {config.chips} chips per (kind, rate), the same chips for every "
        "model (paired). Intervals are 95% t intervals over chips unless stated.",
        "",
        f"**{scope_text(config, inputs.folder)}**",
        "",
    ]


def _claims(inputs: ReportInputs) -> list[str]:
    lines = ["## The claims", ""]
    for claim in inputs.claims:
        lines += [f"**Claim {claim.number}.** {claim.statement} — **{claim.verdict}**", ""]
        lines += [f"- {item}" for item in claim.evidence]
        lines.append("")
    return lines + [
        "A claim *held* when its 95% interval lies wholly on the claimed side of zero, *did not hold* when it lies "
        "wholly on the other side, and is *inconclusive* otherwise. The drop of a model on one chip is its clean "
        "accuracy minus its faulty accuracy, averaged over the swept kinds and rates.",
        "",
    ]


def _models(inputs: ReportInputs) -> list[str]:
    drop, _, clean = seed_tables(inputs.measurements)
    collapsed = collapsed_models(clean)
    several = len(inputs.seeds) > 1
    seed_column = " seed |" if several else ""
    lines = ["## The models", "",
             f"| model |{seed_column} recipe | test acc. (PyTorch) | int8 acc. (ORT) | agreement | int/float kernels "
             "| activation sparsity | mean drop [95% CI] | SAM sharpness | top eigenvalue | Hessian trace ± s.e. |",
             "|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if several else "")]
    for variant in inputs.config.variants:
        for m in inputs.measurements:
            n, trained = variant.name, inputs.trained[m.seed]
            metrics = read_json(trained.runs[n] / "metrics.json")
            e, s, x = pool({m.seed: drop[m.seed][n]}).pooled, m.sharpness[n], trained.exports[n]
            interval = "" if e.low is None else f" [{100 * e.low:.2f}, {100 * e.high:.2f}]"
            seed = f" {m.seed} |" if several else ""
            shown = f"{n} (collapsed)" if (m.seed, n) in collapsed else n
            lines.append(
                f"| {shown} |{seed} {variant.label} | {_pct(metrics['test_accuracy'])} | {_pct(x['onnx_accuracy'])} | "
                f"{_pct(x['agreement'])} | {x['integer_kernels']}/{x['float_kernels']} | "
                f"{_pct(metrics['activation_sparsity']['overall'])} | {100 * e.mean:.2f}{interval} | "
                f"{s.sam_sharpness:.4f} | {s.top_eigenvalue:.2f} | {s.hessian_trace:.1f} ± {s.hessian_trace_stderr:.1f} |"
            )
    return lines + [""]


def _faults(inputs: ReportInputs) -> list[str]:
    names, config = inputs.names, inputs.config
    over = "" if len(inputs.seeds) == 1 else f", pooled over {len(inputs.seeds)} training seeds"
    lines = ["## Accuracy under faults", "", f"Mean accuracy (%) ± the 95% interval's half-width{over}.", "",
             "| kind | rate | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    cells: dict[tuple, dict[int, dict[int, float]]] = {}
    for m in inputs.measurements:
        for r in m.records:
            if r.mode == "grid":
                cells.setdefault((r.model, r.kind, r.rate), {}).setdefault(m.seed, {})[r.chip] = r.accuracy
    for kind in config.kinds:
        for rate in config.rates:
            row = []
            for n in names:
                found = cells.get((n, kind, rate))
                e = None if found is None or len(found) < len(inputs.seeds) else pool(found, bounds=ACCURACY).pooled
                if e is None or e.mean is None:
                    row.append("n/a")
                else:
                    spread = "" if e.low is None else f" ± {100 * (e.high - e.mean):.2f}"
                    row.append(f"{100 * e.mean:.2f}{spread}")
            lines.append(f"| {kind} | {rate:g} | " + " | ".join(row) + " |")
    return lines


def _figures(inputs: ReportInputs) -> list[str]:
    _drop_plot(inputs.folder / "drop_vs_sharpness.png", inputs.names, inputs.measurements)
    return [
        "", "![accuracy against bit error rate](campaign/accuracy_vs_rate.png)", "",
        "![sharpness against drop](drop_vs_sharpness.png)", "",
        "Loss landscapes (filter-normalized, Li et al. 2018): "
        + ", ".join(f"[{n} 1-D](sharpness/{n}/landscape_1d.png) / [2-D](sharpness/{n}/landscape_2d.png)"
                    for n in inputs.names),
        "",
    ]


def _sweeps(inputs: ReportInputs) -> list[str]:
    return [line for sweep in inputs.sweeps for line in sweep_lines(sweep)]


def _files(inputs: ReportInputs) -> list[str]:
    seconds = inputs.seconds
    return [
        "## Files and time",
        "",
        "`runs/` (checkpoints and training metrics), `models/` (int8 ONNX models), `campaign/` (results.jsonl, "
        "summary.md/csv/json, plots), `sharpness/` (metrics.json and landscapes per model)"
        + (", `act_campaign/` (the activation-memory campaign), `cost/` and `attack/` (cost totals and flips to "
           "break per model)" if inputs.extras else "")
        + (", `seeds/<training seed>/` (the same for each further training seed)" if len(inputs.seeds) > 1 else "")
        + (", `sweeps/<name>/` (the same for each sweep)." if inputs.sweeps else "."),
        "",
        "Seconds per stage on this machine: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items())
        + f" (total {sum(seconds.values()):.0f}; stages reused from an earlier run take ~0).",
        "",
    ]


SECTIONS: tuple[Callable[[ReportInputs], list[str]], ...] = (_header, _claims, _models, _faults, _figures,
                                                              activation_section, tradeoff_section,
                                                              worst_case_section, _sweeps, _files)


def _drop_plot(path: Path, names: list[str], measurements: list[SeedMeasurements]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    drop, _, _ = seed_tables(measurements)
    figure, axis = plt.subplots(figsize=(6.4, 4.4))
    for color, name in enumerate(names):
        for i, m in enumerate(measurements):
            e, report = pool({m.seed: drop[m.seed][name]}).pooled, m.sharpness[name]
            axis.errorbar(report.hessian_trace, 100 * e.mean, xerr=1.96 * report.hessian_trace_stderr,
                          yerr=None if e.low is None else [[100 * (e.mean - e.low)], [100 * (e.high - e.mean)]],
                          fmt="o", capsize=4, color=f"C{color}", label=name if i == 0 else None)
    axis.set_xlabel("Hessian trace (Hutchinson, 95% CI)")
    axis.set_ylabel("mean fault-induced accuracy drop (points, 95% CI)")
    axis.set_title("Sharpness against fault-induced drop" + ("" if len(measurements) == 1 else
                                                             f" ({len(measurements)} seeds per model)"))
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    write_png_atomic(path, figure)


def write_report(folder: Path, config: StudyConfig, trained: dict[int, Any], measurements: list[SeedMeasurements],
                 claims: list[Claim], seconds: dict[str, float], sweeps: Sequence[SweepResult] = (),
                 extras: Sequence[Any] = ()) -> Path:
    """Write ``folder/report.md`` (its :data:`SECTIONS`) and ``folder/drop_vs_sharpness.png``; return the report.
    """
    inputs = ReportInputs(folder, config, trained, measurements, claims, seconds, sweeps, extras)
    lines = [line for section in SECTIONS for line in section(inputs)]
    path = folder / "report.md"
    write_bytes_atomic(path, "\n".join(lines).encode())
    return path
