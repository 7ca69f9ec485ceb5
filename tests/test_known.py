"""Which facts a model knows: `editkit known` against the model's own greedy generation, and `--known-only`
CounterFact runs against the unedited model's ES."""

import json
from pathlib import Path

import torch

from editkit.evaluate import load_dataset
from editkit.evaluate.datasets import parse_records
from editkit.evaluate.known import completes, known_facts, true_answer
from editkit.evaluate.runner import EvalConfig, read_cases, run_named
from editkit.locate.dataset import load_trace_cases
from editkit.models import toy_dir
from editkit.tokens import encode, target_ids

DATA = Path(__file__).parent / "data"


def _greedy_starts_with_answer(model, tokenizer, record) -> bool:
    req = record.request()
    prompt = req.prompt.format(req.subject)
    want = target_ids(tokenizer, prompt, true_answer(record))
    ids = torch.tensor([encode(tokenizer, prompt)])
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=len(want), do_sample=False, pad_token_id=0)
    return out[0, ids.shape[1] :].tolist() == want


def test_known_agrees_with_greedy_generation_on_the_toy_model(toy, tmp_path):
    model, tok, _ = toy
    kept, total = known_facts(model, tok, "toy")
    assert total == 1020 and 0.9 * total < len(kept) < total  # the toy model recalls ~98%, not all
    records = load_dataset("toy")
    flags = completes(model, tok, records)
    assert sum(flags) == len(kept)
    wrong = [r for r, k in zip(records, flags, strict=True) if not k][:5]
    right = [r for r, k in zip(records, flags, strict=True) if k][:5]
    assert all(not _greedy_starts_with_answer(model, tok, r) for r in wrong)
    assert all(_greedy_starts_with_answer(model, tok, r) for r in right)
    # the kept raw records are unchanged and are read by trace-dataset and eval
    raw = {r["case_id"]: r for r in json.loads((toy_dir() / "counterfact.json").read_text())}
    assert all(raw[r["case_id"]] == r for r in kept)
    out = tmp_path / "known.json"
    out.write_text(json.dumps(kept))
    assert len(load_trace_cases(str(out))) == len(kept)
    assert [r.case_id for r in load_dataset("toy", out)] == [r["case_id"] for r in kept]


def test_known_on_real_known_1000_records(toy):
    model, tok, _ = toy
    kept, total = known_facts(model, tok, "known_1000", DATA / "known_1000-prefix12.json")
    assert total == 12 and kept == []  # the toy model knows none of the real world's facts
    records = parse_records(json.loads((DATA / "known_1000-prefix12.json").read_text()), "known_1000")
    assert [true_answer(r) for r in records[:2]] == ["Antarctica", "Apple"]


def test_known_only_eval_keeps_the_records_the_unedited_model_gets_right(tmp_path):
    def run(known_only: bool, out: str):
        config = EvalConfig(
            model="toy", dataset="counterfact", data=str(DATA / "counterfact-edit-prefix12.json"),
            generation=False, known_only=known_only,
        )  # fmt: skip
        run_named(config, tmp_path / out, progress=False)
        return read_cases(tmp_path / out / "cases.jsonl")

    every, known = run(False, "all"), run(True, "known")
    es = {c["case_id"]: c["metrics"]["ES"] for c in every}
    assert 0 < len(known) < len(every) == 12
    assert sorted(c["case_id"] for c in known) == sorted(i for i, v in es.items() if v == 0)


def test_known_cli_writes_a_dataset_file(tmp_path):
    from typer.testing import CliRunner

    from editkit.cli import app

    out = tmp_path / "known.json"
    args = ["known", "toy", "--dataset", "known_1000", "--data", str(DATA / "known_1000-prefix12.json")]
    r = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert r.exit_code == 0 and "0 of 12 records known" in r.output, r.output
    assert json.loads(out.read_text()) == []
    r = CliRunner().invoke(
        app,
        [
            "known",
            "toy",
            "--dataset",
            "zsre",
            "--data",
            str(DATA / "zsre_mend_eval-prefix12.json"),
            "--out",
            str(tmp_path / "z.json"),
        ],
    )
    assert r.exit_code == 2 and "states no true object" in r.output and not (tmp_path / "z.json").exists()
