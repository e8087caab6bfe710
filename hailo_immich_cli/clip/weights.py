"""Read the few CPU-side text weights a Hailo text encoder needs out of the original checkpoint.

The Hailo text HEFs start after the token-embedding lookup and may end before the projection, so
the host needs `token_embedding`, `positional_embedding`, `text_projection` (and maybe the final
LayerNorm). Users download the original checkpoint once; `extract-weights` writes a small `.npz`.

Formats, all read with NumPy alone (no torch, no safetensors package):
- `.safetensors`: 8-byte little-endian header length, a JSON header, then raw tensor data.
- PyTorch zip checkpoints (`.pt`, `.pth`, `.bin` from torch >= 1.6): a zip holding `data.pkl` and
  one raw file per storage. The pickle is read by an unpickler that only maps torch's tensor
  rebuild functions and storage types to our own code; every other class in the file becomes an
  inert placeholder, so nothing from the file is imported or executed.
Tensors are materialised lazily: only the ones the recipe asks for are read.
"""

from __future__ import annotations

import collections
import io
import json
import os
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from hailo_immich_cli.errors import BadInputError, RecipeError
from hailo_immich_cli.models.recipes import Recipe

_SAFETENSORS_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": "bf16", "I64": np.int64, "I32": np.int32,
    "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}
_TORCH_STORAGES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16, "BFloat16Storage": "bf16",
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16, "CharStorage": np.int8,
    "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


def _from_bf16(raw: np.ndarray) -> np.ndarray:
    """bfloat16 bits (uint16) -> float32: they are the top half of a float32."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


def _view(buffer: bytes | memoryview, dtype: Any, count: int, offset_bytes: int = 0) -> np.ndarray:
    if dtype == "bf16":
        return _from_bf16(np.frombuffer(buffer, dtype="<u2", count=count, offset=offset_bytes))
    return np.frombuffer(buffer, dtype=np.dtype(dtype).newbyteorder("<"), count=count, offset=offset_bytes)


@dataclass(frozen=True)
class LazyTensor:
    """A tensor in a checkpoint: shape known, data read only on `load()`."""

    shape: tuple[int, ...]
    dtype: str
    _load: Callable[[], np.ndarray]

    def load(self) -> np.ndarray:
        array = self._load()
        if array.shape != self.shape:
            raise BadInputError(f"tensor data does not match its declared shape {self.shape}")
        return array


# ---- safetensors ----------------------------------------------------------------------------


def read_safetensors(path: Path) -> dict[str, LazyTensor]:
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise BadInputError(f"{path}: too short to be a safetensors file ({size} bytes)")
        (header_len,) = struct.unpack("<Q", head)
        if header_len > min(size - 8, 100 * 1024 * 1024):
            raise BadInputError(f"{path}: truncated or not a safetensors file (header of {header_len} bytes in a {size}-byte file)")
        try:
            header = json.loads(fh.read(header_len).decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise BadInputError(f"{path}: not a safetensors file (bad JSON header: {exc})") from exc
    if not isinstance(header, dict):
        raise BadInputError(f"{path}: not a safetensors file (header is not an object)")
    data_start = 8 + header_len
    tensors: dict[str, LazyTensor] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = _SAFETENSORS_DTYPES[info["dtype"]]
            shape = tuple(int(d) for d in info["shape"])
            begin, end = (int(v) for v in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            raise BadInputError(f"{path}: tensor '{name}' has an unreadable header entry ({exc})") from exc
        count = int(np.prod(shape, dtype=np.int64))
        itemsize = 2 if dtype == "bf16" else np.dtype(dtype).itemsize
        if end - begin != count * itemsize or data_start + end > size or begin < 0:
            raise BadInputError(f"{path}: tensor '{name}' lies outside the file (truncated download?)")

        def load(begin=begin, count=count, dtype=dtype, shape=shape) -> np.ndarray:
            with path.open("rb") as fh:
                fh.seek(data_start + begin)
                raw = fh.read(count * itemsize)
            if len(raw) != count * itemsize:
                raise BadInputError(f"{path}: truncated while reading tensor data")
            return _view(raw, dtype, count).reshape(shape)

        tensors[name] = LazyTensor(shape, str(info["dtype"]), load)
    return tensors


# ---- PyTorch zip checkpoints ----------------------------------------------------------------


class _Opaque:
    """Stands in for any class a checkpoint mentions that we do not need (optimizer state, args...)."""

    def __init__(self, *args: Any, **kwargs: Any):
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __call__(self, *args: Any, **kwargs: Any) -> "_Opaque":
        return _Opaque(*args)


def _opaque_class(module: str, name: str) -> type:
    return type(f"Opaque[{module}.{name}]", (_Opaque,), {})


@dataclass(frozen=True)
class _StorageRef:
    member: str
    dtype: Any
    numel: int


@dataclass(frozen=True)
class _StorageType:
    dtype: Any


class _TensorRef:
    def __init__(self, storage: _StorageRef, offset: int, size: tuple[int, ...], stride: tuple[int, ...]):
        self.storage, self.offset, self.size, self.stride = storage, int(offset), tuple(int(s) for s in size), tuple(int(s) for s in stride)


def _rebuild_tensor(storage: Any, offset: int, size: Any, stride: Any, *_: Any) -> Any:
    if not isinstance(storage, _StorageRef):
        return _Opaque(storage)
    return _TensorRef(storage, offset, tuple(size), tuple(stride))


def _rebuild_parameter(data: Any, *_: Any) -> Any:
    return data


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
}


class _CheckpointUnpickler(pickle.Unpickler):
    def __init__(self, fh: io.BufferedIOBase, data_dir: str):
        super().__init__(fh)
        self.data_dir = data_dir

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _TORCH_STORAGES:
            return _StorageType(_TORCH_STORAGES[name])
        return _opaque_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise BadInputError(f"unsupported persistent id in checkpoint: {pid!r:.80}")
        _, storage_type, key, _location, numel = pid[:5]
        dtype = storage_type.dtype if isinstance(storage_type, _StorageType) else None
        if dtype is None:
            raise BadInputError(f"unsupported storage type in checkpoint: {storage_type!r:.80}")
        return _StorageRef(f"{self.data_dir}/data/{key}", dtype, int(numel))


def read_torch_zip(path: Path) -> dict[str, LazyTensor]:
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        with path.open("rb") as fh:
            magic = fh.read(2)
        if magic == b"\x80\x02":
            raise BadInputError(f"{path}: a legacy (pre-1.6) PyTorch pickle, which cannot be read safely without torch; "
                                "use the model's .safetensors file instead") from exc
        raise BadInputError(f"{path}: not a PyTorch zip checkpoint (truncated download?): {exc}") from exc
    names = zf.namelist()
    pkl = next((n for n in names if n.endswith("/data.pkl") or n == "data.pkl"), None)
    if pkl is None:
        hint = " (a TorchScript archive; use the model's Hugging Face .safetensors)" if any("/code/" in n for n in names) else ""
        raise BadInputError(f"{path}: a zip without data.pkl, not a PyTorch state dict{hint}")
    data_dir = pkl[: -len("data.pkl")].rstrip("/")
    try:
        with zf.open(pkl) as fh:
            root = _CheckpointUnpickler(io.BufferedReader(fh), data_dir).load()  # type: ignore[arg-type]
    except BadInputError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, zipfile.BadZipFile) as exc:
        raise BadInputError(f"{path}: unreadable checkpoint pickle: {exc}") from exc

    def loader(ref: _TensorRef) -> Callable[[], np.ndarray]:
        def load() -> np.ndarray:
            try:
                raw = zf.read(ref.storage.member)
            except (KeyError, zipfile.BadZipFile, EOFError) as exc:
                raise BadInputError(f"{path}: storage {ref.storage.member} is missing or damaged: {exc}") from exc
            itemsize = 2 if ref.storage.dtype == "bf16" else np.dtype(ref.storage.dtype).itemsize
            if len(raw) < ref.storage.numel * itemsize:
                raise BadInputError(f"{path}: storage {ref.storage.member} is truncated")
            flat = _view(raw, ref.storage.dtype, ref.storage.numel)
            if not ref.size:
                return flat[ref.offset : ref.offset + 1].reshape(())
            last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride))
            if min(ref.size) > 0 and last >= ref.storage.numel:
                raise BadInputError(f"{path}: a tensor reaches past its storage")
            view = np.lib.stride_tricks.as_strided(flat[ref.offset :], shape=ref.size,
                                                   strides=tuple(s * flat.itemsize for s in ref.stride))
            return np.ascontiguousarray(view)
        return load

    tensors: dict[str, LazyTensor] = {}
    for key, value in _flatten(root):
        if isinstance(value, _TensorRef):
            tensors[key] = LazyTensor(value.size, str(np.dtype(value.storage.dtype) if value.storage.dtype != "bf16" else "bf16"), loader(value))
    return tensors


def _flatten(obj: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            yield from _flatten(v, f"{prefix}{k}." if isinstance(k, str) else prefix)
    else:
        yield prefix[:-1], obj


def read_checkpoint(path: Path) -> dict[str, LazyTensor]:
    """Every tensor in a checkpoint by (dotted) key, read lazily; format sniffed from the bytes."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: no such file")
    with path.open("rb") as fh:
        head = fh.read(4)
    if head[:2] == b"PK":
        return read_torch_zip(path)
    if head[:1] == b"\x80":
        raise BadInputError(f"{path}: a legacy (pre-1.6) PyTorch pickle, which cannot be read safely without torch; "
                            "use the model's .safetensors file instead")
    return read_safetensors(path)


# ---- extraction by recipe -------------------------------------------------------------------


def _strip(key: str, prefixes: tuple[str, ...]) -> str:
    changed = True
    while changed:
        changed = False
        for p in prefixes:
            if p and key.startswith(p):
                key, changed = key[len(p):], True
    return key


def weights_spec(recipe: Recipe) -> Mapping[str, Any]:
    spec = recipe.raw.get("weights")
    if not isinstance(spec, dict) or not spec.get("tensors"):
        raise RecipeError(str(recipe.path), "weights", f"recipe {recipe.id} names no [weights] tensors to extract")
    return spec


def extract_text_weights(recipe: Recipe, checkpoint: Path) -> dict[str, np.ndarray]:
    """The arrays the recipe's [weights] table asks for, found by its key variants and shape-checked."""
    spec = weights_spec(recipe)
    tensors = read_checkpoint(checkpoint)
    prefixes = tuple(spec.get("strip_prefixes", []))
    by_key: dict[str, str] = {}
    for key in tensors:
        by_key.setdefault(_strip(key, prefixes), key)
    out: dict[str, np.ndarray] = {}
    for t in spec["tensors"]:
        name, shape = t["name"], tuple(t.get("shape", ()))
        found, transpose = None, False
        for candidate, is_linear in [(k, False) for k in t.get("keys", [])] + [(k, True) for k in t.get("linear_keys", [])]:
            real = by_key.get(candidate)
            if real is not None:
                found, transpose = real, is_linear
                break
        if found is None:
            if t.get("optional"):
                continue
            wanted = ", ".join(t.get("keys", []) + t.get("linear_keys", []))
            raise BadInputError(f"{checkpoint.name}: no '{name}' tensor (looked for {wanted}); is this the checkpoint "
                                f"the recipe names? ({spec.get('checkpoint', 'see the recipe')})")
        array = tensors[found].load().astype(np.float32)
        if transpose:
            array = np.ascontiguousarray(array.T)
        if shape and array.shape != shape:
            raise BadInputError(f"{checkpoint.name}: '{found}' has shape {array.shape}, recipe {recipe.id} needs {shape} "
                                f"for {name}: a different model size?")
        out[name] = array
    return out


def save_npz(arrays: Mapping[str, np.ndarray], target: Path) -> Path:
    """Write atomically: a `.part` file, fsync, rename; a crash never leaves a half file under the name."""
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    try:
        with part.open("wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(part, target)
    except OSError:
        part.unlink(missing_ok=True)
        raise
    return target
