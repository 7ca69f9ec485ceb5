"""Evaluation scoring benchmark on the toy model: the same CounterFact records scored with every prompt of a
record in one right-padded batch vs one prompt per forward pass, in the same process. Last line: JSON.

    python experiments/bench/bench_eval.py [--records 50] [--repeats 3] [--model toy]
"""

from __future__ import annotations

import argparse
import json
import time

from editkit.evaluate.datasets import load_dataset
from editkit.evaluate.suites import ScoreOptions, evaluate
from editkit.models import load_model, toy_dir


def score_all(model, tok, records, batch_size: int) -> tuple[float, list[dict]]:
    """Seconds to score every record (no generation) and the metrics of each."""
    opts = ScoreOptions(batch_size=batch_size, generation=False)
    start = time.perf_counter()
    metrics = [evaluate(model, tok, r, opts)[0] for r in records]
    return time.perf_counter() - start, metrics


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--records", type=int, default=50)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--model", default="toy")
    args = p.parse_args()
    model, tok, _ = load_model(args.model, device="cpu")
    records = load_dataset("toy", toy_dir() / "counterfact.json", limit=args.records)
    rows = sum(2 * (1 + len(r.paraphrase_prompts) + len(r.neighborhood_prompts)) for r in records)
    one = min(score_all(model, tok, records, 1)[0] for _ in range(args.repeats))
    batched = min(score_all(model, tok, records, 64)[0] for _ in range(args.repeats))
    (_, m_one), (_, m_batched) = score_all(model, tok, records, 1), score_all(model, tok, records, 64)
    successes = all(a[k] == b[k] for a, b in zip(m_one, m_batched, strict=True) for k in ("ES", "PS", "NS"))
    max_diff = max(abs(a[k] - b[k]) for a, b in zip(m_one, m_batched, strict=True) for k in a)
    print(
        f"scoring {len(records)} CounterFact records ({rows} prompt-target rows): one at a time {one:.2f}s, "
        f"batched {batched:.2f}s, speed-up x{one / batched:.1f}; same successes: {successes}, "
        f"largest metric difference {max_diff:.1e}"
    )
    print(
        json.dumps(
            {
                "bench": "eval_scoring",
                "records": len(records),
                "rows": rows,
                "one_at_a_time_s": round(one, 4),
                "batched_s": round(batched, 4),
                "ratio": round(one / batched, 2),
                "identical_successes": successes,
                "max_metric_diff": max_diff,
            }
        )
    )


if __name__ == "__main__":
    main()
