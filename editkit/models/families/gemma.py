"""Gemma 1, 2 and 3 (text): Llama's paths; RMSNorm multiplies by `1 + weight`. Gemma 2 and 3 normalise each
sublayer's output before adding it (`post_attention_layernorm`, `post_feedforward_layernorm`; the MLP's input
norm is `pre_feedforward_layernorm`), so there `attn` and `mlp` are those post-norms, while `attn_out`
(`o_proj`) and `mlp_out` (`down_proj`) stay the projections. (Gemma 1's `post_attention_layernorm` is the MLP's
input norm, as in Llama.) Gemma 2's final-logit soft-cap is read off its config by the adapter."""

import transformers

from editkit.models.families import TINY, Family, llama_like, register

POST_NORMS = llama_like(attn="{layer}.post_attention_layernorm", mlp="{layer}.post_feedforward_layernorm")

#: one local and one global layer, a window shorter than the test prompts, and soft-caps small enough to
#: change the probabilities (a trace that skipped either would fail the tests)
_ATTN = dict(
    num_key_value_heads=2,
    head_dim=8,
    query_pre_attn_scalar=8,
    max_position_embeddings=64,
    sliding_window=3,
    final_logit_softcapping=0.5,
)

# Gemma scales embeddings by sqrt(width): in a random 2-layer model they drown what the MLPs write, and an FT-L
# step bounded by 0.05 cannot flip the tied (self-predicting) head; untied, with larger weights, it can
register(
    Family(
        "gemma",
        llama_like(),
        lambda: transformers.GemmaConfig(
            **TINY,
            num_key_value_heads=2,
            head_dim=8,
            max_position_embeddings=64,
            tie_word_embeddings=False,
            initializer_range=0.1,
        ),
        norm_offset=1.0,
    )
)
register(
    Family(
        "gemma2",
        POST_NORMS,
        lambda: transformers.Gemma2Config(
            **TINY, **_ATTN, layer_types=["full_attention", "sliding_attention"], attn_logit_softcapping=0.5
        ),
        norm_offset=1.0,
    )
)
register(
    Family(
        "gemma3_text",
        POST_NORMS,
        lambda: transformers.Gemma3TextConfig(**TINY, **_ATTN, layer_types=["sliding_attention", "full_attention"]),
        norm_offset=1.0,
    )
)
