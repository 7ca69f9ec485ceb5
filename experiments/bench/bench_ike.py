"""IKE evaluation benchmark: a CounterFact record's prompts behind its IKE context (k demonstrations and the new
fact), scored teacher-forced and answered greedily, each prompt read whole (how editkit did it before) against
the context's tokens run once as a shared KV cache (`share_prefix`), in the same process, on the same records;
wall seconds per record of each and the largest log-probability difference. Last line: JSON (`ratio`).

    python experiments/bench/bench_ike.py [--model toy|smollm2-135m] [--records 3]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from editkit.edit import METHODS, load_hparams
from editkit.evaluate.datasets import load_dataset
from editkit.evaluate.generation import greedy_answers
from editkit.evaluate.scoring import score_targets
from editkit.evaluate.suites import generation_groups, rows
from editkit.models import load_model
from editkit.toy import default_dataset


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="toy")
    p.add_argument("--data", default="../shared/data/counterfact-edit.json", help="CounterFact file (real models)")
    p.add_argument("--records", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: stable timings on a shared CPU)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model, tok, adapter = load_model(args.model, device="cpu")
    dataset = default_dataset(args.model)
    data = None if dataset != "counterfact" else args.data
    records = load_dataset(dataset, data)[: args.records]
    overrides = () if data is None else (f"demo_file={data}",)
    hp = load_hparams("ike", args.model, overrides=overrides)
    cases = []
    for r in records:
        context = METHODS["ike"](model, tok, adapter, [r.request()], hp, None).context
        scored = rows(r)
        asked = [p for g in generation_groups(r).values() for p, _ in g]
        cases.append(([context + p for p, _ in scored], [t for _, t in scored], [context + p for p in asked]))
    times, scores, answers = {}, {}, {}
    for share in (False, True):
        t0 = time.perf_counter()
        scores[share] = [score_targets(model, tok, ps, ts, share_prefix=share) for ps, ts, _ in cases]
        answers[share] = [greedy_answers(model, tok, qs, share_prefix=share) for _, _, qs in cases]
        times[share] = (time.perf_counter() - t0) / len(cases)
        name = "shared context" if share else "each prompt whole"
        print(f"{name:>18}: {times[share]:8.2f} s per record", flush=True)
    diff = max(
        abs(x - y)
        for a, b in zip(scores[False], scores[True], strict=True)
        for s, t in zip(a, b, strict=True)
        for x, y in zip(s.logprobs, t.logprobs, strict=True)
    )
    tokens = [len(tok(c[0][0])["input_ids"]) for c in cases]
    same = answers[False] == answers[True]
    print(f"max |Δ log p| {diff:.2e}; greedy answers identical: {same}; prompt tokens {min(tokens)}-{max(tokens)}")
    summary = {
        "model": args.model,
        "records": len(cases),
        "whole_s": round(times[False], 3),
        "shared_s": round(times[True], 3),
        "ratio": round(times[False] / times[True], 2),
        "max_abs_logprob_diff": diff,
        "answers_identical": same,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
