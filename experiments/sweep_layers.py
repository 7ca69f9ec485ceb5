"""Edit success by layer, as ROME's Figure 5: one method edited at each layer in turn, every record edited
alone, scored (CounterFact's ES / PS / NS) and reverted. The records are known facts taken from the END of a
CounterFact file, so that choosing layers never looks at the first records, where the evaluation table is.

    OMP_NUM_THREADS=1 python experiments/sweep_layers.py --model smollm2-135m --method rome \\
        --data counterfact-edit.json --from-end 500 --records 20 --layers 0,2,4,6,8,12
    python experiments/sweep_layers.py --model smollm2-135m --method ultraedit --batch-size 40 \\
        --data counterfact-edit.json --from-end 500 --records 40 --layers 28-29,19-27 --set lr=1e-4

Known: the unedited model gives the true object a higher probability than the new one on the edit prompt.
Records whose subject also occurs in the file's first --exclude-first records are skipped. Each row of layers
(one layer, or a range edited together) is a resumable `editkit eval` run directory under --runs (rerun the
same command after an interruption).
Prints the table (markdown) and, last line, JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from editkit.evaluate.datasets import load_dataset
from editkit.evaluate.known import prefers_true
from editkit.evaluate.runner import EvalConfig, make_editor, run_eval
from editkit.evaluate.tables import cell_text
from editkit.models import load_model

COLUMNS = ("S", "ES", "PS", "NS", "EM", "PM", "NM")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--method", default="rome")
    p.add_argument("--data", required=True, help="CounterFact JSON (ROME's or EasyEdit's layout)")
    p.add_argument(
        "--layers", required=True, help="comma-separated rows, each a layer or an inclusive range: 0,2,4 or 27-28,19-27"
    )
    p.add_argument("--batch-size", type=int, default=1, help="edit the records in batches of N (1: one at a time)")
    p.add_argument("--from-end", type=int, default=500, help="look for known records among the last N")
    p.add_argument("--records", type=int, default=20, help="how many known records to edit")
    p.add_argument("--exclude-first", type=int, default=2000, help="skip subjects of the file's first N records")
    p.add_argument("--hparams", default=None, help="hyper-parameter file (default: the shipped one)")
    p.add_argument("--set", action="append", default=[], help="hyper-parameter override key=value (all layers)")
    p.add_argument("--runs", default="runs/sweep_layers")
    p.add_argument("--device", default="cpu")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    bundle = load_model(args.model, device=args.device)
    model, tok, _ = bundle
    everything = load_dataset("counterfact", args.data)
    taken = {r.subject for r in everything[: args.exclude_first]}
    pool = [r for r in everything[-args.from_end :] if r.subject not in taken]
    records = [r for r, k in zip(pool, prefers_true(model, tok, pool), strict=True) if k][: args.records]
    print(f"{len(records)} known records of the last {args.from_end} (case ids {records[0].case_id}..)", flush=True)
    rows = {}
    mode = {"mode": "batch", "batch_size": args.batch_size} if args.batch_size > 1 else {}
    for layer in args.layers.split(","):
        overrides = [*args.set, f"layers={layer_list(layer)}"]
        editor, hp = make_editor(args.method, bundle, args.hparams, args.model, False, overrides)
        config = EvalConfig(
            model=args.model, dataset="counterfact", method=args.method, data=args.data, hparams=hp, generation=False,
            **mode,
        )  # fmt: skip
        out = Path(args.runs) / f"{args.method}-L{layer}"
        t0 = time.perf_counter()
        summary = run_eval(
            model, tok, records, config, out, editor, resume=(out / "config.json").exists(), progress=False
        )
        rows[layer] = {
            **{k: summary["metrics"][k] for k in COLUMNS},
            "n": summary["n"],
            "seconds": round(time.perf_counter() - t0),
        }
        print(f"layer {layer}: " + ", ".join(f"{k} {rows[layer][k]['mean']:.1%}" for k in COLUMNS), flush=True)
    print(table(rows, args.method))
    result = {
        "method": args.method,
        "model": args.model,
        "overrides": args.set,
        "case_ids": [r.case_id for r in records],
        "layers": {str(k): {c: round(v[c]["mean"], 4) for c in COLUMNS} | {"n": v["n"]} for k, v in rows.items()},
        "command": "python experiments/sweep_layers.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    print(json.dumps(result))
    return result


def layer_list(row: str) -> list[int]:
    """The layers of one --layers row: "4" -> [4], "27-29" -> [27, 28, 29]."""
    first, _, last = row.partition("-")
    return list(range(int(first), int(last or first) + 1))


def table(rows: dict, method: str) -> str:
    """Markdown: one row per layer, mean ± 95% CI in percent; EM (PM) is p(new) − p(true) on the edit prompt
    (the paraphrase), NM p(true) − p(new) on the neighbour."""
    head = f"| {method} layer | " + " | ".join(COLUMNS) + " | n |"
    lines = [head, "|---:|" + "---:|" * (len(COLUMNS) + 1)]
    for layer, r in rows.items():
        cells = [cell_text(r[c]) for c in COLUMNS]
        lines.append(f"| {layer} | " + " | ".join(cells) + f" | {r['n']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
