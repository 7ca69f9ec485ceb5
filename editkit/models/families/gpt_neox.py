"""GPT-NeoX (Pythia): `gpt_neox.layers`, `attention.dense`, the MLP as `dense_h_to_4h` / `dense_4h_to_h`."""

import transformers

from editkit.models.families import TINY, Family, register

register(
    Family(
        "gpt_neox",
        {
            "blocks": "gpt_neox.layers",
            "attn": "gpt_neox.layers.{}.attention",
            "attn_out": "gpt_neox.layers.{}.attention.dense",
            "mlp": "gpt_neox.layers.{}.mlp",
            "mlp_in": "gpt_neox.layers.{}.mlp.dense_h_to_4h",
            "mlp_out": "gpt_neox.layers.{}.mlp.dense_4h_to_h",
            "final_norm": "gpt_neox.final_layer_norm",
        },
        lambda: transformers.GPTNeoXConfig(**TINY, max_position_embeddings=64),
    )
)
