"""What an edit costs the model elsewhere: perplexity on a held-out text slice, and retention of known facts
that no edit touches (the share whose top-1 answer is unchanged), measured before and after editing."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from editkit.edit.result import Context, behind
from editkit.errors import EditkitError
from editkit.tokens import encode, pad_rows, target_ids


@torch.no_grad()
def perplexity(
    model, tokenizer, texts: Sequence[str], max_len: int = 128, batch_size: int = 64, context: Context = None
) -> float:
    """exp of the mean negative log-likelihood per predicted token over all `texts`, each scored alone
    (its first `max_len` tokens, as `encode` gives them; the first token is not predicted). Behind a
    `context` (an in-context edit's), the text's tokens after it are the ones predicted."""
    device = next(model.parameters()).device
    rows, starts = [], []  # each text's tokens, and the position of the first one predicted
    for text, whole in zip(texts, behind(context, texts), strict=True):
        ids = encode(tokenizer, whole)
        head = encode(tokenizer, whole.removesuffix(text)) if context else []
        start = max(_common_prefix(head, ids), 1)
        ids = ids[: start - 1 + max_len]
        if len(ids) > start:
            rows.append(ids)
            starts.append(start)
    if not rows:
        raise EditkitError("no text of two or more tokens to measure perplexity on; pass a non-empty corpus")
    total, count = 0.0, 0
    for begin in range(0, len(rows), batch_size):
        chunk = rows[begin : begin + batch_size]
        ids, mask = pad_rows(chunk, 0)
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        # one row at a time in float64: the whole batch's would be rows x positions x vocabulary x 8 bytes twice
        # over (6 GB for 64 texts of 128 tokens of a 49k vocabulary), which the kernel pages in and out per batch
        nxt = ids[:, 1:, None].to(device)
        per_row = [r[:-1].double().log_softmax(-1).gather(-1, t)[..., 0] for r, t in zip(logits, nxt, strict=True)]
        logp = torch.stack(per_row).cpu()
        first = torch.tensor(starts[begin : begin + batch_size])[:, None]
        keep = mask[:, 1:].bool() & (torch.arange(1, ids.shape[1])[None] >= first)
        total -= float(logp[keep].sum())
        count += int(keep.sum())
    return math.exp(total / count)


def _common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens `a` and `b` share (where a context's tokens end inside context + text)."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


@torch.no_grad()
def top1(model, tokenizer, prompts: Sequence[str], batch_size: int = 64) -> list[int]:
    """The greedy next token after each prompt."""
    from editkit.models.predict import next_token_probs

    return next_token_probs(model, tokenizer, list(prompts), batch_size).argmax(-1).tolist()


@dataclass(frozen=True)
class Probe:
    """A fixed text slice and a fixed sample of (prompt, answer) facts that the run's edits do not touch."""

    source: str
    texts: tuple[str, ...]
    facts: tuple[tuple[str, str], ...]
    max_len: int = 128
    batch_size: int = 64

    def describe(self) -> dict:
        return {"source": self.source, "texts": len(self.texts), "facts": len(self.facts), "max_len": self.max_len}

    def baseline(self, model, tokenizer) -> dict:
        """Before editing: perplexity, and each fact's top-1 token with whether it is the answer (known)."""
        pred = top1(model, tokenizer, [p for p, _ in self.facts], self.batch_size)
        known = [t == target_ids(tokenizer, p, a)[0] for t, (p, a) in zip(pred, self.facts, strict=True)]
        ppl = perplexity(model, tokenizer, self.texts, self.max_len, self.batch_size)
        return {"perplexity": ppl, "top1": pred, "known": known}

    def measure(self, model, tokenizer, base: dict, context: Context = None) -> dict:
        """Now: perplexity, and the share of the known facts whose top-1 token is the one of `base` (None
        when the unedited model knew none); both read behind `context` (an in-context edit's) if given."""
        ppl = perplexity(model, tokenizer, self.texts, self.max_len, self.batch_size, context)
        known = [(p, t) for (p, _), t, k in zip(self.facts, base["top1"], base["known"], strict=True) if k]
        if not known:
            return {"perplexity": ppl, "retention": None}
        now = top1(model, tokenizer, behind(context, [p for p, _ in known]), self.batch_size)
        return {"perplexity": ppl, "retention": sum(a == t for a, (_, t) in zip(now, known, strict=True)) / len(known)}


def corpus_probe(
    corpus: str, known_file: str, exclude_subjects: set[str], model=None, tokenizer=None, n_texts: int = 200,
    n_facts: int = 200, batch_size: int = 64,
) -> Probe:  # fmt: skip
    """The first `n_texts` texts of `corpus` (any corpus `editkit stats` reads: samples:N from `model`, a
    .txt/.jsonl file, a dataset name) and the first `n_facts` facts of a known_1000-format file whose
    subject is not in `exclude_subjects` (the edited dataset's)."""
    from editkit.corpus import open_corpus
    from editkit.evaluate.datasets import load_dataset

    texts = open_corpus(corpus, model, tokenizer)
    slice_ = tuple(itertools.islice(texts.texts(), n_texts))
    known = [r for r in load_dataset("known_1000", known_file) if r.subject not in exclude_subjects]
    if not known:
        raise EditkitError(f"every fact of {known_file} is about a subject the dataset edits; pass other facts")
    facts = tuple((r.prompt, r.attribute) for r in known[:n_facts])
    return Probe(f"{corpus} ({texts.identity}); facts {known_file}", slice_, facts, batch_size=batch_size)


def collapse(curve: Sequence[dict], base_ppl: float, ppl_factor: float = 10.0, retention: float = 0.5) -> dict | None:
    """The first point of `curve` ({"edits", "perplexity", "retention"}) where perplexity exceeds
    `ppl_factor` x the unedited model's or retention falls below `retention`, with the last measured edit
    count before it (`after`: the collapse happened in between where capability is not measured every edit);
    None if none does."""
    after = 0
    for point in curve:
        reasons = []
        if point["perplexity"] > ppl_factor * base_ppl:
            reasons.append(f"perplexity {point['perplexity']:.1f} > {ppl_factor:g} x {base_ppl:.1f} (unedited)")
        if point["retention"] is not None and point["retention"] < retention:
            reasons.append(f"retention {point['retention']:.1%} < {retention:.0%}")
        if reasons:
            return {"edit": point["edits"], "after": after, "reason": "; ".join(reasons)}
        after = point["edits"]
    return None
