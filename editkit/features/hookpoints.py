"""SAELens hook names (`blocks.3.hook_resid_post`) mapped onto the modules an `Adapter` names.

| hook name                 | what it reads                         | module (adapter kind), side |
| `blocks.L.hook_resid_pre` | the residual stream entering block L  | block, input                |
| `blocks.L.hook_resid_post`| the residual stream leaving block L   | block, output               |
| `blocks.L.hook_attn_out`  | what attention writes at L            | attn, output                |
| `blocks.L.hook_mlp_out`   | what the MLP writes at L              | mlp, output                 |
| `blocks.L.hook_mlp_post`  | the MLP's hidden activation at L      | mlp_out, input              |
| `blocks.L.ln2.hook_normalized` | what the MLP at L reads (after its norm) | mlp, input           |

`blocks.L.mlp.hook_in` (the name circuit-tracer's transcoders use) is read as `blocks.L.ln2.hook_normalized`.
A transcoder reads `blocks.L.ln2.hook_normalized` and writes `blocks.L.hook_mlp_out`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from editkit.errors import EditkitError
from editkit.models import Adapter

#: hook suffix -> (adapter module kind, side of the module it is read from)
HOOKS = {
    "hook_resid_pre": ("block", "input"),
    "hook_resid_post": ("block", "output"),
    "hook_attn_out": ("attn", "output"),
    "hook_mlp_out": ("mlp", "output"),
    "hook_mlp_post": ("mlp_out", "input"),
    "ln2.hook_normalized": ("mlp", "input"),
}
ALIASES = {"mlp.hook_in": "ln2.hook_normalized"}
_PATTERN = re.compile(r"^blocks\.(\d+)\.((?:\w+\.)?hook_\w+)$")


@dataclass(frozen=True)
class HookPoint:
    """A hook name resolved on one model: the module to trace, which side of it, and the layer."""

    name: str
    module: str
    side: str
    layer: int
    kind: str

    @property
    def is_input(self) -> bool:
        return self.side == "input"


def resolve_hook(adapter: Adapter, name: str) -> HookPoint:
    """The module and side that `name` (SAELens style, e.g. `blocks.3.hook_resid_post`) reads."""
    m = _PATTERN.match(name.strip())
    suffix = m and ALIASES.get(m.group(2), m.group(2))
    if not m or suffix not in HOOKS:
        raise EditkitError(
            f"unknown hook name {name!r}; use blocks.<layer>.<hook> with <hook> one of {', '.join(HOOKS)} "
            f"(e.g. blocks.{adapter.n_layers // 2}.hook_resid_post)"
        )
    layer, (kind, side) = int(m.group(1)), HOOKS[suffix]
    if layer >= adapter.n_layers:
        raise EditkitError(
            f"hook {name!r}: layer {layer} out of range, the model has {adapter.n_layers} layers "
            f"(0..{adapter.n_layers - 1})"
        )
    return HookPoint(name.strip(), adapter.name(kind, layer), side, layer, kind)


def hook_width(model, adapter: Adapter, hook: HookPoint) -> int:
    """The width of the activations at `hook` (d_in of an SAE trained there)."""
    if hook.kind == "mlp_out":
        from editkit.models import weight_out_in

        return weight_out_in(adapter.module(model, hook.module)).shape[1]
    return adapter.hidden_size


def trace_hook(model, hook: HookPoint, edit=None, stop: bool = False, retain: bool = True, detach: bool = True):
    """A `Trace` on `hook`'s module and side; `edit(x) -> x'` replaces the activation there."""
    from editkit.hooks import Trace

    fn = None if edit is None else (lambda x, _name: edit(x))
    if hook.is_input:
        return Trace(
            model, hook.module, retain_output=False, retain_input=retain, edit_input=fn, stop=stop, detach=detach
        )
    return Trace(model, hook.module, retain_output=retain, edit_output=fn, stop=stop, detach=detach)


def hook_value(trace, hook: HookPoint):
    """The activation `trace` recorded at `hook`."""
    record = trace[hook.module]
    return record.input if hook.is_input else record.output


def trace_hooks(model, hooks: list[HookPoint], stop: bool = False):
    """A `Trace` recording every one of `hooks` (inputs and outputs of their modules) in one forward pass."""
    from editkit.hooks import Trace

    return Trace(
        model,
        [h.module for h in hooks],
        retain_output=any(not h.is_input for h in hooks),
        retain_input=any(h.is_input for h in hooks),
        stop=stop,
    )
