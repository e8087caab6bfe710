"""`serve`'s log lines, written in batches while the worker's loop runs.

Every /predict writes one INFO line; written and flushed one by one they cost a write system call
per request, about a seventh of a CLIP text request's CPU time. While the worker's event loop
runs, INFO lines are kept and written together on each loop tick (every 0.25 s), the way nginx
buffers its access log. A WARNING or worse is written at once, after the lines kept before it, so
the order never changes and a failure is never held back. Outside the loop (start-up, the
arbiter, shutdown) every line is written at once.
"""

from __future__ import annotations

import logging
from typing import TextIO

MAX_KEPT_BYTES = 64 * 1024  # written early when this much is kept, so a burst cannot grow it


class BatchingStreamHandler(logging.StreamHandler):
    """A StreamHandler that keeps INFO lines until `flush()` while `batching` is on."""

    def __init__(self, stream: TextIO):
        super().__init__(stream)
        self.batching = False
        self._kept: list[str] = []
        self._kept_bytes = 0

    def emit(self, record: logging.LogRecord) -> None:  # called with self.lock held (Handler.handle)
        if not self.batching:
            super().emit(record)
            return
        try:
            line = self.format(record) + self.terminator
        except Exception:  # noqa: BLE001 - logging's own rule: a bad record is reported, never raised
            self.handleError(record)
            return
        self._kept.append(line)
        self._kept_bytes += len(line)
        if record.levelno >= logging.WARNING or self._kept_bytes >= MAX_KEPT_BYTES:
            self._write_kept()

    def _write_kept(self) -> None:
        if self._kept:
            lines, self._kept, self._kept_bytes = "".join(self._kept), [], 0
            try:
                self.stream.write(lines)
            except Exception:  # noqa: BLE001 - a closed or full stream must not break a request
                return
        super().flush()

    def flush(self) -> None:
        self.acquire()
        try:
            self._write_kept()
        finally:
            self.release()


def batching_handlers(logger_name: str = "hailo_immich") -> list[BatchingStreamHandler]:
    return [h for h in logging.getLogger(logger_name).handlers if isinstance(h, BatchingStreamHandler)]


def set_batching(on: bool, logger_name: str = "hailo_immich") -> None:
    """Turn batching on (the worker's loop is running and will call `flush_kept`) or off (and write what is kept)."""
    for handler in batching_handlers(logger_name):
        handler.flush()
        handler.batching = on


def flush_kept(logger_name: str = "hailo_immich") -> None:
    for handler in batching_handlers(logger_name):
        handler.flush()
