"""Quality of ROME, FT-L, MEMIT and AlphaEdit on the toy model's CounterFact records, scored with
editkit.evaluate's CounterFact metrics (ES: p(new) > p(true) on the edit prompt, PS on paraphrases, NS:
p(true) > p(new) on neighbours; whole-target probabilities), generation metrics off.

- single (rome, r-rome, ft-l, ft): each record edited alone, scored, reverted;
- batch (memit): all records in one edit, then every record scored;
- sequential (alphaedit, memit, rome, r-rome): records edited one after another; every record is scored
  once the whole sequence is in place.

`--distinct-subjects` keeps each subject's first record only: the toy world has four facts per subject,
and requests on one subject share the key at its last token, so in one batch they conflict.

    OMP_NUM_THREADS=1 python experiments/edit_quality.py --method rome --mode single [--limit 100]

Last line: JSON.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from editkit.edit import edit, load_hparams, needs_stats
from editkit.edit.run import make_stats
from editkit.evaluate.datasets import load_dataset
from editkit.evaluate.suites import ScoreOptions, evaluate
from editkit.models import load_model, toy_dir


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--method", required=True)
    p.add_argument("--mode", choices=["single", "batch", "sequential"], required=True)
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--set", action="append", default=[], help="hyper-parameter override key=value")
    p.add_argument(
        "--distinct-subjects",
        action="store_true",
        help="only each subject's first record (batch/sequential: one subject's requests share a key)",
    )
    args = p.parse_args()
    torch.set_num_threads(1)
    model, tok, adapter = load_model("toy", device="cpu")
    records = load_dataset(
        "toy", toy_dir() / "counterfact.json", limit=args.limit, distinct_subjects=args.distinct_subjects
    )
    hp = load_hparams(args.method, "toy", overrides=args.set)
    stats = make_stats(model, tok, adapter, hp, progress=True) if needs_stats(args.method, hp) else None
    opts = ScoreOptions(generation=False)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    t0 = time.perf_counter()
    scores = []
    if args.mode == "single":
        for r in records:
            result = edit(model, tok, adapter, [r.request()], args.method, hp, stats)
            scores.append(evaluate(model, tok, r, opts)[0])
            result.revert(model)
            print(json.dumps({"case": len(scores) - 1, **scores[-1]}), flush=True)  # partial results while it runs
    else:
        reqs = [r.request() for r in records]
        result = edit(model, tok, adapter, reqs, args.method, hp, stats, mode=args.mode)
        scores = [evaluate(model, tok, r, opts)[0] for r in records]
        result.revert(model)
    exact = all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    means = {k: sum(s[k] for s in scores) / len(scores) for k in ("ES", "PS", "NS")}
    seconds = time.perf_counter() - t0
    print(
        f"{args.method} ({args.mode}, {len(records)} records): " + ", ".join(f"{k} {v:.1%}" for k, v in means.items())
    )
    print(f"{seconds:.0f}s; model bit-identical after revert: {exact}")
    print(
        json.dumps(
            {
                "method": args.method,
                "mode": args.mode,
                "records": len(records),
                "overrides": args.set,
                "distinct_subjects": args.distinct_subjects,
                **{k: round(v, 4) for k, v in means.items()},
                "seconds": round(seconds, 1),
                "revert_exact": exact,
            }
        )
    )


if __name__ == "__main__":
    main()
