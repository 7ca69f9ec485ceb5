"""Where does a prompt read its subject? Interchange patching on the toy model.

For pairs of toy facts (A, B) of one relation with different objects, run A's prompt with the block-l
output at one of A's subject tokens replaced by B's at the same token of B's prompt, and count how often
the top-1 prediction becomes B's object. ROME and MEMIT write at the subject's last token: they can
move a fact only if later layers read that token's residual, i.e. if this rate is high there.

    python experiments/subject_patching.py [--pairs 30] [--relations P103,P1303,P17]

Last line: JSON.
"""

from __future__ import annotations

import argparse
import json
import random

import torch

from editkit.hooks import Trace
from editkit.models import load_model, toy_dir
from editkit.tokens import subject_span
from editkit.toy.world import World


def pairs_of(world: World, tok, relation: str, n: int, rng: random.Random) -> list:
    """`n` (A, B) fact pairs of `relation` with different objects and subjects of equal token length."""
    facts = [f for f in world.facts if f.relation_id == relation]
    out = []
    while len(out) < n:
        a, b = rng.sample(facts, 2)
        if a.object != b.object and len(tok(" " + a.subject)["input_ids"]) == len(tok(" " + b.subject)["input_ids"]):
            out.append((a, b))
    return out


@torch.no_grad()
def module_output(model, tok, name: str, prompt: str) -> torch.Tensor:
    """Module `name`'s output on `prompt`, [tokens, width]."""
    with Trace(model, name) as t:
        model(tok(prompt, return_tensors="pt")["input_ids"])
    return t[name].output[0]


@torch.no_grad()
def patched_top1(model, tok, name: str, prompt: str, pos: int, vec: torch.Tensor) -> int:
    """Top-1 next token of `prompt` with module `name`'s output at `pos` replaced by `vec`."""

    def put(out: torch.Tensor, _name: str) -> torch.Tensor:
        out = out.clone()
        out[0, pos] = vec
        return out

    with Trace(model, name, retain_output=False, edit_output=put):
        return int(model(tok(prompt, return_tensors="pt")["input_ids"]).logits[0, -1].argmax())


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--pairs", type=int, default=30)
    p.add_argument("--relations", default="P103,P1303,P17")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    model, tok, adapter = load_model("toy", device="cpu")
    world = World.load(toy_dir() / "world.json")
    rng = random.Random(args.seed)
    rates: dict[str, list[float]] = {"first": [], "last": []}
    for layer in range(adapter.n_layers):
        name = adapter.name("block", layer)
        hits = {"first": 0, "last": 0}
        n = 0
        for rid in args.relations.split(","):
            template = world.relations[rid]["train_templates"][0]
            for a, b in pairs_of(world, tok, rid, args.pairs, random.Random(rng.random())):
                pa, pb = template.format(a.subject), template.format(b.subject)
                (sa, ea), (sb, eb) = subject_span(tok, pa, a.subject), subject_span(tok, pb, b.subject)
                b_first = tok(pb + " " + b.object)["input_ids"][len(tok(pb)["input_ids"])]
                donor = module_output(model, tok, name, pb)  # one run of B's prompt serves both positions
                hits["first"] += patched_top1(model, tok, name, pa, sa, donor[sb]) == b_first
                hits["last"] += patched_top1(model, tok, name, pa, ea - 1, donor[eb - 1]) == b_first
                n += 1
        for k in rates:
            rates[k].append(hits[k] / n)
        print(f"block {layer}: top-1 becomes B's object, first subject token {rates['first'][-1]:.0%}, "
              f"last subject token {rates['last'][-1]:.0%} ({n} pairs)", flush=True)  # fmt: skip
    print(json.dumps({"bench": "subject_patching", "pairs": n, "rates": rates}))


if __name__ == "__main__":
    main()
