"""``edgefault train``: train a quantization-aware, optionally activation-sparse and sharpness-aware model."""

from __future__ import annotations

import click

from edgefault.cli.options import data_option, seed_option
from edgefault.models import available_models
from edgefault.train import SHARPNESS_METHODS, TrainConfig, train
from edgefault.train.config import OPTIMIZERS

_defaults = TrainConfig()


@click.command(help="Train a quantization-aware CNN and write a run directory (checkpoint, config.json, metrics.json).")
@click.option("--model", "model_name", default=_defaults.model, show_default=True,
              type=click.Choice(available_models()), help="Architecture.")
@data_option
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run directory to write.")
@click.option("--epochs", default=_defaults.epochs, show_default=True, type=int)
@click.option("--batch-size", default=_defaults.batch_size, show_default=True, type=int)
@click.option("--optimizer", default=_defaults.optimizer, show_default=True, type=click.Choice(OPTIMIZERS))
@click.option("--lr", default=_defaults.lr, show_default=True, type=float, help="Peak learning rate (one-cycle).")
@click.option("--weight-decay", default=_defaults.weight_decay, show_default=True, type=float)
@click.option("--wbits", default=_defaults.wbits, show_default=True, type=int, help="Weight bits (2..8).")
@click.option("--abits", default=_defaults.abits, show_default=True, type=int, help="Activation bits (2..8).")
@click.option("--fat-threshold", default=_defaults.fat_threshold, show_default=True, type=float,
              help="FATReLU threshold T (0 = plain ReLU).")
@click.option("--act-l1", default=_defaults.act_l1, show_default=True, type=float,
              help="Weight of the L1 penalty on post-activation outputs.")
@click.option("--sharpness", default=_defaults.sharpness, show_default=True, type=click.Choice(SHARPNESS_METHODS))
@click.option("--rho", default=None, type=float, help="Perturbation radius [default: sam/saq 0.05, asam 0.5].")
@click.option("--no-augment", is_flag=True, help="Train without random crops/flips.")
@click.option("--device", default=_defaults.device, show_default=True, help="auto, cpu or cuda[:N].")
@seed_option
def command(model_name, data_spec, out, epochs, batch_size, optimizer, lr, weight_decay, wbits, abits,
            fat_threshold, act_l1, sharpness, rho, no_augment, device, seed):
    config = TrainConfig(model=model_name, data=data_spec, epochs=epochs, batch_size=batch_size,
                         optimizer=optimizer, lr=lr, weight_decay=weight_decay, wbits=wbits, abits=abits,
                         fat_threshold=fat_threshold, act_l1=act_l1, sharpness=sharpness, rho=rho,
                         augment=not no_augment, seed=seed, device=device)
    _, metrics = train(config, out)
    click.echo(f"test accuracy {metrics['test_accuracy']:.4f}  activation sparsity "
               f"{metrics['activation_sparsity']['overall']:.3f}  ({metrics['train_seconds']:.0f} s on "
               f"{metrics['device']})  -> {out}")
