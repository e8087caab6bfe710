"""HEF files read without HailoRT: the container header, then the protobuf it wraps.

Layout (big-endian) from HailoRT 4.23's hef_internal.hpp: magic b"\\x01HEF", version u32, proto
size u32, then a version-specific tail. The hash covers everything after the header: MD5 (v0),
CRC32 (v1), XXH3-64 (v2, v3).
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from hailo_immich_cli.errors import BadInputError

HEF_MAGIC = b"\x01HEF"
HEADER_SIZES = {0: 32, 1: 28, 2: 44, 3: 56}


class HefFormatError(BadInputError):
    """Not a HEF, truncated, or its integrity hash does not match."""


@dataclass(frozen=True)
class HefHeader:
    version: int
    header_size: int
    proto_size: int
    ccws_size: int
    hash_kind: str
    hash_expected: str
    hash_computed: str | None
    padding_size: int = 0
    additional_info_size: int = 0
    reserved1: int = 0
    reserved2: int = 0

    @property
    def hash_ok(self) -> bool | None:
        return None if self.hash_computed is None else self.hash_computed == self.hash_expected


def _parse_tail(version: int, head: bytes) -> dict:
    if version == 0:
        (_reserved,) = struct.unpack_from(">I", head, 12)
        md5 = head[16:32].hex()
        return {"hash_kind": "md5", "hash_expected": md5, "ccws_size": 0}
    if version == 1:
        crc, ccws, _reserved = struct.unpack_from(">IQI", head, 12)
        return {"hash_kind": "crc32", "hash_expected": f"{crc:08x}", "ccws_size": ccws}
    if version == 2:
        xxh, ccws, r1, r2 = struct.unpack_from(">QQQQ", head, 12)
        return {"hash_kind": "xxh3_64", "hash_expected": f"{xxh:016x}", "ccws_size": ccws, "reserved1": r1, "reserved2": r2}
    xxh, ccws_padded, padding, additional, r1, r2 = struct.unpack_from(">QQIQQQ", head, 12)
    return {
        "hash_kind": "xxh3_64",
        "hash_expected": f"{xxh:016x}",
        "ccws_size": ccws_padded,
        "padding_size": padding,
        "additional_info_size": additional,
        "reserved1": r1,
        "reserved2": r2,
    }


def _hash_residue(fh, kind: str) -> str:
    if kind == "md5":
        digest = hashlib.md5()
    elif kind == "crc32":
        crc = 0
        while block := fh.read(1 << 20):
            crc = zlib.crc32(block, crc)
        return f"{crc & 0xFFFFFFFF:08x}"
    else:
        import xxhash

        digest = xxhash.xxh3_64()
    while block := fh.read(1 << 20):
        digest.update(block)
    return digest.hexdigest()


def read_header(path: Path | str, verify: bool = True) -> HefHeader:
    """Parse and (optionally) verify a HEF header; HefFormatError says what is wrong in words."""
    path = Path(path)
    try:
        size = path.stat().st_size
        fh = path.open("rb")
    except OSError as exc:
        raise HefFormatError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    with fh:
        head = fh.read(56)
        if len(head) < 12 or head[:4] != HEF_MAGIC:
            raise HefFormatError(f"{path}: not a HEF file (magic bytes are {head[:4].hex() or 'missing'}, expected 01484546)")
        version, proto_size = struct.unpack_from(">II", head, 4)
        if version not in HEADER_SIZES:
            raise HefFormatError(f"{path}: unsupported HEF header version {version} (known: 0-3)")
        header_size = HEADER_SIZES[version]
        if len(head) < header_size:
            raise HefFormatError(f"{path}: truncated inside the header ({size} bytes)")
        tail = _parse_tail(version, head)
        residue = size - header_size
        expected = proto_size + tail["ccws_size"] + tail.get("additional_info_size", 0)
        if residue != expected:
            what = "truncated" if residue < expected else "has trailing data"
            raise HefFormatError(f"{path}: {what}: {residue} bytes after the header, header says {expected}")
        computed = None
        if verify:
            fh.seek(header_size)
            computed = _hash_residue(fh, tail["hash_kind"])
            if computed != tail["hash_expected"]:
                raise HefFormatError(
                    f"{path}: corrupted: {tail['hash_kind']} of the contents is {computed}, header says {tail['hash_expected']}"
                )
    return HefHeader(version=version, header_size=header_size, proto_size=proto_size, hash_computed=computed, **tail)


# ---- protobuf wire format ------------------------------------------------------------------
# A minimal reader: only what the field numbers below need. Values stay raw until asked for.

_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5


class _ProtoError(ValueError):
    pass


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise _ProtoError("varint runs past the end of its message")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise _ProtoError("varint longer than 10 bytes")


class _Msg:
    """One decoded protobuf message: field number -> list of (wire type, raw value)."""

    __slots__ = ("fields",)

    def __init__(self, data: bytes | memoryview):
        buf = memoryview(data)
        fields: dict[int, list[tuple[int, Any]]] = {}
        pos, end = 0, len(buf)
        while pos < end:
            key, pos = _varint(buf, pos)
            number, wire = key >> 3, key & 7
            if number == 0:
                raise _ProtoError("field number 0")
            if wire == _VARINT:
                value, pos = _varint(buf, pos)
            elif wire == _FIXED64:
                if pos + 8 > end:
                    raise _ProtoError("fixed64 runs past the end of its message")
                value, pos = buf[pos : pos + 8], pos + 8
            elif wire == _LEN:
                size, pos = _varint(buf, pos)
                if pos + size > end:
                    raise _ProtoError(f"field {number}: {size}-byte value runs past the end of its message")
                value, pos = buf[pos : pos + size], pos + size
            elif wire == _FIXED32:
                if pos + 4 > end:
                    raise _ProtoError("fixed32 runs past the end of its message")
                value, pos = buf[pos : pos + 4], pos + 4
            else:
                raise _ProtoError(f"unsupported wire type {wire} (field {number})")
            fields.setdefault(number, []).append((wire, value))
        self.fields = fields

    def has(self, n: int) -> bool:
        return n in self.fields

    def _last(self, n: int, wire: int) -> Any:
        values = self.fields.get(n)
        if not values:
            return None
        w, v = values[-1]
        if w != wire:
            raise _ProtoError(f"field {n} has wire type {w}, expected {wire}")
        return v

    def int(self, n: int, default: int = 0) -> int:
        v = self._last(n, _VARINT)
        return default if v is None else v

    def bool(self, n: int) -> bool:
        return bool(self.int(n))

    def float(self, n: int) -> float:
        v = self._last(n, _FIXED32)
        return 0.0 if v is None else struct.unpack("<f", v)[0]

    def double(self, n: int) -> float:
        v = self._last(n, _FIXED64)
        return 0.0 if v is None else struct.unpack("<d", v)[0]

    def str(self, n: int) -> str:
        v = self._last(n, _LEN)
        return "" if v is None else bytes(v).decode("utf-8")

    def strs(self, n: int) -> list[str]:
        return [bytes(v).decode("utf-8") for w, v in self.fields.get(n, []) if w == _LEN]

    def msg(self, n: int) -> "_Msg | None":
        v = self._last(n, _LEN)
        return None if v is None else _Msg(v)

    def msgs(self, n: int) -> list["_Msg"]:
        out = []
        for w, v in self.fields.get(n, []):
            if w != _LEN:
                raise _ProtoError(f"field {n} has wire type {w}, expected a message")
            out.append(_Msg(v))
        return out

    def doubles(self, n: int) -> list[float]:
        """A repeated double, packed (proto3 default) or not."""
        out: list[float] = []
        for w, v in self.fields.get(n, []):
            if w == _FIXED64:
                out.append(struct.unpack("<d", v)[0])
            elif w == _LEN:
                if len(v) % 8:
                    raise _ProtoError(f"packed doubles in field {n} are not a multiple of 8 bytes")
                out.extend(struct.unpack(f"<{len(v) // 8}d", v))
            else:
                raise _ProtoError(f"field {n} has wire type {w}, expected doubles")
        return out


# ---- HEF model: names HailoRT 4.23 uses -----------------------------------------------------

HW_ARCHS = {
    0: "HAILO8", 1: "HAILO8P", 2: "HAILO8R", 3: "HAILO8L", 4: "HAILO15M", 5: "HAILO10H", 6: "HAILO15L",
    100: "SAGE_A0", 101: "SAGE_B0", 102: "PAPRIKA_B0", 103: "HAILO15H", 104: "GINGER", 105: "LAVENDER", 106: "PLUTO",
}
# Which device may run a HEF of each arch (HailoRT 4.23 device_internal.cpp is_hef_compatible).
DEVICE_ACCEPTS = {
    "HAILO8": {"HAILO8", "HAILO8P", "HAILO8R", "HAILO8L"},
    "HAILO8L": {"HAILO8L"},
}
ARCH_LABELS = {
    "HAILO8": "Hailo-8", "HAILO8P": "Hailo-8", "HAILO8R": "Hailo-8R", "HAILO8L": "Hailo-8L",
    "HAILO15H": "Hailo-15H/10H", "HAILO15M": "Hailo-15M", "HAILO15L": "Hailo-15L", "HAILO10H": "Hailo-10H",
}
DEVICE_ORDERS = {
    0: "NHWC", 1: "NHCW", 2: "NC", 3: "FCR", 4: "BAYER_RGB", 5: "NHW", 6: "NMS", 7: "F8CR", 8: "RGB888",
    11: "YUY2", 13: "NHWC", 14: "YYUV", 15: "YYVU", 16: "YYYYUV",
}
HOST_ORDERS = {"NHCW": "NHWC", "RGB888": "NHWC", "NMS": "HAILO_NMS_BY_CLASS"}
DTYPES = {1: "UINT8", 2: "UINT16", 4: "FLOAT32"}
NMS_TYPES = {7: "yolov5", 8: "yolox", 9: "ssd", 10: "iou", 11: "yolov5_seg", 12: "yolov8"}
EXT_NET_FLOW = 13
EXT_OUTPUT_SCALE_PER_FEATURE = 25
EXT_PERIPH_CALCULATION_IN_HAILORT = 26
# Required extensions HailoRT 4.23 knows (ProtoHEFExtensionType); anything else makes it refuse.
KNOWN_EXTENSIONS_4_23 = set(range(0, 33))
_BOUNDARY = 0
_CONNECTION_TYPES = {1: "INTERMEDIATE", 2: "DDR", 3: "CACHE"}


@dataclass(frozen=True)
class HefLayer:
    """One input or output as HailoRT's python API shows it (a VStreamInfo)."""

    name: str
    direction: str  # input | output
    shape: tuple[int, ...]  # the python `shape` tuple, after transposition
    hwc: tuple[int, int, int]
    host_order: str
    device_order: str | None
    dtype: str  # UINT8 | UINT16 | FLOAT32
    qp_scale: float
    qp_zp: float
    limvals_min: float = 0.0
    limvals_max: float = 0.0
    per_feature: tuple[tuple[float, ...], tuple[float, ...]] | None = None  # (scales, zps)
    original_names: tuple[str, ...] = ()
    context_index: int | None = None
    pad_index: int | None = None

    @property
    def np_dtype(self) -> str:
        return {"UINT8": "uint8", "UINT16": "uint16", "FLOAT32": "float32"}[self.dtype]

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "order": self.host_order,
            "dtype": self.dtype,
            "qp_scale": self.qp_scale,
            "qp_zp": self.qp_zp,
        }

    def as_dict(self) -> dict[str, Any]:
        data = {
            **self.summary(),
            "direction": self.direction,
            "device_order": self.device_order,
            "limvals_min": self.limvals_min,
            "limvals_max": self.limvals_max,
            "original_names": list(self.original_names),
        }
        if self.per_feature is not None:
            data["per_feature"] = {"scales": list(self.per_feature[0]), "zps": list(self.per_feature[1])}
        if self.context_index is not None:
            data["context_index"] = self.context_index
        if self.pad_index is not None:
            data["pad_index"] = self.pad_index
        return data


@dataclass(frozen=True)
class HefPostProcessOp:
    """A host-side post-process op of a net-flow HEF (NMS, argmax, softmax)."""

    op: str  # nms | logits
    name: str
    type: str
    inputs: tuple[str, ...]
    params: Mapping[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {"op": self.op, "name": self.name, "type": self.type, "inputs": list(self.inputs)}


@dataclass(frozen=True)
class HefNetworkGroup:
    name: str
    index: int
    layout: str  # legacy | net_flow
    contexts: int
    bottleneck_fps: float
    latency_s: float
    transposed_net: bool
    multi_layout: bool
    partial_layout_bitmaps: tuple[int, ...]
    networks_names: tuple[str, ...]
    sorted_outputs_order: tuple[str, ...]
    inputs: tuple[HefLayer, ...]
    outputs: tuple[HefLayer, ...]  # what the user reads: post-process outputs replace their inputs
    core_outputs: tuple[HefLayer, ...] = ()  # device outputs consumed by host post-processing
    post_process_ops: tuple[HefPostProcessOp, ...] = ()
    non_boundary_edge_layers: Mapping[str, int] = field(default_factory=dict)

    @property
    def multi_context(self) -> bool:
        return self.contexts > 1

    def layer(self, name: str) -> HefLayer:
        for layer in self.inputs + self.outputs:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def summary(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "layout": self.layout,
            "contexts": self.contexts,
            "multi_context": self.multi_context,
            "bottleneck_fps": self.bottleneck_fps,
            "multi_layout": self.multi_layout,
            "inputs": [layer.summary() for layer in self.inputs],
            "outputs": [layer.summary() for layer in self.outputs],
        }
        if self.multi_layout:
            data["partial_layout_bitmaps"] = list(self.partial_layout_bitmaps)
        if self.post_process_ops:
            data["post_process_ops"] = [op.summary() for op in self.post_process_ops]
        if self.core_outputs:
            data["core_outputs"] = [layer.summary() for layer in self.core_outputs]
        return data


@dataclass(frozen=True)
class HefInfo:
    """Everything inspect-hef and the Hailo backend need from a HEF, read without HailoRT."""

    path: Path
    size: int
    header: HefHeader
    hw_arch: str
    hw_arch_code: int
    sdk_version: str  # short form, e.g. "3.31.0"
    sdk_version_full: str
    proto_header_version: int
    timestamp: int
    extensions: tuple[tuple[int, str], ...]
    optional_extensions: tuple[tuple[int, str], ...]
    network_groups: tuple[HefNetworkGroup, ...]
    hailort_4_23_reasons: tuple[str, ...]

    @property
    def hailort_4_23_loadable(self) -> bool:
        return not self.hailort_4_23_reasons

    @property
    def arch_label(self) -> str:
        return ARCH_LABELS.get(self.hw_arch, self.hw_arch)

    def runs_on(self, device_arch: str) -> bool:
        """Whether a device of this arch (HAILO8 / HAILO8L) accepts the HEF."""
        return self.hw_arch in DEVICE_ACCEPTS.get(device_arch, {device_arch})

    def summary(self) -> dict[str, Any]:
        return {
            "valid": True,
            "header_version": self.header.version,
            "hash": self.header.hash_kind,
            "hw_arch": self.hw_arch,
            "hw_arch_code": self.hw_arch_code,
            "sdk_version": self.sdk_version,
            "hailort_4_23_loadable": self.hailort_4_23_loadable,
            "network_groups": [ng.summary() for ng in self.network_groups],
        }

    def as_dict(self) -> dict[str, Any]:
        """The full description (inspect-hef --json)."""
        data = self.summary()
        data.update(
            file=str(self.path),
            size=self.size,
            header={
                "version": self.header.version,
                "header_size": self.header.header_size,
                "proto_size": self.header.proto_size,
                "hash_kind": self.header.hash_kind,
                "hash_expected": self.header.hash_expected,
                "hash_computed": self.header.hash_computed,
                "hash_ok": self.header.hash_ok,
            },
            sdk_version_full=self.sdk_version_full,
            proto_header_version=self.proto_header_version,
            timestamp=self.timestamp,
            extensions=[{"index": i, "name": n} for i, n in self.extensions],
            optional_extensions=[{"index": i, "name": n} for i, n in self.optional_extensions],
            hailort_4_23_reasons=list(self.hailort_4_23_reasons),
        )
        for ng_data, ng in zip(data["network_groups"], self.network_groups):
            ng_data.update(
                index=ng.index,
                latency_s=ng.latency_s,
                transposed_net=ng.transposed_net,
                networks_names=list(ng.networks_names),
                sorted_outputs_order=list(ng.sorted_outputs_order),
                partial_layout_bitmaps=list(ng.partial_layout_bitmaps),
                non_boundary_edge_layers=dict(ng.non_boundary_edge_layers),
                inputs=[layer.as_dict() for layer in ng.inputs],
                outputs=[layer.as_dict() for layer in ng.outputs],
                core_outputs=[layer.as_dict() for layer in ng.core_outputs],
                post_process_ops=[{**op.summary(), **op.params} for op in ng.post_process_ops],
            )
        return data


# ---- decoding ----------------------------------------------------------------------------------


def _layer_from_info(info: _Msg, direction: str, transposed_net: bool, per_feature_outputs: bool,
                     context_index: int | None, pad_index: int | None) -> HefLayer:
    base = info.msg(2) or _Msg(b"")
    numeric = info.msg(3) or _Msg(b"")
    h, w, f = base.int(1), base.int(3), base.int(5)
    fmt = base.int(7)
    device_order = DEVICE_ORDERS.get(fmt, f"FORMAT_{fmt}")
    host_order = HOST_ORDERS.get(device_order, device_order)
    if (info.bool(6) or transposed_net) and device_order != "NC":
        h, w = w, h
    scales, zps = tuple(numeric.doubles(6)), tuple(numeric.doubles(5))
    qp_scale, qp_zp = numeric.float(2), numeric.float(1)
    per_feature = None
    if per_feature_outputs and direction == "output":
        # HailoRT 5.2's rule when the vectors are empty: fall back to the scalar qp.
        per_feature = (scales or (qp_scale,) * f, zps or (qp_zp,) * f)
    if host_order == "HAILO_NMS_BY_CLASS":
        nms = ((base.msg(11) or _Msg(b"")).msg(1)) or _Msg(b"")
        classes, max_out = nms.int(2), nms.int(3) * max(1, nms.int(7))
        shape: tuple[int, ...] = (classes, 5, max_out)
        dtype = "FLOAT32"
    else:
        shape = (f,) if host_order == "NC" else (h, w) if host_order == "NHW" else (h, w, f)
        dtype = DTYPES.get(base.int(12), f"DATA_BYTES_{base.int(12)}")
    return HefLayer(
        name=info.str(1),
        direction=direction,
        shape=shape,
        hwc=(h, w, f),
        host_order=host_order,
        device_order=device_order,
        dtype=dtype,
        qp_scale=qp_scale,
        qp_zp=qp_zp,
        limvals_min=numeric.float(3),
        limvals_max=numeric.float(4),
        per_feature=per_feature,
        original_names=tuple(info.strs(5)),
        context_index=context_index,
        pad_index=pad_index,
    )


def _edge_layers(kind: int, edge: _Msg, direction: str, transposed_net: bool, per_feature: bool,
                 context_index: int, pad_index: int | None) -> list[HefLayer]:
    """The vstreams of one boundary edge: an INFO layer itself, a MUX's predecessors
    (recursively), or a PLANES layer as one NV12/NV21/I420 input. `kind`: 1 info, 2 mux, 3 planes."""
    args = (direction, transposed_net, per_feature, context_index, pad_index)
    if kind == 1:
        return [_layer_from_info(edge, *args)]
    if kind == 2:
        out: list[HefLayer] = []
        for pred in edge.msgs(5):  # ProtoHefEdge: 1 layer_info | 2 layer_mux | 3 layer_planes
            for sub_kind in (1, 2, 3):
                if pred.has(sub_kind):
                    out.extend(_edge_layers(sub_kind, pred.msg(sub_kind), *args))
        return out
    first = next((p.msg(1) for p in edge.msgs(3) if p.has(1)), None)
    numeric = (first.msg(3) if first is not None else None) or _Msg(b"")
    fmt = {0: "NV12", 1: "NV21", 2: "I420"}.get(edge.int(2), "PLANES")
    hwc = (edge.int(4), edge.int(5), edge.int(6))
    return [HefLayer(edge.str(1), direction, hwc, hwc, fmt, fmt, "UINT8", numeric.float(2), numeric.float(1),
                     numeric.float(3), numeric.float(4), context_index=context_index, pad_index=pad_index)]


def _edge_kind(edge: _Msg) -> tuple[int, _Msg]:
    """ProtoHEFEdgeLayer's oneof: 3 layer_info, 4 layer_mux, 8 layer_planes."""
    for field_number, kind in ((3, 1), (4, 2), (8, 3)):
        if edge.has(field_number):
            return kind, edge.msg(field_number)
    raise _ProtoError("edge layer has no layer_info, layer_mux or layer_planes")


def _sdk_short(full: str) -> str:
    import re

    match = re.search(r"sdk-version:\s*([0-9][0-9.]*)", full)
    return match.group(1) if match else full


def _decode_network_group(ng: _Msg, ext: set[int], position: int) -> HefNetworkGroup:
    top_meta = ng.msg(1) or _Msg(b"")
    core_op = None
    ops = ng.msgs(8)
    for op in ops:
        if op.has(4):
            core_op = op.msg(4)
            break
    layout = "net_flow" if core_op is not None else "legacy"
    holder = core_op if core_op is not None else ng
    partials = holder.msgs(7)
    bitmaps = tuple((p.msg(2) or _Msg(b"")).int(1) for p in partials)
    effective = (partials[0].msg(1) or _Msg(b"")) if partials else holder
    meta = effective.msg(1) or holder.msg(1) or top_meta
    name = ng.str(10) or top_meta.str(1) or (meta.str(1) if meta else "")
    if not name:
        raise _ProtoError(f"network group {position} has no name")

    def pick(getter):
        for m in (meta, holder.msg(1), top_meta):
            if m is not None:
                value = getter(m)
                if value:
                    return value
        return getter(top_meta)

    transposed_net = bool(pick(lambda m: m.bool(3)))
    per_feature = EXT_OUTPUT_SCALE_PER_FEATURE in ext
    inputs: list[HefLayer] = []
    outputs: list[HefLayer] = []
    others = {"INTERMEDIATE": 0, "DDR": 0, "CACHE": 0}
    contexts = effective.msgs(3)
    for ctx in contexts:
        ctx_index = ctx.int(1)
        cmeta = ctx.msg(3)
        if cmeta is None:
            continue
        for edge in cmeta.msgs(2):
            csi = edge.msg(5)
            conn = csi.int(3) if csi is not None else _BOUNDARY
            if conn != _BOUNDARY:
                key = _CONNECTION_TYPES.get(conn, f"TYPE_{conn}")
                others[key] = others.get(key, 0) + 1
                continue
            direction = "output" if edge.int(1) == 1 else "input"
            pad = edge.int(7) if edge.has(7) else None
            kind, body = _edge_kind(edge)
            layers = _edge_layers(kind, body, direction, transposed_net, per_feature, ctx_index, pad)
            (outputs if direction == "output" else inputs).extend(layers)
    sorted_order = tuple(effective.strs(4) or holder.strs(4) or ng.strs(4))

    post_ops: list[HefPostProcessOp] = []
    post_outputs: list[HefLayer] = []
    consumed: set[str] = set()
    if layout == "net_flow":
        by_pad = {layer.pad_index: layer for layer in outputs if layer.pad_index is not None}
        edges = {e.int(2): e.int(1) for e in ng.msgs(9)}  # dst pad -> src pad
        for op in ops:
            if op.has(4):
                continue
            in_pads = [p.int(1) for p in op.msgs(2)]
            src_pads = [edges.get(p, p) for p in in_pads]
            in_names = tuple(by_pad[p].name for p in src_pads if p in by_pad)
            consumed.update(in_names)
            out_pads = op.msgs(3)
            op_name = op.str(1)
            if op.has(5):
                nms = op.msg(5)
                kind = next((t for n, t in NMS_TYPES.items() if nms.has(n)), "unknown")
                classes, per_class = nms.int(4), nms.int(3)
                params = {
                    "score_threshold": nms.double(1),
                    "iou_threshold": nms.double(2),
                    "max_proposals_per_class": per_class,
                    "classes": classes,
                    "background_removal": nms.bool(5),
                    "bbox_decoding_only": nms.bool(13),
                }
                post_ops.append(HefPostProcessOp("nms", op_name, kind, in_names, params))
                for pad in out_pads or [_Msg(b"")]:
                    post_outputs.append(HefLayer(pad.str(2) or op_name, "output", (classes, 5, per_class), (classes, 5, per_class),
                                                 "HAILO_NMS_BY_CLASS", None, "FLOAT32", 1.0, 0.0))
            elif op.has(6):
                kind = {0: "argmax", 1: "softmax"}.get(op.msg(6).int(1), "unknown")
                post_ops.append(HefPostProcessOp("logits", op_name, kind, in_names))
                for pad, src in zip(out_pads, in_names):
                    srcl = next(layer for layer in outputs if layer.name == src)
                    shape = srcl.shape[:-1] + ((1,) if kind == "argmax" else srcl.shape[-1:])
                    post_outputs.append(HefLayer(pad.str(2) or op_name, "output", shape, srcl.hwc, srcl.host_order, None,
                                                 "FLOAT32" if kind == "softmax" else "UINT8", 1.0, 0.0))
    core_outputs = tuple(layer for layer in outputs if layer.name in consumed)
    user_outputs = [layer for layer in outputs if layer.name not in consumed] + post_outputs
    rank = {n: i for i, n in enumerate(sorted_order)}
    user_outputs = [o for _, o in sorted(enumerate(user_outputs), key=lambda t: (rank.get(t[1].name, len(rank) + t[0]),))]
    return HefNetworkGroup(
        name=name,
        index=pick(lambda m: m.int(2)) or ng.int(11),
        layout=layout,
        contexts=len(contexts),
        bottleneck_fps=pick(lambda m: m.double(4)),
        latency_s=pick(lambda m: m.double(6)),
        transposed_net=transposed_net,
        multi_layout=bool(partials),
        partial_layout_bitmaps=bitmaps,
        networks_names=tuple(effective.strs(6) or holder.strs(6) or ng.strs(6)),
        sorted_outputs_order=sorted_order,
        inputs=tuple(inputs),
        outputs=tuple(user_outputs),
        core_outputs=core_outputs,
        post_process_ops=tuple(post_ops),
        non_boundary_edge_layers=others,
    )


def _extensions(msg: _Msg, n: int) -> tuple[tuple[int, str], ...]:
    return tuple((e.int(1), e.str(2)) for e in msg.msgs(n))


def read_hef(path: Path | str, verify: bool = True) -> HefInfo:
    """Header + protobuf of a HEF: arch, SDK, network groups and every boundary layer.

    Raises HefFormatError (never anything else) for a file that is not a usable HEF.
    """
    path = Path(path)
    header = read_header(path, verify=verify)
    try:
        with path.open("rb") as fh:
            fh.seek(header.header_size)
            proto = fh.read(header.proto_size)
    except OSError as exc:
        raise HefFormatError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        top = _Msg(proto)
        head = top.msg(1)
        if head is None:
            raise _ProtoError("no header message (field 1)")
        arch_code = head.int(1)
        sdk_full = head.str(3)
        required = _extensions(top, 5)
        optional = _extensions(top, 6)
        ext = {i for i, _ in required}
        groups = tuple(_decode_network_group(ng, ext, i) for i, ng in enumerate(top.msgs(2)))
    except (_ProtoError, UnicodeDecodeError, struct.error, StopIteration, KeyError, IndexError) as exc:
        raise HefFormatError(f"{path}: the HEF's protobuf section is malformed: {exc}") from None
    if not groups:
        raise HefFormatError(f"{path}: the HEF holds no network group")
    groups = tuple(sorted(groups, key=lambda g: g.index))
    reasons = []
    if EXT_PERIPH_CALCULATION_IN_HAILORT not in ext:
        reasons.append("no PERIPH_CALCULATION_IN_HAILORT extension: HailoRT 4.23 refuses it as an outdated HEF")
    unknown = sorted(i for i in ext if i not in KNOWN_EXTENSIONS_4_23)
    if unknown:
        reasons.append(f"needs extension(s) {unknown} that HailoRT 4.23 does not know")
    return HefInfo(
        path=path,
        size=path.stat().st_size,
        header=header,
        hw_arch=HW_ARCHS.get(arch_code, f"UNKNOWN_{arch_code}"),
        hw_arch_code=arch_code,
        sdk_version=_sdk_short(sdk_full),
        sdk_version_full=sdk_full,
        proto_header_version=head.int(4),
        timestamp=head.int(2),
        extensions=required,
        optional_extensions=optional,
        network_groups=groups,
        hailort_4_23_reasons=tuple(reasons),
    )
