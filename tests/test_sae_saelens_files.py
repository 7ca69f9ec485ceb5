"""Files laid out as SAELens 6 writes them (`SAE.save_model` / `TrainingSAE.save_inference_model`: cfg.json
from `SAEConfig.to_dict`, the state dict in sae_weights.safetensors) load in editkit with the feature
activations of SAELens's formulas, written out here (sae-lens is not a dependency); and the training pieces
of each architecture do what their papers say."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from editkit.errors import EditkitError
from editkit.features import SAE, SAEConfig
from editkit.features.train import explained_variance, train_sae
from tests.features_fixtures import random_batches, sparse_data

D_IN, D_SAE = 12, 40


def _saelens_dir(path, architecture: str, tensors: dict, **cfg):
    """A directory as SAELens 6 saves one: `to_dict()` of its config class, the state dict as is."""
    path.mkdir()
    meta = {"sae_lens_version": "6.18.0", "sae_lens_training_version": "6.18.0", "model_name": "gpt2"}
    meta |= {"hook_name": "blocks.2.hook_resid_post", "hook_head_index": None, "context_size": 128}
    meta |= {"prepend_bos": True, "dataset_path": "monology/pile-uncopyrighted", "model_from_pretrained_kwargs": {}}
    raw = {"d_in": D_IN, "d_sae": D_SAE, "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": True}
    raw |= {"normalize_activations": "none", "reshape_activations": "none", "metadata": meta}
    raw |= {**cfg, "architecture": architecture}
    (path / "cfg.json").write_text(json.dumps(raw))
    save_file(tensors, str(path / "sae_weights.safetensors"))
    return path


def _tensors(*extra: str, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    t = {
        "W_enc": torch.randn(D_IN, D_SAE, generator=g) / D_IN**0.5,
        "W_dec": torch.randn(D_SAE, D_IN, generator=g) / D_IN**0.5,
        "b_dec": torch.randn(D_IN, generator=g) * 0.1,
    }
    for name in extra:
        t[name] = torch.randn(D_SAE, generator=g) * 0.3
    return t


def _x(n: int = 64) -> torch.Tensor:
    return torch.randn(n, D_IN, generator=torch.Generator().manual_seed(7)) * 2


def _check(sae: SAE, t: dict, f: torch.Tensor, x: torch.Tensor) -> None:
    assert (f > 0).any() and (f == 0).any()
    assert torch.allclose(sae.encode(x), f, atol=1e-6)
    assert torch.allclose(sae(x), f @ t["W_dec"] + t["b_dec"], atol=1e-5)


def test_standard(tmp_path):
    t = _tensors("b_enc")
    sae = SAE.load(_saelens_dir(tmp_path / "s", "standard", t))
    x = _x()
    _check(sae, t, torch.relu((x - t["b_dec"]) @ t["W_enc"] + t["b_enc"]), x)


@pytest.mark.parametrize("rescale", [False, True])
def test_topk(tmp_path, rescale):
    t = _tensors("b_enc")
    sae = SAE.load(_saelens_dir(tmp_path / "t", "topk", t, k=5, rescale_acts_by_decoder_norm=rescale))
    x = _x()
    norms = t["W_dec"].norm(dim=-1) if rescale else torch.ones(D_SAE)
    pre = ((x - t["b_dec"]) @ t["W_enc"] + t["b_enc"]) * norms
    values, idx = pre.topk(5, dim=-1)
    f = torch.zeros_like(pre).scatter(-1, idx, values.relu())
    assert torch.allclose(sae.encode(x), f, atol=1e-6)
    assert torch.allclose(sae(x), (f / norms) @ t["W_dec"] + t["b_dec"], atol=1e-5)
    assert (sae.encode(x) > 0).sum(-1).max() == 5


def test_jumprelu(tmp_path):
    t = _tensors("b_enc", "threshold")
    t["threshold"] = t["threshold"].abs()
    sae = SAE.load(_saelens_dir(tmp_path / "j", "jumprelu", t))
    x = _x()
    pre = (x - t["b_dec"]) @ t["W_enc"] + t["b_enc"]
    f = pre.relu() * (pre > t["threshold"])
    assert ((pre > 0) & (pre <= t["threshold"])).any()  # the threshold removes some ReLU-active features
    _check(sae, t, f, x)


def test_batchtopk_saved_for_inference_is_jumprelu_with_one_threshold(tmp_path):
    """SAELens 6 BatchTopKTrainingSAE.save_inference_model: architecture jumprelu, threshold = topk_threshold."""
    t = _tensors("b_enc")
    t["threshold"] = torch.full((D_SAE,), 0.4)
    sae = SAE.load(_saelens_dir(tmp_path / "b", "jumprelu", t))
    x = _x()
    pre = (x - t["b_dec"]) @ t["W_enc"] + t["b_enc"]
    _check(sae, t, pre.relu() * (pre > 0.4), x)


def test_gated(tmp_path):
    t = _tensors("b_gate", "b_mag", "r_mag")
    sae = SAE.load(_saelens_dir(tmp_path / "g", "gated", t))
    x = _x()
    s = x - t["b_dec"]
    f = (s @ t["W_enc"] + t["b_gate"] > 0).float() * torch.relu(s @ (t["W_enc"] * t["r_mag"].exp()) + t["b_mag"])
    _check(sae, t, f, x)


def test_training_checkpoints_and_missing_tensors_are_refused(tmp_path):
    t = {**_tensors("b_enc"), "topk_threshold": torch.tensor(0.3, dtype=torch.float64)}
    _saelens_dir(tmp_path / "ckpt", "batchtopk", t, k=4)
    with pytest.raises(EditkitError, match="'batchtopk' is a SAELens training checkpoint.*as 'jumprelu'"):
        SAE.load(tmp_path / "ckpt")
    _saelens_dir(tmp_path / "m", "matryoshka_batchtopk", t, k=4, matryoshka_widths=[8, D_SAE])
    with pytest.raises(EditkitError, match="'matryoshka_batchtopk' is a SAELens training checkpoint"):
        SAE.load(tmp_path / "m")
    _saelens_dir(tmp_path / "j", "jumprelu", _tensors("b_enc"))
    with pytest.raises(EditkitError, match="has no tensor 'threshold'; a jumprelu SAE has"):
        SAE.load(tmp_path / "j")
    _saelens_dir(tmp_path / "g", "gated", _tensors("b_enc", "b_gate", "b_mag", "r_mag"))
    with pytest.raises(EditkitError, match="has tensors b_enc that a gated SAE does not have"):
        SAE.load(tmp_path / "g")


# --- training pieces -------------------------------------------------------------------------------------------


def test_jumprelu_pseudo_derivatives():
    """∂L0/∂θ = −K((π−θ)/ε)/ε summed over the batch; ∂(π·H(π−θ))/∂θ = −(θ/ε) K((π−θ)/ε); π gets H(π−θ)."""
    sae = SAE(SAEConfig(d_in=D_IN, d_sae=D_SAE, architecture="jumprelu", jumprelu_bandwidth=0.5))
    with torch.no_grad():
        sae.threshold.copy_(torch.rand(D_SAE, generator=torch.Generator().manual_seed(1)))
    x = _x(256)
    pre = sae.pre_acts(x).detach()
    kernel = ((pre - sae.threshold.detach()).abs() < 0.25).float()  # |(π − θ)/ε| < ½
    assert 0 < kernel.mean() < 1
    sae.zero_grad()
    loss, f, _ = sae.training_loss(x, x, coefficient=1.0, dead=torch.zeros(D_SAE, dtype=torch.bool))
    torch.autograd.grad(loss, [sae.threshold])  # the loss is differentiable in θ
    from editkit.features.saes.jumprelu import _JumpReLU, _Step

    theta = sae.threshold.detach().clone().requires_grad_(True)
    (grad_l0,) = torch.autograd.grad(_Step.apply(pre, theta, 0.5).sum(-1).mean(), theta)
    assert torch.allclose(grad_l0, -(kernel / 0.5).sum(0) / len(x), atol=1e-6)
    p = pre.clone().requires_grad_(True)
    out = _JumpReLU.apply(p, theta, 0.5)
    g_pre, g_theta = torch.autograd.grad(out.sum(), [p, theta])
    assert torch.equal(g_pre, (pre > theta).float())
    assert torch.allclose(g_theta, -(theta.detach() / 0.5 * kernel).sum(0), atol=1e-5)
    assert torch.equal(f, pre * (pre > sae.threshold))


def test_jumprelu_l0_coefficient_buys_sparsity():
    x, _ = sparse_data(d=24, n=8000)
    l0 = []
    for coefficient in (0.01, 0.3):
        cfg = SAEConfig(d_in=24, d_sae=64, architecture="jumprelu", l0_coefficient=coefficient, lr=3e-3)
        cfg.training_steps, cfg.batch_size, cfg.lr_warm_up_steps, cfg.l1_warm_up_steps = 400, 256, 20, 100
        sae, _ = train_sae(random_batches(x, 256), cfg)
        l0.append((sae.encode(x[:2000]) > 0).sum(-1).float().mean().item())
    assert l0[1] < 0.5 * l0[0], l0


def test_batchtopk_keeps_k_per_row_on_average_and_learns_its_threshold():
    from editkit.features.saes.batchtopk import batch_top_k

    acts = torch.rand(50, D_SAE, generator=torch.Generator().manual_seed(3)) + 0.01
    f = batch_top_k(acts, 4)
    per_row = (f > 0).sum(-1)
    assert per_row.sum() == 200 and per_row.min() < 4 < per_row.max()  # k·B in all, not k in each row
    assert torch.equal(f[f > 0].sort().values, acts.flatten().topk(200).values.sort().values)
    x, _ = sparse_data(d=24, n=8000)
    cfg = SAEConfig(d_in=24, d_sae=64, architecture="batchtopk", k=4, lr=3e-3, training_steps=600, batch_size=256)
    sae, _ = train_sae(random_batches(x, 256), cfg)
    assert type(sae).__name__ == "JumpReLUSAE" and sae.cfg.training_architecture == "batchtopk"
    assert torch.allclose(sae.threshold, sae.threshold[0].expand(64)) and sae.threshold[0] > 0
    l0 = (sae.encode(x[:2000]) > 0).sum(-1).float().mean().item()
    assert 3 < l0 < 5, l0  # the learnt threshold keeps about k per row at inference, one row at a time


def test_matryoshka_prefixes_reconstruct_on_their_own():
    """The first 12 of 96 features explain far more of x than the first 12 of a BatchTopK SAE's."""
    x, _ = sparse_data()
    prefix = {}
    for arch in ("batchtopk", "matryoshka"):
        cfg = SAEConfig(d_in=24, d_sae=96, architecture=arch, k=4, lr=3e-3, training_steps=600, batch_size=256)
        cfg.lr_warm_up_steps, cfg.matryoshka_widths = 50, [12, 48]
        sae, _ = train_sae(random_batches(x, 256), cfg)
        f = sae.encode(x[:4000])
        prefix[arch] = explained_variance(x[:4000], f[:, :12] @ sae.W_dec[:12] + sae.b_dec)
    assert prefix["matryoshka"] > prefix["batchtopk"] + 0.3, prefix
    with pytest.raises(EditkitError, match="matryoshka widths must increase strictly"):
        SAEConfig(d_in=24, d_sae=96, architecture="matryoshka", k=4, matryoshka_widths=[48, 12])


def test_aux_k_loss_trains_only_dead_features_on_the_residual():
    from editkit.features.saes.topk import aux_k_loss, top_k_relu

    sae = SAE(SAEConfig(d_in=D_IN, d_sae=D_SAE, architecture="topk", k=3, aux_k_coefficient=0.5))
    with torch.no_grad():
        sae.b_enc.normal_(generator=torch.Generator().manual_seed(2))
    dead = torch.zeros(D_SAE, dtype=torch.bool)
    dead[::3] = True  # 14 dead, k_aux = d_in/2 = 6
    x = _x()
    f, pre = sae.features(x)
    x_hat = sae.decode(f)
    aux = aux_k_loss(sae, x, x_hat, pre, dead)
    acts = top_k_relu(torch.where(dead, pre, -torch.inf), 6)
    expected = 0.5 * 1.0 * (acts @ sae.W_dec - (x - x_hat)).pow(2).sum(-1).mean()
    assert torch.allclose(aux, expected) and aux > 0
    g_enc, g_dec = torch.autograd.grad(aux, [sae.W_enc, sae.W_dec])
    assert g_enc[:, ~dead].abs().max() == 0 and g_dec[~dead].abs().max() == 0
    assert g_enc[:, dead].abs().max() > 0
    assert aux_k_loss(sae, x, x_hat, pre, torch.zeros_like(dead)) == 0
