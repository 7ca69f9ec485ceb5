"""`editkit eval` and `editkit table` end to end on a tiny saved model: run directories, the papers' table
layouts in every format, and one-line errors."""

import json

import pytest
from typer.testing import CliRunner

from editkit.cli import app
from editkit.evaluate.tables import merge_runs, render
from tests.eval_helpers import DATA, tiny_bundle

runner = CliRunner()
ZSRE = str(DATA / "zsre_mend_eval-prefix12.json")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-model")
    model, tok = tiny_bundle(path)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_eval_writes_a_run_directory_and_resumes(model_dir, tmp_path):
    out = tmp_path / "zsre"
    res = run("eval", model_dir, "--dataset", "zsre", "--data", ZSRE, "--limit", 6, "--out", out, "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary == json.loads((out / "summary.json").read_text()) and summary["n"] == 6
    assert set(summary["metrics"]) == {"Efficacy", "Paraphrase", "Specificity"}
    config = json.loads((out / "config.json").read_text())
    assert config["method"] == "none" and config["limit"] == 6 and len(config["model_fingerprint"]) == 16
    assert config["editkit_version"] and len(config["data_sha256"]) == 64
    lines = (out / "cases.jsonl").read_text().splitlines()
    assert [json.loads(x)["case_id"] for x in lines] == list(range(6))
    assert {"case_id", "metrics", "predictions"} <= set(json.loads(lines[0]))
    again = run("eval", model_dir, "--dataset", "zsre", "--data", ZSRE, "--limit", 6, "--out", out)
    assert again.exit_code == 2 and "already holds a run; pass --resume" in again.output
    resumed = run(
        "eval", model_dir, "--dataset", "zsre", "--data", ZSRE, "--limit", 6, "--out", out, "--resume", "--json"
    )
    assert json.loads(resumed.stdout) == summary


def test_table_formats_merge_shards(model_dir, tmp_path):
    for i in range(2):
        res = run(
            "eval", model_dir, "--dataset", "zsre", "--data", ZSRE, "--shard", f"{i}/2", "--out", tmp_path / f"s{i}",
            "--protocol", "teacher-forced",
        )  # fmt: skip
        assert res.exit_code == 0, res.output
    (row,) = merge_runs([tmp_path / "s0", tmp_path / "s1"])
    assert row.summary["n"] == 12 and row.shards == "2/2"
    md = run("table", tmp_path / "s0", tmp_path / "s1", "--format", "markdown").output.splitlines()
    assert md[0] == "| Editor | tf:Efficacy | tf:Paraphrase | tf:Specificity | n |" and len(md) == 3
    m = row.summary["metrics"]["Efficacy"]
    assert md[2].startswith(
        f"| {model_dir} (unedited) | {100 * m['mean']:.1f} ± {50 * (m['ci95'][1] - m['ci95'][0]):.1f} |"
    )
    assert md[2].endswith("| 12 (2/2 shards) |")
    csv = run("table", tmp_path / "s0", tmp_path / "s1", "--format", "csv").output.splitlines()
    assert csv[0] == (
        "editor,tf:Efficacy,tf:Efficacy_ci95,tf:Paraphrase,tf:Paraphrase_ci95,tf:Specificity,tf:Specificity_ci95,n,shards"
    )
    assert csv[1].split(",")[1] == f"{100 * m['mean']:.2f}"
    latex = run("table", tmp_path / "s0", tmp_path / "s1", "--format", "latex").output
    assert latex.startswith(r"\begin{tabular}{lrrrr}") and r"$\pm$" in latex
    assert run("table", tmp_path / "s0", tmp_path / "s1").exit_code == 0
    bad = run("table", tmp_path / "s0", "--format", "html")
    assert bad.exit_code == 2 and "unknown format 'html'; use one of rich, markdown, csv, latex" in bad.output
    missing = run("table", tmp_path / "nope")
    assert missing.exit_code == 2 and "not a run directory" in missing.output


def test_counterfact_table_has_rome_table_4_columns():
    from editkit.evaluate.tables import Row

    metric = {"mean": 0.5, "ci95": [0.4, 0.6]}
    summary = {"n": 10, "metrics": {k: metric for k in ("S", "ES", "PS", "NS", "GE", "EM", "PM", "NM")}}
    row = Row("rome", "counterfact", summary, "1/1", {})
    md = render([row], "markdown").splitlines()
    assert md[0] == "| Editor | tf:S | tf:ES | tf:PS | tf:NS | tf:GE | tf:RS | tf:EM | tf:PM | tf:NM | n |"
    assert (
        md[2]
        == "| rome | 50.0 ± 10.0 | 50.0 ± 10.0 | 50.0 ± 10.0 | 50.0 ± 10.0 | 50.0 ± 10.0 | – | "
        + ("50.0 ± 10.0 | " * 3)
        + "10 |"
    )


def test_eval_errors_are_one_line(model_dir, tmp_path):
    res = run("eval", model_dir, "--dataset", "zsre", "--data", ZSRE, "--shard", "2/2", "--out", tmp_path / "x")
    assert res.exit_code == 2 and "bad shard '2/2'" in res.output
    res = run(
        "eval",
        model_dir,
        "--dataset",
        "known_1000",
        "--data",
        DATA / "known_1000-prefix12.json",
        "--out",
        tmp_path / "k",
    )
    assert res.exit_code == 2 and "known_1000 is for tracing" in res.output
    res = run("eval", model_dir, "--method", "nope", "--dataset", "zsre", "--data", ZSRE, "--out", tmp_path / "m")
    assert res.exit_code == 2 and "unknown method 'nope'" in res.output


def test_columns_carry_their_protocol_and_shards_of_two_protocols_do_not_merge(model_dir, tmp_path):
    common = ("eval", model_dir, "--dataset", "zsre", "--data", ZSRE, "--limit", 4)
    assert run(*common, "--shard", "0/2", "--out", tmp_path / "a").exit_code == 0
    res = run(*common, "--shard", "1/2", "--protocol", "teacher-forced", "--out", tmp_path / "b")
    assert res.exit_code == 0, res.output
    bad = run("table", tmp_path / "a", tmp_path / "b")
    assert bad.exit_code == 2 and "different protocols (both, teacher-forced); they do not merge" in bad.output
    assert run(*common, "--protocol", "generation", "--out", tmp_path / "g").exit_code == 0
    assert run(*common, "--protocol", "teacher-forced", "--out", tmp_path / "t").exit_code == 0
    md = run("table", tmp_path / "t", tmp_path / "g", "--format", "markdown").output.splitlines()
    assert md[0] == (
        "| Editor | tf:Efficacy | tf:Paraphrase | tf:Specificity | gen:Efficacy | gen:Paraphrase | gen:Specificity "
        "| gen:Efficacy_contains | gen:Paraphrase_contains | n |"
    )
    assert md[2].startswith(f"| {model_dir} (unedited) [teacher-forced] | ") and md[2].count("–") == 5
    assert md[3].startswith(f"| {model_dir} (unedited) [generation] | –") and md[3].count("–") == 3
    wrong = run(*common, "--protocol", "sampling", "--out", tmp_path / "x")
    assert wrong.exit_code == 2
    assert "unknown protocol 'sampling'; use one of teacher-forced, generation, both" in wrong.output


def test_a_model_other_than_the_toy_is_scored_on_counterfact_unless_told(model_dir, tmp_path):
    """Toy-world records mean nothing to another model: without --dataset it gets CounterFact's records."""
    cf = DATA / "counterfact-edit-prefix12.json"
    args = ("--limit", 1, "--protocol", "teacher-forced", "--no-capability", "--no-generation")
    res = run("eval", model_dir, "--data", cf, *args, "--out", tmp_path / "cf")
    assert res.exit_code == 0, res.output
    config = json.loads((tmp_path / "cf" / "config.json").read_text())
    assert config["dataset"] == "counterfact" and len((tmp_path / "cf" / "cases.jsonl").read_text().splitlines()) == 1
