"""What a client may make the server hold, in one place: body bytes, buffered bytes, time.

Read by both the event loop (before a request reaches the app) and the app itself, so the
statuses and messages are the same whichever layer refuses first.
"""

from __future__ import annotations

from dataclasses import dataclass

from hailo_immich_cli.server.jsonfmt import dumps
from hailo_immich_cli.settings import Settings

# A request head (request line + headers) larger than this is refused with 431.
MAX_HEAD_BYTES = 64 * 1024
MAX_HEADERS = 100
# Requests one keep-alive connection may pipeline before the server stops reading from it.
MAX_PIPELINED = 8
# /health, /metrics and 503 answers still find a thread while every slot and queue place is taken.
RESERVE_THREADS = 4


@dataclass(frozen=True)
class ConnectionLimits:
    """Per-connection and per-process bounds applied by the HTTP loop."""

    header_timeout_s: float
    keepalive_s: float
    min_upload_bytes_per_s: int
    max_request_bytes: int
    max_buffered_bytes: int
    app_threads: int  # threads running the WSGI app: inference slots + queue + reserve

    @classmethod
    def from_settings(cls, settings: Settings) -> "ConnectionLimits":
        slots = max(1, settings.request_threads)
        return cls(
            header_timeout_s=float(settings.header_timeout_s),
            keepalive_s=float(max(0, settings.keepalive_timeout)),
            min_upload_bytes_per_s=max(0, settings.min_upload_bytes_per_s),
            max_request_bytes=settings.max_request_bytes,
            # one largest body always fits, or no request of the allowed size could ever be read
            max_buffered_bytes=max(settings.max_buffered_bytes, settings.max_request_bytes),
            app_threads=slots + max(0, settings.max_queue) + RESERVE_THREADS,
        )


def body_too_large(length: int, limit: int) -> bytes:
    return dumps({"detail": f"request body of {length} bytes is over the {limit}-byte limit"})


CHUNKED_REFUSED = dumps({"detail": "send a Content-Length (chunked uploads are not accepted)"})


def busy(reason: str) -> bytes:
    return dumps({"detail": f"busy: {reason}"})
