"""Which SAE features carry a fact: attribution by activation × gradient, verified by intervention.

The SAE is spliced into the model at its hook with its error term kept, x = f W_dec + b_dec + ε (ε
detached), so the forward pass is unchanged and ∂m/∂f is exact. For a metric m (the answer's
log-probability, or its logit minus a second answer's) every feature i at every position t scores
    a[t, i] = f[t, i] · ∂m/∂f[t, i]
a linear estimate of what zero-ablating it would remove (Syed et al. 2023, attribution patching;
Marks et al. 2024, sparse feature circuits). The top features are then checked by really ablating each
one (x ← x − f[t, i] W_dec,i at t) and, given a counterfactual prompt, by patching its activation there.
Both prompts are read as the SAE was trained (its BOS first where `prepend_bos`); positions count that BOS.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from editkit.errors import EditkitError
from editkit.features.hookpoints import hook_value, resolve_hook, trace_hook
from editkit.features.sae import SAE
from editkit.features.store import keep_mask
from editkit.tokens import encode, subject_span, target_ids, with_bos


@dataclass
class FeatureScore:
    """One feature at one position: its activation, attribution, and the measured effects on the metric."""

    feature: int
    position: int
    token: str
    activation: float
    attribution: float
    ablation: float | None = None
    patch: float | None = None


@dataclass
class AttributionResult:
    prompt: str
    tokens: list[str]
    hook_name: str
    target: str
    target_alt: str | None
    metric: float
    subject_range: tuple[int, int] | None
    features: list[FeatureScore] = field(default_factory=list)
    counterfactual: str | None = None

    @property
    def metric_name(self) -> str:
        return f"logit({self.target}) − logit({self.target_alt})" if self.target_alt else f"log p({self.target})"

    def to_json(self) -> dict:
        return {**asdict(self), "metric_name": self.metric_name}


def _metric(logits: torch.Tensor, target: int, alt: int | None) -> torch.Tensor:
    """Per row: log p(target) at the last position, or logit(target) − logit(alt)."""
    last = logits[:, -1].float()
    if alt is None:
        return torch.log_softmax(last, -1)[:, target]
    return last[:, target] - last[:, alt]


def _feature_grads(model, hook, sae: SAE, ids: torch.Tensor, target: int, alt: int | None):
    """(f [T, d_sae], ∂m/∂f, m) with the SAE spliced in at `hook` (error term kept)."""
    from editkit.tensors import frozen

    held = {}

    def splice(x: torch.Tensor) -> torch.Tensor:
        f = sae.encode(x).detach().requires_grad_(True)
        error = (x - sae.decode(f)).detach()
        held["f"] = f
        return (sae.decode(f) + error).to(x.dtype)

    with frozen(model), torch.enable_grad(), trace_hook(model, hook, edit=splice, retain=False):
        m = _metric(model(input_ids=ids).logits, target, alt)[0]
        m.backward()
    f = held["f"]
    return f.detach()[0], f.grad[0], m.item()


@torch.no_grad()
def _run_edits(model, hook, sae: SAE, ids: torch.Tensor, edits: list[tuple[int, int, float]], target, alt):
    """Metric per edit (position, feature, new activation − old), each in its own row of one batch."""
    rows = ids.expand(len(edits), -1)
    deltas = torch.zeros(len(edits), ids.shape[1], sae.cfg.d_in, device=ids.device)
    for r, (pos, feat, change) in enumerate(edits):
        deltas[r, pos] = change * sae.W_dec[feat].float()

    with trace_hook(model, hook, edit=lambda x: x + deltas.to(x.dtype), retain=False):
        return _metric(model(input_ids=rows).logits, target, alt).tolist()


def attribute_features(
    model,
    tokenizer,
    adapter,
    sae: SAE,
    prompt: str,
    target: str | None = None,
    target_alt: str | None = None,
    subject: str | None = None,
    counterfactual: str | None = None,
    top: int = 10,
) -> AttributionResult:
    """Score every feature at every position of `prompt` for `target` (default: the model's top answer),
    return the `top` by |attribution|, each verified by ablation (and by patching from `counterfactual`,
    a prompt of the same shape, aligned from the end)."""
    if top < 1:
        raise EditkitError(f"--top must be at least 1, got {top}")
    sae.check_not_transcoder("feature attribution")
    hook = resolve_hook(adapter, sae.cfg.hook_name)
    device = next(model.parameters()).device
    sae = sae.to(device)
    bos = sae.bos(tokenizer)
    plain = encode(tokenizer, prompt)
    ids = torch.tensor([with_bos(plain, bos)], device=device)
    shift = ids.shape[1] - len(plain)  # 1 where a BOS was put first
    if target is None:
        with torch.no_grad():
            target = tokenizer.decode(model(input_ids=ids).logits[0, -1].argmax().item()).strip()
    t_id = target_ids(tokenizer, prompt, target)[0]
    a_id = target_ids(tokenizer, prompt, target_alt)[0] if target_alt else None
    if a_id == t_id:
        raise EditkitError(f"--target {target!r} and --target-alt {target_alt!r} start with the same token")
    f, grad, m = _feature_grads(model, hook, sae, ids, t_id, a_id)
    trained = keep_mask(ids.cpu(), torch.ones_like(ids.cpu()), tokenizer, skip_bos=True)[0].to(device)
    scores = f * grad * trained.unsqueeze(-1)  # special tokens (a BOS: never in the SAE's training data) score 0
    flat = scores.abs().flatten().topk(min(top, scores.numel()))
    picks = [divmod(i, sae.cfg.d_sae) for i in flat.indices.tolist()]
    tokens = [tokenizer.decode([i]) for i in ids[0].tolist()]
    result = AttributionResult(
        prompt=prompt,
        tokens=tokens,
        hook_name=hook.name,
        target=target,
        target_alt=target_alt,
        metric=m,
        subject_range=tuple(p + shift for p in subject_span(tokenizer, prompt, subject)) if subject else None,
        counterfactual=counterfactual,
        features=[
            FeatureScore(feat, pos, tokens[pos], f[pos, feat].item(), scores[pos, feat].item())
            for pos, feat in picks
            if f[pos, feat] > 0 and trained[pos]
        ],
    )
    verify(model, tokenizer, hook, sae, ids, result, t_id, a_id)
    return result


def verify(model, tokenizer, hook, sae: SAE, ids: torch.Tensor, result: AttributionResult, t_id, a_id) -> None:
    """Fill each score's measured ablation effect, and its patching effect given a counterfactual prompt."""
    if not result.features:
        return
    edits = [(s.position, s.feature, -s.activation) for s in result.features]
    for s, value in zip(result.features, _run_edits(model, hook, sae, ids, edits, t_id, a_id), strict=True):
        s.ablation = value - result.metric
    if result.counterfactual is None:
        return
    cf_ids = torch.tensor([with_bos(encode(tokenizer, result.counterfactual), sae.bos(tokenizer))], device=ids.device)
    with torch.no_grad(), trace_hook(model, hook) as tr:
        model(input_ids=cf_ids)
    cf = sae.encode(hook_value(tr, hook))[0]
    shift = cf_ids.shape[1] - ids.shape[1]
    edits = [
        (s.position, s.feature, cf[max(0, s.position + shift), s.feature].item() - s.activation)
        for s in result.features
    ]
    for s, value in zip(result.features, _run_edits(model, hook, sae, ids, edits, t_id, a_id), strict=True):
        s.patch = value - result.metric
