"""Foundation benchmarks on the toy model, each a ratio against a baseline run in the same process:

- batched, right-padded next-token scoring vs one prompt per forward pass;
- a forward pass under `Trace` recording every block, MLP and attention output vs a plain forward pass.

    python experiments/bench/bench_foundation.py [--prompts 512] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import torch

from editkit.demo import load_toy_world
from editkit.hooks import Trace
from editkit.models import load_model, next_token_probs
from editkit.toy.world import recall_prompts


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--prompts", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    model, tok, adapter = load_model("toy", device="cpu")
    prompts = [q for q, _ in recall_prompts(load_toy_world(), heldout=False)][: args.prompts]

    one = best_of(lambda: [next_token_probs(model, tok, [q]) for q in prompts], args.repeats)
    batched = best_of(lambda: next_token_probs(model, tok, prompts, batch_size=128), args.repeats)
    same = torch.allclose(
        next_token_probs(model, tok, prompts[:64], 64),
        torch.cat([next_token_probs(model, tok, [q]) for q in prompts[:64]]),
        atol=1e-5,
    )
    print(
        f"scoring {len(prompts)} prompts: one-by-one {one:.2f}s, batched {batched:.2f}s, "
        f"speed-up x{one / batched:.1f} (same probabilities: {same})"
    )

    enc = tok(prompts[:128], padding=False)["input_ids"]
    ids = torch.tensor([r[:8] for r in enc if len(r) >= 8])
    names = [n for k in ("block", "mlp", "attn") for n in adapter.names(k)]

    @torch.no_grad()
    def plain():
        model(ids)

    @torch.no_grad()
    def traced():
        with Trace(model, names):
            model(ids)

    t_plain, t_traced = best_of(plain, args.repeats * 3), best_of(traced, args.repeats * 3)
    print(
        f"forward of {tuple(ids.shape)} tokens: plain {t_plain * 1e3:.1f} ms, tracing {len(names)} modules "
        f"{t_traced * 1e3:.1f} ms, overhead x{t_traced / t_plain:.2f}"
    )


if __name__ == "__main__":
    main()
