"""Side memories: edits kept beside the base weights instead of written into them (GRACE's codebook, WISE's
side memory). A `Memory` is plain data (tensors + JSON metadata) at one module; its kind's reader (each
memory method registers one in `READERS`) rewrites that module's output from its input through a
persistent `editkit.hooks.Trace`, attached and detached here, so the model's own weights never change. A
second Trace on the model itself tells the reader about the forward pass it runs in (`Call`: padding, the
KV cache, and, under `prompt_positions`, where a teacher-forced prompt ends)."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


@dataclass(frozen=True)
class Call:
    """The model call a reader runs in: its 2D attention mask (1 = token, 0 = padding; None: all tokens),
    the prompt mask set by `prompt_positions` (None outside it), how many positions each sequence had
    before this call (its KV cache's length) and that cache (None when the model makes its own)."""

    mask: torch.Tensor | None = None
    prompt: torch.Tensor | None = None
    past: int = 0
    cache: object | None = None

    def query(self, seq: int) -> torch.Tensor | None:
        """Which of this call's `seq` positions are prompt tokens, [batch, seq] bool (None: all of them)."""
        if self.mask is not None and self.mask.dim() != 2:
            raise EditkitError(
                f"this side memory reads a 2D attention mask [batch, seq] (1 = token, 0 = padding); got "
                f"{self.mask.dim()}D"
            )
        mask = None if self.mask is None else self.mask[:, -seq:].bool()
        if self.prompt is None:
            return mask
        return self.prompt if mask is None else mask & self.prompt


_PROMPTS: list[torch.Tensor] = []


@contextmanager
def prompt_positions(prompt: torch.Tensor) -> Iterator[None]:
    """Forward passes inside score prompt + continuation rows at once (teacher forcing); `prompt` [batch, seq]
    marks each row's prompt, where a reader that routes whole sequences decides, as it does on a prompt's
    own uncached forward pass before generating from it."""
    _PROMPTS.append(prompt.bool())
    try:
        yield
    finally:
        _PROMPTS.pop()


def call_of(signature: inspect.Signature, args: tuple, kwargs: dict) -> Call:
    """The `Call` of a model called with `args` and `kwargs` (named as in its forward's `signature`)."""
    given = {**dict(zip(signature.parameters, args, strict=False)), **kwargs}
    mask, cache = given.get("attention_mask"), given.get("cache", given.get("past_key_values"))
    past = cache.get_seq_length() if cache is not None else 0
    prompt = _PROMPTS[-1] if _PROMPTS and past == 0 else None
    if prompt is not None and mask is not None and prompt.shape != mask.shape[:2]:
        raise EditkitError(f"prompt_positions got a {list(prompt.shape)} mask for a {list(mask.shape)} batch")
    return Call(mask, prompt, past, cache)


#: kind -> read(memory, module input, module output, the call) -> the output the model uses
READERS: dict[str, Callable[[Memory, torch.Tensor, torch.Tensor, Call], torch.Tensor]] = {}

#: kind -> undo(memory): take back the memory's last request in place, bit for bit (kinds that journal)
UNDO: dict[str, Callable[[Memory], None]] = {}

#: model -> {module: (memory, the Traces that read it and its calls)}
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
    read, signature, calls = READERS[memory.kind], inspect.signature(model.forward), [Call()]
    at[memory.module] = (
        memory,
        Trace(model, "", retain_output=False, on_call=lambda a, k, _: calls.__setitem__(0, call_of(signature, a, k))),
        Trace(model, memory.module, retain_output=False, edit_io=lambda x, y, _: read(memory, x, y, calls[0])),
    )


def detach(model, module: str) -> None:
    """Stop `model` reading the side memory at `module` (its weights were never changed)."""
    _memory, *traces = _ATTACHED.get(model, {}).pop(module)
    for trace in traces:
        trace.close()


def attached(model, module: str) -> Memory | None:
    """The side memory `model` reads at `module`, or None."""
    found = _ATTACHED.get(model, {}).get(module)
    return found[0] if found else None


def attached_items(model, modules: list[str]) -> list[tuple[str, torch.Tensor]]:
    """Fingerprint items of the memories attached at `modules` (none for a model without them)."""
    return [item for m in modules if (mem := attached(model, m)) is not None for item in mem.items()]
