"""KV caches, for re-running the blocks on the later tokens of a sequence whose earlier keys and values are known
(fast causal tracing, the v*/z optimisation): the forward argument that takes one, a layer's tensors, a new one."""

from __future__ import annotations

import inspect

import torch


def cache_kwarg(model) -> str:
    """The forward argument that takes a KV cache: `cache` in newer transformers, `past_key_values` before."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def layer_kv(cache, i: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Layer `i`'s keys and values, `[batch, heads, tokens, head_dim]`."""
    if hasattr(cache, "layers"):
        return cache.layers[i].keys, cache.layers[i].values
    return cache.key_cache[i], cache.value_cache[i]


def new_cache(kv: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None):
    """A fresh cache holding `kv[i]` (keys, values) at layer i; blocks append to it as they run. It keeps every
    token at every layer (built without the config, it has no sliding-window layers, which would drop all but
    the last window of keys); sliding-window masks still apply."""
    from transformers.cache_utils import DynamicCache

    cache = DynamicCache()
    for i in sorted(kv or {}):
        cache.update(*kv[i], i)
    return cache


class SharedPrefix:
    """The keys and values of a token prefix that many rows begin with (an in-context edit's demonstrations),
    computed once at batch 1: each batch then runs only its rows' tokens after it."""

    def __init__(self, model, prefix: list[int]):
        self.length = len(prefix)
        cache = new_cache()
        device = next(model.parameters()).device
        with torch.no_grad():
            model(input_ids=torch.tensor([prefix], device=device), use_cache=True, **{cache_kwarg(model): cache})
        n = len(cache.layers) if hasattr(cache, "layers") else len(cache.key_cache)
        self.kv = [layer_kv(cache, i) for i in range(n)]

    def cache(self, rows: int):
        """A fresh cache holding the prefix once per row (views: the blocks' appends copy, the prefix stays)."""
        kv = {i: (k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1)) for i, (k, v) in enumerate(self.kv)}
        return new_cache(kv)

    def mask(self, mask: torch.Tensor) -> torch.Tensor:
        """The attention mask of prefix + rows from the rows' own `[rows, width]` mask."""
        return torch.cat([mask.new_ones(mask.shape[0], self.length), mask], dim=1)


def shared_length(rows: list[list[int]], at_most: int) -> int:
    """How many leading tokens all `rows` share, at most `at_most`."""
    n = 0
    while n < at_most and all(len(r) > n and r[n] == rows[0][n] for r in rows):
        n += 1
    return n
