"""HEF container header: magic, version, sizes and integrity hash, read without HailoRT.

Layout (big-endian) from HailoRT 4.23's hef_internal.hpp: magic b"\\x01HEF", version u32, proto
size u32, then a version-specific tail. The hash covers everything after the header: MD5 (v0),
CRC32 (v1), XXH3-64 (v2, v3).
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

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
