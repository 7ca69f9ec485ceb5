"""The target optimisation (v* / z): a batch of requests gives what each request gets alone, including requests
that converge and leave the batch at different steps, and ROME's ΔW is the same on both paths. (The cached path
equals the reference path on every family: tests/test_conformance.py.)"""

import math

import pytest
import torch

from editkit.edit import Stats
from editkit.edit.common import context_prefixes
from editkit.edit.methods.rome import rome_key, rome_update
from editkit.edit.target import _stop, optimise_targets
from editkit.models import adapter_for
from editkit.requests import EditRequest
from tests.conftest import tiny_model
from tests.edit_fixtures import TINY_REQUEST, tiny_corpus, tiny_hparams, word_tokenizer

REQUESTS = [
    EditRequest(**TINY_REQUEST),
    EditRequest("we saw {}", "Ann Lee", "harp"),
    EditRequest("I saw {}", "Ann Lee", "Rome"),
    EditRequest("the cat of {}", "Bob Smith", "violin"),
]


@pytest.fixture(scope="module")
def tok():
    return word_tokenizer()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def _hp(steps: int = 12):
    hp = tiny_hparams("memit", "unused")
    hp.v_num_grad_steps = steps
    return hp


@pytest.mark.parametrize("kind,layer", [("mlp_out", 0), ("block", 1)])
def test_batch_equals_one_at_a_time_with_early_stops(kind, layer, tok):
    model = tiny_model("llama")
    with torch.no_grad():  # sharper logits than a random init's, so that some requests can converge
        model.get_output_embeddings().weight.mul_(30)
    adapter = adapter_for(model)
    hp = _hp(steps=60)
    prefixes = context_prefixes(model, tok, hp.context_templates, hp.seed)
    module = adapter.name(kind, layer)
    batched = optimise_targets(model, tok, adapter, module, REQUESTS, prefixes, hp)
    alone = [optimise_targets(model, tok, adapter, module, [r], prefixes, hp)[0] for r in REQUESTS]
    steps = [t.steps for t in alone]
    assert len(set(steps)) > 1 and min(steps) < hp.v_num_grad_steps - 1  # some stop early, at different steps
    assert [t.steps for t in batched] == steps
    for b, a in zip(batched, alone, strict=True):
        assert _rel(b.delta, a.delta) <= 1e-5


def test_rome_delta_w_cached_equals_reference(tok, tmp_path):
    model = tiny_model("gpt_neox")
    adapter = adapter_for(model)
    hp = tiny_hparams("rome", tiny_corpus(tmp_path / "corpus.txt"))
    stats = Stats(model, tok, adapter, hp.mom2_corpus, 3000, cache_dir=tmp_path)
    prefixes = context_prefixes(model, tok, hp.context_templates, hp.seed)
    request, layer = REQUESTS[0], 0
    u, k_bar, out_bar = rome_key(model, tok, adapter, request, hp, stats, layer, prefixes)
    module = adapter.name("mlp_out", layer)
    dW = []
    for cached in (True, False):
        (target,) = optimise_targets(model, tok, adapter, module, [request], prefixes, hp, cached=cached)
        dW.append(rome_update(model, tok, adapter, request, hp, layer, u, target.value, (k_bar, out_bar)).matrix())
    assert dW[1].norm() > 0
    assert _rel(dW[0], dW[1]) <= 1e-5


def test_float64_model_optimises_in_float64_and_paths_agree_to_rounding(tok):
    """A float64 model keeps its targets in float64; there the cached and reference paths agree far below the
    float32 criterion even over many steps at a large lr (where float32 rounding would be amplified)."""
    model = tiny_model("llama").double()
    adapter = adapter_for(model)
    hp = _hp(steps=40)
    hp.v_lr = 2.0
    prefixes = context_prefixes(model, tok, hp.context_templates, hp.seed)
    module = adapter.name("mlp_out", 0)
    (fast,) = optimise_targets(model, tok, adapter, module, REQUESTS[:1], prefixes, hp)
    (ref,) = optimise_targets(model, tok, adapter, module, REQUESTS[:1], prefixes, hp, cached=False)
    assert fast.delta.dtype == ref.delta.dtype == torch.float64
    assert ref.steps == fast.steps == hp.v_num_grad_steps - 1
    assert _rel(fast.delta, ref.delta) <= 1e-10


def test_stop_rules():
    hp = _hp()
    assert _stop([3.0, 0.04], 0.01, hp, last=False) == "loss"
    assert _stop([3.0, 1.0], 0.01, hp, last=False) is None  # no probability or plateau stop by default
    assert _stop([3.0, 1.0], 0.01, hp, last=True) == "steps"
    hp.v_stop_prob = 0.9
    assert _stop([3.0, 1.0], 0.1, hp, last=False) == "prob"  # exp(-0.1) = 0.905
    assert _stop([3.0, 1.0], 0.11, hp, last=False) is None  # exp(-0.11) = 0.896
    hp.v_plateau_steps, hp.v_plateau_tol = 3, 0.02
    flat = [5.0, 4.0, 3.0, 2.99, 2.98, 2.97]  # best of the last 3 is 1% below the best before
    assert _stop(flat, 1.0, hp, last=False) == "plateau"
    assert _stop(flat[:-1] + [2.9], 1.0, hp, last=False) is None  # 3.3% below
    assert _stop(flat[:3], 1.0, hp, last=False) is None  # not yet a window and something before it


def test_probability_and_plateau_stops_batch_equals_alone(tok):
    model = tiny_model("llama")
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(30)
    adapter = adapter_for(model)
    hp = _hp(steps=60)
    prefixes = context_prefixes(model, tok, hp.context_templates, hp.seed)
    module = adapter.name("mlp_out", 0)
    full = [optimise_targets(model, tok, adapter, module, [r], prefixes, hp)[0] for r in REQUESTS]
    hp.v_stop_prob, hp.v_plateau_steps, hp.v_plateau_tol = 0.9, 5, 0.1
    alone = [optimise_targets(model, tok, adapter, module, [r], prefixes, hp)[0] for r in REQUESTS]
    batched = optimise_targets(model, tok, adapter, module, REQUESTS, prefixes, hp)
    assert {"prob", "plateau"} <= {t.stop for t in alone}
    for a, f in zip(alone, full, strict=True):
        assert a.steps <= f.steps
        if a.stop == "prob":
            assert math.exp(-a.nll) >= 0.9 and a.steps < f.steps
    assert [(t.steps, t.stop) for t in batched] == [(t.steps, t.stop) for t in alone]
    for b, a in zip(batched, alone, strict=True):
        assert _rel(b.delta, a.delta) <= 1e-5


def test_stop_hparams_bounds():
    from editkit.edit.hparams import build
    from editkit.errors import EditkitError

    with pytest.raises(EditkitError, match="v_stop_prob=1.5 must be <= 1"):
        build("rome", {"v_stop_prob": 1.5})
    with pytest.raises(EditkitError, match="v_plateau_steps=-1 must be >= 0"):
        build("memit", {"v_plateau_steps": -1})
    assert build("memit", {"v_stop_prob": 0.9}).v_stop_prob == 0.9
