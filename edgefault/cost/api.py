"""``edgefault cost`` as a Python call: one model, one dataset, one accelerator, one :class:`CostReport`.

The model's integer activations come from a probe copy run in ONNX Runtime over the test
images (:func:`edgefault.runtime.sparsity.probe_batches`, as ``eval`` probes them); each
conv/linear layer reading a quantized activation is tallied (:mod:`edgefault.cost.tally`)
and costed on the accelerator (:mod:`edgefault.cost.report`).
"""

from __future__ import annotations

import dataclasses
import os

from edgefault.cost.accelerator import Accelerator, load_accelerator
from edgefault.cost.report import CostReport, layer_cost, totals
from edgefault.cost.tally import LayerTally
from edgefault.errors import EdgefaultError
from edgefault.faults.formats import ACT_FORMATS
from edgefault.runtime.activations import MacLayer, QuantizedTensor, find_mac_layers, find_quantized_tensors
from edgefault.runtime.evaluate import check_limit_and_batch, load_with_inputs
from edgefault.runtime.inputs import InputOptions, PreparedInputs
from edgefault.errors import about_model
from edgefault.runtime.session import DEFAULT_BATCH, SessionSettings
from edgefault.runtime.sparsity import probe_batches


@dataclasses.dataclass(frozen=True)
class CostOptions:
    """Which images ``model_cost`` runs and how: ``limit`` first test images, batch size, session, progress.

    Example:
        >>> CostOptions(limit=100).batch_size
        256
        >>> CostOptions(limit=0)
        Traceback (most recent call last):
        ...
        edgefault.errors.EdgefaultError: limit must be >= 1, got 0
    """

    limit: int | None = None
    batch_size: int = DEFAULT_BATCH
    session: SessionSettings = SessionSettings()
    progress: bool = False
    inputs: InputOptions = InputOptions()

    def __post_init__(self) -> None:
        check_limit_and_batch(self.limit, self.batch_size)


@dataclasses.dataclass(frozen=True)
class Kernels:
    """The integer conv/linear kernels of a model that ``cost`` models, and the quantized tensors they read.

    Example:
        >>> from edgefault.onnxio import load_model
        >>> kernels = Kernels.of(load_model("model.onnx"))
        >>> [layer.node for layer in kernels.layers], kernels.names
        (['Conv_3'], ['input_q'])
    """

    layers: tuple[MacLayer, ...]
    tensors: tuple[QuantizedTensor, ...]  # each kernel input once, in the order the layers read them

    @classmethod
    def of(cls, model, source: str = "model") -> "Kernels":
        """Find them in an ONNX model; a model with none is refused in one line.

        Example:
            >>> import onnx
            >>> Kernels.of(onnx.ModelProto())
            Traceback (most recent call last):
            ...
            edgefault.errors.EdgefaultError: model: no conv/linear layer reads a quantized activation; nothing to cost (a float or dynamically quantized model?)
        """
        tensors = find_quantized_tensors(model)
        by_name = {tensor.name: tensor for tensor in tensors}
        layers = find_mac_layers(model, tensors)
        if not layers:
            raise EdgefaultError(f"{source}: no conv/linear layer reads a quantized activation; nothing to cost "
                                 "(a float or dynamically quantized model?)")
        needed = tuple(by_name[name] for name in dict.fromkeys(layer.activation for layer in layers))
        return cls(tuple(layers), needed)

    @property
    def names(self) -> list[str]:
        """The kernel inputs' tensor names (what a probe copy of the model outputs)."""
        return [tensor.name for tensor in self.tensors]

    def tallies(self, accelerator: Accelerator, formats: tuple[str, ...] = ACT_FORMATS) -> list[LayerTally]:
        """One empty :class:`LayerTally` per kernel on ``accelerator``; ``formats`` are the storage formats sized
        (``dense`` and the accelerator's are what its energy needs).
        """
        by_name = {tensor.name: tensor for tensor in self.tensors}
        return [LayerTally(layer, by_name[layer.activation], accelerator.lanes, accelerator.groups,
                           accelerator.activation_bits, accelerator.rle_run_bits,
                           accelerator.activation_buffer_kib * 8192, formats=formats)
                for layer in self.layers]


def cost_of_inputs(model, prepared: PreparedInputs, input_name: str, accelerator: Accelerator,
                   options: CostOptions = CostOptions(), source: str = "model", dataset: str = "") -> CostReport:
    """Cost a loaded model on prepared inputs (the core of :func:`model_cost`, for callers that hold both).

    Example:
        >>> import numpy as np
        >>> from edgefault.onnxio import load_model
        >>> zeros = PreparedInputs(np.zeros((4, 1, 4, 4), np.float32), np.zeros(4))  # every MAC reads a zero
        >>> report = cost_of_inputs(load_model("model.onnx"), zeros, "input", load_accelerator())
        >>> report.images, report.total["zero_input_macs"] == report.total["macs"]
        (4, True)
    """
    kernels = Kernels.of(model, source)
    tallies = kernels.tallies(accelerator)
    label = "activations" if options.progress else None
    for count, values in probe_batches(model, prepared, input_name, list(kernels.tensors), options.session,
                                       options.batch_size, label):
        for tally in tallies:
            tally.add(values[tally.tensor.name], count)
    costs = tuple(layer_cost(tally, accelerator) for tally in tallies)
    return CostReport(source, dataset, len(prepared), accelerator, costs, totals(costs))


def model_cost(model_path: str | os.PathLike, data_spec: str = "mnist5k", accelerator: Accelerator | None = None,
               *, options: CostOptions = CostOptions()) -> CostReport:
    """Model what MODEL's activation sparsity buys on ``accelerator`` (default: the shipped 45 nm one).

    The input is read from the model (edgefault metadata, else its graph) and completed by
    ``options.inputs``, as in ``eval``.
    :func:`cost_of_inputs` shows a report on ready inputs.
    """
    accelerator = accelerator or load_accelerator()
    model, _, io, _, samples, prepared = load_with_inputs(model_path, data_spec, options.inputs, options.limit)
    with about_model(model_path):
        return cost_of_inputs(model, prepared, io.input_name, accelerator, options, str(model_path), samples.spec)
