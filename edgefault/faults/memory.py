"""The weight memory of a quantized ONNX model: its integer weight tensors laid out bit by bit.

The memory holds the bytes of every integer weight initializer: the ``x`` input of a
DequantizeLinear (QDQ format) or the weight input of a QOperator node. Tensors are laid out
in canonical order (consumers in graph order, which ONNX requires to be topological; a tensor
read by several nodes sits at its first consumer), each tensor's elements row-major, each
element little-endian as ONNX stores it. Bit ``b`` of the byte at offset ``o`` has the
address ``8 * o + b``, so bit ``k`` of an int32 element is bit ``k % 8`` of its byte ``k // 8``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto

from edgefault.errors import EdgefaultError
from edgefault.runtime.loading import load_model

# Input positions of each consumer that may hold a stored integer tensor. Only the dtype
# then decides its role: int8/uint8 is a weight, int32 is a bias. Scales and zero points
# sit at other positions and never join the memory.
WEIGHT_INPUTS: dict[str, tuple[int, ...]] = {
    "DequantizeLinear": (0,),
    "QLinearConv": (3, 8),
    "QLinearMatMul": (0, 3),
    "QGemm": (0, 3, 6),
    "ConvInteger": (1,),
    "MatMulInteger": (0, 1),
}
_DOMAINS = ("", "ai.onnx", "com.microsoft")
_WEIGHT_TYPES = {TensorProto.INT8: "int8", TensorProto.UINT8: "uint8"}
_BIAS_TYPES = {TensorProto.INT32: "int32"}


@dataclasses.dataclass(frozen=True)
class WeightTensor:
    """One integer tensor of the weight memory and where its bytes start.

    Example:
        >>> t = WeightTensor("conv1.weight_quantized", "int8", (8, 1, 3, 3), "QLinearConv", 0)
        >>> t.size, t.width, t.nbits
        (72, 8, 576)
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    consumer: str
    offset: int

    def __post_init__(self) -> None:
        if self.dtype not in ("int8", "uint8", "int32"):
            raise EdgefaultError(f"weight tensor {self.name!r}: dtype must be int8, uint8 or int32, got {self.dtype!r}")
        if any(d < 0 for d in self.shape) or self.offset < 0:
            raise EdgefaultError(f"weight tensor {self.name!r}: negative shape or offset")

    @functools.cached_property
    def size(self) -> int:
        """Number of elements."""
        return math.prod(self.shape)

    @property
    def itemsize(self) -> int:
        """Bytes per element."""
        return 4 if self.dtype == "int32" else 1

    @property
    def width(self) -> int:
        """Stored bits per element (8 for int8/uint8, 32 for int32)."""
        return 8 * self.itemsize

    @property
    def nbytes(self) -> int:
        return self.size * self.itemsize

    @property
    def nbits(self) -> int:
        return 8 * self.nbytes

    @property
    def is_bias(self) -> bool:
        return self.dtype == "int32"


@dataclasses.dataclass(frozen=True)
class WeightMemory:
    """The integer weight tensors of a model in canonical order, with a bit address for each bit.

    Only the layout is kept (names, dtypes, shapes, offsets), never the values, so a memory
    is cheap to build and to pass around; ``include_bias`` records whether int32 biases joined.

    Example:
        >>> memory = WeightMemory.from_model("quant.onnx")  # doctest: +SKIP
        >>> memory.nbits, memory.names[:1]  # doctest: +SKIP
        (72512, ('conv1.weight_quantized',))
    """

    tensors: tuple[WeightTensor, ...]
    include_bias: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "tensors", tuple(self.tensors))
        if not self.tensors:
            raise EdgefaultError("the weight memory is empty: the model has no integer weight initializers")
        names = [t.name for t in self.tensors]
        if len(set(names)) != len(names):
            raise EdgefaultError("weight memory tensors must have distinct names")
        expected = 0
        for tensor in self.tensors:
            if tensor.offset != expected:
                raise EdgefaultError(f"tensor {tensor.name!r} starts at byte {tensor.offset}, expected {expected}")
            if tensor.is_bias and not self.include_bias:
                raise EdgefaultError(f"int32 tensor {tensor.name!r} is a bias; it needs include_bias=True")
            expected += tensor.nbytes

    @classmethod
    def from_tensors(cls, specs, include_bias: bool = False) -> WeightMemory:
        """Lay out ``(name, dtype, shape, consumer)`` tuples back to back, in the order given.

        Example:
            >>> WeightMemory.from_tensors([("a", "int8", (4,), "test"), ("b", "int8", (2,), "test")]).nbits
            48
        """
        tensors, offset = [], 0
        for name, dtype, shape, consumer in specs:
            tensor = WeightTensor(name, dtype, tuple(int(d) for d in shape), consumer, offset)
            tensors.append(tensor)
            offset += tensor.nbytes
        return cls(tuple(tensors), include_bias)

    @classmethod
    def from_model(cls, model: onnx.ModelProto | str | os.PathLike, include_bias: bool = False) -> WeightMemory:
        """Find the integer weight tensors of a model (a proto, or a path loaded safely).

        Raises :class:`EdgefaultError` when the model has none (a float model, say).

        Example:
            >>> WeightMemory.from_model(onnx.load("quant.onnx"), include_bias=True)  # doctest: +SKIP
        """
        if not isinstance(model, onnx.ModelProto):
            model = load_model(Path(model))
        return cls.from_found(find_weight_tensors(model, include_bias), include_bias)

    @classmethod
    def from_found(cls, found, include_bias: bool = False) -> WeightMemory:
        """The memory of :func:`find_weight_tensors` output; an error when it found nothing.

        Example:
            >>> WeightMemory.from_found(find_weight_tensors(onnx.load("quant.onnx")))  # doctest: +SKIP
        """
        specs = [(t.name, dtype, tuple(t.dims), consumer) for t, dtype, consumer in found]
        if not specs:
            kinds = "int8/uint8 weights or int32 biases" if include_bias else "int8/uint8 weights"
            raise EdgefaultError(
                f"model has no integer weight initializers ({kinds} feeding DequantizeLinear or a "
                "QOperator node such as QLinearConv); is it a quantized model?"
            )
        return cls.from_tensors(specs, include_bias)

    @functools.cached_property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tensors)

    @functools.cached_property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    @functools.cached_property
    def bit_starts(self) -> np.ndarray:
        """The address of each tensor's first bit (read-only)."""
        return _frozen([8 * t.offset for t in self.tensors])

    @functools.cached_property
    def widths(self) -> np.ndarray:
        """Stored bits per element of each tensor (read-only)."""
        return _frozen([t.width for t in self.tensors])

    @property
    def nbits(self) -> int:
        return 8 * self.nbytes

    def locate(self, addresses) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Map bit addresses to (tensor position, flat element index, bit within the element).

        Example:
            >>> memory = WeightMemory.from_tensors([("a", "int8", (4,), "t"), ("b", "int32", (2,), "t")], True)
            >>> [x.tolist() for x in memory.locate([9, 32 + 40])]
            [[0, 1], [1, 1], [1, 8]]
        """
        addresses = np.asarray(addresses, dtype=np.int64)
        if addresses.size and (addresses.min() < 0 or addresses.max() >= self.nbits):
            raise EdgefaultError(f"bit address outside the weight memory of {self.nbits} bits")
        position = np.searchsorted(self.bit_starts, addresses, side="right") - 1
        index, bit = np.divmod(addresses - self.bit_starts[position], self.widths[position])
        return position, index, bit

    def addresses(self, positions, indices, bits) -> np.ndarray:
        """Bit addresses of (tensor position, flat element index, bit within the element) triples.

        Example:
            >>> memory = WeightMemory.from_tensors([("a", "int8", (4,), "t"), ("b", "int32", (2,), "t")], True)
            >>> memory.addresses([1], [1], [8]).tolist()
            [72]
        """
        positions = np.asarray(positions, dtype=np.int64)
        indices, bits = np.asarray(indices, np.int64), np.asarray(bits, np.int64)
        return self.bit_starts[positions] + indices * self.widths[positions] + bits


def _frozen(values) -> np.ndarray:
    array = np.array(values, dtype=np.int64)
    array.setflags(write=False)
    return array


def find_weight_tensors(model: onnx.ModelProto, include_bias: bool = False):
    """The integer initializers that form the weight memory, as (TensorProto, dtype, consumer op) in canonical order.

    Example:
        >>> [t.name for t, _, _ in find_weight_tensors(onnx.load("quant.onnx"))]  # doctest: +SKIP
        ['conv1.weight_quantized', 'conv2.weight_quantized', 'fc.weight_quantized']
    """
    stored = {tensor.name: tensor for tensor in model.graph.initializer}
    types = {**_WEIGHT_TYPES, **(_BIAS_TYPES if include_bias else {})}
    found, seen = [], set()
    for node in model.graph.node:
        if node.domain not in _DOMAINS:
            continue
        for position in WEIGHT_INPUTS.get(node.op_type, ()):
            if position >= len(node.input):
                continue
            tensor = stored.get(node.input[position])
            if tensor is None or tensor.name in seen or tensor.data_type not in types:
                continue
            seen.add(tensor.name)
            if all(d > 0 for d in tensor.dims):  # an empty tensor stores no bits
                found.append((tensor, types[tensor.data_type], node.op_type))
    return found
