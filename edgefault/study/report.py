"""The study report: report.md beside a drop-vs-sharpness plot, setting measurements beside the paper's claims."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Sequence

from edgefault.campaign.stats import estimate
from edgefault.fileio import read_json, write_bytes_atomic
from edgefault.study.claims import Claim, drops, per_chip_accuracy
from edgefault.study.config import SPARSE_ACT_L1, SPARSE_FAT_THRESHOLD, StudyConfig
from edgefault.study.sweeps import SweepResult, sweep_lines
from edgefault.text import printable

PAPER = ("Malhotra and Gupta, \"Memory Faults in Activation-sparse Quantized Deep Neural Networks: Analysis and "
         "Mitigation using Sharpness-aware Training\", arXiv:2406.10528 (2024)")


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def _drop_plot(path: Path, names: list[str], mean_drop: dict[str, Any], sharpness: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axis = plt.subplots(figsize=(6.4, 4.4))
    for name in names:
        e, report = mean_drop[name], sharpness[name]
        axis.errorbar(report.hessian_trace, 100 * e.mean, xerr=1.96 * report.hessian_trace_stderr,
                      yerr=None if e.low is None else [[100 * (e.mean - e.low)], [100 * (e.high - e.mean)]],
                      fmt="o", capsize=4, label=name)
    axis.set_xlabel("Hessian trace (Hutchinson, 95% CI)")
    axis.set_ylabel("mean fault-induced accuracy drop (points, 95% CI)")
    axis.set_title("Sharpness against fault-induced drop")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    plt.close(figure)
    write_bytes_atomic(path, buffer.getvalue())


def write_report(folder: Path, config: StudyConfig, exports: dict[str, dict], summary: dict[str, Any],
                 sharpness: dict[str, Any], claims: list[Claim], records: list[dict], seconds: dict[str, float],
                 sweeps: Sequence[SweepResult] = ()) -> Path:
    """Write ``folder/report.md`` and ``folder/drop_vs_sharpness.png``; return the report's path.

    The sweeps, if any, get a section each (table, plot, conclusion).

    Example:
        >>> write_report(Path("study/quick"), config, exports, summary, reports, claims, records, seconds)  # doctest: +SKIP
        PosixPath('study/quick/report.md')
    """
    names = [v.name for v in config.variants]
    clean, faulty = per_chip_accuracy(records)
    drop = drops(clean, faulty)
    mean_drop = {n: estimate(drop[n].values()) for n in names}
    _drop_plot(folder / "drop_vs_sharpness.png", names, mean_drop, sharpness)

    lines = [
        "# edgefault study: memory faults in activation-sparse quantized networks",
        "",
        f"Reproduces the experiment of {PAPER} with `edgefault reproduce --data {printable(config.data)}"
        f"{' --quick' if config.quick else ''}` ({config.model}, {config.epochs} epochs, seed {config.seed}).",
        f"Activation-sparse recipe: FATReLU threshold {SPARSE_FAT_THRESHOLD}, L1 activation penalty {SPARSE_ACT_L1}. "
        f"SAQ radius rho = {config.rho}. Faults: {', '.join(config.kinds)} at bit error rates "
        f"{', '.join(f'{r:g}' for r in config.rates)}, {config.chips} chips per (kind, rate), the same chips for every "
        "model (paired). Intervals are 95% t intervals over chips unless stated.",
        "",
        "## The claims",
        "",
    ]
    for claim in claims:
        lines.append(f"**Claim {claim.number}.** {claim.statement} — **{claim.verdict}**")
        lines.append("")
        lines += [f"- {item}" for item in claim.evidence]
        lines.append("")
    lines += [
        "A claim *held* when its 95% interval lies wholly on the claimed side of zero, *did not hold* when it lies "
        "wholly on the other side, and is *inconclusive* otherwise. The drop of a model on one chip is its clean "
        "accuracy minus its faulty accuracy, averaged over the swept kinds and rates.",
        "",
        "## The models",
        "",
        "| model | recipe | test acc. (PyTorch) | int8 acc. (ORT) | agreement | int/float kernels | activation sparsity "
        "| mean drop [95% CI] | SAM sharpness | top eigenvalue | Hessian trace ± s.e. |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for variant in config.variants:
        n = variant.name
        metrics = read_json(folder / "runs" / n / "metrics.json")
        e, s, x = mean_drop[n], sharpness[n], exports[n]
        interval = "" if e.low is None else f" [{100 * e.low:.2f}, {100 * e.high:.2f}]"
        lines.append(
            f"| {n} | {variant.label} | {_pct(metrics['test_accuracy'])} | {_pct(x['onnx_accuracy'])} | "
            f"{_pct(x['agreement'])} | {x['integer_kernels']}/{x['float_kernels']} | "
            f"{_pct(metrics['activation_sparsity']['overall'])} | {100 * e.mean:.2f}{interval} | "
            f"{s.sam_sharpness:.4f} | {s.top_eigenvalue:.2f} | {s.hessian_trace:.1f} ± {s.hessian_trace_stderr:.1f} |"
        )
    lines += ["", "## Accuracy under faults", "", "| kind | rate | " + " | ".join(names) + " |",
              "|---|---|" + "---|" * len(names)]
    groups = {(g["model"], g["kind"], g["rate"]): g for g in summary["groups"] if g["mode"] == "grid"}
    for kind in config.kinds:
        for rate in config.rates:
            cells = []
            for n in names:
                g = groups.get((n, kind, rate))
                if g is None or g["mean"] is None:
                    cells.append("n/a")
                else:
                    spread = "" if g["ci_low"] is None else f" ± {100 * (g['ci_high'] - g['mean']):.2f}"
                    cells.append(f"{100 * g['mean']:.2f}{spread}")
            lines.append(f"| {kind} | {rate:g} | " + " | ".join(cells) + " |")
    lines += [
        "", "![accuracy against bit error rate](campaign/accuracy_vs_rate.png)", "",
        "![sharpness against drop](drop_vs_sharpness.png)", "",
        "Loss landscapes (filter-normalized, Li et al. 2018): "
        + ", ".join(f"[{n} 1-D](sharpness/{n}/landscape_1d.png) / [2-D](sharpness/{n}/landscape_2d.png)" for n in names),
        "",
        *(line for sweep in sweeps for line in sweep_lines(sweep)),
        "## Files and time",
        "",
        "`runs/` (checkpoints and training metrics), `models/` (int8 ONNX models), `campaign/` (results.jsonl, "
        "summary.md/csv/json, plots), `sharpness/` (metrics.json and landscapes per model)"
        + (", `sweeps/<name>/` (the same for each sweep)." if sweeps else "."),
        "",
        "Seconds per stage on this machine: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items())
        + f" (total {sum(seconds.values()):.0f}; stages reused from an earlier run take ~0).",
        "",
    ]
    path = folder / "report.md"
    write_bytes_atomic(path, "\n".join(lines).encode())
    return path
