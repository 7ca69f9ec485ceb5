"""BatchTopK SAE (Bussmann et al. 2024, "BatchTopK Sparse Autoencoders"); SAELens `batchtopk`.

Training keeps the k·B largest of ReLU(π) over the whole batch of B rows (k active per row on average),
decoder rows at unit norm, with TopK's auxiliary-k loss for dead features. A global threshold t follows
the smallest kept activation of each batch, t ← (1 − η) t + η · min (η = `topk_threshold_lr`, as SAELens;
t starts at the first batch's min, not at 0, so that a short run does not leave t far too low).
For inference it is saved as SAELens 6 saves it: a JumpReLU SAE with θᵢ = t for every feature.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from editkit.features.sae import SAE, SAEConfig
from editkit.features.saes import register
from editkit.features.saes.jumprelu import JumpReLUSAE
from editkit.features.saes.topk import aux_k_loss, check_k


def batch_top_k(acts: torch.Tensor, k: int) -> torch.Tensor:
    """The k·B largest entries of `acts [B, d_sae]` over the whole batch, zero elsewhere."""
    flat = acts.flatten()
    values, idx = flat.topk(k * acts.shape[:-1].numel(), sorted=False)
    return torch.zeros_like(flat).scatter(-1, idx, values).reshape(acts.shape)


@register
class BatchTopKSAE(SAE):
    saelens_architecture = "jumprelu"
    saelens_transcoder = "jumprelu_transcoder"
    unit_decoder = True

    def __init__(self, cfg: SAEConfig):
        super().__init__(cfg)
        self.register_buffer("topk_threshold", torch.tensor(0.0, dtype=torch.float64))

    @classmethod
    def check_config(cls, cfg: SAEConfig) -> None:
        check_k(cfg)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pre = self.pre_acts(x)
        return batch_top_k(torch.relu(pre), self.cfg.k), pre

    def training_loss(self, x: torch.Tensor, y: torch.Tensor, coefficient: float, dead: torch.Tensor):
        f, pre = self.features(x)
        y_hat = self.decode(f)
        return self.mse(y, y_hat) + aux_k_loss(self, y, y_hat, pre, dead), f, y_hat

    @torch.no_grad()
    def after_step(self, f: torch.Tensor) -> None:
        kept = f[f > 0]
        if len(kept) == 0:
            return
        if self.topk_threshold == 0:  # start at the first batch's value rather than at 0, as SAELens does
            self.topk_threshold.fill_(kept.min().double())
        else:
            lr = self.cfg.topk_threshold_lr
            self.topk_threshold.mul_(1 - lr).add_(lr * kept.min().double())

    @torch.no_grad()
    def for_inference(self) -> JumpReLUSAE:
        cfg = replace(self.cfg, architecture="jumprelu", training_architecture=self.name)
        sae = JumpReLUSAE(cfg)
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            getattr(sae, name).copy_(getattr(self, name))
        sae.threshold.fill_(self.topk_threshold.item())
        return sae.train(self.training)
