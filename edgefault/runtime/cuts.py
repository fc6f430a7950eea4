"""Single-tensor cuts of an ONNX graph, and the suffix sub-model that runs the graph on from one.

A tensor T is a *cut* when every path from the data input to the output passes through T
and the nodes the output still needs after T read nothing computed from the input but T
(constants, initializers and nodes computed from them only are free to use). The model's
output is then a function of T alone: clean activations at T, computed once, stand in for
the whole prefix, and faults in weights the prefix does not read change only the suffix.

Only quantized (integer) activations are cuts. ONNX Runtime fuses DequantizeLinear -> Conv
-> QuantizeLinear and the like into integer kernels; a float tensor inside such a pattern
would split the pattern, and the suffix would compute in float what the whole model
computes in integers. The integer tensor between two fused kernels is what both graphs
compute and consume alike, so a suffix started there gives the whole model's outputs bit
for bit (the campaign checks this on every model it caches).

:func:`split_model` cuts a graph at several integer tensors at once, into segments that each
read the split tensors computed before them (:mod:`edgefault.runtime.stages` runs them, with
the activation buffers faulted in between).

"""

from __future__ import annotations

import dataclasses
from typing import Collection

import numpy as np
import onnx
from onnx import helper

from edgefault.errors import EdgefaultError
from edgefault.runtime.activations import QuantizedTensor, find_quantized_tensors


@dataclasses.dataclass(frozen=True)
class Cut:
    """A cut tensor, with what computes it and what runs on from it.

    ``position`` is the index of the node computing ``name``; ``prefix`` holds every
    constant (initializer or Constant output, and what is computed from them) that the nodes
    computing ``name`` read: a fault in any of them changes the cut's activations, so such a
    chip cannot start from the cut. ``suffix_nodes`` (node indices, in graph order) and
    ``suffix_constants`` are what the output needs from the cut on.
    """

    name: str
    position: int
    prefix: frozenset[str]
    suffix_nodes: tuple[int, ...]
    suffix_constants: frozenset[str]
    tensor: QuantizedTensor

    def allows(self, tensors) -> bool:
        """True when faults in these weight tensors leave the cut's activations clean.
        """
        return self.prefix.isdisjoint(tensors)


class _Graph:
    """Producers, constants and (explicit and subgraph) inputs of a graph's nodes."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.nodes = list(graph.node)
        self.initializers = {t.name for t in graph.initializer} | {t.values.name for t in graph.sparse_initializer}
        self.producer = {out: i for i, node in enumerate(self.nodes) for out in node.output if out}
        self.reads = [_node_inputs(node) for node in self.nodes]
        self.constant = set(self.initializers)
        for node, reads in zip(self.nodes, self.reads):
            if node.op_type == "Constant" or (reads and all(name in self.constant for name in reads)):
                self.constant.update(node.output)

    def closure(self, start: str, stop: str | Collection[str] | None = None) -> tuple[set[int], set[str], set[str]]:
        """Nodes needed to compute ``start`` (not looking past ``stop``, a name or several), the constants
        they read, and what else they read that no node computes (the graph's data input)."""
        stops = {stop} if isinstance(stop, str) else set(stop or ())
        nodes: set[int] = set()
        constants: set[str] = set()
        free: set[str] = set()
        stack, seen = [start], set()
        while stack:
            name = stack.pop()
            if not name or name in stops or name in seen:
                continue
            seen.add(name)
            if name in self.constant:
                constants.add(name)
            if name in self.initializers:
                continue
            position = self.producer.get(name)
            if position is None:
                free.add(name)  # a graph input (the images), or a name nothing defines
                continue
            nodes.add(position)
            stack.extend(self.reads[position])
        return nodes, constants, free


def _node_inputs(node: onnx.NodeProto) -> tuple[str, ...]:
    """A node's inputs and the outer names its subgraphs (If/Loop/Scan bodies) read."""
    names = [name for name in node.input if name]
    for attribute in node.attribute:
        for graph in [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else list(attribute.graphs):
            names.extend(_outer_names(graph))
    return tuple(names)


def _outer_names(graph: onnx.GraphProto) -> list[str]:
    defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    defined |= {out for node in graph.node for out in node.output}
    return [name for node in graph.node for name in _node_inputs(node) if name not in defined]


def upstream_constants(model: onnx.ModelProto, names: Collection[str]) -> dict[str, frozenset[str]]:
    """The constants (initializers, and what is computed from them) each named tensor is computed from.

    A fault in none of them leaves the tensor as the clean model computes it.

    Example:
        >>> sorted(upstream_constants(onnx.load("model.onnx"), ["conv.weight"])["conv.weight"])
        ['conv.weight', 'conv.weight_quantized', 'conv.weight_scale', 'conv.weight_zero']
    """
    graph = _Graph(model.graph)
    return {name: frozenset(graph.closure(name)[1]) for name in names}


def find_cuts(model: onnx.ModelProto, output_name: str) -> list[Cut]:
    """The cuts between the data input and ``output_name``, in the order the graph computes them.
    """
    graph = _Graph(model.graph)
    cuts = []
    for tensor in find_quantized_tensors(model):
        name = tensor.name
        position = graph.producer.get(name)
        if position is None or name == output_name or name in graph.constant:
            continue
        suffix, constants, free = graph.closure(output_name, stop=name)
        if free or not suffix or not any(name in graph.reads[i] for i in suffix):
            continue  # the output needs the input some other way, or does not need this tensor
        _, prefix, _ = graph.closure(name)
        cuts.append(Cut(name, position, frozenset(prefix), tuple(sorted(suffix)), frozenset(constants), tensor))
    return sorted(cuts, key=lambda cut: cut.position)


def suffix_model(model: onnx.ModelProto, cut: Cut, output_name: str, dtype: np.dtype,
                 shape: tuple[int | str, ...]) -> onnx.ModelProto:
    """The sub-model that reads the cut tensor (``dtype``, ``shape``) and computes ``output_name``.

    Its nodes keep their order and its weights are the model's own initializers, baked in.
    """
    source = model.graph
    nodes = [source.node[i] for i in cut.suffix_nodes]
    initializers = [t for t in source.initializer if t.name in cut.suffix_constants]
    sparse = [t for t in source.sparse_initializer if t.values.name in cut.suffix_constants]
    outputs = [o for o in source.output if o.name == output_name]
    elem_type = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    graph = helper.make_graph(nodes, f"{source.name}_from_{cut.name}",
                              [helper.make_tensor_value_info(cut.name, elem_type, list(shape))], outputs,
                              initializers, sparse_initializer=sparse)
    suffix = helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    suffix.functions.extend(model.functions)
    return suffix


@dataclasses.dataclass(frozen=True)
class Segment:
    """One piece of a model split at chosen tensors: the nodes computing ``output`` from ``inputs``.

    ``inputs`` are the graph's data input and split tensors computed before; ``nodes`` are node
    indices in graph order (empty when ``output`` is itself a graph input: nothing to compute).

    Example:
        >>> [(s.output, s.inputs) for s in split_model(onnx.load("model.onnx"), ["relu_out"], "logits")]
        [('relu_out', ('input',)), ('logits', ('relu_out',))]
    """

    output: str
    inputs: tuple[str, ...]
    nodes: tuple[int, ...]
    constants: frozenset[str]


def split_model(model: onnx.ModelProto, tensors, output_name: str) -> list[Segment]:
    """Split a model at ``tensors``: one segment per tensor (in the order the graph computes them), then the output's.

    Each segment reads the split tensors as inputs, never recomputing them, so a value placed
    on a split tensor between segments (a faulty activation buffer) is what every later
    consumer reads. A node needed by two segments (shape arithmetic, say) runs in both.

    Example:
        >>> [s.output for s in split_model(onnx.load("model.onnx"), ["features", "input_q"], "logits")]
        ['input_q', 'features', 'logits']
    """
    graph = _Graph(model.graph)
    inputs = {i.name for i in model.graph.input}
    order = {name: (graph.producer.get(name, -1), index) for index, name in enumerate(tensors)}
    for name in tensors:
        if name not in graph.producer and name not in inputs:
            raise EdgefaultError(f"cannot split the model at {name!r}: no node computes it")
    names = sorted(dict.fromkeys(tensors), key=order.__getitem__)
    segments = []
    for name in names + ([] if output_name in names else [output_name]):
        if name in inputs:  # the quantized input itself: nothing to compute
            segments.append(Segment(name, (name,), (), frozenset()))
            continue
        stops = set(tensors) - {name}
        nodes, constants, free = graph.closure(name, stop=stops)
        read = {n for i in nodes for n in graph.reads[i] if n in stops}
        unknown = free - inputs
        if unknown:
            raise EdgefaultError(f"cannot split the model: {', '.join(sorted(unknown))} is read but never computed")
        segments.append(Segment(name, tuple(sorted(free | read, key=lambda n: order.get(n, (-1, -1)))),
                                tuple(sorted(nodes)), frozenset(constants)))
    return segments


def segment_model(model: onnx.ModelProto, segment: Segment, types: dict[str, tuple[np.dtype, tuple]]) -> onnx.ModelProto:
    """The sub-model of one segment; ``types`` gives each input's (and the output's) dtype and per-image shape.

    Example:
        >>> model = onnx.load("model.onnx")
        >>> tail = split_model(model, ["relu_out"], "logits")[1]
        >>> part = segment_model(model, tail, {"relu_out": (np.float32, (2, 2, 2)), "logits": (np.float32, (3,))})
        >>> [i.name for i in part.graph.input], [o.name for o in part.graph.output]
        (['relu_out'], ['logits'])
    """
    def info(name: str) -> onnx.ValueInfoProto:
        dtype, shape = types[name]
        return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)),
                                             ["batch", *shape])

    source = model.graph
    graph = helper.make_graph([source.node[i] for i in segment.nodes], f"{source.name}_{segment.output}",
                              [info(name) for name in segment.inputs], [info(segment.output)],
                              [t for t in source.initializer if t.name in segment.constants],
                              sparse_initializer=[t for t in source.sparse_initializer
                                                  if t.values.name in segment.constants])
    part = helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    part.functions.extend(model.functions)
    return part
