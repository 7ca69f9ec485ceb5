"""Causal tracing speed: `naive` (the reference loop) vs `fast`, same fact, same process.

    python experiments/bench/bench_trace.py                      # the toy model
    python experiments/bench/bench_trace.py --shape gpt2-medium  # random weights, 24 layers x 1024
    python experiments/bench/bench_trace.py --model gemma3-270m --prompt "{} is located in the country of" \
        --subject Trento                                         # a fetched real model, s3 noise

Prints the attribution-patching correlation with the exact scores per kind, and as its last line
{"naive_s", "fast_s", "ratio", "max_abs_diff", ...}.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from editkit.demo import load_toy_world
from editkit.locate.tracing import reference_subjects, trace
from editkit.models import adapter_for, load_model
from editkit.toy import is_toy
from editkit.toy.sources import noise_subjects as toy_subjects

SHAPES = {"gpt2-medium": dict(n_layer=24, n_embd=1024, n_head=16), "gpt2-xl": dict(n_layer=48, n_embd=1600, n_head=25)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--shape", choices=sorted(SHAPES), default=None, help="random GPT-2 weights of this shape")
    p.add_argument("--samples", type=int, default=10)
    p.add_argument("--device", default="cpu")
    p.add_argument("--kinds", default="hidden,mlp,attn", help="comma-separated kinds to trace")
    p.add_argument("--model", default="toy", help="toy, a fetched named model or a model directory")
    p.add_argument("--prompt", default=None, help="with {} for the subject (default: a toy-world fact)")
    p.add_argument("--subject", default=None)
    args = p.parse_args()
    model, tok, adapter = load_model(args.model, device=args.device)
    if args.shape:
        from transformers import GPT2Config, GPT2LMHeadModel

        torch.manual_seed(0)
        model = GPT2LMHeadModel(GPT2Config(vocab_size=50257, n_positions=1024, **SHAPES[args.shape]))
        model = model.to(args.device).eval()
        adapter = adapter_for(model)
    if args.prompt is None:
        world = load_toy_world()
        fact = world.facts[0]
        subject, prompt = fact.subject, world.relations[fact.relation_id]["train_templates"][0].format(fact.subject)
        noise, noise_subjects = 0.3, None
    else:
        subject, prompt = args.subject, args.prompt.format(args.subject)
        noise, noise_subjects = "s3", toy_subjects() if is_toy(args.model) else reference_subjects()
    kinds = args.kinds.split(",")
    # window 10 (the paper's, trace()'s default before it scaled with depth): the recorded ratios used it
    kw = dict(samples=args.samples, window=10, noise=noise, kinds=kinds, noise_subjects=noise_subjects)

    def timed(method: str):
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        r = trace(model, tok, adapter, prompt, subject, method=method, **kw)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return r, time.perf_counter() - t

    trace(model, tok, adapter, prompt, subject, method="fast", **{**kw, "kinds": kinds[:1]})  # warm-up
    fast, fast_s = timed("fast")
    naive, naive_s = timed("naive")
    attr, attr_s = timed("attribution")
    diff = max(float(np.abs(fast.scores[k] - naive.scores[k]).max()) for k in fast.scores)
    pearson = {
        k: round(float(np.corrcoef(attr.scores[k].ravel(), fast.scores[k].ravel())[0, 1]), 3) for k in fast.scores
    }
    print(
        f"model: {args.shape or args.model} ({adapter.n_layers} layers x {adapter.hidden_size}), prompt {prompt!r}, "
        f"{len(fast.tokens)} tokens, {args.samples} samples, kinds {'+'.join(kinds)}"
    )
    print(f"naive {naive_s:.2f}s  fast {fast_s:.2f}s  attribution {attr_s:.2f}s  ->  fast is x{naive_s / fast_s:.1f}")
    print(f"attribution patching vs exact scores, Pearson r per kind: {pearson}")
    print(
        json.dumps(
            {
                "naive_s": round(naive_s, 3),
                "fast_s": round(fast_s, 3),
                "ratio": round(naive_s / fast_s, 2),
                "max_abs_diff": diff,
                "attribution_s": round(attr_s, 3),
                "attribution_pearson": pearson,
                "shape": args.shape or args.model,
                "answer": fast.answer,
                "clean": round(fast.clean_score, 4),
                "corrupted": round(fast.corrupted_score, 4),
                "peaks": {k: fast.peak(k) for k in fast.scores},
            }
        )
    )


if __name__ == "__main__":
    main()
