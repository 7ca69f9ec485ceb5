"""Conformance suite, in the style of scikit-learn's `parametrize_with_checks`: every check below runs on every
registered family (editkit.models.families, each on its tiny random config) and every registered edit method
(editkit.edit.registry) on every family, so a new family or method is tested without writing a test.

Family checks: the adapter's paths resolve, weights come out `[out, in]`, `Adapter.logits` and the final-norm
gain are the model's own, every hooked module is read and patched exactly, the `fast` causal trace equals the
`naive` loop, the cached v* optimisation equals the reference path, and the model loads from disk through the
CLI. Method checks: the shipped hparams files load, and the method flips a fact on the tiny model and reverts
bit for bit (apply after revert gives the edited weights back, bit for bit too); a method that normalises over
its batch (UltraEdit) edits the fact among TINY_COMPANIONS."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from editkit.cli import app
from editkit.edit import METHODS, EditResult, Stats, edit, load_hparams, needs_stats
from editkit.edit.common import context_prefixes
from editkit.edit.hparams import HPARAMS_DIR, read_file
from editkit.edit.target import optimise_targets
from editkit.hooks import Trace
from editkit.locate.tracing import trace
from editkit.models import BLOCK_KINDS, adapter_for, get_module, next_token_probs, weight_out_in
from editkit.models.families import FAMILIES
from editkit.requests import EditRequest
from tests.conftest import tiny_model
from tests.edit_fixtures import TINY_COMPANIONS, TINY_REQUEST, tiny_corpus, tiny_hparams, word_tokenizer

IDS = torch.tensor([[5, 17, 42, 9, 77, 3], [1, 2, 3, 4, 5, 6]])


@pytest.fixture(scope="module")
def ctx(tmp_path_factory, toy):
    """What the checks share: the word-level tokenizer and corpus of the edit fixtures, the toy tokenizer."""
    root = tmp_path_factory.mktemp("conformance")
    return SimpleNamespace(tok=word_tokenizer(), corpus=tiny_corpus(root / "corpus.txt"), toy_tok=toy[1], root=root)


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _hook_count(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def parametrize_with_checks(subjects, checks):
    """Parametrise a test over every (subject, check) pair: a subject is a name or a tuple of names (passed to
    the check as its first arguments), ids read `<subject>-<check>`."""
    pairs = [((s if isinstance(s, tuple) else (s,)), c) for s in subjects for c in checks]
    ids = [f"{'-'.join(s)}-{c.__name__.removeprefix('check_')}" for s, c in pairs]
    return pytest.mark.parametrize("subject, check", pairs, ids=ids)


# ---------------------------------------------------------------------------------------------- family checks


def check_adapter_paths_resolve(family: str, ctx) -> None:
    model = tiny_model(family)
    a = adapter_for(model)
    assert a.family == family and a.n_layers == 2 and a.hidden_size == 32
    assert get_module(model, a.embed).weight.shape[-1] == 32
    assert len(get_module(model, a.blocks)) == 2
    assert get_module(model, a.unembed).weight.shape == (128, 32)
    for kind in BLOCK_KINDS:
        names = a.names(kind)
        assert len(names) == 2 and len(set(names)) == 2 and all(get_module(model, n) is not None for n in names)
    assert a.name("mlp_out", -1) == a.name("mlp_out", 1)


def check_weights_are_out_in(family: str, ctx) -> None:
    """mlp_out maps the MLP width (64) to the model width, for Linear and Conv1D alike; mlp_in reads the model
    width and writes the MLP width, or a multiple of it where the gate and up projections are fused (Phi-3)."""
    model = tiny_model(family)
    a = adapter_for(model)
    w_out = a.mlp_out_weight(model, 0)
    w_in = weight_out_in(get_module(model, a.name("mlp_in", 0)))
    assert w_out.shape == (32, 64) and w_in.shape[1] == 32 and w_in.shape[0] % 64 == 0
    assert weight_out_in(get_module(model, a.name("attn_out", 0))).shape[0] == 32
    # The [out, in] weight is the module's own map: W @ k reproduces the module's output (minus its bias).
    module = get_module(model, a.name("mlp_out", 0))
    k = torch.randn(3, 64)
    bias = module.bias if module.bias is not None else 0
    torch.testing.assert_close(module(k) - bias, k @ w_out.T)
    with torch.no_grad():  # ... and it is a view: writing through it changes the model
        w_out[0, 0] += 1.0
    assert torch.equal(a.mlp_out_weight(model, 0), w_out)


def check_logits_are_the_models(family: str, ctx) -> None:
    """`Adapter.logits` of the last block's output is the model's own output, soft-cap included; the tiny
    soft-capped configs cap hard enough that leaving the cap out would show."""
    model = tiny_model(family)
    a = adapter_for(model)
    with Trace(model, a.name("block", -1)) as tr:
        logits = model(input_ids=torch.arange(12).view(1, -1)).logits
    h = tr[a.name("block", -1)].output
    torch.testing.assert_close(a.logits(model, h), logits)
    assert a.logit_softcap == getattr(model.config, "final_logit_softcapping", None)
    if a.logit_softcap:
        uncapped = get_module(model, a.unembed)(get_module(model, a.final_norm)(h))
        assert (uncapped - logits).abs().max() > 0.01


def check_final_norm_gain(family: str, ctx) -> None:
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


@torch.no_grad()
def check_hooks_read_and_patch(family: str, ctx) -> None:
    """Every hooked module: patching its output with the recorded one is bit-identical, with zeros it changes
    the logits (the record is what the module produced, before the edit); mlp_out's input (ROME's key) is read
    and patched the same way; no hook is left behind."""
    model = tiny_model(family)
    a = adapter_for(model)
    names = [n for kind in BLOCK_KINDS for n in a.names(kind)]
    clean = model(IDS).logits
    with Trace(model, names, clone=True) as rec:
        model(IDS)
    for name in names:
        assert rec[name].output is not None and rec[name].output.shape[:2] == IDS.shape, name
        with Trace(model, name, edit_output=lambda out, n: rec[n].output.clone()):
            assert torch.equal(model(IDS).logits, clean), name
        with Trace(model, name, edit_output=lambda out, n: torch.zeros_like(out)) as tr:
            assert not torch.allclose(model(IDS).logits, clean), name
        assert tr[name].output.abs().sum() > 0
    name = a.name("mlp_out", 1)
    with Trace(model, name, retain_input=True) as tr:
        model(IDS)
    k = tr[name].input
    assert k.shape == (2, 6, 64)
    with Trace(model, name, edit_input=lambda x, n: k.clone()):
        assert torch.equal(model(IDS).logits, clean)
    with Trace(model, name, edit_input=lambda x, n: torch.zeros_like(x)):
        assert not torch.allclose(model(IDS).logits, clean)
    assert _hook_count(model) == 0


def check_fast_trace_equals_naive(family: str, ctx) -> None:
    model = tiny_model(family)
    model.resize_token_embeddings(len(ctx.toy_tok))
    adapter = adapter_for(model)
    kw = dict(samples=2, window=2, noise=0.5)
    args = (model, ctx.toy_tok, adapter, "The capital of the Arvel Republic is", "Arvel Republic")
    naive, fast = trace(*args, method="naive", **kw), trace(*args, **kw)
    for kind in naive.scores:
        np.testing.assert_allclose(fast.scores[kind], naive.scores[kind], atol=1e-6, rtol=0)


def check_cached_target_equals_reference(family: str, ctx) -> None:
    """v* / z: the cached path (blocks below the edited module run once) gives the reference path's δ, at an MLP
    output and at the first and last block, for two requests optimised in one batch."""
    model = tiny_model(family)
    adapter = adapter_for(model)
    hp = tiny_hparams("memit", "unused")
    requests = [EditRequest(**TINY_REQUEST), EditRequest("we saw {}", "Ann Lee", "harp")]
    prefixes = context_prefixes(model, ctx.tok, hp.context_templates, hp.seed)
    for module in (adapter.name("mlp_out", 0), adapter.name("block", 0), adapter.name("block", -1)):
        fast = optimise_targets(model, ctx.tok, adapter, module, requests, prefixes, hp)
        for request, got in zip(requests, fast, strict=True):
            (ref,) = optimise_targets(model, ctx.tok, adapter, module, [request], prefixes, hp, cached=False)
            assert got.steps == ref.steps and torch.equal(got.init, ref.init), module
            assert ref.delta.norm() > 0.1 * ref.init.norm(), module  # the optimisation moved
            assert ((got.delta - ref.delta).norm() / ref.delta.norm()).item() <= 1e-5, module
            assert got.nll == pytest.approx(ref.nll, rel=1e-4), module


def check_loads_from_disk(family: str, ctx) -> None:
    """load_model's real path (from_pretrained on a directory, with the toy tokenizer), checked via `info`."""
    path = ctx.root / f"disk-{family}"
    tiny_model(family).save_pretrained(path)
    ctx.toy_tok.save_pretrained(path)
    res = CliRunner().invoke(app, ["info", str(path), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["family"] == family and data["layers"] == 2


FAMILY_CHECKS = [
    check_adapter_paths_resolve,
    check_weights_are_out_in,
    check_logits_are_the_models,
    check_final_norm_gain,
    check_hooks_read_and_patch,
    check_fast_trace_equals_naive,
    check_cached_target_equals_reference,
    check_loads_from_disk,
]


@parametrize_with_checks(FAMILIES, FAMILY_CHECKS)
def test_family(subject, check, ctx):
    check(*subject, ctx)


# ---------------------------------------------------------------------------------------------- method checks


def check_shipped_hparams_load(method: str, ctx) -> None:
    """Every hparams file shipped for the method builds into its class, presets applied where it is silent."""
    files = sorted((HPARAMS_DIR / method).glob("*.yaml"))
    assert files, f"no shipped hparams under editkit/hparams/{method}/"
    for path in files:
        hp, given = load_hparams(method, file=path), read_file(path)
        assert isinstance(hp, METHODS[method].hparams)
        assert all(getattr(hp, k) == v for k, v in METHODS[method].presets.items() if k not in given), path


def check_flips_and_reverts_bit_for_bit(method: str, family: str, ctx) -> None:
    """The edit flips the fact; revert gives the original model back bit for bit, apply the edited one. A
    weight method changes weights; a side-memory method (GRACE, WISE) leaves every weight as it was, and its
    edited and reverted outputs are compared bit for bit instead; a context method (IKE) changes no weights
    and carries the new fact in its context (its effect is checked on the toy model, below)."""
    model = tiny_model(family)
    adapter, tok = adapter_for(model), ctx.tok
    changes = METHODS[method].changes
    hp = tiny_hparams(method, ctx.corpus)
    top = next_token_probs(model, tok, [TINY_REQUEST["prompt"].format(TINY_REQUEST["subject"])])[0].argmax()
    target = next(w for w in ("Paris", "London") if tok.convert_tokens_to_ids(w) != top)  # not predicted yet
    request = EditRequest(**{**TINY_REQUEST, "target_new": target})
    companions = [EditRequest(*c) for c in TINY_COMPANIONS.get(method, [])]
    new = tok.convert_tokens_to_ids(target)
    original = _state(model)
    probe = tok([request.text], return_tensors="pt")["input_ids"]  # a side memory acts on the edited prompt
    clean = model(probe).logits
    stats = (
        Stats(model, tok, adapter, ctx.corpus, 3000, cache_dir=ctx.root / "stats") if needs_stats(method, hp) else None
    )
    result = edit(model, tok, adapter, [request, *companions], method, hp, stats)
    assert result.method == method
    if changes == "context":
        assert result.context.endswith(f"New Fact: {request.text} {target}\nPrompt: ") and _hook_count(model) == 0
    else:
        assert next_token_probs(model, tok, [request.text])[0].argmax() == new
    edited, edited_logits = _state(model), model(probe).logits
    if changes == "weights":
        assert any(not torch.equal(edited[k], original[k]) for k in original)
    else:  # nothing is written into the base weights
        assert all(torch.equal(edited[k], original[k]) for k in original)
    assert (changes == "context") == torch.equal(edited_logits, clean)

    out = ctx.root / f"edit-{method}-{family}"
    result.save(out)
    loaded = EditResult.load(out)
    assert loaded.context == result.context
    loaded.revert(model)
    assert all(torch.equal(v, original[k]) for k, v in model.state_dict().items())
    assert torch.equal(model(probe).logits, clean) and _hook_count(model) == 0
    loaded.apply(model)
    assert all(torch.equal(v, edited[k]) for k, v in model.state_dict().items())
    assert torch.equal(model(probe).logits, edited_logits)
    loaded.revert(model)


METHOD_CHECKS = [check_shipped_hparams_load]
METHOD_FAMILY_CHECKS = [check_flips_and_reverts_bit_for_bit]


@parametrize_with_checks(METHODS, METHOD_CHECKS)
def test_method(subject, check, ctx):
    check(*subject, ctx)


@parametrize_with_checks([(m, f) for m in METHODS for f in FAMILIES], METHOD_FAMILY_CHECKS)
def test_method_on_family(subject, check, ctx):
    check(*subject, ctx)


@pytest.mark.parametrize("method", [m for m, spec in METHODS.items() if spec.changes == "context"])
def test_context_method_moves_the_toy_model(method, toy):
    """A context method cannot flip a random model's facts: on the toy model, with its shipped hparams, the
    context raises the new object's probability on most of the first 10 toy records (ES is in
    experiments/README.md)."""
    from editkit.evaluate.datasets import load_dataset
    from editkit.toy import toy_path

    model, tok, adapter = toy
    hp = load_hparams(method, "toy")
    gains = []
    for record in load_dataset("toy", toy_path("toy", "counterfact"), 10):
        request = record.request()
        result = edit(model, tok, adapter, [request], method, hp, None)
        new = tok(" " + request.target_new)["input_ids"][0]
        bare, within = next_token_probs(model, tok, [request.text, result.context + request.text])[:, new]
        gains.append(float(within / bare))
    assert sum(g > 1 for g in gains) >= 7, gains
