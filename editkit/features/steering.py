"""Runtime steering with an SAE feature (Templeton et al. 2024, "Golden Gate Claude"; Turner et al. 2023).

At the SAE's hook, at the chosen positions (default: all, generated tokens included) that the SAE is trained
on (special tokens such as a BOS, the attention sink of models like SmolLM2, are never steered):
- `add`:   x ← x + α W_dec,i                       (α = 0 changes nothing, bit for bit)
- `clamp`: x ← x + (v − f_i(x)) W_dec,i            (the feature reads v; the SAE's error term is kept)
Generation is greedy and re-runs the whole sequence each step, so positions mean the same at every step.
The prompt is read as the SAE was trained, with its BOS first where `prepend_bos` (positions count it), with
and without steering alike.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from itertools import islice

import torch

from editkit.corpus import Corpus
from editkit.errors import EditkitError
from editkit.features.hookpoints import resolve_hook, trace_hook
from editkit.features.sae import SAE
from editkit.features.store import keep_mask
from editkit.tokens import encode, with_bos


@dataclass
class SteerResult:
    prompt: str
    feature: int
    mode: str
    value: float
    baseline: str
    steered: str

    def to_json(self) -> dict:
        return asdict(self)


def steering_edit(
    sae: SAE, feature: int, clamp: float | None = None, add: float | None = None, positions: list[int] | None = None
) -> Callable[..., torch.Tensor]:
    """The function `(x, trained=None) -> x'` that steers activations `[batch, seq, d_in]` at `positions` (None:
    all), and only where the mask `trained` `[batch, seq]` is true when one is given."""
    if (clamp is None) == (add is None):
        raise EditkitError("give exactly one of --clamp V (set the feature to V) or --add A (add A × its direction)")
    direction = sae.W_dec[sae.check_feature(feature)].detach()

    def edit(x: torch.Tensor, trained: torch.Tensor | None = None) -> torch.Tensor:
        d = direction.to(x.device, x.dtype)
        if add is not None:
            step = torch.full(x.shape[:-1], float(add), device=x.device, dtype=x.dtype)
        else:
            step = (clamp - sae.encode(x)[..., feature]).to(x.dtype)
        if positions is not None:
            keep = torch.zeros(x.shape[1], dtype=torch.bool, device=x.device)
            keep[[p for p in positions if -x.shape[1] <= p < x.shape[1]]] = True
            step = step * keep
        if trained is not None:
            step = step * trained.to(step.device, step.dtype)
        return x + step[..., None] * d

    return edit


@torch.no_grad()
def generate(model, tokenizer, prompt: str, max_new_tokens: int, edit=None, hook=None, bos: int | None = None) -> str:
    """Greedy continuation of `prompt` (`bos` first where given; without the prompt), with `edit` applied at
    `hook` if given, at the positions the SAE is trained on (not at special tokens)."""
    device = next(model.parameters()).device
    ids = torch.tensor([with_bos(encode(tokenizer, prompt), bos)], device=device)
    start = ids.shape[1]
    for _ in range(max_new_tokens):
        if edit is None:
            logits = model(input_ids=ids).logits
        else:
            trained = keep_mask(ids.cpu(), torch.ones_like(ids.cpu()), tokenizer, skip_bos=True).to(device)
            with trace_hook(model, hook, edit=lambda x, t=trained: edit(x, t), retain=False):
                logits = model(input_ids=ids).logits
        nxt = logits[0, -1].argmax()
        ids = torch.cat([ids, nxt.view(1, 1)], dim=1)
        if nxt.item() == tokenizer.eos_token_id:
            break
    return tokenizer.decode(ids[0, start:].tolist(), skip_special_tokens=True)


@torch.no_grad()
def max_activations(
    model, tokenizer, adapter, sae: SAE, corpus: Corpus, n_texts: int, cache_dir=None, batch_size: int = 32
) -> torch.Tensor:
    """Every feature's largest activation over the first `n_texts` of `corpus` (special tokens and BOS left
    out), to clamp at a multiple of it; computed once per SAE, model and corpus, then read from the cache."""
    from safetensors.torch import load_file, save

    from editkit.features.store import hook_activations
    from editkit.io import atomic_write_bytes, cache_root
    from editkit.tensors import fingerprint

    bos = sae.bos(tokenizer)
    key = fingerprint([*sae.state_dict().items(), *model.named_parameters()], sample=4096)  # SAE and model
    read = f"{key}:{corpus.identity}:{n_texts}" + (":bos" if bos is not None else "")  # keys without BOS as before
    ident = hashlib.sha256(read.encode()).hexdigest()[:24]
    path = cache_root(cache_dir) / "feature-max" / f"{ident}.safetensors"
    if path.exists():
        return load_file(path)["max"]
    hook = resolve_hook(adapter, sae.cfg.hook_name)
    device = next(model.parameters()).device
    best = torch.zeros(sae.cfg.d_sae)
    texts = list(islice(corpus.texts(), n_texts))
    for i in range(0, len(texts), batch_size):
        x = hook_activations(model, tokenizer, hook, texts[i : i + batch_size], sae.cfg.context_size, bos=bos)
        if len(x):
            best = torch.maximum(best, sae.encode(x.to(device)).amax(0).float().cpu())
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, save({"max": best.contiguous()}))
    return best


def steer(
    model,
    tokenizer,
    adapter,
    sae: SAE,
    prompt: str,
    feature: int,
    clamp: float | None = None,
    add: float | None = None,
    max_new_tokens: int = 40,
    positions: list[int] | None = None,
) -> SteerResult:
    """Greedy text after `prompt` without and with the feature steered."""
    sae.check_not_transcoder("steering")
    hook = resolve_hook(adapter, sae.cfg.hook_name)
    sae = sae.to(next(model.parameters()).device)
    edit = steering_edit(sae, feature, clamp, add, positions)
    bos = sae.bos(tokenizer)
    return SteerResult(
        prompt=prompt,
        feature=feature,
        mode="clamp" if clamp is not None else "add",
        value=float(clamp if clamp is not None else add),
        baseline=generate(model, tokenizer, prompt, max_new_tokens, bos=bos),
        steered=generate(model, tokenizer, prompt, max_new_tokens, edit, hook, bos),
    )
