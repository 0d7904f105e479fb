"""A restricted reader for ``torch.save`` files that needs no PyTorch and executes nothing.

Only an allow-list of globals can be named by the pickle: torch's tensor-rebuild functions and
storage types (rebuilt here as numpy arrays), builtin containers, ``argparse.Namespace`` and the
omegaconf classes FBK checkpoints use for ``cfg`` (rebuilt as plain dicts and lists). Any other
global - ``os.system``, ``builtins.eval``, a user class - is refused with an error naming it,
before anything is called.
"""

from __future__ import annotations

import builtins
import io
import os
import pickle
import struct
import zipfile
from typing import Any, Callable

import numpy as np

from spes_jax.errors import SpesError


class UnsafeCheckpointError(SpesError):
    """The pickle names a global outside the allow-list."""


_STORAGE_DTYPES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16", "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}
_TORCH_DTYPES = {"float64": np.float64, "float32": np.float32, "float16": np.float16, "bfloat16": "bfloat16",
                 "int64": np.int64, "int32": np.int32, "int16": np.int16, "int8": np.int8,
                 "uint8": np.uint8, "bool": np.bool_}


class _StorageType:
    def __init__(self, dtype):
        self.dtype = dtype


def _np_dtype(dtype) -> np.dtype:
    if dtype == "bfloat16":
        import ml_dtypes  # a jax dependency

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(dtype)


class _Tensor:
    """A tensor view, materialised after unpickling (legacy files store the bytes after the pickle)."""

    def __init__(self, storage: np.ndarray, offset: int, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, int(offset), tuple(size), tuple(stride)

    def numpy(self) -> np.ndarray:
        itemsize = self.storage.dtype.itemsize
        need = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride)) + 1
        if min(self.size, default=1) > 0 and need > self.storage.size:
            raise SpesError("tensor extends beyond its storage (corrupt checkpoint)")
        return np.lib.stride_tricks.as_strided(
            self.storage[self.offset:], shape=self.size,
            strides=tuple(s * itemsize for s in self.stride)).copy()


def _rebuild_tensor(storage, offset, size, stride, *_ignored):
    if not isinstance(storage, np.ndarray):
        raise SpesError("tensor without storage (corrupt checkpoint)")
    return _Tensor(storage, offset, size, stride)


def _rebuild_parameter(data, *_ignored):
    return data


class _Record:
    """Stand-in for an allowed class: keeps the state pickle hands to ``__setstate__``."""

    kind = "record"

    def __init__(self, *args):
        self.args = args
        self.state: Any = None

    def __setstate__(self, state):
        self.state = state


def _record_class(kind: str) -> type:
    return type(f"_{kind}", (_Record,), {"kind": kind})


def _plain(obj: Any) -> Any:
    """Omegaconf nodes and Namespaces -> dicts, lists and scalars."""
    if isinstance(obj, _Record):
        state = obj.state
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
            state = {**(state[0] or {}), **state[1]}  # (dict state, slots state)
        if obj.kind == "Namespace":
            return {k: _plain(v) for k, v in (state or {}).items()}
        if obj.kind in ("DictConfig", "ListConfig"):
            content = state.get("_content") if isinstance(state, dict) else None
            return _plain(content)
        if obj.kind == "AnyNode":
            return _plain(state.get("_val") if isinstance(state, dict) else None)
        return None  # metadata objects carry no user data
    if isinstance(obj, _Tensor):
        return obj.numpy()
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj)
    return obj


def _allowed_globals() -> dict[tuple[str, str], Any]:
    allowed: dict[tuple[str, str], Any] = {
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("collections", "OrderedDict"): dict,
        ("collections", "defaultdict"): lambda *_: {},
        ("argparse", "Namespace"): _record_class("Namespace"),
        ("typing", "Any"): None,
    }
    for name in ("list", "dict", "set", "tuple", "int", "float", "bool", "str", "long"):
        for module in ("builtins", "__builtin__"):
            allowed[(module, name)] = getattr(builtins, "int" if name == "long" else name)
    for name, dtype in _STORAGE_DTYPES.items():
        allowed[("torch", name)] = _StorageType(dtype)
    for dname, dtype in _TORCH_DTYPES.items():
        allowed[("torch", dname)] = _StorageType(dtype)
    allowed[("torch", "device")] = lambda *_: None
    for module, name in (("omegaconf.dictconfig", "DictConfig"), ("omegaconf.listconfig", "ListConfig"),
                         ("omegaconf.nodes", "AnyNode"), ("omegaconf.base", "ContainerMetadata"),
                         ("omegaconf.base", "Metadata")):
        allowed[(module, name)] = _record_class(name)
    for node in ("StringNode", "IntegerNode", "FloatNode", "BooleanNode", "EnumNode", "ValueNode"):
        allowed[("omegaconf.nodes", node)] = _record_class("AnyNode")
    return allowed


_ALLOWED = _allowed_globals()


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, persistent_load: Callable[[Any], Any]):
        super().__init__(file)
        self._persistent = persistent_load

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafeCheckpointError(
                f"refusing to load: the pickle references '{module}.{name}', which is not an allowed "
                f"tensor, container or config type (loading it could execute code)") from None

    def persistent_load(self, pid):
        return self._persistent(pid)


def _unpickle(data: bytes | io.BufferedIOBase, persistent_load) -> Any:
    f = io.BytesIO(data) if isinstance(data, bytes) else data
    return _RestrictedUnpickler(f, persistent_load).load()


def _load_zip(path: str) -> Any:
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pkl) != 1:
            raise SpesError(f"{path}: a zip file but not a torch.save checkpoint (no data.pkl)")
        prefix = pkl[0][: -len("data.pkl")]
        byteorder = z.read(prefix + "byteorder").decode().strip() if prefix + "byteorder" in names else "little"
        if byteorder != "little":
            raise SpesError(f"{path}: big-endian checkpoints are not supported")
        cache: dict[str, np.ndarray] = {}

        def load_storage(pid):
            if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
                raise SpesError(f"{path}: unexpected persistent id {pid!r}")
            storage_type, key = pid[1], str(pid[2])
            if not isinstance(storage_type, _StorageType):
                raise SpesError(f"{path}: unexpected storage type {storage_type!r}")
            if key not in cache:
                cache[key] = np.frombuffer(z.read(f"{prefix}data/{key}"), dtype=_np_dtype(storage_type.dtype))
            return cache[key]

        return _unpickle(z.read(pkl[0]), load_storage)


_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def _load_legacy(path: str) -> Any:
    with open(path, "rb") as f:
        def no_storage(pid):
            raise SpesError(f"{path}: unexpected storage reference in a header pickle")

        if _unpickle(f, no_storage) != _LEGACY_MAGIC:
            raise SpesError(f"{path}: not a fairseq/torch checkpoint (a pickle without torch's magic number)")
        if _unpickle(f, no_storage) != 1001:
            raise SpesError(f"{path}: unsupported legacy torch.save protocol")
        _unpickle(f, no_storage)  # sys_info
        buffers: dict[str, np.ndarray] = {}

        def load_storage(pid):
            if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
                raise SpesError(f"{path}: unexpected persistent id {pid!r}")
            storage_type, key, numel = pid[1], str(pid[2]), int(pid[4])
            if not isinstance(storage_type, _StorageType):
                raise SpesError(f"{path}: unexpected storage type {storage_type!r}")
            # The storage bytes follow the object pickle: hand out a buffer, filled in below.
            if key not in buffers:
                buffers[key] = np.zeros(numel, _np_dtype(storage_type.dtype))
            return buffers[key]

        obj = _unpickle(f, load_storage)
        keys = _unpickle(f, no_storage)
        for key in keys:
            buf = buffers[str(key)]
            (n,) = struct.unpack("<q", f.read(8))
            raw = f.read(n * buf.itemsize)
            if n != buf.size or len(raw) != n * buf.itemsize:
                raise SpesError(f"{path}: truncated or corrupt storage data")
            buf[...] = np.frombuffer(raw, buf.dtype)
        return obj


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Reads a ``torch.save`` checkpoint safely.

    Returns the top-level object with tensors as numpy arrays and configs as plain dicts.
    Raises ``SpesError`` (``UnsafeCheckpointError`` for a disallowed global) with a one-line message.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise SpesError(f"checkpoint not found: {path}")
    try:
        if zipfile.is_zipfile(path):
            obj = _load_zip(path)
        else:
            obj = _load_legacy(path)
    except SpesError:
        raise
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, ValueError, KeyError, TypeError,
            AttributeError, IndexError, struct.error, UnicodeDecodeError, OSError) as e:
        raise SpesError(f"{path}: cannot read checkpoint (truncated or not a torch.save file): "
                        f"{type(e).__name__}: {e}") from None
    return _plain(obj)
