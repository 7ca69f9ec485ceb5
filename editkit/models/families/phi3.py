"""Phi-3: Llama's layout with fused projections: `self_attn.qkv_proj` and `mlp.gate_up_proj`, the MLP's input
(its output rows are the gate's, then the up projection's)."""

import transformers

from editkit.models.families import TINY, Family, llama_like, register

register(
    Family(
        "phi3",
        llama_like(mlp_in="{layer}.mlp.gate_up_proj"),
        lambda: transformers.Phi3Config(
            **TINY, num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=0
        ),
    )
)
