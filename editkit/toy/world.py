"""The toy world as the runtime reads it: its facts and relations (`world.json`), the prompts and text made
from them, and the model's recall of them. Generating a new world is `editkit.toy.generate` (only
`experiments/train_toy_model.py` needs it)."""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

from editkit.io import atomic_write_text

# Filler vocabulary for ordinary sentences and short context prefixes (as ROME's context templates).
FILLER = {
    "det": ["The", "A", "One", "Every", "That"],
    "adj": ["old", "quiet", "busy", "small", "bright", "cold", "long", "famous", "new", "narrow"],
    "noun": [
        "market",
        "river",
        "road",
        "morning",
        "winter",
        "festival",
        "harbor",
        "village",
        "garden",
        "letter",
        "storm",
        "journey",
    ],
    "verb": [
        "was crowded",
        "began early",
        "ended late",
        "was remembered",
        "was quiet",
        "changed everything",
        "drew many visitors",
        "lasted for days",
        "was described in a book",
        "surprised everyone",
    ],
    "tail": ["that year", "in the spring", "after the rain", "for a while", "once again", "without warning", ""],
}


@dataclass(frozen=True)
class Fact:
    subject: str
    relation_id: str
    object: str
    paraphrase_seen: bool


@dataclass
class World:
    """Relations (templates and object vocabularies) and the facts over them; see `save` for the file layout."""

    relations: dict[str, dict]
    facts: list[Fact] = field(default_factory=list)

    def to_json(self) -> dict:
        rels = {
            rid: {k: r[k] for k in ("name", "train_templates", "heldout_templates", "objects")}
            for rid, r in self.relations.items()
        }
        return {"relations": rels, "facts": [asdict(f) for f in self.facts]}

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps(self.to_json(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> World:
        raw = json.loads(Path(path).read_text())
        return cls(relations=raw["relations"], facts=[Fact(**f) for f in raw["facts"]])


def filler_sentence(rng: random.Random) -> str:
    f = FILLER
    tail = rng.choice(f["tail"])
    words = [rng.choice(f[k]) for k in ("det", "adj", "noun", "verb")] + ([tail] if tail else [])
    return " ".join(words) + "."


def fact_prompts(world: World, fact: Fact, heldout: bool = False) -> list[str]:
    """The fact's prompts (templates filled with its subject), train or held-out templates."""
    key = "heldout_templates" if heldout else "train_templates"
    return [t.format(fact.subject) for t in world.relations[fact.relation_id][key]]


def biography(world: World, facts: list[Fact], rng: random.Random) -> str:
    """Several facts about one subject in random order, each sentence naming the subject in full."""
    facts = rng.sample(facts, len(facts))
    return " ".join(f"{rng.choice(fact_prompts(world, f))} {f.object}." for f in facts)


def facts_by_subject(world: World) -> dict[str, list[Fact]]:
    """The world's facts grouped by subject, in the order subjects first appear."""
    groups: dict[str, list[Fact]] = {}
    for fact in world.facts:
        groups.setdefault(fact.subject, []).append(fact)
    return groups


def untouched_facts(world: World) -> list[Fact]:
    """The facts of the paraphrase-seen half: no CounterFact record of the world edits them."""
    return [f for f in world.facts if f.paraphrase_seen]


def heldout_lines(world: World, n: int = 200, seed: int = 12345) -> list[str]:
    """`n` lines of the world's text about subjects no CounterFact record edits: their biographies drawn
    with a seed training never used (new orders and template choices), half behind a filler sentence."""
    rng = random.Random(seed)
    groups = [g for g in facts_by_subject(World(world.relations, untouched_facts(world))).values() if len(g) > 1]
    lines = [biography(world, g, rng) for g in rng.sample(groups, min(n, len(groups)))]
    return [f"{filler_sentence(rng)} {t}" if rng.random() < 0.5 else t for t in lines]


def known_fact_prompts(world: World, n: int = 200, seed: int = 12345) -> list[tuple[str, str]]:
    """(prompt, object) of `n` facts no CounterFact record edits, each in a seeded training template."""
    rng = random.Random(seed)
    pool = untouched_facts(world)
    facts = rng.sample(pool, min(n, len(pool)))
    return [(rng.choice(fact_prompts(world, f)), f.object) for f in facts]


def recall_prompts(world: World, heldout: bool, facts: list[Fact] | None = None) -> list[tuple[str, str]]:
    """(prompt, object) pairs: every train template of every fact, or every held-out template of the
    facts whose paraphrases were never seen in training."""
    facts = world.facts if facts is None else facts
    if heldout:
        facts = [f for f in facts if not f.paraphrase_seen]
    return [(p, f.object) for f in facts for p in fact_prompts(world, f, heldout=heldout)]


def top1_hits(model, tokenizer, pairs: list[tuple[str, str]], batch_size: int = 256) -> list[bool]:
    """Whether greedy next-token prediction after each prompt is the first token of its object."""
    from editkit.models.predict import next_token_probs
    from editkit.tokens import target_ids

    pred = next_token_probs(model, tokenizer, [p for p, _ in pairs], batch_size).argmax(-1).tolist()
    return [pr == target_ids(tokenizer, p, o)[0] for pr, (p, o) in zip(pred, pairs, strict=True)]


def measure_recall(
    model, tokenizer, world: World, facts: list[Fact] | None = None, batch_size: int = 256
) -> dict[str, float]:
    """Top-1 recall of the object's first token on training templates (all given facts) and on held-out
    paraphrase templates (the given facts whose `paraphrase_seen` is false)."""
    out = {}
    for key, heldout in (("train_recall", False), ("heldout_recall", True)):
        hits = top1_hits(model, tokenizer, recall_prompts(world, heldout, facts), batch_size)
        out[key] = sum(hits) / max(len(hits), 1)
    return out
