"""The papers' metrics against values computed by hand, on a bigram model whose probabilities are set exactly
(multi-token targets included), and batched scoring against one-row-at-a-time scoring."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from editkit.evaluate import metrics as M
from editkit.evaluate.datasets import EasyEditRecord, ZsreRecord
from editkit.evaluate.scoring import score_targets
from editkit.evaluate.suites import ScoreOptions, evaluate, pre_edit
from tests.eval_helpers import tiny_bundle

VOCAB = ["[PAD]", "the", "cat", "sat", "mat", "?"]
# P(next | current): row = current token, columns follow VOCAB.
P = {
    "the": [0.1, 0.1, 0.4, 0.2, 0.2, 0.0],
    "cat": [0.1, 0.1, 0.1, 0.5, 0.2, 0.0],
    "sat": [0.2, 0.4, 0.1, 0.1, 0.2, 0.0],
    "mat": [0.1, 0.3, 0.2, 0.1, 0.3, 0.0],
    "?": [0.1, 0.5, 0.1, 0.1, 0.2, 0.0],
}


class Bigram(nn.Module):
    """logits[t] = log P(. | token t): the next-token distribution depends on the current token only."""

    def __init__(self):
        super().__init__()
        table = torch.full((len(VOCAB), len(VOCAB)), 1e-9)
        for word, row in P.items():
            table[VOCAB.index(word)] = torch.tensor(row).clamp_min(1e-9)
        self.logp = nn.Parameter(table.log(), requires_grad=False)

    def forward(self, input_ids, attention_mask=None):
        return type("Out", (), {"logits": self.logp[input_ids]})


@pytest.fixture(scope="module")
def bigram(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    word = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="[PAD]"))
    word.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    path = tmp_path_factory.mktemp("bigram")
    PreTrainedTokenizerFast(tokenizer_object=word, pad_token="[PAD]").save_pretrained(path)
    return Bigram(), AutoTokenizer.from_pretrained(path)


def lp(prev: str, nxt: str) -> float:
    return math.log(P[prev][VOCAB.index(nxt)])


def test_multi_token_target_averages_token_log_probs(bigram):
    model, tok = bigram
    new, true = score_targets(model, tok, ["the", "the"], ["cat sat", "mat"])
    assert new.target == (2, 3) and true.target == (4,)
    assert new.nll == pytest.approx(-(math.log(0.4) + math.log(0.5)) / 2, abs=1e-6)  # 0.8047
    assert true.nll == pytest.approx(-math.log(0.2), abs=1e-6)
    assert new.argmax == (2, 3) and new.correct == [True, True]  # after "the": cat; after "cat": sat
    assert true.argmax == (2,) and true.correct == [False]


def test_counterfact_success_and_magnitude_by_hand():
    got = M.counterfact_metrics(
        rewrite=[(0.5, 1.0)], paraphrase=[(1.0, 0.5), (0.2, 2.0)], neighborhood=[(2.0, 0.1), (0.3, 0.4)]
    )
    e = math.exp
    assert got["ES"] == 1.0 and got["PS"] == 0.5 and got["NS"] == 0.5
    assert got["EM"] == pytest.approx(e(-0.5) - e(-1.0))  # 0.23865
    assert got["PM"] == pytest.approx(((e(-1.0) - e(-0.5)) + (e(-0.2) - e(-2.0))) / 2)  # 0.22237
    assert got["NM"] == pytest.approx(((e(-0.1) - e(-2.0)) + (e(-0.4) - e(-0.3))) / 2)  # 0.33768


def test_zsre_token_accuracy_on_a_multi_token_answer(bigram):
    model, tok = bigram
    rec = ZsreRecord(0, "cat", "the {}", "sat mat", ("the cat",), "cat ", "the")  # loc prompt: "cat ?"
    metrics, preds = evaluate(model, tok, rec, ScoreOptions())
    # "the cat" -> "sat" (argmax after cat: sat ✓), then after "sat": argmax is "the", not "mat" ✗ -> 1/2.
    assert metrics == {"Efficacy": 0.5, "Paraphrase": 0.5, "Specificity": 1.0}
    assert preds["top1"]["edit"] == "sat the"
    assert M.token_accuracy([[True, False], [True, True, True]]) == 0.8  # pooled over tokens, as ROME


def test_easyedit_metrics_by_hand(bigram):
    model, tok = bigram
    rec = EasyEditRecord(0, "cat", "the {}", "sat sat", "mat", ("sat cat",), (("sat", "the cat"),), (("?", "the"),))
    pre = pre_edit(model, tok, rec, ScoreOptions())
    assert pre == {"locality": [[1, 2]]}  # after "sat": the; after "the": cat
    metrics, _ = evaluate(model, tok, rec, ScoreOptions(), pre)
    # Reliability: after cat -> sat ✓, after sat -> the ≠ sat ✗: 1/2. Generalization "sat cat" -> the same 1/2.
    assert metrics == {"Reliability": 0.5, "Generalization": 0.5, "Locality": 1.0, "Portability": 1.0}
    assert M.prompt_accuracy([[True, False], [True, True, True, True]]) == 0.75  # per prompt, then mean
    assert M.locality([[1, 2, 3], [4]], [[1, 0, 3], [5]]) == pytest.approx((2 / 3 + 0) / 2)


def test_generation_entropy_by_hand():
    # words a b a b: bigrams (a,b)x2 (b,a)x1 -> H2 = 0.918296 bits; trigrams (a,b,a) (b,a,b) -> H3 = 1 bit.
    h2 = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3))
    assert M.ngram_entropy_one("a b a b") == pytest.approx((2 / 3 * h2 + 4 / 3 * 1.0) / 2)  # 0.972765
    assert M.ngram_entropy(["a b a b", "x x x x"]) == pytest.approx(((2 / 3 * h2 + 4 / 3) / 2 + 0.0) / 2)
    assert M.words("Paris, France's capital.") == ["Paris", ",", "France", "'s", "capital", "."]
    assert M.words("I can't say it's theirs") == ["I", "ca", "n't", "say", "it", "'s", "theirs"]  # as nltk


def test_reference_score_is_tfidf_cosine():
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer()
    vec.vocabulary_, vec.idf_ = {"paris": 0, "france": 1}, np.array([1.0, 2.0])
    # "paris paris france" -> [2*1, 1*2] = [2, 2]; "france" -> [0, 2]: cosine 4 / (sqrt(8) * 2) = 0.7071.
    assert M.tfidf_similarity("Paris paris France", "France", vec) == pytest.approx(1 / math.sqrt(2))
    assert M.tfidf_similarity("Berlin", "France", vec) == 0.0


def test_summary_mean_ci_and_score():
    ci = M.mean_ci([1, 0, 1, 1])  # mean 0.75, sd 0.5, half-width 1.96 * 0.5 / 2 = 0.49, clipped at 1
    assert ci["mean"] == 0.75 and ci["ci95"] == pytest.approx([0.26, 1.0])
    cases = [{"ES": 1.0, "PS": 1.0, "NS": 0.0}, {"ES": 1.0, "PS": 0.5, "NS": 1.0}]
    s = M.summarize(cases, "counterfact")
    assert s["n"] == 2 and list(s["metrics"]) == ["S", "ES", "PS", "NS"]
    assert s["metrics"]["S"]["mean"] == pytest.approx(3 / (1 / 1.0 + 1 / 0.75 + 1 / 0.5))  # 0.7826
    lo, hi = s["metrics"]["S"]["ci95"]
    assert 0 <= lo <= hi <= 1
    assert M.harmonic_mean([0.5, 0.0]) == 0.0


def test_batched_scoring_matches_one_row_at_a_time(tmp_path):
    model, tok = tiny_bundle(tmp_path)
    prompts = ["The mother tongue of Danielle Darrieux is", "Toko Yasuda plays the", "What university did"]
    targets = ["French", "guitar and the piano", "Illinois Institute of Technology"]
    batched = score_targets(model, tok, prompts, targets, batch_size=64)
    single = [score_targets(model, tok, [p], [t], batch_size=1)[0] for p, t in zip(prompts, targets, strict=True)]
    assert [len(s.target) for s in batched] == [len(s.target) for s in single] and len(batched[2].target) > 3
    for b, s in zip(batched, single, strict=True):
        assert b.argmax == s.argmax and b.logprobs == pytest.approx(s.logprobs, abs=1e-5)
