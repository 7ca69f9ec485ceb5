"""WISE on the toy model: TIES merging on numbers worked by hand; the router on a hand-made memory (a whole
sequence goes to the memory its mean score over its prompt tokens picks, padding left out, the route kept for
cached steps); shards merge on schedule; an unrelated prompt runs on the main memory bit for bit; scoring
teacher-forced and generating with the KV cache route alike and give the same tokens."""

from __future__ import annotations

import pytest
import torch

from editkit.edit import METHODS, load_hparams
from editkit.edit.memory import Call, Memory
from editkit.errors import EditkitError
from editkit.evaluate.datasets import load_dataset
from editkit.tokens import encode, target_ids
from editkit.toy import toy_path
from tests.test_side_memory import UNRELATED, _logits


@pytest.fixture(scope="module")
def records():
    return load_dataset("toy", toy_path("toy", "counterfact"), 3)


def test_ties_merge_trims_elects_signs_and_averages_the_agreeing_entries():
    from editkit.edit.methods.wise import ties_merge

    taus = [torch.tensor([1.0, -2.0, 0.5]), torch.tensor([3.0, 1.0, -0.1])]
    # top 2 of 3 kept: [1, -2, 0] and [3, 1, 0]; signs elected by the weighted sum [2, -0.5, 0]: +, -, none;
    # entry 0 averages 1 and 3, entry 1 keeps -2 alone (1 disagrees), entry 2 has nothing left
    assert torch.equal(ties_merge(taus, [0.5, 0.5], 2 / 3), torch.tensor([2.0, -2.0, 0.0]))


def test_the_router_sends_whole_sequences_by_their_mean_score_over_prompt_tokens():
    """W' − W is the identity, so a position's score is ‖x‖; threshold 2.5. Row 0 (left-padded) scores 1 and 5:
    mean 3, so both positions read the side memory, the one scoring 1 too. Row 1 (right-padded) scores 4 and
    0.5: mean 2.25, so both read W, the one scoring 4 too; its padding (score 100) would make it 34.8. Marked as
    prompt, row 1's first position alone decides (4): side memory. A cached step keeps each row's route
    whatever its own token scores; a cached step on a cache the router never saw is refused."""
    from editkit.edit.methods.wise import read

    memory = Memory("m", "wise", {"shard.0": torch.eye(2)}, {"memories": [{"name": "shard.0", "threshold": 2.5}]})
    x = torch.tensor([[[100.0, 0], [1, 0], [0, 5]], [[4, 0], [0.5, 0], [100, 0]]])
    out = torch.full((2, 3, 2), 7.0)
    mask = torch.tensor([[0, 1, 1], [1, 1, 0]])
    cache = type("Cache", (), {})()
    routed = read(memory, x, out, Call(mask, None, 0, cache))
    assert torch.equal(routed[0], out[0] + x[0]) and torch.equal(routed[1], out[1])
    prompt = torch.tensor([[True, True, True], [True, False, False]])
    assert torch.equal(read(memory, x, out, Call(mask, prompt, 0)), out + x)
    step, out1 = torch.tensor([[[0.0, 0]], [[50, 0]]]), torch.ones(2, 1, 2)
    kept = read(memory, step, out1, Call(torch.ones(2, 4, dtype=torch.long), None, 3, cache))
    assert torch.equal(kept, torch.cat([out1[:1] + step[:1], out1[1:]]))
    with pytest.raises(EditkitError, match="first forward pass"):
        read(memory, step, out1, Call(None, None, 3, type("Cache", (), {})()))


@pytest.fixture(scope="module")
def merged(toy, records):
    """Two WISE edits with a shard per edit and a merge after two; the unrelated prompt's unedited logits."""
    model, tok, adapter = toy
    hp = load_hparams("wise", "toy", overrides=("save_freq=1", "merge_freq=2"))
    with torch.no_grad():
        before = _logits(model, tok, [UNRELATED])[0]
    requests = [r.request() for r in records[:2]]
    result = METHODS["wise"](model, tok, adapter, requests, hp, None)
    yield result, requests, before
    result.revert(model)


@torch.no_grad()
def test_wise_routes_an_unrelated_prompt_to_the_main_memory_and_shards_then_merges(toy, merged):
    """The shards become one merged side memory; the edited prompt's mean score is above its threshold, the
    unrelated prompt's below, so its outputs are the unedited model's bit for bit."""
    from editkit.edit.methods.wise import sequence_scores
    from editkit.hooks import Trace

    model, tok, _ = toy
    result, requests, before = merged
    memory = result.memories[0]
    assert memory.meta["shards"] == 2 and memory.meta["merges"] == 1
    assert [m["name"] for m in memory.meta["memories"]] == ["merged"] and sorted(memory.tensors) == ["merged"]
    (route,) = memory.meta["memories"]
    for text, routed in ((requests[0].text, True), (UNRELATED, False)):
        with Trace(model, memory.module, retain_input=True) as tr:
            model(**tok(text, return_tensors="pt"))
        scores = (tr[memory.module].input[0].float() @ memory.tensors["merged"].T).norm(dim=-1)
        assert bool(sequence_scores(scores[None], None)[0] > route["threshold"]) == routed, (text, scores, route)
    assert torch.equal(_logits(model, tok, [UNRELATED])[0], before)


@torch.no_grad()
def test_teacher_forced_scoring_and_cached_generation_route_alike_and_agree(toy, merged, monkeypatch):
    """Three prompts of different lengths in one batch (left-padded, KV cache) for greedy generation, then each
    prompt + its answer teacher-forced (right-padded): the routes decided on the prompts are the same, and
    the teacher-forced top-1 tokens are the generated ones."""
    from editkit.edit.methods import wise
    from editkit.evaluate.generation import greedy_answers
    from editkit.evaluate.scoring import score_targets

    model, tok, _ = toy
    _, requests, _ = merged
    prompts = [requests[0].text, UNRELATED, requests[1].text]
    original, seen = wise.route, []

    def recording(*args):
        seen.append(original(*args))
        return seen[-1]

    monkeypatch.setattr(wise, "route", recording)
    answers = greedy_answers(model, tok, prompts, max_new_tokens=6)
    (generated,) = seen  # the prompts' one uncached forward pass, rows by prompt length
    seen.clear()
    forced = score_targets(model, tok, prompts, answers)
    (teacher,) = seen  # one forward pass, rows by prompt + answer length
    by_prompt = sorted(range(3), key=lambda i: len(encode(tok, prompts[i])))
    by_row = sorted(range(3), key=lambda i: len(encode(tok, prompts[i])) + len(target_ids(tok, prompts[i], answers[i])))
    routes = [int(generated[by_prompt.index(i)]) for i in range(3)]
    assert routes == [int(teacher[by_row.index(i)]) for i in range(3)] and routes[:2] == [0, -1], routes
    assert all(answers) and all(all(s.correct) for s in forced), (answers, [s.correct for s in forced])
