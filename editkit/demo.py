"""The showcase on the toy model, as plain library calls the CLI renders: what the model believes."""

from __future__ import annotations

import random
from dataclasses import dataclass

from editkit.models import Prediction, top_k
from editkit.tokens import target_ids
from editkit.toy import toy_dir
from editkit.toy.world import Fact, World, fact_prompts, measure_recall


@dataclass(frozen=True)
class Belief:
    """The model's top predictions for one fact, in a training template and in an unseen paraphrase."""

    fact: Fact
    relation: str
    prompt: str
    top: list[Prediction]
    paraphrase: str
    paraphrase_top: list[Prediction]
    object_token: int

    @property
    def correct(self) -> bool:
        return self.top[0].token_id == self.object_token

    @property
    def paraphrase_correct(self) -> bool:
        return self.paraphrase_top[0].token_id == self.object_token


def load_toy_world() -> World:
    return World.load(toy_dir() / "world.json")


def beliefs(model, tokenizer, world: World, facts: list[Fact], k: int = 3) -> list[Belief]:
    """Top-`k` next tokens for each fact's first training template and first paraphrase."""
    out = []
    for f in facts:
        prompt = fact_prompts(world, f)[0]
        para = fact_prompts(world, f, heldout=True)[0]
        out.append(
            Belief(
                f,
                world.relations[f.relation_id]["name"],
                prompt,
                top_k(model, tokenizer, prompt, k),
                para,
                top_k(model, tokenizer, para, k),
                target_ids(tokenizer, prompt, f.object)[0],
            )
        )
    return out


def demo_facts(world: World, seed: int = 0) -> list[Fact]:
    """One fact per relation, from subjects never shown with the paraphrase templates."""
    rng = random.Random(seed)
    return [
        rng.choice([f for f in world.facts if f.relation_id == rid and not f.paraphrase_seen])
        for rid in world.relations
    ]


def recall_sample(model, tokenizer, world: World, n: int = 200, seed: int = 0) -> dict[str, float]:
    """Recall (see `measure_recall`) on `n` facts drawn with `seed`."""
    return measure_recall(
        model, tokenizer, world, facts=random.Random(seed).sample(world.facts, min(n, len(world.facts)))
    )


def trace_belief(model, tokenizer, adapter, belief: Belief, world: World, samples: int = 10, window: int = 2):
    """Causal trace (all kinds, fast, the s3 noise of the toy world's subjects) of a belief's prompt; the
    mlp/attn window is 2 layers, as 10 would cover all 6 of the toy model's."""
    from editkit.locate.tracing import trace

    subjects = sorted({f.subject for f in world.facts})
    return trace(
        model,
        tokenizer,
        adapter,
        belief.prompt,
        belief.fact.subject,
        samples=samples,
        window=window,
        noise_subjects=subjects,
    )
