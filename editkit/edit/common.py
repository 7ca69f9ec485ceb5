"""What the locate-then-edit methods share: context prefixes, keys k at the subject's last token, request checks
(the target value v* / z is in `target.py`)."""

from __future__ import annotations

import torch

from editkit.errors import EditkitError
from editkit.hooks import Trace
from editkit.requests import EditRequest
from editkit.tokens import encode, pad_id, pad_rows, subject_span, target_ids, with_bos

PREFIX_STARTS = ["The", "Therefore", "Because", "I", "You"]


@torch.no_grad()
def context_prefixes(model, tokenizer, lengths_counts: list[list[int]], seed: int = 0) -> list[str]:
    """'{}' plus short texts sampled from the model (top-5, seeded), each as '<text>. {}' (ROME §3.1)."""
    device = next(model.parameters()).device
    g = torch.Generator(device="cpu").manual_seed(seed)
    out = ["{}"]
    for length, count in lengths_counts:
        starts = [PREFIX_STARTS[i % len(PREFIX_STARTS)] for i in range(count)]
        rows = [encode(tokenizer, s) for s in starts]
        for _ in range(length):
            logits = _last_logits(model, tokenizer, rows, device)
            if not torch.isfinite(logits).all():
                raise EditkitError("the model's logits are not finite (NaN or Inf); check the model's weights")
            top = logits.topk(min(5, logits.shape[-1]), dim=-1)
            pick = torch.multinomial(torch.softmax(top.values.float().cpu(), -1), 1, generator=g)
            rows = [r + [int(top.indices[i, pick[i, 0]])] for i, r in enumerate(rows)]
        for r in rows:
            text = tokenizer.decode(r, skip_special_tokens=True).replace("{", " ").replace("}", " ")
            out.append(f"{text}. {{}}")
    return out


def _last_logits(model, tokenizer, rows: list[list[int]], device) -> torch.Tensor:
    ids, mask = pad_rows(rows, pad_id(tokenizer))
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
    return logits[torch.arange(len(rows)), (mask.sum(1) - 1).to(device)]


def fill(prefix: str, request: EditRequest) -> str:
    """The request's prompt behind a context prefix ('{}' is the bare prompt)."""
    return prefix.replace("{}", request.text, 1)


def subject_last(tokenizer, text: str, subject: str) -> int:
    """Index of the subject's last token in `text` (MEMIT's 'subject_last' fact token)."""
    return subject_span(tokenizer, text, subject)[1] - 1


@torch.no_grad()
def io_at_subject(model, tokenizer, module: str, texts: list[str], subjects: list[str], bos: int | None = None):
    """(input, output) of `module` at each text's subject-last token (`bos` first on each text where given):
    `[n, in]`, `[n, out]`."""
    device = next(model.parameters()).device
    plain = [encode(tokenizer, t) for t in texts]
    rows = [with_bos(r, bos) for r in plain]
    last = [subject_last(tokenizer, t, s) for t, s in zip(texts, subjects, strict=True)]
    idx = torch.tensor([i + len(r) - len(p) for i, r, p in zip(last, rows, plain, strict=True)])
    ids, mask = pad_rows(rows, pad_id(tokenizer))
    with Trace(model, module, retain_input=True, stop=True) as tr:
        model(input_ids=ids.to(device), attention_mask=mask.to(device))
    at = torch.arange(len(rows))
    return tr[module].input[at, idx.to(device)], tr[module].output[at, idx.to(device)]


def mean_keys(model, tokenizer, adapter, layer: int, requests: list[EditRequest], prefixes: list[str], weights=None):
    """k̄ per request: the key (input of mlp_out) at the subject's last token, averaged over prefixes
    (uniformly, or with `weights` summing to 1); also the mean output there. Returns `[n, in]`, `[n, out]`."""
    module = adapter.name("mlp_out", layer)
    texts = [fill(p, r) for r in requests for p in prefixes]
    k, out = io_at_subject(model, tokenizer, module, texts, [r.subject for r in requests for _ in prefixes])
    w = torch.full((len(prefixes),), 1 / len(prefixes)) if weights is None else torch.as_tensor(weights)
    w = w.to(k.device, k.dtype)[None, :, None]
    k, out = k.view(len(requests), len(prefixes), -1), out.view(len(requests), len(prefixes), -1)
    return (k * w).sum(1), (out * w).sum(1)


def group_weights(lengths_counts: list[list[int]]) -> list[float]:
    """MEMIT's key averaging: the bare prompt and each group of generated prefixes count equally."""
    groups = [1] + [count for _, count in lengths_counts]
    return [1 / (len(groups) * size) for size in groups for _ in range(size)]


def check_requests(tokenizer, requests: list[EditRequest]) -> None:
    """Every request tokenizes: a non-empty target and a subject that covers tokens; errors name the request."""
    if not requests:
        raise EditkitError("no edit requests; pass --prompt/--subject/--target-new or --requests FILE")
    for i, r in enumerate(requests):
        try:
            target_ids(tokenizer, r.text, r.target_new)
            subject_span(tokenizer, r.text, r.subject)
        except EditkitError as e:
            raise EditkitError(f"request {i} ({r.subject!r}): {e}") from None
