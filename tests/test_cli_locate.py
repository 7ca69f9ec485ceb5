"""The locate commands end to end on the toy model: trace, trace-dataset, neurons."""

import json

from typer.testing import CliRunner

from editkit.cli import app
from editkit.locate.tracing import TraceResult

runner = CliRunner()
PROMPT, SUBJECT = "The mother tongue of Drabrur Trebound Ratrei is", "Drabrur Trebound Ratrei"


def test_trace_json_and_files(tmp_path):
    res = runner.invoke(
        app,
        [
            "trace",
            "toy",
            "--prompt",
            PROMPT,
            "--subject",
            SUBJECT,
            "--samples",
            "3",
            "--window",
            "2",
            "--out",
            str(tmp_path),
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["subject_range"] == [4, 7] and "".join(data["tokens"][4:7]).strip() == SUBJECT
    assert set(data["scores"]) == {"hidden", "mlp", "attn"}
    assert len(data["scores"]["hidden"]) == len(data["tokens"]) and len(data["scores"]["hidden"][0]) == 6
    assert data["clean_score"] > 0.9 > data["corrupted_score"]
    saved = TraceResult.load(tmp_path / "trace.npz")
    assert saved.answer == data["answer"] and (tmp_path / "trace.png").stat().st_size > 0


def test_trace_summary_and_bad_subject():
    res = runner.invoke(
        app,
        [
            "trace",
            "toy",
            "--prompt",
            PROMPT,
            "--subject",
            SUBJECT,
            "--samples",
            "2",
            "--kind",
            "hidden",
            "--sever",
            "mlp",
        ],
    )
    assert res.exit_code == 0 and "peak hidden" in res.output
    res = runner.invoke(app, ["trace", "toy", "--prompt", PROMPT, "--subject", "Paris"])
    assert res.exit_code == 2 and "subject 'Paris' not found in prompt" in res.output
    res = runner.invoke(
        app, ["trace", "toy", "--prompt", PROMPT, "--subject", SUBJECT, "--sever", "mlp", "--kind", "mlp"]
    )
    assert res.exit_code == 2 and "--sever restores hidden states" in res.output


def test_trace_takes_a_template_with_the_subject_filled_in():
    args = ["--subject", SUBJECT, "--samples", "2", "--kind", "hidden", "--json"]
    filled = json.loads(runner.invoke(app, ["trace", "toy", "--prompt", PROMPT, *args]).output)
    template = json.loads(runner.invoke(app, ["trace", "toy", "--prompt", PROMPT.replace(SUBJECT, "{}"), *args]).output)
    assert template == filled


def test_trace_dataset_and_neurons(tmp_path):
    res = runner.invoke(
        app,
        ["trace-dataset", "toy", "toy", "--limit", "3", "--kind", "hidden", "--samples", "2", "--out", str(tmp_path)],
    )
    assert res.exit_code == 0, res.output
    aie = json.loads((tmp_path / "aie.json").read_text())
    assert aie["n"] >= 2 and len(aie["aie"]["hidden"]) == 6 and (tmp_path / "aie.png").exists()
    # A second shard of the same run, in the same directory, joins the average.
    args = ["trace-dataset", "toy", "toy", "--limit", "6", "--kind", "hidden", "--samples", "2", "--out", str(tmp_path)]
    res = runner.invoke(app, [*args, "--shard", "1/2"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "traces-1-of-2.h5").exists() and json.loads((tmp_path / "aie.json").read_text())["n"] > aie["n"]
    res = runner.invoke(app, [*args, "--shard", "1of2"])
    assert res.exit_code == 2 and "bad shard '1of2'" in res.output
    res = runner.invoke(app, ["neurons", "toy", "--prompt", PROMPT, "--target", "Dudrenish", "--steps", "5", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["neurons"] and data["suppressed_probs"][0] < data["base_probs"][0]
