"""Architecture adapters: the one place that knows where each family keeps its modules.

An `Adapter` names the embeddings, the blocks, each block's attention and MLP, the attention's output
projection (`attn_out`), the MLP's input (`mlp_in`) and output (`mlp_out`) projections, the final norm and
the unembedding. Rank-one editing writes to `mlp_out`, whose input is the key `k` and whose output is the
value `v` (ROME's notation). Weights are always exchanged as `[out, in]`; GPT-2's transposed `Conv1D` is
handled here, nowhere else.

`attn` and `mlp` are what attention and the MLP add to the residual stream: in families that normalise each
sublayer's output before adding it (Gemma 2 and 3, OLMo 2), those post-norms, while `attn_out` (`o_proj`) and
`mlp_out` (`down_proj`) stay the projections: the key `k` is `down_proj`'s input, and the post-norm is part of
what follows the edited layer.

Each family's paths and norm-gain offset are data, one file per family in `editkit.models.families`. What a
model computes beyond them is read off the model: the final-logit soft-cap (`final_logit_softcapping` in the
config, Gemma 2's), applied by `Adapter.logits`; the embedding and unembedding modules
(`get_input_embeddings` / `get_output_embeddings`, as transformers renames them between versions).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from editkit.errors import EditkitError
from editkit.models.families import FAMILIES

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
        norm_offset=FAMILIES[cfg.model_type].norm_offset,
        embed=names[model.get_input_embeddings()],
        unembed=names[model.get_output_embeddings()],
        **FAMILIES[cfg.model_type].paths,
    )
    for name in [adapter.blocks, adapter.final_norm]:
        get_module(model, name)
    for kind in BLOCK_KINDS:
        get_module(model, adapter.name(kind, adapter.n_layers - 1))
    return adapter
