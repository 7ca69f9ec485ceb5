"""Evaluation scoring benchmark on the toy model: the same CounterFact records scored one prompt per forward
pass, with each record's prompts in one right-padded batch (what single-mode edits allow), and with all
records' prompts in right-padded batches of 64 (--method none, or --mode batch), in the same process; then the
generation protocol's greedy answers to every prompt, one prompt at a time against left-padded batches of 64
with the KV cache (records per second, same answers). Last line: JSON (`ratio`: one at a time / all batched).

    python experiments/bench/bench_eval.py [--records 50] [--repeats 3] [--model toy] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from editkit.evaluate.datasets import load_dataset
from editkit.evaluate.generation import greedy_answers
from editkit.evaluate.suites import ScoreOptions, evaluate, evaluate_many, generation_groups
from editkit.models import load_model, toy_dir


def score_all(model, tok, records, batch_size: int, together: bool) -> tuple[float, list[dict]]:
    """Seconds to score every record (no generation), per record or all together, and the metrics of each."""
    opts = ScoreOptions(batch_size=batch_size, generation=False)
    start = time.perf_counter()
    if together:
        results = evaluate_many(model, tok, records, opts, [None] * len(records))
    else:
        results = [evaluate(model, tok, r, opts) for r in records]
    return time.perf_counter() - start, [m for m, _ in results]


def generate_all(model, tok, prompts: list[str], batch_size: int) -> tuple[float, list[str]]:
    """Seconds to answer every prompt greedily (the generation protocol), `batch_size` prompts at a time."""
    start = time.perf_counter()
    answers = greedy_answers(model, tok, prompts, batch_size=batch_size)
    return time.perf_counter() - start, answers


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--records", type=int, default=50)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--model", default="toy")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: stable timings on a shared CPU)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model, tok, _ = load_model(args.model, device="cpu")
    records = load_dataset("toy", toy_dir() / "counterfact.json", limit=args.records)
    rows = sum(2 * (1 + len(r.paraphrase_prompts) + len(r.neighborhood_prompts)) for r in records)
    runs = {"one": (1, False), "per_record": (64, False), "batched": (64, True)}
    secs, metrics = {}, {}
    for name, (bs, together) in runs.items():
        timings = [score_all(model, tok, records, bs, together) for _ in range(args.repeats)]
        secs[name], metrics[name] = min(t for t, _ in timings), timings[0][1]
    pairs = [(a, b) for name in ("per_record", "batched") for a, b in zip(metrics["one"], metrics[name], strict=True)]
    successes = all(a[k] == b[k] for a, b in pairs for k in ("ES", "PS", "NS"))
    max_diff = max(abs(a[k] - b[k]) for a, b in pairs for k in a)
    one, per, batched = secs["one"], secs["per_record"], secs["batched"]
    print(
        f"scoring {len(records)} CounterFact records ({rows} prompt-target rows): one at a time {one:.2f}s, "
        f"per record {per:.2f}s (x{one / per:.1f}), all batched {batched:.2f}s (x{one / batched:.1f}); "
        f"same successes: {successes}, largest metric difference {max_diff:.1e}"
    )
    prompts = [p for r in records for rows_ in generation_groups(r).values() for p, _ in rows_]
    gen = {bs: min((generate_all(model, tok, prompts, bs) for _ in range(args.repeats)), key=lambda t: t[0])
           for bs in (1, 64)}  # fmt: skip
    same_answers = gen[1][1] == gen[64][1]
    gen_one, gen_batched = len(records) / gen[1][0], len(records) / gen[64][0]
    print(
        f"generation protocol, {len(prompts)} greedy answers: one prompt at a time {gen_one:.2f} records/s, "
        f"batched {gen_batched:.2f} records/s (x{gen_batched / gen_one:.1f}); same answers: {same_answers}"
    )
    print(
        json.dumps(
            {
                "bench": "eval_scoring",
                "records": len(records),
                "rows": rows,
                "threads": args.threads,
                "one_at_a_time_s": round(one, 4),
                "per_record_s": round(per, 4),
                "batched_s": round(batched, 4),
                "per_record_ratio": round(one / per, 2),
                "ratio": round(one / batched, 2),
                "identical_successes": successes,
                "max_metric_diff": max_diff,
                "generation_prompts": len(prompts),
                "generation_one_records_per_s": round(gen_one, 3),
                "generation_batched_records_per_s": round(gen_batched, 3),
                "generation_ratio": round(gen_batched / gen_one, 2),
                "identical_answers": same_answers,
            }
        )
    )


if __name__ == "__main__":
    main()
