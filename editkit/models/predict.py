"""Next-token prediction, batched and right-padded (each row scored at its own last position)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from editkit.tokens import batch_encode


@dataclass(frozen=True)
class Prediction:
    token: str
    token_id: int
    prob: float


@torch.no_grad()
def next_token_probs(model, tokenizer, prompts: list[str], batch_size: int = 64) -> torch.Tensor:
    """`[len(prompts), vocab]` float32 probabilities of the token that follows each prompt."""
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(prompts), batch_size):
        enc = batch_encode(tokenizer, prompts[i : i + batch_size])
        logits = model(input_ids=enc["input_ids"].to(device), attention_mask=enc["attention_mask"].to(device)).logits
        last = logits[torch.arange(len(enc["lengths"])), enc["lengths"].to(device) - 1]
        out.append(torch.softmax(last.float(), dim=-1).cpu())
    return torch.cat(out)


def top_k(model, tokenizer, prompt: str, k: int = 5) -> list[Prediction]:
    """The `k` most likely next tokens after `prompt`, most likely first."""
    probs = next_token_probs(model, tokenizer, [prompt])[0]
    values, ids = probs.topk(min(k, probs.numel()))
    return [Prediction(tokenizer.decode([i]), i, p) for p, i in zip(values.tolist(), ids.tolist(), strict=True)]
