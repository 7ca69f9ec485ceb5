"""JumpReLU SAE (Rajamanoharan et al. 2024, "Jumping Ahead"; Gemma Scope); SAELens `jumprelu`.

    f = ReLU(π) · H(π − θ)        π = (x − b_dec) W_enc + b_enc, one threshold θᵢ per feature (`threshold`)
    loss = ‖x − x̂‖² + λ ‖f‖₀       λ = `l0_coefficient`, warmed up over `l1_warm_up_steps`

H has no useful gradient, so θ learns through straight-through estimators with the rectangle kernel
K(u) = 1[|u| < ½] and bandwidth ε (`jumprelu_bandwidth`): ∂H(π − θ)/∂θ := −K((π − θ)/ε)/ε for the L0 term,
∂(π·H(π − θ))/∂θ := −(θ/ε) K((π − θ)/ε) for the reconstruction; π's gradient is H(π − θ). θ starts at
`jumprelu_init_threshold` and is kept ≥ 0; decoder rows are held at unit norm (as for Gemma Scope).
"""

from __future__ import annotations

import torch

from editkit.features.sae import SAE
from editkit.features.saes import register


def _rectangle(u: torch.Tensor) -> torch.Tensor:
    return ((u > -0.5) & (u < 0.5)).to(u)


class _JumpReLU(torch.autograd.Function):
    """π · H(π − θ), with the pseudo-derivative −(θ/ε) K((π − θ)/ε) for θ."""

    @staticmethod
    def forward(ctx, pre: torch.Tensor, theta: torch.Tensor, eps: float) -> torch.Tensor:
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps
        return pre * (pre > theta)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        pre, theta = ctx.saved_tensors
        d_theta = -(theta / ctx.eps) * _rectangle((pre - theta) / ctx.eps) * grad
        return (pre > theta) * grad, d_theta.sum(0), None


class _Step(torch.autograd.Function):
    """H(π − θ), with the pseudo-derivative −K((π − θ)/ε)/ε for θ (none for π)."""

    @staticmethod
    def forward(ctx, pre: torch.Tensor, theta: torch.Tensor, eps: float) -> torch.Tensor:
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps
        return (pre > theta).to(pre)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        pre, theta = ctx.saved_tensors
        d_theta = -(1 / ctx.eps) * _rectangle((pre - theta) / ctx.eps) * grad
        return None, d_theta.sum(0), None


@register
class JumpReLUSAE(SAE):
    saelens_architecture = "jumprelu"
    saelens_transcoder = "jumprelu_transcoder"
    tensors = ("W_enc", "b_enc", "W_dec", "b_dec", "threshold")
    thresholds = ("threshold",)
    unit_decoder = True

    def __init__(self, cfg):
        super().__init__(cfg)
        with torch.no_grad():
            self.threshold.fill_(cfg.jumprelu_init_threshold)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pre = self.pre_acts(x)
        return torch.relu(pre) * (pre > self.threshold), pre

    def coefficient(self, step: int) -> float:
        return self.cfg.l0_coefficient * self.warm_up(step)

    def training_loss(self, x: torch.Tensor, y: torch.Tensor, coefficient: float, dead: torch.Tensor):
        pre = self.pre_acts(x)
        eps = self.cfg.jumprelu_bandwidth
        f = _JumpReLU.apply(pre, self.threshold, eps)
        y_hat = self.decode(f)
        l0 = _Step.apply(pre, self.threshold, eps).sum(-1).mean()
        return self.mse(y, y_hat) + coefficient * l0, f, y_hat

    @torch.no_grad()
    def after_step(self, f: torch.Tensor) -> None:
        self.threshold.clamp_(min=0)
