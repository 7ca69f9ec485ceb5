"""How much C = E[kkᵀ] depends on the corpus it is taken from, and how fast it converges with the token count.

C at one layer's MLP keys is accumulated over a local text and over text sampled from the model itself
(`samples:N`), with snapshots at growing token counts. Printed per count: the relative Frobenius difference
between the two corpora's C, each corpus's difference to its own largest count, and the cosine between the
ROME key directions u = C⁻¹k they give for a few subjects' keys; plus the seconds per 1M tokens of sampling
and of accumulating C on this machine. Last line: JSON.

    python experiments/stats_corpus.py --model smollm2-135m --layer 4 --local runs/stdlib-docstrings.jsonl \
        --samples 64 --tokens 1000,2000,4000,8000
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from editkit.corpus import open_corpus
from editkit.edit.common import io_at_subject
from editkit.edit.stats import token_batches
from editkit.hooks import Trace
from editkit.models import load_model
from editkit.tokens import pad_id

FACTS = [
    ("Trento is located in the country of", "Trento"),
    ("Pervez Musharraf follows the religion of", "Pervez Musharraf"),
    ("The mother tongue of Danielle Darrieux is", "Danielle Darrieux"),
    ("Vinson Massif is located in the continent of", "Vinson Massif"),
    ("Internet Explorer 8 was developed by", "Internet Explorer 8"),
]


@torch.no_grad()
def snapshots(model, tok, module: str, texts, counts: list[int]) -> tuple[dict[int, torch.Tensor], float]:
    """C (float64) after each of `counts` tokens, and the seconds the accumulation took."""
    device = next(model.parameters()).device
    total, n, out, t0 = None, 0, {}, time.perf_counter()
    for rows in token_batches(tok, texts, 128, 2048):
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), pad_id(tok), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for j, r in enumerate(rows):
            ids[j, : len(r)], mask[j, : len(r)] = torch.tensor(r), 1
        with Trace(model, module, retain_output=False, retain_input=True, stop=True) as tr:
            model(input_ids=ids.to(device), attention_mask=mask.to(device))
        k = tr[module].input.reshape(-1, tr[module].input.shape[-1])[mask.reshape(-1).bool()].double().cpu()
        for c in counts:  # split the batch at each snapshot that falls inside it
            if n < c <= n + len(k):
                part = k[: c - n]
                out[c] = ((total if total is not None else 0) + part.T @ part) / c
        total = (total if total is not None else 0) + k.T @ k
        n += len(k)
        if n >= counts[-1]:
            break
    if n < counts[-1]:
        raise SystemExit(f"corpus has only {n} tokens, fewer than {counts[-1]}; sample more or pass a longer text")
    return out, time.perf_counter() - t0


def rome_u(C: torch.Tensor, k: torch.Tensor, rtol: float = 1e-10) -> torch.Tensor:
    """u = C⁻¹k / ‖C⁻¹k‖ over the eigen-directions C spans (as `Stats.solve`)."""
    w, U = torch.linalg.eigh(C)
    keep = w > rtol * w[-1]
    u = U[:, keep] @ ((U[:, keep].T @ k) / w[keep])
    return u / u.norm()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--layer", type=int, default=4)
    ap.add_argument("--local", required=True, help="A local .txt/.jsonl corpus.")
    ap.add_argument("--samples", type=int, default=64, help="N of samples:N.")
    ap.add_argument("--tokens", default="1000,2000,4000,8000")
    args = ap.parse_args()
    counts = sorted(int(x) for x in args.tokens.split(","))
    model, tok, adapter = load_model(args.model)
    module = adapter.name("mlp_out", args.layer)

    t0 = time.perf_counter()
    samples = open_corpus(f"samples:{args.samples}", model, tok, log=print)
    sample_s = time.perf_counter() - t0
    sampled_tokens = sum(len(tok(t)["input_ids"]) for t in samples.texts())
    C_local, local_s = snapshots(model, tok, module, open_corpus(args.local).texts(), counts)
    C_samp, samp_s = snapshots(model, tok, module, samples.texts(), counts)
    keys = io_at_subject(model, tok, module, [p for p, _ in FACTS], [s for _, s in FACTS])[0].double().cpu()

    def rel(a, b):
        return ((a - b).norm() / b.norm()).item()

    rows = []
    for c in counts:
        cos = [torch.dot(rome_u(C_local[c], k), rome_u(C_samp[c], k)).item() for k in keys]
        rows.append(
            {
                "tokens": c,
                "local_vs_samples": rel(C_samp[c], C_local[c]),
                "local_vs_own_max": rel(C_local[c], C_local[counts[-1]]),
                "samples_vs_own_max": rel(C_samp[c], C_samp[counts[-1]]),
                "u_cosine_local_vs_samples": cos,
                "u_cosine_local_vs_own_max": [
                    torch.dot(rome_u(C_local[c], k), rome_u(C_local[counts[-1]], k)).item() for k in keys
                ],
                "u_cosine_without_C": [torch.dot(rome_u(C_local[c], k), k / k.norm()).item() for k in keys],
            }
        )
        print(
            f"{c:>8} tokens: |C_s - C_l|/|C_l| {rows[-1]['local_vs_samples']:.3f}; vs own max: local "
            f"{rows[-1]['local_vs_own_max']:.3f}, samples {rows[-1]['samples_vs_own_max']:.3f}; u cos local/samples "
            f"{min(cos):.3f}..{max(cos):.3f}"
        )
    print(
        json.dumps(
            {
                "model": args.model,
                "module": module,
                "local": args.local,
                "samples": args.samples,
                "sampled_tokens": sampled_tokens,
                "sample_seconds": sample_s,
                "seconds_per_1M_sampled_tokens": 1e6 * sample_s / max(sampled_tokens, 1),
                "seconds_per_1M_tokens_C_local": 1e6 * local_s / counts[-1],
                "seconds_per_1M_tokens_C_samples": 1e6 * samp_s / counts[-1],
                "subjects": [s for _, s in FACTS],
                "rows": rows,
            }
        )
    )


if __name__ == "__main__":
    main()
