"""``edgefault eval``: accuracy, activation sparsity, MAC skip, timing and kernel counts of an ONNX model."""

from __future__ import annotations

import sys

import click

from edgefault.cli.options import (MAX_BATCH, MAX_PARALLEL, Count, data_option, json_option, limit_option,
                                   preprocessing_options)
from edgefault.faults.discover import memory_report
from edgefault.fileio import to_json
from edgefault.runtime.evaluate import EvalOptions, evaluate_model
from edgefault.runtime.inputs import InputOptions
from edgefault.runtime.report import format_report
from edgefault.runtime.session import DEFAULT_BATCH, SessionSettings
from edgefault.runtime.timing import TimingSettings


@click.command()
@click.argument("model", metavar="MODEL.onnx")
@data_option
@limit_option
@json_option
@click.option(
    "--show-graph", is_flag=True, help="List the op counts of the graph ONNX Runtime runs after optimization."
)
@preprocessing_options
@click.option(
    "--threads", type=Count(0, MAX_PARALLEL), default=0, show_default=True,
    help="Intra-op threads per session (0: ONNX Runtime's default, one per core).",
)
@click.option(
    "--batch-size", type=Count(1, MAX_BATCH), default=DEFAULT_BATCH, show_default=True,
    help="Images per run on the accuracy and sparsity passes.",
)
@click.option("--no-timing", is_flag=True, help="Skip the latency and throughput runs.")
def command(model, data_spec, limit, as_json, show_graph, input_size, layout, mean, std, scale, no_normalize, threads,
            batch_size, no_timing):
    """Evaluate MODEL.onnx on the test split of --data with ONNX Runtime on the CPU.

    Reports top-1 accuracy, per-tensor activation sparsity (share of quantized values equal
    to the zero point), the share of multiply-accumulates whose activation input is zero,
    latency at batch 1 and throughput at batch 256, and how many conv/linear kernels run as
    integer kernels after ONNX Runtime's graph optimization.

    Any classification model: images (NCHW or NHWC), feature vectors [N, F] or sequences
    [N, T, F]; float, uint8 or int8 inputs. The data is fed as stored (uint8 images scaled
    by 1/255, float data never unless --scale); one line says what was decided. Models
    without edgefault metadata that take images need --mean and --std, or --no-normalize.

    Example: edgefault eval quant.onnx --data npz:nhwc.npz --mean 0 --std 1
    """
    options = EvalOptions(
        limit=limit,
        batch_size=batch_size,
        session=SessionSettings(intra_op_threads=threads),
        timing=None if no_timing else TimingSettings(),
        progress=not as_json,
        inputs=InputOptions(input_size, mean, std, layout, scale, normalize=not no_normalize),
    )
    report = evaluate_model(model, data_spec, options=options)
    memory, memory_lines = memory_report(model)  # what inject and campaign would fault in this model
    if as_json:
        sys.stdout.write(to_json({**report.to_dict(), "weight_memory": memory}) + "\n")
    else:
        click.echo(format_report(report, show_graph=show_graph))
        click.echo("\n".join(memory_lines))
