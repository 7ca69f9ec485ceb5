"""Edits that are not weight deltas, on the toy model: GRACE's codebook rolls back one request at a time bit for
bit and leaves prompts outside every radius untouched; its checkpoint says plain transformers cannot load it
and editkit's loader restores the edited model; IKE's prompts carry the demonstrations, and the evaluation
scores every prompt behind the edit's context."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from editkit.edit import METHODS, EditResult, load_hparams
from editkit.edit.memory import attached
from editkit.edit.methods.grace import distances
from editkit.evaluate.datasets import load_dataset
from editkit.models import next_token_probs
from editkit.toy import toy_path

UNRELATED = "The weather in the spring was"


@pytest.fixture(scope="module")
def records():
    return load_dataset("toy", toy_path("toy", "counterfact"), 3)


def _logits(model, tok, texts: list[str]) -> list[torch.Tensor]:
    return [model(**tok(t, return_tensors="pt")).logits for t in texts]


def _snapshot(memory) -> tuple[dict, str]:
    return {k: v.clone() for k, v in memory.tensors.items()}, json.dumps(memory.meta)


@torch.no_grad()
def test_grace_rolls_back_one_request_at_a_time_bit_for_bit(toy, records):
    """Three requests (the third has the first's key and another target, so it splits the first's radius);
    after each rollback the codebook's tensors and the outputs are those after one request fewer, exactly;
    the last one detaches it."""
    model, tok, adapter = toy
    hp = load_hparams("grace", "toy")
    first = records[0].request()
    requests = [first, records[1].request(), dataclasses.replace(first, target_new=records[1].target_new)]
    probes = [r.text for r in requests[:2]] + [UNRELATED]
    states, outputs, result = [], [_logits(model, tok, probes)], None
    for r in requests:
        with torch.enable_grad():
            result = METHODS["grace"](model, tok, adapter, [r], hp, None, history=result)
        states.append(_snapshot(result.memories[0]))
        outputs.append(_logits(model, tok, probes))
    codebook = result.memories[0]
    assert codebook.tensors["keys"].shape[0] == 3 and int(codebook.tensors["undo_index"][-1]) == 0  # a split
    assert float(states[2][0]["radii"][0]) == 0.0 and float(states[1][0]["radii"][0]) == hp.eps
    assert (
        next_token_probs(model, tok, [requests[0].text])[0].argmax()
        == tok(" " + requests[0].target_new)["input_ids"][0]
    )
    for k in (2, 1):
        result.rollback(model)
        tensors, meta = _snapshot(codebook)
        assert tensors.keys() == states[k - 1][0].keys() and meta == states[k - 1][1]
        assert all(torch.equal(tensors[n], states[k - 1][0][n]) for n in tensors)
        assert all(torch.equal(a, b) for a, b in zip(_logits(model, tok, probes), outputs[k], strict=True))
    result.rollback(model)
    assert attached(model, codebook.module) is None and not result.memories and not result.requests
    assert all(torch.equal(a, b) for a, b in zip(_logits(model, tok, probes), outputs[0], strict=True))
    with pytest.raises(Exception, match="cannot be rolled back"):
        result.rollback(model)


@torch.no_grad()
def test_grace_leaves_a_prompt_outside_every_radius_unchanged_bit_for_bit(toy, records):
    model, tok, adapter = toy
    hp = load_hparams("grace", "toy")
    before = _logits(model, tok, [UNRELATED])[0]
    with torch.enable_grad():
        result = METHODS["grace"](model, tok, adapter, [r.request() for r in records], hp, None)
    try:
        codebook = result.memories[0]
        from editkit.hooks import Trace

        with Trace(model, codebook.module, retain_input=True) as tr:
            after = model(**tok(UNRELATED, return_tensors="pt")).logits
        gap = distances(tr[codebook.module].input[0], codebook.tensors["keys"]).min(-1)
        radius = codebook.tensors["radii"].double()[gap.indices]
        assert bool((gap.values > radius).all())  # every position is outside every radius ...
        assert torch.equal(after, before)  # ... so the model runs exactly as before
        edited = next_token_probs(model, tok, [records[0].request().text])[0]
        assert tok.decode([int(edited.argmax())]).strip() == records[0].target_new
    finally:
        result.revert(model)


def test_grace_checkpoint_needs_editkits_loader(toy, records, tmp_path):
    """`editkit edit --save-checkpoint` of a GRACE edit: one line says plain transformers cannot load it; the
    checkpoint's weights are the base model's, `load_checkpoint` gives the edited outputs, revert the base."""
    from transformers import AutoModelForCausalLM

    from editkit.edit.checkpoint import load_checkpoint
    from editkit.edit.run import run_edit, run_revert

    model, tok, _ = toy
    request = records[0].request()
    data = run_edit("toy", [request], "grace", out=tmp_path / "edit", checkpoint=tmp_path / "ck")
    assert "plain transformers cannot load" in data["note"] and "\n" not in data["note"]
    assert json.loads((tmp_path / "ck" / "provenance.json").read_text())["edit"]["note"] == data["note"]
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "ck")
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in plain.state_dict().items())
    (edited, _, _), result = load_checkpoint(tmp_path / "ck")
    assert result.method == "grace" and attached(edited, result.memories[0].module) is not None
    top = next_token_probs(edited, tok, [request.text])[0].argmax()
    assert tok.decode([int(top)]).strip() == request.target_new
    applied = EditResult.load(tmp_path / "edit")
    applied.apply(model)
    try:
        with torch.no_grad():
            assert torch.equal(_logits(edited, tok, [request.text])[0], _logits(model, tok, [request.text])[0])
    finally:
        applied.revert(model)
    run_revert(tmp_path / "ck", tmp_path / "rv")
    (restored, _, _), none = load_checkpoint(tmp_path / "rv")
    assert none is None and all(torch.equal(v, model.state_dict()[k]) for k, v in restored.state_dict().items())


def test_ike_prompts_carry_the_demonstrations(records):
    """k demonstrations of the three kinds' format, none about the request's subject, then the new fact."""
    from editkit.edit.methods.ike import context_for

    hp = load_hparams("ike", "toy", overrides=("k=6",))
    request = records[0].request()
    context = context_for([request], hp)
    blocks = context.split("\n\n")
    demos, last = blocks[:-1], blocks[-1]
    assert len(demos) == 6 and all(d.startswith("New Fact: ") and "\nPrompt: " in d for d in demos)
    assert request.subject not in "".join(demos)
    assert last == f"New Fact: {request.text} {request.target_new}\nPrompt: "


def test_the_evaluation_scores_prompts_behind_the_context(toy, records, tmp_path):
    """`editkit eval --method ike`: each case's rewrite probability is the target's after context + prompt,
    under both protocols the answer is generated behind it, and the model is never changed."""
    from editkit.evaluate.runner import EvalConfig, make_editor, model_fingerprint, run_eval
    from editkit.evaluate.scoring import score_targets

    model, tok, _ = toy
    before = model_fingerprint(model)
    editor, hp = make_editor("ike", toy, None, "toy", sequential=False)
    config = EvalConfig(model="toy", dataset="toy", method="ike", limit=2, hparams=hp, capability=False)
    run_eval(model, tok, records[:2], config, tmp_path / "run", editor, progress=False)
    cases = [json.loads(line) for line in (tmp_path / "run" / "cases.jsonl").read_text().splitlines()]
    for record, case in zip(records[:2], cases, strict=True):
        request = record.request()
        context = METHODS["ike"](model, tok, None, [request], load_hparams("ike", "toy"), None).context
        within, bare = score_targets(model, tok, [context + request.text, request.text], [request.target_new] * 2)
        got = case["predictions"]["probs [new, true]"]["rewrite"][0][0]
        assert got == pytest.approx(float(torch.tensor(-within.nll).exp()), rel=1e-4)  # batches pad differently
        assert got != pytest.approx(float(torch.tensor(-bare.nll).exp()), rel=1e-2)
        assert "ES" in case["generation_metrics"]
    assert model_fingerprint(model) == before


def test_ike_capability_is_measured_behind_the_context(toy, records, tmp_path):
    """IKE changes no weight, so its cost elsewhere shows only behind its context: the run's perplexity and
    retention are the probe's with the edit's context before every text and fact, not the unedited model's."""
    from editkit.evaluate.runner import EvalConfig, make_editor, run_eval
    from editkit.toy.sources import capability_probe

    model, tok, _ = toy
    probe = capability_probe(n_texts=8, n_facts=16)
    editor, hp = make_editor("ike", toy, None, "toy", sequential=False)
    config = EvalConfig(model="toy", dataset="toy", method="ike", limit=1, hparams=hp, protocol="teacher-forced")
    summary = run_eval(model, tok, records[:1], config, tmp_path / "run", editor, progress=False, probe=probe)
    case = json.loads((tmp_path / "run" / "cases.jsonl").read_text().splitlines()[0])
    base = probe.baseline(model, tok)
    context = METHODS["ike"](model, tok, None, [records[0].request()], load_hparams("ike", "toy"), None).context
    assert case["capability"] == probe.measure(model, tok, base, lambda prompt: context)
    assert case["capability"]["perplexity"] != pytest.approx(base["perplexity"], rel=1e-3)
    assert summary["capability"]["perplexity_before"] == pytest.approx(base["perplexity"], rel=1e-12)


def test_ike_reads_each_prompt_behind_the_facts_nearest_it(toy):
    """facts_per_prompt=1 over three sequential edits: a paraphrase of the second edit is read behind the second
    fact only (and its demonstrations), the whole context is never used, and one edit reads as the paper's."""
    model, tok, _ = toy
    recs = load_dataset("toy", toy_path("toy", "counterfact"), 40)
    three = list({r.subject: r for r in reversed(recs)}.values())[-3:]  # each subject's first record
    assert len({r.subject for r in three}) == 3
    hp = load_hparams("ike", "toy", overrides=("facts_per_prompt=1",))
    one = METHODS["ike"](model, tok, None, [three[0].request()], hp, None)
    assert one.context_for(three[1].paraphrase_prompts[0]) == one.context  # one fact: the paper's context
    result = METHODS["ike"](model, tok, None, [r.request() for r in three[1:]], hp, None, history=one)
    for r in three:
        read = result.context_for(r.paraphrase_prompts[0])
        facts = [line for line in read.splitlines() if line.startswith("New Fact: ") and line.endswith(r.target_new)]
        assert f"New Fact: {r.request().text} {r.target_new}\nPrompt: " in read and len(read) < len(result.context)
        assert all(o.request().text not in read for o in three if o is not r) and facts
