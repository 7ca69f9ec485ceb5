"""Statistics benchmark: accumulating C = E[k kᵀ] (float64) at the given layers vs a bare forward pass of the
whole model over the same token batches. Goal: overhead <= 1.25x. Last line: JSON.

    python experiments/bench/bench_stats.py [--tokens 100000] [--layers 0,1,2,3,4,5] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

from editkit.corpus import open_corpus
from editkit.edit.stats import Stats, token_batches
from editkit.models import load_model


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="toy")
    p.add_argument("--tokens", type=int, default=100_000)
    p.add_argument("--layers", default="0,1,2,3,4,5")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 avoids spinning on shared cores)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model, tok, adapter = load_model(args.model, device="cpu")
    layers = [int(x) for x in args.layers.split(",")]

    def forward() -> int:
        n = 0
        for rows in token_batches(tok, open_corpus("toy").texts(), 1024, 8192):
            width = max(map(len, rows))
            ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
            mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
            with torch.no_grad():
                model(input_ids=ids, attention_mask=mask)
            n += int(mask.sum())
            if n >= args.tokens:
                return n
        return n

    forward()  # warm up
    t = time.perf_counter()
    n = forward()
    t_forward = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as cache:
        t = time.perf_counter()
        Stats(model, tok, adapter, "toy", args.tokens, cache_dir=cache).compute(layers)
        t_stats = time.perf_counter() - t
    ratio = t_stats / t_forward
    print(f"forward pass over {n:,} tokens: {t_forward:.2f}s ({n / t_forward:,.0f} tok/s)")
    print(f"C at layers {layers} (float64, cache write included): {t_stats:.2f}s ({args.tokens / t_stats:,.0f} tok/s)")
    print(f"overhead x{ratio:.2f} (goal <= 1.25)")
    print(
        json.dumps(
            {
                "bench": "stats",
                "tokens": n,
                "layers": layers,
                "forward_s": round(t_forward, 3),
                "stats_s": round(t_stats, 3),
                "ratio": round(ratio, 3),
                "goal": 1.25,
                "ok": ratio <= 1.25,
            }
        )
    )


if __name__ == "__main__":
    main()
