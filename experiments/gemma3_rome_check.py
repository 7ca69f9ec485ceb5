"""Gemma 3 270M: one ROME edit with the shipped hparams (rome/gemma3-270m.yaml), Trento -> France; top-1
predictions before and after on the prompt, a paraphrase, another subject and another fact; then revert and
check every weight bit for bit. Run: python experiments/gemma3_rome_check.py. Last line: JSON."""

import json
import time

import torch

from editkit.edit import edit, load_hparams
from editkit.models import load_model, next_token_probs
from editkit.requests import EditRequest

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
hp = load_hparams("rome", "gemma3-270m")
t = time.perf_counter()
res = edit(model, tok, a, [req], "rome", hp, None)
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
            "reverted_bit_for_bit": exact,
        }
    )
)
