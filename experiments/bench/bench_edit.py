"""Edit benchmark on the toy model (statistics cached first):

- ROME: time of one edit split into key (k̄ and u = C⁻¹k̄), value optimisation (v*) and update (Λ, write);
- MEMIT with 10, 100 and 1000 requests in one batch: seconds per request must not grow with the batch.

    python experiments/bench/bench_edit.py [--sizes 10,100,1000] [--threads 1] [--set v_num_grad_steps=10]

`--set` overrides MEMIT's toy hyper-parameters (ROME keeps the shipped ones): fewer z steps keep the
1000-request run short on a CPU without changing what scales with the batch (keys, the solve, the write).

Last line: JSON.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from editkit.edit import edit, load_hparams
from editkit.edit.common import context_prefixes, optimise_target
from editkit.edit.result import EditResult
from editkit.edit.rome import rome_key, rome_update
from editkit.edit.run import make_stats
from editkit.models import load_model, toy_dir
from editkit.requests import load_requests


def rome_split(model, tok, adapter, request, hp, stats) -> dict[str, float]:
    """One ROME edit, timed by stage: key (k̄, u), value (v*), update (Λ and the write)."""
    layer = hp.layers[0]
    t0 = time.perf_counter()
    prefixes = context_prefixes(model, tok, hp.context_templates, hp.seed)
    u, k_bar, out_bar = rome_key(model, tok, adapter, request, hp, stats, layer, prefixes)
    t1 = time.perf_counter()
    target = optimise_target(model, tok, adapter.name("mlp_out", layer), request, prefixes, hp)
    t2 = time.perf_counter()
    result = EditResult("rome", {})
    result.push(model, rome_update(model, tok, adapter, request, hp, layer, u, target.value, (k_bar, out_bar)))
    t3 = time.perf_counter()
    result.seal(model).revert(model)
    return {"key_s": t1 - t0, "value_s": t2 - t1, "update_s": t3 - t2}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", default="10,100,1000")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--set", action="append", default=[], help="hyper-parameter override key=value")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model, tok, adapter = load_model("toy", device="cpu")
    records = toy_dir() / "counterfact.json"
    rome_hp, memit_hp = load_hparams("rome", "toy"), load_hparams("memit", "toy", overrides=args.set)
    stats = make_stats(model, tok, adapter, memit_hp)
    stats.compute(sorted(set(rome_hp.layers) | set(memit_hp.layers)))

    (request,) = load_requests(records, limit=1)
    splits = [rome_split(model, tok, adapter, request, rome_hp, stats) for _ in range(3)]
    rome = {k: min(s[k] for s in splits) for k in splits[0]}
    total = sum(rome.values())
    print("ROME, one edit: " + ", ".join(f"{k[:-2]} {v:.3f}s ({v / total:.0%})" for k, v in rome.items()))

    memit = {}
    for n in [int(x) for x in args.sizes.split(",")]:
        requests = load_requests(records, limit=n)
        t = time.perf_counter()
        result = edit(model, tok, adapter, requests, "memit", memit_hp, stats)
        memit[n] = time.perf_counter() - t
        result.revert(model)
        print(f"MEMIT, {len(requests)} requests: {memit[n]:.1f}s, {memit[n] / len(requests) * 1000:.0f} ms/request")
    sizes = sorted(memit)
    growth = (memit[sizes[-1]] / sizes[-1]) / (memit[sizes[0]] / sizes[0])
    print(f"per-request time at {sizes[-1]} vs {sizes[0]} requests: x{growth:.2f} (linear or better: <= ~1)")
    print(
        json.dumps(
            {
                "bench": "edit",
                "overrides": args.set,
                "rome_s": {k: round(v, 4) for k, v in rome.items()},
                "memit_s": {str(k): round(v, 2) for k, v in memit.items()},
                "memit_per_request_growth": round(growth, 3),
                "ok": growth <= 1.1,
            }
        )
    )


if __name__ == "__main__":
    main()
