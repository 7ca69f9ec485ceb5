"""Feature-level edits written into the weights (no hooks at run time; the checkpoint loads in plain
transformers). Both return the `EditResult` of the editing methods: saved, applied, reverted bit for bit.

- Ablation: remove feature i's unit decoder direction d from what a layer's MLP (or attention) writes,
  W_out ← (I − d dᵀ) W_out, a rank-one update v uᵀ with v = −d, u = W_outᵀ d. (The output bias, a
  constant, is left as it is.)
- Feature-conditioned rank-one edit: ΔW = Δv kᵀ / (kᵀk) on the MLP output projection at the SAE's layer,
  k the subject's key (the projection's input at the subject's last token, as in ROME), so the edited
  layer writes Δv more for that key. Δv = s Σ_j c_j d_j lies along a few feature directions d_j: the
  change δ* that makes the new target likely (optimised as ROME's v*) is expressed in features picked by
  matching pursuit (c_j > 0 strengthens a feature, c_j < 0 weakens it), and s is the smallest strength,
  by line search, at which the new target is the top prediction.

Neither edit encodes activations with the SAE (both use only its decoder directions), so the prompts are read
as the edited model is used and evaluated, without the BOS an SAE with `prepend_bos` was trained with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from editkit.edit.result import Delta, EditResult, weight
from editkit.errors import EditkitError
from editkit.features.hookpoints import HookPoint, hook_value, resolve_hook, trace_hook
from editkit.features.sae import SAE
from editkit.requests import EditRequest
from editkit.tokens import encode, subject_span, target_ids

WRITERS = ("mlp", "attn")


def _residual_hook(adapter, sae: SAE) -> HookPoint:
    hook = resolve_hook(adapter, sae.cfg.hook_name)
    if hook.kind not in ("block", "mlp", "attn") or hook.is_input and hook.kind != "block":
        raise EditkitError(
            f"feature edits need an SAE on the residual stream or a layer's output, not {hook.name}; "
            "use an SAE at hook_resid_post, hook_mlp_out or hook_attn_out"
        )
    return hook


def writer_module(adapter, writer: str, layer: int) -> str:
    """The output projection through which `writer` ('mlp' or 'attn') at `layer` writes to the residual stream."""
    if writer not in WRITERS:
        raise EditkitError(f"unknown writer {writer!r}; use one of {', '.join(WRITERS)}")
    return adapter.name("mlp_out" if writer == "mlp" else "attn_out", layer)


@torch.no_grad()
def ablate_feature(
    model, adapter, sae: SAE, feature: int, layers: list[int] | None = None, writer: str = "mlp"
) -> EditResult:
    """Project feature `feature`'s decoder direction out of the `writer` output weights at `layers`
    (default: the SAE's layer)."""
    hook = _residual_hook(adapter, sae)
    d = sae.direction(feature).float()
    layers = [hook.layer] if layers is None else layers
    result = EditResult("feature-ablation", {"feature": feature, "hook": hook.name, "layers": layers, "writer": writer})
    for layer in layers:
        module = writer_module(adapter, writer, layer)
        w = weight(model, module).float()
        if w.shape[0] != d.numel():
            raise EditkitError(f"d_in mismatch: {module} writes {w.shape[0]}-wide outputs, the SAE reads {d.numel()}")
        result.push(model, Delta(module, u=w.T @ d.to(w.device), v=-d.to(w.device)))
    return result.seal(model)


def _subject_last(tokenizer, request: EditRequest) -> int:
    return subject_span(tokenizer, request.text, request.subject)[1] - 1


@dataclass(frozen=True)
class _ChangeHparams:
    """v* settings for δ*: the bare prompt's NLL only (no KL, no weight decay, no clamp)."""

    v_lr: float
    v_num_grad_steps: int
    kl_factor: float = 0.0
    v_weight_decay: float = 0.0
    clamp_norm_factor: float = math.inf
    v_stop_prob: float | None = None  # only the papers' stop (loss < 5e-2) and the step count
    v_plateau_steps: int = 0
    v_plateau_tol: float = 0.0


def optimal_change(model, tokenizer, adapter, hook: HookPoint, request: EditRequest, pos: int, steps: int = 60):
    """(x, δ*): the activation at the subject's last token and the change there that makes the new target
    likely: ROME's v* − v (`edit.target.optimise_targets`) at the SAE's hook, on the bare prompt, Adam's
    learning rate ‖x‖/50."""
    from editkit.edit.target import optimise_targets

    ids = torch.tensor([encode(tokenizer, request.text)], device=next(model.parameters()).device)
    with torch.no_grad(), trace_hook(model, hook, stop=True) as tr:
        model(input_ids=ids)
    x = hook_value(tr, hook)[0, pos].float()
    hp = _ChangeHparams(v_lr=x.norm().item() / 50, v_num_grad_steps=steps)
    (target,) = optimise_targets(model, tokenizer, adapter, hook.module, [request], ["{}"], hp)
    return target.init, target.delta


def _unit_decoder(sae: SAE) -> torch.Tensor:
    dirs = sae.W_dec.detach().float()
    return dirs / dirs.norm(dim=1, keepdim=True)


def fit_features(sae: SAE, delta: torch.Tensor, features: list[int]) -> dict[int, float]:
    """Feature → coefficient: δ's least-squares fit on the unit decoder directions of `features`."""
    dirs = _unit_decoder(sae)[features]
    return dict(zip(features, torch.linalg.lstsq(dirs.T, delta[:, None]).solution[:, 0].tolist(), strict=True))


def choose_features(sae: SAE, delta: torch.Tensor, n: int = 16) -> dict[int, float]:
    """`n` features picked greedily to explain δ (orthogonal matching pursuit), with their least-squares
    coefficients: positive ones are strengthened, negative ones weakened."""
    dirs = _unit_decoder(sae)
    picked: list[int] = []
    residual = delta
    for _ in range(n):
        scores = (dirs @ residual).abs()
        scores[picked] = -1
        picked.append(int(scores.argmax()))
        coefs = fit_features(sae, delta, picked)
        residual = delta - dirs[picked].T @ torch.tensor(list(coefs.values()), device=delta.device)
    return coefs


def _predicts(model, tokenizer, request: EditRequest, hook: HookPoint, pos: int, add: torch.Tensor | None) -> bool:
    """Whether the model's top-1 after the prompt is the new target's first token (with `add` at the hook)."""
    device = next(model.parameters()).device
    ids = torch.tensor([encode(tokenizer, request.text)], device=device)
    new = target_ids(tokenizer, request.text, request.target_new)[0]

    def edit(x):
        x = x.clone()
        x[:, pos] += add.to(x.dtype)
        return x

    with torch.no_grad(), trace_hook(model, hook, edit=None if add is None else edit, retain=False):
        return model(input_ids=ids).logits[0, -1].argmax().item() == new


def feature_rank_one_edit(
    model,
    tokenizer,
    adapter,
    sae: SAE,
    request: EditRequest,
    features: list[int] | None = None,
    n_features: int = 16,
    bisect_steps: int = 8,
) -> EditResult:
    """Rank-one edit of the MLP output projection at the SAE's layer whose value change lies along feature
    directions (see the module docstring). The direction is the optimal change δ* expressed in `features`
    (default: `choose_features`); its strength is the smallest that makes the new target the top-1."""
    hook = _residual_hook(adapter, sae)
    if hook.kind == "attn" or hook.side == "input":
        raise EditkitError(
            "the feature-conditioned edit writes through the MLP; use an SAE at hook_resid_post or "
            f"hook_mlp_out, not {hook.name}"
        )
    sae = sae.to(next(model.parameters()).device)
    pos = _subject_last(tokenizer, request)
    _, delta = optimal_change(model, tokenizer, adapter, hook, request, pos)
    if features is None:
        coefs = choose_features(sae, delta, n_features)
    else:
        coefs = fit_features(sae, delta, [sae.check_feature(i) for i in features])
    direction = _unit_decoder(sae)[list(coefs)].T @ torch.tensor(list(coefs.values()), device=delta.device)
    scale = _line_search(lambda s: _predicts(model, tokenizer, request, hook, pos, s * direction), bisect_steps)
    if scale is None:
        raise EditkitError(
            f"no strength up to 4 makes the model predict {request.target_new!r} for {request.subject!r} along "
            f"features {list(coefs)}; pass more features (--n-features) or others"
        )
    module = adapter.name("mlp_out", hook.layer)
    k = _key(model, tokenizer, module, request, pos)
    value = scale * direction
    hparams = {"hook": hook.name, "layer": hook.layer, "features": coefs, "scale": scale}
    result = EditResult("feature-rank-one", hparams, requests=[request])
    result.push(model, Delta(module, u=k / (k @ k), v=value, keys=k[None].clone(), values=value[None].clone()))
    return result.seal(model)


def _line_search(flips, steps: int) -> float | None:
    """The smallest s (to a factor 2^-steps) with flips(s): doubling from 1/64 up to 4, then bisection."""
    lo, hi = 0.0, 1 / 64
    while not flips(hi):
        lo, hi = hi, hi * 2
        if hi > 4:
            return None
    for _ in range(steps):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if flips(mid) else (mid, hi)
    return hi


@torch.no_grad()
def _key(model, tokenizer, module: str, request: EditRequest, pos: int) -> torch.Tensor:
    from editkit.hooks import Trace

    ids = torch.tensor([encode(tokenizer, request.text)], device=next(model.parameters()).device)
    with Trace(model, module, retain_output=False, retain_input=True, stop=True) as tr:
        model(input_ids=ids)
    return tr[module].input[0, pos].float()
