"""One context manager for reading and patching module inputs and outputs (in the spirit of baukit's
`nethook.TraceDict`). Every editkit method that looks inside a model goes through `Trace`.

    with Trace(model, ["transformer.h.3.mlp"], edit_output=lambda out, name: out * 0) as tr:
        model(**batch)
    tr["transformer.h.3.mlp"].output          # what the module returned (before the edit)

Modules that return tuples (transformer blocks) are reduced to their first element, the hidden state:
recorded values and the tensors passed to `edit_*` are that tensor, and the tuple is rebuilt around
the replacement. Hooks are removed on exit, even when the forward pass raises.

A Trace made without `with` stays attached until `close()`: that is how an edit that lives beside the
weights (GRACE's codebook, WISE's side memory) reads each module call, with `edit_io(input, output, name)`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from editkit.models.adapters import get_module

EditFn = Callable[[torch.Tensor, str], torch.Tensor]
#: (module input, module output, module name) -> the output the model should use instead
EditIOFn = Callable[[torch.Tensor, torch.Tensor, str], torch.Tensor]
#: (positional arguments, keyword arguments, module name), before the module runs
CallFn = Callable[[tuple, dict, str], None]


class StopForward(Exception):
    """Raised inside the forward pass after the last traced module when `stop=True`; caught by `Trace`."""


@dataclass
class Record:
    """What one traced module saw: its (first) input and its (first) output, when retained."""

    input: torch.Tensor | None = None
    output: torch.Tensor | None = None
    args: tuple | None = None
    kwargs: dict | None = None


def _main(x):
    return x[0] if isinstance(x, tuple) else x


def _replace_main(x, new: torch.Tensor):
    return (new, *x[1:]) if isinstance(x, tuple) else new


class Trace(dict):
    """Record and/or replace the inputs and outputs of named modules during forward passes.

    retain_output / retain_input: keep what each module returned / received (detached unless
    `detach=False`, cloned when `clone=True` so later in-place ops cannot change it).
    retain_args: keep the whole call (`args`, `kwargs`, as passed), e.g. to re-run a block by hand.
    edit_output(out, name) / edit_input(inp, name): return the tensor the model should use instead.
    edit_io(inp, out, name): the output to use instead, computed from the module's input and output.
    on_call(args, kwargs, name): told of each call before the module runs (e.g. the root model's attention
    mask and KV cache, for a side memory that routes whole sequences).
    stop: end the forward pass after the last named module has run (saves the rest of the model).
    """

    def __init__(
        self,
        model: nn.Module,
        names: str | Iterable[str],
        retain_output: bool = True,
        retain_input: bool = False,
        retain_args: bool = False,
        edit_output: EditFn | None = None,
        edit_input: EditFn | None = None,
        edit_io: EditIOFn | None = None,
        on_call: CallFn | None = None,
        detach: bool = True,
        clone: bool = False,
        stop: bool = False,
    ):
        super().__init__()
        self.names = [names] if isinstance(names, str) else list(dict.fromkeys(names))
        self._handles = []
        self._stop = stop
        order = {m: i for i, (_, m) in enumerate(model.named_modules())}
        modules = {n: get_module(model, n) for n in self.names}
        self._last = max(self.names, key=lambda n: order[modules[n]]) if stop and self.names else None

        def keep(x: torch.Tensor) -> torch.Tensor:
            x = x.detach() if detach else x
            return x.clone() if clone else x

        for name, module in modules.items():
            record = self[name] = Record()
            seen: list[torch.Tensor] = []  # this call's input, for edit_io

            def pre_hook(mod, args, kwargs, name=name, record=record, seen=seen):
                if on_call is not None:
                    on_call(args, kwargs, name)
                if args:
                    x = args[0]
                else:  # called with keywords only (e.g. hidden_states=...)
                    key = next(iter(kwargs))
                    x = kwargs[key]
                if retain_input:
                    record.input = keep(x)
                if retain_args:
                    record.args, record.kwargs = args, dict(kwargs)
                if edit_io is not None:
                    seen[:] = [x]
                if edit_input is None:
                    return None
                new = edit_input(x, name)
                if edit_io is not None:
                    seen[:] = [new]
                if args:
                    return (new, *args[1:]), kwargs
                return args, {**kwargs, key: new}

            def post_hook(mod, args, output, name=name, record=record, seen=seen):
                main = _main(output)
                if retain_output:
                    record.output = keep(main)
                if edit_output is not None:
                    output = _replace_main(output, edit_output(main, name))
                if edit_io is not None:
                    output = _replace_main(output, edit_io(seen.pop(), _main(output), name))
                if name == self._last:
                    raise StopForward
                return output

            if retain_input or retain_args or edit_input is not None or edit_io is not None or on_call is not None:
                self._handles.append(module.register_forward_pre_hook(pre_hook, with_kwargs=True))
            self._handles.append(module.register_forward_hook(post_hook))

    def __enter__(self) -> Trace:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.close()
        return exc_type is StopForward

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


class FromBlock:
    """The model's logits on fixed inputs, recomputed from block `start` up: the blocks below see the same
    input on every call, so it is recorded once (as is each block's call: mask, positions, rotary
    embeddings, local or global attention) and only the blocks from `start` and the head run again. For an
    optimisation of a module in block `start` (WISE trains one at a late layer, 70 steps per edit); the
    logits equal the model's own on those inputs, bit for bit."""

    def __init__(self, model, adapter, start: int, **inputs) -> None:
        names = adapter.names("block")[start:]
        with torch.no_grad(), Trace(model, names, retain_args=True, retain_output=False, stop=True) as tr:
            model(**inputs, use_cache=False)
        self.model, self.adapter = model, adapter
        self.calls = [(get_module(model, n), tr[n].args, tr[n].kwargs) for n in names]

    def logits(self) -> torch.Tensor:
        h = self.calls[0][1][0]
        for block, args, kwargs in self.calls:
            out = block(h, *args[1:], **kwargs)
            h = out[0] if isinstance(out, tuple) else out
        return self.adapter.logits(self.model, h)
