"""A progress bar on stderr for long steps inside short commands (building a vector index)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


@contextmanager
def step_progress(console: Console, show: bool = True) -> Iterator[Callable[[str, int, int], None]]:
    """Yields `update(what, done, total)`; one bar per distinct `what`, shown only once a step starts."""
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=False, disable=not show)
    bars: dict[str, int] = {}

    def update(what: str, done: int, total: int) -> None:
        if what not in bars:
            bars[what] = progress.add_task(what, total=total)
        progress.update(bars[what], completed=done, total=total)

    with progress:
        yield update
