"""The request threads: small requests take turns on one thread, image requests run side by side,
and neither waits for the other."""

from __future__ import annotations

import asyncio
import threading
import time

from hailo_immich_cli.server.connection import AppThreads, Request


class _App:
    """A WSGI app that records how many small and large requests run at once."""

    def __init__(self):
        self.lock = threading.Lock()
        self.running = {"small": 0, "large": 0}
        self.most = {"small": 0, "large": 0}
        self.overlapped = False  # a small request ran while a large one was running

    def __call__(self, environ, start_response):
        kind = environ["kind"]
        with self.lock:
            self.running[kind] += 1
            self.most[kind] = max(self.most[kind], self.running[kind])
            if self.running["small"] and self.running["large"]:
                self.overlapped = True
        time.sleep(environ["seconds"])
        with self.lock:
            self.running[kind] -= 1
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [kind.encode()]


def _run(jobs: list[tuple[str, float]], threads: int = 8) -> tuple[_App, list[bytes]]:
    app = _App()
    loop = asyncio.new_event_loop()
    pool = AppThreads(app, threads, loop)
    answers: list[bytes] = []
    left = len(jobs)

    def done(result, _request):
        nonlocal left
        answers.append(result[2])
        left -= 1
        if left == 0:
            loop.stop()

    for kind, seconds in jobs:
        pool.submit({"kind": kind, "seconds": seconds}, done, Request(), serial=kind == "small")
    loop.call_later(30, loop.stop)
    loop.run_forever()
    pool.shutdown()
    loop.close()
    return app, answers


def test_small_requests_take_turns():
    app, answers = _run([("small", 0.02)] * 6)
    assert sorted(answers) == [b"small"] * 6
    assert app.most["small"] == 1


def test_large_requests_run_side_by_side_and_small_ones_do_not_wait_for_them():
    app, answers = _run([("large", 0.3), ("large", 0.3), ("small", 0.01), ("small", 0.01)])
    assert sorted(answers) == [b"large", b"large", b"small", b"small"]
    assert app.most["large"] == 2
    assert app.most["small"] == 1
    assert app.overlapped


def test_every_job_is_answered_when_more_come_than_threads():
    app, answers = _run([("large", 0.05)] * 5 + [("small", 0.01)] * 5, threads=3)
    assert len(answers) == 10
    assert app.most["small"] == 1 and app.most["large"] <= 3
