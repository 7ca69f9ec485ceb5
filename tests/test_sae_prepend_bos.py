"""`prepend_bos`: read from and written to cfg.json as SAELens does, and honoured wherever editkit tokenizes
text or prompts for an SAE or transcoder (store, eval, attribution, steering, the transcoder edit). On the toy
model (whose tokenizer adds no BOS), an SAE with `prepend_bos` must read exactly what the same SAE without it
reads on texts that start with the BOS written out (the tokenizer parses `<|endoftext|>` as its BOS)."""

from __future__ import annotations

import json
import shutil
from itertools import islice

import pytest
import torch

from editkit.corpus import open_corpus
from editkit.errors import EditkitError
from editkit.features import SAE, SAEConfig, resolve_hook
from editkit.features.hookpoints import hook_value, trace_hook
from editkit.features.store import ActivationStore, cache_activations, hook_activations, paired_activations, tokenize
from editkit.models import toy_dir
from tests.features_fixtures import TOY_HOOK, toy_sae_dir

SHIPPED = ("sae-blocks.0.hook_resid_post", "sae-blocks.3.hook_resid_post", "transcoder-blocks.0")
PROMPT, SUBJECT = "The Eiffel Tower is located in the city of", "Eiffel Tower"


def _as_saelens(src, dst, prepend_bos: bool):
    """A copy of an editkit SAE directory as SAELens would write it (no editkit keys), with `prepend_bos`."""
    shutil.copytree(src, dst)
    raw = json.loads((dst / "cfg.json").read_text())
    for key in ("editkit", "editkit_format"):
        raw.pop(key)
    raw["prepend_bos"] = raw["metadata"]["prepend_bos"] = prepend_bos
    (dst / "cfg.json").write_text(json.dumps(raw))
    return dst


@pytest.fixture(scope="module")
def bos_sae(tmp_path_factory):
    """(the toy SAE at TOY_HOOK as shipped, the same weights in a SAELens cfg with prepend_bos true)."""
    root = tmp_path_factory.mktemp("bos")
    return SAE.load(toy_sae_dir()), SAE.load(_as_saelens(toy_sae_dir(), root / "sae", True))


def _raw(sae: SAE, tmp_path) -> dict:
    return json.loads((sae.save(tmp_path / "s") / "cfg.json").read_text())


@pytest.mark.parametrize("flag", [True, False])
def test_flag_round_trips_through_cfg_json_top_level_and_metadata(tmp_path, flag):
    sae = SAE(SAEConfig(d_in=12, d_sae=40, architecture="topk", k=4, prepend_bos=flag))
    raw = _raw(sae, tmp_path)
    assert raw["prepend_bos"] is flag and raw["metadata"]["prepend_bos"] is flag and raw["editkit_format"] == 2
    assert SAE.load(tmp_path / "s").cfg.prepend_bos is flag
    assert SAEConfig(d_in=12, d_sae=40).prepend_bos is False  # editkit's default: no BOS, as it always read text


def test_saelens_files_read_as_saelens_reads_them(tmp_path):
    raw = _raw(SAE(SAEConfig(d_in=12, d_sae=40)), tmp_path)
    for key in ("editkit", "editkit_format", "prepend_bos"):
        raw.pop(key)
    meta = raw["metadata"]

    def read(**change) -> bool:
        return SAEConfig.from_saelens({**raw, **change}).prepend_bos

    assert read(metadata={**meta, "prepend_bos": True}) is True  # SAELens 6: in metadata
    assert read(metadata={**meta, "prepend_bos": False}, prepend_bos=True) is False  # metadata wins, as in SAELens 6
    assert read(metadata={}, prepend_bos=False) is False  # pre-6: flat
    del meta["prepend_bos"]
    assert read(metadata=meta) is True  # absent: SAELens's default
    assert read(metadata={}, sae_lens_version="2.1.3") is True
    with pytest.raises(EditkitError, match="cfg.json: prepend_bos must be true or false, got 'yes'"):
        read(metadata={}, prepend_bos="yes")


def test_editkit_files_before_format_2_read_as_trained_without_bos(tmp_path):
    """editkit wrote `prepend_bos: true` into every cfg.json before format 2 but never prepended a BOS."""
    raw = _raw(SAE(SAEConfig(d_in=12, d_sae=40)), tmp_path)
    old = {k: v for k, v in raw.items() if k != "editkit_format"}
    old["prepend_bos"] = old["metadata"]["prepend_bos"] = True
    assert SAEConfig.from_saelens(old).prepend_bos is False
    assert SAEConfig.from_saelens({**old, "editkit_format": 2}).prepend_bos is True
    for name in SHIPPED:  # the shipped toy SAEs and transcoder were trained without a BOS, and say so
        raw = json.loads((toy_dir() / name / "cfg.json").read_text())
        assert raw["prepend_bos"] is raw["metadata"]["prepend_bos"] is False and raw["editkit_format"] == 2
        assert SAE.load(toy_dir() / name).cfg.prepend_bos is False


def _at(model, hook, ids: list[int]) -> torch.Tensor:
    with torch.no_grad(), trace_hook(model, hook, stop=True) as tr:
        model(input_ids=torch.tensor([ids]))
    return hook_value(tr, hook)[0]


def test_store_reads_bos_first_and_records_it(toy, bos_sae, tmp_path):
    model, tok, adapter = toy
    plain, with_bos = bos_sae
    bos = with_bos.bos(tok)
    assert plain.bos(tok) is None and bos == tok.bos_token_id == 0
    texts = list(open_corpus("toy").texts())[:6]
    ids, mask = tokenize(tok, texts, 16, bos)
    assert (ids[:, 0] == bos).all() and mask[:, 0].all() and mask.sum(1).max() == 16  # the BOS counts in the 16
    first = tok(texts[0])["input_ids"]
    assert ids[0, : mask[0].sum()].tolist() == [bos, *first][:16]
    assert tokenize(tok, [tok.bos_token + texts[0]], 16, bos)[0][0].tolist() == [bos, *first][:16]  # no second BOS

    hook = resolve_hook(adapter, TOY_HOOK)
    x_bos, x_plain = (
        hook_activations(model, tok, hook, texts[:1], 128, bos=bos),
        hook_activations(model, tok, hook, texts[:1], 128),
    )
    assert len(x_bos) == len(x_plain) == len(first)  # the BOS itself is not stored
    assert torch.allclose(x_bos[0], _at(model, hook, [bos, *first])[1], atol=1e-5)  # first real token, BOS in front
    assert torch.allclose(x_plain[0], _at(model, hook, first)[0], atol=1e-5)
    assert (x_bos[0] - x_plain[0]).norm() > 0.1 * x_plain[0].norm()  # the first position reads differently

    hooks = [hook, resolve_hook(adapter, "blocks.0.hook_mlp_out")]
    pair = paired_activations(model, tok, hooks, texts[:1], 128, bos=bos)
    assert torch.equal(pair[0], x_bos)
    with_store = cache_activations(model, tok, adapter, hook, "toy", tmp_path / "b.h5", 200, "toy", prepend_bos=True)
    no_store = cache_activations(model, tok, adapter, hook, "toy", tmp_path / "p.h5", 200, "toy")
    a, b = ActivationStore(with_store), ActivationStore(no_store)
    assert a.attrs["prepend_bos"] is True and b.attrs["prepend_bos"] is False
    assert torch.allclose(a.read(0, 1)[0], x_bos[0], atol=1e-5)
    assert torch.allclose(b.read(0, 1)[0], x_plain[0], atol=1e-5)  # float rounding differs with the batch's shape
    with pytest.raises(EditkitError, match="holds activations with prepend_bos=True, not False; pass a new --store"):
        cache_activations(model, tok, adapter, hook, "toy", with_store, 200, "toy")
    with pytest.raises(EditkitError, match="holds activations with prepend_bos=False, not True"):
        cache_activations(model, tok, adapter, hook, "toy", no_store, 200, "toy", prepend_bos=True)


def test_store_written_before_the_flag_resumes_as_without_bos(toy, tmp_path):
    import h5py

    model, tok, adapter = toy
    hook = resolve_hook(adapter, TOY_HOOK)
    path = cache_activations(model, tok, adapter, hook, "toy", tmp_path / "a.h5", 100, "toy")
    with h5py.File(path, "a") as f:
        del f.attrs["prepend_bos"]  # as stores written before the flag existed
    cache_activations(model, tok, adapter, hook, "toy", path, 300, "toy")
    assert ActivationStore(path).n_tokens == 300
    with pytest.raises(EditkitError, match="prepend_bos=False, not True"):
        cache_activations(model, tok, adapter, hook, "toy", path, 400, "toy", prepend_bos=True)


def test_eval_reads_bos_first(toy, bos_sae):
    from editkit.features.evaluate import evaluate_sae

    model, tok, adapter = toy
    plain, with_bos = bos_sae
    texts = list(open_corpus("toy").texts())[-8:]
    got = evaluate_sae(model, tok, adapter, with_bos, texts).to_json()
    assert got == evaluate_sae(model, tok, adapter, plain, [tok.bos_token + t for t in texts]).to_json()
    assert got != evaluate_sae(model, tok, adapter, plain, texts).to_json()


def test_attribution_reads_both_prompts_bos_first(toy, bos_sae):
    from editkit.features.attribution import attribute_features

    model, tok, adapter = toy
    plain, with_bos = bos_sae
    got = attribute_features(model, tok, adapter, with_bos, PROMPT, "Paris", "Rome", SUBJECT, _cf(PROMPT), top=5)
    ref = attribute_features(
        model, tok, adapter, plain, tok.bos_token + PROMPT, "Paris", "Rome", SUBJECT, _cf(tok.bos_token + PROMPT), top=5
    )
    bare = attribute_features(model, tok, adapter, plain, PROMPT, "Paris", "Rome", SUBJECT, _cf(PROMPT), top=5)
    assert got.tokens[0] == tok.bos_token and got.tokens == ref.tokens and got.subject_range == ref.subject_range
    assert got.subject_range == tuple(p + 1 for p in bare.subject_range)
    assert got.metric == pytest.approx(ref.metric, abs=1e-5) and got.metric != pytest.approx(bare.metric, abs=1e-3)
    key = lambda r: [(s.feature, s.position, round(s.activation, 4), round(s.patch, 4)) for s in r.features]  # noqa: E731
    assert got.features and key(got) == key(ref) and all(s.position > 0 for s in got.features)


def _cf(prompt: str) -> str:
    return prompt.replace("Eiffel Tower", "Colosseum")


def test_steering_and_feature_maxima_read_bos_first(toy, bos_sae, tmp_path):
    from editkit.features.steering import generate, max_activations, steer, steering_edit

    model, tok, adapter = toy
    plain, with_bos = bos_sae
    hook = resolve_hook(adapter, TOY_HOOK)
    got = steer(model, tok, adapter, with_bos, PROMPT, 5, clamp=40.0, max_new_tokens=4)
    ref = steer(model, tok, adapter, plain, tok.bos_token + PROMPT, 5, clamp=40.0, max_new_tokens=4)
    assert (got.baseline, got.steered) == (ref.baseline, ref.steered) and got.steered != got.baseline
    seen = []
    edit = steering_edit(with_bos, 5, clamp=40.0)
    generate(model, tok, PROMPT, 1, lambda x, t: seen.append((x.clone(), t)) or edit(x, t), hook, with_bos.bos(tok))
    (x, trained), ids = seen[0], tok(PROMPT)["input_ids"]
    assert torch.allclose(x[0], _at(model, hook, [0, *ids]), atol=1e-5)  # what the edit sees: BOS first
    assert trained[0].tolist() == [False] + [True] * len(ids)  # and the BOS is never steered

    corpus = open_corpus("toy")
    texts = list(islice(corpus.texts(), 16))
    m_bos = max_activations(model, tok, adapter, with_bos, corpus, 16, cache_dir=tmp_path)
    m_plain = max_activations(model, tok, adapter, plain, corpus, 16, cache_dir=tmp_path)
    assert len(list((tmp_path / "feature-max").iterdir())) == 2  # the same weights and corpus, two cache entries
    x = hook_activations(model, tok, hook, texts, 128, bos=0)
    assert torch.equal(m_bos, plain.encode(x).amax(0)) and not torch.equal(m_bos, m_plain)


def test_transcoder_features_read_bos_first(toy, tmp_path):
    from editkit.edit.common import io_at_subject
    from editkit.features.transcoder_edit import FeatureKeys

    model, tok, adapter = toy
    plain = SAE.load(toy_dir() / "transcoder-blocks.0")
    with_bos = SAE.load(_as_saelens(toy_dir() / "transcoder-blocks.0", tmp_path / "t", True))
    texts = list(islice(open_corpus("toy").texts(), 40))
    got = FeatureKeys.compute(model, tok, adapter, with_bos, texts, 300)
    ref = FeatureKeys.compute(model, tok, adapter, plain, [tok.bos_token + t for t in texts], 300)
    bare = FeatureKeys.compute(model, tok, adapter, plain, texts, 300)
    assert got.n_tokens == ref.n_tokens == 300 and torch.allclose(got.hidden, ref.hidden, atol=1e-9)
    assert not torch.allclose(got.hidden, bare.hidden, atol=1e-4)
    prompts = [PROMPT, "Therefore it rained. " + PROMPT]
    x, _ = io_at_subject(model, tok, "transformer.h.0.mlp", prompts, [SUBJECT] * 2, bos=0)
    x_ref, _ = io_at_subject(model, tok, "transformer.h.0.mlp", [tok.bos_token + p for p in prompts], [SUBJECT] * 2)
    x_bare, _ = io_at_subject(model, tok, "transformer.h.0.mlp", prompts, [SUBJECT] * 2)
    assert torch.allclose(x, x_ref, atol=1e-5) and not torch.allclose(x, x_bare, atol=1e-3)


def test_shipped_toy_numbers_are_unchanged(toy):
    """Numbers of `editkit sae eval toy data/toy/<dir> --texts 60 --skip 20000 --json`, measured with the code
    before prepend_bos existed (main at c104c46): the shipped files now say false, and read as before. To 1e-6
    relative: they were measured on another CPU, whose float kernels round differently (2.5e-7 apart here)."""
    from editkit.features.evaluate import evaluate_sae

    model, tok, adapter = toy
    texts = list(islice(open_corpus("toy", model, tok).texts(), 20000, 20060))
    before = {
        "sae-blocks.3.hook_resid_post": (770, 0.9690416338748612, 1.1966902611960828, 8.472748060629401),
        "transcoder-blocks.0": (770, 0.993144388060934, 1.1907624580490757, 3.2693039585167254),
    }
    for name, (n, ev, ce_sae, ce_zero) in before.items():
        got = evaluate_sae(model, tok, adapter, SAE.load(toy_dir() / name), texts)
        assert (got.n_tokens, got.explained_variance, got.ce_sae, got.ce_zero) == pytest.approx(
            (n, ev, ce_sae, ce_zero), rel=1e-6
        )


def test_a_tokenizer_without_bos_is_one_clear_error(toy, bos_sae, tokenizers_on_disk, tmp_path):
    from editkit.features.evaluate import evaluate_sae

    model, _, adapter = toy
    word = tokenizers_on_disk["word"]
    assert word.bos_token_id is None
    _, with_bos = bos_sae
    message = f"the SAE {with_bos.source} was trained with a BOS first .* this tokenizer has no BOS token"
    with pytest.raises(EditkitError, match=message) as err:
        evaluate_sae(model, word, adapter, with_bos, ["Paris is a city"])
    assert "\n" not in str(err.value) and "set prepend_bos false in its cfg.json" in str(err.value)
    hook = resolve_hook(adapter, TOY_HOOK)
    with pytest.raises(EditkitError, match="--prepend-bos puts a BOS first on every text, but this tokenizer has no"):
        cache_activations(model, word, adapter, hook, "toy", tmp_path / "x" / "a.h5", 10, "toy", prepend_bos=True)
    assert not (tmp_path / "x").exists()  # nothing written


def test_cli_train_records_prepend_bos_and_keeps_stores_apart(tmp_path):
    from typer.testing import CliRunner

    from editkit.cli import app

    runner = CliRunner()
    corpus = tmp_path / "c.txt"  # 60 toy texts: about 30 to train on, the rest held out
    corpus.write_text("\n".join(islice(open_corpus("toy").texts(), 60)) + "\n")
    args = ["sae", "train", "toy", "--hook", TOY_HOOK, "--d-sae", "32", "--arch", "topk", "--k", "4", "--steps", "5"]
    args += ["--corpus", str(corpus)]
    args += ["--batch-size", "64", "--max-tokens", "300", "--store", str(tmp_path / "a.h5"), "--json"]
    res = runner.invoke(app, [*args, "--prepend-bos", "--out", str(tmp_path / "bos")])
    assert res.exit_code == 0, res.output
    raw = json.loads((tmp_path / "bos" / "cfg.json").read_text())
    assert raw["prepend_bos"] is raw["metadata"]["prepend_bos"] is True
    assert ActivationStore(tmp_path / "a.h5").attrs["prepend_bos"] is True
    assert json.loads(res.output)["eval"]["n_tokens"] > 0
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "plain")])  # the default: no BOS, another store
    assert res.exit_code == 2 and "holds activations with prepend_bos=True, not False" in res.output
    assert not (tmp_path / "plain").exists()
