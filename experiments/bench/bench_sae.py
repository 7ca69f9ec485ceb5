"""SAE training speed: tokens per second of `train_sae` for every registered architecture, and for a
transcoder of each (MLP input → MLP output), against a TopK SAE trained in the same process on the same
activations, width, batch size and steps. Activations: the toy model's, cached once (paired at one MLP).
Each run is timed after one short warm-up run of its kind. Last line: JSON.

    OMP_NUM_THREADS=1 python experiments/bench/bench_sae.py [--d-sae 512] [--batch-size 512] [--steps 200]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from editkit.features import SAEConfig, resolve_hook
from editkit.features.saes import names
from editkit.features.store import ActivationStore, cache_activations
from editkit.features.train import train_sae
from editkit.models import load_model


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="toy")
    p.add_argument("--layer", type=int, default=0)
    p.add_argument("--tokens", type=int, default=50_000)
    p.add_argument("--d-sae", type=int, default=512)
    p.add_argument("--k", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 avoids spinning on shared cores)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model, tok, adapter = load_model(args.model, device="cpu")
    hook_in = resolve_hook(adapter, f"blocks.{args.layer}.ln2.hook_normalized")
    hook_out = resolve_hook(adapter, f"blocks.{args.layer}.hook_mlp_out")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pairs.h5"
        cache_activations(model, tok, adapter, hook_in, "toy", path, args.tokens, args.model, hook_out=hook_out)
        store = ActivationStore(path)
        x_all, y_all = store.read(), store.read(dataset="activations_out")
    d = x_all.shape[1]

    def batches(transcoder: bool):
        g = torch.Generator().manual_seed(0)
        while True:
            i = torch.randint(len(x_all), (args.batch_size,), generator=g)
            yield (x_all[i], y_all[i]) if transcoder else x_all[i]

    def run(arch: str, transcoder: bool, steps: int) -> float:
        cfg = SAEConfig(d_in=d, d_sae=args.d_sae, architecture=arch, k=args.k, d_out=d if transcoder else None)
        cfg.training_steps, cfg.batch_size, cfg.lr_warm_up_steps = steps, args.batch_size, 10
        t = time.perf_counter()
        train_sae(batches(transcoder), cfg)
        return steps * args.batch_size / (time.perf_counter() - t)

    runs = [(arch, False) for arch in names()] + [(arch, True) for arch in names()]
    run("topk", False, 10)  # warm-up
    base = run("topk", False, args.steps)  # the baseline; topk again among the runs shows the run-to-run spread
    speed = {}
    for arch, transcoder in runs:
        run(arch, transcoder, 10)  # warm-up
        speed[f"{arch}{' transcoder' if transcoder else ''}"] = run(arch, transcoder, args.steps)
    print(f"{args.steps} steps of {args.batch_size} activations, d_in {d}, d_sae {args.d_sae}, k {args.k}")
    print(f"{args.threads} torch thread(s)")
    print(f"{'topk (baseline)':24s} {base:10,.0f} tok/s")
    for label, s in speed.items():
        print(f"{label:24s} {s:10,.0f} tok/s   x{s / base:.2f} of topk")
    print(
        json.dumps(
            {
                "bench": "sae_train",
                "steps": args.steps,
                "batch_size": args.batch_size,
                "d_sae": args.d_sae,
                "k": args.k,
                "threads": args.threads,
                "topk_tokens_per_s": round(base),
                "ratio_to_topk": {label: round(s / base, 3) for label, s in speed.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
