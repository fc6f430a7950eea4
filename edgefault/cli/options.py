"""Options shared by several subcommands, defined once so they keep one meaning everywhere."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import click

from edgefault.campaign.config import parse_kinds, parse_rates
from edgefault.errors import EdgefaultError
from edgefault.faults import parse_bits
from edgefault.numbers import MAX_STEPS, check_finite

# Upper bounds on counts from the user, checked when the command line is parsed, before anything starts.
MAX_PARALLEL = 256  # threads of a session, worker processes, Ray actors
MAX_IMAGES = 10_000_000  # --limit, --samples
MAX_BATCH = 65_536
MAX_SEED = 2**63 - 1


class Count(click.ParamType):
    """A whole number in [low, high]: the one option type for counts, sizes and seeds.

    Example:
        >>> Count(1, 256).convert("9999", click.Option(["--workers"]), None)
        Traceback (most recent call last):
        ...
        click.exceptions.UsageError: --workers must be a positive integer (at most 256), got 9999
    """

    name = "integer"

    def __init__(self, low: int = 1, high: int = MAX_STEPS) -> None:
        self.low, self.high = low, high

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> int:
        option = param.opts[0] if param is not None and getattr(param, "opts", None) else "the value"
        kind = {0: "a non-negative integer", 1: "a positive integer"}.get(self.low, f"an integer >= {self.low}")
        try:
            number = value if isinstance(value, int) and not isinstance(value, bool) else int(str(value).strip())
        except ValueError:
            number = None
        if number is None or not self.low <= number <= self.high:
            raise click.UsageError(f"{option} must be {kind} (at most {self.high:,}), got {value}", ctx)
        return number


def as_option(message: str, subject: str, option: str) -> str:
    """A domain message about setting ``subject`` worded for the command line's ``option``.

    Example:
        >>> as_option("rates must be numbers, got 'x'", "rates", "--rates")
        "--rates must be numbers, got 'x'"
        >>> as_option("unknown fault kind 'x'", "kinds", "--kinds")
        "--kinds: unknown fault kind 'x'"
    """
    if message.startswith(subject) and message[len(subject):len(subject) + 1] in (" ", ":"):
        return option + message[len(subject):]
    return f"{option}: {message}"


@contextlib.contextmanager
def option_errors(options: dict[str, str]) -> Iterator[None]:
    """Reword the user errors of settings built inside (setting name -> option) for the command line.

    Example:
        >>> with option_errors({"workers": "--workers"}):
        ...     raise EdgefaultError("workers must be a positive integer, got 0")
        Traceback (most recent call last):
        edgefault.errors.EdgefaultError: --workers must be a positive integer, got 0
    """
    try:
        yield
    except EdgefaultError as exc:
        message = str(exc)
        subject = next((name for name in options if message.startswith(name + " ")), None)
        if subject is None:
            raise
        raise EdgefaultError(as_option(message, subject, options[subject])) from None


class ListOf(click.ParamType):
    """A comma-separated list parsed by a domain function when the command line is parsed.

    Example:
        >>> RATES.convert("1e-3, 0.01", click.Option(["--rates"]), None)
        (0.001, 0.01)
        >>> BITS.convert("9-3", click.Option(["--bits"]), None)
        Traceback (most recent call last):
        ...
        click.exceptions.UsageError: --bits: empty range '9-3' in '9-3'
    """

    name = "list"

    def __init__(self, parse: Callable[[str], tuple], subject: str) -> None:
        self.parse, self.subject = parse, subject

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> tuple:
        if isinstance(value, tuple):  # a default already parsed
            return value
        option = param.opts[0] if param is not None and getattr(param, "opts", None) else self.subject
        try:
            return self.parse(str(value))
        except EdgefaultError as exc:
            raise click.UsageError(as_option(str(exc), self.subject, option), ctx) from None


KINDS = ListOf(parse_kinds, "kinds")
RATES = ListOf(parse_rates, "rates")
BITS = ListOf(parse_bits, "bits")


class Finite(click.ParamType):
    """A finite number (within float32's range unless ``float32=False``): the one option type for real numbers.

    ``low``/``high`` bound it further (inclusive); ``positive`` excludes 0.

    Example:
        >>> Finite().convert("1e39", click.Option(["--lr"]), None)
        Traceback (most recent call last):
        ...
        click.exceptions.UsageError: --lr must be a finite number within float32's range (|x| <= 3.4e+38), got '1e39'
    """

    name = "number"

    def __init__(self, low: float | None = None, high: float | None = None, positive: bool = False,
                 float32: bool = True) -> None:
        self.low, self.high, self.positive, self.float32 = low, high, positive, float32

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> float:
        option = param.opts[0] if param is not None and getattr(param, "opts", None) else "the value"
        try:
            float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a valid float.", param, ctx)
        try:
            number = check_finite(value, option, float32=self.float32, positive=self.positive)
        except EdgefaultError as exc:
            raise click.UsageError(str(exc), ctx) from None
        if (self.low is not None and number < self.low) or (self.high is not None and number > self.high):
            low = "-inf" if self.low is None else f"{self.low:g}"
            high = "inf" if self.high is None else f"{self.high:g}"
            raise click.UsageError(f"{option} must lie in [{low}, {high}], got {value}", ctx)
        return number


data_option = click.option(
    "--data",
    "data_spec",
    default="mnist5k",
    show_default=True,
    metavar="SPEC",
    help="Dataset: mnist5k (built in), cifar10:PATH, cifar100:PATH, mnist:PATH, folder:PATH or npz:PATH.",
)
seed_option = click.option("--seed", default=0, show_default=True, type=Count(0, MAX_SEED), help="Random seed.")
seeds_option = click.option(
    "--seeds", type=Count(1, 100), default=None, metavar="N",
    help="Training seeds per recipe (--seed, --seed + 1, ...), every model on the same chips; verdicts pool over "
         "them. A rerun with more seeds trains only the new ones. [default: the profile's]")
json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON object on stdout and nothing else there."
)
limit_option = click.option(
    "--limit", type=Count(1, MAX_IMAGES), default=None, help="Use only the first N test images."
)
stored_bits_option = click.option(
    "--stored-bits", type=click.IntRange(1, 8), default=None, metavar="K",
    help="The int8/uint8 weights hold K-bit codes (a foreign k-bit model): faults hit only K bits of each "
         "[default: from the model's metadata, else the type's width].",
)
accelerator_option = click.option(
    "--accelerator", "accelerator_file", default=None, metavar="FILE",
    help="Accelerator description (TOML) [default: the shipped 45 nm edge accelerator; docs/cost-model.md shows "
         "its entries].")
include_bias_option = click.option("--include-bias", is_flag=True, help="int32 biases join the weight memory.")


def preprocessing_options(function):
    """Add the input options of ``eval`` and ``campaign``: --input-size, --layout, --mean, --std, --scale, --no-normalize.

    The command receives them as ``input_size, layout, mean, std, scale, no_normalize``.

    Example:
        >>> @preprocessing_options
        ... def command(input_size, layout, mean, std, scale, no_normalize): ...
    """
    options = [
        click.option("--input-size", default=None, metavar="SHAPE",
                     help="One sample's shape where the model does not declare it: CxHxW, HxWxC, TxF or F."),
        click.option("--layout", type=click.Choice(["nchw", "nhwc"], case_sensitive=False), default=None,
                     help="Layout of an image input the model leaves ambiguous (e.g. N x 8 x 32 x 1)."),
        click.option("--mean", default=None, metavar="LIST",
                     help="Mean(s) subtracted after scaling: one value, or one per channel (features: last axis)."),
        click.option("--std", default=None, metavar="LIST", help="Std(s) divided by after the mean, e.g. 0.3081."),
        click.option("--scale", default=None, metavar="FACTOR",
                     help="Multiply the data by FACTOR first (e.g. 1/255) [default: 1/255 for uint8 images, "
                          "else 1: float data is fed as stored]."),
        click.option("--no-normalize", is_flag=True,
                     help="Feed the data without mean/std (models without metadata that take images need this "
                          "or --mean/--std)."),
    ]
    for option in reversed(options):
        function = option(function)
    return function
