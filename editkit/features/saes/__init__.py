"""SAE architectures, one module each, registered under the module's file name (`topk.py` is `topk`).

A new architecture is one file here: a subclass of `editkit.features.sae.SAE` decorated with `register`.
`names()` lists them without importing torch (for the CLI's help); `get(name)` imports them all.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING

from editkit.errors import EditkitError

if TYPE_CHECKING:
    from editkit.features.sae import SAE

_REGISTRY: dict[str, type[SAE]] = {}


def register(cls: type[SAE]) -> type[SAE]:
    """Class decorator: register an SAE architecture under its module's file name."""
    cls.name = cls.__module__.rsplit(".", 1)[1]
    _REGISTRY[cls.name] = cls
    return cls


def names() -> list[str]:
    """Names of the registered architectures (the modules of this package)."""
    return [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]


def classes() -> list[type[SAE]]:
    """Every registered architecture class, in the order of `names()`."""
    for name in names():
        if name not in _REGISTRY:
            importlib.import_module(f"{__name__}.{name}")
    return [_REGISTRY[name] for name in names()]


def get(name: str) -> type[SAE]:
    """The architecture registered as `name` or aliased to it."""
    for cls in classes():
        if name == cls.name or name in cls.aliases:
            return cls
    raise EditkitError(f"unknown SAE architecture {name!r}; use one of {', '.join(names())}")
