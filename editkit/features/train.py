"""Training an SAE: the architecture's loss (`SAE.training_loss`, see `editkit.features.saes`), Adam, as
SAELens and Anthropic's updates describe.

- Architectures with `unit_decoder` keep decoder rows unit-norm (gradient parallel to each row removed,
  then renormalised); the others leave the decoder free.
- Linear learning-rate warm-up, optional linear decay over the last `lr_decay_steps`.
- `expected_average_only_in`: inputs scaled so that their mean norm is √d_in during training (a transcoder's
  targets too, to √d_out, by their own factor); the factors are folded into the weights at the end, so the
  saved SAE reads raw activations.
- Dead features (no activation in `dead_feature_window` steps) are resampled every `resample_every`
  steps (Bricken et al. 2023): decoder ← a high-loss input, normalised; encoder ← it × 0.2 × mean alive
  encoder norm; b_enc ← 0; their Adam moments reset.
At the end decoder norms are folded into the encoder, so every decoder row has unit norm.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from editkit.errors import EditkitError
from editkit.features.sae import SAE, SAEConfig
from editkit.progress import progress_bar

#: a batch of activations x `[batch, d_in]` (an SAE reconstructs them), or (x, y) for a transcoder (predicts y)
Batch = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


def explained_variance(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """1 − FVU: 1 − Σ‖x − x̂‖² / Σ‖x − x̄‖²."""
    return 1 - ((x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum()).item()


def lr_factor(cfg: SAEConfig, step: int) -> float:
    warm = min(1.0, (step + 1) / max(1, cfg.lr_warm_up_steps))
    left = cfg.training_steps - step
    decay = min(1.0, left / cfg.lr_decay_steps) if cfg.lr_decay_steps else 1.0
    return warm * decay


@torch.no_grad()
def _unit_decoder(sae: SAE, grads_only: bool) -> None:
    """Remove the gradient component parallel to each decoder row, or renormalise the rows."""
    w = sae.W_dec
    if grads_only:
        if w.grad is not None:
            unit = w / w.norm(dim=1, keepdim=True)
            w.grad -= (w.grad * unit).sum(1, keepdim=True) * unit
    else:
        w /= w.norm(dim=1, keepdim=True)


@torch.no_grad()
def resample_dead(
    sae: SAE, opt: torch.optim.Optimizer, dead: torch.Tensor, x: torch.Tensor, y: torch.Tensor, g: torch.Generator
) -> int:
    """Re-initialise the `dead` features on inputs drawn ∝ their squared reconstruction loss (of the
    targets `y`): decoder rows along y − b_dec there, encoder columns along the same (an SAE) or along x."""
    idx = dead.nonzero().squeeze(1)
    if len(idx) == 0:
        return 0
    losses = (sae(x) - y).pow(2).sum(-1)
    pick = torch.multinomial(losses.pow(2) + 1e-12, len(idx), replacement=True, generator=g)
    v = _unit(y[pick] - sae.b_dec)
    e = _unit(x[pick]) if sae.cfg.is_transcoder else v
    alive = ~dead
    enc_norm = sae.W_enc[:, alive].norm(dim=0).mean() if alive.any() else torch.tensor(1.0)
    dec_norm = sae.W_dec[alive].norm(dim=1).mean() if alive.any() else torch.tensor(1.0)
    sae.W_dec[idx] = v * (1.0 if sae.unit_decoder else dec_norm)
    sae.W_enc[:, idx] = (e * 0.2 * enc_norm).T
    biases = [getattr(sae, name) for name in sae.encoder_biases]
    for b in biases:
        b[idx] = 0
    for p, rows in ((sae.W_dec, (idx,)), (sae.W_enc, (slice(None), idx)), *((b, (idx,)) for b in biases)):
        state = opt.state.get(p, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in state:
                state[key][rows] = 0
    return len(idx)


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=1, keepdim=True).clamp_min(1e-8)


def _pair(batch: Batch, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = batch if isinstance(batch, tuple) else (batch, batch)
    return x.to(dtype), y.to(dtype)


def train_sae(
    batches: Iterator[Batch], cfg: SAEConfig, progress: bool = False, log_every: int = 50
) -> tuple[SAE, list[dict]]:
    """Train an SAE on `batches` of activations `[batch, d_in]` (a transcoder on (x, y) pairs, y
    `[batch, d_out]`) for `cfg.training_steps` steps.

    Returns the SAE (decoder rows unit-norm, normalisation folded) and a log of loss, L0, explained
    variance (of y) and dead fraction every `log_every` steps.
    """
    torch.manual_seed(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    sae = SAE(cfg)
    first = _pair(next(batches), sae.W_enc.dtype)
    if first[1].shape[-1] != cfg.width_out:
        raise EditkitError(
            f"the batches' targets are {first[1].shape[-1]}-wide, the {'transcoder' if cfg.is_transcoder else 'SAE'} "
            f"predicts {cfg.width_out}; pass (input, output) pairs for a transcoder and plain activations for an SAE"
        )
    norm = cfg.normalize_activations != "none"
    scale, scale_out = (t.shape[-1] ** 0.5 / t.norm(dim=1).mean().item() if norm else 1.0 for t in first)
    with torch.no_grad():
        sae.b_dec.copy_((first[1] * scale_out).mean(0))
    opt = torch.optim.Adam(sae.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(cfg, s))
    since_fired = torch.zeros(cfg.d_sae, dtype=torch.long)
    log: list[dict] = []
    with progress_bar("training SAE", cfg.training_steps, "steps", progress) as bar:
        for step in range(cfg.training_steps):
            x, y = first if step == 0 else _pair(next(batches), sae.W_enc.dtype)
            x, y = x * scale, y * scale_out
            loss, f, y_hat = sae.training_loss(x, y, sae.coefficient(step), since_fired >= cfg.dead_feature_window)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if sae.unit_decoder:
                _unit_decoder(sae, grads_only=True)
            opt.step()
            sched.step()
            if sae.unit_decoder:
                _unit_decoder(sae, grads_only=False)
            sae.after_step(f.detach())
            fired = (f > 0).any(0)
            since_fired = torch.where(fired, 0, since_fired + 1)
            resampled = 0
            if (step + 1) % cfg.resample_every == 0 and step < cfg.resample_until * cfg.training_steps:
                resampled = resample_dead(sae, opt, since_fired >= cfg.dead_feature_window, x, y, g)
                since_fired[since_fired >= cfg.dead_feature_window] = 0
            if step % log_every == 0 or step == cfg.training_steps - 1:
                entry = {
                    "step": step,
                    "loss": loss.item(),
                    "l0": (f > 0).sum(-1).float().mean().item(),
                    "explained_variance": explained_variance(y.detach(), y_hat.detach()),
                    "dead_fraction": (since_fired >= cfg.dead_feature_window).float().mean().item(),
                    "resampled": resampled,
                }
                log.append(entry)
                ev, dead = entry["explained_variance"], entry["dead_fraction"]
                bar(step + 1, f"loss {entry['loss']:.4g}  L0 {entry['l0']:.1f}  EV {ev:.3f}  dead {dead:.1%}")
    sae = sae.for_inference()
    sae.fold(scale, scale_out)
    return sae.eval(), log
