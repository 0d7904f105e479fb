"""Writes ``torch.save``-format files without PyTorch, for converter tests.

Stand-in ``torch`` modules are registered while pickling so that the pickle names the same globals
real torch writes (``torch._utils._rebuild_tensor_v2``, ``torch.FloatStorage`` ...).
"""

import contextlib
import io
import pickle
import struct
import sys
import types
import zipfile

import numpy as np

_STORAGE = {np.dtype(np.float32): "FloatStorage", np.dtype(np.int64): "LongStorage",
            np.dtype(np.float64): "DoubleStorage", np.dtype(np.int32): "IntStorage",
            np.dtype(np.float16): "HalfStorage"}


@contextlib.contextmanager
def _fake_torch():
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch._utils = utils
    for name in _STORAGE.values():
        setattr(torch, name, type(name, (), {"__module__": "torch", "__qualname__": name}))
    saved = {k: sys.modules.get(k) for k in ("torch", "torch._utils")}
    sys.modules.update({"torch": torch, "torch._utils": utils})
    try:
        yield torch
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


class _Tensor:
    def __init__(self, array):
        self.array = np.ascontiguousarray(array)


def _pickle(obj, storages, torch):
    class P(pickle.Pickler):
        def persistent_id(self, o):
            if isinstance(o, tuple) and len(o) == 2 and o[0] == "__storage__":
                arr = o[1]
                key = str(len(storages))
                storages.append((key, arr))
                return ("storage", getattr(torch, _STORAGE[arr.dtype]), key, "cpu", arr.size)
            return None

        def reducer_override(self, o):
            if isinstance(o, np.ndarray):
                o = _Tensor(o)
            if isinstance(o, _Tensor):
                a = o.array
                stride = tuple(s // a.itemsize for s in a.strides)
                return (torch._utils._rebuild_tensor_v2,
                        (("__storage__", a.ravel()), 0, a.shape, stride, False, {}))
            return NotImplemented

    buf = io.BytesIO()
    P(buf, protocol=2).dump(obj)
    return buf.getvalue()


def save_zip(obj, path, name="archive"):
    """The zip format of torch >= 1.6 (numpy arrays become tensors)."""
    storages = []
    with _fake_torch() as torch:
        data = _pickle(obj, storages, torch)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name}/data.pkl", data)
        z.writestr(f"{name}/byteorder", "little")
        z.writestr(f"{name}/version", "3\n")
        for key, arr in storages:
            z.writestr(f"{name}/data/{key}", arr.tobytes())


def save_legacy(obj, path):
    """The legacy (pre-1.6) format: magic, protocol, sys info, object, storage keys, raw storages."""
    storages = []
    with _fake_torch() as torch:
        body = _pickle(obj, storages, torch)
    with open(path, "wb") as f:
        for header in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
            pickle.dump(header, f, protocol=2)
        f.write(body)
        pickle.dump([k for k, _ in storages], f, protocol=2)
        for _, arr in storages:
            f.write(struct.pack("<q", arr.size))
            f.write(arr.tobytes())
