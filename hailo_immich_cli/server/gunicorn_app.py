"""Gunicorn glue: one worker process owns the device; its event loop serves the connections.

The worker (loop_worker.ServeWorker) reads requests on an asyncio loop and runs complete ones on
a pool of the inference slots (MACHINE_LEARNING_REQUEST_THREADS) plus spare threads: waiting
predicts park on the gate while /health still finds a thread, and /ping never needs one.
"""

from __future__ import annotations

import errno
import logging
import socket
from typing import Any, Mapping

from gunicorn.app.base import BaseApplication

from hailo_immich_cli.server.limits import RESERVE_THREADS
from hailo_immich_cli.server.loop_worker import ServeWorker
from hailo_immich_cli.settings import Settings

__all__ = ["ServeApplication", "ServeWorker", "bind_address", "gunicorn_log_level", "gunicorn_options"]

log = logging.getLogger("hailo_immich.server")


def bind_address(host: str, port: int) -> str:
    """IMMICH_HOST/IMMICH_PORT as gunicorn's bind string ('[::]:3003', '127.0.0.1:3003')."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def port_in_use(host: str, port: int) -> bool:
    """True when another process listens on host:port (gunicorn would retry 5 times, 13 log lines)."""
    bare = host.strip("[]")
    family = socket.AF_INET6 if ":" in bare else socket.AF_INET
    try:
        infos = socket.getaddrinfo(bare or None, port, family, socket.SOCK_STREAM)
    except socket.gaierror:
        return False  # an unresolvable host is gunicorn's to report
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds
        try:
            probe.bind(infos[0][4])
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


# Immich's IMMICH_LOG_LEVEL words that are not Python's.
_LEVEL_ALIASES = {"verbose": "debug", "log": "info", "warn": "warning", "fatal": "critical"}


def gunicorn_log_level(level: str) -> str:
    level = level.lower()
    return _LEVEL_ALIASES.get(level, level)


def gunicorn_options(settings: Settings, reload: bool = False) -> dict[str, Any]:
    return {
        "bind": [bind_address(settings.host, settings.port)],
        "workers": 1,  # one process owns the NPU; more would each open the device
        "worker_class": "hailo_immich_cli.server.gunicorn_app.ServeWorker",
        "threads": max(1, settings.request_threads),
        "timeout": settings.worker_timeout,
        "graceful_timeout": 10,
        "keepalive": settings.keepalive_timeout,
        "loglevel": gunicorn_log_level(settings.log_level),
        "accesslog": None,  # the app writes one line per /predict itself
        "errorlog": "-",
        "preload_app": False,  # models load in the worker, after the fork
        "reload": reload,
        "control_socket_disable": True,
        "proc_name": "hailo-immich",
    }


class ServeApplication(BaseApplication):
    def __init__(self, settings: Settings, options: Mapping[str, Any], env: Mapping[str, str] | None = None):
        self.settings = settings
        self.options = dict(options)
        self.env = env
        self.spare_threads = settings.max_queue + RESERVE_THREADS
        self.state = None  # the worker's ServerState, once loaded
        super().__init__()

    def load_config(self) -> None:
        known = self.cfg.settings
        for key, value in self.options.items():
            if key in known and value is not None:
                self.cfg.set(key, value)
        self.cfg.set("worker_exit", self._worker_exit)

    def _worker_exit(self, server: Any, worker: Any) -> None:
        """Release the device and models when the worker stops (SIGTERM, reload)."""
        if self.state is not None:
            self.state.session.close()
            log.info("models released")

    def load(self):
        """Runs in the worker process: open the session, start loading models, return the WSGI app."""
        from hailo_immich_cli.server.app import create_app
        from hailo_immich_cli.server.state import ServerState

        self.state = ServerState(self.settings, env=self.env)
        self.state.start_loading()
        return create_app(self.state)
