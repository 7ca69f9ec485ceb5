"""Knowledge neurons (Dai et al. 2022): integrated gradients over the MLP's intermediate activations.

For each prompt, the activation `w` of every MLP neuron (the input of the MLP's output projection) at the
last token is scaled from 0 to `w` in `steps` steps; attribution = w · mean gradient of p(target). Neurons
above `threshold` × the prompt's maximum are kept, then refined to those shared by a fraction `share`
of the prompts. The result is checked by suppressing (× 0) and amplifying (× 2) the neurons.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from editkit.errors import EditkitError
from editkit.hooks import Trace
from editkit.models import Adapter
from editkit.tokens import encode, target_ids


@dataclass
class NeuronResult:
    """Knowledge neurons `(layer, neuron)` of `target` and the measured effect of changing them."""

    prompts: list[str]
    target: str
    neurons: list[tuple[int, int]]
    scores: np.ndarray  # [prompts, layers, d_mlp] integrated-gradient attributions
    base_probs: list[float]
    suppressed_probs: list[float]
    amplified_probs: list[float]

    @staticmethod
    def _change(new: list[float], old: list[float]) -> float:
        return float(np.mean([(n - o) / o for n, o in zip(new, old, strict=True)]))

    @property
    def suppress_change(self) -> float:
        """Mean relative change of p(target) with the neurons set to zero."""
        return self._change(self.suppressed_probs, self.base_probs)

    @property
    def amplify_change(self) -> float:
        """Mean relative change of p(target) with the neurons doubled."""
        return self._change(self.amplified_probs, self.base_probs)

    def to_json(self) -> dict:
        return {
            "prompts": self.prompts,
            "target": self.target,
            "neurons": [list(n) for n in self.neurons],
            "base_probs": self.base_probs,
            "suppressed_probs": self.suppressed_probs,
            "amplified_probs": self.amplified_probs,
            "suppress_change": self.suppress_change,
            "amplify_change": self.amplify_change,
        }


def integrated_gradients(model, tokenizer, adapter: Adapter, prompt: str, target: str, steps: int = 20) -> np.ndarray:
    """`[layers, d_mlp]` attributions of every MLP neuron at the last token to p(target's first token)."""
    if steps < 1:
        raise EditkitError(f"steps must be ≥ 1, got {steps}")
    device = next(model.parameters()).device
    ids = torch.tensor([encode(tokenizer, prompt)], device=device)
    answer = target_ids(tokenizer, prompt, target)[0]
    names = adapter.names("mlp_out")
    with torch.no_grad(), Trace(model, names, retain_input=True, retain_output=False) as tr:
        model(input_ids=ids, use_cache=False)
    alphas = torch.arange(1, steps + 1, device=device, dtype=torch.float32) / steps  # Riemann sum, as the paper
    rows = ids.expand(steps, -1)
    out = []
    for name in names:
        w = tr[name].input[0, -1]
        scaled = (alphas[:, None] * w.float()).to(w.dtype).requires_grad_(True)

        def set_last(x: torch.Tensor, n: str, scaled=scaled) -> torch.Tensor:
            x = x.clone()
            x[:, -1] = scaled
            return x

        with torch.enable_grad(), Trace(model, name, retain_output=False, edit_input=set_last):
            p = torch.softmax(model(input_ids=rows, use_cache=False).logits[:, -1].float(), -1)[:, answer]
            (grad,) = torch.autograd.grad(p.sum(), scaled)
        out.append((w.float() * grad.float().mean(0)).detach().cpu().numpy())
    return np.stack(out)


@torch.no_grad()
def probs_with_neurons(
    model,
    tokenizer,
    adapter: Adapter,
    prompts: Sequence[str],
    target: str,
    neurons: Sequence[tuple[int, int]],
    factor: float | None,
) -> list[float]:
    """p(target) per prompt with the neurons' last-token activations multiplied by `factor` (None: untouched)."""
    by_layer: dict[str, list[int]] = {}
    for layer, i in neurons:
        by_layer.setdefault(adapter.name("mlp_out", layer), []).append(i)

    def scale(x: torch.Tensor, name: str) -> torch.Tensor:
        x = x.clone()
        x[:, -1, by_layer[name]] *= factor
        return x

    device = next(model.parameters()).device
    out = []
    for prompt in prompts:
        ids = torch.tensor([encode(tokenizer, prompt)], device=device)
        with Trace(model, list(by_layer) if factor is not None else [], retain_output=False, edit_input=scale):
            logits = model(input_ids=ids, use_cache=False).logits[0, -1]
        out.append(torch.softmax(logits.float(), -1)[target_ids(tokenizer, prompt, target)[0]].item())
    return out


def knowledge_neurons(
    model,
    tokenizer,
    adapter: Adapter,
    prompts: Sequence[str],
    target: str,
    steps: int = 20,
    threshold: float = 0.2,
    share: float = 0.5,
) -> NeuronResult:
    """Knowledge neurons of `target` across `prompts` (paraphrases of one fact), verified by suppression
    and amplification."""
    if not prompts:
        raise EditkitError("no prompts given; pass at least one --prompt")
    if not 0 < threshold <= 1 or not 0 < share <= 1:
        raise EditkitError(f"threshold and share must be in (0, 1], got threshold={threshold}, share={share}")
    scores = np.stack([integrated_gradients(model, tokenizer, adapter, p, target, steps) for p in prompts])
    counts: Counter = Counter()
    for s in scores:
        layers, idx = np.nonzero(s > threshold * s.max())
        counts.update(zip(layers.tolist(), idx.tolist(), strict=True))
    need = share * len(prompts)
    neurons = sorted(n for n, c in counts.items() if c >= need)
    return NeuronResult(
        prompts=list(prompts),
        target=target,
        neurons=neurons,
        scores=scores,
        base_probs=probs_with_neurons(model, tokenizer, adapter, prompts, target, neurons, None),
        suppressed_probs=probs_with_neurons(model, tokenizer, adapter, prompts, target, neurons, 0.0),
        amplified_probs=probs_with_neurons(model, tokenizer, adapter, prompts, target, neurons, 2.0),
    )
