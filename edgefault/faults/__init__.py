"""Memory faults in the integer weight bytes and activation buffers of quantized ONNX models.

The pieces, in the order they act: :func:`discover` (which constants are weights, at which
stored width, and what cannot be faulted), :class:`WeightMemory` (the address of every
stored cell), :class:`Chip` (the fault settings of one faulty device),
:func:`sample_faults` (the chip's faulty bits on a memory, as :class:`FaultRecords`),
:func:`apply_faults` (new weight arrays), and :class:`Injector` (faulty serialized models
without touching the disk, with a :class:`FaultMap` of every fault). The activation side:
:class:`ActivationMemory` (the integer buffers between layers, one image's worth),
:class:`BufferFormat` (dense, bitmap and run-length storage of a buffer) and
:mod:`edgefault.faults.actinject` (permanent activation faults as masks in the graph).

Example:
    >>> from edgefault.faults import Chip, Injector
"""

from edgefault.faults.activations import ActivationMemory, ActivationTensor
from edgefault.faults.chip import KINDS, Chip, parse_bits
from edgefault.faults.formats import ACT_FORMATS, BufferFormat
from edgefault.faults.faultmap import FaultMap, read_fault_map, records_from_entries
from edgefault.faults.injector import METADATA_KEY, Injector, inject_file, inject_model_bytes
from edgefault.faults.discover import Discovery, Skipped, discover, weight_memory
from edgefault.faults.memory import WeightMemory, WeightTensor
from edgefault.faults.records import FLIP, KIND_NAMES, MBU, SA0, SA1, FaultRecords, apply_faults
from edgefault.faults.sampling import sample_faults, target_bits

__all__ = [
    "ACT_FORMATS",
    "ActivationMemory",
    "ActivationTensor",
    "BufferFormat",
    "FLIP",
    "KINDS",
    "KIND_NAMES",
    "MBU",
    "METADATA_KEY",
    "SA0",
    "SA1",
    "Skipped",
    "Chip",
    "Discovery",
    "FaultMap",
    "FaultRecords",
    "Injector",
    "WeightMemory",
    "WeightTensor",
    "apply_faults",
    "discover",
    "inject_file",
    "inject_model_bytes",
    "parse_bits",
    "read_fault_map",
    "records_from_entries",
    "sample_faults",
    "target_bits",
    "weight_memory",
]
