"""How much the statistics C = E[kkᵀ] change ROME on a real model: the same records edited with C from each
corpus and token count, and with mom2_adjustment off (u = k̄, no C), everything else equal.

ROME's target v* does not depend on C (only the key direction u = C⁻¹k̄ and the scale Λ do), so v* is
optimised once per record and each variant's rank-one update is built from it: the variants differ in C alone,
and the expensive step is paid once. Records: known facts from the END of a CounterFact file (as in
sweep_layers.py), never the evaluation table's first records.

    OMP_NUM_THREADS=1 python experiments/corpus_effect.py --model smollm2-135m --data counterfact-edit.json \\
        --records 50 --variants off,samples:2000@20000,samples:2000@100000,local.txt@100000

A variant is `none` (the unedited model scored: the floor and ceiling the single prompts allow), `off` or
`CORPUS@TOKENS`. ES/PS/NS are per record 0 or 1; EM/PM/NM are the probability margins (p(new) − p(true) on the
edit and rephrase prompts, p(true) − p(new) on the locality prompt), which show a difference of degree. One
JSON line per (record, variant) goes to --out (resumable: rerun skips the records already there). Prints a
markdown table and, last line, JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from editkit.edit import load_hparams
from editkit.edit.common import context_prefixes
from editkit.edit.methods.rome import rome_key, rome_update
from editkit.edit.result import EditResult
from editkit.edit.run import make_stats
from editkit.edit.target import optimise_targets
from editkit.evaluate.datasets import load_dataset
from editkit.evaluate.known import prefers_true
from editkit.evaluate.metrics import BOUNDS, mean_ci
from editkit.evaluate.suites import ScoreOptions, evaluate
from editkit.evaluate.tables import cell_text
from editkit.models import load_model

METRICS = ("ES", "PS", "NS", "EM", "PM", "NM")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--data", required=True, help="CounterFact JSON (ROME's or EasyEdit's layout)")
    p.add_argument("--variants", required=True, help="comma-separated: off or CORPUS@TOKENS")
    p.add_argument("--records", type=int, default=50)
    p.add_argument("--from-end", type=int, default=500, help="look for known records among the last N")
    p.add_argument("--exclude-first", type=int, default=2000, help="skip subjects of the file's first N records")
    p.add_argument("--hparams", default=None, help="ROME hyper-parameter file (default: the shipped one)")
    p.add_argument("--set", action="append", default=[], help="hyper-parameter override key=value")
    p.add_argument("--out", default="experiments/results/corpus_effect.jsonl")
    p.add_argument("--device", default="cpu")
    return p.parse_args(argv)


def variant_hparams(args, variant: str):
    """ROME's hyper-parameters for one variant: C off (also for `none`, which edits nothing), or C from CORPUS
    over TOKENS tokens."""
    if variant in ("off", "none"):
        return load_hparams("rome", args.model, args.hparams, [*args.set, "mom2_adjustment=false"])
    corpus, _, tokens = variant.rpartition("@")
    if not corpus or not tokens.isdigit():
        raise SystemExit(f"variant {variant!r} is neither 'off' nor CORPUS@TOKENS (e.g. samples:2000@100000)")
    sets = [*args.set, "mom2_adjustment=true", f"mom2_corpus={corpus}", f"mom2_n_tokens={tokens}"]
    return load_hparams("rome", args.model, args.hparams, sets)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    model, tok, adapter = load_model(args.model, device=args.device)
    variants = args.variants.split(",")
    hps = {v: variant_hparams(args, v) for v in variants}
    stats = {v: make_stats(model, tok, adapter, hp, progress=True) for v, hp in hps.items() if hp.mom2_adjustment}
    base = hps[next(v for v in variants if v != "none")] if variants != ["none"] else hps["none"]
    layer = base.layers[0] % adapter.n_layers
    everything = load_dataset("counterfact", args.data)
    taken = {r.subject for r in everything[: args.exclude_first]}
    pool = [r for r in everything[-args.from_end :] if r.subject not in taken]
    records = [r for r, k in zip(pool, prefers_true(model, tok, pool), strict=True) if k][: args.records]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.loads(x) for x in out.read_text().splitlines()] if out.exists() else []
    done = {(x["case_id"], x["variant"]) for x in lines}
    prefixes = context_prefixes(model, tok, base.context_templates, base.seed)
    opts = ScoreOptions(generation=False)
    module = adapter.name("mlp_out", layer)
    for r in records:
        todo = [v for v in variants if (r.case_id, v) not in done]
        if not todo:
            continue
        request = r.request()
        if todo != ["none"]:
            v_star = optimise_targets(model, tok, adapter, module, [request], prefixes, base)[0].value
        for v in todo:
            hp = hps[v]
            if v == "none":
                line = {"case_id": r.case_id, "variant": v, **{k: evaluate(model, tok, r, opts)[0][k] for k in METRICS}}
                lines.append(line)
                with out.open("a") as f:
                    f.write(json.dumps(line) + "\n")
                continue
            u, k_bar, out_bar = rome_key(model, tok, adapter, request, hp, stats.get(v), layer, prefixes)
            result = EditResult("rome", {})
            result.push(model, rome_update(model, tok, adapter, request, hp, layer, u, v_star, (k_bar, out_bar)))
            metrics = evaluate(model, tok, r, opts)[0]
            result.seal(model).revert(model)
            line = {"case_id": r.case_id, "variant": v, **{k: metrics[k] for k in METRICS}}
            if v in stats:  # the key's scale under C: MEMIT keeps kᵀ(λC)⁻¹k / (1 + kᵀ(λC)⁻¹k) of an edit
                line["kCk"] = float(k_bar[0].double() @ stats[v].solve(layer, k_bar[0]))
            with out.open("a") as f:
                f.write(json.dumps(line) + "\n")
            lines.append(line)
        print(f"record {r.case_id} done", flush=True)
    wanted = {r.case_id for r in records}
    summary = {}
    for v in variants:
        rows = [x for x in lines if x["variant"] == v and x["case_id"] in wanted]
        summary[v] = {k: mean_ci([x[k] for x in rows], BOUNDS.get(k, (0.0, 1.0))) for k in METRICS} | {"n": len(rows)}
        if v in stats:
            eigvals = stats[v].eig(layer)[0]
            summary[v]["median kᵀC⁻¹k"] = float(np.median([x["kCk"] for x in rows]))
            summary[v]["eigenvalues < 2e-2"] = int((eigvals < 2e-2).sum())
    print(table(summary, layer))
    command = "python experiments/corpus_effect.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(json.dumps({"layer": layer, "variants": summary, "command": command}))
    return summary


def table(summary: dict, layer: int) -> str:
    """Markdown, one row per variant: mean ± 95% CI in percent; the median key scale kᵀC⁻¹k over the records
    and how many of C's eigenvalues fall below AlphaEdit's null-space threshold 2e-2."""
    extra = ("median kᵀC⁻¹k", "eigenvalues < 2e-2")
    head = f"| C at layer {layer} | " + " | ".join((*METRICS, *extra)) + " | n |"
    lines = [head, "|---|" + "---:|" * (len(METRICS) + len(extra) + 1)]
    for v, s in summary.items():
        cells = [cell_text(s[k]) for k in METRICS]
        cells += [f"{s[k]:.0f}" if k in s else "–" for k in extra]
        lines.append(f"| {v} | " + " | ".join(cells) + f" | {s['n']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
