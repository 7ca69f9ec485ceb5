"""Capability probe benchmark: perplexity on held-out texts with the whole batch's log-softmax in float64 (how
editkit computed it before: rows x positions x vocabulary x 8 bytes, twice over) against editkit's
`perplexity`, which takes the float64 log-softmax one row at a time, in the same process; wall, user and
system CPU seconds of each, and whether the perplexities are bit-identical. Last line: JSON (`ratio`: whole
batch / per row, wall).

    python experiments/bench/bench_capability.py [--model smollm2-135m] [--corpus FILE.jsonl] [--texts 64]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import resource
import time

import torch

from editkit.corpus import open_corpus
from editkit.evaluate.capability import perplexity
from editkit.models import load_model
from editkit.tokens import encode, pad_rows


@torch.no_grad()
def whole_batch(model, tok, texts: list[str], max_len: int = 128, batch_size: int = 64) -> float:
    """The earlier perplexity (no context): one float64 log-softmax over the batch's logits."""
    rows = [ids[:max_len] for ids in (encode(tok, t) for t in texts) if len(ids) > 1]
    total, count = 0.0, 0
    for begin in range(0, len(rows), batch_size):
        ids, mask = pad_rows(rows[begin : begin + batch_size], 0)
        logits = model(input_ids=ids, attention_mask=mask).logits.double()
        logp = logits[:, :-1].log_softmax(-1).gather(-1, ids[:, 1:, None])[..., 0]
        keep = mask[:, 1:].bool()
        total -= float(logp[keep].sum())
        count += int(keep.sum())
    return math.exp(total / count)


def timed(fn) -> tuple[float, float, float, float]:
    """(value, wall, user, system seconds) of one call."""
    r0, w0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    value = fn()
    r1, w1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    return value, w1 - w0, r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--corpus", default="experiments/results/stdlib-docstrings.jsonl")
    p.add_argument("--texts", type=int, default=64)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: stable timings on a shared CPU)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model, tok, _ = load_model(args.model, device="cpu")
    texts = list(itertools.islice(open_corpus(args.corpus).texts(), args.texts))
    old = timed(lambda: whole_batch(model, tok, texts))
    new = timed(lambda: perplexity(model, tok, texts))
    same = old[0] == new[0]
    print(
        f"perplexity on {len(texts)} texts: whole-batch float64 {old[1]:.1f}s wall (user {old[2]:.1f}, sys "
        f"{old[3]:.1f}), per row {new[1]:.1f}s (user {new[2]:.1f}, sys {new[3]:.1f}); x{old[1] / new[1]:.2f}; "
        f"bit-identical: {same} ({old[0]!r} vs {new[0]!r})"
    )
    keys = ("wall_s", "user_s", "sys_s")
    print(
        json.dumps(
            {
                "bench": "capability_perplexity",
                "model": args.model,
                "texts": len(texts),
                "threads": args.threads,
                "whole_batch": dict(zip(keys, (round(x, 2) for x in old[1:]), strict=True)),
                "per_row": dict(zip(keys, (round(x, 2) for x in new[1:]), strict=True)),
                "ratio": round(old[1] / new[1], 2),
                "identical": same,
            }
        )
    )


if __name__ == "__main__":
    main()
