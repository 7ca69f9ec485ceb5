"""Corpora that exist offline: text sampled from the model (seeded, cached, resumable), local files, and a
clear line for a dataset name that cannot be opened here."""

import json

import pytest
import torch

from editkit.corpus import SAMPLE_BATCH, open_corpus, sample_texts
from editkit.edit.stats import Stats
from editkit.errors import EditkitError
from editkit.features.hookpoints import resolve_hook
from editkit.features.store import ActivationStore, cache_activations


def test_samples_are_seeded_cached_and_nested(toy, tmp_path):
    model, tok, _ = toy
    a = open_corpus("samples:20", model, tok, cache_dir=tmp_path)
    texts = list(a.texts())
    assert len(texts) == 20 and all(isinstance(t, str) for t in texts) and len(set(texts)) > 15
    files = list((tmp_path / "corpora").rglob("*.jsonl"))
    assert len(files) == 1 and not list((tmp_path / "corpora").rglob("*.partial"))
    again = open_corpus("samples:20", model, tok, cache_dir=tmp_path)  # read back, not sampled again
    assert again.identity == a.identity and list(again.texts()) == texts
    first_batch = list(open_corpus(f"samples:{SAMPLE_BATCH}", model, tok, cache_dir=tmp_path).texts())
    assert first_batch == texts[:SAMPLE_BATCH]  # each batch has its own seed
    other = list(open_corpus("samples:20:1", model, tok, cache_dir=tmp_path).texts())
    assert other != texts
    # the model wrote them: its own samples are far more likely under it than the same words shuffled
    from editkit.evaluate.scoring import score_targets

    words = " ".join(texts[:8]).split()
    shuffled = [words[i] for i in torch.randperm(len(words), generator=torch.Generator().manual_seed(0))]
    own = score_targets(model, tok, [tok.bos_token] * 1, [" ".join(words[:60])])[0].nll
    mixed = score_targets(model, tok, [tok.bos_token] * 1, [" ".join(shuffled[:60])])[0].nll
    assert own < mixed - 1.0, (own, mixed)


def test_sampling_resumes_from_a_torn_partial_file(toy, tmp_path):
    model, tok, _ = toy
    whole = [json.loads(x) for x in sample_texts(model, tok, 40, 0, tmp_path / "a.jsonl").read_text().splitlines()]
    lines = (tmp_path / "a.jsonl").read_text().splitlines(keepends=True)
    torn = tmp_path / "b.jsonl.partial"
    torn.write_text("".join(lines[: SAMPLE_BATCH + 3]) + lines[SAMPLE_BATCH + 3][:7])  # a batch and a bit, torn
    resumed = [json.loads(x) for x in sample_texts(model, tok, 40, 0, tmp_path / "b.jsonl").read_text().splitlines()]
    assert resumed == whole and not torn.exists()


def test_statistics_and_activation_stores_read_samples(toy, tmp_path, monkeypatch):
    monkeypatch.setenv("EDITKIT_CACHE", str(tmp_path))
    model, tok, adapter = toy
    stats = Stats(model, tok, adapter, "samples:16", 600, cache_dir=tmp_path, log=lambda m: None)
    C = stats.C(1)
    assert C.dtype == torch.float64 and torch.allclose(C, C.T) and torch.linalg.eigvalsh(C).min() > -1e-8
    assert stats.key(1)["corpus"].startswith("samples:")
    hook = resolve_hook(adapter, "blocks.1.hook_resid_post")
    store = cache_activations(model, tok, adapter, hook, "samples:48", tmp_path / "a.h5", 200, "toy", batch_size=8)
    assert ActivationStore(store).n_tokens == 200  # the toy model writes one short sentence per text


def test_corpora_that_cannot_be_read_here_say_how_to_pick_one(toy, tmp_path):
    with pytest.raises(EditkitError, match="pick a corpus that exists offline: samples:2000"):
        open_corpus("wikimedia/wikipedia:20231101.en")
    with pytest.raises(EditkitError, match="corpus file .*nope.txt does not exist"):
        open_corpus(str(tmp_path / "nope.txt"))
    with pytest.raises(EditkitError, match="write samples:N"):
        open_corpus("samples:lots", *toy[:2])
    with pytest.raises(EditkitError, match="sampled from a model"):
        open_corpus("samples:10")
