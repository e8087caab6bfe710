"""The fast form split gives what Bottle's parser gives, or steps aside.

`_read_request` reads a form either through `split_form` (when the loop hands over the body) or
through Bottle. For every body below, both routes must end the same way: the same entries, image
and text, or the same error. The split must also really take the common Immich shapes, or the
server would silently pay for Bottle's parser again.
"""

from __future__ import annotations

import io
import sys
from types import SimpleNamespace

import bottle
import pytest

from hailo_immich_cli.bench.loadtest import multipart
from hailo_immich_cli.server.app import IN_MEMORY_BODY_BYTES, _read_request
from hailo_immich_cli.server.multipart import BODY_KEY, split_form
from hailo_immich_cli.server.protocol import ProtocolError

ENTRIES = '{"clip":{"textual":{"modelName":"ViT-B-32__openai","options":{"language":"en"}}}}'
JPEG_LIKE = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 40 + b"\r\n--not-the-boundary\r\n" + b"\xff\xd9"
B = "----formdata-undici-0123456789"
CT = f"multipart/form-data; boundary={B}"


def _form(*parts: tuple[str, bytes], boundary: str = B, end: bytes = b"\r\n", preamble: bytes = b"") -> bytes:
    body = preamble
    for head, data in parts:
        body += f"--{boundary}\r\n{head}\r\n\r\n".encode() + data + b"\r\n"
    return body + f"--{boundary}--".encode() + end


def _field(name: str, data: bytes, extra: str = "") -> tuple[str, bytes]:
    return (f'Content-Disposition: form-data; name="{name}"{extra}', data)


def _file(name: str, data: bytes, filename: str = "blob") -> tuple[str, bytes]:
    return (f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\nContent-Type: application/octet-stream', data)


CANONICAL = {
    "text": (_form(_field("entries", ENTRIES.encode()), _field("text", "a dog on a beach".encode())), CT),
    "image": (_form(_field("entries", ENTRIES.encode()), _file("image", JPEG_LIKE)), CT),
    "image first": (_form(_file("image", JPEG_LIKE), _field("entries", ENTRIES.encode())), CT),
    "unicode text": (_form(_field("entries", ENTRIES.encode()), _field("text", "Strand mit Hund, 海边的狗".encode())), CT),
    "quoted boundary": (_form(_field("entries", ENTRIES.encode()), _field("text", b"cat")), f'multipart/form-data; boundary="{B}"'),
    "charset": (_form(_field("entries", ENTRIES.encode()), _field("text", b"cat")), f"multipart/form-data; charset=utf-8; boundary={B}"),
    "no final CRLF": (_form(_field("entries", ENTRIES.encode()), _field("text", b"cat"), end=b""), CT),
    "empty text": (_form(_field("entries", ENTRIES.encode()), _field("text", b"")), CT),
    "no entries": (_form(_field("text", b"cat")), CT),
    "image as a plain field": (_form(_field("entries", ENTRIES.encode()), _field("image", b"not a file")), CT),
    "entries as a file": (_form(_file("entries", ENTRIES.encode()), _field("text", b"cat")), CT),
}
UNUSUAL = {
    "binary plain field": (_form(_field("entries", ENTRIES.encode()), _field("image", JPEG_LIKE[:10])), CT),
    "preamble": (_form(_field("entries", ENTRIES.encode()), preamble=b"hello\r\n"), CT),
    "epilogue": (_form(_field("entries", ENTRIES.encode()), _field("text", b"cat"), end=b"\r\ntrailing"), CT),
    "duplicate field": (_form(_field("entries", ENTRIES.encode()), _field("text", b"a"), _field("text", b"b")), CT),
    "empty filename": (_form(_field("entries", ENTRIES.encode()), _file("image", JPEG_LIKE, filename="")), CT),
    "typed text part": (_form(_field("entries", ENTRIES.encode()), ("Content-Disposition: form-data; name=\"text\"\r\nContent-Type: text/plain; charset=latin-1", "café".encode("latin-1"))), CT),
    "unquoted name": (_form(("Content-Disposition: form-data; name=entries", ENTRIES.encode()), _field("text", b"cat")), CT),
    "invalid utf-8 text": (_form(_field("entries", ENTRIES.encode()), _field("text", b"\xff\xfe")), CT),
    "LF line endings": (_form(_field("entries", ENTRIES.encode()), _field("text", b"cat")).replace(b"\r\n", b"\n"), CT),
    "no closing boundary": (_form(_field("entries", ENTRIES.encode()), _field("text", b"cat"))[: -len(B) - 6], CT),
    "other boundary": (_form(_field("entries", ENTRIES.encode()), boundary="xyz"), CT),
    "not multipart": (b"entries=%7B%7D&text=cat", "application/x-www-form-urlencoded"),
    "extra part header": (_form(("Content-Disposition: form-data; name=\"text\"\r\nX-Extra: 1", b"cat"), _field("entries", ENTRIES.encode())), CT),
    "folded header": (_form(("Content-Disposition: form-data;\r\n name=\"text\"", b"cat"), _field("entries", ENTRIES.encode())), CT),
    "field over the in-memory limit": (_form(_field("entries", ENTRIES.encode()), _field("text", b"x" * (IN_MEMORY_BODY_BYTES + 10))), CT),
}


def _read(body: bytes, content_type: str, fast: bool):
    environ = {
        "REQUEST_METHOD": "POST", "PATH_INFO": "/predict", "CONTENT_TYPE": content_type,
        "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr,
    }
    if fast:
        environ[BODY_KEY] = body
    bottle.request.bind(environ)
    state = SimpleNamespace(settings=SimpleNamespace(max_request_bytes=64 * 1024 * 1024))
    try:
        return _read_request(state)
    except ProtocolError as exc:
        return ("error", exc.status, exc.body)


@pytest.fixture(autouse=True)
def _in_memory_limit(monkeypatch):
    monkeypatch.setattr(bottle.BaseRequest, "MEMFILE_MAX", IN_MEMORY_BODY_BYTES)


@pytest.mark.parametrize("case", list(CANONICAL) + list(UNUSUAL))
def test_the_split_and_bottle_agree(case):
    body, content_type = {**CANONICAL, **UNUSUAL}[case]
    assert _read(body, content_type, fast=True) == _read(body, content_type, fast=False)


@pytest.mark.parametrize("case", list(CANONICAL))
def test_immich_shaped_forms_take_the_split(case):
    body, content_type = CANONICAL[case]
    assert split_form(body, content_type, IN_MEMORY_BODY_BYTES) is not None


@pytest.mark.parametrize("case", list(UNUSUAL))
def test_unusual_forms_are_left_to_bottle(case):
    body, content_type = UNUSUAL[case]
    assert split_form(body, content_type, IN_MEMORY_BODY_BYTES) is None


def test_the_benchmark_client_form_takes_the_split():
    body, content_type = multipart(ENTRIES, image=JPEG_LIKE)
    form = split_form(body, content_type, IN_MEMORY_BODY_BYTES)
    assert form is not None and form["image"].data == JPEG_LIKE and form["entries"].data == ENTRIES.encode()
