"""``edgefault reproduce``: the paper's experiment on one dataset, with a report."""

from __future__ import annotations

import click

from edgefault.cli.options import MAX_STEPS, Count, data_option, seed_option
from edgefault.study import StudyConfig, run_study


@click.command(help="Train standard and activation-sparse models (conventional and SAQ), export them, run a "
                    "paired fault campaign and the sharpness analysis, and write DIR/report.md.")
@data_option
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Study folder (reused when rerun).")
@click.option("--quick", is_flag=True, help="Fewer epochs, rates and chips: minutes instead of the full study.")
@click.option("--model", "model_name", default="lenet5", show_default=True, help="Architecture to study.")
@click.option("--with-sam", is_flag=True, help="Also train SAM variants (a fifth and sixth model).")
@click.option("--epochs", type=Count(1, MAX_STEPS), default=None, help="Override the profile's epochs.")
@click.option("--chips", type=Count(1, MAX_STEPS), default=None, help="Override the profile's chips per (kind, rate).")
@seed_option
def command(data_spec, out, quick, model_name, with_sam, epochs, chips, seed):
    config = StudyConfig(data=data_spec, model=model_name, quick=quick, with_sam=with_sam, seed=seed,
                         epochs=epochs, chips=chips)
    result = run_study(config, out)
    for number, verdict in result.verdicts.items():
        click.echo(f"claim {number}: {verdict}")
    click.echo(f"report: {result.report}")
