"""ReLU SAE with an L1 penalty (Bricken et al. 2023, "Towards Monosemanticity"); SAELens `standard`.

    f = ReLU((x − b_dec) W_enc + b_enc)
    loss = ‖x − x̂‖² + λ Σᵢ fᵢ ‖W_dec,i‖    (decoder-norm-weighted L1, Anthropic's April 2024 update)

λ (`l1_coefficient`) is warmed up linearly over `l1_warm_up_steps`; the decoder is free while training.
"""

from __future__ import annotations

import torch

from editkit.features.sae import SAE
from editkit.features.saes import register


@register
class StandardSAE(SAE):
    aliases = ("relu",)
    saelens_architecture = "standard"
    saelens_transcoder = "transcoder"

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pre = self.pre_acts(x)
        return torch.relu(pre), pre

    def training_loss(self, x: torch.Tensor, y: torch.Tensor, coefficient: float, dead: torch.Tensor):
        f, _ = self.features(x)
        y_hat = self.decode(f)
        loss = self.mse(y, y_hat) + coefficient * (f * self.W_dec.norm(dim=1)).sum(-1).mean()
        return loss, f, y_hat
