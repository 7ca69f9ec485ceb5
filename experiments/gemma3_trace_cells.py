"""Gemma 3 270M (editkit models fetch gemma3-270m): the causal trace of Trento by `fast` (10 samples, window 10,
s3 noise), then six cells recomputed by the reference loop (`_run_patched`) on the same noise, with timings.
Run: python experiments/gemma3_trace_cells.py (the full naive loop takes ~40 min on a loaded 2-core machine).
Last line: JSON."""

import json
import time

import numpy as np
import torch

from editkit.locate import tracing as T
from editkit.models import load_model

model, tok, a = load_model("gemma3-270m", device="cpu")
prompt, subject = "Trento is located in the country of", "Trento"
kw = dict(samples=10, window=10, noise="s3", noise_subjects=T.reference_subjects())
t = time.perf_counter()
fast = T.trace(model, tok, a, prompt, subject, **kw)
fast_s = time.perf_counter() - t
print(
    "answer",
    repr(fast.answer),
    "clean",
    fast.clean_score,
    "corrupted",
    fast.corrupted_score,
    "fast_s",
    round(fast_s, 1),
    flush=True,
)
print("tokens", fast.tokens, "subject", fast.subject_range, flush=True)
for k in fast.scores:
    print(k, "peak (token, layer, p)", fast.peak(k), flush=True)
    print(k, "row at subject last token", np.round(fast.scores[k][fast.subject_range[1] - 1], 3).tolist(), flush=True)
# naive spot checks: the reference loop's _run_patched on the same case
span = fast.subject_range
ids = torch.tensor([T.encode(tok, prompt)])
scale, uniform = T.noise_scale(model, tok, a, "s3", kw["noise_subjects"])
case = T._Case(
    model, a, ids, span, fast.answer_id, T.draw_noise(10, span[1] - span[0], a.hidden_size, scale, uniform, 1)
)
last = span[1] - 1
cells = [
    ("hidden", last, 5),
    ("hidden", last, 6),
    ("hidden", ids.shape[1] - 1, 11),
    ("mlp", last, fast.peak("mlp")[1]),
    ("mlp", last, 11),
    ("attn", ids.shape[1] - 1, fast.peak("attn")[1]),
]
diffs = []
for kind, tk, layer in cells:
    t = time.perf_counter()
    if kind == "hidden":
        restore = {a.name("block", layer): [tk]}
    else:
        restore = {a.name(kind, i): [tk] for i in T.window_layers(layer, a.n_layers, 10)}
    p = T._run_patched(case, restore)
    d = abs(p - fast.scores[kind][tk, layer])
    diffs.append(d)
    print(
        kind,
        tk,
        layer,
        "naive",
        p,
        "fast",
        fast.scores[kind][tk, layer],
        "diff",
        d,
        "s",
        round(time.perf_counter() - t, 1),
        flush=True,
    )
print(
    json.dumps(
        {
            "answer": fast.answer,
            "clean": fast.clean_score,
            "corrupted": fast.corrupted_score,
            "fast_s": fast_s,
            "peaks": {k: fast.peak(k) for k in fast.scores},
            "max_abs_diff_cells": max(diffs),
            "cells": len(cells),
        }
    )
)
