"""Is a rank-4 model input NCHW or NHWC? What the graph shows, else what its static shape says.

The graph shows it when the input reaches, through element-wise and quantization ops only,
an op that reads NCHW (Conv, pooling, BatchNormalization, ...) or a ``Transpose`` with
``perm = [0, 3, 1, 2]`` (how converters feed an NHWC input to ONNX's NCHW convolutions).

The shape says it when exactly one end of the per-sample shape can be a channel count
(1 to :data:`MAX_CHANNELS`): ``1x28x28`` and ``3x32x32`` read NCHW, ``16x16x3`` reads NHWC.
When both ends can (``8x32x1``: 8 channels of 32x1, or an 8x32 single-channel image) or
neither can, the layout is ambiguous and ``--layout`` settles it.
"""

from __future__ import annotations

import onnx

MAX_CHANNELS = 8
IMAGE_LAYOUTS = ("NCHW", "NHWC")
# Ops a value passes through unchanged in layout.
PASS_THROUGH = frozenset({
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "Cast", "Identity", "Sub", "Mul", "Div", "Add",
    "Relu", "Clip", "Sigmoid", "Tanh", "Abs", "Neg",
})
# Ops whose data input (index 0) is NCHW by the ONNX standard.
READS_NCHW = frozenset({
    "Conv", "ConvInteger", "QLinearConv", "ConvTranspose", "MaxPool", "AveragePool", "GlobalAveragePool",
    "GlobalMaxPool", "QLinearAveragePool", "QLinearGlobalAveragePool", "BatchNormalization", "InstanceNormalization",
    "LpPool", "MaxRoiPool",
})
TO_NCHW = [0, 3, 1, 2]


def graph_layout(graph: onnx.GraphProto, input_name: str) -> str | None:
    """``NCHW`` or ``NHWC`` when the graph shows how it reads ``input_name``; None when it does not (or disagrees).

    Example:
        >>> from onnx import helper
        >>> g = helper.make_graph([helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
        ...                        helper.make_node("Conv", ["t", "w"], ["y"])], "g", [], [])
        >>> graph_layout(g, "x")
        'NHWC'
    """
    consumers: dict[str, list[tuple[int, onnx.NodeProto]]] = {}
    for node in graph.node:
        for index, name in enumerate(node.input):
            consumers.setdefault(name, []).append((index, node))
    found, seen, frontier = set(), {input_name}, [input_name]
    while frontier:
        tensor = frontier.pop()
        for index, node in consumers.get(tensor, []):
            if node.op_type in READS_NCHW and index == 0:
                found.add("NCHW")
            elif node.op_type == "Transpose":
                perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
                found.add("NHWC" if perm == TO_NCHW else "other")
            elif node.op_type in PASS_THROUGH:
                fresh = [out for out in node.output[:1] if out and out not in seen]
                seen.update(fresh)
                frontier.extend(fresh)
    return found.pop() if len(found) == 1 and found <= set(IMAGE_LAYOUTS) else None


def shape_layout(shape: tuple[int | None, ...]) -> str | None:
    """``NCHW`` or ``NHWC`` when exactly one end of a per-sample image shape can be a channel count.

    Example:
        >>> shape_layout((1, 28, 28)), shape_layout((16, 16, 3)), shape_layout((8, 32, 1))
        ('NCHW', 'NHWC', None)
    """
    first, last = (d is not None and 1 <= d <= MAX_CHANNELS for d in (shape[0], shape[-1]))
    if first != last:
        return "NCHW" if first else "NHWC"
    return None


def channel_index(layout: str | None) -> int | None:
    """Index of the channel axis in one sample (batch axis excluded) for an image layout.

    Example:
        >>> channel_index("NHWC"), channel_index("NCHW"), channel_index(None)
        (2, 0, None)
    """
    return {"NCHW": 0, "NHWC": 2}.get(layout or "")


def to_layout(shape: tuple[int, ...], source: str, target: str) -> tuple[int, ...]:
    """A per-sample image shape read in layout ``source`` rewritten in layout ``target``.

    Example:
        >>> to_layout((32, 32, 3), "NHWC", "NCHW")
        (3, 32, 32)
    """
    if source == target:
        return tuple(shape)
    return (shape[2], shape[0], shape[1]) if target == "NCHW" else (shape[1], shape[2], shape[0])


def transpose_axes(source: str, target: str) -> tuple[int, int, int, int]:
    """Axes for ``np.transpose`` of a batch from layout ``source`` to ``target``.

    Example:
        >>> transpose_axes("NCHW", "NHWC")
        (0, 2, 3, 1)
    """
    if source == target:
        return (0, 1, 2, 3)
    return (0, 3, 1, 2) if target == "NCHW" else (0, 2, 3, 1)
