"""Bad input through the CLI: each case exits with its status, says what is wrong in one line on stderr,
shows no traceback, leaves no file behind and leaves the (shared, really loaded) toy model unchanged."""

from __future__ import annotations

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
    """`load_model("toy")` returns the session's toy model (the real one, loaded once) for the CLI."""
    real = editkit.models.load_model
    monkeypatch.setattr(
        editkit.models, "load_model", lambda name, *a, **kw: toy if name == "toy" else real(name, *a, **kw)
    )
    return toy


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
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert case.message in lines[0]
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

    def half_then_nan(model, tokenizer, adapter, requests, hp, stats, history=None):
        result = EditResult("rome", {})
        result.push(model, good)
        result.push(model, Delta(module, dense=torch.full((out, inp), float("inf"))))

    monkeypatch.setitem(METHODS, "rome", half_then_nan)
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
