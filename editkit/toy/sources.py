"""What the toy world supplies where the library takes data as an input: the subjects that set the tracing
noise, trace cases, probe records, the capability probe, RS's reference texts and the demo's probe prompts."""

from __future__ import annotations

from editkit.errors import EditkitError
from editkit.toy import FILES, load_world, toy_dir
from editkit.toy.world import fact_prompts


def noise_subjects() -> list[str]:
    """The toy world's subjects, whose embeddings set the `s3` noise scale on the toy model."""
    return sorted({f.subject for f in load_world().facts})


def trace_cases():
    """One case per toy fact: its first training template filled with the subject, and the object."""
    from editkit.locate.dataset import TraceCase

    world = load_world()
    return [TraceCase(str(i), fact_prompts(world, f)[0], f.subject, f.object) for i, f in enumerate(world.facts)]


def probe_records(relation: str | None = None) -> list[dict]:
    """One probe record per toy fact of `relation` (default P1303, instruments): prompt, subject, object."""
    world = load_world()
    rid = relation or "P1303"
    if rid not in world.relations:
        raise EditkitError(f"unknown toy relation {rid!r}; use one of {', '.join(world.relations)}")
    template = world.relations[rid]["train_templates"][0]
    return [
        {"prompt": template, "subject": f.subject, "object": f.object, "relation_id": rid}
        for f in world.facts
        if f.relation_id == rid
    ]


def capability_probe(n_texts: int = 200, n_facts: int = 200, batch_size: int = 64):
    """The toy world's held-out biographies and known facts, both about subjects no toy record edits."""
    from editkit.evaluate.capability import Probe
    from editkit.toy.world import heldout_lines, known_fact_prompts

    world = load_world()
    texts, facts = heldout_lines(world, n_texts), known_fact_prompts(world, n_facts)
    return Probe("toy-heldout", tuple(texts), tuple(facts), batch_size=batch_size)


def references(records):
    """RS's references for the toy world: the corpus sentences that state each record's new object, TF-IDF
    fitted on the corpus."""
    from editkit.evaluate.references import corpus_references

    return corpus_references(toy_dir() / FILES["corpus"], records)


def edit_probes(request) -> dict[str, str]:
    """A paraphrase and a neighbour of a request whose prompt is a toy-world template (else none)."""
    from editkit.requests import fill_prompt

    world = load_world()
    for rid, rel in world.relations.items():
        if request.prompt in rel["train_templates"] + rel["heldout_templates"]:
            other = next(f.subject for f in world.facts if f.relation_id == rid and f.subject != request.subject)
            return {
                "paraphrase": fill_prompt(rel["heldout_templates"][0], request.subject),
                "neighbour": fill_prompt(request.prompt, other),
            }
    return {}
