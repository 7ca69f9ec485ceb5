"""EMMET's equality constraint, UltraEdit's closed form and lifelong statistics, the PRUNE and RECT regularisers:
exact properties checked on small float64 cases and on the tiny random model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from editkit.edit import EditResult, Stats, edit
from editkit.edit.common import context_prefixes, group_weights, mean_keys
from editkit.edit.methods.emmet import emmet_solve
from editkit.edit.methods.ultraedit import merge, normalise, ultraedit_update
from editkit.edit.registry import get
from editkit.edit.regularise import prune, rect, regularise
from editkit.edit.result import Delta, weight
from editkit.models import adapter_for
from editkit.requests import EditRequest
from tests.conftest import tiny_model
from tests.edit_fixtures import TINY_COMPANIONS, TINY_REQUEST, tiny_corpus, tiny_hparams, word_tokenizer

TWO = [EditRequest(**TINY_REQUEST), EditRequest("we saw {}", "Ann Lee", "harp")]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("closedform")
    return word_tokenizer(), tiny_corpus(root / "corpus.txt"), root


def _stats(model, tok, corpus, root):
    return Stats(model, tok, adapter_for(model), corpus, 3000, cache_dir=root / "stats")


def _spd(n: int, g: torch.Generator) -> torch.Tensor:
    A = torch.randn(n, n, dtype=torch.float64, generator=g)
    return A @ A.T / n + 0.1 * torch.eye(n, dtype=torch.float64)


# ------------------------------------------------------------------------------------------------------ EMMET


def test_emmet_solve_meets_the_equality_constraint_exactly():
    """λ_E = 0: ΔW K = R to float64 round-off; λ_E > 0: ΔW K = R − λ_E R D⁻¹ exactly, D = Kᵀ C⁻¹ K + λ_E I."""
    g = torch.Generator().manual_seed(0)
    C, K, R = _spd(40, g), torch.randn(40, 6, dtype=torch.float64, generator=g), torch.randn(8, 6, dtype=torch.float64)
    A = torch.linalg.solve(C, K)
    dW = emmet_solve(A, K, R, 0.0)
    assert (dW @ K - R).abs().max() < 1e-10
    dW = emmet_solve(A, K, R, 0.1)
    D = K.T @ A + 0.1 * torch.eye(6, dtype=torch.float64)
    torch.testing.assert_close(dW @ K, R - 0.1 * R @ torch.linalg.inv(D), atol=1e-10, rtol=0)
    assert (dW @ K - R).abs().max() > 1e-4  # the regulariser does loosen the constraint


def test_emmet_batch_writes_each_key_its_value(env):
    """On the tiny model with λ_E = 0, after the edit the layer maps each request's averaged key to the value EMMET
    asked for: the mean mlp_out output over the prefixes equals `values` (measured: 1.6e-7 relative, float32 weights;
    the edit moved those outputs by about their own norm)."""
    tok, corpus, root = env
    model = tiny_model("gpt2")
    adapter = adapter_for(model)
    hp = dataclasses.replace(tiny_hparams("emmet", corpus), layers=[1], emmet_lambda=0.0)
    prefixes = context_prefixes(model, tok, hp.context_templates, hp.seed)
    _, out_before = mean_keys(model, tok, adapter, 1, TWO, prefixes, group_weights(hp.context_templates))
    result = edit(model, tok, adapter, TWO, "emmet", hp, _stats(model, tok, corpus, root))
    (delta,) = result.deltas
    _, out = mean_keys(model, tok, adapter, 1, TWO, prefixes, group_weights(hp.context_templates))
    gap = ((out - delta.values).norm(dim=1) / delta.values.norm(dim=1)).max()
    moved = ((out - out_before).norm(dim=1) / delta.values.norm(dim=1)).min()
    assert gap < 1e-4 and moved > 1e-2, (gap, moved)


# ------------------------------------------------------------------------------------------------------ UltraEdit


def test_ultraedit_update_equals_a_direct_float64_computation():
    """ΔW from normalised features and the ridge solve, against numpy: the per-coordinate mean / std over the rows
    and a least-squares solve of [K; I] W = [V; 0] (the same minimiser as (KᵀK + I)⁻¹KᵀV)."""
    g = torch.Generator().manual_seed(1)
    K, G = torch.randn(9, 5, dtype=torch.float64, generator=g), torch.randn(9, 3, dtype=torch.float64, generator=g)
    state = merge(None, torch.cat([K, G], 1))
    got = ultraedit_update(K, G, state, lr=0.3)
    z = np.concatenate([K.numpy(), G.numpy()], 1)
    eps = np.finfo(np.float32).eps
    z_hat = (z - z.mean(0)) / (z.std(0, ddof=1) + eps)
    V = -0.3 * (z_hat[:, :5] ** 2).sum(1, keepdims=True) * z_hat[:, 5:]
    W, *_ = np.linalg.lstsq(np.concatenate([K.numpy(), np.eye(5)]), np.concatenate([V, np.zeros((5, 3))]), rcond=None)
    np.testing.assert_allclose(got.numpy(), W.T, atol=1e-9, rtol=1e-6)


def test_ultraedit_running_statistics_merge_exactly():
    """Merging batches one after another gives the count, mean and sum of squares of all rows at once; std is
    numpy's ddof=1 one over everything seen (up to ε)."""
    g = torch.Generator().manual_seed(2)
    parts = [torch.randn(n, 4, dtype=torch.float64, generator=g) * (i + 1) + i for i, n in enumerate((1, 7, 3))]
    state = None
    for p in parts:
        state = merge(state, p)
    every = torch.cat(parts)
    torch.testing.assert_close(state, merge(None, every), atol=1e-12, rtol=1e-12)
    assert state[0, 0] == 11
    z_hat = normalise(every, state)
    torch.testing.assert_close(z_hat, (every - every.mean(0)) / (every.std(0) + 1.1920928955078125e-07))


def test_ultraedit_sequence_carries_its_statistics_in_the_chain(env):
    """A second batch continues from the statistics the first left in the EditResult (count grows by its rows);
    the whole chain reverts and re-applies bit for bit, and a lone first request is a clear error."""
    tok, corpus, _ = env
    model = tiny_model("llama")
    adapter = adapter_for(model)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    hp = tiny_hparams("ultraedit", corpus)
    batch = [EditRequest(**TINY_REQUEST)] + [EditRequest(*c) for c in TINY_COMPANIONS["ultraedit"]]
    first = edit(model, tok, adapter, batch[:4], "ultraedit", hp, None)
    n1 = [float(d.state[0, 0]) for d in first.deltas]
    result = get("ultraedit")(model, tok, adapter, batch[4:], hp, None, history=first)
    n2 = [float(d.state[0, 0]) for d in result.deltas[len(n1) :]]
    rows2 = sum(d.keys.shape[0] for d in result.deltas[len(n1) :])
    assert len(set(n1)) == 1 and n2 == [n1[0] + rows2] * len(n2)
    edited = {k: v.clone() for k, v in model.state_dict().items()}
    result.revert(model)
    assert all(torch.equal(v, original[k]) for k, v in model.state_dict().items())
    result.apply(model)
    assert all(torch.equal(v, edited[k]) for k, v in model.state_dict().items())
    with pytest.raises(Exception, match="at least two requests"):
        edit(tiny_model("llama"), tok, adapter, batch[:1], "ultraedit", dataclasses.replace(hp, layers=[1]), None)


# ------------------------------------------------------------------------------------------------------ RECT


def test_rect_keeps_exactly_the_fraction_with_largest_relative_change():
    g = torch.Generator().manual_seed(3)
    W, dW = torch.randn(20, 30, dtype=torch.float64, generator=g), torch.randn(20, 30, dtype=torch.float64, generator=g)
    kept = rect(dW, W, 0.25)
    mask = kept != 0
    assert int(mask.sum()) == 150
    assert torch.equal(kept[mask], dW[mask])
    change = dW.abs() / W.abs()
    assert change[mask].min() >= change[~mask].max()


def test_rect_off_is_the_same_delta_and_rect_one_is_bit_identical(env):
    """Off (the default) returns the very Delta the method computed; rect = 1 keeps every element, so a MEMIT
    edit with it writes the same bytes; rect = 0.3 keeps 30% of each layer's update."""
    tok, corpus, root = env
    hp = tiny_hparams("memit", corpus)
    assert hp.rect is None and hp.prune is None
    model = tiny_model("gpt2")
    d = Delta(adapter_for(model).name("mlp_out", 0), dense=torch.ones(32, 64))
    assert regularise(model, EditResult("memit", {}), d, hp) is d
    edited = {}
    for rect_value in (None, 1.0, 0.3):
        model = tiny_model("gpt2")
        run = dataclasses.replace(hp, rect=rect_value)
        result = edit(model, tok, adapter_for(model), TWO, "memit", run, _stats(model, tok, corpus, root))
        edited[rect_value] = [weight(model, m).clone() for m in result.modules]
        if rect_value == 0.3:
            assert all(int((d.dense != 0).sum()) == round(0.3 * d.dense.numel()) for d in result.deltas)
    assert all(torch.equal(a, b) for a, b in zip(edited[None], edited[1.0], strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(edited[None], edited[0.3], strict=True))


# ------------------------------------------------------------------------------------------------------ PRUNE


def test_prune_maps_large_singular_values_by_its_log():
    g = torch.Generator().manual_seed(4)
    W0 = torch.randn(12, 20, dtype=torch.float64, generator=g)
    top = torch.linalg.matrix_norm(W0, ord=2)
    acc = torch.randn(12, 20, dtype=torch.float64, generator=g)
    assert prune(acc * 0.01, W0, 1.2) is None  # nothing reaches σ_max(W0)
    S = torch.linalg.svdvals(acc * 10)
    got = torch.linalg.svdvals(prune(acc * 10, W0, 1.2))
    want = torch.where(S >= top, top + torch.log(S / top) / np.log(1.2), S)
    torch.testing.assert_close(got, want.sort(descending=True).values, atol=1e-9, rtol=1e-9)


def test_prune_bounds_the_condition_number_over_a_sequence(env):
    """Eight ROME edits in sequence at one layer of the tiny model: unrestrained, the accumulated edit's top singular
    value passes σ_max(W) and the edited matrix's condition number grows; with PRUNE (base 1.2) every singular value
    of the accumulated edit stays at most σ_max + log_1.2(σ_raw/σ_max) and the condition number stays lower
    (measured: σ_max(W) 0.13; accumulated edit's top σ 1026 -> 42; condition number 38844 -> 1661)."""
    tok, corpus, root = env
    names = ["Bob Smith", "Ann Lee", "the cat", "the mat", "the river", "the city", "a cat", "a mat"]
    targets = ["Paris", "harp", "piano", "violin"] * 2
    requests = [EditRequest("I met {}", s, t) for s, t in zip(names, targets, strict=True)]
    cond, acc_top = {}, {}
    for base in (None, 1.2):
        model = tiny_model("gpt2")
        hp = dataclasses.replace(tiny_hparams("rome", corpus), layers=[1], prune=base)
        result, stats = None, _stats(model, tok, corpus, root)
        for r in requests:
            result = get("rome")(model, tok, adapter_for(model), [r], hp, stats, history=result)
        (m,) = result.modules
        W, W0 = weight(model, m).detach().double(), result.original[m].double()
        s = torch.linalg.svdvals(W)
        cond[base], acc_top[base] = float(s[0] / s[-1]), float(torch.linalg.svdvals(W - W0)[0])
        top0 = float(torch.linalg.svdvals(W0)[0])
    assert acc_top[None] > top0  # the sequence does reach PRUNE's threshold
    assert acc_top[1.2] < acc_top[None] and acc_top[1.2] <= top0 + np.log(acc_top[None] / top0) / np.log(1.2) + 1e-4
    assert cond[1.2] < cond[None], cond
