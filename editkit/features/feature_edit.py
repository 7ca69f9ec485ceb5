"""Feature-level edits written into the weights (no hooks at run time; the checkpoint loads in plain
transformers). Both return the `EditResult` of the editing methods: saved, applied, reverted bit for bit.

- Ablation: remove feature i's unit decoder direction d from what a layer's MLP (or attention) writes,
  W_out ← (I − d dᵀ) W_out, a rank-one update v uᵀ with v = −d, u = W_outᵀ d. (The output bias, a
  constant, is left as it is.)
- Feature-conditioned rank-one edit: ΔW = Δv kᵀ / (kᵀk) on the MLP output projection at the SAE's layer,
  k the subject's key (the projection's input at the subject's last token, as in ROME), so the edited
  layer writes Δv more for that key. Δv lies along feature directions: s Σ W_dec,j of the strengthened
  features j minus f_w W_dec,w of the weakened ones w (removing them); s is set by a line search until
  the new target is the top prediction.
"""

from __future__ import annotations

import torch

from editkit.edit.result import Delta, EditResult, weight
from editkit.errors import EditkitError
from editkit.features.hookpoints import HookPoint, resolve_hook, trace_hook
from editkit.features.sae import SAE
from editkit.requests import EditRequest
from editkit.tokens import encode, subject_span, target_ids

#: attention output projections per family (what attention writes into the residual stream)
ATTN_OUT = {
    "gpt2": "transformer.h.{}.attn.c_proj",
    "gptj": "transformer.h.{}.attn.out_proj",
    "gpt_neox": "gpt_neox.layers.{}.attention.dense",
    "llama": "model.layers.{}.self_attn.o_proj",
    "mistral": "model.layers.{}.self_attn.o_proj",
    "qwen2": "model.layers.{}.self_attn.o_proj",
}
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
    adapter.name("block", layer)  # range check
    return (
        adapter.name("mlp_out", layer) if writer == "mlp" else ATTN_OUT[adapter.family].format(layer % adapter.n_layers)
    )


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


def _logit_diff_grad(
    model, tokenizer, hook: HookPoint, request: EditRequest, pos: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, ∂(logit_new − logit_true)/∂x) at the hook, at the subject's last token."""
    from editkit.edit.common import frozen

    device = next(model.parameters()).device
    ids = torch.tensor([encode(tokenizer, request.text)], device=device)
    new = target_ids(tokenizer, request.text, request.target_new)[0]
    true = target_ids(tokenizer, request.text, request.target_true)[0]
    held = {}

    def grab(x):
        held["x"] = x.detach().requires_grad_(True)
        return held["x"]

    with frozen(model), torch.enable_grad(), trace_hook(model, hook, edit=grab, retain=False):
        logits = model(input_ids=ids).logits[0, -1]
        (logits[new] - logits[true]).backward()
    return held["x"].detach()[0, pos], held["x"].grad[0, pos]


def choose_features(sae: SAE, x: torch.Tensor, grad: torch.Tensor, n: int = 3) -> tuple[list[int], list[int]]:
    """Strengthen: the `n` features whose directions raise logit_new − logit_true most; weaken: the `n`
    active features whose current contribution f_i (W_dec,i · g) favours the true answer most."""
    along = sae.W_dec.detach().float() @ grad.float()
    strengthen = along.topk(n).indices.tolist()
    f = sae.encode(x)
    contribution = torch.where(f > 0, f * along, torch.zeros_like(f))
    weaken = [i for i in contribution.topk(n, largest=False).indices.tolist() if contribution[i] < 0]
    return strengthen, weaken


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
    strengthen: list[int] | None = None,
    weaken: list[int] | None = None,
    n_features: int = 3,
    bisect_steps: int = 8,
) -> EditResult:
    """Rank-one edit of the MLP output projection at the SAE's layer along feature directions (see the
    module docstring); features default to `choose_features`. Raises if no strength flips the fact."""
    hook = _residual_hook(adapter, sae)
    if hook.kind == "attn" or hook.side == "input":
        raise EditkitError(
            "the feature-conditioned edit writes through the MLP; use an SAE at hook_resid_post or "
            f"hook_mlp_out, not {hook.name}"
        )
    if not request.target_true:
        raise EditkitError("the feature-conditioned edit needs the true answer; pass target_true (--target-true)")
    device = next(model.parameters()).device
    sae = sae.to(device)
    pos = _subject_last(tokenizer, request)
    x, grad = _logit_diff_grad(model, tokenizer, hook, request, pos)
    auto_s, auto_w = choose_features(sae, x, grad, n_features)
    strengthen = auto_s if strengthen is None else [sae.check_feature(i) for i in strengthen]
    weaken = auto_w if weaken is None else [sae.check_feature(i) for i in weaken]
    f = sae.encode(x)
    up = sae.W_dec[strengthen].detach().float().sum(0) if strengthen else torch.zeros_like(x)
    down = (f[weaken, None] * sae.W_dec[weaken]).detach().float().sum(0) if weaken else torch.zeros_like(x)
    scale = _line_search(
        lambda s: _predicts(model, tokenizer, request, hook, pos, s * up - down), x.norm().item(), bisect_steps
    )
    if scale is None:
        raise EditkitError(
            f"no strength up to 4 × ‖x‖ makes the model predict {request.target_new!r} for {request.subject!r} "
            f"with features {strengthen} strengthened and {weaken} weakened; choose other --strengthen features"
        )
    module = adapter.name("mlp_out", hook.layer)
    k = _key(model, tokenizer, module, request, pos)
    value = scale * up - down
    result = EditResult(
        "feature-rank-one",
        {"hook": hook.name, "layer": hook.layer, "strengthen": strengthen, "weaken": weaken, "scale": scale},
        requests=[request],
    )
    result.push(model, Delta(module, u=k / (k @ k), v=value, keys=k[None], values=value[None]))
    return result.seal(model)


def _line_search(flips, norm: float, steps: int) -> float | None:
    """The smallest strength s (to a factor 2^-steps) with flips(s): doubling from ‖x‖/64 to 4‖x‖, then bisection."""
    lo, hi = 0.0, norm / 64
    while not flips(hi):
        lo, hi = hi, hi * 2
        if hi > 4 * norm:
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
