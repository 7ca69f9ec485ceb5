"""MEMIT (Meng et al. 2023): many edits at once, spread over a range of layers.

z_i (the target hidden state at the last edited layer, found like ROME's v*) fixes what the residual
stream must carry; each layer l of the range, in order, takes its share R/(L−l) of what is still missing
and solves ΔW = R Kᵀ (λC + K Kᵀ)⁻¹ in float64. AlphaEdit reuses `spread` with its own solve.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from editkit.edit.common import context_prefixes, group_weights, io_at_subject, mean_keys
from editkit.edit.hparams import TargetHParams, bounded
from editkit.edit.registry import Method, register
from editkit.edit.regularise import regularise
from editkit.edit.result import Delta, EditResult
from editkit.edit.target import optimise_targets
from editkit.requests import EditRequest

#: solve(layer, K [in, n], R [out, n]) -> ΔW [out, in], all float64.
Solve = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class SpreadHParams(TargetHParams):
    """Shared by MEMIT and AlphaEdit: z at the last of `layers`, the residual spread over all of them."""

    clamp_norm_factor: float = bounded(0.75, gt=0)
    context_templates: list[list[int]] = bounded([[10, 5]], ge=1)


@dataclass
class MEMITHParams(SpreadHParams):
    """MEMIT (Meng et al. 2023): λ = mom2_update_weight weighs the preserved keys' covariance."""

    mom2_update_weight: float = bounded(15000.0, gt=0)


def targets(model, tokenizer, adapter, requests: list[EditRequest], hp, prefixes) -> torch.Tensor:
    """z per request, `[n, h]`: the block output at the last edited layer that makes the target likely (all
    requests optimised in one batch)."""
    module = adapter.name("block", hp.layers[-1])
    return torch.stack([t.value for t in optimise_targets(model, tokenizer, adapter, module, requests, prefixes, hp)])


def spread(model, tokenizer, adapter, requests: list[EditRequest], hp, result: EditResult, solve: Solve) -> EditResult:
    """Write the requests into every layer of `hp.layers`, lowest first, each layer solving for its share (the
    `rect` / `prune` regularisers applied to each layer's ΔW before it is written)."""
    prefixes = context_prefixes(model, tokenizer, hp.context_templates, hp.seed)
    weights = group_weights(hp.context_templates)
    z = targets(model, tokenizer, adapter, requests, hp, prefixes).double()
    layers = [adapter.layer(i) for i in hp.layers]
    z_module = adapter.name("block", layers[-1])
    texts, subjects = [r.text for r in requests], [r.subject for r in requests]
    for i, layer in enumerate(layers):
        k, out = mean_keys(model, tokenizer, adapter, layer, requests, prefixes, weights)
        K = k.double().T
        now = io_at_subject(model, tokenizer, z_module, texts, subjects)[1].double()
        R = (z - now).T.to(K.device) / (len(layers) - i)
        dW = solve(layer, K, R)
        target = out.double() + R.T  # what this layer's share asks mlp_out to produce at each key
        delta = Delta(adapter.name("mlp_out", layer), dense=dW.float(), keys=K.T.float(), values=target.float())
        result.push(model, regularise(model, result, delta, hp))
    result.requests.extend(requests)
    return result.seal(model)


def apply_memit(
    model, tokenizer, adapter, requests: list[EditRequest], hp: MEMITHParams, stats, result: EditResult
) -> EditResult:
    """MEMIT's batch update; ΔW = R Kᵀ (λC + K Kᵀ)⁻¹ with λ = mom2_update_weight."""

    def solve(layer: int, K: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
        A = hp.mom2_update_weight * stats.C(layer).to(K.device) + K @ K.T
        return R @ torch.linalg.solve(A, K).T

    return spread(model, tokenizer, adapter, requests, hp, result, solve)


register(Method("memit", apply_memit, MEMITHParams, "MEMIT: many edits at once, spread over layers (Meng et al. 2023)"))
