"""Bad input through the CLI: each case exits with its status, says what is wrong in one line on stderr,
shows no traceback, leaves no file behind and leaves the (shared, really loaded) toy model unchanged."""

from __future__ import annotations

import dataclasses
import os
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

import editkit.models
from editkit.cli import app
from editkit.edit import Stats, edit
from editkit.errors import EditkitError
from editkit.evaluate.runner import model_fingerprint
from editkit.models import adapter_for
from editkit.requests import EditRequest
from tests.conftest import tiny_model
from tests.edit_fixtures import TINY_REQUEST, tiny_corpus, tiny_hparams, word_tokenizer

runner = CliRunner()
EDIT = 'edit toy --method rome --prompt "{} plays the" --subject "Tiboth Feigar" --target-new oboe'


@dataclass
class Case:
    id: str
    args: str  # shell words; {tmp} is the case's working directory
    message: str  # a fragment of the one error line
    code: int = 2
    setup: Callable[[Path], None] | None = None  # the files the command is given (not "left behind")

    def __str__(self) -> str:
        return self.id


def _nan_toy(d: Path, hparams: str, method: str = "rome") -> None:
    """`d/nan-toy`: the toy model with one NaN in block 0's MLP input weight (a damaged checkpoint), and
    `d/hp.yaml`: the shipped toy hparams of `method` plus `hparams`."""
    import torch

    from editkit.edit.hparams import shipped_file

    model, tok, _ = editkit.models.load_model("toy")
    w = model.transformer.h[0].mlp.c_fc.weight
    keep = w[0, 0].item()
    with torch.no_grad():
        w[0, 0] = float("nan")
        try:
            model.save_pretrained(d / "nan-toy")
        finally:
            w[0, 0] = keep
    tok.save_pretrained(d / "nan-toy")
    (d / "hp.yaml").write_text(shipped_file(method, "toy").read_text() + hparams + "\n")


def _toy_copy(d: Path, damage: str) -> None:
    """`d/M`: a copy of the toy model directory with one kind of damage."""
    import shutil

    from editkit.models import toy_dir

    shutil.copytree(toy_dir() / "model", d / "M")
    weights = d / "M" / "model.safetensors"
    if damage == "cut":
        os.truncate(weights, 1_000_000)
    elif damage == "header":
        with open(weights, "r+b") as f:
            f.seek(8)
            f.write(b"garbage")
    elif damage == "no-weights":
        weights.unlink()
    elif damage == "no-tokenizer":
        for p in (d / "M").glob("tokenizer*"):
            p.unlink()


def _sae_copy(d: Path, damage: str) -> None:
    """`d/S`: a copy of the shipped toy SAE with a corrupt cfg.json or truncated weights."""
    import shutil

    from editkit.models import toy_dir

    shutil.copytree(toy_dir() / "sae-blocks.3.hook_resid_post", d / "S")
    if damage == "cfg":
        (d / "S" / "cfg.json").write_text('{"d_in": 256, ')
    else:
        os.truncate(d / "S" / "sae_weights.safetensors", 4096)


CASES = [
    # --- hyper-parameters (issue 20, item 3) ---
    Case("set-nan-lr", f"{EDIT} --set v_lr=nan", "--set v_lr=nan (command line): v_lr=nan must be a finite number"),
    Case("set-zero-steps", f"{EDIT} --set v_num_grad_steps=0", "v_num_grad_steps=0 must be >= 2"),
    Case("set-one-step", f"{EDIT} --set v_num_grad_steps=1", "v_num_grad_steps=1 must be >= 2"),
    Case(
        "set-zero-tokens",
        f"{EDIT} --set mom2_n_tokens=0",
        "--set mom2_n_tokens=0 (command line): mom2_n_tokens=0 must be >= 1",
    ),
    Case(
        "set-bad-yaml",
        f'{EDIT} --set "layers=[1,"',
        "--set 'layers=[1,' (command line): the value of layers is not valid YAML",
    ),
    Case("set-layers-not-list", f"{EDIT} --set layers=1", "layers=1 should be of type list[int]"),
    Case("set-layers-repeat", f"{EDIT} --set layers=[1,1]", "layers=[1, 1] repeats a layer"),
    Case("set-layers-empty", f"{EDIT} --set layers=[]", "layers=[] is empty"),
    Case("set-unknown", f"{EDIT} --set v_lrr=1", "--set v_lrr=1 (command line): unknown rome hyper-parameter 'v_lrr'"),
    Case("set-not-key-value", f"{EDIT} --set v_lr", "--set 'v_lr' (command line) is not key=value"),
    Case("set-negative-clamp", f"{EDIT} --set clamp_norm_factor=-1", "clamp_norm_factor=-1 must be > 0"),
    Case("set-bad-prefixes", f"{EDIT} --set context_templates=[[5]]", "should be a list of [length, count] pairs"),
    Case("set-zero-prefix-count", f"{EDIT} --set context_templates=[[5,0]]", "context_templates=[[5, 0]] must be >= 1"),
    Case(
        "set-ftl-constraint",
        'edit toy --method ft-l --prompt "{} plays the" --subject "Tiboth Feigar" --target-new oboe '
        "--set norm_constraint=x",
        "norm_constraint='x' should be of type float | None",
    ),
    Case(
        "hparams-file-range",
        f"{EDIT} --hparams hp.yaml",
        "hp.yaml: v_lr=0 must be > 0",
        setup=lambda d: (d / "hp.yaml").write_text("layers: [0]\nv_lr: 0\n"),
    ),
    # --- layers outside -L..L-1 are an error, never wrapped (item 2) ---
    Case("set-layer-99", f"{EDIT} --set layers=[99]", "layer 99 out of range: the model has 6 layers"),
    Case("set-layer-minus-7", f"{EDIT} --set layers=[-7]", "layer -7 out of range"),
    Case(
        "set-layer-twice",
        EDIT.replace("rome", "memit") + " --set layers=[0,-6]",
        "layers [0, -6] name one layer twice",
    ),
    Case("stats-layer-99", "stats toy --layers 99 --tokens 100", "layer 99 out of range"),
    # --- no edit applied, saved or reported when anything it computes is not finite (item 1) ---
    Case(
        "nan-model-rome",
        'edit nan-toy --method rome --prompt "{} plays the" --subject "Tiboth Feigar" --target-new oboe '
        "--hparams hp.yaml --out ed --save-checkpoint ck",
        "the model's logits are not finite",
        setup=lambda d: _nan_toy(d, "mom2_n_tokens: 2000"),
    ),
    Case(
        "nan-model-stats",
        "stats nan-toy --layers 0 --tokens 500",
        "the model's logits are not finite (NaN or Inf)",
        setup=lambda d: _nan_toy(d, ""),
    ),
    Case(
        "nan-model-stats-toy-corpus",
        "stats nan-toy --layers 0 --tokens 500 --corpus toy",
        "the keys at transformer.h.0.mlp.c_proj are not finite (NaN or Inf) on the corpus",
        setup=lambda d: _nan_toy(d, ""),
    ),
    Case(
        "nan-model-ft",
        'edit nan-toy --method ft --prompt "{} plays the" --subject "Tiboth Feigar" --target-new oboe '
        "--hparams hp.yaml --out ed --save-checkpoint ck",
        "ft computed a non-finite ΔW (NaN or Inf) for transformer.h.0.mlp.c_proj; no edit was applied",
        setup=lambda d: _nan_toy(d, "num_steps: 2", method="ft"),
    ),
    # --- damaged files are one line, not a traceback (items 6-7) ---
    Case("truncated-weights", "info M", "could not read the weights of model 'M'", setup=lambda d: _toy_copy(d, "cut")),
    Case("bad-header-weights", "info M", "invalid JSON in header", setup=lambda d: _toy_copy(d, "header")),
    Case("no-weights", "info M", "no file named model.safetensors", setup=lambda d: _toy_copy(d, "no-weights")),
    Case("no-tokenizer", "info M", "M has no tokenizer files", setup=lambda d: _toy_copy(d, "no-tokenizer")),
    Case(
        "sae-bad-cfg",
        "features show toy S 1 --texts 5",
        "SAE config S/cfg.json is not valid JSON",
        setup=lambda d: _sae_copy(d, "cfg"),
    ),
    Case(
        "sae-truncated-weights",
        "features show toy S 1 --texts 5",
        "SAE weights S/sae_weights.safetensors are truncated or damaged",
        setup=lambda d: _sae_copy(d, "weights"),
    ),
    Case(
        "data-not-utf8",
        "eval toy --method none --data bad.json --out E",
        "dataset file bad.json is not UTF-8 text (byte 0xeb at offset 16)",
        setup=lambda d: (d / "bad.json").write_bytes('[{"subject": "Zoë"}]'.encode("latin-1")),
    ),
    Case(
        "requests-not-utf8",
        "edit toy --requests bad.json",
        "requests file bad.json is not UTF-8 text",
        setup=lambda d: (d / "bad.json").write_bytes('[{"subject": "Zoë"}]'.encode("latin-1")),
    ),
    Case(
        "resume-corrupt-config",
        "eval toy --method none --limit 1 --out E --resume",
        "run config E/config.json is not valid JSON",
        setup=lambda d: (d / "E").mkdir() or (d / "E" / "config.json").write_text('{"model": "toy", '),
    ),
    Case(
        "prompt-longer-than-context",
        f'predict toy "{{}} {"and then " * 150}plays the" --subject "Tiboth Feigar"',
        "is 454 tokens, longer than the model's context of 256 tokens",
    ),
    Case(
        "trace-longer-than-context",
        f'trace toy --prompt "Tiboth Feigar {"and then " * 150}plays the" --subject "Tiboth Feigar"',
        "longer than the model's context of 256 tokens",
    ),
    Case("empty-selection", "eval toy --method none --offset 5000 --out E", "no records were selected"),
    Case("empty-shard", "eval toy --method none --limit 2 --shard 3/4 --out E", "no records were selected"),
    # --- usage errors are one line too (item 9) ---
    Case("missing-argument", "predict", "Missing argument 'model'. (see"),
    Case("option-out-of-range", "predict toy x --top-k 0", "Invalid value for '--top-k'"),
    Case("no-such-option", "predict toy x --bogus", "No such option: --bogus"),
    Case("no-such-command", "bogus", "No such command 'bogus'"),
    # --- user text is never read as rich markup (item 4) ---
    Case("markup-in-prompt", 'predict toy "The [/b] of" --subject "Tiboth Feigar"', "prompt 'The [/b] of' has no {}"),
    Case(
        "markup-in-path",
        'eval toy --method none --data "runs/[red]x.json" --out E',
        "dataset file runs/[red]x.json does not exist",
    ),
]


@pytest.fixture
def shared_toy(monkeypatch, toy):
    """`load_model("toy")` returns the session's toy model (the real one, loaded once) for the CLI; a command
    that edits it (a successful `editkit edit` does not revert) is undone afterwards for the other tests."""
    real = editkit.models.load_model
    monkeypatch.setattr(
        editkit.models, "load_model", lambda name, *a, **kw: toy if name == "toy" else real(name, *a, **kw)
    )
    saved = {k: v.clone() for k, v in toy.model.state_dict().items()}
    yield toy
    toy.model.load_state_dict(saved)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", CASES, ids=str)
def test_bad_input_is_one_line_and_leaves_nothing(case: Case, tmp_path, monkeypatch, shared_toy):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EDITKIT_CACHE", str(tmp_path / "cache"))
    if case.setup:
        case.setup(tmp_path)
    given, weights = _files(tmp_path), model_fingerprint(shared_toy.model)
    res = runner.invoke(app, shlex.split(case.args.replace("{tmp}", str(tmp_path))))
    assert res.exit_code == case.code, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]  # progress lines may come first
    assert lines and lines[-1].startswith("error: ") and sum(ln.startswith("error") for ln in lines) == 1, res.stderr
    assert case.message in lines[-1]
    assert _files(tmp_path) == given, "files were left behind"
    assert model_fingerprint(shared_toy.model) == weights, "the model was changed"


def test_user_text_prints_as_written(shared_toy):
    """A prompt with rich markup in it is the table's title, brackets and all."""
    res = runner.invoke(app, ["predict", "toy", "The [bold]x[/bold] of {}", "--subject", "Tiboth Feigar"])
    assert res.exit_code == 0, res.output
    assert "The [bold]x[/bold] of" in res.output


def test_optional_fields_of_any_type_are_checked_not_keyerror():
    """`X | None` annotations other than `float | None` were a bare KeyError in the type check."""
    from dataclasses import field, fields, make_dataclass

    from editkit.edit.hparams import check_value

    cls = make_dataclass("H", [("steps", "int | None", field(default=None, metadata={"ge": 1}))])
    (f,) = fields(cls)
    assert check_value(None, f) is None and check_value(3, f) is None
    assert check_value("3", f) == "should be of type int | None"
    assert check_value(0, f) == "must be >= 1"
    assert check_value(2.5, f) == "should be of type int | None"


def test_field_types_are_checked_without_postponed_annotations():
    """A method module without `from __future__ import annotations` gives its hparams fields types, not strings
    (they were an AttributeError in the type check)."""
    from dataclasses import field, fields, make_dataclass

    from editkit.edit.hparams import check_value

    steps = field(default=None, metadata={"ge": 1})
    cls = make_dataclass("H", [("steps", int | None, steps), ("layers", list[int], field(default_factory=list))])
    steps, layers = fields(cls)
    assert check_value(3, steps) is None and check_value(None, steps) is None
    assert check_value("3", steps) == "should be of type int | None" and check_value(0, steps) == "must be >= 1"
    assert check_value([1, 2], layers) is None and check_value([1.5], layers) == "should be of type list[int]"


@pytest.mark.parametrize("method", ["rome", "memit"])
def test_layers_count_from_the_end_and_never_wrap(method, tmp_path):
    model, tok = tiny_model("gpt2"), word_tokenizer()
    adapter, corpus = adapter_for(model), tiny_corpus(tmp_path / "corpus.txt")
    stats = Stats(model, tok, adapter, corpus, 3000, cache_dir=tmp_path)
    hp = tiny_hparams(method, corpus)
    hp.layers = [-1]
    result = edit(model, tok, adapter, [EditRequest(**TINY_REQUEST)], method, hp, stats)
    assert result.modules == [adapter.name("mlp_out", 1)]
    result.revert(model)
    weights = model_fingerprint(model)
    for layers, message in (([2], "layer 2 out of range"), ([-3], "layer -3 out of range"), ([1, -1], "twice")):
        hp.layers = layers
        with pytest.raises(EditkitError, match=message):
            edit(model, tok, adapter, [EditRequest(**TINY_REQUEST)], method, hp, stats)
        assert model_fingerprint(model) == weights
    with pytest.raises(EditkitError, match="layer 2 out of range"):
        stats.C(2)


def test_a_non_finite_delta_is_refused_and_a_failed_edit_restores_the_model(monkeypatch, tmp_path):
    """push() refuses NaN in ΔW, k or v*; when a method fails after writing earlier deltas, edit() puts
    the weights back, bit for bit."""
    import torch

    from editkit.edit import METHODS, Delta, EditResult

    model, tok = tiny_model("gpt2"), word_tokenizer()
    adapter = adapter_for(model)
    module = adapter.name("mlp_out", 0)
    weights = model_fingerprint(model)
    out, inp = adapter.mlp_out_weight(model, 0).shape
    good = Delta(module, u=torch.ones(inp), v=torch.full((out,), 0.1))
    nan_key = Delta(module, u=torch.ones(inp), v=torch.ones(out), keys=torch.full((1, inp), float("nan")))
    with pytest.raises(EditkitError, match="non-finite key k"):
        EditResult("rome", {}).push(model, nan_key)
    assert model_fingerprint(model) == weights

    def half_then_nan(model, tokenizer, adapter, requests, hp, stats, result):
        result.push(model, good)
        result.push(model, Delta(module, dense=torch.full((out, inp), float("inf"))))

    monkeypatch.setitem(METHODS, "rome", dataclasses.replace(METHODS["rome"], apply=half_then_nan))
    hp = tiny_hparams("rome", tiny_corpus(tmp_path / "corpus.txt"))
    with pytest.raises(EditkitError, match="non-finite ΔW"):
        edit(model, tok, adapter, [EditRequest(**TINY_REQUEST)], "rome", hp, None)
    assert model_fingerprint(model) == weights


def test_the_statistics_cache_checksums_every_field(tmp_path):
    """A cache whose count (or any attribute) was changed, or whose sum is not finite, is never used."""
    import h5py
    import numpy as np
    import torch

    from editkit.edit.stats import _checksum, read_cache

    model, tok = tiny_model("gpt2"), word_tokenizer()
    adapter, corpus = adapter_for(model), tiny_corpus(tmp_path / "corpus.txt")
    stats = Stats(model, tok, adapter, corpus, 3000, cache_dir=tmp_path)
    C = stats.C(0).clone()
    path, key = stats.path(stats.key(0)), stats.key(0)
    with h5py.File(path, "r+") as f:
        f.attrs["count"] = 0  # was: trace(C) = Infinity
    with pytest.raises(EditkitError, match="checksum mismatch"):
        read_cache(path, key, C.shape[0])
    logged = []
    again = Stats(model, tok, adapter, corpus, 3000, cache_dir=tmp_path, log=logged.append)
    assert torch.equal(again.C(0), C) and "checksum mismatch" in logged[0]

    with h5py.File(path, "r+") as f:  # a NaN sum with a checksum that matches it
        total = f["sum_kkT"][()]
        total[0, 0] = np.nan
        f["sum_kkT"][...] = total
        attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
        f.attrs["checksum"] = _checksum(total, attrs)
    with pytest.raises(EditkitError, match="non-finite sum"):
        read_cache(path, key, C.shape[0])


_KILLED_EDIT = """
import os, signal, sys
from pathlib import Path
target, when = Path(sys.argv[1]).resolve(), sys.argv[2]
real = os.replace
def replace(src, dst):
    if Path(dst).resolve() == target and when == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    real(src, dst)
    if Path(dst).resolve() == target and when == "after":
        os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace
from editkit.cli import app
app(["edit", "toy", "--method", "ft", "--prompt", "{} plays the", "--subject", "Tiboth Feigar",
     "--target-new", "oboe", "--set", "num_steps=2", "--save-checkpoint", str(target)])
"""


def _edit_killed(target: Path, when: str) -> None:
    import os
    import signal
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", _KILLED_EDIT, str(target), when], env=env, capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]


def test_a_checkpoint_killed_mid_write_is_absent_or_whole_and_the_next_write_cleans_up(tmp_path):
    """kill -9 at the rename that makes the checkpoint appear: before it nothing is there (only a temporary,
    which the next write of the same checkpoint removes); after it the checkpoint already carries its edit."""
    from transformers import AutoTokenizer

    from editkit.edit.checkpoint import save_checkpoint
    from editkit.models import toy_dir

    target = tmp_path / "ck"
    _edit_killed(target, "after")
    assert (target / "editkit_edit" / "edit.json").exists() and (target / "provenance.json").exists()

    target = tmp_path / "ck2"
    _edit_killed(target, "before")
    assert not target.exists() and len(list(tmp_path.glob(".ck2.*.tmp"))) == 1
    save_checkpoint(tiny_model("gpt2"), AutoTokenizer.from_pretrained(toy_dir() / "model"), target, None, "tiny")
    assert (target / "config.json").exists() and not list(tmp_path.glob(".ck2.*"))


def test_checkpoint_files_have_the_usual_mode(tmp_path):
    """Not 0600 (safetensors' own temporary file): what `open` would make under the umask."""
    import os

    from editkit.edit.checkpoint import save_checkpoint

    umask = os.umask(0)
    os.umask(umask)
    save_checkpoint(tiny_model("gpt2"), word_tokenizer(), tmp_path / "ck", None, "tiny")
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "ck").iterdir()}
    assert "model.safetensors" in modes and set(modes.values()) == {0o666 & ~umask}, modes


def _strict_json(text: str):
    """json.loads that refuses NaN and Infinity (which are not JSON)."""
    import json

    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_records_without_paraphrases_summarise_to_null_with_a_count(tmp_path, shared_toy):
    """summary.json and cases.jsonl stay valid JSON: PS of records with no paraphrase is null, counted."""
    import json

    from editkit.models import toy_dir

    records = json.loads((toy_dir() / "counterfact.json").read_text())[:2]
    records[0]["paraphrase_prompts"] = records[1]["paraphrase_prompts"] = []
    (tmp_path / "cf.json").write_text(json.dumps(records))
    out = tmp_path / "E"
    args = ["eval", "toy", "--dataset", "counterfact", "--data", str(tmp_path / "cf.json"), "--out", str(out)]
    res = runner.invoke(app, [*args, "--no-generation", "--json"])
    assert res.exit_code == 0, res.output
    summary = _strict_json((out / "summary.json").read_text())
    assert summary["metrics"]["PS"] == {"mean": None, "ci95": None, "missing": 2}
    assert summary["metrics"]["S"] == {"mean": None, "ci95": None, "missing": 2}
    assert summary["metrics"]["ES"]["mean"] is not None and "missing" not in summary["metrics"]["ES"]
    assert _strict_json(res.stdout)["metrics"]["PS"]["missing"] == 2
    cases = [_strict_json(line) for line in (out / "cases.jsonl").read_text().splitlines()]
    assert [c["metrics"]["PS"] for c in cases] == [None, None]
    table = runner.invoke(app, ["table", str(out), "--format", "markdown"])
    assert table.exit_code == 0 and "| – |" in table.output


def test_resume_under_another_thread_count_is_refused(tmp_path, shared_toy):
    """Metrics move in the 7th digit with torch's thread count: config.json records it, --resume checks it."""
    import json

    import torch

    out = str(tmp_path / "E")
    args = ["eval", "toy", "--method", "none", "--limit", "1", "--no-generation", "--out", out]
    threads = torch.get_num_threads()
    try:
        assert runner.invoke(app, ["--threads", "1", *args]).exit_code == 0
        assert json.loads((tmp_path / "E" / "config.json").read_text())["torch_threads"] == 1
        res = runner.invoke(app, ["--threads", "2", *args, "--resume"])
        assert res.exit_code == 2
        assert "it ran with 1 torch threads, now 2" in res.stderr and "--threads 1" in res.stderr
        assert runner.invoke(app, ["--threads", "1", *args, "--resume"]).exit_code == 0
    finally:
        torch.set_num_threads(threads)


def test_two_runs_with_the_same_settings_are_two_rows(tmp_path, shared_toy):
    """Not 'shard 0/1 given twice': each directory is a run of its own, labelled by its directory."""
    args = ["eval", "toy", "--method", "none", "--limit", "2", "--no-generation"]
    for name in ("a", "b"):
        assert runner.invoke(app, [*args, "--out", str(tmp_path / name)]).exit_code == 0
    res = runner.invoke(app, ["table", str(tmp_path / "a"), str(tmp_path / "b"), "--format", "markdown"])
    assert res.exit_code == 0, res.output
    rows = [ln for ln in res.output.splitlines() if ln.startswith("| toy")]
    assert len(rows) == 2 and str(tmp_path / "a") in rows[0] and str(tmp_path / "b") in rows[1]


def test_trace_takes_the_template_and_a_window_for_the_models_depth(shared_toy):
    """`--prompt "{} plays the" --subject S` traces the filled prompt; the window defaults to 1 of the toy's 6
    layers (10 restored every layer at once, so the mlp map was flat)."""
    base = ["trace", "toy", "--subject", "Tiboth Feigar", "--kind", "mlp", "--samples", "2", "--json"]
    filled = _strict_json(runner.invoke(app, [*base, "--prompt", "Tiboth Feigar plays the"]).stdout)
    templated = _strict_json(runner.invoke(app, [*base, "--prompt", "{} plays the"]).stdout)
    assert templated == filled and filled["window"] == 1
    mlp = [v for row in filled["scores"]["mlp"] for v in row]
    assert max(mlp) - min(mlp) > 0.05


def test_a_single_edit_is_not_called_a_batch(shared_toy, tmp_path, monkeypatch):
    monkeypatch.setenv("EDITKIT_CACHE", str(tmp_path))
    edit_ft = EDIT.replace("rome", "ft") + " --set num_steps=2"
    res = runner.invoke(app, shlex.split(edit_ft))
    assert res.exit_code == 0, res.output
    assert "ft (single edit): before → after" in res.stdout and "batch" not in res.stdout


def test_long_runs_print_a_count_and_an_eta_when_not_on_a_terminal(shared_toy, tmp_path):
    res = runner.invoke(app, ["eval", "toy", "--limit", "3", "--no-generation", "--out", str(tmp_path / "E")])
    assert res.exit_code == 0, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("eval: ")]
    assert len(lines) == 3 and lines[-1].startswith("eval: 3/3 cases (100%)") and "ETA 0:00:00" in lines[-1]
