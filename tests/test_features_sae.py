"""SAEs: dictionary recovery on synthetic data, TopK sparsity, SAELens-format files, activation store,
evaluation of the shipped toy SAE, and clear errors."""

from __future__ import annotations

import json

import h5py
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from editkit.cli import app
from editkit.corpus import open_corpus
from editkit.errors import EditkitError
from editkit.features import SAE, SAEConfig, resolve_hook
from editkit.features.store import ActivationStore, cache_activations
from editkit.features.train import train_sae
from tests.features_fixtures import TOY_HOOK, random_batches, sparse_data, toy_sae_dir


def _train(arch: str, **kw):
    x, dictionary = sparse_data()
    cfg = SAEConfig(
        d_in=24,
        d_sae=96,
        architecture=arch,
        lr=3e-3,
        training_steps=1200,
        batch_size=256,
        lr_warm_up_steps=50,
        l1_warm_up_steps=200,
        dead_feature_window=200,
        resample_every=250,
        **kw,
    )
    sae, log = train_sae(random_batches(x, 256), cfg)
    return sae, log, dictionary


RECOVERING = [
    ("standard", {"l1_coefficient": 0.3}),
    ("topk", {"k": 4}),
    ("batchtopk", {"k": 4}),
    ("jumprelu", {"l0_coefficient": 0.1}),
    ("gated", {"l1_coefficient": 1.0}),
]


@pytest.mark.parametrize("arch, kw", RECOVERING)
def test_sae_recovers_known_dictionary(arch, kw):
    sae, log, dictionary = _train(arch, **kw)
    best = (dictionary @ sae.W_dec.detach().T).max(1).values
    assert (best > 0.9).float().mean() >= 0.9, best
    assert log[-1]["explained_variance"] > 0.85
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(96), atol=1e-5)  # decoder folded to unit norm


def test_topk_has_exactly_k_active():
    sae = SAE(SAEConfig(d_in=16, d_sae=64, architecture="topk", k=5))
    with torch.no_grad():
        sae.b_enc.fill_(1.0)  # every pre-activation positive: exactly k survive
    f = sae.encode(torch.randn(100, 16))
    assert ((f > 0).sum(-1) == 5).all()


def test_save_load_bit_identical(tmp_path):
    sae = SAE(SAEConfig(d_in=8, d_sae=32, architecture="topk", k=3, hook_name=TOY_HOOK, model_name="toy", seed=3))
    with torch.no_grad():
        sae.b_enc.normal_()
        sae.b_dec.normal_()
    back = SAE.load(sae.save(tmp_path / "sae"))
    for name, t in sae.state_dict().items():
        assert torch.equal(t, back.state_dict()[name]) and t.dtype == back.state_dict()[name].dtype
    assert back.cfg.to_saelens() == sae.cfg.to_saelens()
    raw = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    assert raw["architecture"] == "topk" and raw["k"] == 3 and raw["metadata"]["hook_name"] == TOY_HOOK
    assert raw["hook_name"] == TOY_HOOK and raw["activation_fn_kwargs"] == {"k": 3}  # pre-6 SAELens keys


def _write_by_hand(path, cfg: dict, d_in=6, d_sae=10, dtype=torch.float32):
    path.mkdir()
    g = torch.Generator().manual_seed(0)
    tensors = {
        "W_enc": torch.randn(d_in, d_sae, generator=g, dtype=dtype),
        "b_enc": torch.randn(d_sae, generator=g, dtype=dtype),
        "W_dec": torch.randn(d_sae, d_in, generator=g, dtype=dtype),
        "b_dec": torch.randn(d_in, generator=g, dtype=dtype),
    }
    save_file(tensors, str(path / "sae_weights.safetensors"))
    (path / "cfg.json").write_text(json.dumps(cfg))
    return tensors


def test_loads_saelens_v6_directory_written_by_hand(tmp_path):
    cfg = {
        "d_in": 6,
        "d_sae": 10,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "architecture": "standard",
        "metadata": {"model_name": "gpt2", "hook_name": "blocks.1.hook_resid_post", "sae_lens_version": "6.5.0"},
    }
    tensors = _write_by_hand(tmp_path / "v6", cfg)
    sae = SAE.load(tmp_path / "v6")
    assert sae.cfg.architecture == "standard" and sae.cfg.hook_name == "blocks.1.hook_resid_post"
    x = torch.randn(4, 6)
    expected = torch.relu((x - tensors["b_dec"]) @ tensors["W_enc"] + tensors["b_enc"]) @ tensors["W_dec"]
    assert torch.allclose(sae(x), expected + tensors["b_dec"], atol=1e-5)


def test_loads_pre_6_topk_directory_written_by_hand(tmp_path):
    cfg = {
        "d_in": 6,
        "d_sae": 10,
        "hook_point": "blocks.0.hook_mlp_out",
        "hook_layer": 0,
        "model_name": "gpt2",
        "activation_fn_str": "topk",
        "activation_fn_kwargs": {"k": 2},
        "normalize_activations": False,
        "dtype": "torch.float16",
        "context_size": 64,
    }
    _write_by_hand(tmp_path / "old", cfg, dtype=torch.float16)
    sae = SAE.load(tmp_path / "old")
    assert (sae.cfg.architecture, sae.cfg.k, sae.cfg.hook_name) == ("topk", 2, "blocks.0.hook_mlp_out")
    assert sae.W_enc.dtype == torch.float16


def test_bad_sae_files_give_clear_errors(tmp_path):
    with pytest.raises(EditkitError, match="not an SAE directory"):
        SAE.load(tmp_path)
    _write_by_hand(tmp_path / "crosscoder", {"d_in": 6, "d_sae": 10, "architecture": "crosscoder"})
    with pytest.raises(EditkitError, match="'crosscoder' is not supported; editkit reads .*standard.*topk"):
        SAE.load(tmp_path / "crosscoder")
    tensors = _write_by_hand(tmp_path / "extra", {"d_in": 6, "d_sae": 10, "architecture": "standard"})
    save_file(
        {**tensors, "finetuning_scaling_factor": torch.ones(10)}, str(tmp_path / "extra" / "sae_weights.safetensors")
    )
    with pytest.raises(EditkitError, match="has tensors finetuning_scaling_factor that a standard SAE does not have"):
        SAE.load(tmp_path / "extra")
    _write_by_hand(tmp_path / "shape", {"d_in": 7, "d_sae": 10, "architecture": "standard"})
    with pytest.raises(EditkitError, match=r"W_enc has shape \[6, 10\], cfg.json implies \[7, 10\]"):
        SAE.load(tmp_path / "shape")


def test_bad_inputs_give_clear_errors(toy):
    _, _, adapter = toy
    with pytest.raises(EditkitError, match="unknown hook name 'blocks.3.resid'"):
        resolve_hook(adapter, "blocks.3.resid")
    with pytest.raises(EditkitError, match="layer 9 out of range"):
        resolve_hook(adapter, "blocks.9.hook_mlp_out")
    sae = SAE(SAEConfig(d_in=8, d_sae=16))
    with pytest.raises(EditkitError, match="feature 16 out of range"):
        sae.direction(16)
    with pytest.raises(EditkitError, match="d_in mismatch: the SAE reads 8-wide activations.*got 256"):
        sae.encode(torch.zeros(2, 256))
    with pytest.raises(EditkitError, match="topk SAE needs 0 < k"):
        SAEConfig(d_in=8, d_sae=16, architecture="topk")
    with pytest.raises(EditkitError, match="unknown SAE architecture 'gaited'; use one of .*standard"):
        SAEConfig(d_in=8, d_sae=16, architecture="gaited")


def test_hook_names_map_to_modules(toy):
    model, _, adapter = toy
    assert resolve_hook(adapter, "blocks.2.hook_resid_post").module == adapter.name("block", 2)
    post = resolve_hook(adapter, "blocks.2.hook_mlp_post")
    assert (post.module, post.side) == (adapter.name("mlp_out", 2), "input")


def test_activation_store_is_incremental_and_resumes(toy, tmp_path):
    model, tok, adapter = toy
    texts = list(open_corpus("toy").texts())[:40]
    hook = resolve_hook(adapter, "blocks.1.hook_mlp_post")
    once = cache_activations(model, tok, adapter, hook, "toy", tmp_path / "a.h5", 400, "toy", batch_size=8)
    cache_activations(model, tok, adapter, hook, "toy", tmp_path / "b.h5", 150, "toy", batch_size=8, texts=texts)
    cache_activations(model, tok, adapter, hook, "toy", tmp_path / "b.h5", 400, "toy", batch_size=8, texts=texts)
    a, b = ActivationStore(once), ActivationStore(tmp_path / "b.h5")
    assert a.n_tokens == b.n_tokens == 400 and a.d_in == 1024
    assert torch.equal(a.read(), b.read())
    assert a.attrs["hook_name"] == "blocks.1.hook_mlp_post" and a.attrs["model"] == "toy"
    with h5py.File(once) as f:
        assert f["activations"].chunks is not None
    with pytest.raises(EditkitError, match="hook_name='blocks.1.hook_mlp_post', not 'blocks.2.hook_mlp_post'"):
        hook2 = resolve_hook(adapter, "blocks.2.hook_mlp_post")
        cache_activations(model, tok, adapter, hook2, "toy", once, 400, "toy")
    # Another model under the same name (a retrained toy model) must not resume this store.
    bias = model.transformer.h[0].mlp.c_proj.bias
    saved = bias.detach().clone()
    try:
        with torch.no_grad():
            bias[0] += 1.0
        with pytest.raises(EditkitError, match="holds activations with weights="):
            cache_activations(model, tok, adapter, hook, "toy", once, 400, "toy")
    finally:
        with torch.no_grad():
            bias.copy_(saved)


def test_shipped_toy_sae_reconstructs_the_residual_stream(toy):
    from editkit.features.evaluate import evaluate_sae

    model, tok, adapter = toy
    sae = SAE.load(toy_sae_dir())
    texts = list(open_corpus("toy").texts())[-60:]
    ev = evaluate_sae(model, tok, adapter, sae, texts)
    assert sae.cfg.hook_name == TOY_HOOK and ev.n_tokens > 500
    assert ev.explained_variance > 0.8 and ev.ce_loss_recovered > 0.8
    assert ev.ce_clean < ev.ce_sae < ev.ce_zero
    assert ev.l0 <= sae.cfg.k
    assert 0 < ev.dense_fraction < 0.2 and 0.95 < ev.shrinkage < 1.05
    decode = sae.decode
    sae.decode = lambda f: decode(f) / 2  # a reconstruction half as long: γ = E‖x̂‖² / E⟨x̂, x⟩ halves
    half = evaluate_sae(model, tok, adapter, sae, texts)
    assert half.shrinkage == pytest.approx(ev.shrinkage / 2, rel=1e-6)


def test_cli_sae_eval_and_bad_hook(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["sae", "eval", "toy", str(toy_sae_dir()), "--texts", "20", "--json"])
    assert res.exit_code == 0, res.output
    assert 0 < json.loads(res.output)["explained_variance"] <= 1
    res = runner.invoke(
        app, ["sae", "train", "toy", "--hook", "blocks.3.resid", "--d-sae", "8", "--out", str(tmp_path / "s")]
    )
    assert res.exit_code == 2 and "unknown hook name" in res.output
    res = runner.invoke(
        app,
        ["sae", "train", "toy", "--hook", TOY_HOOK, "--d-sae", "8", "--out", str(tmp_path / "s"), "--arch", "gaited"],
    )
    assert (
        res.exit_code == 2 and "unknown SAE architecture 'gaited'; use one of batchtopk, gated, jumprelu" in res.output
    )
    res = runner.invoke(
        app,
        ["sae", "train", "toy", "--hook", TOY_HOOK, "--d-sae", "8", "--out", str(tmp_path / "s"), "--widths", "8,x"],
    )
    assert res.exit_code == 2 and "--widths '8,x' is not a comma-separated list of integers" in res.output
    assert not (tmp_path / "s").exists()


def test_keep_mask_skips_padding_and_special_tokens_and_optionally_bos(tokenizers_on_disk):
    from editkit.features.store import keep_mask, tokenize

    spm = tokenizers_on_disk["spm"]  # adds <s> in front, like Llama
    ids, mask = tokenize(spm, ["Talin Vorsk plays the violin", "Paris"], 64)
    assert ids[0, 0] == spm.bos_token_id and mask[1].sum() < mask[0].sum()
    skip, keep = keep_mask(ids, mask, spm, skip_bos=True), keep_mask(ids, mask, spm, skip_bos=False)
    assert not skip[:, 0].any() and keep[:, 0].all()
    assert torch.equal(skip[:, 1:], keep[:, 1:]) and torch.equal(skip[:, 1:], mask[:, 1:].bool())


def test_unknown_corpus_gives_a_clear_error(tmp_path):
    with pytest.raises(EditkitError, match="corpus file .*missing.txt does not exist"):
        open_corpus(str(tmp_path / "missing.txt"))
    bad = tmp_path / "c.jsonl"
    bad.write_text('{"body": "x"}\n')
    with pytest.raises(EditkitError, match="no text field 'text'"):
        list(open_corpus(str(bad)).texts())


def test_hf_corpus_without_datasets_is_a_clear_error():
    import importlib.util

    if importlib.util.find_spec("datasets") is not None:
        pytest.skip("datasets is installed; this checks the message shown without it")
    with pytest.raises(EditkitError, match="pip install datasets"):
        open_corpus("wikitext")


def test_eval_splices_only_the_positions_the_sae_is_trained_on(toy):
    """A leading BOS (special, never stored for training) keeps its clean activation in the spliced and zeroed
    runs: an SAE that reconstructs nothing but BOS-free positions loses nothing there, so with a prepended
    BOS the CE of both runs is that of prepending BOS to texts the SAE sees whole, position for position."""
    from editkit.features.evaluate import evaluate_sae

    model, tok, adapter = toy
    sae = SAE.load(toy_sae_dir())
    texts = list(open_corpus("toy").texts())[-8:]
    bos = [tok.bos_token + t for t in texts]
    plain, with_bos = evaluate_sae(model, tok, adapter, sae, texts), evaluate_sae(model, tok, adapter, sae, bos)
    assert with_bos.n_tokens == plain.n_tokens  # the BOS is not scored for L0/EV
    decode = sae.decode
    sae.decode = lambda f: decode(f) * 0 + 1e4  # a reconstruction that would wreck any position it is put at
    wrecked = evaluate_sae(model, tok, adapter, sae, bos)
    assert wrecked.ce_clean == pytest.approx(with_bos.ce_clean, abs=1e-9)
    assert wrecked.ce_sae > 3 * with_bos.ce_sae  # the real tokens are spliced...
    sae.decode = lambda f: torch.where(torch.arange(f.shape[1])[None, :, None] == 0, decode(f) * 0 + 1e4, decode(f))
    # ...and position 0 (the BOS) is not: wrecking only it changes nothing
    assert evaluate_sae(model, tok, adapter, sae, bos).ce_sae == pytest.approx(with_bos.ce_sae, abs=1e-9)
