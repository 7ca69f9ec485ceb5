"""The generation protocol (as "The Mirage of Model Editing"'s WILD): greedy decoding from the prompt until a
natural stop, and whether the normalised answer starts with (or contains) the target."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

import torch

from editkit.errors import EditkitError
from editkit.models.cache import SharedPrefix, cache_kwarg, shared_length
from editkit.tokens import encode, pad_id, pad_rows

# A natural stop: a newline, or a sentence end (. ! ?) followed by whitespace; generation also ends at the
# end-of-sequence token or after `max_new_tokens` (a sentence end closing the text then counts too).
_STOP_WHILE = re.compile(r"\n|[.!?]\s")
_STOP_FINAL = re.compile(r"\n|[.!?](?=\s|$)")
STOP_RULE = "end of sequence, a newline, or a sentence end (. ! ? before whitespace or at the end)"
MATCH_RULE = (
    "normalised (lower case, punctuation removed, whitespace collapsed) answer starts with the normalised "
    "target at a word boundary; 'contains': the target occurs as whole words anywhere in the answer"
)


def decoding(max_new_tokens: int) -> dict:
    """The decoding settings and rules a run records in config.json and summary.json."""
    return {"strategy": "greedy", "max_new_tokens": max_new_tokens, "stop": STOP_RULE, "match": MATCH_RULE}


def cut_at_stop(text: str) -> str:
    """The answer: `text` up to its first natural stop (the stop itself dropped)."""
    m = _STOP_FINAL.search(text)
    return text[: m.start()] if m else text


def normalize(text: str) -> str:
    """Lower case, every Unicode punctuation mark removed, whitespace collapsed and stripped."""
    text = "".join(" " if unicodedata.category(c).startswith("P") else c for c in text.lower())
    return " ".join(text.split())


def starts_with(answer: str, target: str) -> bool:
    """Whether the normalised answer begins with the normalised target, ending at a word boundary."""
    a, t = normalize(answer), normalize(target)
    return bool(t) and (a == t or a.startswith(t + " "))


def contains(answer: str, target: str) -> bool:
    """Whether the normalised target occurs as whole words in the normalised answer."""
    t = normalize(target)
    return bool(t) and f" {t} " in f" {normalize(answer)} "


class _NaturalStop:
    """Stopping criterion: a row is done once its new text holds a newline or a sentence end."""

    def __init__(self, tokenizer, width: int):
        self.tokenizer, self.width = tokenizer, width

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.width :], skip_special_tokens=True)
        return torch.tensor([bool(_STOP_WHILE.search(t)) for t in texts], device=input_ids.device)


@torch.no_grad()
def greedy_answers(
    model, tokenizer, prompts: Sequence[str], max_new_tokens: int = 20, batch_size: int = 64, share_prefix: bool = False
) -> list[str]:
    """Each prompt's greedy continuation up to its natural stop (see STOP_RULE), `batch_size` prompts per
    left-padded batch with the KV cache; rows are grouped by length, and the answers do not depend on it.
    With `share_prefix`, the tokens every prompt begins with run once and the padding goes after them."""
    from transformers import GenerationConfig, StoppingCriteriaList

    device = next(model.parameters()).device
    eos = tokenizer.eos_token_id
    config = GenerationConfig(
        do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=pad_id(tokenizer), eos_token_id=eos
    )
    rows = [encode(tokenizer, p) for p in prompts]
    empty = [p for p, r in zip(prompts, rows, strict=True) if not r]
    if empty:
        raise EditkitError(f"text {empty[0]!r} tokenizes to nothing; pass a non-empty prompt")
    P = shared_length(rows, min(map(len, rows)) - 1) if share_prefix and rows else 0
    prefix = SharedPrefix(model, rows[0][:P]) if P else None
    order = sorted(range(len(prompts)), key=lambda i: len(rows[i]))
    out: list[str] = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        ids, mask = pad_rows([rows[i][P:] for i in chunk], pad_id(tokenizer), "left")
        kwargs = {}
        if prefix:
            head = torch.tensor([rows[chunk[0]][:P]]).expand(len(chunk), -1)
            ids, mask = torch.cat([head, ids], 1), prefix.mask(mask)
            kwargs[cache_kwarg(model)] = prefix.cache(len(chunk))
        width = ids.shape[1]
        ids = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            generation_config=config,
            stopping_criteria=StoppingCriteriaList([_NaturalStop(tokenizer, width)]),
            **kwargs,
        )
        for i, row in zip(chunk, ids[:, width:].tolist(), strict=True):
            if eos is not None and eos in row:
                row = row[: row.index(eos)]
            out[i] = cut_at_stop(tokenizer.decode(row, skip_special_tokens=True))
    return out


def answer_rates(answers: Sequence[str], targets: Sequence[str]) -> tuple[float, float]:
    """(share of answers starting with their target, share containing it)."""
    pairs = list(zip(answers, targets, strict=True))
    n = len(pairs)
    return sum(starts_with(a, t) for a, t in pairs) / n, sum(contains(a, t) for a, t in pairs) / n
