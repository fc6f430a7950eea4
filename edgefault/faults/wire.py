"""Just enough of the protobuf wire format to patch a serialized ONNX model without re-serializing it.

The in-memory injector keeps one serialized copy of the model and, per chip, copies it,
rewrites the faulted bytes where the initializers' ``raw_data`` lie, and appends one
``metadata_props`` entry: protobuf parsers merge a repeated field that appears again at the
end of a message, so the entry lands after the existing ones. Field numbers are read from
the ONNX descriptors rather than written out.
"""

from __future__ import annotations

import onnx


def _numbers(message: type, *names: str) -> tuple[int, ...]:
    return tuple(message.DESCRIPTOR.fields_by_name[name].number for name in names)


_GRAPH, _METADATA = _numbers(onnx.ModelProto, "graph", "metadata_props")
_INITIALIZER, _NODE = _numbers(onnx.GraphProto, "initializer", "node")
_NODE_OUTPUT, _NODE_OP_TYPE, _NODE_ATTRIBUTE = _numbers(onnx.NodeProto, "output", "op_type", "attribute")
_ATTRIBUTE_NAME, _ATTRIBUTE_TENSOR = _numbers(onnx.AttributeProto, "name", "t")
_NAME, _RAW_DATA = _numbers(onnx.TensorProto, "name", "raw_data")
_ENTRY_KEY, _ENTRY_VALUE = _numbers(onnx.StringStringEntryProto, "key", "value")
_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5


def raw_data_spans(model_bytes: bytes) -> dict[str, list[tuple[int, int]]]:
    """Where each top-level initializer's and Constant node's ``raw_data`` lies: name -> [(offset, length)].

    A Constant node's tensor is named by the node's output. A name maps to a list so that a
    caller can notice a tensor that occurs twice (invalid ONNX, or a message split by
    protobuf merging) instead of patching the wrong copy. Raises ``ValueError`` on bytes
    that are not well-formed protobuf.
    """
    view = memoryview(model_bytes)
    spans: dict[str, list[tuple[int, int]]] = {}
    for field, start, end in _fields(view, 0, len(view)):
        if field != _GRAPH:
            continue
        for graph_field, t_start, t_end in _fields(view, start, end):
            if graph_field == _INITIALIZER:
                name, raw = _tensor_raw(view, t_start, t_end)
            elif graph_field == _NODE:
                name, raw = _constant_raw(view, t_start, t_end)
            else:
                continue
            if name is not None and raw is not None:
                spans.setdefault(name, []).append(raw)
    return spans


def _tensor_raw(view: memoryview, start: int, end: int) -> tuple[str | None, tuple[int, int] | None]:
    name, raw = None, None
    for field, f_start, f_end in _fields(view, start, end):
        if field == _NAME:
            name = _text(view, f_start, f_end)
        elif field == _RAW_DATA:
            raw = (f_start, f_end - f_start)
    return name, raw


def _constant_raw(view: memoryview, start: int, end: int) -> tuple[str | None, tuple[int, int] | None]:
    """(first output, raw_data span of the ``value`` attribute) of a Constant node; (None, None) for other nodes."""
    output, op_type, value = None, None, None
    for field, f_start, f_end in _fields(view, start, end):
        if field == _NODE_OUTPUT and output is None:
            output = _text(view, f_start, f_end)
        elif field == _NODE_OP_TYPE:
            op_type = _text(view, f_start, f_end)
        elif field == _NODE_ATTRIBUTE:
            attribute = dict((number, (a, b)) for number, a, b in _fields(view, f_start, f_end))
            if _ATTRIBUTE_NAME in attribute and _text(view, *attribute[_ATTRIBUTE_NAME]) == "value" \
                    and _ATTRIBUTE_TENSOR in attribute:
                value = _tensor_raw(view, *attribute[_ATTRIBUTE_TENSOR])[1]
    return (output, value) if op_type == "Constant" else (None, None)


def _text(view: memoryview, start: int, end: int) -> str:
    return bytes(view[start:end]).decode("utf-8", errors="replace")


def metadata_entry(key: str, value: str) -> bytes:
    """The serialized ``metadata_props`` entry (key, value), ready to append to a serialized ModelProto.

    Example:
        >>> model = onnx.ModelProto()
        >>> _ = model.ParseFromString(model.SerializeToString() + metadata_entry("k", "v"))
        >>> model.metadata_props[0].value
        'v'
    """
    entry = _length_field(_ENTRY_KEY, key.encode()) + _length_field(_ENTRY_VALUE, value.encode())
    return _length_field(_METADATA, entry)


def _length_field(number: int, payload: bytes) -> bytes:
    return _varint((number << 3) | _LENGTH) + _varint(len(payload)) + payload


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _read_varint(view: memoryview, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while pos < end:
        byte = view[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            break
    raise ValueError("malformed protobuf varint")


def _fields(view: memoryview, pos: int, end: int):
    """Yield (field number, payload start, payload end) for the length-delimited fields in view[pos:end]."""
    while pos < end:
        key = view[pos]  # one-byte keys (fields 1-15) are the rule in ONNX; decode longer ones in full
        key, pos = (key, pos + 1) if key < 0x80 else _read_varint(view, pos, end)
        wire_type = key & 7
        if wire_type == _LENGTH:
            length = view[pos] if pos < end else 0x80
            length, pos = (length, pos + 1) if length < 0x80 else _read_varint(view, pos, end)
            if pos + length > end:
                raise ValueError("protobuf field runs past the end of its message")
            yield key >> 3, pos, pos + length
            pos += length
        elif wire_type == _VARINT:
            _, pos = _read_varint(view, pos, end)
        elif wire_type == _FIXED64:
            pos += 8
        elif wire_type == _FIXED32:
            pos += 4
        else:  # groups (wire types 3 and 4) are not used by ONNX
            raise ValueError(f"unsupported protobuf wire type {wire_type}")
    if pos != end:
        raise ValueError("protobuf message is truncated")
