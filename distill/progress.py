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


def quiet_libraries() -> None:
    """One progress bar per stage: the libraries' own bars (weights loading, dataset mapping) off, and
    their deprecation notices about their own internals (raised inside TRL and PEFT) not printed. Only
    libraries already imported are touched (importing them here would cost every command seconds)."""
    import sys
    import warnings

    warnings.filterwarnings("ignore", message=r".*is deprecated and will be removed in v6", category=FutureWarning)
    if "datasets" in sys.modules:
        sys.modules["datasets"].disable_progress_bars()
    if "transformers" in sys.modules:
        sys.modules["transformers"].utils.logging.disable_progress_bar()
