"""Progress bars of `nbody` (rich), fed from inside the compiled step loop by host callbacks.

`StepProgress.forward(i)` / `.backward(i)` are called inside the `lax.scan` of the steps; they emit
a `jax.debug.callback` whose only operand is the scan's step index. That index is never batched,
so under `vmap` the host sees one callback per step (one bar per call, whatever the batch), and
under `jit` the bar advances as the compiled program runs. On the host, the bar of a label starts
when a step arrives that is not after the bar's last one (a new run), advances to the step, and
stops at the last step; `rich.progress` draws it on stderr with the step `i/n`, the elapsed time
and the ETA.
"""

from __future__ import annotations

import dataclasses
import threading

import jax
from jax import Array

__all__ = ["StepProgress"]

_LOCK = threading.Lock()
_BARS: dict[str, tuple[object, object]] = {}  # label -> (rich Progress, task id)


def _new_bar(label: str, total: int):
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("steps"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )
    task = bar.add_task(label, total=total)
    bar.start()
    return bar, task


def _update(label: str, done: int, total: int) -> None:
    """Host side: show `done` of `total` steps on the bar of `label`."""
    with _LOCK:
        entry = _BARS.get(label)
        if entry is not None and done <= entry[0].tasks[0].completed:
            entry[0].stop()  # a new run of the same label: start a fresh bar
            entry = None
        if entry is None:
            entry = _new_bar(label, total)
            _BARS[label] = entry
        bar, task = entry
        bar.update(task, completed=done)
        if done >= total:
            bar.stop()
            del _BARS[label]


@dataclasses.dataclass(frozen=True)
class StepProgress:
    """The progress reporting of one `nbody` call of `n_steps` steps (static configuration)."""

    n_steps: int
    label: str = "nbody"

    def forward(self, step: Array) -> None:
        """Inside the forward scan: step `step` (0-based) is done."""

        def report(i):
            _update(self.label, int(i) + 1, self.n_steps)

        jax.debug.callback(report, step)

    def backward(self, boundary: Array) -> None:
        """Inside the adjoint's reverse scan over boundaries `n, ..., 0`: boundary `boundary` done.

        Boundary `n - k` closes the `k`-th reversed step (boundary `n` reverses none).
        """

        def report(i):
            done = self.n_steps - int(i)
            if done > 0:
                _update(f"{self.label} adjoint", done, self.n_steps)

        jax.debug.callback(report, boundary)
