"""The tensor codec of the Open Inference Protocol v2 (REST) and its binary tensor data extension.

A request body is a JSON object (`inputs`, optional `outputs`, `parameters`, `id`), or, when the
`Inference-Header-Content-Length` header is given, that many bytes of JSON followed by the raw
tensors of the inputs that carry `parameters.binary_data_size`, in the order of `inputs`
(little-endian, row-major, no padding). Tensor `data` in JSON may be nested or flat, row-major.

Binary input tensors are read with `np.frombuffer` over the request body: no copy is made until the
model's preprocessing casts them. Every mistake is an `OipError` (a 4xx) naming the input, output
or field at fault, never a 500.

The specification: github.com/kserve/open-inference-protocol, specification/protocol/
inference_rest.md; the extension: github.com/triton-inference-server/server,
docs/protocol/extension_binary_data.md.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Datatype -> numpy dtype (little-endian, as the binary extension sends them). BYTES is an object
# array of `bytes`; in binary each element is a 4-byte little-endian length, then the bytes.
DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}
MAX_DIMS = 16
_LENGTH = struct.Struct("<I")


class OipError(Exception):
    """A request the protocol cannot serve: answered `{"error": message}` with `status`."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message, self.status = message, status


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool | None  # None: as the request's `binary_data_output` says


@dataclass
class InferRequest:
    inputs: dict[str, np.ndarray]  # by name, in the request's order
    outputs: list[RequestedOutput] | None  # None: every output of the operation
    parameters: dict[str, Any] = field(default_factory=dict)
    id: str | None = None

    @property
    def binary_output(self) -> bool:
        return self.parameters.get("binary_data_output") is True


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise OipError(f"{where} must be a JSON object")
    return value


def _parameters(raw: dict[str, Any], where: str) -> dict[str, Any]:
    params = _object(raw.get("parameters", {}), f"{where}.parameters")
    for key, value in params.items():
        if not isinstance(value, str | int | float | bool) or value is None:
            raise OipError(f"{where}.parameters.{key} must be a string, a number or a boolean")
    return params


def _shape(raw: Any, where: str) -> tuple[int, ...]:
    ok = isinstance(raw, list) and len(raw) <= MAX_DIMS
    if not ok or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in raw):
        raise OipError(f"{where}: shape must be a list of at most {MAX_DIMS} non-negative integers")
    return tuple(raw)


def _datatype_name(raw: Any, where: str) -> str:
    if not isinstance(raw, str) or raw not in DTYPES:
        raise OipError(f"{where}: datatype must be one of {', '.join(DTYPES)}; got {raw!r}")
    return raw


def _datatype(raw: Any, where: str) -> np.dtype[Any]:
    return DTYPES[_datatype_name(raw, where)]


def decode_json_data(data: Any, datatype: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    """`data` (nested or flat, row-major) as an array of `shape` in `datatype`."""
    dtype = _datatype(datatype, where)
    if not isinstance(data, list):
        raise OipError(f"{where}: data must be a JSON array")
    try:
        a = np.array(data)
    except (ValueError, TypeError, OverflowError) as exc:  # ragged nesting, huge integers
        raise OipError(f"{where}: data must be a regular array of {datatype} values") from exc
    if a.size != math.prod(shape):
        raise OipError(
            f"{where}: shape {list(shape)} holds {math.prod(shape)} values; data has {a.size}"
        )
    kind = a.dtype.kind if a.size else None
    if datatype == "BYTES":
        if kind not in (None, "U"):
            raise OipError(f"{where}: BYTES data must be strings")
        return np.array([s.encode() for s in a.ravel()], dtype=object).reshape(shape)
    allowed = {"b": "b", "u": "iu", "i": "iu", "f": "iuf"}[dtype.kind]
    if kind is not None and kind not in allowed:
        raise OipError(f"{where}: data must hold {datatype} values (JSON {_json_kind(dtype)})")
    if kind in ("i", "u") and dtype.kind in "iu":
        info = np.iinfo(dtype)
        if a.min() < info.min or a.max() > info.max:
            raise OipError(f"{where}: a value lies outside {datatype}'s range")
    return a.astype(dtype, copy=False).reshape(shape)


def _json_kind(dtype: np.dtype[Any]) -> str:
    return {"b": "booleans", "u": "integers", "i": "integers", "f": "numbers"}[dtype.kind]


def decode_binary(
    buffer: memoryview, datatype: str, shape: tuple[int, ...], where: str
) -> np.ndarray:
    """The raw bytes of one tensor (the binary extension) as an array, without a copy."""
    dtype = _datatype(datatype, where)
    count = math.prod(shape)
    if datatype == "BYTES":
        return _decode_bytes(buffer, count, where).reshape(shape)
    if len(buffer) != count * dtype.itemsize:
        raise OipError(
            f"{where}: shape {list(shape)} of {datatype} takes {count * dtype.itemsize} bytes; "
            f"binary_data_size is {len(buffer)}"
        )
    if datatype == "BOOL":
        raw = np.frombuffer(buffer, dtype=np.uint8)
        if raw.size and raw.max() > 1:
            raise OipError(f"{where}: a BOOL element must be the byte 0 or 1")
        return raw.view(np.bool_).reshape(shape)
    return np.frombuffer(buffer, dtype=dtype).reshape(shape)


def _decode_bytes(buffer: memoryview, count: int, where: str) -> np.ndarray:
    items, offset = [], 0
    for _ in range(count):
        if offset + 4 > len(buffer):
            raise OipError(f"{where}: the BYTES data ends inside an element's length")
        (length,) = _LENGTH.unpack_from(buffer, offset)
        offset += 4
        if offset + length > len(buffer):
            raise OipError(f"{where}: the BYTES data ends inside an element")
        items.append(bytes(buffer[offset : offset + length]))
        offset += length
    if offset != len(buffer):
        raise OipError(f"{where}: {len(buffer) - offset} bytes follow the {count} BYTES elements")
    out = np.empty(len(items), dtype=object)  # an object array of bytes, whatever their lengths
    out[:] = items
    return out


def parse_request(body: bytes, header_length: str | None) -> InferRequest:
    """An inference request: JSON, or a JSON header of `header_length` bytes and binary tensors."""
    view = memoryview(body)
    if header_length is None:
        size = len(body)
    else:
        if not header_length.strip().isdigit():
            raise OipError("Inference-Header-Content-Length must be a non-negative integer")
        size = int(header_length)
        if size == 0:
            raise OipError(
                "Inference-Header-Content-Length: 0 (a raw binary request) is not supported; "
                "send the JSON inference header before the binary tensors"
            )
        if size > len(body):
            raise OipError(
                f"Inference-Header-Content-Length is {size}; the body has {len(body)} bytes"
            )
    try:
        raw = json.loads(view[:size].tobytes())  # the header alone is copied
    except (ValueError, UnicodeDecodeError) as exc:
        raise OipError(f"the inference request is not valid JSON: {exc}") from exc
    head = _object(raw, "the inference request")
    unknown = set(head) - {"id", "parameters", "inputs", "outputs", "model_name", "model_version"}
    if unknown:
        raise OipError(f"the inference request has unknown fields: {', '.join(sorted(unknown))}")
    request_id = head.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise OipError("id must be a string")
    parameters = _parameters(head, "the request")
    if not isinstance(parameters.get("binary_data_output", False), bool):
        raise OipError("parameter 'binary_data_output' must be true or false")
    inputs_raw = head.get("inputs")
    if not isinstance(inputs_raw, list):  # empty for an operation that reads parameters alone
        raise OipError("inputs must be a list of tensors")
    inputs: dict[str, np.ndarray] = {}
    offset = size
    for i, item in enumerate(inputs_raw):
        tensor = _object(item, f"inputs[{i}]")
        name = tensor.get("name")
        if not isinstance(name, str):
            raise OipError(f"inputs[{i}]: name must be a string")
        where = f"input {name!r}"
        if name in inputs:
            raise OipError(f"{where} is given twice")
        extra = set(tensor) - {"name", "shape", "datatype", "parameters", "data"}
        if extra:
            raise OipError(f"{where} has unknown fields: {', '.join(sorted(extra))}")
        shape = _shape(tensor.get("shape"), where)
        datatype = _datatype_name(tensor.get("datatype"), where)
        binary_size = _parameters(tensor, where).get("binary_data_size")
        if binary_size is None:
            if "data" not in tensor:
                raise OipError(f"{where}: give data, or parameters.binary_data_size")
            inputs[name] = decode_json_data(tensor["data"], datatype, shape, where)
            continue
        if "data" in tensor:
            raise OipError(f"{where}: give data or parameters.binary_data_size, not both")
        if header_length is None:
            raise OipError(
                f"{where} has binary data: the Inference-Header-Content-Length header must give "
                "the JSON header's size"
            )
        if isinstance(binary_size, bool) or not isinstance(binary_size, int) or binary_size < 0:
            raise OipError(f"{where}: binary_data_size must be a non-negative integer")
        if offset + binary_size > len(body):
            raise OipError(
                f"{where}: binary_data_size {binary_size} runs past the end of the body "
                f"({len(body) - offset} bytes left)"
            )
        inputs[name] = decode_binary(view[offset : offset + binary_size], datatype, shape, where)
        offset += binary_size
    if offset != len(body):
        raise OipError(
            f"{len(body) - offset} bytes follow the inputs' binary data (their binary_data_size "
            "must add up to the body after the JSON header)"
        )
    return InferRequest(inputs, _requested_outputs(head.get("outputs")), parameters, request_id)


def _requested_outputs(raw: Any) -> list[RequestedOutput] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise OipError("outputs must be a list")
    found: list[RequestedOutput] = []
    for i, item in enumerate(raw):
        out = _object(item, f"outputs[{i}]")
        name = out.get("name")
        if not isinstance(name, str):
            raise OipError(f"outputs[{i}]: name must be a string")
        extra = set(out) - {"name", "parameters"}
        if extra:
            raise OipError(f"output {name!r} has unknown fields: {', '.join(sorted(extra))}")
        binary = _parameters(out, f"output {name!r}").get("binary_data")
        if binary is not None and not isinstance(binary, bool):
            raise OipError(f"output {name!r}: binary_data must be true or false")
        if any(o.name == name for o in found):
            raise OipError(f"output {name!r} is requested twice")
        found.append(RequestedOutput(name, binary))
    return found


@dataclass(frozen=True)
class OutputTensor:
    name: str
    datatype: str
    array: np.ndarray
    binary: bool


def binary_bytes(array: np.ndarray, datatype: str) -> bytes:
    """A tensor as the binary extension sends it."""
    if datatype == "BYTES":
        return b"".join(_LENGTH.pack(len(b)) + b for b in array.ravel())
    if datatype == "BOOL":
        return np.ascontiguousarray(array, dtype=np.bool_).tobytes()
    return np.ascontiguousarray(array, dtype=DTYPES[datatype]).tobytes()


def _json_data(array: np.ndarray, datatype: str) -> list[Any]:
    flat = array.ravel()
    if datatype == "BYTES":
        return [b.decode("utf-8", errors="replace") for b in flat]
    data: list[Any] = flat.astype(DTYPES[datatype], copy=False).tolist()
    return data


def encode_response(head: dict[str, Any], outputs: list[OutputTensor]) -> tuple[bytes, int | None]:
    """(the body, the JSON header's length when any output is binary, else None)."""
    described, blobs = [], []
    for out in outputs:
        tensor: dict[str, Any] = {
            "name": out.name,
            "datatype": out.datatype,
            "shape": list(out.array.shape),
        }
        if out.binary:
            blob = binary_bytes(out.array, out.datatype)
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            tensor["data"] = _json_data(out.array, out.datatype)
        described.append(tensor)
    header = json.dumps({**head, "outputs": described}, separators=(",", ":")).encode()
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)
