"""The attack's plot: ONNX Runtime accuracy against the number of flips, chosen and random (PNG bytes)."""

from __future__ import annotations

import io

from edgefault.attack.config import AttackResult


def accuracy_plot(result: AttackResult, title: str) -> bytes:
    """PNG bytes: accuracy after each chosen flip, and under random flips of the same counts (mean, 95% band).
    """
    from matplotlib.figure import Figure  # matplotlib is slow to import; only a written attack needs it

    figure = Figure(figsize=(6.4, 4.2), layout="constrained")
    axis = figure.subplots()
    counts = list(range(len(result.flips) + 1))
    accuracies = [result.clean_accuracy] + [entry["accuracy"] for entry in result.flips]
    axis.plot(counts, accuracies, marker="o", markersize=3, color="tab:red", label="progressive bit search")
    if result.random:
        x = [0] + [r.count for r in result.random]
        mean = [result.clean_accuracy] + [r.mean for r in result.random]
        low = [result.clean_accuracy] + [r.mean if r.low is None else r.low for r in result.random]
        high = [result.clean_accuracy] + [r.mean if r.high is None else r.high for r in result.random]
        chips = len(result.random[0].accuracies)
        axis.fill_between(x, low, high, color="tab:blue", alpha=0.2, linewidth=0)
        axis.plot(x, mean, marker="s", markersize=3, color="tab:blue",
                  label=f"random flips, same stored bits ({chips} chips: mean, 95% CI)")
    axis.axhline(result.target, color="gray", linestyle="--", linewidth=1,
                 label=f"target {result.target:.1%} (ORT, test split)")
    axis.set_xlabel("bit flips in the weight memory")
    axis.set_ylabel("top-1 accuracy (ONNX Runtime)")
    axis.set_ylim(0, 1.02)
    axis.grid(True, alpha=0.3)
    axis.legend(loc="upper right", fontsize=8)
    axis.set_title(title, fontsize=10)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()
