"""Entry point: the click group, one module per subcommand, and one-line user errors."""

from __future__ import annotations

import importlib
import sys

import click

from edgefault import __version__
from edgefault.errors import EdgefaultError

# Each subcommand lives in ``edgefault/cli/<name>_cmd.py`` as a click command called ``command``;
# listed here once, in the data-flow order that ``edgefault --help`` shows.
SUBCOMMAND_MODULES = ("train", "export", "eval", "inject", "campaign", "sharpness", "reproduce")


class _LazyGroup(click.Group):
    """Imports a subcommand's module only when that subcommand runs (torch takes seconds to import)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(SUBCOMMAND_MODULES)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in SUBCOMMAND_MODULES:
            return None
        return importlib.import_module(f"edgefault.cli.{name}_cmd").command


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgefault")
def cli() -> None:
    """Train sparse quantized CNNs, export int8 ONNX, inject memory faults, measure accuracy."""


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
