"""A prefix every row shares (an in-context edit's context) runs once as a KV cache: the rows' logits, scores
and greedy answers are those of running each row whole."""

from __future__ import annotations

import pytest
import torch

from editkit.evaluate.generation import greedy_answers
from editkit.evaluate.scoring import score_targets
from editkit.models.cache import SharedPrefix, cache_kwarg, shared_length
from editkit.tokens import pad_rows
from tests.conftest import TINY_CONFIGS, tiny_model

CONTEXT = (
    "New Fact: Danielle Darrieux's mother tongue is English\nPrompt: Danielle Darrieux's mother tongue is English\n\n"
    "New Fact: Toko Yasuda plays the violin\nPrompt: "
)
PROMPTS = ["Toko Yasuda plays the", "The instrument Toko Yasuda plays is the", "Danielle Darrieux's mother tongue is"]


@pytest.mark.parametrize("family", sorted(TINY_CONFIGS))
def test_rows_after_a_shared_prefix_get_the_logits_of_the_whole_rows(family):
    model = tiny_model(family)
    torch.manual_seed(1)
    vocab = model.config.vocab_size
    prefix = torch.randint(3, vocab, (9,)).tolist()
    tails = [torch.randint(3, vocab, (n,)).tolist() for n in (4, 2, 5)]
    whole_ids, whole_mask = pad_rows([prefix + t for t in tails], 0)
    with torch.no_grad():
        whole = model(input_ids=whole_ids, attention_mask=whole_mask).logits
        shared = SharedPrefix(model, prefix)
        ids, mask = pad_rows(tails, 0)
        rest = model(input_ids=ids, attention_mask=shared.mask(mask), **{cache_kwarg(model): shared.cache(3)}).logits
    for r, t in enumerate(tails):
        torch.testing.assert_close(rest[r, : len(t)], whole[r, len(prefix) : len(prefix) + len(t)], atol=1e-5, rtol=0)
    assert shared.kv[0][0].shape[0] == 1  # the cache the batches share was not widened in place


def test_shared_length_stops_where_rows_differ_and_at_the_bound():
    assert shared_length([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]], 9) == 2
    assert shared_length([[1, 2, 3], [1, 2, 3]], 1) == 1
    assert shared_length([[7], [8]], 5) == 0


def test_scores_and_greedy_answers_behind_a_shared_context_are_those_read_whole(toy):
    model, tok, _ = toy
    prompts = [CONTEXT + p for p in PROMPTS] * 2
    targets = ["violin", "piano", "English", "guitar", "violin", "French"]
    whole = score_targets(model, tok, prompts, targets, batch_size=4)
    shared = score_targets(model, tok, prompts, targets, batch_size=4, share_prefix=True)
    for a, b in zip(whole, shared, strict=True):
        assert a.target == b.target and a.argmax == b.argmax
        assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs, strict=True)) < 1e-4
    answers = greedy_answers(model, tok, prompts[:3], max_new_tokens=8, batch_size=2)
    assert greedy_answers(model, tok, prompts[:3], max_new_tokens=8, batch_size=2, share_prefix=True) == answers
    assert len({a for a in answers}) > 1  # the prompts after the context are answered each on its own
