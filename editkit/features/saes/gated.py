"""Gated SAE (Rajamanoharan et al. 2024, "Improving Dictionary Learning with Gated Sparse Autoencoders");
SAELens `gated`, tensors `W_enc`, `b_gate`, `b_mag`, `r_mag` (no `b_enc`).

Which features fire and how strongly are estimated apart, sharing W_enc (the magnitude path rescaled by
exp(r_mag)):

    π_gate = (x − b_dec) W_enc + b_gate              π_mag = (x − b_dec) (W_enc ⊙ exp(r_mag)) + b_mag
    f = 1[π_gate > 0] ⊙ ReLU(π_mag)
    loss = ‖x − x̂(f)‖² + λ Σᵢ ReLU(π_gate)ᵢ ‖W_dec,i‖ + ‖x − x̂_frozen(ReLU(π_gate))‖²

The L1 penalty (λ = `l1_coefficient`) reads only the gate, so it does not shrink magnitudes; the auxiliary
reconstruction goes through a frozen copy of the decoder (no gradient to W_dec, b_dec), and decoder rows
are held at unit norm while training, as in the paper.
"""

from __future__ import annotations

import torch

from editkit.features.sae import SAE
from editkit.features.saes import register


@register
class GatedSAE(SAE):
    saelens_architecture = "gated"
    saelens_transcoder = "gated_transcoder"  # editkit's name: SAELens has no gated transcoder
    tensors = ("W_enc", "W_dec", "b_dec", "b_gate", "b_mag", "r_mag")
    encoder_biases = ("b_gate", "b_mag")
    unit_decoder = True  # else shrinking W_dec would lower the penalty, which the frozen-decoder term cannot see

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.sae_in(x)
        gate = s @ self.W_enc + self.b_gate
        magnitude = s @ (self.W_enc * self.r_mag.exp()) + self.b_mag
        return (gate > 0).to(magnitude) * torch.relu(magnitude), gate

    def training_loss(self, x: torch.Tensor, y: torch.Tensor, coefficient: float, dead: torch.Tensor):
        f, gate = self.features(x)
        y_hat = self.decode(f)
        gate = torch.relu(gate)
        l1 = (gate * self.W_dec.norm(dim=1)).sum(-1).mean()
        aux = self.mse(y, gate @ self.W_dec.detach() + self.b_dec.detach())
        return self.mse(y, y_hat) + coefficient * l1 + aux, f, y_hat
