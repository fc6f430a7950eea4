"""Export a trained model (object or run directory) to a self-checked int8 QDQ ONNX file.

The export builds the graph (:mod:`edgefault.export.graph`), asks ONNX Runtime which kernels
it will run, compares ONNX Runtime with PyTorch on the test split, and only then writes the
file, atomically and with its metadata. A failed check writes nothing unless the settings say
to keep the file.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any

import onnx
from onnx import TensorProto
from torch import nn

from edgefault.data import Dataset, load_dataset
from edgefault.errors import EdgefaultError
from edgefault.export.graph import INPUT_NAME, build_onnx
from edgefault.export.verify import Parity, activation_products, check_parity
from edgefault.fileio import atomic_path, check_outputs
from edgefault.runtime import ModelMetadata, count_kernels, optimized_model
from edgefault.runtime.graph import FLOAT_KERNELS
from edgefault.runtime.session import DEFAULT_BATCH
from edgefault.train import load_run


@dataclasses.dataclass(frozen=True)
class ExportSettings:
    """How export checks itself.

    ``min_agreement``: the least share of test images on which ONNX Runtime and PyTorch pick the
    same class. ``keep_on_parity_failure`` writes the file even when that check, or the check
    that every conv/linear runs as an integer kernel, fails. ``limit`` uses only the first N
    test images. ``progress`` shows progress bars on a terminal.

    Example:
        >>> ExportSettings(limit=200).min_agreement
        0.995
    """

    min_agreement: float = 0.995
    keep_on_parity_failure: bool = False
    limit: int | None = None
    batch_size: int = DEFAULT_BATCH
    progress: bool = False

    def __post_init__(self) -> None:
        if not (isinstance(self.min_agreement, (int, float)) and 0.0 <= self.min_agreement <= 1.0):
            raise EdgefaultError(f"min_agreement must lie in [0, 1], got {self.min_agreement!r}")
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit < 1):
            raise EdgefaultError(f"limit must be a positive integer, got {self.limit!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise EdgefaultError(f"batch_size must be a positive integer, got {self.batch_size!r}")


@dataclasses.dataclass(frozen=True)
class ExportReport(Parity):
    """What export wrote and measured: the parity check's fields (:class:`Parity`) and these.

    ``op_counts`` are the ops of the graph ONNX Runtime runs after its optimization;
    ``weight_bytes`` is the size of the int8 weight memory (what fault injection corrupts).
    ``activation_products`` maps each MatMul of two activations (attention) to the kernel ONNX
    Runtime runs it as; a float one is listed there, and is no export failure (it has no weights).
    ``passed`` is False only when the file was kept despite ``problems``.
    """

    path: Path
    integer_kernels: int
    float_kernels: int
    op_counts: dict[str, int]
    weight_tensors: int
    weight_bytes: int
    activation_products: dict[str, str]
    passed: bool
    problems: tuple[str, ...]
    metadata: ModelMetadata

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (the path as text).
        """
        values = dataclasses.asdict(self)
        return {"path": str(values.pop("path")), **values}


def model_metadata(model: nn.Module, data: Dataset, *, recipe: dict[str, Any] | None = None,
                   dataset: str | None = None, clean_accuracy: float | None = None) -> ModelMetadata:
    """The metadata of an exported model: its input, the dataset's normalization and classes, the recipe.
    """
    _check_classifier(model)
    quant = model.quant
    return ModelMetadata(
        input_name=INPUT_NAME, input_shape=tuple(model.input_shape), mean=data.mean, std=data.std,
        num_classes=int(model.num_classes), class_names=data.class_names, wbits=quant.wbits, abits=quant.abits,
        dataset=dataset or data.spec, recipe=dict(recipe if recipe is not None else getattr(model, "spec", {})),
        clean_accuracy=clean_accuracy,
    )


def export_model(model: nn.Module, out_path: str | os.PathLike, data: Dataset,
                 metadata: ModelMetadata | None = None, settings: ExportSettings = ExportSettings()) -> ExportReport:
    """Export a quantized classifier to ``out_path`` after checking it against PyTorch on ``data``'s test split.

    Test images are normalized with the metadata's mean/std (by default ``data``'s). The
    metadata's clean accuracy becomes the ONNX model's measured test accuracy when the whole
    test split of the metadata's dataset was used.
    """
    check_outputs({"`out`": out_path}, [])
    target = Path(out_path)
    _check_classifier(model)
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise EdgefaultError("export needs the model on the CPU (call model.cpu() first)")
    _check_fits(model, data)
    metadata = metadata or model_metadata(model, data)
    was_training = model.training
    model.eval()
    try:
        onnx_model = build_onnx(model)
        optimized = optimized_model(onnx_model.SerializeToString(), source="exported model")
        kernels, products = count_kernels(optimized), activation_products(onnx_model, optimized)
        count = len(data.test_images) if settings.limit is None else min(settings.limit, len(data.test_images))
        images = data.normalized(data.test_images[:count], metadata.mean, metadata.std)
        parity = check_parity(model, onnx_model, images, data.test_labels[:count], settings.batch_size,
                              settings.progress)
    finally:
        model.train(was_training)
    weight_float = kernels.float_kernels - sum(op in FLOAT_KERNELS for op in products.values())
    problems = _problems(parity, kernels.integer_kernels, weight_float, settings)
    if problems and not settings.keep_on_parity_failure:
        raise EdgefaultError(f"export check failed: {'; '.join(problems)}; nothing written "
                             "(`keep_on_parity_failure` keeps the file)")
    if count == len(data.test_images) and data.spec == metadata.dataset:
        metadata = dataclasses.replace(metadata, clean_accuracy=parity.onnx_accuracy)
    metadata.write_to(onnx_model)
    onnx.checker.check_model(onnx_model, full_check=True)
    _save(onnx_model, target)
    # The weight memory: int8 initializers read as data by a DequantizeLinear (not its zero points).
    weight_names = {node.input[0] for node in onnx_model.graph.node if node.op_type == "DequantizeLinear"}
    weights = [t for t in onnx_model.graph.initializer if t.data_type == TensorProto.INT8 and t.name in weight_names]
    return ExportReport(
        **dataclasses.asdict(parity), path=target, integer_kernels=kernels.integer_kernels,
        float_kernels=kernels.float_kernels, op_counts=dict(kernels.ops), weight_tensors=len(weights),
        weight_bytes=sum(math.prod(t.dims) for t in weights),  # one byte per int8 weight
        activation_products=products,
        passed=not problems, problems=tuple(problems), metadata=metadata,
    )


def export_run(run_dir: str | os.PathLike, out_path: str | os.PathLike, settings: ExportSettings = ExportSettings(),
               data_spec: str | None = None) -> ExportReport:
    """Export the model a ``train`` run directory holds; parity runs on the run's dataset (or ``data_spec``).
    """
    check_outputs({"`out`": out_path}, [run_dir])  # e.g. never onto the run's checkpoint
    run = load_run(run_dir)
    spec = data_spec or run.config.data
    data = load_dataset(spec)
    _check_fits(run.model, data)
    accuracy = run.metrics.get("test_accuracy") if isinstance(run.metrics, dict) else None
    if not (isinstance(accuracy, (int, float)) and math.isfinite(accuracy) and 0 <= accuracy <= 1):
        accuracy = None
    metadata = model_metadata(run.model, data, recipe=dataclasses.asdict(run.config), dataset=spec,
                              clean_accuracy=accuracy)
    return export_model(run.model, out_path, data, metadata, settings)


def _check_classifier(model: nn.Module) -> None:
    missing = [name for name in ("input_shape", "num_classes", "quant") if not hasattr(model, name)]
    if missing:
        raise EdgefaultError(f"{type(model).__name__} is not an edgefault quantized classifier "
                             f"(it has no {', '.join(missing)})")


def _check_fits(model: nn.Module, data: Dataset) -> None:
    if data.input_shape != tuple(model.input_shape) or data.num_classes != model.num_classes:
        raise EdgefaultError(
            f"{data.spec}: images {data.input_shape} with {data.num_classes} classes do not fit the model "
            f"({tuple(model.input_shape)}, {model.num_classes} classes)"
        )


def _problems(parity: Parity, integer: int, floating: int, settings: ExportSettings) -> list[str]:
    problems = []
    if parity.agreement < settings.min_agreement:
        gap = "" if parity.max_logit_gap_steps is None else f", max logit gap {parity.max_logit_gap_steps:g} steps"
        problems.append(f"ONNX Runtime and PyTorch agree on {parity.agreement:.2%} of {parity.images} test images "
                        f"(need {settings.min_agreement:.2%}{gap})")
    if floating or not integer:
        problems.append(f"ONNX Runtime runs {floating} float conv/linear kernels with weights and {integer} integer "
                        "ones (every conv/linear must be integer)")
    return problems


def _save(model: onnx.ModelProto, target: Path) -> None:
    try:
        with atomic_path(target) as tmp:
            onnx.save(model, os.fspath(tmp))
    except OSError as exc:
        raise EdgefaultError(f"{target}: cannot write ({exc.strerror or exc})") from None
