"""How many torch threads editkit runs with: `--threads`, else `EDITKIT_THREADS`, else one per core that other
work is not already using (the 1-minute load average), at least one. On two shared cores, two torch threads
spin against the other jobs and run several times slower than one (experiments/README.md, "Threads")."""

from __future__ import annotations

import os

import torch

from editkit.errors import EditkitError


def choose_threads(requested: int | None = None) -> int:
    """The thread count: `requested`, else $EDITKIT_THREADS, else the cores free of other work (at least 1)."""
    source = "--threads"
    if requested is None and os.environ.get("EDITKIT_THREADS"):
        source, text = "EDITKIT_THREADS", os.environ["EDITKIT_THREADS"]
        try:
            requested = int(text)
        except ValueError:
            raise EditkitError(f"EDITKIT_THREADS={text!r} is not a whole number; set e.g. EDITKIT_THREADS=1") from None
    if requested is not None:
        if requested < 1:
            raise EditkitError(f"{source} {requested}: give at least 1 thread")
        return requested
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cores, int(cores - os.getloadavg()[0])))


def set_threads(requested: int | None = None) -> int:
    """Set torch's intra-op thread count (see `choose_threads`); returns it."""
    n = choose_threads(requested)
    torch.set_num_threads(n)
    return n
