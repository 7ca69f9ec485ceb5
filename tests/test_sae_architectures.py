"""Conformance of every registered SAE architecture (`editkit.features.saes`), without a test per architecture:
it trains a few steps on random data, round-trips through the SAELens format bit for bit, and writes what
`sae_lens.SAE.load_from_disk` (SAELens 6) would open: a known inference `architecture`, exactly that class's
tensors (it loads the state dict strictly) and the SAELens 6 cfg fields."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from editkit.features import SAE, SAEConfig
from editkit.features.saes import classes, get, names
from editkit.features.train import train_sae
from tests.features_fixtures import random_batches, sparse_data

# SAELens 6's inference classes (sae_lens/__init__.py register_sae_class) and their state-dict keys.
SAELENS_TENSORS = {
    "standard": {"W_enc", "b_enc", "W_dec", "b_dec"},
    "topk": {"W_enc", "b_enc", "W_dec", "b_dec"},
    "jumprelu": {"W_enc", "b_enc", "W_dec", "b_dec", "threshold"},
    "gated": {"W_enc", "W_dec", "b_dec", "b_gate", "b_mag", "r_mag"},
}
SAELENS_CFG = {"d_in", "d_sae", "dtype", "device", "apply_b_dec_to_input", "normalize_activations"}
SAELENS_CFG |= {"reshape_activations", "metadata", "architecture"}


def _config(name: str, **kw) -> SAEConfig:
    base = dict(d_in=24, d_sae=64, architecture=name, k=4, lr=3e-3, training_steps=40, batch_size=128)
    base |= dict(lr_warm_up_steps=5, l1_warm_up_steps=10, dead_feature_window=10, resample_every=20, seed=1)
    base |= dict(normalize_activations="expected_average_only_in", hook_name="blocks.1.hook_resid_post")
    return SAEConfig(**(base | kw))


def _train(name: str) -> SAE:
    x, _ = sparse_data(d=24, n=4000)
    return train_sae(random_batches(x, 128, seed=2), _config(name))[0]


def test_registry_names_are_the_modules():
    assert [c.name for c in classes()] == names() and {"standard", "topk"} <= set(names())
    assert get("relu") is get("standard")  # editkit's earlier name for the ReLU SAE


@pytest.mark.parametrize("name", names())
def test_trains_and_is_seeded(name):
    sae, again = _train(name), _train(name)
    x, _ = sparse_data(d=24, n=300, seed=5)
    f = sae.encode(x)
    assert torch.isfinite(f).all() and (f > 0).any() and (f >= 0).all()
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(64), atol=1e-5)  # decoder norms folded
    assert sae.cfg.normalize_activations == "none"  # input scale folded: it reads raw activations
    for key, t in sae.state_dict().items():
        assert torch.equal(t, again.state_dict()[key]), key


@pytest.mark.parametrize("name", names())
def test_saelens_round_trip_is_bit_identical(name, tmp_path):
    sae = _train(name)
    back = SAE.load(sae.save(tmp_path / name))
    assert type(back) is type(sae)
    assert sae.state_dict().keys() == back.state_dict().keys()
    for key, t in sae.state_dict().items():
        assert torch.equal(t, back.state_dict()[key]) and t.dtype == back.state_dict()[key].dtype, key
    assert back.cfg.to_saelens() == sae.cfg.to_saelens()
    x, _ = sparse_data(d=24, n=300, seed=5)
    assert torch.equal(sae.encode(x), back.encode(x)) and torch.equal(sae(x), back(x))


@pytest.mark.parametrize("name", names())
def test_writes_what_saelens_6_loads(name, tmp_path):
    _train(name).save(tmp_path / name)
    raw = json.loads((tmp_path / name / "cfg.json").read_text())
    assert raw["architecture"] in SAELENS_TENSORS, raw["architecture"]
    assert SAELENS_CFG <= raw.keys() and raw["dtype"] == "float32" and raw["device"] == "cpu"
    assert raw["metadata"]["hook_name"] == "blocks.1.hook_resid_post" and raw["metadata"]["sae_lens_version"] >= "6"
    assert set(load_file(str(tmp_path / name / "sae_weights.safetensors"))) == SAELENS_TENSORS[raw["architecture"]]
    assert set(get(raw["architecture"]).saelens_fields(SAEConfig.from_saelens(raw))) <= raw.keys()
