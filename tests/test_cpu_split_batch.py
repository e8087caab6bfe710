"""`[cpu] split_batch`: a lone batch runs split over single-threaded sessions, with the same bits."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from hailo_immich_cli import cores
from hailo_immich_cli.ocr.recognize import dynamic_batch
from hailo_immich_cli.session import SessionManager
from hailo_immich_cli.testkit.ocr_samples import render_lines

REC = "ppocrv5-mobile-rec-cpu"


class Counting:
    """An ONNX Runtime session that counts its runs."""

    def __init__(self, session):
        self.session, self.calls, self.threads = session, 0, set()

    def run(self, names, feeds):
        self.calls += 1
        self.threads.add(threading.current_thread().name)
        return self.session.run(names, feeds)


@pytest.fixture(scope="module")
def recogniser(cpu_models, recipe_book):
    session = SessionManager(cpu_models, recipe_book)
    model = session.model(REC)
    if len(model._solo) < 2:
        pytest.skip("split_batch needs at least 2 intra-op threads")
    yield session, model
    session.close()


def _batch(recipe) -> dict[str, np.ndarray]:
    texts = ["Garden party", "bring snacks and a chair", "2025-06-14", "north gate", "RSVP to Ana by Friday please"]
    crops = [render_lines([t], (40 + 22 * len(t), 60), font_size=32) for t in texts]
    return {"x": dynamic_batch(crops, recipe)}


def test_a_lone_batch_is_split_and_every_row_is_the_same_bits(recogniser, recipe_book):
    session, model = recogniser
    feeds = _batch(recipe_book.get(REC))
    whole = model.session.run(None, feeds)[0]  # one two-threaded run of the whole batch
    counted = tuple(Counting(s) for s in model._solo)
    real, model._solo = model._solo, counted
    try:
        split = next(iter(model.run(feeds).values()))
    finally:
        model._solo = real
    assert [c.calls for c in counted] == [1, 1] and len(counted[0].threads | counted[1].threads) == 2
    assert split.shape == whole.shape and np.array_equal(split.view(np.uint32), whole.view(np.uint32))


def test_with_other_heavy_work_running_the_batch_runs_whole(recogniser, recipe_book):
    session, model = recogniser
    feeds = _batch(recipe_book.get(REC))
    counted = tuple(Counting(s) for s in model._solo)
    real, model._solo = model._solo, counted
    try:
        with cores.claim():  # another request's step is running
            out = next(iter(model.run(feeds).values()))
        single = next(iter(model.run({"x": feeds["x"][:1]}).values()))  # one row: nothing to split
    finally:
        model._solo = real
    assert [c.calls for c in counted] == [0, 0]
    assert out.shape[0] == 5 and single.shape[0] == 1


def test_ocr_reads_the_same_lines_split_or_not(recogniser, cpu_models):
    from hailo_immich_cli.ocr.pipeline import read_text

    session, _ = recogniser
    page = render_lines(["Garden party 2025", "bring snacks", "north gate at noon", "RSVP to Ana"], (700, 360), font_size=36)
    alone = read_text(session, page)
    with cores.claim():
        busy = read_text(session, page)
    assert alone.texts == busy.texts == ["Garden party 2025", "bring snacks", "north gate at noon", "RSVP to Ana"]
    assert [line.text_score for line in alone.lines] == [line.text_score for line in busy.lines]
