"""Adapters resolve every module on each family, and weights come out as [out, in] whatever the layout."""

import pytest
import torch
from transformers.pytorch_utils import Conv1D

from editkit.errors import EditkitError
from editkit.hooks import Trace
from editkit.models import BLOCK_KINDS, adapter_for, get_module, weight_out_in
from tests.conftest import tiny_model, tiny_opt


def test_adapter_paths_resolve(family):
    model = tiny_model(family)
    a = adapter_for(model)
    assert a.family == family and a.n_layers == 2 and a.hidden_size == 32
    assert get_module(model, a.embed).weight.shape[-1] == 32
    assert len(get_module(model, a.blocks)) == 2
    assert get_module(model, a.unembed).weight.shape == (128, 32)
    for kind in BLOCK_KINDS:
        names = a.names(kind)
        assert len(names) == 2 and all(get_module(model, n) is not None for n in names)
    assert a.name("mlp_out", -1) == a.name("mlp_out", 1)


def test_mlp_weights_are_out_in(family):
    """mlp_out maps the MLP hidden size to the model width, for Linear and Conv1D alike."""
    model = tiny_model(family)
    a = adapter_for(model)
    w_out = a.mlp_out_weight(model, 0)
    w_in = weight_out_in(get_module(model, a.name("mlp_in", 0)))
    d_mlp = w_in.shape[0]
    assert w_out.shape == (32, d_mlp) and w_in.shape == (d_mlp, 32)
    module = get_module(model, a.name("mlp_out", 0))
    assert isinstance(module, Conv1D) == (family == "gpt2")
    # The [out, in] weight is the module's own map: W @ k reproduces the module's output (minus its bias).
    k = torch.randn(3, d_mlp)
    bias = module.bias if module.bias is not None else 0
    torch.testing.assert_close(module(k) - bias, k @ w_out.T)
    # ... and it is a view: writing through it changes the model.
    with torch.no_grad():
        w_out[0, 0] += 1.0
    assert torch.equal(a.mlp_out_weight(model, 0), w_out)


def test_adapter_logits_are_the_models(family):
    """`Adapter.logits` of the last block's output is the model's own output, soft-cap included; the tiny
    soft-capped configs cap hard enough that leaving the cap out would show."""
    model = tiny_model(family)
    a = adapter_for(model)
    with Trace(model, a.name("block", -1)) as tr:
        logits = model(input_ids=torch.arange(12).view(1, -1)).logits
    h = tr[a.name("block", -1)].output
    torch.testing.assert_close(a.logits(model, h), logits)
    assert (a.logit_softcap is not None) == (family in ("gemma2", "gemma3_text"))
    uncapped = get_module(model, a.unembed)(get_module(model, a.final_norm)(h))
    if a.logit_softcap:
        assert (uncapped - logits).abs().max() > 0.01


def test_final_norm_gain_is_what_the_norm_multiplies_by(family):
    """norm(x) − norm(0) = gain ⊙ x for a zero-mean, unit-RMS x, for LayerNorm and RMSNorm (Gemma's 1 + w too)."""
    model = tiny_model(family)
    a = adapter_for(model)
    norm = get_module(model, a.final_norm)
    torch.manual_seed(1)
    with torch.no_grad():
        norm.weight.add_(torch.randn_like(norm.weight))
        x = torch.randn(32)
        x = (x - x.mean()) / (x - x.mean()).pow(2).mean().sqrt()
        torch.testing.assert_close(norm(x) - norm(torch.zeros(32)), a.final_norm_gain(model) * x, atol=1e-4, rtol=1e-4)


def test_unknown_architecture_is_a_clear_error():
    model = tiny_opt()
    with pytest.raises(EditkitError, match=r"unsupported architecture OPTForCausalLM.*gpt2, gptj, gpt_neox, llama"):
        adapter_for(model)


def test_bad_layer_and_kind_name_the_value():
    a = adapter_for(tiny_model("gpt2"))
    with pytest.raises(EditkitError, match="layer 7 out of range: the model has 2 layers"):
        a.name("mlp", 7)
    with pytest.raises(EditkitError, match="unknown module kind 'mlpp'"):
        a.name("mlpp", 0)
    with pytest.raises(EditkitError, match="has no module 'transformer.h.0.mlp.nope'"):
        get_module(tiny_model("gpt2"), "transformer.h.0.mlp.nope")
