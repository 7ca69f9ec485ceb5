"""Editing the shipped toy model: each method flips a fact it knows and leaves other subjects alone; the
edit reverts bit for bit; checkpoints reload with plain transformers; the CLI edits, applies and reverts."""

import json
import os
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from editkit.cli import app
from editkit.edit import Stats, edit, load_hparams
from editkit.edit.checkpoint import save_checkpoint
from editkit.evaluate.datasets import first_per_subject, parse_records
from editkit.models import next_token_probs
from editkit.requests import load_records, request_from_record
from editkit.tokens import target_ids
from tests.edit_fixtures import torch as _threads  # noqa: F401  (one torch thread on shared cores)

N_TOKENS = 30_000  # enough for a well-conditioned C at width 1024 in tests; the shipped files use 200k


@pytest.fixture(scope="session")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("editkit-cache")


@pytest.fixture(scope="session")
def toy_stats(toy, cache):
    model, tok, adapter = toy
    return Stats(model, tok, adapter, "toy", N_TOKENS, cache_dir=cache)


@pytest.fixture(scope="session")
def known_records(toy):
    """Toy CounterFact records whose true answer the model gets right (first token)."""
    from editkit.models import toy_dir

    model, tok, _ = toy
    records = load_records(toy_dir() / "counterfact.json", limit=40)
    reqs = [request_from_record(r) for r in records]
    top = next_token_probs(model, tok, [r.text for r in reqs]).argmax(-1)
    return [rec for rec, r, t in zip(records, reqs, top, strict=True) if t == target_ids(tok, r.text, r.target_true)[0]]


def _hp(method, **kw):
    hp = load_hparams(method, "toy")
    hp.__dict__.update(kw)
    if hasattr(hp, "mom2_n_tokens"):
        hp.mom2_n_tokens = N_TOKENS
    return hp


def _first(tok, prompt, target):
    return target_ids(tok, prompt, target)[0]


def _top1(model, tok, prompts):
    return next_token_probs(model, tok, prompts).argmax(-1).tolist()


def _p_new(model, tok, requests):
    probs = next_token_probs(model, tok, [r.text for r in requests])
    return [probs[i, _first(tok, r.text, r.target_new)].item() for i, r in enumerate(requests)]


# ROME and r-ROME flip the toy fact of record 3 (the shipped toy hparams: layer 0, 100 v* steps; 9 of the
# first 10 records flip, see experiments/README.md) and spare the neighbours. FT with a large learning rate
# flips it too, but rewrites every neighbour as well (the paper's point about unconstrained fine-tuning).
@pytest.mark.parametrize("method, spares", [("rome", True), ("r-rome", True), ("ft", False)])
def test_single_edit_flips_the_fact(toy, toy_stats, known_records, method, spares):
    model, tok, adapter = toy
    state = {k: v.clone() for k, v in model.state_dict().items()}
    record = next(r for r in known_records if r["case_id"] == 3)
    request = request_from_record(record)
    neighbours = record["neighborhood_prompts"]
    before, p_before = _top1(model, tok, neighbours), _p_new(model, tok, [request])[0]
    hp = _hp(method, **({"lr": 1e-2} if method == "ft" else {}))
    result = edit(model, tok, adapter, [request], method, hp, toy_stats)
    try:
        assert _p_new(model, tok, [request])[0] > 2 * p_before
        assert _top1(model, tok, [request.text])[0] == _first(tok, request.text, request.target_new)
        kept = sum(a == b for a, b in zip(before, _top1(model, tok, neighbours), strict=True))
        assert kept >= 0.8 * len(neighbours) if spares else kept < 0.8 * len(neighbours)
    finally:
        result.revert(model)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


# MEMIT (one batch) and AlphaEdit (in sequence) with the shipped toy files flip three facts of three
# subjects (one request per subject: one subject's requests share the key at its last token).
@pytest.mark.parametrize("method, mode", [("memit", "batch"), ("alphaedit", "sequential")])
def test_many_edits_flip_the_facts_and_revert(toy, toy_stats, known_records, method, mode):
    model, tok, adapter = toy
    state = {k: v.clone() for k, v in model.state_dict().items()}
    records = first_per_subject(parse_records(known_records, "toy", "known toy records"))[:3]
    requests = [r.request() for r in records]
    result = edit(model, tok, adapter, requests, method, _hp(method), toy_stats, mode=mode)
    try:
        top = _top1(model, tok, [r.text for r in requests])
        flipped = [t == _first(tok, r.text, r.target_new) for r, t in zip(requests, top, strict=True)]
        assert sum(flipped) >= 2, flipped
    finally:
        result.revert(model)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_checkpoint_reloads_without_editkit_and_predicts_the_target(toy, toy_stats, known_records, tmp_path):
    model, tok, adapter = toy
    request = request_from_record(known_records[0])
    result = edit(model, tok, adapter, [request], "ft", _hp("ft", lr=1e-2), toy_stats)
    try:
        save_checkpoint(model, tok, tmp_path / "ckpt", result, "toy")
    finally:
        result.revert(model)
    script = f"""
import sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
m = AutoModelForCausalLM.from_pretrained({str(tmp_path / "ckpt")!r}).eval()
t = AutoTokenizer.from_pretrained({str(tmp_path / "ckpt")!r})
with torch.no_grad():
    logits = m(**t({request.text!r}, return_tensors="pt")).logits[0, -1]
assert not any(k.startswith("editkit") for k in sys.modules)
print(t.decode([int(logits.argmax())]))
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert request.target_new.startswith(out.stdout.strip())
    assert json.loads((tmp_path / "ckpt" / "provenance.json").read_text())["edit"]["method"] == "ft"


def test_cli_edit_apply_revert_round_trip(toy, cache, known_records, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    monkeypatch.setenv("EDITKIT_CACHE", str(cache))
    runner = CliRunner()
    request = request_from_record(known_records[0])
    args = ["edit", "toy", "--method", "ft", "--set", "lr=0.01",
            "--prompt", request.prompt, "--subject", request.subject,
            "--target-new", request.target_new, "--target-true", request.target_true, "--out", str(tmp_path / "edit"),
            "--save-checkpoint", str(tmp_path / "ck"), "--json"]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["before"][0]["probe"] == "edit" and {p["probe"] for p in data["before"]} == {
        "edit",
        "paraphrase",
        "neighbour",
    }
    assert data["after"][0]["p_target_new"] > data["after"][0]["p_target_true"]
    assert data["before"][0]["p_target_new"] < data["before"][0]["p_target_true"]

    res = runner.invoke(app, ["apply", "toy", str(tmp_path / "edit"), "--save-checkpoint", str(tmp_path / "ap")])
    assert res.exit_code == 0, res.output
    a, b = load_file(str(tmp_path / "ck" / "model.safetensors")), load_file(str(tmp_path / "ap" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)

    res = runner.invoke(app, ["revert", str(tmp_path / "ck"), "--out", str(tmp_path / "rv")])
    assert res.exit_code == 0, res.output
    original = {k: v for k, v in toy[0].state_dict().items()}
    restored = load_file(str(tmp_path / "rv" / "model.safetensors"))
    assert all(torch.equal(restored[k], original[k]) for k in restored)

    res = runner.invoke(
        app, ["apply", str(tmp_path / "ck"), str(tmp_path / "edit"), "--save-checkpoint", str(tmp_path / "x")]
    )
    assert (
        res.exit_code == 2
        and "fingerprint mismatch" in res.output
        and "not the model this edit was made on" in res.output
    )
    assert not (tmp_path / "x").exists()


def test_cli_bad_input_is_one_clear_line(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["edit", "toy", "--prompt", "plays the", "--subject", "X", "--target-new", "harp"])
    assert res.exit_code == 2 and "has no {}" in res.output
    res = runner.invoke(
        app, ["edit", "toy", "--method", "magic", "--prompt", "{} is", "--subject", "X", "--target-new", "y"]
    )
    assert res.exit_code == 2 and "unknown edit method 'magic'" in res.output
    res = runner.invoke(app, ["stats", "toy", "--layers", "1,x"])
    assert res.exit_code == 2 and "--layers '1,x'" in res.output
    res = runner.invoke(app, ["revert", str(tmp_path), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "provenance.json" in res.output


def test_cli_stats_reports_the_cache(cache):
    res = CliRunner().invoke(
        app,
        [
            "stats",
            "toy",
            "--layers",
            "1,2",
            "--corpus",
            "toy",
            "--tokens",
            str(N_TOKENS),
            "--cache-dir",
            str(cache),
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert set(data["layers"]) == {"1", "2"} and data["layers"]["1"]["dim"] == 1024


def test_cli_edit_reads_easyedit_records_and_probes_with_their_prompts(known_records, tmp_path, monkeypatch, cache):
    from editkit.evaluate.datasets import load_dataset

    monkeypatch.setenv("EDITKIT_CACHE", str(cache))
    cf = parse_records(known_records[:2], "toy")
    easyedit = [
        {
            "subject": r.subject,
            "prompt": r.prompt.format(r.subject),
            "target_new": r.target_new,
            "ground_truth": r.target_true,
            "rephrase_prompt": r.paraphrase_prompts[0],
            "locality_prompt": cf[1 - i].prompt.format(cf[1 - i].subject),
            "locality_ground_truth": cf[1 - i].target_true,
        }
        for i, r in enumerate(cf)
    ]
    path = tmp_path / "easyedit.json"
    path.write_text(json.dumps(easyedit))
    res = CliRunner().invoke(
        app, ["edit", "toy", "--method", "ft", "--set", "num_steps=1", "--requests", str(path), "--json"]
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    (first,) = load_dataset("easyedit", path, limit=1)
    assert data["requests"][0] == {
        "prompt": first.prompt,
        "subject": first.subject,
        "target_new": first.target_new,
        "target_true": first.ground_truth,
    }
    assert {p["probe"]: p["prompt"] for p in data["before"]} == {
        "edit": easyedit[0]["prompt"],
        "paraphrase": easyedit[0]["rephrase_prompt"],
        "neighbour": easyedit[0]["locality_prompt"],
    }


def test_cli_edit_never_probes_another_model_with_the_toy_world(known_records, tmp_path, monkeypatch, cache):
    import shutil

    from editkit.edit.hparams import HPARAMS_DIR
    from editkit.models import toy_dir

    monkeypatch.setenv("EDITKIT_CACHE", str(cache))
    shutil.copytree(toy_dir() / "model", tmp_path / "not-toy")
    request = request_from_record(known_records[0])  # a toy-world template, so the toy world would have probes
    args = ["--method", "ft", "--set", "num_steps=1", "--prompt", request.prompt, "--subject", request.subject,
            "--target-new", request.target_new, "--json"]  # fmt: skip
    res = CliRunner().invoke(
        app, ["edit", str(tmp_path / "not-toy"), "--hparams", str(HPARAMS_DIR / "ft/toy.yaml"), *args]
    )
    assert res.exit_code == 0, res.output
    other = json.loads(res.output)
    assert [p["probe"] for p in other["before"]] == ["edit"]
    toy = json.loads(CliRunner().invoke(app, ["edit", "toy", *args]).output)
    assert [p["probe"] for p in toy["before"]] == ["edit", "paraphrase", "neighbour"]
