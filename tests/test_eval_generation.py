"""The generation protocol, hand-checked: a tiny GPT-2 trained to recite fixed lines answers with greedy
decoding up to the natural stop (sentence end, newline, end of sequence); answers are normalised (case,
leading space, punctuation) and count when they start with the target at a word boundary."""

import dataclasses

import pytest
import torch

from editkit.evaluate.datasets import load_dataset
from editkit.evaluate.generation import answer_rates, contains, cut_at_stop, greedy_answers, normalize, starts_with
from editkit.evaluate.metrics import summarize
from editkit.evaluate.suites import ScoreOptions, generate_many, pre_edit
from tests.eval_helpers import DATA, tiny_bundle

LINES = [
    "The capital of Zorland is Illinois Institute of Technology. The river is French.",
    "Toko Yasuda plays the guitar\nand the piano.",
    "Michel Rocard speaks FRENCH, fluently!",
    "Watts Humphrey attended Danielle Darrieux Institute of Technology and Hugo Weaving",
]


@pytest.fixture(scope="module")
def parrot(tmp_path_factory):
    """The tiny model trained until it recites LINES (each followed by end of sequence) from their start."""
    model, tok = tiny_bundle(tmp_path_factory.mktemp("parrot"))
    rows = [tok(line)["input_ids"] + [tok.eos_token_id] for line in LINES]
    width = max(map(len, rows))
    ids = torch.tensor([r + [tok.eos_token_id] * (width - len(r)) for r in rows])
    labels = torch.tensor([r + [-100] * (width - len(r)) for r in rows])
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(150):
        model(input_ids=ids, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad()
    return model.eval(), tok


def test_answers_stop_at_sentence_end_newline_and_end_of_sequence(parrot):
    model, tok = parrot
    prompts = ["The capital of Zorland is", "Toko Yasuda plays the", "Michel Rocard speaks", "Watts Humphrey attended"]
    answers = greedy_answers(model, tok, prompts, max_new_tokens=40)
    assert answers == [
        " Illinois Institute of Technology",  # several tokens, cut at ". " before "The river is French"
        " guitar",  # cut at the newline
        " FRENCH, fluently",  # "!" then end of sequence
        " Danielle Darrieux Institute of Technology and Hugo Weaving",  # no stop: end of sequence
    ]
    assert greedy_answers(model, tok, prompts[3:], max_new_tokens=3) == [" Danielle Darr"]  # three tokens
    # one prompt at a time: the same answers
    assert [greedy_answers(model, tok, [p], max_new_tokens=40)[0] for p in prompts] == answers
    # a target generated only after a stop does not count, not even as "contains"
    assert not contains(answers[0], "French") and not contains(answers[1], "piano")
    exact, inside = answer_rates(answers, ["Illinois Institute", "Guitar", "french", "Hugo Weaving"])
    assert (exact, inside) == (0.75, 1.0)  # "Hugo Weaving" is in the last answer but does not start it


def test_normalisation_and_word_boundaries():
    assert normalize("  FRENCH, fluently!") == "french fluently"
    assert normalize("Washington, D.C.") == "washington d c"
    assert starts_with(" Paris.", "paris") and starts_with(" paris is big", "Paris")
    assert not starts_with(" Frenchman", "French")  # a word boundary after the target
    assert not starts_with(" the French", "French") and contains(" the French", "French")
    assert not starts_with(" anything", "") and not contains(" anything", "  ")
    assert cut_at_stop(" Paris. London") == " Paris" and cut_at_stop(" Paris.") == " Paris"
    assert cut_at_stop(" 3.5 km") == " 3.5 km"  # a point inside a number is no sentence end
    assert cut_at_stop(" yes\nno") == " yes" and cut_at_stop(" why? because") == " why"


def test_counterfact_generation_metrics_per_group(parrot):
    model, tok = parrot
    (record,) = load_dataset("toy", DATA.parents[1] / "data" / "toy" / "counterfact.json", limit=1)
    ((metrics, texts),) = generate_many(model, tok, [record], ScoreOptions(protocol="generation"), [None])
    assert set(texts) == {"ES", "PS", "NS"} and len(texts["PS"]) == len(record.paraphrase_prompts)
    es, es_in = answer_rates(texts["ES"], [record.target_new])
    ns, ns_in = answer_rates(texts["NS"], [record.target_true] * len(texts["NS"]))
    assert metrics["ES"] == es and metrics["ES_contains"] == es_in
    assert metrics["NS"] == ns and metrics["NS_contains"] == ns_in
    assert set(metrics) == {"ES", "PS", "NS", "ES_contains", "PS_contains", "NS_contains"}


def test_a_record_without_neighbours_is_missing_from_ns_not_from_the_summary(parrot):
    """A record with no neighbourhood prompt has NS None under generation as under teacher forcing, so the
    summary still has generation NS over the other records (it once dropped NS for the whole run)."""
    model, tok = parrot
    records = load_dataset("toy", DATA.parents[1] / "data" / "toy" / "counterfact.json", limit=2)
    bare = dataclasses.replace(records[1], neighborhood_prompts=[])
    got = generate_many(model, tok, [records[0], bare], ScoreOptions(protocol="generation"), [None, None])
    (first, _), (metrics, texts) = got
    assert metrics["NS"] is None and metrics["NS_contains"] is None and "NS" not in texts
    summary = summarize([first, metrics], "counterfact")["metrics"]
    assert summary["NS"]["mean"] == first["NS"] and summary["NS"]["missing"] == 1
    assert "missing" not in summary["ES"]  # every record has an edit prompt


def test_easyedit_locality_compares_answers_with_those_before_the_edit(parrot):
    model, tok = parrot
    (record,) = load_dataset("easyedit", DATA / "counterfact-edit-prefix12.json", limit=1)
    opts = ScoreOptions(protocol="generation")
    pre = pre_edit(model, tok, record, opts)
    assert pre == {"locality_answers": greedy_answers(model, tok, [p for p, _ in record.locality])}
    ((metrics, texts),) = generate_many(model, tok, [record], opts, [pre])
    assert metrics["Locality"] == 1.0 and texts["Locality"] == pre["locality_answers"]  # nothing edited
    assert {"Reliability", "Reliability_contains", "Generalization"} <= set(metrics)
