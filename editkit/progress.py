"""Progress of long runs where output is not a terminal (redirected to a file, CI logs): a plain line with
the count and an ETA every N items, on stderr, instead of a live bar that only shows its last frame."""

from __future__ import annotations

import sys
import time


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


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
