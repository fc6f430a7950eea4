"""Entry point: the click group, one module per subcommand, and one-line user errors."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
from pathlib import Path

import click

from edgefault import __version__
from edgefault.errors import EdgefaultError, os_error_line

# Each subcommand lives in ``edgefault/cli/<name>_cmd.py`` as a click command called ``command``;
# listed here once, in the data-flow order that ``edgefault --help`` shows.
SUBCOMMAND_MODULES = ("train", "export", "eval", "cost", "inject", "campaign", "sharpness", "attack", "reproduce", "mitigate")


class _LazyGroup(click.Group):
    """Imports a subcommand's module only when that subcommand runs (torch takes seconds to import)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(SUBCOMMAND_MODULES)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in SUBCOMMAND_MODULES:
            return None
        return importlib.import_module(f"edgefault.cli.{name}_cmd").command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list of ``edgefault --help``, read from the modules' source without importing them."""
        limit = formatter.width - 6 - max(len(name) for name in SUBCOMMAND_MODULES)
        rows = [(name, click.utils.make_default_short_help(_help_text(name), limit)) for name in SUBCOMMAND_MODULES]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _help_text(name: str) -> str:
    """The help of ``edgefault/cli/<name>_cmd.py``'s ``command``: its ``help=`` or its docstring."""
    spec = importlib.util.find_spec(f"edgefault.cli.{name}_cmd")
    tree = ast.parse(Path(spec.origin).read_text())
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "command":
            commands = [d for d in node.decorator_list if isinstance(d, ast.Call)
                        and getattr(d.func, "attr", getattr(d.func, "id", None)) == "command"]
            for decorator in commands:
                for keyword in decorator.keywords:
                    if keyword.arg == "help" and isinstance(keyword.value, ast.Constant):
                        return keyword.value.value
            return ast.get_docstring(node) or ""
    return ""


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
        _fail(exc.format_message())
    except EdgefaultError as exc:
        _fail(str(exc))
    except OSError as exc:  # a missing input, a read-only folder, a full disk, a file size limit
        _fail(os_error_line(exc))
    except MemoryError:
        _fail("out of memory; try a smaller --batch-size or --limit")
    except KeyboardInterrupt:
        click.echo("edgefault: error: interrupted", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str) -> None:
    click.echo(f"edgefault: error: {' '.join(message.split())}", err=True)  # always one line
    sys.exit(2)


if __name__ == "__main__":
    main()
