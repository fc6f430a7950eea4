"""``campaign --cost``'s summary: per model, memory, kind and rate, the change from clean in density, speedup and energy.

Each chip's cell records the modelled cost of the faulty model (:mod:`edgefault.campaign.costcells`);
its change from the model's clean cell is one sample, and the chips give the mean change with
a Student-t 95% interval (:func:`edgefault.campaign.stats.estimate`, as for accuracy). The
changes:

* ``mac_density``: the share of all kernels' MACs whose input is not zero, faulty minus clean
  (positive: the faults made the activations denser);
* ``speedup`` and ``ideal_speedup``: zero-skipping speedup against dense, with lane imbalance
  and ideal, faulty minus clean (negative: the faulty chip is slower);
* ``energy``: skipping energy per image, faulty over clean minus 1 (positive: hungrier);
* per kernel, ``density``: the share of its input's values that are not zero, faulty minus clean.
"""

from __future__ import annotations

from typing import Any

from edgefault.campaign.stats import estimate
from edgefault.text import md_table

IMBALANCED, IDEAL = "skipping_imbalanced", "skipping_ideal"


def _interval(values: list[float], bounds: tuple[float, float] | None = None) -> dict[str, Any]:
    e = estimate(values, bounds=bounds)
    return {"mean": e.mean, "ci_low": e.low, "ci_high": e.high}


def _measures(cost: dict[str, Any]) -> dict[str, float]:
    total = cost["total"]
    return {"mac_density": total["mac_density"], "speedup": total["speedup"][IMBALANCED],
            "ideal_speedup": total["speedup"][IDEAL], "energy_pj": total["energy_pj"]["skipping"]}


def summarize_cost(models: list[dict[str, Any]], cells: list[dict[str, Any]],
                   results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (model, memory, mode, target, kind, rate) group with a clean cost: clean values and mean changes.

    ``models``, ``cells`` and ``results`` are :func:`edgefault.campaign.stats.summarize`'s.

    Example:
        >>> def cost(density, speedup, energy):
        ...     return {"layers": [{"name": "fc", "density": density}], "total": {"mac_density": density,
        ...             "speedup": {"skipping_imbalanced": speedup, "skipping_ideal": speedup},
        ...             "energy_pj": {"skipping": energy}}}
        >>> cells = [{"key": "c", "model": 0, "mode": "clean"}] + [
        ...     {"key": f"g{k}", "model": 0, "mode": "grid", "target": None, "kind": "sa1", "rate": 0.1, "chip": k}
        ...     for k in range(2)]
        >>> results = {"c": {"cost": cost(0.5, 1.5, 100.0)}, "g0": {"cost": cost(0.6, 1.4, 110.0)},
        ...            "g1": {"cost": cost(0.7, 1.2, 130.0)}}
        >>> row = summarize_cost([{"name": "a"}], cells, results)[0]
        >>> round(row["mac_density"]["mean"], 3), round(row["speedup"]["mean"], 3), round(row["energy"]["mean"], 3)
        (0.15, -0.2, 0.2)
        >>> round(row["layers"][0]["density"]["mean"], 3), row["n"]
        (0.15, 2)
    """
    clean = {c["model"]: results[c["key"]]["cost"] for c in cells
             if c["mode"] == "clean" and results.get(c["key"], {}).get("cost") is not None}
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for cell in cells:
        if cell["mode"] != "clean" and cell["model"] in clean:
            key = (cell["model"], cell.get("memory", "weights"), cell["mode"], cell["target"], cell["kind"],
                   cell["rate"])
            groups.setdefault(key, []).append(cell)
    rows = []
    for (model, memory, mode, target, kind, rate), members in groups.items():
        costs = [results[c["key"]]["cost"] for c in members if results.get(c["key"], {}).get("cost") is not None]
        base, base_cost = _measures(clean[model]), clean[model]
        faulty = [_measures(cost) for cost in costs]
        layers = []
        for index, layer in enumerate(base_cost["layers"]):
            changes = [cost["layers"][index]["density"] - layer["density"] for cost in costs]
            layers.append({"name": layer["name"], "clean_density": layer["density"],
                           "density": _interval(changes, (-1.0, 1.0))})
        rows.append({
            "model": models[model]["name"], "memory": memory, "mode": mode, "target": target, "kind": kind,
            "rate": rate, "n": len(costs), "clean": base,
            "mac_density": _interval([f["mac_density"] - base["mac_density"] for f in faulty], (-1.0, 1.0)),
            "speedup": _interval([f["speedup"] - base["speedup"] for f in faulty]),
            "ideal_speedup": _interval([f["ideal_speedup"] - base["ideal_speedup"] for f in faulty]),
            "energy": _interval([f["energy_pj"] / base["energy_pj"] - 1.0 for f in faulty if base["energy_pj"]]),
            "layers": layers,
        })
    return rows


def _signed(value: float | None, percent: bool = False) -> str:
    if value is None:
        return "-"
    return f"{100 * value:+.1f}%" if percent else f"{value:+.3f}"


def _change(entry: dict[str, Any], percent: bool = False) -> str:
    text = _signed(entry["mean"], percent)
    if entry["ci_low"] is not None:
        text += f" [{_signed(entry['ci_low'], percent)}, {_signed(entry['ci_high'], percent)}]"
    return text


def cost_rows(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the grid cells' change table (the terminal's and ``summary.md``'s).

    Example:
        >>> cost_rows([])[0][:3]
        ['model', 'kind', 'rate']
    """
    grid = [row for row in rows if row["mode"] == "grid"]
    several = any(row["memory"] != "weights" for row in grid)
    header = ["model", *(["memory"] if several else []), "kind", "rate", "chips", "MAC density: clean",
              "change [95% CI]", "speedup: clean", "change [95% CI]", "skipping energy: change [95% CI]"]
    table = [[row["model"], *([row["memory"]] if several else []), row["kind"], f"{row['rate']:g}",
              str(row["n"]), f"{row['clean']['mac_density']:.3f}", _change(row["mac_density"]),
              f"{row['clean']['speedup']:.3f}x", _change(row["speedup"]), _change(row["energy"], percent=True)]
             for row in grid]
    return header, table


def cost_markdown(rows: list[dict[str, Any]], accelerator: str) -> list[str]:
    """The ``summary.md`` section of ``--cost`` (grid cells; every mode is in ``summary.json``), as lines.

    Example:
        >>> cost_markdown([], "edge-45nm")
        []
    """
    grid = [row for row in rows if row["mode"] == "grid"]
    if not grid:
        return []
    several = any(row["memory"] != "weights" for row in grid)
    names = [layer["name"] for layer in grid[0]["layers"]]
    same = all([layer["name"] for layer in row["layers"]] == names for row in grid)
    lines = [
        "", f"## Cost on a zero-skipping accelerator (`--cost`, {accelerator})", "",
        "Per cell the faulty chip's kernels were costed from their real integer inputs as `edgefault cost` "
        "does. Changes are faulty minus clean, mean over chips with a 95% Student-t interval: MAC density (share "
        "of MACs whose input is not zero; positive: denser), speedup of zero-skipping with lane imbalance against "
        "dense (negative: slower), and skipping energy per image relative to clean (positive: hungrier).", "",
        md_table(*cost_rows(rows)),
    ]
    if same and names:
        layer_rows = [[row["model"], *([row["memory"]] if several else []), row["kind"], f"{row['rate']:g}",
                       *(_signed(layer["density"]["mean"]) for layer in row["layers"])] for row in grid]
        clean = {row["model"]: [f"{layer['clean_density']:.3f}" for layer in row["layers"]] for row in grid}
        lines += ["", "Input density per kernel (share of non-zero values): clean, then mean change per cell.", "",
                  md_table(["model", *(["memory"] if several else []), "kind", "rate", *names],
                           [[model, *([""] if several else []), "clean", "", *values] for model, values in clean.items()]
                           + layer_rows)]
    return lines
