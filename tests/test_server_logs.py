"""`serve`'s batching log handler: INFO lines wait for the loop's tick, failures never wait, order holds."""

from __future__ import annotations

import io
import logging

from hailo_immich_cli.server.logs import MAX_KEPT_BYTES, BatchingStreamHandler


def _logger(name: str) -> tuple[logging.Logger, BatchingStreamHandler, io.StringIO]:
    stream = io.StringIO()
    handler = BatchingStreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger(name)
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger, handler, stream


def test_lines_are_written_at_once_until_the_loop_batches():
    logger, _, stream = _logger("test.logs.immediate")
    logger.info("one")
    assert stream.getvalue() == "INFO one\n"


def test_info_lines_wait_for_flush_and_keep_their_order():
    logger, handler, stream = _logger("test.logs.batched")
    handler.batching = True
    logger.info("first")
    logger.info("second")
    assert stream.getvalue() == ""
    handler.flush()
    assert stream.getvalue() == "INFO first\nINFO second\n"


def test_a_warning_is_written_at_once_after_the_kept_lines():
    logger, handler, stream = _logger("test.logs.warning")
    handler.batching = True
    logger.info("request served")
    logger.warning("request failed")
    assert stream.getvalue() == "INFO request served\nWARNING request failed\n"


def test_a_burst_is_written_before_it_grows_past_the_bound():
    logger, handler, stream = _logger("test.logs.burst")
    handler.batching = True
    line = "x" * 1000
    for _ in range(MAX_KEPT_BYTES // 1000 + 1):
        logger.info(line)
    assert len(stream.getvalue()) >= MAX_KEPT_BYTES
    handler.batching = False
    handler.flush()
    assert stream.getvalue().count(line) == MAX_KEPT_BYTES // 1000 + 1
