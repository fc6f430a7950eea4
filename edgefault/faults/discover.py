"""Finding the weight memory in a graph, and saying what it covered and what it could not fault.

The rules are in :mod:`edgefault.faults.memory`. Here, a *parameter input* is an input
position of a quantized op that holds a learned parameter when it is constant (the table
below); its tensor is looked up among the initializers and the Constant nodes' ``value``
tensors, through any chain of Identity nodes. Three things can happen to it:

* it is a constant of a storable type: it joins the memory (int32 only as a bias);
* it is constant but cannot be faulted (a type such as FLOAT8, a packing such as 3-bit
  MatMulNBits codes, values that do not fit the declared stored width) or it is computed at
  run time from constants only (a QuantizeLinear of a float weight, say): it is *skipped*,
  and every command names it in a warning; when nothing else remains, the refusal names it;
* it is an activation (it depends on a graph input): not a parameter.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from edgefault.errors import EdgefaultError
from edgefault.faults.coverage import Skipped, coverage_line, warning_lines
from edgefault.faults.memory import TYPE_BITS, WeightMemory, WeightTensor
from edgefault.onnxio import load_proto
from edgefault.reading import parse_json

# Parameter input positions of each quantized op (scales and zero points sit elsewhere).
PARAMETER_INPUTS: dict[str, tuple[int, ...]] = {
    "DequantizeLinear": (0,),
    "QLinearConv": (3, 8),
    "QLinearMatMul": (0, 3),
    "QGemm": (0, 3, 6),
    "QLinearAdd": (0, 3),
    "QLinearMul": (0, 3),
    "ConvInteger": (1,),
    "MatMulInteger": (0, 1),
    "MatMulIntegerToFloat": (0, 1),
    "DynamicQuantizeMatMul": (1,),
    "DynamicQuantizeLSTM": (1, 2),
    "QAttention": (1,),
    "MatMulNBits": (1,),
    "GatherBlockQuantized": (0,),
}
PACKED_OPS = ("MatMulNBits", "GatherBlockQuantized")  # uint8 inputs there hold `bits`-bit codes
_DOMAINS = ("", "ai.onnx", "com.microsoft")
_TYPE_NAMES = {getattr(TensorProto, name.upper()): name for name in TYPE_BITS}
# edgefault's export records stored bits per tensor here ({name: k}); older models only have wbits.
STORED_BITS_KEY = "edgefault.stored_bits"
WBITS_KEY = "edgefault.wbits"


@dataclasses.dataclass(frozen=True)
class Discovery:
    """What :func:`discover` found: the storable tensors (biases too) in canonical order, and the skipped ones.

    ``protos`` maps each tensor's name to the TensorProto holding its bytes (an initializer
    or a Constant node's value). ``stored_bits`` is where k-bit widths came from.
    """

    tensors: tuple[WeightTensor, ...]
    protos: dict[str, TensorProto]
    skipped: tuple[Skipped, ...] = ()
    stored_bits: str = "native widths"

    def memory(self, include_bias: bool = False) -> WeightMemory:
        """The weight memory, with or without int32 biases; refuses (naming what was skipped) when empty.
        """
        specs = [(t.name, t.dtype, t.shape, t.consumer, t.bits, t.packing, t.source)
                 for t in self.tensors if include_bias or not t.is_bias]
        if not specs:
            raise EdgefaultError(self._empty_message(include_bias))
        return WeightMemory.from_tensors(specs, include_bias)

    def _empty_message(self, include_bias: bool) -> str:
        if self.skipped:
            more = f" (and {len(self.skipped) - 1} more)" if len(self.skipped) > 1 else ""
            return f"cannot fault tensor {self.skipped[0].line()}{more}; nothing else can be faulted"
        if any(t.is_bias for t in self.tensors):
            return "the model's only integer parameters are int32 biases; add `include_bias` to fault them"
        return ("model has no integer weight initializers or Constant nodes: no integer constant feeds "
                "DequantizeLinear or a QOperator node (QLinearConv, QGemm, MatMulNBits, ...); a float model "
                "has no quantized weights to fault")

    def warnings(self) -> list[str]:
        """One warning line per skipped tensor.
        """
        return warning_lines({"skipped": [dataclasses.asdict(s) for s in self.skipped]})

    def coverage(self, memory: WeightMemory) -> dict[str, Any]:
        """What the memory covers, JSON-ready: tensors, stored bits, by storage and source, and what is left out.
        """
        biases = [t for t in self.tensors if t.is_bias and t.name not in memory.names]
        return {
            "tensors": len(memory.tensors),
            "bits": memory.nbits,
            **memory.coverage(),
            "stored_bits_from": self.stored_bits,
            "biases_left_out": len(biases),
            "skipped": [dataclasses.asdict(s) for s in self.skipped],
        }

    def coverage_line(self, memory: WeightMemory) -> str:
        """The one-line coverage report that every command building a memory prints (:func:`coverage_line`).
        """
        return coverage_line(self.coverage(memory))


def memory_report(model: onnx.ModelProto | str | os.PathLike) -> tuple[dict[str, Any], list[str]]:
    """The coverage of a model's weight memory for commands that do not inject (``eval``): (report, lines).

    A model with nothing to fault (a float model) is no error here: the report holds ``error``
    and the line says why.
    """
    found = discover(model)
    try:
        report = found.coverage(found.memory())
    except EdgefaultError as exc:
        return {"error": str(exc), "skipped": [dataclasses.asdict(s) for s in found.skipped]}, \
            [f"weight memory: none: {exc}"]
    return report, [coverage_line(report), *warning_lines(report)]


def discover(model: onnx.ModelProto | str | os.PathLike, stored_bits: int | None = None) -> Discovery:
    """Find every storable parameter of a model (see the module docstring), in canonical order.

    ``stored_bits`` (k < 8) declares that every int8/uint8 weight holds k-bit codes; without
    it the model's metadata decides (``edgefault.stored_bits`` per tensor, else
    ``edgefault.wbits``).

    Example:
        >>> found = discover("model.onnx")
        >>> [t.name for t in found.tensors], found.skipped
        (['conv.weight_quantized', 'fc.weight_quantized'], ())
        >>> found.coverage_line(found.memory())
        'weight memory: 2 tensors, 336 stored bits (int8: 2 tensors, 336 bits), from 2 initializers'
    """
    proto = load_proto(model)
    graph = proto.graph
    constants = constant_tensors(graph)
    alias = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Identity" and n.input and n.output}
    derived = constant_derived(graph, constants)
    first_use = _first_compute_use(graph)
    widths, width_source = _declared_widths(proto, stored_bits)
    candidates: dict[str, tuple[tuple[int, int], str, TensorProto, str, int | None]] = {}
    skipped: dict[str, tuple[tuple[int, int], Skipped]] = {}
    for number, node in enumerate(graph.node):
        if node.domain not in _DOMAINS:
            continue
        for position in _parameter_positions(node):
            if position >= len(node.input) or not node.input[position]:
                continue
            name = _resolve(node.input[position], alias)
            if name not in constants:
                if node.input[position] in derived and name not in skipped:
                    producer = derived[node.input[position]]
                    skipped[name] = ((number, position), Skipped(
                        name, "run-time tensor", node.op_type,
                        f"computed at run time by {producer} from constants; only stored tensors can be faulted"))
                continue
            rank = first_use.get(node.output[0], (number, position)) if node.op_type == "DequantizeLinear" \
                else (number, position)
            bits = _packed_bits(node) if node.op_type in PACKED_OPS else None
            tensor, source = constants[name]
            if name not in candidates or rank < candidates[name][0]:
                candidates[name] = (rank, node.op_type, tensor, source, bits)
    tensors, protos = [], {}
    for name, (rank, consumer, tensor, source, packed) in sorted(candidates.items(), key=lambda item: item[1][0]):
        try:
            by_type = widths.get("*int8") if tensor.data_type == TensorProto.INT8 else None
            declared = widths.get(name, widths.get("*", by_type))
            spec = _spec(name, tensor, consumer, source, packed, declared)
        except _CannotFault as reason:
            skipped.setdefault(name, (rank, Skipped(name, _type_name(tensor), consumer, str(reason))))
            continue
        if spec is not None:
            tensors.append(spec)
            protos[name] = tensor
    unknown = sorted(set(widths) - {"*", "*int8"} - set(protos))
    if unknown:
        raise EdgefaultError(f"{STORED_BITS_KEY} names tensor {unknown[0]!r}, which is not a weight of the model")
    ordered = tuple(entry for _, entry in sorted(skipped.values(), key=lambda item: item[0]))
    return Discovery(tuple(tensors), protos, ordered, width_source)


def weight_memory(model: onnx.ModelProto | str | os.PathLike, include_bias: bool = False,
                  stored_bits: int | None = None) -> WeightMemory:
    """The weight memory of a model (a proto, or a path loaded safely).

    Raises :class:`EdgefaultError` when nothing in the model can be faulted, naming what
    looked like a weight and why it is left out.

    Example:
        >>> weight_memory("model.onnx").names
        ('conv.weight_quantized', 'fc.weight_quantized')
    """
    return discover(model, stored_bits).memory(include_bias)


def constant_tensors(graph: onnx.GraphProto) -> dict[str, tuple[TensorProto, str]]:
    """Every constant tensor of a graph: initializers and Constant nodes' ``value`` (named by the node's output),
    each with its source.

    Example:
        >>> constant_tensors(onnx.GraphProto())
        {}
    """
    constants = {t.name: (t, "initializer") for t in graph.initializer}
    for node in graph.node:
        value = next((a.t for a in node.attribute if a.name == "value" and a.type == onnx.AttributeProto.TENSOR), None)
        if node.op_type == "Constant" and node.domain in _DOMAINS and value is not None and node.output:
            constants[node.output[0]] = (value, "Constant")
    return constants


class _CannotFault(Exception):
    """Why a constant parameter input cannot join the memory."""


def _spec(name: str, tensor: TensorProto, consumer: str, source: str, packed: int | None,
          declared: int | None) -> WeightTensor | None:
    dtype = _TYPE_NAMES.get(tensor.data_type)
    if dtype is None:
        kind = _type_name(tensor)
        if tensor.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16):
            return None  # a float parameter (a MatMulNBits bias, say): not quantized
        raise _CannotFault(f"type {kind} is not a supported stored integer type ({', '.join(TYPE_BITS)})")
    shape = tuple(int(d) for d in tensor.dims)
    if not all(shape):
        return None  # an empty tensor stores no bits
    if tensor.data_location == TensorProto.EXTERNAL:
        raise _CannotFault("its external data is not loaded")
    packing, bits = "native", None
    if packed is not None and dtype == "uint8" and packed != 8:
        if 8 % packed:
            raise _CannotFault(f"{packed}-bit codes straddle bytes; only 1, 2, 4 and 8-bit packings are supported")
        packing, bits = "packed", packed
    elif declared is not None and declared < 8 and dtype in ("int8", "uint8"):
        packing, bits = "container", declared
        values = numpy_helper.to_array(tensor).astype(np.int64)
        low, high = (-(1 << (declared - 1)), (1 << (declared - 1)) - 1) if dtype == "int8" else (0, (1 << declared) - 1)
        if values.size and (values.min() < low or values.max() > high):
            raise _CannotFault(f"holds values {values.min()}..{values.max()}, outside the {declared}-bit range "
                               f"{low}..{high} its stored width declares")
    return WeightTensor(name, dtype, shape, consumer, 0, bits, packing, source)


def _parameter_positions(node: onnx.NodeProto) -> tuple[int, ...]:
    if node.op_type == "QLinearConcat":  # Y_scale, Y_zero_point, then (X, scale, zero point) per input
        return tuple(range(2, len(node.input), 3))
    return PARAMETER_INPUTS.get(node.op_type, ())


def _packed_bits(node: onnx.NodeProto) -> int:
    return next((int(a.i) for a in node.attribute if a.name == "bits"), 4)


def _resolve(name: str, alias: dict[str, str]) -> str:
    seen = set()
    while name in alias and name not in seen:
        seen.add(name)
        name = alias[name]
    return name


def constant_derived(graph: onnx.GraphProto, constants) -> dict[str, str]:
    """Outputs computed from constants only (not Identity), each with the op that made it.

    Example:
        >>> constant_derived(onnx.GraphProto(), {})
        {}
    """
    derived: dict[str, str] = {}
    known = set(constants)
    for node in graph.node:
        inputs = [name for name in node.input if name]
        if node.op_type != "Constant" and inputs and all(name in known or name in derived for name in inputs):
            producer = derived.get(inputs[0], node.op_type) if node.op_type == "Identity" else node.op_type
            for output in node.output:
                derived[output] = producer
    return derived


def _first_compute_use(graph: onnx.GraphProto) -> dict[str, tuple[int, int]]:
    """For each tensor, (node number, input position) of its first consumer: where a DequantizeLinear output is used."""
    uses: dict[str, tuple[int, int]] = {}
    for number, node in enumerate(graph.node):
        for position, name in enumerate(node.input):
            uses.setdefault(name, (number, position))
    return uses


def _declared_widths(proto: onnx.ModelProto, stored_bits: int | None) -> tuple[dict[str, int], str]:
    """Declared k-bit widths ({"*": k}: every int8/uint8 weight; {"*int8": k}: every int8 weight; or per tensor)
    and where they came from."""
    if stored_bits is not None:
        if isinstance(stored_bits, bool) or not isinstance(stored_bits, int) or not 1 <= stored_bits <= 8:
            raise EdgefaultError(f"`stored_bits` must be an integer in 1..8, got {stored_bits!r}")
        return {"*": stored_bits}, "--stored-bits"
    props = {entry.key: entry.value for entry in proto.metadata_props}
    if STORED_BITS_KEY in props:
        try:
            widths = parse_json(props[STORED_BITS_KEY], f"model metadata {STORED_BITS_KEY}")
        except EdgefaultError:
            widths = None
        if not isinstance(widths, dict) or not all(isinstance(v, int) and 1 <= v <= 8 for v in widths.values()):
            raise EdgefaultError(f"model metadata {STORED_BITS_KEY} must map tensor names to bit widths 1..8")
        return dict(widths), f"metadata {STORED_BITS_KEY}"
    if WBITS_KEY in props:
        try:
            wbits = parse_json(props[WBITS_KEY], f"model metadata {WBITS_KEY}")
        except EdgefaultError:
            wbits = None
        if isinstance(wbits, int) and 1 <= wbits < 8:
            return {"*int8": wbits}, f"metadata {WBITS_KEY}"  # edgefault's weights are int8
    return {}, "native widths"


def _type_name(tensor: TensorProto) -> str:
    return TensorProto.DataType.Name(tensor.data_type)
