"""What the locate-then-edit methods share: context prefixes, keys k at the subject's last token, and the
target value v* (ROME's v, MEMIT's z) found by optimising a residual δ at that token."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from editkit.errors import EditkitError
from editkit.hooks import Trace
from editkit.requests import EditRequest
from editkit.tokens import encode, pad_id, subject_span, target_ids

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
    ids, mask, last = pad_rows(rows, pad_id(tokenizer))
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
    return logits[torch.arange(len(rows)), last.to(device)]


def pad_rows(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids, attention mask, and each row's last index."""
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask, mask.sum(1) - 1


def fill(prefix: str, request: EditRequest) -> str:
    """The request's prompt behind a context prefix ('{}' is the bare prompt)."""
    return prefix.replace("{}", request.text, 1)


def subject_last(tokenizer, text: str, subject: str) -> int:
    """Index of the subject's last token in `text` (MEMIT's 'subject_last' fact token)."""
    return subject_span(tokenizer, text, subject)[1] - 1


@torch.no_grad()
def io_at_subject(model, tokenizer, module: str, texts: list[str], subjects: list[str]):
    """(input, output) of `module` at each text's subject-last token: `[n, in]`, `[n, out]`."""
    device = next(model.parameters()).device
    rows = [encode(tokenizer, t) for t in texts]
    idx = torch.tensor([subject_last(tokenizer, t, s) for t, s in zip(texts, subjects, strict=True)])
    ids, mask, _ = pad_rows(rows, pad_id(tokenizer))
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


@contextmanager
def frozen(model):
    """Temporarily stop gradients to the model's parameters (only δ is optimised)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


@dataclass
class Target:
    """v* = init + delta at `module`'s output, the subject's last token of the bare prompt."""

    init: torch.Tensor
    delta: torch.Tensor
    nll: float

    @property
    def value(self) -> torch.Tensor:
        return self.init + self.delta


def optimise_target(model, tokenizer, module: str, request: EditRequest, prefixes: list[str], hp) -> Target:
    """ROME's v* / MEMIT's z: Adam on δ added to `module`'s output at the subject's last token, minimising
    the target's NLL over the prefixed prompts + kl_factor·KL on '{subject} is a' + weight decay, with
    ‖δ‖ clamped to clamp_norm_factor·‖init‖."""
    device = next(model.parameters()).device
    new = target_ids(tokenizer, request.text, request.target_new)
    rewrite = [encode(tokenizer, fill(p, request)) for p in prefixes]
    kl_text = f"{request.subject} is a"
    rows = [r + new[:-1] for r in rewrite] + [encode(tokenizer, kl_text)]
    look = [subject_last(tokenizer, fill(p, request), request.subject) for p in prefixes]
    look.append(subject_last(tokenizer, kl_text, request.subject))
    ids, mask, _ = pad_rows(rows, pad_id(tokenizer))
    ids, mask = ids.to(device), mask.to(device)
    at = torch.arange(len(rows), device=device)
    look_t = torch.tensor(look, device=device)
    n = len(rewrite)
    # position of each target token's prediction, per rewriting row
    pos = torch.tensor([[len(r) - 1 + j for j in range(len(new))] for r in rewrite], device=device)
    tgt = torch.tensor(new, device=device).expand(n, -1)

    with torch.no_grad(), Trace(model, module) as tr:
        kl_init = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits[n, look[-1]].float(), -1)
    init = tr[module].output[0, look[0]].detach().float()
    if not torch.isfinite(init).all():
        raise EditkitError(
            f"the output of {module} at {request.subject!r} is not finite (NaN or Inf); check the model's weights"
        )
    delta = torch.zeros_like(init, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=hp.v_lr)
    max_norm = hp.clamp_norm_factor * init.norm()

    def add_delta(out: torch.Tensor, name: str) -> torch.Tensor:
        out = out.clone()
        out[at, look_t] += delta.to(out.dtype)
        return out

    nll = float("nan")
    with frozen(model):
        for step in range(hp.v_num_grad_steps):
            with Trace(model, module, retain_output=False, edit_output=add_delta):
                logits = model(input_ids=ids, attention_mask=mask).logits.float()
            logp = torch.log_softmax(logits[:n], -1)
            nll_t = -logp[torch.arange(n, device=device)[:, None], pos, tgt].mean()
            kl_logp = torch.log_softmax(logits[n, look[-1]], -1)
            kl = hp.kl_factor * F.kl_div(kl_init, kl_logp, log_target=True, reduction="sum")  # KL(now ‖ init)
            loss = nll_t + kl + hp.v_weight_decay * delta.norm() / init.norm() ** 2
            nll = nll_t.item()
            if loss.item() < 5e-2 or step == hp.v_num_grad_steps - 1:
                break
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                if delta.norm() > max_norm:
                    delta.mul_(max_norm / delta.norm())
    if not torch.isfinite(delta).all():
        raise EditkitError(f"optimising the target for {request.subject!r} diverged; lower v_lr (e.g. --set v_lr=0.1)")
    return Target(init, delta.detach(), nll)


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
