"""Entry point: the click group, one module per subcommand, and one-line user errors."""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
import os
import re
import signal
import sys
import textwrap
import threading
from pathlib import Path
from typing import Iterator

import click

from edgefault import __version__
from edgefault.errors import EdgefaultError, os_error_line
from edgefault.text import printable

# Each subcommand lives in ``edgefault/cli/<name>_cmd.py`` as a click command called ``command``;
# listed here once, in the data-flow order that ``edgefault --help`` shows.
# click >= 8.2 raises this for a bare group; older clicks print the help themselves and exit 0.
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())
SUBCOMMAND_MODULES = ("train", "export", "eval", "cost", "inject", "campaign", "sharpness", "attack", "reproduce",
                      "mitigate")


# Domain messages name a setting in backticks, as the Python API spells it (`input_size`, `normalize=False`);
# on the command line each becomes its option: --input-size, and these few whose option has another name.
_SETTING = re.compile(r"`([a-z][a-z_]*(?:=False)?)`")
_OTHER_OPTION_NAMES = {"normalize=False": "--no-normalize", "act_formats": "--act-format", "map_out": "--map"}


def option_words(message: str) -> str:
    """A domain message in the command line's words: each `setting` it names becomes that setting's option.

    Example:
        >>> option_words("`normalize=False` feeds the data without mean/std; drop `mean`/`std` or it")
        '--no-normalize feeds the data without mean/std; drop --mean/--std or it'
        >>> option_words("`input_size` must be CxHxW")
        '--input-size must be CxHxW'
    """
    return _SETTING.sub(lambda m: _OTHER_OPTION_NAMES.get(m.group(1), "--" + m.group(1).replace("_", "-")), message)


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
        rows = [(name, _short_help(_help_text(name), limit)) for name in SUBCOMMAND_MODULES]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _short_help(text: str, limit: int) -> str:
    """The first sentence of ``text`` on one line, cut at a word to ``limit`` characters (click's own is deprecated).

    Example:
        >>> _short_help("Train a model.  More words here.", 40)
        'Train a model.'
        >>> _short_help("Run a paired fault campaign over many chips and rates", 30)
        'Run a paired fault campaign...'
    """
    words = " ".join(text.split("\n\n")[0].split())
    sentence = re.split(r"(?<=\.) ", words, maxsplit=1)[0]
    return textwrap.shorten(sentence, limit, placeholder="...")


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


# eval "$(_EDGEFAULT_COMPLETE=bash_source edgefault)" (zsh_source, fish_source): click's completion protocol.
COMPLETE_VARIABLE = "_EDGEFAULT_COMPLETE"


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; user errors become ``edgefault: error: ...`` on stderr and exit status 2.

    SIGTERM is handled as SIGINT (:func:`terminate_as_interrupt`): temporaries are cleaned up,
    one line says so, and the exit status is 130. With no arguments the usage and the command
    list go to stderr and the exit status is 2, as click does for a group.

    Example:
        >>> main(["eval", "missing.onnx"])  # one line on stderr: the file does not exist
        Traceback (most recent call last):
        ...
        SystemExit: 2
    """
    args = sys.argv[1:] if argv is None else list(argv)
    if argv is None and COMPLETE_VARIABLE in os.environ:
        cli.main(prog_name="edgefault", complete_var=COMPLETE_VARIABLE)  # click's shell completion: prints, exits
    try:
        with terminate_as_interrupt():
            # make_context + invoke rather than cli.main: click's main prints a blank line on an interrupt.
            with cli.make_context("edgefault", args) as ctx:
                code = cli.invoke(ctx)
    except _NO_ARGS_IS_HELP as exc:  # bare ``edgefault``: the usage and command list, intact
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:  # --help, --version
        sys.exit(exc.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("edgefault: error: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:  # usage errors, bad option values, missing files
        _fail(exc.format_message())
    except EdgefaultError as exc:
        _fail(option_words(str(exc)))
    except OSError as exc:  # a missing input, a read-only folder, a full disk, a file size limit
        _fail(os_error_line(exc))
    except MemoryError:
        _fail(out_of_memory_line(args))
    sys.exit(code if isinstance(code, int) else 0)


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises KeyboardInterrupt in this process, as SIGINT does.

    Every ``finally`` and ``output_folder`` cleanup then runs as for Ctrl-C. Other threads and
    child processes are not affected (a forked child falls back to the default action).

    Example:
        >>> with terminate_as_interrupt():
        ...     pass
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    owner = os.getpid()

    def interrupt(signum, frame):
        if os.getpid() != owner:  # a forked child: terminate as it would have
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def out_of_memory_line(args: list[str]) -> str:
    """The out-of-memory message, with advice that fits the command that ran.

    Example:
        >>> out_of_memory_line(["inject", "m.onnx", "--rate", "0.5"])
        'out of memory; try a lower --rate or --count, or more memory'
        >>> out_of_memory_line(["eval", "m.onnx"])
        'out of memory; try a smaller --batch-size or --limit'
    """
    command = next((a for a in args if a in SUBCOMMAND_MODULES), None)
    advice = {
        "inject": "a lower --rate or --count, or more memory",
        "export": "a smaller --limit, or more memory",
        "campaign": "fewer --workers, a smaller --cache-mb or --limit",
        "train": "a smaller --batch-size",
        "sharpness": "a smaller --batch-size or --samples",
    }.get(command, "a smaller --batch-size or --limit")
    if any(a.startswith(("--map-in", "--data", "--voltage-curve")) for a in args):
        advice += " (and check that the input files are what they should be)"
    return f"out of memory; try {advice}"


def _fail(message: str) -> None:
    line = printable(" ".join(message.split()))  # always one line, control characters from files made visible
    click.echo(f"edgefault: error: {line}", err=True)
    sys.exit(2)


if __name__ == "__main__":
    main()
