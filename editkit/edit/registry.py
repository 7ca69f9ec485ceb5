"""The editing methods by name. Each module of `editkit.edit.methods` registers its `Method` records when
imported (importing `editkit.edit` imports them all), so a new method is one file there plus its shipped
hyper-parameters under editkit/hparams/<name>/.

A variant (r-ROME of ROME, FT-L of FT) is a `Method` with the same apply function and hparams class and a few
hparams preset (`Method.variant`): the presets come first, a file and `--set` on top."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

from editkit.edit.result import EditResult
from editkit.errors import EditkitError

#: apply(model, tokenizer, adapter, requests, hparams, stats, result) -> result, extended and sealed
Apply = Callable[..., EditResult]


@dataclass(frozen=True)
class Method:
    """One editing method: its name, what applies it, its hparams dataclass and the values preset there."""

    name: str
    apply: Apply
    hparams: type
    summary: str
    presets: dict = field(default_factory=dict)
    #: what an edit changes: "weights" (deltas written into the model), "memory" (a side memory read beside
    #: the unchanged weights) or "context" (a prompt context the evaluation prepends; no weights)
    changes: str = "weights"
    #: for changes="context": (result, prompt) -> the text that prompt is read behind; None: all of result.context
    reads: Callable[[EditResult, str], str] | None = None

    def variant(self, name: str, summary: str, **presets) -> Method:
        """This method under another name with `presets` on top of its own."""
        return dataclasses.replace(self, name=name, summary=summary, presets={**self.presets, **presets})

    def needs_stats(self, hp) -> bool:
        """Whether these hyper-parameters use the second-moment statistics C (the hparams class says)."""
        return hp.needs_stats

    def __call__(self, model, tokenizer, adapter, requests, hp, stats, history: EditResult | None = None) -> EditResult:
        """Edit `requests` into `model`; `history` (an earlier call's result) is extended, else a new result."""
        result = history or EditResult(self.name, dataclasses.asdict(hp))
        return self.apply(model, tokenizer, adapter, requests, hp, stats, result)


#: name -> Method, in the order the method modules registered them
METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add `method` under its name (a second, different method of the same name is an error)."""
    if METHODS.get(method.name, method) != method:
        raise EditkitError(f"two edit methods are called {method.name!r}; rename one")
    METHODS[method.name] = method
    return method


def get(name: str) -> Method:
    """The method called `name`, or a clear error listing the registered ones."""
    if name not in METHODS:
        raise EditkitError(f"unknown edit method {name!r}; use one of {', '.join(METHODS)}")
    return METHODS[name]


def describe() -> list[dict]:
    """Each method's name, summary and hparams class, for `editkit methods`."""
    return [
        {
            "name": m.name,
            "summary": m.summary,
            "hparams": m.hparams.__name__,
            "presets": m.presets,
            "changes": m.changes,
        }
        for m in METHODS.values()
    ]
