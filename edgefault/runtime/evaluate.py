"""``edgefault eval`` as a Python call: one model, one dataset, one :class:`EvalReport`."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from edgefault.data import load_samples
from edgefault.errors import EdgefaultError, about_model
from edgefault.runtime.feed import check_classes, model_classes, prepare_inputs
from edgefault.runtime.graph import KernelCounts, optimized_kernel_counts
from edgefault.runtime.inputs import InputOptions, InputSpec, resolve_model_input
from edgefault.onnxio import load_model
from edgefault.runtime.metadata import ModelMetadata
from edgefault.runtime.session import DEFAULT_BATCH, SessionSettings
from edgefault.runtime.sparsity import SparsityReport, measure_sparsity
from edgefault.runtime.timing import Timing, TimingSettings, measure_timing


@dataclasses.dataclass(frozen=True)
class EvalOptions:
    """What ``evaluate_model`` measures and how; ``timing=None`` skips the timing runs.

    ``inputs`` holds the preprocessing flags (``--input-size``, ``--layout``, ``--mean``,
    ``--std``, ``--scale``, ``--no-normalize``).

    Example:
        >>> EvalOptions(limit=200, session=SessionSettings(intra_op_threads=1), timing=None).sparsity
        True
    """

    limit: int | None = None
    batch_size: int = DEFAULT_BATCH
    session: SessionSettings = SessionSettings()
    sparsity: bool = True
    kernels: bool = True
    timing: TimingSettings | None = TimingSettings()
    progress: bool = False
    inputs: InputOptions = InputOptions()

    def __post_init__(self) -> None:
        check_limit_and_batch(self.limit, self.batch_size)


def check_limit_and_batch(limit: int | None, batch_size: int) -> None:
    """The checks every pass over the test images shares: ``limit`` (None: all) and ``batch_size`` >= 1.

    Example:
        >>> check_limit_and_batch(None, 0)
        Traceback (most recent call last):
        edgefault.errors.EdgefaultError: batch size must be >= 1, got 0
    """
    if limit is not None and limit < 1:
        raise EdgefaultError(f"limit must be >= 1, got {limit}")
    if batch_size < 1:
        raise EdgefaultError(f"batch size must be >= 1, got {batch_size}")


def load_with_inputs(path: str | os.PathLike, data_spec: str, inputs: InputOptions = InputOptions(),
                     limit: int | None = None):
    """A model and the first ``limit`` test samples fitted to its input: where ``eval`` and ``cost`` start.

    Returns ``(model, metadata, io, spec, samples, prepared)``; user errors name the model's path.

    Example:
        >>> import numpy as np
        >>> x, y = np.zeros((6, 1, 4, 4), np.float32), np.arange(6) % 3
        >>> np.savez("digits.npz", x_train=x, y_train=y, x_test=x, y_test=y)
        >>> *_, prepared = load_with_inputs("model.onnx", "npz:digits.npz", InputOptions(normalize=False), limit=4)
        >>> prepared.images.shape
        (4, 1, 4, 4)
    """
    model = load_model(path)
    with about_model(path):
        metadata, io, spec = resolve_model_input(model, inputs)
    samples = load_samples(data_spec)
    with about_model(path):
        check_classes(samples, io.num_classes or (metadata.num_classes if metadata else None))
        prepared = prepare_inputs(samples, spec, limit, inputs.scale_factor)
    return model, metadata, io, spec, samples, prepared


@dataclasses.dataclass(frozen=True)
class EvalReport:
    """Everything ``eval`` measured on one model; ``to_dict`` gives the ``--json`` object.
    """

    model: str
    dataset: str
    images: int
    input: InputSpec
    feed: str  # how the data was fed, in one line: "x: 16x16x3 NHWC float, data fed as stored, ..."
    metadata: ModelMetadata | None
    accuracy: float
    correct: int
    num_classes: int
    sparsity: SparsityReport | None
    timing: Timing | None
    kernels: KernelCounts | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists when serialised).
        """
        return dataclasses.asdict(self)


def evaluate_model(path: str | os.PathLike, data_spec: str = "mnist5k", *,
                   options: EvalOptions = EvalOptions()) -> EvalReport:
    """Load a model, fit the dataset to its input, and measure accuracy, sparsity, timing and kernels.

    The input is read from the model (edgefault metadata, else its graph) and completed or
    overridden by ``options.inputs``; the data is fed as stored (see :mod:`edgefault.runtime.feed`).
    """
    model, metadata, io, spec, samples, prepared = load_with_inputs(path, data_spec, options.inputs, options.limit)
    data = model.SerializeToString()
    with about_model(path):
        evaluator, num_classes = model_classes(data, io, prepared, samples, options.session)
    score = evaluator.score(prepared, options.batch_size, "accuracy" if options.progress else None)
    sparsity = None
    if options.sparsity:
        label = "activations" if options.progress else None
        sparsity = measure_sparsity(model, prepared, io.input_name, options.session, options.batch_size, label)
    timing = measure_timing(evaluator, prepared.images, options.timing) if options.timing else None
    kernels = optimized_kernel_counts(data, options.session, str(path)) if options.kernels else None
    return EvalReport(
        model=str(path),
        dataset=samples.spec,
        images=score.total,
        input=spec,
        feed=prepared.description,
        metadata=metadata,
        accuracy=score.accuracy,
        correct=score.correct,
        num_classes=num_classes,
        sparsity=sparsity,
        timing=timing,
        kernels=kernels,
    )
