"""Ctrl-C and SIGTERM for one-off commands: unwind once, then leave without tearing down native threads.

The first SIGINT or SIGTERM raises `Interrupted` in the main thread, so `finally` blocks stop and
join worker threads and commit what is finished. The process then ends with `exit_now` (os._exit):
a normal interpreter exit would run C++ static destructors while an ONNX Runtime or decoder thread
may still be inside a call, which aborts with "terminate called without an active exception". A
second signal during that unwinding ends the process at once; SQLite's journal keeps the database
consistent either way. Only the standard library is imported here: `cli.main` installs the handlers
before loading anything heavy.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class Interrupted(KeyboardInterrupt):
    """The user or the system asked the command to stop; `exit_code` is 128 + the signal number."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.exit_code = EXIT_CODES.get(signum, 128 + int(signum))


_received: list[int] = []


def _handler(signum: int, frame: FrameType | None) -> None:
    _received.append(signum)
    if len(_received) > 1:  # asked twice: the first request is still unwinding; stop now
        _write_stderr("interrupted again: stopping now\n")
        os._exit(EXIT_CODES.get(_received[0], 130))
    raise Interrupted(signum)


def installed() -> bool:
    """True in the `hailo-immich` process itself (not when a command runs inside a test or another program)."""
    return signal.getsignal(signal.SIGTERM) is _handler


def install() -> None:
    """Route SIGINT and SIGTERM to `Interrupted` (SIGINT stays ignored if the parent ignored it)."""
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, _handler)
    signal.signal(signal.SIGTERM, _handler)


def finishing() -> None:
    """The command is done: a signal from now on ends the process at once (nothing is left to save)."""

    def late(signum: int, frame: FrameType | None) -> None:
        _write_stderr("interrupted\n")
        os._exit(EXIT_CODES.get(signum, 130))

    if signal.getsignal(signal.SIGINT) is _handler:
        signal.signal(signal.SIGINT, late)
    signal.signal(signal.SIGTERM, late)


def received() -> int | None:
    """The first signal that asked this process to stop, if any."""
    return _received[0] if _received else None


def exit_code(exc: BaseException) -> int:
    return exc.exit_code if isinstance(exc, Interrupted) else 130


def exit_now(exc: BaseException, message: str = "interrupted") -> "None":
    """Say so on one line and end the process without interpreter teardown (see the module docstring)."""
    _write_stderr(f"{message}\n")
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(exit_code(exc))


def _write_stderr(text: str) -> None:
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
