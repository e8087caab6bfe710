"""Incremental folder indexing: scan -> read+hash+decode (threads) -> engine -> one writer thread.

Every stage is joined by a bounded queue, so memory stays flat on a million-file folder: the scan
streams, nothing lists the whole tree. Each image is decoded once, at the smallest size the selected
models need. A file's results and its status are committed in one transaction (batched with other
files'), so a kill at any moment loses at most the uncommitted batch, which the next run redoes.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

from hailo_immich_cli.batch.engines import Engine, Item
from hailo_immich_cli.batch.scan import iter_image_files
from hailo_immich_cli.batch.store import FileRecord, Reader, Store, content_hash, is_damage
from hailo_immich_cli.errors import BadInputError, HailoImmichError
from hailo_immich_cli.imaging import decode_image

_STOP = object()
log = logging.getLogger("hailo_immich")


@dataclass
class IndexOptions:
    paths: Sequence[Path]
    decode_workers: int = max(2, min(8, os.cpu_count() or 2))
    queue_size: int = 16
    commit_every: int = 256
    commit_seconds: float = 1.0
    decode_min_side: int | None = None  # None: what the models need; 0: full resolution
    retry_failed: bool = False
    max_pixels: int = 100_000_000
    batch: int = 8
    command: str = "index"
    stop_seconds: float = 30.0  # how long Ctrl-C waits for the batch in the models before leaving it


@dataclass
class IndexStats:
    scanned: int = 0
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    renamed: int = 0
    updated: int = 0
    deleted: int = 0
    failed: int = 0
    skipped_failed: int = 0
    total: int | None = None  # image files under the paths, once the counter thread finishes
    failures: list[tuple[str, str]] = field(default_factory=list)
    previous_failures: list[tuple[str, str]] = field(default_factory=list)
    complete: bool = False
    run_id: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def done(self) -> int:
        return self.new + self.changed + self.unchanged + self.renamed + self.updated + self.failed + self.skipped_failed

    def counts(self) -> dict[str, int]:
        return {"new": self.new, "changed": self.changed + self.updated, "unchanged": self.unchanged,
                "renamed": self.renamed, "deleted": self.deleted, "failed": self.failed,
                "skipped_failed": self.skipped_failed}


@dataclass
class _Job:
    path: str
    size: int
    mtime_ns: int
    known_hash: str | None = None


class Indexer:
    def __init__(self, store: Store, engine: Engine, options: IndexOptions,
                 on_progress: Callable[[IndexStats], None] | None = None):
        self.store = store
        self.engine = engine
        self.options = options
        self.on_progress = on_progress or (lambda stats: None)
        self.stats = IndexStats()
        self.roots = [str(Path(p).expanduser().resolve()) for p in options.paths]
        self.keys = engine.model_keys()
        self.tasks = tuple(engine.tasks)
        self._jobs: queue.Queue = queue.Queue(maxsize=options.queue_size)
        self._decoded: queue.Queue = queue.Queue(maxsize=max(2, options.batch * 2))
        self._writes: queue.Queue = queue.Queue(maxsize=options.queue_size * 8)
        self._abort = threading.Event()
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        min_side = options.decode_min_side
        self.draft_min_side = engine.min_side() if min_side is None else (min_side or None)
        self._threads: list[threading.Thread] = []

    # ---- public -------------------------------------------------------------------------------
    def run(self) -> IndexStats:
        for root in self.roots:
            if not os.path.exists(root):
                raise BadInputError(f"{root}: no such file or folder")
        for info in self.engine.models():
            self.store.record_model(info)
        self.stats.run_id = self.store.start_run(self.options.command, self.roots, self.tasks, self.keys)
        threads = [
            threading.Thread(target=self._guard(self._count), name="count", daemon=True),
            threading.Thread(target=self._guard(self._scan), name="scan", daemon=True),
        ]
        decoders = [threading.Thread(target=self._guard(self._decode), name=f"decode-{i}", daemon=True)
                    for i in range(self.options.decode_workers)]
        runners = [threading.Thread(target=self._guard(self._infer), name=f"infer-{i}", daemon=True)
                   for i in range(max(1, self.engine.concurrency))]
        writer = threading.Thread(target=self._guard(self._write), name="writer", daemon=True)
        self._threads = threads + decoders + runners + [writer]
        for t in self._threads:
            t.start()
        try:
            self._join(threads[1])
            for _ in decoders:
                self._put(self._jobs, _STOP)
            for t in decoders:
                self._join(t)
            for _ in runners:
                self._put(self._decoded, _STOP)
            for t in runners:
                self._join(t)
            self._put(self._writes, _STOP)
            self._join(writer)
        except KeyboardInterrupt:  # SIGINT/SIGTERM: stop every stage, keep what is finished
            self._abort.set()
            self._stop_threads()
            if not writer.is_alive():
                self.store.finish_run(self.stats.run_id, "interrupted", self.stats.counts())
            raise
        if self._error is not None:
            if not is_damage(self._error):  # a damaged file gets no further writes
                self.store.finish_run(self.stats.run_id, "failed", self.stats.counts())
            raise self._error
        self.stats.complete = True
        if self.stats.scanned:
            self.stats.deleted = self.store.mark_deleted(self.roots, self.stats.run_id)
        else:  # an empty scan is more likely an unmounted share than a deleted library: mark nothing
            log.warning("no image files found under %s; nothing is marked deleted", ", ".join(self.roots))
        self.store.prune_orphans()
        reader = self.store.open_reader()
        try:
            seen_now = {p for p, _ in self.stats.failures}
            self.stats.previous_failures = [(p, e) for p, e in reader.previous_failures(self.roots) if p not in seen_now]
        finally:
            reader.close()
        self.store.finish_run(self.stats.run_id, "completed", self.stats.counts())
        self.on_progress(self.stats)
        return self.stats

    @property
    def idle(self) -> bool:
        """No stage thread is running (so the engine's models may be closed)."""
        return not any(t.is_alive() for t in self._threads)

    # ---- plumbing -----------------------------------------------------------------------------
    def _stop_threads(self) -> None:
        """Join the stages after an abort; a batch already inside a model may take a moment to finish."""
        deadline = time.monotonic() + self.options.stop_seconds
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _guard(self, fn: Callable[[], None]) -> Callable[[], None]:
        def wrapped() -> None:
            try:
                fn()
            except BaseException as exc:  # a stage died: stop everything, report once
                with self._lock:
                    if self._error is None:
                        self._error = exc
                self._abort.set()

        return wrapped

    def _join(self, thread: threading.Thread) -> None:
        while thread.is_alive():
            thread.join(0.2)
            self.on_progress(self.stats)

    def _put(self, q: queue.Queue, item: object) -> bool:
        while not self._abort.is_set():
            try:
                q.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _get(self, q: queue.Queue) -> object:
        while True:
            try:
                return q.get(timeout=0.2)
            except queue.Empty:
                if self._abort.is_set():
                    return _STOP

    # ---- stages -------------------------------------------------------------------------------
    def _count(self) -> None:
        """Count image files in the background so progress can show a total and an ETA."""
        n = 0
        for _ in iter_image_files(self.roots):
            if self._abort.is_set():
                return
            n += 1
        self.stats.total = n

    def _scan(self) -> None:
        reader = self.store.open_reader()
        try:
            for path in iter_image_files(self.roots):
                if self._abort.is_set():
                    return
                self._scan_one(str(path), reader)
        finally:
            reader.close()

    def _scan_one(self, path: str, reader: Reader) -> None:
        try:
            st = os.stat(path)
        except OSError as exc:
            self._fail(FileRecord(path, 0, 0, None, status="failed", error=f"{path}: {exc.strerror or exc}"))
            return
        self.stats.scanned += 1
        row = reader.known(path)
        if row is not None and not row.deleted and row.size == st.st_size and row.mtime_ns == st.st_mtime_ns:
            if row.status == "failed" and not self.options.retry_failed:
                self._put(self._writes, ("touch", row.id, "skipped_failed"))
                return
            if row.status == "ok" and row.hash and self._missing(reader, row.hash) == ():
                self._put(self._writes, ("touch", row.id, "unchanged"))
                return
            self._put(self._jobs, _Job(path, st.st_size, st.st_mtime_ns, row.hash))
            return
        self._put(self._jobs, _Job(path, st.st_size, st.st_mtime_ns))

    def _missing(self, reader: Reader, content: str) -> tuple[str, ...]:
        done = reader.done(content)
        return tuple(t for t in self.tasks if (t, self.keys[t]) not in done)

    def _decode(self) -> None:
        reader = self.store.open_reader()
        try:
            while True:
                job = self._get(self._jobs)
                if job is _STOP:
                    return
                self._decode_one(job, reader)  # type: ignore[arg-type]
        finally:
            reader.close()

    def _decode_one(self, job: _Job, reader: Reader) -> None:
        rec = FileRecord(job.path, job.size, job.mtime_ns, None)
        try:
            with open(job.path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            rec.status, rec.error = "failed", f"{job.path}: {exc.strerror or exc}"
            self._fail(rec)
            return
        rec.hash = content_hash(data)
        missing = self._missing(reader, rec.hash)
        if not missing:
            geometry = reader.geometry(rec.hash)
            if geometry is not None:  # same content already indexed (a rename, a copy, a touched file)
                rec.width, rec.height, rec.orientation, rec.format = geometry
                self._put(self._writes, ("file", rec))
                return
        try:
            image = decode_image(data, max_pixels=self.options.max_pixels, exif_transpose=True,
                                 draft_min_side=self.draft_min_side)
        except BadInputError as exc:
            rec.status, rec.error = "failed", str(exc).replace("image:", f"{job.path}:", 1)
            self._fail(rec)
            return
        rec.width, rec.height, rec.orientation, rec.format = image.width, image.height, image.orientation, image.format
        if not missing:
            self._put(self._writes, ("file", rec))
            return
        self._put(self._decoded, (rec, Item(image.rgb, image.reduction, missing)))

    def _infer(self) -> None:
        while True:
            first = self._get(self._decoded)
            if first is _STOP:
                return
            batch = [first]
            stop = False
            while len(batch) < self.options.batch:
                try:
                    nxt = self._decoded.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                batch.append(nxt)
            results = self.engine.run([item for _, item in batch])  # type: ignore[misc]
            for (rec, _), res in zip(batch, results):  # type: ignore[misc]
                if res.error:
                    rec.status, rec.error = "failed", res.error if rec.path in res.error else f"{rec.path}: {res.error}"
                    self._fail(rec)
                else:
                    rec.outputs = res.outputs
                    self._put(self._writes, ("file", rec))
            if stop:
                return

    def _fail(self, rec: FileRecord) -> None:
        self._put(self._writes, ("file", rec))

    def _write(self) -> None:
        store, run_id = self.store, self.stats.run_id
        pending: list[tuple] = []
        last = time.monotonic()
        stopping = False
        while not stopping:
            try:
                msg = self._writes.get(timeout=0.2)
            except queue.Empty:
                msg = None
                if self._abort.is_set():  # keep the finished files; anything in flight is redone next run
                    if pending:
                        self._flush(store, run_id, pending)
                    return
            if msg is _STOP:
                stopping = True
            elif msg is not None:
                pending.append(msg)
            due = len(pending) >= self.options.commit_every or time.monotonic() - last >= self.options.commit_seconds
            if pending and (due or stopping):
                self._flush(store, run_id, pending)
                pending = []
                last = time.monotonic()

    def _flush(self, store: Store, run_id: int, pending: list[tuple]) -> None:
        kinds: list[str] = []
        with store.transaction():
            touches = [m[1] for m in pending if m[0] == "touch"]
            store.touch(touches, run_id)
            for msg in pending:
                if msg[0] == "touch":
                    kinds.append(msg[2])
                else:
                    rec: FileRecord = msg[1]
                    kind = store.write_file(rec, run_id)
                    kinds.append("failed" if rec.status == "failed" else kind)
        for msg, kind in zip(pending, kinds):  # counted only once committed
            if kind == "failed":
                self.stats.failures.append((msg[1].path, msg[1].error or "failed"))
            setattr(self.stats, kind, getattr(self.stats, kind) + 1)
