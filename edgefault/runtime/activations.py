"""Finding the quantized activations of a graph and the conv/linear layers that read them.

A *quantized activation* is an integer tensor computed at run time (not a weight) that
either an integer-aware op computes (the output of a QuantizeLinear, QLinearConv, QLinearAdd,
...) or an integer-aware op reads as data: the ``x`` of a DequantizeLinear (in QDQ models
that catches a uint8 threshold between QuantizeLinear and DequantizeLinear after it acts),
or the data input of a QLinearConv, QGemm, ConvInteger, ... (a uint8 MaxPool output in
QOperator models). Its zero point is the one that producer or consumer states; a value
equal to it is an exact zero of the real activation.

A *MAC layer* is a conv or linear node whose activation input is such a tensor, in QDQ form
through a DequantizeLinear (and, for linear layers, shape-only ops such as Flatten).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
from onnx import numpy_helper

from edgefault.errors import EdgefaultError

# op_type -> [(data input index, zero-point input index)] of integer-aware consumers.
INTEGER_CONSUMERS: dict[str, tuple[tuple[int, int], ...]] = {
    "DequantizeLinear": ((0, 2),),
    "QLinearConv": ((0, 2),),
    "QLinearMatMul": ((0, 2), (3, 5)),
    "QGemm": ((0, 2), (3, 5)),
    "QLinearAdd": ((0, 2), (3, 5)),
    "QLinearMul": ((0, 2), (3, 5)),
    "QLinearGlobalAveragePool": ((0, 2),),
    "QLinearAveragePool": ((0, 2),),
    "QLinearLeakyRelu": ((0, 2),),
    "QLinearSigmoid": ((0, 2),),
    "QLinearSoftmax": ((0, 2),),
    "ConvInteger": ((0, 2),),
    "MatMulInteger": ((0, 2), (1, 3)),
}
# op_type -> output zero-point input index of ops that compute a quantized tensor (QGemm only
# when it has a y_zero_point: without one its output is float).
INTEGER_PRODUCERS: dict[str, int] = {
    "QuantizeLinear": 2,
    "QLinearConv": 7,
    "QLinearMatMul": 7,
    "QGemm": 8,
    "QLinearAdd": 7,
    "QLinearMul": 7,
    "QLinearGlobalAveragePool": 4,
    "QLinearAveragePool": 4,
    "QLinearLeakyRelu": 4,
    "QLinearSigmoid": 4,
    "QLinearSoftmax": 4,
    "QLinearConcat": 1,
}
# Ops that only move values around: a linear layer's zero count is the same through them.
SHAPE_ONLY = frozenset({"Flatten", "Reshape", "Squeeze", "Unsqueeze", "Identity"})
# op_type -> (activation input, weight input) of conv and linear layers.
CONV_OPS = {"Conv": (0, 1), "ConvInteger": (0, 1), "QLinearConv": (0, 3)}
LINEAR_OPS = {"Gemm": (0, 1), "QGemm": (0, 3), "MatMul": (0, 1), "MatMulInteger": (0, 1), "QLinearMatMul": (0, 3)}


@dataclasses.dataclass(frozen=True)
class QuantizedTensor:
    """An integer activation tensor, the node that computes it, and its zero point.

    ``zero_point`` is a scalar, or one value per channel along ``axis``.
    """

    name: str
    producer: str  # op type of the node computing it
    zero_point: tuple[int, ...]
    axis: int | None = None

    def zero_mask(self, values: np.ndarray) -> np.ndarray:
        """True where ``values`` equal the zero point (broadcast along ``axis`` when per-channel).

        Example:
            >>> QuantizedTensor("a", "QuantizeLinear", (128,)).zero_mask(np.array([128, 3])).tolist()
            [True, False]
        """
        zero = np.asarray(self.zero_point, dtype=np.int64)
        if zero.size > 1 and self.axis is not None:
            shape = [1] * values.ndim
            shape[self.axis % values.ndim] = zero.size
            zero = zero.reshape(shape)
        else:
            zero = zero.reshape(()) if zero.size == 1 else zero
        return values.astype(np.int64, copy=False) == zero


@dataclasses.dataclass(frozen=True)
class MacLayer:
    """A conv or linear layer reading a quantized activation, with what its MAC count needs.

    For convs: ``out_channels``, ``group``, ``kernel``, ``strides``, ``dilations``, ``pads``
    (begin values then end values) and ``auto_pad``. For linear layers: ``in_features`` and
    ``out_features``, the number of MACs each input element takes part in.

    Example:
        >>> model = onnx.load("model.onnx")
        >>> [(layer.op_type, layer.activation) for layer in find_mac_layers(model, find_quantized_tensors(model))]
        [('Conv', 'input_q')]
    """

    node: str
    op_type: str
    activation: str
    kind: str  # "conv" or "linear"
    out_channels: int = 0
    group: int = 1
    kernel: tuple[int, ...] = ()
    strides: tuple[int, ...] = ()
    dilations: tuple[int, ...] = ()
    pads: tuple[int, ...] = ()
    auto_pad: str = "NOTSET"
    out_features: int = 0
    in_features: int = 0


class _GraphIndex:
    """Constant tensors, their dims and the producing node of every tensor, by tensor name."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        # Tensors stay protos until read: only a few small zero points are ever needed.
        self.tensors: dict[str, onnx.TensorProto] = {t.name: t for t in graph.initializer}
        self.dims: dict[str, tuple[int, ...]] = {t.name: tuple(t.dims) for t in graph.initializer}
        self.producer: dict[str, onnx.NodeProto] = {}
        self.constant: set[str] = set(self.tensors)
        for node in graph.node:
            for output in node.output:
                self.producer[output] = node
            if node.op_type == "Constant":
                value = next((a.t for a in node.attribute if a.name == "value"), None)
                if value is not None:
                    self.tensors[node.output[0]] = value
                    self.dims[node.output[0]] = tuple(value.dims)
            # A node fed only by constants (e.g. QuantizeLinear of a float weight) computes a constant.
            if node.op_type == "Constant" or (node.input and all(not i or i in self.constant for i in node.input)):
                self.constant.update(node.output)

    def weight_dims(self, name: str) -> tuple[int, ...] | None:
        """Dims of a constant weight, looking through the DequantizeLinear/Identity/Cast before it."""
        while name not in self.dims:
            node = self.producer.get(name)
            if node is None or node.op_type not in ("DequantizeLinear", "QuantizeLinear", "Identity", "Cast"):
                return None
            name = node.input[0]
        return self.dims[name]


def _attribute(node: onnx.NodeProto, name: str, default):
    for attribute in node.attribute:
        if attribute.name == name:
            value = onnx.helper.get_attribute_value(attribute)
            return value.decode() if isinstance(value, bytes) else value
    return default


def find_quantized_tensors(model: onnx.ModelProto) -> list[QuantizedTensor]:
    """The quantized activations of a model's main graph, in the order they are computed.
    """
    index = _GraphIndex(model.graph)
    found: dict[str, QuantizedTensor] = {}

    def add(name: str, node: onnx.NodeProto, zero: int) -> None:
        if not name or name in found or name in index.constant:
            return
        has_zero = zero < len(node.input) and node.input[zero]
        if has_zero and node.input[zero] not in index.tensors:
            return  # a zero point computed at run time cannot be read from the graph
        zero_point = numpy_helper.to_array(index.tensors[node.input[zero]]) if has_zero else np.zeros(1, np.int64)
        axis = None
        if zero_point.size > 1:
            axis = int(_attribute(node, "axis", 1)) if "QuantizeLinear" in node.op_type else 1
        producer = index.producer[name].op_type if name in index.producer else "graph input"
        found[name] = QuantizedTensor(name, producer, tuple(int(v) for v in zero_point.reshape(-1)), axis)

    for node in model.graph.node:
        for data, zero in INTEGER_CONSUMERS.get(node.op_type, ()):
            if data < len(node.input):
                add(node.input[data], node, zero)
        if node.op_type in INTEGER_PRODUCERS and node.output:
            zero = INTEGER_PRODUCERS[node.op_type]
            if zero < len(node.input) and node.input[zero]:  # QGemm without y_zero_point is float
                add(node.output[0], node, zero)
    order = {output: number for number, node in enumerate(model.graph.node) for output in node.output}
    return sorted(found.values(), key=lambda tensor: order.get(tensor.name, -1))


def find_mac_layers(model: onnx.ModelProto, tensors: list[QuantizedTensor]) -> list[MacLayer]:
    """The conv and linear layers whose activation input is one of ``tensors``.
    """
    index = _GraphIndex(model.graph)
    quantized = {tensor.name for tensor in tensors}
    layers = []
    for number, node in enumerate(model.graph.node):
        is_conv = node.op_type in CONV_OPS
        if not is_conv and node.op_type not in LINEAR_OPS:
            continue
        data, weight = (CONV_OPS if is_conv else LINEAR_OPS)[node.op_type]
        activation = _trace_activation(index, node.input[data], quantized, through_reshapes=not is_conv)
        dims = index.weight_dims(node.input[weight]) if weight < len(node.input) else None
        if activation is None or not dims:
            continue
        name = node.name or f"{node.op_type}_{number}"
        if is_conv:
            spatial = len(dims) - 2
            layers.append(MacLayer(
                name, node.op_type, activation, "conv",
                out_channels=dims[0],
                group=int(_attribute(node, "group", 1)),
                kernel=tuple(dims[2:]),
                strides=tuple(_attribute(node, "strides", [1] * spatial)),
                dilations=tuple(_attribute(node, "dilations", [1] * spatial)),
                pads=tuple(_attribute(node, "pads", [0] * (2 * spatial))),
                auto_pad=str(_attribute(node, "auto_pad", "NOTSET")),
            ))
        else:
            transposed = node.op_type in ("Gemm", "QGemm") and int(_attribute(node, "transB", 0))
            features, inputs = (dims[0], dims[-1]) if transposed else (dims[-1], dims[-2] if len(dims) > 1 else 1)
            layers.append(MacLayer(name, node.op_type, activation, "linear", out_features=features,
                                   in_features=inputs))
    return layers


def _trace_activation(index: _GraphIndex, name: str, quantized: set[str], through_reshapes: bool) -> str | None:
    while name not in quantized:
        node = index.producer.get(name)
        if node is None:
            return None
        if node.op_type == "DequantizeLinear" or node.op_type == "Identity" or (
            through_reshapes and node.op_type in SHAPE_ONLY
        ):
            name = node.input[0]
        else:
            return None
    return name


def coverage(length: int, kernel: int, stride: int, dilation: int, pad_begin: int, pad_end: int) -> np.ndarray:
    """How many (output position, kernel tap) pairs of one spatial axis read each input position.

    Example:
        >>> coverage(4, 3, 1, 1, 1, 1).tolist()  # a 3-tap, stride-1, pad-1 axis of length 4
        [2, 3, 3, 2]
    """
    outputs = (length + pad_begin + pad_end - dilation * (kernel - 1) - 1) // stride + 1
    counts = np.zeros(length, np.int64)
    starts = np.arange(max(outputs, 0)) * stride - pad_begin
    for tap in range(kernel):
        positions = starts + tap * dilation
        counts[positions[(positions >= 0) & (positions < length)]] += 1  # distinct within one tap
    return counts


def conv_pads(layer: MacLayer, spatial: tuple[int, ...]) -> list[tuple[int, int]]:
    """The (begin, end) padding of each spatial axis of a conv, ``auto_pad`` resolved.

    Example:
        >>> conv_pads(MacLayer("c", "Conv", "x", "conv", 4, 1, (3, 3), (2, 2), (1, 1), (0, 0, 0, 0),
        ...                    "SAME_UPPER"), (8, 8))
        [(0, 1), (0, 1)]
    """
    pads = []
    rank = len(spatial)
    for axis, length in enumerate(spatial):
        kernel, stride, dilation = layer.kernel[axis], layer.strides[axis], layer.dilations[axis]
        if layer.auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            outputs = -(-length // stride)
            total = max(0, (outputs - 1) * stride + dilation * (kernel - 1) + 1 - length)
            begin = total // 2 if layer.auto_pad == "SAME_UPPER" else total - total // 2
            pads.append((begin, total - begin))
        elif layer.auto_pad == "VALID":
            pads.append((0, 0))
        else:
            pads.append((layer.pads[axis], layer.pads[axis + rank]))
    return pads


def conv_output_size(layer: MacLayer, spatial: tuple[int, ...]) -> tuple[int, ...]:
    """The output size of each spatial axis of a conv.

    Example:
        >>> conv_output_size(MacLayer("c", "Conv", "x", "conv", 4, 1, (3, 3), (2, 2), (1, 1), (1, 1, 1, 1)), (4, 4))
        (2, 2)
    """
    return tuple(
        max(0, (length + begin + end - layer.dilations[axis] * (layer.kernel[axis] - 1) - 1) // layer.strides[axis] + 1)
        for axis, (length, (begin, end)) in enumerate(zip(spatial, conv_pads(layer, spatial)))
    )


def conv_input_weights(layer: MacLayer, spatial: tuple[int, ...]) -> np.ndarray:
    """MACs each input element of one channel takes part in, over the spatial grid.

    That is ``out_channels / group`` times the product of the per-axis :func:`coverage`;
    padding taps read no input element and are not counted here (see :func:`layer_macs`).

    Example:
        >>> conv_input_weights(MacLayer("c", "Conv", "x", "conv", 2, 1, (3,), (1,), (1,), (1, 1)), (4,)).tolist()
        [4, 6, 6, 4]
    """
    per_axis = [
        coverage(length, layer.kernel[axis], layer.strides[axis], layer.dilations[axis], begin, end)
        for axis, (length, (begin, end)) in enumerate(zip(spatial, conv_pads(layer, spatial)))
    ]
    grid = per_axis[0]
    for counts in per_axis[1:]:
        grid = np.multiply.outer(grid, counts)
    return grid * (layer.out_channels // layer.group)


def layer_macs(layer: MacLayer, mask: np.ndarray, images: int) -> tuple[int, np.ndarray]:
    """Dense MACs per image and, per image, the MACs whose activation input is zero: the one definition.

    ``mask`` is the zero mask of the layer's activation input for ``images`` images (images
    first). A conv executes Cout x Cin/groups x kh x kw x Hout x Wout MACs as a dense array does;
    its padding taps read no stored value and count as zero inputs. A linear layer executes
    in_elements x out_features.

    Example:
        >>> layer = MacLayer("c", "Conv", "x", "conv", 2, 1, (3,), (1,), (1,), (1, 1))
        >>> dense, zero = layer_macs(layer, np.array([[[False, True, False, False]]]), 1)
        >>> dense, zero.tolist()  # 2 outputs x 3 taps x 4 positions; 2 padding taps x 2 + 6 for the zero
        (24, [10])
    """
    if layer.kind == "linear":
        per_image = mask.reshape(images, -1)
        return per_image.shape[1] * layer.out_features, per_image.sum(axis=1) * layer.out_features
    if mask.ndim != 2 + len(layer.kernel):
        raise EdgefaultError(f"conv {layer.node}: activation {layer.activation} has shape {mask.shape}")
    spatial = mask.shape[2:]
    weights = conv_input_weights(layer, spatial)
    channels = mask.shape[1]
    per_tap = (layer.out_channels // layer.group) * channels
    dense = per_tap * int(np.prod(layer.kernel)) * int(np.prod(conv_output_size(layer, spatial)))
    padding = dense - channels * int(weights.sum())
    zeros = (mask.sum(axis=1) * weights).reshape(mask.shape[0], -1).sum(axis=1)
    return dense, zeros.astype(np.int64) + padding
