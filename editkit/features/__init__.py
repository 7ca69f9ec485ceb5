"""Features: sparse autoencoders (SAELens on-disk format), activation stores, feature attribution and
inspection, steering, feature-level weight edits, and linear probes."""

from __future__ import annotations

import importlib

_EXPORTS = {"SAE": "sae", "SAEConfig": "sae", "HookPoint": "hookpoints", "resolve_hook": "hookpoints"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):  # imported on first use, so `editkit.features.saes.names()` needs no torch
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
