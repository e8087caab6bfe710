"""A tiny Immich-ML-compatible HTTP server on loopback for load-tester tests.

It speaks the protocol strictly (GET / and /ping byte-exact, POST /predict multipart with
`entries` first, 422 for bad entries, 500 for unknown model names) and records every request as
parsed, so tests can check what the load tester really sent. The image is really decoded, and
`work_s` adds a fixed service time per /predict so concurrency has something to overlap.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from hailo_immich_cli.imaging import decode_image

KNOWN_MODELS = {"buffalo_l", "ViT-B-32__openai", "PP-OCRv5_mobile"}


@dataclass
class StubState:
    work_s: float = 0.0
    predicts: list[dict] = field(default_factory=list)  # {"parts": [(name, filename, content_type)], "entries": str, "status": int}
    pings: int = 0
    hosts: set = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _parse_multipart(content_type: str, body: bytes) -> list[tuple[str, str | None, str | None, bytes]]:
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    parts = []
    for part in message.iter_parts():
        parts.append((part.get_param("name", header="content-disposition"), part.get_filename(),
                      part.get("content-type") and part.get_content_type(), part.get_payload(decode=True)))
    return parts


def start_stub(state: StubState) -> tuple[ThreadingHTTPServer, str]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            state.hosts.add(self.headers.get("Host"))
            if self.path == "/":
                self._send(200, b'{"message":"Immich ML"}')
            elif self.path == "/ping":
                with state.lock:
                    state.pings += 1
                self._send(200, b"pong", "text/plain; charset=utf-8")
            else:
                self._send(404, b'{"detail":"Not Found"}')

        def do_POST(self):
            state.hosts.add(self.headers.get("Host"))
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.path != "/predict":
                self._send(404, b'{"detail":"Not Found"}')
                return
            parts = _parse_multipart(self.headers.get("Content-Type", ""), body)
            record = {"parts": [(n, f, c) for n, f, c, _ in parts], "entries": None, "status": 0}
            status, answer = self._answer(parts, record)
            record["status"] = status
            with state.lock:
                state.predicts.append(record)
            self._send(status, answer)

        def _answer(self, parts, record) -> tuple[int, bytes]:
            fields = {name: (filename, payload) for name, filename, _, payload in parts}
            if "entries" not in fields:
                return 422, b'{"detail":[{"type":"missing","loc":["body","entries"]}]}'
            record["entries"] = fields["entries"][1].decode()
            try:
                entries = json.loads(record["entries"])
                names = {e["modelName"] for types in entries.values() for e in types.values()}
            except (ValueError, KeyError, AttributeError, TypeError):
                return 422, b'{"detail":"Invalid request format."}'
            if names - KNOWN_MODELS:
                return 500, b"Internal Server Error"
            time.sleep(state.work_s)
            if "image" in fields:
                image = decode_image(fields["image"][1])
                out: dict = {task: [] for task in entries}
                out["imageHeight"], out["imageWidth"] = image.height, image.width
                return 200, json.dumps(out).encode()
            if "text" in fields:
                return 200, json.dumps({"clip": json.dumps([0.0] * 4)}).encode()
            return 400, b'{"detail":"Either image or text must be provided"}'

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"
