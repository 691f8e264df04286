"""Reading a GGUF file's metadata header and checking the types llama.cpp relies on.

llama.cpp reads some keys with ``gguf_get_val_f32`` / ``gguf_get_arr_str`` and friends, which
*abort the process* (SIGABRT, a debugger backtrace) when the stored type differs, instead of
failing the load. A file built by hand or by another tool can do that: an adapter whose
``adapter.lora.alpha`` is a string, a tokenizer whose scores are strings. So before llama.cpp
sees a file, its header is parsed here (no tensor data, arrays skipped over, not
materialized) and every such key is checked; a bad one is a ModelError naming file and key.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelError

GGUF_MAGIC = b"GGUF"   # a GGUF file's first four bytes

# GGUF value types (ggml/include/gguf.h).
UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64, INT64, FLOAT64 = range(13)
TYPE_NAMES = {UINT8: "uint8", INT8: "int8", UINT16: "uint16", INT16: "int16", UINT32: "uint32",
              INT32: "int32", FLOAT32: "float32", BOOL: "bool", STRING: "string", ARRAY: "array",
              UINT64: "uint64", INT64: "int64", FLOAT64: "float64"}
_SCALAR = {UINT8: "<B", INT8: "<b", UINT16: "<H", INT16: "<h", UINT32: "<I", INT32: "<i",
           FLOAT32: "<f", BOOL: "<?", UINT64: "<Q", INT64: "<q", FLOAT64: "<d"}
MAX_KEYS = 1 << 20          # more would be a corrupt count, not a real file
MAX_STRING = 1 << 30


@dataclass(frozen=True)
class Value:
    """One metadata value: its type, element type (arrays), length (arrays) and, for scalars
    and strings, the value itself."""

    type: int
    elem_type: int | None = None
    length: int = 0
    value: Any = None

    def describe(self) -> str:
        if self.type == ARRAY:
            return f"an array of {TYPE_NAMES.get(self.elem_type, '?')}"
        return f"a {TYPE_NAMES.get(self.type, '?')}"


class _Truncated(Exception):
    pass


_U32, _U64 = struct.Struct("<I"), struct.Struct("<Q")


class _Reader:
    """Reads values at a moving offset of the file's bytes (an mmap: only the pages the header
    covers are read). A vocabulary's strings are stepped over by their lengths: a 262k-token
    Gemma header takes milliseconds, not the seconds a read() per string took."""

    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, fmt: str | struct.Struct):
        st = fmt if isinstance(fmt, struct.Struct) else struct.Struct(fmt)
        try:
            value = st.unpack_from(self.data, self.pos)[0]
        except struct.error:
            raise _Truncated from None
        self.pos += st.size
        return value

    def string(self) -> str:
        n = self.take(_U64)
        if n > MAX_STRING or self.pos + n > len(self.data):
            raise _Truncated
        text = bytes(self.data[self.pos:self.pos + n]).decode("utf-8", errors="replace")
        self.pos += n
        return text

    def skip(self, n: int) -> None:
        self.pos += n
        if self.pos > len(self.data):
            raise _Truncated

    def skip_strings(self, count: int) -> None:
        data, pos, end, unpack = self.data, self.pos, len(self.data), _U64.unpack_from
        try:
            for _ in range(count):
                pos += 8 + unpack(data, pos)[0]
        except struct.error:
            raise _Truncated from None
        if pos > end:
            raise _Truncated
        self.pos = pos


def read_metadata(path: str | os.PathLike) -> dict[str, Value]:
    """Every metadata key of a GGUF file with its type; ModelError when the header is bad."""
    return read_header(path)[0]


MAX_TENSORS = 1 << 24
MAX_DIMS = 8


def read_tensor_shapes(path: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """Every tensor's name and shape (numpy order: rows first), from the header alone: what an
    adapter check or a LoRA export needs, without reading a vocabulary into Python objects."""
    return read_header(path, tensors=True)[1]


def read_header(path: str | os.PathLike, *, tensors: bool = False) -> tuple[dict[str, Value], dict]:
    """(metadata, {tensor name: numpy-order shape} when ``tensors``); ModelError when the header is bad.

    A step checks the same file several times (the engine, the base of a run, an export), so a
    header is kept per file identity (path, size, modification time, inode): a file rewritten
    in place is read again."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError as exc:
        raise ModelError(f"cannot read {p}: {exc.strerror}") from None
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns, st.st_ino, tensors)
    if key not in _HEADERS:
        if len(_HEADERS) >= 32:
            _HEADERS.pop(next(iter(_HEADERS)))
        _HEADERS[key] = _read_header(p, tensors)
    meta, shapes = _HEADERS[key]
    return dict(meta), dict(shapes)


_HEADERS: dict[tuple, tuple[dict[str, Value], dict]] = {}


def _read_header(p: Path, tensors: bool) -> tuple[dict[str, Value], dict]:
    try:
        with open(p, "rb") as fh:
            if fh.read(4) != GGUF_MAGIC:
                raise ModelError(f"{p} is not a GGUF file")
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
                return _parse(p, _Reader(data), tensors)
    except _Truncated:
        raise ModelError(f"{p} is truncated or corrupt (its metadata header ends early)") from None
    except (OSError, ValueError) as exc:   # ValueError: mmap of a file that is not a regular file
        raise ModelError(f"cannot read {p}: {getattr(exc, 'strerror', None) or exc}") from None


def _parse(p: Path, r: _Reader, tensors: bool) -> tuple[dict[str, Value], dict]:
    r.pos = 4
    version = r.take(_U32)
    if version not in (2, 3):
        raise ModelError(f"{p}: GGUF version {version} is not supported (2 or 3 is)")
    n_tensors = r.take(_U64)
    n_kv = r.take(_U64)
    if n_kv > MAX_KEYS or n_tensors > MAX_TENSORS:
        raise ModelError(f"{p}: the header claims {n_kv} metadata keys and {n_tensors} tensors: "
                         "a corrupt file")
    meta: dict[str, Value] = {}
    for _ in range(n_kv):
        key = r.string()
        meta[key] = _read_value(r, r.take(_U32), p, key)
    shapes: dict[str, tuple[int, ...]] = {}
    for _ in range(n_tensors if tensors else 0):
        name, n_dims = r.string(), r.take(_U32)
        if n_dims > MAX_DIMS:
            raise _Truncated
        dims = [r.take(_U64) for _ in range(n_dims)]
        r.take(_U32)                  # type
        r.take(_U64)                  # offset
        shapes[name] = tuple(reversed(dims))
    return meta, shapes


def _read_value(r: _Reader, vtype: int, path: Path, key: str) -> Value:
    if vtype in _SCALAR:
        return Value(vtype, value=r.take(_SCALAR[vtype]))
    if vtype == STRING:
        return Value(STRING, value=r.string())
    if vtype == ARRAY:
        elem, n = r.take(_U32), r.take(_U64)
        if elem in _SCALAR:
            r.skip(n * struct.calcsize(_SCALAR[elem]))
        elif elem == STRING:
            r.skip_strings(n)
        else:
            raise ModelError(f"{path}: metadata key {key} is an array of unknown type {elem}")
        return Value(ARRAY, elem_type=elem, length=n)
    raise ModelError(f"{path}: metadata key {key} has unknown type {vtype}: a corrupt file")


# What llama.cpp reads without a type check of its own: key -> (type, element type or None).
MODEL_KEYS = {
    "general.architecture": (STRING, None),
    "tokenizer.ggml.model": (STRING, None),
    "tokenizer.ggml.tokens": (ARRAY, STRING),
    "tokenizer.ggml.merges": (ARRAY, STRING),
    "tokenizer.ggml.scores": (ARRAY, FLOAT32),
    "tokenizer.ggml.token_type": (ARRAY, INT32),
    "tokenizer.chat_template": (STRING, None),
}
ADAPTER_KEYS = {
    "general.type": (STRING, None),
    "general.architecture": (STRING, None),
    "adapter.type": (STRING, None),
    "adapter.lora.alpha": (FLOAT32, None),
}
_PER_TOKEN = ("tokenizer.ggml.scores", "tokenizer.ggml.token_type")


def check_types(path: str | os.PathLike, meta: dict[str, Value], expected: dict) -> None:
    """ModelError naming ``path`` and the key when a key of ``expected`` (key -> (type, element
    type or None)) is in ``meta`` with another type; absent keys pass."""
    for key, (vtype, elem) in expected.items():
        v = meta.get(key)
        if v is None:
            continue
        if v.type != vtype or (elem is not None and v.elem_type != elem):
            want = Value(vtype, elem).describe()
            raise ModelError(f"{path}: metadata key {key} is {v.describe()}, llama.cpp needs {want}")


def check_model_metadata(path: str | os.PathLike) -> dict[str, Value]:
    """The metadata of a model GGUF, after checking what llama.cpp would abort on."""
    meta = read_metadata(path)
    check_types(path, meta, MODEL_KEYS)
    tokens = meta.get("tokenizer.ggml.tokens")
    for key in _PER_TOKEN:
        v = meta.get(key)
        # llama.cpp reads one entry per token from these arrays, past the end if shorter.
        if v is not None and tokens is not None and v.length < tokens.length:
            raise ModelError(f"{path}: metadata key {key} has {v.length} entries for "
                             f"{tokens.length} tokens: a corrupt tokenizer")
    return meta


def check_adapter_metadata(path: str | os.PathLike) -> dict[str, Value]:
    """The metadata of a LoRA adapter GGUF, after checking the types of the keys llama.cpp reads
    (``ADAPTER_KEYS``); ModelError on a bad file."""
    meta = read_metadata(path)
    check_types(path, meta, ADAPTER_KEYS)
    return meta
