"""Options shared by several subcommands, defined once so they keep one meaning everywhere."""

from __future__ import annotations

import click

data_option = click.option(
    "--data",
    "data_spec",
    default="mnist5k",
    show_default=True,
    metavar="SPEC",
    help="Dataset: mnist5k (built in), cifar10:PATH, cifar100:PATH, mnist:PATH, folder:PATH or npz:PATH.",
)
seed_option = click.option("--seed", default=0, show_default=True, type=int, help="Random seed.")
json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON object on stdout and nothing else there."
)
limit_option = click.option(
    "--limit", type=click.IntRange(min=1), default=None, help="Use only the first N test images."
)


def preprocessing_options(function):
    """Add --input-size/--mean/--std for ONNX models that carry no edgefault metadata.

    Example:
        >>> @preprocessing_options
        ... def command(input_size, mean, std): ...
    """
    function = click.option(
        "--std", default=None, metavar="LIST", help="Per-channel std for models without metadata, e.g. 0.3081."
    )(function)
    function = click.option(
        "--mean", default=None, metavar="LIST", help="Per-channel mean for models without metadata, e.g. 0.1307."
    )(function)
    function = click.option(
        "--input-size", default=None, metavar="CxHxW", help="Input shape for models without metadata, e.g. 1x28x28."
    )(function)
    return function
