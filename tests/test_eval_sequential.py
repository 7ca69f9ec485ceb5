"""Sequential editing with checkpoints on the toy model (FT-L, shipped toy hyper-parameters): each
checkpoint's numbers equal a separate run made to that many edits, a run killed mid-sequence resumes to the
same curves, collapse is found at the first step past its threshold; perplexity equals a hand computation."""

import json
import math

import pytest
import torch

from editkit.errors import EditkitError
from editkit.evaluate.capability import collapse, perplexity
from editkit.evaluate.datasets import load_dataset
from editkit.evaluate.plots import plot_curves
from editkit.evaluate.runner import EvalConfig, make_editor, model_fingerprint, read_cases, run_eval
from editkit.models import toy_dir
from editkit.toy.sources import capability_probe


@pytest.fixture(scope="module")
def records():
    return load_dataset("toy", toy_dir() / "counterfact.json", limit=3)


@pytest.fixture(scope="module")
def probe():
    return capability_probe(n_texts=16, n_facts=16)


def seq(points, limit, **kw) -> EvalConfig:
    return EvalConfig(
        model="toy", dataset="toy", method="ft-l", mode="sequential", checkpoints=points, limit=limit,
        generation=False, **kw,
    )  # fmt: skip


def run(toy, records, points, out, probe, editor=None, resume=False, **kw):
    editor = editor or make_editor("ft-l", toy, None, "toy", sequential=True)[0]
    model, tok, _ = toy
    config = seq(points, points[-1], **kw)
    return run_eval(model, tok, records[: points[-1]], config, out, editor, resume, progress=False, probe=probe)


def test_checkpoints_equal_separate_runs_and_resume_gives_the_same_curves(toy, records, probe, tmp_path):
    before = model_fingerprint(toy[0])
    full = run(toy, records, [1, 3], tmp_path / "full", probe)
    assert model_fingerprint(toy[0]) == before  # every edit reverted at the end
    assert [p["edits"] for p in full["checkpoints"]] == [1, 3] and [p["n"] for p in full["checkpoints"]] == [1, 3]
    assert [s["edits"] for s in full["curve"]] == [1, 2, 3]
    assert full["n"] == 3 and {"metrics", "generation_metrics", "capability"} <= set(full)
    # a separate run to 1 edit, and one to 3: the same numbers as the checkpoints
    for k, point in zip([1, 3], full["checkpoints"], strict=True):
        alone = run(toy, records, [k], tmp_path / f"to{k}", probe)
        assert alone["checkpoints"] == [point]
        assert alone["curve"] == full["curve"][:k]
        lines = [c for c in read_cases(tmp_path / "full" / "cases.jsonl") if c["checkpoint"] == k]
        assert read_cases(tmp_path / f"to{k}" / "cases.jsonl") == lines
    # killed at its third edit, then resumed: the same files, the same curves
    editor, calls = make_editor("ft-l", toy, None, "toy", sequential=True)[0], []

    def killed(model, tok, requests):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return editor(model, tok, requests)

    with pytest.raises(KeyboardInterrupt):
        run(toy, records, [1, 3], tmp_path / "r", probe, editor=killed)
    assert model_fingerprint(toy[0]) == before
    assert len(read_cases(tmp_path / "r" / "steps.jsonl")) == 2 and len(read_cases(tmp_path / "r" / "cases.jsonl")) == 1
    resumed = run(toy, records, [1, 3], tmp_path / "r", probe, resume=True)
    assert resumed == full
    for name in ("cases.jsonl", "steps.jsonl"):
        assert (tmp_path / "r" / name).read_bytes() == (tmp_path / "full" / name).read_bytes()
    png = plot_curves([tmp_path / "full"], tmp_path / "curves.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_continues_from_the_saved_edit_without_re_editing(toy, records, probe, tmp_path):
    """A method's editor saves the accumulated edit after every measured step: killed at its third edit, the
    run resumes from the two saved edits (one more call of the method), to the curves of an unbroken run; the
    final resume point is the whole sequence's edit, which reproduces the edited weights bit for bit."""
    from editkit.edit import EditResult

    model, tok, _ = toy
    before = model_fingerprint(model)
    full = run(toy, records, [1, 3], tmp_path / "full", probe)
    editor = make_editor("ft-l", toy, None, "toy", sequential=True)[0]
    calls = []
    original = editor.apply

    def killed(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    editor.apply = killed
    with pytest.raises(KeyboardInterrupt):
        run(toy, records, [1, 3], tmp_path / "r", probe, editor=editor)
    state = json.loads((tmp_path / "r" / "resume" / "state.json").read_text())
    assert state["edits"] == 2 and model_fingerprint(model) == before
    again = make_editor("ft-l", toy, None, "toy", sequential=True)[0]
    again_calls, inner = [], again.apply
    again.apply = lambda *a, **k: again_calls.append(1) or inner(*a, **k)
    assert run(toy, records, [1, 3], tmp_path / "r", probe, editor=again, resume=True) == full
    assert again_calls == [1] and model_fingerprint(model) == before  # only the third request was edited
    final = EditResult.load(tmp_path / "r" / "resume" / "edit")
    assert len(final.requests) == 3 and json.loads((tmp_path / "r" / "resume" / "state.json").read_text())["edits"] == 3
    final.apply(model)
    try:
        assert model_fingerprint(model) != before
    finally:
        final.revert(model)
    assert model_fingerprint(model) == before


def test_a_resume_point_of_other_requests_is_refused(toy, records, probe, tmp_path):
    run(toy, records, [1], tmp_path / "r", probe)
    (tmp_path / "r" / "steps.jsonl").unlink()  # work left to do, so the resume point is read
    other = [records[1], records[0]]
    model, tok, _ = toy
    editor = make_editor("ft-l", toy, None, "toy", sequential=True)[0]
    with pytest.raises(EditkitError, match="holds an edit of other requests"):
        run_eval(model, tok, other[:1], seq([1], 1), tmp_path / "r", editor, True, progress=False, probe=probe)


def test_capability_every_n_edits_measures_those_steps_and_the_checkpoints(toy, records, probe, tmp_path):
    """--capability-every 2 to checkpoint 3: capability after edits 2 and 3 only, the same values as measured
    after every edit, and the same checkpoint scores (measuring changes nothing it measures)."""
    every = run(toy, records, [1, 3], tmp_path / "every", probe)
    sparse = run(toy, records, [3], tmp_path / "sparse", probe, capability_every=2)
    assert [s["edits"] for s in sparse["curve"]] == [2, 3]
    assert sparse["curve"] == every["curve"][1:]
    assert sparse["checkpoints"] == every["checkpoints"][1:]
    with pytest.raises(EditkitError, match="--capability-every must be >= 1, got 0"):
        seq([3], 3, capability_every=0)


def test_checkpoint_settings_are_checked():
    with pytest.raises(EditkitError, match="--checkpoints needs --mode sequential"):
        EvalConfig(model="toy", dataset="toy", checkpoints=[1])
    with pytest.raises(EditkitError, match="checkpoint 15 is not a multiple of --batch-size 10"):
        EvalConfig(model="toy", dataset="toy", mode="sequential", batch_size=10, checkpoints=[10, 15])
    with pytest.raises(EditkitError, match="must be increasing"):
        EvalConfig(model="toy", dataset="toy", mode="sequential", checkpoints=[5, 2])


def test_collapse_is_the_first_step_past_a_threshold():
    curve = [{"edits": e, "perplexity": p, "retention": r} for e, p, r in [(1, 5, 1.0), (2, 40, 0.9), (3, 60, 0.4)]]
    assert collapse(curve, 5.0) == {
        "edit": 3,
        "after": 2,
        "reason": "perplexity 60.0 > 10 x 5.0 (unedited); retention 40.0% < 50%",
    }
    assert collapse(curve, 3.0)["edit"] == 2
    assert collapse(curve, 100.0) == {"edit": 3, "after": 2, "reason": "retention 40.0% < 50%"}
    assert collapse(curve[1:], 3.0) == {"edit": 2, "after": 0, "reason": "perplexity 40.0 > 10 x 3.0 (unedited)"}
    assert collapse(curve[:2], 5.0) is None


def test_perplexity_equals_a_hand_computation(toy):
    model, tok, _ = toy
    texts = ["The mother tongue of Leizil Lutrar is Sorilish.", "Tiboth Feigar plays the harp."]
    nll, count = 0.0, 0
    for text in texts:  # one forward pass per prefix, the next token's log-probability read off by hand
        ids = tok(text)["input_ids"]
        for i in range(1, len(ids)):
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([ids[:i]])).logits[0, -1].double()
            nll -= float(logits.log_softmax(-1)[ids[i]])
            count += 1
    assert perplexity(model, tok, texts, batch_size=2) == pytest.approx(math.exp(nll / count), rel=1e-6)
    assert perplexity(model, tok, texts[:1], max_len=4) == pytest.approx(
        perplexity(model, tok, [tok.decode(tok(texts[0])["input_ids"][:4])]), rel=1e-9
    )


def test_perplexity_behind_a_context_predicts_only_the_texts_tokens(toy):
    """An in-context edit's capability: the context's tokens are read, not scored; the text's are, by hand."""
    model, tok, _ = toy
    context, texts = "New Fact: Tiboth Feigar plays the drum.\nPrompt: ", ["Tiboth Feigar plays the harp.", "Hello"]
    head = tok(context)["input_ids"]
    nll, count = 0.0, 0
    for text in texts:
        ids = tok(context + text)["input_ids"]
        start = next(i for i in range(len(ids) + 1) if i == len(head) or i == len(ids) or ids[i] != head[i])
        for i in range(start, len(ids)):
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([ids[:i]])).logits[0, -1].double()
            nll -= float(logits.log_softmax(-1)[ids[i]])
            count += 1
    assert count == sum(len(tok(t)["input_ids"]) for t in texts)  # GPT-2: the text's tokens follow the context's
    got = perplexity(model, tok, texts, batch_size=2, context=lambda text: context)
    assert got == pytest.approx(math.exp(nll / count), rel=1e-6)
    assert got != pytest.approx(perplexity(model, tok, texts), rel=1e-3)


def test_summary_and_config_record_protocol_and_decoding(toy, records, probe, tmp_path):
    model, tok, _ = toy
    cfg = EvalConfig(model="toy", dataset="toy", generation=False, max_new_tokens=5)
    summary = run_eval(model, tok, records[:1], cfg, tmp_path / "g", progress=False, probe=probe)
    config = json.loads((tmp_path / "g" / "config.json").read_text())
    assert config["protocol"] == summary["protocol"] == "both"
    assert config["decoding"] == summary["decoding"] and summary["decoding"]["max_new_tokens"] == 5
    assert "sentence end" in summary["decoding"]["stop"] and config["capability_probe"]["texts"] == 16
    case = read_cases(tmp_path / "g" / "cases.jsonl")[0]
    assert set(case["generated"]) == {"ES", "PS", "NS"} and set(case["capability"]) == {"perplexity", "retention"}
    assert summary["capability"]["perplexity_before"] == summary["capability"]["perplexity_after"]["mean"]
    assert summary["capability"]["retention"]["mean"] == 1.0  # nothing edited: every known fact kept
    with pytest.raises(EditkitError, match="has no checkpoints"):
        plot_curves([tmp_path / "g"], tmp_path / "x.png")
    only = EvalConfig(model="toy", dataset="toy", generation=False, protocol="teacher-forced")
    tf = run_eval(model, tok, records[:1], only, tmp_path / "tf", progress=False)
    assert "generation_metrics" not in tf and tf["decoding"] is None and tf["metrics"] == summary["metrics"]
