"""The CLI end to end on the shipped toy model: help, info, predict, world check, demo, and clear errors."""

import json

import pytest
from typer.testing import CliRunner

from editkit.cli import app
from tests.conftest import tiny_opt

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args))


def _commands(typer_app, prefix=()):
    for c in typer_app.registered_commands:
        yield [*prefix, c.name or c.callback.__name__.replace("_", "-")]
    for g in typer_app.registered_groups:
        yield from _commands(g.typer_instance, (*prefix, g.name))


def test_every_command_is_listed_and_has_an_example():
    out = run("--help").output
    commands = list(_commands(app))
    assert {"info", "predict", "demo", "trace"} <= {c[0] for c in commands}
    for cmd in commands:
        assert cmd[0] in out, cmd
        res = run(*cmd, "--help")
        assert res.exit_code == 0 and "Example" in res.output, cmd


def test_info_reports_the_toy_models_layout():
    data = json.loads(run("info", "toy", "--json").output)
    assert data["family"] == "gpt2" and data["layers"] >= 6 and data["hidden_size"] == 256
    assert data["modules"]["mlp_out"] == "transformer.h.{}.mlp.c_proj"
    assert data["parameters"] > 1_000_000


def test_predict_fills_the_subject_and_gets_the_fact_right(toy_world_fact):
    fact, template = toy_world_fact
    data = json.loads(run("predict", "toy", template, "--subject", fact.subject, "--top-k", "3", "--json").output)
    assert data["prompt"] == template.format(fact.subject)
    preds = data["predictions"]
    assert len(preds) == 3 and preds[0]["prob"] >= preds[1]["prob"] >= preds[2]["prob"]
    assert fact.object.startswith(preds[0]["token"].strip())
    assert preds[0]["prob"] > 0.5


def test_world_check_json_on_a_slice():
    res = run("world", "check", "--limit", "120", "--json")
    assert res.exit_code == 0, res.output
    rec = json.loads(res.output)
    assert rec["train_recall"] >= 0.95 and rec["heldout_recall"] >= 0.8


def test_demo_runs_and_shows_beliefs(tmp_path):
    res = run("demo", "--out", str(tmp_path))
    assert res.exit_code == 0, res.output
    assert "What the toy model believes" in res.output and "✓" in res.output
    assert "Top-1 recall on 200 sampled facts" in res.output
    assert (tmp_path / "trace.png").stat().st_size > 0
    # step 4: one MEMIT batch of 20 distinct subjects moves most facts and leaves most neighbours alone
    memit = json.loads((tmp_path / "eval" / "memit" / "summary.json").read_text())
    none = json.loads((tmp_path / "eval" / "none" / "summary.json").read_text())
    assert memit["n"] == none["n"] == 20
    assert none["metrics"]["ES"]["mean"] == 0.0 and memit["metrics"]["ES"]["mean"] >= 0.8
    assert memit["metrics"]["NS"]["mean"] >= 0.8


@pytest.mark.parametrize(
    "args,message",
    [
        (["info", "./no/such/model"], "model directory ./no/such/model does not exist"),
        (["predict", "toy", "The capital of France is", "--subject", "France"], "has no {}"),
        (["predict", "toy", "{} plays the", "--subject", "  "], "subject is empty"),
    ],
)
def test_errors_are_one_line_with_status_2(args, message):
    res = run(*args)
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]
    assert "Traceback" not in res.output


def test_unknown_architecture_is_one_line_with_status_2(tmp_path):
    tiny_opt().save_pretrained(tmp_path / "opt")
    res = run("info", str(tmp_path / "opt"))
    assert res.exit_code == 2
    assert "unsupported architecture OPTForCausalLM" in res.output and "llama" in res.output


def test_debug_shows_the_traceback():
    res = run("--debug", "info", "./no/such/model")
    assert res.exit_code != 0 and res.exception is not None
