"""Entry point: the click group, one module per subcommand, and one-line user errors."""

from __future__ import annotations

import importlib
import sys

import click

from edgefault import __version__
from edgefault.errors import EdgefaultError

# Each module defines one click command named like the module (``eval_cmd`` modules export
# ``command``). Listed here once so ``edgefault --help`` shows them in the data-flow order.
SUBCOMMAND_MODULES = ("train", "export", "eval", "inject", "campaign", "sharpness", "reproduce")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgefault")
def cli() -> None:
    """Train sparse quantized CNNs, export int8 ONNX, inject memory faults, measure accuracy."""


def _register_subcommands() -> None:
    for name in SUBCOMMAND_MODULES:
        module_name = f"edgefault.cli.{name}_cmd"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:  # that stage has not landed yet
                continue
            raise
        cli.add_command(module.command, name=name)


_register_subcommands()


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; user errors become ``edgefault: error: ...`` on stderr and exit status 2.

    Example:
        >>> main(["--version"])  # doctest: +SKIP
        edgefault, version 0.1.0
    """
    try:
        code = cli.main(args=argv, prog_name="edgefault", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("edgefault: error: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:  # usage errors, bad option values, missing files
        click.echo(f"edgefault: error: {exc.format_message()}", err=True)
        sys.exit(2)
    except (EdgefaultError, FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        message = str(exc) if isinstance(exc, EdgefaultError) else f"{exc.filename}: {exc.strerror}"
        click.echo(f"edgefault: error: {message}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("edgefault: error: interrupted", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
