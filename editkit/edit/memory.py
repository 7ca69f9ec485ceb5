"""Side memories: edits kept beside the base weights instead of written into them (GRACE's codebook, WISE's
side memory). A `Memory` is plain data (tensors + JSON metadata) at one module; its kind's reader (each
memory method registers one in `READERS`) rewrites that module's output from its input through a
persistent `editkit.hooks.Trace`, attached and detached here, so the model's own weights never change."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from weakref import WeakKeyDictionary

import torch

from editkit.errors import EditkitError
from editkit.hooks import Trace


@dataclass
class Memory:
    """What a side-memory method keeps at `module`: named tensors and JSON-able `meta`, read by `kind`."""

    module: str
    kind: str
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def items(self) -> list[tuple[str, torch.Tensor]]:
        """(name, tensor) pairs for fingerprints: every tensor, then the metadata as UTF-8 bytes."""
        raw = json.dumps(self.meta, sort_keys=True).encode()
        meta = torch.frombuffer(bytearray(raw), dtype=torch.uint8) if raw else torch.zeros(0, dtype=torch.uint8)
        return [(f"memory.{self.module}.{k}", v) for k, v in sorted(self.tensors.items())] + [
            (f"memory.{self.module}.{self.kind}.meta", meta)
        ]


#: kind -> read(memory, module input, module output) -> the output the model uses
READERS: dict[str, Callable[[Memory, torch.Tensor, torch.Tensor], torch.Tensor]] = {}

#: kind -> undo(memory): take back the memory's last request in place, bit for bit (kinds that journal)
UNDO: dict[str, Callable[[Memory], None]] = {}

#: model -> {module: (memory, the Trace that reads it)}
_ATTACHED: WeakKeyDictionary = WeakKeyDictionary()


def attach(model, memory: Memory) -> None:
    """Make `model` read `memory` at its module from now on (its tensors moved to the model's device)."""
    at = _ATTACHED.setdefault(model, {})
    if memory.module in at:
        raise EditkitError(f"{memory.module} already carries a side memory; revert that edit first")
    if memory.kind not in READERS:
        raise EditkitError(f"unknown side-memory kind {memory.kind!r}; known: {', '.join(READERS)}")
    device = next(model.parameters()).device
    memory.tensors = {k: v.to(device) for k, v in memory.tensors.items()}
    read = READERS[memory.kind]
    at[memory.module] = (
        memory,
        Trace(model, memory.module, retain_output=False, edit_io=lambda x, y, _: read(memory, x, y)),
    )


def detach(model, module: str) -> None:
    """Stop `model` reading the side memory at `module` (its weights were never changed)."""
    _memory, trace = _ATTACHED.get(model, {}).pop(module)
    trace.close()


def attached(model, module: str) -> Memory | None:
    """The side memory `model` reads at `module`, or None."""
    found = _ATTACHED.get(model, {}).get(module)
    return found[0] if found else None


def attached_items(model, modules: list[str]) -> list[tuple[str, torch.Tensor]]:
    """Fingerprint items of the memories attached at `modules` (none for a model without them)."""
    return [item for m in modules if (mem := attached(model, m)) is not None for item in mem.items()]
