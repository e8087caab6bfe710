"""The /predict form as Immich's server sends it, split without Bottle's general parser.

Bottle's multipart parser is a line iterator built for large uploads; on a CLIP text request it
was about a quarter of the request's CPU time. Immich's form is always the same small shape:
`entries`, then an `image` file part or a `text` field, one boundary, no preamble. This module
accepts exactly that shape (with any field order) and answers None for anything else, and the
caller then lets Bottle parse the body as before. So nothing Bottle accepted or refused changes:
the fast split only ever sees bodies whose meaning is not in doubt.
"""

from __future__ import annotations

from typing import NamedTuple

BODY_KEY = "hailo_immich.body"  # the environ key under which the loop hands over the whole body as bytes
CRLF = b"\r\n"
HEAD_END = b"\r\n\r\n"
MAX_PARTS = 8  # Immich sends two; a longer form is left to Bottle


class Part(NamedTuple):
    filename: str | None  # None for a plain field
    data: bytes


def boundary_of(content_type: str) -> bytes | None:
    """The boundary of a `multipart/form-data` content type, or None for any other or odd header."""
    kind, _, params = content_type.partition(";")
    if kind.strip().lower() != "multipart/form-data":
        return None
    boundary = None
    for param in params.split(";"):
        key, eq, value = param.strip().partition("=")
        if not eq:
            return None
        key = key.strip().lower()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
            if '"' in value or "\\" in value:
                return None
        if key == "boundary":
            if boundary is not None:
                return None
            boundary = value
        elif key != "charset" or value.lower() not in ("utf-8", "utf8"):
            return None
    if not boundary or len(boundary) > 70 or not boundary.isascii():
        return None
    return boundary.encode("ascii")


def _disposition(header: bytes) -> tuple[str, str | None] | None:
    """(name, filename or None) from `form-data; name="..."[; filename="..."]`, quoted values only."""
    kind, _, rest = header.partition(b";")
    if kind.strip().lower() != b"form-data":
        return None
    found: dict[bytes, bytes] = {}
    for param in rest.split(b";"):
        key, eq, value = param.strip().partition(b"=")
        key = key.lower()
        if not eq or key not in (b"name", b"filename") or key in found:
            return None
        if len(value) < 2 or value[:1] != b'"' or value[-1:] != b'"' or b'"' in value[1:-1] or b"\\" in value:
            return None
        found[key] = value[1:-1]
    if b"name" not in found:
        return None
    try:
        name = found[b"name"].decode("ascii")
        filename = found[b"filename"].decode("utf-8") if b"filename" in found else None
    except UnicodeDecodeError:
        return None
    return name, filename


def split_form(body: bytes, content_type: str, max_field_bytes: int) -> dict[str, Part] | None:
    """The form's parts by name, or None when the body is not the plain shape (Bottle decides then).

    Plain fields must be valid UTF-8 and at most `max_field_bytes` (Bottle's in-memory limit, past
    which it answers differently); names appear once; the body ends with the closing boundary.
    """
    boundary = boundary_of(content_type)
    if boundary is None:
        return None
    delimiter = b"--" + boundary
    if not body.startswith(delimiter + CRLF):
        return None
    separator = CRLF + delimiter
    closing = separator + b"--" + CRLF
    if not body.endswith(closing) and not body.endswith(separator + b"--"):
        return None
    end = body.rindex(separator + b"--")
    parts: dict[str, Part] = {}
    start = len(delimiter) + 2
    while True:
        head_end = body.find(HEAD_END, start, end)
        if head_end < 0:
            return None
        disposition = None
        has_type = False
        for line in body[start:head_end].split(CRLF):
            name, colon, value = line.partition(b":")
            name = name.strip().lower()
            if not colon or name == b"" or line[:1] in (b" ", b"\t"):
                return None
            if name == b"content-disposition":
                if disposition is not None:
                    return None
                disposition = _disposition(value.strip())
                if disposition is None:
                    return None
            elif name == b"content-type":
                has_type = True
            else:
                return None
        if disposition is None:
            return None
        data_start = head_end + 4
        next_sep = body.find(separator, data_start, end + len(separator))
        if next_sep < 0:
            return None
        field, filename = disposition
        data = body[data_start:next_sep]
        if field in parts or len(parts) >= MAX_PARTS:
            return None
        if filename == "" or (filename is None and has_type):
            return None  # Bottle reads these as text fields in their own charset
        if filename is None:
            if len(data) > max_field_bytes:
                return None
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                return None
        parts[field] = Part(filename, data)
        if next_sep == end:
            return parts
        after = next_sep + len(separator)
        if body[after:after + 2] != CRLF:
            return None
        start = after + 2
