"""Transcoders (an MLP's input → its output): files as SAELens 6 writes them load with SAELens's formulas,
every architecture saves and reloads as a transcoder exactly, the paired store holds what the MLP computed,
training on the toy model predicts the MLP's output, `evaluate_sae` matches a hand-run forward pass, and the
transcoder feature edit flips a toy fact and reverts bit for bit."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from editkit.corpus import open_corpus
from editkit.errors import EditkitError
from editkit.features import SAE, SAEConfig, resolve_hook
from editkit.features.evaluate import evaluate_sae
from editkit.features.saes import names
from editkit.features.store import ActivationStore, cache_activations, paired_activations
from editkit.features.train import explained_variance, train_sae
from editkit.models import toy_dir
from tests.features_fixtures import random_batches, sparse_data

D_IN, D_OUT, D_SAE = 12, 9, 40
TOY_TRANSCODER = toy_dir() / "transcoder-blocks.0"
HOOK_IN, HOOK_OUT = "blocks.0.ln2.hook_normalized", "blocks.0.hook_mlp_out"


def _saelens_transcoder(path, architecture: str, tensors: dict):
    """A directory as SAELens 6 `Transcoder.save_model` writes one: `TranscoderConfig.to_dict()`."""
    path.mkdir()
    meta = {"sae_lens_version": "6.54.12", "sae_lens_training_version": "6.54.12", "model_name": "gpt2"}
    meta |= {"hook_name": "blocks.2.ln2.hook_normalized", "hook_head_index": None, "context_size": 128}
    meta |= {"hook_name_out": "blocks.2.hook_mlp_out", "hook_head_index_out": None, "prepend_bos": True}
    raw = {"d_in": D_IN, "d_sae": D_SAE, "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": False}
    raw |= {"normalize_activations": "none", "reshape_activations": "none", "metadata": meta}
    raw |= {"architecture": architecture, "d_out": D_OUT}
    (path / "cfg.json").write_text(json.dumps(raw))
    save_file(tensors, str(path / "sae_weights.safetensors"))
    return path


def _tensors(*extra: str) -> dict:
    g = torch.Generator().manual_seed(0)
    t = {
        "W_enc": torch.randn(D_IN, D_SAE, generator=g) / D_IN**0.5,
        "b_enc": torch.randn(D_SAE, generator=g) * 0.3,
        "W_dec": torch.randn(D_SAE, D_OUT, generator=g) / D_OUT**0.5,
        "b_dec": torch.randn(D_OUT, generator=g) * 0.1,
    }
    for name in extra:
        t[name] = torch.rand(D_SAE, generator=g) * 0.5
    return t


def _x(n: int = 64) -> torch.Tensor:
    return torch.randn(n, D_IN, generator=torch.Generator().manual_seed(7)) * 2


@pytest.mark.parametrize("architecture", ["transcoder", "jumprelu_transcoder"])
def test_saelens_transcoder_files_load_with_saelens_formulas(tmp_path, architecture):
    """Transcoder.encode: act(x W_enc + b_enc), b_dec never subtracted (it is d_out wide); decode f W_dec + b_dec;
    JumpReLUTranscoder keeps only pre-activations above `threshold`."""
    t = _tensors(*(["threshold"] if architecture == "jumprelu_transcoder" else []))
    sae = SAE.load(_saelens_transcoder(tmp_path / "t", architecture, t))
    assert sae.cfg.is_transcoder and sae.cfg.d_out == D_OUT and sae.cfg.hook_name_out == "blocks.2.hook_mlp_out"
    x = _x()
    pre = x @ t["W_enc"] + t["b_enc"]
    f = pre.relu() * (pre > t["threshold"]) if "threshold" in t else pre.relu()
    assert (f > 0).any() and (f == 0).any()
    if "threshold" in t:
        assert ((pre > 0) & (pre <= t["threshold"])).any()  # the threshold removes some ReLU-active features
    assert torch.allclose(sae.encode(x), f, atol=1e-6)
    assert torch.allclose(sae(x), f @ t["W_dec"] + t["b_dec"], atol=1e-5)
    sae.save(tmp_path / "again")
    raw = json.loads((tmp_path / "again" / "cfg.json").read_text())
    assert raw["architecture"] == architecture and raw["d_out"] == D_OUT and raw["apply_b_dec_to_input"] is False
    assert raw["metadata"]["hook_name_out"] == "blocks.2.hook_mlp_out"
    again = load_file(str(tmp_path / "again" / "sae_weights.safetensors"))
    assert again.keys() == t.keys() and all(torch.equal(again[k], t[k]) for k in t)


def test_transcoder_files_editkit_cannot_read_are_refused(tmp_path):
    t = _tensors()
    _saelens_transcoder(tmp_path / "skip", "skip_transcoder", {**t, "W_skip": torch.zeros(D_OUT, D_IN)})
    with pytest.raises(EditkitError, match="'skip_transcoder' is not supported"):
        SAE.load(tmp_path / "skip")
    bad = _saelens_transcoder(tmp_path / "nod", "transcoder", t)
    raw = json.loads((bad / "cfg.json").read_text())
    del raw["d_out"]
    (bad / "cfg.json").write_text(json.dumps(raw))
    with pytest.raises(EditkitError, match="a transcoder needs d_out"):
        SAE.load(bad)
    _saelens_transcoder(tmp_path / "shape", "transcoder", {**t, "b_dec": torch.zeros(D_IN)})
    with pytest.raises(EditkitError, match=r"b_dec has shape \[12\], cfg.json implies \[9\]"):
        SAE.load(tmp_path / "shape")


def _pairs(n: int = 8000):
    """(x [n, 24], y [n, D_OUT]): y a fixed linear map of x's sparse codes, as an MLP's output of its input."""
    x, _ = sparse_data(d=24, n=n)
    w = torch.randn(24, D_OUT, generator=torch.Generator().manual_seed(5))
    return x, torch.relu(x) @ w


def _paired_batches(x, y, batch_size, seed=0):
    g = torch.Generator().manual_seed(seed)
    while True:
        i = torch.randint(len(x), (batch_size,), generator=g)
        yield x[i], y[i]


# what each architecture is saved as: SAELens's transcoder classes where there is one, editkit's name otherwise
SAVED_AS = {
    "standard": "transcoder",
    "jumprelu": "jumprelu_transcoder",
    "batchtopk": "jumprelu_transcoder",
    "matryoshka": "jumprelu_transcoder",
    "topk": "topk_transcoder",
    "gated": "gated_transcoder",
}


@pytest.mark.parametrize("arch", names())
def test_every_architecture_trains_as_a_transcoder_and_round_trips_exactly(tmp_path, arch):
    x, y = _pairs()
    cfg = SAEConfig(d_in=24, d_sae=64, architecture=arch, k=4, d_out=D_OUT, hook_name="blocks.1.ln2.hook_normalized")
    cfg.hook_name_out, cfg.training_steps, cfg.batch_size, cfg.lr = "blocks.1.hook_mlp_out", 150, 256, 3e-3
    cfg.lr_warm_up_steps, cfg.l1_coefficient, cfg.matryoshka_widths = (
        20,
        0.5,
        [16, 64] if arch == "matryoshka" else None,
    )
    sae, log = train_sae(_paired_batches(x, y, 256), cfg)
    assert sae.W_dec.shape == (64, D_OUT) and sae.b_dec.shape == (D_OUT,) and not sae.cfg.apply_b_dec_to_input
    assert explained_variance(y[:2000], sae(x[:2000]).detach()) > 0.5, log[-1]
    sae.save(tmp_path / arch)
    raw = json.loads((tmp_path / arch / "cfg.json").read_text())
    assert raw["architecture"] == SAVED_AS[arch] and raw["d_out"] == D_OUT and raw["d_in"] == 24
    assert raw["metadata"]["hook_name_out"] == "blocks.1.hook_mlp_out" and raw["metadata"]["hook_layer_out"] == 1
    back = SAE.load(tmp_path / arch)
    assert back.cfg.is_transcoder and back.cfg.hook_name_out == sae.cfg.hook_name_out
    for name in sae.tensors:
        assert torch.equal(getattr(back, name), getattr(sae, name)), name
    assert torch.equal(back.encode(x[:500]), sae.encode(x[:500])) and torch.equal(back(x[:500]), sae(x[:500]))


def test_a_transcoder_needs_pairs():
    x, _ = _pairs(1000)
    cfg = SAEConfig(d_in=24, d_sae=32, architecture="topk", k=4, d_out=D_OUT, training_steps=5, batch_size=64)
    with pytest.raises(EditkitError, match="targets are 24-wide, the transcoder predicts 9"):
        train_sae(random_batches(x, 64), cfg)


@pytest.fixture(scope="module")
def paired_store(toy, tmp_path_factory):
    model, tok, adapter = toy
    path = tmp_path_factory.mktemp("tc") / "pairs.h5"
    hook_in, hook_out = resolve_hook(adapter, "blocks.1.mlp.hook_in"), resolve_hook(adapter, "blocks.1.hook_mlp_out")
    cache_activations(model, tok, adapter, hook_in, "toy", path, 20_000, "toy", hook_out=hook_out)
    return ActivationStore(path), hook_in, hook_out


def test_the_paired_store_holds_the_mlps_input_and_its_output(toy, paired_store):
    model, tok, adapter = toy
    store, hook_in, _ = paired_store
    assert store.paired and store.n_tokens == 20_000 and store.attrs["hook_name_out"] == "blocks.1.hook_mlp_out"
    x, y = store.read(0, 500), store.read(0, 500, "activations_out")
    with torch.no_grad():
        assert torch.allclose(model.transformer.h[1].mlp(x), y, atol=1e-5)  # y is what the MLP makes of x
    batch = next(store.batches(64, seed=0))
    assert isinstance(batch, tuple) and batch[0].shape == (64, 256) and batch[1].shape == (64, 256)
    with pytest.raises(EditkitError, match="holds paired activations"):
        cache_activations(model, tok, adapter, hook_in, "toy", store.path, 20_000, "toy")


@pytest.mark.parametrize("arch", ["topk", "standard"])
def test_a_transcoder_trained_on_the_toy_model_predicts_the_mlp_output(toy, paired_store, arch):
    model, tok, adapter = toy
    store, hook_in, hook_out = paired_store
    cfg = SAEConfig(d_in=256, d_sae=512, architecture=arch, k=16, d_out=256, hook_name=hook_in.name, seed=0)
    cfg.hook_name_out, cfg.training_steps, cfg.batch_size, cfg.lr, cfg.lr_warm_up_steps = (
        hook_out.name,
        300,
        256,
        1e-3,
        50,
    )
    cfg.normalize_activations, cfg.l1_coefficient = "expected_average_only_in", 1.0
    untrained = SAE(cfg)
    sae, _ = train_sae(store.batches(cfg.batch_size, cfg.seed), cfg)
    texts = list(open_corpus("toy", model, tok).texts())[int(store.attrs["texts_done"]) :][:100]
    x, y = paired_activations(model, tok, [hook_in, hook_out], texts, 128)  # held out: after the store's texts
    with torch.no_grad():
        mse = {name: (s(x) - y).pow(2).sum(-1).mean().item() for name, s in (("trained", sae), ("init", untrained))}
        mse["mean"] = (y - y.mean(0)).pow(2).sum(-1).mean().item()
    assert mse["trained"] < 0.2 * mse["mean"] and mse["trained"] < 0.05 * mse["init"], mse


def _hand_ce(model, ids: torch.Tensor, layer: int, replace) -> float:
    """Mean next-token CE of the toy GPT-2 run block by block, MLP `layer`'s output replaced by replace(its input)."""
    t = model.transformer
    with torch.no_grad():
        h = t.wte(ids) + t.wpe(torch.arange(ids.shape[1])[None])
        for i, block in enumerate(t.h):
            h = h + block.attn(block.ln_1(h))[0]
            m = block.ln_2(h)
            h = h + (replace(m, block.mlp) if i == layer else block.mlp(m))
        logits = model.lm_head(t.ln_f(h))
    return F.cross_entropy(logits[0, :-1], ids[0, 1:]).item()


def test_ce_recovered_with_the_mlp_replaced_matches_a_hand_computation(toy):
    model, tok, adapter = toy
    tc = SAE.load(TOY_TRANSCODER)
    text = "Drabrur Trebound Ratrei plays the accordion. One busy river surprised everyone in the spring."
    ev = evaluate_sae(model, tok, adapter, tc, [text])
    ids = torch.tensor([tok(text)["input_ids"]])
    clean = _hand_ce(model, ids, 0, lambda m, mlp: mlp(m))
    spliced = _hand_ce(model, ids, 0, lambda m, mlp: tc(m))
    zeroed = _hand_ce(model, ids, 0, lambda m, mlp: torch.zeros_like(m))
    assert ev.hook_name_out == HOOK_OUT and ev.n_tokens == ids.shape[1]
    assert ev.ce_clean == pytest.approx(clean, abs=1e-5) and ev.ce_sae == pytest.approx(spliced, abs=1e-5)
    assert ev.ce_zero == pytest.approx(zeroed, abs=1e-5)
    assert ev.ce_loss_recovered == pytest.approx((zeroed - spliced) / (zeroed - clean), abs=1e-4)
    assert abs(spliced - clean) < 0.2 < zeroed - clean  # close to the MLP, unlike no MLP
    with torch.no_grad():
        x, y = paired_activations(
            model, tok, [resolve_hook(adapter, HOOK_IN), resolve_hook(adapter, HOOK_OUT)], [text], 128
        )
        assert ev.explained_variance == pytest.approx(explained_variance(y.double(), tc(x).double()), abs=1e-6)
        assert ev.l0 == pytest.approx((tc.encode(x) > 0).sum(-1).float().mean().item())


@pytest.fixture(scope="module")
def feature_edit_setup(toy, tmp_path_factory):
    from editkit.edit import Stats, load_hparams
    from editkit.features.transcoder_edit import FeatureKeys

    model, tok, adapter = toy
    tc = SAE.load(TOY_TRANSCODER)
    hp = load_hparams("rome", "toy")
    stats = Stats(model, tok, adapter, "toy", 30_000, cache_dir=tmp_path_factory.mktemp("stats"))
    keys = FeatureKeys.compute(model, tok, adapter, tc, open_corpus("toy", model, tok).texts(), 30_000)
    return tc, hp, stats, keys


def test_the_transcoder_feature_edit_flips_a_toy_fact_and_reverts_bit_for_bit(toy, feature_edit_setup, tmp_path):
    from editkit.edit.result import EditResult
    from editkit.evaluate.datasets import load_dataset
    from editkit.features.transcoder_edit import transcoder_edit
    from editkit.models import next_token_probs
    from editkit.tokens import target_ids

    model, tok, adapter = toy
    tc, hp, stats, keys = feature_edit_setup
    # record 3, as ROME's toy test; on record 0 this edit does not flip (experiments/README.md gives the rates)
    record = load_dataset("toy", toy_dir() / "counterfact.json", limit=4)[3]
    request = record.request()
    new, true = (target_ids(tok, request.text, t)[0] for t in (request.target_new, request.target_true))
    others = record.neighborhood_prompts[:5]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    top_before = next_token_probs(model, tok, [request.text, *others]).argmax(-1)
    assert top_before[0] == true
    result = transcoder_edit(model, tok, adapter, tc, [request], hp, stats, keys, n_features=1)
    (picked,) = result.hparams["features"]
    assert len(picked) == 1 and result.modules == [adapter.name("mlp_out", 0)] and result.method == "transcoder-feature"
    top_after = next_token_probs(model, tok, [request.text, *others]).argmax(-1)
    assert top_after[0] == new  # the fact flipped
    delta = result.deltas[0]
    with torch.no_grad():  # the edited projection maps the subject's key k to ROME's v*
        v = adapter.module(model, delta.module)(delta.keys[0])
    assert torch.allclose(v, delta.values[0], atol=1e-4 * delta.values[0].norm().item())
    result.save(tmp_path / "edit")
    result.revert(model)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # bit for bit
    again = EditResult.load(tmp_path / "edit")
    again.apply(model)
    assert torch.equal(next_token_probs(model, tok, [request.text]).argmax(-1)[0], top_after[0])
    again.revert(model)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    from editkit.features.steering import steer

    with pytest.raises(EditkitError, match="steering needs an SAE .*this is a transcoder"):
        steer(model, tok, adapter, tc, request.text, 0, add=1.0)
    with pytest.raises(EditkitError, match="needs a transcoder"):
        transcoder_edit(
            model, tok, adapter, SAE.load(toy_dir() / "sae-blocks.0.hook_resid_post"), [request], hp, stats, keys
        )


def test_cli_trains_and_evaluates_a_transcoder(tmp_path):
    from typer.testing import CliRunner

    from editkit.cli import app

    runner = CliRunner()
    out = tmp_path / "tc"
    args = ["sae", "train", "toy", "--hook-in", "blocks.1.mlp.hook_in", "--hook-out", "blocks.1.hook_mlp_out"]
    args += ["--d-sae", "64", "--arch", "topk", "--k", "4", "--steps", "20", "--batch-size", "64"]
    args += ["--max-tokens", "2000", "--store", str(tmp_path / "a.h5"), "--out", str(out), "--json"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    trained = json.loads(res.output)
    assert trained["eval"]["hook_name_out"] == "blocks.1.hook_mlp_out" and trained["eval"]["l0"] == pytest.approx(4)
    raw = json.loads((out / "cfg.json").read_text())
    assert raw["architecture"] == "topk_transcoder" and raw["d_out"] == 256
    res = runner.invoke(app, ["sae", "eval", "toy", str(out), "--texts", "5", "--skip", "100", "--json"])
    assert res.exit_code == 0, res.output
    ev = json.loads(res.output)  # 20 steps: a poor transcoder, but measured as one (its output hook replaced)
    assert ev["hook_name_out"] == "blocks.1.hook_mlp_out" and ev["n_tokens"] > 0
    assert ev["ce_loss_recovered"] == pytest.approx((ev["ce_zero"] - ev["ce_sae"]) / (ev["ce_zero"] - ev["ce_clean"]))
    res = runner.invoke(app, ["steer", "toy", str(out), "--feature", "0", "--prompt", "Bores Vugael", "--add", "1"])
    assert res.exit_code == 2 and "steering needs an SAE" in res.output
