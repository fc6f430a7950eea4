"""The report's sections on the activation memory, the speed/robustness trade-off and the worst case.

Each is a function of the report's inputs (:class:`edgefault.study.report.ReportInputs`, which holds
``extras``: one :class:`~edgefault.study.extras.SeedExtras` per training seed) returning Markdown lines.
Verdicts follow the study's rule: *held* when the 95% interval lies wholly on the claimed side,
*did not hold* when wholly on the other, *inconclusive* otherwise.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from edgefault.campaign.stats import Estimate
from edgefault.study.claims import Comparison, collapsed_models, compare_seeds, seed_tables
from edgefault.study.config import ACT_FORMATS
from edgefault.study.extras import (ACT_KIND, SeedExtras, flips_median, flips_text, median_flips, over_seeds,
                                    ranking_text)
from edgefault.study.pooled import pool, pool_values
from edgefault.text import md_table

KEEP = 0.95  # "keeps its speedup": at least this share of the conventionally trained sparse model's speedup
PAIRS = (("sparse", "standard"), ("sparse_saq", "standard_saq"))


def _interval(e: Estimate, scale: float = 100.0, digits: int = 2, sign: str = "") -> str:
    if e.mean is None:
        return "n/a"
    text = f"{scale * e.mean:{sign}.{digits}f}"
    return text if e.low is None else text + f" [{scale * e.low:{sign}.{digits}f}, {scale * e.high:{sign}.{digits}f}]"


def direction(comparison: Comparison, more: str, less: str) -> str:
    """A paired comparison's verdict in words: ``more`` when its interval lies above zero, ``less`` below.

    Example:
        >>> from edgefault.campaign.stats import estimate
        >>> direction(Comparison("drop", "a", "b", estimate([0.02, 0.03, 0.025])), "loses more", "loses less")
        'loses more (held)'
    """
    if comparison.verdict(positive=True) == "held":
        return f"{more} (held)"
    if comparison.verdict(positive=False) == "held":
        return f"{less} (did not hold: the interval lies on the other side)"
    return "no significant difference (inconclusive)"


def _measured(inputs: Any, measured: Callable[[SeedExtras, str], bool]) -> list[str]:
    """The report's models that every training seed's extras measured."""
    return [n for n in inputs.names if all(measured(x, n) for x in inputs.extras)]


def _seeds_note(inputs: Any) -> str:
    return ("one training seed: intervals over chips, about these trained models" if len(inputs.seeds) == 1 else
            f"{len(inputs.seeds)} training seeds: intervals over seeds and chips, about the recipes")


def activation_section(inputs: Any) -> list[str]:
    """Faults in the activation memory: drops per model and format, sparse against standard, bitmap against dense.

    Each section of this module is empty for a study without these measurements (``extras``).

    Example:
        >>> from types import SimpleNamespace
        >>> activation_section(SimpleNamespace(extras=()))
        []
        >>> activation_section(SimpleNamespace(extras=[SeedExtras(0, [], {}, {}, "activation 'x' is folded")]))[2]
        "Not measured: activation 'x' is folded."
    """
    if not inputs.extras:
        return []
    extras: Sequence[SeedExtras] = inputs.extras
    refused = next((x.act_refused for x in extras if x.act_refused), None)
    if refused:
        return ["## Faults in the activation memory", "", f"Not measured: {refused}.", ""]
    config, names = inputs.config, _measured(inputs, lambda x, n: n in x.cost)
    _, _, clean = seed_tables(inputs.measurements)
    collapsed = collapsed_models(clean)
    drops = {f: seed_tables([x.act_measurements(f) for x in extras])[0] for f in ACT_FORMATS}
    lines = ["## Faults in the activation memory", "",
             f"Permanent {ACT_KIND}s in the activation buffers (every integer tensor a conv/linear kernel reads, and "
             f"the quantized output; one image's worth), stored {' and '.join(ACT_FORMATS)}, at bit error rates "
             f"{', '.join(f'{r:g}' for r in config.act_rates)}, {config.act_chips} chips per rate, the same chips for "
             f"every model and format (`act_campaign/`). Drop: clean minus faulty accuracy, mean over the rates, in "
             f"points [95% CI]; {_seeds_note(inputs)}.", ""]
    versus, rows = {}, []
    for n in names:
        by_seed = {s: {f: drops[f][s].get(n, {}) for f in ACT_FORMATS} for s in drops["dense"]}
        versus[n] = compare_seeds("drop", by_seed, "bitmap", "dense")
        rows.append([n, *(_interval(pool({s: d[n] for s, d in drops[f].items() if n in d}).pooled) for f in ACT_FORMATS),
                     _interval(versus[n].difference, sign="+")])
    lines += [md_table(["model", *(f"drop, {f}" for f in ACT_FORMATS), "bitmap − dense [95% CI]"], rows), ""]
    for f in ACT_FORMATS:
        for first, second in PAIRS:
            if first in names and second in names:
                c = compare_seeds("drop", drops[f], first, second, collapsed)
                lines.append(f"- {f}, {first} against {second}: {direction(c, 'loses more', 'loses less')}; {c.text()}")
    fragile = [n for n in names if versus[n].verdict(positive=True) == "held"]
    sturdier = [n for n in names if versus[n].verdict(positive=False) == "held"]
    lines += ["", f"**Bitmap against dense at the same bit error rate:** more fragile (held) for "
              f"{', '.join(fragile) or 'no model'}; less fragile for {', '.join(sturdier) or 'no model'}; "
              f"inconclusive for {', '.join(n for n in names if n not in fragile + sturdier) or 'no model'}. "
              "A bitmap flag flip inserts or drops a value and shifts every later one, so one fault moves many.",
              ""]
    lines += [f"![activation faults, {f}](act_campaign/accuracy_vs_rate_activations_{f}.png)" for f in ACT_FORMATS]
    return lines + [""]


def _speedup_claim(inputs: Any, drop: dict) -> tuple[str, list[str]]:
    extras: Sequence[SeedExtras] = inputs.extras
    ratios = [x.speedup("sparse_saq") / x.speedup("sparse") for x in extras]
    kept = over_seeds(ratios)
    if kept.low is None:
        speed = "held" if kept.mean >= KEEP else "did not hold"
        speed_text = (f"speedup(sparse_saq) / speedup(sparse) = {kept.mean:.3f} (one seed: exact for these models "
                      f"on these images, no sampling interval); kept means >= {KEEP}")
    else:
        speed = "held" if kept.low >= KEEP else "did not hold" if kept.high < KEEP else "inconclusive"
        speed_text = (f"speedup(sparse_saq) / speedup(sparse) = {kept.mean:.3f} [95% CI over seeds {kept.low:.3f}, "
                      f"{kept.high:.3f}]; kept means >= {KEEP}")
    _, _, clean = seed_tables(inputs.measurements)
    robust = compare_seeds("drop", drop, "sparse_saq", "standard", collapsed_models(clean))
    robust_verdict = robust.verdict(positive=False)
    parts = [speed, robust_verdict]
    verdict = "held" if parts == ["held", "held"] else "did not hold" if "did not hold" in parts else "inconclusive"
    return verdict, [f"speed: {speed_text}: {speed}",
                     f"robustness (weight faults): {robust.text()}: {robust_verdict} (held: SAQ-sparse loses "
                     "significantly less; did not hold: significantly more)"]


def tradeoff_section(inputs: Any) -> list[str]:
    """What sparsity buys: modelled speedup and energy beside clean accuracy and drop, and the SAQ claim."""
    if not inputs.extras:
        return []
    extras: Sequence[SeedExtras] = inputs.extras
    config, names = inputs.config, _measured(inputs, lambda x, n: n in x.cost)
    drop, _, clean = seed_tables(inputs.measurements)
    images = "every test image" if not config.cost_limit else f"the first {config.cost_limit} test images"
    lines = ["## What sparsity buys: speed against robustness", "",
             "The cost model (`edgefault cost`, default 45 nm edge accelerator, docs/cost-model.md) on the real "
             f"integer activations of {images}: speedup and energy saving of zero-skipping with lane imbalance "
             "against the standard model's dense execution (ideal skipping beside it), next to clean accuracy and the "
             f"weight-fault drop of the campaign above ({_seeds_note(inputs)}; speedup and energy are means over "
             "seeds, exact per model).", ""]
    rows = [[n, f"{100 * over_seeds([clean[x.seed][n] for x in extras]).mean:.2f}%",
             _interval(pool({s: v[n] for s, v in drop.items() if n in v}).pooled),
             f"{100 * over_seeds([x.zero_share(n) for x in extras]).mean:.1f}%",
             f"{over_seeds([x.speedup(n) for x in extras]).mean:.3f}x",
             f"{over_seeds([x.speedup(n, 'skipping_ideal') for x in extras]).mean:.3f}x",
             f"{100 * over_seeds([x.energy_saving(n) for x in extras]).mean:.1f}%"] for n in names]
    lines += [md_table(["model", "clean acc. (ORT)", "weight-fault drop [95% CI]", "zero-input MACs",
                        "speedup (imbalanced)", "speedup (ideal)", "energy saving"], rows), ""]
    if all(n in names for n in ("sparse", "sparse_saq", "standard")):
        verdict, evidence = _speedup_claim(inputs, drop)
        lines += ["**Claim: SAQ lets a sparse model keep its speedup at a drop no worse than the conventionally "
                  f"trained standard model's.** — **{verdict}**", ""] + [f"- {e}" for e in evidence] + [
            "", "Held needs both parts; did not hold if either part did not.", ""]
    return lines


def _flips_compare(extras: Sequence[SeedExtras], first: str, second: str) -> str:
    a = [x.attack[first] for x in extras]
    b = [x.attack[second] for x in extras]
    if len(extras) == 1:
        ra = [c for c in a[0]["counts"] if c is not None]
        rb = [c for c in b[0]["counts"] if c is not None]
        every = ("in its one attack batch (one batch measures no spread between batches)"
                 if len(a[0]["counts"]) == 1 else "in every attack batch")
        if ra and rb and max(ra) < min(rb) and None not in a[0]["counts"]:
            return f"{first} needs fewer flips than {second} {every}"
        if ra and rb and max(rb) < min(ra) and None not in b[0]["counts"]:
            return f"{first} needs more flips than {second} {every}"
        return (f"{first} {flips_text(a)} against {second} {flips_text(b)}: the ranges overlap, no difference beyond "
                "the spread between attack batches")
    diff = pool_values([flips_median(p) - flips_median(q) for p, q in zip(a, b)])
    verdict = ("more" if diff.low > 0 else "fewer" if diff.high < 0 else "no significant difference in")
    return (f"median flips({first}) - median flips({second}) = {diff.mean:+.1f} [95% CI over seeds {diff.low:+.1f}, "
            f"{diff.high:+.1f}]: {first} needs {verdict} flips")


def worst_case_section(inputs: Any) -> list[str]:
    """The worst case: flips to chance + 1 point per model, and whether sparsity or SAQ changes it."""
    if not inputs.extras:
        return []
    extras: Sequence[SeedExtras] = inputs.extras
    config, names = inputs.config, _measured(inputs, lambda x, n: n in x.attack and "error" not in x.attack[n])
    refused = {n: x.attack[n]["error"] for x in extras for n in inputs.names if "error" in x.attack.get(n, {})}
    images = "every test image" if not config.attack_limit else f"the first {config.attack_limit} test images"
    lines = ["## The worst case: flips to break", "",
             f"Progressive bit search (`edgefault attack`, docs/attack.md) on each deployed model, {config.attack_batches} "
             f"attack batch{'es' if config.attack_batches > 1 else ''} (from the training split) per model, up to {config.attack_flips} flips each, ONNX Runtime "
             f"accuracy on {images}: flips until accuracy is at or below chance + 1 point (chance: always answering the "
             "most frequent class of those images), median [range over batches] "
             f"(>{config.attack_flips}: not reached within the budget).", ""]
    rows = [[n, flips_text([x.attack[n] for x in extras]),
             "; ".join(", ".join(">" + str(config.attack_flips) if c is None else str(c) for c in x.attack[n]["counts"])
                       for x in extras)] for n in names]
    rows += [[n, f"not measured: {message}", ""] for n, message in refused.items()]
    lines += [md_table(["model", "flips to chance + 1", "per batch"], rows), ""]
    for first, second in (("sparse", "standard"), ("sparse_saq", "standard_saq"), ("standard_saq", "standard"),
                          ("sparse_saq", "sparse")):
        if first in names and second in names:
            lines.append(f"- {_flips_compare(extras, first, second)}.")
    drop, _, _ = seed_tables(inputs.measurements)
    robust = {n: -(pool({s: v[n] for s, v in drop.items() if n in v}).pooled.mean or 0.0) for n in names}
    lines += ["", ranking_text(robust, {n: median_flips(extras, n) for n in names}, "least weight-fault drop")
              + " Orders are by point estimates; the intervals above say which differences are significant.", ""]
    return lines
