"""ROME (Meng et al. 2022): one rank-one update W' = W + Λ (C⁻¹k̄)ᵀ of one MLP output projection per request.

u = C⁻¹k̄ / ‖C⁻¹k̄‖ with k̄ the key averaged over context prefixes; v* optimised at the subject's last token;
Λ = (v* − W k − b) / (uᵀk). ROME takes k, W k from the bare prompt; r-ROME (Gupta et al. 2024,
`original_key=False`) uses k̄ there too, which removes the key mismatch that makes sequential ROME collapse.
"""

from __future__ import annotations

from dataclasses import dataclass

from editkit.edit.common import context_prefixes, mean_keys
from editkit.edit.hparams import TargetHParams
from editkit.edit.registry import Method, register
from editkit.edit.regularise import regularise
from editkit.edit.result import Delta, EditResult
from editkit.edit.target import optimise_targets
from editkit.requests import EditRequest


@dataclass
class ROMEHParams(TargetHParams):
    """ROME (Meng et al. 2022); `original_key: false` is r-ROME (Gupta et al. 2024)."""

    mom2_adjustment: bool = True
    original_key: bool = True

    @property
    def needs_stats(self) -> bool:
        return self.mom2_adjustment


def apply_rome(
    model, tokenizer, adapter, requests: list[EditRequest], hp: ROMEHParams, stats, result: EditResult
) -> EditResult:
    """Edit each request in turn (each on the model the previous one left), one rank-one update each (dense
    when the `rect` / `prune` regularisers are on)."""
    prefixes = context_prefixes(model, tokenizer, hp.context_templates, hp.seed)
    layer = adapter.layer(hp.layers[0])
    for request in requests:
        delta = rome_delta(model, tokenizer, adapter, request, hp, stats, layer, prefixes)
        result.push(model, regularise(model, result, delta, hp))
        result.requests.append(request)
    return result.seal(model)


def rome_delta(model, tokenizer, adapter, request: EditRequest, hp: ROMEHParams, stats, layer: int, prefixes):
    """The rank-one Delta for one request at `layer`: key direction u, target v*, then Λ."""
    u, k_bar, out_bar = rome_key(model, tokenizer, adapter, request, hp, stats, layer, prefixes)
    (target,) = optimise_targets(model, tokenizer, adapter, adapter.name("mlp_out", layer), [request], prefixes, hp)
    return rome_update(model, tokenizer, adapter, request, hp, layer, u, target.value, (k_bar, out_bar))


def rome_key(model, tokenizer, adapter, request: EditRequest, hp: ROMEHParams, stats, layer: int, prefixes):
    """u = C⁻¹k̄ / ‖C⁻¹k̄‖ (float64), with k̄ and the mean output there."""
    k_bar, out_bar = mean_keys(model, tokenizer, adapter, layer, [request], prefixes)
    u = k_bar[0].double()
    if hp.mom2_adjustment:
        u = stats.solve(layer, u)
    return u / u.norm(), k_bar, out_bar


def rome_update(model, tokenizer, adapter, request, hp: ROMEHParams, layer: int, u, v_star, averaged) -> Delta:
    """Λ = (v* − W k − b) / (uᵀk), with k the bare prompt's key (ROME) or k̄ (r-ROME, `averaged`)."""
    if hp.original_key:
        k, out = mean_keys(model, tokenizer, adapter, layer, [request], ["{}"])
    else:
        k, out = averaged
    k, out, v_star = k[0].double(), out[0].double(), v_star.double()
    lam = (v_star - out) / (k @ u)
    module = adapter.name("mlp_out", layer)
    return Delta(module, u=u.float(), v=lam.float(), keys=k.float()[None], values=v_star.float()[None])


ROME = register(Method("rome", apply_rome, ROMEHParams, "ROME: one rank-one update per request (Meng et al. 2022)"))
register(ROME.variant("r-rome", "ROME with the averaged key in the update (Gupta et al. 2024)", original_key=False))
