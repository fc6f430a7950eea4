"""The readable ``edgefault eval`` report: aligned plain-text tables."""

from __future__ import annotations

from edgefault.runtime.evaluate import EvalReport
from edgefault.text import printable


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]], right: set[int]) -> list[str]:
    rows = [tuple(printable(cell) for cell in row) for row in rows]  # tensor and node names come from the file
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append("  " + "  ".join(cells).rstrip())
    return lines


def _percent(share: float) -> str:
    return f"{100 * share:.1f}%"


def format_report(report: EvalReport, show_graph: bool = False) -> str:
    """Render an :class:`EvalReport` as text; ``show_graph`` adds the optimized op counts.
    """
    lines = [
        f"model     {printable(report.model)}",
        f"data      {printable(report.dataset)}: {report.images} test samples, {report.num_classes} model classes",
        f"input     {printable(report.feed)}",
        f"accuracy  {_percent(report.accuracy)} top-1 ({report.correct}/{report.images})",
    ]
    meta = report.metadata
    if meta is not None:
        clean = "unknown" if meta.clean_accuracy is None else _percent(meta.clean_accuracy)
        lines.append(f"metadata  edgefault {printable(meta.version)}, w{meta.wbits}a{meta.abits}, trained on "
                     f"{printable(meta.dataset)}, "
                     f"recorded clean accuracy {clean}")
    sparsity = report.sparsity
    if sparsity is not None:
        lines += ["", "activation sparsity (share of quantized values equal to the zero point)"]
        if sparsity.activations:
            rows = [
                (a.tensor, a.producer, ",".join(map(str, a.zero_point)) if len(a.zero_point) < 4 else "per-channel",
                 f"{a.elements_per_image:,}", _percent(a.zero_share))
                for a in sparsity.activations
            ]
            lines += _table(("tensor", "computed by", "zero point", "values/image", "zeros"), rows, {2, 3, 4})
        elif sparsity.dynamic_quantizers:
            lines.append(f"  dynamic quantization: {sparsity.dynamic_quantizers} DynamicQuantizeLinear quantize "
                         "activations at run time, with a zero point per batch; no stored activation to count")
        elif report.kernels is not None and report.kernels.integer_kernels:
            lines.append("  no quantized activation tensor found")
        else:
            lines.append("  no quantized activations found (a float model?)")
        lines += ["", "MAC skip (multiply-accumulates whose activation input is zero; conv padding taps count as zero)"]
        if sparsity.layers:
            rows = [
                (layer.node, layer.op_type, layer.activation, f"{layer.macs_per_image:,.0f}",
                 _percent(layer.skip_share))
                for layer in sparsity.layers
            ]
            rows.append(("all layers", "", "", f"{sparsity.macs_per_image:,.0f}", _percent(sparsity.mac_skip_share)))
            lines += _table(("layer", "op", "activation input", "MACs/image", "skippable"), rows, {3, 4})
        elif sparsity.dynamic_quantizers:
            lines.append("  not measured: the activations are quantized at run time (dynamic quantization)")
        else:
            lines.append("  no conv/linear layer reads a quantized activation")
    timing = report.timing
    if timing is not None:
        threads = "ONNX Runtime default" if timing.threads == 0 else str(timing.threads)
        lines += [
            "",
            f"timing (intra-op threads: {threads})",
            f"  latency, batch 1         p50 {timing.latency_p50_ms:.3f} ms, p90 {timing.latency_p90_ms:.3f} ms "
            f"({timing.latency_runs} runs)",
            f"  throughput, batch {timing.throughput_batch:<5d}  {timing.throughput_images_per_s:,.0f} images/s "
            f"({timing.throughput_runs} runs)",
        ]
    kernels = report.kernels
    if kernels is not None:
        verdict = "all integer" if kernels.all_integer else ("no conv/linear" if not (
            kernels.integer_kernels or kernels.float_kernels) else "float kernels remain")
        if sparsity is not None and sparsity.dynamic_quantizers and kernels.integer_kernels:
            verdict += ", dynamic quantization"
        lines += ["", f"kernels after ONNX Runtime optimization: {kernels.integer_kernels} integer, "
                      f"{kernels.float_kernels} float conv/linear ({verdict})"]
        if show_graph:
            rows = [(op, str(count)) for op, count in sorted(kernels.ops.items(), key=lambda item: (-item[1], item[0]))]
            lines += _table(("op", "count"), rows, {1})
    return "\n".join(lines)
