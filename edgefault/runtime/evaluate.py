"""``edgefault eval`` as a Python call: one model, one dataset, one :class:`EvalReport`."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from edgefault.data import load_dataset
from edgefault.errors import EdgefaultError
from edgefault.runtime.graph import KernelCounts, optimized_kernel_counts
from edgefault.runtime.inputs import InputSpec, check_dataset_fits, prepare_inputs, resolve_input_spec
from edgefault.runtime.loading import load_model, model_io
from edgefault.runtime.metadata import ModelMetadata
from edgefault.runtime.session import DEFAULT_BATCH, Evaluator, SessionSettings
from edgefault.runtime.sparsity import SparsityReport, measure_sparsity
from edgefault.runtime.timing import Timing, TimingSettings, measure_timing


@dataclasses.dataclass(frozen=True)
class EvalOptions:
    """What ``evaluate_model`` measures and how; ``timing=None`` skips the timing runs.

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

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise EdgefaultError(f"limit must be >= 1, got {self.limit}")
        if self.batch_size < 1:
            raise EdgefaultError(f"batch size must be >= 1, got {self.batch_size}")


@dataclasses.dataclass(frozen=True)
class EvalReport:
    """Everything ``eval`` measured on one model; ``to_dict`` gives the ``--json`` object.

    Example:
        >>> report = evaluate_model("model.onnx", "mnist5k")  # doctest: +SKIP
        >>> report.accuracy, report.kernels.float_kernels
        (0.981, 0)
    """

    model: str
    dataset: str
    images: int
    input: InputSpec
    metadata: ModelMetadata | None
    accuracy: float
    correct: int
    num_classes: int
    sparsity: SparsityReport | None
    timing: Timing | None
    kernels: KernelCounts | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists when serialised).

        Example:
            >>> report.to_dict()["accuracy"]  # doctest: +SKIP
            0.981
        """
        return dataclasses.asdict(self)


def evaluate_model(
    path: str | os.PathLike,
    data_spec: str = "mnist5k",
    *,
    input_size: str | None = None,
    mean: str | None = None,
    std: str | None = None,
    options: EvalOptions = EvalOptions(),
) -> EvalReport:
    """Load a model, check it fits the dataset, and measure accuracy, sparsity, timing and kernels.

    ``input_size``/``mean``/``std`` are the flag strings (``"1x28x28"``, ``"0.1307"``) for
    models without edgefault metadata; for an edgefault model they override its metadata.

    Example:
        >>> evaluate_model("quant.onnx", "mnist5k", input_size="1x28x28", mean="0.1307", std="0.3081",
        ...                options=EvalOptions(limit=100, timing=None)).images  # doctest: +SKIP
        100
    """
    model = load_model(path)
    metadata = ModelMetadata.from_model(model)
    io = model_io(model, metadata.input_name if metadata else None)
    if metadata and io.num_classes and metadata.num_classes != io.num_classes:
        raise EdgefaultError(
            f"{path}: metadata says {metadata.num_classes} classes but output {io.output_name!r} has {io.num_classes}"
        )
    spec = resolve_input_spec(io, metadata, input_size, mean, std)
    dataset = load_dataset(data_spec)
    check_dataset_fits(spec, dataset, io.num_classes or (metadata.num_classes if metadata else None))
    prepared = prepare_inputs(dataset, spec, options.limit)
    data = model.SerializeToString()
    evaluator = Evaluator(data, options.session, input_name=io.input_name, output_name=io.output_name)
    # The graph may not declare its class count; one image tells it before the full pass.
    num_classes = int(evaluator.logits(prepared.images[:1]).shape[1])
    check_dataset_fits(spec, dataset, num_classes)
    score = evaluator.score(prepared, options.batch_size, "accuracy" if options.progress else None)
    sparsity = None
    if options.sparsity:
        label = "activations" if options.progress else None
        sparsity = measure_sparsity(model, prepared, io.input_name, options.session, options.batch_size, label)
    timing = measure_timing(evaluator, prepared.images, options.timing) if options.timing else None
    kernels = optimized_kernel_counts(data, options.session, str(path)) if options.kernels else None
    return EvalReport(
        model=str(path),
        dataset=dataset.spec,
        images=score.total,
        input=spec,
        metadata=metadata,
        accuracy=score.accuracy,
        correct=score.correct,
        num_classes=num_classes,
        sparsity=sparsity,
        timing=timing,
        kernels=kernels,
    )
