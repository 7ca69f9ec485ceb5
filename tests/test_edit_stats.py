"""Second-moment statistics: the float64 value, the cache (hit, key, corruption), resuming, requests and hparams."""

import json

import h5py
import pytest
import torch

from editkit.edit.hparams import load_hparams, shipped_file
from editkit.edit.stats import Stats
from editkit.errors import EditkitError
from editkit.hooks import Trace
from editkit.models import adapter_for
from editkit.requests import load_requests
from tests.conftest import tiny_model
from tests.edit_fixtures import tiny_corpus, word_tokenizer


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    model = tiny_model("gpt2")
    corpus = tiny_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt")
    return model, word_tokenizer(), adapter_for(model), corpus


def _stats(setup, cache, **kw):
    model, tok, adapter, corpus = setup
    return Stats(model, tok, adapter, corpus, kw.pop("n_tokens", 2000), cache_dir=cache, batch_tokens=256, **kw)


def test_second_moment_matches_a_direct_computation(setup, tmp_path):
    model, tok, adapter, corpus = setup
    C = _stats(setup, tmp_path).C(1)
    assert C.dtype == torch.float64 and C.shape == (64, 64)
    lines = open(corpus).read().splitlines()
    keys, n = [], 0
    for line in lines:
        ids = torch.tensor([tok(line)["input_ids"]])
        with Trace(model, adapter.name("mlp_out", 1), retain_input=True) as tr, torch.no_grad():
            model(ids)
        keys.append(tr[adapter.name("mlp_out", 1)].input[0].double())
        n += ids.shape[1]
        if n >= 2000:
            break
    k = torch.cat(keys)[:2000]
    torch.testing.assert_close(C, k.T @ k / 2000, rtol=1e-6, atol=1e-9)


def test_cache_is_reused_and_keyed_by_the_weights(setup, tmp_path):
    first = _stats(setup, tmp_path)
    C = first.C(0)
    path = first.path(first.key(0))
    assert path.exists()
    second = _stats(setup, tmp_path, log=lambda m: pytest.fail(f"unexpected message {m}"))
    second._accumulate = lambda todo: pytest.fail("recomputed despite a valid cache")
    assert torch.equal(second.C(0), C)
    other = tiny_model("gpt2", seed=1)
    s3 = Stats(other, setup[1], setup[2], setup[3], 2000, cache_dir=tmp_path)
    assert s3.path(s3.key(0)) != path


def test_corrupt_cache_is_reported_and_recomputed(setup, tmp_path):
    first = _stats(setup, tmp_path)
    C = first.C(0)
    path = first.path(first.key(0))
    with h5py.File(path, "r+") as f:
        f["sum_kkT"][0, 0] += 1.0
    messages = []
    again = _stats(setup, tmp_path, log=messages.append)
    assert torch.equal(again.C(0), C)
    assert len(messages) == 1 and "corrupt (checksum mismatch)" in messages[0] and str(path) in messages[0]
    path.write_bytes(b"not an hdf5 file")
    messages.clear()
    assert torch.equal(_stats(setup, tmp_path, log=messages.append).C(0), C)
    assert "corrupt (cannot read it" in messages[0]


def test_interrupted_computation_resumes_to_the_same_bits(setup, tmp_path):
    full = _stats(setup, tmp_path / "a").C(1)
    interrupted = _stats(setup, tmp_path / "b", checkpoint_s=0.0)
    calls = {"n": 0}
    keys = interrupted._keys

    def crash_after_three(*a):
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt
        return keys(*a)

    interrupted._keys = crash_after_three
    with pytest.raises(KeyboardInterrupt):
        interrupted.C(1)
    with h5py.File(interrupted.path(interrupted.key(1)), "r") as f:
        assert not f.attrs["complete"] and 0 < f.attrs["count"] < 2000
    messages = []
    resumed = _stats(setup, tmp_path / "b", log=messages.append).C(1)
    assert messages and messages[0].startswith("resuming statistics from")
    assert torch.equal(resumed, full)


def test_missing_corpus_is_a_clear_error(setup, tmp_path):
    with pytest.raises(EditkitError, match="corpus file .*nope.txt does not exist"):
        Stats(*setup[:3], str(tmp_path / "nope.txt"), 100, cache_dir=tmp_path).C(0)


def test_shipped_hparams_carry_the_papers_constants():
    rome = load_hparams("rome", "gpt2-xl")
    assert (rome.layers, rome.v_lr, rome.v_num_grad_steps, rome.kl_factor, rome.v_weight_decay) == (
        [17],
        0.5,
        20,
        0.0625,
        0.5,
    )
    assert rome.clamp_norm_factor == 4 and rome.original_key
    assert load_hparams("memit", "gpt2-xl").layers == [13, 14, 15, 16, 17]
    assert load_hparams("memit", "gpt2-xl").mom2_update_weight == 20000
    gptj = load_hparams("memit", "EleutherAI/gpt-j-6B")
    assert gptj.layers == [3, 4, 5, 6, 7, 8] and gptj.mom2_update_weight == 15000
    assert not load_hparams("r-rome", "gpt2-xl").original_key
    assert load_hparams("rome", "gpt2-xl", overrides=["v_lr=0.1", "layers=[3]"]).v_lr == 0.1
    assert load_hparams("rome", "gpt2-xl", overrides=["v_lr=5e-3"]).v_lr == 0.005  # YAML 1.1 reads a string
    assert shipped_file("alphaedit", "meta-llama/Llama-2-7b-hf").exists()
    assert shipped_file("rome", "google/gemma-3-270m") == shipped_file("rome", "gemma3-270m")
    assert load_hparams("rome", "gemma3-270m").layers == [4]


def test_every_shipped_hparams_file_loads_and_smollm2_has_all_five_methods():
    from editkit.edit.hparams import HPARAMS_DIR

    for path in sorted(HPARAMS_DIR.glob("*/*.yaml")):
        load_hparams(path.parent.name, file=path)  # unknown keys, wrong types and bounds are errors
    smol = {m: load_hparams(m, "smollm2-135m") for m in ("rome", "r-rome", "memit", "alphaedit", "ft-l")}
    assert smol["rome"].layers == smol["r-rome"].layers == smol["ft-l"].layers == [4]
    assert 4 in smol["memit"].layers and smol["memit"].layers == smol["alphaedit"].layers
    assert smol["rome"].original_key and not smol["r-rome"].original_key


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["v_lr"], "is not key=value"),
        (["learning_rate=1"], "unknown rome hyper-parameter 'learning_rate'"),
        (["v_lr=fast"], "v_lr='fast' should be of type float"),
        (["layers=[]"], r"layers=\[\] is empty"),
    ],
)
def test_bad_hparams_are_clear_errors(overrides, message):
    with pytest.raises(EditkitError, match=message):
        load_hparams("rome", "gpt2-xl", overrides=overrides)


def test_unknown_model_and_method_name_the_fix():
    with pytest.raises(EditkitError, match="no shipped rome hparams for model 'bert'.*--hparams FILE"):
        load_hparams("rome", "bert")
    with pytest.raises(EditkitError, match="unknown edit method 'romeo'"):
        load_hparams("romeo", "gpt2-xl")


def test_requests_from_counterfact_and_plain_records(tmp_path):
    cf = {
        "requested_rewrite": {
            "prompt": "{} plays the",
            "subject": "Ann",
            "target_new": {"str": "harp"},
            "target_true": {"str": "oboe"},
        }
    }
    plain = {"prompt": "{} lives in", "subject": "Bob", "target_new": "Rome"}
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(cf) + "\n" + json.dumps(plain) + "\n")
    reqs = load_requests(path)
    assert [(r.subject, r.target_new, r.target_true) for r in reqs] == [("Ann", "harp", "oboe"), ("Bob", "Rome", None)]
    assert [r.subject for r in load_requests(path, limit=1, offset=1)] == ["Bob"]
    bad = tmp_path / "bad.json"
    for record, message in [
        ({"prompt": "plays the", "subject": "Ann", "target_new": "x"}, "record 1: prompt 'plays the' has no {}"),
        ({"prompt": "{} is", "subject": " ", "target_new": "x"}, "record 1: subject is empty"),
        ({"prompt": "{} is", "subject": "Ann", "target_new": " "}, "record 1: target_new is empty"),
        ({"prompt": "{} is", "subject": "Ann"}, "record 1: missing or non-text field 'target_new'"),
    ]:
        bad.write_text(json.dumps([plain, record]))
        with pytest.raises(EditkitError, match=message):
            load_requests(bad)


def test_no_requests_is_a_clear_error():
    from editkit.edit.common import check_requests

    with pytest.raises(EditkitError, match="no edit requests"):
        check_requests(word_tokenizer(), [])
