"""What a model expects as input, and the test split prepared once to match it.

The input spec comes from the model's edgefault metadata or, for other models, from the
``--input-size``/``--mean``/``--std`` flags; a flag overrides the metadata's value. The
dataset is normalized once into :class:`PreparedInputs` and reused by every session
(a campaign scores thousands of faulty models on the same images).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from edgefault.data import Dataset
from edgefault.errors import EdgefaultError
from edgefault.runtime.loading import ModelIO
from edgefault.runtime.metadata import ModelMetadata


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """The image input of a model: tensor name, (C, H, W), and per-channel normalization.

    Example:
        >>> InputSpec("input", (1, 28, 28), (0.1307,), (0.3081,), "flags").channels
        1
    """

    name: str
    shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str  # "metadata", "flags" or "metadata+flags": where the values came from

    @property
    def channels(self) -> int:
        return self.shape[0]


@dataclasses.dataclass(frozen=True, eq=False)
class PreparedInputs:
    """Normalized float32 NCHW test images and their labels, ready to feed any session.

    Example:
        >>> prepared = prepare_inputs(data, spec, limit=100)  # doctest: +SKIP
        >>> prepared.images.shape
        (100, 1, 28, 28)
    """

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def parse_input_size(text: str) -> tuple[int, int, int]:
    """Parse ``CxHxW`` (e.g. ``1x28x28``) into a tuple of three positive ints.

    Example:
        >>> parse_input_size("3x32x32")
        (3, 32, 32)
    """
    parts = text.lower().replace(",", "x").split("x")
    try:
        values = tuple(int(part) for part in parts)
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) < 1:
        raise EdgefaultError(f"--input-size must be CxHxW with positive integers (e.g. 1x28x28), got {text!r}")
    return values  # type: ignore[return-value]


def parse_float_list(text: str, option: str, channels: int) -> tuple[float, ...]:
    """Parse ``0.1307`` or ``0.485,0.456,0.406``; one value is used for every channel.

    Example:
        >>> parse_float_list("0.5", "--mean", 3)
        (0.5, 0.5, 0.5)
    """
    try:
        values = tuple(float(part) for part in text.replace(" ", "").split(","))
    except ValueError:
        raise EdgefaultError(f"{option} must be a comma-separated list of numbers, got {text!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise EdgefaultError(f"{option} values must be finite, got {text!r}")
    if len(values) == 1:
        values = values * channels
    if len(values) != channels:
        wanted = "1 value" if channels == 1 else f"1 or {channels} values (one per channel)"
        raise EdgefaultError(f"{option} needs {wanted}, got {len(values)}: {text!r}")
    return values


def resolve_input_spec(
    io: ModelIO,
    metadata: ModelMetadata | None,
    input_size: str | None = None,
    mean: str | None = None,
    std: str | None = None,
) -> InputSpec:
    """Combine metadata and flags into the model's input spec; error when neither gives it.

    Without metadata, ``input_size`` may be left out when the graph declares a static
    C, H and W; ``mean`` and ``std`` are always needed, since a graph cannot tell them.

    Example:
        >>> resolve_input_spec(io, None, "1x28x28", "0.1307", "0.3081").mean  # doctest: +SKIP
        (0.1307,)
    """
    if metadata is not None and metadata.input_name != io.input_name:
        raise EdgefaultError(
            f"model metadata names input {metadata.input_name!r} but the graph's input is {io.input_name!r}"
        )
    if input_size is not None:
        shape = parse_input_size(input_size)
    elif metadata is not None:
        shape = metadata.input_shape
    elif io.input_dims is not None and all(d is not None for d in io.input_dims[1:]):
        shape = tuple(io.input_dims[1:])  # type: ignore[assignment]
    else:
        shape = None
    if metadata is None and (shape is None or mean is None or std is None):
        missing = [flag for flag, value in (("--input-size", shape), ("--mean", mean), ("--std", std)) if value is None]
        raise EdgefaultError(
            f"model has no edgefault metadata; give {', '.join(missing)} (e.g. --input-size 1x28x28 "
            "--mean 0.1307 --std 0.3081)"
        )
    channels = shape[0]
    mean_values = parse_float_list(mean, "--mean", channels) if mean is not None else metadata.mean
    std_values = parse_float_list(std, "--std", channels) if std is not None else metadata.std
    if len(mean_values) != channels or len(std_values) != channels:
        raise EdgefaultError(f"mean and std need one value per channel ({channels}); pass --mean and --std")
    if min(std_values) <= 0:
        raise EdgefaultError(f"--std values must be positive, got {std_values}")
    used_flags = any(value is not None for value in (input_size, mean, std))
    source = "flags" if metadata is None else ("metadata+flags" if used_flags else "metadata")
    spec = InputSpec(io.input_name, shape, tuple(mean_values), tuple(std_values), source)
    _check_model_fits(spec, io)
    return spec


def _check_model_fits(spec: InputSpec, io: ModelIO) -> None:
    if io.input_dims is None:
        return
    for axis, want, have in zip("CHW", spec.shape, io.input_dims[1:]):
        if have is not None and have != want:
            declared = "x".join("?" if d is None else str(d) for d in io.input_dims[1:])
            raise EdgefaultError(
                f"input size {'x'.join(map(str, spec.shape))} does not fit the model's input "
                f"{io.input_name!r} ({declared}): {axis} is {have}, not {want}"
            )


def check_dataset_fits(spec: InputSpec, dataset: Dataset, num_classes: int | None) -> None:
    """Refuse a dataset whose image shape or class count the model cannot take.

    Example:
        >>> check_dataset_fits(spec, load_dataset("cifar10:/data"), 10)  # doctest: +SKIP
        Traceback (most recent call last):
        edgefault.errors.EdgefaultError: dataset cifar10:/data has 3x32x32 images but the model takes 1x28x28
    """
    if dataset.input_shape != spec.shape:
        have = "x".join(map(str, dataset.input_shape))
        want = "x".join(map(str, spec.shape))
        raise EdgefaultError(f"dataset {dataset.spec} has {have} images but the model takes {want}")
    if num_classes is not None and dataset.num_classes > num_classes:
        raise EdgefaultError(
            f"dataset {dataset.spec} has {dataset.num_classes} classes but the model scores only {num_classes}"
        )


def prepare_inputs(dataset: Dataset, spec: InputSpec, limit: int | None = None) -> PreparedInputs:
    """Normalize the (first ``limit``) test images once with the model's mean and std.

    Example:
        >>> prepare_inputs(load_dataset("mnist5k"), spec, limit=8).images.dtype  # doctest: +SKIP
        dtype('float32')
    """
    count = len(dataset.test_labels) if limit is None else min(limit, len(dataset.test_labels))
    images = np.ascontiguousarray(dataset.normalized(dataset.test_images[:count], spec.mean, spec.std))
    images.setflags(write=False)  # shared by many sessions: nobody may change it in place
    labels = np.asarray(dataset.test_labels[:count], dtype=np.int64)
    return PreparedInputs(images, labels)
