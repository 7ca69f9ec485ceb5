"""GPT-J: GPT-2's layout with `out_proj` and `fc_in` / `fc_out` (attention and MLP in parallel)."""

import transformers

from editkit.models.families import Family, register

register(
    Family(
        "gptj",
        {
            "blocks": "transformer.h",
            "attn": "transformer.h.{}.attn",
            "attn_out": "transformer.h.{}.attn.out_proj",
            "mlp": "transformer.h.{}.mlp",
            "mlp_in": "transformer.h.{}.mlp.fc_in",
            "mlp_out": "transformer.h.{}.mlp.fc_out",
            "final_norm": "transformer.ln_f",
        },
        lambda: transformers.GPTJConfig(
            vocab_size=128, n_positions=64, n_embd=32, n_layer=2, n_head=4, n_inner=64, rotary_dim=4
        ),
    )
)
