"""Evaluating an SAE on a model, the same metrics for every architecture (as SAELens and SAEBench report
them): L0, explained variance (1 − FVU), the fractions of features that never fire (dead) and that fire on
more than 10 % of tokens (dense), shrinkage as the relative reconstruction bias γ = E‖x̂‖² / E⟨x̂, x⟩
(Rajamanoharan et al. 2024: the γ minimising E‖x̂/γ − x‖²; 1 is none, below 1 the SAE shrinks), and the
cross-entropy loss recovered when the SAE's reconstruction replaces the activation at its hook,
(CE_zero − CE_sae) / (CE_zero − CE_clean), zero-ablation being the baseline.

A transcoder is measured on what it predicts: explained variance and shrinkage of its output hook (an MLP's
output), and the CE loss with that output replaced by the transcoder's prediction from the clean run's input
(the same input the spliced run sees, the input being upstream) against the output zero-ablated."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from editkit.errors import EditkitError
from editkit.features.hookpoints import HookPoint, hook_value, resolve_hook, trace_hook, trace_hooks
from editkit.features.sae import SAE
from editkit.features.store import keep_mask, tokenize
from editkit.io import atomic_write_text

DENSE = 0.1  # a feature firing on more than this fraction of tokens is dense


@dataclass
class SAEEvaluation:
    hook_name: str
    n_tokens: int
    l0: float
    explained_variance: float
    dead_fraction: float
    dense_fraction: float
    shrinkage: float
    ce_clean: float
    ce_sae: float
    ce_zero: float
    hook_name_out: str = ""  # a transcoder's: what it predicts (and what the CE runs replace)

    @property
    def ce_loss_recovered(self) -> float:
        return (self.ce_zero - self.ce_sae) / (self.ce_zero - self.ce_clean)

    def to_json(self) -> dict:
        return {**asdict(self), "ce_loss_recovered": self.ce_loss_recovered}

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps(self.to_json(), indent=2) + "\n")


def _ce_sum(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Summed next-token cross-entropy over positions whose next token is real."""
    ce = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten(), reduction="none")
    return (ce * mask[:, 1:].flatten()).sum()


@torch.no_grad()
def evaluate_sae(
    model, tokenizer, adapter, sae: SAE, texts: list[str], context_size: int = 128, batch_size: int = 32
) -> SAEEvaluation:
    """Run `texts` clean, with the SAE's reconstruction spliced in at its hook, and zero-ablated there (a
    transcoder: its prediction spliced in at its output hook, and that hook zero-ablated), at the positions the
    SAE is trained on: special tokens such as a prepended BOS keep their clean activation."""
    hook = resolve_hook(adapter, sae.cfg.hook_name)
    target = output_hook(adapter, sae)
    bos = sae.bos(tokenizer)  # texts read as in training: with its BOS first where it was trained so
    device = next(model.parameters()).device
    sae = sae.to(device)
    ce = torch.zeros(3, dtype=torch.float64)
    n_pred = 0
    resid = total_sq = 0.0
    x_sum = torch.zeros(sae.cfg.width_out, dtype=torch.float64)
    l0_sum, n_tok = 0.0, 0
    fired = torch.zeros(sae.cfg.d_sae, dtype=torch.long)
    hat_sq = hat_dot = 0.0
    for i in range(0, len(texts), batch_size):
        ids, mask = tokenize(tokenizer, texts[i : i + batch_size], context_size, bos)
        ids_d, mask_d = ids.to(device), mask.to(device)
        with trace_hooks(model, [hook, target]) as tr:
            clean = model(input_ids=ids_d, attention_mask=mask_d).logits
        x, y = hook_value(tr, hook), hook_value(tr, target)
        sae.check_width(x.shape[-1], y.shape[-1])
        f = sae.encode(x)
        y_hat = sae.decode(f).to(y.dtype)
        keep = keep_mask(ids, mask, tokenizer, skip_bos=True).to(device)
        on = keep.unsqueeze(-1)  # special tokens (BOS, the attention sink) keep their clean value, as in training
        spliced = _run(model, target, ids_d, mask_d, lambda a, r=y_hat, on=on: torch.where(on, r, a))
        zeroed = _run(model, target, ids_d, mask_d, lambda a, on=on: torch.where(on, torch.zeros_like(a), a))
        ce += torch.stack([_ce_sum(lg, ids_d, mask_d).double().cpu() for lg in (clean, spliced, zeroed)])
        n_pred += int(mask[:, 1:].sum())
        xk, xh, fk = y[keep].double(), y_hat[keep].double(), f[keep]
        resid += (xk - xh).pow(2).sum().item()
        total_sq += xk.pow(2).sum().item()
        x_sum += xk.sum(0).cpu()
        l0_sum += (fk > 0).sum().item()
        n_tok += len(xk)
        fired += (fk > 0).sum(0).cpu()
        hat_sq += xh.pow(2).sum().item()
        hat_dot += (xh * xk).sum().item()
    variance = total_sq - x_sum.pow(2).sum().item() / n_tok
    ce_clean, ce_sae, ce_zero = (ce / n_pred).tolist()
    return SAEEvaluation(
        hook_name=hook.name,
        n_tokens=n_tok,
        l0=l0_sum / n_tok,
        explained_variance=1 - resid / variance,
        dead_fraction=1 - (fired > 0).float().mean().item(),
        dense_fraction=(fired > DENSE * n_tok).float().mean().item(),
        shrinkage=hat_sq / hat_dot,
        ce_clean=ce_clean,
        ce_sae=ce_sae,
        ce_zero=ce_zero,
        hook_name_out=sae.cfg.hook_name_out if sae.cfg.is_transcoder else "",
    )


def output_hook(adapter, sae: SAE) -> HookPoint:
    """Where `sae`'s reconstruction goes: its own hook, or a transcoder's output hook (downstream of its input)."""
    hook = resolve_hook(adapter, sae.cfg.hook_name)
    if not sae.cfg.is_transcoder:
        return hook
    if not sae.cfg.hook_name_out:
        raise EditkitError("this transcoder names no output hook (hook_name_out); set it in its cfg.json metadata")
    out = resolve_hook(adapter, sae.cfg.hook_name_out)
    if out.layer < hook.layer:
        raise EditkitError(f"a transcoder predicts downstream of what it reads; {out.name} is above {hook.name}")
    return out


def _run(model, hook: HookPoint, ids, mask, replace) -> torch.Tensor:
    with trace_hook(model, hook, edit=replace, retain=False):
        return model(input_ids=ids, attention_mask=mask).logits
