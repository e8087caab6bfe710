"""Write small but valid HEF files for tests: header (v1/v2/v3 + its hash) and the protobuf fields
hailo_immich_cli.models.hef reads. No config words for a real chip: HailoRT itself could not run them,
the hailo_platform test double can.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import xxhash

ARCH_CODES = {"HAILO8": 0, "HAILO8P": 1, "HAILO8R": 2, "HAILO8L": 3, "HAILO15M": 4, "HAILO10H": 5, "HAILO15H": 103}
DATA_BYTES = {"uint8": 1, "uint16": 2}
# Extensions a current Model Zoo HEF carries: ABBALE, PADDED_DDR_BUFFERS, PERIPH_CALCULATION_IN_HAILORT, KO_RUN_ASAP.
DEFAULT_EXTENSIONS = (0, 3, 26, 12)


@dataclass(frozen=True)
class Layer:
    """One boundary layer, described by its python `shape` as HailoRT would report it."""

    name: str
    shape: tuple[int, ...]  # (f,) -> NC, (h, w) -> NHW, (h, w, f) -> NHWC
    dtype: str = "uint8"
    qp_scale: float = 1.0
    qp_zp: float = 0.0
    per_feature: tuple[Sequence[float], Sequence[float]] | None = None  # (scales, zps)
    original_names: tuple[str, ...] = ()
    device_order: str | None = None  # default: NC / NHW / NHWC from the shape; "NHCW" also allowed

    @property
    def limvals(self) -> tuple[float, float]:
        top = (1 << (8 * DATA_BYTES[self.dtype])) - 1
        return (0 - self.qp_zp) * self.qp_scale, (top - self.qp_zp) * self.qp_scale


# ---- protobuf wire encoding ------------------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def f_int(n: int, value: int) -> bytes:
    return _varint(n << 3) + _varint(value) if value else b""


def f_bytes(n: int, data: bytes) -> bytes:
    return _varint((n << 3) | 2) + _varint(len(data)) + data


def f_str(n: int, text: str) -> bytes:
    return f_bytes(n, text.encode()) if text else b""


def f_float(n: int, value: float) -> bytes:
    return _varint((n << 3) | 5) + struct.pack("<f", value) if value else b""


def f_double(n: int, value: float) -> bytes:
    return _varint((n << 3) | 1) + struct.pack("<d", value) if value else b""


def f_doubles(n: int, values: Sequence[float]) -> bytes:
    return f_bytes(n, struct.pack(f"<{len(values)}d", *values)) if len(values) else b""


# ---- HEF messages ------------------------------------------------------------------------------

_ORDER_CODES = {"NHWC": 0, "NHCW": 1, "NC": 2, "NHW": 5}


def _edge_layer(layer: Layer, direction: int) -> bytes:
    if len(layer.shape) == 1:
        h, w, f, order = 1, 1, layer.shape[0], "NC"
    elif len(layer.shape) == 2:
        (h, w), f, order = layer.shape, 1, "NHW"
    elif len(layer.shape) == 3:
        (h, w, f), order = layer.shape, "NHWC"
    else:
        raise ValueError(f"{layer.name}: a HEF layer has 1 to 3 dims, not {layer.shape}")
    order = layer.device_order or order
    base = b"".join((f_int(1, h), f_int(2, h), f_int(3, w), f_int(4, w), f_int(5, f), f_int(6, f),
                     f_int(7, _ORDER_CODES[order]), f_int(12, DATA_BYTES[layer.dtype])))
    lo, hi = layer.limvals
    numeric = f_float(1, layer.qp_zp) + f_float(2, layer.qp_scale) + f_float(3, lo) + f_float(4, hi)
    if layer.per_feature is not None:
        numeric += f_doubles(5, list(layer.per_feature[1])) + f_doubles(6, list(layer.per_feature[0]))
    info = f_str(1, layer.name) + f_bytes(2, base) + f_bytes(3, numeric) + f_str(4, layer.name)
    info += b"".join(f_str(5, n) for n in layer.original_names)
    return f_int(1, direction) + f_bytes(3, info) + f_bytes(5, b"")  # context_switch_info: BOUNDARY (default 0)


def network_group_proto(name: str, inputs: Sequence[Layer], outputs: Sequence[Layer], contexts: int = 1,
                        bottleneck_fps: float = 1000.0, latency_s: float = 0.002) -> bytes:
    meta = f_str(1, name) + f_double(4, bottleneck_fps) + f_double(6, latency_s)
    ctx_msgs = []
    for index in range(contexts):
        edges = b""
        if index == 0:
            edges += b"".join(f_bytes(2, _edge_layer(layer, 0)) for layer in inputs)
        if index == contexts - 1:
            edges += b"".join(f_bytes(2, _edge_layer(layer, 1)) for layer in outputs)
        ctx_meta = f_str(1, f"context_{index}") + edges
        ctx_msgs.append(f_bytes(3, f_int(1, index) + f_bytes(3, ctx_meta)))
    body = f_bytes(1, meta) + b"".join(ctx_msgs)
    body += b"".join(f_str(4, layer.name) for layer in outputs) + f_str(6, name)
    return body


def hef_proto(name: str, inputs: Sequence[Layer], outputs: Sequence[Layer], hw_arch: str = "HAILO8P",
              sdk_version: str = "3.31.0", extensions: Sequence[int] = DEFAULT_EXTENSIONS, contexts: int = 1) -> bytes:
    header = f_int(1, ARCH_CODES[hw_arch]) + f_int(2, 1_700_000_000_000) + f_str(3, sdk_version) + f_int(4, 5)
    ext = b"".join(f_bytes(5, _varint(1 << 3) + _varint(i) if i else b"") for i in extensions)
    return f_bytes(1, header) + f_bytes(2, network_group_proto(name, inputs, outputs, contexts)) + ext


def container(proto: bytes, ccws: bytes = b"\0" * 64, version: int = 2) -> bytes:
    """Wrap a protobuf in a HEF header of the given version, with a correct hash."""
    residue = proto + ccws
    if version == 1:
        head = struct.pack(">4sIIIQI", b"\x01HEF", 1, len(proto), zlib.crc32(residue), len(ccws), 0)
    elif version == 2:
        head = struct.pack(">4sIIQQQQ", b"\x01HEF", 2, len(proto), xxhash.xxh3_64_intdigest(residue), len(ccws), 0, 0)
    elif version == 3:
        head = struct.pack(">4sIIQQIQQQ", b"\x01HEF", 3, len(proto), xxhash.xxh3_64_intdigest(residue), len(ccws), 0, 0, 0, 0)
    else:
        raise ValueError(f"header version {version} is not written by this helper")
    return head + residue


def build_hef(path: Path | str, name: str, inputs: Sequence[Layer], outputs: Sequence[Layer], *, hw_arch: str = "HAILO8P",
              contexts: int = 1, header_version: int = 2, extensions: Sequence[int] = DEFAULT_EXTENSIONS,
              sdk_version: str = "3.31.0") -> Path:
    """Write a HEF whose single network group `name` has these boundary inputs and outputs."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    proto = hef_proto(name, inputs, outputs, hw_arch=hw_arch, sdk_version=sdk_version, extensions=extensions, contexts=contexts)
    path.write_bytes(container(proto, version=header_version))
    return path

