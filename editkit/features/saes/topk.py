"""TopK SAE (Gao et al. 2024, "Scaling and evaluating sparse autoencoders"); SAELens `topk`.

    f = ReLU(TopK_k((x − b_dec) W_enc + b_enc))       the k largest pre-activations kept, the rest zero

No sparsity penalty: k fixes L0. Decoder rows are held at unit norm while training. Dead features (none
fired in `dead_feature_window` steps) get the auxiliary-k loss (Gao et al. §A.2): the k_aux = d_in/2
largest dead pre-activations reconstruct the error the live ones leave, e = x − x̂,

    L_aux = ‖e − ReLU(TopK_aux(dead pre-activations)) W_dec‖²,   loss = ‖x − x̂‖² + α · min(1, n_dead/k_aux) · L_aux

with α = `aux_k_coefficient` (1/32 in the paper). A file SAELens wrote with `rescale_acts_by_decoder_norm`
is read as SAELens reads it (pre-activations × ‖W_dec,i‖, decoded ÷ it).
"""

from __future__ import annotations

import torch

from editkit.errors import EditkitError
from editkit.features.sae import SAE, SAEConfig
from editkit.features.saes import register


def top_k_relu(pre: torch.Tensor, k: int) -> torch.Tensor:
    """ReLU of the k largest entries of each row, zero elsewhere."""
    values, idx = pre.topk(k, dim=-1, sorted=False)
    return torch.zeros_like(pre).scatter(-1, idx, torch.relu(values))


def aux_k_loss(sae: SAE, y: torch.Tensor, y_hat: torch.Tensor, pre: torch.Tensor, dead: torch.Tensor) -> torch.Tensor:
    """α · min(1, n_dead/k_aux) · ‖e − ê‖²: the dead features' top-k_aux reconstruction of the residual
    e = y − ŷ of the target y (k_aux = half its width)."""
    n_dead, k_aux = int(dead.sum()), y.shape[-1] // 2
    if n_dead == 0 or sae.cfg.aux_k_coefficient == 0:
        return y.new_zeros(())
    acts = top_k_relu(pre.masked_fill(~dead, -torch.inf), min(k_aux, n_dead))
    residual = (y - y_hat).detach()
    return sae.cfg.aux_k_coefficient * min(1.0, n_dead / k_aux) * (acts @ sae.W_dec - residual).pow(2).sum(-1).mean()


def check_k(cfg: SAEConfig) -> None:
    if not (cfg.k and 0 < cfg.k <= cfg.d_sae):
        raise EditkitError(f"a {cfg.architecture} SAE needs 0 < k <= d_sae ({cfg.d_sae}), got k={cfg.k}; pass --k 32")


@register
class TopKSAE(SAE):
    saelens_architecture = "topk"
    saelens_transcoder = "topk_transcoder"  # editkit's name: SAELens has no TopK transcoder
    unit_decoder = True

    @classmethod
    def check_config(cls, cfg: SAEConfig) -> None:
        check_k(cfg)

    @classmethod
    def saelens_fields(cls, cfg: SAEConfig) -> dict:
        return {
            "k": cfg.k,
            "rescale_acts_by_decoder_norm": cfg.rescale_acts_by_decoder_norm,
            "activation_fn_str": "topk",
            "activation_fn_kwargs": {"k": cfg.k},
        }

    @classmethod
    def read_saelens(cls, raw: dict, where: str) -> dict:
        k = raw.get("k") or (raw.get("activation_fn_kwargs") or {}).get("k")
        return {"k": k, "rescale_acts_by_decoder_norm": bool(raw.get("rescale_acts_by_decoder_norm", False))}

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pre = self.pre_acts(x)
        if self.cfg.rescale_acts_by_decoder_norm:
            pre = pre * self.W_dec.norm(dim=-1)
        return top_k_relu(pre, self.cfg.k), pre

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        if self.cfg.rescale_acts_by_decoder_norm:
            f = f / self.W_dec.norm(dim=-1)
        return super().decode(f)

    def training_loss(self, x: torch.Tensor, y: torch.Tensor, coefficient: float, dead: torch.Tensor):
        f, pre = self.features(x)
        y_hat = self.decode(f)
        return self.mse(y, y_hat) + aux_k_loss(self, y, y_hat, pre, dead), f, y_hat
