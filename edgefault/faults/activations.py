"""The activation memory of a quantized ONNX model: the integer buffers between layers, one image's worth.

What is in it: every integer tensor that an integer kernel reads as its activation input,
which is what a buffer holds between layers, plus the quantized model output; a tensor read
twice is stored once.

* QDQ form: the non-constant ``x`` of each DequantizeLinear whose output feeds (directly or
  through shape-only ops: Flatten, Reshape, Squeeze, Unsqueeze, Identity, Transpose) a conv,
  linear, matmul, add or mul (Conv, ConvTranspose, Gemm, MatMul, Add, Mul): the ops ONNX
  Runtime fuses with their DequantizeLinear inputs into integer kernels.
* QOperator form: the non-constant activation inputs of QLinearConv, QLinearMatMul, QGemm,
  QLinearAdd, QLinearMul, ConvInteger, MatMulInteger and MatMulIntegerToFloat.
* The quantized model output: an integer graph output, or the non-constant ``x`` of the
  DequantizeLinear that computes a graph output.

So the quantized model input is in it (a QuantizeLinear output that the first layer reads),
and on edgefault's own LeNet it is ``input_quant``, ``pool1``, ``flatten``, ``act3``, ``act4``
and ``logits_quant``. Each tensor keeps its zero point and scale (per tensor), its stored
type (int8/uint8/int16/uint16) and its shape for one image: the leading (batch) dimension
dropped, the rest from ONNX shape inference, else (for ONNX Runtime's contrib ops, which it
does not know) from ``shapes`` given by the caller: :func:`edgefault.runtime.actprobe.activation_memory`
fills them in from a probe run.

Addresses. Tensors lie back to back in canonical order (by the node that computes them, in
graph order, which ONNX requires to be topological; model inputs first), so the same
network in QDQ and in QOperator form gets the same memory. A tensor's buffer holds its
format's encoding (:mod:`edgefault.faults.formats`), ``capacity_bits`` cells rounded up to
whole words of the code width ``b``; cell ``c`` of the buffer is bit ``c % b`` of word
``c // b``, and word ``i``, bit ``k`` of a tensor starting at address ``s`` has the address
``s + i * b + k``. In the dense format word ``i`` is code ``i`` (row-major): the fault
record (tensor, index, bit) is exactly (tensor, element, bit of its code).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from typing import Any, Mapping

import numpy as np
import onnx

from edgefault.errors import EdgefaultError
from edgefault.faults.actdiscover import ACT_TYPES, find_activations
from edgefault.faults.chip import Chip
from edgefault.faults.coverage import plural
from edgefault.faults.formats import ACT_FORMATS, DEFAULT_RUN_BITS, BufferFormat
from edgefault.faults.memory import AddressedMemory
from edgefault.faults.records import FaultRecords
from edgefault.faults.sampling import sample_tape_faults
from edgefault.onnxio import load_proto

TRANSIENT_STREAM = (2,)  # seed streams: weights (), activations (1,), transient activation tapes (2,)


@dataclasses.dataclass(frozen=True)
class ActivationTensor:
    """One buffer of the activation memory: an integer tensor of one image, its quantization and its format.

    ``shape`` is one image's (batch dropped); ``consumer`` the op type of the first integer
    kernel reading it (``output`` for the quantized model output); ``scale`` is None where
    the kernel has none (ConvInteger). ``size`` counts the buffer's words of ``bits`` cells
    (in ``dense``, the codes).

    Example:
        >>> t = ActivationTensor("pool1", "uint8", (6, 14, 14), 0, 0.05, "Conv")
        >>> t.elements, t.size, t.nbits, t.with_format("bitmap").nbits
        (1176, 1176, 9408, 10584)
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    zero_point: int
    scale: float | None
    consumer: str
    start: int = 0
    format: str = "dense"
    run_bits: int = DEFAULT_RUN_BITS

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        if self.dtype not in ACT_TYPES:
            raise EdgefaultError(f"activation tensor {self.name!r}: type {self.dtype} is not a stored activation "
                                 f"type ({', '.join(ACT_TYPES)})")
        if any(d < 0 for d in self.shape) or self.start < 0:
            raise EdgefaultError(f"activation tensor {self.name!r}: negative shape or start")
        self.buffer_format  # validates the format, zero point and run width

    @functools.cached_property
    def buffer_format(self) -> BufferFormat:
        """The encoder and decoder of this tensor's buffer."""
        return BufferFormat(self.format, self.bits, self.zero_point, self.run_bits, self.signed)

    @property
    def bits(self) -> int:
        """Cells per code, and per word of the buffer."""
        return ACT_TYPES[self.dtype]

    @property
    def signed(self) -> bool:
        return not self.dtype.startswith("u")

    @functools.cached_property
    def elements(self) -> int:
        """Values of one image."""
        return math.prod(self.shape)

    @functools.cached_property
    def capacity_bits(self) -> int:
        """Cells the format needs in the worst case."""
        return self.buffer_format.capacity_bits(self.elements)

    @property
    def size(self) -> int:
        """Words of the buffer: the capacity rounded up to whole words."""
        return -(-self.capacity_bits // self.bits)

    @property
    def width(self) -> int:
        return self.bits

    @property
    def nbits(self) -> int:
        """Cells (addresses) of the buffer."""
        return self.size * self.bits

    @property
    def storage(self) -> str:
        return self.dtype

    @property
    def source(self) -> str:
        return "activation"

    def with_format(self, name: str, run_bits: int = DEFAULT_RUN_BITS, start: int | None = None) -> ActivationTensor:
        """The same tensor stored in another format (and at another start, if given).

        Example:
            >>> ActivationTensor("x", "int8", (4,), 0, 1.0, "Conv").with_format("rle", run_bits=2).nbits
            48
        """
        return dataclasses.replace(self, format=name, run_bits=run_bits, start=self.start if start is None else start)


@dataclasses.dataclass(frozen=True)
class ActivationMemory(AddressedMemory):
    """The activation buffers of a model in canonical order, one image's worth, with an address per cell.

    Works with :func:`~edgefault.faults.sampling.sample_faults` as a weight memory does (its
    own seed stream, so one chip seed faults weights and activations independently), and
    with :func:`~edgefault.faults.faultmap.records_from_entries`.

    Example:
        >>> memory = ActivationMemory.from_tensors([("x", "uint8", (1, 4, 4), 0, 0.1, "Conv"),
        ...                                         ("y", "uint8", (10,), 3, 0.2, "output")])
        >>> memory.nbits, memory.coverage_line()
        (208, 'activation memory: 2 tensors, 26 values, 208 stored bits per image (uint8: 2 tensors)')
    """

    tensors: tuple[ActivationTensor, ...]
    label = "activation"
    site = "activations"
    seed_stream = (1,)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tensors", tuple(self.tensors))
        if not self.tensors:
            raise EdgefaultError("the activation memory is empty")
        names = [t.name for t in self.tensors]
        if len(set(names)) != len(names):
            raise EdgefaultError("activation memory tensors must have distinct names")
        expected = 0
        for tensor in self.tensors:
            if tensor.start != expected:
                raise EdgefaultError(f"tensor {tensor.name!r} starts at address {tensor.start}, expected {expected}")
            expected += tensor.nbits

    @classmethod
    def from_tensors(cls, specs, format: str = "dense", run_bits: int = DEFAULT_RUN_BITS) -> ActivationMemory:
        """Lay out tensors back to back in the order given; each spec is (name, dtype, shape, zero point, scale,
        consumer).

        Example:
            >>> ActivationMemory.from_tensors([("x", "int8", (3,), 0, 0.5, "Gemm")], "bitmap").tensors[0].nbits
            32
        """
        tensors, start = [], 0
        for name, dtype, shape, zero_point, scale, consumer in specs:
            tensor = ActivationTensor(name, dtype, shape, int(zero_point), scale, consumer, start, format, run_bits)
            tensors.append(tensor)
            start += tensor.nbits
        return cls(tuple(tensors))

    @classmethod
    def from_model(cls, model: onnx.ModelProto | str | os.PathLike, format: str = "dense",
                   run_bits: int = DEFAULT_RUN_BITS, shapes: Mapping[str, tuple[tuple[int, ...], int]] | None = None
                   ) -> ActivationMemory:
        """The activation memory of a model (a proto, or a path loaded safely), in a storage format.

        ``shapes`` maps a tensor name to (one image's shape, ONNX element type) for tensors that
        shape inference cannot resolve; without it they raise :class:`ShapesUnknown`. Raises
        :class:`EdgefaultError` for a model without integer activations (a float model).

        Example:
            >>> ActivationMemory.from_model("model.onnx").names
            ('input_q',)
        """
        return cls.from_tensors(find_activations(load_proto(model), shapes), format, run_bits)

    @property
    def format(self) -> str:
        return self.tensors[0].format

    def with_format(self, name: str, run_bits: int = DEFAULT_RUN_BITS) -> ActivationMemory:
        """The same tensors stored in another format, laid out again.

        Example:
            >>> memory = ActivationMemory.from_tensors([("x", "uint8", (8,), 0, 0.1, "Conv")])
            >>> memory.nbits, memory.with_format("bitmap").nbits, memory.with_format("rle").nbits
            (64, 72, 112)
        """
        tensors, start = [], 0
        for tensor in self.tensors:
            tensors.append(tensor.with_format(name, run_bits, start))
            start += tensors[-1].nbits
        return ActivationMemory(tuple(tensors))

    def coverage(self) -> dict[str, Any]:
        """What the memory holds, JSON-ready: tensors, values and stored bits per image, by type, and the format.

        Example:
            >>> ActivationMemory.from_tensors([("x", "uint8", (8,), 0, 0.1, "Conv")]).coverage()["storage"]
            {'uint8': {'tensors': 1, 'bits': 64}}
        """
        storage: dict[str, dict[str, int]] = {}
        for tensor in self.tensors:
            entry = storage.setdefault(tensor.dtype, {"tensors": 0, "bits": 0})
            entry["tensors"] += 1
            entry["bits"] += tensor.nbits
        return {"tensors": len(self.tensors), "values": sum(t.elements for t in self.tensors), "bits": self.nbits,
                "format": self.format, "storage": storage}

    def coverage_line(self) -> str:
        """The coverage in one line, as every command that builds the memory prints it.

        Example:
            >>> ActivationMemory.from_tensors([("x", "uint8", (8,), 0, 0.1, "Conv")], "rle").coverage_line()
            'activation memory: 1 tensor, 8 values, 112 stored bits per image as rle (uint8: 1 tensor)'
        """
        report = self.coverage()
        kinds = ", ".join(f"{k}: {plural(v['tensors'], 'tensor')}" for k, v in report["storage"].items())
        form = "" if report["format"] == "dense" else f" as {report['format']}"
        return (f"activation memory: {plural(report['tensors'], 'tensor')}, {report['values']:,} values, "
                f"{report['bits']:,} stored bits per image{form} ({kinds})")


def transient_faults(memory: ActivationMemory, chip: Chip, images: int) -> FaultRecords:
    """The transient faults that images ``0 .. images - 1`` meet: fresh for each image, a function of (seed, image).

    The one definition of transient activation faults: the chip drawn on a *tape* of the
    memory, one copy of its buffers per image, image after image, on the seed stream
    :data:`TRANSIENT_STREAM` (:func:`~edgefault.faults.sampling.sample_tape_faults`). A
    record's ``address`` is its tape address: ``address // memory.nbits`` is the image, and
    tensor, index and bit lie within that image's buffers. Image ``i``'s faults depend on the
    chip seed and ``i`` alone (drawing 3 images or 1,000 gives image 2 the same faults), so
    batch size, workers and order change nothing; they are nested across rates, paired
    across models with the same layout, and drawing them costs what their faults cost.

    Example:
        >>> memory = ActivationMemory.from_tensors([("x", "uint8", (50,), 0, 0.1, "Conv")])
        >>> chip = Chip("flip", rate=0.02, seed=3)
        >>> few, many = transient_faults(memory, chip, 2), transient_faults(memory, chip, 100)
        >>> bool(np.array_equal(few.address, many.address[many.address < 2 * memory.nbits]))
        True
    """
    return sample_tape_faults(memory, chip, images, TRANSIENT_STREAM)


def format_sizes(memory: ActivationMemory, codes: Mapping[str, np.ndarray], run_bits: int = DEFAULT_RUN_BITS
                 ) -> dict[str, dict[str, float]]:
    """Mean encoded bits per image of each tensor in each storage format, exact from real codes.

    ``codes`` maps each tensor name to its stored codes, one row (or leading index) per image.

    Example:
        >>> memory = ActivationMemory.from_tensors([("x", "uint8", (4,), 0, 0.1, "Conv")])
        >>> format_sizes(memory, {"x": np.array([[0, 0, 5, 0], [1, 2, 3, 4]])})["x"]
        {'dense': 32.0, 'bitmap': 24.0, 'rle': 35.5}
    """
    sizes = {}
    for tensor in memory.tensors:
        rows = np.asarray(codes[tensor.name]).reshape(-1, tensor.elements)
        sizes[tensor.name] = {name: float(tensor.with_format(name, run_bits).buffer_format.encoded_bits(rows).mean())
                              for name in ACT_FORMATS}
    return sizes
