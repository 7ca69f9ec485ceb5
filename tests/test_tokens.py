"""Subject spans, target tokens and padding on real tokenizer files of three schemes."""

import pytest
import torch

from editkit.errors import EditkitError
from editkit.tokens import batch_encode, encode, subject_span, target_ids

CASES = [  # prompt, subject: at the start, mid-sentence, before a possessive, repeated
    ("Talin Vorsk plays the", "Talin Vorsk"),
    ("The capital city of the Arvel Republic is", "Arvel Republic"),
    ("Danielle Darrieux's mother tongue is", "Danielle Darrieux"),
    ("The Eiffel Tower is near the Eiffel Tower in", "Eiffel Tower"),
]


@pytest.mark.parametrize("scheme", ["bpe", "word", "spm"])
@pytest.mark.parametrize("prompt,subject", CASES)
def test_subject_span_decodes_to_the_subject(tokenizers_on_disk, scheme, prompt, subject):
    tok = tokenizers_on_disk[scheme]
    ids = encode(tok, prompt)
    start, end = subject_span(tok, prompt, subject)
    assert 0 <= start < end <= len(ids)
    flat = lambda i, j: tok.decode(ids[i:j]).replace(" ", "")  # noqa: E731
    s = subject.replace(" ", "")
    # The span covers the subject (a token may run past it, e.g. SentencePiece's "ux's"), and is minimal.
    assert s in flat(start, end) and s not in flat(start + 1, end) and s not in flat(start, end - 1)
    assert s not in flat(0, start)  # the first occurrence


def test_subject_span_on_the_toy_tokenizer_is_the_names_tokens(tokenizers_on_disk):
    tok = tokenizers_on_disk["bpe"]
    prompt = "The mother tongue of Talin Vorsk is"
    ids = encode(tok, prompt)
    start, end = subject_span(tok, prompt, "Talin Vorsk")
    assert ids[start:end] == tok(" Talin Vorsk")["input_ids"]
    assert end == len(ids) - 1  # only " is" follows


def test_spm_counts_the_bos_token(tokenizers_on_disk):
    tok = tokenizers_on_disk["spm"]
    ids = encode(tok, "Talin Vorsk plays the")
    assert ids[0] == tok.bos_token_id
    assert subject_span(tok, "Talin Vorsk plays the", "Talin Vorsk")[0] == 1


@pytest.mark.parametrize("scheme", ["bpe", "word", "spm"])
def test_subject_not_in_prompt_is_a_clear_error(tokenizers_on_disk, scheme):
    with pytest.raises(EditkitError, match="subject 'Paris' not found in prompt 'The Eiffel Tower is in'"):
        subject_span(tokenizers_on_disk[scheme], "The Eiffel Tower is in", "Paris")
    with pytest.raises(EditkitError, match="subject is empty"):
        subject_span(tokenizers_on_disk[scheme], "The Eiffel Tower is in", " ")


@pytest.mark.parametrize("scheme", ["bpe", "spm"])
def test_target_tokens_carry_the_leading_space(tokenizers_on_disk, scheme):
    tok = tokenizers_on_disk[scheme]
    prompt = "The Eiffel Tower is located in the city of"
    ids = target_ids(tok, prompt, "Paris")
    assert encode(tok, prompt) + ids == encode(tok, prompt + " Paris")
    assert tok.decode(ids).strip() == "Paris"
    assert target_ids(tok, prompt, " Paris ") == ids


def test_target_that_tokenizes_to_nothing_is_a_clear_error(tokenizers_on_disk):
    with pytest.raises(EditkitError, match="target is empty"):
        target_ids(tokenizers_on_disk["bpe"], "The city of", "   ")


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_keeps_each_rows_tokens(tokenizers_on_disk, side):
    tok = tokenizers_on_disk["bpe"]  # GPT-2 style: no pad token, EOS pads
    texts = ["Talin Vorsk plays the", "The capital city of the Arvel Republic is"]
    enc = batch_encode(tok, texts, padding_side=side)
    assert enc["input_ids"].shape == (2, max(len(encode(tok, t)) for t in texts))
    for row, text, n in zip(range(2), texts, enc["lengths"].tolist(), strict=True):
        mask = enc["attention_mask"][row].bool()
        assert mask.sum() == n
        assert enc["input_ids"][row][mask].tolist() == encode(tok, text)
        assert mask[-1 if side == "left" else 0]
    assert torch.all(enc["input_ids"][~enc["attention_mask"].bool()] == tok.eos_token_id)
