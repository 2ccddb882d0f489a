"""A `rich.progress` bar for jscore's long loops (silent with `enabled=False`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class _Bar:
    def __init__(self, progress: Progress | None, task, every: int):
        self._progress, self._task, self.every = progress, task, every

    def due(self, done: int, total: int) -> bool:
        """Whether to refresh after `done` of `total` steps (about 50 refreshes per run)."""
        return self._progress is not None and (done % self.every == 0 or done == total)

    def update(self, done: int, **fields) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=done, **fields)


@contextlib.contextmanager
def progress_bar(description: str, total: int, *, enabled: bool, start: int = 0) -> Iterator[_Bar]:
    """A progress bar over `total` steps showing the step count, elapsed time, ETA and a `loss` field;
    `start` is the global step the run starts from (shown in the description)."""
    every = max(1, total // 50)
    if not enabled or total == 0:
        yield _Bar(None, None, every)
        return
    label = description if start == 0 else f"{description} (from step {start})"
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4g}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True)) as progress:
        task = progress.add_task(label, total=total, loss=float("nan"))
        yield _Bar(progress, task, every)
