"""The transcoder feature edit against ROME on the toy model's CounterFact records: the same records, each
edited alone and reverted, the same v* hyper-parameters (the shipped `editkit/hparams/rome/toy.yaml`) and the
same statistics C; only the key differs (ROME: C⁻¹k̄ of the subject; the feature edit: C⁻¹E[h g] of the
transcoder features active at the subject, `editkit.features.transcoder_edit`). Scored with editkit.evaluate's
CounterFact metrics (ES, PS, NS; generation off), as experiments/edit_quality.py does.

    OMP_NUM_THREADS=1 python experiments/transcoder_edit.py --limit 20 [--n-features 1] [--methods rome,transcoder]

Last line: JSON.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from editkit.corpus import open_corpus
from editkit.edit import edit, load_hparams
from editkit.edit.run import make_stats
from editkit.evaluate.datasets import load_dataset
from editkit.evaluate.suites import ScoreOptions, evaluate
from editkit.features import SAE
from editkit.features.transcoder_edit import FeatureKeys, transcoder_edit
from editkit.models import load_model, toy_dir


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--offset", type=int, default=0, help="skip this many records first")
    p.add_argument("--transcoder", default=str(toy_dir() / "transcoder-blocks.0"))
    p.add_argument("--n-features", type=int, default=1)
    p.add_argument("--key-tokens", type=int, default=100_000, help="corpus tokens E[h f] is averaged over")
    p.add_argument("--methods", default="rome,transcoder")
    args = p.parse_args()
    torch.set_num_threads(1)
    model, tok, adapter = load_model("toy", device="cpu")
    records = load_dataset("toy", toy_dir() / "counterfact.json", limit=args.offset + args.limit)[args.offset :]
    hp = load_hparams("rome", "toy")
    stats = make_stats(model, tok, adapter, hp, progress=True)
    tc = SAE.load(args.transcoder)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    t = time.perf_counter()
    keys = FeatureKeys.compute(model, tok, adapter, tc, open_corpus("toy", model, tok).texts(), args.key_tokens)
    keys_s = time.perf_counter() - t
    print(f"feature keys E[h f] over {keys.n_tokens:,} tokens: {keys_s:.0f}s", flush=True)
    opts = ScoreOptions(generation=False)
    summary = {}
    for method in args.methods.split(","):
        t0, scores, exact = time.perf_counter(), [], True
        for r in records:
            if method == "rome":
                result = edit(model, tok, adapter, [r.request()], "rome", hp, stats)
                picked = None
            else:
                result = transcoder_edit(model, tok, adapter, tc, [r.request()], hp, stats, keys, args.n_features)
                picked = result.hparams["features"][0]
            scores.append(evaluate(model, tok, r, opts)[0])
            result.revert(model)
            exact &= all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
            line = {"method": method, "case": r.case_id, **{k: scores[-1][k] for k in ("ES", "PS", "NS")}}
            print(json.dumps(line | ({"features": picked} if picked else {})), flush=True)
        means = {k: sum(s[k] for s in scores) / len(scores) for k in ("ES", "PS", "NS")}
        seconds = time.perf_counter() - t0
        summary[method] = {**{k: round(v, 4) for k, v in means.items()}, "seconds": round(seconds, 1)}
        summary[method]["revert_exact"] = exact
        print(
            f"{method}: "
            + ", ".join(f"{k} {v:.1%}" for k, v in means.items())
            + f"; {seconds:.0f}s; exact revert {exact}"
        )
    print(
        json.dumps(
            {
                "records": len(records),
                "offset": args.offset,
                "n_features": args.n_features,
                "key_tokens": keys.n_tokens,
                "keys_s": round(keys_s, 1),
                **summary,
            }
        )
    )


if __name__ == "__main__":
    main()
