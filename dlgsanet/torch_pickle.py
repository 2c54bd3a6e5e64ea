"""Read ``torch.save`` files ourselves: no ``torch.load``, and no pickle code can run.

Why not ``torch.load(weights_only=True)``: hosts replace ``torch.load``. AUTOMATIC1111's
``modules/safe.py`` swaps in a checker that accepts only the zip entries of older torch versions
and returns ``None`` for a file saved by a current torch (its new ``.format_version`` and
``.storage_alignment`` entries), so a good checkpoint read through ``torch.load`` inside that
webui came back as ``None``. Reading the archive here makes the result the same in every host.

Safety: the pickle is run by a pure-Python unpickler whose only reachable callables are this
module's own tensor-rebuild functions and ``OrderedDict`` (the globals torch itself writes for a
state dict); storage types and dtypes resolve to inert values. Object-building opcodes that
could call other code (``INST``, ``OBJ``, ``NEWOBJ``, ``BUILD`` on anything but a dict) are
refused, and every size and offset is checked against the data actually in the file before a
tensor is made. Any other global (``os.system``, a class, ...) stops the read with a message
naming it. Both layouts ``torch.save`` writes are read: the zip archive (torch >= 1.6, the
default) and the legacy stream (``_use_new_zipfile_serialization=False``).
"""
from __future__ import annotations

import io
import pickle
import struct
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, BinaryIO, Callable, Optional

import torch

from .errors import CheckpointError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
_STORAGE_DTYPES = {
    "DoubleStorage": torch.float64, "FloatStorage": torch.float32, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool, "ComplexFloatStorage": torch.complex64,
    "ComplexDoubleStorage": torch.complex128,
}
_DTYPES = {str(d).split(".", 1)[1]: d for d in _STORAGE_DTYPES.values()}
# Where a module name in a pickle is an alias of the one users know (os.system is posix.system).
_MODULE_ALIASES = {"posix": "os", "nt": "os", "__builtin__": "builtins"}


class _Refused(Exception):
    """The pickle asks for something that is not tensor data (carries the user-facing reason)."""


class _Corrupt(Exception):
    """The pickle's tensor records do not fit the data in the file."""


class _StorageType:
    """What ``torch.FloatStorage`` & co. resolve to: only a dtype, not callable."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


class _Storage:
    """A storage's elements: ``data`` is a 1-D tensor (None when only shapes are read)."""

    def __init__(self, dtype: torch.dtype, numel: int, data: Optional[torch.Tensor]) -> None:
        self.dtype, self.numel, self.data = dtype, numel, data


def _ints(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not all(type(v) is int and v >= 0 for v in value):
        raise _Corrupt(f"bad tensor {what} {value!r}")
    return tuple(value)


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *_ignored: Any) -> torch.Tensor:
    """Stands in for ``torch._utils._rebuild_tensor_v2``: a view of a storage from this file.

    The trailing arguments (requires_grad, backward hooks, metadata) are dropped: a checkpoint
    is data, and hooks would be callables.
    """
    if not isinstance(storage, _Storage):
        raise _Refused(f"builds a tensor from a {type(storage).__name__} instead of stored data")
    size, stride = _ints(size, "size"), _ints(stride, "stride")
    if type(offset) is not int or offset < 0 or len(size) != len(stride):
        raise _Corrupt(f"bad tensor offset/shape ({offset!r}, {size!r}, {stride!r})")
    extent = 0 if 0 in size else offset + 1 + sum((n - 1) * s for n, s in zip(size, stride))
    if extent > storage.numel:
        raise _Corrupt(f"a tensor of shape {list(size)} reaches past its storage of {storage.numel} elements")
    if storage.data is None:
        return torch.empty_strided(size, stride, dtype=storage.dtype, device="meta")
    return storage.data.as_strided(size, stride, offset)


def _rebuild_parameter(data: Any, *_ignored: Any) -> torch.Tensor:
    """Stands in for ``torch._utils._rebuild_parameter(_with_state)``: the plain tensor."""
    if not isinstance(data, torch.Tensor):
        raise _Refused(f"builds a parameter from a {type(data).__name__}")
    return data


def _size(*args: Any) -> tuple[int, ...]:
    """Stands in for ``torch.Size``: a tuple of ints."""
    return _ints(args[0] if args else (), "size")


_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch", "Size"): _size,
    **{("torch", name): _StorageType(dtype) for name, dtype in _STORAGE_DTYPES.items()},
    **{("torch", name): dtype for name, dtype in _DTYPES.items()},
}


class _Unpickler(pickle._Unpickler):  # type: ignore[name-defined]  # the pure-Python one: its opcodes can be restricted
    """Resolves only ``_GLOBALS``; storages come from ``load_storage(saved_id)``."""

    dispatch = dict(pickle._Unpickler.dispatch)  # type: ignore[attr-defined]

    def __init__(self, file: BinaryIO, load_storage: Callable[[tuple], _Storage]) -> None:
        super().__init__(file, encoding="latin1")
        self._load_storage = load_storage

    def find_class(self, module: str, name: str) -> Any:
        found = _GLOBALS.get((module, name))
        if found is None:
            shown = f"{_MODULE_ALIASES.get(module, module)}.{name}"
            raise _Refused(f"tries to call {shown}")
        return found

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or not pid or pid[0] not in ("storage", b"storage"):
            raise _Corrupt(f"unknown persistent record {str(pid)[:60]}")
        return self._load_storage(pid)

    def _refuse_object(self) -> None:
        raise _Refused("builds an object with its own code")

    def _build(self) -> None:
        state = self.stack.pop()
        if not isinstance(self.stack[-1], dict) or not isinstance(state, (dict, tuple)):
            raise _Refused(f"sets the state of a {type(self.stack[-1]).__name__}")
        # An OrderedDict's attributes (a state dict's ``_metadata``): not needed, dropped.

    for _op in (pickle.INST, pickle.OBJ, pickle.NEWOBJ, pickle.NEWOBJ_EX):
        dispatch[_op[0]] = _refuse_object
    dispatch[pickle.BUILD[0]] = _build
    del _op


def _storage_args(pid: tuple) -> tuple[torch.dtype, str, int]:
    try:
        _, storage_type, key, _location, numel = pid[:5]
    except ValueError:
        raise _Corrupt("short storage record") from None
    if not isinstance(storage_type, _StorageType):
        raise _Refused(f"stores data of type {type(storage_type).__name__}")
    if type(numel) is not int or numel < 0:
        raise _Corrupt(f"bad storage size {numel!r}")
    return storage_type.dtype, str(key), numel


def _element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _from_bytes(raw: bytes, dtype: torch.dtype, numel: int) -> torch.Tensor:
    if numel == 0:
        return torch.empty(0, dtype=dtype)
    return torch.frombuffer(bytearray(raw), dtype=dtype, count=numel)


def _read_zip(path: Path, shapes_only: bool) -> Any:
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        if any(n.endswith("/constants.pkl") for n in names):
            raise CheckpointError(f"{path.name}: a TorchScript program, not a checkpoint of weights; "
                                  f"save the model's state_dict() instead")
        pickles = [n for n in names if n == "data.pkl" or (n.endswith("/data.pkl") and n.count("/") == 1)]
        if len(pickles) != 1:
            raise CheckpointError(f"{path.name}: a zip archive, but not one written by torch.save "
                                  f"({len(pickles)} data.pkl records)")
        prefix = pickles[0][: -len("data.pkl")]
        if prefix + "byteorder" in names and zf.read(prefix + "byteorder").strip() not in (b"little", b""):
            raise CheckpointError(f"{path.name}: a big-endian checkpoint; convert it on the machine that wrote it")
        storages: dict[str, _Storage] = {}

        def load_storage(pid: tuple) -> _Storage:
            dtype, key, numel = _storage_args(pid)
            if key not in storages:
                record = f"{prefix}data/{key}"
                try:
                    info = zf.getinfo(record)
                except KeyError:
                    raise _Corrupt(f"missing storage record {record}") from None
                nbytes = numel * _element_size(dtype)
                if info.file_size < nbytes:
                    raise _Corrupt(f"storage {key} holds {info.file_size} bytes, needs {nbytes}")
                data = None if shapes_only else _from_bytes(zf.read(record)[:nbytes], dtype, numel)
                storages[key] = _Storage(dtype, numel, data)
            elif storages[key].dtype != dtype:
                raise _Corrupt(f"storage {key} is used with two dtypes")
            return storages[key]

        with zf.open(pickles[0]) as f:
            return _Unpickler(io.BytesIO(f.read()), load_storage).load()


def _read_legacy(path: Path, shapes_only: bool) -> Any:
    size = path.stat().st_size
    with open(path, "rb") as f:
        def plain() -> Any:  # the header pickles hold no globals or storages at all
            return _Unpickler(f, lambda pid: (_ for _ in ()).throw(_Corrupt("storage in a header"))).load()

        if plain() != LEGACY_MAGIC:
            raise _Corrupt("no torch.save magic number")
        plain()  # protocol version
        sys_info = plain()
        if isinstance(sys_info, dict) and sys_info.get("little_endian") is False:
            raise CheckpointError(f"{path.name}: a big-endian checkpoint; convert it on the machine that wrote it")
        storages: dict[str, _Storage] = {}

        def load_storage(pid: tuple) -> _Storage:
            dtype, key, numel = _storage_args(pid)
            if len(pid) > 5 and pid[5] is not None:
                raise CheckpointError(f"{path.name}: a checkpoint from a very old torch (storage views); "
                                      f"re-save it with a current torch")
            if key not in storages:
                if numel * _element_size(dtype) > size:
                    raise _Corrupt(f"storage {key} is larger than the file")
                data = None if shapes_only else torch.empty(numel, dtype=dtype)
                storages[key] = _Storage(dtype, numel, data)
            return storages[key]

        result = _Unpickler(f, load_storage).load()
        if shapes_only:
            return result
        keys = plain()
        if not isinstance(keys, list) or set(map(str, keys)) != set(storages):
            raise _Corrupt("the storage list does not match the tensors")
        for key in map(str, keys):
            storage = storages[key]
            head = f.read(8)
            if len(head) != 8 or struct.unpack("<q", head)[0] != storage.numel:
                raise _Corrupt(f"storage {key}: size record missing or wrong")
            nbytes = storage.numel * _element_size(storage.dtype)
            raw = f.read(nbytes)
            if len(raw) != nbytes:
                raise _Corrupt(f"storage {key}: {len(raw)} of {nbytes} bytes")
            if nbytes:
                assert storage.data is not None
                storage.data.view(torch.uint8).copy_(torch.frombuffer(bytearray(raw), dtype=torch.uint8))
        return result


def read_torch_file(path: Path, *, shapes_only: bool = False) -> Any:
    """The object a ``torch.save`` file holds (dicts, lists, numbers, CPU tensors), read safely.

    ``shapes_only``: tensors come back on the ``meta`` device (names, shapes, dtypes; no data is
    read), which keeps listing a folder of large checkpoints instant. Raises
    :class:`CheckpointError` with one line that says what is wrong.
    """
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            return _read_zip(path, shapes_only)
        return _read_legacy(path, shapes_only)
    except CheckpointError:
        raise
    except _Refused as e:
        raise CheckpointError(
            f"{path.name}: refused to load: this pickle would run code (it {e}); no code from "
            f"checkpoints is ever run. Use a .safetensors copy of the model, or convert a trusted "
            f"copy with `python -m dlgsanet convert`.") from None
    except _Corrupt as e:
        raise CheckpointError(f"{path.name}: the file is truncated or corrupt and cannot be read as a "
                              f"PyTorch checkpoint ({e}). Download it again.") from None
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, ValueError, KeyError, IndexError,
            TypeError, AttributeError, struct.error, RuntimeError, MemoryError, OverflowError,
            UnicodeDecodeError) as e:
        if isinstance(e, EOFError):
            detail = "the data ends too early"
        elif isinstance(e, (pickle.UnpicklingError, zipfile.BadZipFile)) and str(e):
            detail = str(e).splitlines()[0][:120]
        else:  # the unpickler's internals (an unknown opcode, an empty stack, ...)
            detail = f"unreadable pickle data: {type(e).__name__}"
        raise CheckpointError(f"{path.name}: not a PyTorch checkpoint, or it is truncated or corrupt "
                              f"({detail}). Download it again.") from None
    except OSError as e:
        raise CheckpointError(f"{path.name}: cannot be read ({e.strerror or e})") from None
