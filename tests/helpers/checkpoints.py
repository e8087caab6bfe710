"""Write synthetic checkpoints by hand (no torch): a safetensors file and a PyTorch zip state dict.

The PyTorch writer emits the pickle opcodes torch.save produces for a state dict (protocol 2:
`_rebuild_tensor_v2` over persistent 'storage' ids, one raw little-endian file per storage), so the
reader is tested against the real layout, plus extra objects a training checkpoint carries.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

_ST_DTYPES = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16", np.dtype(np.int64): "I64"}


def write_safetensors(path: Path, tensors: dict[str, np.ndarray], bf16: tuple[str, ...] = ()) -> Path:
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    blobs, offset = [], 0
    for name, array in tensors.items():
        if name in bf16:
            raw = (np.ascontiguousarray(array, np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
            dtype = "BF16"
        else:
            raw = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
            dtype = _ST_DTYPES[array.dtype]
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    path.write_bytes(struct.pack("<Q", len(head)) + head + b"".join(blobs))
    return path


class _Ops:
    """A tiny protocol-2 pickle emitter."""

    def __init__(self) -> None:
        self.out = io.BytesIO()
        self.out.write(b"\x80\x02")

    def op(self, code: bytes) -> "_Ops":
        self.out.write(code)
        return self

    def str(self, s: str) -> "_Ops":
        b = s.encode()
        return self.op(b"X" + struct.pack("<I", len(b)) + b)

    def int(self, v: int) -> "_Ops":
        return self.op(b"J" + struct.pack("<i", v))

    def glob(self, module: str, name: str) -> "_Ops":
        return self.op(b"c" + f"{module}\n{name}\n".encode())

    def ints_tuple(self, values: tuple[int, ...]) -> "_Ops":
        self.op(b"(")
        for v in values:
            self.int(v)
        return self.op(b"t")


def _tensor(ops: _Ops, key: str, storage: str, numel: int, offset: int, size: tuple[int, ...], stride: tuple[int, ...]) -> None:
    ops.glob("torch._utils", "_rebuild_tensor_v2").op(b"(")
    ops.op(b"(").str("storage").glob("torch", storage).str(key).str("cpu").int(numel).op(b"t").op(b"Q")  # BINPERSID
    ops.int(offset).ints_tuple(size).ints_tuple(stride).op(b"\x89")  # requires_grad False
    ops.glob("collections", "OrderedDict").op(b")").op(b"R")  # backward hooks
    ops.op(b"t").op(b"R")


def write_torch_zip(path: Path, tensors: dict[str, np.ndarray], nest: str | None = "state_dict", evil_marker: Path | None = None,
                    transposed: tuple[str, ...] = (), half: tuple[str, ...] = ()) -> Path:
    """Tensors named in `transposed` are stored as the transpose's storage with swapped strides (a
    non-contiguous view, as torch saves `w.t()`); `half` ones as float16 storages."""
    ops = _Ops()
    storages: dict[str, bytes] = {}
    ops.op(b"}")  # root dict
    if nest:
        ops.str(nest).glob("collections", "OrderedDict").op(b")").op(b"R")
    ops.op(b"(")
    for i, (name, array) in enumerate(tensors.items()):
        key = str(i)
        ops.str(name)
        if name in half:
            storages[key] = np.ascontiguousarray(array, np.float16).astype("<f2").tobytes()
            _tensor(ops, key, "HalfStorage", array.size, 0, array.shape, tuple(s // 2 for s in np.ascontiguousarray(array, np.float16).strides))
        elif name in transposed:
            base = np.ascontiguousarray(array.T, np.float32)  # storage holds the transpose, row-major
            storages[key] = base.astype("<f4").tobytes()
            _tensor(ops, key, "FloatStorage", base.size, 0, array.shape, (1, base.shape[1]))
        else:
            flat = np.ascontiguousarray(array, np.float32)
            pad = np.zeros(3, np.float32)  # a storage offset, as views into a shared storage have
            storages[key] = np.concatenate([pad, flat.ravel()]).astype("<f4").tobytes()
            _tensor(ops, key, "FloatStorage", flat.size + 3, 3, flat.shape, tuple(s // 4 for s in flat.strides))
    ops.op(b"u")  # SETITEMS into the state dict
    if nest:
        ops.op(b"s")  # root[nest] = state dict
        ops.str("epoch").int(7).op(b"s")
        ops.str("args").glob("argparse", "Namespace").op(b")").op(b"R").op(b"s")
        if evil_marker is not None:  # a malicious pickle: must never run
            ops.str("payload").glob("os", "system").str(f"touch {evil_marker}").op(b"\x85").op(b"R").op(b"s")
    ops.op(b".")
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", ops.out.getvalue())
        zf.writestr("archive/byteorder", "little")
        for key, raw in storages.items():
            zf.writestr(f"archive/data/{key}", raw)
        zf.writestr("archive/version", "3\n")
    return path
