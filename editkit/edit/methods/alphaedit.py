"""AlphaEdit (Fang et al. 2025): MEMIT's update projected onto the null space of the preserved knowledge.

P = U Uᵀ over the eigenvectors of C whose eigenvalues are below nullspace_threshold, so ΔW P k ≈ 0 for
the keys C was estimated from. ΔW = R Kᵀ P (P (K Kᵀ + K_p K_pᵀ) + L2·I)⁻¹ᵀ, where K_p are the keys of
earlier edits in a sequence (kept so later edits do not undo them).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from editkit.edit.hparams import bounded
from editkit.edit.methods.memit import SpreadHParams, spread
from editkit.edit.registry import Method, register
from editkit.edit.result import EditResult
from editkit.requests import EditRequest


@dataclass
class AlphaEditHParams(SpreadHParams):
    """AlphaEdit (Fang et al. 2025): the update projected onto the null space of C (eigenvalues below
    nullspace_threshold), with ridge L2 instead of λC."""

    nullspace_threshold: float = bounded(2e-2, gt=0)
    L2: float = bounded(10.0, gt=0)


def preserved_keys(history: EditResult | None, module: str, dim: int) -> torch.Tensor:
    """K_p K_pᵀ over the keys earlier edits wrote into `module`."""
    kk = torch.zeros(dim, dim, dtype=torch.float64)
    for d in history.deltas if history else []:
        if d.module == module and d.keys is not None:
            k = d.keys.double().cpu()
            kk += k.T @ k
    return kk


def apply_alphaedit(
    model,
    tokenizer,
    adapter,
    requests: list[EditRequest],
    hp: AlphaEditHParams,
    stats,
    result: EditResult,
) -> EditResult:
    """MEMIT's spread over layers with the null-space-projected solve (keys of `result`'s earlier edits kept)."""

    def solve(layer: int, K: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
        P = stats.projector(layer, hp.nullspace_threshold).to(K.device)
        kk = preserved_keys(result, adapter.name("mlp_out", layer), K.shape[0]).to(K.device)
        A = P @ (K @ K.T + kk) + hp.L2 * torch.eye(K.shape[0], dtype=K.dtype, device=K.device)
        return torch.linalg.solve(A, P @ K @ R.T).T

    return spread(model, tokenizer, adapter, requests, hp, result, solve)


register(
    Method(
        "alphaedit",
        apply_alphaedit,
        AlphaEditHParams,
        "AlphaEdit: MEMIT projected onto C's null space (Fang et al. 2025)",
    )
)
