"""What a model takes as input: its per-sample shape, layout, dtype and normalization.

The input spec comes from the model: its edgefault metadata, else its graph (the input's
static shape and dtype, and how the graph reads it); the preprocessing flags
(:class:`InputOptions`: ``--input-size``, ``--layout``, ``--mean``, ``--std``,
``--no-normalize``) fill in what the model does not say and override what it does.
How the data is then converted and fed is :mod:`edgefault.runtime.feed`'s part.

Inputs of rank 4 are images (NCHW or NHWC, see :mod:`edgefault.runtime.layout`); rank 2
are feature vectors ``[N, F]``, rank 3 sequences ``[N, T, F]`` (or ``[N, C, L]``). A float
image input of a model without metadata needs ``--mean``/``--std`` or ``--no-normalize``,
since a graph cannot tell its normalization; other inputs are fed as stored by default.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import onnx

from edgefault.errors import EdgefaultError
from edgefault.numbers import check_finite
from edgefault.runtime.layout import IMAGE_LAYOUTS, channel_index, shape_layout
from edgefault.runtime.modelio import ModelIO, model_io
from edgefault.runtime.metadata import ModelMetadata

UNDECIDED = "NCHW|NHWC"  # an image input whose layout neither the model nor a flag gives
SEQUENCE, FEATURES = "sequence", "features"
FLOAT_INPUTS = ("float32", "float16", "float64")


@dataclasses.dataclass(frozen=True)
class InputOptions:
    """The preprocessing flags of ``eval`` and ``campaign``, as given (strings, or None when not given).

    ``scale`` multiplies the data before normalization (``1/255``, ``0.5``); by default only
    uint8 image data is scaled (by 1/255). ``normalize=False`` feeds the data without any
    mean/std, the metadata's included.

    Example:
        >>> InputOptions(layout="NHWC", scale="1/255").scale_factor
        0.00392156862745098
        >>> InputOptions(mean="0.5", normalize=False)
        Traceback (most recent call last):
        ...
        edgefault.errors.EdgefaultError: `normalize=False` feeds the data without mean/std; drop `mean`/`std` or it
    """

    input_size: str | None = None
    mean: str | None = None
    std: str | None = None
    layout: str | None = None
    scale: str | None = None
    normalize: bool = True

    def __post_init__(self) -> None:
        if self.layout is not None:
            if not isinstance(self.layout, str) or self.layout.upper() not in IMAGE_LAYOUTS:
                raise EdgefaultError(f"`layout` must be nchw or nhwc, got {self.layout!r}")
            object.__setattr__(self, "layout", self.layout.upper())
        if not self.normalize and (self.mean is not None or self.std is not None):
            raise EdgefaultError("`normalize=False` feeds the data without mean/std; drop `mean`/`std` or it")
        if self.scale is not None:
            parse_scale(self.scale)

    @property
    def scale_factor(self) -> float | None:
        return None if self.scale is None else parse_scale(self.scale)


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """The data input of a model: name, one sample's shape, normalization, layout and dtype.

    ``shape`` holds None where the model leaves a size open, and is None altogether when
    the model declares no shape (the data's own is used). ``mean``/``std`` are empty when
    the data is fed without normalization. ``layout`` is ``NCHW``, ``NHWC``, ``NCHW|NHWC``
    (an image input of undecided layout), ``features``, ``sequence``, or ``""`` (unknown).

    Example:
        >>> InputSpec("input", (1, 28, 28), (0.1307,), (0.3081,), "flags").describe()
        '1x28x28 NCHW float'
    """

    name: str
    shape: tuple[int | None, ...] | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str  # where shape, layout and normalization came from: metadata, graph, flags, or a mix
    layout: str = "NCHW"
    dtype: str = "float32"

    @property
    def image(self) -> bool:
        return self.layout in (*IMAGE_LAYOUTS, UNDECIDED)

    @property
    def channels(self) -> int | None:
        index = channel_index(self.layout)
        return None if index is None or self.shape is None else self.shape[index]

    def describe(self) -> str:
        """``16x16x3 NHWC float``, ``20 features float``, ``?x10 sequence float``.

        Example:
            >>> InputSpec("x", (8, 32, 1), (), (), "graph", UNDECIDED).describe()
            '8x32x1 image (NCHW or NHWC) float'
        """
        shape = "?" if self.shape is None else format_shape(self.shape)
        layout = {UNDECIDED: "image (NCHW or NHWC)", "": "(no shape declared)"}.get(self.layout, self.layout)
        kind = "float" if self.dtype == "float32" else self.dtype
        return f"{shape} {layout} {kind}"


@dataclasses.dataclass(frozen=True, eq=False)
class PreparedInputs:
    """Test samples converted for one model input (its dtype and shape), their labels, and how they were made.
    """

    images: np.ndarray
    labels: np.ndarray
    description: str = ""

    def __len__(self) -> int:
        return len(self.labels)


def format_shape(shape: tuple[int | None, ...]) -> str:
    """``16x16x3``, with ``?`` for open sizes.

    Example:
        >>> format_shape((None, 10))
        '?x10'
    """
    return "x".join("?" if d is None else str(d) for d in shape)


def parse_input_size(text: str) -> tuple[int, ...]:
    """Parse ``1x28x28``, ``16x16x3``, ``10x16`` or ``20`` into positive ints (one sample's shape).

    Example:
        >>> parse_input_size("3x32x32")
        (3, 32, 32)
    """
    parts = text.lower().replace(",", "x").split("x")
    try:
        values = tuple(int(part) for part in parts)
    except ValueError:
        values = ()
    if not 1 <= len(values) <= 3 or min(values) < 1:
        raise EdgefaultError(f"`input_size` must be CxHxW, HxWxC, TxF or F with positive integers (e.g. 1x28x28), "
                             f"got {text!r}")
    return values


def parse_scale(text: str) -> float:
    """Parse a ``scale``: a positive number or a fraction such as ``1/255``.

    Example:
        >>> parse_scale("1/255") == 1 / 255, parse_scale("0.5")
        (True, 0.5)
    """
    numerator, _, denominator = str(text).partition("/")
    try:
        value = float(numerator) / (float(denominator) if denominator else 1.0)
    except (ValueError, ZeroDivisionError):
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise EdgefaultError(f"`scale` must be a positive number or fraction (e.g. 1/255), got {text!r}")
    return check_finite(value, "`scale`", positive=True, reciprocal=True)


def parse_float_list(text: str, setting: str, channels: int | None) -> tuple[float, ...]:
    """Parse ``0.1307`` or ``0.485,0.456,0.406`` (the ``mean`` or ``std`` setting); one value is used for every channel.

    ``channels`` None means the channel axis is unknown, so only one value is allowed.

    Example:
        >>> parse_float_list("0.5", "mean", 3)
        (0.5, 0.5, 0.5)
    """
    try:
        values = tuple(float(part) for part in text.replace(" ", "").split(","))
    except ValueError:
        raise EdgefaultError(f"`{setting}` must be a comma-separated list of numbers, got {text!r}") from None
    for value in values:  # std divides: its reciprocal must be finite in float32 too
        check_finite(value, f"`{setting}` values", positive=setting == "std", reciprocal=setting == "std")
    if len(values) == 1:
        return values * (channels or 1)
    if channels is None:
        raise EdgefaultError(f"`{setting}` has {len(values)} values but the model's channel count is not known; "
                             "give one value (or, for an image input, `layout` nchw or `layout` nhwc)")
    if len(values) != channels:
        wanted = "1 value" if channels == 1 else f"1 or {channels} values (one per channel)"
        raise EdgefaultError(f"`{setting}` needs {wanted}, got {len(values)}: {text!r}")
    return values


def resolve_model_input(model: onnx.ModelProto, options: InputOptions = InputOptions()):
    """Metadata, graph I/O and input spec of a loaded model: the one path ``eval`` and ``campaign`` share.
    """
    metadata = ModelMetadata.from_model(model)
    io = model_io(model, metadata.input_name if metadata else None)
    if metadata and io.num_classes and metadata.num_classes != io.num_classes:
        raise EdgefaultError(
            f"metadata says {metadata.num_classes} classes but output {io.output_name!r} has {io.num_classes}"
        )
    return metadata, io, resolve_input_spec(io, metadata, options=options)


def resolve_input_spec(
    io: ModelIO,
    metadata: ModelMetadata | None,
    input_size: str | None = None,
    mean: str | None = None,
    std: str | None = None,
    *,
    options: InputOptions | None = None,
) -> InputSpec:
    """Combine metadata, graph and flags into the model's input spec; one clear error when they do not add up.

    ``input_size``/``mean``/``std`` are shorthands for the same fields of ``options``.
    """
    options = options or InputOptions(input_size, mean, std)
    if metadata is not None and metadata.input_name != io.input_name:
        raise EdgefaultError(
            f"model metadata names input {metadata.input_name!r} but the graph's input is {io.input_name!r}"
        )
    declared = None if io.input_dims is None else tuple(io.input_dims[1:])
    shape = _shape(io, metadata, options, declared)
    layout = _layout(io, metadata, options, shape)
    if options.input_size is not None and declared is not None:
        _check_fits(io.input_name, shape, declared, layout)
    used = [v is not None for v in (options.input_size, options.mean, options.std, options.layout)]
    if io.input_type not in FLOAT_INPUTS:
        if options.mean is not None or options.std is not None or options.scale is not None:
            raise EdgefaultError(f"model input {io.input_name!r} takes {io.input_type} values, fed as stored; "
                                 "`mean`, `std` and `scale` apply to float inputs only")
        source = "flags" if any(used) else "graph"
        return InputSpec(io.input_name, shape, (), (), source, layout, io.input_type)
    mean_values, std_values = _normalization(io, metadata, options, shape, layout)
    if metadata is None:
        source = "flags" if mean_values or any(used) else "graph"
    else:
        source = "metadata+flags" if any(used) or not options.normalize else "metadata"
    return InputSpec(io.input_name, shape, mean_values, std_values, source, layout, io.input_type)


def _shape(io, metadata, options, declared):
    if options.input_size is not None:
        shape = parse_input_size(options.input_size)
        if declared is not None and len(shape) != len(declared):
            wanted = {3: "CxHxW (or HxWxC)", 2: "TxF", 1: "F"}[len(declared)]
            raise EdgefaultError(f"`input_size` must be {wanted} for model input {io.input_name!r} of rank "
                                 f"{len(declared) + 1}, got {options.input_size!r}")
        return shape
    if metadata is not None:
        return metadata.input_shape
    return declared


def _layout(io, metadata, options, shape) -> str:
    rank = None if shape is None else len(shape)
    if rank in (1, 2):
        if options.layout is not None:
            kind = "feature vectors" if rank == 1 else "sequences"
            raise EdgefaultError(f"`layout` applies to image inputs; model input {io.input_name!r} takes {kind} "
                                 f"({format_shape(shape)})")
        return FEATURES if rank == 1 else SEQUENCE
    if options.layout is not None:
        return options.layout
    if metadata is not None:
        return metadata.layout
    if shape is None:
        return ""
    return io.layout_hint or shape_layout(shape) or UNDECIDED


def _check_fits(name: str, shape, declared, layout) -> None:
    axes = {"NCHW": "CHW", "NHWC": "HWC", SEQUENCE: "TF", FEATURES: "F"}.get(layout, "123")
    for axis, want, have in zip(axes, shape, declared):
        if have is not None and have != want:
            raise EdgefaultError(
                f"input size {format_shape(shape)} does not fit the model's input {name!r} "
                f"({format_shape(declared)}): {axis} is {have}, not {want}"
            )


def _normalization(io, metadata, options, shape, layout) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if not options.normalize:
        return (), ()
    needs = layout not in (FEATURES, SEQUENCE)  # images, and inputs of undeclared shape
    if metadata is None and (options.mean is None) != (options.std is None):
        missing = "`std`" if options.std is None else "`mean`"
        raise EdgefaultError(f"model has no edgefault metadata; give {missing} too (`mean` and `std` go together)")
    if metadata is None and options.mean is None:
        if not needs:
            return (), ()
        what = "images" if shape is not None else "data of an undeclared shape"
        size = "" if shape is None else f", {format_shape(shape)}"
        raise EdgefaultError(
            f"model has no edgefault metadata; give `mean`, `std` (input {io.input_name!r} takes {what}{size}: "
            "e.g. `mean` 0.1307 `std` 0.3081), or `normalize=False` to feed the data as stored"
        )
    if layout in (FEATURES, SEQUENCE):
        channels = shape[-1]
    elif layout == "":
        channels = None
    else:
        index = channel_index(layout)
        channels = None if index is None else shape[index]
    mean = parse_float_list(options.mean, "mean", channels) if options.mean is not None else metadata.mean
    std = parse_float_list(options.std, "std", channels) if options.std is not None else metadata.std
    if channels is not None and (len(mean) != channels or len(std) != channels):
        raise EdgefaultError(f"mean and std need one value per channel ({channels}); pass `mean` and `std`")
    if min(std) <= 0:
        raise EdgefaultError(f"`std` values must be positive, got {std}")
    return tuple(mean), tuple(std)
