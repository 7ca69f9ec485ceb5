"""WISE on the toy model: TIES merging on numbers worked by hand; shards merge on schedule; the router sends the
edited prompt to the side memory and an unrelated one to the main memory, bit for bit."""

from __future__ import annotations

import pytest
import torch

from editkit.edit import METHODS, load_hparams
from editkit.evaluate.datasets import load_dataset
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


@torch.no_grad()
def test_wise_routes_an_unrelated_prompt_to_the_main_memory_and_shards_then_merges(toy, records):
    """Two WISE edits with a shard per edit and a merge after two: the shards become one merged side memory;
    the edited prompt is routed to it (its score above the threshold), an unrelated prompt to the main
    memory at every position, so its outputs are the unedited model's bit for bit."""
    from editkit.hooks import Trace

    model, tok, adapter = toy
    hp = load_hparams("wise", "toy", overrides=("save_freq=1", "merge_freq=2"))
    before = _logits(model, tok, [UNRELATED])[0]
    requests = [r.request() for r in records[:2]]
    with torch.enable_grad():
        result = METHODS["wise"](model, tok, adapter, requests, hp, None)
    try:
        memory = result.memories[0]
        assert memory.meta["shards"] == 2 and memory.meta["merges"] == 1
        assert [m["name"] for m in memory.meta["memories"]] == ["merged"] and sorted(memory.tensors) == ["merged"]
        (route,) = memory.meta["memories"]
        for text, routed in ((requests[0].text, True), (UNRELATED, False)):
            with Trace(model, memory.module, retain_input=True) as tr:
                model(**tok(text, return_tensors="pt"))
            scores = (tr[memory.module].input[0].float() @ memory.tensors["merged"].T).norm(dim=-1)
            assert bool((scores > route["threshold"]).any()) == routed, (text, scores, route)
        assert torch.equal(_logits(model, tok, [UNRELATED])[0], before)
    finally:
        result.revert(model)
