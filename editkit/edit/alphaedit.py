"""AlphaEdit (Fang et al. 2025): MEMIT's update projected onto the null space of the preserved knowledge.

P = U Uᵀ over the eigenvectors of C whose eigenvalues are below nullspace_threshold, so ΔW P k ≈ 0 for
the keys C was estimated from. ΔW = R Kᵀ P (P (K Kᵀ + K_p K_pᵀ) + L2·I)⁻¹ᵀ, where K_p are the keys of
earlier edits in a sequence (kept so later edits do not undo them).
"""

from __future__ import annotations

import torch

from editkit.edit.hparams import AlphaEditHParams, to_dict
from editkit.edit.memit import spread
from editkit.edit.result import EditResult
from editkit.requests import EditRequest


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
    history: EditResult | None = None,
) -> EditResult:
    """MEMIT's spread over layers with the null-space-projected solve."""

    def solve(layer: int, K: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
        P = stats.projector(layer, hp.nullspace_threshold).to(K.device)
        kk = preserved_keys(history, adapter.name("mlp_out", layer), K.shape[0]).to(K.device)
        A = P @ (K @ K.T + kk) + hp.L2 * torch.eye(K.shape[0], dtype=K.dtype, device=K.device)
        return torch.linalg.solve(A, P @ K @ R.T).T

    return spread(model, tokenizer, adapter, requests, hp, history or EditResult("alphaedit", to_dict(hp)), solve)
