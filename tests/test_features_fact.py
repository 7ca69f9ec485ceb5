"""Features of a fact on the toy model with the shipped SAE: attribution verified by ablation, steering,
feature ablation written into the weights, and linear probes."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.numpy import load_file
from typer.testing import CliRunner

from editkit.cli import app
from editkit.edit.result import EditResult
from editkit.errors import EditkitError
from editkit.features import SAE, resolve_hook
from editkit.features.attribution import attribute_features
from editkit.features.feature_edit import ablate_feature
from editkit.features.hookpoints import hook_value, trace_hook
from editkit.features.probes import run_probe
from editkit.features.steering import generate, steer, steering_edit
from editkit.tokens import encode
from tests.features_fixtures import EDIT_HOOK, toy_sae_dir


@pytest.fixture(scope="module")
def sae():
    return SAE.load(toy_sae_dir())


@pytest.fixture(scope="module")
def fact_prompt(toy_world):
    """(prompt, subject, true object, counterfactual subject with another object) of the toy world."""
    fact = next(f for f in toy_world.facts if f.relation_id == "P1303" and not f.paraphrase_seen)
    other = next(f for f in toy_world.facts if f.relation_id == "P1303" and f.object != fact.object)
    return f"{fact.subject} plays the", fact.subject, fact.object, other.subject


def other_object(fact_prompt) -> str:
    return "harp" if fact_prompt[2] != "harp" else "piano"


def _hook_acts(model, tok, hook, text):
    with torch.no_grad(), trace_hook(model, hook) as tr:
        model(input_ids=torch.tensor([encode(tok, text)]))
    return hook_value(tr, hook)[0]


def test_attribution_top_features_are_verified_by_ablation(toy, sae, fact_prompt):
    model, tok, adapter = toy
    prompt, subject, obj, other = fact_prompt
    res = attribute_features(
        model, tok, adapter, sae, prompt, obj, subject=subject, counterfactual=prompt.replace(subject, other), top=8
    )
    assert res.target == obj and res.metric > -0.5  # the toy model knows the fact
    assert res.features and all(s.activation > 0 and s.ablation is not None for s in res.features)
    assert all(s.patch is not None for s in res.features)
    best = max(res.features, key=lambda s: s.attribution)
    assert best.attribution > 0 and best.ablation < 0  # removing the most helpful feature hurts the answer
    agree = sum((s.attribution > 0) == (s.ablation < 0) for s in res.features if abs(s.ablation) > 0.05)
    assert agree >= 0.6 * sum(abs(s.ablation) > 0.05 for s in res.features)
    json.dumps(res.to_json())
    alt = attribute_features(model, tok, adapter, sae, prompt, obj, target_alt=other_object(fact_prompt), top=2)
    ids = torch.tensor([encode(tok, prompt)])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, -1]
    first = [tok(f" {w}")["input_ids"][0] for w in (obj, other_object(fact_prompt))]
    assert alt.metric == pytest.approx((logits[first[0]] - logits[first[1]]).item(), rel=1e-4)


def test_attribution_leaves_out_special_tokens_the_sae_never_saw(toy, sae, fact_prompt):
    """With a BOS prepended, position 0 is never a pick: its activations are not in the SAE's training data."""
    model, tok, adapter = toy
    prompt, _, obj, _ = fact_prompt
    with_bos = attribute_features(model, tok, adapter, sae, tok.bos_token + prompt, obj, top=200)
    assert with_bos.tokens[0] == tok.bos_token and with_bos.features
    assert all(s.position > 0 for s in with_bos.features)
    everywhere = sae.encode(_hook_acts(model, tok, resolve_hook(adapter, sae.cfg.hook_name), tok.bos_token + prompt))
    assert (everywhere[0] > 0).any()  # the SAE does fire at the BOS: leaving it out is the point


def test_steering_with_zero_is_a_no_op_and_large_steering_changes_text(toy, sae, fact_prompt):
    model, tok, adapter = toy
    prompt = fact_prompt[0]
    hook = resolve_hook(adapter, sae.cfg.hook_name)
    ids = torch.tensor([encode(tok, prompt)])
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        with trace_hook(model, hook, edit=steering_edit(sae, 5, add=0.0), retain=False):
            steered = model(input_ids=ids).logits
    assert torch.equal(plain, steered)
    x = _hook_acts(model, tok, hook, prompt)
    feature = int(sae.encode(x)[-1].argmax())
    res = steer(model, tok, adapter, sae, prompt, feature, add=-3 * x[-1].norm().item(), max_new_tokens=5)
    assert res.baseline == generate(model, tok, prompt, 5) and res.steered != res.baseline


def test_clamp_sets_the_feature(toy, sae, fact_prompt):
    model, tok, adapter = toy
    prompt = fact_prompt[0]
    hook = resolve_hook(adapter, sae.cfg.hook_name)
    x = _hook_acts(model, tok, hook, prompt)
    feature = int(sae.encode(x)[-1].argmax())
    value = 2 * sae.encode(x)[-1, feature].item()
    clamped = steering_edit(sae, feature, clamp=value)(x[None])[0]
    f = sae.encode(x)[:, feature]
    # the SAE's reconstruction with f_i set to the value, plus the untouched error term
    assert torch.allclose(clamped - x, (value - f)[:, None] * sae.W_dec[feature], atol=1e-3)
    assert (sae.encode(clamped)[:, feature] > f).all()
    with pytest.raises(EditkitError, match="exactly one of --clamp"):
        steering_edit(sae, feature)
    with pytest.raises(EditkitError, match=f"feature {sae.cfg.d_sae} out of range"):
        steering_edit(sae, sae.cfg.d_sae, add=1.0)


def test_steering_leaves_special_tokens_alone(toy, sae):
    """The SAE never saw a special token in training: steering skips them, as attribution and evaluation do.
    A prompt that is only the end-of-text token is not steered at its one position, so the first greedy token
    is the unsteered one; the token generated after it is steered."""
    model, tok, adapter = toy
    hook = resolve_hook(adapter, sae.cfg.hook_name)
    special = tok.decode(tok.all_special_ids[:1])
    x = _hook_acts(model, tok, hook, "Tiboth Feigar plays the harp.")
    edit = steering_edit(sae, 3, add=-5 * x.norm(dim=-1).max().item())
    trained = torch.ones(1, len(x), dtype=torch.bool)
    trained[0, 0] = False
    out = edit(x[None], trained)[0]
    assert torch.equal(out[0], x[0]) and not torch.equal(out[1:], x[1:])
    with torch.no_grad(), trace_hook(model, hook, edit=edit, retain=False):  # unmasked, position 0 steered
        moved = model(input_ids=torch.tensor([encode(tok, special)])).logits[0, -1].argmax()
    res = steer(model, tok, adapter, sae, special, 3, add=-5 * x.norm(dim=-1).max().item(), max_new_tokens=2)
    base_ids, steered_ids = (tok(t)["input_ids"] for t in (res.baseline, res.steered))
    assert int(moved) != base_ids[0]  # the steering would change the first answer if applied at the BOS
    assert steered_ids[0] == base_ids[0] and res.steered != res.baseline


def test_clamp_to_a_multiple_of_the_corpus_maximum_is_computed_once_and_cached(toy, sae, fact_prompt, tmp_path):
    from editkit.corpus import open_corpus
    from editkit.features.steering import max_activations
    from editkit.features.store import keep_mask, tokenize

    model, tok, adapter = toy
    corpus = open_corpus("toy")
    peak = max_activations(model, tok, adapter, sae, corpus, 64, cache_dir=tmp_path)
    # against the activations of each text alone, BOS and padding left out
    hook = resolve_hook(adapter, sae.cfg.hook_name)
    from itertools import islice

    expect = torch.zeros(sae.cfg.d_sae)
    for text in islice(corpus.texts(), 64):
        ids, mask = tokenize(tok, [text], sae.cfg.context_size)
        with torch.no_grad(), trace_hook(model, hook, stop=True) as tr:
            model(input_ids=ids)
        keep = keep_mask(ids, mask, tok, skip_bos=True)[0]
        expect = torch.maximum(expect, (sae.encode(hook_value(tr, hook))[0] * keep[:, None]).amax(0))
    assert torch.allclose(peak, expect, rtol=1e-4, atol=1e-4) and (peak > 0).sum() > 0.5 * sae.cfg.d_sae
    cached = list((tmp_path / "feature-max").iterdir())
    assert len(cached) == 1
    assert torch.equal(max_activations(model, tok, adapter, sae, corpus, 64, cache_dir=tmp_path), peak)
    assert len(list((tmp_path / "feature-max").iterdir())) == 1


def test_feature_ablation_in_the_weights_removes_the_feature(toy, sae, fact_prompt, tmp_path):
    model, tok, adapter = toy
    prompt = fact_prompt[0]
    hook = resolve_hook(adapter, sae.cfg.hook_name)
    before = _hook_acts(model, tok, hook, prompt)
    f_before = sae.encode(before)
    feature = int(f_before.max(0).values.argmax())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    result = ablate_feature(model, adapter, sae, feature)
    try:
        after = _hook_acts(model, tok, hook, prompt)
        change = after - before
        d = sae.direction(feature)
        # the change the SAE predicts: only along the feature's direction (this layer writes last to the hook)
        assert torch.allclose(change, (change @ d)[:, None] * d, atol=1e-3 * before.norm(dim=1).max().item())
        assert (sae.encode(after)[:, feature] < f_before[:, feature]).any()
        result.save(tmp_path / "edit")
    finally:
        result.revert(model)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    loaded = EditResult.load(tmp_path / "edit")
    loaded.apply(model)
    assert torch.equal(_hook_acts(model, tok, hook, prompt), after)
    loaded.revert(model)


def test_probe_beats_shuffled_control(toy, tmp_path):
    model, tok, adapter = toy
    # tracing finds the object moved to the last token in the upper layers; at layer 4 it is linearly decodable
    res = run_probe(model, tok, adapter, "toy", "object", position="last", layers="1,4", folds=3)
    acc, ctl = dict(zip(res.layers, res.accuracy, strict=True)), dict(zip(res.layers, res.control, strict=True))
    assert acc[4] > ctl[4] + 0.5 and acc[4] > res.majority + 0.5
    assert acc[4] > acc[1]
    out = res.save(tmp_path / "probe")
    coefs = load_file(str(out / "probes.safetensors"))
    assert coefs["layer.4.coef"].shape == (len(res.classes), adapter.hidden_size)
    assert (out / "accuracy.png").stat().st_size > 1000
    with pytest.raises(EditkitError, match="unknown position"):
        run_probe(model, tok, adapter, "toy", "object", position="first", layers="1")


def test_cli_features_attribute_steer_probe(fact_prompt, tmp_path):
    runner = CliRunner()
    prompt, subject, obj, _ = fact_prompt
    sae_dir = str(toy_sae_dir())
    res = runner.invoke(
        app, ["features", "attribute", "toy", sae_dir, "--prompt", prompt, "--subject", subject, "--top", "3", "--json"]
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["target"] == obj
    res = runner.invoke(app, ["steer", "toy", sae_dir, "--feature", "3", "--add", "0", "--prompt", "A", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["baseline"] == data["steered"]
    res = runner.invoke(app, ["steer", "toy", sae_dir, "--feature", "99999", "--add", "1", "--prompt", "A"])
    assert res.exit_code == 2 and "feature 99999 out of range" in res.output
    res = runner.invoke(app, ["probe", "toy", "toy", "--label", "nope", "--out", str(tmp_path / "p")])
    assert res.exit_code == 2 and "no 'prompt' or no label field 'nope'" in res.output


def test_feature_conditioned_rank_one_edit_flips_a_fact(toy, toy_world, fact_prompt):
    from editkit.features.feature_edit import feature_rank_one_edit
    from editkit.models import top_k
    from editkit.requests import EditRequest

    model, tok, adapter = toy
    prompt, subject, obj, other = fact_prompt
    new = next(f.object for f in toy_world.facts if f.subject == other and f.relation_id == "P1303")
    request = EditRequest("{} plays the", subject, new, obj)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    # At block 0, where the toy prompts read the subject's last token, 16 features of that SAE flip the fact
    # (at block 3, read by no prompt, no feature set up to 128 does).
    result = feature_rank_one_edit(model, tok, adapter, SAE.load(toy_sae_dir(EDIT_HOOK)), request, n_features=16)
    try:
        assert top_k(model, tok, prompt, 1)[0].token.strip() == new
        assert len(result.hparams["features"]) == 16 and 0 < result.hparams["scale"] <= 4
        assert result.modules == [adapter.name("mlp_out", 0)]
    finally:
        result.revert(model)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert top_k(model, tok, prompt, 1)[0].token.strip() == obj


def test_feature_inspection_contexts_and_logit_lens(toy, sae, tmp_path):
    from editkit.corpus import open_corpus
    from editkit.features.inspect import inspect_feature, write_html

    model, tok, adapter = toy
    texts = list(open_corpus("toy").texts())[:150]
    hook = resolve_hook(adapter, sae.cfg.hook_name)
    feature = int((sae.encode(_hook_acts(model, tok, hook, texts[0])) > 0).sum(0).argmax())  # one that fires
    report = inspect_feature(model, tok, adapter, sae, feature, texts, n=5)
    acts = [c.activation for c in report.contexts]
    assert len(acts) == 5 and acts == sorted(acts, reverse=True) and max(report.activations) == acts[0]
    best = report.contexts[0]
    text = next(t for t in texts if "".join(best.tokens) in t)
    x = _hook_acts(model, tok, hook, text)
    assert torch.isclose(sae.encode(x)[:, feature].max(), torch.tensor(best.activation), rtol=1e-4)
    assert len(report.promoted) == 10 and report.promoted[0][1] >= report.promoted[-1][1] > report.suppressed[0][1]
    write_html(report, tmp_path / "f.html")
    assert "<mark>" in (tmp_path / "f.html").read_text()
    res = CliRunner().invoke(app, ["features", "show", "toy", str(toy_sae_dir()), "100000"])
    assert res.exit_code == 2 and "feature 100000 out of range" in res.output


def test_cli_feature_edits_write_plain_checkpoints(toy, fact_prompt, toy_world, tmp_path):
    from transformers import AutoModelForCausalLM

    from editkit.models import top_k

    model, tok, _ = toy
    prompt, subject, obj, other = fact_prompt
    new = next(f.object for f in toy_world.facts if f.subject == other and f.relation_id == "P1303")
    runner, sae_dir, edit_sae = CliRunner(), str(toy_sae_dir()), str(toy_sae_dir(EDIT_HOOK))
    res = runner.invoke(
        app,
        ["features", "edit", "toy", edit_sae, "--prompt", "{} plays the", "--subject", subject, "--target-new", new,
         "--target-true", obj, "--out", str(tmp_path / "e"), "--save-checkpoint", str(tmp_path / "ck"), "--json"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["after"].strip() == new
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "ck").eval()  # no editkit, no hooks
    assert top_k(plain, tok, prompt, 1)[0].token.strip() == new
    EditResult.load(tmp_path / "e").revert(plain)
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), model.state_dict().values(), strict=True))
    res = runner.invoke(app, ["features", "ablate", "toy", sae_dir, "307", "--out", str(tmp_path / "a"), "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["modules"] == ["transformer.h.3.mlp.c_proj"]
    res = runner.invoke(
        app, ["features", "ablate", "toy", sae_dir, "307", "--writer", "x", "--out", str(tmp_path / "b")]
    )
    assert res.exit_code == 2 and "unknown writer 'x'" in res.output
