"""Progress of long runs where output is not a terminal (redirected to a file, CI logs): a plain line with
the count and an ETA every N items, on stderr, instead of a live bar that only shows its last frame."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


def is_terminal() -> bool:
    """Whether stderr is an interactive terminal (where rich's live bars work)."""
    from rich.console import Console

    return Console(stderr=True).is_terminal


class LineProgress:
    """`label: 40/200 cases (20%), 0:01:02 elapsed, ETA 0:04:08 <extra>`, printed every `every` items (default:
    a twentieth of `total`) and at the end."""

    def __init__(self, label: str, total: int, unit: str = "cases", every: int | None = None, start: int = 0):
        self.label, self.total, self.unit = label, total, unit
        self.every = every or max(1, total // 20)
        self.start, self.last = start, start
        self.t0 = time.monotonic()

    def update(self, done: int, extra: str = "") -> None:
        if done - self.last < self.every and done < self.total:
            return
        self.last = done
        elapsed = time.monotonic() - self.t0
        rate = (done - self.start) / elapsed if elapsed > 0 and done > self.start else 0.0
        eta = _clock((self.total - done) / rate) if rate > 0 else "?"
        share = f" ({done / self.total:.0%})" if self.total else ""
        line = f"{self.label}: {done:,}/{self.total:,} {self.unit}{share}, {_clock(elapsed)} elapsed, ETA {eta}"
        print(f"{line}  {extra}".rstrip(), file=sys.stderr, flush=True)


@contextmanager
def progress_bar(
    label: str,
    total: int,
    unit: str = "",
    show: bool = True,
    done: int = 0,
    data_size: bool = False,
    lines: bool = True,
    transient: bool = False,
) -> Iterator[Callable[..., None]]:
    """The one progress display: a live rich bar on stderr (`data_size`: bytes and a transfer speed); where
    stderr is not a terminal and `lines`, `LineProgress` lines instead; nothing unless `show`. The context
    value is `update(done, extra="")`, `done` counted from the start and `extra` shown beside the count."""
    if not show:
        yield lambda n, extra="": None
        return
    if lines and not is_terminal():
        yield LineProgress(label, total, unit or "items", start=done).update
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    head = (TextColumn(escape(label)), BarColumn())
    if data_size:
        columns = (*head, DownloadColumn(), TransferSpeedColumn())
    else:
        columns = (
            *head,
            MofNCompleteColumn(),
            TextColumn(escape(unit)),
            TimeRemainingColumn(),
            TextColumn("{task.fields[extra]}"),
        )
    with Progress(*columns, console=Console(stderr=True), transient=transient) as bar:
        task = bar.add_task(label, total=total, completed=done, extra="")
        yield lambda n, extra="": bar.update(task, completed=n, extra=escape(extra))


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
