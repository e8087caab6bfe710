"""HTTP/1.1 on the event loop: read whole requests without holding a thread, run the app in a pool.

A connection costs a few hundred bytes until its request is complete: headers and body are read
by the loop (parsed by httptools, the llhttp parser uvicorn and aiohttp use, so framing, chunking
and request smuggling are a well-kept library's job), bounded in size and in time. Only a complete
request takes one of the app threads, so stalled or slow clients cannot starve /predict or
Immich's health probe. `/ping` and `/` are answered from the loop without a thread.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections import deque
import threading
from email.utils import formatdate
from io import BytesIO
from typing import Any, Callable, Iterable
from urllib.parse import unquote_to_bytes

import httptools

from hailo_immich_cli.server import limits
from hailo_immich_cli.server.limits import ConnectionLimits
from hailo_immich_cli.server.multipart import BODY_KEY

log = logging.getLogger("hailo_immich.server")

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

PING = (b"text/plain; charset=utf-8", b"pong")
ROOT = (b"application/json", b'{"message":"Immich ML"}')
FAST_ROUTES = {b"/ping": PING, b"/": ROOT}
# Request bodies up to this size (a search text's form is a few hundred bytes; no image fits) take
# turns on one app thread (see AppThreads).
SERIAL_BODY_BYTES = 4096
JSON = b"application/json"
TEXT = b"text/plain; charset=utf-8"

# Connection phases. IDLE: keep-alive, waiting for a request; HEAD: reading the request head;
# BODY: reading the body; DISCARD: reading and dropping a body already answered (413, 411, 503);
# APP: a complete request is queued or running, reading paused.
IDLE, HEAD, BODY, DISCARD, APP = range(5)


class HttpStats:
    """Counters the loop keeps for /metrics and /health (written by the loop thread only)."""

    def __init__(self) -> None:
        self.open = 0
        self.dropped: dict[str, int] = {"header_timeout": 0, "slow_upload": 0, "bad_request": 0, "head_too_large": 0}
        self.rejected_buffer = 0
        self.rejected_threads = 0
        self.buffered_bytes = 0
        self.app_running = 0


class Request:
    __slots__ = ("method", "url", "headers", "body", "keep_alive", "version", "content_length", "reserved")

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.method = b""
        self.keep_alive = True
        self.version = "1.1"
        self.content_length = 0
        self.reserved = 0  # bytes of the server's buffer budget this request holds until answered


class HttpServer:
    """What all connections of one worker share: the app, its thread pool, the limits, the clock."""

    def __init__(self, app: WsgiApp, limits_: ConnectionLimits, loop: asyncio.AbstractEventLoop, on_busy: Callable[[], None] | None = None):
        self.app = app
        self.limits = limits_
        self.loop = loop
        self.pool = AppThreads(app, limits_.app_threads, loop)
        self.connections: set[Connection] = set()
        self.stats = HttpStats()
        self.on_busy = on_busy or (lambda: None)
        self.date = b""
        # Clients such as Node's undici close an idle connection before this hint, not racing our close.
        self.keep_alive = b"connection: keep-alive\r\nkeep-alive: timeout=%d\r\n\r\n" % int(limits_.keepalive_s)
        self.tick()

    def tick(self) -> None:
        """Refresh the Date header and drop connections over their time bounds (called every ~0.25 s)."""
        self.date = b"date: " + formatdate(usegmt=True).encode("ascii") + b"\r\n"
        now = time.monotonic()
        for conn in list(self.connections):
            conn.check_time(now)

    def close_idle(self) -> None:
        for conn in list(self.connections):
            if conn.phase in (IDLE, HEAD):
                conn.close()

    @property
    def busy(self) -> int:
        return self.stats.app_running

    def shutdown(self) -> None:
        self.pool.shutdown()


class Connection(asyncio.Protocol):
    """One client connection: the httptools callbacks fill a Request; complete ones run in order."""

    def __init__(self, server: HttpServer):
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.phase = IDLE
        self.since = time.monotonic()  # start of the current phase
        self.head_bytes = 0  # bytes read while in HEAD
        self.parsed_head = 0  # bytes of the current request's head, as parsed
        self.received = 0  # body bytes of the current request
        self.served = 0  # requests answered on this connection
        self.strikes = 0  # ticks in a row this connection was over a time bound
        self.request: Request | None = None  # the one being read
        self.pending: deque[Request] = deque()
        self.running = False
        self.writable = True
        self.closing = False
        self.peer: tuple[str, int] = ("", 0)

    # ---- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.peer = (str(peer[0]), int(peer[1]))
        self.server.connections.add(self)
        self.server.stats.open += 1
        self.since = time.monotonic()

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.server.connections:
            self.server.connections.discard(self)
            self.server.stats.open -= 1
        self.closing = True
        for request in (self.request, *self.pending):
            self._release(request)
        self.pending.clear()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        if self.phase == IDLE:
            self.phase, self.since, self.head_bytes = HEAD, time.monotonic(), 0
        if self.phase == HEAD:
            self.head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            if self.head_bytes > limits.MAX_HEAD_BYTES:
                self._fail(431, b"Request Header Fields Too Large", "head_too_large")
            else:
                self._fail(400, b"Invalid HTTP request received.", "bad_request")
            return
        if self.phase == HEAD and self.head_bytes > limits.MAX_HEAD_BYTES:  # a head that never ends
            self._fail(431, b"Request Header Fields Too Large", "head_too_large")

    def pause_writing(self) -> None:
        self.writable = False

    def resume_writing(self) -> None:
        self.writable = True
        self._next()

    # ---- httptools callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.request = Request()
        self.parsed_head = 0
        if self.phase != HEAD:  # a pipelined request begins inside the previous chunk
            self.phase, self.since, self.head_bytes = HEAD, time.monotonic(), 0

    def on_url(self, url: bytes) -> None:
        self.request.url += url  # type: ignore[union-attr]
        self._count_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        request = self.request
        assert request is not None
        if len(request.headers) >= limits.MAX_HEADERS:
            raise httptools.HttpParserError("too many headers")
        request.headers.append((name.lower(), value))
        self._count_head(len(name) + len(value) + 4)

    def _count_head(self, size: int) -> None:
        """The head's bytes as parsed (a whole head can come in one read, so data_received cannot tell)."""
        self.parsed_head += size
        if self.parsed_head > limits.MAX_HEAD_BYTES:
            self.head_bytes = self.parsed_head
            raise httptools.HttpParserError("request head too large")

    def on_headers_complete(self) -> None:
        request = self.request
        assert request is not None
        parser = self.parser
        request.method = parser.get_method()
        request.version = parser.get_http_version()
        request.keep_alive = parser.should_keep_alive()
        self.phase, self.since, self.received = BODY, time.monotonic(), 0
        length = -1
        chunked = False
        expect = False
        for name, value in request.headers:
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    raise httptools.HttpParserError("bad content-length") from None
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"expect" and value.lower() == b"100-continue":
                expect = True
        request.content_length = max(0, length)
        lim = self.server.limits
        if chunked:
            self._refuse(request, 411, limits.CHUNKED_REFUSED)
        elif length > lim.max_request_bytes:
            # the body is read and dropped so the client sees the answer; an absurd one is not worth reading
            request.keep_alive = request.keep_alive and length <= 2 * lim.max_request_bytes
            self._refuse(request, 413, limits.body_too_large(length, lim.max_request_bytes))
        elif length > 0:
            stats = self.server.stats
            if stats.buffered_bytes + length > lim.max_buffered_bytes:
                stats.rejected_buffer += 1
                self.server.on_busy()
                self._refuse(request, 503, limits.busy(f"{stats.buffered_bytes} request bytes buffered"), retry_after=True)
            else:
                request.reserved = length
                stats.buffered_bytes += length
                if expect and self.transport is not None:
                    self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    expect = False
        if expect and self.phase == DISCARD:  # the client waits for our word before sending a body it need not send
            self._close_after_writes()

    def on_body(self, body: bytes) -> None:
        self.received += len(body)
        if self.phase == DISCARD:
            chunked = not self.request.content_length  # type: ignore[union-attr]
            if chunked and self.received > self.server.limits.max_request_bytes:  # no end announced: stop reading
                self.close()
            return
        self.request.body.append(body)  # type: ignore[union-attr]

    def on_message_complete(self) -> None:
        request = self.request
        self.request = None
        if self.phase == DISCARD:  # answered already; the connection goes on if the client keeps it
            self.phase, self.since = (APP if self.running or self.pending else IDLE), time.monotonic()
            if not request or not request.keep_alive:
                self._close_after_writes()
            return
        assert request is not None
        self.phase = APP
        self.pending.append(request)
        if len(self.pending) > limits.MAX_PIPELINED:
            self.close()
            return
        self._next()

    # ---- running requests --------------------------------------------------------------------

    def _next(self) -> None:
        """Run the oldest complete request, unless one is running or the client is not reading."""
        while self.pending and not self.running and self.writable and not self.closing:
            request = self.pending.popleft()
            fast = FAST_ROUTES.get(request.url.split(b"?", 1)[0]) if request.method == b"GET" else None
            if fast is not None:
                self._release(request)
                self._write(b"200 OK", [(b"content-type", fast[0])], fast[1], request.keep_alive)
                continue
            server = self.server
            if server.stats.app_running >= server.limits.app_threads:
                server.stats.rejected_threads += 1
                server.on_busy()
                self._release(request)
                body = limits.busy(f"{server.stats.app_running} requests being served")
                self._write(b"503 Service Unavailable", [(b"content-type", JSON), (b"retry-after", b"1")], body, request.keep_alive)
                continue
            self.running = True
            server.stats.app_running += 1
            serial = request.method == b"POST" and 0 < request.content_length <= SERIAL_BODY_BYTES
            server.pool.submit(self._environ(request), self._app_done, request, serial)
            return
        if not self.pending and not self.running and self.phase == APP:
            self.phase, self.since = IDLE, time.monotonic()

    def _app_done(self, result: tuple[bytes, list[tuple[bytes, bytes]], bytes] | BaseException, request: Request) -> None:
        self.running = False
        self.server.stats.app_running -= 1
        self._release(request)
        if isinstance(result, BaseException):
            log.error("unhandled error in the app: %s", result, exc_info=result)
            status, headers, body = b"500 Internal Server Error", [(b"content-type", TEXT)], b"Internal Server Error"
        else:
            status, headers, body = result
        if not self.closing:
            self._write(status, headers, body, request.keep_alive, request.method == b"HEAD")
        self._next()

    def _environ(self, request: Request) -> dict[str, Any]:
        raw_path, _, query = request.url.partition(b"?")
        body = b"".join(request.body)
        request.body = []
        environ: dict[str, Any] = {
            "REQUEST_METHOD": request.method.decode("ascii"),
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote_to_bytes(raw_path).decode("latin-1"),
            "QUERY_STRING": query.decode("latin-1"),
            "SERVER_PROTOCOL": f"HTTP/{request.version}",
            "SERVER_NAME": "hailo-immich",
            "SERVER_PORT": "0",
            "REMOTE_ADDR": self.peer[0],
            "REMOTE_PORT": str(self.peer[1]),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": BytesIO(body),
            BODY_KEY: body,
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        for name, value in request.headers:
            text = value.decode("latin-1")
            if name == b"content-type":
                environ["CONTENT_TYPE"] = text
            elif name == b"content-length":
                environ["CONTENT_LENGTH"] = text
            else:
                key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
                environ[key] = f"{environ[key]},{text}" if key in environ else text
        return environ

    # ---- answers -----------------------------------------------------------------------------

    def _refuse(self, request: Request, status: int, body: bytes, retry_after: bool = False) -> None:
        """Answer before the body is read, then read and drop the body (so the client sees the answer)."""
        self.phase = DISCARD
        headers = [(b"content-type", JSON)] + ([(b"retry-after", b"1")] if retry_after else [])
        reason = {411: b"411 Length Required", 413: b"413 Request Entity Too Large", 503: b"503 Service Unavailable"}[status]
        if self.running or self.pending:  # a pipelined request still runs: answer in order
            self.close()
            return
        self._write(reason, headers, body, request.keep_alive)

    def _write(self, status: bytes, headers: list[tuple[bytes, bytes]], body: bytes, keep_alive: bool, head_only: bool = False) -> None:
        transport = self.transport
        if transport is None or self.closing:
            return
        keep_alive = keep_alive and self.server.limits.keepalive_s > 0
        parts = [b"HTTP/1.1 ", status, b"\r\n", self.server.date]
        has_length = False
        for name, value in headers:
            parts += (name, b": ", value, b"\r\n")
            if name.lower() == b"content-length":
                has_length = True
        if not has_length:
            parts += (b"content-length: ", str(len(body)).encode("ascii"), b"\r\n")
        parts.append(self.server.keep_alive if keep_alive else b"connection: close\r\n\r\n")
        if not head_only:
            parts.append(body)
        transport.write(b"".join(parts))
        self.served += 1
        if not keep_alive:
            self._close_after_writes()

    def _fail(self, status: int, message: bytes, reason: str) -> None:
        """A request we cannot parse or hold: say so and close (as uvicorn does for bad requests)."""
        self.server.stats.dropped[reason] += 1
        phrase = {400: b"400 Bad Request", 431: b"431 Request Header Fields Too Large", 408: b"408 Request Timeout"}[status]
        if not self.running and not self.pending:
            self._write(phrase, [(b"content-type", TEXT)], message, keep_alive=False)
        self.close()

    def _close_after_writes(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()  # asyncio flushes the write buffer first

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()  # connection_lost releases what its requests hold

    def _release(self, request: Request | None) -> None:
        if request is not None and request.reserved:
            self.server.stats.buffered_bytes -= request.reserved
            request.reserved = 0

    # ---- time bounds -------------------------------------------------------------------------

    def check_time(self, now: float) -> None:
        """Drop the connection once it is over its bound on two ticks in a row.

        Between two ticks the loop has polled the socket, so a request that arrived while the loop
        was busy (a model loading holds the GIL for a while) is read before it could be dropped.
        """
        over = self._over_time(now)
        if over is None or not self.strikes:
            self.strikes = 1 if over else 0
            return
        if over == "idle":
            self.close()
        else:
            self._fail(408, b"Request Timeout", over)

    def _over_time(self, now: float) -> str | None:
        if self.running or self.pending or self.closing:
            return None  # reading is paused while a request runs; its clock starts when it resumes
        lim = self.server.limits
        elapsed = now - self.since
        if self.phase == IDLE:
            # a fresh connection gets the header timeout for its first request; a kept-alive one the keep-alive
            return "idle" if elapsed > (lim.keepalive_s if self.served else lim.header_timeout_s) else None
        if self.phase == HEAD:
            return "header_timeout" if elapsed > lim.header_timeout_s else None
        if self.phase in (BODY, DISCARD):
            late = elapsed - lim.header_timeout_s
            return "slow_upload" if late > 0 and self.received < lim.min_upload_bytes_per_s * late else None
        return None


class AppThreads:
    """Threads that run the WSGI app on complete requests and hand the answers back to the loop.

    The most recently idle thread takes the next request (a stack, not a queue): with one or two
    requests in flight the same warm thread serves them all, instead of the request rotating
    through every idle thread's cold stack and caches (about 0.1 ms of CPU per CLIP text request).

    Small requests (`serial`: search texts, refused requests) take turns on one thread: each costs
    a fraction of a millisecond, mostly Python, so running several at once only passes the GIL
    back and forth (14 context switches per request at 4 in flight instead of 5, 28% fewer
    requests/s). The thread that finishes one takes the next without sleeping. Image requests,
    which spend their time in code that releases the GIL, run side by side as before, and a small
    request never waits behind an image.

    A callback per request, not futures: ThreadPoolExecutor's futures and done-callbacks cost a
    measurable share of a text request's CPU time.
    """

    def __init__(self, app: WsgiApp, count: int, loop: asyncio.AbstractEventLoop):
        self.app = app
        self.loop = loop
        self._lock = threading.Lock()
        self._idle: list[_Slot] = []
        self._backlog: deque[_Job] = deque()  # only when every thread is busy (the loop bounds this)
        self._serial: deque[_Job] = deque()  # small requests waiting for their turn
        self._serial_running = False
        self._stopping = False
        self._threads = [threading.Thread(target=self._work, args=(_Slot(),), name=f"request_{i}") for i in range(count)]
        for thread in self._threads:
            thread.start()

    def submit(self, environ: dict[str, Any], done: Callable[..., None], request: Request, serial: bool = False) -> None:
        """Run the app on environ; done(answer or exception, request) is then called on the loop."""
        job = (environ, done, request, serial)
        with self._lock:
            if serial and self._serial_running:
                self._serial.append(job)
                return
            if not self._idle:
                self._backlog.append(job)
                return
            if serial:
                self._serial_running = True
            slot = self._idle.pop()
        slot.job = job
        slot.wake.release()

    def _next_job(self, finished: _Job | None, slot: _Slot) -> _Job | None:
        """(lock held) The job this thread runs next, or None after it has gone idle."""
        if finished is not None and finished[3]:
            if self._serial:
                return self._serial.popleft()  # the turn passes straight on: no thread sleeps or wakes
            self._serial_running = False
        if self._backlog:
            job = self._backlog.popleft()
            if job[3] and self._serial_running:
                self._serial.append(job)
                return self._next_job(None, slot)
            self._serial_running = self._serial_running or job[3]
            return job
        if not self._stopping:
            self._idle.append(slot)
        return None

    def _work(self, slot: _Slot) -> None:
        job: _Job | None = None
        while True:
            with self._lock:
                job = self._next_job(job, slot)
                stopping = self._stopping
            if job is None:
                if stopping:
                    return
                slot.wake.acquire()
                job, slot.job = slot.job, None
                if job is None:  # woken to stop
                    return
            environ, done, request, _ = job
            try:
                result: Any = run_wsgi(self.app, environ)
            except BaseException as exc:  # noqa: BLE001 - the loop answers 500 and keeps serving
                result = exc
            try:
                self.loop.call_soon_threadsafe(done, result, request)
            except RuntimeError:  # the loop is closed: the worker is stopping
                return

    def shutdown(self) -> None:
        with self._lock:
            self._stopping = True
            idle, self._idle = self._idle, []
        for slot in idle:
            slot.wake.release()


_Job = tuple[dict[str, Any], Callable[..., None], "Request", bool]  # environ, done, request, serial


class _Slot:
    """One app thread's mailbox: a job and a lock held until there is one (a binary semaphore)."""

    __slots__ = ("job", "wake")

    def __init__(self) -> None:
        self.job: _Job | None = None
        self.wake = threading.Lock()
        self.wake.acquire()


def run_wsgi(app: WsgiApp, environ: dict[str, Any]) -> tuple[bytes, list[tuple[bytes, bytes]], bytes]:
    """Call the WSGI app in a pool thread; its answer is small, so the body is joined here."""
    captured: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
        if exc_info is not None and captured:
            raise exc_info[1].with_traceback(exc_info[2])
        captured[:] = [status, headers]
        return _no_write

    result = app(environ, start_response)
    try:
        body = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    status, headers = captured
    return status.encode("latin-1"), [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers], body


def _no_write(_: bytes) -> None:
    raise RuntimeError("the app used write(); return the body instead")
