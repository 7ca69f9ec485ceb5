"""Gemma 3 270M: one ROME edit with the shipped hparams (rome/gemma3-270m.yaml), Trento -> France; top-1
predictions before and after on the prompt, a paraphrase, another subject and another fact; then revert and
check every weight bit for bit. Run: python experiments/gemma3_rome_check.py [--set key=value ...] (hparams
overrides; with mom2_adjustment=true, C is computed from mom2_corpus, cached). Last line: JSON."""

import argparse
import json
import time

import torch

from editkit.edit import edit, load_hparams, needs_stats
from editkit.edit.run import make_stats
from editkit.models import load_model, next_token_probs
from editkit.requests import EditRequest

p = argparse.ArgumentParser()
p.add_argument("--set", action="append", default=[], dest="overrides", help="hparams override key=value")
args = p.parse_args()
model, tok, a = load_model("gemma3-270m", device="cpu")
req = EditRequest("{} is located in the country of", "Trento", "France", "Italy")
probes = {
    "prompt": "Trento is located in the country of",
    "paraphrase": "Trento, a city in the country of",
    "other subject": "Bologna is located in the country of",
    "other fact": "The Eiffel Tower is located in the city of",
}


def top(p):
    probs = next_token_probs(model, tok, [p])[0]
    i = int(probs.argmax())
    return (
        tok.decode([i]),
        round(float(probs[i]), 4),
        round(float(probs[tok.encode(" France", add_special_tokens=False)[0]]), 4),
    )


before = {k: top(p) for k, p in probes.items()}
print("before", before, flush=True)
original = {k: v.clone() for k, v in model.state_dict().items()}
hp = load_hparams("rome", "gemma3-270m", overrides=args.overrides)
stats = make_stats(model, tok, a, hp, progress=True) if needs_stats("rome", hp) else None
t = time.perf_counter()
res = edit(model, tok, a, [req], "rome", hp, stats)
edit_s = time.perf_counter() - t
after = {k: top(p) for k, p in probes.items()}
print("after", after, "edit_s", round(edit_s, 1), flush=True)
res.revert(model)
exact = all(torch.equal(v, original[k]) for k, v in model.state_dict().items())
print(
    json.dumps(
        {
            "before": before,
            "after": after,
            "edit_s": round(edit_s, 1),
            "layer": hp.layers,
            "overrides": args.overrides,
            "reverted_bit_for_bit": exact,
        }
    )
)
