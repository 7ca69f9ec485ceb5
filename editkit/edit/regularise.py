"""Regularisers of a locate-then-edit update, applied to each Delta before it is written (`regularise`), switched
on by the `prune` and `rect` hyper-parameters that ROME, r-ROME, MEMIT, AlphaEdit and EMMET share (off by default).

RECT (Gu et al. 2024, "Model editing harms general abilities of LLMs: regularization to the rescue"): an update
keeps the fraction of its elements with the largest relative change |ΔW_ij| / |W_ij|; the others are zeroed.
PRUNE (Ma et al., ICLR 2025, "Perturbation-restrained sequential model editing"): the accumulated edit
ΔW = W_now + ΔW_new − W_original has its singular values σ ≥ σ_max(W_original) mapped to σ_max + log_α(σ / σ_max)
(the paper's F, as its code's `func_logn`), so the edited matrix's condition number stays bounded over a sequence.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from editkit.edit.result import Delta, EditResult, weight


def rect(dW: torch.Tensor, W: torch.Tensor, fraction: float) -> torch.Tensor:
    """`dW` with only its round(fraction · numel) elements (at least one) of largest |ΔW|/|W| kept; |W| = 0 under a
    non-zero change counts as the largest change."""
    k = max(1, round(fraction * dW.numel()))
    change = torch.where(dW == 0, 0.0, dW.abs() / W.abs()).flatten()
    keep = torch.zeros_like(change, dtype=torch.bool)
    keep[change.topk(k).indices] = True
    return torch.where(keep.view_as(dW), dW, 0.0)


def prune(acc: torch.Tensor, W0: torch.Tensor, base: float) -> torch.Tensor | None:
    """The accumulated edit `acc` with its singular values σ ≥ σ_max(W0) restrained to σ_max + log_base(σ/σ_max),
    or None when none reaches σ_max (nothing to restrain)."""
    top = torch.linalg.matrix_norm(W0, ord=2)
    U, S, Vh = torch.linalg.svd(acc, full_matrices=False)
    big = S >= top
    if not big.any():
        return None
    S = torch.where(big, top + torch.log(S / top) / math.log(base), S)
    return (U * S) @ Vh


def regularise(model, result: EditResult, delta: Delta, hp) -> Delta:
    """`delta` with RECT, then PRUNE applied as `hp.rect` / `hp.prune` ask (float64; the same object when neither
    changes it). PRUNE's accumulated edit is measured on the weights: what `result` already wrote plus `delta`."""
    if hp.rect is None and hp.prune is None:
        return delta
    W = weight(model, delta.module).detach().double()
    dW = delta.matrix().to(W.device).double()
    if hp.rect is not None:
        dW = rect(dW, W, hp.rect)
    if hp.prune is not None:
        W0 = result.original[delta.module].to(W.device).double() if delta.module in result.original else W
        restrained = prune(W - W0 + dW, W0, hp.prune)
        if restrained is None and hp.rect is None:
            return delta
        if restrained is not None:
            dW = restrained - (W - W0)
    return dataclasses.replace(delta, u=None, v=None, dense=dW.float())
