"""Architecture families as data: each module here registers a `Family` per HF `model_type` when imported
(importing this package imports them all), so a new family is one file.

A family gives the module paths the `Adapter` exposes (`{}` stands for the layer index), the offset of its
RMSNorm gain (Gemma multiplies by `1 + weight`), and a tiny random configuration (2 layers, width 32, MLP
width 64, vocabulary 128) on which the conformance tests (tests/test_conformance.py) check every adapter path,
hook, trace and edit method; its config class is looked up only when it is built, so a transformers too old
for one family still loads the others. What a model computes beyond that (the final-logit soft-cap, each
layer's attention mask) is read off its config or recorded from its own forward pass, never branched on."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass

from transformers import PretrainedConfig

from editkit.errors import EditkitError

#: The paths every family names: blocks, what attention and the MLP add to the residual stream (`attn`,
#: `mlp`), the attention's output projection, the MLP's input and output projections, the final norm.
PATHS = ("blocks", "attn", "attn_out", "mlp", "mlp_in", "mlp_out", "final_norm")


@dataclass(frozen=True)
class Family:
    """One architecture family: its HF `model_type`, module paths, norm-gain offset and tiny config."""

    model_type: str
    paths: dict[str, str]
    tiny_config: Callable[[], PretrainedConfig]
    norm_offset: float = 0.0


#: model_type -> Family, filled by the modules of this package
FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Add `family` under its model_type; its paths must be exactly `PATHS`."""
    if set(family.paths) != set(PATHS):
        raise EditkitError(f"family {family.model_type!r} must name exactly the paths {', '.join(PATHS)}")
    if FAMILIES.get(family.model_type, family) != family:
        raise EditkitError(f"two families are registered for model_type {family.model_type!r}")
    FAMILIES[family.model_type] = family
    return family


def llama_like(**changes: str) -> dict[str, str]:
    """Llama's module paths (`model.layers.{}.self_attn.o_proj`, `mlp.up_proj`, `mlp.down_proj`, ...), with
    `changes` on top; most decoder-only families since keep them."""
    layer = "model.layers.{}"
    return {
        "blocks": "model.layers",
        "attn": f"{layer}.self_attn",
        "attn_out": f"{layer}.self_attn.o_proj",
        "mlp": f"{layer}.mlp",
        "mlp_in": f"{layer}.mlp.up_proj",
        "mlp_out": f"{layer}.mlp.down_proj",
        "final_norm": "model.norm",
        **{k: v.replace("{layer}", layer) for k, v in changes.items()},
    }


#: the tiny configs' shared sizes (the tests rely on them: 2 layers, width 32, MLP width 64, vocabulary 128)
TINY = dict(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
