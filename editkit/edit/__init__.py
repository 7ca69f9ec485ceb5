"""Editing facts: the methods of `editkit.edit.methods` (FT / FT-L, ROME / r-ROME, MEMIT, AlphaEdit), registered
by name in `editkit.edit.registry`, each called as

    METHODS[name](model, tokenizer, adapter, requests, hparams, stats, history=None) -> EditResult

and `edit`, which runs a method in batch mode (all requests in one call) or sequential mode (one request
at a time, each on the model the previous ones left, all recorded in one EditResult)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

import editkit.edit.methods  # noqa: F401  (registers every method)
from editkit.edit.common import check_requests
from editkit.edit.hparams import load_hparams
from editkit.edit.registry import METHODS, Method, get
from editkit.edit.result import Delta, EditResult
from editkit.edit.stats import Stats
from editkit.errors import EditkitError
from editkit.requests import EditRequest

MODES = ("batch", "sequential")


def edit(
    model,
    tokenizer,
    adapter,
    requests: list[EditRequest],
    method: str,
    hparams,
    stats: Stats | None,
    mode: str = "batch",
) -> EditResult:
    """Apply `method` to `requests` in `mode` ('batch' or 'sequential'); returns the sealed EditResult."""
    fn = get(method)
    if mode not in MODES:
        raise EditkitError(f"unknown mode {mode!r}; use 'batch' or 'sequential'")
    check_requests(tokenizer, requests)
    check_layers(adapter, hparams.layers)
    with restored_on_error(model, adapter, hparams.layers):
        if mode == "batch":
            return fn(model, tokenizer, adapter, requests, hparams, stats)
        result = None
        for r in requests:
            result = fn(model, tokenizer, adapter, [r], hparams, stats, history=result)
        return result


@contextmanager
@torch.no_grad()
def restored_on_error(model, adapter, layers: list[int]) -> Iterator[None]:
    """Put back the MLP output weights of `layers` (all an edit writes) when the block raises, so a failed
    edit leaves the model as it found it."""
    from editkit.edit.result import weight

    saved = {m: weight(model, m).detach().clone() for m in adapter.names("mlp_out", check_layers(adapter, layers))}
    try:
        yield
    except BaseException:
        for m, w in saved.items():
            weight(model, m).copy_(w)
        raise


def check_layers(adapter, layers: list[int]) -> list[int]:
    """`layers` as indices into the model (negative ones from the end); out of range or one layer named
    twice (as 5 and -1) is an error."""
    indices = [adapter.layer(i) for i in layers]
    if len(set(indices)) < len(indices):
        raise EditkitError(f"layers {layers} name one layer twice (the model has {adapter.n_layers}); give each once")
    return indices


def needs_stats(method: str, hparams) -> bool:
    """Whether `method` with `hparams` uses the second-moment statistics C."""
    return get(method).needs_stats(hparams)


__all__ = [
    "METHODS",
    "MODES",
    "Delta",
    "EditResult",
    "Method",
    "Stats",
    "check_layers",
    "edit",
    "load_hparams",
    "needs_stats",
    "restored_on_error",
]
