"""Trace always cleans up, stops early, and more; reading and patching every hooked module of every family is
checked in tests/test_conformance.py."""

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
