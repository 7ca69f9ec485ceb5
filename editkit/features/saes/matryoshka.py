"""Matryoshka SAE (Bussmann et al. 2025, "Learning Multi-Level Features with Matryoshka SAEs"), BatchTopK
inside; SAELens `matryoshka_batchtopk`.

Each nested prefix of the dictionary, features [0, m) for m in `matryoshka_widths` (strictly increasing,
the last = d_sae; default d_sae/8, /4, /2, 1), must reconstruct x on its own:

    loss = Σₘ ‖x − (f[:m] W_dec[:m] + b_dec)‖² + auxiliary-k loss,   f = BatchTopK(ReLU(π))

so early features learn general directions and later ones specialise. Saved for inference as SAELens 6
saves it: a JumpReLU SAE with the learnt global threshold.
"""

from __future__ import annotations

from itertools import pairwise

import torch

from editkit.errors import EditkitError
from editkit.features.sae import SAEConfig
from editkit.features.saes import register
from editkit.features.saes.batchtopk import BatchTopKSAE
from editkit.features.saes.topk import aux_k_loss


@register
class MatryoshkaSAE(BatchTopKSAE):
    aliases = ("matryoshka_batchtopk",)

    @classmethod
    def check_config(cls, cfg: SAEConfig) -> None:
        super().check_config(cfg)
        widths = cfg.matryoshka_widths or [cfg.d_sae // 8, cfg.d_sae // 4, cfg.d_sae // 2]
        widths = [w for w in widths if w != cfg.d_sae] + [cfg.d_sae]
        if widths[0] <= 0 or any(a >= b for a, b in pairwise(widths)):
            raise EditkitError(
                f"matryoshka widths must increase strictly from above 0 to d_sae ({cfg.d_sae}), got {widths}; "
                f"pass e.g. --widths {cfg.d_sae // 4},{cfg.d_sae // 2}"
            )
        cfg.matryoshka_widths = widths

    def training_loss(self, x: torch.Tensor, y: torch.Tensor, coefficient: float, dead: torch.Tensor):
        f, pre = self.features(x)
        y_hat = self.decode(f)
        loss = self.mse(y, y_hat) + aux_k_loss(self, y, y_hat, pre, dead)
        for m in self.cfg.matryoshka_widths[:-1]:
            loss = loss + self.mse(y, f[:, :m] @ self.W_dec[:m] + self.b_dec)
        return loss, f, y_hat
