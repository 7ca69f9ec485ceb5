"""Edits on tiny random models: ROME's update solves W' k = v*, sequential edits keep every delta, same seed
gives the same numbers. (Every method flipping a fact on every family, reverted bit for bit: test_conformance.py.)"""

import pytest
import torch

from editkit.edit import Stats, edit
from editkit.models import adapter_for
from editkit.models.adapters import get_module
from editkit.requests import EditRequest
from tests.conftest import tiny_model
from tests.edit_fixtures import TINY_REQUEST, tiny_corpus, tiny_hparams, word_tokenizer


@pytest.fixture(scope="module")
def tok():
    return word_tokenizer()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return tiny_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt")


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("original_key", [True, False])
def test_rome_update_writes_v_star_at_its_key(original_key, tok, corpus, tmp_path):
    model = tiny_model("gpt2")
    adapter = adapter_for(model)
    hp = tiny_hparams("rome", corpus)
    hp.original_key = original_key
    stats = Stats(model, tok, adapter, corpus, 3000, cache_dir=tmp_path)
    result = edit(model, tok, adapter, [EditRequest(**TINY_REQUEST)], "rome", hp, stats)
    (delta,) = result.deltas
    assert delta.dense is None and delta.u.shape == (64,) and delta.v.shape == (32,)
    with torch.no_grad():
        out = get_module(model, delta.module)(delta.keys)
    torch.testing.assert_close(out, delta.values, atol=1e-5, rtol=1e-5)
    # and the key is C⁻¹-weighted: u ∝ C⁻¹ k̄
    assert torch.isclose(delta.u.norm(), torch.tensor(1.0))


def test_sequential_rome_and_alphaedit_keep_every_delta(tok, corpus, tmp_path):
    requests = [EditRequest(**TINY_REQUEST), EditRequest("we saw {}", "Ann Lee", "harp")]
    for method in ("rome", "alphaedit"):
        model = tiny_model("llama")
        adapter = adapter_for(model)
        original = _state(model)
        stats = Stats(model, tok, adapter, corpus, 3000, cache_dir=tmp_path)
        result = edit(model, tok, adapter, requests, method, tiny_hparams(method, corpus), stats, mode="sequential")
        assert [r.subject for r in result.requests] == ["Bob Smith", "Ann Lee"]
        assert len(result.deltas) == (2 if method == "rome" else 4)
        result.revert(model)
        assert all(torch.equal(v, original[k]) for k, v in model.state_dict().items())


def test_same_seed_same_numbers(tok, corpus, tmp_path):
    deltas = []
    for _ in range(2):
        model = tiny_model("gpt_neox")
        adapter = adapter_for(model)
        stats = Stats(model, tok, adapter, corpus, 3000, cache_dir=tmp_path)
        res = edit(model, tok, adapter, [EditRequest(**TINY_REQUEST)], "memit", tiny_hparams("memit", corpus), stats)
        deltas.append([d.dense for d in res.deltas])
    assert all(torch.equal(a, b) for a, b in zip(*deltas, strict=True))
