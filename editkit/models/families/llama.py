"""Llama and Mistral: `model.layers`, `self_attn.o_proj`, a gated MLP read through `up_proj`, `down_proj`."""

import transformers

from editkit.models.families import TINY, Family, llama_like, register

register(
    Family(
        "llama",
        llama_like(),
        lambda: transformers.LlamaConfig(**TINY, num_key_value_heads=2, max_position_embeddings=64),
    )
)
register(
    Family(
        "mistral",
        llama_like(),
        lambda: transformers.MistralConfig(
            **TINY, num_key_value_heads=2, max_position_embeddings=64, sliding_window=None
        ),
    )
)
