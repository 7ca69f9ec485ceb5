"""Trace always cleans up, stops early, and more; reading and patching every hooked module of every family is
checked in tests/test_conformance.py."""

import pytest
import torch

from editkit.hooks import FromBlock, Trace
from editkit.models import BLOCK_KINDS, adapter_for
from tests.conftest import TINY_CONFIGS, tiny_model

IDS = torch.tensor([[5, 17, 42, 9, 77, 3], [1, 2, 3, 4, 5, 6]])


def _all_names(adapter):
    return [n for kind in BLOCK_KINDS for n in adapter.names(kind)]


def _hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_cleanup_on_exception():
    model = tiny_model("gpt2")
    names = _all_names(adapter_for(model))

    def boom(out, name):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        with Trace(model, names, edit_output=boom, edit_input=boom):
            model(IDS)
    assert _hook_count(model) == 0


@torch.no_grad()
def test_stop_skips_the_rest_of_the_model():
    model = tiny_model("llama")
    a = adapter_for(model)
    seen = []
    with Trace(model, a.name("mlp", 1), retain_output=False, edit_output=lambda out, n: seen.append(n) or out):
        with Trace(model, a.name("block", 0), stop=True) as tr:
            model(IDS)
        assert seen == []  # layer 1 never ran
        model(IDS)
        assert seen == [a.name("mlp", 1)]  # without stop it does
    assert tr[a.name("block", 0)].output.shape == (2, 6, 32)
    assert _hook_count(model) == 0


@torch.no_grad()
def test_edit_io_sees_the_input_and_a_trace_without_with_stays_until_closed():
    """edit_io(input, output) replaces the output (here with input @ Wᵀ doubled, the bias left out); a Trace
    made without `with` keeps doing so across calls until `close()`."""
    model = tiny_model("llama")
    a = adapter_for(model)
    name = a.name("mlp_out", 0)
    module = a.module(model, name)
    ids = torch.arange(6).view(1, -1)
    clean = model(ids).logits
    seen = []

    def double(x, out, n):
        seen.append(x)
        return 2 * (x @ module.weight.T)

    patch = Trace(model, name, retain_output=False, edit_io=double)
    first, second = model(ids).logits, model(ids).logits
    assert len(seen) == 2 and seen[0].shape == (1, 6, 64)
    assert torch.equal(first, second) and not torch.allclose(first, clean)
    with Trace(model, name) as tr:  # what the module now returns is the patched output
        model(ids)
    torch.testing.assert_close(tr[name].output, 2 * (seen[-1] @ module.weight.T))
    patch.close()
    assert torch.equal(model(ids).logits, clean)


@pytest.mark.parametrize("family", sorted(TINY_CONFIGS))
def test_from_block_gives_the_models_own_logits_bit_for_bit(family):
    model = tiny_model(family)
    adapter = adapter_for(model)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])  # a padded row, as WISE's batches have
    want = model(input_ids=IDS, attention_mask=mask).logits
    for start in range(adapter.n_layers):
        got = FromBlock(model, adapter, start, input_ids=IDS, attention_mask=mask)
        assert torch.equal(got.logits(), want), (family, start)
    # It reruns the blocks from `start` on: a change there shows, as in the model's own pass.
    last = adapter.n_layers - 1
    suffix = FromBlock(model, adapter, last, input_ids=IDS, attention_mask=mask)
    with Trace(model, adapter.name("mlp_out", last), edit_output=lambda y, _: y + 1.0, retain_output=False):
        assert torch.equal(suffix.logits(), model(input_ids=IDS, attention_mask=mask).logits)
        assert not torch.equal(suffix.logits(), want)
