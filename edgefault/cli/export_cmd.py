"""``edgefault export RUN_DIR --out MODEL.onnx``: the int8 QDQ ONNX model of a trained run, self-checked."""

from __future__ import annotations

import collections

import click

from edgefault.cli.options import json_option, limit_option
from edgefault.export import ExportReport, ExportSettings, export_run
from edgefault.fileio import to_json

_defaults = ExportSettings()


def format_report(report: ExportReport) -> str:
    """The human-readable summary ``export`` prints.
    """
    steps = report.max_logit_gap_steps
    gap = "n/a (float logits)" if steps is None else f"{steps:g} step{'' if steps == 1 else 's'} of the output scale"
    kernels = ", ".join(f"{op} {count}" for op, count in sorted(report.op_counts.items(), key=lambda kv: -kv[1]))
    meta = report.metadata
    products = collections.Counter(report.activation_products.values())
    product_line = (["activation-by-activation products (attention): "
                     + ", ".join(f"{count} {op}" for op, count in sorted(products.items()))] if products else [])
    return "\n".join([
        f"wrote {report.path}: {report.weight_tensors} int8 weight tensors, {report.weight_bytes:,} weight bytes, "
        f"wbits {meta.wbits}, abits {meta.abits}",
        f"parity on {report.images} test images of {meta.dataset}: top-1 agreement {report.agreement:.2%}, "
        f"max logit gap {gap}",
        f"accuracy: ONNX Runtime {report.onnx_accuracy:.2%}, PyTorch {report.torch_accuracy:.2%}",
        f"after ONNX Runtime optimization: {report.integer_kernels} integer and {report.float_kernels} float "
        f"conv/linear kernels ({kernels})",
        *product_line,
    ])


@click.command(help="Export a trained run to an int8 QDQ ONNX model and check it against PyTorch.")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--out", required=True, metavar="MODEL.onnx", help="The ONNX file to write.")
@click.option("--data", "data_spec", default=None, metavar="SPEC",
              help="Dataset for the parity check  [default: the run's dataset].")
@limit_option
@click.option("--min-agreement", default=_defaults.min_agreement, show_default=True, type=click.FloatRange(0, 1),
              help="Least top-1 agreement with PyTorch.")
@click.option("--keep-on-parity-failure", is_flag=True,
              help="Write the file even if parity or the integer-kernel check fails (exit status 0, a warning).")
@json_option
def command(run_dir, out, data_spec, limit, min_agreement, keep_on_parity_failure, as_json):
    settings = ExportSettings(min_agreement=min_agreement, keep_on_parity_failure=keep_on_parity_failure,
                              limit=limit, progress=not as_json)
    report = export_run(run_dir, out, settings, data_spec=data_spec)
    for problem in report.problems:
        click.echo(f"edgefault: warning: kept {report.path} although {problem}", err=True)
    if as_json:
        click.echo(to_json(report.to_dict()))
    else:
        click.echo(format_report(report))
