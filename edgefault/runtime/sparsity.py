"""Measuring activation sparsity and the multiply-accumulates a zero-skipping accelerator saves.

The model is copied with its quantized activations (see :mod:`edgefault.runtime.activations`)
added as graph outputs, and that copy runs over the prepared test images once.

Formulas, summed over all images:

* activation sparsity of a tensor = (# values equal to its zero point) / (# values);
* MAC-skip share of a layer = its zero-input MACs / its dense MACs, both from
  :func:`edgefault.runtime.activations.layer_macs` (the one definition, shared with ``cost``):
  dense MACs = Cout x Cin/group x kh x kw x Hout x Wout for a conv (what a dense array
  executes), in_elements x out_features for a linear layer; zero-input MACs = sum over input
  elements x of [x == zp] * m(x), m(x) the MACs x takes part in, plus the conv's padding taps,
  which read no stored value and are zero inputs a zero-skipping accelerator skips too. For a
  conv, m(c, i, j) = (out_channels / group) * cover_h(i) * cover_w(j), cover being the number of
  (output position, kernel tap) pairs that read input row i (column j);
* the model's MAC-skip share = skipped MACs of all layers / MACs of all layers.

Exposing a tensor as a graph output can stop ONNX Runtime from fusing around it, so the
probe copy may round a value differently from the fused integer kernels in rare ties;
accuracy is always measured on the unmodified model.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np
import onnx

from edgefault.errors import EdgefaultError, error_line
from edgefault.runtime.activations import (
    MacLayer,
    QuantizedTensor,
    find_mac_layers,
    find_quantized_tensors,
    layer_macs,
)
from edgefault.runtime.inputs import PreparedInputs
from edgefault.runtime.session import (
    DEFAULT_BATCH,
    ORT_ERRORS,
    ORT_INPUT_TYPES,
    SessionSettings,
    create_session,
    progress_bar,
)


@dataclasses.dataclass(frozen=True)
class ActivationSparsity:
    """Share of a quantized activation's values equal to its zero point.

    Example:
        >>> ActivationSparsity("relu_q", "QuantizeLinear", (0,), 1176, 0.61).zero_share
        0.61
    """

    tensor: str
    producer: str
    zero_point: tuple[int, ...]
    elements_per_image: int
    zero_share: float


@dataclasses.dataclass(frozen=True)
class LayerMacSkip:
    """The MACs of one conv/linear layer per image and the share whose activation is zero.
    """

    node: str
    op_type: str
    activation: str
    macs_per_image: float
    skip_share: float


@dataclasses.dataclass(frozen=True)
class SparsityReport:
    """Per-tensor activation sparsity, per-layer MAC-skip shares and the model-wide share.

    ``mac_skip_share`` is None when no conv/linear layer reads a quantized activation.
    ``dynamic_quantizers`` counts DynamicQuantizeLinear nodes: a dynamic-quantized model
    (MatMulInteger fed by them) quantizes its activations at run time, with a zero point
    per batch, so it has integer kernels but no stored activation zero point to count.
    """

    images: int
    activations: tuple[ActivationSparsity, ...]
    layers: tuple[LayerMacSkip, ...]
    macs_per_image: float
    mac_skip_share: float | None
    dynamic_quantizers: int = 0


class _Tally:
    """Running zero counts: per tensor (plain) and per layer (MAC-weighted)."""

    def __init__(self, tensors: list[QuantizedTensor], layers: list[MacLayer]) -> None:
        self.tensors, self.layers = tensors, layers
        self.zeros = {t.name: 0 for t in tensors}
        self.elements = {t.name: 0 for t in tensors}
        self.skipped = {layer.node: 0.0 for layer in layers}
        self.macs = {layer.node: 0.0 for layer in layers}

    def add(self, values: dict[str, np.ndarray]) -> None:
        masks = {}
        for tensor in self.tensors:
            mask = tensor.zero_mask(values[tensor.name])
            masks[tensor.name] = mask
            self.zeros[tensor.name] += int(mask.sum())
            self.elements[tensor.name] += mask.size
        for layer in self.layers:
            mask = masks[layer.activation]
            rows = mask.shape[0]  # images, or images x tokens for a transformer's linear layers
            dense, zeros = layer_macs(layer, mask, rows)
            self.skipped[layer.node] += float(zeros.sum())
            self.macs[layer.node] += float(dense) * rows

    def report(self, images: int, dynamic_quantizers: int = 0) -> SparsityReport:
        activations = tuple(
            ActivationSparsity(
                t.name, t.producer, t.zero_point, self.elements[t.name] // max(images, 1),
                self.zeros[t.name] / self.elements[t.name] if self.elements[t.name] else 0.0,
            )
            for t in self.tensors
        )
        layers = tuple(
            LayerMacSkip(
                layer.node, layer.op_type, layer.activation, self.macs[layer.node] / max(images, 1),
                self.skipped[layer.node] / self.macs[layer.node] if self.macs[layer.node] else 0.0,
            )
            for layer in self.layers
        )
        total = sum(self.macs.values())
        share = sum(self.skipped.values()) / total if total else None
        return SparsityReport(images, activations, layers, total / max(images, 1), share, dynamic_quantizers)


def _first_images(value: np.ndarray, count: int, batch: int) -> np.ndarray:
    rows = value.shape[0] // batch if value.ndim and value.shape[0] % batch == 0 else 1
    return value[: count * rows]


def probe_model(model: onnx.ModelProto, tensors: list[QuantizedTensor | str]) -> onnx.ModelProto:
    """A copy of ``model`` that also outputs the given tensors (or tensor names).

    Example:
        >>> model = onnx.load("model.onnx")
        >>> [o.name for o in probe_model(model, find_quantized_tensors(model)).graph.output]
        ['logits', 'input_q']
    """
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    existing = {output.name for output in probe.graph.output}
    for name in (tensor if isinstance(tensor, str) else tensor.name for tensor in tensors):
        if name not in existing:
            # No type is given: ONNX Runtime infers the element type and shape of an output.
            probe.graph.output.append(onnx.ValueInfoProto(name=name))
    return probe


def probe_batches(
    model: onnx.ModelProto,
    inputs: PreparedInputs,
    input_name: str,
    tensors: list[QuantizedTensor],
    settings: SessionSettings = SessionSettings(),
    batch_size: int = DEFAULT_BATCH,
    progress: str | None = None,
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """Run a probe copy of ``model`` over ``inputs``; yield (images, {tensor name: values}) per batch.

    Padding images of a fixed-batch graph are dropped; a tensor whose first axis folds images
    and tokens (a transformer's [batch * tokens, dim]) keeps images * tokens rows.

    Example:
        >>> model, images = onnx.load("model.onnx"), PreparedInputs(np.zeros((10, 1, 4, 4), np.float32), np.zeros(10))
        >>> [count for count, _ in probe_batches(model, images, "input", find_quantized_tensors(model), batch_size=4)]
        [4, 4, 2]
    """
    session = create_session(probe_model(model, tensors).SerializeToString(), settings.options(), "probe model")
    yield from session_batches(session, inputs, input_name, [tensor.name for tensor in tensors], batch_size, progress)


def session_batches(session, inputs: PreparedInputs, input_name: str, names: list[str],
                    batch_size: int = DEFAULT_BATCH, progress: str | None = None,
                    ) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """Run an ONNX Runtime ``session`` over ``inputs``, fetching the outputs ``names``; yield (images, values) per batch.

    The one batching loop of the probes (``eval``, ``cost``, ``campaign --cost``): a graph that
    pins its batch size gets padded batches, whose padding rows are dropped from every output.
    """
    image_input = next(arg for arg in session.get_inputs() if arg.name == input_name)
    dtype = ORT_INPUT_TYPES.get(image_input.type, np.float32)
    declared = image_input.shape or []
    fixed = declared[0] if declared and isinstance(declared[0], int) and declared[0] > 0 else None
    step = fixed or max(1, batch_size)
    with progress_bar(len(inputs), progress) as bar:
        for start in range(0, len(inputs), step):
            batch = inputs.images[start : start + step]
            count = len(batch)
            if fixed and count < fixed:
                batch = np.concatenate([batch, np.zeros((fixed - count, *batch.shape[1:]), batch.dtype)])
            try:
                outputs = session.run(names, {input_name: batch.astype(dtype, copy=False)})
            except ORT_ERRORS as exc:
                raise EdgefaultError(f"ONNX Runtime failed to run the probe model ({error_line(exc)})") from None
            yield count, {name: _first_images(value, count, len(batch)) for name, value in zip(names, outputs)}
            bar.update(count)


def measure_sparsity(
    model: onnx.ModelProto,
    inputs: PreparedInputs,
    input_name: str,
    settings: SessionSettings = SessionSettings(),
    batch_size: int = DEFAULT_BATCH,
    progress: str | None = None,
) -> SparsityReport:
    """Run a probe copy of ``model`` over ``inputs`` and tally zero activations and skippable MACs.

    Example:
        >>> images = PreparedInputs(np.zeros((10, 1, 4, 4), np.float32), np.zeros(10))  # all-zero images
        >>> [a.zero_share for a in measure_sparsity(onnx.load("model.onnx"), images, "input").activations]
        [1.0]
    """
    tensors = find_quantized_tensors(model)
    layers = find_mac_layers(model, tensors)
    tally = _Tally(tensors, layers)
    dynamic = sum(node.op_type == "DynamicQuantizeLinear" for node in model.graph.node)
    if tensors:
        for _, values in probe_batches(model, inputs, input_name, tensors, settings, batch_size, progress):
            tally.add(values)
    return tally.report(len(inputs), dynamic)
