"""Transcoder feature edit: ROME with the subject's key replaced by the key of the transcoder features
active at the subject, the feature-level analogue of ROME's rank-one MLP edit.

A transcoder at layer L's MLP writes ŷ = Σⱼ fⱼ(x) dⱼ + b_dec. The edit picks the `n_features` features most
specific to the subject among those active at its last token (largest f̄ⱼ / E[fⱼ], f̄ averaged over ROME's
context prefixes, E over the corpus) and their pattern g(x) = Σⱼ aⱼ fⱼ(x), aⱼ = f̄ⱼ / Σ f̄ⱼ² (g = 1 at the
subject). A rank-one change of the MLP output projection W reads a linear function of the MLP's hidden
state h; the one nearest g is uᵀh with u ∝ C⁻¹ E[h g] (least squares; C = E[hhᵀ] is ROME's statistics):

    ΔW = Λ uᵀ,   u = C⁻¹ E[h g] / ‖·‖,   Λ = (v* − W k − b) / (uᵀk)

with v* ROME's target value (`edit.target.optimise_targets`, ROME's hyper-parameters) and k the subject's
key. The subject's MLP output becomes v*, and any token writes Λ·uᵀh more, in proportion to how strongly its
hidden state reads as those features: what the features write gains Λ. ROME's u is C⁻¹k̄ instead, keyed on
the subject's hidden state. E[h f] for every feature takes one pass over a corpus (`FeatureKeys`), shared by
every edit with the same transcoder.

The transcoder's features (f̄ at the subject, E[h f]) are read as it was trained, with its BOS first where its
cfg says `prepend_bos`; ROME's parts (v*, k, C) read the prompts as the edited model is used and evaluated.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from itertools import islice

import torch

from editkit.edit.common import context_prefixes, fill, io_at_subject, mean_keys
from editkit.edit.methods.rome import ROMEHParams, rome_update
from editkit.edit.result import EditResult
from editkit.edit.target import optimise_targets
from editkit.errors import EditkitError
from editkit.features.hookpoints import resolve_hook
from editkit.features.sae import SAE
from editkit.features.store import paired_activations
from editkit.requests import EditRequest


def mlp_layer(adapter, transcoder: SAE) -> int:
    """The layer whose MLP `transcoder` replaces (it must read that MLP's input and predict its output)."""
    if not transcoder.cfg.is_transcoder:
        raise EditkitError(
            "a transcoder feature edit needs a transcoder (train one with editkit sae train --hook-in "
            "blocks.L.ln2.hook_normalized --hook-out blocks.L.hook_mlp_out), not an SAE"
        )
    hook_in = resolve_hook(adapter, transcoder.cfg.hook_name)
    hook_out = resolve_hook(adapter, transcoder.cfg.hook_name_out or "?")
    if (hook_in.kind, hook_in.side, hook_out.kind, hook_out.side) != ("mlp", "input", "mlp", "output") or (
        hook_in.layer != hook_out.layer
    ):
        raise EditkitError(
            f"the transcoder maps {hook_in.name} to {hook_out.name}; the feature edit needs one from an MLP's "
            "input to its output (blocks.L.ln2.hook_normalized → blocks.L.hook_mlp_out)"
        )
    return hook_in.layer


@dataclass
class FeatureKeys:
    """Per transcoder feature j over a corpus sample: E[fⱼ] `[d_sae]` and E[h fⱼ] `[d_mlp, d_sae]` (float64),
    h the MLP's hidden state (the input of its output projection)."""

    mean: torch.Tensor
    hidden: torch.Tensor
    n_tokens: int

    @classmethod
    @torch.no_grad()
    def compute(
        cls, model, tokenizer, adapter, transcoder: SAE, texts, n_tokens: int = 100_000, batch_size: int = 32
    ) -> FeatureKeys:
        """Scan `texts` (an iterable of strings) until `n_tokens` tokens are read."""
        layer = mlp_layer(adapter, transcoder)
        hooks = [
            resolve_hook(adapter, transcoder.cfg.hook_name),
            resolve_hook(adapter, f"blocks.{layer}.hook_mlp_post"),
        ]
        mean, hidden, n = None, None, 0
        bos = transcoder.bos(tokenizer)
        stream = iter(texts)
        while n < n_tokens and (batch := list(islice(stream, batch_size))):
            x, h = paired_activations(model, tokenizer, hooks, batch, transcoder.cfg.context_size, bos=bos)
            x, h = x[: n_tokens - n], h[: n_tokens - n]
            f = transcoder.encode(x.to(transcoder.W_enc.device)).double().cpu()
            mean = f.sum(0) if mean is None else mean + f.sum(0)
            part = h.double().T @ f
            hidden = part if hidden is None else hidden + part
            n += len(x)
        if n == 0:
            raise EditkitError("the corpus gave no tokens to compute the transcoder's feature keys from")
        return cls(mean / n, hidden / n, n)


def choose_features(
    transcoder: SAE, keys: FeatureKeys, x: torch.Tensor, n_features: int, features: list[int] | None = None
) -> dict[int, float]:
    """Feature → weight aⱼ: the `n_features` features active in the mean activation f̄ of `x` `[n, d_in]`
    (among `features`, where given) with the largest f̄ⱼ / E[fⱼ], weighted so that their pattern is 1 there."""
    f = transcoder.encode(x).double().mean(0).cpu()
    pool = torch.tensor([transcoder.check_feature(j) for j in features]) if features else torch.arange(len(f))
    active = pool[f[pool] > 0]
    if len(active) == 0:
        which = f"none of features {features}" if features else "no transcoder feature"
        raise EditkitError(f"{which} is active at the subject's last token; pick others (editkit features show)")
    specificity = f[active] / keys.mean[active].clamp_min(1e-12)
    picked = active[specificity.argsort(descending=True)[:n_features]]
    a = f[picked] / f[picked].pow(2).sum()
    return dict(zip(picked.tolist(), a.tolist(), strict=True))


def transcoder_edit(
    model,
    tokenizer,
    adapter,
    transcoder: SAE,
    requests: list[EditRequest],
    hp: ROMEHParams,
    stats,
    keys: FeatureKeys,
    n_features: int = 1,
    features: list[int] | None = None,
) -> EditResult:
    """Edit each request in turn through the transcoder's features (module docstring; `features` limits the
    choice); one rank-one update of the MLP output projection per request, recorded (with the features and
    their weights) in the EditResult."""
    layer = mlp_layer(adapter, transcoder)
    bos = transcoder.bos(tokenizer)
    transcoder = transcoder.to(next(model.parameters()).device)
    prefixes = context_prefixes(model, tokenizer, hp.context_templates, hp.seed)
    result = EditResult(
        "transcoder-feature",
        {
            "rome": dataclasses.asdict(hp),
            "layer": layer,
            "n_features": n_features,
            "key_tokens": keys.n_tokens,
            "features": [],
        },
    )
    for request in requests:
        texts = [fill(p, request) for p in prefixes]
        subjects = [request.subject] * len(texts)
        x, _ = io_at_subject(model, tokenizer, adapter.name("mlp", layer), texts, subjects, bos)
        weights = choose_features(transcoder, keys, x.float(), n_features, features)
        g = keys.hidden[:, list(weights)] @ torch.tensor(list(weights.values()), dtype=torch.float64)
        u = stats.solve(layer, g.to(x.device))
        u = u / u.norm()
        (target,) = optimise_targets(model, tokenizer, adapter, adapter.name("mlp_out", layer), [request], prefixes, hp)
        averaged = None if hp.original_key else mean_keys(model, tokenizer, adapter, layer, [request], prefixes)
        result.push(model, rome_update(model, tokenizer, adapter, request, hp, layer, u, target.value, averaged))
        result.requests.append(request)
        result.hparams["features"].append(weights)
    return result.seal(model)
