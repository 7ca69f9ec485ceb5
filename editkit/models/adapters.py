"""Architecture adapters: the one place that knows where each family keeps its modules.

An `Adapter` names the embeddings, the blocks, each block's attention and MLP, the attention's output
projection (`attn_out`), the MLP's input (`mlp_in`) and output (`mlp_out`) projections, the final norm and
the unembedding. Rank-one editing writes to `mlp_out`, whose input is the key `k` and whose output is the
value `v` (ROME's notation). Weights are always exchanged as `[out, in]`; GPT-2's transposed `Conv1D` is
handled here, nowhere else.

`attn` and `mlp` are what attention and the MLP add to the residual stream. Gemma 2 and 3 normalise each
sublayer's output before adding it (`post_attention_layernorm`, `post_feedforward_layernorm`; the MLP's
input norm is `pre_feedforward_layernorm`), so there `attn` and `mlp` are those post-norms, while `attn_out`
(`o_proj`) and `mlp_out` (`down_proj`) stay the projections: the key `k` is `down_proj`'s input, and the
post-norm is part of what follows the edited layer. (Gemma 1's `post_attention_layernorm` is the MLP's
input norm, as in Llama: it has no post-norms.)

What a family computes beyond module paths is data here too: the final-logit soft-cap (Gemma 2's
`final_logit_softcapping`, read off the config), applied by `Adapter.logits`, and the offset of the
RMSNorm gain (Gemma multiplies by `1 + weight`), applied by `Adapter.final_norm_gain`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from editkit.errors import EditkitError

#: Per-block module kinds, in the order `info` lists them.
BLOCK_KINDS = ("block", "attn", "attn_out", "mlp", "mlp_in", "mlp_out")


@dataclass(frozen=True)
class Adapter:
    """Module paths of one architecture family; `{}` stands for the layer index."""

    family: str
    embed: str
    blocks: str
    attn: str
    attn_out: str
    mlp: str
    mlp_in: str
    mlp_out: str
    final_norm: str
    unembed: str
    n_layers: int
    hidden_size: int
    logit_softcap: float | None = None
    norm_offset: float = 0.0

    def layer(self, layer: int) -> int:
        """`layer` as an index 0..n_layers-1; negative layers count from the end (-1 is the last), anything
        outside -n_layers..n_layers-1 is an error (never wrapped)."""
        if not -self.n_layers <= layer < self.n_layers:
            raise EditkitError(
                f"layer {layer} out of range: the model has {self.n_layers} layers "
                f"(0..{self.n_layers - 1}, or -{self.n_layers}..-1 from the end)"
            )
        return layer % self.n_layers

    def name(self, kind: str, layer: int) -> str:
        """Module name of `kind` (one of `BLOCK_KINDS`) at `layer`."""
        if kind not in BLOCK_KINDS:
            raise EditkitError(f"unknown module kind {kind!r}; use one of {', '.join(BLOCK_KINDS)}")
        layer = self.layer(layer)
        return f"{self.blocks}.{layer}" if kind == "block" else getattr(self, kind).format(layer)

    def names(self, kind: str, layers: list[int] | None = None) -> list[str]:
        """Module names of `kind` at `layers` (default: every layer)."""
        return [self.name(kind, i) for i in (range(self.n_layers) if layers is None else layers)]

    def module(self, model: nn.Module, name: str) -> nn.Module:
        return get_module(model, name)

    def mlp_out_weight(self, model: nn.Module, layer: int) -> torch.Tensor:
        """The rank-one-edited weight at `layer` as an `[out, in]` view (shares storage with the model)."""
        return weight_out_in(get_module(model, self.name("mlp_out", layer)))

    def logits(self, model: nn.Module, h: torch.Tensor) -> torch.Tensor:
        """The model's logits from a last block's output `h`: final norm, unembedding, soft-cap if any."""
        logits = get_module(model, self.unembed)(get_module(model, self.final_norm)(h))
        if self.logit_softcap:
            logits = self.logit_softcap * torch.tanh(logits / self.logit_softcap)
        return logits

    def final_norm_gain(self, model: nn.Module) -> torch.Tensor | None:
        """The elementwise gain the final norm multiplies by (None if it has none)."""
        weight = getattr(get_module(model, self.final_norm), "weight", None)
        return None if weight is None else weight.detach() + self.norm_offset


def get_module(model: nn.Module, name: str) -> nn.Module:
    """The submodule called `name`, or a clear error listing a few names that do exist."""
    try:
        return model.get_submodule(name)
    except AttributeError:
        near = [n for n, _ in model.named_modules() if n and n.split(".")[-1] == name.split(".")[-1]][:5]
        hint = f"; similar names: {', '.join(near)}" if near else ""
        raise EditkitError(f"model {type(model).__name__} has no module {name!r}{hint}") from None


def weight_out_in(module: nn.Module) -> torch.Tensor:
    """A linear layer's weight as `[out, in]`: `Linear` stores it so, GPT-2's `Conv1D` stores `[in, out]`."""
    if isinstance(module, Conv1D):
        return module.weight.T
    if isinstance(module, nn.Linear):
        return module.weight
    raise EditkitError(f"module {type(module).__name__} is not a Linear or Conv1D layer")


_GPT2_LIKE = dict(
    blocks="transformer.h", attn="transformer.h.{}.attn", mlp="transformer.h.{}.mlp", final_norm="transformer.ln_f"
)
_LLAMA_LIKE = dict(
    blocks="model.layers",
    attn="model.layers.{}.self_attn",
    attn_out="model.layers.{}.self_attn.o_proj",
    mlp="model.layers.{}.mlp",
    mlp_in="model.layers.{}.mlp.up_proj",
    mlp_out="model.layers.{}.mlp.down_proj",
    final_norm="model.norm",
)
#: Gemma 2 / 3: the sublayers' contributions to the residual stream are their post-norms' outputs
_GEMMA2_LIKE = {
    **_LLAMA_LIKE,
    "attn": "model.layers.{}.post_attention_layernorm",
    "mlp": "model.layers.{}.post_feedforward_layernorm",
}

#: model_type (from the HF config) -> module paths. Embedding and unembedding names are read off the model
#: (`get_input_embeddings` / `get_output_embeddings`), as transformers renames them between versions.
FAMILIES: dict[str, dict[str, str]] = {
    "gpt2": {
        **_GPT2_LIKE,
        "attn_out": "transformer.h.{}.attn.c_proj",
        "mlp_in": "transformer.h.{}.mlp.c_fc",
        "mlp_out": "transformer.h.{}.mlp.c_proj",
    },
    "gptj": {
        **_GPT2_LIKE,
        "attn_out": "transformer.h.{}.attn.out_proj",
        "mlp_in": "transformer.h.{}.mlp.fc_in",
        "mlp_out": "transformer.h.{}.mlp.fc_out",
    },
    "gpt_neox": dict(
        blocks="gpt_neox.layers",
        attn="gpt_neox.layers.{}.attention",
        attn_out="gpt_neox.layers.{}.attention.dense",
        mlp="gpt_neox.layers.{}.mlp",
        mlp_in="gpt_neox.layers.{}.mlp.dense_h_to_4h",
        mlp_out="gpt_neox.layers.{}.mlp.dense_4h_to_h",
        final_norm="gpt_neox.final_layer_norm",
    ),
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "gemma": _LLAMA_LIKE,
    "gemma2": _GEMMA2_LIKE,
    "gemma3_text": _GEMMA2_LIKE,
}
#: families whose RMSNorm multiplies by `1 + weight` rather than `weight`
NORM_OFFSET: dict[str, float] = {"gemma": 1.0, "gemma2": 1.0, "gemma3_text": 1.0}


def check_supported(model_type: str, class_name: str) -> None:
    """Raise a clear error for an architecture without an adapter."""
    if model_type not in FAMILIES:
        raise EditkitError(
            f"unsupported architecture {class_name} (model_type {model_type!r}); "
            f"editkit supports the families: {', '.join(FAMILIES)}"
        )


def adapter_for(model: nn.Module) -> Adapter:
    """The adapter for a loaded Hugging Face causal LM; checks that every path resolves."""
    cfg = model.config
    check_supported(getattr(cfg, "model_type", ""), type(model).__name__)
    names = {m: n for n, m in model.named_modules()}
    adapter = Adapter(
        family=cfg.model_type,
        n_layers=cfg.num_hidden_layers,
        hidden_size=cfg.hidden_size,
        logit_softcap=getattr(cfg, "final_logit_softcapping", None),
        norm_offset=NORM_OFFSET.get(cfg.model_type, 0.0),
        embed=names[model.get_input_embeddings()],
        unembed=names[model.get_output_embeddings()],
        **FAMILIES[cfg.model_type],
    )
    for name in [adapter.blocks, adapter.final_norm]:
        get_module(model, name)
    for kind in BLOCK_KINDS:
        get_module(model, adapter.name(kind, adapter.n_layers - 1))
    return adapter
