"""``edgefault campaign``: models x fault kinds x rates x chips, paired, resumable, with statistics and plots."""

from __future__ import annotations

import sys

import click

from edgefault.campaign.config import DEFAULT_CHIPS, DEFAULT_KINDS, DEFAULT_RATES, CampaignConfig, parse_kinds, parse_rates
from edgefault.campaign.report import final_text
from edgefault.campaign.run import ExecutionSettings, run_campaign
from edgefault.cli.options import data_option, json_option, limit_option, preprocessing_options
from edgefault.fileio import to_json


@click.command()
@click.argument("models", nargs=-1, metavar="MODEL.onnx...")
@data_option
@click.option("--out", required=True, metavar="DIR", help="Campaign folder (created; rerun the same command to resume).")
@click.option("--kinds", default=",".join(DEFAULT_KINDS), show_default=True, metavar="LIST",
              help="Fault kinds: flip, sa0, sa1, stuck, mbu.")
@click.option("--rates", default=",".join(f"{r:g}" for r in DEFAULT_RATES), show_default=True, metavar="LIST",
              help="Fault rates in [0, 1]: the probability that each weight bit is faulty.")
@click.option("--chips", default=DEFAULT_CHIPS, show_default=True, type=int,
              help="Chips (fault patterns) per kind and rate; the same chips for every model.")
@click.option("--seed", default=0, show_default=True, type=int, help="Campaign seed (chip seeds derive from it).")
@click.option("--workers", type=int, default=None,
              help="Local worker processes [default: one per core]; with --ray, the number of Ray actors.")
@click.option("--ray", "ray_address", default=None, metavar="ADDRESS",
              help="Run the cells on Ray: auto (a local cluster, started if none runs) or HOST:PORT.")
@click.option("--per-layer", is_flag=True, help="Also inject into one weight tensor at a time (layer heatmap).")
@click.option("--per-bit", is_flag=True, help="Also inject into one bit position at a time (bit heatmap).")
@limit_option
@preprocessing_options
@json_option
def command(models, data_spec, out, kinds, rates, chips, seed, workers, ray_address, per_layer, per_bit, limit,
            input_size, mean, std, as_json):
    """Measure accuracy of MODEL.onnx... on the test split of --data under weight-memory faults.

    Every model meets the same chips (fault addresses), so differences between models are
    paired. Results stream to DIR/results.jsonl; rerunning the same command resumes. At the
    end DIR holds summary.json/.csv/.md (mean, std, 95% CI, drop from clean, paired
    differences) and plots.

    Example: edgefault campaign a.onnx b.onnx --out runs/ab --kinds flip --rates 1e-3,1e-2 --chips 10
    """
    config = CampaignConfig.create(
        models, data=data_spec, kinds=parse_kinds(kinds), rates=parse_rates(rates), chips=chips, seed=seed,
        per_layer=per_layer, per_bit=per_bit, limit=limit, input_size=input_size, mean=mean, std=std,
    )
    execution = ExecutionSettings(workers=workers, ray=ray_address, progress=not as_json)
    result = run_campaign(config, out, execution)
    if as_json:
        sys.stdout.write(to_json(result.to_dict()) + "\n")
        return
    click.echo(final_text(result.summary))
    click.echo(f"\n{result.ran} cells run, {result.resumed} already done ({result.engine}, {result.seconds:.1f} s); "
               f"wrote {result.folder}/summary.md, summary.json, summary.csv and plots")
