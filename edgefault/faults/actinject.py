"""Permanent activation faults inside the graph: one portable ONNX file that applies a chip to every image.

A permanent chip puts faulty cells at fixed buffer addresses, so in the dense format every
image stored in a buffer meets the same faulty bits: a stuck-at-0 cell clears its bit, a
stuck-at-1 cell sets it, a flip (or upset) cell inverts it. For each faulty tensor ``T`` the
graph gets ``T = ((T_clean & and_mask) | or_mask) ^ xor_mask`` (BitwiseAnd / BitwiseOr /
BitwiseXor, ONNX opset 18, only the ones the chip needs) with constant masks of one image's
shape broadcast over the batch, right after the node that computes ``T`` (whose output is
renamed ``T/edgefault_clean``); a model input ``T`` is masked before its readers instead.
Every reader of ``T`` (each consumer, the graph output) sees the faulty buffer. ONNX
Runtime keeps fusing DequantizeLinear -> Conv -> QuantizeLinear into integer kernels around
the masks (measured: docs/activation-memory.md).

Models below opset 18 are lifted to 18 when none of their ops changes meaning between
their opset and 18 (true of every quantized CNN edgefault exports); otherwise the injection
is refused, naming the ops (ReduceMean, Split, Pad, Resize, ... changed at 18).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgefault.errors import EdgefaultError
from edgefault.faults.activations import ActivationMemory
from edgefault.faults.chip import Chip
from edgefault.faults.faultmap import FORMAT, VERSION, FaultMap, read_fault_map, records_from_entries
from edgefault.faults.injector import Injector, inject_file
from edgefault.faults.records import FLIP, KIND_NAMES, MBU, SA0, SA1, FaultRecords
from edgefault.faults.sampling import sample_faults, target_bits
from edgefault.fileio import atomic_paths, check_outputs
from edgefault.onnxio import load_model, parse_model

BITWISE_OPSET = 18
ACT_METADATA_KEY = "edgefault.activation_faults"
_DEFAULT_DOMAINS = ("", "ai.onnx")
MASK_PARTS = ("and", "or", "xor")  # applied in this order: ((T & and) | or) ^ xor
_NHWC, _NCHW = (0, 2, 3, 1), (0, 3, 1, 2)


def activation_masks(memory: ActivationMemory, records: FaultRecords) -> dict[str, dict[str, np.ndarray]]:
    """Per faulty tensor, its constant masks (``and``, ``or``, ``xor``, only those needed) of shape [1, *shape].

    Example:
        >>> memory = ActivationMemory.from_tensors([("t", "uint8", (3,), 0, 1.0, "Conv")])
        >>> records = FaultRecords(("t",), [0, 0], [1, 2], [0, 7], [SA1, FLIP], [8, 23])
        >>> {k: v.tolist() for k, v in activation_masks(memory, records)["t"].items()}
        {'or': [[0, 1, 0]], 'xor': [[0, 0, 128]]}
    """
    _check_dense(memory)
    masks: dict[str, dict[str, np.ndarray]] = {}
    for position in np.unique(records.tensor).tolist():
        rows = records.tensor == position
        tensor = memory.tensors[position]
        masks[tensor.name] = tensor_masks(tensor, records.index[rows], records.bit[rows], records.kind[rows])
    return masks


def tensor_masks(tensor, index: np.ndarray, bit: np.ndarray, kind: np.ndarray, image: np.ndarray | None = None,
                 images: int = 1) -> dict[str, np.ndarray]:
    """One dense buffer's masks (only those needed) for faults at (code ``index``, ``bit``) of kind ``kind``.

    Without ``image`` the masks are one image's, ``[1, *shape]``, for every image; with it,
    fault ``j`` hits image ``image[j]`` only, and the masks are ``[images, *shape]``.

    Example:
        >>> t = ActivationMemory.from_tensors([("t", "uint8", (2,), 0, 1.0, "Conv")]).tensors[0]
        >>> tensor_masks(t, np.array([1]), np.array([0]), np.array([FLIP]), np.array([2]), 3)["xor"].tolist()
        [[0, 0], [0, 0], [0, 1]]
    """
    unsigned = np.dtype(f"uint{tensor.bits}")
    where = index if image is None else np.asarray(image, np.int64) * tensor.elements + index
    parts = {}
    for name, codes, start in (("and", (SA0,), ~np.zeros((), unsigned)), ("or", (SA1,), unsigned.type(0)),
                               ("xor", (FLIP, MBU), unsigned.type(0))):
        chosen = np.isin(kind, codes)
        if not chosen.any():
            continue
        mask = np.full((1 if image is None else images) * tensor.elements, start, dtype=unsigned)
        bits = (np.ones(1, unsigned) << np.asarray(bit)[chosen].astype(unsigned)).astype(unsigned)
        if name == "and":
            np.bitwise_and.at(mask, where[chosen], ~bits)
        else:
            np.bitwise_or.at(mask, where[chosen], bits)
        parts[name] = mask.view(np.dtype(tensor.dtype)).reshape(-1, *tensor.shape)
    return parts


def mask_model(model: onnx.ModelProto, memory: ActivationMemory, records: FaultRecords) -> onnx.ModelProto:
    """A copy of ``model`` whose activation buffers carry the records' faults (see the module docstring).
    """
    if records.tensors != memory.names:
        raise EdgefaultError("the fault records were not drawn on this activation memory")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    masks = activation_masks(memory, records)
    if masks:
        _insert_masks(out, masks, lambda graph, name, mask: graph.initializer.append(numpy_helper.from_array(mask, name)))
    return out


def mask_input_model(model: onnx.ModelProto, memory: ActivationMemory, channels_last: bool = False
                     ) -> onnx.ModelProto:
    """A copy of ``model`` in which every activation buffer passes through and, or and xor masks fed as inputs.

    One model (and one ONNX Runtime session) for every permanent dense chip: feed each buffer's
    masks from :func:`activation_masks` or :func:`tensor_masks` (:func:`mask_feed` fills in the
    masks that change nothing). Buffer ``T``'s masks are the inputs ``T/edgefault_and_mask``,
    ``T/edgefault_or_mask`` and ``T/edgefault_xor_mask`` of T's type, ``[1, *shape]`` for every
    image or one per image; the value each computed buffer had before its masks is the extra
    output ``T/edgefault_clean``. With ``channels_last``, the masks of an image-like buffer
    (``[N, C, H, W]``) act between two Transposes, on ``[N, H, W, C]`` (and are fed so), which
    can let ONNX Runtime keep its NHWC layout (QLinearConv -> NhwcMaxPool -> QLinearConv); on
    some QDQ graphs its transpose optimizer then pulls a Transpose between DequantizeLinear and
    Conv, which leaves a float conv: check the kernels (the campaign does).
    """
    _check_dense(memory)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    masks = {tensor.name: {part: np.zeros((1, *tensor.shape), np.dtype(tensor.dtype)) for part in MASK_PARTS}
             for tensor in memory.tensors}
    _insert_masks(out, masks, lambda graph, name, mask: graph.input.append(helper.make_tensor_value_info(
        name, helper.np_dtype_to_tensor_dtype(mask.dtype), ["masks", *mask.shape[1:]])), channels_last)
    produced = {name for node in out.graph.node for name in node.output}
    for tensor in memory.tensors:
        if f"{tensor.name}/edgefault_clean" in produced:
            out.graph.output.append(helper.make_tensor_value_info(
                f"{tensor.name}/edgefault_clean", helper.np_dtype_to_tensor_dtype(np.dtype(tensor.dtype)), None))
    return out


def mask_feed(memory: ActivationMemory, masks: dict[str, dict[str, np.ndarray]], channels_last: bool = False
              ) -> dict[str, np.ndarray]:
    """The mask inputs of :func:`mask_input_model` for a chip's masks: those it lacks change nothing.

    ``channels_last`` as the model was built (4-D masks are then fed as ``[N, H, W, C]``).

    Example:
        >>> memory = ActivationMemory.from_tensors([("t", "uint8", (3,), 0, 1.0, "Conv")])
        >>> {k: v.tolist() for k, v in mask_feed(memory, {"t": {"xor": np.array([[0, 4, 0]], np.uint8)}}).items()}
        {'t/edgefault_and_mask': [[255, 255, 255]], 't/edgefault_or_mask': [[0, 0, 0]], 't/edgefault_xor_mask': [[0, 4, 0]]}
    """
    feed = {}
    for tensor in memory.tensors:
        given = masks.get(tensor.name, {})
        for part in MASK_PARTS:
            default = np.full((1, *tensor.shape), -1 if part == "and" else 0, np.int64).astype(np.dtype(tensor.dtype))
            mask = given.get(part, default)
            feed[f"{tensor.name}/edgefault_{part}_mask"] = _channels_last(mask) if channels_last else mask
    return feed


def _channels_last(mask: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(mask.transpose(_NHWC)) if mask.ndim == 4 else mask


def _insert_masks(out: onnx.ModelProto, masks: dict[str, dict[str, np.ndarray]], place: Callable,
                  channels_last: bool = False) -> None:
    """Put each tensor's mask chain into ``out`` (in place); ``place(graph, name, mask)`` declares each mask."""
    _lift_opset(out)
    graph = out.graph
    inputs = {i.name for i in graph.input}
    nodes = list(graph.node)
    producer = {name: number for number, node in enumerate(nodes) for name in node.output}
    before: dict[int, list[onnx.NodeProto]] = {}  # new nodes to place before node number k (-1: after all)
    for name, parts in masks.items():
        if name in producer:
            clean = f"{name}/edgefault_clean"
            node = nodes[producer[name]]
            node.output[list(node.output).index(name)] = clean
            chain = _mask_chain(graph, name, clean, name, parts, place, channels_last)
            before.setdefault(producer[name] + 1, []).extend(chain)
        elif name in inputs:
            faulty = f"{name}/edgefault_faulty"
            for node in nodes:
                node.input[:] = [faulty if value == name else value for value in node.input]
            for output in graph.output:
                if output.name == name:
                    raise EdgefaultError(f"activation {name!r} is both a model input and output; cannot mask it")
            before.setdefault(0, []).extend(_mask_chain(graph, name, name, faulty, parts, place, channels_last))
        else:
            raise EdgefaultError(f"activation {name!r} is neither computed by a node nor a model input")
    ordered = []
    for number, node in enumerate(nodes):
        ordered.extend(before.get(number, []))
        ordered.append(node)
    ordered.extend(before.get(len(nodes), []))
    del graph.node[:]
    graph.node.extend(ordered)


def _mask_chain(graph: onnx.GraphProto, name: str, source: str, target: str, parts: dict[str, np.ndarray],
                place: Callable, channels_last: bool = False) -> list[onnx.NodeProto]:
    """Nodes computing ``target`` from ``source`` through the masks, in And, Or, Xor order; each mask declared by
    ``place``. ``channels_last``: 4-D masks act on the tensor transposed to NHWC, and the result is transposed back."""
    chain, current = [], source
    wrap = channels_last and next(iter(parts.values())).ndim == 4
    if wrap:
        current = f"{name}/edgefault_nhwc"
        chain.append(helper.make_node("Transpose", [source], [current], name=f"edgefault/{name}/nhwc", perm=_NHWC))
    operators = [(part, op) for part, op in zip(MASK_PARTS, ("BitwiseAnd", "BitwiseOr", "BitwiseXor")) if part in parts]
    for step, (part, op) in enumerate(operators):
        mask_name = f"{name}/edgefault_{part}_mask"
        place(graph, mask_name, _channels_last(parts[part]) if wrap else parts[part])
        output = target if step == len(operators) - 1 and not wrap else f"{name}/edgefault_{part}"
        chain.append(helper.make_node(op, [current, mask_name], [output], name=f"edgefault/{name}/{part}"))
        current = output
    if wrap:
        chain.append(helper.make_node("Transpose", [current], [target], name=f"edgefault/{name}/nchw", perm=_NCHW))
    return chain


def _lift_opset(model: onnx.ModelProto) -> None:
    """Raise the default opset to 18 in place (Bitwise ops), refusing where the graph's meaning would change."""
    entry = next((op for op in model.opset_import if op.domain in _DEFAULT_DOMAINS), None)
    if entry is None:
        model.opset_import.append(helper.make_opsetid("", BITWISE_OPSET))
    elif entry.version < BITWISE_OPSET:
        if any(a.HasField("g") or len(a.graphs) for node in model.graph.node for a in node.attribute):
            raise EdgefaultError(f"activation masks need opset {BITWISE_OPSET}; this opset-{entry.version} model has "
                                 f"control flow (If/Loop/Scan), which edgefault does not lift")
        changed = sorted({node.op_type for node in model.graph.node if node.domain in _DEFAULT_DOMAINS
                          and _since(node.op_type, BITWISE_OPSET) > entry.version})
        if changed:
            raise EdgefaultError(f"activation masks need opset {BITWISE_OPSET} (BitwiseXor), and ops "
                                 f"{', '.join(changed)} change meaning between this model's opset {entry.version} "
                                 f"and {BITWISE_OPSET}; "
                                 f"convert the model to opset {BITWISE_OPSET} first")
        entry.version = BITWISE_OPSET
    model.ir_version = max(model.ir_version, 8)


def _since(op_type: str, opset: int) -> int:
    try:
        return onnx.defs.get_schema(op_type, opset).since_version
    except onnx.defs.SchemaError:
        return 0


def _check_dense(memory: ActivationMemory) -> None:
    if memory.format != "dense":
        raise EdgefaultError(f"a faulty model file holds dense activation faults only; faults in a {memory.format} "
                             f"buffer depend on each image's data (use campaign --act-format {memory.format})")


def activation_summary(memory: ActivationMemory, records: FaultRecords, target_bits: int | None) -> dict[str, Any]:
    """Counts of the activation faults, for the whole memory and per tensor.

    Example:
        >>> memory = ActivationMemory.from_tensors([("t", "uint8", (3,), 0, 1.0, "Conv")])
        >>> activation_summary(memory, FaultRecords(("t",), [0], [1], [0], [SA1], [8]), 24)["by_kind"]
        {'sa1': 1}
    """
    faults = np.bincount(records.tensor, minlength=len(memory.tensors))
    kinds = np.bincount(records.kind, minlength=len(KIND_NAMES))
    return {
        "faults": len(records),
        "memory_bits": memory.nbits,
        "target_bits": target_bits,
        "format": memory.format,
        "tensors_hit": int(np.count_nonzero(faults)),
        "by_kind": {name: int(kinds[code]) for code, name in enumerate(KIND_NAMES) if kinds[code]},
        "coverage": memory.coverage(),
        "per_tensor": [{"tensor": t.name, "dtype": t.dtype, "shape": list(t.shape), "zero_point": t.zero_point,
                        "scale": t.scale, "consumer": t.consumer, "bits": t.nbits, "faults": int(faults[i])}
                       for i, t in enumerate(memory.tensors)],
    }


def activation_entries(records: FaultRecords) -> list[dict[str, Any]]:
    """The fault-map entries of activation records: site, tensor, index (within one image's tensor), bit, kind,
    address.

    Example:
        >>> activation_entries(FaultRecords(("t",), [0], [1], [0], [SA1], [8]))
        [{'site': 'activations', 'tensor': 't', 'index': 1, 'bit': 0, 'kind': 'sa1', 'address': 8}]
    """
    names = records.tensor_names()
    kinds = records.kind_names()
    return [{"site": "activations", "tensor": n, "index": i, "bit": b, "kind": k, "address": a}
            for n, i, b, k, a in zip(names, records.index.tolist(), records.bit.tolist(), kinds,
                                     records.address.tolist())]


def chip_note(chip: Chip | None, records: FaultRecords, memory: ActivationMemory) -> onnx.StringStringEntryProto:
    """The metadata entry a faulty model carries for its activation faults.

    Example:
        >>> memory = ActivationMemory.from_tensors([("t", "uint8", (3,), 0, 1.0, "Conv")])
        >>> chip_note(None, FaultRecords(("t",), [], [], [], [], []), memory).key
        'edgefault.activation_faults'
    """
    note = {"chip": None if chip is None else chip.to_dict(), "faults": len(records), "memory_bits": memory.nbits,
            "format": memory.format, "tensors": list(memory.names)}
    return onnx.StringStringEntryProto(key=ACT_METADATA_KEY, value=json.dumps(note, sort_keys=True))


SITES = ("weights", "activations", "all")


@dataclasses.dataclass(frozen=True)
class SiteInjection:
    """What :func:`inject_sites_file` did: the weight fault map (None without weights), the activation memory,
    records and summary (None without activations).
    """

    weights: FaultMap | None
    memory: ActivationMemory | None
    records: FaultRecords | None
    activation_summary: dict[str, Any] | None


def inject_sites_file(
    model_path: str | os.PathLike,
    out_path: str | os.PathLike,
    site: str,
    chip: Chip | None = None,
    map_in: str | os.PathLike | None = None,
    map_out: str | os.PathLike | None = None,
    stored_bits: int | None = None,
    memory_of: Callable[[onnx.ModelProto], ActivationMemory] = ActivationMemory.from_model,
) -> SiteInjection:
    """Write a faulty copy of a model with faults at ``site`` (weights, activations or all), and its map.

    One chip (or one recorded map) serves both memories: each memory draws from its own
    stream of the chip's seed; a map's entries go to the memory their ``site`` names.
    ``memory_of`` builds the activation memory from the model (a probe-run variant for
    models whose shapes ONNX cannot infer). Nothing is written when anything fails.
    """
    if site not in SITES:
        raise EdgefaultError(f"unknown site {site!r}; choose one of {', '.join(SITES)}")
    if (chip is None) == (map_in is None):
        raise EdgefaultError("give exactly one of a chip and a fault map to re-apply")
    if site == "weights":
        return SiteInjection(inject_file(model_path, out_path, chip, map_in, map_out, stored_bits), None, None, None)
    source = Path(model_path)
    check_outputs({"`out`": out_path, "`map_out`": map_out}, [source, *([map_in] if map_in else [])])
    proto = load_model(source)
    memory = memory_of(proto)
    _check_dense(memory)
    if chip is not None:
        records, target, recorded = sample_faults(memory, chip), target_bits(memory, chip), chip
    else:
        entries, recorded = read_fault_map(map_in)
        records, target = records_from_entries(entries, memory), None
    weights = None
    if site == "all":
        injector = Injector(proto, stored_bits)
        data, weights = injector.inject(chip) if chip is not None else injector.inject_map(map_in)
        proto = parse_model(data, str(source))
    faulty = mask_model(proto, memory, records)
    faulty.metadata_props.append(chip_note(recorded, records, memory))
    summary = activation_summary(memory, records, target)
    data = faulty.SerializeToString()
    targets = [out_path, *([map_out] if map_out is not None else [])]
    with atomic_paths(*targets) as temporaries:
        temporaries[0].write_bytes(data)
        if map_out is not None:
            digest = hashlib.sha256(data).hexdigest()
            temporaries[1].write_bytes(_map_document(recorded, weights, records, summary, digest))
    return SiteInjection(weights, memory, records, summary)


def _map_document(chip: Chip | None, weights: FaultMap | None, records: FaultRecords, summary: dict[str, Any],
                  digest: str) -> bytes:
    """The fault map of both sites: the weight map's head and faults (if any), the activation summary and faults."""
    if weights is not None:
        document = json.loads(weights.encode(model_sha256=digest))
    else:
        document = {"format": FORMAT, "version": VERSION, "chip": None if chip is None else chip.to_dict(),
                    "model_sha256": digest, "faults": []}
    document["sites"] = ["weights", "activations"] if weights is not None else ["activations"]
    document["activation_summary"] = summary
    faults = document.pop("faults") + activation_entries(records)
    text = json.dumps(document, indent=2)[:-2]
    body = ",\n  \"faults\": [\n    " + ",\n    ".join(json.dumps(entry) for entry in faults) + "\n  ]\n}\n"
    return (text + (body if faults else ",\n  \"faults\": []\n}\n")).encode()
