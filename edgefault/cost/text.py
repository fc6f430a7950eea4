"""The readable ``edgefault cost`` report: the accelerator in one line, a per-layer table and the totals."""

from __future__ import annotations

from edgefault.cost.report import CostReport


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return ["  " + "  ".join(cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i])
                             for i, cell in enumerate(row)).rstrip() for row in [header, *rows]]


def _x(value: float) -> str:
    return f"{value:.2f}x"


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def format_cost(report: CostReport) -> str:
    """Render a :class:`CostReport` as text: accelerator, per-layer table, totals, what the model leaves out.
    """
    acc = report.accelerator
    lines = [
        f"model        {report.model}",
        f"data         {report.dataset}: {report.images} test images (numbers are means per image)",
        f"accelerator  {acc.name} ({acc.source}): {acc.macs} MACs in {acc.groups} groups of {acc.lanes} lanes, "
        f"{acc.activation_bits}-bit activations stored as {acc.format}, buffers {acc.activation_buffer_kib:g} KiB "
        f"activations / {acc.weight_buffer_kib:g} KiB weights",
        "",
        "per layer: speedup against dense (gating / skipping ideal / skipping with lane imbalance), energy",
    ]
    rows = []
    for layer in report.layers:
        bits = layer.activation_bits
        offchip = "weights" if layer.offchip["weights"] else ""
        if layer.offchip["activations"]:
            offchip = f"{offchip}{', ' if offchip else ''}{_pct(layer.offchip['activations'])} activations"
        rows.append((
            layer.name, layer.op, f"{layer.macs:,.0f}", _pct(layer.zero_input_macs / layer.macs if layer.macs else 0),
            _x(layer.speedup["gating"]), _x(layer.speedup["skipping_ideal"]),
            _x(layer.speedup["skipping_imbalanced"]), f"{layer.energy_pj['dense'] / 1000:,.1f}",
            _pct(layer.energy_saving["gating"]), _pct(layer.energy_saving["skipping_imbalanced"]),
            f"{bits['dense']:,.0f}", f"{bits['bitmap']:,.0f}", f"{bits['rle']:,.0f}", offchip or "-",
        ))
    total = report.total
    rows.append((
        "all layers", "", f"{total['macs']:,.0f}",
        _pct(total["zero_input_macs"] / total["macs"] if total["macs"] else 0),
        _x(total["speedup"]["gating"]), _x(total["speedup"]["skipping_ideal"]),
        _x(total["speedup"]["skipping_imbalanced"]), f"{total['energy_pj']['dense'] / 1000:,.1f}",
        _pct(total["energy_saving"]["gating"]), _pct(total["energy_saving"]["skipping_imbalanced"]),
        f"{total['activation_bits']['dense']:,.0f}", f"{total['activation_bits']['bitmap']:,.0f}",
        f"{total['activation_bits']['rle']:,.0f}", "",
    ))
    lines += _table(("layer", "op", "MACs", "zero in", "gating", "ideal", "imbal.", "dense nJ", "save gate",
                     "save skip", "dense bits", "bitmap", "rle", "off-chip"), rows)
    cycles = total["cycles"]
    lines += [
        "",
        f"total cycles  dense {cycles['dense']:,.0f}, skipping ideal {cycles['skipping_ideal']:,.0f}, "
        f"with lane imbalance {cycles['skipping_imbalanced']:,.0f}",
        f"total energy  dense {total['energy_pj']['dense'] / 1e6:.3f} uJ, gating "
        f"{total['energy_pj']['gating'] / 1e6:.3f} uJ, skipping {total['energy_pj']['skipping'] / 1e6:.3f} uJ",
        "not modelled: control logic, pipeline bubbles and stalls, DRAM row-buffer effects and bandwidth limits, "
        "static (leakage) power, on-chip interconnect, output writes of the last layer",
    ]
    return "\n".join(lines)
