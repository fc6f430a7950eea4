"""``edgefault mitigate``: train the mitigations side by side, one paired campaign, a leaderboard."""

from __future__ import annotations

import click

from edgefault.campaign.run import ExecutionSettings
from edgefault.cli.options import MAX_PARALLEL, MAX_STEPS, Count, data_option, option_errors, seed_option, seeds_option
from edgefault.mitigate.config import METHODS, MitigateConfig
from edgefault.mitigate.pipeline import run_mitigate
from edgefault.mitigate.report import scope_line, tolerable_text
from edgefault.mitigate.voltage import read_voltage_curve


@click.command(help="Train each mitigation (QAT, SAM, SAQ, weight clipping, RandBET, their combinations, learned "
                    "clipping; ECC on the QAT model) on one architecture, export them, run one paired campaign "
                    "and write DIR/leaderboard.{json,csv,md} and plots.")
@data_option
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Study folder (reused when rerun).")
@click.option("--model", "model_name", default="lenet5", show_default=True, help="Architecture.")
@click.option("--methods", default=",".join(METHODS), show_default=True, metavar="LIST",
              help="Comma-separated mitigations.")
@click.option("--quick", is_flag=True, help="Fewer epochs, rates and chips: minutes instead of the full profile.")
@click.option("--epochs", type=Count(1, MAX_STEPS), default=None, help="Override the profile's epochs.")
@click.option("--chips", type=Count(1, MAX_STEPS), default=None, help="Override the profile's chips per (kind, rate).")
@click.option("--voltage-curve", type=click.Path(dir_okay=False), default=None, metavar="CSV",
              help="Columns voltage, bit_error_rate, relative_energy: adds the lowest voltage and energy saved.")
@click.option("--workers", type=Count(1, MAX_PARALLEL), default=None,
              help="Local campaign workers [default: one per core].")
@click.option("--ray", "ray_address", default=None, metavar="ADDRESS",
              help="Run trainings and campaign cells as Ray tasks: auto or HOST:PORT.")
@seed_option
@seeds_option
def command(data_spec, out, model_name, methods, quick, epochs, chips, voltage_curve, workers, ray_address, seed,
            seeds):
    config = MitigateConfig(data=data_spec, model=model_name, quick=quick, seed=seed, seeds=seeds or 1, epochs=epochs,
                            chips=chips,
                            methods=tuple(m.strip() for m in methods.split(",") if m.strip()))
    curve = None if voltage_curve is None else read_voltage_curve(voltage_curve)  # checked before any work
    with option_errors({"workers": "--workers", "ray": "--ray"}):
        execution = ExecutionSettings(workers=workers, ray=ray_address, progress=True)
    result = run_mitigate(config, out, execution, curve)
    board = result.board
    kind = board["headline_kind"]
    for row in board["methods"]:
        click.echo(f"{row['method']:<13} clean {100 * row['clean_accuracy']:5.1f}%  tolerable {kind} BER (1 pt) "
                   f"{tolerable_text(row['kinds'][kind]['tolerable']['1'])}  "
                   f"train x{row['train_time_relative']:.2f}  storage +{100 * row['storage_overhead']:.1f}%")
    click.echo(scope_line(config.seeds))
    click.echo(f"winner: {board['winner']}; leaderboard: {out}/leaderboard.md")
