"""Shared tensor basics: dtype names, a content fingerprint of named tensors, and freezing a model's parameters."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch

from editkit.errors import EditkitError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


def dtype_of(name: str, what: str = "dtype") -> torch.dtype:
    """The torch dtype called `name` (float32, float16, bfloat16, float64); a clear error for any other."""
    if name not in DTYPES:
        raise EditkitError(f"unknown {what} {name!r}; use one of {', '.join(DTYPES)}")
    return DTYPES[name]


def fingerprint(named: Iterable[tuple[str, torch.Tensor]], sample: int | None = None) -> str:
    """sha256 over names, shapes, dtypes and bytes of tensors; with `sample`, of at most `sample` evenly
    strided elements per tensor (cheap identity for big models)."""
    h = hashlib.sha256()
    for name, t in named:
        flat = t.detach().reshape(-1)
        if sample is not None and flat.numel() > sample:
            flat = flat[:: flat.numel() // sample]
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(flat.contiguous().cpu().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@contextmanager
def frozen(model) -> Iterator[None]:
    """Temporarily stop gradients to the model's parameters (only δ is optimised)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
