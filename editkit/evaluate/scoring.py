"""Batched, right-padded teacher-forced scoring of targets after prompts, and seeded sampling of text."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from editkit.edit.memory import prompt_positions
from editkit.models.cache import SharedPrefix, cache_kwarg, shared_length
from editkit.tokens import batch_encode, encode, pad_id, pad_rows, target_ids


@dataclass(frozen=True)
class TargetScore:
    """Per-token log-probabilities of `target` (teacher-forced after the prompt), and the model's top-1 token
    at each of those positions."""

    target: tuple[int, ...]
    logprobs: tuple[float, ...]
    argmax: tuple[int, ...]

    @property
    def nll(self) -> float:
        """Mean negative log-probability per target token (the papers' full-sequence score)."""
        return -sum(self.logprobs) / len(self.logprobs)

    @property
    def correct(self) -> list[bool]:
        """Whether the top-1 prediction equals the target token, per token."""
        return [a == t for a, t in zip(self.argmax, self.target, strict=True)]


def _rows(tokenizer, prompts: list[str], targets: list[str]) -> list[tuple[list[int], list[int]]]:
    return [(encode(tokenizer, p), target_ids(tokenizer, p, t)) for p, t in zip(prompts, targets, strict=True)]


@torch.no_grad()
def score_targets(
    model, tokenizer, prompts: list[str], targets: list[str], batch_size: int = 64, share_prefix: bool = False
) -> list[TargetScore]:
    """Score `targets[i]` after `prompts[i]` for all i, `batch_size` rows per forward pass.

    Rows are sorted by length so batches pad little; each row is scored at its own positions. With
    `share_prefix`, the tokens every row begins with (an in-context edit's context) run once, as a KV cache.
    """
    device = next(model.parameters()).device
    rows = _rows(tokenizer, prompts, targets)
    P = shared_length([h for h, _ in rows], min(len(h) for h, _ in rows) - 1) if share_prefix and rows else 0
    prefix = SharedPrefix(model, rows[0][0][:P]) if P else None
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]) + len(rows[i][1]))
    out: list[TargetScore | None] = [None] * len(rows)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        ids, mask = pad_rows([(rows[i][0] + rows[i][1])[P:] for i in chunk], pad_id(tokenizer))
        heads = torch.tensor([len(rows[i][0]) for i in chunk])[:, None]
        prompt = torch.arange(P, P + ids.shape[1])[None] < heads
        kwargs = {"attention_mask": mask.to(device)}
        if prefix:
            kwargs = {"attention_mask": prefix.mask(mask.to(device)), cache_kwarg(model): prefix.cache(len(chunk))}
        with prompt_positions(prompt.to(device)):  # a side memory routing whole sequences decides on the prompt
            logits = model(input_ids=ids.to(device), **kwargs).logits
        for r, i in enumerate(chunk):
            head, tgt = rows[i]
            sl = logits[r, len(head) - 1 - P : len(head) + len(tgt) - 1 - P].float().log_softmax(-1).cpu()
            lp = sl[torch.arange(len(tgt)), torch.tensor(tgt)]
            out[i] = TargetScore(tuple(tgt), tuple(lp.tolist()), tuple(sl.argmax(-1).tolist()))
    return out


@torch.no_grad()
def generate_texts(
    model, tokenizer, prompts: list[str], max_length: int = 100, top_k: int = 5, seed: int = 0
) -> list[str]:
    """One top-`top_k` sample per prompt, `max_length` tokens in all (prompt included, as ROME's
    `generate_fast`), decoded with the prompt. Seeded without touching the global RNG."""
    device = next(model.parameters()).device
    enc = batch_encode(tokenizer, prompts, padding_side="left")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        out = model.generate(
            input_ids=enc["input_ids"].to(device),
            attention_mask=enc["attention_mask"].to(device),
            do_sample=True,
            top_k=top_k,
            top_p=1.0,
            temperature=1.0,
            max_length=max(max_length, int(enc["lengths"].max()) + 1),
            pad_token_id=pad_id(tokenizer),
        )
    width = enc["input_ids"].shape[1]
    return [
        tokenizer.decode(row[width - n : width].tolist() + row[width:].tolist(), skip_special_tokens=True)
        for row, n in zip(out.cpu(), enc["lengths"].tolist(), strict=True)
    ]
