"""GPT-2: `transformer.h` blocks, the MLP as `c_fc` / `c_proj` (transposed `Conv1D` weights)."""

import transformers

from editkit.models.families import Family, register

register(
    Family(
        "gpt2",
        {
            "blocks": "transformer.h",
            "attn": "transformer.h.{}.attn",
            "attn_out": "transformer.h.{}.attn.c_proj",
            "mlp": "transformer.h.{}.mlp",
            "mlp_in": "transformer.h.{}.mlp.c_fc",
            "mlp_out": "transformer.h.{}.mlp.c_proj",
            "final_norm": "transformer.ln_f",
        },
        lambda: transformers.GPT2Config(vocab_size=128, n_positions=64, n_embd=32, n_layer=2, n_head=4, n_inner=64),
    )
)
