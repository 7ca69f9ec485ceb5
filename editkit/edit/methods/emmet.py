"""EMMET (Gupta, Sajnani, Anumanchipalli 2024, "A unified framework for model editing"): ROME's
equality-constrained preservation-memorisation objective for a batch of n edits, solved in closed form.

    minimise ‖Ŵ K₀ − W K₀‖²  subject to  Ŵ k_i = v_i  for every edited key k_i
    ⇒  ΔW = R (Kᵀ C⁻¹ K + λ_E I)⁻¹ Kᵀ C⁻¹,   R = V − W K,

with C = mom2_update_weight · E[k kᵀ] (directions C does not span dropped, as ROME's C⁻¹k̄) and λ_E = emmet_lambda
added to the n × n matrix when n > 1 (the authors' code: it keeps D = Kᵀ C⁻¹ K invertible when keys nearly
coincide; λ_E = 0 gives the exact constraint, ΔW K = R).
Keys, targets z and the residual R are MEMIT's (`spread`): z at the block output of the last edited layer, keys
averaged over context prefixes. The paper's reported setting edits ONE layer (its hparams: GPT-2 XL layer 17,
GPT-J and Llama-2 layer 5), so the shipped files give one layer; more layers spread R as MEMIT does, which the
authors' code also allows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from editkit.edit.hparams import bounded
from editkit.edit.methods.memit import SpreadHParams, spread
from editkit.edit.registry import Method, register
from editkit.edit.result import EditResult
from editkit.errors import EditkitError
from editkit.requests import EditRequest


@dataclass
class EMMETHParams(SpreadHParams):
    """EMMET: C scaled by mom2_update_weight; emmet_lambda regularises Kᵀ C⁻¹ K for batches of more than one."""

    mom2_update_weight: float = bounded(1.0, gt=0)
    emmet_lambda: float = bounded(0.1, ge=0)


def emmet_solve(A: torch.Tensor, K: torch.Tensor, R: torch.Tensor, emmet_lambda: float) -> torch.Tensor:
    """ΔW = R (Kᵀ A + λ_E I)⁻¹ Aᵀ with A = C⁻¹ K (λ_E only when K has more than one column), all float64.
    A and K `[in, n]`, R `[out, n]` -> `[out, in]`."""
    D = K.T @ A
    if K.shape[1] > 1:
        D = D + emmet_lambda * torch.eye(D.shape[0], dtype=D.dtype, device=D.device)
    try:
        return R @ torch.linalg.solve(D, A.T)
    except torch.linalg.LinAlgError:
        raise EditkitError(
            "EMMET: Kᵀ C⁻¹ K is singular (two requests share a key, e.g. the same subject); "
            "set emmet_lambda > 0 (e.g. --set emmet_lambda=0.1) or edit one request per subject"
        ) from None


def apply_emmet(
    model, tokenizer, adapter, requests: list[EditRequest], hp: EMMETHParams, stats, result: EditResult
) -> EditResult:
    """The batch written with the equality-constrained solve at each layer of `hp.layers` (one, as in the paper)."""

    def solve(layer: int, K: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
        A = stats.solve(layer, K) / hp.mom2_update_weight  # C⁻¹ K, C's null directions dropped
        return emmet_solve(A, K, R, hp.emmet_lambda)

    return spread(model, tokenizer, adapter, requests, hp, result, solve)


register(
    Method(
        "emmet",
        apply_emmet,
        EMMETHParams,
        "EMMET: a batch under ROME's equality constraint, in closed form (Gupta et al. 2024)",
    )
)
