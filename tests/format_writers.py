"""Writers for the checkpoint formats the readers under test parse: safetensors and CTranslate2's
``model.bin`` (torch pickles: torch_writer.py). Written from the formats' public descriptions."""

import json
import struct

import numpy as np

_SAFETENSORS_DTYPES = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16", np.dtype(np.int64): "I64"}
# CTranslate2's DataType enum: float32, int8, int16, int32, float16, bfloat16.
_CT2_TYPE_IDS = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int16): 2, np.dtype(np.int32): 3,
                 np.dtype(np.float16): 4}


def save_safetensors(tensors: dict, path) -> None:
    """8-byte header length, JSON header (dtype, shape, data offsets), then the raw little-endian bytes."""
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, value in tensors.items():
        blob = np.ascontiguousarray(value).tobytes()
        header[name] = {"dtype": _SAFETENSORS_DTYPES[value.dtype], "shape": list(value.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    raw = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))


def _ct2_string(s: str) -> bytes:
    raw = s.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def save_ct2(variables: dict, aliases: dict, path, spec: str = "WhisperSpec", version: int = 6) -> None:
    """CTranslate2's binary model: version, spec name and revision, the variables (name, rank, dims,
    type id, byte count, bytes) and the aliases (alias, target)."""
    out = [struct.pack("<I", version), _ct2_string(spec), struct.pack("<II", 3, len(variables))]
    for name, value in variables.items():
        value = np.asarray(value)
        out += [_ct2_string(name), struct.pack(f"<B{value.ndim}I", value.ndim, *value.shape),
                struct.pack("<BI", _CT2_TYPE_IDS[value.dtype], value.nbytes), value.tobytes()]
    out.append(struct.pack("<I", len(aliases)))
    out += [_ct2_string(alias) + _ct2_string(target) for alias, target in aliases.items()]
    with open(path, "wb") as f:
        f.write(b"".join(out))
