"""OLMo 2: norms after each sublayer instead of before (`post_attention_layernorm`,
`post_feedforward_layernorm`), so those post-norms are what attention and the MLP add to the residual stream;
`o_proj` and `down_proj` stay the projections (the key k is `down_proj`'s input)."""

import transformers

from editkit.models.families import TINY, Family, llama_like, register

register(
    Family(
        "olmo2",
        llama_like(attn="{layer}.post_attention_layernorm", mlp="{layer}.post_feedforward_layernorm"),
        lambda: transformers.Olmo2Config(
            **TINY, num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=0
        ),
    )
)
