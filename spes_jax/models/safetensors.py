"""A reader for ``.safetensors`` files: a JSON header and raw little-endian tensors, nothing executed.

The format is an 8-byte little-endian header size, a JSON header ``{name: {"dtype", "shape",
"data_offsets": [begin, end]}, "__metadata__": {...}}`` and the tensor bytes. Read with numpy (and
``ml_dtypes`` for bfloat16, which numpy lacks), so no framework is needed.
"""

from __future__ import annotations

import json
import os
import struct

import ml_dtypes
import numpy as np

from ..errors import SpesError

_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
           "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every tensor of one ``.safetensors`` file, by name, as numpy arrays (their stored dtype)."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise SpesError(f"cannot read {path}: {e.strerror or e}") from None
    if len(data) < 8:
        raise SpesError(f"{path}: not a safetensors file (too short)")
    (n,) = struct.unpack("<Q", data[:8])
    try:
        header = json.loads(data[8:8 + n]) if 8 + n <= len(data) else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        header = None
    if not isinstance(header, dict):
        raise SpesError(f"{path}: not a safetensors file (bad header)")
    body = memoryview(data)[8 + n:]
    out = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = np.dtype(_DTYPES[spec["dtype"]])
            begin, end = (int(x) for x in spec["data_offsets"])
            shape = tuple(int(s) for s in spec["shape"])
        except (KeyError, TypeError, ValueError):
            raise SpesError(f"{path}: tensor {name!r} has an unsupported or malformed entry {spec!r}") from None
        if not 0 <= begin <= end <= len(body) or end - begin != dtype.itemsize * int(np.prod(shape, dtype=np.int64)):
            raise SpesError(f"{path}: tensor {name!r} does not fit the file (truncated or damaged)")
        out[name] = np.frombuffer(body[begin:end], dtype=dtype).reshape(shape)
    return out
