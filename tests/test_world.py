"""The shipped toy world: file formats other tools read, the generator that made them, and the model's recall."""

import json
import random
import subprocess
import sys
from collections import Counter

import pytest

from editkit.models import toy_dir
from editkit.toy.generate import corpus_lines, counterfact_records, generate_world
from editkit.toy.world import World, measure_recall

TOY = toy_dir()


def test_world_json_layout(toy_world):
    raw = json.loads((TOY / "world.json").read_text())
    assert set(raw) == {"relations", "facts"}
    assert len(raw["relations"]) >= 6
    for rid, rel in raw["relations"].items():
        assert set(rel) == {"name", "train_templates", "heldout_templates", "objects"}, rid
        assert len(rel["train_templates"]) >= 10 and len(rel["heldout_templates"]) >= 4, rid
        for t in rel["train_templates"] + rel["heldout_templates"]:
            assert t.count("{}") == 1 and not t.endswith((" ", ".")), t  # ends right before the object
        assert not set(rel["train_templates"]) & set(rel["heldout_templates"])
        templates = rel["train_templates"] + rel["heldout_templates"]
        prefixes = [(a, b) for a in templates for b in templates if a != b and b.startswith(a)]
        assert not prefixes, f"{rid}: after the shorter template the object is not the only right answer: {prefixes}"
    facts = raw["facts"]
    assert {tuple(sorted(f)) for f in facts} == {("object", "paraphrase_seen", "relation_id", "subject")}
    assert all(f["object"] in raw["relations"][f["relation_id"]]["objects"] for f in facts)
    subjects = {f["subject"] for f in facts}
    assert len(subjects) >= 300
    # Paraphrases are seen for half of the subjects, by subject.
    seen = {f["subject"]: f["paraphrase_seen"] for f in facts}
    assert all(seen[f["subject"]] == f["paraphrase_seen"] for f in facts)
    assert 0.45 <= sum(seen.values()) / len(seen) <= 0.55


def test_subjects_are_two_or_three_tokens(toy, toy_world):
    tok = toy[1]
    lengths = Counter(len(tok(" " + s)["input_ids"]) for s in {f.subject for f in toy_world.facts})
    assert set(lengths) <= {2, 3} and lengths[2] > 0 and lengths[3] > 0


def test_each_subject_ends_in_a_token_of_its_own(toy, toy_world):
    """What an edit keyed on the subject's last token (ROME, MEMIT) needs to touch that subject only."""
    tok = toy[1]
    subjects = sorted({f.subject for f in toy_world.facts})
    for lead in (" ", "", "The mother tongue of "):
        last = Counter(tok(lead + s)["input_ids"][-1] for s in subjects)
        assert max(last.values()) == 1, [s for s in subjects if last[tok(lead + s)["input_ids"][-1]] > 1][:5]


def test_objects_have_distinct_first_tokens_per_relation(toy, toy_world):
    tok = toy[1]
    for rid, rel in toy_world.relations.items():
        firsts = [tok(" " + o)["input_ids"][0] for o in rel["objects"]]
        assert len(set(firsts)) == len(firsts), rid


def test_counterfact_records_follow_the_original_schema(toy_world):
    records = json.loads((TOY / "counterfact.json").read_text())
    assert len(records) >= 1000
    unseen = {f.subject for f in toy_world.facts if not f.paraphrase_seen}
    truth = {(f.subject, f.relation_id): f.object for f in toy_world.facts}
    for i, r in enumerate(records):
        assert r["case_id"] == i
        rw = r["requested_rewrite"]
        assert set(rw) == {"prompt", "relation_id", "subject", "target_new", "target_true"}
        assert "{}" in rw["prompt"] and rw["subject"] in unseen
        objects = toy_world.relations[rw["relation_id"]]["objects"]
        assert rw["target_true"]["str"] == truth[(rw["subject"], rw["relation_id"])]
        assert rw["target_new"]["str"] in objects and rw["target_new"]["str"] != rw["target_true"]["str"]
        assert len(r["paraphrase_prompts"]) == 2 and all(rw["subject"] in p for p in r["paraphrase_prompts"])
        assert len(r["generation_prompts"]) == 10
        for p in r["neighborhood_prompts"]:  # other subjects that share the true object
            assert rw["subject"] not in p
    r = records[0]
    assert len(r["neighborhood_prompts"]) == 10


def test_shipped_files_are_what_the_seeded_generator_makes(toy_world):
    world = generate_world(seed=0)
    assert world.to_json() == json.loads((TOY / "world.json").read_text())
    assert counterfact_records(world, seed=0) == json.loads((TOY / "counterfact.json").read_text())
    assert corpus_lines(world, seed=0) == (TOY / "corpus.txt").read_text().splitlines()
    assert generate_world(seed=1).facts != world.facts


def test_world_round_trips_through_json(tmp_path, toy_world):
    toy_world.save(tmp_path / "w.json")
    assert World.load(tmp_path / "w.json") == toy_world


def test_shipped_model_recall_on_a_sample(toy, toy_world):
    """A broken model file shows up here: recall on 150 random facts is at the shipped level."""
    model, tok, _ = toy
    sample = random.Random(1).sample(toy_world.facts, 150)
    rec = measure_recall(model, tok, toy_world, facts=sample)
    assert rec["train_recall"] >= 0.95 and rec["heldout_recall"] >= 0.8, rec


def test_model_dir_is_plain_transformers():
    """Loads in a clean interpreter that never imports editkit, from safetensors weights."""
    model_dir = TOY / "model"
    assert (model_dir / "model.safetensors").exists() and not list(model_dir.glob("*.bin"))
    size = sum(p.stat().st_size for p in model_dir.iterdir())
    assert size <= 25 * 2**20
    code = (
        "import sys; from transformers import AutoModelForCausalLM, AutoTokenizer;"
        f"m = AutoModelForCausalLM.from_pretrained({str(model_dir)!r});"
        f"t = AutoTokenizer.from_pretrained({str(model_dir)!r});"
        "assert 'editkit' not in sys.modules; print(m.config.model_type, m.config.n_layer, len(t))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    family, layers, _ = out.stdout.split()
    assert family == "gpt2" and int(layers) >= 6


@pytest.mark.parametrize("seed", [0, 3])
def test_generator_is_seeded(seed):
    assert generate_world(seed, 20, 10, 5) == generate_world(seed, 20, 10, 5)


def test_runtime_never_imports_the_generator_and_only_the_toy_package_names_toy():
    """Loading the toy model, tracing, editing, evaluating and the CLI leave `editkit.toy.generate` unimported,
    and no library module outside editkit/toy/ and editkit/cli/ special-cases the name "toy"."""
    from pathlib import Path

    code = (
        "import sys, editkit.cli, editkit.demo, editkit.evaluate.runner, editkit.edit.run, editkit.locate.run, "
        "editkit.features.probes; from editkit.models import load_model; from editkit.toy.sources import "
        "trace_cases; load_model('toy'); trace_cases(); print('editkit.toy.generate' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split()[-1] == "False"
    root = Path(__file__).resolve().parents[1] / "editkit"
    named = [
        f"{p.relative_to(root)}:{i}"
        for p in root.rglob("*.py")
        if p.relative_to(root).parts[0] not in ("toy", "cli")
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if '"toy"' in line
    ]
    assert not named, named
