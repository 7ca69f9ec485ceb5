"""Causal tracing: fast equals the reference loop, scores mean what they should, on the toy model (`fast` equal
to `naive` on every family: tests/test_conformance.py)."""

import json

import numpy as np
import pytest
import torch

from editkit.errors import EditkitError
from editkit.locate.plots import plot_trace
from editkit.locate.tracing import TraceResult, draw_noise, noise_scale, trace
from editkit.models import adapter_for
from editkit.tokens import encode
from tests.conftest import tiny_model


@pytest.fixture(scope="module")
def toy_facts(toy_world):
    """Three toy facts (different relations) as (prompt, subject, object)."""
    out = []
    for rid in ("P1303", "P17", "P103"):
        f = next(f for f in toy_world.facts if f.relation_id == rid)
        out.append((toy_world.relations[rid]["train_templates"][0].format(f.subject), f.subject, f.object))
    return out


def test_fast_equals_naive_on_toy_facts(toy, toy_facts):
    model, tok, adapter = toy
    for prompt, subject, _ in toy_facts[:2]:
        kw = dict(samples=4, window=3, noise=0.3)
        naive = trace(model, tok, adapter, prompt, subject, method="naive", **kw)
        fast = trace(model, tok, adapter, prompt, subject, method="fast", **kw)
        assert naive.answer_id == fast.answer_id
        assert abs(naive.corrupted_score - fast.corrupted_score) < 1e-5
        for kind in ("hidden", "mlp", "attn"):
            assert naive.scores[kind].shape == (len(naive.tokens), adapter.n_layers)
            np.testing.assert_allclose(fast.scores[kind], naive.scores[kind], atol=1e-5, rtol=0)


def test_severed_paths_fast_equals_naive(toy, toy_facts):
    model, tok, adapter = toy
    prompt, subject, _ = toy_facts[0]
    for sever in ("mlp", "attn"):
        kw = dict(samples=3, noise=0.3, kinds=["hidden"], sever=sever)
        naive = trace(model, tok, adapter, prompt, subject, method="naive", **kw)
        fast = trace(model, tok, adapter, prompt, subject, **kw)
        np.testing.assert_allclose(fast.scores["hidden"], naive.scores["hidden"], atol=1e-5, rtol=0)


def test_scores_mean_what_they_should(toy, toy_facts):
    model, tok, adapter = toy
    for prompt, subject, obj in toy_facts:
        r = trace(model, tok, adapter, prompt, subject, samples=10)
        assert obj.startswith(r.answer.strip())  # default answer: the clean top-1, the true object
        assert r.clean_score > 0.5 and r.corrupted_score < 0.5 * r.clean_score  # noise destroys the fact
        hidden, (b, e) = r.scores["hidden"], r.subject_range
        # Restoring the last token's final state restores the clean output exactly; the final states of
        # the other tokens, and any state of a token before the subject (causal attention), change nothing.
        assert hidden[-1, -1] == pytest.approx(r.clean_score, abs=1e-5)
        np.testing.assert_allclose(hidden[:-1, -1], r.corrupted_score, atol=1e-5)
        np.testing.assert_allclose(hidden[:b], r.corrupted_score, atol=1e-5)
        # Early states of the subject's tokens carry the fact: restoring one of them brings some of it back.
        assert hidden[b:e, : adapter.n_layers // 2].max() > r.corrupted_score + 0.03


def test_attribution_tracks_exact_scores(toy, toy_facts):
    model, tok, adapter = toy
    prompt, subject, _ = toy_facts[0]
    exact = trace(model, tok, adapter, prompt, subject, samples=5)
    approx = trace(model, tok, adapter, prompt, subject, samples=5, method="attribution")
    assert approx.corrupted_score == pytest.approx(exact.corrupted_score, abs=1e-5)
    # A first-order approximation: close for MLP outputs, looser for hidden states and attention (measured on
    # this fact: hidden 0.47, mlp 0.96, attn 0.38; experiments/README.md has the benchmark's figures).
    for kind, bound in (("hidden", 0.3), ("mlp", 0.8), ("attn", 0.2)):
        r = np.corrcoef(approx.scores[kind].ravel(), exact.scores[kind].ravel())[0, 1]
        assert r > bound, (kind, r)


def test_target_and_save_load_roundtrip(toy, toy_facts, tmp_path):
    model, tok, adapter = toy
    prompt, subject, obj = toy_facts[0]
    r = trace(model, tok, adapter, prompt, subject, target=obj, kinds=["mlp"], samples=2, noise="u0.5")
    r.save(tmp_path / "t.npz")
    back = TraceResult.load(tmp_path / "t.npz")
    assert back.tokens == r.tokens and back.subject_range == r.subject_range and back.noise == 0.5
    np.testing.assert_array_equal(back.scores["mlp"], r.scores["mlp"])
    data = json.loads(json.dumps(r.to_json()))
    assert set(data) == {
        "tokens",
        "subject_range",
        "answer",
        "clean_score",
        "corrupted_score",
        "noise",
        "window",
        "scores",
    }
    assert len(data["scores"]["mlp"]) == len(r.tokens) and len(data["scores"]["mlp"][0]) == adapter.n_layers
    png = plot_trace(r, tmp_path / "t.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_noise_is_drawn_as_the_reference_draws_it(toy):
    model, tok, adapter = toy
    n = draw_noise(3, 2, 8, 0.25, False, seed=1)
    assert n.dtype == torch.float64
    np.testing.assert_array_equal(n.numpy(), 0.25 * np.random.RandomState(1).randn(3, 2, 8))
    scale, uniform = noise_scale(model, tok, adapter, "s3", ["Tiboth Steleil"])
    half, _ = noise_scale(model, tok, adapter, "s1.5", ["Tiboth Steleil"])
    assert scale == pytest.approx(2 * half) and not uniform
    assert noise_scale(model, tok, adapter, "0.1", []) == (0.1, False)
    with pytest.raises(EditkitError, match="unknown noise 'loud'"):
        noise_scale(model, tok, adapter, "loud", [])


@pytest.mark.parametrize("family", ["gemma", "gemma3_text"])
def test_s3_noise_is_measured_where_it_is_added(family, toy):
    """Gemma's embedding module multiplies by sqrt(width): s3 is 3 std of that output, the tensor the noise
    is added to, not of the raw embedding table."""
    tok = toy[1]
    model = tiny_model(family)
    model.resize_token_embeddings(len(tok))
    adapter = adapter_for(model)
    ids = encode(tok, "Arvel Republic")
    scaled = model.get_input_embeddings().weight[ids].detach() * adapter.hidden_size**0.5
    scale, _ = noise_scale(model, tok, adapter, "s3", ["Arvel Republic"])
    assert scale == pytest.approx(3 * scaled.std().item(), rel=1e-5)


@pytest.mark.parametrize(
    "prompt,subject,target,message",
    [
        ("The Arvel Republic is ruled from", "Paris", None, "subject 'Paris' not found in prompt"),
        ("The Arvel Republic is ruled from", "", None, "subject is empty"),
        ("The Arvel Republic is ruled from", "Arvel Republic", "  ", "target is empty"),
    ],
)
def test_bad_input_is_a_clear_error(toy, prompt, subject, target, message):
    with pytest.raises(EditkitError, match=message):
        trace(*toy, prompt, subject, target=target, samples=1)
