"""``edgefault campaign``: models x fault kinds x rates x chips, paired, resumable, with statistics and plots."""

from __future__ import annotations

import sys

import click

from edgefault.campaign.config import DEFAULT_CHIPS, DEFAULT_KINDS, DEFAULT_RATES, CampaignConfig
from edgefault.campaign.report import final_text
from edgefault.campaign.run import ExecutionSettings, run_campaign
from edgefault.campaign.sites import parse_formats, parse_sites
from edgefault.campaign.suffix import DEFAULT_CACHE_MB
from edgefault.cli.options import (BITS, KINDS, MAX_PARALLEL, MAX_SEED, MAX_STEPS, RATES, Count, Finite,
                                   accelerator_option, data_option, include_bias_option, json_option, limit_option, option_errors,
                                   preprocessing_options, stored_bits_option)
from edgefault.cost import load_accelerator
from edgefault.errors import EdgefaultError
from edgefault.faults.discover import coverage_line, warning_lines
from edgefault.fileio import to_json
from edgefault.text import printable


@click.command()
@click.argument("models", nargs=-1, metavar="MODEL.onnx...")
@data_option
@click.option("--out", required=True, metavar="DIR", help="Campaign folder (created; rerun the same command to resume).")
@click.option("--kinds", type=KINDS, default=",".join(DEFAULT_KINDS), show_default=True, metavar="LIST",
              help="Fault kinds: flip, sa0, sa1, stuck, mbu.")
@click.option("--rates", type=RATES, default=",".join(f"{r:g}" for r in DEFAULT_RATES), show_default=True,
              metavar="LIST",
              help="Fault rates in [0, 1]: the probability that each stored bit (weight or activation) is faulty.")
@click.option("--chips", default=DEFAULT_CHIPS, show_default=True, type=Count(1, MAX_STEPS),
              help="Chips (fault patterns) per kind and rate; the same chips for every model.")
@click.option("--seed", default=0, show_default=True, type=Count(0, MAX_SEED),
              help="Campaign seed (chip seeds derive from it).")
@click.option("--workers", type=Count(1, MAX_PARALLEL), default=None,
              help="Local worker processes [default: one per core]; with --ray, the number of Ray actors.")
@click.option("--ray", "ray_address", default=None, metavar="ADDRESS",
              help="Run the cells on Ray: auto (a local cluster, started if none runs) or HOST:PORT.")
@click.option("--per-layer", is_flag=True, help="Also inject into one weight tensor at a time (layer heatmap).")
@click.option("--per-bit", is_flag=True, help="Also inject into one bit position at a time (bit heatmap).")
@click.option("--target-ci", type=Finite(), default=None, metavar="W",
              help="Add chips per kind and rate until every 95% interval is within +/- W (--chips: the maximum).")
@click.option("--cache-mb", type=Finite(float32=False), default=DEFAULT_CACHE_MB, show_default=True, metavar="MB",
              help="Per worker: clean activations cached at cuts for suffix evaluation (0: whole model every cell).")
@click.option("--protect-bits", type=BITS, default=None, metavar="LIST",
              help="ECC: drop every fault on these bit positions (e.g. 7, the sign); its SEC-DED cost is reported.")
@click.option("--sites", default="weights", show_default=True, metavar="LIST",
              help="Memories to fault: weights, activations (or all); activation cells use the same chips.")
@click.option("--act-format", "act_formats", default="dense", show_default=True, metavar="LIST",
              help="How activation buffers store a tensor: dense, bitmap, rle (several: one set of cells each).")
@click.option("--transient", is_flag=True,
              help="Activation faults drawn afresh for every image (default: permanent cells, the same for all).")
@click.option("--cost", is_flag=True,
              help="Also record per cell each kernel's input density and the modelled cycles and energy of the faulty "
                   "chip on a zero-skipping accelerator (docs/cost-model.md); the summary gives the change from clean.")
@accelerator_option
@include_bias_option
@stored_bits_option
@limit_option
@preprocessing_options
@json_option
def command(models, data_spec, out, kinds, rates, chips, seed, workers, ray_address, per_layer, per_bit, target_ci,
            cache_mb, protect_bits, sites, act_formats, transient, cost, accelerator_file, include_bias, stored_bits,
            limit, input_size, layout, mean, std, scale, no_normalize, as_json):
    """Measure accuracy of MODEL.onnx... on the test split of --data under memory faults.

    Every model meets the same chips (fault addresses), so differences between models are
    paired; with --sites weights,activations the activation buffers meet the same chips too.
    Results stream to DIR/results.jsonl; rerunning the same command resumes. At the end DIR
    holds summary.json/.csv/.md (mean, std, 95% CI, drop from clean, paired differences) and
    plots.

    Example: edgefault campaign a.onnx b.onnx --out runs/ab --kinds flip --rates 1e-3,1e-2 --chips 10
    """
    if accelerator_file is not None and not cost:
        raise EdgefaultError("--accelerator describes the device --cost models; add --cost")
    accelerator = load_accelerator(accelerator_file).to_dict() if cost else None
    config = CampaignConfig.create(
        models, data=data_spec, kinds=kinds, rates=rates, chips=chips, seed=seed,
        per_layer=per_layer, per_bit=per_bit, limit=limit, input_size=input_size, mean=mean, std=std,
        layout=layout, scale=scale, normalize=not no_normalize,
        protect_bits=protect_bits or (),
        include_bias=include_bias, stored_bits=stored_bits, target_ci=target_ci, sites=parse_sites(sites),
        act_formats=parse_formats(act_formats), transient=transient, accelerator=accelerator,
    )
    with option_errors({"workers": "--workers", "ray": "--ray", "cache_mb": "--cache-mb"}):
        execution = ExecutionSettings(workers=workers, ray=ray_address, progress=not as_json, cache_mb=cache_mb)
    result = run_campaign(config, out, execution)
    for model in result.models:  # what each weight memory covered (campaigns from before coverage have none)
        for line in warning_lines(model.get("coverage", {"skipped": []})):
            click.echo(f"{printable(model['name'])}: {line}", err=True)
    if as_json:
        sys.stdout.write(to_json(result.to_dict()) + "\n")
        return
    click.echo(final_text(result.summary))
    click.echo("\n" + "\n".join(f"input of {printable(model['name'])}: "
                                  f"{printable(model.get('feed', 'not recorded'))}"
                                  for model in result.models))
    click.echo("\n".join(f"{printable(model['name'])}: {coverage_line(model['coverage'])}"
                         for model in result.models if "coverage" in model))
    click.echo("\n".join(f"{printable(model['name'])}: {model['activations']['coverage']}"
                         for model in result.models if "activations" in model))
    if config.protect_bits:
        click.echo(f"\nECC: {result.ecc.describe()} (faults on protected bits are dropped, as the code would correct them)")
    click.echo(f"\n{result.ran} cells run, {result.resumed} already done ({result.engine}, {result.seconds:.1f} s); "
               f"wrote {printable(result.folder)}/summary.md, summary.json, summary.csv and plots")
