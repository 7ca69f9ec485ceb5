"""WISE on the toy model, edit by edit: right after each sequential edit of the first 6 distinct subjects, whether
the edit prompt's greedy next token is the new object, and each side memory's sequence score for the prompt
(the mean activation score over its tokens, what the router compares) against its routing threshold
(experiments/README.md, "GRACE, WISE and IKE")."""

import torch

from editkit.edit import METHODS, load_hparams
from editkit.edit.methods.wise import sequence_scores
from editkit.evaluate.datasets import load_dataset
from editkit.hooks import Trace
from editkit.models import load_model
from editkit.toy import toy_path

torch.set_num_threads(1)
model, tok, adapter = load_model("toy")
records = load_dataset("toy", toy_path("toy", "counterfact"), 30, distinct_subjects=True)[:6]
hp = load_hparams("wise", "toy")
result = None
for i, record in enumerate(records, 1):
    request = record.request()
    result = METHODS["wise"](model, tok, adapter, [request], hp, None, history=result)
    memory = result.memories[0]
    with Trace(model, memory.module, retain_input=True) as tr, torch.no_grad():
        logits = model(**tok(request.text, return_tensors="pt")).logits[0, -1]
    x = tr[memory.module].input[0].float()
    scores = {
        m["name"]: (
            round(float(sequence_scores((x @ memory.tensors[m["name"]].T).norm(dim=-1)[None], None)[0])),
            round(m["threshold"]),
        )
        for m in memory.meta["memories"]
    }
    flipped = tok.decode([int(logits.argmax())]).strip() == request.target_new.split()[0]
    print(i, flipped, "sequence score, threshold:", scores, flush=True)
