"""``edgefault cost``: what a model's activation sparsity buys on a zero-skipping accelerator."""

from __future__ import annotations

import sys

import click

from edgefault import __version__
from edgefault.cli.options import (MAX_BATCH, Count, accelerator_option, data_option, json_option, limit_option,
                                   preprocessing_options)
from edgefault.cost import CostOptions, load_accelerator, model_cost
from edgefault.cost.plots import plot_bytes
from edgefault.cost.text import format_cost
from edgefault.fileio import check_output_folder, json_bytes, output_folder, to_json, write_files_atomic
from edgefault.runtime.inputs import InputOptions


@click.command()
@click.argument("model", metavar="MODEL.onnx")
@data_option
@accelerator_option
@click.option("--out", default=None, type=click.Path(file_okay=False),
              help="Also write cost.json, cost.txt and cost.png (per-layer speedup and energy) to this folder.")
@json_option
@limit_option
@click.option("--batch-size", type=Count(1, MAX_BATCH), default=256, show_default=True,
              help="Images per ONNX Runtime run (memory only).")
@preprocessing_options
def command(model, data_spec, accelerator_file, out, as_json, limit, batch_size, input_size, layout, mean, std, scale,
            no_normalize):
    """Model MODEL.onnx on a zero-skipping accelerator from its real integer activations.

    For every integer conv/linear layer and every test image: dense MACs (padding taps
    included) and MACs whose input is zero; cycles dense, with zero-gating, with zero-skipping
    ideal and with lane imbalance (lanes in groups wait for the busiest); the activation
    input's exact size as dense, bitmap and run-length buffers; weight traffic; and energy
    (45 nm, Horowitz ISSCC 2014, unless --accelerator says otherwise). Prints a per-layer
    table with totals; --json prints one object instead.

    Example: edgefault cost runs/sparse.onnx --data mnist5k --out cost/sparse
    """
    inputs = [model] + ([accelerator_file] if accelerator_file else [])
    if out is not None:
        check_output_folder(out, inputs)
    accelerator = load_accelerator(accelerator_file)
    options = CostOptions(limit=limit, batch_size=batch_size, progress=not as_json,
                          inputs=InputOptions(input_size, mean, std, layout, scale, normalize=not no_normalize))
    report = model_cost(model, data_spec, accelerator, options=options)
    document = {**report.to_dict(), "version": __version__}
    text = format_cost(report)
    if out is not None:
        with output_folder(out) as folder:
            write_files_atomic({folder / "cost.json": json_bytes(document), folder / "cost.txt": (text + "\n").encode(),
                                folder / "cost.png": plot_bytes(report)})
    if as_json:
        sys.stdout.write(to_json(document) + "\n")
    else:
        click.echo(text)
        if out is not None:
            click.echo(f"-> {out}: cost.json, cost.txt, cost.png")
