"""The weight memory of a quantized ONNX model: its integer parameters laid out bit by bit, at their stored width.

What is in it (found by :mod:`edgefault.faults.discover`): every constant integer tensor the
graph uses as a learned parameter, held as an initializer or in a Constant node (reached
directly or through Identity nodes): the ``x`` of a DequantizeLinear (QDQ form) or a
constant parameter input of a QOperator node (QLinearConv, QLinearMatMul, QGemm,
QLinearAdd, QLinearMul, ConvInteger, MatMulInteger, DynamicQuantizeMatMul, ...), and the
packed codes of MatMulNBits / GatherBlockQuantized. Scales, zero points and float tensors are
never in it; int32 biases join it only when asked (``include_bias``).

Stored bits. Each tensor is a sequence of *codes*, each of ``bits`` stored cells:

* ``native``: one code per ONNX element, as wide as its type: INT8/UINT8 8 cells,
  INT4/UINT4 4 (two per byte, the first element in the low nibble, as ONNX packs them),
  INT16/UINT16 16, INT32 32 (little-endian, as ONNX stores raw data).
* ``packed``: k-bit codes packed into UINT8 bytes (MatMulNBits' ``B``, k = its ``bits``
  attribute, code ``i`` at bit ``k * i`` of the byte stream, low bits first); a code's
  cells are its k bits. Block scales and zero points stay out.
* ``container``: k-bit codes (k < 8) kept in INT8/UINT8 elements, as edgefault's own
  ``--wbits k`` models store them (the model's metadata records k; ``--stored-bits`` sets
  it for a foreign model). Only the k low bits are cells; after a fault the container holds
  the faulty k-bit code sign-extended (INT8) or zero-extended (UINT8), as a k-bit device
  would give it back.

Addresses. Tensors are laid out back to back in canonical order: each tensor sits at the
first node that computes with it (for a DequantizeLinear ``x``, the first consumer of the
DequantizeLinear's output), nodes in graph order (ONNX requires it to be topological), ties
by input position. So the same network in QDQ and in QOperator form gets the same memory.
Within a tensor, codes are row-major (the byte order of the ONNX data) and bit ``b`` of
code ``i`` of a tensor starting at address ``s`` has the address ``s + i * bits + b``. Every
address is one stored cell: a 4-bit code has 4 addresses, an int8 weight of a 4-bit model
has 4, an int8 weight 8.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

from edgefault.errors import EdgefaultError

# Bits per ONNX element of each storage type the memory accepts.
TYPE_BITS = {"int4": 4, "uint4": 4, "int8": 8, "uint8": 8, "int16": 16, "uint16": 16, "int32": 32}
PACKINGS = ("native", "packed", "container")
SOURCES = ("initializer", "Constant")


@dataclasses.dataclass(frozen=True)
class WeightTensor:
    """One tensor of the weight memory: its storage, its codes and the address of its first cell.

    ``dtype`` and ``shape`` are those of the ONNX tensor; ``bits`` is the number of stored
    cells per code (default: the type's width); ``packing`` says how codes sit in the bytes
    (see the module docstring); ``start`` is the address of its first cell.

    Example:
        >>> t = WeightTensor("conv1.weight_quantized", "int8", (8, 1, 3, 3), "QLinearConv")
        >>> t.size, t.width, t.nbits, t.nbytes
        (72, 8, 576, 72)
        >>> WeightTensor("w", "int4", (5,), "DequantizeLinear").nbytes  # two codes per byte, one nibble of padding
        3
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    consumer: str
    start: int = 0
    bits: int | None = None
    packing: str = "native"
    source: str = "initializer"

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        if self.dtype not in TYPE_BITS:
            raise EdgefaultError(f"weight tensor {self.name!r}: dtype must be one of {', '.join(TYPE_BITS)}, "
                                 f"got {self.dtype!r}")
        if self.packing not in PACKINGS or self.source not in SOURCES:
            raise EdgefaultError(f"weight tensor {self.name!r}: unknown packing {self.packing!r} or source "
                                 f"{self.source!r}")
        if any(d < 0 for d in self.shape) or self.start < 0:
            raise EdgefaultError(f"weight tensor {self.name!r}: negative shape or start")
        native = TYPE_BITS[self.dtype]
        bits = native if self.bits is None else self.bits
        object.__setattr__(self, "bits", int(bits))
        if self.packing == "native" and bits != native:
            raise EdgefaultError(f"weight tensor {self.name!r}: a native {self.dtype} stores {native} bits, not {bits}")
        if self.packing != "native" and (self.dtype not in ("int8", "uint8") or not 1 <= bits < 8):
            raise EdgefaultError(f"weight tensor {self.name!r}: {self.packing} codes need int8/uint8 bytes and "
                                 f"1..7 bits, got {self.dtype} with {bits}")
        if self.packing == "packed" and (self.dtype != "uint8" or 8 % bits):
            raise EdgefaultError(f"weight tensor {self.name!r}: packed codes need uint8 bytes and a width "
                                 f"dividing 8, got {self.dtype} with {bits} bits")

    @functools.cached_property
    def elements(self) -> int:
        """Number of ONNX elements."""
        return math.prod(self.shape)

    @functools.cached_property
    def size(self) -> int:
        """Number of codes (ONNX elements, or packed codes)."""
        return self.elements * 8 // self.bits if self.packing == "packed" else self.elements

    @property
    def width(self) -> int:
        """Stored cells per code."""
        return self.bits

    @property
    def container_bits(self) -> int:
        """Bits each code takes in the raw bytes (the stride from one code to the next)."""
        return {"native": TYPE_BITS[self.dtype], "packed": self.bits, "container": 8}[self.packing]

    @property
    def signed(self) -> bool:
        """Whether codes are two's complement (packed codes are unsigned, with zero points elsewhere)."""
        return not self.dtype.startswith("u") and self.packing != "packed"

    @property
    def nbytes(self) -> int:
        """Bytes of the ONNX raw data."""
        return (self.elements * TYPE_BITS[self.dtype] + 7) // 8

    @property
    def nbits(self) -> int:
        """Stored cells (addresses) of the tensor."""
        return self.size * self.bits

    @property
    def is_bias(self) -> bool:
        return self.dtype == "int32"

    @property
    def storage(self) -> str:
        """The stored form in words, e.g. ``int8``, ``int4 in int8`` (container) or ``uint4 packed in uint8``."""
        if self.packing == "container":
            return f"{'u' if self.dtype == 'uint8' else ''}int{self.bits} in {self.dtype}"
        if self.packing == "packed":
            return f"uint{self.bits} packed in uint8"
        return self.dtype


class AddressedMemory:
    """What every memory shares: tensors laid out back to back, each code ``width`` cells, one address per cell.

    A subclass holds ``tensors`` in canonical order, each with ``name``, ``start`` (address of
    its first cell), ``size`` (codes) and ``bits`` (cells per code). ``label`` names the memory
    in messages; ``seed_stream`` keeps the fault streams of two memories independent under one
    chip seed (the weight memory's is empty, the seed's own stream).

    Example:
        >>> WeightMemory.from_tensors([("a", "int8", (2,), "t")]).locate([9])[1].tolist()
        [1]
    """

    tensors: tuple
    label = "weight"
    site = "weights"
    seed_stream: tuple[int, ...] = ()
    include_bias = False

    @functools.cached_property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tensors)

    @functools.cached_property
    def bit_starts(self) -> np.ndarray:
        """The address of each tensor's first cell (read-only)."""
        return _frozen([t.start for t in self.tensors])

    @functools.cached_property
    def widths(self) -> np.ndarray:
        """Stored cells per code of each tensor (read-only)."""
        return _frozen([t.bits for t in self.tensors])

    @functools.cached_property
    def nbits(self) -> int:
        """Stored cells in all: the number of addresses."""
        return sum(t.nbits for t in self.tensors)

    def locate(self, addresses) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Map addresses to (tensor position, code index, bit within the code).

        Example:
            >>> memory = WeightMemory.from_tensors([("a", "int4", (4,), "t"), ("b", "int32", (2,), "t")], True)
            >>> [x.tolist() for x in memory.locate([9, 16 + 40])]
            [[0, 1], [2, 1], [1, 8]]
        """
        addresses = np.asarray(addresses, dtype=np.int64)
        if addresses.size and (addresses.min() < 0 or addresses.max() >= self.nbits):
            raise EdgefaultError(f"bit address outside the {self.label} memory of {self.nbits} bits")
        position = np.searchsorted(self.bit_starts, addresses, side="right") - 1
        index, bit = np.divmod(addresses - self.bit_starts[position], self.widths[position])
        return position, index, bit

    def addresses(self, positions, indices, bits) -> np.ndarray:
        """Addresses of (tensor position, code index, bit within the code) triples.

        Example:
            >>> memory = WeightMemory.from_tensors([("a", "int8", (4,), "t"), ("b", "int32", (2,), "t")], True)
            >>> memory.addresses([1], [1], [8]).tolist()
            [72]
        """
        positions = np.asarray(positions, dtype=np.int64)
        indices, bits = np.asarray(indices, np.int64), np.asarray(bits, np.int64)
        return self.bit_starts[positions] + indices * self.widths[positions] + bits


@dataclasses.dataclass(frozen=True)
class WeightMemory(AddressedMemory):
    """The integer weight tensors of a model in canonical order, with an address for each stored cell.

    Only the layout is kept (names, types, shapes, widths, starts), never the values, so a
    memory is cheap to build and to pass around; ``include_bias`` records whether int32
    biases joined.
    """

    tensors: tuple[WeightTensor, ...]
    include_bias: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "tensors", tuple(self.tensors))
        if not self.tensors:
            raise EdgefaultError("the weight memory is empty")
        names = [t.name for t in self.tensors]
        if len(set(names)) != len(names):
            raise EdgefaultError("weight memory tensors must have distinct names")
        expected = 0
        for tensor in self.tensors:
            if tensor.start != expected:
                raise EdgefaultError(f"tensor {tensor.name!r} starts at address {tensor.start}, expected {expected}")
            if tensor.is_bias and not self.include_bias:
                raise EdgefaultError(f"int32 tensor {tensor.name!r} is a bias; it needs include_bias=True")
            expected += tensor.nbits

    @classmethod
    def from_tensors(cls, specs, include_bias: bool = False) -> WeightMemory:
        """Lay out tensors back to back, in the order given.

        Each spec is ``(name, dtype, shape, consumer)``, optionally followed by ``bits``,
        ``packing`` and ``source`` (see :class:`WeightTensor`).

        Example:
            >>> WeightMemory.from_tensors([("a", "int8", (4,), "test"), ("b", "int4", (3,), "test")]).nbits
            44
            >>> WeightMemory.from_tensors([("a", "int8", (4,), "test", 4, "container")]).nbits
            16
        """
        tensors, start = [], 0
        for name, dtype, shape, consumer, *rest in specs:
            tensor = WeightTensor(name, dtype, tuple(int(d) for d in shape), consumer, start, *rest)
            tensors.append(tensor)
            start += tensor.nbits
        return cls(tuple(tensors), include_bias)

    @functools.cached_property
    def nbytes(self) -> int:
        """Raw bytes of the tensors in the model file."""
        return sum(t.nbytes for t in self.tensors)

    def code_widths(self) -> dict[str, tuple[int, bool]]:
        """(stored bits, signed) of each tensor's codes, for :func:`~edgefault.faults.records.apply_faults`.

        Example:
            >>> WeightMemory.from_tensors([("a", "int8", (4,), "t", 4, "container")]).code_widths()
            {'a': (4, True)}
        """
        return {t.name: (t.bits, t.signed) for t in self.tensors}

    def coverage(self) -> dict[str, dict[str, dict[str, int]]]:
        """Tensors and stored bits by storage form and by source.

        Example:
            >>> WeightMemory.from_tensors([("a", "int8", (4,), "t"), ("b", "int4", (3,), "t")]).coverage()["storage"]
            {'int8': {'tensors': 1, 'bits': 32}, 'int4': {'tensors': 1, 'bits': 12}}
        """
        result: dict[str, dict[str, dict[str, int]]] = {"storage": {}, "source": {}}
        for tensor in self.tensors:
            for group, key in (("storage", tensor.storage), ("source", tensor.source)):
                entry = result[group].setdefault(key, {"tensors": 0, "bits": 0})
                entry["tensors"] += 1
                entry["bits"] += tensor.nbits
        return result


def _frozen(values) -> np.ndarray:
    array = np.array(values, dtype=np.int64)
    array.setflags(write=False)
    return array
