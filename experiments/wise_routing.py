"""WISE on the toy model, edit by edit: right after each sequential edit of the first N distinct subjects, whether
the edit prompt's greedy next token is the new object, which memory the router sends the prompt to (and whether
that is the shard just trained), each side memory's sequence score for the prompt (the mean activation score
over its tokens, what the router compares) against its routing threshold, and whether the prompt flips when it
is read by the current shard alone (experiments/README.md, "GRACE, WISE and IKE").

    OMP_NUM_THREADS=1 python experiments/wise_routing.py --edits 100 --out experiments/figures/wise-routing-toy.json
"""

import argparse
import json
import math
from pathlib import Path

import torch

from editkit.edit import METHODS, load_hparams
from editkit.edit.methods.wise import sequence_scores
from editkit.evaluate.datasets import load_dataset
from editkit.hooks import Trace
from editkit.io import atomic_write_text
from editkit.models import load_model
from editkit.toy import toy_path

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--edits", type=int, default=6)
p.add_argument("--out", default=None, help="write the per-edit rows as JSON here")
args = p.parse_args()
torch.set_num_threads(1)
model, tok, adapter = load_model("toy")
records = load_dataset("toy", toy_path("toy", "counterfact"), 5 * args.edits, distinct_subjects=True)[: args.edits]
hp = load_hparams("wise", "toy")


def next_token(text: str, memory) -> tuple[str, torch.Tensor]:
    """The routed model's greedy next token for `text`, and the memory module's input at its positions."""
    with Trace(model, memory.module, retain_input=True) as tr, torch.no_grad():
        logits = model(**tok(text, return_tensors="pt")).logits[0, -1]
    return tok.decode([int(logits.argmax())]).strip(), tr[memory.module].input[0].float()


result, rows = None, []
for i, record in enumerate(records, 1):
    request = record.request()
    result = METHODS["wise"](model, tok, adapter, [request], hp, None, history=result)
    memory = result.memories[0]
    first = request.target_new.split()[0]
    token, x = next_token(request.text, memory)
    routes = memory.meta["memories"]
    delta = {m["name"]: (x @ memory.tensors[m["name"]].T).norm(dim=-1)[None] for m in routes}
    scores = {n: float(sequence_scores(d, None)[0]) for n, d in delta.items()}
    above = {m["name"]: scores[m["name"]] for m in routes if scores[m["name"]] > m["threshold"]}
    chosen = max(above, key=above.get) if above else "W"
    current = routes[-1]["name"]
    held = [m["threshold"] for m in routes]
    for m in routes[:-1]:  # read by the current shard alone
        m["threshold"] = math.inf
    alone, _ = next_token(request.text, memory)
    for m, t in zip(routes, held, strict=True):
        m["threshold"] = t
    row = {
        "edit": i, "flipped": token == first, "route": chosen, "current": current,
        "flipped_by_current_alone": alone == first,
        "scores": {n: round(s, 1) for n, s in scores.items()},
        "thresholds": {m["name"]: round(m["threshold"], 1) for m in routes},
    }  # fmt: skip
    rows.append(row)
    print(json.dumps(row), flush=True)
n = len(rows)
summary = {
    "edits": n,
    "flipped": sum(r["flipped"] for r in rows),
    "routed_to_current": sum(r["route"] == r["current"] for r in rows),
    "flipped_by_current_alone": sum(r["flipped_by_current_alone"] for r in rows),
    "flipped_when_routed_to_current": sum(r["flipped"] for r in rows if r["route"] == r["current"]),
    "flipped_when_routed_elsewhere": sum(r["flipped"] for r in rows if r["route"] != r["current"]),
}
print(json.dumps(summary))
if args.out:
    atomic_write_text(Path(args.out), json.dumps({"summary": summary, "rows": rows}, indent=1) + "\n")
