"""Runs: the case log survives a kill (resume gives the same files as an uninterrupted run), shards merge to
the unsharded result, and the single/batch/sequential modes edit and revert as documented."""

import json
import shutil

import pytest
import torch

from editkit.errors import EditkitError
from editkit.evaluate.datasets import load_dataset
from editkit.evaluate.runner import EvalConfig, read_cases, run_eval
from editkit.evaluate.tables import merge_runs
from tests.eval_helpers import DATA, tiny_bundle

TOY_CF = DATA.parents[1] / "data" / "toy" / "counterfact.json"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return tiny_bundle(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def records():
    return load_dataset("toy", TOY_CF, limit=8)


def config(**kw) -> EvalConfig:
    return EvalConfig(model="tiny", dataset="toy", gen_length=24, **kw)


class Shift:
    """A stand-in editor: adds 0.5 to the final norm's bias per edit call and reverts exactly."""

    def __init__(self):
        self.calls: list[list[str]] = []

    def __call__(self, model, tok, requests):
        self.calls.append([r.subject for r in requests])
        bias = model.transformer.ln_f.bias
        saved = bias.detach().clone()
        with torch.no_grad():
            bias += 0.5
        return type("Undo", (), {"revert": lambda self, m: bias.data.copy_(saved)})()


def test_resume_after_a_torn_line_gives_the_same_files(bundle, records, tmp_path):
    model, tok = bundle
    full = run_eval(model, tok, records, config(), tmp_path / "full", progress=False)
    assert full["n"] == 8 and {"S", "ES", "PS", "NS", "EM", "PM", "NM", "GE"} <= set(full["metrics"])
    log = (tmp_path / "full" / "cases.jsonl").read_bytes()

    crashed = tmp_path / "crashed"
    shutil.copytree(tmp_path / "full", crashed)
    lines = log.split(b"\n")
    (crashed / "cases.jsonl").write_bytes(b"\n".join(lines[:3]) + b"\n" + lines[3][: len(lines[3]) // 2])
    (crashed / "summary.json").unlink()
    assert len(read_cases(crashed / "cases.jsonl")) == 3  # the torn fourth line is not a case
    resumed = run_eval(model, tok, records, config(), crashed, resume=True, progress=False)
    assert (crashed / "cases.jsonl").read_bytes() == log
    assert resumed == full == json.loads((crashed / "summary.json").read_text())


def test_kill_mid_run_then_resume(bundle, records, tmp_path):
    model, tok = bundle
    cfg = config(generation=False)
    full = run_eval(model, tok, records, cfg, tmp_path / "full", progress=False)
    with pytest.raises(KeyboardInterrupt):
        run_eval(model, tok, records, cfg, tmp_path / "r", editor=_killed_at(5), progress=False)
    assert len(read_cases(tmp_path / "r" / "cases.jsonl")) == 4
    with pytest.raises(EditkitError, match="already holds a run; pass --resume"):
        run_eval(model, tok, records, cfg, tmp_path / "r", progress=False)
    assert run_eval(model, tok, records, cfg, tmp_path / "r", resume=True, progress=False) == full
    assert (tmp_path / "r" / "cases.jsonl").read_bytes() == (tmp_path / "full" / "cases.jsonl").read_bytes()


def _killed_at(k: int):
    """An editor that edits nothing and is killed on its k-th call."""
    calls = []

    def editor(model, tok, requests):
        calls.append(1)
        if len(calls) == k:
            raise KeyboardInterrupt
        return type("Undo", (), {"revert": lambda self, m: None})()

    return editor


def test_resume_refuses_changed_settings_and_damaged_lines(bundle, records, tmp_path):
    model, tok = bundle
    run_eval(model, tok, records[:2], config(generation=False), tmp_path / "r", progress=False)
    with pytest.raises(EditkitError, match="cannot resume .*: seed was 0, now 1"):
        run_eval(model, tok, records[:2], config(generation=False, seed=1), tmp_path / "r", resume=True, progress=False)
    log = tmp_path / "r" / "cases.jsonl"
    log.write_text("{oops}\n" + log.read_text())
    with pytest.raises(EditkitError, match="line 1 is damaged"):
        run_eval(model, tok, records[:2], config(generation=False), tmp_path / "r", resume=True, progress=False)


def test_shards_merge_to_the_unsharded_result(bundle, records, tmp_path):
    model, tok = bundle
    whole = run_eval(model, tok, records, config(), tmp_path / "whole", progress=False)
    dirs = [tmp_path / f"s{i}" for i in range(3)]
    parts = [run_eval(model, tok, records, config(shard=f"{i}/3"), d, progress=False) for i, d in enumerate(dirs)]
    assert [p["n"] for p in parts] == [3, 3, 2]
    ids = [{c["case_id"] for c in read_cases(d / "cases.jsonl")} for d in dirs]
    assert set().union(*ids) == {r.case_id for r in records} and sum(map(len, ids)) == 8
    (row,) = merge_runs(dirs)
    assert row.summary == whole and row.shards == "3/3"
    with pytest.raises(EditkitError, match="bad shard '3/3'"):
        config(shard="3/3")


def test_single_batch_and_sequential_modes_edit_and_revert(bundle, records, tmp_path):
    model, tok = bundle
    before = {k: v.clone() for k, v in model.state_dict().items()}
    runs = {}
    for mode, k in [("single", 1), ("batch", 3), ("sequential", 3)]:
        editor = Shift()
        runs[mode] = run_eval(
            model,
            tok,
            records,
            config(mode=mode, batch_size=k, generation=False),
            tmp_path / mode,
            editor,
            progress=False,
        )
        assert [len(c) for c in editor.calls] == ([1] * 8 if k == 1 else [3, 3, 2])
        assert all(torch.equal(before[n], v) for n, v in model.state_dict().items())  # reverted bit for bit
    single, batch, seq = (read_cases(tmp_path / m / "cases.jsonl") for m in ("single", "batch", "sequential"))
    # One shift per edit call: single and batch score every case under one shift; sequential under 1, 2, 3 shifts.
    # Batch mode scores a chunk's rows together: other batches, the same numbers up to float rounding.
    assert all(a["metrics"] == pytest.approx(b["metrics"], abs=1e-6) for a, b in zip(single, batch, strict=True))
    assert seq[:3] == batch[:3]  # the first chunk: one shift in both
    assert seq[3]["predictions"] != single[3]["predictions"]
    with pytest.raises(EditkitError, match="--batch-size needs --mode batch or sequential"):
        config(batch_size=2)


def test_generation_metrics_with_rome_reference_files(bundle, records, tmp_path):
    import numpy as np

    from editkit.evaluate.metrics import ngram_entropy, tfidf_similarity
    from editkit.evaluate.references import rome_references

    model, tok = bundle
    r = records[0]
    snippets = [
        {
            "relation_id": r.relation_id,
            "target_id": r.target_new_id,
            "samples": [{"name": "x", "text": f"{r.target_new} is spoken here"}],
        }
    ]
    (tmp_path / "snips.json").write_text(json.dumps(snippets))
    np.save(tmp_path / "idf.npy", np.array([1.0, 2.0, 1.5]))
    (tmp_path / "tfidf_vocab.json").write_text(json.dumps({r.target_new.lower(): 0, "spoken": 1, "the": 2}))
    refs = rome_references(tmp_path / "snips.json", tmp_path)
    run_eval(model, tok, records[:2], config(), tmp_path / "a", refs=refs, progress=False)
    a, b = read_cases(tmp_path / "a" / "cases.jsonl")
    texts = a["predictions"]["generations"]
    assert len(texts) == len(r.generation_prompts) and texts[0].startswith(r.generation_prompts[0])
    assert a["metrics"]["GE"] == pytest.approx(ngram_entropy(texts))
    assert a["metrics"]["RS"] == pytest.approx(
        tfidf_similarity(" ".join(texts), f"{r.target_new} is spoken here", refs.vectorizer)
    )
    assert "RS" not in b["metrics"]  # no reference texts for that (relation, object)
    run_eval(model, tok, records[:1], config(), tmp_path / "same", refs=refs, progress=False)
    run_eval(model, tok, records[:1], config(seed=5), tmp_path / "other", refs=refs, progress=False)
    assert read_cases(tmp_path / "same" / "cases.jsonl")[0] == a  # same seed, same generations
    assert read_cases(tmp_path / "other" / "cases.jsonl")[0]["predictions"]["generations"] != texts
