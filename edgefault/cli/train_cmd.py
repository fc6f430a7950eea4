"""``edgefault train``: train a quantization-aware, optionally activation-sparse and sharpness-aware model."""

from __future__ import annotations

import click

from edgefault.cli.options import MAX_BATCH, MAX_STEPS, Count, Finite, data_option, seed_option
from edgefault.models import available_models
from edgefault.train import SHARPNESS_METHODS, TrainConfig, train
from edgefault.train.config import OPTIMIZERS
from edgefault.train.run_dir import check_run_dir

_defaults = TrainConfig()


@click.command(help="Train a quantization-aware CNN and write a run directory (checkpoint, config.json, metrics.json).")
@click.option("--model", "model_name", default=_defaults.model, show_default=True,
              type=click.Choice(available_models()), help="Architecture.")
@data_option
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run directory to write.")
@click.option("--epochs", default=_defaults.epochs, show_default=True, type=Count(1, MAX_STEPS))
@click.option("--batch-size", default=_defaults.batch_size, show_default=True, type=Count(1, MAX_BATCH))
@click.option("--optimizer", default=_defaults.optimizer, show_default=True, type=click.Choice(OPTIMIZERS))
@click.option("--lr", default=_defaults.lr, show_default=True, type=Finite(), help="Peak learning rate (one-cycle).")
@click.option("--weight-decay", default=_defaults.weight_decay, show_default=True, type=Finite())
@click.option("--wbits", default=_defaults.wbits, show_default=True, type=int, help="Weight bits (2..8).")
@click.option("--abits", default=_defaults.abits, show_default=True, type=int, help="Activation bits (2..8).")
@click.option("--fat-threshold", default=_defaults.fat_threshold, show_default=True, type=Finite(),
              help="FATReLU threshold T (0 = plain ReLU).")
@click.option("--act-l1", default=_defaults.act_l1, show_default=True, type=Finite(),
              help="Weight of the L1 penalty on post-activation outputs.")
@click.option("--sharpness", default=_defaults.sharpness, show_default=True, type=click.Choice(SHARPNESS_METHODS))
@click.option("--rho", default=None, type=Finite(), help="Perturbation radius [default: sam/saq 0.05, asam 0.5].")
@click.option("--no-augment", is_flag=True, help="Train without random crops/flips.")
@click.option("--device", default=_defaults.device, show_default=True, help="auto, cpu or cuda[:N].")
@click.option("--weight-clip", default=_defaults.weight_clip, show_default=True, type=Finite(), metavar="W",
              help="Keep every deployed (BatchNorm-folded) weight within [-W, W]; 0 = off.")
@click.option("--weight-clip-per-layer", is_flag=True,
              help="Read --weight-clip as a share of each layer's initial range.")
@click.option("--randbet-rate", default=_defaults.randbet_rate, show_default=True, type=Finite(), metavar="P",
              help="Random bit error training at bit error rate P; 0 = off.")
@click.option("--randbet-clamp", default=_defaults.randbet_clamp, show_default=True, type=Finite(),
              help="Elementwise clamp on RandBET's bit-error gradient.")
@click.option("--randbet-loss-threshold", default=_defaults.randbet_loss_threshold, show_default=True, type=Finite(),
              help="Start injecting once the clean training loss is below this (0 = from the start).")
@click.option("--learned-clip", is_flag=True, help="Learn a clipping range per layer (WCAT-style).")
@click.option("--learned-clip-decay", default=_defaults.learned_clip_decay, show_default=True, type=Finite(),
              help="Decay pulling the learned ranges down.")
@seed_option
@click.option("--overwrite", is_flag=True, help="Replace a run already in --out that has other settings.")
def command(model_name, data_spec, out, epochs, batch_size, optimizer, lr, weight_decay, wbits, abits,
            fat_threshold, act_l1, sharpness, rho, no_augment, device, weight_clip, weight_clip_per_layer,
            randbet_rate, randbet_clamp, randbet_loss_threshold, learned_clip, learned_clip_decay, seed,
            overwrite):
    config = TrainConfig(model=model_name, data=data_spec, epochs=epochs, batch_size=batch_size,
                         optimizer=optimizer, lr=lr, weight_decay=weight_decay, wbits=wbits, abits=abits,
                         fat_threshold=fat_threshold, act_l1=act_l1, sharpness=sharpness, rho=rho,
                         augment=not no_augment, seed=seed, device=device, weight_clip=weight_clip,
                         weight_clip_per_layer=weight_clip_per_layer, randbet_rate=randbet_rate,
                         randbet_clamp=randbet_clamp, randbet_loss_threshold=randbet_loss_threshold,
                         learned_clip=learned_clip, learned_clip_decay=learned_clip_decay)
    existing = check_run_dir(out, config, overwrite)  # before any work: refuse what must not be replaced
    if existing is not None:
        click.echo(f"{out} already holds this run (test accuracy {existing.get('test_accuracy')}); nothing to do "
                   "(--overwrite retrains it)")
        return
    _, metrics = train(config, out)
    click.echo(f"test accuracy {metrics['test_accuracy']:.4f}  activation sparsity "
               f"{metrics['activation_sparsity']['overall']:.3f}  ({metrics['train_seconds']:.0f} s on "
               f"{metrics['device']})  -> {out}")
