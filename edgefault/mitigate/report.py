"""The leaderboard: one row per method, built from the campaigns, written as JSON, CSV and Markdown.

Fields per method: ``clean_accuracy``; per kind and rate ``accuracy`` and ``robust_error`` with
95% intervals; ``tolerable`` bit error rates within 1 and 5 points of the method's own clean
accuracy (median over chips, 95% interval); ``train_seconds`` and ``train_time_relative`` (to
plain QAT); ``storage_overhead`` (ECC check bits as a share of the weight memory); with a voltage
curve, ``energy``: the lowest voltage and the energy saved within 1 point of the conventional
model's clean accuracy. ``winner``: the method with the highest tolerable rate within 1 point
(headline kind), ties going to the higher clean accuracy.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from edgefault.campaign.results import CampaignRecord
from edgefault.fileio import read_json, write_bytes_atomic, write_json_atomic
from edgefault.mitigate.board import lowest_voltage, method_scores
from edgefault.mitigate.config import BASELINE, ECC_BITS, LABELS, MitigateConfig
from edgefault.faults.ecc import ecc_overhead
from edgefault.study.extras import energy_saving, flips_median, flips_text, over_seeds, ranking_text, speedup
from edgefault.text import csv_bytes, md_table, printable

BOARD_FORMAT = "edgefault-leaderboard-1"


@dataclasses.dataclass(frozen=True)
class SeedCampaigns:
    """One training seed's run directories (by method) and its campaigns' records (main and ECC)."""

    seed: int
    runs: dict[str, Path]
    records: list[CampaignRecord]
    ecc_records: list[CampaignRecord] = dataclasses.field(default_factory=list)
    cost: dict[str, dict] = dataclasses.field(default_factory=dict)  # method -> cost totals
    attack: dict[str, dict] = dataclasses.field(default_factory=dict)  # method -> flips to break


def scope_line(seeds: int) -> str:
    """What the leaderboard's intervals are about.

    Example:
        >>> scope_line(1).startswith("One training seed per method")
        True
    """
    if seeds == 1:
        return ("One training seed per method: the ranking is about these trained models, not the recipes; "
                "`--seeds 5` (reusing this seed) makes it one about the recipes.")
    return (f"{seeds} training seeds per method, every model on the same chips: intervals over seeds and chips, "
            "tolerable rates the mean over seeds of each seed's median (t interval over seeds).")


def build_board(config: MitigateConfig, seeds: list[SeedCampaigns], curve, seconds: dict[str, float]) -> dict[str, Any]:
    """Assemble the leaderboard from each training seed's campaign records and runs' metrics.
    """
    kinds, rates = config.kinds, config.rates
    headline = "flip" if "flip" in kinds else kinds[0]
    train_seconds = {m: sum(read_json(s.runs[m] / "metrics.json")["train_seconds"] for s in seeds) / len(seeds)
                     for m in config.trained}
    wbits = config.recipe(BASELINE).wbits
    base_seconds = train_seconds[BASELINE]
    rows = []
    for method in config.reported:
        ecc = method == "ecc"
        source = {s.seed: s.ecc_records if ecc else s.records for s in seeds}
        model = BASELINE if ecc else method
        overhead = ecc_overhead(ECC_BITS if ecc else (), wbits)
        rows.append({
            "method": method, "label": LABELS[method], **method_scores(source, model, kinds, rates, config.chips),
            "train_seconds": train_seconds[model],
            "train_time_relative": round(train_seconds[model] / max(base_seconds, 1e-9), 3),
            "storage_overhead": overhead.relative, "storage_note": overhead.describe(),
            **cost_and_attack(seeds, model, measured=not ecc),
        })
    if curve is not None:
        target = rows[0]["clean_accuracy"] - 0.01  # rows[0] is the conventional model
        for row in rows:
            points = row["kinds"][headline]["rates"]
            row["energy"] = lowest_voltage(curve, list(rates), [p["accuracy"] for p in points],
                                           row["clean_accuracy"], target)
    winner = max(rows, key=lambda r: (r["kinds"][headline]["tolerable"]["1"]["median"] or 0.0, r["clean_accuracy"]))
    return {"format": BOARD_FORMAT, "model": config.model, "data": config.data, "kinds": list(kinds),
            "rates": list(rates), "chips": config.chips, "epochs": config.epochs, "headline_kind": headline,
            "training_seeds": [s.seed for s in seeds],
            "baseline": BASELINE, "winner": winner["method"], "methods": rows,
            "voltage_curve": None if curve is None else curve.to_dict(),
            "seconds": {k: round(v, 1) for k, v in seconds.items()}}


def _over_seeds(values: list[float]) -> dict[str, Any]:
    e = over_seeds(values)
    return {"mean": e.mean, "low": e.low, "high": e.high, "per_seed": values}


def cost_and_attack(seeds: list[SeedCampaigns], model: str, measured: bool = True) -> dict[str, Any]:
    """A method's modelled speedup and energy saving (zero-skipping with lane imbalance, against the conventional
    model's dense execution, same seed) and its flips to break, over training seeds (``measured=False``: the
    attack does not apply, e.g. to ECC-protected bits, and ``flips_to_break`` is None).

    Example:
        >>> cost_and_attack([SeedCampaigns(0, {}, [])], "qat")
        {}
    """
    if not all(model in s.cost and BASELINE in s.cost for s in seeds):
        return {}
    found: dict[str, Any] = {
        "speedup": _over_seeds([speedup(s.cost[BASELINE], s.cost[model]) for s in seeds]),
        "energy_saving": _over_seeds([energy_saving(s.cost[BASELINE], s.cost[model]) for s in seeds]),
        "flips_to_break": None}
    if measured and all("error" not in s.attack.get(model, {"error": ""}) for s in seeds):
        entries = [s.attack[model] for s in seeds]
        found["flips_to_break"] = {"median": float(sum(flips_median(e) for e in entries) / len(entries)),
                                   "text": flips_text(entries), "per_seed": entries}
    return found


def ranking_note(board: dict[str, Any]) -> str:
    """Where the attack's ranking (most flips to break first) differs from the random-fault ranking (highest
    tolerable bit error rate within 1 point first).

    Example:
        >>> ranking_note({"headline_kind": "flip", "methods": []})
        ''
    """
    kind = board["headline_kind"]
    rows = [r for r in board["methods"] if r.get("flips_to_break")]
    if len(rows) < 2:
        return ""
    return ranking_text({r["method"]: r["kinds"][kind]["tolerable"]["1"]["median"] or 0.0 for r in rows},
                        {r["method"]: r["flips_to_break"]["median"] for r in rows}, f"tolerable {kind} rate (1 pt)")


def write_board(folder: Path, board: dict[str, Any]) -> list[Path]:
    """Write ``leaderboard.json``, ``leaderboard.csv`` and ``leaderboard.md`` atomically.
    """
    write_json_atomic(folder / "leaderboard.json", board)
    write_bytes_atomic(folder / "leaderboard.csv", board_csv(board).encode())
    write_bytes_atomic(folder / "leaderboard.md", board_markdown(board).encode())
    return [folder / "leaderboard.json", folder / "leaderboard.csv", folder / "leaderboard.md"]


def _energy_fields(row: dict) -> dict:
    energy = row.get("energy") or {}
    return {"lowest_voltage": energy.get("voltage"), "energy_saved": energy.get("energy_saved")}


def _cost_fields(row: dict) -> dict:
    flips = row.get("flips_to_break")
    return {"speedup": (row.get("speedup") or {}).get("mean"),
            "energy_saving_skipping": (row.get("energy_saving") or {}).get("mean"),
            "flips_to_break": None if flips is None else flips["median"]}


def board_csv(board: dict[str, Any]) -> str:
    """One line per method x kind x rate, with the method's summary columns repeated.
    """
    lines = []
    for row in board["methods"]:
        for kind, scores in row["kinds"].items():
            tolerable = {f"tolerable_{d}pt{suffix}": scores["tolerable"][d][key]
                         for d in ("1", "5") for suffix, key in (("", "median"), ("_low", "low"), ("_high", "high"))}
            for point in scores["rates"]:
                lines.append({"method": row["method"], "clean_accuracy": row["clean_accuracy"],
                              "train_time_relative": row["train_time_relative"],
                              "storage_overhead": row["storage_overhead"], **_energy_fields(row), **_cost_fields(row),
                              "kind": kind, **tolerable, **point})
    return csv_bytes(list(lines[0]) if lines else [], lines).decode()


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.2g}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def tolerable_text(entry: dict) -> str:
    """A tolerable-rate entry as ``median [low, high]``, noting chips that held at every rate.

    Example:
        >>> tolerable_text({"median": 0.026, "low": 0.022, "high": 0.031, "censored_chips": 0})
        '0.026 [0.022, 0.031]'
        >>> tolerable_text({"median": 0.026, "low": 0.022, "high": 0.031, "confidence": 0.5, "censored_chips": 0})
        '0.026 [0.022, 0.031] (50% range)'
    """
    censored = " (>= on some chips)" if entry["censored_chips"] else ""
    coverage = entry.get("confidence")
    below = f" ({coverage:.0%} range)" if coverage is not None and coverage < 0.95 else ""  # fewer than 6 chips
    return f"{_rate(entry['median'])} [{_rate(entry['low'])}, {_rate(entry['high'])}]{below}{censored}"


def board_markdown(board: dict[str, Any]) -> str:
    """The leaderboard as Markdown: the ranking table, then accuracy and robust error per rate.
    """
    kind = board["headline_kind"]
    energy = board["voltage_curve"] is not None
    lines = [f"# Mitigations on {printable(board['model'])} / {printable(board['data'])}", "",
             f"{board['chips']} chips per (kind, rate), the same for every method; {board['epochs']} epochs each. "
             f"Tolerable rate: the {kind} bit error rate at which a chip's accuracy first falls more than 1 (5) "
             "points below the method's own clean accuracy; median over chips [95% interval]. "
             f"Winner (highest tolerable rate within 1 point): **{board['winner']}**.", "",
             f"**{scope_line(len(board.get('training_seeds', [0])))}**", ""]
    header = ["method", "clean acc %", "tolerable BER, 1 pt", "tolerable BER, 5 pt", "train time x QAT", "storage"]
    if energy:
        header += ["lowest V (1 pt of QAT)", "energy saved"]
    cost = any("speedup" in row for row in board["methods"])
    if cost:
        header += ["speedup (skipping)", "energy saved (skipping)", "flips to break"]
    rows = []
    for row in board["methods"]:
        tolerable = row["kinds"][kind]["tolerable"]
        cells = [row["label"], _percent(row["clean_accuracy"]), tolerable_text(tolerable["1"]), tolerable_text(tolerable["5"]),
                 f"{row['train_time_relative']:.2f}", f"+{100 * row['storage_overhead']:.1f}%"]
        if energy:
            fields = _energy_fields(row)
            cells += ["-" if fields["lowest_voltage"] is None else f"{fields['lowest_voltage']:g}",
                      "-" if fields["energy_saved"] is None else f"{100 * fields['energy_saved']:.0f}%"]
        if cost:
            flips = row.get("flips_to_break")
            cells += [f"{row['speedup']['mean']:.3f}x", f"{100 * row['energy_saving']['mean']:.1f}%",
                      "- (not attacked: the search does not model ECC)" if flips is None else flips["text"]]
        rows.append(cells)
    lines.append(md_table(header, rows))
    if cost:
        lines += ["", "Speedup and energy saved: the cost model (`edgefault cost`, default 45 nm accelerator) with "
                  "zero-skipping and lane imbalance, against the conventional model's dense execution (mean over "
                  "training seeds). Flips to break: progressive bit search (`edgefault attack`) until ONNX Runtime "
                  "accuracy is at or below chance + 1 point (chance: always answering the most frequent class of the test "
                  "images scored), median [range] over attack batches (>N: not reached within N flips) "
                  "(several seeds: mean of the seeds' medians [t interval]). " + ranking_note(board)]
    for kind_name in board["kinds"]:
        lines += ["", f"## {kind_name}: accuracy % / robust error % per rate (mean [95% CI])", ""]
        rows = [[row["method"], *(f"{_percent(p['accuracy'])} [{_percent(p['accuracy_low'])}, "
                                  f"{_percent(p['accuracy_high'])}] / {_percent(p['robust_error'])}"
                                  for p in row["kinds"][kind_name]["rates"])] for row in board["methods"]]
        lines.append(md_table(["method", *(f"{r:g}" for r in board["rates"])], rows))
    seconds = ", ".join(f"{k} {v:.0f} s" for k, v in board["seconds"].items())
    lines += ["", f"Stage times of this run: {seconds}. Storage notes: "
              + "; ".join(f"{r['method']}: {r['storage_note']}" for r in board["methods"] if r["storage_overhead"]), ""]
    return "\n".join(lines)
