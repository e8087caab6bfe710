"""The gunicorn worker: an asyncio loop reads requests, a bounded thread pool runs the Bottle app.

Gunicorn still owns the process model (bind, fork, SIGTERM/SIGQUIT, worker timeout via the
heartbeat, graceful stop within graceful_timeout); this class only replaces how connections are
served (see connection.py for why).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

from gunicorn.workers.base import Worker

from hailo_immich_cli import memory
from hailo_immich_cli.server import logs
from hailo_immich_cli.server.connection import Connection, HttpServer
from hailo_immich_cli.server.limits import ConnectionLimits

TICK_S = 0.25


class ServeWorker(Worker):
    """One process, one event loop, `threads` inference slots plus queue and reserve threads."""

    http: HttpServer | None = None

    def run(self) -> None:
        loop = new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve(loop))
        finally:
            logs.set_batching(False)
            loop.close()

    async def _serve(self, loop: asyncio.AbstractEventLoop) -> None:
        settings = getattr(self.app, "settings")
        state = getattr(self.app, "state", None)
        self.http = http = HttpServer(self.wsgi, ConnectionLimits.from_settings(settings), loop, on_busy=_counter(state))
        if state is not None:
            state.http_stats = http.stats
        quick = False

        def stop(fast: bool) -> None:
            nonlocal quick
            quick = quick or fast
            self.alive = False

        loop.add_signal_handler(signal.SIGTERM, stop, False)
        loop.add_signal_handler(signal.SIGQUIT, stop, True)
        loop.add_signal_handler(signal.SIGINT, stop, True)
        loop.add_signal_handler(signal.SIGUSR1, self.log.reopen_files)
        servers = [
            await loop.create_server(lambda: Connection(http), sock=listener.sock, backlog=self.cfg.backlog)
            for listener in self.sockets
        ]
        logs.set_batching(True)
        while self.alive:
            logs.flush_kept()
            self.notify()
            if self.ppid != os.getppid():
                self.log.info("parent changed, shutting down: %s", self)
                break
            http.tick()
            memory.maybe_trim()
            await asyncio.sleep(TICK_S)
        logs.set_batching(False)
        for server in servers:
            server.close()
        http.close_idle()
        deadline = time.monotonic() + (0 if quick else self.cfg.graceful_timeout)
        while http.busy and time.monotonic() < deadline:  # let running requests answer
            self.notify()
            http.tick()
            await asyncio.sleep(0.05)
        for conn in list(http.connections):
            conn.close()
        await asyncio.sleep(0)
        http.shutdown()


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where installed: the loop's share of a request costs half of asyncio's (96 vs 160-190 us CPU)."""
    try:
        import uvloop
    except ImportError:  # not built for this platform: the standard loop works the same, a little slower
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _counter(state: Any):
    """Requests the loop refuses as busy count with the gate's own rejections in /metrics."""
    if state is None:
        return None
    return lambda: state.metrics.adjust(rejected=1)
