"""``edgefault attack``: the fewest chosen bit flips that break a run's deployed model (progressive bit search)."""

from __future__ import annotations

import sys

import click

from edgefault.attack import AttackSettings, attack_run
from edgefault.attack.config import MAX_BATCH, MAX_FLIPS
from edgefault.cli.options import MAX_IMAGES, MAX_PARALLEL, Count, json_option, seed_option
from edgefault.fileio import to_json

_defaults = AttackSettings()


@click.command(help="Adversarial bit flips: progressive bit search on a run's deployed int8 model, "
                    "each flip measured in ONNX Runtime.")
@click.argument("run_dir", metavar="RUN_DIR")
@click.option("--data", "data_spec", default=None, metavar="SPEC",
              help="Dataset: the attack batch comes from its training split, the accuracy from its test split "
                   "[default: the run's dataset].")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Folder for flips.json, attacked.onnx, accuracy_vs_flips.png and attack.json (new or empty).")
@click.option("--model", "model_path", default=None, metavar="MODEL.onnx",
              help="The run's deployed model [default: export the run afresh, written as clean.onnx].")
@click.option("--flips", default=_defaults.flips, show_default=True, type=Count(1, MAX_FLIPS),
              help="Most flips to commit.")
@click.option("--until", default=None, type=click.FloatRange(0, 1), metavar="ACC",
              help="Stop once ONNX Runtime's test accuracy is at or below ACC [default: chance + 1 point].")
@click.option("--batch", default=_defaults.batch, show_default=True, type=Count(1, MAX_BATCH),
              help="Attack-batch images, drawn from the training split.")
@seed_option
@click.option("--topk", default=_defaults.topk, show_default=True, type=Count(1, 1_000_000),
              help="Weights per layer ranked by gradient magnitude.")
@click.option("--tries", default=_defaults.tries, show_default=True, type=Count(1, 1000),
              help="Candidate ranks per layer tried on the actual loss before the search gives up.")
@click.option("--chips", default=_defaults.chips, show_default=True, type=Count(0, 1000),
              help="Random-flip chips per count for the contrast (0: none).")
@click.option("--limit", type=Count(1, MAX_IMAGES), default=None, help="Use only the first N test images.")
@click.option("--threads", default=0, show_default=True, type=Count(0, MAX_PARALLEL),
              help="ONNX Runtime threads (0: its choice).")
@json_option
def command(run_dir, data_spec, out, model_path, flips, until, batch, seed, topk, tries, chips, limit, threads,
            as_json):
    """Example: edgefault attack runs/std --out runs/std-attack --flips 100"""
    settings = AttackSettings(flips=flips, until=until, batch=batch, seed=seed, topk=topk, tries=tries,
                              chips=chips, limit=limit, threads=threads)
    result = attack_run(run_dir, data_spec, out, settings, model_path=model_path, progress=not as_json)
    if as_json:
        sys.stdout.write(to_json(result.to_dict()) + "\n")
    else:
        click.echo(result.summary)
        click.echo(f"  clean ORT accuracy {result.clean_accuracy:.1%}, target {result.target:.1%}; "
                   f"{result.weight_bits:,} stored weight bits; {result.seconds_per_iteration:.3f} s per search "
                   f"iteration ({result.seconds:.0f} s in all) -> {out}")
