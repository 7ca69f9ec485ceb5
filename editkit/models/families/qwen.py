"""Qwen2 and Qwen3: Llama's paths (Qwen3 adds per-head q/k norms inside attention, which no path names)."""

import transformers

from editkit.models.families import TINY, Family, llama_like, register

register(
    Family(
        "qwen2",
        llama_like(),
        lambda: transformers.Qwen2Config(**TINY, num_key_value_heads=2, max_position_embeddings=64),
    )
)
register(
    Family(
        "qwen3",
        llama_like(),
        lambda: transformers.Qwen3Config(**TINY, num_key_value_heads=2, head_dim=8, max_position_embeddings=64),
    )
)
