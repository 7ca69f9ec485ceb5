"""Trace reads and patches every hooked module of every family, and always cleans up."""

import pytest
import torch

from editkit.hooks import Trace
from editkit.models import BLOCK_KINDS, adapter_for
from tests.conftest import tiny_model

IDS = torch.tensor([[5, 17, 42, 9, 77, 3], [1, 2, 3, 4, 5, 6]])


def _all_names(adapter):
    return [n for kind in BLOCK_KINDS for n in adapter.names(kind)]


def _hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@torch.no_grad()
def test_patch_with_recorded_value_is_bit_identical(family):
    model = tiny_model(family)
    names = _all_names(adapter_for(model))
    clean = model(IDS).logits
    with Trace(model, names, clone=True) as rec:
        model(IDS)
    for name in names:
        assert rec[name].output is not None and rec[name].output.shape[:2] == IDS.shape, name
        with Trace(model, name, edit_output=lambda out, n: rec[n].output.clone()):
            patched = model(IDS).logits
        assert torch.equal(patched, clean), name
    assert _hook_count(model) == 0


@torch.no_grad()
def test_patch_with_zeros_changes_logits(family):
    model = tiny_model(family)
    names = _all_names(adapter_for(model))
    clean = model(IDS).logits
    for name in names:
        with Trace(model, name, edit_output=lambda out, n: torch.zeros_like(out)) as tr:
            patched = model(IDS).logits
        assert not torch.allclose(patched, clean), name
        assert tr[name].output.abs().sum() > 0  # the record is what the module produced, before the edit


@torch.no_grad()
def test_inputs_are_read_and_patched(family):
    """The input of mlp_out is ROME's key k; patching it with itself is exact, with zeros it is not."""
    model = tiny_model(family)
    a = adapter_for(model)
    name = a.name("mlp_out", 1)
    clean = model(IDS).logits
    with Trace(model, name, retain_input=True) as tr:
        model(IDS)
    k = tr[name].input
    assert k.shape == (2, 6, 64)
    with Trace(model, name, edit_input=lambda x, n: k.clone()):
        assert torch.equal(model(IDS).logits, clean)
    with Trace(model, name, edit_input=lambda x, n: torch.zeros_like(x)):
        assert not torch.allclose(model(IDS).logits, clean)


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
