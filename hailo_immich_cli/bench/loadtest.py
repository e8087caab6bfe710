"""`hailo-immich bench --url`: load-test a running ML service (ours or Immich's) the way Immich calls it.

Requests are shaped like the Immich server's (multipart, `entries` first, the image part named
`image` with filename "blob" and application/octet-stream), sent from `concurrency` keep-alive
connections. A control phase runs first: /ping latency on an idle service, and the client's own
ceiling (requests the service rejects before inference), so a slow load generator is never
mistaken for a slow service. During every load phase a separate connection pings /ping, because
Immich's availability check (2 s timeout) is what marks a busy worker as down.

Only the host and port of the URL given are ever contacted (Immich drops the URL path as well).
"""

from __future__ import annotations

import http.client
import itertools
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from hailo_immich_cli.bench.local import SCHEMA_VERSION, best_cell, with_speedup
from hailo_immich_cli.bench.timing import (
    host_info,
    loop_summary,
    percentiles_ms,
    report_header,
    timed_loop,
)
from hailo_immich_cli.errors import BadInputError
from hailo_immich_cli.tasks import BenchJob, bench_jobs

IMMICH_PING_TIMEOUT_S = 2.0  # Immich's availability check gives /ping 2 s before marking the worker down
SEARCH_TEXTS = ("a photo of a dog", "sunset over the sea", "birthday party")
# `--task` names for --url: every benchmark job of the registry's tasks, each with Immich's default model.
URL_TASKS: tuple[str, ...] = tuple(bench_jobs())
URL_DEFAULT_TASKS: tuple[str, ...] = tuple(name for name, (_, job) in bench_jobs().items() if job.url_default)


def _job(task: str) -> BenchJob:
    if task not in URL_TASKS:
        raise BadInputError(f"--task: unknown task '{task}' for --url (choose from {', '.join(URL_TASKS)})")
    return bench_jobs()[task][1]


def default_model_name(task: str) -> str:
    return _job(task).url_default_model


def entries_for(task: str, model_name: str) -> str:
    """The `entries` JSON exactly as Immich's server serialises it (key order, no spaces)."""
    return json.dumps(_job(task).url_entries(model_name), separators=(",", ":"))


def multipart(entries: str, image: bytes | None = None, text: str | None = None) -> tuple[bytes, str]:
    """(body, content-type): `entries` first, then `image` (filename "blob", octet-stream) or `text`."""
    boundary = f"----formdata-hailo-immich-{uuid.uuid4().hex[:16]}"
    crlf = b"\r\n"
    parts = [f"--{boundary}".encode(), b'Content-Disposition: form-data; name="entries"', b"", entries.encode()]
    if image is not None:
        parts += [f"--{boundary}".encode(), b'Content-Disposition: form-data; name="image"; filename="blob"',
                  b"Content-Type: application/octet-stream", b"", image]
    elif text is not None:
        parts += [f"--{boundary}".encode(), b'Content-Disposition: form-data; name="text"', b"", text.encode()]
    body = crlf.join(parts) + crlf + f"--{boundary}--".encode() + crlf
    return body, f"multipart/form-data; boundary={boundary}"


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> Target:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "https"):
            raise BadInputError(f"--url: only http:// and https:// are supported, not '{parts.scheme}'")
        if not parts.hostname:
            raise BadInputError(f"--url: no host in '{url}'")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise BadInputError(f"--url: bad port in '{url}'") from None
        return cls(parts.scheme, parts.hostname, port)

    def connect(self, timeout: float) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        return cls(self.host, self.port, timeout=timeout)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


class StatusError(Exception):
    """A response that is not 2xx; the label is its status code."""

    def __init__(self, status: int):
        super().__init__(str(status))
        self.status = status


def classify(exc: BaseException) -> str:
    if isinstance(exc, StatusError):
        return str(exc.status)
    if isinstance(exc, TimeoutError) or "timed out" in str(exc):
        return "timeout"
    if isinstance(exc, (ConnectionError, http.client.HTTPException, OSError)):
        return "connection-error"
    return type(exc).__name__


class Client:
    """One keep-alive connection per thread; reconnects after any failure."""

    def __init__(self, target: Target, timeout: float):
        self.target, self.timeout = target, timeout
        self._local = threading.local()

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self.target.connect(self.timeout)
            self._local.conn = conn
        return conn

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        conn = self._conn()
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            data = response.read()
            if response.getheader("connection", "").lower() == "close":
                self.close()
            return response.status, data
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


class RawClient:
    """The timed requests' client: one keep-alive socket per thread, each request prebuilt as bytes.

    http.client spends ~0.2 ms of Python per request building and parsing headers; on a 2-core
    machine that CPU is taken from the service being measured and caps the rate a fast service can
    show (a CLIP text request costs the service about as much). This client sends the ready bytes
    and reads the answer by its Content-Length (or chunks), so the load costs the machine little.
    """

    def __init__(self, target: Target, timeout: float):
        self.target, self.timeout = target, timeout
        self._local = threading.local()

    def request(self, raw: bytes) -> tuple[int, bytes]:
        sock = getattr(self._local, "sock", None)
        if sock is None:
            sock = socket.create_connection((self.target.host, self.target.port), timeout=self.timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._local.sock, self._local.buf = sock, bytearray()
        try:
            sock.sendall(raw)
            status, body, keep = _read_response(sock, self._local.buf)
        except BaseException:
            self.close()
            raise
        if not keep:
            self.close()
        return status, body

    def close(self) -> None:
        sock = getattr(self._local, "sock", None)
        if sock is not None:
            sock.close()
            self._local.sock = None


def raw_request(target: Target, path: str, body: bytes, content_type: str) -> bytes:
    """A whole POST as the bytes RawClient sends (the head Node's fetch sends, in its order)."""
    host = f"[{target.host}]" if ":" in target.host else target.host
    head = (f"POST {path} HTTP/1.1\r\nhost: {host}:{target.port}\r\nconnection: keep-alive\r\n"
            f"content-type: {content_type}\r\ncontent-length: {len(body)}\r\n\r\n")
    return head.encode("latin-1") + body


def _read_response(sock: socket.socket, buf: bytearray) -> tuple[int, bytes, bool]:
    """(status, body, keep-alive) of one answer; bytes past it stay in `buf` (none with keep-alive)."""
    while (end := buf.find(b"\r\n\r\n")) < 0:
        _fill(sock, buf)
    lines = bytes(buf[:end]).split(b"\r\n")
    del buf[: end + 4]
    version, _, rest = lines[0].partition(b" ")
    if not version.startswith(b"HTTP/1."):
        raise http.client.BadStatusLine(lines[0].decode("latin-1"))
    status = int(rest[:3])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip().lower()
    keep = headers.get(b"connection") != b"close" and version == b"HTTP/1.1"
    if b"content-length" in headers:
        size = int(headers[b"content-length"])
        while len(buf) < size:
            _fill(sock, buf)
        body = bytes(buf[:size])
        del buf[:size]
    elif b"chunked" in headers.get(b"transfer-encoding", b""):
        body = _read_chunks(sock, buf)
    elif status in (204, 304) or 100 <= status < 200:
        body = b""
    else:  # the body runs until the service closes
        while _fill(sock, buf, eof_ok=True):
            pass
        body, keep = bytes(buf), False
        buf.clear()
    return status, body, keep


def _read_chunks(sock: socket.socket, buf: bytearray) -> bytes:
    out = bytearray()
    while True:
        while (end := buf.find(b"\r\n")) < 0:
            _fill(sock, buf)
        size = int(bytes(buf[:end]).split(b";")[0], 16)
        del buf[: end + 2]
        while len(buf) < size + 2:
            _fill(sock, buf)
        out += buf[:size]
        del buf[: size + 2]
        if size == 0:
            return bytes(out)


def _fill(sock: socket.socket, buf: bytearray, eof_ok: bool = False) -> bool:
    chunk = sock.recv(1 << 16)
    if not chunk:
        if eof_ok:
            return False
        raise ConnectionError("the service closed the connection mid-answer")
    buf += chunk
    return True


@dataclass
class Payload:
    """One ready request body per image (or text), cycled through by the workers."""

    task: str
    bodies: list[tuple[bytes, str]]
    _next: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self) -> tuple[bytes, str]:
        with self._lock:
            body = self.bodies[self._next % len(self.bodies)]
            self._next += 1
            return body


FormEncoder = Callable[..., tuple[bytes, str]]  # (entries, image=..., text=...) -> (body, content type)


def payload_for(task: str, model_name: str, images: Sequence[bytes], texts: Sequence[str],
                form: FormEncoder = multipart) -> Payload:
    entries = entries_for(task, model_name)
    if _job(task).text:
        return Payload(task, [form(entries, text=t) for t in texts])
    return Payload(task, [form(entries, image=img) for img in images])


def image_bytes(folder: Path | None, limit: int = 16) -> tuple[list[bytes], str]:
    """Raw file bytes as Immich sends its previews; synthetic JPEG previews when no folder is given."""
    if folder is None:
        import cv2

        from hailo_immich_cli.bench.local import synthetic_images

        encoded = [cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes() for img in synthetic_images()]
        return encoded, "synthetic JPEG (1920x1440, printed text, no faces)"
    from hailo_immich_cli.batch.scan import iter_image_files

    if not Path(folder).is_dir():
        raise BadInputError(f"--images: {folder} is not a folder")
    data = []
    for path in iter_image_files([folder]):
        if len(data) >= limit:
            break
        try:
            data.append(path.read_bytes())
        except OSError:
            continue
    if not data:
        raise BadInputError(f"--images: no image files in {folder}")
    return data, str(folder)


@dataclass
class UrlOptions:
    tasks: tuple[str, ...] = URL_DEFAULT_TASKS
    concurrency: tuple[int, ...] = (1, 2, 4, 8)
    duration_s: float | None = 10.0
    count: int | None = None
    warmup: int = 2
    timeout_s: float = 60.0
    ping_interval_s: float = 0.25
    control_pings: int = 10
    max_latency_ms: float | None = None
    model_names: dict[str, str] = field(default_factory=dict)


class Pinger:
    """Pings /ping on its own connection at a fixed interval while a load phase runs."""

    def __init__(self, target: Target, interval_s: float, timeout_s: float):
        self.client = Client(target, timeout_s)
        self.interval = interval_s
        self.latencies: list[float] = []
        self.errors: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-ping", daemon=True)

    def _once(self) -> None:
        t0 = time.perf_counter()
        try:
            status, _ = self.client.request("GET", "/ping")
            if status != 200:
                raise StatusError(status)
            self.latencies.append(time.perf_counter() - t0)
        except Exception as exc:  # noqa: BLE001 - counted
            label = classify(exc)
            self.errors[label] = self.errors.get(label, 0) + 1

    def _run(self) -> None:
        while not self._stop.is_set():
            self._once()
            self._stop.wait(self.interval)

    def __enter__(self) -> Pinger:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.client.close()

    def summary(self) -> dict[str, Any]:
        slow = sum(1 for t in self.latencies if t > IMMICH_PING_TIMEOUT_S)
        return {"pings": len(self.latencies), "errors": dict(sorted(self.errors.items())),
                "latency_ms": percentiles_ms(self.latencies),
                "over_immich_timeout": slow + sum(self.errors.values())}


class LoadTest:
    def __init__(self, url: str, options: UrlOptions, images: list[bytes], images_source: str,
                 progress: Callable[[str], None] | None = None, form: FormEncoder = multipart):
        self.target = Target.parse(url)
        self.form = form
        if options.duration_s is None and options.count is None:
            raise BadInputError("give --duration, --count or both: a load test is always bounded")
        if not images and any(not (t in URL_TASKS and _job(t).text) for t in options.tasks):  # text jobs need no images
            raise BadInputError("no images to send")
        self.opts = options
        self.images = images
        self.images_source = images_source
        self.progress = progress or (lambda _m: None)

    def _poster(self, payload: Payload) -> tuple[Callable[[], int], Callable[[], None]]:
        """(send the next body and answer the status, close): raw bytes over http, http.client for https."""
        if self.target.scheme == "https":
            client = Client(self.target, self.opts.timeout_s)

            def post() -> int:
                body, ctype = payload.take()
                return client.request("POST", "/predict", body, {"Content-Type": ctype})[0]

            return post, client.close
        raw = RawClient(self.target, self.opts.timeout_s)
        ready = [raw_request(self.target, "/predict", body, ctype) for body, ctype in payload.bodies]
        turn = itertools.count()  # next() on it is atomic: the callers' threads take turns without a lock
        return (lambda: raw.request(ready[next(turn) % len(ready)])[0]), raw.close

    def _post(self, payload: Payload) -> tuple[Callable[[], int], Callable[[], None]]:
        """(one timed request that must succeed, close)."""
        post, close = self._poster(payload)

        def work() -> int:
            status = post()
            if not 200 <= status < 300:
                raise StatusError(status)
            return 1

        return work, close

    def identify(self) -> dict[str, Any]:
        """What answers at the address: GET / (Immich says {"message":"Immich ML"}); our /health if present."""
        client = Client(self.target, self.opts.timeout_s)
        found: dict[str, Any] = {"url": str(self.target)}
        try:
            status, body = client.request("GET", "/")
            found["root"] = {"status": status, "body": body[:200].decode("utf-8", "replace")}
            status, body = client.request("GET", "/health")
            if status == 200:
                try:
                    found["health"] = json.loads(body)
                except ValueError:
                    pass
        except Exception as exc:  # noqa: BLE001
            raise BadInputError(f"--url: nothing answers at {self.target}: {classify(exc)} ({exc})") from None
        finally:
            client.close()
        return found

    def control(self) -> dict[str, Any]:
        """Idle /ping latency, then the client-side ceiling with requests rejected before inference."""
        pinger = Pinger(self.target, 0.0, self.opts.timeout_s)
        for _ in range(self.opts.control_pings):
            pinger._once()
        pinger.client.close()
        idle = pinger.summary()
        post, close = self._poster(Payload("control", [multipart("not json", image=self.images[0] if self.images else b"")]))
        statuses: dict[str, int] = {}

        def rejected() -> int:
            status = str(post())
            statuses[status] = statuses.get(status, 0) + 1
            return 1

        top = max(self.opts.concurrency)
        duration = min(self.opts.duration_s or 2.0, 2.0)
        loop = timed_loop(rejected, threads=top, duration_s=duration, count=self.opts.count, classify_error=classify)
        close()
        ceiling = {**loop_summary(loop), "concurrency": top, "statuses": dict(sorted(statuses.items()))}
        self.progress(f"control: idle /ping p50 {idle['latency_ms']['p50']} ms; "
                      f"client ceiling {ceiling['calls_per_s']:.0f} req/s (rejected requests, statuses {ceiling['statuses']})")
        return {"idle_ping": idle, "client_ceiling": ceiling}

    def phase(self, task: str, concurrency: int) -> dict[str, Any]:
        name = self.opts.model_names.get(task) or default_model_name(task)
        payload = payload_for(task, name, self.images, SEARCH_TEXTS, self.form)
        work, close = self._post(payload)
        warm_errors: dict[str, int] = {}
        for _ in range(self.opts.warmup):
            try:
                work()
            except Exception as exc:  # noqa: BLE001 - a failing warm-up shows up in the phase too
                warm_errors[classify(exc)] = warm_errors.get(classify(exc), 0) + 1
        with Pinger(self.target, self.opts.ping_interval_s, self.opts.timeout_s) as pinger:
            loop = timed_loop(work, threads=concurrency, duration_s=self.opts.duration_s, count=self.opts.count,
                              classify_error=classify)
        close()
        summary = loop_summary(loop)
        cell = {"task": task, "model_name": name, "concurrency": concurrency,
                "requests_per_s": summary["calls_per_s"], "items_per_s": summary["calls_per_s"],
                **summary, "warmup_errors": warm_errors, "ping_under_load": pinger.summary()}
        self.progress(f"{task} concurrency={concurrency}: {cell['requests_per_s']:.2f} req/s, "
                      f"p95 {cell['latency_ms']['p95']} ms, errors {cell['errors'] or 0}, "
                      f"/ping p95 {cell['ping_under_load']['latency_ms']['p95']} ms")
        return cell

    def run(self) -> dict[str, Any]:
        started = datetime.now(timezone.utc)
        service = self.identify()
        control = self.control()
        tasks: dict[str, dict[str, Any]] = {}
        for task in self.opts.tasks:
            _job(task)
            tasks[task] = {"cells": with_speedup([self.phase(task, c) for c in self.opts.concurrency], "requests_per_s")}
        health = service.get("health") or {}
        report = {
            **report_header("url", SCHEMA_VERSION, started),
            "emulated": bool(_find_key(health, "emulated")),
            "service": service,
            "host": host_info(),
            "options": {
                "tasks": list(self.opts.tasks), "concurrency": list(self.opts.concurrency),
                "duration_s": self.opts.duration_s, "count": self.opts.count, "warmup": self.opts.warmup,
                "timeout_s": self.opts.timeout_s, "max_latency_ms": self.opts.max_latency_ms,
                "model_names": {t: self.opts.model_names.get(t) or default_model_name(t) for t in self.opts.tasks},
            },
            "images": {"source": self.images_source, "count": len(self.images), "bytes": [len(b) for b in self.images]},
            "control": control,
            "tasks": tasks,
        }
        report["advice"] = advise_url(report, self.opts.max_latency_ms)
        return report


def _find_key(data: Any, key: str) -> Any:
    if isinstance(data, dict):
        if key in data:
            return data[key]
        for value in data.values():
            found = _find_key(value, key)
            if found:
                return found
    return None


def advise_url(report: dict[str, Any], max_latency_ms: float | None) -> list[dict[str, Any]]:
    """Per task: the concurrency with the best requests/s within the latency bound."""
    advice = []
    bound = f"p95 <= {max_latency_ms:g} ms" if max_latency_ms is not None else "no latency bound"
    for task, data in report["tasks"].items():
        cell, ok = best_cell(data["cells"], max_latency_ms, key="requests_per_s")
        if cell is None:
            advice.append({"scope": task, "within_bound": False, "bound": bound, "env": {},
                           "text": "no error-free phase to advise from (see errors by status)"})
            continue
        c = cell["concurrency"]
        env = {"MACHINE_LEARNING_REQUEST_THREADS": f">={c}"}
        advice.append({
            "scope": task, "within_bound": ok, "bound": bound, "concurrency": c, "env": env,
            "requests_per_s": cell["requests_per_s"], "latency_ms": cell["latency_ms"],
            "text": (("" if ok else f"no concurrency met {bound}; lowest latency: ")
                     + f"Immich job concurrency '{_job(task).job_label}' = {c}, service MACHINE_LEARNING_REQUEST_THREADS >= {c}"
                     + f" -> {cell['requests_per_s']:.2f} req/s, p95 {cell['latency_ms']['p95']:.0f} ms"),
        })
    return advice
