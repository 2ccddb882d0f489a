"""`progress_bar`: the federation's one `rich` progress bar for training and sampling loops.

jflows is the bottom-layer package every trainer of the middle layer already depends on (for the
checkpoint format and the C2ST), so the bar lives here and jscore, jso3 and jpm-hybrid use it:
one look (description, bar, step count, the loop's fields such as the loss, elapsed time and ETA,
on stderr) and one way to turn it off (`enabled=False`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["ProgressBar", "progress_bar"]


class ProgressBar:
    """The handle `progress_bar` yields: `update(done, **fields)`, and `due(done)` to throttle.

    `every` is the refresh interval in steps (about 50 refreshes per run); `due(done)` says whether
    step `done` is one to refresh at (always false when the bar is disabled), so a loop can skip
    computing what it would show.
    """

    def __init__(self, progress: Progress | None, task, total: int, every: int):
        self._progress, self._task, self.total, self.every = progress, task, total, every

    @property
    def enabled(self) -> bool:
        """Whether the bar is drawn."""
        return self._progress is not None

    def due(self, done: int, total: int | None = None) -> bool:
        """Whether to refresh after `done` steps (every `every` steps, and at the end)."""
        total = self.total if total is None else total
        return self._progress is not None and (done % self.every == 0 or done == total)

    def update(self, done: int, **fields: float) -> None:
        """Show `done` completed steps and the given field values (e.g. `loss=...`)."""
        if self._progress is not None:
            self._progress.update(self._task, completed=done, **fields)


@contextlib.contextmanager
def progress_bar(
    description: str,
    total: int,
    *,
    enabled: bool = True,
    start: int = 0,
    fields: Sequence[str] = ("loss",),
) -> Iterator[ProgressBar]:
    """A `rich` progress bar over `total` steps, as a context manager.

    **Arguments:**

    - `description`: the label (e.g. `"jscore.train_dsm"`).
    - `total`: the number of steps of the whole run.
    - `enabled`: draw the bar (on stderr); `False` yields a silent handle.
    - `start`: the step a resumed run starts from (the bar starts there and says so).
    - `fields`: names of the numbers shown after the count, each as `name 1.234` (NaN until the
      first `update`).

    **Yields:** a `ProgressBar`.

    ```python
    with jflows.progress_bar("my loop", 100) as bar:
        for i in range(100):
            loss = ...
            if bar.due(i + 1):
                bar.update(i + 1, loss=loss)
    ```
    """
    every = max(1, total // 50)
    if not enabled or total <= 0:
        yield ProgressBar(None, None, total, every)
        return
    label = description if start == 0 else f"{description} (from step {start})"
    shown = [TextColumn(f"{name} {{task.fields[{name}]:.4g}}") for name in fields]
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *shown,
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True)) as progress:
        task = progress.add_task(
            label, total=total, completed=start, **dict.fromkeys(fields, math.nan)
        )
        yield ProgressBar(progress, task, total, every)
