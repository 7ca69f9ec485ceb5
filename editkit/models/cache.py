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
