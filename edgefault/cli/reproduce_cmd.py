"""``edgefault reproduce``: the paper's experiment on one dataset, with a report (one or several architectures)."""

from __future__ import annotations

from pathlib import Path

import click

from edgefault.cli.options import MAX_STEPS, Count, data_option, seed_option, seeds_option
from edgefault.errors import EdgefaultError
from edgefault.study import StudyConfig, run_studies, run_study
from edgefault.study.config import SWEEPS
from edgefault.study.multi import cross_scope
from edgefault.study.report import scope_text


@click.command(help="Train standard and activation-sparse models (conventional and SAQ), export them, run a "
                    "paired fault campaign and the sharpness analysis, and write DIR/report.md.")
@data_option
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Study folder (reused when rerun).")
@click.option("--quick", is_flag=True, help="Fewer epochs, rates and chips: minutes instead of the full study.")
@click.option("--model", "model_name", default="lenet5", show_default=True, help="Architecture to study.")
@click.option("--models", "model_list", default=None, metavar="A,B,C",
              help="Several architectures, one sub-folder each, and DIR/report.md across them (replaces --model).")
@click.option("--sweep", "sweeps", multiple=True, type=click.Choice(SWEEPS),
              help="Also sweep the sparsity level (FATReLU thresholds) or SAQ's rho; repeatable.")
@click.option("--with-sam", is_flag=True, help="Also train SAM variants (a fifth and sixth model).")
@click.option("--epochs", type=Count(1, MAX_STEPS), default=None, help="Override the profile's epochs.")
@click.option("--chips", type=Count(1, MAX_STEPS), default=None, help="Override the profile's chips per (kind, rate).")
@seed_option
@seeds_option
def command(data_spec, out, quick, model_name, model_list, sweeps, with_sam, epochs, chips, seed, seeds):
    models = [model_name] if model_list is None else [m.strip() for m in model_list.split(",")]
    if not all(models):
        raise EdgefaultError(f"--models takes a comma-separated list of architectures, got {model_list!r}")
    configs = [StudyConfig(data=data_spec, model=m, quick=quick, with_sam=with_sam, seed=seed, seeds=seeds,
                           epochs=epochs, chips=chips, sweeps=sweeps) for m in models]
    if model_list is None:
        result = run_study(configs[0], out)
        for number, verdict in result.verdicts.items():
            click.echo(f"claim {number}: {verdict}")
        for sweep in result.sweeps:
            click.echo(f"sweep {sweep.name}: {sweep.conclusion}")
    else:
        result = run_studies(configs, out)
        for model, study in result.studies.items():
            click.echo(f"{model}: " + ", ".join(f"claim {n} {v}" for n, v in study.verdicts.items()))
    click.echo(scope_text(configs[0], Path(out)) if model_list is None else cross_scope(configs))
    click.echo(f"report: {result.report}")
