"""Rich progress bars for long stages (they print plainly when output is not a terminal)."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


@contextmanager
def progress_bar(total: int, description: str) -> Iterator[Callable[[], None]]:
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), transient=False) as p:
        t = p.add_task(description, total=total)
        yield lambda n=1: p.advance(t, n)
